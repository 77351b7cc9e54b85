//! Committing a chat turn: the booking, the conversation (guarded by its
//! revision), the contact, the transcript, timers, story calls, a campaign
//! recipient's mark, events and channel replies, all in one transaction.
//! A turn that loses a race writes nothing and answers [`STALE`].

use super::{CONV_COLUMNS, ContactRow, ConversationRow};
use crate::store::events::{EventRow, insert_events};
use crate::store::{Result, Store, StoreError, now_ms};

/// A slot to book with the turn.
#[derive(Clone, Debug)]
pub struct BookingWrite {
    /// Appointment id.
    pub id: String,
    /// Slot start, Unix ms.
    pub start_ms: i64,
    /// Slot end, Unix ms.
    pub end_ms: i64,
    /// Human label.
    pub label: String,
    /// Seats per slot.
    pub capacity: u32,
}

/// Everything one chat turn changes.
#[derive(Clone, Debug)]
pub struct TurnWrite {
    /// Account.
    pub account_id: String,
    /// Bot.
    pub bot_id: String,
    /// The contact; inserted when `contact_is_new`, else its attributes updated.
    pub contact: ContactRow,
    /// Whether the contact row must be created.
    pub contact_is_new: bool,
    /// Whether an existing contact's attributes changed (else untouched).
    pub contact_changed: bool,
    /// The conversation as it must be after the turn.
    pub conversation: ConversationRow,
    /// `None`: the conversation is new. `Some(r)`: commit only if it is
    /// still at revision `r` (else `Conflict(STALE)`).
    pub expected_revision: Option<i64>,
    /// (direction, body) lines to append.
    pub messages: Vec<(String, String)>,
    /// Events the turn caused.
    pub events: Vec<EventRow>,
    /// A slot to book.
    pub booking: Option<BookingWrite>,
    /// An appointment to cancel.
    pub cancel: Option<String>,
    /// Story-webhook calls the turn made (made before the commit, logged with it).
    pub calls: Vec<crate::store::story::CallRow>,
    /// For a turn that answers a message received on a channel: the inbound
    /// row to mark done, the channel contact and the replies to send.
    pub channel: Option<crate::store::channels::ChannelTurnWrite>,
    /// What the turn does to the conversation's timers.
    pub timers: crate::store::timers::TimerChange,
    /// For a turn a campaign broadcast started: its recipient, marked sent
    /// with the turn (the turn is refused, `Conflict`, if it was already).
    pub broadcast: Option<crate::store::broadcasts::RecipientMark>,
}

/// What committing a turn did.
#[derive(Clone, Debug, PartialEq)]
pub enum TurnCommit {
    /// Everything was written; the conversation's new revision.
    Committed(i64),
    /// The slot is full; nothing was written.
    SlotTaken,
}

/// The `Conflict` message when a conversation moved on under a turn.
pub const STALE: &str = "the conversation changed while this message was handled";

/// How far `contacts.last_seen` may lag behind a contact's latest turn.
pub const LAST_SEEN_GRAIN_MS: i64 = 60_000;

impl Store {
    /// Commits a chat turn atomically. A full slot answers `SlotTaken` with
    /// nothing written; a conversation that moved on answers
    /// `Conflict(STALE)` with nothing written.
    pub async fn commit_turn(&self, t: TurnWrite) -> Result<TurnCommit> {
        let lease = self.delivery_lease();
        let outbox_lease = self.outbox_lease();
        let leased = outbox_lease.is_some();
        // Replies sent over a channel continue the turn's trace.
        let trace = crate::trace::current().map(|t| t.as_str().to_owned());
        // The hottest write: it may run again if a batch-mate fails, and
        // is cheaper for it (no savepoint).
        let (commit, tickets, messages) = self.write_again(move |c| {
            if let Some(b) = &t.booking {
                let mut booked = false;
                for seat in 0..i64::from(b.capacity.max(1)) {
                    let n = c.execute(
                        "INSERT INTO appointments (id, account_id, bot_id, slot_start, slot_end, seat, label,
                                                   contact_id, conversation_id, status, created_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'booked', $10)
                         ON CONFLICT (account_id, bot_id, slot_start, seat) WHERE status = 'booked' DO NOTHING",
                        &[
                            (&b.id).into(),
                            (&t.account_id).into(),
                            (&t.bot_id).into(),
                            b.start_ms.into(),
                            b.end_ms.into(),
                            seat.into(),
                            (&b.label).into(),
                            (&t.contact.id).into(),
                            (&t.conversation.id).into(),
                            now_ms().into(),
                        ],
                    )?;
                    if n == 1 {
                        booked = true;
                        break;
                    }
                }
                if !booked {
                    return Ok((TurnCommit::SlotTaken, Vec::new(), Vec::new()));
                }
            }
            let now = now_ms();
            let conv = &t.conversation;
            let revision = match t.expected_revision {
                Some(expected) => {
                    // Held, like the rest of the turn: if another turn
                    // moved the conversation first, this one fails when
                    // the statement runs.
                    c.send_expecting(
                        "UPDATE conversations SET flow_version = $1, state = $2, status = $3,
                                revision = revision + 1, updated_at = $4
                         WHERE id = $5 AND revision = $6",
                        &[
                            conv.flow_version.into(),
                            (&conv.state).into(),
                            (&conv.status).into(),
                            now.into(),
                            (&conv.id).into(),
                            expected.into(),
                        ],
                        1,
                        StoreError::Conflict(STALE.into()),
                    )?;
                    expected + 1
                }
                None => {
                    c.send(
                        &format!(
                            "INSERT INTO conversations (account_id, {CONV_COLUMNS})
                             VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $8, $9)"
                        ),
                        &[
                            (&t.account_id).into(),
                            (&conv.id).into(),
                            (&t.bot_id).into(),
                            (&t.contact.id).into(),
                            conv.flow_version.into(),
                            (&conv.state).into(),
                            (&conv.status).into(),
                            now.into(),
                            (&conv.channel).into(),
                        ],
                    )?;
                    1
                }
            };
            if t.contact_is_new {
                c.execute(
                    "INSERT INTO contacts (id, account_id, bot_id, phone, external_id, attributes, channel,
                                           last_seen, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $8)",
                    &[
                        (&t.contact.id).into(),
                        (&t.account_id).into(),
                        (&t.bot_id).into(),
                        t.contact.phone.as_deref().into(),
                        t.contact.external_id.as_deref().into(),
                        (&t.contact.attributes).into(),
                        crate::domain::people::channel_of(t.contact.external_id.as_deref()).into(),
                        now.into(),
                    ],
                )
                .map_err(|e| match e {
                    StoreError::Conflict(_) => StoreError::Conflict(STALE.into()),
                    other => other,
                })?;
            } else if t.contact_changed {
                c.send(
                    "UPDATE contacts SET attributes = $1, updated_at = $2, last_seen = $2 WHERE id = $3",
                    &[(&t.contact.attributes).into(), now.into(), (&t.contact.id).into()],
                )?;
            } else {
                // Kept to the minute: a turn within a minute of the last
                // one finds the row as it is and writes no page.
                c.send(
                    "UPDATE contacts SET last_seen = $1
                     WHERE id = $2 AND (last_seen IS NULL OR last_seen < $3)",
                    &[
                        now.into(),
                        (&t.contact.id).into(),
                        (now - LAST_SEEN_GRAIN_MS).into(),
                    ],
                )?;
            }
            if t.contact_is_new || t.contact_changed {
                crate::store::contacts::sync_attributes(
                    c,
                    &t.account_id,
                    &t.bot_id,
                    &t.contact.id,
                    &t.contact.attributes,
                )?;
            }
            for (direction, body) in &t.messages {
                c.send(
                    "INSERT INTO messages (id, conversation_id, direction, body, created_at)
                     VALUES ($1, $2, $3, $4, $5)",
                    &[
                        crate::domain::ids::new_id("msg").into(),
                        (&conv.id).into(),
                        direction.into(),
                        body.into(),
                        now.into(),
                    ],
                )?;
            }
            if let Some(id) = &t.cancel {
                c.send(
                    "UPDATE appointments SET status = 'cancelled', cancelled_at = $1
                     WHERE account_id = $2 AND bot_id = $3 AND id = $4 AND status = 'booked'",
                    &[now.into(), (&t.account_id).into(), (&t.bot_id).into(), id.into()],
                )?;
            }
            for call in &t.calls {
                crate::store::story::insert_call(c, &t.account_id, &t.bot_id, call)?;
            }
            crate::store::timers::write_timers(c, &t.account_id, &t.bot_id, &conv.id, &t.timers)?;
            if let Some(mark) = &t.broadcast {
                crate::store::broadcasts::mark_sent(c, mark)?;
            }
            let tickets = insert_events(c, &t.events, lease.as_ref())?;
            let messages = match &t.channel {
                Some(ch) => crate::store::channels::write_channel_turn(
                    c,
                    ch,
                    &t.contact.id,
                    outbox_lease.as_ref(),
                    trace.as_deref(),
                )?,
                None => Vec::new(),
            };
            Ok((TurnCommit::Committed(revision), tickets, messages))
        })
        .await?;
        self.hand_over(tickets);
        if leased {
            self.hand_over_messages(messages);
        }
        Ok(commit)
    }
}
