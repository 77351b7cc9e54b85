//! Between the raw document and the model: each node's fields are checked
//! against its kind (missing, misplaced, several kinds), conditions and
//! `set` expressions are compiled, durations and media read; and the model
//! is written back in the authoring shape, so that parsing what was written
//! gives the same flow.

use super::condition::Expr;
use super::document::*;
use super::*;

pub(super) fn scoped(campaign: Option<&str>, node: &str) -> String {
    match campaign {
        Some(c) => format!("{c}/{node}"),
        None => node.to_string(),
    }
}

pub(super) fn node_from_raw(
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
                "node has no kind; give it exactly one of message, menu, ask, webhook, quote, booking, set, end, handoff",
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
        "handoff" => {
            if raw.handoff != Some(true) {
                errs.push(FlowError::new(&at, "handoff", "write \"handoff: true\""));
            }
            FlowNode::Handoff {
                message: raw.message,
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

/// Compiles a `next`: a node id, or branches whose conditions compile and
/// which end with exactly one `else`.
pub(super) fn next_from_raw(at: &str, raw: RawNext, errs: &mut Vec<FlowError>) -> Next {
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

pub(super) fn media_from_raw(at: &str, raw: &RawNode, errs: &mut Vec<FlowError>) -> Option<Media> {
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

pub(super) fn wait_from_raw(at: &str, raw: &RawNode, errs: &mut Vec<FlowError>) -> Wait {
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

pub(super) fn assignments_from_raw(
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

pub(super) fn option_from_raw(
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
        (None, None) if o.notify && o.webhook.is_none() => Goto::Endpoint,
        (None, None) if o.notify => {
            errs.push(FlowError::new(
                at,
                format!("options[{i}].next"),
                "a story webhook needs somewhere to go on: give the option \"next\" (or \"campaign\"), or drop \"webhook\" to hand the conversation to your endpoint",
            ));
            return None;
        }
        (None, None) => {
            errs.push(FlowError::new(
                at,
                format!("options[{i}].next"),
                "missing required field \"next\" (or \"campaign\", or \"notify\": true to hand the conversation to your endpoint)",
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

pub(super) fn graph_from_raw(
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

pub(super) fn graph_to_raw(g: &Graph) -> RawGraph {
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

pub(super) fn next_to_raw(next: &Next) -> RawNext {
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

pub(super) fn media_to_raw(r: &mut RawNode, media: &Option<Media>) {
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

pub(super) fn wait_to_raw(r: &mut RawNode, w: &Wait) {
    r.timeout = w.timeout.map(|s| s.to_string());
    r.on_timeout = w.on_timeout.clone();
    r.reminder = w.reminder.clone();
    r.remind_after = w.remind_after.map(|s| s.to_string());
}

pub(super) fn node_to_raw(n: &Node) -> RawNode {
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
                            Goto::Endpoint => (None, None),
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
        FlowNode::Handoff { message } => {
            r.handoff = Some(true);
            r.message = message.clone();
        }
    }
    r
}
