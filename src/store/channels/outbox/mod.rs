//! The outbox: replies written with their turn, leased to the sender of the
//! node that wrote them, claimed lane by lane, marked before each send and
//! settled by the recorded outcome (or as interrupted, if in doubt).
//!
//! One concern per file:
//!
//! * this file: writing messages (with a turn, a broadcast, or on their
//!   own), the lane's lease they are written under, and the sink of this
//!   process's sender they are handed to once durable;
//! * `sending.rs`: the sender's side: claiming due messages lane by lane,
//!   settling sends left in doubt, marking messages sending, and recording
//!   outcomes with their attempts and events;
//! * `listing.rs`: what the API lists: a channel's messages and a
//!   message's attempts.

mod listing;
mod sending;

pub use listing::*;
pub use sending::*;

use super::*;
use crate::channels::Outgoing;
use crate::store::deliveries::Lease;
use crate::store::{Conn, Result, Store, now_ms};
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
        c.send(
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
}
