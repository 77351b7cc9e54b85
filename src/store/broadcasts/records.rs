//! Broadcasts as the API sees them: created (scheduled), read, listed,
//! cancelled, paused and resumed, and how their recipients stand (each
//! joined to its outbox message, so a failed send counts as failed).

use super::{BroadcastRow, COLUMNS, broadcast_from, load};
use crate::domain::broadcast::{BroadcastAction, BroadcastMessage, BroadcastState};
use crate::domain::ids::new_id;
use crate::store::{Page, PageRequest, Result, Store, StoreError, now_ms};

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
    /// [`crate::store::channels::INTERRUPTED`]).
    pub reason: Option<String>,
    /// Its first outbox message.
    pub message_id: Option<String>,
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
}
