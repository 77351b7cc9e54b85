//! The outbox: replies written with their turn, leased to the sender of the
//! node that wrote them, claimed lane by lane, marked before each send and
//! settled by the recorded outcome (or as interrupted, if in doubt).

use super::*;
use crate::channels::{DeliveryStatus, Outgoing};
use crate::store::deliveries::{DeliveryTicket, Lease};
use crate::store::{Conn, Page, PageRequest, Result, Row, Store, Value, now_ms};
use std::sync::Arc;

/// One outbox message to write with a turn (or on its own, a test send).
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxWrite {
    /// `out_…`, in the order the messages must go.
    pub id: String,
    /// What orders it: the conversation, or for a message outside one the
    /// channel and recipient.
    pub lane: String,
    /// The conversation, when there is one.
    pub conversation_id: Option<String>,
    /// The contact, when known.
    pub contact_id: Option<String>,
    /// Who it goes to, in the platform's terms.
    pub recipient: String,
    /// The platform request.
    pub outgoing: Outgoing,
}

/// Why a message whose send was interrupted (its process stopped between
/// marking it and recording the platform's answer) failed.
pub const INTERRUPTED: &str =
    "interrupted: the process stopped during the send; it may or may not have reached the platform";

/// One outbox message ready to send: everything the sender needs.
#[derive(Clone, Debug)]
pub struct OutboxTicket {
    /// `out_…`
    pub id: String,
    /// The channel as it was when the ticket was made.
    pub channel: Arc<ChannelRow>,
    /// Its lane.
    pub lane: String,
    /// The conversation, when there is one.
    pub conversation_id: Option<String>,
    /// The contact, when known.
    pub contact_id: Option<String>,
    /// Who it goes to.
    pub recipient: String,
    /// The platform request.
    pub outgoing: Outgoing,
    /// Attempts already made.
    pub attempts: u32,
    /// When the recipient last wrote (for WhatsApp's 24-hour window).
    pub last_inbound_at: Option<i64>,
    /// The W3C trace id of what caused it (its send continues that trace).
    pub trace_id: Option<String>,
}

/// Where committed outbox messages go: the channel sender of this process.
pub trait OutboxSink: Send + Sync {
    /// The lease new messages are written under; `None` writes them
    /// unleased, for any sender's claim.
    fn lease(&self) -> Option<Lease>;
    /// Takes messages whose rows are durable.
    fn hand_over(&self, tickets: Vec<OutboxTicket>);
}

/// An outbox message as the API lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct MessageRow {
    /// `out_…`
    pub id: String,
    /// The channel.
    pub channel_id: String,
    /// The conversation, when there is one.
    pub conversation_id: Option<String>,
    /// Who it goes to.
    pub recipient: String,
    /// The platform operation.
    pub op: String,
    /// The platform request body, JSON.
    pub body: String,
    /// `pending`, `retrying`, `sent`, `delivered`, `read`, `failed`.
    pub status: String,
    /// The platform's id of it, once sent.
    pub platform_message_id: Option<String>,
    /// Attempts made.
    pub attempts: i64,
    /// The last failure.
    pub last_error: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

const MSG_COLUMNS: &str = "id, channel_id, conversation_id, recipient, op, body, status, platform_message_id, attempts, last_error, created_at, updated_at";

fn message_from(r: &Row) -> Result<MessageRow> {
    Ok(MessageRow {
        id: r.text(0)?,
        channel_id: r.text(1)?,
        conversation_id: r.opt_text(2)?,
        recipient: r.text(3)?,
        op: r.text(4)?,
        body: r.text(5)?,
        status: r.text(6)?,
        platform_message_id: r.opt_text(7)?,
        attempts: r.int(8)?,
        last_error: r.opt_text(9)?,
        created_at: r.int(10)?,
        updated_at: r.int(11)?,
    })
}

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

/// The lease a lane's new messages may be written under: `lease`, unless
/// an earlier message of the lane waits outside this node's sender (one to
/// retry, one handed back, one another node holds) — then the new ones must
/// wait behind it, on the claim path, so the lane keeps its order.
pub(in crate::store) fn lane_lease<'a>(
    c: &mut dyn Conn,
    lane: &str,
    lease: Option<&'a Lease>,
) -> Result<Option<&'a Lease>> {
    let Some(l) = lease else { return Ok(None) };
    let waiting = c.query_opt(
        "SELECT 1 FROM channel_messages
         WHERE lane = $1 AND status IN ('pending', 'retrying')
           AND (status = 'retrying' OR locked_by IS NULL OR locked_by <> $2)
         LIMIT 1",
        &[lane.into(), l.node.to_string().into()],
    )?;
    Ok(if waiting.is_some() { None } else { Some(l) })
}

/// Inserts outbox rows inside the caller's transaction, leased to `lease`
/// when given.
pub(in crate::store) fn insert_outbox(
    c: &mut dyn Conn,
    channel: &ChannelRow,
    rows: &[OutboxWrite],
    lease: Option<&Lease>,
    trace_id: Option<&str>,
) -> Result<()> {
    let now = now_ms();
    for m in rows {
        c.execute(
            "INSERT INTO channel_messages (id, account_id, bot_id, channel_id, lane, conversation_id,
                    contact_id, recipient, op, body, status, attempts, next_attempt_at, locked_until,
                    locked_by, created_at, updated_at, trace_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', 0, $11, $12, $13, $11, $11, $14)",
            &[
                (&m.id).into(),
                (&channel.account_id).into(),
                (&channel.bot_id).into(),
                (&channel.id).into(),
                (&m.lane).into(),
                m.conversation_id.as_deref().into(),
                m.contact_id.as_deref().into(),
                (&m.recipient).into(),
                (&m.outgoing.op).into(),
                m.outgoing.body.to_string().into(),
                now.into(),
                lease.map(|l| now + l.ms).into(),
                lease.map(|l| l.node.to_string()).into(),
                trace_id.into(),
            ],
        )?;
    }
    if lease.is_none() && !rows.is_empty() {
        c.notify_deliveries()?;
    }
    Ok(())
}

/// Writes what a turn that answers an inbound message adds: the inbound row
/// marked done (refusing the turn if it was already), the person's channel
/// contact, and the replies. Called inside the turn's transaction.
pub(in crate::store) fn write_channel_turn(
    c: &mut dyn Conn,
    w: &ChannelTurnWrite,
    contact_id: &str,
    lease: Option<&Lease>,
    trace_id: Option<&str>,
) -> Result<Vec<OutboxTicket>> {
    let now = now_ms();
    if let Some(inbound_id) = &w.inbound_id {
        mark_answered(c, w, inbound_id, contact_id, now)?;
    }
    let lease = match w.outbox.first() {
        Some(m) => lane_lease(c, &m.lane, lease)?,
        None => None,
    };
    insert_outbox(c, &w.channel, &w.outbox, lease, trace_id)?;
    if lease.is_none() {
        return Ok(Vec::new());
    }
    Ok(w.outbox
        .iter()
        .map(|m| OutboxTicket {
            id: m.id.clone(),
            channel: w.channel.clone(),
            lane: m.lane.clone(),
            conversation_id: m.conversation_id.clone(),
            contact_id: m.contact_id.clone(),
            recipient: m.recipient.clone(),
            outgoing: m.outgoing.clone(),
            attempts: 0,
            last_inbound_at: Some(w.received_at),
            trace_id: trace_id.map(str::to_owned),
        })
        .collect())
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

/// Filters for an outbox listing.
#[derive(Clone, Debug, Default)]
pub struct MessageFilter {
    /// Only this status.
    pub status: Option<String>,
    /// Only this conversation's.
    pub conversation_id: Option<String>,
}

impl Store {
    /// Connects (or with `None` disconnects) this process's channel sender.
    pub fn set_outbox_sink(&self, sink: Option<Arc<dyn OutboxSink>>) {
        *self.outbox_sink.write().expect("sink lock") = sink;
    }

    fn outbox_sink(&self) -> Option<Arc<dyn OutboxSink>> {
        self.outbox_sink.read().expect("sink lock").clone()
    }

    pub(in crate::store) fn outbox_lease(&self) -> Option<Lease> {
        self.outbox_sink().and_then(|s| s.lease())
    }

    pub(in crate::store) fn hand_over_messages(&self, tickets: Vec<OutboxTicket>) {
        if tickets.is_empty() {
            return;
        }
        if let Some(sink) = self.outbox_sink() {
            sink.hand_over(tickets);
        }
    }

    /// Writes outbox messages outside a turn (a test send) and hands them to
    /// this process's sender.
    pub async fn enqueue_messages(
        &self,
        channel: Arc<ChannelRow>,
        rows: Vec<OutboxWrite>,
        last_inbound_at: Option<i64>,
    ) -> Result<()> {
        let lease = self.outbox_lease();
        let ch = channel.clone();
        let r = rows.clone();
        let trace = crate::trace::current().map(|t| t.as_str().to_owned());
        let trace_for_tickets = trace.clone();
        let leased = self
            .write(move |c| {
                let lease = match r.first() {
                    Some(m) => lane_lease(c, &m.lane, lease.as_ref())?,
                    None => None,
                };
                insert_outbox(c, &ch, &r, lease, trace.as_deref())?;
                Ok(lease.is_some())
            })
            .await?;
        if leased {
            self.hand_over_messages(
                rows.into_iter()
                    .map(|m| OutboxTicket {
                        id: m.id,
                        channel: channel.clone(),
                        lane: m.lane,
                        conversation_id: m.conversation_id,
                        contact_id: m.contact_id,
                        recipient: m.recipient,
                        outgoing: m.outgoing,
                        attempts: 0,
                        last_inbound_at,
                        trace_id: trace_for_tickets.clone(),
                    })
                    .collect(),
            );
        }
        Ok(())
    }

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

    /// A channel's outbox, newest first.
    pub async fn list_channel_messages(
        &self,
        channel_id: &str,
        filter: MessageFilter,
        page: PageRequest,
    ) -> Result<Page<MessageRow>> {
        let sql = format!(
            "SELECT {MSG_COLUMNS} FROM channel_messages
             WHERE channel_id = $1
               AND (CAST($2 AS TEXT) IS NULL OR status = $2)
               AND (CAST($3 AS TEXT) IS NULL OR conversation_id = $3)
               AND (CAST($4 AS TEXT) IS NULL OR id < $4)
             ORDER BY id DESC LIMIT $5"
        );
        let params = vec![
            channel_id.into(),
            filter.status.into(),
            filter.conversation_id.into(),
            page.after.clone().into(),
        ];
        self.read_page(sql, params, page, message_from, |m| m.id.clone())
            .await
    }

    /// The attempts of one outbox message of a channel, newest first (at
    /// most 100: a message gets fewer than the retry schedule has delays).
    pub async fn list_message_attempts(
        &self,
        channel_id: &str,
        message_id: &str,
    ) -> Result<Vec<ChannelAttemptRow>> {
        let (ch, id) = (channel_id.to_owned(), message_id.to_owned());
        self.read(move |c| {
            c.query(
                "SELECT id, started_at, duration_ms, status, response_body, error_kind, error_message, node
                 FROM channel_attempts WHERE channel_id = $1 AND message_id = $2 ORDER BY id DESC LIMIT 100",
                &[ch.into(), id.into()],
            )?
            .iter()
            .map(|r| {
                Ok(ChannelAttemptRow {
                    id: r.text(0)?,
                    started_at: r.int(1)?,
                    duration_ms: r.int(2)?,
                    status: r.opt_int(3)?,
                    response_body: r.text(4)?,
                    error_kind: r.opt_text(5)?,
                    error_message: r.opt_text(6)?,
                    node: r.opt_text(7)?,
                })
            })
            .collect()
        })
        .await
    }
}
