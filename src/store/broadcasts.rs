//! Broadcasts and their recipients.
//!
//! # Exactly once per recipient
//!
//! * **Start.** [`Store::start_due_broadcasts`] moves a due broadcast from
//!   `scheduled` to `running` and writes one `broadcast_recipients` row per
//!   contact its segment's filter matches at that moment, all in one
//!   transaction: either the broadcast runs with its whole list or it is
//!   still scheduled.
//! * **Send.** [`Store::send_broadcast_batch`] takes pending rows (skipping
//!   rows another node holds, `FOR UPDATE SKIP LOCKED` on PostgreSQL; the
//!   single writer excludes concurrent claims on SQLite) and, in the same
//!   transaction, writes each recipient's outbox message and marks the row
//!   `sent` (or `skipped` with its reason). A process killed mid-batch rolls
//!   the whole batch back; a committed row is never pending again. So no
//!   recipient gets two outbox messages; the outbox then sends each at most
//!   once (its own guarantees: per-lane order, retries, statuses; a send
//!   interrupted by a kill is failed as `interrupted`, never repeated).
//! * **Events.** `broadcast.started` is written in the start's transaction
//!   and `broadcast.completed` in the one that handles the last recipient.
//! * **Counts** join each recipient to its outbox message: one whose
//!   message ended `failed` counts (and is listed) as failed, with the
//!   message's error as its reason.

use super::channels::{
    CH_COLUMNS, ChannelRow, OutboxTicket, OutboxWrite, channel_from, insert_outbox, lane_lease,
};
use super::contacts::{COLUMNS as CONTACT_COLUMNS, record_from, scan};
use super::events::{EventRow, insert_event};
use super::{Conn, Page, PageRequest, Result, Row, Store, StoreError, now_ms};
use crate::channels::{ChannelKind, Outgoing, Reply, whatsapp};
use crate::domain::broadcast::{
    Address, BroadcastAction, BroadcastMessage, BroadcastState, Decision, decide,
};
use crate::domain::event::EventType;
use crate::domain::ids::new_id;
use crate::domain::people::ContactFilter;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

/// A broadcast as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct BroadcastRow {
    /// `bc_…`
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// The bot whose contacts and channels it uses.
    pub bot_id: String,
    /// The segment whose filter chooses the recipients at the start.
    pub segment_id: String,
    /// What to send.
    pub message: BroadcastMessage,
    /// Where it is.
    pub state: BroadcastState,
    /// When it starts (Unix ms).
    pub schedule_at: i64,
    /// Most messages per second.
    pub rate: i64,
    /// When the recipients were chosen.
    pub started_at: Option<i64>,
    /// When it completed or was cancelled.
    pub finished_at: Option<i64>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

const COLUMNS: &str = "id, account_id, bot_id, segment_id, message, state, schedule_at, rate, started_at, finished_at, created_at, updated_at";

fn broadcast_from(r: &Row) -> Result<BroadcastRow> {
    let state = r.text(5)?;
    Ok(BroadcastRow {
        id: r.text(0)?,
        account_id: r.text(1)?,
        bot_id: r.text(2)?,
        segment_id: r.text(3)?,
        message: r.json(4)?,
        state: BroadcastState::parse(&state)
            .ok_or_else(|| StoreError::Database(format!("unknown broadcast state {state:?}")))?,
        schedule_at: r.int(6)?,
        rate: r.int(7)?,
        started_at: r.opt_int(8)?,
        finished_at: r.opt_int(9)?,
        created_at: r.int(10)?,
        updated_at: r.int(11)?,
    })
}

/// How a broadcast's recipients stand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecipientCounts {
    /// Not handled yet.
    pub pending: u64,
    /// Their message was written to the outbox (and has not failed).
    pub sent: u64,
    /// Their message failed.
    pub failed: u64,
    /// Not sent, with a reason.
    pub skipped: u64,
}

/// One recipient as listed.
#[derive(Clone, Debug, PartialEq)]
pub struct RecipientRow {
    /// The contact.
    pub contact_id: String,
    /// `pending`, `sent`, `failed` (its message failed) or `skipped`.
    pub status: String,
    /// Why it was skipped, or why its message failed (e.g.
    /// [`super::channels::INTERRUPTED`]).
    pub reason: Option<String>,
    /// Its first outbox message.
    pub message_id: Option<String>,
}

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

fn load(c: &mut dyn Conn, id: &str) -> Result<BroadcastRow> {
    broadcast_from(&c.query_one(
        &format!("SELECT {COLUMNS} FROM broadcasts WHERE id = $1"),
        &[id.into()],
    )?)
}

/// A channel, the recipient on it, and when they last wrote there.
pub type Reach = (Arc<ChannelRow>, String, Option<i64>);

/// Where a contact can be reached: the channel it last wrote on, else (with
/// a phone) the bot's WhatsApp channel. There, with `window_by_phone`, the
/// window is the number's own: when that number last wrote to the channel
/// (as another contact, the one its messages made), since WhatsApp keeps
/// the window per number.
fn address_of(
    c: &mut dyn Conn,
    channels: &HashMap<String, Arc<ChannelRow>>,
    contact_id: &str,
    phone: Option<&str>,
    window_by_phone: bool,
) -> Result<Option<Reach>> {
    let rows = c.query(
        "SELECT channel_id, user_id, last_inbound_at FROM channel_contacts
         WHERE contact_id = $1 ORDER BY last_inbound_at DESC",
        &[contact_id.into()],
    )?;
    for r in rows {
        if let Some(ch) = channels.get(&r.text(0)?) {
            return Ok(Some((ch.clone(), r.text(1)?, Some(r.int(2)?))));
        }
    }
    let Some(phone) = phone else { return Ok(None) };
    let wa = channels
        .values()
        .filter(|ch| ch.kind() == ChannelKind::Whatsapp)
        .min_by(|a, b| a.id.cmp(&b.id));
    let Some(ch) = wa else { return Ok(None) };
    let user = phone.trim_start_matches('+').to_owned();
    let last = if window_by_phone {
        c.query_opt(
            "SELECT MAX(last_inbound_at) FROM channel_contacts WHERE channel_id = $1 AND user_id = $2",
            &[(&ch.id).into(), (&user).into()],
        )?
        .map(|r| r.opt_int(0))
        .transpose()?
        .flatten()
    } else {
        None
    };
    Ok(Some((ch.clone(), user, last)))
}

/// Completes a running broadcast that has no pending recipient left, with
/// its `broadcast.completed`; answers whether none is left.
fn finish_if_done(c: &mut dyn Conn, b: &BroadcastRow, now: i64) -> Result<bool> {
    let left = c.query_opt(
        "SELECT 1 FROM broadcast_recipients WHERE broadcast_id = $1 AND status = 'pending' LIMIT 1",
        &[(&b.id).into()],
    )?;
    if left.is_some() {
        return Ok(false);
    }
    let n = c.execute(
        "UPDATE broadcasts SET state = 'completed', finished_at = $1, updated_at = $1
         WHERE id = $2 AND state = 'running'",
        &[now.into(), (&b.id).into()],
    )?;
    if n == 1 {
        completed_event(c, b)?;
    }
    Ok(true)
}

/// The `Conflict` message when a recipient was handled already (by another
/// node, or an earlier attempt).
pub const RECIPIENT_HANDLED: &str = "this broadcast recipient was handled already";

/// What a campaign turn writes besides the turn: its recipient marked sent.
#[derive(Clone, Debug, PartialEq)]
pub struct RecipientMark {
    /// The broadcast.
    pub broadcast_id: String,
    /// The contact.
    pub contact_id: String,
    /// Its first outbox message.
    pub message_id: Option<String>,
}

/// Marks a pending recipient sent, in the turn's transaction; `Conflict`
/// when it is not pending any more, which rolls the turn back.
pub(super) fn mark_sent(c: &mut dyn Conn, m: &RecipientMark) -> Result<()> {
    let n = c.execute(
        "UPDATE broadcast_recipients SET status = 'sent', reason = NULL, message_id = $1, updated_at = $2
         WHERE broadcast_id = $3 AND contact_id = $4 AND status = 'pending'",
        &[
            m.message_id.as_deref().into(),
            now_ms().into(),
            (&m.broadcast_id).into(),
            (&m.contact_id).into(),
        ],
    )?;
    if n == 0 {
        return Err(StoreError::Conflict(RECIPIENT_HANDLED.into()));
    }
    Ok(())
}

/// One pending recipient of a campaign broadcast, with what deciding and
/// starting its campaign needs.
#[derive(Clone, Debug)]
pub struct CampaignRecipient {
    /// The recipient's contact id.
    pub contact_id: String,
    /// The contact as a chat turn reads it, and what the skip rules see of
    /// it; `None` when it was deleted since the start.
    pub found: Option<(
        super::conversations::ContactRow,
        crate::domain::people::ContactFacts,
    )>,
    /// Its channel, its id there and when it last wrote there.
    pub reach: Option<Reach>,
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

/// Writes `broadcast.completed` with the broadcast's final tally.
fn completed_event(c: &mut dyn Conn, b: &BroadcastRow) -> Result<()> {
    let rows = c.query(
        "SELECT status, COALESCE(reason, ''), COUNT(*) FROM broadcast_recipients
         WHERE broadcast_id = $1 GROUP BY status, COALESCE(reason, '')",
        &[(&b.id).into()],
    )?;
    let mut sent = 0;
    let mut skipped = json!({"opted_out": 0, "no_channel": 0, "outside_window": 0});
    if b.message.campaign.is_some() {
        skipped["in_handoff"] = json!(0);
        skipped["no_campaign"] = json!(0);
    }
    for r in rows {
        let n = r.int(2)?;
        match (r.text(0)?.as_str(), r.text(1)?) {
            ("sent", _) => sent += n,
            ("skipped", reason) if skipped.get(&reason).is_some() => {
                skipped[reason.as_str()] = json!(n)
            }
            _ => {}
        }
    }
    let data = json!({"broadcast_id": b.id, "sent": sent, "skipped": skipped});
    let event = EventRow::new(
        &b.account_id,
        &b.bot_id,
        EventType::BroadcastCompleted.as_str(),
        None,
        data.to_string(),
    );
    insert_event(c, &event, None, None).map(|_| ())
}

impl Store {
    /// Saves a new broadcast (checked by the caller), scheduled.
    pub async fn create_broadcast(
        &self,
        account_id: &str,
        bot_id: &str,
        segment_id: &str,
        message: BroadcastMessage,
        schedule_at: i64,
        rate: i64,
    ) -> Result<BroadcastRow> {
        let now = now_ms();
        let row = BroadcastRow {
            id: new_id("bc"),
            account_id: account_id.to_owned(),
            bot_id: bot_id.to_owned(),
            segment_id: segment_id.to_owned(),
            message,
            state: BroadcastState::Scheduled,
            schedule_at,
            rate,
            started_at: None,
            finished_at: None,
            created_at: now,
            updated_at: now,
        };
        let r = row.clone();
        self.write(move |c| {
            c.execute(
                &format!("INSERT INTO broadcasts ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL, $9, $9)"),
                &[
                    (&r.id).into(),
                    (&r.account_id).into(),
                    (&r.bot_id).into(),
                    (&r.segment_id).into(),
                    serde_json::to_string(&r.message).expect("message serialises").into(),
                    r.state.as_str().into(),
                    r.schedule_at.into(),
                    r.rate.into(),
                    r.created_at.into(),
                ],
            )
            .map(|_| ())
        })
        .await?;
        Ok(row)
    }

    /// One broadcast of the account.
    pub async fn get_broadcast(&self, account_id: &str, id: &str) -> Result<BroadcastRow> {
        let (a, id) = (account_id.to_owned(), id.to_owned());
        self.read(move |c| {
            broadcast_from(&c.query_one(
                &format!("SELECT {COLUMNS} FROM broadcasts WHERE account_id = $1 AND id = $2"),
                &[a.into(), id.into()],
            )?)
        })
        .await
    }

    /// A bot's broadcasts, newest first.
    pub async fn list_broadcasts(
        &self,
        account_id: &str,
        bot_id: &str,
        page: PageRequest,
    ) -> Result<Page<BroadcastRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM broadcasts
             WHERE account_id = $1 AND bot_id = $2 AND (CAST($3 AS TEXT) IS NULL OR id < $3)
             ORDER BY id DESC LIMIT $4"
        );
        let params = vec![account_id.into(), bot_id.into(), page.after.clone().into()];
        self.read_page(sql, params, page, broadcast_from, |b| b.id.clone())
            .await
    }

    /// How a broadcast's recipients stand.
    pub async fn broadcast_counts(&self, id: &str) -> Result<RecipientCounts> {
        let id = id.to_owned();
        self.read(move |c| {
            let rows = c.query(
                "SELECT r.status, CASE WHEN m.status = 'failed' THEN 1 ELSE 0 END, COUNT(*)
                 FROM broadcast_recipients r LEFT JOIN channel_messages m ON m.id = r.message_id
                 WHERE r.broadcast_id = $1
                 GROUP BY r.status, CASE WHEN m.status = 'failed' THEN 1 ELSE 0 END",
                &[id.into()],
            )?;
            let mut out = RecipientCounts::default();
            for r in rows {
                let n = u64::try_from(r.int(2)?).unwrap_or(0);
                match (r.text(0)?.as_str(), r.int(1)? == 1) {
                    ("pending", _) => out.pending += n,
                    (_, true) => out.failed += n,
                    ("sent", false) => out.sent += n,
                    _ => out.skipped += n,
                }
            }
            Ok(out)
        })
        .await
    }

    /// A broadcast's recipients in contact order, after `after`, at most
    /// `limit`.
    pub async fn list_broadcast_recipients(
        &self,
        id: &str,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<RecipientRow>> {
        let id = id.to_owned();
        self.read(move |c| {
            c.query(
                "SELECT r.contact_id,
                        CASE WHEN m.status = 'failed' THEN 'failed' ELSE r.status END,
                        CASE WHEN m.status = 'failed' THEN m.last_error ELSE r.reason END,
                        r.message_id
                 FROM broadcast_recipients r LEFT JOIN channel_messages m ON m.id = r.message_id
                 WHERE r.broadcast_id = $1 AND (CAST($2 AS TEXT) IS NULL OR r.contact_id > $2)
                 ORDER BY r.contact_id LIMIT $3",
                &[
                    id.into(),
                    after.into(),
                    i64::try_from(limit).unwrap_or(i64::MAX).into(),
                ],
            )?
            .iter()
            .map(|r| {
                Ok(RecipientRow {
                    contact_id: r.text(0)?,
                    status: r.text(1)?,
                    reason: r.opt_text(2)?,
                    message_id: r.opt_text(3)?,
                })
            })
            .collect()
        })
        .await
    }

    /// Cancels, pauses or resumes a broadcast; `Conflict` when its state
    /// does not allow it.
    pub async fn act_on_broadcast(
        &self,
        account_id: &str,
        id: &str,
        action: BroadcastAction,
    ) -> Result<BroadcastRow> {
        let (a, id) = (account_id.to_owned(), id.to_owned());
        self.write(move |c| {
            let row = load(c, &id)?;
            if row.account_id != a {
                return Err(StoreError::NotFound);
            }
            let next = row
                .state
                .apply(action, row.started_at.is_some())
                .map_err(StoreError::Conflict)?;
            let now = now_ms();
            let finished = (next == BroadcastState::Cancelled).then_some(now);
            c.execute(
                "UPDATE broadcasts SET state = $1, finished_at = COALESCE($2, finished_at), updated_at = $3 WHERE id = $4",
                &[next.as_str().into(), finished.into(), now.into(), (&id).into()],
            )?;
            load(c, &id)
        })
        .await
    }

    /// Starts the broadcasts due at `now` (at most `limit`): each becomes
    /// `running` with one pending recipient per contact its segment matches
    /// now. Returns the ids started. A broadcast whose segment is gone
    /// starts with no recipients, and so completes.
    pub async fn start_due_broadcasts(&self, now: i64, limit: usize) -> Result<Vec<String>> {
        let skip = self.backend.skip_locked();
        self.write(move |c| {
            let due = c.query(
                &format!(
                    "SELECT id FROM broadcasts WHERE state = 'scheduled' AND schedule_at <= $1
                     ORDER BY schedule_at LIMIT $2 {skip}"
                ),
                &[now.into(), i64::try_from(limit).unwrap_or(1).into()],
            )?;
            let mut started = Vec::new();
            for r in due {
                let b = load(c, &r.text(0)?)?;
                let filter = c
                    .query_opt(
                        "SELECT filter FROM segments WHERE account_id = $1 AND bot_id = $2 AND id = $3",
                        &[(&b.account_id).into(), (&b.bot_id).into(), (&b.segment_id).into()],
                    )?
                    .map(|r| r.text(0))
                    .transpose()?
                    .and_then(|f| ContactFilter::compile(&f).ok());
                if let Some(filter) = filter {
                    let mut after = None;
                    loop {
                        let page = scan(
                            c,
                            (&b.account_id, &b.bot_id),
                            Some(&filter),
                            None,
                            after,
                            10_000,
                            10_000,
                        )?;
                        for contact in &page.items {
                            c.execute(
                                "INSERT INTO broadcast_recipients (broadcast_id, contact_id, status, updated_at)
                                 VALUES ($1, $2, 'pending', $3)",
                                &[(&b.id).into(), (&contact.id).into(), now.into()],
                            )?;
                        }
                        match page.next_after {
                            Some(next) => after = Some(next),
                            None => break,
                        }
                    }
                }
                c.execute(
                    "UPDATE broadcasts SET state = 'running', started_at = $1, updated_at = $1 WHERE id = $2",
                    &[now.into(), (&b.id).into()],
                )?;
                let recipients = c
                    .query_one(
                        "SELECT COUNT(*) FROM broadcast_recipients WHERE broadcast_id = $1",
                        &[(&b.id).into()],
                    )?
                    .int(0)?;
                let data = json!({"broadcast_id": b.id, "segment_id": b.segment_id, "recipients": recipients});
                let event = EventRow::new(&b.account_id, &b.bot_id, EventType::BroadcastStarted.as_str(), None, data.to_string());
                insert_event(c, &event, None, None)?;
                started.push(b.id);
            }
            Ok(started)
        })
        .await
    }

    /// Ids of the running broadcasts with their rates.
    pub async fn running_broadcasts(&self) -> Result<Vec<(String, i64)>> {
        self.read(|c| {
            c.query(
                "SELECT id, rate FROM broadcasts WHERE state = 'running' ORDER BY id",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.text(0)?, r.int(1)?)))
            .collect()
        })
        .await
    }

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

    /// A running campaign broadcast and up to `limit` of its pending
    /// recipients (in contact order), each with its contact and where it is
    /// reached; `None` when the broadcast is not a running campaign one.
    /// Nothing is claimed: each recipient is marked in its own turn's
    /// transaction ([`RecipientMark`]), which fails when another node
    /// marked it first.
    pub async fn campaign_recipients(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<Option<(BroadcastRow, Vec<CampaignRecipient>)>> {
        let id = id.to_owned();
        self.read(move |c| {
            let b = load(c, &id)?;
            if b.state != BroadcastState::Running || b.message.campaign.is_none() {
                return Ok(None);
            }
            let channels: HashMap<String, Arc<ChannelRow>> = c
                .query(
                    &format!(
                        "SELECT {CH_COLUMNS} FROM channels WHERE account_id = $1 AND bot_id = $2"
                    ),
                    &[(&b.account_id).into(), (&b.bot_id).into()],
                )?
                .iter()
                .map(|r| channel_from(r).map(|ch| (ch.id.clone(), Arc::new(ch))))
                .collect::<Result<_>>()?;
            let pending = c.query(
                "SELECT contact_id FROM broadcast_recipients
                 WHERE broadcast_id = $1 AND status = 'pending'
                 ORDER BY contact_id LIMIT $2",
                &[(&id).into(), i64::try_from(limit).unwrap_or(1).into()],
            )?;
            let mut out = Vec::with_capacity(pending.len());
            for r in pending {
                let contact_id = r.text(0)?;
                let rec = c
                    .query_opt(
                        &format!("SELECT {CONTACT_COLUMNS} FROM contacts c WHERE c.id = $1"),
                        &[(&contact_id).into()],
                    )?
                    .map(|r| record_from(&r))
                    .transpose()?;
                let Some(rec) = rec else {
                    // Deleted since the start: nowhere to reach it.
                    out.push(CampaignRecipient {
                        contact_id,
                        found: None,
                        reach: None,
                    });
                    continue;
                };
                let reach = address_of(c, &channels, &rec.id, rec.phone.as_deref(), false)?;
                let row = super::conversations::ContactRow {
                    id: rec.id.clone(),
                    phone: rec.phone.clone(),
                    external_id: rec.external_id.clone(),
                    attributes: serde_json::Value::Object(rec.attributes.clone()).to_string(),
                };
                out.push(CampaignRecipient {
                    contact_id,
                    found: Some((row, rec.facts())),
                    reach,
                });
            }
            Ok(Some((b, out)))
        })
        .await
    }

    /// Marks a pending recipient skipped for `reason`; answers whether it
    /// was still pending.
    pub async fn skip_broadcast_recipient(
        &self,
        id: &str,
        contact_id: &str,
        reason: &str,
    ) -> Result<bool> {
        let (id, contact, reason) = (id.to_owned(), contact_id.to_owned(), reason.to_owned());
        self.write(move |c| {
            let n = c.execute(
                "UPDATE broadcast_recipients SET status = 'skipped', reason = $1, updated_at = $2
                 WHERE broadcast_id = $3 AND contact_id = $4 AND status = 'pending'",
                &[reason.into(), now_ms().into(), id.into(), contact.into()],
            )?;
            Ok(n == 1)
        })
        .await
    }

    /// Completes a running broadcast with no pending recipient left;
    /// answers whether none is left.
    pub async fn finish_broadcast_if_done(&self, id: &str, now: i64) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |c| {
            let b = load(c, &id)?;
            if b.state != BroadcastState::Running {
                return Ok(false);
            }
            finish_if_done(c, &b, now)
        })
        .await
    }
}
