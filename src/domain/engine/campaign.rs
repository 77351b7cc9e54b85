//! Starting a campaign from outside the conversation: a broadcast puts a
//! contact at the start of one of the flow's campaigns ([`start_campaign`]).
//!
//! A contact without a conversation in progress gets a new one (fresh
//! memory, `conversation.started`); one in progress is moved to the
//! campaign's start, its memory kept, as a campaign option of a menu would.
//! A conversation a person answers is left alone.

use super::*;

/// Why a campaign could not be started for a contact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CampaignError {
    /// The flow has no campaign of that name.
    #[error("the flow has no campaign {0:?}")]
    Unknown(String),
    /// A person answers the conversation.
    #[error("the conversation is in handoff: a person answers it")]
    InHandoff,
}

/// Whether a conversation in `state` can be moved to a campaign: not one
/// in handoff (a completed one starts over, so it can).
pub fn campaign_blocked(state: &State) -> bool {
    state.handoff && !state.completed
}

/// Starts campaign `name` for the conversation in `state` (`None` or a
/// completed one: a new conversation). The turn holds the campaign's
/// first replies up to the node that waits, its events and its timers,
/// like any turn.
pub fn start_campaign(
    flow: &Flow,
    state: Option<&State>,
    ctx: &Context,
    name: &str,
) -> Result<Turn, CampaignError> {
    let graph = flow
        .campaigns
        .get(name)
        .ok_or_else(|| CampaignError::Unknown(name.to_owned()))?;
    let fresh = match state {
        None => true,
        Some(s) if campaign_blocked(s) => return Err(CampaignError::InHandoff),
        Some(s) => s.completed,
    };
    let mut st = match state {
        Some(s) if !fresh => s.clone(),
        _ => State::new(),
    };
    st.flow = name.to_owned();
    st.node = None;
    st.quick_replies.clear();
    st.offered_slots.clear();
    st.pending_webhook = None;
    let mut r = Runner::new(flow, ctx, st);
    if fresh {
        r.emit(EventType::ConversationStarted, None, json!({}));
    }
    r.run(Jump {
        flow: name.to_owned(),
        node: graph.start.clone(),
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
  human: { handoff: true }
campaigns:
  sale:
    start: s1
    nodes:
      s1: { message: \"Sale today, {{user.first_name}}!\", next: s2 }
      s2: { ask: \"Want a coupon, {{memory.name}}?\", save_as: coupon, next: s3 }
      s3: { message: \"Coupon for {{memory.coupon}} sent.\", next: s4 }
      s4: { end: true }
";

    fn ctx(contact: &Contact) -> Context<'_> {
        Context {
            conversation_id: "cnv_1",
            contact,
            now: chrono::DateTime::from_timestamp(1_764_000_000, 0).unwrap(),
            price_table: None,
            calendar: None,
            free_slots: &[],
            taken_slot: None,
            channel: "whatsapp",
        }
    }

    fn who() -> Contact {
        let mut attributes = Map::new();
        attributes.insert("first_name".into(), json!("Ada"));
        Contact {
            id: "ct_1".into(),
            attributes,
            ..Contact::default()
        }
    }

    #[test]
    fn a_new_conversation_starts_at_the_campaign_and_continues_there() {
        let flow = Flow::from_yaml(FLOW).unwrap();
        let c = who();
        let t = start_campaign(&flow, None, &ctx(&c), "sale").unwrap();
        t.events.iter().for_each(assert_valid);
        assert_eq!(t.replies, ["Sale today, Ada!", "Want a coupon, ?"]);
        assert_eq!(t.events[0].event_type, EventType::ConversationStarted);
        assert_eq!(t.events[0].data["flow"], "sale");
        assert_eq!(
            (t.state.flow.as_str(), t.state.node.as_deref()),
            ("sale", Some("s2"))
        );
        let next = step(&flow, &t.state, &ctx(&c), Input::Text("yes"));
        assert_eq!(next.replies, ["Coupon for yes sent."]);
        assert!(next.ended);
    }

    #[test]
    fn a_conversation_in_progress_moves_with_its_memory_but_not_from_a_person() {
        let flow = Flow::from_yaml(FLOW).unwrap();
        let c = who();
        let t = step(&flow, &State::new(), &ctx(&c), Input::Text("hi"));
        let t = step(&flow, &t.state, &ctx(&c), Input::Text("Bob"));
        let moved = start_campaign(&flow, Some(&t.state), &ctx(&c), "sale").unwrap();
        assert_eq!(moved.replies, ["Sale today, Ada!", "Want a coupon, Bob?"]);
        assert!(moved.events.is_empty(), "{:?}", moved.events);
        let h = step(&flow, &t.state, &ctx(&c), Input::Text("agent"));
        assert!(campaign_blocked(&h.state));
        assert_eq!(
            start_campaign(&flow, Some(&h.state), &ctx(&c), "sale"),
            Err(CampaignError::InHandoff)
        );
        assert_eq!(
            start_campaign(&flow, None, &ctx(&c), "nope"),
            Err(CampaignError::Unknown("nope".into()))
        );
        // A completed conversation starts over, memory cleared.
        let mut done = t.state.clone();
        done.completed = true;
        let again = start_campaign(&flow, Some(&done), &ctx(&c), "sale").unwrap();
        assert_eq!(again.replies[1], "Want a coupon, ?");
        assert_eq!(again.events[0].event_type, EventType::ConversationStarted);
    }
}
