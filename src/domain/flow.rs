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
        /// Next node.
        next: String,
    },
    /// Shows numbered options and waits for a choice.
    Menu {
        /// Text shown above the options.
        text: String,
        /// The options.
        options: Vec<MenuOption>,
        /// Said when the answer matches no option (the options follow it).
        retry: Option<String>,
    },
    /// Asks a question, validates the answer and saves it to memory.
    Ask {
        /// The question.
        prompt: String,
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
        next: String,
    },
    /// Calls a story webhook, then goes on.
    Webhook {
        /// Story webhook name.
        name: String,
        /// Next node on success.
        next: String,
        /// Node on failure.
        on_error: Option<String>,
    },
    /// Prices memory against the bot's price table.
    Quote {
        /// Next node on success.
        next: String,
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
        next: String,
        /// Node when there are no free slots; `next` when absent.
        on_error: Option<String>,
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
    end: Option<bool>,
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
    next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    on_error: Option<String>,
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

const KIND_KEYS: [&str; 7] = [
    "message", "menu", "ask", "webhook", "quote", "booking", "end",
];

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
                "node has no kind; give it exactly one of message, menu, ask, webhook, quote, booking, end",
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
    let allowed: &[&str] = match kind {
        "message" => &["next"],
        "menu" => &["options", "retry"],
        "ask" => &[
            "save_as",
            "validate",
            "retry",
            "notify",
            "datapoint",
            "next",
        ],
        "webhook" | "quote" => &["next", "on_error"],
        "booking" => &["offer", "retry", "cancel_keyword", "next", "on_error"],
        _ => &[],
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
    let require = |value: Option<String>, field: &str, errs: &mut Vec<FlowError>| -> String {
        match value {
            Some(v) => v,
            None => {
                errs.push(FlowError::new(
                    &at,
                    field,
                    format!("missing required field \"{field}\""),
                ));
                String::new()
            }
        }
    };
    let node_kind = match kind {
        "message" => {
            let next = require(raw.next, "next", errs);
            FlowNode::Message {
                text: raw.message.unwrap_or_default(),
                next,
            }
        }
        "menu" => {
            let options = match raw.options {
                None => {
                    errs.push(FlowError::new(
                        &at,
                        "options",
                        "missing required field \"options\"",
                    ));
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
                options,
                retry: raw.retry,
            }
        }
        "ask" => {
            let save_as = require(raw.save_as, "save_as", errs);
            let next = require(raw.next, "next", errs);
            FlowNode::Ask {
                prompt: raw.ask.unwrap_or_default(),
                save_as,
                validate: raw.validate,
                retry: raw.retry,
                notify: raw.notify.unwrap_or(false),
                datapoint: raw.datapoint.unwrap_or(false),
                next,
            }
        }
        "webhook" => {
            let next = require(raw.next, "next", errs);
            FlowNode::Webhook {
                name: raw.webhook.unwrap_or_default(),
                next,
                on_error: raw.on_error,
            }
        }
        "quote" => {
            if raw.quote != Some(true) {
                errs.push(FlowError::new(&at, "quote", "write \"quote: true\""));
            }
            let next = require(raw.next, "next", errs);
            FlowNode::Quote {
                next,
                on_error: raw.on_error,
            }
        }
        "booking" => {
            let next = require(raw.next, "next", errs);
            FlowNode::Booking {
                prompt: raw.booking.unwrap_or_default(),
                offer: raw.offer.unwrap_or(3),
                retry: raw.retry,
                cancel_keyword: raw.cancel_keyword,
                next,
                on_error: raw.on_error,
            }
        }
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
        let campaigns = raw
            .campaigns
            .into_iter()
            .map(|(name, g)| {
                let graph = graph_from_raw(Some(&name), g.start, g.error, g.nodes, &mut errs);
                (name, graph)
            })
            .collect();
        if errs.is_empty() {
            Ok(Flow { main, campaigns })
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
            match &n.kind {
                FlowNode::Message { text, next } => {
                    if text.trim().is_empty() {
                        push(id, "message", "message text is empty".into());
                    } else if !text_ok(text) {
                        push(id, "message", too_long.clone());
                    }
                    target("next", next, &mut push);
                }
                FlowNode::Menu {
                    text,
                    options,
                    retry,
                } => {
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
                    save_as,
                    validate,
                    retry,
                    next,
                    ..
                } => {
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
                    target("next", next, &mut push);
                }
                FlowNode::Webhook {
                    name,
                    next,
                    on_error,
                } => {
                    if name.trim().is_empty() || !hook_known(name) {
                        push(id, "webhook", format!("unknown webhook \"{name}\""));
                    }
                    target("next", next, &mut push);
                    if let Some(e) = on_error {
                        target("on_error", e, &mut push);
                    }
                }
                FlowNode::Quote { next, on_error } => {
                    target("next", next, &mut push);
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
                    target("next", next, &mut push);
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

/// Outgoing edges of a node inside its own graph, with the field that makes them.
fn edges(kind: &FlowNode) -> Vec<(String, &str)> {
    let mut out: Vec<(String, &str)> = Vec::new();
    match kind {
        FlowNode::Message { next, .. } | FlowNode::Ask { next, .. } => {
            out.push(("next".into(), next))
        }
        FlowNode::Webhook { next, on_error, .. }
        | FlowNode::Quote { next, on_error }
        | FlowNode::Booking { next, on_error, .. } => {
            out.push(("next".into(), next));
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

fn node_to_raw(n: &Node) -> RawNode {
    let mut r = RawNode {
        label: n.label.clone(),
        ..RawNode::default()
    };
    match &n.kind {
        FlowNode::Message { text, next } => {
            r.message = Some(text.clone());
            r.next = Some(next.clone());
        }
        FlowNode::Menu {
            text,
            options,
            retry,
        } => {
            r.menu = Some(text.clone());
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
            save_as,
            validate,
            retry,
            notify,
            datapoint,
            next,
        } => {
            r.ask = Some(prompt.clone());
            r.save_as = Some(save_as.clone());
            r.validate = validate.clone();
            r.retry = retry.clone();
            r.notify = notify.then_some(true);
            r.datapoint = datapoint.then_some(true);
            r.next = Some(next.clone());
        }
        FlowNode::Webhook {
            name,
            next,
            on_error,
        } => {
            r.webhook = Some(name.clone());
            r.next = Some(next.clone());
            r.on_error = on_error.clone();
        }
        FlowNode::Quote { next, on_error } => {
            r.quote = Some(true);
            r.next = Some(next.clone());
            r.on_error = on_error.clone();
        }
        FlowNode::Booking {
            prompt,
            offer,
            retry,
            cancel_keyword,
            next,
            on_error,
        } => {
            r.booking = Some(prompt.clone());
            r.offer = Some(*offer);
            r.retry = retry.clone();
            r.cancel_keyword = cancel_keyword.clone();
            r.next = Some(next.clone());
            r.on_error = on_error.clone();
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

    const EXAMPLES: [(&str, &str); 5] = [
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
        let src = EXAMPLES[2]
            .1
            .replace("type: quote_generation", "type: quotes");
        let bot = BotFile::from_yaml(&src).unwrap();
        let errs = bot.validate().unwrap_err();
        assert!(has(&errs, "bot", "type"), "{errs:#?}");
        let mut bot = BotFile::from_yaml(EXAMPLES[3].1).unwrap();
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
