//! Campaign broadcasts: each recipient's conversation (re)started at a
//! campaign of the bot's flow, as an unprompted turn.
//!
//! A recipient is a turn of its own, run like a chat turn: under the
//! contact's lock, on the conversation read from the database, committed
//! only if it is still at the revision read (else read again and retried).
//! The turn's replies go to the channel's outbox, addressed where the
//! contact last wrote, and the recipient row is marked sent, all in the
//! turn's transaction; a recipient another node marked first makes the
//! commit fail and nothing of the turn is written. A recipient the rules
//! skip ([`decide_campaign`]) is marked skipped with its reason.

use super::RuntimeError;
use super::chat::{Chat, ContactRef, build_write, contact_of, merge_turns};
use crate::channels::{ChannelKind, Reply};
use crate::delivery::http::OutboundClient;
use crate::domain::broadcast::{Address, SkipReason, decide_campaign};
use crate::domain::engine::{self, CampaignError, Context, State, campaign_blocked};
use crate::domain::ids::new_id;
use crate::store::broadcasts::{BroadcastRow, CampaignRecipient, RECIPIENT_HANDLED, RecipientMark};
use crate::store::channels::{ChannelTurnWrite, OutboxWrite};
use crate::store::conversations::{STALE, TurnCommit};
use crate::store::{Store, StoreError};
use chrono::Utc;

/// How many times a recipient's turn is retried when its conversation
/// moved on.
const RETRIES: usize = 8;
/// Most story-webhook calls a campaign's start may cause.
const MAX_CALLS: usize = 5;

/// What became of one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CampaignOutcome {
    /// Its campaign started; its replies are in the outbox.
    Sent,
    /// Skipped, for this reason.
    Skipped(SkipReason),
    /// Another node (or an earlier attempt) handled it.
    AlreadyHandled,
}

impl Chat {
    /// Starts broadcast `b`'s campaign for one of its recipients, or skips
    /// it, at `now` (Unix ms).
    pub async fn campaign_recipient(
        &self,
        store: &Store,
        client: &OutboundClient,
        b: &BroadcastRow,
        r: CampaignRecipient,
        now: i64,
    ) -> Result<CampaignOutcome, RuntimeError> {
        let skip = |reason: SkipReason| async move {
            let pending = store
                .skip_broadcast_recipient(&b.id, &r.contact_id, reason.as_str())
                .await?;
            Ok::<_, RuntimeError>(if pending {
                CampaignOutcome::Skipped(reason)
            } else {
                CampaignOutcome::AlreadyHandled
            })
        };
        let Some((contact_row, facts)) = r.found.clone() else {
            return skip(SkipReason::NoChannel).await;
        };
        let address = r.reach.as_ref().map(|(ch, _, at)| Address {
            whatsapp: ch.kind() == ChannelKind::Whatsapp,
            last_inbound_at: *at,
        });
        if let Err(reason) = decide_campaign(&facts, address.as_ref(), false, now) {
            return skip(reason).await;
        }
        let (Some(reach), Some(contact_ref)) = (r.reach.clone(), ContactRef::of_row(&contact_row))
        else {
            return skip(SkipReason::NoChannel).await;
        };
        let key = format!("{}/{}/{}", b.account_id, b.bot_id, contact_ref.key());
        let lock = {
            let mut locks = self.locks.lock().expect("locks");
            locks.entry(key.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        // This process's cached session would be one revision behind.
        self.sessions.lock().expect("sessions").remove(&key);
        for _ in 0..RETRIES {
            match self
                .try_campaign(store, client, b, &contact_row, &reach)
                .await
            {
                Err(RuntimeError::Store(StoreError::Conflict(m))) if m == STALE => continue,
                Err(RuntimeError::Store(StoreError::Conflict(m))) if m == RECIPIENT_HANDLED => {
                    return Ok(CampaignOutcome::AlreadyHandled);
                }
                Ok(Some(outcome)) => return Ok(outcome),
                Ok(None) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(RuntimeError::Store(StoreError::Unavailable(
            "the conversation kept changing; try again".into(),
        )))
    }

    /// Marks the recipient skipped for `reason`.
    async fn skip(
        &self,
        store: &Store,
        b: &BroadcastRow,
        contact_id: &str,
        reason: SkipReason,
    ) -> Result<Option<CampaignOutcome>, RuntimeError> {
        let pending = store
            .skip_broadcast_recipient(&b.id, contact_id, reason.as_str())
            .await?;
        Ok(Some(if pending {
            CampaignOutcome::Skipped(reason)
        } else {
            CampaignOutcome::AlreadyHandled
        }))
    }

    /// One try; `None` when a booked slot was just taken (try again).
    async fn try_campaign(
        &self,
        store: &Store,
        client: &OutboundClient,
        b: &BroadcastRow,
        contact_row: &crate::store::conversations::ContactRow,
        reach: &crate::store::broadcasts::Reach,
    ) -> Result<Option<CampaignOutcome>, RuntimeError> {
        let campaign = b.message.campaign.as_deref().unwrap_or_default();
        let (channel, user, last_inbound_at) = reach;
        let def = match self.definitions.load(store, &b.account_id, &b.bot_id).await {
            Ok(def) => def,
            // The bot lost its flow since: there is no campaign to start.
            Err(RuntimeError::NotReady(_)) => {
                return self
                    .skip(store, b, &contact_row.id, SkipReason::NoCampaign)
                    .await;
            }
            Err(e) => return Err(e),
        };
        let active = store.active_conversation(&contact_row.id).await?;
        let state = active
            .as_ref()
            .map(|c| serde_json::from_str::<State>(&c.state).unwrap_or_default());
        if state.as_ref().is_some_and(campaign_blocked) {
            return self
                .skip(store, b, &contact_row.id, SkipReason::InHandoff)
                .await;
        }
        let (conversation_id, expected_revision, created_at, conv_channel) = match &active {
            Some(c) => (
                c.id.clone(),
                Some(c.revision),
                c.created_at,
                c.channel.clone(),
            ),
            None => (
                new_id("cnv"),
                None,
                crate::store::now_ms(),
                channel.kind().as_str().to_owned(),
            ),
        };
        let contact = contact_of(contact_row);
        let ctx = Context {
            conversation_id: &conversation_id,
            contact: &contact,
            now: Utc::now(),
            price_table: def.settings.price_table.as_ref(),
            calendar: def.settings.calendar.as_ref(),
            free_slots: &[],
            taken_slot: None,
            channel: &conv_channel,
        };
        let mut turn = match engine::start_campaign(&def.flow, state.as_ref(), &ctx, campaign) {
            Ok(t) => t,
            Err(CampaignError::InHandoff) => return Ok(None),
            Err(CampaignError::Unknown(_)) => {
                return self
                    .skip(store, b, &contact_row.id, SkipReason::NoCampaign)
                    .await;
            }
        };
        let mut calls = Vec::new();
        let mut made = 0;
        while let Some(name) = turn.call_webhook.clone() {
            let outcome = if made >= MAX_CALLS {
                Err(format!(
                    "more than {MAX_CALLS} story webhook calls in one campaign start"
                ))
            } else {
                made += 1;
                self.call_story(
                    client,
                    &def,
                    &name,
                    &turn,
                    &contact,
                    &conversation_id,
                    &mut calls,
                )
                .await
            };
            let resumed = engine::resume_after_webhook(&def.flow, &turn.state, &ctx, outcome);
            turn = merge_turns(turn, resumed);
        }
        turn.replies = engine::cap_replies(std::mem::take(&mut turn.replies), &mut turn.cut);
        let mut write = build_write(
            &b.account_id,
            &b.bot_id,
            &def,
            contact_row,
            false,
            &contact,
            &conversation_id,
            created_at,
            expected_revision,
            None,
            &turn,
            calls,
            &conv_channel,
        );
        let texts = super::inbound::texts_with_media(&turn.replies, &turn.media);
        let reply = Reply {
            texts: &texts,
            options: &turn.quick_replies,
        };
        let outbox: Vec<OutboxWrite> = channel
            .config
            .render(user, &reply)
            .into_iter()
            .map(|outgoing| OutboxWrite {
                id: new_id("out"),
                lane: conversation_id.clone(),
                conversation_id: Some(conversation_id.clone()),
                contact_id: Some(contact_row.id.clone()),
                recipient: user.clone(),
                outgoing,
            })
            .collect();
        write.broadcast = Some(RecipientMark {
            broadcast_id: b.id.clone(),
            contact_id: contact_row.id.clone(),
            message_id: outbox.first().map(|m| m.id.clone()),
        });
        write.channel = Some(ChannelTurnWrite {
            channel: channel.clone(),
            inbound_id: None,
            user: user.clone(),
            phone: contact_row.phone.clone(),
            name: None,
            received_at: last_inbound_at.unwrap_or_else(crate::store::now_ms),
            outbox,
        });
        match store.commit_turn(write).await? {
            TurnCommit::Committed(_) => Ok(Some(CampaignOutcome::Sent)),
            TurnCommit::SlotTaken => Ok(None),
        }
    }
}
