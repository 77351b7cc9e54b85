//! Contacts, conversations, their messages, and the one write that commits
//! a chat turn: state, messages, contact attributes, events and a booking,
//! all in one transaction.

use super::events::{EventRow, insert_event};
use super::{Page, PageRequest, Result, Row, Store, StoreError, now_ms};

/// A contact as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct ContactRow {
    /// `ct_…`
    pub id: String,
    /// E.164 phone number, when the contact is known by one.
    pub phone: Option<String>,
    /// An id in the caller's system, when known by one.
    pub external_id: Option<String>,
    /// `user` attributes, a JSON object.
    pub attributes: String,
}

/// A conversation as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct ConversationRow {
    /// `cnv_…`
    pub id: String,
    /// The bot.
    pub bot_id: String,
    /// The contact.
    pub contact_id: String,
    /// The flow version it last ran on.
    pub flow_version: i64,
    /// The engine state, JSON.
    pub state: String,
    /// `active`, `handoff` (a person answers) or `completed`.
    pub status: String,
    /// Bumped by every committed turn.
    pub revision: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// Where it happens: `api`, `web`, or a messaging channel's kind; set
    /// when the conversation starts.
    pub channel: String,
}

/// One line of a transcript.
#[derive(Clone, Debug, PartialEq)]
pub struct MessageRow {
    /// `msg_…`
    pub id: String,
    /// `in` (from the contact), `out` (from the bot), `agent` (from a
    /// person, in handoff) or `log`.
    pub direction: String,
    /// JSON: `{"text"}` in, `{"replies", "quick_replies"}` out.
    pub body: String,
    /// Unix ms.
    pub created_at: i64,
}

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
    pub calls: Vec<super::story::CallRow>,
    /// For a turn that answers a message received on a channel: the inbound
    /// row to mark done, the channel contact and the replies to send.
    pub channel: Option<super::channels::ChannelTurnWrite>,
    /// What the turn does to the conversation's timers.
    pub timers: super::timers::TimerChange,
    /// For a turn a campaign broadcast started: its recipient, marked sent
    /// with the turn (the turn is refused, `Conflict`, if it was already).
    pub broadcast: Option<super::broadcasts::RecipientMark>,
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

const CONV_COLUMNS: &str = "id, bot_id, contact_id, flow_version, state, status, revision, created_at, updated_at, channel";

fn conversation_from(r: &Row) -> Result<ConversationRow> {
    Ok(ConversationRow {
        id: r.text(0)?,
        bot_id: r.text(1)?,
        contact_id: r.text(2)?,
        flow_version: r.int(3)?,
        state: r.text(4)?,
        status: r.text(5)?,
        revision: r.int(6)?,
        created_at: r.int(7)?,
        updated_at: r.int(8)?,
        channel: r.text(9)?,
    })
}

fn contact_from(r: &Row) -> Result<ContactRow> {
    Ok(ContactRow {
        id: r.text(0)?,
        phone: r.opt_text(1)?,
        external_id: r.opt_text(2)?,
        attributes: r.text(3)?,
    })
}

/// Filters for listing conversations.
#[derive(Clone, Debug, Default)]
pub struct ConversationFilter {
    /// `active`, `handoff` or `completed`.
    pub status: Option<String>,
    /// Only this contact's.
    pub contact_id: Option<String>,
}

/// Filters of the inbox: conversations of an account by last activity.
#[derive(Clone, Debug, Default)]
pub struct InboxFilter {
    /// Only this bot's.
    pub bot_id: Option<String>,
    /// `active`, `handoff` or `completed`.
    pub status: Option<String>,
    /// `api`, `web`, or a messaging channel's kind.
    pub channel: Option<String>,
    /// Most rows.
    pub limit: i64,
}

/// The platform address of a conversation's contact on a messaging channel.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelAddress {
    /// The channel (`ch_…`).
    pub channel_id: String,
    /// The person, in the platform's terms.
    pub user: String,
    /// When they last wrote (Unix ms).
    pub last_inbound_at: i64,
}

/// How far `contacts.last_seen` may lag behind a contact's latest turn.
pub const LAST_SEEN_GRAIN_MS: i64 = 60_000;
impl Store {
    /// The contact a bot knows by this phone number or external id.
    pub async fn find_contact(
        &self,
        account_id: &str,
        bot_id: &str,
        phone: Option<&str>,
        external_id: Option<&str>,
    ) -> Result<Option<ContactRow>> {
        let (a, b) = (account_id.to_owned(), bot_id.to_owned());
        let (phone, external_id) = (phone.map(str::to_owned), external_id.map(str::to_owned));
        self.read(move |c| {
            c.query_opt(
                "SELECT id, phone, external_id, attributes FROM contacts
                 WHERE account_id = $1 AND bot_id = $2
                   AND ((CAST($3 AS TEXT) IS NOT NULL AND phone = $3 AND external_id IS NULL)
                     OR (CAST($4 AS TEXT) IS NOT NULL AND external_id = $4))
                 LIMIT 1",
                &[a.into(), b.into(), phone.into(), external_id.into()],
            )?
            .as_ref()
            .map(contact_from)
            .transpose()
        })
        .await
    }

    /// The contact's conversation still in progress, if any.
    pub async fn active_conversation(&self, contact_id: &str) -> Result<Option<ConversationRow>> {
        let contact_id = contact_id.to_owned();
        self.read(move |c| {
            c.query_opt(
                &format!(
                    "SELECT {CONV_COLUMNS} FROM conversations
                     WHERE contact_id = $1 AND status IN ('active', 'handoff')
                     ORDER BY id DESC LIMIT 1"
                ),
                &[contact_id.into()],
            )?
            .as_ref()
            .map(conversation_from)
            .transpose()
        })
        .await
    }

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
                    let n = c.execute(
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
                    )?;
                    if n == 0 {
                        return Err(StoreError::Conflict(STALE.into()));
                    }
                    expected + 1
                }
                None => {
                    c.execute(
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
                c.execute(
                    "UPDATE contacts SET attributes = $1, updated_at = $2, last_seen = $2 WHERE id = $3",
                    &[(&t.contact.attributes).into(), now.into(), (&t.contact.id).into()],
                )?;
            } else {
                // Kept to the minute: a turn within a minute of the last
                // one finds the row as it is and writes no page.
                c.execute(
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
                super::contacts::sync_attributes(
                    c,
                    &t.account_id,
                    &t.bot_id,
                    &t.contact.id,
                    &t.contact.attributes,
                )?;
            }
            for (direction, body) in &t.messages {
                c.execute(
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
                c.execute(
                    "UPDATE appointments SET status = 'cancelled', cancelled_at = $1
                     WHERE account_id = $2 AND bot_id = $3 AND id = $4 AND status = 'booked'",
                    &[now.into(), (&t.account_id).into(), (&t.bot_id).into(), id.into()],
                )?;
            }
            for call in &t.calls {
                super::story::insert_call(c, &t.account_id, &t.bot_id, call)?;
            }
            super::timers::write_timers(c, &t.account_id, &t.bot_id, &conv.id, &t.timers)?;
            if let Some(mark) = &t.broadcast {
                super::broadcasts::mark_sent(c, mark)?;
            }
            let mut tickets = Vec::new();
            for e in &t.events {
                tickets.extend(insert_event(c, e, None, lease.as_ref())?);
            }
            let messages = match &t.channel {
                Some(ch) => super::channels::write_channel_turn(
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

    /// A conversation and its contact, by conversation id alone (timers).
    pub async fn conversation_with_contact(
        &self,
        id: &str,
    ) -> Result<Option<(ConversationRow, ContactRow)>> {
        let id = id.to_owned();
        self.read(move |c| {
            let Some(row) = c.query_opt(
                &format!("SELECT {CONV_COLUMNS} FROM conversations WHERE id = $1"),
                &[id.into()],
            )?
            else {
                return Ok(None);
            };
            let conv = conversation_from(&row)?;
            let contact = contact_from(&c.query_one(
                "SELECT id, phone, external_id, attributes FROM contacts WHERE id = $1",
                &[(&conv.contact_id).into()],
            )?)?;
            Ok(Some((conv, contact)))
        })
        .await
    }

    /// One conversation of a bot, its contact and its transcript.
    pub async fn get_conversation(
        &self,
        account_id: &str,
        bot_id: &str,
        id: &str,
    ) -> Result<(ConversationRow, ContactRow, Vec<MessageRow>)> {
        let (a, b, id) = (account_id.to_owned(), bot_id.to_owned(), id.to_owned());
        self.read(move |c| {
            let conv = conversation_from(&c.query_one(
                &format!(
                    "SELECT {CONV_COLUMNS} FROM conversations
                     WHERE account_id = $1 AND bot_id = $2 AND id = $3"
                ),
                &[a.into(), b.into(), id.into()],
            )?)?;
            let contact = contact_from(&c.query_one(
                "SELECT id, phone, external_id, attributes FROM contacts WHERE id = $1",
                &[(&conv.contact_id).into()],
            )?)?;
            let messages = c
                .query(
                    "SELECT id, direction, body, created_at FROM messages
                     WHERE conversation_id = $1 ORDER BY id",
                    &[(&conv.id).into()],
                )?
                .iter()
                .map(|r| {
                    Ok(MessageRow {
                        id: r.text(0)?,
                        direction: r.text(1)?,
                        body: r.text(2)?,
                        created_at: r.int(3)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((conv, contact, messages))
        })
        .await
    }

    /// Conversations of a bot, newest first.
    pub async fn list_conversations(
        &self,
        account_id: &str,
        bot_id: &str,
        filter: ConversationFilter,
        page: PageRequest,
    ) -> Result<Page<ConversationRow>> {
        let sql = format!(
            "SELECT {CONV_COLUMNS} FROM conversations
             WHERE account_id = $1 AND bot_id = $2
               AND (CAST($3 AS TEXT) IS NULL OR status = $3)
               AND (CAST($4 AS TEXT) IS NULL OR contact_id = $4)
               AND (CAST($5 AS TEXT) IS NULL OR id < $5)
             ORDER BY id DESC LIMIT $6"
        );
        let params = vec![
            account_id.into(),
            bot_id.into(),
            filter.status.into(),
            filter.contact_id.into(),
            page.after.clone().into(),
        ];
        self.read_page(sql, params, page, conversation_from, |c| c.id.clone())
            .await
    }

    /// An account's conversations by last activity, newest first (the inbox).
    pub async fn inbox(
        &self,
        account_id: &str,
        filter: InboxFilter,
    ) -> Result<Vec<ConversationRow>> {
        let a = account_id.to_owned();
        self.read(move |c| {
            c.query(
                &format!(
                    "SELECT {CONV_COLUMNS} FROM conversations
                     WHERE account_id = $1
                       AND (CAST($2 AS TEXT) IS NULL OR bot_id = $2)
                       AND (CAST($3 AS TEXT) IS NULL OR status = $3)
                       AND (CAST($4 AS TEXT) IS NULL OR channel = $4)
                     ORDER BY updated_at DESC, id DESC LIMIT $5"
                ),
                &[
                    a.into(),
                    filter.bot_id.into(),
                    filter.status.into(),
                    filter.channel.into(),
                    filter.limit.into(),
                ],
            )?
            .iter()
            .map(conversation_from)
            .collect()
        })
        .await
    }

    /// The contact's newest conversation, whatever its status.
    pub async fn latest_conversation(&self, contact_id: &str) -> Result<Option<ConversationRow>> {
        let contact_id = contact_id.to_owned();
        self.read(move |c| {
            c.query_opt(
                &format!(
                    "SELECT {CONV_COLUMNS} FROM conversations
                     WHERE contact_id = $1 ORDER BY id DESC LIMIT 1"
                ),
                &[contact_id.into()],
            )?
            .as_ref()
            .map(conversation_from)
            .transpose()
        })
        .await
    }

    /// A conversation of an account, by id alone.
    pub async fn find_conversation(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<ConversationRow>> {
        let (a, id) = (account_id.to_owned(), id.to_owned());
        self.read(move |c| {
            c.query_opt(
                &format!(
                    "SELECT {CONV_COLUMNS} FROM conversations WHERE account_id = $1 AND id = $2"
                ),
                &[a.into(), id.into()],
            )?
            .as_ref()
            .map(conversation_from)
            .transpose()
        })
        .await
    }

    /// Lines of a conversation's transcript after `after` (a message id),
    /// oldest first, at most `limit`.
    pub async fn messages_after(
        &self,
        conversation_id: &str,
        after: Option<String>,
        limit: i64,
    ) -> Result<Vec<MessageRow>> {
        let id = conversation_id.to_owned();
        self.read(move |c| {
            c.query(
                "SELECT id, direction, body, created_at FROM messages
                 WHERE conversation_id = $1 AND (CAST($2 AS TEXT) IS NULL OR id > $2)
                 ORDER BY id LIMIT $3",
                &[id.into(), after.into(), limit.into()],
            )?
            .iter()
            .map(|r| {
                Ok(MessageRow {
                    id: r.text(0)?,
                    direction: r.text(1)?,
                    body: r.text(2)?,
                    created_at: r.int(3)?,
                })
            })
            .collect()
        })
        .await
    }

    /// The id of a conversation's last transcript line, if any.
    pub async fn last_message_id(&self, conversation_id: &str) -> Result<Option<String>> {
        let id = conversation_id.to_owned();
        self.read(move |c| {
            c.query_opt(
                "SELECT id FROM messages WHERE conversation_id = $1 ORDER BY id DESC LIMIT 1",
                &[id.into()],
            )?
            .map(|r| r.text(0))
            .transpose()
        })
        .await
    }

    /// Where a contact last wrote from on a messaging channel, if anywhere.
    pub async fn channel_address(&self, contact_id: &str) -> Result<Option<ChannelAddress>> {
        let id = contact_id.to_owned();
        self.read(move |c| {
            c.query_opt(
                "SELECT channel_id, user_id, last_inbound_at FROM channel_contacts
                 WHERE contact_id = $1 ORDER BY last_inbound_at DESC LIMIT 1",
                &[id.into()],
            )?
            .map(|r| {
                Ok(ChannelAddress {
                    channel_id: r.text(0)?,
                    user: r.text(1)?,
                    last_inbound_at: r.int(2)?,
                })
            })
            .transpose()
        })
        .await
    }
}
