//! The pruner: a background task on every node that runs workers, which
//! applies the retention settings every minute or so (see
//! [`crate::domain::retention`] for what goes and what never does).
//!
//! A pass takes "now" from a [`Clock`], removes what the cut-offs let go in
//! small batches (each one short write of the group-commit writer, so chat
//! turns and deliveries interleave with it), then on SQLite hands the freed
//! pages back to the file system. Several nodes may prune at once: every
//! batch is idempotent and re-checks its rule in its own `DELETE`.
//!
//! On PostgreSQL a pass first makes sure the time partitions of the coming
//! periods exist (see [`crate::store::retention::partitions`]); the first
//! pass runs as the pruner starts, so a node that runs workers has them
//! before its first delivery. A pass then drops whole partitions before
//! it deletes rows.

use crate::delivery::clock::Clock;
use crate::domain::retention::{PruneCounts, RetentionPolicy};
use crate::store::retention::VACUUM_PAGES;
use crate::store::retention::partitions::PartitionPlan;
use crate::store::{Result, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often `serve` prunes.
pub const EVERY: Duration = Duration::from_secs(60);

/// Most incremental-vacuum writes one pass makes (each frees at most
/// [`VACUUM_PAGES`] pages); what is left waits for the next pass.
const VACUUM_ROUNDS: usize = 64;

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Rows removed, per kind.
    pub removed: PruneCounts,
    /// SQLite pages handed back to the file system (0 on PostgreSQL).
    pub pages_released: u64,
    /// PostgreSQL partitions made ahead (0 on SQLite).
    pub partitions_made: u64,
    /// How long the pass took.
    pub took: Duration,
}

/// Applies a retention policy to a store.
#[derive(Clone, Debug)]
pub struct Pruner {
    store: Store,
    policy: RetentionPolicy,
    clock: Arc<dyn Clock>,
    plan: PartitionPlan,
}

impl Pruner {
    /// A pruner of `store` by `policy`, judging age by `clock`.
    pub fn new(store: Store, policy: RetentionPolicy, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            policy,
            clock,
            plan: PartitionPlan::default(),
        }
    }

    /// The same pruner, cutting PostgreSQL partitions by `plan` rather
    /// than one a day.
    pub fn with_partitions(mut self, plan: PartitionPlan) -> Self {
        self.plan = plan;
        self
    }

    /// One pass at the clock's now: make the coming partitions, prune,
    /// then release free pages. Records the rows removed and the pass's
    /// duration on `/metrics`.
    pub async fn prune_once(&self) -> Result<PassReport> {
        let started = Instant::now();
        let now = self.clock.now_ms();
        // Partitions are made days ahead: one pass that cannot (the tables
        // were busy) leaves it to the next, and prunes anyway.
        let partitions_made = match self.store.ensure_partitions(now, self.plan).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "could not make the coming partitions");
                0
            }
        };
        let cutoffs = self.policy.cutoffs(now);
        let removed = self.store.prune(&cutoffs).await?;
        // Also after a pass that removed nothing: an earlier pass may have
        // left free pages behind (more than VACUUM_ROUNDS writes' worth).
        let mut pages_released = 0;
        for _ in 0..VACUUM_ROUNDS {
            let free = self.store.release_free_pages(VACUUM_PAGES).await?;
            pages_released += free.min(VACUUM_PAGES as u64);
            if free <= VACUUM_PAGES as u64 {
                break;
            }
        }
        let took = started.elapsed();
        crate::telemetry::pruned(&removed, took);
        Ok(PassReport {
            removed,
            pages_released,
            partitions_made,
            took,
        })
    }

    /// Prunes at once and then every `every`, until the task is dropped.
    pub async fn run(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.prune_once().await {
                Ok(r) if r.removed.total() == 0 => {}
                Ok(r) => tracing::info!(
                    rows = r.removed.total(),
                    events = r.removed.get(crate::domain::retention::PruneKind::Events),
                    attempts = r.removed.get(crate::domain::retention::PruneKind::Attempts),
                    conversations = r
                        .removed
                        .get(crate::domain::retention::PruneKind::Conversations),
                    partitions_dropped = r.removed.partitions(),
                    pages_released = r.pages_released,
                    took_ms = r.took.as_millis() as u64,
                    "pruned old records"
                ),
                Err(e) => tracing::warn!(error = %e, "could not prune old records"),
            }
        }
    }
}
