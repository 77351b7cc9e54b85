//! Conversation timers at run time: every API node claims the due ones
//! (a lease in the store makes each fire once across nodes) and runs each
//! through the engine ([`engine::on_timer`]) as a turn of its own, under the
//! contact's lock and the conversation's revision check, committed like a
//! chat turn (transcript, events, the conversation's new timers). What a
//! timer says is in the transcript (the chat API's and widget's poll shows
//! it) and, for a contact on a messaging channel, written to the channel's
//! outbox in the same transaction.

use super::RuntimeError;
use super::chat::{Chat, ChatReply, ContactRef, build_write, contact_of};
use crate::domain::engine::{self, Context, State, TimerKind};
use crate::store::conversations::STALE;
use crate::store::timers::TimerRow;
use crate::store::{Store, StoreError};
use chrono::Utc;

/// What a fired timer said to a contact, unprompted.
#[derive(Clone, Debug, PartialEq)]
pub struct ProactiveReply {
    /// Bot.
    pub bot_id: String,
    /// The contact it is for.
    pub contact: ContactRef,
    /// What was said (stored in the transcript already).
    pub reply: ChatReply,
}

/// How long a claimed timer is leased before another claimer may take it.
const TIMER_LEASE_MS: i64 = 60_000;
/// Most timers fired in one claim.
const TIMER_BATCH: usize = 100;

impl Chat {
    /// Fires the timers due at `now_ms` (at most `limit`): each runs the
    /// engine for its conversation under the contact's lock and commits like
    /// a chat turn (transcript, events, new timers). Returns what was said,
    /// for the caller to send where the contact is (see [`Chat::run_timers`]).
    pub async fn fire_due_timers(
        &self,
        store: &Store,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<ProactiveReply>, RuntimeError> {
        let due = store
            .claim_due_timers(now_ms, limit, TIMER_LEASE_MS)
            .await?;
        let mut out = Vec::new();
        for timer in due {
            let kind = TimerKind::parse(&timer.kind).map_or("unknown", |k| k.as_str());
            crate::telemetry::timer_due(&timer.bot_id, kind);
            match self.fire(store, &timer, now_ms).await {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(e) => {
                    // The lease runs out and the timer is tried again.
                    tracing::warn!(timer = %timer.id, conversation = %timer.conversation_id, error = %e, "timer failed");
                }
            }
        }
        Ok(out)
    }

    /// Fires due timers every `tick` until the process stops.
    pub async fn run_timers(self, store: Store, tick: std::time::Duration) {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            loop {
                match self
                    .fire_due_timers(&store, crate::store::now_ms(), TIMER_BATCH)
                    .await
                {
                    Ok(said) => {
                        for p in &said {
                            tracing::debug!(bot = %p.bot_id, conversation = %p.reply.conversation_id, replies = p.reply.replies.len(), "timer replied");
                        }
                        if said.len() < TIMER_BATCH {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "claiming timers failed");
                        break;
                    }
                }
            }
        }
    }

    async fn fire(
        &self,
        store: &Store,
        timer: &TimerRow,
        now_ms: i64,
    ) -> Result<Option<ProactiveReply>, RuntimeError> {
        let Some((conv, contact_row)) = store
            .conversation_with_contact(&timer.conversation_id)
            .await?
        else {
            store.drop_timer(&timer.id).await?;
            return Ok(None);
        };
        let (Some(kind), Some(contact_ref)) = (
            TimerKind::parse(&timer.kind),
            ContactRef::of_row(&contact_row),
        ) else {
            store.drop_timer(&timer.id).await?;
            return Ok(None);
        };
        let key = format!(
            "{}/{}/{}",
            timer.account_id,
            timer.bot_id,
            contact_ref.key()
        );
        let lock = {
            let mut locks = self.locks.lock().expect("locks");
            locks.entry(key.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        // Read again under the lock: a message may have moved it on.
        let (conv, contact_row) = match store.conversation_with_contact(&conv.id).await? {
            Some(x) => x,
            None => return Ok(None),
        };
        if conv.status == "completed" {
            store.drop_timer(&timer.id).await?;
            return Ok(None);
        }
        let def = self
            .definitions
            .load(store, &timer.account_id, &timer.bot_id)
            .await?;
        let state = serde_json::from_str::<State>(&conv.state).unwrap_or_default();
        let contact = contact_of(&contact_row);
        let now = chrono::DateTime::<Utc>::from_timestamp_millis(now_ms).unwrap_or_else(Utc::now);
        let ctx = Context {
            conversation_id: &conv.id,
            contact: &contact,
            now,
            price_table: def.settings.price_table.as_ref(),
            calendar: def.settings.calendar.as_ref(),
            free_slots: &[],
            taken_slot: None,
            channel: contact_ref.channel(),
        };
        let turn = engine::on_timer(&def.flow, &state, &ctx, kind, timer.node.as_deref());
        if let Some(at) = turn.rearm_expiry {
            // The conversation was active since this expiry was set.
            store.rearm_timer(&timer.id, at.timestamp_millis()).await?;
            return Ok(None);
        }
        let mut write = build_write(
            &timer.account_id,
            &timer.bot_id,
            &def,
            &contact_row,
            false,
            &contact,
            &conv.id,
            conv.created_at,
            Some(conv.revision),
            None,
            &turn,
            Vec::new(),
            // A timer's events name the conversation's channel.
            &conv.channel,
        );
        write.timers.fired = Some(timer.id.clone());
        // On a messaging channel what the timer says goes out through the
        // channel's outbox, in the same transaction.
        let texts = super::inbound::texts_with_media(&turn.replies, &turn.media);
        write.channel = self
            .channel_send(store, &conv, &contact_row, &texts, &turn)
            .await?;
        let event_ids = write.events.iter().map(|e| e.id.clone()).collect();
        match store.commit_turn(write).await {
            Ok(_) => crate::telemetry::timer_fired(&timer.bot_id, kind.as_str()),
            Err(StoreError::Conflict(m)) if m == STALE => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        self.sessions.lock().expect("sessions").remove(&key);
        if turn.replies.is_empty() && turn.events.is_empty() {
            return Ok(None);
        }
        Ok(Some(ProactiveReply {
            bot_id: timer.bot_id.clone(),
            contact: contact_ref,
            reply: ChatReply {
                conversation_id: conv.id.clone(),
                replies: turn.replies,
                media: turn.media,
                quick_replies: turn.quick_replies,
                ended: turn.ended,
                event_ids,
            },
        }))
    }
}
