//! The runner: one turn being accumulated — replies within the caps,
//! events, state — and the walk from node to node until one waits
//! ([`Runner::run`]), with what that walk needs: branches and `set`
//! (conditions through one scope per branch list), keywords, menus, slots,
//! media and the choices offered again.

use super::*;

/// Accumulates one turn.
pub(super) struct Runner<'a> {
    pub(super) flow: &'a Flow,
    pub(super) ctx: &'a Context<'a>,
    pub(super) turn: Turn,
    pub(super) hops: usize,
    pub(super) budget: ReplyBudget,
}

impl<'a> Runner<'a> {
    pub(super) fn new(flow: &'a Flow, ctx: &'a Context<'a>, state: State) -> Self {
        Runner {
            flow,
            ctx,
            turn: Turn {
                state,
                ..Turn::default()
            },
            hops: 0,
            budget: ReplyBudget::default(),
        }
    }

    pub(super) fn merge_context(&self) -> Value {
        merge_context(
            &self.turn.state,
            self.ctx.contact,
            &self.turn.user_attributes,
        )
    }

    /// Renders merge tags, only as far as a reply may hold: a longer result
    /// comes back just over [`MAX_REPLY_BYTES`], for the caps to cut. Once the
    /// turn has said all it may, nothing is rendered.
    pub(super) fn render(&self, template: &str) -> String {
        if self.budget.exhausted() {
            return template.to_string();
        }
        merge::render_text_within(template, &self.merge_context(), MAX_REPLY_BYTES)
    }

    /// Renders merge tags and adds the text as a reply (unless it renders empty).
    pub(super) fn say(&mut self, template: &str) {
        let text = self.render(template);
        self.say_plain(text);
    }

    /// Adds a reply as it is, within the output caps.
    pub(super) fn say_plain(&mut self, text: String) {
        self.budget
            .admit(&mut self.turn.replies, text, &mut self.turn.cut);
    }

    /// Says `intro` followed by `lines` (a menu's or a booking's numbered
    /// options) in one reply; when the whole is too long, the intro is cut
    /// so that the options stay readable.
    pub(super) fn say_with_options(&mut self, mut intro: String, lines: &str) {
        if self.budget.exhausted() {
            self.turn.cut.dropped += 1;
            return;
        }
        let options_len = lines.len() + 1;
        if intro.len() + options_len > MAX_REPLY_BYTES
            && MAX_REPLY_BYTES.saturating_sub(options_len) >= CUT_MARKER.len()
        {
            mark_cut(&mut intro, MAX_REPLY_BYTES - options_len);
            self.turn.cut.shortened += 1;
        }
        if !intro.trim().is_empty() {
            intro.push('\n');
        }
        intro.push_str(lines);
        self.say_plain(intro);
    }

    pub(super) fn emit(&mut self, t: EventType, node: Option<&Node>, extra: Value) {
        self.emit_raw(t, node.map(|n| n.id.as_str()), node.map(Node::label), extra);
    }

    pub(super) fn emit_raw(
        &mut self,
        t: EventType,
        node: Option<&str>,
        label: Option<&str>,
        extra: Value,
    ) {
        let c = self.ctx.contact;
        let mut data = json!({
            "conversation_id": self.ctx.conversation_id,
            "flow": self.turn.state.flow,
            "node": node,
            "label": label,
            "contact": {"id": c.id, "phone": c.phone, "external_id": c.external_id},
        });
        if let (Some(d), Value::Object(e)) = (data.as_object_mut(), extra) {
            d.extend(e);
        }
        self.turn.events.push(NewEvent {
            event_type: t,
            data,
        });
    }

    /// Closes a conversation that cannot go on.
    pub(super) fn abort(&mut self) {
        self.say_plain(SORRY_BROKEN.into());
        let st = &mut self.turn.state;
        st.completed = true;
        st.pending_webhook = None;
        st.offered_slots.clear();
        self.turn.ended = true;
    }

    /// Completes the conversation at `node` (an end, or a menu option
    /// whose redirect is the bot's endpoint).
    pub(super) fn complete(&mut self, node: &'a Node) {
        self.turn.state.completed = true;
        self.turn.state.offered_slots.clear();
        self.emit(EventType::ConversationCompleted, Some(node), json!({}));
        self.turn.ended = true;
    }

    pub(super) fn start_of(&self, flow: &str) -> Option<Jump> {
        self.flow.graph(flow).map(|g| Jump {
            flow: flow.to_string(),
            node: g.start.clone(),
        })
    }

    /// Where a failure goes: `on_error`, else the flow's error node, else the
    /// main flow's error node.
    pub(super) fn error_target(&self, flow: &str, on_error: Option<&String>) -> Option<Jump> {
        if let Some(e) = on_error {
            return Some(Jump {
                flow: flow.to_string(),
                node: e.clone(),
            });
        }
        if let Some(e) = self.flow.graph(flow).and_then(|g| g.error.clone()) {
            return Some(Jump {
                flow: flow.to_string(),
                node: e,
            });
        }
        self.flow.main.error.clone().map(|e| Jump {
            flow: MAIN.to_string(),
            node: e,
        })
    }

    pub(super) fn run(&mut self, mut at: Jump) {
        let flow = self.flow;
        loop {
            self.hops += 1;
            if self.hops > MAX_HOPS {
                return self.abort();
            }
            let Some(node) = flow.node(&at.flow, &at.node) else {
                return self.abort();
            };
            self.turn.state.flow = at.flow.clone();
            self.turn.state.node = Some(node.id.clone());
            let here = |n: &String| Jump {
                flow: at.flow.clone(),
                node: n.clone(),
            };
            match &node.kind {
                FlowNode::Message { text, media, next } => {
                    self.say_with(text, media.as_ref());
                    at = here(&self.choose(node, next));
                }
                FlowNode::Set { assignments, next } => {
                    self.assign(node, assignments);
                    at = here(&self.choose(node, next));
                }
                FlowNode::Ask {
                    prompt,
                    media,
                    validate,
                    ..
                } => {
                    self.say_with(prompt, media.as_ref());
                    if let Some(Validation::Choice { options }) = validate {
                        self.turn.quick_replies.extend(options.iter().cloned());
                    }
                    return;
                }
                FlowNode::Menu {
                    text,
                    media,
                    options,
                    ..
                } => {
                    let text = self.render(text);
                    self.show_menu(text, options);
                    self.attach(media.as_ref());
                    return;
                }
                FlowNode::Booking { .. } => match self.offer_slots(node, None) {
                    Some(j) => at = j,
                    None => return,
                },
                FlowNode::Webhook {
                    name,
                    next,
                    on_error,
                } => {
                    let on_success = here(&self.choose(node, next));
                    self.turn.state.pending_webhook = Some(PendingWebhook {
                        name: name.clone(),
                        on_success,
                        on_error: self.error_target(&at.flow, on_error.as_ref()),
                    });
                    self.turn.call_webhook = Some(name.clone());
                    return;
                }
                FlowNode::Quote { next, on_error } => {
                    let priced = match self.ctx.price_table {
                        Some(t) => price(t, &self.turn.state.memory, self.ctx.now)
                            .map_err(|e| e.to_string()),
                        None => Err("no prices are set up".to_string()),
                    };
                    match priced.and_then(|q| serde_json::to_value(q).map_err(|e| e.to_string())) {
                        Ok(q) => {
                            self.turn.state.memory.insert("quote".into(), q.clone());
                            self.emit(EventType::QuoteGenerated, Some(node), json!({ "quote": q }));
                            at = here(&self.choose(node, next));
                        }
                        Err(reason) => {
                            self.say_plain(format!(
                                "Sorry, we could not prepare your quote: {reason}."
                            ));
                            at = match self.error_target(&at.flow, on_error.as_ref()) {
                                Some(j) => j,
                                None => here(&self.choose(node, next)),
                            };
                        }
                    }
                }
                FlowNode::Handoff { message } => {
                    self.say(message.as_deref().unwrap_or(HANDOFF_MESSAGE));
                    let st = &mut self.turn.state;
                    st.handoff = true;
                    st.offered_slots.clear();
                    self.emit(EventType::ConversationHandoff, Some(node), json!({}));
                    return;
                }
                FlowNode::End { message } => {
                    if let Some(m) = message {
                        self.say(m);
                    }
                    return self.complete(node);
                }
            }
        }
    }

    pub(super) fn show_menu(&mut self, intro: String, options: &[MenuOption]) {
        let lines: Vec<String> = options
            .iter()
            .map(|o| format!("{}. {}", o.keyword, o.label))
            .collect();
        self.say_with_options(intro, &lines.join("\n"));
        self.turn
            .quick_replies
            .extend(options.iter().map(|o| o.label.clone()));
    }

    /// Offers free slots at a booking node; returns where to go when there are none.
    pub(super) fn offer_slots(&mut self, node: &Node, intro: Option<String>) -> Option<Jump> {
        let FlowNode::Booking {
            prompt,
            offer,
            next,
            on_error,
            ..
        } = &node.kind
        else {
            return None;
        };
        let free: Vec<Slot> = self
            .ctx
            .free_slots
            .iter()
            .filter(|s| Some(s.start) != self.ctx.taken_slot)
            .take(*offer as usize)
            .cloned()
            .collect();
        if let Some(i) = intro {
            self.say_plain(i);
        }
        let flow = self.turn.state.flow.clone();
        if free.is_empty() {
            self.turn.state.offered_slots.clear();
            self.say_plain(SORRY_NO_SLOTS.into());
            let target = match on_error {
                Some(e) => e.clone(),
                None => self.choose(node, next),
            };
            return Some(Jump { flow, node: target });
        }
        let lines: Vec<String> = free
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{}. {}", i + 1, s.label))
            .collect();
        let text = self.render(prompt);
        self.say_with_options(text, &lines.join("\n"));
        self.turn
            .quick_replies
            .extend(free.iter().map(|s| s.label.clone()));
        self.turn.state.offered_slots = free;
        None
    }

    /// Says the question of the node the conversation waits at again.
    pub(super) fn prompt_again(&mut self, node: &Node) {
        match &node.kind {
            FlowNode::Ask { prompt, .. } => {
                self.say(prompt);
                self.offer_again(node);
            }
            FlowNode::Menu { text, options, .. } => {
                let text = self.render(text);
                self.show_menu(text, options);
            }
            FlowNode::Booking { .. } => {
                if let Some(j) = self.offer_slots(node, None) {
                    self.run(j);
                }
            }
            _ => {}
        }
    }

    /// Adds a rendered media to the last reply (or alone when the text rendered empty).
    pub(super) fn attach(&mut self, media: Option<&Media>) {
        let Some(m) = media else { return };
        let ctx = self.merge_context();
        let rendered = Media {
            kind: m.kind,
            url: merge::render_url(&m.url, &ctx),
            caption: m.caption.as_deref().map(|c| merge::render_text(c, &ctx)),
        };
        if self.turn.replies.is_empty() {
            self.turn.replies.push(String::new());
        }
        self.turn
            .media
            .push((self.turn.replies.len() - 1, rendered));
    }

    /// Says a text with merge tags and its media, if any.
    pub(super) fn say_with(&mut self, template: &str, media: Option<&Media>) {
        let before = self.turn.replies.len();
        self.say(template);
        if media.is_some() && self.turn.replies.len() == before {
            // The text rendered empty: the media goes alone.
            self.turn.replies.push(String::new());
        }
        self.attach(media);
    }

    /// Offers a choice ask's options again, numbered, as quick replies.
    pub(super) fn offer_again(&mut self, node: &Node) {
        match &node.kind {
            FlowNode::Ask {
                validate: Some(Validation::Choice { options }),
                ..
            } => {
                let lines: Vec<String> = options
                    .iter()
                    .enumerate()
                    .map(|(i, o)| format!("{}. {o}", i + 1))
                    .collect();
                if let Some(last) = self.turn.replies.last_mut() {
                    last.push('\n');
                    last.push_str(&lines.join("\n"));
                }
                self.turn.quick_replies.extend(options.iter().cloned());
            }
            FlowNode::Menu { options, .. } => self
                .turn
                .quick_replies
                .extend(options.iter().map(|o| o.label.clone())),
            FlowNode::Booking { .. } => self.turn.quick_replies.extend(
                self.turn
                    .state
                    .offered_slots
                    .iter()
                    .map(|s| s.label.clone()),
            ),
            _ => {}
        }
    }

    /// The contact's attributes with this turn's changes.
    pub(super) fn user_now(&self) -> Map<String, Value> {
        let mut user = self.ctx.contact.attributes.clone();
        for (k, v) in &self.turn.user_attributes {
            if v.is_null() {
                user.remove(k);
            } else {
                user.insert(k.clone(), v.clone());
            }
        }
        user
    }

    /// The values conditions see, for the roots in `roots`.
    pub(super) fn scope(&self, roots: &std::collections::BTreeSet<&'static str>) -> Scope {
        let user = if roots.contains("user") {
            self.user_now()
        } else {
            Map::new()
        };
        let c = self.ctx.contact;
        Scope::new(
            &ScopeInput {
                memory: &self.turn.state.memory,
                user: &user,
                contact: json!({"id": c.id, "phone": c.phone, "external_id": c.external_id}),
                channel: self.ctx.channel,
                now: self.ctx.now,
                date_keys: &self.flow.date_keys,
            },
            roots,
        )
    }

    /// Where `next` leads: the node, or the first branch whose condition
    /// holds. A condition that cannot be evaluated takes `else` and is
    /// written to the conversation's log.
    pub(super) fn choose(&mut self, node: &Node, next: &Next) -> String {
        let branches = match next {
            Next::Node(n) => return n.clone(),
            Next::Branches(b) => b,
        };
        let mut roots = std::collections::BTreeSet::new();
        for b in branches {
            if let Some(e) = &b.when {
                roots.extend(e.roots().iter().copied());
            }
        }
        let scope = self.scope(&roots);
        for (i, b) in branches.iter().enumerate() {
            let Some(cond) = &b.when else {
                return b.then.clone();
            };
            match cond.eval_bool(&scope) {
                Ok(true) => return b.then.clone(),
                Ok(false) => {}
                Err(e) => {
                    self.turn.log.push(format!(
                        "node {}: next[{i}].if could not be evaluated, took else: {e}",
                        node.id
                    ));
                    return next.fallback().to_string();
                }
            }
        }
        next.fallback().to_string()
    }

    /// Runs a `set` node's assignments in order.
    pub(super) fn assign(&mut self, node: &Node, assignments: &[crate::domain::flow::Assignment]) {
        for a in assignments {
            let value = match &a.value {
                SetValue::Literal(v) => Ok(v.clone()),
                SetValue::Template(t) => {
                    Ok(Value::String(merge::render_text(t, &self.merge_context())))
                }
                SetValue::Expr(e) => e.eval_json(&self.scope(e.roots())),
            };
            match value {
                Ok(v) => match &a.target {
                    SetTarget::Memory(k) => {
                        self.turn.state.memory.insert(k.clone(), v);
                    }
                    SetTarget::User(k) => {
                        self.turn.user_attributes.insert(k.clone(), v);
                    }
                },
                Err(e) => self.turn.log.push(format!(
                    "node {}: set {} was skipped: {e}",
                    node.id,
                    a.target.path()
                )),
            }
        }
    }

    /// Handles a global keyword; `false` when `text` is none.
    pub(super) fn keyword(&mut self, text: &str) -> bool {
        let said = normalise(text);
        let Some(k) = self
            .flow
            .keywords
            .iter()
            .find(|k| normalise(&k.word) == said)
        else {
            return false;
        };
        let flow = self.flow;
        let here = self
            .turn
            .state
            .node
            .as_deref()
            .and_then(|id| flow.node(&self.turn.state.flow, id));
        if k.opt_out || k.opt_in {
            self.turn
                .user_attributes
                .insert("opted_out".into(), Value::Bool(k.opt_out));
            let t = if k.opt_out {
                EventType::ContactOptedOut
            } else {
                EventType::ContactOptedIn
            };
            self.emit(t, here, json!({ "keyword": k.word }));
        }
        let st = &mut self.turn.state;
        st.offered_slots.clear();
        st.quick_replies.clear();
        self.run(Jump {
            flow: MAIN.into(),
            node: k.next.clone(),
        });
        true
    }
}
