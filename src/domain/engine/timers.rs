//! Timers: what a waiting conversation sets with each turn (the node's
//! reminder and timeout, the flow's expiry) and what each does when it
//! fires ([`on_timer`]). Storing and claiming them is the store's and the
//! runtime's job; here they are plain values computed from the turn's time.

use super::*;

/// A timer a waiting conversation sets: what fires and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// Say the node's `reminder`.
    Reminder,
    /// Go to the node's `on_timeout`.
    Timeout,
    /// End the idle conversation (`expire_after`).
    Expiry,
}

impl TimerKind {
    /// As stored.
    pub fn as_str(&self) -> &'static str {
        match self {
            TimerKind::Reminder => "reminder",
            TimerKind::Timeout => "timeout",
            TimerKind::Expiry => "expiry",
        }
    }

    /// From its stored name.
    pub fn parse(s: &str) -> Option<TimerKind> {
        match s {
            "reminder" => Some(TimerKind::Reminder),
            "timeout" => Some(TimerKind::Timeout),
            "expiry" => Some(TimerKind::Expiry),
            _ => None,
        }
    }
}

/// A timer to store with the turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerPlan {
    /// What it does.
    pub kind: TimerKind,
    /// The node it was set at (`None` for expiry).
    pub node: Option<String>,
    /// When it is due.
    pub due_at: DateTime<Utc>,
}

/// The timers a conversation has after a turn: the reminder and timeout of
/// the node it waits at, and the bot's expiry; none once it is over, and
/// none while it is in handoff (a person answers: no reminder, and no
/// expiry while they do).
///
/// Writing timers costs the turn's transaction two statements or more, so a
/// turn writes them only when what is stored must change: a node with a
/// reminder or timeout (set again from this turn's time), or an expiry
/// appearing or going. A turn that only moves the expiry later records the
/// new time in the state ([`State::expires_at`]); the stored timer, still
/// due at the earlier time, re-arms itself when it fires ([`on_timer`]).
pub(super) fn plan_timers(flow: &Flow, turn: &mut Turn, now: DateTime<Utc>) {
    let st = &mut turn.state;
    let stored = st.node_timers || st.expires_at.is_some();
    if st.completed || st.handoff {
        turn.timers = stored.then(Vec::new);
        st.node_timers = false;
        st.expires_at = None;
        return;
    }
    if st.pending_webhook.is_some() {
        return;
    }
    let after =
        |span: crate::domain::flow::Span| now + chrono::Duration::milliseconds(span.millis());
    let mut timers = Vec::new();
    let node = st.node.as_deref().and_then(|id| flow.node(&st.flow, id));
    if let Some(n) = node
        && let Some(w) = n.kind.wait()
    {
        if let (Some(_), Some(after_span)) = (&w.reminder, w.remind_after) {
            timers.push(TimerPlan {
                kind: TimerKind::Reminder,
                node: Some(n.id.clone()),
                due_at: after(after_span),
            });
        }
        if let (Some(t), Some(_)) = (w.timeout, &w.on_timeout) {
            timers.push(TimerPlan {
                kind: TimerKind::Timeout,
                node: Some(n.id.clone()),
                due_at: after(t),
            });
        }
    }
    let node_timers = !timers.is_empty();
    let expiry = flow.expire_after.map(after);
    let unchanged = !node_timers && !st.node_timers && expiry.is_some() == st.expires_at.is_some();
    st.node_timers = node_timers;
    st.expires_at = expiry.map(|e| e.timestamp_millis());
    if unchanged {
        return;
    }
    if let Some(due_at) = expiry {
        timers.push(TimerPlan {
            kind: TimerKind::Expiry,
            node: None,
            due_at,
        });
    }
    turn.timers = Some(timers);
}

/// Fires a timer the conversation set: a reminder says the node's
/// `reminder` (once; the timeout and expiry stay), a timeout goes to the
/// node's `on_timeout`, an expiry ends the conversation with
/// `conversation.expired`. A timer set at a node the conversation has left
/// (`node` differs) does nothing, and neither does any timer of a completed
/// conversation or one waiting for a story webhook.
pub fn on_timer(
    flow: &Flow,
    state: &State,
    ctx: &Context,
    kind: TimerKind,
    node: Option<&str>,
) -> Turn {
    let mut r = Runner::new(flow, ctx, state.clone());
    if state.completed || state.pending_webhook.is_some() {
        return r.turn;
    }
    let here = state
        .node
        .as_deref()
        .and_then(|id| flow.node(&state.flow, id));
    match kind {
        TimerKind::Expiry => {
            if let Some(at) = state.expires_at
                && at > ctx.now.timestamp_millis()
            {
                r.turn.rearm_expiry = DateTime::<Utc>::from_timestamp_millis(at);
                return r.turn;
            }
            if state.expires_at.is_none() && flow.expire_after.is_none() {
                // Set by an earlier version of the flow that expired idle
                // conversations; this one does not.
                return r.turn;
            }
            let st = &mut r.turn.state;
            st.node_timers = false;
            st.expires_at = None;
            st.completed = true;
            st.offered_slots.clear();
            st.quick_replies.clear();
            r.emit(EventType::ConversationExpired, here, json!({}));
            r.turn.ended = true;
            r.turn.timers = Some(Vec::new());
        }
        TimerKind::Reminder => {
            let Some(n) = here.filter(|n| Some(n.id.as_str()) == node) else {
                return r.turn;
            };
            if let Some(text) = n.kind.wait().and_then(|w| w.reminder.as_deref()) {
                r.say(text);
                r.offer_again(n);
            }
        }
        TimerKind::Timeout => {
            let Some(n) = here.filter(|n| Some(n.id.as_str()) == node) else {
                return r.turn;
            };
            let Some(target) = n.kind.wait().and_then(|w| w.on_timeout.clone()) else {
                return r.turn;
            };
            let st = &mut r.turn.state;
            st.offered_slots.clear();
            st.quick_replies.clear();
            let flow_name = st.flow.clone();
            r.run(Jump {
                flow: flow_name,
                node: target,
            });
            plan_timers(flow, &mut r.turn, ctx.now);
        }
    }
    r.turn
}
