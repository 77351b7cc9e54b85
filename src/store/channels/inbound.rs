//! Inbound messages: a webhook's messages and delivery statuses stored
//! before the platform is answered, claimed by the node that processes them,
//! and marked done by the chat turn they cause.

use super::*;
use crate::channels::{DeliveryStatus, InboundMessage, StatusTarget, StatusUpdate};
use crate::store::deliveries::{DeliveryTicket, Lease};
use crate::store::events::{EventRow, insert_event};
use crate::store::{Conn, Result, Row, Store, StoreError, now_ms};
use serde_json::json;
use std::sync::Arc;

/// A message received, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct InboundRow {
    /// `in_…`
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// The channel's bot.
    pub bot_id: String,
    /// The channel.
    pub channel_id: String,
    /// The message, normalised.
    pub message: InboundMessage,
    /// Unix ms.
    pub received_at: i64,
    /// The W3C trace id of the request that brought it.
    pub trace_id: Option<String>,
}

const IN_COLUMNS: &str = "id, account_id, bot_id, channel_id, message, received_at, trace_id";

fn inbound_from(r: &Row) -> Result<InboundRow> {
    Ok(InboundRow {
        id: r.text(0)?,
        account_id: r.text(1)?,
        bot_id: r.text(2)?,
        channel_id: r.text(3)?,
        message: r.json(4)?,
        received_at: r.int(5)?,
        trace_id: r.opt_text(6)?,
    })
}

/// What a chat turn that answers an inbound message writes besides the
/// turn itself.
#[derive(Clone, Debug)]
pub struct ChannelTurnWrite {
    /// The channel.
    pub channel: Arc<ChannelRow>,
    /// The inbound row the turn answers: marked done with the turn; the
    /// turn is refused (`Conflict`) if it was already. `None` for what is
    /// sent unprompted (a person's answer in handoff, a release's replies):
    /// then neither the row nor the channel contact is touched.
    pub inbound_id: Option<String>,
    /// The person, in the platform's terms.
    pub user: String,
    /// Their phone, when the platform gives one.
    pub phone: Option<String>,
    /// Their profile name.
    pub name: Option<String>,
    /// When their message arrived (Unix ms).
    pub received_at: i64,
    /// The replies to send, in order.
    pub outbox: Vec<OutboxWrite>,
}

/// The `Conflict` message when an inbound message was processed already.
pub const ALREADY_PROCESSED: &str = "this inbound message was processed already";

/// Where committed inbound messages go: this process's processor.
pub trait InboundSink: Send + Sync {
    /// The lease new rows are written under (`None`: unleased).
    fn lease(&self) -> Option<Lease>;
    /// Takes rows whose writes are durable.
    fn hand_over(&self, rows: Vec<InboundRow>);
}

/// The outbox's order of statuses: a report moves a message forward only.
fn rank(status: &str) -> i64 {
    match status {
        "sent" => 1,
        "delivered" => 2,
        "read" => 3,
        "failed" => 4,
        _ => 0,
    }
}

fn event_type(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Sent => "message.sent",
        DeliveryStatus::Delivered => "message.delivered",
        DeliveryStatus::Read => "message.read",
        DeliveryStatus::Failed => "message.failed",
    }
}

/// Writes the `message.*` event of an outbox message's new status, with one
/// delivery per endpoint that wants it.
#[allow(clippy::too_many_arguments)]
pub(super) fn status_event(
    c: &mut dyn Conn,
    account_id: &str,
    bot_id: &str,
    kind: &str,
    channel_id: &str,
    message_id: &str,
    status: DeliveryStatus,
    error: Option<&str>,
    lease: Option<&Lease>,
) -> Result<Vec<DeliveryTicket>> {
    let row = c.query_one(
        "SELECT m.conversation_id, m.contact_id, m.platform_message_id, m.recipient,
                ct.phone, ct.external_id
         FROM channel_messages m LEFT JOIN contacts ct ON ct.id = m.contact_id
         WHERE m.id = $1",
        &[message_id.into()],
    )?;
    let conversation_id = row.opt_text(0)?;
    let mut data = json!({
        "message_id": message_id,
        "conversation_id": conversation_id,
        "channel": kind,
        "channel_id": channel_id,
        "contact": {
            "id": row.opt_text(1)?,
            "phone": row.opt_text(4)?,
            "external_id": row.opt_text(5)?,
        },
        "recipient": row.text(3)?,
        "platform_message_id": row.opt_text(2)?,
        "status": status.as_str(),
    });
    if let Some(e) = error {
        data["error"] = json!(e);
    }
    let event = EventRow::new(
        account_id,
        bot_id,
        event_type(status),
        conversation_id.as_deref(),
        data.to_string(),
    );
    insert_event(c, &event, None, lease)
}

/// Marks the inbound row a turn answers done (refusing the turn if it was
/// already) and records the person's channel contact.
pub(super) fn mark_answered(
    c: &mut dyn Conn,
    w: &ChannelTurnWrite,
    inbound_id: &str,
    contact_id: &str,
    now: i64,
) -> Result<()> {
    let n = c.execute(
        "UPDATE channel_inbound SET status = 'done', processed_at = $1, locked_until = NULL,
                locked_by = NULL, error = NULL
         WHERE id = $2 AND status = 'pending'",
        &[now.into(), inbound_id.into()],
    )?;
    if n == 0 {
        return Err(StoreError::Conflict(ALREADY_PROCESSED.into()));
    }
    c.execute(
        "INSERT INTO channel_contacts (channel_id, user_id, contact_id, phone, name, last_inbound_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (channel_id, user_id) DO UPDATE SET contact_id = $3,
             phone = COALESCE($4, channel_contacts.phone), name = COALESCE($5, channel_contacts.name),
             last_inbound_at = CASE WHEN channel_contacts.last_inbound_at > $6
                                    THEN channel_contacts.last_inbound_at ELSE $6 END",
        &[
            (&w.channel.id).into(),
            (&w.user).into(),
            contact_id.into(),
            w.phone.as_deref().into(),
            w.name.as_deref().into(),
            w.received_at.into(),
        ],
    )?;
    Ok(())
}

/// Applies delivery statuses inside the caller's transaction; answers the
/// deliveries of the events they wrote.
fn apply_statuses(
    c: &mut dyn Conn,
    channel: &ChannelRow,
    statuses: &[StatusUpdate],
    lease: Option<&Lease>,
) -> Result<Vec<DeliveryTicket>> {
    let now = now_ms();
    let kind = channel.kind().as_str();
    let mut tickets = Vec::new();
    for s in statuses {
        let rows = match &s.target {
            StatusTarget::Message(pid) => c.query(
                "SELECT id, status FROM channel_messages
                 WHERE channel_id = $1 AND platform_message_id = $2",
                &[(&channel.id).into(), pid.into()],
            )?,
            StatusTarget::Until { user, until_ms } => c.query(
                "SELECT id, status FROM channel_messages
                 WHERE channel_id = $1 AND recipient = $2 AND status IN ('sent', 'delivered')
                   AND updated_at <= $3",
                &[(&channel.id).into(), user.into(), (*until_ms).into()],
            )?,
        };
        for r in rows {
            let (id, current) = (r.text(0)?, r.text(1)?);
            if rank(s.status.as_str()) <= rank(&current) {
                continue;
            }
            c.execute(
                "UPDATE channel_messages SET status = $1, updated_at = $2,
                        last_error = COALESCE($3, last_error)
                 WHERE id = $4",
                &[
                    s.status.as_str().into(),
                    now.into(),
                    s.error.as_deref().into(),
                    (&id).into(),
                ],
            )?;
            tickets.extend(status_event(
                c,
                &channel.account_id,
                &channel.bot_id,
                kind,
                &channel.id,
                &id,
                s.status,
                s.error.as_deref(),
                lease,
            )?);
        }
    }
    Ok(tickets)
}

impl Store {
    /// Connects (or with `None` disconnects) this process's inbound
    /// processor.
    pub fn set_inbound_sink(&self, sink: Option<Arc<dyn InboundSink>>) {
        *self.inbound_sink.write().expect("sink lock") = sink;
    }

    fn inbound_sink(&self) -> Option<Arc<dyn InboundSink>> {
        self.inbound_sink.read().expect("sink lock").clone()
    }

    /// Stores a verified webhook's messages and applies its statuses, in
    /// one transaction; answers the messages not seen before (the only ones
    /// to process). They are handed to this process's processor, when it
    /// has one, once durable.
    pub async fn receive(
        &self,
        channel: &ChannelRow,
        messages: Vec<InboundMessage>,
        statuses: Vec<StatusUpdate>,
    ) -> Result<Vec<InboundRow>> {
        let lease = self.inbound_sink().and_then(|s| s.lease());
        let delivery_lease = self.delivery_lease();
        let channel = channel.clone();
        let trace = crate::trace::current().map(|t| t.as_str().to_owned());
        let (rows, tickets) = self
            .write(move |c| {
                let now = now_ms();
                let mut fresh = Vec::new();
                for m in messages {
                    let row = InboundRow {
                        id: new_id("in"),
                        account_id: channel.account_id.clone(),
                        bot_id: channel.bot_id.clone(),
                        channel_id: channel.id.clone(),
                        message: m,
                        received_at: now,
                        trace_id: trace.clone(),
                    };
                    let n = c.execute(
                        "INSERT INTO channel_inbound (id, account_id, bot_id, channel_id, message_id, message,
                             status, locked_until, locked_by, received_at, trace_id)
                         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9, $10)
                         ON CONFLICT (channel_id, message_id) DO NOTHING",
                        &[
                            (&row.id).into(),
                            (&row.account_id).into(),
                            (&row.bot_id).into(),
                            (&row.channel_id).into(),
                            (&row.message.message_id).into(),
                            serde_json::to_string(&row.message)
                                .expect("messages serialise")
                                .into(),
                            lease.as_ref().map(|l| now + l.ms).into(),
                            lease.as_ref().map(|l| l.node.to_string()).into(),
                            now.into(),
                            row.trace_id.as_deref().into(),
                        ],
                    )?;
                    if n == 1 {
                        fresh.push(row);
                    }
                }
                let tickets = apply_statuses(c, &channel, &statuses, delivery_lease.as_ref())?;
                c.execute(
                    "UPDATE channels SET last_inbound_at = $1, last_inbound_error = NULL WHERE id = $2",
                    &[now.into(), (&channel.id).into()],
                )?;
                if lease.is_none() && !fresh.is_empty() {
                    c.notify_deliveries()?;
                }
                Ok((fresh, tickets))
            })
            .await?;
        self.hand_over(tickets);
        if let Some(sink) = self.inbound_sink()
            && sink.lease().is_some()
            && !rows.is_empty()
        {
            sink.hand_over(rows.clone());
        }
        Ok(rows)
    }

    /// Leases up to `limit` pending inbound rows that no live worker holds,
    /// oldest first.
    pub async fn claim_inbound(
        &self,
        now: i64,
        lease: Lease,
        limit: usize,
    ) -> Result<Vec<InboundRow>> {
        let skip = self.backend.skip_locked();
        self.write(move |c| {
            let rows = c.query(
                &format!(
                    "UPDATE channel_inbound SET locked_until = $1, locked_by = $2
                     WHERE id IN (SELECT id FROM channel_inbound
                                  WHERE status = 'pending' AND (locked_until IS NULL OR locked_until < $3)
                                  ORDER BY received_at LIMIT $4 {skip})
                     RETURNING {IN_COLUMNS}"
                ),
                &[
                    (now + lease.ms).into(),
                    lease.node.to_string().into(),
                    now.into(),
                    (limit as i64).into(),
                ],
            )?;
            let mut out = rows.iter().map(inbound_from).collect::<Result<Vec<_>>>()?;
            out.sort_by(|a, b| a.received_at.cmp(&b.received_at).then(a.id.cmp(&b.id)));
            Ok(out)
        })
        .await
    }

    /// Marks an inbound row that cannot become a turn (its bot has no flow,
    /// its channel is gone…) as failed, with the reason.
    pub async fn fail_inbound(&self, id: &str, error: String) -> Result<()> {
        let id = id.to_owned();
        self.write(move |c| {
            c.execute(
                "UPDATE channel_inbound SET status = 'failed', error = $1, processed_at = $2,
                        locked_until = NULL, locked_by = NULL
                 WHERE id = $3 AND status = 'pending'",
                &[error.into(), now_ms().into(), id.into()],
            )?;
            Ok(())
        })
        .await
    }

    /// Counts a channel's inbound rows by status (for tests and the console).
    pub async fn inbound_counts(&self, channel_id: &str) -> Result<Vec<(String, i64)>> {
        let id = channel_id.to_owned();
        self.read(move |c| {
            c.query(
                "SELECT status, COUNT(*) FROM channel_inbound WHERE channel_id = $1
                 GROUP BY status ORDER BY status",
                &[id.into()],
            )?
            .iter()
            .map(|r| Ok((r.text(0)?, r.int(1)?)))
            .collect()
        })
        .await
    }

    /// When `user` last wrote to the channel, and which contact they are.
    pub async fn channel_contact(
        &self,
        channel_id: &str,
        user: &str,
    ) -> Result<Option<(String, i64)>> {
        let (ch, u) = (channel_id.to_owned(), user.to_owned());
        self.read(move |c| {
            c.query_opt(
                "SELECT contact_id, last_inbound_at FROM channel_contacts
                 WHERE channel_id = $1 AND user_id = $2",
                &[ch.into(), u.into()],
            )?
            .map(|r| Ok((r.text(0)?, r.int(1)?)))
            .transpose()
        })
        .await
    }
}
