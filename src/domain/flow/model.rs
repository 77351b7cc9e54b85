//! The flow model: what a parsed flow is. [`Flow`] holds the main
//! [`Graph`] and its campaigns, the global [`Keyword`]s and the expiry;
//! a [`Node`] does one thing ([`FlowNode`]) and goes on through a [`Next`]
//! (one node, or [`Branch`]es with CEL conditions); waiting nodes carry
//! their timers ([`Wait`]), texts may carry a [`Media`].
//!
//! Everything here is plain data with accessors: reading it from a
//! document is `document.rs` and `convert.rs`, checking the graph is
//! `validate.rs`.

use super::MAIN;
use super::condition::Expr;
use crate::domain::validate::Validation;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

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
    /// Hands the conversation to a person: the bot says `message` (or
    /// [`HANDOFF_MESSAGE`]) and stays silent until the conversation is
    /// released to a node.
    Handoff {
        /// Said to the contact on entering; [`HANDOFF_MESSAGE`] when absent.
        message: Option<String>,
    },
}

/// What a `handoff` node says when it has no `message`.
pub const HANDOFF_MESSAGE: &str = "Thank you. A person will answer you here shortly.";

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
            FlowNode::Handoff { .. } => "handoff",
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
    /// Nowhere on the platform: the option's redirect is the webhook. The
    /// option notifies the bot's endpoints (`option.selected`) and the
    /// conversation completes; what happens next belongs to the receiving
    /// system. Written as `notify: true` with neither `next` nor `campaign`.
    Endpoint,
}

impl Flow {
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
}

impl Graph {
    /// The node with this id.
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }
}
