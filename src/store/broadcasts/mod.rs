//! Broadcasts and their recipients.
//!
//! # Exactly once per recipient
//!
//! * **Start.** [`Store::start_due_broadcasts`](super::Store::start_due_broadcasts)
//!   moves a due broadcast from `scheduled` to `running` and writes one
//!   `broadcast_recipients` row per contact its segment's filter matches at
//!   that moment, all in one transaction: either the broadcast runs with its
//!   whole list or it is still scheduled.
//! * **Send.** [`Store::send_broadcast_batch`](super::Store::send_broadcast_batch)
//!   takes pending rows (skipping rows another node holds, `FOR UPDATE SKIP
//!   LOCKED` on PostgreSQL; the single writer excludes concurrent claims on
//!   SQLite) and, in the same transaction, writes each recipient's outbox
//!   message and marks the row `sent` (or `skipped` with its reason). A
//!   process killed mid-batch rolls the whole batch back; a committed row is
//!   never pending again. So no recipient gets two outbox messages; the
//!   outbox then sends each at most once (its own guarantees: per-lane
//!   order, retries, statuses; a send interrupted by a kill is failed as
//!   `interrupted`, never repeated).
//! * **Events.** `broadcast.started` is written in the start's transaction
//!   and `broadcast.completed` in the one that handles the last recipient.
//! * **Counts** join each recipient to its outbox message: one whose
//!   message ended `failed` counts (and is listed) as failed, with the
//!   message's error as its reason.
//!
//! # Where the code is
//!
//! One folder, one concern per file:
//!
//! * `records.rs`: creating, reading, listing and acting on broadcasts
//!   (cancel, pause, resume), and how their recipients stand.
//! * `start.rs`: starting due broadcasts, each with its whole recipient
//!   list, in one transaction.
//! * `send.rs`: a batch of a plain broadcast's recipients, each written to
//!   the outbox (or skipped) in one transaction.
//! * `campaign.rs`: a campaign broadcast's recipients, each marked sent by
//!   the chat turn that handles it.
//! * `reach.rs`: where a recipient is reached (its channel, its id there,
//!   its window).
//! * `completion.rs`: completing a broadcast once no recipient is pending,
//!   with its `broadcast.completed` tally.
//!
//! This file holds the broadcast row and how it is read.

mod campaign;
mod completion;
mod reach;
mod records;
mod send;
mod start;

pub(super) use campaign::mark_sent;
pub use campaign::{CampaignRecipient, RECIPIENT_HANDLED, RecipientMark};
pub use reach::Reach;
pub use records::{RecipientCounts, RecipientRow};
pub use send::BatchOutcome;

use super::{Conn, Result, Row, StoreError};
use crate::domain::broadcast::{BroadcastMessage, BroadcastState};

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

fn load(c: &mut dyn Conn, id: &str) -> Result<BroadcastRow> {
    broadcast_from(&c.query_one(
        &format!("SELECT {COLUMNS} FROM broadcasts WHERE id = $1"),
        &[id.into()],
    )?)
}
