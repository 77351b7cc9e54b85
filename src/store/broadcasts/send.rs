//! Sending a plain broadcast: a batch of pending recipients handled in one
//! transaction, each given its outbox message and marked `sent`, or marked
//! `skipped` with its reason. A committed recipient is never pending again,
//! so none gets two messages.

use super::completion::finish_if_done;
use super::load;
use super::reach::address_of;
use crate::channels::{ChannelKind, Outgoing, Reply, whatsapp};
use crate::domain::broadcast::{Address, BroadcastState, Decision, decide};
use crate::domain::ids::new_id;
use crate::store::channels::{
    CH_COLUMNS, ChannelRow, OutboxTicket, OutboxWrite, channel_from, insert_outbox, lane_lease,
};
use crate::store::contacts::{COLUMNS as CONTACT_COLUMNS, record_from};
use crate::store::{Result, Store};
use std::collections::HashMap;
use std::sync::Arc;

/// What one batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Recipients whose message was written.
    pub sent: usize,
    /// Recipients skipped.
    pub skipped: usize,
    /// Whether the broadcast is completed now.
    pub completed: bool,
}

fn render(ch: &ChannelRow, to: &str, d: &Decision) -> Vec<Outgoing> {
    match d {
        Decision::Text(text) => ch.config.render(
            to,
            &Reply {
                texts: std::slice::from_ref(text),
                options: &[],
            },
        ),
        Decision::Template(t) => vec![whatsapp::render_template(
            to,
            &whatsapp::Template {
                name: t.name.clone(),
                language: t.language.clone(),
                params: t.params.clone(),
            },
        )],
        Decision::Skip(_) => Vec::new(),
    }
}

impl Store {
    /// Handles up to `limit` pending recipients of a running broadcast in
    /// one transaction: each gets its outbox message and is marked sent, or
    /// is marked skipped with its reason. Completes the broadcast when none
    /// is left pending. Messages go to this process's sender once durable.
    pub async fn send_broadcast_batch(
        &self,
        id: &str,
        limit: usize,
        now: i64,
    ) -> Result<BatchOutcome> {
        let skip = self.backend.skip_locked();
        let lease = self.outbox_lease();
        let id = id.to_owned();
        let (outcome, tickets) = self
            .write(move |c| {
                let b = load(c, &id)?;
                let mut out = BatchOutcome::default();
                let mut tickets = Vec::new();
                if b.state != BroadcastState::Running || b.message.campaign.is_some() {
                    // A campaign's recipients are chat turns: the runtime's.
                    return Ok((out, tickets));
                }
                let pending = c.query(
                    &format!(
                        "SELECT contact_id FROM broadcast_recipients
                         WHERE broadcast_id = $1 AND status = 'pending'
                         ORDER BY contact_id LIMIT $2 {skip}"
                    ),
                    &[(&id).into(), i64::try_from(limit).unwrap_or(1).into()],
                )?;
                let channels: HashMap<String, Arc<ChannelRow>> = c
                    .query(
                        &format!("SELECT {CH_COLUMNS} FROM channels WHERE account_id = $1 AND bot_id = $2"),
                        &[(&b.account_id).into(), (&b.bot_id).into()],
                    )?
                    .iter()
                    .map(|r| channel_from(r).map(|ch| (ch.id.clone(), Arc::new(ch))))
                    .collect::<Result<_>>()?;
                for r in pending {
                    let contact_id = r.text(0)?;
                    let contact = c
                        .query_opt(
                            &format!("SELECT {CONTACT_COLUMNS} FROM contacts c WHERE c.id = $1"),
                            &[(&contact_id).into()],
                        )?
                        .map(|r| record_from(&r))
                        .transpose()?;
                    let (status, reason, message_id) = match contact {
                        None => ("skipped", Some("no_channel"), None),
                        Some(contact) => {
                            let address =
                                address_of(c, &channels, &contact.id, contact.phone.as_deref(), true)?;
                            let facts = contact.facts();
                            let d = decide(
                                &b.message,
                                &facts,
                                address.as_ref().map(|(ch, _, at)| Address {
                                    whatsapp: ch.kind() == ChannelKind::Whatsapp,
                                    last_inbound_at: *at,
                                }).as_ref(),
                                now,
                            );
                            match (&d, address) {
                                (Decision::Skip(why), _) => ("skipped", Some(why.as_str()), None),
                                (_, None) => ("skipped", Some("no_channel"), None),
                                (_, Some((ch, to, at))) => {
                                    let lane = format!("{}:{}", ch.id, to);
                                    let rows: Vec<OutboxWrite> = render(&ch, &to, &d)
                                        .into_iter()
                                        .map(|outgoing| OutboxWrite {
                                            id: new_id("out"),
                                            lane: lane.clone(),
                                            conversation_id: None,
                                            contact_id: Some(contact.id.clone()),
                                            recipient: to.clone(),
                                            outgoing,
                                        })
                                        .collect();
                                    let leased = lane_lease(c, &lane, lease.as_ref())?;
                                    // A broadcast's sends belong to no request's trace.
                                    insert_outbox(c, &ch, &rows, leased, None)?;
                                    let first = rows.first().map(|m| m.id.clone());
                                    if leased.is_some() {
                                        tickets.extend(rows.into_iter().map(|m| OutboxTicket {
                                            id: m.id,
                                            channel: ch.clone(),
                                            lane: m.lane,
                                            conversation_id: None,
                                            contact_id: m.contact_id,
                                            recipient: m.recipient,
                                            outgoing: m.outgoing,
                                            attempts: 0,
                                            last_inbound_at: at,
                                            trace_id: None,
                                        }));
                                    }
                                    ("sent", None, first)
                                }
                            }
                        }
                    };
                    if status == "sent" {
                        out.sent += 1;
                    } else {
                        out.skipped += 1;
                    }
                    c.execute(
                        "UPDATE broadcast_recipients SET status = $1, reason = $2, message_id = $3, updated_at = $4
                         WHERE broadcast_id = $5 AND contact_id = $6 AND status = 'pending'",
                        &[
                            status.into(),
                            reason.into(),
                            message_id.into(),
                            now.into(),
                            (&id).into(),
                            contact_id.into(),
                        ],
                    )?;
                }
                out.completed = finish_if_done(c, &b, now)?;
                Ok((out, tickets))
            })
            .await?;
        self.hand_over_messages(tickets);
        Ok(outcome)
    }
}
