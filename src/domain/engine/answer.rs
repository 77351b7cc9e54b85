//! Answers: what the user's message does at the node the conversation
//! waits at, one method per waiting kind (`ask`, `menu`, `booking`).

use super::*;

impl<'a> Runner<'a> {
    /// Handles the user's answer at the node the conversation waits at,
    /// one method per waiting kind.
    pub(super) fn answer(&mut self, node: &'a Node, text: &str) {
        match &node.kind {
            FlowNode::Ask { .. } => self.answer_ask(node, text),
            FlowNode::Menu { .. } => self.answer_menu(node, text),
            FlowNode::Booking { .. } => self.answer_booking(node, text),
            // Not a waiting node (state written by an older engine, or a webhook
            // state without its pending call): run from it.
            _ => self.run(Jump {
                flow: self.turn.state.flow.clone(),
                node: node.id.clone(),
            }),
        }
    }

    /// An `ask`'s answer: validated (a choice also by its number), saved, then `next`.
    pub(super) fn answer_ask(&mut self, node: &'a Node, text: &str) {
        let FlowNode::Ask {
            prompt,
            save_as,
            validate,
            retry,
            notify,
            datapoint,
            next,
            ..
        } = &node.kind
        else {
            return;
        };
        let flow_name = self.turn.state.flow.clone();
        let here = |n: &String| Jump {
            flow: flow_name.clone(),
            node: n.clone(),
        };
        let checked = match validate {
            Some(Validation::Choice { options }) => {
                // A choice also accepts the option's number.
                let said = normalise(text);
                let number = said.trim_end_matches(['.', ')']).parse::<usize>().ok();
                match number
                    .and_then(|n| n.checked_sub(1))
                    .and_then(|i| options.get(i))
                {
                    Some(o) => Ok(Value::String(o.clone())),
                    None => validate.as_ref().map_or(Ok(Value::Null), |v| v.check(text)),
                }
            }
            Some(v) => v.check(text),
            None => Ok(Value::String(text.trim().to_string())),
        };
        match checked {
            Err(reason) => {
                match retry {
                    Some(r) => self.say(r),
                    None => {
                        let prompt = self.render(prompt);
                        self.say_plain(format!("Sorry, {reason}. {prompt}"));
                    }
                }
                self.offer_again(node);
            }
            Ok(value) => {
                let mut memory = self.turn.state.memory.clone();
                memory.insert(save_as.clone(), value.clone());
                if grows_past(&self.turn.state.memory, &memory, MAX_MEMORY_BYTES) {
                    let prompt = self.render(prompt);
                    return self.say_plain(format!("{SORRY_TOO_BIG} {prompt}"));
                }
                self.turn.state.memory = memory;
                if *notify {
                    self.emit(
                        EventType::ResponseReceived,
                        Some(node),
                        json!({"field": save_as, "response": text}),
                    );
                }
                if *datapoint {
                    self.emit(
                        EventType::DatapointCollected,
                        Some(node),
                        json!({"field": save_as, "value": value}),
                    );
                }
                let target = self.choose(node, next);
                self.run(here(&target));
            }
        }
    }

    /// A menu's answer: an option by keyword or label, else the options again.
    pub(super) fn answer_menu(&mut self, node: &'a Node, text: &str) {
        let FlowNode::Menu { options, retry, .. } = &node.kind else {
            return;
        };
        let flow_name = self.turn.state.flow.clone();
        let here = |n: &String| Jump {
            flow: flow_name.clone(),
            node: n.clone(),
        };
        let said = normalise(text);
        let number = said.trim_end_matches(['.', ')']).parse::<u32>().ok();
        let chosen = options
            .iter()
            .find(|o| number == Some(o.keyword))
            .or_else(|| options.iter().find(|o| normalise(&o.label) == said));
        let Some(o) = chosen else {
            let intro = match retry {
                Some(r) => self.render(r),
                None => {
                    "Sorry, I did not understand. Please choose one of the options:".to_string()
                }
            };
            return self.show_menu(intro, options);
        };
        if o.notify {
            self.emit(
                EventType::OptionSelected,
                Some(node),
                json!({"option": o.label, "keyword": o.keyword}),
            );
        }
        let target = match &o.goto {
            Goto::Node(n) => Some(here(n)),
            Goto::Campaign(c) => self.start_of(c),
            Goto::Endpoint => return self.complete(node),
        };
        let Some(target) = target else {
            return self.abort();
        };
        match &o.webhook {
            Some(name) => {
                self.turn.state.pending_webhook = Some(PendingWebhook {
                    name: name.clone(),
                    on_success: target,
                    on_error: self.error_target(&flow_name, None),
                });
                self.turn.call_webhook = Some(name.clone());
            }
            None => self.run(target),
        }
    }

    /// A booking's answer: the cancel keyword, or a slot by number or label.
    pub(super) fn answer_booking(&mut self, node: &'a Node, text: &str) {
        let FlowNode::Booking {
            retry,
            cancel_keyword,
            next,
            ..
        } = &node.kind
        else {
            return;
        };
        let flow_name = self.turn.state.flow.clone();
        let here = |n: &String| Jump {
            flow: flow_name.clone(),
            node: n.clone(),
        };
        let said = normalise(text);
        if cancel_keyword
            .as_deref()
            .is_some_and(|k| normalise(k) == said)
        {
            let intro = match self.turn.state.memory.remove("appointment") {
                Some(apt) => {
                    let id = apt
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    let label = apt
                        .get("label")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    self.turn.cancel_booking = Some(id);
                    self.emit(
                        EventType::AppointmentCancelled,
                        Some(node),
                        json!({ "appointment": apt }),
                    );
                    format!("Your appointment on {label} is cancelled.")
                }
                None => "You have no appointment to cancel.".to_string(),
            };
            if let Some(j) = self.offer_slots(node, Some(intro)) {
                self.run(j);
            }
            return;
        }
        let offered = self.turn.state.offered_slots.clone();
        let number = said.trim_end_matches(['.', ')']).parse::<usize>().ok();
        let chosen = number
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| offered.get(i))
            .or_else(|| offered.iter().find(|s| normalise(&s.label) == said));
        let Some(slot) = chosen.cloned() else {
            let intro = match retry {
                Some(r) => self.render(r),
                None => "Sorry, please choose one of the times offered.".to_string(),
            };
            if let Some(j) = self.offer_slots(node, Some(intro)) {
                self.run(j);
            }
            return;
        };
        let still_free = self.ctx.free_slots.iter().any(|s| s.start == slot.start);
        if self.ctx.taken_slot == Some(slot.start) || !still_free {
            let intro = format!(
                "Sorry, {} was just taken. Please choose another time.",
                slot.label
            );
            if let Some(j) = self.offer_slots(node, Some(intro)) {
                self.run(j);
            }
            return;
        }
        let id = format!(
            "{}-{}-{}",
            self.ctx.conversation_id,
            slot.start.timestamp(),
            self.ctx.now.timestamp_millis()
        );
        let timezone = self.ctx.calendar.map_or("UTC", |c| c.timezone.as_str());
        let apt = json!({
            "id": id,
            "start": rfc3339(slot.start),
            "end": rfc3339(slot.end),
            "label": slot.label,
            "timezone": timezone,
        });
        self.turn
            .state
            .memory
            .insert("appointment".into(), apt.clone());
        self.turn.state.offered_slots.clear();
        self.turn.booking = Some(BookingClaim {
            id,
            start: slot.start,
            end: slot.end,
            label: slot.label.clone(),
        });
        self.emit(
            EventType::AppointmentBooked,
            Some(node),
            json!({ "appointment": apt }),
        );
        let target = self.choose(node, next);
        self.run(here(&target));
    }
}
