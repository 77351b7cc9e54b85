//! The flow document: the raw YAML/JSON shape a flow is written in (the
//! `Raw*` types, read by serde with unknown fields refused) and the entry
//! points that read and write it ([`Flow::from_yaml`], [`Flow::from_json`],
//! [`Flow::to_yaml`], [`Flow::to_json`]).
//!
//! Before serde sees a document, cheap checks bound what it may cost: its
//! size, how deep its `[`/`{` nest, and how far YAML aliases expand. Syntax
//! errors carry their line and column. Turning the raw shape into the model
//! and back is `convert.rs`.
//!
//! Invariant: parsing never panics, whatever the input.

use super::convert::{graph_from_raw, graph_to_raw};
use super::*;
use crate::domain::validate::{Validation, normalise};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

// ---------------------------------------------------------------------------
// Raw document shape (serde) and its conversion to the typed flow.

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFlow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<String>,
    #[serde(default)]
    pub(super) nodes: RawNodes,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) campaigns: BTreeMap<String, RawGraph>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "ordered_keywords"
    )]
    pub(super) keywords: Vec<(String, RawKeyword)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) expire_after: Option<String>,
}

/// A keyword's target: a node id, or the node with opt-out/opt-in flags.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub(super) enum RawKeyword {
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
pub(super) mod ordered_keywords {
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
pub(super) enum RawNext {
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
pub(super) struct RawBranch {
    #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
    pub(super) when: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) then: Option<String>,
    #[serde(default, rename = "else", skip_serializing_if = "Option::is_none")]
    pub(super) otherwise: Option<String>,
}

/// A media field: a URL, or `{ url, caption }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub(super) enum RawMedia {
    Url(String),
    Full {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGraph {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<String>,
    #[serde(default)]
    pub(super) nodes: RawNodes,
}

/// Nodes in authoring order (a YAML/JSON map read entry by entry).
#[derive(Debug, Default)]
pub(super) struct RawNodes(pub(super) Vec<(String, RawNode)>);

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
pub(super) struct RawNode {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) menu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) ask: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) webhook: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) quote: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) booking: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) set: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) end: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) handoff: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) image: Option<RawMedia>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) video: Option<RawMedia>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) audio: Option<RawMedia>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) file: Option<RawMedia>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) save_as: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) validate: Option<Validation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) options: Option<Vec<RawOption>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) offer: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) cancel_keyword: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) retry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) notify: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) datapoint: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) next: Option<RawNext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) on_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) on_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) reminder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) remind_after: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOption {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) keyword: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) label: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) notify: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) webhook: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) campaign: Option<String>,
}

pub(super) const KIND_KEYS: [&str; 9] = [
    "message", "menu", "ask", "webhook", "quote", "booking", "set", "end", "handoff",
];

/// Most branches in one `next` list.
pub const MAX_BRANCHES: usize = 32;
/// Most assignments in one `set` node.
pub const MAX_ASSIGNMENTS: usize = 32;

impl RawNode {
    /// Names of the optional fields that are present (kind keys excluded).
    pub(super) fn present_fields(&self) -> Vec<&'static str> {
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

    pub(super) fn kinds(&self) -> Vec<&'static str> {
        let present = [
            self.message.is_some() && self.end.is_none() && self.handoff.is_none(),
            self.menu.is_some(),
            self.ask.is_some(),
            self.webhook.is_some(),
            self.quote.is_some(),
            self.booking.is_some(),
            self.set.is_some(),
            self.end.is_some(),
            self.handoff.is_some(),
        ];
        KIND_KEYS
            .iter()
            .zip(present)
            .filter(|(_, p)| *p)
            .map(|(k, _)| *k)
            .collect()
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
}

pub(super) fn check_size(src: &str) -> Result<(), Vec<FlowError>> {
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
pub(super) fn check_expansion(src: &str) -> Result<(), Vec<FlowError>> {
    crate::domain::expansion::check_yaml(src, MAX_SOURCE)
        .map_err(|e| vec![FlowError::new("", "", e.to_string())])
}

/// Deepest `[`/`{` nesting accepted in a YAML document.
pub const MAX_NESTING: usize = 64;

/// Rejects absurdly nested flow collections before the YAML parser sees them:
/// the parser reads the whole document before its own depth limit applies, and
/// that takes seconds on a few hundred kilobytes of `[[[[…`. Quoted strings are
/// skipped; braces inside plain text (`{{memory.name}}`) open and close again.
pub(super) fn check_nesting(src: &str) -> Result<(), Vec<FlowError>> {
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
