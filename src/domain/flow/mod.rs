//! Flows: the graph of nodes a bot runs, and the bot file that carries a
//! flow with its price table, calendar and story webhooks.
//!
//! A flow is authored as YAML or JSON:
//!
//! ```yaml
//! start: welcome            # first node of the main flow
//! error: oops               # optional: where failures go when a node has no on_error
//! expire_after: 24h         # optional: idle conversations end (conversation.expired)
//! keywords: { menu: welcome, stop: bye }   # optional: work at any waiting node
//! nodes:
//!   welcome:
//!     label: Welcome Message            # optional, defaults to the node id
//!     ask: "Your name, please?"
//!     save_as: name
//!     validate: { kind: text, min: 2, max: 80 }
//!     retry: "Please enter your name (2-80 characters)."
//!     notify: true                      # response.received
//!     reminder: "Still there?"          # timers: ask, menu, booking
//!     remind_after: 10m
//!     next: membership
//!   membership:
//!     menu: "{{memory.name}}, pick one:"
//!     image: "https://example.com/plans.png"   # media: message, ask, menu
//!     options:
//!       - { keyword: 1, label: One month, notify: true, next: score }
//!       - { keyword: 4, label: Raffle, campaign: raffle }
//!   score:
//!     set: { memory.score: "memory.score + 5", user.segment: "'vip'" }
//!     next:                             # branches: CEL, first match wins
//!       - if: memory.score >= 10
//!         then: thanks
//!       - else: bye
//!   thanks: { message: "Thank you, {{memory.name}}!", next: bye }
//!   oops:   { message: "Sorry, something went wrong.", next: bye }
//!   bye:    { end: true, message: "Bye" }
//! campaigns:                # other flows of the bot, same shape (start, error, nodes)
//!   raffle: { start: r1, nodes: { r1: { message: "In!", next: r2 }, r2: { end: true } } }
//! ```
//!
//! The rooms of this folder:
//! - `model.rs`: what a parsed flow is ([`Flow`], [`Graph`], [`Node`],
//!   [`FlowNode`], [`Next`], [`Wait`], [`Media`] …);
//! - `document.rs`: the raw YAML/JSON shape and the entry points that read
//!   and write it; `convert.rs`: between that shape and the model;
//! - `validate.rs`: the whole graph's checks ([`Flow::validate`]);
//! - `condition.rs`: CEL conditions and expressions, compiled once;
//! - `bot_file.rs` and `story_webhook.rs`: the bot file and its story
//!   webhook definitions.
//!
//! Checking happens in two layers, each reporting every problem it finds with
//! the node and field at fault ([`FlowError`]):
//! - parsing ([`Flow::from_yaml`], [`Flow::from_json`]): syntax (with line and
//!   column), unknown fields, a node with zero or several kinds, missing required
//!   fields, fields that the node's kind does not use, conditions that do not
//!   compile (with their column);
//! - [`Flow::validate`]: the whole graph — ids, limits, targets, reachability,
//!   menus, validations, timers, webhook names, and cycles without input.
//!
//! Invariants: parsing never panics, whatever the input; a flow that passed
//! both layers cannot loop forever without waiting for the user.

mod bot_file;
pub mod condition;
mod convert;
mod document;
mod model;
mod story_webhook;
#[cfg(test)]
pub(crate) mod tests;
mod validate;

pub use bot_file::*;
pub use document::{MAX_ASSIGNMENTS, MAX_BRANCHES, MAX_NESTING};
pub use model::*;
pub use story_webhook::*;

use condition::ExprError;
use serde::{Deserialize, Serialize};
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

/// Whether `s` is a valid node id, campaign name or memory key: `[A-Za-z0-9_-]{1,64}`.
pub fn is_valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
