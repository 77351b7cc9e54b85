//! Sending from the outbox: claiming the first due message of each lane,
//! settling sends left in doubt by a stopped process as failed, marking
//! messages sending just before the platform is called, and recording each
//! attempt's outcome with the message's new state and its event.

use super::*;
use crate::channels::{DeliveryStatus, Outgoing};
use crate::domain::ids::new_id;
use crate::store::deliveries::{DeliveryTicket, Lease};
use crate::store::{Conn, Result, Row, Store, Value, now_ms};
use std::sync::Arc;

/// One send attempt, as recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelAttemptRow {
    /// `catt_…`
    pub id: String,
    /// Unix ms.
    pub started_at: i64,
    /// How long it took.
    pub duration_ms: i64,
    /// HTTP status, when an answer came.
    pub status: Option<i64>,
    /// The first 16 KiB of the answer.
    pub response_body: String,
    /// `timeout`, `connect`, `dns`, `blocked`, `tls`, `status`, `invalid`,
    /// `window`, `interrupted`; `None` on success.
    pub error_kind: Option<String>,
    /// The failure in words (the platform's, when it said).
    pub error_message: Option<String>,
    /// The node that made it.
    pub node: Option<String>,
}

/// What an outbox message becomes after an attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum MessageNext {
    /// Accepted by the platform, with its id of the message.
    Sent(Option<String>),
    /// Try again at this time (Unix ms).
    RetryAt(i64),
    /// Refused for good.
    Failed,
    /// Not attempted: release the lease and keep the state (its lane
    /// stopped behind a message that must be retried first).
    Held,
}

/// The result of one attempt, ready to be recorded.
#[derive(Clone, Debug)]
pub struct MessageOutcome {
    /// The message.
    pub ticket: OutboxTicket,
    /// The attempt, unless held.
    pub attempt: Option<ChannelAttemptRow>,
    /// What it becomes.
    pub next: MessageNext,
}

/// Settles up to `limit` messages whose send was interrupted (marked
/// sending by another node, lease run out) as failed with [`INTERRUPTED`]:
/// never sent again, since the platform may have taken them. `claimer`'s
/// own sends are never in doubt to it (they are in its memory, however
/// slow). Writes an attempt and the `message.failed` event of each;
/// answers the events' deliveries.
fn settle_in_doubt(
    c: &mut dyn Conn,
    now: i64,
    limit: usize,
    claimer: &Lease,
    lease: Option<&Lease>,
) -> Result<Vec<DeliveryTicket>> {
    let rows = c.query(
        "SELECT m.id, m.channel_id, m.sending_at, ch.account_id, ch.bot_id, ch.kind, m.locked_by
         FROM channel_messages m JOIN channels ch ON ch.id = m.channel_id
         WHERE m.sending_at IS NOT NULL AND m.locked_until < $1
           AND m.status IN ('pending', 'retrying')
           AND (m.locked_by IS NULL OR m.locked_by <> $3)
         ORDER BY m.locked_until LIMIT $2",
        &[
            now.into(),
            (limit as i64).into(),
            claimer.node.to_string().into(),
        ],
    )?;
    let mut tickets = Vec::new();
    let mut settled = 0;
    for r in rows {
        let (id, channel_id, started_at) = (r.text(0)?, r.text(1)?, r.int(2)?);
        let (account_id, bot_id, kind) = (r.text(3)?, r.text(4)?, r.text(5)?);
        let n = c.execute(
            "UPDATE channel_messages SET status = 'failed', attempts = attempts + 1, sending_at = NULL,
                    next_attempt_at = NULL, locked_until = NULL, locked_by = NULL,
                    last_error = $1, updated_at = $2
             WHERE id = $3 AND status IN ('pending', 'retrying') AND sending_at IS NOT NULL",
            &[INTERRUPTED.into(), now.into(), (&id).into()],
        )?;
        if n == 0 {
            continue;
        }
        settled += 1;
        c.execute(
            "INSERT INTO channel_attempts (id, message_id, channel_id, account_id, started_at,
                 duration_ms, status, response_body, error_kind, error_message, node)
             VALUES ($1, $2, $3, $4, $5, $6, NULL, '', 'interrupted', $7, $8)",
            &[
                new_id("catt").into(),
                (&id).into(),
                (&channel_id).into(),
                (&account_id).into(),
                started_at.into(),
                (now - started_at).max(0).into(),
                INTERRUPTED.into(),
                r.opt_text(6)?.into(),
            ],
        )?;
        c.execute(
            "UPDATE channels SET last_outbound_at = $1, last_outbound_error = $2 WHERE id = $3",
            &[now.into(), INTERRUPTED.into(), (&channel_id).into()],
        )?;
        tickets.extend(status_event(
            c,
            &account_id,
            &bot_id,
            &kind,
            &channel_id,
            &id,
            DeliveryStatus::Failed,
            Some(INTERRUPTED),
            lease,
        )?);
    }
    if settled > 0 {
        tracing::warn!(
            messages = settled,
            "channel sends interrupted by a stopped process settled as failed"
        );
    }
    Ok(tickets)
}

impl Store {
    /// Leases due outbox messages that are first in their lane, at most
    /// `limit`, and returns them as tickets.
    pub async fn claim_outbox(
        &self,
        now: i64,
        lease: Lease,
        limit: usize,
    ) -> Result<Vec<OutboxTicket>> {
        let skip = self.backend.skip_locked();
        let delivery_lease = self.delivery_lease();
        let (tickets, deliveries) = self.write(move |c| {
            let deliveries = settle_in_doubt(c, now, limit, &lease, delivery_lease.as_ref())?;
            let ids = c.query(
                &format!(
                    "UPDATE channel_messages SET locked_until = $1, locked_by = $2
                     WHERE id IN (
                        SELECT m.id FROM channel_messages m
                        WHERE m.status IN ('pending', 'retrying') AND m.next_attempt_at <= $3
                          AND (m.locked_until IS NULL OR m.locked_until < $3)
                          AND m.sending_at IS NULL
                          AND NOT EXISTS (SELECT 1 FROM channel_messages p
                                          WHERE p.lane = m.lane AND p.id < m.id
                                            AND p.status IN ('pending', 'retrying'))
                        ORDER BY m.next_attempt_at LIMIT $4 {skip})
                     RETURNING id"
                ),
                &[
                    (now + lease.ms).into(),
                    lease.node.to_string().into(),
                    now.into(),
                    (limit as i64).into(),
                ],
            )?;
            let mut tickets = Vec::with_capacity(ids.len());
            for r in ids {
                let id = r.text(0)?;
                let row = c.query_one(
                    &format!(
                        "SELECT m.lane, m.conversation_id, m.contact_id, m.recipient, m.op, m.body, m.attempts,
                                cc.last_inbound_at, m.trace_id, {}
                         FROM channel_messages m
                         JOIN channels ch ON ch.id = m.channel_id
                         LEFT JOIN channel_contacts cc ON cc.channel_id = m.channel_id AND cc.user_id = m.recipient
                         WHERE m.id = $1",
                        CH_COLUMNS
                            .split(", ")
                            .map(|c| format!("ch.{c}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    &[(&id).into()],
                )?;
                let channel = channel_from(&Row(row.0[9..].to_vec()))?;
                tickets.push(OutboxTicket {
                    id,
                    lane: row.text(0)?,
                    conversation_id: row.opt_text(1)?,
                    contact_id: row.opt_text(2)?,
                    recipient: row.text(3)?,
                    outgoing: Outgoing {
                        op: row.text(4)?,
                        body: row.json(5)?,
                    },
                    attempts: u32::try_from(row.int(6)?).unwrap_or(u32::MAX),
                    last_inbound_at: row.opt_int(7)?,
                    trace_id: row.opt_text(8)?,
                    channel: Arc::new(channel),
                });
            }
            tickets.sort_by(|a, b| a.id.cmp(&b.id));
            Ok((tickets, deliveries))
        })
        .await?;
        self.hand_over(deliveries);
        Ok(tickets)
    }

    /// Marks the messages about to be sent as sending, in one write, and
    /// extends their lease; answers the ids marked: only rows still leased
    /// to `lease`'s node and unsettled. Only those may be sent.
    pub async fn mark_sending(&self, ids: Vec<String>, lease: Lease) -> Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(ids);
        }
        self.write(move |c| {
            let now = now_ms();
            let node = lease.node.to_string();
            let mut marked = Vec::with_capacity(ids.len());
            for id in ids {
                let n = c.execute(
                    "UPDATE channel_messages SET sending_at = $1, locked_until = $2
                     WHERE id = $3 AND locked_by = $4 AND status IN ('pending', 'retrying')
                       AND sending_at IS NULL",
                    &[
                        now.into(),
                        (now + lease.ms).into(),
                        (&id).into(),
                        (&node).into(),
                    ],
                )?;
                if n == 1 {
                    marked.push(id);
                }
            }
            Ok(marked)
        })
        .await
    }

    /// Writes a batch of send outcomes in one transaction: attempts, the
    /// messages' new states, the channels' last outbound time and error, and
    /// `message.sent` / `message.failed` events.
    pub async fn record_message_outcomes(&self, outcomes: Vec<MessageOutcome>) -> Result<()> {
        let lease = self.delivery_lease();
        let tickets = self
            .write(move |c| {
                let now = now_ms();
                let mut tickets = Vec::new();
                for o in &outcomes {
                    let t = &o.ticket;
                    let error = o.attempt.as_ref().and_then(|a| a.error_message.clone());
                    let updated = match &o.next {
                        MessageNext::Held => c.execute(
                            "UPDATE channel_messages SET locked_until = NULL, locked_by = NULL, sending_at = NULL WHERE id = $1",
                            &[(&t.id).into()],
                        )?,
                        MessageNext::Sent(pid) => c.execute(
                            "UPDATE channel_messages SET status = 'sent', attempts = attempts + 1, sending_at = NULL,
                                    platform_message_id = $1, next_attempt_at = NULL, locked_until = NULL,
                                    locked_by = NULL, updated_at = $2
                             WHERE id = $3 AND status IN ('pending', 'retrying')",
                            &[pid.as_deref().into(), now.into(), (&t.id).into()],
                        )?,
                        MessageNext::RetryAt(at) => c.execute(
                            "UPDATE channel_messages SET status = 'retrying', attempts = attempts + 1, sending_at = NULL,
                                    next_attempt_at = $1, locked_until = NULL, locked_by = NULL,
                                    last_error = $2, updated_at = $3
                             WHERE id = $4 AND status IN ('pending', 'retrying')",
                            &[(*at).into(), error.as_deref().into(), now.into(), (&t.id).into()],
                        )?,
                        MessageNext::Failed => c.execute(
                            "UPDATE channel_messages SET status = 'failed', attempts = attempts + 1, sending_at = NULL,
                                    next_attempt_at = NULL, locked_until = NULL, locked_by = NULL,
                                    last_error = $1, updated_at = $2
                             WHERE id = $3 AND status IN ('pending', 'retrying')",
                            &[error.as_deref().into(), now.into(), (&t.id).into()],
                        )?,
                    };
                    let Some(a) = &o.attempt else { continue };
                    if updated == 0 {
                        // Gone (its channel was deleted) or already settled.
                        continue;
                    }
                    c.execute(
                        "INSERT INTO channel_attempts (id, message_id, channel_id, account_id, started_at,
                             duration_ms, status, response_body, error_kind, error_message, node)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                        &[
                            (&a.id).into(),
                            (&t.id).into(),
                            (&t.channel.id).into(),
                            (&t.channel.account_id).into(),
                            a.started_at.into(),
                            a.duration_ms.into(),
                            a.status.into(),
                            (&a.response_body).into(),
                            a.error_kind.as_deref().into(),
                            a.error_message.as_deref().into(),
                            a.node.as_deref().into(),
                        ],
                    )?;
                    let ok = matches!(o.next, MessageNext::Sent(_));
                    c.execute(
                        "UPDATE channels SET last_outbound_at = $1,
                                last_outbound_error = CASE WHEN $2 THEN NULL ELSE $3 END
                         WHERE id = $4",
                        &[
                            now.into(),
                            Value::Bool(ok),
                            error.as_deref().into(),
                            (&t.channel.id).into(),
                        ],
                    )?;
                    let status = match &o.next {
                        MessageNext::Sent(_) => Some(DeliveryStatus::Sent),
                        MessageNext::Failed => Some(DeliveryStatus::Failed),
                        _ => None,
                    };
                    if let Some(status) = status {
                        tickets.extend(status_event(
                            c,
                            &t.channel.account_id,
                            &t.channel.bot_id,
                            t.channel.kind().as_str(),
                            &t.channel.id,
                            &t.id,
                            status,
                            error.as_deref(),
                            lease.as_ref(),
                        )?);
                    }
                }
                Ok(tickets)
            })
            .await?;
        self.hand_over(tickets);
        Ok(())
    }
}
