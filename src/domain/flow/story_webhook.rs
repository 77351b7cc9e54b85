//! Story webhooks (seed 002): the calls to the user's API a flow makes,
//! as declared in the bot file, and the checks on their definitions.

use super::FlowError;
use super::is_valid_id;
use crate::domain::outbound::{self, CustomHeader};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A story webhook (seed 002): a call to the user's API made from a flow.
///
/// `params` go to the query string for GET and DELETE and form a JSON body
/// otherwise; merge tags work in the URL's path and query (values
/// percent-encoded), header values and the string values of `params`
/// (substituted inside strings only, so an answer can never inject JSON).
/// Header values are secrets unless marked plain (see
/// [`CustomHeader`](crate::domain::outbound::CustomHeader)).
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
