//! Pruning: removes the rows [`crate::domain::retention`] lets go, in small
//! batches, so the database stays bounded.
//!
//! Each batch is one write through the group-commit writer and touches at
//! most a few thousand rows, so it holds the writer for milliseconds, not
//! for as long as a whole backlog takes; [`Store::prune`] repeats batches
//! until nothing qualifies. Events and conversations can be old and still
//! kept (a pending delivery, an active conversation), so their batches walk
//! the age index with a cursor and look at most one batch of rows each:
//! however many old rows are kept, a batch never scans past them again.
//!
//! The SQL is the same on both backends (`DELETE … RETURNING`, `LIMIT` in a
//! subquery). Every delete names its rule again in its own `WHERE`, so a
//! row that changed since it was picked (a dead delivery sent again, say)
//! is left alone.
//!
//! On PostgreSQL, events, deliveries and attempts are partitioned by
//! period ([`partitions`]): a prune first drops the partitions whose every
//! row may go, which deletes no row one by one; the batches then clear
//! what is left (finished rows of a period a pending delivery still keeps,
//! rows of the `DEFAULT` partition).
//!
//! On SQLite, [`Store::release_free_pages`] then hands freed pages back to
//! the file system (`PRAGMA incremental_vacuum`), for files created with
//! `auto_vacuum = INCREMENTAL` (every file this version creates).

use super::{BackendKind, Conn, Result, Store, Value};
use crate::domain::retention::{
    Cutoffs, OPEN_CONVERSATION, PruneCounts, PruneKind, UNFINISHED_DELIVERY,
};
use std::sync::LazyLock;

pub mod partitions;

/// Most events, attempts or audit entries one batch removes.
pub const BATCH_ROWS: i64 = 500;

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

/// An event (`x`) none of whose deliveries is unfinished or changed at or
/// after the cut-off `$1`.
static EVENT_FREE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = x.id
               AND (d.status IN ({}) OR d.updated_at >= $1))",
        quoted(&UNFINISHED_DELIVERY)
    )
});

/// A conversation (`x`) that has ended.
static CONVERSATION_ENDED: LazyLock<String> =
    LazyLock::new(|| format!("x.status NOT IN ({})", quoted(&OPEN_CONVERSATION)));

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

/// Where a walk along an age index stopped: the last row looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// Its time (Unix ms).
    pub at: i64,
    /// Its id.
    pub id: String,
}

/// What one batch did, and where the next one starts (`None`: the stage
/// is done).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Rows removed, per kind.
    pub removed: PruneCounts,
    /// The cursor for the next batch of the same stage.
    pub next: Option<Cursor>,
}

/// Looks at up to `limit` rows of `table` older than `cut`, after
/// `after`, in age order; answers the ids of those `rule` lets go and the
/// cursor to go on from (when `limit` rows were looked at). `>= $2` bounds
/// the index range, so earlier rows are not read again.
fn walk(
    c: &mut dyn Conn,
    table: &str,
    at: &str,
    rule: &str,
    cut: i64,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<(Vec<Value>, Option<Cursor>)> {
    let (after_at, after_id) = after.map_or((i64::MIN, String::new()), |a| (a.at, a.id.clone()));
    let rows = c.query(
        &format!(
            "SELECT x.id, x.{at}, CASE WHEN {rule} THEN 1 ELSE 0 END
             FROM {table} x
             WHERE x.{at} < $1 AND x.{at} >= $2 AND (x.{at} > $2 OR x.id > $3)
             ORDER BY x.{at}, x.id LIMIT $4"
        ),
        &[cut.into(), after_at.into(), after_id.into(), limit.into()],
    )?;
    let next = match rows.last() {
        Some(last) if rows.len() as i64 >= limit => Some(Cursor {
            at: last.int(1)?,
            id: last.text(0)?,
        }),
        _ => None,
    };
    let mut due = Vec::new();
    for r in &rows {
        if r.int(2)? == 1 {
            due.push(Value::Text(r.text(0)?));
        }
    }
    Ok((due, next))
}

/// Removes one batch of events with their deliveries and attempts.
fn events_batch(c: &mut dyn Conn, cut: i64, after: Option<&Cursor>, limit: i64) -> Result<Batch> {
    let mut n = PruneCounts::default();
    let (due, next) = walk(c, "events", "created_at", &EVENT_FREE, cut, after, limit)?;
    if due.is_empty() {
        return Ok(Batch { removed: n, next });
    }
    // The rule again, in the DELETE itself: a delivery sent again since
    // the walk keeps its event.
    let list = marks(2, due.len());
    let mut params = vec![Value::Int(cut)];
    params.extend(due);
    let gone = ids(c.query(
        &format!(
            "DELETE FROM events AS x WHERE x.id IN ({list}) AND {} RETURNING id",
            *EVENT_FREE
        ),
        &params,
    )?)?;
    if gone.is_empty() {
        return Ok(Batch { removed: n, next });
    }
    n.add(PruneKind::Events, gone.len() as u64);
    let list = marks(1, gone.len());
    // An Idempotency-Key is kept exactly as long as its event.
    c.execute(
        &format!("DELETE FROM event_keys WHERE event_id IN ({list})"),
        &gone,
    )?;
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
    Ok(Batch { removed: n, next })
}

/// Removes one batch of ended conversations with what hangs off them.
fn conversations_batch(
    c: &mut dyn Conn,
    cut: i64,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<Batch> {
    let mut n = PruneCounts::default();
    let (due, next) = walk(
        c,
        "conversations",
        "updated_at",
        &CONVERSATION_ENDED,
        cut,
        after,
        limit,
    )?;
    if due.is_empty() {
        return Ok(Batch { removed: n, next });
    }
    let list = marks(2, due.len());
    let mut params = vec![Value::Int(cut)];
    params.extend(due);
    let gone = ids(c.query(
        &format!(
            "DELETE FROM conversations AS x
             WHERE x.id IN ({list}) AND x.updated_at < $1 AND {}
             RETURNING id",
            *CONVERSATION_ENDED
        ),
        &params,
    )?)?;
    if gone.is_empty() {
        return Ok(Batch { removed: n, next });
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
    Ok(Batch { removed: n, next })
}

/// Removes one batch of rows of a table with a time column (every row
/// older than the cut-off goes, so no cursor is needed).
fn aged_batch(
    c: &mut dyn Conn,
    table: &str,
    at: &str,
    kind: PruneKind,
    cut: i64,
    limit: i64,
) -> Result<Batch> {
    let mut n = PruneCounts::default();
    let sql = format!(
        "DELETE FROM {table} WHERE id IN
            (SELECT id FROM {table} WHERE {at} < $1 ORDER BY {at} LIMIT $2)"
    );
    let removed = c.execute(&sql, &[cut.into(), limit.into()])?;
    n.add(kind, removed);
    // Not a real position: "go on" for as long as batches come back full.
    let next = (removed as i64 >= limit).then(|| Cursor {
        at: cut,
        id: String::new(),
    });
    Ok(Batch { removed: n, next })
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

    /// The kind whose rows the stage picks (others go with them).
    pub fn lead(self) -> PruneKind {
        match self {
            Stage::Events => PruneKind::Events,
            Stage::Attempts => PruneKind::Attempts,
            Stage::Conversations => PruneKind::Conversations,
            Stage::Audit => PruneKind::Audit,
        }
    }

    fn run(self, c: &mut dyn Conn, cut: i64, after: Option<&Cursor>, limit: i64) -> Result<Batch> {
        match self {
            Stage::Events => events_batch(c, cut, after, limit),
            Stage::Attempts => aged_batch(c, "attempts", "started_at", self.lead(), cut, limit),
            Stage::Conversations => conversations_batch(c, cut, after, limit),
            Stage::Audit => aged_batch(c, "audit", "at", self.lead(), cut, limit),
        }
    }
}

fn count(c: &mut dyn Conn, sql: &str, params: &[Value]) -> Result<u64> {
    Ok(c.query_one(sql, params)?.int(0)?.max(0) as u64)
}

impl Store {
    /// Removes one batch of `stage` at `cut`, looking at most at `limit`
    /// rows from `after` on (`None`: the oldest); answers what went and
    /// where the next batch starts.
    pub async fn prune_batch(
        &self,
        stage: Stage,
        cut: i64,
        after: Option<Cursor>,
        limit: i64,
    ) -> Result<Batch> {
        self.write(move |c| stage.run(c, cut, after.as_ref(), limit))
            .await
    }

    /// Removes everything the cut-offs let go: on PostgreSQL whole
    /// partitions first, then batch by batch; answers what went.
    pub async fn prune(&self, cutoffs: &Cutoffs) -> Result<PruneCounts> {
        let mut total = PruneCounts::default();
        // A partition that cannot be dropped now (its tables' locks were
        // busy) is tried again on the next pass; the batches run anyway.
        match self.drop_partitions(cutoffs).await {
            Ok(n) => total.merge(&n),
            Err(e) => tracing::warn!(error = %e, "could not drop old partitions"),
        }
        for stage in Stage::ALL {
            let Some(cut) = stage.cutoff(cutoffs) else {
                continue;
            };
            let mut after = None;
            loop {
                let batch = self.prune_batch(stage, cut, after, stage.batch()).await?;
                total.merge(&batch.removed);
                match batch.next {
                    Some(next) => after = Some(next),
                    None => break,
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
                let due = format!("FROM events x WHERE x.created_at < $1 AND {}", *EVENT_FREE);
                let events = format!("SELECT x.id {due}");
                n.add(
                    PruneKind::Events,
                    count(c, &format!("SELECT COUNT(*) {due}"), &[cut.into()])?,
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
                let due = format!(
                    "FROM conversations x WHERE x.updated_at < $1 AND {}",
                    *CONVERSATION_ENDED
                );
                let convs = format!("SELECT x.id {due}");
                n.add(
                    PruneKind::Conversations,
                    count(c, &format!("SELECT COUNT(*) {due}"), &[cut.into()])?,
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
