//! One chat turn, end to end.
//!
//! 1. Serialise on the contact (in this process) so two messages from one
//!    person never race; across processes the conversation's revision does
//!    the same job (a stale turn is retried from fresh state).
//! 2. Load the contact and its active conversation (a new one when there is
//!    none or the last one ended) and the bot's current definition.
//! 3. Step the pure engine (and call the story webhooks it asks for). The
//!    joined replies are kept to the output caps (`engine::cap_replies`);
//!    a cut is logged and noted on the transcript's `out` line.
//! 4. Commit state, transcript, contact attributes, events and any booking
//!    in one transaction. If the store says the slot was just taken, step
//!    again with that slot marked taken (the engine re-offers) and commit
//!    that instead.
//!
//! Flow versions: a conversation continues on the bot's *current* flow from
//! the node it waits at, so a fix to a flow reaches conversations in
//! progress; if that node no longer exists the engine restarts the
//! conversation at the start (memory kept) and says so.

use super::RuntimeError;
use super::bots::{Definition, DefinitionCache};
use super::story;
use crate::delivery::http::OutboundClient;
use crate::domain::calendar::Slot;
use crate::domain::engine::WebhookReply;
use crate::domain::engine::{self, Contact, Context, Input, State, Turn};
use crate::domain::flow::Media;
use crate::domain::ids::new_id;
use crate::store::conversations::{
    BookingWrite, ContactRow, ConversationRow, STALE, TurnCommit, TurnWrite,
};
use crate::store::events::EventRow;
use crate::store::story::CallRow;
use crate::store::timers::{TimerChange, TimerWrite};
use crate::store::{Store, StoreError};
use chrono::Utc;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Who is talking: a phone number (E.164) or an id in the caller's system.
#[derive(Clone, Debug, PartialEq)]
pub enum ContactRef {
    /// `+525500000000`
    Phone(String),
    /// Any id of 1–128 printable characters.
    External(String),
    /// A person on a messaging channel, `{kind}:{platform user id}`
    /// (`whatsapp:525500000000`), with the phone the platform gave. Made by
    /// the channel inbound path only, never from the chat API.
    Channel {
        /// `whatsapp:525500000000`, `telegram:1111111`, …
        id: String,
        /// E.164, when the platform gives one.
        phone: Option<String>,
    },
}

/// Contact id prefixes kept for contacts that botwire makes itself: `web:`
/// for the chat widget's visitors, and one per messaging channel. An id that
/// starts with one (in any case) is refused by [`ContactRef::parse`], so a
/// contact named through the API can never land in the conversation of a
/// visitor or of a channel's user.
pub const RESERVED_ID_PREFIXES: [&str; 5] =
    ["web:", "whatsapp:", "telegram:", "twilio:", "messenger:"];

/// Why a contact reference was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContactError {
    /// The phone number is not E.164.
    #[error("contact.phone must be E.164: '+' and 8 to 15 digits, e.g. +525500000000; got {0:?}")]
    Phone(String),
    /// The id is empty, too long or holds control characters.
    #[error("contact.id must be 1 to 128 characters without control characters")]
    Id,
    /// The id starts with a prefix kept for botwire's own contacts.
    #[error(
        "contact.id may not start with {0:?}: that prefix is reserved for botwire's own contacts (website visitors and messaging channels); choose another id"
    )]
    ReservedPrefix(&'static str),
    /// Both a phone and an id were given.
    #[error("give contact.phone or contact.id, not both")]
    Both,
    /// Neither a phone nor an id was given.
    #[error("contact needs a phone (E.164) or an id")]
    Missing,
}

impl ContactRef {
    /// Validates a contact reference given through the API.
    pub fn parse(phone: Option<&str>, id: Option<&str>) -> Result<Self, ContactError> {
        match (phone, id) {
            (Some(p), None) => {
                let digits = p.strip_prefix('+').unwrap_or("");
                if (8..=15).contains(&digits.len())
                    && digits.bytes().all(|b| b.is_ascii_digit())
                    && !digits.starts_with('0')
                {
                    Ok(ContactRef::Phone(p.to_owned()))
                } else {
                    Err(ContactError::Phone(p.to_owned()))
                }
            }
            (None, Some(i)) => {
                if i.is_empty() || i.chars().count() > 128 || i.chars().any(char::is_control) {
                    return Err(ContactError::Id);
                }
                let reserved = RESERVED_ID_PREFIXES.iter().find(|p| {
                    i.get(..p.len())
                        .is_some_and(|head| head.eq_ignore_ascii_case(p))
                });
                match reserved {
                    Some(p) => Err(ContactError::ReservedPrefix(p)),
                    None => Ok(ContactRef::External(i.to_owned())),
                }
            }
            (Some(_), Some(_)) => Err(ContactError::Both),
            (None, None) => Err(ContactError::Missing),
        }
    }

    /// The channel the contact talks through, for metrics and conditions:
    /// the reserved prefix of botwire's own contacts without its colon
    /// (`web` for the widget's visitors, `whatsapp` … for a messaging
    /// channel's), `api` for contacts named through the API.
    pub fn channel(&self) -> &'static str {
        match self {
            ContactRef::External(i) | ContactRef::Channel { id: i, .. } => RESERVED_ID_PREFIXES
                .iter()
                .find(|p| i.starts_with(*p))
                .map_or("api", |p| p.trim_end_matches(':')),
            ContactRef::Phone(_) => "api",
        }
    }

    /// The reference a stored contact is known by: a messaging channel's
    /// contact by its channel id (and phone), others by phone or id.
    pub(super) fn of_row(row: &ContactRow) -> Option<ContactRef> {
        match (&row.phone, &row.external_id) {
            (phone, Some(i)) if RESERVED_ID_PREFIXES[1..].iter().any(|p| i.starts_with(p)) => {
                Some(ContactRef::Channel {
                    id: i.clone(),
                    phone: phone.clone(),
                })
            }
            (Some(p), _) => Some(ContactRef::Phone(p.clone())),
            (None, Some(i)) => Some(ContactRef::External(i.clone())),
            (None, None) => None,
        }
    }

    pub(super) fn key(&self) -> String {
        match self {
            ContactRef::Phone(p) => format!("p:{p}"),
            ContactRef::External(i) | ContactRef::Channel { id: i, .. } => format!("x:{i}"),
        }
    }

    /// What finds the contact: (phone, external id).
    fn lookup(&self) -> (Option<&str>, Option<&str>) {
        match self {
            ContactRef::Phone(p) => (Some(p.as_str()), None),
            ContactRef::External(i) | ContactRef::Channel { id: i, .. } => (None, Some(i.as_str())),
        }
    }

    /// What a new contact row holds: (phone, external id).
    fn stored(&self) -> (Option<&str>, Option<&str>) {
        match self {
            ContactRef::Channel { id, phone } => (phone.as_deref(), Some(id.as_str())),
            other => other.lookup(),
        }
    }
}

/// Where a message came from; every event of its turn carries this as
/// `channel`.
#[derive(Clone, Debug)]
pub enum Source {
    /// The chat API, with a secret key.
    Api,
    /// The website widget (a publishable key).
    Web,
    /// A messaging channel: the stored inbound message, whose row the turn
    /// marks done, and whose replies go to the channel's outbox.
    Channel(Box<super::inbound::ChannelSource>),
}

impl Source {
    /// `api`, `web`, or the channel's kind.
    pub fn name(&self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Web => "web",
            Source::Channel(c) => c.channel.kind().as_str(),
        }
    }
}

/// The bot's answer to one message.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatReply {
    /// The conversation the message went to.
    pub conversation_id: String,
    /// Texts to show, in order.
    pub replies: Vec<String>,
    /// Media sent with the replies: `(index in replies, media)`.
    pub media: Vec<(usize, Media)>,
    /// Options to offer as buttons.
    pub quick_replies: Vec<String>,
    /// Whether the conversation is over.
    pub ended: bool,
    /// Ids of the events this turn wrote.
    pub event_ids: Vec<String>,
}

/// What this process last committed for a contact: its row and its active
/// conversation. Used instead of reading them again; if another process
/// moved the conversation on meanwhile, the commit fails as stale and the
/// turn is retried from the database.
#[derive(Clone)]
pub(super) struct Session {
    contact: ContactRow,
    conversation: Option<ConversationRow>,
}

/// Runs chat turns; cheap to clone.
#[derive(Clone, Default)]
pub struct Chat {
    pub(super) definitions: Arc<DefinitionCache>,
    pub(super) locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    pub(super) sessions: Arc<Mutex<HashMap<String, Session>>>,
}

/// The engine's view of a stored contact.
pub(super) fn contact_of(row: &ContactRow) -> Contact {
    Contact {
        id: row.id.clone(),
        phone: row.phone.clone(),
        external_id: row.external_id.clone(),
        attributes: serde_json::from_str(&row.attributes).unwrap_or_default(),
    }
}

/// Most sessions kept in memory before the cache starts over.
const MAX_SESSIONS: usize = 200_000;

/// Most story-webhook calls one message may cause.
const MAX_CALLS: usize = 5;
/// How many times a turn is retried when its conversation moved on.
const STALE_RETRIES: usize = 8;
/// How many slots are considered when offering bookings.
const SLOT_WINDOW: usize = 200;

impl Chat {
    /// The definition cache (shared with flow and settings routes).
    pub fn definitions(&self) -> &DefinitionCache {
        &self.definitions
    }

    /// Forgets what is cached about a bot after it changed or was deleted.
    pub fn forget_bot(&self, account: &str, bot: &str) {
        self.definitions.forget(account, bot);
        let prefix = format!("{account}/{bot}/");
        self.sessions
            .lock()
            .expect("sessions")
            .retain(|k, _| !k.starts_with(&prefix));
    }

    /// Forgets the cached sessions of a bot's contacts (their attributes
    /// changed outside a turn), keeping its definition.
    pub fn forget_sessions(&self, account: &str, bot: &str) {
        let prefix = format!("{account}/{bot}/");
        self.sessions
            .lock()
            .expect("sessions")
            .retain(|k, _| !k.starts_with(&prefix));
    }

    /// Handles one message from `contact` to `bot` through the chat API.
    pub async fn message(
        &self,
        store: &Store,
        client: &OutboundClient,
        account: &str,
        bot: &str,
        contact: &ContactRef,
        text: &str,
    ) -> Result<ChatReply, RuntimeError> {
        self.handle(
            store,
            client,
            account,
            bot,
            contact,
            Input::Text(text),
            &Source::Api,
        )
        .await
    }

    /// Handles one input from `contact` to `bot`, come from `source`.
    #[allow(clippy::too_many_arguments)]
    pub async fn handle(
        &self,
        store: &Store,
        client: &OutboundClient,
        account: &str,
        bot: &str,
        contact: &ContactRef,
        input: Input<'_>,
        source: &Source,
    ) -> Result<ChatReply, RuntimeError> {
        let key = format!("{account}/{bot}/{}", contact.key());
        let lock = {
            let mut locks = self.locks.lock().expect("locks");
            locks.entry(key.clone()).or_default().clone()
        };
        let started = std::time::Instant::now();
        let result = {
            let _guard = lock.lock().await;
            self.turn(store, client, account, bot, &key, contact, input, source)
                .await
        };
        crate::telemetry::chat_turn(bot, contact.channel(), result.is_ok(), started.elapsed());
        drop(lock);
        let mut locks = self.locks.lock().expect("locks");
        if locks.get(&key).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(&key);
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn turn(
        &self,
        store: &Store,
        client: &OutboundClient,
        account: &str,
        bot: &str,
        key: &str,
        contact_ref: &ContactRef,
        input: Input<'_>,
        source: &Source,
    ) -> Result<ChatReply, RuntimeError> {
        let def = self.definitions.load(store, account, bot).await?;
        for _ in 0..STALE_RETRIES {
            let cached = self.sessions.lock().expect("sessions").get(key).cloned();
            let session = match cached {
                Some(s) => Some(s),
                None => self.read_session(store, account, bot, contact_ref).await?,
            };
            match self
                .try_turn(
                    store,
                    client,
                    account,
                    bot,
                    &def,
                    contact_ref,
                    session,
                    input,
                    source,
                )
                .await
            {
                Err(RuntimeError::Store(StoreError::Conflict(m))) if m == STALE => {
                    self.sessions.lock().expect("sessions").remove(key);
                }
                Ok((reply, session)) => {
                    let mut sessions = self.sessions.lock().expect("sessions");
                    if sessions.len() >= MAX_SESSIONS {
                        sessions.clear();
                    }
                    sessions.insert(key.to_owned(), session);
                    return Ok(reply);
                }
                Err(e) => {
                    self.sessions.lock().expect("sessions").remove(key);
                    return Err(e);
                }
            }
        }
        Err(RuntimeError::Store(StoreError::Unavailable(
            "the conversation kept changing; try again".into(),
        )))
    }

    /// The contact and its active conversation, from the database; `None`
    /// for a contact never seen.
    async fn read_session(
        &self,
        store: &Store,
        account: &str,
        bot: &str,
        contact_ref: &ContactRef,
    ) -> Result<Option<Session>, RuntimeError> {
        let (phone, external) = contact_ref.lookup();
        let Some(contact) = store.find_contact(account, bot, phone, external).await? else {
            return Ok(None);
        };
        let conversation = store.active_conversation(&contact.id).await?;
        Ok(Some(Session {
            contact,
            conversation,
        }))
    }

    #[allow(clippy::too_many_arguments)]
    async fn try_turn(
        &self,
        store: &Store,
        client: &OutboundClient,
        account: &str,
        bot: &str,
        def: &Definition,
        contact_ref: &ContactRef,
        session: Option<Session>,
        input: Input<'_>,
        source: &Source,
    ) -> Result<(ChatReply, Session), RuntimeError> {
        let (phone, external) = contact_ref.stored();
        let text = match input {
            Input::Text(t) => t,
            Input::Media { caption, .. } => caption.unwrap_or(""),
        };
        let contact_is_new = session.is_none();
        let (contact_row, active) = match session {
            Some(s) => (s.contact, s.conversation),
            None => (
                ContactRow {
                    id: new_id("ct"),
                    phone: phone.map(str::to_owned),
                    external_id: external.map(str::to_owned),
                    attributes: "{}".into(),
                },
                None,
            ),
        };
        let contact = contact_of(&contact_row);
        let (conversation_id, state, expected_revision, created_at) = match &active {
            Some(c) => (
                c.id.clone(),
                serde_json::from_str::<State>(&c.state).unwrap_or_default(),
                Some(c.revision),
                c.created_at,
            ),
            None => (new_id("cnv"), State::new(), None, crate::store::now_ms()),
        };

        let now = Utc::now();
        let mut free = self.free_slots(store, account, bot, def, now).await?;
        let mut taken = None;
        for _ in 0..4 {
            let ctx = Context {
                conversation_id: &conversation_id,
                contact: &contact,
                now,
                price_table: def.settings.price_table.as_ref(),
                calendar: def.settings.calendar.as_ref(),
                free_slots: &free,
                taken_slot: taken,
                channel: contact_ref.channel(),
            };
            let mut turn = engine::step(&def.flow, &state, &ctx, input);
            let mut calls = Vec::new();
            // Story webhooks: called with no transaction open; a webhook's
            // answer may lead to another (at most MAX_CALLS per turn).
            let mut made = 0;
            while let Some(name) = turn.call_webhook.clone() {
                let outcome = if made >= MAX_CALLS {
                    Err(format!(
                        "more than {MAX_CALLS} story webhook calls in one message"
                    ))
                } else {
                    made += 1;
                    self.call_story(
                        client,
                        def,
                        &name,
                        &turn,
                        &contact,
                        &conversation_id,
                        &mut calls,
                    )
                    .await
                };
                let resumed = engine::resume_after_webhook(&def.flow, &turn.state, &ctx, outcome);
                turn = merge_turns(turn, resumed);
            }
            // A webhook's quick replies and the next menu's may repeat.
            let mut offered = std::collections::HashSet::new();
            turn.quick_replies.retain(|q| offered.insert(q.clone()));
            // Each engine call kept to the output caps; the joined turn must too.
            turn.replies = engine::cap_replies(std::mem::take(&mut turn.replies), &mut turn.cut);
            if !turn.cut.is_empty() {
                tracing::warn!(
                    bot = %bot,
                    conversation = %conversation_id,
                    shortened = turn.cut.shortened,
                    dropped = turn.cut.dropped,
                    "replies cut to the output caps ({} bytes a reply, {} a turn)",
                    engine::MAX_REPLY_BYTES,
                    engine::MAX_TURN_BYTES,
                );
            }
            let mut write = build_write(
                account,
                bot,
                def,
                &contact_row,
                contact_is_new,
                &contact,
                &conversation_id,
                created_at,
                expected_revision,
                Some(text),
                &turn,
                calls,
                source.name(),
            );
            if let Source::Channel(ch) = source {
                write.channel = Some(ch.turn_write(
                    &conversation_id,
                    &contact_row.id,
                    &super::inbound::texts_with_media(&turn.replies, &turn.media),
                    &turn.quick_replies,
                ));
            }
            let event_ids = write.events.iter().map(|e| e.id.clone()).collect();
            let (next_contact, next_conversation) =
                (write.contact.clone(), write.conversation.clone());
            match store.commit_turn(write).await? {
                TurnCommit::Committed(revision) => {
                    let session = Session {
                        contact: next_contact,
                        conversation: (next_conversation.status != "completed").then_some(
                            ConversationRow {
                                revision,
                                ..next_conversation
                            },
                        ),
                    };
                    let reply = ChatReply {
                        conversation_id: conversation_id.clone(),
                        replies: turn.replies,
                        media: turn.media,
                        quick_replies: turn.quick_replies,
                        ended: turn.ended,
                        event_ids,
                    };
                    return Ok((reply, session));
                }
                TurnCommit::SlotTaken => {
                    let claim = turn.booking.as_ref().map(|b| b.start);
                    taken = claim;
                    free = self.free_slots(store, account, bot, def, now).await?;
                }
            }
        }
        Err(RuntimeError::Store(StoreError::Unavailable(
            "slots kept being taken; try again".into(),
        )))
    }

    async fn free_slots(
        &self,
        store: &Store,
        account: &str,
        bot: &str,
        def: &Definition,
        now: chrono::DateTime<Utc>,
    ) -> Result<Vec<Slot>, RuntimeError> {
        let Some(calendar) = def.settings.calendar.as_ref() else {
            return Ok(Vec::new());
        };
        if !def.flow.uses_kind("booking") {
            return Ok(Vec::new());
        }
        let slots = calendar.slots_between(now, SLOT_WINDOW);
        let (Some(first), Some(last)) = (slots.first(), slots.last()) else {
            return Ok(slots);
        };
        let counts: HashMap<i64, i64> = store
            .booked_counts(
                account,
                bot,
                first.start.timestamp_millis(),
                last.start.timestamp_millis() + 1,
            )
            .await?
            .into_iter()
            .collect();
        let capacity = i64::from(calendar.capacity.max(1));
        Ok(slots
            .into_iter()
            .filter(|s| {
                counts
                    .get(&s.start.timestamp_millis())
                    .copied()
                    .unwrap_or(0)
                    < capacity
            })
            .collect())
    }
}

impl Chat {
    /// Calls the story webhook `name` for `turn` and logs the call.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn call_story(
        &self,
        client: &OutboundClient,
        def: &Definition,
        name: &str,
        turn: &Turn,
        contact: &Contact,
        conversation_id: &str,
        calls: &mut Vec<CallRow>,
    ) -> Result<WebhookReply, String> {
        let Some(hook) = def.settings.webhooks.iter().find(|w| w.name == name) else {
            return Err(format!("story webhook {name:?} is not defined"));
        };
        let ctx = engine::merge_context(&turn.state, contact, &turn.user_attributes);
        let secrets = story::live_secrets(&def.story_secrets, crate::store::now_ms());
        let (mut outcome, mut record) = story::call(client, hook, &ctx, &secrets).await;
        if let Ok(reply) = &outcome
            && let Err(e) =
                engine::check_reply_size(reply, &turn.state, contact, &turn.user_attributes)
        {
            record.outcome = "error".into();
            record.error = Some(e.to_string());
            outcome = Err(e.to_string());
        }
        if let Err(e) = &outcome {
            tracing::warn!(webhook = %name, conversation = %conversation_id, error = %e, "story webhook failed");
        }
        calls.push(CallRow {
            id: record.id.clone(),
            webhook: name.to_owned(),
            conversation_id: Some(conversation_id.to_owned()),
            outcome: record.outcome.clone(),
            record: serde_json::to_string(&record).expect("records serialise"),
            created_at: record.started_at,
        });
        outcome
    }
}

/// Joins a turn that stopped at a webhook with the turn that resumed it.
pub(super) fn merge_turns(mut first: Turn, second: Turn) -> Turn {
    first.state = second.state;
    let offset = first.replies.len();
    first
        .media
        .extend(second.media.into_iter().map(|(i, m)| (i + offset, m)));
    first.replies.extend(second.replies);
    first.log.extend(second.log);
    if second.timers.is_some() {
        first.timers = second.timers;
    }
    first.quick_replies = second.quick_replies;
    first.events.extend(second.events);
    first.user_attributes.extend(second.user_attributes);
    if second.booking.is_some() {
        first.booking = second.booking;
    }
    if second.cancel_booking.is_some() {
        first.cancel_booking = second.cancel_booking;
    }
    first.call_webhook = second.call_webhook;
    first.ended = second.ended;
    first.cut.add(second.cut);
    first
}

/// The stored status of a conversation in `state`: `completed`, `handoff`
/// (a person answers) or `active`.
pub(super) fn status_of(state: &State) -> &'static str {
    if state.completed {
        "completed"
    } else if state.handoff {
        "handoff"
    } else {
        "active"
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn build_write(
    account: &str,
    bot: &str,
    def: &Definition,
    contact_row: &ContactRow,
    contact_is_new: bool,
    contact: &Contact,
    conversation_id: &str,
    created_at: i64,
    expected_revision: Option<i64>,
    text: Option<&str>,
    turn: &Turn,
    calls: Vec<CallRow>,
    channel: &str,
) -> TurnWrite {
    let mut attributes = contact.attributes.clone();
    for (k, v) in &turn.user_attributes {
        if v.is_null() {
            attributes.remove(k);
        } else {
            attributes.insert(k.clone(), v.clone());
        }
    }
    let events = turn
        .events
        .iter()
        .map(|e| {
            let mut data = e.data.clone();
            if let Some(d) = data.as_object_mut() {
                d.insert("channel".into(), Value::from(channel));
            }
            EventRow::new(
                account,
                bot,
                e.event_type.as_str(),
                Some(conversation_id),
                data.to_string(),
            )
        })
        .collect();
    let mut messages = Vec::new();
    if let Some(text) = text {
        messages.push(("in".to_owned(), json!({ "text": text }).to_string()));
    }
    for line in &turn.log {
        messages.push(("log".to_owned(), json!({ "log": line }).to_string()));
    }
    if !turn.replies.is_empty() || !turn.quick_replies.is_empty() {
        let mut body = json!({ "replies": turn.replies, "quick_replies": turn.quick_replies });
        if text.is_none() {
            // Said unprompted (a timer, a release): no answer to a request
            // carries it, so the widget's poll shows it.
            body["unprompted"] = Value::Bool(true);
        }
        if !turn.cut.is_empty() {
            // The transcript says the replies were cut, and how.
            body["cut"] = json!({
                "shortened": turn.cut.shortened,
                "dropped": turn.cut.dropped,
                "max_reply_bytes": engine::MAX_REPLY_BYTES,
                "max_turn_bytes": engine::MAX_TURN_BYTES,
            });
        }
        if !turn.media.is_empty() {
            body["media"] = turn
                .media
                .iter()
                .map(|(i, m)| json!({"reply": i, "kind": m.kind, "url": m.url, "caption": m.caption}))
                .collect();
        }
        messages.push(("out".to_owned(), body.to_string()));
    }
    let timers = TimerChange {
        replace: turn.timers.as_ref().map(|list| {
            list.iter()
                .map(|t| TimerWrite {
                    kind: t.kind.as_str().to_owned(),
                    node: t.node.clone(),
                    due_at: t.due_at.timestamp_millis(),
                })
                .collect()
        }),
        fired: None,
    };
    TurnWrite {
        account_id: account.to_owned(),
        bot_id: bot.to_owned(),
        contact: ContactRow {
            attributes: Value::Object(attributes).to_string(),
            ..contact_row.clone()
        },
        contact_is_new,
        contact_changed: !turn.user_attributes.is_empty(),
        conversation: ConversationRow {
            id: conversation_id.to_owned(),
            bot_id: bot.to_owned(),
            contact_id: contact_row.id.clone(),
            flow_version: def.flow_version,
            state: serde_json::to_string(&turn.state).expect("state serialises"),
            status: status_of(&turn.state).into(),
            revision: expected_revision.unwrap_or(0) + 1,
            created_at,
            updated_at: created_at,
            channel: channel.to_owned(),
        },
        expected_revision,
        messages,
        events,
        booking: turn.booking.as_ref().map(|b| BookingWrite {
            id: b.id.clone(),
            start_ms: b.start.timestamp_millis(),
            end_ms: b.end.timestamp_millis(),
            label: b.label.clone(),
            capacity: def.settings.calendar.as_ref().map_or(1, |c| c.capacity),
        }),
        cancel: turn.cancel_booking.clone(),
        calls,
        channel: None,
        timers,
        broadcast: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_are_a_phone_or_an_id() {
        assert!(ContactRef::parse(Some("+525500000000"), None).is_ok());
        let e = ContactRef::parse(Some("5500000000"), None).unwrap_err();
        assert_eq!(e, ContactError::Phone("5500000000".into()));
        assert!(e.to_string().contains("E.164"));
        assert!(ContactRef::parse(Some("+52 55"), None).is_err());
        assert!(ContactRef::parse(None, Some("user-1")).is_ok());
        assert_eq!(ContactRef::parse(None, Some("")), Err(ContactError::Id));
        assert_eq!(ContactRef::parse(None, None), Err(ContactError::Missing));
        assert_eq!(
            ContactRef::parse(Some("+525500000000"), Some("x")),
            Err(ContactError::Both)
        );
    }

    #[test]
    fn the_metrics_channel_comes_from_the_contact_prefix() {
        let ext = |i: &str| ContactRef::External(i.to_owned());
        assert_eq!(ext("web:v_123").channel(), "web");
        assert_eq!(ext("telegram:42").channel(), "telegram");
        assert_eq!(ext("customer-7").channel(), "api");
        assert_eq!(ContactRef::Phone("+525500000000".into()).channel(), "api");
    }

    #[test]
    fn channel_prefixes_are_reserved_for_botwire_own_contacts() {
        for (id, prefix) in [
            ("web:collide-visitor-0001", "web:"),
            ("WEB:collide-visitor-0001", "web:"),
            ("whatsapp:525500000000", "whatsapp:"),
            ("telegram:42", "telegram:"),
            ("Twilio:+525500000000", "twilio:"),
            ("messenger:1234", "messenger:"),
        ] {
            let e = ContactRef::parse(None, Some(id)).unwrap_err();
            assert_eq!(e, ContactError::ReservedPrefix(prefix), "{id}");
            assert!(e.to_string().contains(prefix), "{e}");
        }
        // Only a leading prefix is reserved.
        for id in ["web", "website:1", "my-web:1", "ü:web:1", "w"] {
            assert!(ContactRef::parse(None, Some(id)).is_ok(), "{id}");
        }
    }
}
