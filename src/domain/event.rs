//! The event catalog: every event type botwire emits, with its JSON Schema
//! (draft 2020-12) and a sample, as served by `GET /v1/event-types`.
//!
//! Conventions of an event's `data` (the delivery code reads these keys):
//! - every conversation event carries `conversation_id`, `flow` (`"main"` or the
//!   campaign name), `node` (node id, `null` before the flow starts), `label`
//!   (the node label, `null` when `node` is) and `contact`
//!   (`{"id", "phone", "external_id"}`, the last two possibly `null`);
//! - `message.received` adds `text`; `response.received` adds `field` and
//!   `response`; `option.selected` adds `option` (label) and `keyword`
//!   (integer); `datapoint.collected` adds `field` and `value`;
//!   `quote.generated` adds `quote`; `appointment.*` add `appointment`
//!   (`{"id", "start", "end", "label", "timezone"}`, times RFC 3339 UTC);
//! - conversation events written by a chat turn also carry `channel`: where
//!   the conversation happens (`api`, `web`, `whatsapp`, `telegram`,
//!   `twilio`, `messenger`); `message.received` from a messaging channel
//!   may carry `media` (`{"type", "id"}`);
//! - `message.sent`, `message.delivered`, `message.read` and
//!   `message.failed` follow one reply sent through a messaging channel:
//!   `{"message_id", "conversation_id", "channel", "channel_id", "contact",
//!   "recipient", "platform_message_id", "status"}` and, on failure,
//!   `error` (the platform's words);
//! - `agent.message` adds `text` (what the person wrote);
//!   `conversation.released` adds `released_at` (the node the conversation
//!   was handed off at), its `node` being where the bot goes on;
//! - `webhook.test` is `{"message"}`; `endpoint.disabled` is
//!   `{"endpoint_id", "url", "reason"}`;
//! - `broadcast.started` is `{"broadcast_id", "segment_id", "recipients"}`;
//!   `broadcast.completed` is `{"broadcast_id", "sent", "skipped":
//!   {"opted_out", "no_channel", "outside_window"}}` (a campaign
//!   broadcast's also `in_handoff` and `no_campaign`).
//!
//! Invariants: the catalog names are stable API; each sample validates against
//! its own schema (tested); names under a reserved prefix cannot be published
//! by outside systems ([`is_reserved`]).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A type of event in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    /// Every user message.
    #[serde(rename = "message.received")]
    MessageReceived,
    /// A new conversation began.
    #[serde(rename = "conversation.started")]
    ConversationStarted,
    /// A conversation reached an `end` node.
    #[serde(rename = "conversation.completed")]
    ConversationCompleted,
    /// A menu option with `notify` was chosen.
    #[serde(rename = "option.selected")]
    OptionSelected,
    /// An `ask` with `notify` was answered.
    #[serde(rename = "response.received")]
    ResponseReceived,
    /// An `ask` with `datapoint` was answered.
    #[serde(rename = "datapoint.collected")]
    DatapointCollected,
    /// A `quote` node priced a quote.
    #[serde(rename = "quote.generated")]
    QuoteGenerated,
    /// A slot was booked.
    #[serde(rename = "appointment.booked")]
    AppointmentBooked,
    /// A booking was cancelled.
    #[serde(rename = "appointment.cancelled")]
    AppointmentCancelled,
    /// An idle conversation ended after the bot's `expire_after`.
    #[serde(rename = "conversation.expired")]
    ConversationExpired,
    /// A contact typed an opt-out keyword (`stop`).
    #[serde(rename = "contact.opted_out")]
    ContactOptedOut,
    /// A contact typed an opt-in keyword (`start`).
    #[serde(rename = "contact.opted_in")]
    ContactOptedIn,
    /// The test / handshake event of an endpoint.
    #[serde(rename = "webhook.test")]
    WebhookTest,
    /// An endpoint was disabled (operational).
    #[serde(rename = "endpoint.disabled")]
    EndpointDisabled,
    /// A reply was accepted by a messaging platform.
    #[serde(rename = "message.sent")]
    MessageSent,
    /// A messaging platform reports a reply on the person's device.
    #[serde(rename = "message.delivered")]
    MessageDelivered,
    /// A messaging platform reports a reply read.
    #[serde(rename = "message.read")]
    MessageRead,
    /// A reply will not arrive: refused by the platform, out of attempts,
    /// or outside WhatsApp's 24-hour window.
    #[serde(rename = "message.failed")]
    MessageFailed,
    /// A conversation reached a `handoff` node: a person answers from now on.
    #[serde(rename = "conversation.handoff")]
    ConversationHandoff,
    /// A person answered a conversation in handoff.
    #[serde(rename = "agent.message")]
    AgentMessage,
    /// A conversation in handoff was given back to the bot.
    #[serde(rename = "conversation.released")]
    ConversationReleased,
    /// A broadcast chose its recipients and began sending.
    #[serde(rename = "broadcast.started")]
    BroadcastStarted,
    /// Every recipient of a broadcast was sent or skipped.
    #[serde(rename = "broadcast.completed")]
    BroadcastCompleted,
}

/// Prefixes no outside system may publish under: the catalog's namespaces and
/// botwire's own.
pub const RESERVED_PREFIXES: [&str; 14] = [
    "message.",
    "broadcast.",
    "agent.",
    "contact.",
    "conversation.",
    "option.",
    "response.",
    "datapoint.",
    "quote.",
    "appointment.",
    "webhook.",
    "endpoint.",
    "botwire.",
    "system.",
];

impl EventType {
    /// Every catalog type, in catalog order.
    pub const ALL: [EventType; 23] = [
        EventType::MessageReceived,
        EventType::ConversationStarted,
        EventType::ConversationCompleted,
        EventType::OptionSelected,
        EventType::ResponseReceived,
        EventType::DatapointCollected,
        EventType::QuoteGenerated,
        EventType::AppointmentBooked,
        EventType::AppointmentCancelled,
        EventType::ConversationExpired,
        EventType::ContactOptedOut,
        EventType::ContactOptedIn,
        EventType::WebhookTest,
        EventType::EndpointDisabled,
        EventType::MessageSent,
        EventType::MessageDelivered,
        EventType::MessageRead,
        EventType::MessageFailed,
        EventType::ConversationHandoff,
        EventType::AgentMessage,
        EventType::ConversationReleased,
        EventType::BroadcastStarted,
        EventType::BroadcastCompleted,
    ];

    /// The dotted name, e.g. `message.received`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::MessageReceived => "message.received",
            EventType::ConversationStarted => "conversation.started",
            EventType::ConversationCompleted => "conversation.completed",
            EventType::OptionSelected => "option.selected",
            EventType::ResponseReceived => "response.received",
            EventType::DatapointCollected => "datapoint.collected",
            EventType::QuoteGenerated => "quote.generated",
            EventType::AppointmentBooked => "appointment.booked",
            EventType::AppointmentCancelled => "appointment.cancelled",
            EventType::ConversationExpired => "conversation.expired",
            EventType::ContactOptedOut => "contact.opted_out",
            EventType::ContactOptedIn => "contact.opted_in",
            EventType::WebhookTest => "webhook.test",
            EventType::EndpointDisabled => "endpoint.disabled",
            EventType::MessageSent => "message.sent",
            EventType::MessageDelivered => "message.delivered",
            EventType::MessageRead => "message.read",
            EventType::MessageFailed => "message.failed",
            EventType::ConversationHandoff => "conversation.handoff",
            EventType::AgentMessage => "agent.message",
            EventType::ConversationReleased => "conversation.released",
            EventType::BroadcastStarted => "broadcast.started",
            EventType::BroadcastCompleted => "broadcast.completed",
        }
    }

    /// The camelCase name of the `bot9` payload format, e.g. `messageReceived`.
    pub fn camel_name(self) -> String {
        let mut out = String::new();
        let mut upper = false;
        for c in self.as_str().chars() {
            if c == '.' {
                upper = true;
            } else if upper {
                out.push(c.to_ascii_uppercase());
                upper = false;
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Parses a dotted name; `None` when it is not in the catalog.
    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Whether events of this type concern a conversation (carry the common keys).
    pub fn is_conversation_event(self) -> bool {
        !matches!(
            self,
            EventType::WebhookTest
                | EventType::EndpointDisabled
                | EventType::MessageSent
                | EventType::MessageDelivered
                | EventType::MessageRead
                | EventType::MessageFailed
                | EventType::BroadcastStarted
                | EventType::BroadcastCompleted
        )
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `name` is a catalog name or lies under a reserved prefix.
pub fn is_reserved(name: &str) -> bool {
    EventType::parse(name).is_some() || RESERVED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Checks the name of an event published by an outside system: 3–64 chars of
/// `[a-z0-9_.-]`, at least one dot, not reserved.
pub fn check_custom_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
    if !(3..=64).contains(&name.len())
        || !ok_chars
        || !name.contains('.')
        || name.starts_with('.')
        || name.ends_with('.')
    {
        return Err("event names are 3-64 characters of a-z, 0-9, _, - and ., with at least one dot (e.g. order.shipped)".into());
    }
    if is_reserved(name) {
        return Err(format!("{name:?} is reserved for botwire's own events"));
    }
    Ok(())
}

/// An event produced by the domain, before the store gives it an id and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Its catalog type.
    pub event_type: EventType,
    /// Its `data`, following the conventions of this module.
    pub data: Value,
}

/// One entry of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventTypeInfo {
    /// Dotted name.
    pub name: &'static str,
    /// One sentence on when it fires.
    pub description: &'static str,
    /// JSON Schema (draft 2020-12) of `data`.
    pub schema: Value,
    /// A sample `data`.
    pub sample: Value,
}

const DRAFT: &str = "https://json-schema.org/draft/2020-12/schema";
const RFC3339: &str =
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$";
const MONEY: &str = r"^-?[0-9]+\.[0-9]{2}$";
/// Where a conversation happens: the chat API, the website widget, or a
/// messaging channel.
const CHANNELS: [&str; 6] = ["api", "web", "whatsapp", "telegram", "twilio", "messenger"];

fn message_status_schema(title: &str, status: &str) -> Value {
    let mut props = json!({
        "message_id": {"type": "string", "minLength": 1, "description": "the outbox message (out_…)"},
        "conversation_id": {"type": ["string", "null"]},
        "channel": {"enum": &CHANNELS[2..]},
        "channel_id": {"type": "string", "minLength": 1},
        "contact": {
            "type": "object",
            "required": ["id", "phone", "external_id"],
            "properties": {
                "id": {"type": ["string", "null"]},
                "phone": {"type": ["string", "null"]},
                "external_id": {"type": ["string", "null"]}
            }
        },
        "recipient": {"type": "string", "description": "the person in the platform's terms"},
        "platform_message_id": {"type": ["string", "null"]},
        "status": {"const": status}
    });
    let mut required = vec![
        "message_id",
        "conversation_id",
        "channel",
        "channel_id",
        "contact",
        "recipient",
        "platform_message_id",
        "status",
    ];
    if status == "failed" {
        props["error"] = json!({"type": "string", "description": "the platform's words"});
        required.push("error");
    }
    json!({"$schema": DRAFT, "title": title, "type": "object", "required": required, "properties": props})
}

fn sample_message_status(status: &str) -> Value {
    let mut v = json!({
        "message_id": "out_01jd7k2m5n6p7q8r9s0t1v2w3x",
        "conversation_id": "cv_01HZX3K5M8Q2",
        "channel": "whatsapp",
        "channel_id": "ch_01jd7k0a1b2c3d4e5f6g7h8j9k",
        "contact": {"id": "ct_01HZX3K0B1C2", "phone": "+525500000000", "external_id": "whatsapp:525500000000"},
        "recipient": "525500000000",
        "platform_message_id": "wamid.HBgLNTI1NTAwMDAwMDAwFQIAERgSQ0M0QjNGRjA0RjM1NkQ5QjlEAA==",
        "status": status
    });
    if status == "failed" {
        v["error"] = json!("(#131026) Message undeliverable (code 131026)");
    }
    v
}

fn conversation_schema(title: &str, extra: Value, extra_required: &[&str]) -> Value {
    let mut props = json!({
        "conversation_id": {"type": "string", "minLength": 1},
        "flow": {"type": "string", "minLength": 1, "description": "\"main\" or the campaign name"},
        "node": {"type": ["string", "null"], "description": "node id; null before the flow starts"},
        "label": {"type": ["string", "null"], "description": "node label"},
        "channel": {"enum": CHANNELS, "description": "where the conversation happens; always present on events a chat turn writes"},
        "contact": {
            "type": "object",
            "required": ["id", "phone", "external_id"],
            "properties": {
                "id": {"type": "string", "minLength": 1},
                "phone": {"type": ["string", "null"]},
                "external_id": {"type": ["string", "null"]}
            }
        }
    });
    if let (Some(p), Some(e)) = (props.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    let mut required = vec!["conversation_id", "flow", "node", "label", "contact"];
    required.extend_from_slice(extra_required);
    json!({
        "$schema": DRAFT,
        "title": title,
        "type": "object",
        "required": required,
        "properties": props
    })
}

fn quote_schema() -> Value {
    json!({
        "type": "object",
        "required": ["lines", "subtotal", "tax", "total", "currency", "valid_until"],
        "properties": {
            "lines": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["item", "name", "quantity", "unit_price", "amount"],
                    "properties": {
                        "item": {"type": "string"},
                        "name": {"type": "string"},
                        "options": {"type": "array", "items": {"type": "string"}},
                        "quantity": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
                        "unit_price": {"type": "string", "pattern": MONEY},
                        "amount": {"type": "string", "pattern": MONEY}
                    }
                }
            },
            "subtotal": {"type": "string", "pattern": MONEY},
            "tax": {"type": "string", "pattern": MONEY},
            "total": {"type": "string", "pattern": MONEY},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "valid_until": {"type": "string", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}
        }
    })
}

fn appointment_schema() -> Value {
    json!({
        "type": "object",
        "required": ["id", "start", "end", "label", "timezone"],
        "properties": {
            "id": {"type": "string", "minLength": 1},
            "start": {"type": "string", "pattern": RFC3339},
            "end": {"type": "string", "pattern": RFC3339},
            "label": {"type": "string"},
            "timezone": {"type": "string", "minLength": 1}
        }
    })
}

fn sample_common(node: Option<&str>, label: Option<&str>) -> Value {
    json!({
        "conversation_id": "cv_01HZX3K5M8Q2",
        "flow": "main",
        "node": node,
        "label": label,
        "channel": "whatsapp",
        "contact": {"id": "ct_01HZX3K0B1C2", "phone": "+525500000000", "external_id": "whatsapp:525500000000"}
    })
}

fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    base
}

fn sample_appointment() -> Value {
    json!({
        "id": "cv_01HZX3K5M8Q2-1764057600",
        "start": "2025-11-25T08:00:00Z",
        "end": "2025-11-25T08:30:00Z",
        "label": "Tue 25 Nov 09:00",
        "timezone": "Europe/Madrid"
    })
}

/// The whole catalog, in [`EventType::ALL`] order.
pub fn catalog() -> Vec<EventTypeInfo> {
    EventType::ALL.into_iter().map(info).collect()
}

/// The catalog entry of one type.
pub fn info(t: EventType) -> EventTypeInfo {
    let name = t.as_str();
    let (description, schema, sample) = match t {
        EventType::MessageReceived => (
            "A user sent a message to the bot.",
            conversation_schema(
                name,
                json!({"text": {"type": "string"}, "media": {
                    "type": "object", "required": ["type", "id"],
                    "properties": {"type": {"type": "string"}, "id": {"type": ["string", "null"]}}
                }}),
                &["text"],
            ),
            with(
                sample_common(Some("membership"), Some("Membership")),
                json!({"text": "1"}),
            ),
        ),
        EventType::ConversationStarted => (
            "A new conversation began with the first message of a contact.",
            conversation_schema(name, json!({}), &[]),
            sample_common(None, None),
        ),
        EventType::ConversationCompleted => (
            "A conversation reached an end node.",
            conversation_schema(name, json!({}), &[]),
            sample_common(Some("done"), Some("done")),
        ),
        EventType::OptionSelected => (
            "A menu option with notify was chosen (seed 003 toggle).",
            conversation_schema(
                name,
                json!({"option": {"type": "string"}, "keyword": {"type": "integer", "minimum": 0}}),
                &["option", "keyword"],
            ),
            with(
                sample_common(Some("membership"), Some("Membership")),
                json!({"option": "One month", "keyword": 1}),
            ),
        ),
        EventType::ResponseReceived => (
            "An ask node with notify was answered (seed 003 redirect type).",
            conversation_schema(
                name,
                json!({"field": {"type": "string", "minLength": 1}, "response": {"type": "string"}}),
                &["field", "response"],
            ),
            with(
                sample_common(Some("welcome"), Some("Welcome Message")),
                json!({"field": "name", "response": "John Doe"}),
            ),
        ),
        EventType::DatapointCollected => (
            "An ask node marked datapoint saved a validated answer (seed 000).",
            conversation_schema(
                name,
                json!({"field": {"type": "string", "minLength": 1}, "value": {}}),
                &["field", "value"],
            ),
            with(
                sample_common(Some("email"), Some("Email")),
                json!({"field": "email", "value": "ana@example.com"}),
            ),
        ),
        EventType::QuoteGenerated => (
            "A quote node priced a quote.",
            conversation_schema(name, json!({"quote": quote_schema()}), &["quote"]),
            with(
                sample_common(Some("price"), Some("Price")),
                json!({"quote": {
                    "lines": [{"item": "small", "name": "Small box", "options": ["Fragile"], "quantity": "2",
                               "unit_price": "12.50", "amount": "25.00"}],
                    "subtotal": "25.00", "tax": "4.00", "total": "29.00", "currency": "MXN",
                    "valid_until": "2025-12-24"
                }}),
            ),
        ),
        EventType::AppointmentBooked => (
            "A slot was booked; the store guarantees no double booking.",
            conversation_schema(
                name,
                json!({"appointment": appointment_schema()}),
                &["appointment"],
            ),
            with(
                sample_common(Some("book"), Some("Booking")),
                json!({"appointment": sample_appointment()}),
            ),
        ),
        EventType::AppointmentCancelled => (
            "A contact cancelled their booking.",
            conversation_schema(
                name,
                json!({"appointment": appointment_schema()}),
                &["appointment"],
            ),
            with(
                sample_common(Some("book"), Some("Booking")),
                json!({"appointment": sample_appointment()}),
            ),
        ),
        EventType::ConversationExpired => (
            "An idle conversation ended after the bot's expire_after; node is where it waited.",
            conversation_schema(name, json!({}), &[]),
            sample_common(Some("budget"), Some("Budget")),
        ),
        EventType::ContactOptedOut => (
            "A contact typed an opt-out keyword (stop); user.opted_out is now true.",
            conversation_schema(
                name,
                json!({"keyword": {"type": "string", "minLength": 1}}),
                &["keyword"],
            ),
            with(
                sample_common(Some("budget"), Some("Budget")),
                json!({"keyword": "stop"}),
            ),
        ),
        EventType::ContactOptedIn => (
            "A contact typed an opt-in keyword (start); user.opted_out is now false.",
            conversation_schema(
                name,
                json!({"keyword": {"type": "string", "minLength": 1}}),
                &["keyword"],
            ),
            with(sample_common(None, None), json!({"keyword": "start"})),
        ),
        EventType::WebhookTest => (
            "A test event sent on demand to check an endpoint.",
            json!({
                "$schema": DRAFT, "title": name, "type": "object", "required": ["message"],
                "properties": {"message": {"type": "string"}}
            }),
            json!({"message": "This is a test event from botwire."}),
        ),
        EventType::EndpointDisabled => (
            "An endpoint was disabled after failing for too long or answering 410 Gone.",
            json!({
                "$schema": DRAFT, "title": name, "type": "object",
                "required": ["endpoint_id", "url", "reason"],
                "properties": {
                    "endpoint_id": {"type": "string", "minLength": 1},
                    "url": {"type": "string", "minLength": 1},
                    "reason": {"type": "string"}
                }
            }),
            json!({"endpoint_id": "ep_01HZX3M2", "url": "https://example.com/hooks", "reason": "no successful delivery for 5 days"}),
        ),
        EventType::MessageSent => (
            "A reply was accepted by the messaging platform.",
            message_status_schema(name, "sent"),
            sample_message_status("sent"),
        ),
        EventType::MessageDelivered => (
            "The messaging platform reports a reply on the person's device.",
            message_status_schema(name, "delivered"),
            sample_message_status("delivered"),
        ),
        EventType::MessageRead => (
            "The messaging platform reports a reply read.",
            message_status_schema(name, "read"),
            sample_message_status("read"),
        ),
        EventType::MessageFailed => (
            "A reply will not arrive: refused by the platform (with its error), out of attempts, or outside WhatsApp's 24-hour window.",
            message_status_schema(name, "failed"),
            sample_message_status("failed"),
        ),
        EventType::ConversationHandoff => (
            "A conversation reached a handoff node (or a keyword that leads to one): the bot stops answering until a person releases it.",
            conversation_schema(name, json!({}), &[]),
            sample_common(Some("agent"), Some("Talk to a person")),
        ),
        EventType::AgentMessage => (
            "A person answered a conversation in handoff through the API or the console; text is what they wrote.",
            conversation_schema(
                name,
                json!({"text": {"type": "string", "minLength": 1}}),
                &["text"],
            ),
            with(
                sample_common(Some("agent"), Some("Talk to a person")),
                json!({"text": "Hi, this is Ana. How can I help?"}),
            ),
        ),
        EventType::ConversationReleased => (
            "A conversation in handoff was given back to the bot; node is where the bot goes on (released_at is the node it waited at).",
            conversation_schema(
                name,
                json!({"released_at": {"type": ["string", "null"]}}),
                &["released_at"],
            ),
            with(
                sample_common(Some("welcome"), Some("Welcome Message")),
                json!({"released_at": "agent"}),
            ),
        ),
        EventType::BroadcastStarted => (
            "A broadcast chose its recipients (the contacts its segment matched at that moment) and began sending.",
            json!({
                "$schema": DRAFT, "title": name, "type": "object",
                "required": ["broadcast_id", "segment_id", "recipients"],
                "properties": {
                    "broadcast_id": {"type": "string", "minLength": 1},
                    "segment_id": {"type": "string", "minLength": 1},
                    "recipients": {"type": "integer", "minimum": 0}
                }
            }),
            json!({"broadcast_id": "bc_01HZX3M2", "segment_id": "seg_01HZX3M1", "recipients": 1200}),
        ),
        EventType::BroadcastCompleted => (
            "Every recipient of a broadcast was handled: sent (its message is in the channel's outbox) or skipped, with the skips by reason.",
            json!({
                "$schema": DRAFT, "title": name, "type": "object",
                "required": ["broadcast_id", "sent", "skipped"],
                "properties": {
                    "broadcast_id": {"type": "string", "minLength": 1},
                    "sent": {"type": "integer", "minimum": 0},
                    "skipped": {
                        "type": "object",
                        "required": ["opted_out", "no_channel", "outside_window"],
                        "properties": {
                            "opted_out": {"type": "integer", "minimum": 0},
                            "no_channel": {"type": "integer", "minimum": 0},
                            "outside_window": {"type": "integer", "minimum": 0},
                            "in_handoff": {"type": "integer", "minimum": 0, "description": "campaign broadcasts: a person answered the conversation"},
                            "no_campaign": {"type": "integer", "minimum": 0, "description": "campaign broadcasts: the flow no longer has the campaign"}
                        }
                    }
                }
            }),
            json!({"broadcast_id": "bc_01HZX3M2", "sent": 1150,
                   "skipped": {"opted_out": 30, "no_channel": 15, "outside_window": 5}}),
        ),
    };
    EventTypeInfo {
        name,
        description,
        schema,
        sample,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Asserts that an event's data validates against its catalog schema.
    pub(crate) fn assert_valid(ev: &NewEvent) {
        let schema = info(ev.event_type).schema;
        let v = jsonschema::validator_for(&schema).expect("schema compiles");
        let errors: Vec<String> = v.iter_errors(&ev.data).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "{} data {} invalid: {errors:?}",
            ev.event_type,
            ev.data
        );
    }

    #[test]
    fn names_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(serde_json::to_value(t).unwrap(), json!(t.as_str()));
            assert!(is_reserved(t.as_str()));
        }
        assert_eq!(
            EventType::parse("message.sent"),
            Some(EventType::MessageSent)
        );
        assert_eq!(EventType::parse("message.bounced"), None);
        assert_eq!(EventType::MessageReceived.camel_name(), "messageReceived");
        assert_eq!(
            EventType::AppointmentBooked.to_string(),
            "appointment.booked"
        );
    }

    #[test]
    fn reserved_names() {
        assert!(is_reserved("message.deleted"));
        assert!(is_reserved("botwire.anything"));
        assert!(!is_reserved("order.shipped"));
        assert!(check_custom_name("order.shipped").is_ok());
        assert!(check_custom_name("quote.hacked").is_err());
        assert!(check_custom_name("Order Shipped").is_err());
        assert!(check_custom_name("nodot").is_err());
    }

    #[test]
    fn samples_validate_and_schemas_are_strict() {
        let cat = catalog();
        assert_eq!(cat.len(), EventType::ALL.len());
        for entry in &cat {
            let t = EventType::parse(entry.name).unwrap();
            assert_valid(&NewEvent {
                event_type: t,
                data: entry.sample.clone(),
            });
            let v = jsonschema::validator_for(&entry.schema).unwrap();
            assert!(
                !v.is_valid(&json!({})),
                "{} accepts an empty object",
                entry.name
            );
            assert!(
                !v.is_valid(&json!("text")),
                "{} accepts a string",
                entry.name
            );
        }
        let v = jsonschema::validator_for(&info(EventType::OptionSelected).schema).unwrap();
        let mut bad = info(EventType::OptionSelected).sample;
        bad["keyword"] = json!("1");
        assert!(!v.is_valid(&bad), "keyword must be an integer");
        let v = jsonschema::validator_for(&info(EventType::QuoteGenerated).schema).unwrap();
        let mut bad = info(EventType::QuoteGenerated).sample;
        bad["quote"]["total"] = json!(29.0);
        assert!(!v.is_valid(&bad), "money must be a string");
    }
}
