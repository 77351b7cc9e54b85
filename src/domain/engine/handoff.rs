//! Handoff to a person: what a person's answer emits ([`agent_message`])
//! and giving the conversation back to the bot ([`release`]).
//!
//! Entering handoff is a node like any other (`runner.rs`); these two are
//! the inputs that come from a person instead of the contact. Both refuse
//! a conversation that is not in handoff, so a late click in a console
//! never moves a conversation the bot already has back.

use super::*;

/// Why a person's action on a conversation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoffError {
    /// The conversation is not waiting for a person.
    #[error("the conversation is not in handoff: the bot is answering it")]
    NotInHandoff,
    /// The conversation is over.
    #[error("the conversation has ended")]
    Ended,
    /// The node to release to is not a node of the main flow.
    #[error("node {0:?} is not a node of the main flow")]
    UnknownNode(String),
    /// The text is empty, too long or holds control characters.
    #[error("text is not a message that can be sent: {0}")]
    Text(&'static str),
}

/// Checks that `state` waits for a person.
fn in_handoff(state: &State) -> Result<(), HandoffError> {
    if state.completed {
        Err(HandoffError::Ended)
    } else if !state.handoff {
        Err(HandoffError::NotInHandoff)
    } else {
        Ok(())
    }
}

/// A person's answer to a conversation in handoff: the turn holds the
/// unchanged state and the `agent.message` event; storing the words and
/// sending them is the caller's.
pub fn agent_message(
    flow: &Flow,
    state: &State,
    ctx: &Context,
    text: &str,
) -> Result<Turn, HandoffError> {
    in_handoff(state)?;
    check_text(text).map_err(HandoffError::Text)?;
    let mut r = Runner::new(flow, ctx, state.clone());
    let node = state
        .node
        .as_deref()
        .and_then(|id| flow.node(&state.flow, id));
    r.emit(EventType::AgentMessage, node, json!({ "text": text }));
    Ok(r.turn)
}

/// Gives a conversation in handoff back to the bot at `node` of the main
/// flow (its start when `None`): `conversation.released`, then the run
/// from that node, with its replies and timers, like any turn.
pub fn release(
    flow: &Flow,
    state: &State,
    ctx: &Context,
    node: Option<&str>,
) -> Result<Turn, HandoffError> {
    in_handoff(state)?;
    let target = match node {
        Some(id) => flow
            .main
            .node(id)
            .ok_or_else(|| HandoffError::UnknownNode(id.to_owned()))?,
        None => flow
            .main
            .node(&flow.main.start)
            .ok_or_else(|| HandoffError::UnknownNode(flow.main.start.clone()))?,
    };
    let mut r = Runner::new(flow, ctx, state.clone());
    let st = &mut r.turn.state;
    let released_at = st.node.clone();
    st.handoff = false;
    st.flow = MAIN.into();
    st.node = Some(target.id.clone());
    st.quick_replies.clear();
    st.offered_slots.clear();
    r.emit(
        EventType::ConversationReleased,
        Some(target),
        json!({ "released_at": released_at }),
    );
    r.run(Jump {
        flow: MAIN.into(),
        node: target.id.clone(),
    });
    plan_timers(flow, &mut r.turn, ctx.now);
    Ok(r.turn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::tests::assert_valid;

    const FLOW: &str = "
start: name
keywords: { agent: human }
nodes:
  name: { ask: \"Your name?\", save_as: name, next: done }
  done: { message: \"Thanks {{memory.name}}\", next: name }
  human: { handoff: true, message: \"Wait for a person, {{memory.name}}.\" }
";

    fn contact() -> Contact {
        Contact {
            id: "ct_1".into(),
            ..Contact::default()
        }
    }

    fn ctx(contact: &Contact) -> Context<'_> {
        Context {
            conversation_id: "cnv_1",
            contact,
            now: chrono::DateTime::from_timestamp(1_764_000_000, 0).unwrap(),
            price_table: None,
            calendar: None,
            free_slots: &[],
            taken_slot: None,
            channel: "api",
        }
    }

    fn types(t: &Turn) -> Vec<&'static str> {
        t.events.iter().map(|e| e.event_type.as_str()).collect()
    }

    fn checked(t: Turn) -> Turn {
        t.events.iter().for_each(assert_valid);
        t
    }

    #[test]
    fn a_keyword_hands_off_and_the_bot_goes_silent_until_released() {
        let flow = Flow::from_yaml(FLOW).unwrap();
        let who = contact();
        let c = ctx(&who);
        let t = checked(step(&flow, &State::new(), &c, Input::Text("hi")));
        let t = checked(step(&flow, &t.state, &c, Input::Text("Ana")));
        let t = checked(step(&flow, &t.state, &c, Input::Text(" AGENT ")));
        assert_eq!(types(&t), ["message.received", "conversation.handoff"]);
        assert_eq!(t.replies, ["Wait for a person, Ana."]);
        assert!(t.state.handoff);
        assert_eq!(t.state.node.as_deref(), Some("human"));
        // Messages, keywords included, reach nobody but the transcript.
        for text in ["hello?", "agent", "Bob"] {
            let next = checked(step(&flow, &t.state, &c, Input::Text(text)));
            assert_eq!(types(&next), ["message.received"], "{text}");
            assert!(next.replies.is_empty(), "{text}: {:?}", next.replies);
            assert!(next.state.handoff);
        }
        let media = step(
            &flow,
            &t.state,
            &c,
            Input::Media {
                kind: "image",
                id: Some("m1"),
                caption: None,
            },
        );
        assert!(media.replies.is_empty(), "{:?}", media.replies);
        // A person answers: one event, nothing else changes.
        let a = checked(agent_message(&flow, &t.state, &c, "Hi Ana, I am Eve").unwrap());
        assert_eq!(types(&a), ["agent.message"]);
        assert_eq!(a.events[0].data["text"], "Hi Ana, I am Eve");
        assert_eq!(a.state, t.state);
        assert_eq!(
            agent_message(&flow, &t.state, &c, "  "),
            Err(HandoffError::Text("it was empty"))
        );
        // Released to a node: the bot runs from there.
        let r = checked(release(&flow, &t.state, &c, Some("done")).unwrap());
        assert_eq!(types(&r), ["conversation.released"]);
        assert_eq!(r.events[0].data["released_at"], "human");
        assert_eq!(r.events[0].data["node"], "done");
        assert_eq!(r.replies, ["Thanks Ana", "Your name?"]);
        assert!(!r.state.handoff);
        assert_eq!(r.state.node.as_deref(), Some("name"));
        let again = step(&flow, &r.state, &c, Input::Text("Zoe"));
        assert_eq!(again.replies, ["Thanks Zoe", "Your name?"]);
        // Released without a node: the start.
        let r = release(&flow, &t.state, &c, None).unwrap();
        assert_eq!(r.replies, ["Your name?"]);
    }

    #[test]
    fn people_cannot_act_on_a_conversation_the_bot_has() {
        let flow = Flow::from_yaml(FLOW).unwrap();
        let who = contact();
        let c = ctx(&who);
        let t = step(&flow, &State::new(), &c, Input::Text("hi"));
        assert_eq!(
            agent_message(&flow, &t.state, &c, "hello"),
            Err(HandoffError::NotInHandoff)
        );
        assert_eq!(
            release(&flow, &t.state, &c, None),
            Err(HandoffError::NotInHandoff)
        );
        let h = step(&flow, &t.state, &c, Input::Text("agent"));
        assert_eq!(
            release(&flow, &h.state, &c, Some("nowhere")),
            Err(HandoffError::UnknownNode("nowhere".into()))
        );
        let mut ended = h.state.clone();
        ended.completed = true;
        assert_eq!(
            agent_message(&flow, &ended, &c, "hello"),
            Err(HandoffError::Ended)
        );
    }

    #[test]
    fn a_handoff_node_without_a_message_says_the_default_and_round_trips() {
        let yaml = "start: h\nnodes: { h: { handoff: true } }";
        let flow = Flow::from_yaml(yaml).unwrap();
        assert_eq!(flow.validate(None), Ok(()));
        let who = contact();
        let t = step(&flow, &State::new(), &ctx(&who), Input::Text("hi"));
        assert_eq!(t.replies, [HANDOFF_MESSAGE]);
        let again = Flow::from_yaml(&flow.to_yaml()).unwrap();
        assert_eq!(again, flow);
        let bad = Flow::from_yaml("start: h\nnodes: { h: { handoff: false } }").unwrap_err();
        assert!(bad[0].message.contains("handoff: true"), "{bad:?}");
        let bad =
            Flow::from_yaml("start: h\nnodes: { h: { handoff: true, next: h } }").unwrap_err();
        assert!(bad[0].message.contains("does not use"), "{bad:?}");
    }
}
