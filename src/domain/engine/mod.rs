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
//! - Decisions: a `next` with branches takes the first whose CEL condition
//!   holds (one scope of converted roots per branch list); a condition that
//!   cannot be evaluated takes `else` and adds a line to [`Turn::log`]. A
//!   `set` node assigns memory or contact attributes (literals, merge-tag
//!   texts, CEL), skipping (and logging) an expression that fails.
//! - Keywords: before a waiting node's own answers, a global keyword (case
//!   and spaces ignored) goes to its node; opt-out/opt-in keywords set
//!   `user.opted_out` and emit `contact.opted_out` / `contact.opted_in`.
//! - Choices: a `choice` ask offers its options as quick replies, accepts an
//!   option's number, and re-asks with the options numbered.
//! - Media: a node's image, video, audio or file goes in [`Turn::media`]
//!   beside the reply it belongs to, URL and caption rendered.
//! - Timers: every turn of a conversation still going returns its timers in
//!   [`Turn::timers`] (the waiting node's reminder and timeout, the flow's
//!   expiry), for the caller to store with the turn; [`on_timer`] fires one.
//!
//! - Handoff: a `handoff` node says its message (or a default), sets
//!   [`State::handoff`] and emits `conversation.handoff`. From then on every
//!   message is recorded (`message.received`) and answered by nobody: keywords,
//!   answers and webhooks wait. A person's words are the caller's to store
//!   ([`agent_message`] makes their event); [`release`] gives the
//!   conversation back to the bot at a node of the main flow (or its start)
//!   with `conversation.released`, and runs from there.
//!
//! The rooms: `mod.rs` (types and the entry points), `runner.rs` (the walk
//! from node to node), `answer.rs` (one method per waiting kind),
//! `timers.rs`, `webhook.rs`, `handoff.rs`, `caps.rs` (output and size caps),
//! `tests.rs`.
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
    Flow, FlowNode, Goto, HANDOFF_MESSAGE, MAIN, MAX_TEXT, Media, MenuOption, Next, Node,
    SetTarget, SetValue,
};
use crate::domain::merge;
use crate::domain::quote::{PriceTable, price};
use crate::domain::validate::Validation;
use crate::domain::validate::normalise;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

mod answer;
mod campaign;
mod caps;
mod handoff;
mod runner;
#[cfg(test)]
mod tests;
mod timers;
mod webhook;

pub use campaign::*;
pub use caps::*;
pub use handoff::*;
use runner::Runner;
pub use timers::*;
pub use webhook::*;

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
    /// Whether a reminder or timeout of the node it waits at may be stored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub node_timers: bool,
    /// When the idle conversation expires (Unix milliseconds): the latest
    /// turn plus `expire_after`. Its stored expiry timer is not moved on
    /// every turn: it stays due at the time first set and, when it fires
    /// early, waits again until this time ([`Turn::rearm_expiry`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// A person answers: set by a `handoff` node, cleared by [`release`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handoff: bool,
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
            node_timers: false,
            expires_at: None,
            handoff: false,
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
    /// A picture, voice note, file, location… from a messaging channel:
    /// `message.received` carries `media` (`{"type", "id"}`); its caption,
    /// if any, is read as the text. Without one, a new conversation opens
    /// as with any first message, and a waiting question is asked again.
    Media {
        /// `image`, `audio`, `video`, `document`, `location`, …
        kind: &'a str,
        /// The platform's reference to it.
        id: Option<&'a str>,
        /// The caption sent with it.
        caption: Option<&'a str>,
    },
}

const SORRY_MEDIA: &str = "Sorry, I can only read text messages here.";

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
    /// An expiry timer fired before the conversation's [`State::expires_at`]:
    /// keep the timer, due again at this time, and change nothing else.
    pub rearm_expiry: Option<DateTime<Utc>>,
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

fn step_input(flow: &Flow, state: &State, ctx: &Context, input: Input) -> Turn {
    let (text, media) = match input {
        Input::Text(t) => (t, None),
        Input::Media { kind, id, caption } => {
            (caption.unwrap_or(""), Some(json!({"type": kind, "id": id})))
        }
    };
    let received = |text: &str| {
        let mut data = json!({ "text": text });
        if let Some(m) = &media {
            data["media"] = m.clone();
        }
        data
    };
    let mut r = Runner::new(flow, ctx, state.clone());
    if state.completed {
        r.turn.ended = true;
        return r.turn;
    }
    let current = state
        .node
        .as_deref()
        .and_then(|id| flow.node(&state.flow, id));
    if media.is_some() && text.trim().is_empty() {
        // Media without a caption: recorded, but nothing to read.
        match current {
            None if state.node.is_none() => {
                r.emit(EventType::ConversationStarted, None, json!({}));
                r.emit(EventType::MessageReceived, None, received(text));
                r.run(Jump {
                    flow: MAIN.into(),
                    node: flow.main.start.clone(),
                });
            }
            Some(node) => {
                r.emit(EventType::MessageReceived, Some(node), received(text));
                if state.handoff {
                    // Recorded for the person who answers.
                } else if let Some(p) = &state.pending_webhook {
                    r.turn.call_webhook = Some(p.name.clone());
                } else {
                    r.say_plain(SORRY_MEDIA.into());
                    r.prompt_again(node);
                }
            }
            None => r.say_plain(SORRY_MEDIA.into()),
        }
        return r.turn;
    }
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
        r.emit(EventType::MessageReceived, None, received(text));
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
            received(text),
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
    r.emit(EventType::MessageReceived, Some(node), received(text));
    if state.handoff {
        // A person answers: the message is recorded, the bot stays silent.
        return r.turn;
    }
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

pub(super) fn check_text(text: &str) -> Result<(), &'static str> {
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

pub(super) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}
