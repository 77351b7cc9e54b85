//! PostgreSQL time partitions of `events`, `deliveries` and `attempts`:
//! made ahead of time, and dropped whole once retention lets every row in
//! them go, so pruning old rows deletes nothing row by row.
//!
//! The tables are partitioned by RANGE on `id` (migration 0017): ids are
//! time-sortable, so the partition of the period `[t0, t1)` holds the ids
//! from [`id_floor`]`(t0)` to `id_floor(t1)`, and a lookup by id reaches
//! one partition. A `DEFAULT` partition takes ids of other shapes and of
//! periods with no partition yet.
//!
//! Invariants:
//! * [`Store::ensure_partitions`] is idempotent and safe with several
//!   processes at once (a transaction-scoped advisory lock, and a period
//!   that any partition already overlaps is left as it is). Rows that
//!   landed in `DEFAULT` for a period move into its partition when it is
//!   made. Making a partition locks its table briefly; like a drop, it
//!   waits at most [`LOCK_TIMEOUT`] for that and is otherwise tried again
//!   on the next pass (partitions are made days ahead).
//! * An attempts partition goes once its whole range is older than the
//!   attempts cut-off. An events partition goes, with the deliveries
//!   partition of the same period, once its whole range is older than the
//!   events cut-off and no delivery of its events is unfinished or changed
//!   at or after the cut-off; the attempts of those deliveries go with
//!   them. The rule is checked in full on a reader, then again (what can
//!   have changed since, through small indexes) inside the write that
//!   drops, with the tables locked, so a delivery sent again meanwhile
//!   keeps its partition and no partition is scanned under the lock.
//! * SQLite has none of this: everything here is a no-op there.

use super::super::{BackendKind, Conn, Result, Store, StoreError, Value};
use crate::domain::ids::{id_floor, id_time};
use crate::domain::retention::{Cutoffs, PruneCounts, PruneKind, UNFINISHED_DELIVERY};

/// One UTC day, the default width of a partition.
pub const DAY_MS: i64 = 86_400_000;

/// Serialises partition upkeep across processes (transaction-scoped).
const ADVISORY_LOCK: i64 = 7_280_418;

/// How long a drop waits for the tables' locks before it gives up (and
/// tries again on the next pass). While it waits, other statements on the
/// tables queue behind it, so the wait is kept short.
const LOCK_TIMEOUT: &str = "500ms";

/// A partitioned table and the prefix of its ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionedTable {
    /// The table's name.
    pub name: &'static str,
    /// Its ids' prefix.
    pub prefix: &'static str,
}

/// The events table.
pub const EVENTS: PartitionedTable = PartitionedTable {
    name: "events",
    prefix: "evt",
};
/// The deliveries table.
pub const DELIVERIES: PartitionedTable = PartitionedTable {
    name: "deliveries",
    prefix: "dlv",
};
/// The attempts table.
pub const ATTEMPTS: PartitionedTable = PartitionedTable {
    name: "attempts",
    prefix: "att",
};

/// Every partitioned table.
pub const TABLES: [PartitionedTable; 3] = [EVENTS, DELIVERIES, ATTEMPTS];

/// How partitions are cut: periods of `width_ms` from the Unix epoch, made
/// from the current one to `ahead` periods after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionPlan {
    /// Width of one partition (ms); at least one second.
    pub width_ms: i64,
    /// Periods made ahead of the current one.
    pub ahead: u32,
}

impl Default for PartitionPlan {
    fn default() -> Self {
        Self {
            width_ms: DAY_MS,
            ahead: 3,
        }
    }
}

impl PartitionPlan {
    /// A plan of `width_ms`-wide periods, `ahead` of them made in advance;
    /// `Invalid` for a width under one second.
    pub fn new(width_ms: i64, ahead: u32) -> Result<Self> {
        if width_ms < 1000 {
            return Err(StoreError::Invalid(format!(
                "a partition is at least 1000 ms wide, not {width_ms}"
            )));
        }
        Ok(Self { width_ms, ahead })
    }

    /// The periods `[from, to)` to have at `now_ms`: the current one and
    /// `ahead` more.
    pub fn periods(&self, now_ms: i64) -> Vec<(i64, i64)> {
        let w = self.width_ms.max(1000);
        let start = now_ms.max(0).div_euclid(w) * w;
        (0..=i64::from(self.ahead))
            .map(|k| (start + k * w, start + (k + 1) * w))
            .collect()
    }
}

/// One partition of a table, with the period it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// The partitioned table.
    pub table: &'static str,
    /// The partition's own table name.
    pub name: String,
    /// Start of its period (Unix ms).
    pub from_ms: i64,
    /// End of its period (Unix ms, exclusive).
    pub to_ms: i64,
    /// Rows in it (counted when it is reported or dropped; 0 otherwise).
    pub rows: u64,
}

/// The name of `table`'s partition of the period from `from_ms`: the UTC
/// day for day-aligned periods (`events_p20261207`), else down to the
/// millisecond (`events_p20261207_153000000`).
pub fn partition_name(table: &str, from_ms: i64, width_ms: i64) -> String {
    let at = chrono::DateTime::from_timestamp_millis(from_ms).unwrap_or_default();
    if from_ms % DAY_MS == 0 && width_ms % DAY_MS == 0 {
        format!("{table}_p{}", at.format("%Y%m%d"))
    } else {
        format!("{table}_p{}", at.format("%Y%m%d_%H%M%S%3f"))
    }
}

/// The two ids of a range partition's bound, as `pg_get_expr` shows it:
/// `FOR VALUES FROM ('evt_…') TO ('evt_…')`.
pub fn parse_bound(expr: &str) -> Option<(&str, &str)> {
    let rest = expr.strip_prefix("FOR VALUES FROM ('")?;
    let (from, rest) = rest.split_once("')")?;
    let rest = rest.strip_prefix(" TO ('")?;
    let (to, rest) = rest.split_once("')")?;
    rest.is_empty().then_some((from, to))
}

/// `table`'s range partitions (not `DEFAULT`, nor any whose bounds are not
/// id floors of its prefix), oldest first.
fn list(c: &mut dyn Conn, table: PartitionedTable) -> Result<Vec<Partition>> {
    let rows = c.query(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = to_regclass($1)",
        &[table.name.into()],
    )?;
    let mut out = Vec::new();
    for r in rows {
        let (name, bound) = (r.text(0)?, r.text(1)?);
        let Some((from, to)) = parse_bound(&bound) else {
            continue;
        };
        if let (Some(from_ms), Some(to_ms)) =
            (id_time(table.prefix, from), id_time(table.prefix, to))
        {
            out.push(Partition {
                table: table.name,
                name,
                from_ms,
                to_ms,
                rows: 0,
            });
        }
    }
    out.sort_by_key(|p| p.from_ms);
    Ok(out)
}

/// Makes `table`'s partition of `[from, to)`, moving in any rows of that
/// period the `DEFAULT` partition took meanwhile (PostgreSQL refuses a new
/// partition whose rows sit in `DEFAULT`).
fn create(c: &mut dyn Conn, table: PartitionedTable, from: i64, to: i64, width: i64) -> Result<()> {
    let t = table.name;
    let name = partition_name(t, from, width);
    // Both bounds are a prefix and characters of the id alphabet: no quote
    // can occur in them.
    let (lo, hi) = (id_floor(table.prefix, from), id_floor(table.prefix, to));
    let strays = c
        .query_opt(
            &format!("SELECT 1 FROM {t}_default WHERE id >= $1 AND id < $2 LIMIT 1"),
            &[lo.as_str().into(), hi.as_str().into()],
        )?
        .is_some();
    if !strays {
        return c.batch(&format!(
            "CREATE TABLE IF NOT EXISTS {name} PARTITION OF {t} FOR VALUES FROM ('{lo}') TO ('{hi}')"
        ));
    }
    c.batch(&format!(
        "CREATE TABLE {name} (LIKE {t} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
    ))?;
    c.execute(
        &format!(
            "WITH moved AS (DELETE FROM {t}_default WHERE id >= $1 AND id < $2 RETURNING *)
             INSERT INTO {name} SELECT * FROM moved"
        ),
        &[lo.as_str().into(), hi.as_str().into()],
    )?;
    c.batch(&format!(
        "ALTER TABLE {t} ATTACH PARTITION {name} FOR VALUES FROM ('{lo}') TO ('{hi}')"
    ))
}

/// Makes the partitions `plan` wants at `now_ms` that are missing;
/// answers how many it made.
fn ensure(c: &mut dyn Conn, now_ms: i64, plan: PartitionPlan) -> Result<u64> {
    c.batch(&format!(
        "SELECT pg_advisory_xact_lock({ADVISORY_LOCK}); SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"
    ))?;
    let mut made = 0;
    for table in TABLES {
        let have = list(c, table)?;
        for (from, to) in plan.periods(now_ms) {
            if have.iter().any(|p| p.from_ms < to && from < p.to_ms) {
                continue;
            }
            create(c, table, from, to, plan.width_ms)?;
            made += 1;
        }
    }
    c.batch("SET LOCAL lock_timeout TO DEFAULT")?;
    Ok(made)
}

fn count(c: &mut dyn Conn, sql: &str, params: &[Value]) -> Result<u64> {
    Ok(c.query_one(sql, params)?.int(0)?.max(0) as u64)
}

fn unfinished() -> String {
    UNFINISHED_DELIVERY
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A period of events whose partition (and its deliveries') may go.
#[derive(Clone, Debug, PartialEq, Eq)]
struct EventPeriod {
    events: Partition,
    deliveries: Partition,
}

impl EventPeriod {
    /// `(event id floor, event id ceiling, delivery id ceiling)`.
    fn bounds(&self) -> (String, String, String) {
        (
            id_floor(EVENTS.prefix, self.events.from_ms),
            id_floor(EVENTS.prefix, self.events.to_ms),
            id_floor(DELIVERIES.prefix, self.deliveries.to_ms),
        )
    }

    /// Counts the rows of both partitions; `None` when a delivery of the
    /// period's events (in its partition, or made just after the period
    /// ends) is unfinished or changed at or after `cut`.
    fn count_if_free(&mut self, c: &mut dyn Conn, cut: i64) -> Result<Option<()>> {
        let busy = format!("(status IN ({}) OR updated_at >= $1)", unfinished());
        let d = c.query_one(
            &format!(
                "SELECT COUNT(*), COUNT(*) FILTER (WHERE {busy}) FROM {}",
                self.deliveries.name
            ),
            &[cut.into()],
        )?;
        if d.int(1)? > 0 {
            return Ok(None);
        }
        let (lo, hi, dhi) = self.bounds();
        let later = c.query_opt(
            &format!(
                "SELECT 1 FROM deliveries WHERE id >= $2 AND event_id >= $3 AND event_id < $4
                   AND {busy} LIMIT 1"
            ),
            &[cut.into(), dhi.into(), lo.into(), hi.into()],
        )?;
        if later.is_some() {
            return Ok(None);
        }
        self.deliveries.rows = d.int(0)?.max(0) as u64;
        self.events.rows = count(
            c,
            &format!("SELECT COUNT(*) FROM {}", self.events.name),
            &[],
        )?;
        Ok(Some(()))
    }

    /// After [`EventPeriod::count_if_free`] found the period free: whether
    /// it still is, looking only at what can have changed since. A
    /// finished delivery changes only by being sent again, which makes it
    /// unfinished, so the partition's unfinished deliveries (through the
    /// partial due index, small) and the deliveries of its events made
    /// after the period (an index range) are all there is to read: no
    /// partition is scanned while the tables are locked.
    fn still_free(&self, c: &mut dyn Conn, cut: i64) -> Result<bool> {
        let held = c.query_opt(
            &format!(
                "SELECT 1 FROM {} WHERE status IN ({}) LIMIT 1",
                self.deliveries.name,
                unfinished()
            ),
            &[],
        )?;
        if held.is_some() {
            return Ok(false);
        }
        let (lo, hi, dhi) = self.bounds();
        let later = c.query_opt(
            &format!(
                "SELECT 1 FROM deliveries WHERE id >= $2 AND event_id >= $3 AND event_id < $4
                   AND (status IN ({}) OR updated_at >= $1) LIMIT 1",
                unfinished()
            ),
            &[cut.into(), dhi.into(), lo.into(), hi.into()],
        )?;
        Ok(later.is_none())
    }
}

/// The event periods whose whole range is older than `cut`, each with the
/// deliveries partition of the same period (a period without one is left
/// to the batched delete).
fn old_event_periods(c: &mut dyn Conn, cut: i64) -> Result<Vec<EventPeriod>> {
    let deliveries = list(c, DELIVERIES)?;
    Ok(list(c, EVENTS)?
        .into_iter()
        .filter(|e| e.to_ms <= cut)
        .filter_map(|events| {
            let d = deliveries
                .iter()
                .find(|d| d.from_ms == events.from_ms && d.to_ms == events.to_ms)?;
            Some(EventPeriod {
                events,
                deliveries: d.clone(),
            })
        })
        .collect())
}

/// The attempts partitions whose whole range is older than `cut`, with
/// their rows.
fn old_attempts(c: &mut dyn Conn, cut: i64) -> Result<Vec<Partition>> {
    let mut out = Vec::new();
    for mut p in list(c, ATTEMPTS)?.into_iter().filter(|p| p.to_ms <= cut) {
        p.rows = count(c, &format!("SELECT COUNT(*) FROM {}", p.name), &[])?;
        out.push(p);
    }
    Ok(out)
}

fn detach_and_drop(c: &mut dyn Conn, p: &Partition) -> Result<()> {
    c.batch(&format!(
        "ALTER TABLE {} DETACH PARTITION {}; DROP TABLE {}",
        p.table, p.name, p.name
    ))
}

/// Drops one attempts partition (its rows counted before: no attempt is
/// added to a past period's partition).
fn drop_attempts(c: &mut dyn Conn, p: &Partition) -> Result<()> {
    c.batch(&format!(
        "SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'; LOCK TABLE attempts IN ACCESS EXCLUSIVE MODE"
    ))?;
    detach_and_drop(c, p)?;
    c.batch("SET LOCAL lock_timeout TO DEFAULT")
}

/// Drops one event period found free (and counted) on a reader, if it
/// still is; answers the rows gone.
fn drop_event_period(c: &mut dyn Conn, p: EventPeriod, cut: i64) -> Result<PruneCounts> {
    let mut n = PruneCounts::default();
    // The parents (which locks their partitions too), in the order every
    // statement on both tables takes them.
    c.batch(&format!(
        "SET LOCAL lock_timeout = '{LOCK_TIMEOUT}';
         LOCK TABLE events, deliveries IN ACCESS EXCLUSIVE MODE"
    ))?;
    if !p.still_free(c, cut)? {
        c.batch("SET LOCAL lock_timeout TO DEFAULT")?;
        return Ok(n);
    }
    let (lo, hi, dhi) = p.bounds();
    let dlo = id_floor(DELIVERIES.prefix, p.deliveries.from_ms);
    // Deliveries of the period's events made just after it ended (the
    // same transaction, a millisecond later) go with them, and every
    // attempt of the deliveries that go.
    let later = "SELECT id FROM deliveries WHERE id >= $1 AND event_id >= $2 AND event_id < $3";
    let attempts = c.execute(
        &format!("DELETE FROM attempts WHERE delivery_id IN ({later})"),
        &[dhi.as_str().into(), lo.as_str().into(), hi.as_str().into()],
    )? + c.execute(
        "DELETE FROM attempts WHERE delivery_id >= $1 AND delivery_id < $2",
        &[dlo.into(), dhi.as_str().into()],
    )?;
    let deliveries = c.execute(
        "DELETE FROM deliveries WHERE id >= $1 AND event_id >= $2 AND event_id < $3",
        &[dhi.as_str().into(), lo.as_str().into(), hi.as_str().into()],
    )?;
    c.execute(
        "DELETE FROM event_keys WHERE event_id >= $1 AND event_id < $2",
        &[lo.into(), hi.into()],
    )?;
    detach_and_drop(c, &p.deliveries)?;
    detach_and_drop(c, &p.events)?;
    c.batch("SET LOCAL lock_timeout TO DEFAULT")?;
    n.add(PruneKind::Events, p.events.rows);
    n.add(PruneKind::Deliveries, p.deliveries.rows + deliveries);
    n.add(PruneKind::Attempts, attempts);
    n.add_partitions(2);
    Ok(n)
}

impl Store {
    /// On PostgreSQL, makes the partitions `plan` wants at `now_ms` (the
    /// current period and `plan.ahead` more, for each partitioned table)
    /// that do not exist yet; answers how many it made. Nothing on SQLite.
    pub async fn ensure_partitions(&self, now_ms: i64, plan: PartitionPlan) -> Result<u64> {
        if self.kind() != BackendKind::Postgres {
            return Ok(0);
        }
        self.write(move |c| ensure(c, now_ms, plan)).await
    }

    /// On PostgreSQL, the partitions of `table` (one of [`TABLES`]), oldest
    /// first, without row counts; none on SQLite.
    pub async fn partitions(&self, table: PartitionedTable) -> Result<Vec<Partition>> {
        if self.kind() != BackendKind::Postgres {
            return Ok(Vec::new());
        }
        self.read(move |c| list(c, table)).await
    }

    /// On PostgreSQL, the partitions a prune at `cutoffs` would drop, with
    /// their rows; none on SQLite. Drops nothing.
    pub async fn droppable_partitions(&self, cutoffs: &Cutoffs) -> Result<Vec<Partition>> {
        if self.kind() != BackendKind::Postgres {
            return Ok(Vec::new());
        }
        let cutoffs = *cutoffs;
        self.read(move |c| {
            let mut out = Vec::new();
            if let Some(cut) = cutoffs.attempts {
                out.extend(old_attempts(c, cut)?);
            }
            if let Some(cut) = cutoffs.events {
                for mut p in old_event_periods(c, cut)? {
                    if p.count_if_free(c, cut)?.is_some() {
                        out.push(p.events);
                        out.push(p.deliveries);
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// On PostgreSQL, drops every partition the cut-offs let go (see the
    /// module's rules), one write each; answers the rows and partitions
    /// gone. Nothing on SQLite.
    pub async fn drop_partitions(&self, cutoffs: &Cutoffs) -> Result<PruneCounts> {
        let mut total = PruneCounts::default();
        if self.kind() != BackendKind::Postgres {
            return Ok(total);
        }
        if let Some(cut) = cutoffs.attempts {
            for p in self.read(move |c| old_attempts(c, cut)).await? {
                let rows = p.rows;
                self.write(move |c| drop_attempts(c, &p)).await?;
                total.add(PruneKind::Attempts, rows);
                total.add_partitions(1);
            }
        }
        if let Some(cut) = cutoffs.events {
            // Looked at on a reader first, so that a period kept by a
            // pending delivery does not lock the tables on every pass.
            let free = self
                .read(move |c| {
                    let mut free = Vec::new();
                    for mut p in old_event_periods(c, cut)? {
                        if p.count_if_free(c, cut)?.is_some() {
                            free.push(p);
                        }
                    }
                    Ok(free)
                })
                .await?;
            for p in free {
                let n = self.write(move |c| drop_event_period(c, p, cut)).await?;
                total.merge(&n);
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_aligned_to_the_width_and_run_ahead() {
        let plan = PartitionPlan::default();
        let now = 1_765_065_600_000 + 5 * 3_600_000;
        let p = plan.periods(now);
        assert_eq!(p.len(), 4);
        assert_eq!(p[0], (1_765_065_600_000, 1_765_065_600_000 + DAY_MS));
        assert_eq!(p[3].1 - p[0].0, 4 * DAY_MS);
        let small = PartitionPlan::new(2_000, 1).unwrap();
        assert_eq!(small.periods(5_500), vec![(4_000, 6_000), (6_000, 8_000)]);
        assert!(PartitionPlan::new(999, 1).is_err());
    }

    #[test]
    fn names_say_the_day_or_the_instant() {
        assert_eq!(
            partition_name("events", 1_765_065_600_000, DAY_MS),
            "events_p20251207"
        );
        assert_eq!(
            partition_name("attempts", 1_765_065_600_000 + 1_500, 2_000),
            "attempts_p20251207_000001500"
        );
    }

    #[test]
    fn bounds_parse_back_to_ids() {
        assert_eq!(
            parse_bound("FOR VALUES FROM ('evt_01kbxm4200') TO ('evt_01kc06gs00')"),
            Some(("evt_01kbxm4200", "evt_01kc06gs00"))
        );
        assert_eq!(parse_bound("DEFAULT"), None);
        assert_eq!(parse_bound("FOR VALUES FROM (MINVALUE) TO ('a')"), None);
    }
}
