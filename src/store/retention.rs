//! Pruning: removes the rows [`crate::domain::retention`] lets go, in small
//! batches, so the database stays bounded.
//!
//! Each batch is one write through the group-commit writer and touches at
//! most a few thousand rows, so it holds the writer for milliseconds, not
//! for as long as a whole backlog takes; [`Store::prune`] repeats batches
//! until nothing qualifies. The SQL is the same on both backends (`DELETE …
//! RETURNING`, `LIMIT` in a subquery). Every delete names its rule again in
//! its own `WHERE`, so a row that changed since it was picked (a dead
//! delivery sent again, say) is left alone.
//!
//! On SQLite, [`Store::release_free_pages`] then hands freed pages back to
//! the file system (`PRAGMA incremental_vacuum`), for files created with
//! `auto_vacuum = INCREMENTAL` (every file this version creates).

use super::{BackendKind, Conn, Result, Store, Value};
use crate::domain::retention::{
    Cutoffs, OPEN_CONVERSATION, PruneCounts, PruneKind, UNFINISHED_DELIVERY,
};
use std::sync::LazyLock;

/// Most events, attempts or audit entries one batch removes.
pub const BATCH_ROWS: i64 = 1000;

/// Most conversations one batch removes (each takes its transcript along,
/// tens of rows).
pub const BATCH_CONVERSATIONS: i64 = 100;

/// Most free pages one write hands back to the file system.
pub const VACUUM_PAGES: i64 = 2000;

fn quoted(list: &[&str]) -> String {
    list.iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Events created before `$1` none of whose deliveries is unfinished or
/// changed at or after `$1`.
static EVENTS_DUE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "FROM events e WHERE e.created_at < $1 AND NOT EXISTS (
            SELECT 1 FROM deliveries d WHERE d.event_id = e.id
               AND (d.status IN ({}) OR d.updated_at >= $1))",
        quoted(&UNFINISHED_DELIVERY)
    )
});

/// Conversations ended and last updated before `$1`.
static CONVERSATIONS_DUE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "FROM conversations c WHERE c.updated_at < $1 AND c.status NOT IN ({})",
        quoted(&OPEN_CONVERSATION)
    )
});

static FINISHED: LazyLock<String> =
    LazyLock::new(|| format!("status NOT IN ({})", quoted(&UNFINISHED_DELIVERY)));

/// `$from, $from+1, …` for `n` parameters.
fn marks(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn ids(rows: Vec<super::Row>) -> Result<Vec<Value>> {
    rows.iter().map(|r| Ok(Value::Text(r.text(0)?))).collect()
}

/// Removes one batch of events with their deliveries and attempts.
fn events_batch(c: &mut dyn Conn, cut: i64, limit: i64) -> Result<PruneCounts> {
    let mut n = PruneCounts::default();
    let gone = ids(c.query(
        &format!(
            "DELETE FROM events WHERE id IN (SELECT e.id {} ORDER BY e.created_at LIMIT $2)
             RETURNING id",
            *EVENTS_DUE
        ),
        &[cut.into(), limit.into()],
    )?)?;
    if gone.is_empty() {
        return Ok(n);
    }
    n.add(PruneKind::Events, gone.len() as u64);
    let list = marks(1, gone.len());
    n.add(
        PruneKind::Attempts,
        c.execute(
            &format!(
                "DELETE FROM attempts WHERE delivery_id IN
                    (SELECT id FROM deliveries WHERE event_id IN ({list}) AND {})",
                *FINISHED
            ),
            &gone,
        )?,
    );
    n.add(
        PruneKind::Deliveries,
        c.execute(
            &format!(
                "DELETE FROM deliveries WHERE event_id IN ({list}) AND {}",
                *FINISHED
            ),
            &gone,
        )?,
    );
    Ok(n)
}

/// Removes one batch of ended conversations with what hangs off them.
fn conversations_batch(c: &mut dyn Conn, cut: i64, limit: i64) -> Result<PruneCounts> {
    let mut n = PruneCounts::default();
    let gone = ids(c.query(
        &format!(
            "DELETE FROM conversations WHERE id IN
                (SELECT c.id {} ORDER BY c.updated_at LIMIT $2)
             RETURNING id",
            *CONVERSATIONS_DUE
        ),
        &[cut.into(), limit.into()],
    )?)?;
    if gone.is_empty() {
        return Ok(n);
    }
    n.add(PruneKind::Conversations, gone.len() as u64);
    let list = marks(1, gone.len());
    for (kind, table) in [
        (PruneKind::Messages, "messages"),
        (PruneKind::Timers, "timers"),
        (PruneKind::WebhookCalls, "webhook_calls"),
    ] {
        let sql = format!("DELETE FROM {table} WHERE conversation_id IN ({list})");
        n.add(kind, c.execute(&sql, &gone)?);
    }
    Ok(n)
}

/// Removes one batch of rows of a table with a time column.
fn aged_batch(
    c: &mut dyn Conn,
    table: &str,
    at: &str,
    kind: PruneKind,
    cut: i64,
    limit: i64,
) -> Result<PruneCounts> {
    let mut n = PruneCounts::default();
    let sql = format!(
        "DELETE FROM {table} WHERE id IN
            (SELECT id FROM {table} WHERE {at} < $1 ORDER BY {at} LIMIT $2)"
    );
    n.add(kind, c.execute(&sql, &[cut.into(), limit.into()])?);
    Ok(n)
}

/// One stage of a prune: which rows it removes and how many a batch takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Events with their deliveries and attempts.
    Events,
    /// Attempts by age.
    Attempts,
    /// Ended conversations with their transcripts.
    Conversations,
    /// Audit entries by age.
    Audit,
}

impl Stage {
    /// Every stage, in the order a prune runs them.
    pub const ALL: [Stage; 4] = [
        Stage::Events,
        Stage::Attempts,
        Stage::Conversations,
        Stage::Audit,
    ];

    /// This stage's cut-off, if it runs at all.
    pub fn cutoff(self, c: &Cutoffs) -> Option<i64> {
        match self {
            Stage::Events => c.events,
            Stage::Attempts => c.attempts,
            Stage::Conversations => c.conversations,
            Stage::Audit => c.audit,
        }
    }

    /// Most leading rows one batch of this stage removes.
    pub fn batch(self) -> i64 {
        match self {
            Stage::Conversations => BATCH_CONVERSATIONS,
            _ => BATCH_ROWS,
        }
    }

    /// The leading kind: a batch that removed fewer of it than
    /// [`Stage::batch`] was the stage's last.
    pub fn lead(self) -> PruneKind {
        match self {
            Stage::Events => PruneKind::Events,
            Stage::Attempts => PruneKind::Attempts,
            Stage::Conversations => PruneKind::Conversations,
            Stage::Audit => PruneKind::Audit,
        }
    }

    fn run(self, c: &mut dyn Conn, cut: i64, limit: i64) -> Result<PruneCounts> {
        match self {
            Stage::Events => events_batch(c, cut, limit),
            Stage::Attempts => aged_batch(c, "attempts", "started_at", self.lead(), cut, limit),
            Stage::Conversations => conversations_batch(c, cut, limit),
            Stage::Audit => aged_batch(c, "audit", "at", self.lead(), cut, limit),
        }
    }
}

fn count(c: &mut dyn Conn, sql: &str, params: &[Value]) -> Result<u64> {
    Ok(c.query_one(sql, params)?.int(0)?.max(0) as u64)
}

impl Store {
    /// Removes one batch of `stage` at `cut` (at most `limit` leading rows);
    /// answers what went.
    pub async fn prune_batch(&self, stage: Stage, cut: i64, limit: i64) -> Result<PruneCounts> {
        self.write(move |c| stage.run(c, cut, limit)).await
    }

    /// Removes everything the cut-offs let go, batch by batch; answers what
    /// went.
    pub async fn prune(&self, cutoffs: &Cutoffs) -> Result<PruneCounts> {
        let mut total = PruneCounts::default();
        for stage in Stage::ALL {
            let Some(cut) = stage.cutoff(cutoffs) else {
                continue;
            };
            loop {
                let n = self.prune_batch(stage, cut, stage.batch()).await?;
                total.merge(&n);
                if (n.get(stage.lead()) as i64) < stage.batch() {
                    break;
                }
            }
        }
        Ok(total)
    }

    /// What [`Store::prune`] would remove at these cut-offs, removing
    /// nothing.
    pub async fn count_prunable(&self, cutoffs: &Cutoffs) -> Result<PruneCounts> {
        let cutoffs = *cutoffs;
        self.read(move |c| {
            let mut n = PruneCounts::default();
            // Attempts of the events' deliveries go with them; the attempt
            // rule takes older ones of any delivery.
            let attempt_cut = cutoffs.attempts.unwrap_or(i64::MIN);
            if let Some(cut) = cutoffs.events {
                let events = format!("SELECT e.id {}", *EVENTS_DUE);
                n.add(
                    PruneKind::Events,
                    count(
                        c,
                        &format!("SELECT COUNT(*) {}", *EVENTS_DUE),
                        &[cut.into()],
                    )?,
                );
                n.add(
                    PruneKind::Deliveries,
                    count(
                        c,
                        &format!("SELECT COUNT(*) FROM deliveries WHERE event_id IN ({events})"),
                        &[cut.into()],
                    )?,
                );
                n.add(
                    PruneKind::Attempts,
                    count(
                        c,
                        &format!(
                            "SELECT COUNT(*) FROM attempts WHERE started_at < $2 OR delivery_id IN
                                (SELECT id FROM deliveries WHERE event_id IN ({events}))"
                        ),
                        &[cut.into(), attempt_cut.into()],
                    )?,
                );
            } else if let Some(cut) = cutoffs.attempts {
                n.add(
                    PruneKind::Attempts,
                    count(
                        c,
                        "SELECT COUNT(*) FROM attempts WHERE started_at < $1",
                        &[cut.into()],
                    )?,
                );
            }
            if let Some(cut) = cutoffs.conversations {
                let convs = format!("SELECT c.id {}", *CONVERSATIONS_DUE);
                n.add(
                    PruneKind::Conversations,
                    count(
                        c,
                        &format!("SELECT COUNT(*) {}", *CONVERSATIONS_DUE),
                        &[cut.into()],
                    )?,
                );
                for (kind, table) in [
                    (PruneKind::Messages, "messages"),
                    (PruneKind::Timers, "timers"),
                    (PruneKind::WebhookCalls, "webhook_calls"),
                ] {
                    let sql =
                        format!("SELECT COUNT(*) FROM {table} WHERE conversation_id IN ({convs})");
                    n.add(kind, count(c, &sql, &[cut.into()])?);
                }
            }
            if let Some(cut) = cutoffs.audit {
                n.add(
                    PruneKind::Audit,
                    count(c, "SELECT COUNT(*) FROM audit WHERE at < $1", &[cut.into()])?,
                );
            }
            Ok(n)
        })
        .await
    }

    /// On SQLite, hands up to `pages` free pages back to the file system
    /// (`PRAGMA incremental_vacuum`); answers how many were free before.
    /// Nothing on PostgreSQL (its autovacuum reuses the space), nor on a
    /// SQLite file made without `auto_vacuum = INCREMENTAL`.
    pub async fn release_free_pages(&self, pages: i64) -> Result<u64> {
        if self.kind() != BackendKind::Sqlite {
            return Ok(0);
        }
        self.write(move |c| {
            let mode = c.query_one("PRAGMA auto_vacuum", &[])?.int(0)?;
            let free = c.query_one("PRAGMA freelist_count", &[])?.int(0)?;
            if mode == 2 && free > 0 {
                c.query(&format!("PRAGMA incremental_vacuum({pages})"), &[])?;
            }
            Ok(free.max(0) as u64)
        })
        .await
    }

    /// On SQLite, the database's size as SQLite sees it (pages in use and
    /// free ones, times the page size), in bytes; `None` on PostgreSQL.
    pub async fn sqlite_size(&self) -> Result<Option<(u64, u64)>> {
        if self.kind() != BackendKind::Sqlite {
            return Ok(None);
        }
        self.read(|c| {
            let size = c.query_one("PRAGMA page_size", &[])?.int(0)?;
            let pages = c.query_one("PRAGMA page_count", &[])?.int(0)?;
            let free = c.query_one("PRAGMA freelist_count", &[])?.int(0)?;
            Ok(Some(((pages * size) as u64, (free * size) as u64)))
        })
        .await
    }
}

#[cfg(test)]
mod tests;
