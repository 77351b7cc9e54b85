//! Conversation timers: reminders, timeouts and expiries, stored so they
//! survive restarts and fire once across several nodes.
//!
//! A chat turn replaces its conversation's timers in the turn's own
//! transaction (`write_timers`, called by `commit_turn`), so a conversation
//! that moves on never keeps a stale timer. [`Store::claim_due_timers`]
//! first probes the `due_at` index on a read connection (a tick with
//! nothing due costs no write), then leases the due ones (oldest first, through the `due_at` index; `FOR
//! UPDATE SKIP LOCKED` on PostgreSQL, the single writer on SQLite), and the
//! turn that handles a fired timer deletes it (or replaces them all). A
//! claimer that dies leaves its lease to run out: the timer is claimed again
//! after `lease_ms`, and the conversation's revision check keeps a late
//! duplicate from changing anything twice.

use super::{Conn, Result, Store};

/// A stored timer.
#[derive(Clone, Debug, PartialEq)]
pub struct TimerRow {
    /// Timer id (`tmr_…`).
    pub id: String,
    /// Account.
    pub account_id: String,
    /// Bot.
    pub bot_id: String,
    /// Conversation it belongs to.
    pub conversation_id: String,
    /// `reminder`, `timeout` or `expiry`.
    pub kind: String,
    /// The node it was set at (`None` for expiry).
    pub node: Option<String>,
    /// When it is due, Unix ms.
    pub due_at: i64,
}

/// A timer a turn sets.
#[derive(Clone, Debug, PartialEq)]
pub struct TimerWrite {
    /// `reminder`, `timeout` or `expiry`.
    pub kind: String,
    /// The node it was set at.
    pub node: Option<String>,
    /// When it is due, Unix ms.
    pub due_at: i64,
}

/// What a turn does to its conversation's timers.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct TimerChange {
    /// `Some`: replace them all with these. `None`: keep them.
    pub replace: Option<Vec<TimerWrite>>,
    /// A timer that fired and is handled by this turn (deleted).
    pub fired: Option<String>,
}

/// Applies a turn's timer change inside its transaction.
pub(crate) fn write_timers(
    c: &mut dyn Conn,
    account: &str,
    bot: &str,
    conversation: &str,
    change: &TimerChange,
) -> Result<()> {
    if let Some(id) = &change.fired {
        c.send("DELETE FROM timers WHERE id = $1", &[id.into()])?;
    }
    let Some(list) = &change.replace else {
        return Ok(());
    };
    c.send(
        "DELETE FROM timers WHERE conversation_id = $1",
        &[conversation.into()],
    )?;
    for t in list {
        c.send(
            "INSERT INTO timers (id, account_id, bot_id, conversation_id, kind, node, due_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                crate::domain::ids::new_id("tmr").into(),
                account.into(),
                bot.into(),
                conversation.into(),
                (&t.kind).into(),
                t.node.as_deref().into(),
                t.due_at.into(),
            ],
        )?;
    }
    Ok(())
}

impl Store {
    /// Leases up to `limit` timers due at `now` for `lease_ms` and returns
    /// them, oldest first.
    pub async fn claim_due_timers(
        &self,
        now: i64,
        limit: usize,
        lease_ms: i64,
    ) -> Result<Vec<TimerRow>> {
        // Most ticks find nothing due: one probe of the due index on a read
        // connection answers that without a write transaction (and its fsync).
        let any_due = self
            .read(move |c| {
                Ok(c.query_opt(
                    "SELECT 1 FROM timers WHERE due_at <= $1 AND locked_until <= $1 LIMIT 1",
                    &[now.into()],
                )?
                .is_some())
            })
            .await?;
        if !any_due {
            return Ok(Vec::new());
        }
        let skip = self.backend.skip_locked();
        self.write(move |c| {
            let sql = format!(
                "UPDATE timers SET locked_until = $1
                 WHERE id IN (
                    SELECT id FROM timers
                    WHERE due_at <= $2 AND locked_until <= $2
                    ORDER BY due_at LIMIT $3 {skip})
                 RETURNING id, account_id, bot_id, conversation_id, kind, node, due_at"
            );
            let mut rows = c
                .query(
                    &sql,
                    &[(now + lease_ms).into(), now.into(), (limit as i64).into()],
                )?
                .iter()
                .map(|r| {
                    Ok(TimerRow {
                        id: r.text(0)?,
                        account_id: r.text(1)?,
                        bot_id: r.text(2)?,
                        conversation_id: r.text(3)?,
                        kind: r.text(4)?,
                        node: r.opt_text(5)?,
                        due_at: r.int(6)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            rows.sort_by_key(|r| r.due_at);
            Ok(rows)
        })
        .await
    }

    /// Makes a claimed timer due again at `due_at` (an expiry that fired
    /// before the conversation's latest expiry time).
    pub async fn rearm_timer(&self, id: &str, due_at: i64) -> Result<()> {
        let id = id.to_owned();
        self.write(move |c| {
            c.execute(
                "UPDATE timers SET due_at = $1, locked_until = 0 WHERE id = $2",
                &[due_at.into(), id.into()],
            )?;
            Ok(())
        })
        .await
    }

    /// Deletes a timer that turned out to have nothing to do.
    pub async fn drop_timer(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.write(move |c| {
            c.execute("DELETE FROM timers WHERE id = $1", &[id.into()])?;
            Ok(())
        })
        .await
    }

    /// A conversation's timers, soonest first (tests and the API).
    pub async fn conversation_timers(&self, conversation: &str) -> Result<Vec<TimerRow>> {
        let conversation = conversation.to_owned();
        self.read(move |c| {
            c.query(
                "SELECT id, account_id, bot_id, conversation_id, kind, node, due_at
                 FROM timers WHERE conversation_id = $1 ORDER BY due_at",
                &[conversation.into()],
            )?
            .iter()
            .map(|r| {
                Ok(TimerRow {
                    id: r.text(0)?,
                    account_id: r.text(1)?,
                    bot_id: r.text(2)?,
                    conversation_id: r.text(3)?,
                    kind: r.text(4)?,
                    node: r.opt_text(5)?,
                    due_at: r.int(6)?,
                })
            })
            .collect()
        })
        .await
    }

    /// How many timers are stored (benchmarks).
    pub async fn count_timers(&self) -> Result<i64> {
        self.read(|c| {
            c.query_opt("SELECT COUNT(*) FROM timers", &[])?
                .map_or(Ok(0), |r| r.int(0))
        })
        .await
    }
}
