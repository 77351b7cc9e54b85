//! Graph validation: the checks a parsed flow must pass before it is saved
//! — ids, limits, texts, targets (of `next`, branches, `on_error`,
//! `on_timeout`, keywords), reachability from the start, the error node and
//! the keywords, menus, validations, timers, media, webhook names, and
//! cycles of nodes that never wait for input (through `set` nodes and any
//! branch). Every problem is reported, each with its node and field.
//!
//! Invariant: a flow that passed cannot loop forever without waiting for
//! the user.

use super::convert::scoped;
use super::*;
use crate::domain::validate::normalise;
use std::collections::{BTreeMap, BTreeSet};

impl Flow {
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
                            Goto::Endpoint => {
                                if !o.notify {
                                    push(
                                        id,
                                        &f("next"),
                                        "an option without next or campaign must notify (\"notify\": true)".into(),
                                    );
                                }
                                if o.webhook.is_some() {
                                    push(
                                        id,
                                        &f("webhook"),
                                        "a story webhook needs a next or campaign to go on to"
                                            .into(),
                                    );
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
                FlowNode::End { message } | FlowNode::Handoff { message } => {
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
        FlowNode::End { .. } | FlowNode::Handoff { .. } => {}
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
