//! The conversation engine: a pure state machine that runs a [`Flow`].
//!
//! One call, one turn: given the flow, the conversation [`State`], a
//! [`Context`] (who is talking, the time, the price table, the free slots) and
//! one input, [`step`] returns a [`Turn`]: the next state, the replies, the quick
//! replies and the events to write. Nothing is stored here; the caller writes the
//! new state and the events **in one transaction** (the outbox), together with
//! the booking claim or cancellation when there is one.
//!
//! How a turn runs:
//! - A new conversation ([`State::new`], `node == None`) emits
//!   `conversation.started` then `message.received` and runs from the main
//!   flow's `start`; the first message only opens the conversation.
//! - Every later user message emits `message.received` first, then answers the
//!   node the conversation waits at (`ask`, `menu` or `booking`).
//! - Running moves from node to node until one waits: `message` says its text;
//!   `ask` says its prompt and waits; `menu` says its text and numbered options
//!   (`"1. One month"`, one per line, in one reply) with the labels as quick
//!   replies, and waits; `booking` offers up to `offer` free slots the same way
//!   and waits; `quote` prices memory and goes on; `webhook` stops the turn with
//!   [`Turn::call_webhook`] set; `end` says its message, marks the state
//!   completed, emits `conversation.completed` and sets [`Turn::ended`].
//! - Answers: an `ask` answer is validated (invalid → the retry text, or a
//!   default naming the reason, and the conversation stays); a valid one is
//!   stored normalised in `memory[save_as]`, then `response.received` (if
//!   `notify`) and `datapoint.collected` (if `datapoint`). A menu answer matches
//!   an option's keyword or its label, ignoring case and extra spaces (no match →
//!   retry text and the options again); `option.selected` fires if `notify`; then
//!   the option's webhook (if any), then its node or campaign.
//! - Webhooks: the caller calls the story webhook named in `call_webhook`, then
//!   calls [`resume_after_webhook`] with the state returned by that turn. On
//!   success the reply's `memory` is merged (a `null` deletes a key), its
//!   `user_attributes` are returned in [`Turn::user_attributes`] for the caller to
//!   merge into the contact (a `null` deletes too), its `responses` become
//!   replies and its `quickreplies` are offered, both as the API wrote them:
//!   returned text is text, never rendered as merge tags (an API that echoes
//!   what the user typed must not let the user read memory or the contact);
//!   if the user's next message equals one of them (ignoring case and spaces)
//!   it is saved in `memory["quickreply"]` as offered, before the message is
//!   handled as usual. On failure the run goes to the node's `on_error`, else
//!   the flow's `error` node (a campaign without one falls back to the main
//!   flow's), else it says a polite apology and goes on to the success target,
//!   so a conversation never sticks. A user message that arrives while a webhook
//!   is still pending is recorded (`message.received`) and the same
//!   `call_webhook` is returned again, so the caller can retry.
//! - Quotes: the `quote` node prices memory against [`Context::price_table`] and
//!   stores the quote in `memory["quote"]` with `quote.generated`; without a table
//!   or on a pricing error it apologises (naming the plain reason) and takes
//!   `on_error`, else the flow's error node, else `next`.
//! - Bookings: a chosen slot (by label or 1-based number) yields
//!   [`Turn::booking`], the `appointment.booked` event and `memory["appointment"]`,
//!   and the run goes on to `next`. The caller commits them atomically; if the
//!   store refuses the slot, the caller discards that turn and calls [`step`]
//!   again with the *same* state and input and [`Context::taken_slot`] set: the
//!   engine then says the slot was just taken and re-offers other free slots,
//!   with no booking event. A slot no longer among [`Context::free_slots`] is
//!   treated the same way. The node's `cancel_keyword` cancels the appointment in
//!   memory: [`Turn::cancel_booking`] holds its id, `appointment.cancelled` fires,
//!   the key is removed, and the slots are offered again. With no free slot the
//!   node apologises and goes to `on_error`, else `next`.
//!
//! Guarantees:
//! - never panics, whatever the text: empty text, more than 4096 characters or
//!   control characters (other than newline, tab and carriage return) get a
//!   polite reply and the current question again, with no event and no change;
//! - output is bounded, whatever merge tags multiply: a reply holds at most
//!   [`MAX_REPLY_BYTES`] and one call at most [`MAX_TURN_BYTES`] of reply text
//!   (the caller applies [`cap_replies`] again to the turns it joins); a cut
//!   reply ends with [`CUT_MARKER`], replies past the budget are dropped, and
//!   [`Turn::cut`] counts both. Templates are rendered only as far as needed;
//! - memory is bounded: an answer or a webhook reply that would leave memory
//!   larger than [`MAX_MEMORY_BYTES`] (as JSON), or a webhook reply that would
//!   leave the contact's attributes larger than [`MAX_ATTRIBUTES_BYTES`], is
//!   refused (the answer is asked again, the webhook takes its failure path);
//!   changes that shrink them are always accepted;
//! - at most [`MAX_HOPS`] nodes run per turn; past that (only possible in a flow
//!   that skipped validation) or on a missing node, the engine apologises and
//!   closes the conversation (`completed`, `ended`, but no
//!   `conversation.completed`, which means a normal end);
//! - if the flow changed while the conversation waited at a node that no longer
//!   exists, the conversation restarts at the main flow's start, memory kept,
//!   with a reply saying so;
//! - a message to a completed conversation returns an empty turn with `ended`
//!   set: starting a new conversation is the caller's job;
//! - merge tags see `memory`, `user` (contact attributes with this turn's
//!   changes), `contact` (`id`, `phone`, `external_id`), `quote` and
//!   `appointment` (both from memory).

use crate::domain::calendar::{Calendar, Slot};
use crate::domain::event::{EventType, NewEvent};
use crate::domain::flow::condition::{Scope, ScopeInput};
use crate::domain::flow::{
    Flow, FlowNode, Goto, MAIN, MAX_TEXT, Media, MenuOption, Next, Node, SetTarget, SetValue,
};
use crate::domain::merge;
use crate::domain::quote::{PriceTable, price};
use crate::domain::validate::Validation;
use crate::domain::validate::normalise;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Most nodes run in one turn.
pub const MAX_HOPS: usize = 100;
/// Most `responses` or `quickreplies` accepted from one webhook reply.
pub const MAX_WEBHOOK_ITEMS: usize = 50;
/// Longest reply message, in bytes of UTF-8; a longer one is cut to fit,
/// ending with [`CUT_MARKER`].
pub const MAX_REPLY_BYTES: usize = 4096;
/// Most reply text one turn sends, in bytes of UTF-8 (64 KiB); replies past
/// it are cut or dropped.
pub const MAX_TURN_BYTES: usize = 64 * 1024;
/// Ends a reply that was cut to the caps.
pub const CUT_MARKER: &str = " […]";
/// Largest session memory, in bytes of compact JSON (64 KiB).
pub const MAX_MEMORY_BYTES: usize = 64 * 1024;
/// Largest set of contact attributes, in bytes of compact JSON (64 KiB).
pub const MAX_ATTRIBUTES_BYTES: usize = 64 * 1024;

const SORRY_UNREADABLE: &str = "Sorry, I could not read that message";
const SORRY_BROKEN: &str =
    "Sorry, something went wrong in this conversation. Please write again to start over.";
const SORRY_WEBHOOK: &str = "Sorry, we could not complete that step right now.";
const SORRY_NO_SLOTS: &str = "Sorry, there are no free times available right now.";
const RESTARTED: &str =
    "This conversation was updated, so we are starting again from the beginning.";
const SORRY_TOO_BIG: &str = "Sorry, that answer is too long to keep.";

/// The person chatting.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Contact {
    /// Contact id.
    pub id: String,
    /// Phone number (E.164), when known.
    pub phone: Option<String>,
    /// Id in an outside system, when known.
    pub external_id: Option<String>,
    /// `user` attributes, kept across conversations.
    #[serde(default)]
    pub attributes: Map<String, Value>,
}

/// Where the run continues: a node of a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jump {
    /// [`MAIN`] or a campaign name.
    pub flow: String,
    /// Node id.
    pub node: String,
}

/// A story webhook the conversation waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingWebhook {
    /// Story webhook name.
    pub name: String,
    /// Where to go when it succeeds.
    pub on_success: Jump,
    /// Where to go when it fails; `None` means apologise and take `on_success`.
    pub on_error: Option<Jump>,
}

/// A conversation's state between turns (store it as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// [`MAIN`] or the campaign the conversation is in.
    pub flow: String,
    /// The node it waits at; `None` before the first message.
    pub node: Option<String>,
    /// Session memory.
    #[serde(default)]
    pub memory: Map<String, Value>,
    /// Whether an `end` node was reached (or the conversation was aborted).
    #[serde(default)]
    pub completed: bool,
    /// Slots offered by the booking node it waits at.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offered_slots: Vec<Slot>,
    /// Quick replies offered by the last webhook, saved as `memory.quickreply` if chosen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quick_replies: Vec<String>,
    /// The webhook the conversation waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_webhook: Option<PendingWebhook>,
}

impl State {
    /// The state of a conversation that has not started.
    pub fn new() -> State {
        State {
            flow: MAIN.to_string(),
            node: None,
            memory: Map::new(),
            completed: false,
            offered_slots: Vec::new(),
            quick_replies: Vec::new(),
            pending_webhook: None,
        }
    }
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

/// What the engine needs to know besides the flow and the state.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Conversation id (goes into events).
    pub conversation_id: &'a str,
    /// Who is talking.
    pub contact: &'a Contact,
    /// The current time.
    pub now: DateTime<Utc>,
    /// The bot's price table, for `quote` nodes.
    pub price_table: Option<&'a PriceTable>,
    /// The bot's calendar (its time zone goes into appointments).
    pub calendar: Option<&'a Calendar>,
    /// Free slots (calendar minus full bookings), earliest first.
    pub free_slots: &'a [Slot],
    /// Set when the store refused the booking of this slot in the previous try.
    pub taken_slot: Option<DateTime<Utc>>,
    /// The channel the conversation is on (`api`, `web` …), seen by conditions.
    pub channel: &'a str,
}

/// One input to a conversation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Input<'a> {
    /// A text message.
    Text(&'a str),
}

/// A slot the caller must book atomically with the turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingClaim {
    /// Appointment id (also in the event and memory).
    pub id: String,
    /// Start instant.
    pub start: DateTime<Utc>,
    /// End instant.
    pub end: DateTime<Utc>,
    /// Human label.
    pub label: String,
}

/// A timer a waiting conversation sets: what fires and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// Say the node's `reminder`.
    Reminder,
    /// Go to the node's `on_timeout`.
    Timeout,
    /// End the idle conversation (`expire_after`).
    Expiry,
}

impl TimerKind {
    /// As stored.
    pub fn as_str(&self) -> &'static str {
        match self {
            TimerKind::Reminder => "reminder",
            TimerKind::Timeout => "timeout",
            TimerKind::Expiry => "expiry",
        }
    }

    /// From its stored name.
    pub fn parse(s: &str) -> Option<TimerKind> {
        match s {
            "reminder" => Some(TimerKind::Reminder),
            "timeout" => Some(TimerKind::Timeout),
            "expiry" => Some(TimerKind::Expiry),
            _ => None,
        }
    }
}

/// A timer to store with the turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerPlan {
    /// What it does.
    pub kind: TimerKind,
    /// The node it was set at (`None` for expiry).
    pub node: Option<String>,
    /// When it is due.
    pub due_at: DateTime<Utc>,
}

/// The result of one turn.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Turn {
    /// The state to store.
    pub state: State,
    /// Texts to send, in order.
    pub replies: Vec<String>,
    /// Media sent with replies: `(index in replies, media)`, URL and caption rendered.
    pub media: Vec<(usize, Media)>,
    /// Lines for the conversation's log (a condition that could not be
    /// evaluated, a `set` that failed); not shown to the user.
    pub log: Vec<String>,
    /// The conversation's timers after this turn: `Some` replaces them all
    /// (an empty list clears them), `None` leaves them as they are.
    pub timers: Option<Vec<TimerPlan>>,
    /// Quick replies to offer with them.
    pub quick_replies: Vec<String>,
    /// Events to write with the state.
    pub events: Vec<NewEvent>,
    /// Changes to merge into the contact's attributes (`null` deletes).
    pub user_attributes: Map<String, Value>,
    /// A slot to book atomically with this turn.
    pub booking: Option<BookingClaim>,
    /// Id of the appointment to cancel with this turn.
    pub cancel_booking: Option<String>,
    /// Story webhook to call, then [`resume_after_webhook`].
    pub call_webhook: Option<String>,
    /// The conversation is over.
    pub ended: bool,
    /// Replies the output caps shortened or dropped (log it with the turn).
    pub cut: ReplyCut,
}

/// What the output caps did to a turn's replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplyCut {
    /// Replies cut short (they end with [`CUT_MARKER`]).
    pub shortened: usize,
    /// Replies left out because the turn had said [`MAX_TURN_BYTES`] already.
    pub dropped: usize,
}

impl ReplyCut {
    /// Nothing was cut.
    pub fn is_empty(&self) -> bool {
        self.shortened == 0 && self.dropped == 0
    }

    /// Adds another count to this one.
    pub fn add(&mut self, other: ReplyCut) {
        self.shortened += other.shortened;
        self.dropped += other.dropped;
    }
}

/// Cuts `text` to at most `max` bytes on a char boundary, ending it with
/// [`CUT_MARKER`]; a text that fits is left alone. Returns whether it cut.
fn shorten(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    mark_cut(text, max);
    true
}

/// Ends `text` with [`CUT_MARKER`] within `max` bytes (`max` at least the
/// marker's length), dropping a marker it had already.
fn mark_cut(text: &mut String, max: usize) {
    if text.ends_with(CUT_MARKER) {
        text.truncate(text.len() - CUT_MARKER.len());
    }
    let keep = merge::prefix_within(text, max.saturating_sub(CUT_MARKER.len())).len();
    text.truncate(keep);
    text.push_str(CUT_MARKER);
}

/// The reply text a turn has said so far, against [`MAX_TURN_BYTES`].
#[derive(Debug, Default)]
struct ReplyBudget {
    used: usize,
}

impl ReplyBudget {
    fn exhausted(&self) -> bool {
        self.used >= MAX_TURN_BYTES
    }

    /// Adds a reply within the caps: blank text is skipped, a reply over
    /// [`MAX_REPLY_BYTES`] is cut, the reply that crosses [`MAX_TURN_BYTES`] is
    /// cut to what is left (or, with less than the marker left, dropped and
    /// the previous reply given the marker), and later ones are dropped.
    fn admit(&mut self, replies: &mut Vec<String>, mut text: String, cut: &mut ReplyCut) {
        if text.trim().is_empty() {
            return;
        }
        if shorten(&mut text, MAX_REPLY_BYTES) {
            cut.shortened += 1;
        }
        let room = MAX_TURN_BYTES.saturating_sub(self.used);
        if text.len() <= room {
            self.used += text.len();
            replies.push(text);
            return;
        }
        if self.exhausted() {
            cut.dropped += 1;
            return;
        }
        self.used = MAX_TURN_BYTES;
        if room >= CUT_MARKER.len() {
            if !text.ends_with(CUT_MARKER) {
                cut.shortened += 1;
            }
            mark_cut(&mut text, room);
            replies.push(text);
            return;
        }
        cut.dropped += 1;
        if let Some(last) = replies.last_mut()
            && !last.ends_with(CUT_MARKER)
            && last.len() + room >= CUT_MARKER.len()
        {
            let max = last.len() + room;
            mark_cut(last, max);
            cut.shortened += 1;
        }
    }
}

/// Applies the output caps to a whole turn's replies, counting into `cut`.
/// The engine caps each call it answers; the caller joining the replies of a
/// turn and of the calls that resumed it after story webhooks applies this to
/// the joined list, so the whole turn stays within [`MAX_TURN_BYTES`].
pub fn cap_replies(replies: Vec<String>, cut: &mut ReplyCut) -> Vec<String> {
    let mut budget = ReplyBudget::default();
    let mut out = Vec::with_capacity(replies.len());
    for text in replies {
        budget.admit(&mut out, text, cut);
    }
    out
}

/// Why a change to memory or to the contact's attributes was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TooLarge {
    /// Memory would pass [`MAX_MEMORY_BYTES`].
    #[error(
        "the answer would grow the conversation's memory past {MAX_MEMORY_BYTES} bytes of JSON"
    )]
    Memory,
    /// The contact's attributes would pass [`MAX_ATTRIBUTES_BYTES`].
    #[error(
        "the answer would grow the contact's attributes past {MAX_ATTRIBUTES_BYTES} bytes of JSON"
    )]
    UserAttributes,
}

fn json_len(map: &Map<String, Value>) -> usize {
    serde_json::to_string(map).map_or(usize::MAX, |s| s.len())
}

/// `base` with `changes` merged in (`null` deletes).
fn merged(base: &Map<String, Value>, changes: &Map<String, Value>) -> Map<String, Value> {
    let mut out = base.clone();
    for (k, v) in changes {
        if v.is_null() {
            out.remove(k);
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// Whether going from `before` to `after` is refused: it ends over `max`
/// bytes and bigger than it was (so shrinking is always allowed).
fn grows_past(before: &Map<String, Value>, after: &Map<String, Value>, max: usize) -> bool {
    let size = json_len(after);
    size > max && size > json_len(before)
}

/// Checks that a webhook reply keeps memory and the contact's attributes
/// within their bounds. `pending_user` holds attribute changes made earlier
/// in the same turn and not yet stored on `contact`.
pub fn check_reply_size(
    reply: &WebhookReply,
    state: &State,
    contact: &Contact,
    pending_user: &Map<String, Value>,
) -> Result<(), TooLarge> {
    if !reply.memory.is_empty()
        && grows_past(
            &state.memory,
            &merged(&state.memory, &reply.memory),
            MAX_MEMORY_BYTES,
        )
    {
        return Err(TooLarge::Memory);
    }
    if !reply.user_attributes.is_empty() {
        let now = merged(&contact.attributes, pending_user);
        if grows_past(
            &now,
            &merged(&now, &reply.user_attributes),
            MAX_ATTRIBUTES_BYTES,
        ) {
            return Err(TooLarge::UserAttributes);
        }
    }
    Ok(())
}

/// A story webhook's answer (seed 002).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WebhookReply {
    /// Texts added to the bot's reply, shown as written (never rendered as
    /// merge tags).
    #[serde(default)]
    pub responses: Vec<String>,
    /// Memory changes; `null` deletes a key.
    #[serde(default)]
    pub memory: Map<String, Value>,
    /// Contact attribute changes; `null` deletes.
    #[serde(default)]
    pub user_attributes: Map<String, Value>,
    /// Quick replies to offer.
    #[serde(default)]
    pub quickreplies: Vec<String>,
}

impl WebhookReply {
    /// Reads a webhook's JSON answer: unknown keys are ignored, a wrong type is
    /// an error naming the key (the caller logs it and takes the failure path).
    pub fn from_json(v: &Value) -> Result<WebhookReply, String> {
        let obj = v.as_object().ok_or("the answer is not a JSON object")?;
        let strings = |key: &str| -> Result<Vec<String>, String> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => {
                    if items.len() > MAX_WEBHOOK_ITEMS {
                        return Err(format!("\"{key}\" has more than {MAX_WEBHOOK_ITEMS} items"));
                    }
                    items
                        .iter()
                        .map(|i| {
                            i.as_str()
                                .filter(|s| s.chars().count() <= MAX_TEXT)
                                .map(str::to_string)
                                .ok_or_else(|| format!("\"{key}\" must be an array of strings of at most {MAX_TEXT} characters"))
                        })
                        .collect()
                }
                Some(_) => Err(format!("\"{key}\" must be an array of strings")),
            }
        };
        let object = |key: &str| -> Result<Map<String, Value>, String> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(Map::new()),
                Some(Value::Object(m)) => Ok(m.clone()),
                Some(_) => Err(format!("\"{key}\" must be an object")),
            }
        };
        Ok(WebhookReply {
            responses: strings("responses")?,
            memory: object("memory")?,
            user_attributes: object("user_attributes")?,
            quickreplies: strings("quickreplies")?,
        })
    }
}

/// What merge tags see: `memory`, `user` (the contact's attributes with
/// `pending_user` changes applied; `null` deletes), `contact`, `quote` and
/// `appointment` (both from memory). Story webhook requests are rendered
/// against the same context the flow's texts are.
pub fn merge_context(state: &State, contact: &Contact, pending_user: &Map<String, Value>) -> Value {
    let memory = &state.memory;
    let user = merged(&contact.attributes, pending_user);
    json!({
        "memory": memory,
        "user": user,
        "contact": {
            "id": contact.id,
            "phone": contact.phone,
            "external_id": contact.external_id,
        },
        "quote": memory.get("quote").cloned().unwrap_or(Value::Null),
        "appointment": memory.get("appointment").cloned().unwrap_or(Value::Null),
    })
}

/// Runs one user input through the flow.
pub fn step(flow: &Flow, state: &State, ctx: &Context, input: Input) -> Turn {
    let mut turn = step_input(flow, state, ctx, input);
    if !state.completed {
        plan_timers(flow, &mut turn, ctx.now);
    }
    turn
}

/// The timers a conversation has after a turn: the reminder and timeout of
/// the node it waits at, and the bot's expiry; none once it is over.
fn plan_timers(flow: &Flow, turn: &mut Turn, now: DateTime<Utc>) {
    let st = &turn.state;
    if st.completed {
        turn.timers = Some(Vec::new());
        return;
    }
    if st.pending_webhook.is_some() {
        return;
    }
    let after =
        |span: crate::domain::flow::Span| now + chrono::Duration::milliseconds(span.millis());
    let mut timers = Vec::new();
    let node = st.node.as_deref().and_then(|id| flow.node(&st.flow, id));
    if let Some(n) = node
        && let Some(w) = n.kind.wait()
    {
        if let (Some(_), Some(after_span)) = (&w.reminder, w.remind_after) {
            timers.push(TimerPlan {
                kind: TimerKind::Reminder,
                node: Some(n.id.clone()),
                due_at: after(after_span),
            });
        }
        if let (Some(t), Some(_)) = (w.timeout, &w.on_timeout) {
            timers.push(TimerPlan {
                kind: TimerKind::Timeout,
                node: Some(n.id.clone()),
                due_at: after(t),
            });
        }
    }
    if let Some(e) = flow.expire_after {
        timers.push(TimerPlan {
            kind: TimerKind::Expiry,
            node: None,
            due_at: after(e),
        });
    }
    turn.timers = Some(timers);
}

/// Fires a timer the conversation set: a reminder says the node's
/// `reminder` (once; the timeout and expiry stay), a timeout goes to the
/// node's `on_timeout`, an expiry ends the conversation with
/// `conversation.expired`. A timer set at a node the conversation has left
/// (`node` differs) does nothing, and neither does any timer of a completed
/// conversation or one waiting for a story webhook.
pub fn on_timer(
    flow: &Flow,
    state: &State,
    ctx: &Context,
    kind: TimerKind,
    node: Option<&str>,
) -> Turn {
    let mut r = Runner::new(flow, ctx, state.clone());
    if state.completed || state.pending_webhook.is_some() {
        return r.turn;
    }
    let here = state
        .node
        .as_deref()
        .and_then(|id| flow.node(&state.flow, id));
    match kind {
        TimerKind::Expiry => {
            let st = &mut r.turn.state;
            st.completed = true;
            st.offered_slots.clear();
            st.quick_replies.clear();
            r.emit(EventType::ConversationExpired, here, json!({}));
            r.turn.ended = true;
            r.turn.timers = Some(Vec::new());
        }
        TimerKind::Reminder => {
            let Some(n) = here.filter(|n| Some(n.id.as_str()) == node) else {
                return r.turn;
            };
            if let Some(text) = n.kind.wait().and_then(|w| w.reminder.as_deref()) {
                r.say(text);
                r.offer_again(n);
            }
        }
        TimerKind::Timeout => {
            let Some(n) = here.filter(|n| Some(n.id.as_str()) == node) else {
                return r.turn;
            };
            let Some(target) = n.kind.wait().and_then(|w| w.on_timeout.clone()) else {
                return r.turn;
            };
            let st = &mut r.turn.state;
            st.offered_slots.clear();
            st.quick_replies.clear();
            let flow_name = st.flow.clone();
            r.run(Jump {
                flow: flow_name,
                node: target,
            });
            plan_timers(flow, &mut r.turn, ctx.now);
        }
    }
    r.turn
}

fn step_input(flow: &Flow, state: &State, ctx: &Context, input: Input) -> Turn {
    let Input::Text(text) = input;
    let mut r = Runner::new(flow, ctx, state.clone());
    if state.completed {
        r.turn.ended = true;
        return r.turn;
    }
    let current = state
        .node
        .as_deref()
        .and_then(|id| flow.node(&state.flow, id));
    if let Err(reason) = check_text(text) {
        r.say_plain(format!("{SORRY_UNREADABLE} ({reason})."));
        match current {
            Some(node) if state.pending_webhook.is_none() => r.prompt_again(node),
            _ if state.node.is_none() => r.say_plain("Please send a text message.".into()),
            _ => {}
        }
        return r.turn;
    }
    let Some(waiting_id) = state.node.clone() else {
        r.emit(EventType::ConversationStarted, None, json!({}));
        r.emit(EventType::MessageReceived, None, json!({ "text": text }));
        if !r.keyword(text) {
            r.run(Jump {
                flow: MAIN.into(),
                node: flow.main.start.clone(),
            });
        }
        return r.turn;
    };
    let Some(node) = current else {
        // The flow changed under a waiting conversation.
        r.emit_raw(
            EventType::MessageReceived,
            Some(&waiting_id),
            Some(&waiting_id),
            json!({ "text": text }),
        );
        let st = &mut r.turn.state;
        st.offered_slots.clear();
        st.quick_replies.clear();
        st.pending_webhook = None;
        r.say_plain(RESTARTED.into());
        r.run(Jump {
            flow: MAIN.into(),
            node: flow.main.start.clone(),
        });
        return r.turn;
    };
    r.emit(
        EventType::MessageReceived,
        Some(node),
        json!({ "text": text }),
    );
    if let Some(p) = &state.pending_webhook {
        r.turn.call_webhook = Some(p.name.clone());
        return r.turn;
    }
    if r.keyword(text) {
        return r.turn;
    }
    let offered = std::mem::take(&mut r.turn.state.quick_replies);
    if let Some(q) = offered.iter().find(|q| normalise(q) == normalise(text)) {
        r.turn
            .state
            .memory
            .insert("quickreply".into(), Value::String(q.clone()));
    }
    r.answer(node, text);
    r.turn
}

/// Continues a conversation after the story webhook asked for by the previous
/// turn was called; `state` is the state that turn returned.
pub fn resume_after_webhook(
    flow: &Flow,
    state: &State,
    ctx: &Context,
    result: Result<WebhookReply, String>,
) -> Turn {
    let mut r = Runner::new(flow, ctx, state.clone());
    let Some(pending) = r.turn.state.pending_webhook.take() else {
        return r.turn;
    };
    let result = result.and_then(|reply| {
        check_reply_size(&reply, &r.turn.state, ctx.contact, &Map::new())
            .map(|()| reply)
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(reply) => {
            r.turn.state.memory = merged(&r.turn.state.memory, &reply.memory);
            r.turn.user_attributes = reply.user_attributes;
            // Returned text is text: an API may echo what the user typed.
            for text in reply.responses {
                r.say_plain(text);
            }
            r.turn.state.quick_replies = reply.quickreplies.clone();
            r.turn.quick_replies.extend(reply.quickreplies);
            r.run(pending.on_success);
        }
        Err(_) => match pending.on_error {
            Some(j) => r.run(j),
            None => {
                r.say_plain(SORRY_WEBHOOK.into());
                r.run(pending.on_success);
            }
        },
    }
    plan_timers(flow, &mut r.turn, ctx.now);
    r.turn
}

fn check_text(text: &str) -> Result<(), &'static str> {
    if text.trim().is_empty() {
        return Err("it was empty");
    }
    if text.chars().count() > MAX_TEXT {
        return Err("it is too long");
    }
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r'))
    {
        return Err("it contains control characters");
    }
    Ok(())
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Accumulates one turn.
struct Runner<'a> {
    flow: &'a Flow,
    ctx: &'a Context<'a>,
    turn: Turn,
    hops: usize,
    budget: ReplyBudget,
}

impl<'a> Runner<'a> {
    fn new(flow: &'a Flow, ctx: &'a Context<'a>, state: State) -> Self {
        Runner {
            flow,
            ctx,
            turn: Turn {
                state,
                ..Turn::default()
            },
            hops: 0,
            budget: ReplyBudget::default(),
        }
    }

    fn merge_context(&self) -> Value {
        merge_context(
            &self.turn.state,
            self.ctx.contact,
            &self.turn.user_attributes,
        )
    }

    /// Renders merge tags, only as far as a reply may hold: a longer result
    /// comes back just over [`MAX_REPLY_BYTES`], for the caps to cut. Once the
    /// turn has said all it may, nothing is rendered.
    fn render(&self, template: &str) -> String {
        if self.budget.exhausted() {
            return template.to_string();
        }
        merge::render_text_within(template, &self.merge_context(), MAX_REPLY_BYTES)
    }

    /// Renders merge tags and adds the text as a reply (unless it renders empty).
    fn say(&mut self, template: &str) {
        let text = self.render(template);
        self.say_plain(text);
    }

    /// Adds a reply as it is, within the output caps.
    fn say_plain(&mut self, text: String) {
        self.budget
            .admit(&mut self.turn.replies, text, &mut self.turn.cut);
    }

    /// Says `intro` followed by `lines` (a menu's or a booking's numbered
    /// options) in one reply; when the whole is too long, the intro is cut
    /// so that the options stay readable.
    fn say_with_options(&mut self, mut intro: String, lines: &str) {
        if self.budget.exhausted() {
            self.turn.cut.dropped += 1;
            return;
        }
        let options_len = lines.len() + 1;
        if intro.len() + options_len > MAX_REPLY_BYTES
            && MAX_REPLY_BYTES.saturating_sub(options_len) >= CUT_MARKER.len()
        {
            mark_cut(&mut intro, MAX_REPLY_BYTES - options_len);
            self.turn.cut.shortened += 1;
        }
        if !intro.trim().is_empty() {
            intro.push('\n');
        }
        intro.push_str(lines);
        self.say_plain(intro);
    }

    fn emit(&mut self, t: EventType, node: Option<&Node>, extra: Value) {
        self.emit_raw(t, node.map(|n| n.id.as_str()), node.map(Node::label), extra);
    }

    fn emit_raw(&mut self, t: EventType, node: Option<&str>, label: Option<&str>, extra: Value) {
        let c = self.ctx.contact;
        let mut data = json!({
            "conversation_id": self.ctx.conversation_id,
            "flow": self.turn.state.flow,
            "node": node,
            "label": label,
            "contact": {"id": c.id, "phone": c.phone, "external_id": c.external_id},
        });
        if let (Some(d), Value::Object(e)) = (data.as_object_mut(), extra) {
            d.extend(e);
        }
        self.turn.events.push(NewEvent {
            event_type: t,
            data,
        });
    }

    /// Closes a conversation that cannot go on.
    fn abort(&mut self) {
        self.say_plain(SORRY_BROKEN.into());
        let st = &mut self.turn.state;
        st.completed = true;
        st.pending_webhook = None;
        st.offered_slots.clear();
        self.turn.ended = true;
    }

    fn start_of(&self, flow: &str) -> Option<Jump> {
        self.flow.graph(flow).map(|g| Jump {
            flow: flow.to_string(),
            node: g.start.clone(),
        })
    }

    /// Where a failure goes: `on_error`, else the flow's error node, else the
    /// main flow's error node.
    fn error_target(&self, flow: &str, on_error: Option<&String>) -> Option<Jump> {
        if let Some(e) = on_error {
            return Some(Jump {
                flow: flow.to_string(),
                node: e.clone(),
            });
        }
        if let Some(e) = self.flow.graph(flow).and_then(|g| g.error.clone()) {
            return Some(Jump {
                flow: flow.to_string(),
                node: e,
            });
        }
        self.flow.main.error.clone().map(|e| Jump {
            flow: MAIN.to_string(),
            node: e,
        })
    }

    fn run(&mut self, mut at: Jump) {
        let flow = self.flow;
        loop {
            self.hops += 1;
            if self.hops > MAX_HOPS {
                return self.abort();
            }
            let Some(node) = flow.node(&at.flow, &at.node) else {
                return self.abort();
            };
            self.turn.state.flow = at.flow.clone();
            self.turn.state.node = Some(node.id.clone());
            let here = |n: &String| Jump {
                flow: at.flow.clone(),
                node: n.clone(),
            };
            match &node.kind {
                FlowNode::Message { text, media, next } => {
                    self.say_with(text, media.as_ref());
                    at = here(&self.choose(node, next));
                }
                FlowNode::Set { assignments, next } => {
                    self.assign(node, assignments);
                    at = here(&self.choose(node, next));
                }
                FlowNode::Ask {
                    prompt,
                    media,
                    validate,
                    ..
                } => {
                    self.say_with(prompt, media.as_ref());
                    if let Some(Validation::Choice { options }) = validate {
                        self.turn.quick_replies.extend(options.iter().cloned());
                    }
                    return;
                }
                FlowNode::Menu {
                    text,
                    media,
                    options,
                    ..
                } => {
                    let text = self.render(text);
                    self.show_menu(text, options);
                    self.attach(media.as_ref());
                    return;
                }
                FlowNode::Booking { .. } => match self.offer_slots(node, None) {
                    Some(j) => at = j,
                    None => return,
                },
                FlowNode::Webhook {
                    name,
                    next,
                    on_error,
                } => {
                    let on_success = here(&self.choose(node, next));
                    self.turn.state.pending_webhook = Some(PendingWebhook {
                        name: name.clone(),
                        on_success,
                        on_error: self.error_target(&at.flow, on_error.as_ref()),
                    });
                    self.turn.call_webhook = Some(name.clone());
                    return;
                }
                FlowNode::Quote { next, on_error } => {
                    let priced = match self.ctx.price_table {
                        Some(t) => price(t, &self.turn.state.memory, self.ctx.now)
                            .map_err(|e| e.to_string()),
                        None => Err("no prices are set up".to_string()),
                    };
                    match priced.and_then(|q| serde_json::to_value(q).map_err(|e| e.to_string())) {
                        Ok(q) => {
                            self.turn.state.memory.insert("quote".into(), q.clone());
                            self.emit(EventType::QuoteGenerated, Some(node), json!({ "quote": q }));
                            at = here(&self.choose(node, next));
                        }
                        Err(reason) => {
                            self.say_plain(format!(
                                "Sorry, we could not prepare your quote: {reason}."
                            ));
                            at = match self.error_target(&at.flow, on_error.as_ref()) {
                                Some(j) => j,
                                None => here(&self.choose(node, next)),
                            };
                        }
                    }
                }
                FlowNode::End { message } => {
                    if let Some(m) = message {
                        self.say(m);
                    }
                    self.turn.state.completed = true;
                    self.turn.state.offered_slots.clear();
                    self.emit(EventType::ConversationCompleted, Some(node), json!({}));
                    self.turn.ended = true;
                    return;
                }
            }
        }
    }

    fn show_menu(&mut self, intro: String, options: &[MenuOption]) {
        let lines: Vec<String> = options
            .iter()
            .map(|o| format!("{}. {}", o.keyword, o.label))
            .collect();
        self.say_with_options(intro, &lines.join("\n"));
        self.turn
            .quick_replies
            .extend(options.iter().map(|o| o.label.clone()));
    }

    /// Offers free slots at a booking node; returns where to go when there are none.
    fn offer_slots(&mut self, node: &Node, intro: Option<String>) -> Option<Jump> {
        let FlowNode::Booking {
            prompt,
            offer,
            next,
            on_error,
            ..
        } = &node.kind
        else {
            return None;
        };
        let free: Vec<Slot> = self
            .ctx
            .free_slots
            .iter()
            .filter(|s| Some(s.start) != self.ctx.taken_slot)
            .take(*offer as usize)
            .cloned()
            .collect();
        if let Some(i) = intro {
            self.say_plain(i);
        }
        let flow = self.turn.state.flow.clone();
        if free.is_empty() {
            self.turn.state.offered_slots.clear();
            self.say_plain(SORRY_NO_SLOTS.into());
            let target = match on_error {
                Some(e) => e.clone(),
                None => self.choose(node, next),
            };
            return Some(Jump { flow, node: target });
        }
        let lines: Vec<String> = free
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{}. {}", i + 1, s.label))
            .collect();
        let text = self.render(prompt);
        self.say_with_options(text, &lines.join("\n"));
        self.turn
            .quick_replies
            .extend(free.iter().map(|s| s.label.clone()));
        self.turn.state.offered_slots = free;
        None
    }

    /// Says the question of the node the conversation waits at again.
    fn prompt_again(&mut self, node: &Node) {
        match &node.kind {
            FlowNode::Ask { prompt, .. } => {
                self.say(prompt);
                self.offer_again(node);
            }
            FlowNode::Menu { text, options, .. } => {
                let text = self.render(text);
                self.show_menu(text, options);
            }
            FlowNode::Booking { .. } => {
                if let Some(j) = self.offer_slots(node, None) {
                    self.run(j);
                }
            }
            _ => {}
        }
    }

    /// Adds a rendered media to the last reply (or alone when the text rendered empty).
    fn attach(&mut self, media: Option<&Media>) {
        let Some(m) = media else { return };
        let ctx = self.merge_context();
        let rendered = Media {
            kind: m.kind,
            url: merge::render_url(&m.url, &ctx),
            caption: m.caption.as_deref().map(|c| merge::render_text(c, &ctx)),
        };
        if self.turn.replies.is_empty() {
            self.turn.replies.push(String::new());
        }
        self.turn
            .media
            .push((self.turn.replies.len() - 1, rendered));
    }

    /// Says a text with merge tags and its media, if any.
    fn say_with(&mut self, template: &str, media: Option<&Media>) {
        let before = self.turn.replies.len();
        self.say(template);
        if media.is_some() && self.turn.replies.len() == before {
            // The text rendered empty: the media goes alone.
            self.turn.replies.push(String::new());
        }
        self.attach(media);
    }

    /// Offers a choice ask's options again, numbered, as quick replies.
    fn offer_again(&mut self, node: &Node) {
        match &node.kind {
            FlowNode::Ask {
                validate: Some(Validation::Choice { options }),
                ..
            } => {
                let lines: Vec<String> = options
                    .iter()
                    .enumerate()
                    .map(|(i, o)| format!("{}. {o}", i + 1))
                    .collect();
                if let Some(last) = self.turn.replies.last_mut() {
                    last.push('\n');
                    last.push_str(&lines.join("\n"));
                }
                self.turn.quick_replies.extend(options.iter().cloned());
            }
            FlowNode::Menu { options, .. } => self
                .turn
                .quick_replies
                .extend(options.iter().map(|o| o.label.clone())),
            FlowNode::Booking { .. } => self.turn.quick_replies.extend(
                self.turn
                    .state
                    .offered_slots
                    .iter()
                    .map(|s| s.label.clone()),
            ),
            _ => {}
        }
    }

    /// The contact's attributes with this turn's changes.
    fn user_now(&self) -> Map<String, Value> {
        let mut user = self.ctx.contact.attributes.clone();
        for (k, v) in &self.turn.user_attributes {
            if v.is_null() {
                user.remove(k);
            } else {
                user.insert(k.clone(), v.clone());
            }
        }
        user
    }

    /// The values conditions see, for the roots in `roots`.
    fn scope(&self, roots: &std::collections::BTreeSet<&'static str>) -> Scope {
        let user = if roots.contains("user") {
            self.user_now()
        } else {
            Map::new()
        };
        let c = self.ctx.contact;
        Scope::new(
            &ScopeInput {
                memory: &self.turn.state.memory,
                user: &user,
                contact: json!({"id": c.id, "phone": c.phone, "external_id": c.external_id}),
                channel: self.ctx.channel,
                now: self.ctx.now,
                date_keys: &self.flow.date_keys,
            },
            roots,
        )
    }

    /// Where `next` leads: the node, or the first branch whose condition
    /// holds. A condition that cannot be evaluated takes `else` and is
    /// written to the conversation's log.
    fn choose(&mut self, node: &Node, next: &Next) -> String {
        let branches = match next {
            Next::Node(n) => return n.clone(),
            Next::Branches(b) => b,
        };
        let mut roots = std::collections::BTreeSet::new();
        for b in branches {
            if let Some(e) = &b.when {
                roots.extend(e.roots().iter().copied());
            }
        }
        let scope = self.scope(&roots);
        for (i, b) in branches.iter().enumerate() {
            let Some(cond) = &b.when else {
                return b.then.clone();
            };
            match cond.eval_bool(&scope) {
                Ok(true) => return b.then.clone(),
                Ok(false) => {}
                Err(e) => {
                    self.turn.log.push(format!(
                        "node {}: next[{i}].if could not be evaluated, took else: {e}",
                        node.id
                    ));
                    return next.fallback().to_string();
                }
            }
        }
        next.fallback().to_string()
    }

    /// Runs a `set` node's assignments in order.
    fn assign(&mut self, node: &Node, assignments: &[crate::domain::flow::Assignment]) {
        for a in assignments {
            let value = match &a.value {
                SetValue::Literal(v) => Ok(v.clone()),
                SetValue::Template(t) => {
                    Ok(Value::String(merge::render_text(t, &self.merge_context())))
                }
                SetValue::Expr(e) => e.eval_json(&self.scope(e.roots())),
            };
            match value {
                Ok(v) => match &a.target {
                    SetTarget::Memory(k) => {
                        self.turn.state.memory.insert(k.clone(), v);
                    }
                    SetTarget::User(k) => {
                        self.turn.user_attributes.insert(k.clone(), v);
                    }
                },
                Err(e) => self.turn.log.push(format!(
                    "node {}: set {} was skipped: {e}",
                    node.id,
                    a.target.path()
                )),
            }
        }
    }

    /// Handles a global keyword; `false` when `text` is none.
    fn keyword(&mut self, text: &str) -> bool {
        let said = normalise(text);
        let Some(k) = self
            .flow
            .keywords
            .iter()
            .find(|k| normalise(&k.word) == said)
        else {
            return false;
        };
        let flow = self.flow;
        let here = self
            .turn
            .state
            .node
            .as_deref()
            .and_then(|id| flow.node(&self.turn.state.flow, id));
        if k.opt_out || k.opt_in {
            self.turn
                .user_attributes
                .insert("opted_out".into(), Value::Bool(k.opt_out));
            let t = if k.opt_out {
                EventType::ContactOptedOut
            } else {
                EventType::ContactOptedIn
            };
            self.emit(t, here, json!({ "keyword": k.word }));
        }
        let st = &mut self.turn.state;
        st.offered_slots.clear();
        st.quick_replies.clear();
        self.run(Jump {
            flow: MAIN.into(),
            node: k.next.clone(),
        });
        true
    }

    /// Handles the user's answer at the node the conversation waits at,
    /// one method per waiting kind.
    fn answer(&mut self, node: &'a Node, text: &str) {
        match &node.kind {
            FlowNode::Ask { .. } => self.answer_ask(node, text),
            FlowNode::Menu { .. } => self.answer_menu(node, text),
            FlowNode::Booking { .. } => self.answer_booking(node, text),
            // Not a waiting node (state written by an older engine, or a webhook
            // state without its pending call): run from it.
            _ => self.run(Jump {
                flow: self.turn.state.flow.clone(),
                node: node.id.clone(),
            }),
        }
    }

    /// An `ask`'s answer: validated (a choice also by its number), saved, then `next`.
    fn answer_ask(&mut self, node: &'a Node, text: &str) {
        let FlowNode::Ask {
            prompt,
            save_as,
            validate,
            retry,
            notify,
            datapoint,
            next,
            ..
        } = &node.kind
        else {
            return;
        };
        let flow_name = self.turn.state.flow.clone();
        let here = |n: &String| Jump {
            flow: flow_name.clone(),
            node: n.clone(),
        };
        let checked = match validate {
            Some(Validation::Choice { options }) => {
                // A choice also accepts the option's number.
                let said = normalise(text);
                let number = said.trim_end_matches(['.', ')']).parse::<usize>().ok();
                match number
                    .and_then(|n| n.checked_sub(1))
                    .and_then(|i| options.get(i))
                {
                    Some(o) => Ok(Value::String(o.clone())),
                    None => validate.as_ref().map_or(Ok(Value::Null), |v| v.check(text)),
                }
            }
            Some(v) => v.check(text),
            None => Ok(Value::String(text.trim().to_string())),
        };
        match checked {
            Err(reason) => {
                match retry {
                    Some(r) => self.say(r),
                    None => {
                        let prompt = self.render(prompt);
                        self.say_plain(format!("Sorry, {reason}. {prompt}"));
                    }
                }
                self.offer_again(node);
            }
            Ok(value) => {
                let mut memory = self.turn.state.memory.clone();
                memory.insert(save_as.clone(), value.clone());
                if grows_past(&self.turn.state.memory, &memory, MAX_MEMORY_BYTES) {
                    let prompt = self.render(prompt);
                    return self.say_plain(format!("{SORRY_TOO_BIG} {prompt}"));
                }
                self.turn.state.memory = memory;
                if *notify {
                    self.emit(
                        EventType::ResponseReceived,
                        Some(node),
                        json!({"field": save_as, "response": text}),
                    );
                }
                if *datapoint {
                    self.emit(
                        EventType::DatapointCollected,
                        Some(node),
                        json!({"field": save_as, "value": value}),
                    );
                }
                let target = self.choose(node, next);
                self.run(here(&target));
            }
        }
    }

    /// A menu's answer: an option by keyword or label, else the options again.
    fn answer_menu(&mut self, node: &'a Node, text: &str) {
        let FlowNode::Menu { options, retry, .. } = &node.kind else {
            return;
        };
        let flow_name = self.turn.state.flow.clone();
        let here = |n: &String| Jump {
            flow: flow_name.clone(),
            node: n.clone(),
        };
        let said = normalise(text);
        let number = said.trim_end_matches(['.', ')']).parse::<u32>().ok();
        let chosen = options
            .iter()
            .find(|o| number == Some(o.keyword))
            .or_else(|| options.iter().find(|o| normalise(&o.label) == said));
        let Some(o) = chosen else {
            let intro = match retry {
                Some(r) => self.render(r),
                None => {
                    "Sorry, I did not understand. Please choose one of the options:".to_string()
                }
            };
            return self.show_menu(intro, options);
        };
        if o.notify {
            self.emit(
                EventType::OptionSelected,
                Some(node),
                json!({"option": o.label, "keyword": o.keyword}),
            );
        }
        let target = match &o.goto {
            Goto::Node(n) => Some(here(n)),
            Goto::Campaign(c) => self.start_of(c),
        };
        let Some(target) = target else {
            return self.abort();
        };
        match &o.webhook {
            Some(name) => {
                self.turn.state.pending_webhook = Some(PendingWebhook {
                    name: name.clone(),
                    on_success: target,
                    on_error: self.error_target(&flow_name, None),
                });
                self.turn.call_webhook = Some(name.clone());
            }
            None => self.run(target),
        }
    }

    /// A booking's answer: the cancel keyword, or a slot by number or label.
    fn answer_booking(&mut self, node: &'a Node, text: &str) {
        let FlowNode::Booking {
            retry,
            cancel_keyword,
            next,
            ..
        } = &node.kind
        else {
            return;
        };
        let flow_name = self.turn.state.flow.clone();
        let here = |n: &String| Jump {
            flow: flow_name.clone(),
            node: n.clone(),
        };
        let said = normalise(text);
        if cancel_keyword
            .as_deref()
            .is_some_and(|k| normalise(k) == said)
        {
            let intro = match self.turn.state.memory.remove("appointment") {
                Some(apt) => {
                    let id = apt
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    let label = apt
                        .get("label")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    self.turn.cancel_booking = Some(id);
                    self.emit(
                        EventType::AppointmentCancelled,
                        Some(node),
                        json!({ "appointment": apt }),
                    );
                    format!("Your appointment on {label} is cancelled.")
                }
                None => "You have no appointment to cancel.".to_string(),
            };
            if let Some(j) = self.offer_slots(node, Some(intro)) {
                self.run(j);
            }
            return;
        }
        let offered = self.turn.state.offered_slots.clone();
        let number = said.trim_end_matches(['.', ')']).parse::<usize>().ok();
        let chosen = number
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| offered.get(i))
            .or_else(|| offered.iter().find(|s| normalise(&s.label) == said));
        let Some(slot) = chosen.cloned() else {
            let intro = match retry {
                Some(r) => self.render(r),
                None => "Sorry, please choose one of the times offered.".to_string(),
            };
            if let Some(j) = self.offer_slots(node, Some(intro)) {
                self.run(j);
            }
            return;
        };
        let still_free = self.ctx.free_slots.iter().any(|s| s.start == slot.start);
        if self.ctx.taken_slot == Some(slot.start) || !still_free {
            let intro = format!(
                "Sorry, {} was just taken. Please choose another time.",
                slot.label
            );
            if let Some(j) = self.offer_slots(node, Some(intro)) {
                self.run(j);
            }
            return;
        }
        let id = format!(
            "{}-{}-{}",
            self.ctx.conversation_id,
            slot.start.timestamp(),
            self.ctx.now.timestamp_millis()
        );
        let timezone = self.ctx.calendar.map_or("UTC", |c| c.timezone.as_str());
        let apt = json!({
            "id": id,
            "start": rfc3339(slot.start),
            "end": rfc3339(slot.end),
            "label": slot.label,
            "timezone": timezone,
        });
        self.turn
            .state
            .memory
            .insert("appointment".into(), apt.clone());
        self.turn.state.offered_slots.clear();
        self.turn.booking = Some(BookingClaim {
            id,
            start: slot.start,
            end: slot.end,
            label: slot.label.clone(),
        });
        self.emit(
            EventType::AppointmentBooked,
            Some(node),
            json!({ "appointment": apt }),
        );
        let target = self.choose(node, next);
        self.run(here(&target));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::tests::assert_valid;
    use crate::domain::flow::tests::FIXTURE;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn contact() -> Contact {
        let mut attributes = Map::new();
        attributes.insert("age".into(), json!(41));
        Contact {
            id: "ct_1".into(),
            phone: Some("+525500000000".into()),
            external_id: None,
            attributes,
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 11, 23, 12, 0, 0).unwrap()
    }

    fn slots(n: usize) -> Vec<Slot> {
        let cal: Calendar = serde_yaml_ng::from_str(
            "{ timezone: Europe/Madrid, slot_minutes: 30, hours: { mon: [\"09:00-12:00\"], tue: [\"09:00-12:00\"] } }",
        )
        .unwrap();
        cal.slots_between(now(), n)
    }

    /// A conversation driven step by step; checks every event against its schema.
    struct Chat {
        flow: Flow,
        state: State,
        contact: Contact,
        free: Vec<Slot>,
        table: Option<PriceTable>,
        calendar: Option<Calendar>,
    }

    impl Chat {
        fn new(yaml: &str) -> Chat {
            Chat {
                flow: Flow::from_yaml(yaml).unwrap(),
                state: State::new(),
                contact: contact(),
                free: slots(6),
                table: None,
                calendar: serde_yaml_ng::from_str("{ timezone: Europe/Madrid, slot_minutes: 30, hours: { mon: [\"09:00-12:00\"] } }").ok(),
            }
        }

        fn turn_with(&mut self, text: &str, taken: Option<DateTime<Utc>>, commit: bool) -> Turn {
            let ctx = Context {
                conversation_id: "cv_1",
                contact: &self.contact,
                now: now(),
                price_table: self.table.as_ref(),
                calendar: self.calendar.as_ref(),
                free_slots: &self.free,
                taken_slot: taken,
                channel: "api",
            };
            let t = step(&self.flow, &self.state, &ctx, Input::Text(text));
            check(&t);
            if commit {
                self.commit(&t);
            }
            t
        }

        /// Keeps the turn's state and merges its attribute changes, as the runtime does.
        fn commit(&mut self, t: &Turn) {
            self.state = t.state.clone();
            for (k, v) in &t.user_attributes {
                if v.is_null() {
                    self.contact.attributes.remove(k);
                } else {
                    self.contact.attributes.insert(k.clone(), v.clone());
                }
            }
        }

        /// Fires a timer at `now() + minutes`.
        fn timer(&mut self, kind: TimerKind, node: Option<&str>, minutes: i64) -> Turn {
            let ctx = Context {
                conversation_id: "cv_1",
                contact: &self.contact,
                now: now() + chrono::Duration::minutes(minutes),
                price_table: self.table.as_ref(),
                calendar: self.calendar.as_ref(),
                free_slots: &self.free,
                taken_slot: None,
                channel: "api",
            };
            let t = on_timer(&self.flow, &self.state, &ctx, kind, node);
            check(&t);
            self.commit(&t);
            t
        }

        fn send(&mut self, text: &str) -> Turn {
            self.turn_with(text, None, true)
        }

        fn resume(&mut self, result: Result<WebhookReply, String>) -> Turn {
            let ctx = Context {
                conversation_id: "cv_1",
                contact: &self.contact,
                now: now(),
                price_table: self.table.as_ref(),
                calendar: self.calendar.as_ref(),
                free_slots: &self.free,
                taken_slot: None,
                channel: "api",
            };
            let t = resume_after_webhook(&self.flow, &self.state, &ctx, result);
            check(&t);
            self.state = t.state.clone();
            t
        }
    }

    fn check(t: &Turn) {
        for e in &t.events {
            assert_valid(e);
        }
    }

    fn types(t: &Turn) -> Vec<&'static str> {
        t.events.iter().map(|e| e.event_type.as_str()).collect()
    }

    fn event(t: &Turn, ty: EventType) -> &Value {
        &t.events
            .iter()
            .find(|e| e.event_type == ty)
            .unwrap_or_else(|| panic!("no {ty} in {:?}", types(t)))
            .data
    }

    #[test]
    fn elipackage_transcript() {
        let mut c = Chat::new(FIXTURE);
        let t = c.send("hi");
        assert_eq!(types(&t), ["conversation.started", "message.received"]);
        assert_eq!(
            event(&t, EventType::ConversationStarted)["node"],
            Value::Null
        );
        assert_eq!(
            t.replies,
            ["Welcome to EliPackage, can you enter your name, please?"]
        );
        assert_eq!(c.state.node.as_deref(), Some("welcome"));

        let t = c.send("J");
        assert_eq!(types(&t), ["message.received"]);
        assert_eq!(t.replies, ["Please enter your name (2-80 characters)."]);
        assert_eq!(c.state.node.as_deref(), Some("welcome"));

        let t = c.send("John Doe");
        assert_eq!(types(&t), ["message.received", "response.received"]);
        let r = event(&t, EventType::ResponseReceived);
        assert_eq!(
            (
                r["response"].as_str(),
                r["field"].as_str(),
                r["label"].as_str()
            ),
            (Some("John Doe"), Some("name"), Some("Welcome Message"))
        );
        assert_eq!(r["contact"]["phone"], json!("+525500000000"));
        assert_eq!(
            t.replies,
            [
                "John Doe, enter the best option for streaming membership:\n1. One month\n2. Six months\n3. One year\n4. Raffle\n5. Weather"
            ]
        );
        assert_eq!(
            t.quick_replies,
            ["One month", "Six months", "One year", "Raffle", "Weather"]
        );
        assert_eq!(c.state.memory["name"], json!("John Doe"));

        let t = c.send("one  MONTH");
        assert_eq!(
            types(&t),
            [
                "message.received",
                "option.selected",
                "conversation.completed"
            ]
        );
        let o = event(&t, EventType::OptionSelected);
        assert_eq!(
            (o["option"].clone(), o["keyword"].clone()),
            (json!("One month"), json!(1))
        );
        assert_eq!(o["node"], json!("membership"));
        assert_eq!(t.replies, ["Thank you, John Doe!"]);
        assert!(t.ended && c.state.completed);

        // A completed conversation is the caller's job.
        let t = c.send("hello again");
        assert!(t.ended && t.events.is_empty() && t.replies.is_empty());
    }

    fn at_menu() -> Chat {
        let mut c = Chat::new(FIXTURE);
        c.send("hi");
        c.send("Ana Gómez");
        c
    }

    #[test]
    fn menu_by_number_label_and_invalid() {
        let mut c = at_menu();
        let t = c.send("7");
        assert_eq!(types(&t), ["message.received"]);
        assert_eq!(
            t.replies[0],
            "Please answer 1, 2, 3, 4 or 5.\n1. One month\n2. Six months\n3. One year\n4. Raffle\n5. Weather"
        );
        assert_eq!(t.quick_replies.len(), 5);
        assert_eq!(c.state.node.as_deref(), Some("membership"));
        let t = c.send(" 2 ");
        assert_eq!(
            event(&t, EventType::OptionSelected)["option"],
            json!("Six months")
        );
        assert!(t.ended);

        let mut c = at_menu();
        let t = c.send("ONE year");
        assert_eq!(event(&t, EventType::OptionSelected)["keyword"], json!(3));
    }

    #[test]
    fn campaign_redirect() {
        let mut c = at_menu();
        let t = c.send("raffle");
        assert_eq!(
            types(&t),
            ["message.received", "conversation.completed"],
            "raffle has no notify"
        );
        assert_eq!(t.replies, ["You are in the raffle!"]);
        assert_eq!(c.state.flow, "raffle");
        assert_eq!(
            event(&t, EventType::ConversationCompleted)["flow"],
            json!("raffle")
        );
        assert_eq!(
            event(&t, EventType::ConversationCompleted)["node"],
            json!("r2")
        );
    }

    const ASKS: &str = r#"
start: email
nodes:
  email: { ask: "Email?", save_as: email, validate: { kind: email }, datapoint: true, next: phone }
  phone: { ask: "Phone?", save_as: phone, validate: { kind: phone }, datapoint: true, notify: true, next: qty }
  qty: { ask: "How many, {{user.age}}?", save_as: qty, validate: { kind: number, min: 1, max: 10, integer: true }, next: when }
  when: { ask: "When?", save_as: when, validate: { kind: date }, next: size }
  size: { ask: "Size?", save_as: size, validate: { kind: choice, options: [Small, Large] }, next: code }
  code: { ask: "Code?", save_as: code, validate: { kind: regex, pattern: "[A-Z]{3}" }, next: note }
  note: { ask: "Anything else?", save_as: note, next: done }
  done: { end: true, message: "Saved {{memory.email}} {{memory.phone}} {{memory.qty}} {{memory.when}} {{memory.size}} {{memory.code}} {{memory.note}}" }
"#;

    #[test]
    fn ask_kinds_and_datapoints() {
        let mut c = Chat::new(ASKS);
        c.send("hi");
        let t = c.send("not an email");
        assert!(
            t.replies[0].starts_with("Sorry, it must be an e-mail address")
                && t.replies[0].ends_with("Email?"),
            "{:?}",
            t.replies
        );
        let t = c.send("Ana@Example.com");
        assert_eq!(types(&t), ["message.received", "datapoint.collected"]);
        assert_eq!(
            event(&t, EventType::DatapointCollected)["value"],
            json!("Ana@example.com")
        );
        let t = c.send("+52 55 0000 0000");
        assert_eq!(
            types(&t),
            [
                "message.received",
                "response.received",
                "datapoint.collected"
            ]
        );
        assert_eq!(
            event(&t, EventType::DatapointCollected)["value"],
            json!("+525500000000")
        );
        assert_eq!(
            event(&t, EventType::ResponseReceived)["response"],
            json!("+52 55 0000 0000")
        );
        assert_eq!(
            t.replies,
            ["How many, 41?"],
            "user attributes in merge tags"
        );
        assert_eq!(c.send("11").replies.len(), 1);
        assert_eq!(c.state.node.as_deref(), Some("qty"));
        c.send("3");
        assert!(c.send("31/02/2025").replies[0].starts_with("Sorry"));
        c.send("28/02/2025");
        c.send(" large ");
        assert!(c.send("abcd").replies[0].starts_with("Sorry"));
        c.send("ABC");
        let t = c.send("  no thanks ");
        assert_eq!(
            t.replies,
            ["Saved Ana@example.com +525500000000 3 2025-02-28 Large ABC no thanks"]
        );
        assert!(t.ended);
    }

    const QUOTE: &str = r#"
start: product
error: oops
nodes:
  product: { ask: "Which box?", save_as: product, next: qty }
  qty: { ask: "How many?", save_as: qty, validate: { kind: number, min: 1, integer: true }, next: price }
  price: { quote: true, next: show }
  show: { message: "Total {{quote.total}} {{quote.currency}} (tax {{quote.tax}}) until {{quote.valid_until}}", next: done }
  oops: { message: "Let us try again.", next: product }
  done: { end: true }
"#;

    fn table() -> PriceTable {
        serde_yaml_ng::from_str(
            "{ currency: MXN, tax_rate: \"0.16\", validity_days: 10, item_from: product, items: [ { key: small, name: Small box, unit_price: \"12.50\", quantity_from: qty } ] }",
        )
        .unwrap()
    }

    #[test]
    fn quote_node() {
        let mut c = Chat::new(QUOTE);
        c.table = Some(table());
        c.send("hi");
        c.send("small box");
        let t = c.send("2");
        assert_eq!(
            types(&t),
            [
                "message.received",
                "quote.generated",
                "conversation.completed"
            ]
        );
        assert_eq!(
            event(&t, EventType::QuoteGenerated)["quote"]["total"],
            json!("29.00")
        );
        assert_eq!(t.replies, ["Total 29.00 MXN (tax 4.00) until 2025-12-03"]);
        assert_eq!(c.state.memory["quote"]["subtotal"], json!("25.00"));

        // Pricing error: polite reason, then the flow's error node.
        let mut c = Chat::new(QUOTE);
        c.table = Some(table());
        c.send("hi");
        c.send("boat");
        let t = c.send("1");
        assert_eq!(types(&t), ["message.received"]);
        assert_eq!(
            t.replies,
            [
                "Sorry, we could not prepare your quote: we do not sell \"boat\".",
                "Let us try again.",
                "Which box?"
            ]
        );

        // No price table at all.
        let mut c = Chat::new(QUOTE);
        c.send("hi");
        c.send("small");
        let t = c.send("1");
        assert!(
            t.replies[0].contains("no prices are set up"),
            "{:?}",
            t.replies
        );
    }

    const BOOKING: &str = r#"
start: book
nodes:
  book: { booking: "Pick a time:", offer: 3, next: ok, cancel_keyword: cancel }
  ok: { message: "Booked {{appointment.label}} ({{appointment.timezone}}).", next: again }
  again: { booking: "Another?", offer: 2, next: done, cancel_keyword: Cancel, on_error: done }
  done: { end: true }
"#;

    #[test]
    fn booking_offer_claim_taken_and_cancel() {
        let mut c = Chat::new(BOOKING);
        let t = c.send("hi");
        assert_eq!(
            t.replies,
            ["Pick a time:\n1. Mon 24 Nov 09:00\n2. Mon 24 Nov 09:30\n3. Mon 24 Nov 10:00"]
        );
        assert_eq!(
            t.quick_replies,
            ["Mon 24 Nov 09:00", "Mon 24 Nov 09:30", "Mon 24 Nov 10:00"]
        );

        // Choice by number; the store refuses it, so the caller retries with taken_slot.
        let first = c.turn_with("2", None, false);
        let claim = first.booking.clone().unwrap();
        assert_eq!(claim.label, "Mon 24 Nov 09:30");
        assert_eq!(types(&first), ["message.received", "appointment.booked"]);
        let t = c.turn_with("2", Some(claim.start), true);
        assert_eq!(
            types(&t),
            ["message.received"],
            "no booking event for a taken slot"
        );
        assert!(t.booking.is_none());
        assert_eq!(
            t.replies,
            [
                "Sorry, Mon 24 Nov 09:30 was just taken. Please choose another time.",
                "Pick a time:\n1. Mon 24 Nov 09:00\n2. Mon 24 Nov 10:00\n3. Mon 24 Nov 10:30"
            ]
        );
        c.free.retain(|s| s.start != claim.start);

        // Choice by label.
        let t = c.send("mon 24 nov 10:30");
        let claim = t.booking.clone().unwrap();
        assert_eq!(
            claim.start,
            "2025-11-24T09:30:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        let apt = &event(&t, EventType::AppointmentBooked)["appointment"];
        assert_eq!(apt["start"], json!("2025-11-24T09:30:00Z"));
        assert_eq!(apt["timezone"], json!("Europe/Madrid"));
        assert_eq!(apt["id"], json!(claim.id));
        assert_eq!(t.replies[0], "Booked Mon 24 Nov 10:30 (Europe/Madrid).");
        assert_eq!(c.state.memory["appointment"], *apt);
        c.free.retain(|s| s.start != claim.start);

        // Invalid answer re-offers.
        let t = c.send("tomorrow");
        assert_eq!(
            t.replies[0],
            "Sorry, please choose one of the times offered."
        );
        assert_eq!(t.replies.len(), 2);

        // Cancel at the next booking node.
        let t = c.send("  CANCEL ");
        assert_eq!(types(&t), ["message.received", "appointment.cancelled"]);
        assert_eq!(t.cancel_booking.as_deref(), Some(claim.id.as_str()));
        assert_eq!(
            event(&t, EventType::AppointmentCancelled)["appointment"]["id"],
            json!(claim.id)
        );
        assert!(!c.state.memory.contains_key("appointment"));
        assert_eq!(
            t.replies[0],
            "Your appointment on Mon 24 Nov 10:30 is cancelled."
        );
        let t = c.send("cancel");
        assert_eq!(t.replies[0], "You have no appointment to cancel.");
        assert!(t.cancel_booking.is_none());
    }

    #[test]
    fn booking_without_free_slots_moves_on() {
        let mut c = Chat::new(BOOKING);
        c.free.clear();
        let t = c.send("hi");
        // `book` has no on_error: it goes to `next`; `again` goes to its on_error.
        assert_eq!(t.replies, [SORRY_NO_SLOTS, "Booked  ().", SORRY_NO_SLOTS]);
        assert!(t.booking.is_none() && t.ended);
        assert_eq!(c.state.node.as_deref(), Some("done"));
    }

    const HOOKS: &str = r#"
start: look
error: oops
nodes:
  look: { webhook: weather, next: show, on_error: sorry }
  show: { ask: "{{memory.city}} is {{memory.sky}}. Pick one, {{user.nick}}:", save_as: pick, next: done }
  sorry: { message: "Weather is unavailable.", next: done }
  oops: { message: "Something broke.", next: done }
  done: { end: true, message: "You said {{memory.pick}} / {{memory.quickreply}}" }
  m:
    menu: Choose
    options:
      - { label: Poll, webhook: polls, campaign: polls }
campaigns:
  polls:
    start: p1
    nodes:
      p1: { message: "Poll time!", next: p2 }
      p2: { end: true }
"#;

    #[test]
    fn webhook_stop_and_resume_success() {
        let mut c = Chat::new(HOOKS);
        c.state.memory.insert("stale".into(), json!("x"));
        let t = c.send("hi");
        assert_eq!(t.call_webhook.as_deref(), Some("weather"));
        assert!(t.replies.is_empty());
        // A message while the webhook is pending asks for it again.
        let t = c.send("hello?");
        assert_eq!(
            (types(&t), t.call_webhook.as_deref()),
            (vec!["message.received"], Some("weather"))
        );

        let reply = WebhookReply::from_json(&json!({
            "responses": ["Checking {{memory.city}}…"],
            "memory": {"city": "Madrid", "sky": "sunny", "stale": null},
            "user_attributes": {"nick": "Ace"},
            "quickreplies": ["Red", "Blue"],
            "extra": 1
        }))
        .unwrap();
        let t = c.resume(Ok(reply));
        assert_eq!(
            t.replies,
            [
                "Checking {{memory.city}}…",
                "Madrid is sunny. Pick one, Ace:"
            ],
            "returned text is shown as written; the flow's own texts are rendered"
        );
        assert_eq!(t.quick_replies, ["Red", "Blue"]);
        assert_eq!(t.user_attributes["nick"], json!("Ace"));
        assert!(!c.state.memory.contains_key("stale"), "null deletes");
        let t = c.send("blue");
        assert_eq!(c.state.memory["quickreply"], json!("Blue"));
        assert_eq!(t.replies, ["You said blue / Blue"]);
    }

    #[test]
    fn webhook_reply_types_are_checked() {
        assert!(
            WebhookReply::from_json(&json!({"responses": "hi"}))
                .unwrap_err()
                .contains("responses")
        );
        assert!(
            WebhookReply::from_json(&json!({"memory": []}))
                .unwrap_err()
                .contains("memory")
        );
        assert!(WebhookReply::from_json(&json!([1])).is_err());
        assert_eq!(
            WebhookReply::from_json(&json!({})).unwrap(),
            WebhookReply::default()
        );
    }

    #[test]
    fn webhook_failure_paths() {
        // on_error of the node.
        let mut c = Chat::new(HOOKS);
        c.send("hi");
        let t = c.resume(Err("timeout".into()));
        assert_eq!(t.replies, ["Weather is unavailable.", "You said  / "]);

        // The flow's error node when the node has none.
        let mut c = Chat::new(&HOOKS.replace(", on_error: sorry", ""));
        c.send("hi");
        let t = c.resume(Err("HTTP 500".into()));
        assert_eq!(t.replies[0], "Something broke.");

        // No error node at all: apologise and go on.
        let mut c = Chat::new(
            &HOOKS
                .replace(", on_error: sorry", "")
                .replace("error: oops\n", ""),
        );
        c.send("hi");
        let t = c.resume(Err("dns".into()));
        assert_eq!(t.replies[0], SORRY_WEBHOOK);
        assert_eq!(c.state.node.as_deref(), Some("show"));

        // Resuming with nothing pending changes nothing.
        let before = c.state.clone();
        let t = c.resume(Ok(WebhookReply::default()));
        assert!(t.replies.is_empty() && t.events.is_empty() && c.state == before);
    }

    #[test]
    fn option_webhook_then_campaign() {
        let mut c = Chat::new(&HOOKS.replace("start: look", "start: m"));
        c.send("hi");
        let t = c.send("1");
        assert_eq!(t.call_webhook.as_deref(), Some("polls"));
        let t = c.resume(Ok(WebhookReply::default()));
        assert_eq!(t.replies, ["Poll time!"]);
        assert_eq!(c.state.flow, "polls");
        assert!(t.ended);
        // Failure of an option webhook goes to the flow's error node.
        let mut c = Chat::new(&HOOKS.replace("start: look", "start: m"));
        c.send("hi");
        c.send("poll");
        let t = c.resume(Err("refused".into()));
        assert_eq!(t.replies[0], "Something broke.");
    }

    #[test]
    fn end_node() {
        let mut c = Chat::new(
            "start: a\nnodes:\n  a: { message: \"Hi {{contact.phone}}\", next: b }\n  b: { end: true, message: Bye }\n",
        );
        let t = c.send("hey");
        assert_eq!(t.replies, ["Hi +525500000000", "Bye"]);
        assert_eq!(
            types(&t),
            [
                "conversation.started",
                "message.received",
                "conversation.completed"
            ]
        );
        assert!(t.ended && c.state.completed);
    }

    #[test]
    fn flow_changed_restarts() {
        let mut c = at_menu();
        c.flow = Flow::from_yaml(&FIXTURE.replace("membership", "plans")).unwrap();
        let t = c.send("1");
        assert_eq!(types(&t), ["message.received"]);
        assert_eq!(t.events[0].data["node"], json!("membership"));
        assert_eq!(
            t.replies,
            [
                RESTARTED,
                "Welcome to EliPackage, can you enter your name, please?"
            ]
        );
        assert_eq!(c.state.node.as_deref(), Some("welcome"));
        assert_eq!(c.state.memory["name"], json!("Ana Gómez"), "memory kept");
    }

    #[test]
    fn runaway_loop_guard() {
        let mut c = Chat::new(
            "start: a\nnodes:\n  a: { message: again, next: b }\n  b: { message: and again, next: a }\n",
        );
        let t = c.send("hi");
        assert_eq!(t.replies.len(), MAX_HOPS + 1);
        assert_eq!(t.replies.last().map(String::as_str), Some(SORRY_BROKEN));
        assert!(t.ended && c.state.completed);
        assert!(!types(&t).contains(&"conversation.completed"));
    }

    #[test]
    fn unreadable_input_is_asked_again() {
        let mut c = Chat::new(FIXTURE);
        let t = c.send("   ");
        assert!(t.events.is_empty() && c.state.node.is_none());
        assert_eq!(t.replies[1], "Please send a text message.");
        c.send("hi");
        let before = c.state.clone();
        for bad in ["", "\u{0}", "a\u{7}b", &"x".repeat(MAX_TEXT + 1)] {
            let t = c.send(bad);
            assert!(t.events.is_empty(), "{bad:?}");
            assert!(t.replies[0].starts_with(SORRY_UNREADABLE));
            assert_eq!(
                t.replies[1],
                "Welcome to EliPackage, can you enter your name, please?"
            );
            assert_eq!(c.state, before);
        }
        let t = c.send("Ana\n\tGómez");
        assert_eq!(types(&t), ["message.received", "response.received"]);
    }

    #[test]
    fn state_round_trips_as_json() {
        let mut c = at_menu();
        c.state.offered_slots = slots(2);
        let v = serde_json::to_value(&c.state).unwrap();
        assert_eq!(serde_json::from_value::<State>(v).unwrap(), c.state);
    }

    const LEADS: &str = include_str!("../../examples/leads.yaml");
    const HELPDESK: &str = include_str!("../../examples/helpdesk.yaml");

    fn example_flow(src: &str) -> String {
        let bot = crate::domain::flow::BotFile::from_yaml(src).unwrap();
        bot.flow.to_yaml()
    }

    #[test]
    fn conditions_route_and_set_scores() {
        let mut c = Chat::new(&example_flow(LEADS));
        let t = c.send("hi");
        assert_eq!(
            t.replies,
            [
                "Hi! Three quick questions and we will put you in touch with the right team.",
                "What is your work e-mail?"
            ]
        );
        assert_eq!(t.media.len(), 1);
        assert_eq!(t.media[0].0, 0, "the image goes with the first reply");
        assert_eq!(t.media[0].1.url, "https://example.com/leads/welcome.png");
        c.send("ana@acme.com");
        c.send("1500");
        let t = c.send("3");
        assert_eq!(
            c.state.memory["size"],
            json!("50 or more"),
            "a choice by number"
        );
        assert_eq!(c.state.memory["score"], json!(100));
        assert_eq!(
            c.state.memory["summary"],
            json!("ana@acme.com, 1500 EUR, 50 or more people")
        );
        assert_eq!(t.user_attributes["segment"], json!("enterprise"));
        assert_eq!(
            t.replies,
            ["Great fit! A sales engineer will write to ana@acme.com today (score 100)."]
        );
        assert!(t.ended && t.log.is_empty());

        // A low score goes to the else branch, with its file.
        let mut c = Chat::new(&example_flow(LEADS));
        c.send("hi");
        c.send("bob@gmail.com");
        c.send("50");
        let t = c.send("1-9");
        assert_eq!(c.state.memory["score"], json!(0));
        assert_eq!(
            t.replies[0],
            "Thank you! Our free plan is a good place to start."
        );
        assert_eq!(t.media[0].1.kind, crate::domain::flow::MediaKind::File);
    }

    #[test]
    fn an_evaluation_error_takes_else_and_is_logged() {
        let y = r#"
start: q
nodes:
  q: { ask: "Code?", save_as: code, next: route }
  route:
    set: { memory.n: "memory.code + 1" }
    next:
      - if: memory.code >= 10
        then: big
      - else: small
  big: { message: big, next: done }
  small: { message: small, next: done }
  done: { end: true }
"#;
        let mut c = Chat::new(y);
        c.send("hi");
        let t = c.send("12");
        // The answer is text: "12" + 1 and "12" >= 10 are type errors.
        assert_eq!(t.replies, ["small"]);
        assert_eq!(t.log.len(), 2, "{:?}", t.log);
        assert!(t.log[0].contains("set memory.n was skipped"), "{:?}", t.log);
        assert!(t.log[1].contains("next[0].if"), "{:?}", t.log);
        assert!(!c.state.memory.contains_key("n"));
        assert!(t.ended, "never stuck");
    }

    #[test]
    fn keywords_come_first_and_opt_out() {
        let mut c = Chat::new(&example_flow(LEADS));
        c.send("hi");
        c.send("ana@acme.com");
        // "MENU" (case and spaces ignored) starts over at any waiting node.
        let t = c.send("  MENU ");
        assert_eq!(types(&t), ["message.received"]);
        assert_eq!(t.replies[1], "What is your work e-mail?");
        assert_eq!(c.state.node.as_deref(), Some("email"));
        let t = c.send("Stop");
        assert_eq!(
            types(&t),
            [
                "message.received",
                "contact.opted_out",
                "conversation.completed"
            ]
        );
        assert_eq!(
            event(&t, EventType::ContactOptedOut)["keyword"],
            json!("stop")
        );
        assert_eq!(c.contact.attributes["opted_out"], json!(true));
        assert!(t.ended);
        // A new conversation: "start" opts back in and runs its node.
        c.state = State::new();
        let t = c.send("start");
        assert_eq!(
            types(&t),
            [
                "conversation.started",
                "message.received",
                "contact.opted_in"
            ]
        );
        assert_eq!(c.contact.attributes["opted_out"], json!(false));
        assert_eq!(c.state.node.as_deref(), Some("email"));
    }

    #[test]
    fn choices_are_tappable_and_numbered() {
        let mut c = Chat::new(&example_flow(HELPDESK));
        c.send("hi");
        let t = c.send("Printer on fire");
        assert_eq!(t.quick_replies, ["low", "high", "critical"]);
        let t = c.send("4");
        assert_eq!(
            t.replies,
            ["Sorry, it must be one of: low, high, critical. How bad is it: low, high or critical?
1. low
2. high
3. critical"]
        );
        assert_eq!(t.quick_replies, ["low", "high", "critical"]);
        let t = c.send("3");
        assert_eq!(
            event(&t, EventType::ResponseReceived)["response"],
            json!("3")
        );
        assert_eq!(c.state.memory["severity"], json!("critical"));
        assert_eq!(
            t.replies,
            ["Critical: the on-call engineer has been paged and will call you within 15 minutes."]
        );
    }

    #[test]
    fn timers_remind_time_out_and_expire() {
        let mut c = Chat::new(&example_flow(HELPDESK));
        let t = c.send("hi");
        let plans: Vec<TimerKind> = t.timers.clone().unwrap().iter().map(|p| p.kind).collect();
        assert_eq!(plans, [TimerKind::Expiry], "describe has no reminder");
        let t = c.send("VPN is down");
        let plans = t.timers.clone().unwrap();
        assert_eq!(
            plans
                .iter()
                .map(|p| (p.kind, (p.due_at - now()).num_minutes()))
                .collect::<Vec<_>>(),
            [
                (TimerKind::Reminder, 10),
                (TimerKind::Timeout, 30),
                (TimerKind::Expiry, 24 * 60)
            ]
        );
        // The reminder: said once, the other timers stay.
        let t = c.timer(TimerKind::Reminder, Some("severity"), 10);
        assert_eq!(
            t.replies,
            [
                "Are you still there? Choose low, high or critical so we can route your ticket.
1. low
2. high
3. critical"
            ]
        );
        assert!(t.timers.is_none() && t.events.is_empty());
        // A timer set at a node the conversation left does nothing.
        let t = c.timer(TimerKind::Reminder, Some("describe"), 11);
        assert!(t.replies.is_empty());
        // The timeout goes to on_timeout.
        let t = c.timer(TimerKind::Timeout, Some("severity"), 30);
        assert_eq!(
            t.replies,
            ["We did not hear back, so we opened a ticket with what you told us."]
        );
        assert!(t.ended);
        assert_eq!(t.timers, Some(vec![]));

        // Expiry ends an idle conversation with conversation.expired.
        let mut c = Chat::new(&example_flow(HELPDESK));
        c.send("hi");
        let t = c.timer(TimerKind::Expiry, None, 24 * 60);
        assert_eq!(types(&t), ["conversation.expired"]);
        assert_eq!(
            event(&t, EventType::ConversationExpired)["node"],
            json!("describe")
        );
        assert!(t.ended && c.state.completed);
        assert_eq!(t.timers, Some(vec![]));
        // Nothing fires on a completed conversation.
        assert!(c.timer(TimerKind::Expiry, None, 25 * 60).events.is_empty());
    }

    /// An `ask`, then `messages` message nodes and an `end`, each text being
    /// `{{memory.n}}` 341 times (4,092 characters, under the flow's limit).
    fn multiplier(messages: usize) -> String {
        let tags = "{{memory.n}}".repeat(341);
        let mut yaml = String::from(
            "start: ask\nnodes:\n  ask: { ask: \"Say something\", save_as: n, next: m1 }\n",
        );
        for i in 1..=messages {
            let next = if i == messages {
                "done".to_string()
            } else {
                format!("m{}", i + 1)
            };
            yaml.push_str(&format!(
                "  m{i}: {{ message: \"{tags}\", next: {next} }}\n"
            ));
        }
        yaml.push_str(&format!("  done: {{ end: true, message: \"{tags}\" }}\n"));
        yaml
    }

    #[test]
    fn merge_tags_cannot_multiply_the_output() {
        // 100 texts of 341 tags after a 4,000-character answer rendered to
        // 136 MB before the caps.
        let mut c = Chat::new(&multiplier(99));
        c.send("hi");
        let t = c.send(&"x".repeat(4000));
        assert_eq!(types(&t), ["message.received", "conversation.completed"]);
        assert!(t.ended);
        assert_eq!(c.state.memory["n"], json!("x".repeat(4000)));
        let total: usize = t.replies.iter().map(String::len).sum();
        assert_eq!(t.replies.len(), MAX_TURN_BYTES / MAX_REPLY_BYTES);
        assert_eq!(total, MAX_TURN_BYTES);
        for r in &t.replies {
            assert_eq!(r.len(), MAX_REPLY_BYTES);
            assert!(r.ends_with(CUT_MARKER));
            assert!(r.trim_end_matches(CUT_MARKER).bytes().all(|b| b == b'x'));
        }
        assert_eq!(
            t.cut,
            ReplyCut {
                shortened: 16,
                dropped: 100 - 16
            }
        );

        // Multi-byte text is cut on a char boundary.
        let mut c = Chat::new(&multiplier(2));
        c.send("hi");
        let t = c.send(&"€".repeat(1000));
        assert_eq!(t.replies.len(), 3);
        for r in &t.replies {
            assert!(r.len() <= MAX_REPLY_BYTES && r.ends_with(CUT_MARKER));
            assert!(r.trim_end_matches(CUT_MARKER).chars().all(|ch| ch == '€'));
        }
        assert_eq!(t.cut.shortened, 3);
    }

    #[test]
    fn a_long_menu_text_is_cut_before_its_options() {
        let mut c = Chat::new(&format!(
            "start: a\nnodes:\n  a: {{ ask: \"Name?\", save_as: n, next: m }}\n  m:\n    menu: \"{}\"\n    options:\n      - {{ keyword: 1, label: One, next: done }}\n      - {{ keyword: 2, label: Two, next: done }}\n  done: {{ end: true }}\n",
            "{{memory.n}}".repeat(341)
        ));
        c.send("hi");
        let t = c.send(&"y".repeat(4000));
        assert_eq!(t.replies.len(), 1);
        let menu = &t.replies[0];
        assert!(menu.len() <= MAX_REPLY_BYTES, "{}", menu.len());
        assert!(
            menu.ends_with(&format!("{CUT_MARKER}\n1. One\n2. Two")),
            "{}",
            &menu[menu.len() - 40..]
        );
        assert_eq!(t.cut.shortened, 1);
    }

    #[test]
    fn the_turn_budget_cuts_the_reply_that_crosses_it() {
        let full = || std::iter::repeat_n("a".repeat(MAX_REPLY_BYTES), 15);

        // Room left for part of the crossing reply: it is cut to fit, and
        // anything after it is dropped. Blank replies are skipped.
        let mut cut = ReplyCut::default();
        let replies = std::iter::once("  ".to_string())
            .chain(full())
            .chain(["d".repeat(4000), "b".repeat(5000), "z".into()])
            .collect();
        let out = cap_replies(replies, &mut cut);
        assert_eq!(out.len(), 17);
        assert_eq!(out.iter().map(String::len).sum::<usize>(), MAX_TURN_BYTES);
        assert_eq!(out[16], format!("{}{CUT_MARKER}", "b".repeat(90)));
        assert_eq!(
            cut,
            ReplyCut {
                shortened: 1,
                dropped: 1
            }
        );

        // Less room left than the marker: the crossing reply is dropped and
        // the one before it carries the marker.
        let mut cut = ReplyCut::default();
        let replies = full()
            .chain(["c".repeat(MAX_REPLY_BYTES - 2), "bbbbbbbbbb".into()])
            .collect();
        let out = cap_replies(replies, &mut cut);
        assert_eq!(out.len(), 16);
        assert_eq!(out.iter().map(String::len).sum::<usize>(), MAX_TURN_BYTES);
        assert_eq!(
            out[15],
            format!("{}{CUT_MARKER}", "c".repeat(MAX_REPLY_BYTES - 6))
        );
        assert_eq!(
            cut,
            ReplyCut {
                shortened: 1,
                dropped: 1
            }
        );

        // Within both caps nothing changes.
        let mut cut = ReplyCut::default();
        let replies: Vec<String> = full().collect();
        assert_eq!(cap_replies(replies.clone(), &mut cut), replies);
        assert!(cut.is_empty());
    }

    #[test]
    fn webhook_text_is_never_rendered() {
        let mut c = Chat::new(HOOKS);
        c.state.memory.insert("secret".into(), json!("s3cr3t"));
        c.send("hi");
        let echoed = "{{memory.secret}} {{contact.id}} {{user.age}}";
        let reply = WebhookReply::from_json(&json!({
            "responses": [echoed],
            "memory": {"city": "Madrid", "sky": "sunny"},
            "quickreplies": [echoed],
        }))
        .unwrap();
        let t = c.resume(Ok(reply));
        assert_eq!(t.replies[0], echoed);
        assert_eq!(t.quick_replies, [echoed]);
        assert!(!t.replies.concat().contains("s3cr3t"));
        // Choosing it stores it as offered, still as text.
        let t = c.send(echoed);
        assert_eq!(c.state.memory["quickreply"], json!(echoed));
        assert!(t.replies[0].contains("{{contact.id}}"), "{:?}", t.replies);
    }

    fn filler(bytes: usize) -> Value {
        json!("f".repeat(bytes))
    }

    #[test]
    fn memory_and_attributes_are_bounded() {
        // A webhook reply that would grow memory past the bound takes the
        // failure path, and memory stays as it was.
        let mut c = Chat::new(HOOKS);
        c.state
            .memory
            .insert("fill".into(), filler(MAX_MEMORY_BYTES - 5_000));
        c.send("hi");
        let before = c.state.memory.clone();
        let big = WebhookReply::from_json(&json!({"memory": {"more": filler(10_000)}})).unwrap();
        assert_eq!(
            check_reply_size(&big, &c.state, &c.contact, &Map::new()),
            Err(TooLarge::Memory)
        );
        let t = c.resume(Ok(big));
        assert_eq!(t.replies[0], "Weather is unavailable.");
        assert_eq!(c.state.memory, before);

        // Over the bound already (an older conversation): shrinking is allowed.
        let mut c = Chat::new(HOOKS);
        c.state
            .memory
            .insert("fill".into(), filler(MAX_MEMORY_BYTES + 10));
        c.send("hi");
        let shrink = WebhookReply::from_json(
            &json!({"memory": {"fill": null, "city": "Oslo", "sky": "grey"}}),
        )
        .unwrap();
        let t = c.resume(Ok(shrink));
        assert_eq!(t.replies[0], "Oslo is grey. Pick one, :");

        // Contact attributes, counting the changes earlier in the turn.
        let mut contact = contact();
        contact
            .attributes
            .insert("fill".into(), filler(MAX_ATTRIBUTES_BYTES - 20_000));
        let mut pending = Map::new();
        pending.insert("more".into(), filler(15_000));
        let reply =
            WebhookReply::from_json(&json!({"user_attributes": {"x": filler(6_000)}})).unwrap();
        let state = State::new();
        assert_eq!(
            check_reply_size(&reply, &state, &contact, &Map::new()),
            Ok(())
        );
        assert_eq!(
            check_reply_size(&reply, &state, &contact, &pending),
            Err(TooLarge::UserAttributes)
        );

        // An answer that would not fit is asked again, with nothing saved.
        let mut c = Chat::new(
            "start: a\nnodes:\n  a: { ask: \"Note?\", save_as: note, notify: true, next: b }\n  b: { end: true }\n",
        );
        c.state
            .memory
            .insert("fill".into(), filler(MAX_MEMORY_BYTES - 1_000));
        c.send("hi");
        let before = c.state.clone();
        let t = c.send(&"n".repeat(4000));
        assert_eq!(types(&t), ["message.received"]);
        assert_eq!(t.replies, [format!("{SORRY_TOO_BIG} Note?")]);
        assert_eq!(c.state, before);
        let t = c.send("short");
        assert_eq!(
            types(&t),
            [
                "message.received",
                "response.received",
                "conversation.completed"
            ]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        #[test]
        fn replies_stay_within_the_caps(lens in prop::collection::vec((0usize..6000, 0usize..3), 0..40)) {
            let chars = ['a', 'é', '€'];
            let replies: Vec<String> = lens
                .iter()
                .map(|&(n, c)| chars[c].to_string().repeat(n / chars[c].len_utf8()))
                .collect();
            let mut cut = ReplyCut::default();
            let out = cap_replies(replies.clone(), &mut cut);
            prop_assert!(out.iter().map(String::len).sum::<usize>() <= MAX_TURN_BYTES);
            prop_assert!(out.iter().all(|r| r.len() <= MAX_REPLY_BYTES && !r.trim().is_empty()));
            let said: Vec<String> = replies.into_iter().filter(|r| !r.trim().is_empty()).collect();
            prop_assert_eq!(out.len() + cut.dropped, said.len());
            if cut.is_empty() {
                prop_assert_eq!(out, said);
            }
        }

        #[test]
        fn step_never_panics(texts in prop::collection::vec("\\PC{0,40}|[0-9 ]{1,3}|.{0,10}", 1..6)) {
            let mut c = Chat::new(FIXTURE);
            for t in &texts {
                let turn = c.send(t);
                if let Some(name) = turn.call_webhook {
                    prop_assert_eq!(name, "weather");
                    c.resume(Err("no network in tests".into()));
                }
            }
        }
    }
}
