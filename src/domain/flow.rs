//! The flow document: the graph of nodes a bot runs, and the bot file that
//! carries a flow with its price table, calendar and story webhooks.
//!
//! A flow is authored as YAML or JSON:
//!
//! ```yaml
//! start: welcome            # first node of the main flow
//! error: oops               # optional: where failures go when a node has no on_error
//! nodes:
//!   welcome:
//!     label: Welcome Message            # optional, defaults to the node id
//!     ask: "Your name, please?"
//!     save_as: name
//!     validate: { kind: text, min: 2, max: 80 }
//!     retry: "Please enter your name (2-80 characters)."
//!     notify: true                      # response.received
//!     datapoint: false                  # datapoint.collected
//!     next: membership
//!   membership:
//!     menu: "{{memory.name}}, pick one:"
//!     options:
//!       - { keyword: 1, label: One month, notify: true, next: thanks }
//!       - { keyword: 4, label: Raffle, campaign: raffle }
//!       - { keyword: 5, label: Weather, webhook: weather, next: thanks }
//!   lookup: { webhook: weather, next: thanks, on_error: oops }
//!   price:  { quote: true, next: thanks, on_error: oops }
//!   book:   { booking: "Pick a time:", offer: 3, next: thanks, cancel_keyword: cancel }
//!   thanks: { message: "Thank you, {{memory.name}}!", next: done }
//!   oops:   { message: "Sorry, something went wrong.", next: done }
//!   done:   { end: true, message: "Bye" }
//! campaigns:                # other flows of the bot, same shape (start, error, nodes)
//!   raffle: { start: r1, nodes: { r1: { message: "In!", next: r2 }, r2: { end: true } } }
//! ```
//!
//! A node has exactly one kind key (`message`, `menu`, `ask`, `webhook`,
//! `quote`, `booking`, `end`), modelled as [`FlowNode`]. A menu option goes to
//! exactly one of `next` (a node of the same flow) or `campaign` (another flow,
//! or `main`); an optional `webhook` on it is called first. Option keywords
//! default to the option's position (1, 2, …).
//!
//! Checking happens in two layers, each reporting every problem it finds with
//! the node and field at fault ([`FlowError`]):
//! - parsing ([`Flow::from_yaml`], [`Flow::from_json`]): syntax (with line and
//!   column), unknown fields, a node with zero or several kinds, missing required
//!   fields, fields that the node's kind does not use;
//! - [`Flow::validate`]: the whole graph — ids, limits, targets, reachability,
//!   menus, validations, webhook names, and cycles without input.
//!
//! Invariants: parsing never panics, whatever the input; a flow that passed
//! both layers cannot loop forever without waiting for the user.

use crate::domain::calendar::Calendar;
use crate::domain::condition::{Expr, ExprError};
use crate::domain::outbound::{self, CustomHeader};
use crate::domain::quote::PriceTable;
use crate::domain::validate::{Validation, normalise};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use thiserror::Error;

/// Name of the main flow (campaigns have their own names).
pub const MAIN: &str = "main";
/// Most nodes in one flow, campaigns included.
pub const MAX_NODES: usize = 500;
/// Longest text (message, prompt, label …), in characters.
pub const MAX_TEXT: usize = 4096;
/// Largest flow document accepted, in bytes.
pub const MAX_SOURCE: usize = 1024 * 1024;
/// Most slots a booking node may offer at once.
pub const MAX_OFFER: u32 = 10;
/// Memory keys the engine writes itself; an `ask` may not save over them.
pub const RESERVED_MEMORY_KEYS: [&str; 3] = ["quote", "appointment", "quickreply"];

/// One problem in a flow, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
#[error("{}", self.describe())]
pub struct FlowError {
    /// Node id (`membership`, or `raffle/r1` inside a campaign); `""` for the
    /// document as a whole, the campaign name for a campaign as a whole.
    pub node: String,
    /// Field within the node (`options[2].next`); `""` for the node as a whole.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// 1-based column inside the field's text (conditions and expressions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

impl FlowError {
    /// An error about `node`'s `field`.
    pub fn new(
        node: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        FlowError {
            node: node.into(),
            field: field.into(),
            message: message.into(),
            column: None,
        }
    }

    /// An error about an expression in `node`'s `field`, with its column.
    pub fn in_expr(node: impl Into<String>, field: impl Into<String>, e: &ExprError) -> Self {
        FlowError {
            column: e.column(),
            ..FlowError::new(node, field, e.to_string())
        }
    }

    fn describe(&self) -> String {
        match (self.node.is_empty(), self.field.is_empty()) {
            (true, true) => self.message.clone(),
            (true, false) => format!("field \"{}\": {}", self.field, self.message),
            (false, true) => format!("node \"{}\": {}", self.node, self.message),
            (false, false) => format!(
                "node \"{}\", field \"{}\": {}",
                self.node, self.field, self.message
            ),
        }
    }
}

/// Joins errors for a one-line message.
pub fn join_errors(errors: &[FlowError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A bot's flows: the main one and its campaigns.
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    /// The main flow.
    pub main: Graph,
    /// Other flows of the bot, by name, reachable from menu options.
    pub campaigns: BTreeMap<String, Graph>,
    /// Words that work at any waiting node, before its own answers.
    pub keywords: Vec<Keyword>,
    /// An idle conversation ends after this long (`conversation.expired`).
    pub expire_after: Option<Span>,
    /// Memory keys saved by `date` asks (conditions see them as timestamps);
    /// derived from the nodes when the flow is parsed.
    pub date_keys: BTreeSet<String>,
}

/// A global keyword: typed at any waiting node (case and spaces ignored),
/// it is handled before the node's own answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Keyword {
    /// The word, as written.
    pub word: String,
    /// Node of the main flow the conversation goes to.
    pub next: String,
    /// Sets `user.opted_out = true` and emits `contact.opted_out`.
    pub opt_out: bool,
    /// Sets `user.opted_out = false` and emits `contact.opted_in`.
    pub opt_in: bool,
}

/// A length of time written `30s`, `10m`, `24h` or `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    /// Seconds.
    pub seconds: u64,
}

impl Span {
    /// Longest span accepted (a year).
    pub const MAX_SECONDS: u64 = 366 * 24 * 3600;

    /// Parses `<number><unit>` with unit `s`, `m`, `h` or `d`.
    pub fn parse(s: &str) -> Result<Span, String> {
        let bad = || {
            format!("\"{s}\" is not a duration; write a number and s, m, h or d, like 10m or 24h")
        };
        let t = s.trim();
        let unit = t.chars().last().ok_or_else(bad)?;
        let n: u64 = t[..t.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
        let mult = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let seconds = n.checked_mul(mult).ok_or_else(bad)?;
        if seconds == 0 || seconds > Self::MAX_SECONDS {
            return Err(format!("\"{s}\" must be between 1s and 366d"));
        }
        Ok(Span { seconds })
    }

    /// Milliseconds, for adding to a clock.
    pub fn millis(&self) -> i64 {
        i64::try_from(self.seconds.saturating_mul(1000)).unwrap_or(i64::MAX)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.seconds;
        if s.is_multiple_of(86_400) {
            write!(f, "{}d", s / 86_400)
        } else if s.is_multiple_of(3600) {
            write!(f, "{}h", s / 3600)
        } else if s.is_multiple_of(60) {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

/// Where a node goes next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Always this node.
    Node(String),
    /// The first branch whose condition holds; the last branch is `else`.
    Branches(Vec<Branch>),
}

/// One branch of a `next` list.
#[derive(Debug, Clone, PartialEq)]
pub struct Branch {
    /// The condition; `None` for the closing `else`.
    pub when: Option<Expr>,
    /// Node taken when the condition holds.
    pub then: String,
}

impl Next {
    /// Every target with the field that names it (`next`, `next[1].then`, `next[2].else`).
    pub fn targets(&self) -> Vec<(String, &str)> {
        match self {
            Next::Node(n) => vec![("next".into(), n.as_str())],
            Next::Branches(bs) => bs
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let key = if b.when.is_some() { "then" } else { "else" };
                    (format!("next[{i}].{key}"), b.then.as_str())
                })
                .collect(),
        }
    }

    /// The `else` target of a branch list, or the single target.
    pub fn fallback(&self) -> &str {
        match self {
            Next::Node(n) => n,
            Next::Branches(bs) => bs.last().map_or("", |b| b.then.as_str()),
        }
    }
}

/// Timers of a waiting node (`ask`, `menu`, `booking`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Wait {
    /// How long to wait for an answer before going to `on_timeout`.
    pub timeout: Option<Span>,
    /// Node taken when the timeout passes.
    pub on_timeout: Option<String>,
    /// Said once, `remind_after` after the question, if no answer came.
    pub reminder: Option<String>,
    /// When the reminder is said.
    pub remind_after: Option<Span>,
}

impl Wait {
    /// Whether any timer is set.
    pub fn is_set(&self) -> bool {
        self.timeout.is_some() || self.reminder.is_some()
    }
}

/// A picture, video, sound or file sent with a text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Media {
    /// What it is.
    pub kind: MediaKind,
    /// Where it is (`https://…`; merge tags allowed).
    pub url: String,
    /// Text shown with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
}

/// The kinds of media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    /// A picture.
    Image,
    /// A video.
    Video,
    /// A sound.
    Audio,
    /// Any other file (a PDF …).
    File,
}

impl MediaKind {
    /// The field name (`image` …).
    pub fn as_str(&self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
            MediaKind::File => "file",
        }
    }
}

/// One assignment of a `set` node.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    /// What is assigned.
    pub target: SetTarget,
    /// The value.
    pub value: SetValue,
}

/// Where a `set` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetTarget {
    /// `memory.KEY`
    Memory(String),
    /// `user.KEY` (contact attributes, kept across conversations).
    User(String),
}

impl SetTarget {
    /// As written (`memory.score`).
    pub fn path(&self) -> String {
        match self {
            SetTarget::Memory(k) => format!("memory.{k}"),
            SetTarget::User(k) => format!("user.{k}"),
        }
    }
}

/// The value a `set` assigns.
#[derive(Debug, Clone, PartialEq)]
pub enum SetValue {
    /// A YAML/JSON number, boolean or null, stored as is.
    Literal(serde_json::Value),
    /// A text with merge tags (`"{{memory.name}} from {{user.city}}"`), rendered.
    Template(String),
    /// A CEL expression (any other text), evaluated.
    Expr(Expr),
}

/// One flow: a start node, an optional error node and the nodes, in authoring order.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    /// Id of the first node.
    pub start: String,
    /// Node taken when something fails and the failing node has no `on_error`.
    pub error: Option<String>,
    /// The nodes.
    pub nodes: Vec<Node>,
}

/// A node: id, optional label, and what it does.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Id, `[A-Za-z0-9_-]{1,64}`.
    pub id: String,
    /// Human name (seed 003's "label"); the id when absent.
    pub label: Option<String>,
    /// What the node does.
    pub kind: FlowNode,
}

impl Node {
    /// The label, or the id when there is none.
    pub fn label(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.id)
    }
}

/// What a node does.
#[derive(Debug, Clone, PartialEq)]
pub enum FlowNode {
    /// Says a text (with merge tags), then goes on.
    Message {
        /// The text.
        text: String,
        /// A picture, video, sound or file sent with it.
        media: Option<Media>,
        /// Next node.
        next: Next,
    },
    /// Shows numbered options and waits for a choice.
    Menu {
        /// Text shown above the options.
        text: String,
        /// A picture, video, sound or file sent with it.
        media: Option<Media>,
        /// The options.
        options: Vec<MenuOption>,
        /// Said when the answer matches no option (the options follow it).
        retry: Option<String>,
        /// Reminder and timeout.
        wait: Wait,
    },
    /// Asks a question, validates the answer and saves it to memory.
    Ask {
        /// The question.
        prompt: String,
        /// A picture, video, sound or file sent with it.
        media: Option<Media>,
        /// Memory key the answer is saved under.
        save_as: String,
        /// How the answer is checked; any non-empty text when absent.
        validate: Option<Validation>,
        /// Said when the answer is invalid.
        retry: Option<String>,
        /// Emit `response.received` after a valid answer.
        notify: bool,
        /// Emit `datapoint.collected` after a valid answer.
        datapoint: bool,
        /// Next node.
        next: Next,
        /// Reminder and timeout.
        wait: Wait,
    },
    /// Calls a story webhook, then goes on.
    Webhook {
        /// Story webhook name.
        name: String,
        /// Next node on success.
        next: Next,
        /// Node on failure.
        on_error: Option<String>,
    },
    /// Prices memory against the bot's price table.
    Quote {
        /// Next node on success.
        next: Next,
        /// Node on failure.
        on_error: Option<String>,
    },
    /// Offers free slots and books the chosen one.
    Booking {
        /// Text shown above the slots.
        prompt: String,
        /// How many slots to offer.
        offer: u32,
        /// Said when the answer matches no slot (the slots follow it).
        retry: Option<String>,
        /// Answer that cancels the booking held in memory.
        cancel_keyword: Option<String>,
        /// Next node once booked.
        next: Next,
        /// Node when there are no free slots; `next` when absent.
        on_error: Option<String>,
        /// Reminder and timeout.
        wait: Wait,
    },
    /// Assigns memory or contact attributes, then goes on.
    Set {
        /// The assignments, in order (a later one sees the earlier ones).
        assignments: Vec<Assignment>,
        /// Next node.
        next: Next,
    },
    /// Ends the conversation.
    End {
        /// Said before ending.
        message: Option<String>,
    },
}

impl FlowNode {
    /// The kind key as written in the document.
    pub fn kind_name(&self) -> &'static str {
        match self {
            FlowNode::Message { .. } => "message",
            FlowNode::Menu { .. } => "menu",
            FlowNode::Ask { .. } => "ask",
            FlowNode::Webhook { .. } => "webhook",
            FlowNode::Quote { .. } => "quote",
            FlowNode::Booking { .. } => "booking",
            FlowNode::Set { .. } => "set",
            FlowNode::End { .. } => "end",
        }
    }

    /// Whether the node waits for the user (ask, menu, booking).
    pub fn waits_for_input(&self) -> bool {
        matches!(
            self,
            FlowNode::Ask { .. } | FlowNode::Menu { .. } | FlowNode::Booking { .. }
        )
    }

    /// The timers of a waiting node.
    pub fn wait(&self) -> Option<&Wait> {
        match self {
            FlowNode::Ask { wait, .. }
            | FlowNode::Menu { wait, .. }
            | FlowNode::Booking { wait, .. } => Some(wait),
            _ => None,
        }
    }
}

/// One numbered option of a menu.
#[derive(Debug, Clone, PartialEq)]
pub struct MenuOption {
    /// The number the user may type.
    pub keyword: u32,
    /// The label the user may type instead.
    pub label: String,
    /// Emit `option.selected` when chosen.
    pub notify: bool,
    /// Story webhook called when chosen, before going on.
    pub webhook: Option<String>,
    /// Where the option leads.
    pub goto: Goto,
}

/// Where a menu option leads.
#[derive(Debug, Clone, PartialEq)]
pub enum Goto {
    /// A node of the same flow.
    Node(String),
    /// The start of another flow (a campaign name, or `main`).
    Campaign(String),
}

/// A story webhook (seed 002): a call to the user's API made from a flow.
///
/// `params` go to the query string for GET and DELETE and form a JSON body
/// otherwise; merge tags work in the URL's path and query (values
/// percent-encoded), header values and the string values of `params`
/// (substituted inside strings only, so an answer can never inject JSON).
/// Header values are secrets unless marked plain (see
/// [`CustomHeader`](super::outbound::CustomHeader)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoryWebhook {
    /// Unique name used by flows.
    pub name: String,
    /// GET, POST, PUT, PATCH or DELETE (default POST).
    #[serde(default = "default_method")]
    pub method: String,
    /// URL, with merge tags in its path and query.
    pub url: String,
    /// Query parameters (GET, DELETE) or JSON body (others), with merge tags in strings.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Extra headers, with merge tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, CustomHeader>,
    /// Timeout in milliseconds (default 10,000; at most 30,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
    /// Sign requests like event webhooks (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign: Option<bool>,
}

impl StoryWebhook {
    /// Default request timeout.
    pub const DEFAULT_TIMEOUT_MS: u32 = 10_000;
    /// Longest allowed timeout.
    pub const MAX_TIMEOUT_MS: u32 = 30_000;

    /// The timeout in force.
    pub fn timeout_ms(&self) -> u32 {
        self.timeout_ms.unwrap_or(Self::DEFAULT_TIMEOUT_MS)
    }

    /// Whether requests carry signature headers.
    pub fn signs(&self) -> bool {
        self.sign.unwrap_or(true)
    }

    /// Whether params travel in the query string (GET, DELETE) rather than
    /// a JSON body.
    pub fn params_in_query(&self) -> bool {
        matches!(self.method.as_str(), "GET" | "DELETE")
    }

    /// This definition with its secret header values redacted, as it is
    /// shown after it was saved.
    pub fn redacted(&self) -> Self {
        Self {
            headers: outbound::redact_all(&self.headers),
            ..self.clone()
        }
    }

    /// Problems with where and how this webhook calls: its URL and headers
    /// (the rules endpoints follow too, see [`outbound`]). Checked when it
    /// is saved and again before each call; `field` prefixes field names.
    pub fn call_problems(&self, node: &str, field: &str) -> Vec<FlowError> {
        let f = |s: &str| format!("{field}{s}");
        let mut errs = Vec::new();
        if let Err(p) = outbound::check_url_template(&self.url) {
            errs.push(FlowError::new(node, f("url"), format!("url {p}")));
        }
        for p in outbound::header_problems(&self.headers, outbound::Values::MergeTags) {
            let at = match p.header() {
                Some(name) => format!("headers.{name}"),
                None => "headers".to_owned(),
            };
            errs.push(FlowError::new(node, f(&at), p.to_string()));
        }
        errs
    }

    /// Problems with this definition; `field` prefixes each field name.
    pub fn problems(&self, node: &str, field: &str) -> Vec<FlowError> {
        let f = |s: &str| format!("{field}{s}");
        let mut errs = Vec::new();
        if !is_valid_id(&self.name) {
            errs.push(FlowError::new(
                node,
                f("name"),
                "names are 1-64 characters of A-Z a-z 0-9 _ -",
            ));
        }
        if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&self.method.as_str()) {
            errs.push(FlowError::new(
                node,
                f("method"),
                "method must be GET, POST, PUT, PATCH or DELETE",
            ));
        }
        if self
            .timeout_ms
            .is_some_and(|t| t == 0 || t > Self::MAX_TIMEOUT_MS)
        {
            errs.push(FlowError::new(
                node,
                f("timeout_ms"),
                "timeout_ms must be 1 to 30000",
            ));
        }
        errs.extend(self.call_problems(node, field));
        errs
    }
}

fn default_method() -> String {
    "POST".into()
}

/// A whole bot as imported or exported (`botwire bots import FILE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotFile {
    /// Bot id (seed 000's `uniqueId`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// `data_collection`, `quote_generation`, `appointment` or `support`.
    #[serde(rename = "type")]
    pub r#type: String,
    /// Prices, for quote bots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_table: Option<PriceTable>,
    /// Slots, for appointment bots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar: Option<Calendar>,
    /// Story webhooks used by the flow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<StoryWebhook>,
    /// The flow.
    pub flow: Flow,
}

/// Bot types.
pub const BOT_TYPES: [&str; 4] = [
    "data_collection",
    "quote_generation",
    "appointment",
    "support",
];

// ---------------------------------------------------------------------------
// Raw document shape (serde) and its conversion to the typed flow.

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default)]
    nodes: RawNodes,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    campaigns: BTreeMap<String, RawGraph>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "ordered_keywords"
    )]
    keywords: Vec<(String, RawKeyword)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expire_after: Option<String>,
}

/// A keyword's target: a node id, or the node with opt-out/opt-in flags.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum RawKeyword {
    Node(String),
    Full {
        next: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        opt_out: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        opt_in: bool,
    },
}

/// Keywords keep their authoring order (first match wins on equal words).
mod ordered_keywords {
    use super::RawKeyword;
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[(String, RawKeyword)], s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(v.len()))?;
        for (k, x) in v {
            m.serialize_entry(k, x)?;
        }
        m.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(String, RawKeyword)>, D::Error> {
        let m = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        m.into_iter()
            .map(|(k, v)| {
                RawKeyword::deserialize(v)
                    .map(|x| (k.clone(), x))
                    .map_err(|_| {
                        serde::de::Error::custom(format!(
                            "keyword \"{k}\": give a node id, or {{ next: NODE, opt_out: true }}"
                        ))
                    })
            })
            .collect()
    }
}

/// `next`: a node id or a list of branches.
#[derive(Debug)]
enum RawNext {
    Node(String),
    Branches(Vec<RawBranch>),
}

impl<'de> Deserialize<'de> for RawNext {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawNext;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a node id, or a list of branches (- if: CONDITION then: NODE … - else: NODE)",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawNext, E> {
                Ok(RawNext::Node(v.to_string()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawNext, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<RawBranch>()? {
                    if out.len() >= MAX_BRANCHES {
                        return Err(de::Error::custom(format!(
                            "more than {MAX_BRANCHES} branches"
                        )));
                    }
                    out.push(b);
                }
                Ok(RawNext::Branches(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for RawNext {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RawNext::Node(n) => s.serialize_str(n),
            RawNext::Branches(b) => b.serialize(s),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBranch {
    #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
    when: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    then: Option<String>,
    #[serde(default, rename = "else", skip_serializing_if = "Option::is_none")]
    otherwise: Option<String>,
}

/// A media field: a URL, or `{ url, caption }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum RawMedia {
    Url(String),
    Full {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGraph {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default)]
    nodes: RawNodes,
}

/// Nodes in authoring order (a YAML/JSON map read entry by entry).
#[derive(Debug, Default)]
struct RawNodes(Vec<(String, RawNode)>);

impl<'de> Deserialize<'de> for RawNodes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawNodes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map from node id to node")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<RawNodes, A::Error> {
                let mut out: Vec<(String, RawNode)> = Vec::new();
                while let Some(id) = m.next_key::<String>()? {
                    if out.iter().any(|(k, _)| *k == id) {
                        return Err(de::Error::custom(format!("duplicate node id \"{id}\"")));
                    }
                    if out.len() >= MAX_NODES {
                        return Err(de::Error::custom(format!("more than {MAX_NODES} nodes")));
                    }
                    let node = m.next_value::<RawNode>()?;
                    out.push((id, node));
                }
                Ok(RawNodes(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl Serialize for RawNodes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    menu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ask: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    webhook: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    quote: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    booking: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    set: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image: Option<RawMedia>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    video: Option<RawMedia>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    audio: Option<RawMedia>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file: Option<RawMedia>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    save_as: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    validate: Option<Validation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    options: Option<Vec<RawOption>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offer: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cancel_keyword: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    notify: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    datapoint: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next: Option<RawNext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    on_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    on_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reminder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    remind_after: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOption {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keyword: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    notify: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    webhook: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    campaign: Option<String>,
}

const KIND_KEYS: [&str; 8] = [
    "message", "menu", "ask", "webhook", "quote", "booking", "set", "end",
];

/// Most branches in one `next` list.
pub const MAX_BRANCHES: usize = 32;
/// Most assignments in one `set` node.
pub const MAX_ASSIGNMENTS: usize = 32;

impl RawNode {
    /// Names of the optional fields that are present (kind keys excluded).
    fn present_fields(&self) -> Vec<&'static str> {
        let mut f = Vec::new();
        let mut add = |present: bool, name: &'static str| {
            if present {
                f.push(name)
            }
        };
        add(self.save_as.is_some(), "save_as");
        add(self.validate.is_some(), "validate");
        add(self.options.is_some(), "options");
        add(self.offer.is_some(), "offer");
        add(self.cancel_keyword.is_some(), "cancel_keyword");
        add(self.retry.is_some(), "retry");
        add(self.notify.is_some(), "notify");
        add(self.datapoint.is_some(), "datapoint");
        add(self.next.is_some(), "next");
        add(self.on_error.is_some(), "on_error");
        add(self.timeout.is_some(), "timeout");
        add(self.on_timeout.is_some(), "on_timeout");
        add(self.reminder.is_some(), "reminder");
        add(self.remind_after.is_some(), "remind_after");
        add(self.image.is_some(), "image");
        add(self.video.is_some(), "video");
        add(self.audio.is_some(), "audio");
        add(self.file.is_some(), "file");
        f
    }

    fn kinds(&self) -> Vec<&'static str> {
        let present = [
            self.message.is_some() && self.end.is_none(),
            self.menu.is_some(),
            self.ask.is_some(),
            self.webhook.is_some(),
            self.quote.is_some(),
            self.booking.is_some(),
            self.set.is_some(),
            self.end.is_some(),
        ];
        KIND_KEYS
            .iter()
            .zip(present)
            .filter(|(_, p)| *p)
            .map(|(k, _)| *k)
            .collect()
    }
}

fn scoped(campaign: Option<&str>, node: &str) -> String {
    match campaign {
        Some(c) => format!("{c}/{node}"),
        None => node.to_string(),
    }
}

fn node_from_raw(
    campaign: Option<&str>,
    id: &str,
    raw: RawNode,
    errs: &mut Vec<FlowError>,
) -> Option<Node> {
    let at = scoped(campaign, id);
    let kinds = raw.kinds();
    let kind = match kinds.as_slice() {
        [one] => *one,
        [] => {
            errs.push(FlowError::new(
                &at,
                "kind",
                "node has no kind; give it exactly one of message, menu, ask, webhook, quote, booking, set, end",
            ));
            return None;
        }
        many => {
            errs.push(FlowError::new(
                &at,
                "kind",
                format!(
                    "node has several kinds ({}); keep exactly one",
                    many.join(", ")
                ),
            ));
            return None;
        }
    };
    const WAIT: [&str; 4] = ["timeout", "on_timeout", "reminder", "remind_after"];
    const MEDIA: [&str; 4] = ["image", "video", "audio", "file"];
    let allowed: Vec<&str> = match kind {
        "message" => [&["next"][..], &MEDIA].concat(),
        "menu" => [&["options", "retry"][..], &MEDIA, &WAIT].concat(),
        "ask" => [
            &[
                "save_as",
                "validate",
                "retry",
                "notify",
                "datapoint",
                "next",
            ][..],
            &MEDIA,
            &WAIT,
        ]
        .concat(),
        "webhook" | "quote" => vec!["next", "on_error"],
        "booking" => [
            &["offer", "retry", "cancel_keyword", "next", "on_error"][..],
            &WAIT,
        ]
        .concat(),
        "set" => vec!["next"],
        _ => Vec::new(),
    };
    let before = errs.len();
    for f in raw.present_fields() {
        if !allowed.contains(&f) {
            errs.push(FlowError::new(
                &at,
                f,
                format!("a {kind} node does not use \"{f}\""),
            ));
        }
    }
    let missing =
        |field: &str| FlowError::new(&at, field, format!("missing required field \"{field}\""));
    let require = |value: Option<String>, field: &str, errs: &mut Vec<FlowError>| -> String {
        value.unwrap_or_else(|| {
            errs.push(missing(field));
            String::new()
        })
    };
    let next = |value: Option<RawNext>, errs: &mut Vec<FlowError>| -> Next {
        match value {
            Some(n) => next_from_raw(&at, n, errs),
            None => {
                errs.push(missing("next"));
                Next::Node(String::new())
            }
        }
    };
    let media = media_from_raw(&at, &raw, errs);
    let wait = wait_from_raw(&at, &raw, errs);
    let node_kind = match kind {
        "message" => FlowNode::Message {
            text: raw.message.unwrap_or_default(),
            media,
            next: next(raw.next, errs),
        },
        "menu" => {
            let options = match raw.options {
                None => {
                    errs.push(missing("options"));
                    Vec::new()
                }
                Some(list) => list
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, o)| option_from_raw(&at, i, o, errs))
                    .collect(),
            };
            FlowNode::Menu {
                text: raw.menu.unwrap_or_default(),
                media,
                options,
                retry: raw.retry,
                wait,
            }
        }
        "ask" => {
            let save_as = require(raw.save_as, "save_as", errs);
            FlowNode::Ask {
                prompt: raw.ask.unwrap_or_default(),
                media,
                save_as,
                validate: raw.validate,
                retry: raw.retry,
                notify: raw.notify.unwrap_or(false),
                datapoint: raw.datapoint.unwrap_or(false),
                next: next(raw.next, errs),
                wait,
            }
        }
        "webhook" => FlowNode::Webhook {
            name: raw.webhook.unwrap_or_default(),
            next: next(raw.next, errs),
            on_error: raw.on_error,
        },
        "quote" => {
            if raw.quote != Some(true) {
                errs.push(FlowError::new(&at, "quote", "write \"quote: true\""));
            }
            FlowNode::Quote {
                next: next(raw.next, errs),
                on_error: raw.on_error,
            }
        }
        "booking" => FlowNode::Booking {
            prompt: raw.booking.unwrap_or_default(),
            offer: raw.offer.unwrap_or(3),
            retry: raw.retry,
            cancel_keyword: raw.cancel_keyword,
            next: next(raw.next, errs),
            on_error: raw.on_error,
            wait,
        },
        "set" => FlowNode::Set {
            assignments: assignments_from_raw(&at, raw.set.unwrap_or_default(), errs),
            next: next(raw.next, errs),
        },
        _ => {
            if raw.end != Some(true) {
                errs.push(FlowError::new(&at, "end", "write \"end: true\""));
            }
            FlowNode::End {
                message: raw.message,
            }
        }
    };
    (errs.len() == before).then(|| Node {
        id: id.to_string(),
        label: raw.label,
        kind: node_kind,
    })
}

/// Compiles a `next`: a node id, or branches whose conditions compile and
/// which end with exactly one `else`.
fn next_from_raw(at: &str, raw: RawNext, errs: &mut Vec<FlowError>) -> Next {
    let list = match raw {
        RawNext::Node(n) => return Next::Node(n),
        RawNext::Branches(list) => list,
    };
    let mut out = Vec::with_capacity(list.len());
    let count = list.len();
    for (i, b) in list.into_iter().enumerate() {
        let field = |s: &str| format!("next[{i}]{s}");
        let last = i + 1 == count;
        match (b.when, b.then, b.otherwise) {
            (Some(cond), Some(then), None) => match Expr::compile(&cond) {
                Ok(e) => out.push(Branch {
                    when: Some(e),
                    then,
                }),
                Err(e) => errs.push(FlowError::in_expr(at, field(".if"), &e)),
            },
            (None, None, Some(target)) if last => out.push(Branch {
                when: None,
                then: target,
            }),
            (None, None, Some(_)) => errs.push(FlowError::new(
                at,
                field(".else"),
                "else must be the last branch",
            )),
            (Some(_), None, _) => errs.push(FlowError::new(
                at,
                field(".then"),
                "a branch with if needs then: NODE",
            )),
            (Some(_), Some(_), Some(_)) | (None, Some(_), Some(_)) => errs.push(FlowError::new(
                at,
                field(""),
                "a branch is either { if, then } or { else }, not both",
            )),
            (None, Some(_), None) => errs.push(FlowError::new(
                at,
                field(".if"),
                "a branch with then needs if: CONDITION",
            )),
            (None, None, None) => errs.push(FlowError::new(
                at,
                field(""),
                "empty branch: write { if: CONDITION, then: NODE } or { else: NODE }",
            )),
        }
    }
    if out.last().is_none_or(|b| b.when.is_some()) {
        errs.push(FlowError::new(
            at,
            "next",
            "a branch list must end with - else: NODE (taken when no condition holds or one cannot be evaluated)",
        ));
    }
    Next::Branches(out)
}

fn media_from_raw(at: &str, raw: &RawNode, errs: &mut Vec<FlowError>) -> Option<Media> {
    let given: Vec<(MediaKind, &RawMedia)> = [
        (MediaKind::Image, &raw.image),
        (MediaKind::Video, &raw.video),
        (MediaKind::Audio, &raw.audio),
        (MediaKind::File, &raw.file),
    ]
    .into_iter()
    .filter_map(|(k, m)| m.as_ref().map(|m| (k, m)))
    .collect();
    match given.as_slice() {
        [] => None,
        [(kind, m)] => Some(match m {
            RawMedia::Url(u) => Media {
                kind: *kind,
                url: u.clone(),
                caption: None,
            },
            RawMedia::Full { url, caption } => Media {
                kind: *kind,
                url: url.clone(),
                caption: caption.clone(),
            },
        }),
        [_, (second, _), ..] => {
            errs.push(FlowError::new(
                at,
                second.as_str(),
                "a node carries at most one of image, video, audio, file",
            ));
            None
        }
    }
}

fn wait_from_raw(at: &str, raw: &RawNode, errs: &mut Vec<FlowError>) -> Wait {
    let span = |v: &Option<String>, field: &str, errs: &mut Vec<FlowError>| {
        v.as_deref().and_then(|s| {
            Span::parse(s)
                .map_err(|m| errs.push(FlowError::new(at, field, m)))
                .ok()
        })
    };
    Wait {
        timeout: span(&raw.timeout, "timeout", errs),
        on_timeout: raw.on_timeout.clone(),
        reminder: raw.reminder.clone(),
        remind_after: span(&raw.remind_after, "remind_after", errs),
    }
}

fn assignments_from_raw(
    at: &str,
    raw: serde_json::Map<String, serde_json::Value>,
    errs: &mut Vec<FlowError>,
) -> Vec<Assignment> {
    let mut out = Vec::new();
    for (path, value) in raw {
        let field = format!("set.{path}");
        let target = match path.split_once('.') {
            Some(("memory", k)) if is_valid_id(k) => SetTarget::Memory(k.to_string()),
            Some(("user", k)) if is_valid_id(k) => SetTarget::User(k.to_string()),
            _ => {
                errs.push(FlowError::new(
                    at,
                    field,
                    "set writes memory.KEY or user.KEY (KEY: 1-64 characters of A-Z a-z 0-9 _ -)",
                ));
                continue;
            }
        };
        let value = match value {
            serde_json::Value::String(src) if src.contains("{{") => SetValue::Template(src),
            serde_json::Value::String(src) => match Expr::compile(&src) {
                Ok(e) => SetValue::Expr(e),
                Err(e) => {
                    errs.push(FlowError::in_expr(at, field, &e));
                    continue;
                }
            },
            v @ (serde_json::Value::Number(_)
            | serde_json::Value::Bool(_)
            | serde_json::Value::Null) => SetValue::Literal(v),
            _ => {
                errs.push(FlowError::new(
                    at,
                    field,
                    "a value is a number, true/false, null, a text with {{merge tags}} or a CEL expression",
                ));
                continue;
            }
        };
        out.push(Assignment { target, value });
    }
    out
}

fn option_from_raw(
    at: &str,
    i: usize,
    o: RawOption,
    errs: &mut Vec<FlowError>,
) -> Option<MenuOption> {
    let label = match o.label {
        Some(l) => l,
        None => {
            errs.push(FlowError::new(
                at,
                format!("options[{i}].label"),
                "missing required field \"label\"",
            ));
            return None;
        }
    };
    let goto = match (o.next, o.campaign) {
        (Some(n), None) => Goto::Node(n),
        (None, Some(c)) => Goto::Campaign(c),
        (Some(_), Some(_)) => {
            errs.push(FlowError::new(
                at,
                format!("options[{i}].campaign"),
                "an option goes to either next or campaign, not both",
            ));
            return None;
        }
        (None, None) => {
            errs.push(FlowError::new(
                at,
                format!("options[{i}].next"),
                "missing required field \"next\" (or \"campaign\")",
            ));
            return None;
        }
    };
    let keyword = o
        .keyword
        .unwrap_or(u32::try_from(i + 1).unwrap_or(u32::MAX));
    Some(MenuOption {
        keyword,
        label,
        notify: o.notify,
        webhook: o.webhook,
        goto,
    })
}

fn graph_from_raw(
    campaign: Option<&str>,
    start: Option<String>,
    error: Option<String>,
    nodes: RawNodes,
    errs: &mut Vec<FlowError>,
) -> Graph {
    let scope = campaign.unwrap_or("");
    let start = start.unwrap_or_else(|| {
        errs.push(FlowError::new(
            scope,
            "start",
            "missing start: name the first node",
        ));
        String::new()
    });
    let nodes = nodes
        .0
        .into_iter()
        .filter_map(|(id, raw)| node_from_raw(campaign, &id, raw, errs))
        .collect();
    Graph {
        start,
        error,
        nodes,
    }
}

impl Flow {
    fn from_raw(raw: RawFlow) -> Result<Flow, Vec<FlowError>> {
        let mut errs = Vec::new();
        let main = graph_from_raw(None, raw.start, raw.error, raw.nodes, &mut errs);
        let campaigns: BTreeMap<String, Graph> = raw
            .campaigns
            .into_iter()
            .map(|(name, g)| {
                let graph = graph_from_raw(Some(&name), g.start, g.error, g.nodes, &mut errs);
                (name, graph)
            })
            .collect();
        let mut keywords: Vec<Keyword> = Vec::new();
        for (word, k) in raw.keywords {
            let (next, opt_out, opt_in) = match k {
                RawKeyword::Node(n) => (n, false, false),
                RawKeyword::Full {
                    next,
                    opt_out,
                    opt_in,
                } => (next, opt_out, opt_in),
            };
            let w = normalise(&word);
            let opt_out = opt_out || w == "stop";
            let opt_in = opt_in || w == "start";
            if opt_out && opt_in {
                errs.push(FlowError::new(
                    "keywords",
                    &word,
                    "a keyword opts out or in, not both",
                ));
            }
            keywords.push(Keyword {
                word,
                next,
                opt_out,
                opt_in,
            });
        }
        let expire_after = raw.expire_after.as_deref().and_then(|s| {
            Span::parse(s)
                .map_err(|m| errs.push(FlowError::new("", "expire_after", m)))
                .ok()
        });
        if errs.is_empty() {
            let mut date_keys = BTreeSet::new();
            for g in std::iter::once(&main).chain(campaigns.values()) {
                for n in &g.nodes {
                    if let FlowNode::Ask {
                        save_as,
                        validate: Some(Validation::Date {}),
                        ..
                    } = &n.kind
                    {
                        date_keys.insert(save_as.clone());
                    }
                }
            }
            Ok(Flow {
                main,
                campaigns,
                keywords,
                expire_after,
                date_keys,
            })
        } else {
            Err(errs)
        }
    }

    fn to_raw(&self) -> RawFlow {
        let g = graph_to_raw(&self.main);
        RawFlow {
            start: g.start,
            error: g.error,
            nodes: g.nodes,
            campaigns: self
                .campaigns
                .iter()
                .map(|(k, v)| (k.clone(), graph_to_raw(v)))
                .collect(),
            keywords: self
                .keywords
                .iter()
                .map(|k| {
                    let default_flags = k.opt_out == (normalise(&k.word) == "stop")
                        && k.opt_in == (normalise(&k.word) == "start");
                    let raw = if default_flags {
                        RawKeyword::Node(k.next.clone())
                    } else {
                        RawKeyword::Full {
                            next: k.next.clone(),
                            opt_out: k.opt_out,
                            opt_in: k.opt_in,
                        }
                    };
                    (k.word.clone(), raw)
                })
                .collect(),
            expire_after: self.expire_after.map(|s| s.to_string()),
        }
    }

    /// Parses a YAML flow (shape only; call [`Flow::validate`] for the graph).
    pub fn from_yaml(src: &str) -> Result<Flow, Vec<FlowError>> {
        check_size(src)?;
        check_nesting(src)?;
        check_expansion(src)?;
        let raw: RawFlow = serde_yaml_ng::from_str(src)
            .map_err(|e| vec![FlowError::new("", "", e.to_string())])?;
        Flow::from_raw(raw)
    }

    /// Parses a JSON flow (shape only; call [`Flow::validate`] for the graph).
    pub fn from_json(src: &str) -> Result<Flow, Vec<FlowError>> {
        check_size(src)?;
        let raw: RawFlow =
            serde_json::from_str(src).map_err(|e| vec![FlowError::new("", "", e.to_string())])?;
        Flow::from_raw(raw)
    }

    /// The flow as YAML, in the authoring format.
    pub fn to_yaml(&self) -> String {
        // Plain structs and string-keyed maps always serialise.
        serde_yaml_ng::to_string(&self.to_raw()).unwrap_or_default()
    }

    /// The flow as pretty JSON, in the authoring format.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.to_raw()).unwrap_or_default()
    }

    /// The flow named `name`: [`MAIN`] or a campaign.
    pub fn graph(&self, name: &str) -> Option<&Graph> {
        if name == MAIN {
            Some(&self.main)
        } else {
            self.campaigns.get(name)
        }
    }

    /// Node `id` of flow `graph`.
    pub fn node(&self, graph: &str, id: &str) -> Option<&Node> {
        self.graph(graph)?.node(id)
    }

    /// Names of all story webhooks the flow calls.
    pub fn webhook_names(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for g in std::iter::once(&self.main).chain(self.campaigns.values()) {
            for n in &g.nodes {
                match &n.kind {
                    FlowNode::Webhook { name, .. } => {
                        out.insert(name.clone());
                    }
                    FlowNode::Menu { options, .. } => {
                        out.extend(options.iter().filter_map(|o| o.webhook.clone()))
                    }
                    _ => {}
                }
            }
        }
        out
    }

    /// Whether any node of the given kind (`"quote"`, `"booking"` …) exists.
    pub fn uses_kind(&self, kind: &str) -> bool {
        std::iter::once(&self.main)
            .chain(self.campaigns.values())
            .any(|g| g.nodes.iter().any(|n| n.kind.kind_name() == kind))
    }

    /// Checks the whole graph and reports every problem. Webhook names are
    /// checked only when `known_webhooks` is given.
    pub fn validate(&self, known_webhooks: Option<&[String]>) -> Result<(), Vec<FlowError>> {
        let mut errs = Vec::new();
        let total: usize = self.main.nodes.len()
            + self
                .campaigns
                .values()
                .map(|g| g.nodes.len())
                .sum::<usize>();
        if total > MAX_NODES {
            errs.push(FlowError::new(
                "",
                "nodes",
                format!("{total} nodes; at most {MAX_NODES} are allowed"),
            ));
        }
        for name in self.campaigns.keys() {
            if name == MAIN || !is_valid_id(name) {
                errs.push(FlowError::new(
                    name,
                    "",
                    "campaign names are 1-64 characters of A-Z a-z 0-9 _ - and not \"main\"",
                ));
            }
        }
        let main_ids: BTreeSet<&str> = self.main.nodes.iter().map(|n| n.id.as_str()).collect();
        for (i, k) in self.keywords.iter().enumerate() {
            let w = normalise(&k.word);
            if w.is_empty() || k.word.chars().count() > 64 {
                errs.push(FlowError::new(
                    "keywords",
                    &k.word,
                    "a keyword is 1 to 64 characters",
                ));
            } else if self.keywords[..i].iter().any(|o| normalise(&o.word) == w) {
                errs.push(FlowError::new(
                    "keywords",
                    &k.word,
                    format!("duplicate keyword \"{}\"", k.word),
                ));
            }
            if !main_ids.contains(k.next.as_str()) {
                errs.push(FlowError::new(
                    "keywords",
                    &k.word,
                    format!(
                        "unknown target \"{}\" (keywords lead to nodes of the main flow)",
                        k.next
                    ),
                ));
            }
        }
        self.validate_graph(None, &self.main, known_webhooks, &mut errs);
        for (name, g) in &self.campaigns {
            self.validate_graph(Some(name), g, known_webhooks, &mut errs);
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    fn validate_graph(
        &self,
        campaign: Option<&str>,
        g: &Graph,
        hooks: Option<&[String]>,
        errs: &mut Vec<FlowError>,
    ) {
        let scope = campaign.unwrap_or("");
        let ids: BTreeSet<&str> = g.nodes.iter().map(|n| n.id.as_str()).collect();
        let unknown = |t: &str| format!("unknown target \"{t}\"");
        // Problems of the flow as a whole are reported on the campaign name ("" for main).
        if !g.start.is_empty() && !ids.contains(g.start.as_str()) {
            errs.push(FlowError::new(scope, "start", unknown(&g.start)));
        }
        if g.nodes.is_empty() {
            errs.push(FlowError::new(scope, "nodes", "the flow has no nodes"));
        }
        if let Some(e) = &g.error
            && !ids.contains(e.as_str())
        {
            errs.push(FlowError::new(scope, "error", unknown(e)));
        }
        let mut push = |node: &str, field: &str, msg: String| {
            errs.push(FlowError::new(scoped(campaign, node), field, msg))
        };
        let hook_known = |name: &str| hooks.is_none_or(|h| h.iter().any(|k| k == name));
        let text_ok = |t: &str| t.chars().count() <= MAX_TEXT;
        let too_long = format!("text longer than {MAX_TEXT} characters");

        for (i, n) in g.nodes.iter().enumerate() {
            let id = n.id.as_str();
            if !is_valid_id(id) {
                push(
                    id,
                    "id",
                    "node ids are 1-64 characters of A-Z a-z 0-9 _ -".into(),
                );
            }
            if g.nodes[..i].iter().any(|m| m.id == n.id) {
                push(id, "id", "duplicate node id".into());
            }
            if let Some(l) = &n.label {
                if l.trim().is_empty() {
                    push(id, "label", "label is empty".into());
                } else if !text_ok(l) {
                    push(id, "label", too_long.clone());
                }
            }
            let target = |field: &str, t: &str, push: &mut dyn FnMut(&str, &str, String)| {
                if !ids.contains(t) {
                    push(id, field, unknown(t));
                }
            };
            let next_targets = |next: &Next, push: &mut dyn FnMut(&str, &str, String)| {
                for (field, t) in next.targets() {
                    target(&field, t, push);
                }
            };
            let media_ok = |media: &Option<Media>, push: &mut dyn FnMut(&str, &str, String)| {
                let Some(m) = media else { return };
                let f = m.kind.as_str();
                let scheme_ok = m.url.starts_with("https://")
                    || m.url.starts_with("http://")
                    || m.url.starts_with("{{");
                if !scheme_ok || m.url.len() > 2048 || m.url.chars().any(char::is_whitespace) {
                    push(
                        id,
                        f,
                        "a media url starts with https:// or http://, has no spaces and is at most 2048 characters".into(),
                    );
                }
                if m.caption.as_deref().is_some_and(|c| !text_ok(c)) {
                    push(id, &format!("{f}.caption"), too_long.clone());
                }
            };
            if let Some(w) = n.kind.wait() {
                if let Some(t) = &w.on_timeout {
                    target("on_timeout", t, &mut push);
                }
                match (&w.timeout, &w.on_timeout) {
                    (Some(_), None) => {
                        push(id, "on_timeout", "a timeout needs on_timeout: NODE".into())
                    }
                    (None, Some(_)) => {
                        push(id, "timeout", "on_timeout needs timeout: DURATION".into())
                    }
                    _ => {}
                }
                match (&w.reminder, &w.remind_after) {
                    (Some(_), None) => push(
                        id,
                        "remind_after",
                        "a reminder needs remind_after: DURATION".into(),
                    ),
                    (None, Some(_)) => {
                        push(id, "reminder", "remind_after needs reminder: TEXT".into())
                    }
                    (Some(r), Some(_)) if r.trim().is_empty() || !text_ok(r) => push(
                        id,
                        "reminder",
                        format!("reminder is 1 to {MAX_TEXT} characters"),
                    ),
                    _ => {}
                }
                if let (Some(r), Some(t)) = (&w.remind_after, &w.timeout)
                    && r >= t
                {
                    push(
                        id,
                        "remind_after",
                        format!("remind_after ({r}) must be shorter than timeout ({t})"),
                    );
                }
            }
            match &n.kind {
                FlowNode::Message { text, media, next } => {
                    if text.trim().is_empty() {
                        push(id, "message", "message text is empty".into());
                    } else if !text_ok(text) {
                        push(id, "message", too_long.clone());
                    }
                    media_ok(media, &mut push);
                    next_targets(next, &mut push);
                }
                FlowNode::Set { assignments, next } => {
                    if assignments.len() > MAX_ASSIGNMENTS {
                        push(
                            id,
                            "set",
                            format!("at most {MAX_ASSIGNMENTS} assignments in one set node"),
                        );
                    }
                    for a in assignments {
                        let f = format!("set.{}", a.target.path());
                        if let SetTarget::Memory(k) = &a.target
                            && RESERVED_MEMORY_KEYS.contains(&k.as_str())
                        {
                            push(id, &f, format!("\"{k}\" is reserved for the engine"));
                        }
                        if let SetValue::Template(t) = &a.value
                            && !text_ok(t)
                        {
                            push(id, &f, too_long.clone());
                        }
                    }
                    next_targets(next, &mut push);
                }
                FlowNode::Menu {
                    text,
                    media,
                    options,
                    retry,
                    ..
                } => {
                    media_ok(media, &mut push);
                    if !text_ok(text) {
                        push(id, "menu", too_long.clone());
                    }
                    if retry.as_deref().is_some_and(|r| !text_ok(r)) {
                        push(id, "retry", too_long.clone());
                    }
                    if options.is_empty() {
                        push(
                            id,
                            "options",
                            "empty menu: give it at least one option".into(),
                        );
                    }
                    for (j, o) in options.iter().enumerate() {
                        let f = |s: &str| format!("options[{j}].{s}");
                        if options[..j].iter().any(|p| p.keyword == o.keyword) {
                            push(
                                id,
                                &f("keyword"),
                                format!("duplicate keyword {}", o.keyword),
                            );
                        }
                        let nl = normalise(&o.label);
                        if nl.is_empty() {
                            push(id, &f("label"), "label is empty".into());
                        } else if !text_ok(&o.label) {
                            push(id, &f("label"), too_long.clone());
                        } else if options[..j].iter().any(|p| normalise(&p.label) == nl) {
                            push(id, &f("label"), format!("duplicate label \"{}\"", o.label));
                        }
                        match &o.goto {
                            Goto::Node(t) => target(&f("next"), t, &mut push),
                            Goto::Campaign(c) => {
                                if c != MAIN && !self.campaigns.contains_key(c) {
                                    push(id, &f("campaign"), format!("unknown campaign \"{c}\""));
                                }
                            }
                        }
                        if let Some(w) = &o.webhook
                            && (w.trim().is_empty() || !hook_known(w))
                        {
                            push(id, &f("webhook"), format!("unknown webhook \"{w}\""));
                        }
                    }
                }
                FlowNode::Ask {
                    prompt,
                    media,
                    save_as,
                    validate,
                    retry,
                    next,
                    ..
                } => {
                    media_ok(media, &mut push);
                    if prompt.trim().is_empty() {
                        push(id, "ask", "the question is empty".into());
                    } else if !text_ok(prompt) {
                        push(id, "ask", too_long.clone());
                    }
                    if retry.as_deref().is_some_and(|r| !text_ok(r)) {
                        push(id, "retry", too_long.clone());
                    }
                    if !is_valid_id(save_as) {
                        push(
                            id,
                            "save_as",
                            "memory keys are 1-64 characters of A-Z a-z 0-9 _ -".into(),
                        );
                    } else if RESERVED_MEMORY_KEYS.contains(&save_as.as_str()) {
                        push(
                            id,
                            "save_as",
                            format!("\"{save_as}\" is reserved for the engine"),
                        );
                    }
                    if let Some(v) = validate {
                        for (field, msg) in v.problems() {
                            let field = if field.is_empty() {
                                "validate".to_string()
                            } else {
                                format!("validate.{field}")
                            };
                            push(id, &field, msg);
                        }
                    }
                    next_targets(next, &mut push);
                }
                FlowNode::Webhook {
                    name,
                    next,
                    on_error,
                } => {
                    if name.trim().is_empty() || !hook_known(name) {
                        push(id, "webhook", format!("unknown webhook \"{name}\""));
                    }
                    next_targets(next, &mut push);
                    if let Some(e) = on_error {
                        target("on_error", e, &mut push);
                    }
                }
                FlowNode::Quote { next, on_error } => {
                    next_targets(next, &mut push);
                    if let Some(e) = on_error {
                        target("on_error", e, &mut push);
                    }
                }
                FlowNode::Booking {
                    prompt,
                    offer,
                    retry,
                    cancel_keyword,
                    next,
                    on_error,
                    ..
                } => {
                    if !text_ok(prompt) {
                        push(id, "booking", too_long.clone());
                    }
                    if retry.as_deref().is_some_and(|r| !text_ok(r)) {
                        push(id, "retry", too_long.clone());
                    }
                    if *offer == 0 || *offer > MAX_OFFER {
                        push(
                            id,
                            "offer",
                            format!("offer between 1 and {MAX_OFFER} slots"),
                        );
                    }
                    if cancel_keyword
                        .as_deref()
                        .is_some_and(|k| normalise(k).is_empty())
                    {
                        push(id, "cancel_keyword", "cancel keyword is empty".into());
                    }
                    next_targets(next, &mut push);
                    if let Some(e) = on_error {
                        target("on_error", e, &mut push);
                    }
                }
                FlowNode::End { message } => {
                    if message.as_deref().is_some_and(|m| !text_ok(m)) {
                        push(id, "message", too_long.clone());
                    }
                }
            }
        }

        // Reachability from start and the error node.
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut queue: Vec<&str> = vec![g.start.as_str()];
        queue.extend(g.error.as_deref());
        if campaign.is_none() {
            // A keyword can be typed at any waiting node.
            queue.extend(self.keywords.iter().map(|k| k.next.as_str()));
        }
        while let Some(id) = queue.pop() {
            if !seen.insert(id) {
                continue;
            }
            if let Some(n) = g.node(id) {
                queue.extend(edges(&n.kind).into_iter().map(|(_, t)| t));
            }
        }
        for n in &g.nodes {
            if !seen.contains(n.id.as_str()) {
                push(
                    &n.id,
                    "",
                    "unreachable: no path from start leads here".into(),
                );
            }
        }

        // Cycles through nodes that never wait for input.
        let idx: BTreeMap<&str, usize> = g
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.as_str(), i))
            .collect();
        let adj: Vec<Vec<(usize, String)>> = g
            .nodes
            .iter()
            .map(|n| {
                if n.kind.waits_for_input() {
                    return Vec::new();
                }
                edges(&n.kind)
                    .into_iter()
                    .filter_map(|(f, t)| idx.get(t).map(|&j| (j, f)))
                    .filter(|(j, _)| !g.nodes[*j].kind.waits_for_input())
                    .collect()
            })
            .collect();
        let mut color = vec![0u8; g.nodes.len()];
        let mut stack = Vec::new();
        let mut cycles = Vec::new();
        for s in 0..g.nodes.len() {
            if color[s] == 0 {
                find_cycles(s, &adj, &mut color, &mut stack, &mut cycles);
            }
        }
        for (from, field, cycle) in cycles {
            let mut names: Vec<&str> = cycle.iter().map(|&i| g.nodes[i].id.as_str()).collect();
            names.push(names[0]);
            push(
                &g.nodes[from].id,
                &field,
                format!(
                    "cycle without input ({}) would loop forever; put an ask, menu or booking in it",
                    names.join(" -> ")
                ),
            );
        }
    }
}

/// Outgoing edges of a node inside its own graph, with the field that makes
/// them. `on_timeout` counts for reachability; the cycle check leaves
/// waiting nodes (and so their timeouts) out.
fn edges(kind: &FlowNode) -> Vec<(String, &str)> {
    let mut out: Vec<(String, &str)> = Vec::new();
    match kind {
        FlowNode::Message { next, .. }
        | FlowNode::Ask { next, .. }
        | FlowNode::Set { next, .. } => out.extend(next.targets()),
        FlowNode::Webhook { next, on_error, .. }
        | FlowNode::Quote { next, on_error }
        | FlowNode::Booking { next, on_error, .. } => {
            out.extend(next.targets());
            if let Some(e) = on_error {
                out.push(("on_error".into(), e));
            }
        }
        FlowNode::Menu { options, .. } => {
            for (j, o) in options.iter().enumerate() {
                if let Goto::Node(t) = &o.goto {
                    out.push((format!("options[{j}].next"), t));
                }
            }
        }
        FlowNode::End { .. } => {}
    }
    if let Some(t) = kind.wait().and_then(|w| w.on_timeout.as_deref()) {
        out.push(("on_timeout".into(), t));
    }
    out
}

fn find_cycles(
    u: usize,
    adj: &[Vec<(usize, String)>],
    color: &mut [u8],
    stack: &mut Vec<usize>,
    out: &mut Vec<(usize, String, Vec<usize>)>,
) {
    color[u] = 1;
    stack.push(u);
    for (v, field) in &adj[u] {
        match color[*v] {
            0 => find_cycles(*v, adj, color, stack, out),
            1 => {
                let pos = stack.iter().position(|x| x == v).unwrap_or(0);
                out.push((u, field.clone(), stack[pos..].to_vec()));
            }
            _ => {}
        }
    }
    stack.pop();
    color[u] = 2;
}

/// Whether `s` is a valid node id, campaign name or memory key: `[A-Za-z0-9_-]{1,64}`.
pub fn is_valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_size(src: &str) -> Result<(), Vec<FlowError>> {
    if src.len() > MAX_SOURCE {
        Err(vec![FlowError::new(
            "",
            "",
            format!("document larger than {MAX_SOURCE} bytes"),
        )])
    } else {
        Ok(())
    }
}

/// Refuses a YAML document whose aliases expand it past [`MAX_SOURCE`]
/// bytes (see [`crate::domain::expansion`]).
fn check_expansion(src: &str) -> Result<(), Vec<FlowError>> {
    crate::domain::expansion::check_yaml(src, MAX_SOURCE)
        .map_err(|e| vec![FlowError::new("", "", e.to_string())])
}

/// Deepest `[`/`{` nesting accepted in a YAML document.
pub const MAX_NESTING: usize = 64;

/// Rejects absurdly nested flow collections before the YAML parser sees them:
/// the parser reads the whole document before its own depth limit applies, and
/// that takes seconds on a few hundred kilobytes of `[[[[…`. Quoted strings are
/// skipped; braces inside plain text (`{{memory.name}}`) open and close again.
fn check_nesting(src: &str) -> Result<(), Vec<FlowError>> {
    let mut depth: usize = 0;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut prev = ' ';
    for c in src.chars() {
        match quote {
            Some(q) => {
                if q == '"' && c == '\\' && !escaped {
                    escaped = true;
                    prev = c;
                    continue;
                }
                if c == q && !escaped {
                    quote = None;
                }
                escaped = false;
            }
            None => match c {
                '"' | '\'' if !prev.is_alphanumeric() => quote = Some(c),
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Err(vec![FlowError::new(
                            "",
                            "",
                            format!("document nested deeper than {MAX_NESTING} levels"),
                        )]);
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        prev = c;
    }
    Ok(())
}

fn graph_to_raw(g: &Graph) -> RawGraph {
    RawGraph {
        start: Some(g.start.clone()),
        error: g.error.clone(),
        nodes: RawNodes(
            g.nodes
                .iter()
                .map(|n| (n.id.clone(), node_to_raw(n)))
                .collect(),
        ),
    }
}

fn next_to_raw(next: &Next) -> RawNext {
    match next {
        Next::Node(n) => RawNext::Node(n.clone()),
        Next::Branches(bs) => RawNext::Branches(
            bs.iter()
                .map(|b| match &b.when {
                    Some(e) => RawBranch {
                        when: Some(e.source().to_string()),
                        then: Some(b.then.clone()),
                        otherwise: None,
                    },
                    None => RawBranch {
                        otherwise: Some(b.then.clone()),
                        ..RawBranch::default()
                    },
                })
                .collect(),
        ),
    }
}

fn media_to_raw(r: &mut RawNode, media: &Option<Media>) {
    let Some(m) = media else { return };
    let raw = match &m.caption {
        None => RawMedia::Url(m.url.clone()),
        Some(c) => RawMedia::Full {
            url: m.url.clone(),
            caption: Some(c.clone()),
        },
    };
    match m.kind {
        MediaKind::Image => r.image = Some(raw),
        MediaKind::Video => r.video = Some(raw),
        MediaKind::Audio => r.audio = Some(raw),
        MediaKind::File => r.file = Some(raw),
    }
}

fn wait_to_raw(r: &mut RawNode, w: &Wait) {
    r.timeout = w.timeout.map(|s| s.to_string());
    r.on_timeout = w.on_timeout.clone();
    r.reminder = w.reminder.clone();
    r.remind_after = w.remind_after.map(|s| s.to_string());
}

fn node_to_raw(n: &Node) -> RawNode {
    let mut r = RawNode {
        label: n.label.clone(),
        ..RawNode::default()
    };
    match &n.kind {
        FlowNode::Message { text, media, next } => {
            r.message = Some(text.clone());
            media_to_raw(&mut r, media);
            r.next = Some(next_to_raw(next));
        }
        FlowNode::Menu {
            text,
            media,
            options,
            retry,
            wait,
        } => {
            r.menu = Some(text.clone());
            media_to_raw(&mut r, media);
            wait_to_raw(&mut r, wait);
            r.retry = retry.clone();
            r.options = Some(
                options
                    .iter()
                    .map(|o| {
                        let (next, campaign) = match &o.goto {
                            Goto::Node(t) => (Some(t.clone()), None),
                            Goto::Campaign(c) => (None, Some(c.clone())),
                        };
                        RawOption {
                            keyword: Some(o.keyword),
                            label: Some(o.label.clone()),
                            notify: o.notify,
                            webhook: o.webhook.clone(),
                            next,
                            campaign,
                        }
                    })
                    .collect(),
            );
        }
        FlowNode::Ask {
            prompt,
            media,
            save_as,
            validate,
            retry,
            notify,
            datapoint,
            next,
            wait,
        } => {
            r.ask = Some(prompt.clone());
            media_to_raw(&mut r, media);
            wait_to_raw(&mut r, wait);
            r.save_as = Some(save_as.clone());
            r.validate = validate.clone();
            r.retry = retry.clone();
            r.notify = notify.then_some(true);
            r.datapoint = datapoint.then_some(true);
            r.next = Some(next_to_raw(next));
        }
        FlowNode::Webhook {
            name,
            next,
            on_error,
        } => {
            r.webhook = Some(name.clone());
            r.next = Some(next_to_raw(next));
            r.on_error = on_error.clone();
        }
        FlowNode::Quote { next, on_error } => {
            r.quote = Some(true);
            r.next = Some(next_to_raw(next));
            r.on_error = on_error.clone();
        }
        FlowNode::Booking {
            prompt,
            offer,
            retry,
            cancel_keyword,
            next,
            on_error,
            wait,
        } => {
            r.booking = Some(prompt.clone());
            wait_to_raw(&mut r, wait);
            r.offer = Some(*offer);
            r.retry = retry.clone();
            r.cancel_keyword = cancel_keyword.clone();
            r.next = Some(next_to_raw(next));
            r.on_error = on_error.clone();
        }
        FlowNode::Set { assignments, next } => {
            r.set = Some(
                assignments
                    .iter()
                    .map(|a| {
                        let v = match &a.value {
                            SetValue::Literal(v) => v.clone(),
                            SetValue::Template(t) => serde_json::Value::String(t.clone()),
                            SetValue::Expr(e) => serde_json::Value::String(e.source().to_string()),
                        };
                        (a.target.path(), v)
                    })
                    .collect(),
            );
            r.next = Some(next_to_raw(next));
        }
        FlowNode::End { message } => {
            r.end = Some(true);
            r.message = message.clone();
        }
    }
    r
}

impl Graph {
    /// The node with this id.
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

impl Serialize for Flow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_raw().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Flow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawFlow::deserialize(d)?;
        Flow::from_raw(raw).map_err(|e| de::Error::custom(join_errors(&e)))
    }
}

impl BotFile {
    /// Parses a YAML bot file (shape only; see [`BotFile::validate`]).
    pub fn from_yaml(src: &str) -> Result<BotFile, Vec<FlowError>> {
        check_size(src)?;
        check_nesting(src)?;
        check_expansion(src)?;
        serde_yaml_ng::from_str(src).map_err(|e| vec![FlowError::new("", "", e.to_string())])
    }

    /// Parses a JSON bot file (shape only; see [`BotFile::validate`]).
    pub fn from_json(src: &str) -> Result<BotFile, Vec<FlowError>> {
        check_size(src)?;
        serde_json::from_str(src).map_err(|e| vec![FlowError::new("", "", e.to_string())])
    }

    /// The bot file as YAML.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).unwrap_or_default()
    }

    /// The bot file as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks everything: id, type, webhooks, price table, calendar and the flow
    /// (whose webhook names must be declared in `webhooks`). Problems outside
    /// the flow are reported with `node` set to `bot`, `webhooks`,
    /// `price_table` or `calendar`.
    pub fn validate(&self) -> Result<(), Vec<FlowError>> {
        let mut errs = Vec::new();
        if !is_valid_id(&self.id) {
            errs.push(FlowError::new(
                "bot",
                "id",
                "bot ids are 1-64 characters of A-Z a-z 0-9 _ -",
            ));
        }
        if self.name.trim().is_empty() {
            errs.push(FlowError::new("bot", "name", "name is empty"));
        }
        if !BOT_TYPES.contains(&self.r#type.as_str()) {
            errs.push(FlowError::new(
                "bot",
                "type",
                format!("type must be one of {}", BOT_TYPES.join(", ")),
            ));
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            errs.extend(w.problems("webhooks", &format!("[{i}].")));
            if self.webhooks[..i].iter().any(|o| o.name == w.name) {
                errs.push(FlowError::new(
                    "webhooks",
                    format!("[{i}].name"),
                    format!("duplicate webhook \"{}\"", w.name),
                ));
            }
        }
        match &self.price_table {
            Some(t) => {
                if let Err(e) = t.validate() {
                    errs.extend(e.into_iter().map(|e| match e {
                        crate::domain::quote::QuoteError::InvalidTable { field, message } => {
                            FlowError::new("price_table", field, message)
                        }
                        other => FlowError::new("price_table", "", other.to_string()),
                    }));
                }
            }
            None if self.flow.uses_kind("quote") => {
                errs.push(FlowError::new(
                    "price_table",
                    "",
                    "the flow has a quote node but the bot has no price table",
                ));
            }
            None => {}
        }
        match &self.calendar {
            Some(c) => {
                if let Err(e) = c.validate() {
                    errs.extend(
                        e.into_iter()
                            .map(|e| FlowError::new("calendar", e.field, e.message)),
                    );
                }
            }
            None if self.flow.uses_kind("booking") => {
                errs.push(FlowError::new(
                    "calendar",
                    "",
                    "the flow has a booking node but the bot has no calendar",
                ));
            }
            None => {}
        }
        let names: Vec<String> = self.webhooks.iter().map(|w| w.name.clone()).collect();
        if let Err(e) = self.flow.validate(Some(&names)) {
            errs.extend(e);
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The fixture of the brief: every node kind.
    pub(crate) const FIXTURE: &str = r#"
start: welcome
error: oops
nodes:
  welcome:
    label: Welcome Message
    ask: "Welcome to EliPackage, can you enter your name, please?"
    save_as: name
    validate: { kind: text, min: 2, max: 80 }
    retry: "Please enter your name (2-80 characters)."
    notify: true
    datapoint: false
    next: membership
  membership:
    menu: "{{memory.name}}, enter the best option for streaming membership:"
    options:
      - { keyword: 1, label: One month,  notify: true, next: thanks }
      - { keyword: 2, label: Six months, notify: true, next: thanks }
      - { keyword: 3, label: One year,   notify: true, next: thanks }
      - { keyword: 4, label: Raffle,     campaign: raffle }
      - { keyword: 5, label: Weather,    webhook: weather, next: thanks }
    retry: "Please answer 1, 2, 3, 4 or 5."
  lookup: { webhook: weather, next: thanks, on_error: oops }
  price:  { quote: true, next: thanks }
  book:   { booking: "Pick a time:", offer: 3, next: thanks, cancel_keyword: cancel }
  thanks: { message: "Thank you, {{memory.name}}!", next: done }
  oops:   { message: "Sorry, something went wrong.", next: done }
  done:   { end: true }
campaigns:
  raffle:
    start: r1
    nodes:
      r1: { message: "You are in the raffle!", next: r2 }
      r2: { end: true }
"#;

    /// Parses then validates, returning every error.
    fn errors(yaml: &str, hooks: Option<&[String]>) -> Vec<FlowError> {
        match Flow::from_yaml(yaml) {
            Err(e) => e,
            Ok(f) => f.validate(hooks).err().unwrap_or_default(),
        }
    }

    fn has(errs: &[FlowError], node: &str, field: &str) -> bool {
        errs.iter().any(|e| e.node == node && e.field == field)
    }

    #[track_caller]
    fn expect(yaml: &str, node: &str, field: &str, words: &str) {
        let errs = errors(yaml, None);
        assert!(
            errs.iter()
                .any(|e| e.node == node && e.field == field && e.message.contains(words)),
            "expected {node}/{field} ~ {words:?}, got {errs:#?}"
        );
    }

    #[test]
    fn fixture_parses_and_round_trips() {
        let f = Flow::from_yaml(FIXTURE).unwrap();
        assert_eq!(f.main.nodes.len(), 8);
        assert_eq!(f.main.nodes[0].id, "welcome", "authoring order kept");
        assert_eq!(f.node(MAIN, "welcome").unwrap().label(), "Welcome Message");
        assert_eq!(f.node(MAIN, "thanks").unwrap().label(), "thanks");
        let FlowNode::Menu { options, .. } = &f.node(MAIN, "membership").unwrap().kind else {
            panic!()
        };
        assert_eq!(options[3].goto, Goto::Campaign("raffle".into()));
        assert_eq!(options[4].webhook.as_deref(), Some("weather"));
        assert_eq!(Flow::from_yaml(&f.to_yaml()).unwrap(), f);
        assert_eq!(Flow::from_json(&f.to_json()).unwrap(), f);
        // lookup, price and book are not linked from start in the fixture.
        let errs = f.validate(None).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(has(&errs, "lookup", "") && has(&errs, "price", "") && has(&errs, "book", ""));
        assert_eq!(
            f.webhook_names().into_iter().collect::<Vec<_>>(),
            vec!["weather".to_string()]
        );
    }

    #[test]
    fn display_names_node_and_field() {
        let e = FlowError::new("membership", "options[2].next", "unknown target \"thx\"");
        assert_eq!(
            e.to_string(),
            "node \"membership\", field \"options[2].next\": unknown target \"thx\""
        );
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = Flow::from_yaml("start: a\nnodes:\n  a: { message: [unclosed\n").unwrap_err();
        assert!(e[0].message.contains("line"), "{e:?}");
        let e = Flow::from_json("{\"start\": \"a\",\n \"nodes\": {\"a\": {\"end\": tru}}}")
            .unwrap_err();
        assert!(e[0].message.contains("line 2 column"), "{e:?}");
        let e = Flow::from_yaml("start: a\nnodes:\n  a: { end: true, colour: red }\n").unwrap_err();
        assert!(
            e[0].message.contains("colour") && e[0].message.contains("line"),
            "{e:?}"
        );
    }

    #[test]
    fn missing_start() {
        expect("nodes: { a: { end: true } }", "", "start", "missing start");
        expect(
            "start: zz\nnodes: { a: { end: true } }",
            "",
            "start",
            "unknown target \"zz\"",
        );
        expect(
            "start: a\nnodes: { a: { end: true } }\ncampaigns: { c: { nodes: { x: { end: true } } } }",
            "c",
            "start",
            "missing start",
        );
    }

    #[test]
    fn unknown_targets() {
        let y = r#"
start: m
error: nowhere
nodes:
  m:
    menu: Pick
    options:
      - { label: A, next: e }
      - { label: B, campaign: ghost }
      - { label: C, next: thx }
  w: { webhook: hook, next: e, on_error: gone }
  e: { end: true }
"#;
        let errs = errors(y, None);
        assert!(has(&errs, "m", "options[2].next"), "{errs:#?}");
        assert!(has(&errs, "m", "options[1].campaign"));
        assert!(has(&errs, "w", "on_error"));
        assert!(has(&errs, "", "error"));
        expect(
            "start: a\nnodes: { a: { message: hi, next: b } }",
            "a",
            "next",
            "unknown target \"b\"",
        );
        expect(
            "start: a\nnodes: { a: { end: true } }\ncampaigns: { c: { start: x, nodes: { x: { message: hi, next: y } } } }",
            "c/x",
            "next",
            "unknown target",
        );
    }

    #[test]
    fn unreachable_nodes() {
        expect(
            "start: a\nnodes: { a: { end: true }, b: { end: true } }",
            "b",
            "",
            "unreachable",
        );
        // The error node counts as reachable.
        assert!(
            errors(
                "start: a\nerror: b\nnodes: { a: { end: true }, b: { end: true } }",
                None
            )
            .is_empty()
        );
    }

    #[test]
    fn menu_problems() {
        let y = r#"
start: m
nodes:
  m:
    menu: Pick
    options:
      - { keyword: 1, label: One, next: e }
      - { keyword: 1, label: Two, next: e }
      - { keyword: 3, label: " one ", next: e }
  n: { menu: Empty, options: [] }
  e: { end: true }
"#;
        let errs = errors(y, None);
        assert!(has(&errs, "m", "options[1].keyword"), "{errs:#?}");
        assert!(has(&errs, "m", "options[2].label"));
        assert!(
            errs.iter()
                .any(|e| e.node == "n" && e.field == "options" && e.message.contains("empty menu"))
        );
    }

    #[test]
    fn missing_required_fields() {
        expect(
            "start: a\nnodes: { a: { message: hi } }",
            "a",
            "next",
            "missing required field",
        );
        expect(
            "start: a\nnodes: { a: { ask: Name?, next: b }, b: { end: true } }",
            "a",
            "save_as",
            "missing",
        );
        expect(
            "start: a\nnodes: { a: { menu: Pick } }",
            "a",
            "options",
            "missing",
        );
        expect(
            "start: a\nnodes: { a: { menu: Pick, options: [ { label: X } ] } }",
            "a",
            "options[0].next",
            "missing",
        );
        expect(
            "start: a\nnodes: { a: { menu: Pick, options: [ { next: a } ] } }",
            "a",
            "options[0].label",
            "missing",
        );
        expect(
            "start: a\nnodes: { a: { message: hi, next: a, save_as: x } }",
            "a",
            "save_as",
            "does not use",
        );
    }

    #[test]
    fn node_kinds() {
        expect(
            "start: a\nnodes: { a: { label: Nothing, next: a } }",
            "a",
            "kind",
            "no kind",
        );
        expect(
            "start: a\nnodes: { a: { ask: Q, menu: M, save_as: x, next: a } }",
            "a",
            "kind",
            "several kinds (menu, ask)",
        );
        // `message` on an end node is its closing text, not a second kind.
        assert!(errors("start: a\nnodes: { a: { end: true, message: Bye } }", None).is_empty());
        expect(
            "start: a\nnodes: { a: { end: false } }",
            "a",
            "end",
            "end: true",
        );
    }

    #[test]
    fn invalid_regex() {
        expect(
            "start: a\nnodes: { a: { ask: Code?, save_as: code, validate: { kind: regex, pattern: \"([a-z\" }, next: b }, b: { end: true } }",
            "a",
            "validate.pattern",
            "invalid regex",
        );
    }

    #[test]
    fn unknown_webhooks_only_when_known_list_given() {
        let y = "start: a\nnodes:\n  a: { webhook: weather, next: m }\n  m: { menu: Pick, options: [ { label: X, webhook: crm, next: e } ] }\n  e: { end: true }\n";
        assert!(errors(y, None).is_empty());
        let known = vec!["weather".to_string()];
        let errs = errors(y, Some(&known));
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(has(&errs, "m", "options[0].webhook"));
        let errs = errors(y, Some(&[]));
        assert!(has(&errs, "a", "webhook"));
    }

    #[test]
    fn cycles_without_input() {
        let y = r#"
start: a
nodes:
  a: { message: one, next: b }
  b: { quote: true, next: c, on_error: e }
  c: { webhook: w, next: a }
  e: { end: true }
"#;
        let errs = errors(y, None);
        let cyc: Vec<&FlowError> = errs
            .iter()
            .filter(|e| e.message.contains("cycle without input"))
            .collect();
        assert_eq!(cyc.len(), 1, "{errs:#?}");
        assert_eq!((cyc[0].node.as_str(), cyc[0].field.as_str()), ("c", "next"));
        assert!(cyc[0].message.contains("a -> b -> c -> a"));
        // A cycle through an ask is fine.
        let ok = "start: a\nnodes:\n  a: { message: one, next: q }\n  q: { ask: Again?, save_as: x, next: a }\n";
        assert!(errors(ok, None).is_empty());
        expect(
            "start: a\nnodes: { a: { message: loop, next: a } }",
            "a",
            "next",
            "cycle without input",
        );
    }

    #[test]
    fn ids_limits_and_texts() {
        expect(
            "start: bad id\nnodes: { bad id: { end: true } }",
            "bad id",
            "id",
            "node ids",
        );
        let long = "x".repeat(MAX_TEXT + 1);
        expect(
            &format!(
                "start: a\nnodes: {{ a: {{ message: {long}, next: e }}, e: {{ end: true }} }}"
            ),
            "a",
            "message",
            "longer than",
        );
        let mut y = String::from("start: n0\nnodes:\n");
        for i in 0..MAX_NODES {
            y.push_str(&format!("  n{i}: {{ message: hi, next: n{} }}\n", i + 1));
        }
        y.push_str(&format!("  n{MAX_NODES}: {{ end: true }}\n"));
        let errs = errors(&y, None);
        assert!(errs[0].message.contains("more than 500 nodes"), "{errs:?}");
        expect(
            "start: a\nnodes: { a: { ask: Q, save_as: quote, next: a } }",
            "a",
            "save_as",
            "reserved",
        );
        expect(
            "start: a\nnodes: { a: { booking: Pick, offer: 0, next: a } }",
            "a",
            "offer",
            "offer between",
        );
    }

    #[test]
    fn reports_all_problems_at_once() {
        let y = "start: a\nnodes:\n  a: { message: hi, next: nowhere }\n  b: { end: true }\n  c: { menu: M, options: [] }\n";
        let errs = errors(y, None);
        assert!(errs.len() >= 4, "{errs:#?}");
    }

    #[test]
    fn branches_compile_with_columns() {
        let y = r#"
start: a
nodes:
  a:
    message: hi
    next:
      - if: memory.size >= 10 && usr.plan == "vip"
        then: b
      - if: "memory.size >"
        then: b
      - else: b
  b: { end: true }
"#;
        let errs = errors(y, None);
        let e0 = errs
            .iter()
            .find(|e| e.field == "next[0].if")
            .expect("unknown root");
        assert_eq!((e0.node.as_str(), e0.column), ("a", Some(22)));
        assert!(
            e0.message.contains("unknown name \"usr\" at column 22"),
            "{e0:?}"
        );
        let e1 = errs
            .iter()
            .find(|e| e.field == "next[1].if")
            .expect("syntax");
        assert!(
            e1.column.is_some() && e1.message.contains("syntax error at column"),
            "{e1:?}"
        );
        expect(
            "start: a\nnodes:\n  a: { message: hi, next: [ { if: 'memory.x == 1', then: b } ] }\n  b: { end: true }\n",
            "a",
            "next",
            "must end with - else",
        );
        expect(
            "start: a\nnodes:\n  a: { message: hi, next: [ { else: b }, { if: 'memory.x == 1', then: b } ] }\n  b: { end: true }\n",
            "a",
            "next[0].else",
            "last branch",
        );
        expect(
            "start: a\nnodes:\n  a: { message: hi, next: [ { if: 'memory.x == 1', then: zz }, { else: b } ] }\n  b: { end: true }\n",
            "a",
            "next[0].then",
            "unknown target \"zz\"",
        );
    }

    #[test]
    fn branches_count_for_reachability_and_cycles() {
        // c is reachable only through a branch; d is not reachable at all.
        let y = r#"
start: a
nodes:
  a: { message: hi, next: [ { if: "memory.x == 1", then: c }, { else: b } ] }
  b: { end: true }
  c: { end: true }
  d: { end: true }
"#;
        let errs = errors(y, None);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(has(&errs, "d", ""));
        // A loop of set nodes and branches never waits.
        let y = r#"
start: a
nodes:
  a: { set: { memory.n: "1" }, next: s }
  s: { set: { memory.n: "memory.n + 1" }, next: [ { if: "memory.n < 5", then: a }, { else: e } ] }
  e: { end: true }
"#;
        let errs = errors(y, None);
        assert!(
            errs.iter().any(|e| e.node == "s"
                && e.field == "next[0].then"
                && e.message.contains("cycle without input")),
            "{errs:#?}"
        );
    }

    #[test]
    fn set_keywords_and_timers_are_checked() {
        expect(
            "start: a\nnodes:\n  a: { set: { memory.quote: \"1\" }, next: b }\n  b: { end: true }\n",
            "a",
            "set.memory.quote",
            "reserved",
        );
        expect(
            "start: a\nnodes:\n  a: { set: { score: \"1\" }, next: b }\n  b: { end: true }\n",
            "a",
            "set.score",
            "memory.KEY or user.KEY",
        );
        expect(
            "start: a\nnodes:\n  a: { set: { memory.s: \"memory.s +\" }, next: b }\n  b: { end: true }\n",
            "a",
            "set.memory.s",
            "syntax error",
        );
        expect(
            "start: a\nkeywords: { menu: nowhere }\nnodes: { a: { end: true } }\n",
            "keywords",
            "menu",
            "unknown target \"nowhere\"",
        );
        expect(
            "start: a\nnodes:\n  a: { ask: Q, save_as: q, timeout: 10m, on_timeout: gone, next: b }\n  b: { end: true }\n",
            "a",
            "on_timeout",
            "unknown target \"gone\"",
        );
        expect(
            "start: a\nnodes:\n  a: { ask: Q, save_as: q, timeout: 10 minutes, on_timeout: b, next: b }\n  b: { end: true }\n",
            "a",
            "timeout",
            "not a duration",
        );
        expect(
            "start: a\nnodes:\n  a: { ask: Q, save_as: q, reminder: Hello?, next: b }\n  b: { end: true }\n",
            "a",
            "remind_after",
            "needs remind_after",
        );
        expect(
            "start: a\nnodes:\n  a: { message: hi, image: \"ftp://x/y.png\", next: b }\n  b: { end: true }\n",
            "a",
            "image",
            "https://",
        );
        expect(
            "start: a\nnodes:\n  a: { end: true, timeout: 1m }\n",
            "a",
            "timeout",
            "does not use",
        );
        // A node reachable only through a keyword or an on_timeout is reachable.
        let ok = "start: a\nkeywords: { help: h }\nnodes:\n  a: { ask: Q, save_as: q, timeout: 1h, on_timeout: t, next: b }\n  b: { end: true }\n  h: { message: help, next: a }\n  t: { end: true }\n";
        assert!(errors(ok, None).is_empty(), "{:#?}", errors(ok, None));
        let f = Flow::from_yaml(ok).unwrap();
        assert_eq!(Flow::from_yaml(&f.to_yaml()).unwrap(), f, "round trip");
        assert_eq!(Span::parse("24h").unwrap().to_string(), "1d");
        assert_eq!(Span::parse("90m").unwrap().seconds, 5400);
        assert!(Span::parse("0s").is_err() && Span::parse("400d").is_err());
    }

    const EXAMPLES: [(&str, &str); 7] = [
        ("leads", include_str!("../../examples/leads.yaml")),
        ("helpdesk", include_str!("../../examples/helpdesk.yaml")),
        ("elipackage", include_str!("../../examples/elipackage.yaml")),
        ("incident", include_str!("../../examples/incident.yaml")),
        ("quote", include_str!("../../examples/quote.yaml")),
        (
            "appointment",
            include_str!("../../examples/appointment.yaml"),
        ),
        ("support", include_str!("../../examples/support.yaml")),
    ];

    #[test]
    fn examples_parse_and_validate() {
        for (name, src) in EXAMPLES {
            let bot =
                BotFile::from_yaml(src).unwrap_or_else(|e| panic!("{name}: {}", join_errors(&e)));
            assert_eq!(bot.id, name);
            bot.validate()
                .unwrap_or_else(|e| panic!("{name}: {}", join_errors(&e)));
            let again = BotFile::from_json(&bot.to_json()).unwrap();
            assert_eq!(again, bot, "{name} JSON round trip");
            assert_eq!(
                BotFile::from_yaml(&bot.to_yaml()).unwrap(),
                bot,
                "{name} YAML round trip"
            );
        }
    }

    #[test]
    fn bot_file_checks_config() {
        let src = EXAMPLES[4]
            .1
            .replace("type: quote_generation", "type: quotes");
        let bot = BotFile::from_yaml(&src).unwrap();
        let errs = bot.validate().unwrap_err();
        assert!(has(&errs, "bot", "type"), "{errs:#?}");
        let mut bot = BotFile::from_yaml(EXAMPLES[5].1).unwrap();
        bot.calendar = None;
        assert!(has(&bot.validate().unwrap_err(), "calendar", ""));
    }

    #[test]
    fn hostile_documents_are_errors() {
        for src in [
            "[".repeat(100_000),
            "{a: ".repeat(50_000),
            "a: &x [1]\nb: *x\n".into(),
            String::new(),
            "- 1\n".into(),
        ] {
            let t = std::time::Instant::now();
            assert!(Flow::from_yaml(&src).is_err());
            assert!(
                t.elapsed().as_secs() < 2,
                "{} bytes took {:?}",
                src.len(),
                t.elapsed()
            );
        }
        assert!(Flow::from_json(&"{\"nodes\": ".repeat(50_000)).is_err());
        assert!(
            Flow::from_yaml(&"x".repeat(MAX_SOURCE + 1)).unwrap_err()[0]
                .message
                .contains("larger")
        );
        assert!(
            Flow::from_yaml(&"[".repeat(100)).unwrap_err()[0]
                .message
                .contains("nested")
        );
        // Unknown fields inside a validation are rejected too.
        let e = Flow::from_yaml(
            "start: a\nnodes: { a: { ask: Q, save_as: x, validate: { kind: email, min: 2 }, next: a } }",
        );
        assert!(e.is_err(), "{e:?}");
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in "(start|nodes|message|menu|ask|end|next|options|:|\\{|\\}|\\[|\\]|-|,| |\\n|[a-z0-9]|\"|&|\\*|!){0,200}") {
            if let Ok(f) = Flow::from_yaml(&s) {
                let _ = f.validate(None);
                let _ = f.to_yaml();
            }
            let _ = Flow::from_json(&s);
            let _ = BotFile::from_yaml(&s);
        }

        #[test]
        fn parser_never_panics_on_any_text(s in "\\PC{0,300}") {
            let _ = Flow::from_yaml(&s);
        }
    }
}
