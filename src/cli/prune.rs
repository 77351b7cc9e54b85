//! `botwire prune [--dry-run]`: applies the retention settings once, as the
//! pruner of `botwire serve` does every minute, and says per kind how many
//! rows went (or, with `--dry-run`, would go). Safe beside a running
//! server: the batches are the server's own. On PostgreSQL it also says
//! which time partitions were (or would be) dropped whole.

use crate::config::Config;
use crate::delivery::clock::SystemClock;
use crate::domain::retention::{PruneCounts, PruneKind};
use crate::runtime::retention::Pruner;
use crate::store::retention::partitions::Partition;
use clap::Args;
use std::sync::Arc;

/// Flags of `botwire prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Count what would go; remove nothing.
    #[arg(long)]
    dry_run: bool,
}

/// One line per kind, in plain words.
fn lines(counts: &PruneCounts, verb: &str) -> String {
    PruneKind::ALL
        .iter()
        .map(|k| format!("{} {}: {verb}\n", counts.get(*k), k.words()))
        .collect()
}

/// One line per PostgreSQL partition a prune would drop whole (nothing
/// when there is none, as always on SQLite).
fn partition_lines(parts: &[Partition]) -> String {
    let at = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms).map_or_else(
            || ms.to_string(),
            |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
        )
    };
    if parts.is_empty() {
        return String::new();
    }
    let mut out = format!("{} partitions would be dropped\n", parts.len());
    for p in parts {
        out.push_str(&format!(
            "{} ({} rows, {} to {} UTC): would be dropped\n",
            p.name,
            p.rows,
            at(p.from_ms),
            at(p.to_ms)
        ));
    }
    out
}

/// Runs `botwire prune`.
pub async fn run(args: PruneArgs, config: &Config) -> anyhow::Result<()> {
    let store = super::open_store(config).await?;
    let policy = config.retention.policy();
    let outcome = if args.dry_run {
        let cutoffs = policy.cutoffs(crate::store::now_ms());
        match store.count_prunable(&cutoffs).await {
            Ok(c) => store.droppable_partitions(&cutoffs).await.map(|parts| {
                format!(
                    "dry run, nothing removed; {} rows would go\n{}{}",
                    c.total(),
                    lines(&c, "would go"),
                    partition_lines(&parts)
                )
            }),
            Err(e) => Err(e),
        }
    } else {
        let pruner = Pruner::new(store.clone(), policy, Arc::new(SystemClock));
        pruner.prune_once().await.map(|r| {
            format!(
                "removed {} rows in {} ms; {} partitions dropped; {} free pages handed back to the file system\n{}",
                r.removed.total(),
                r.took.as_millis(),
                r.removed.partitions(),
                r.pages_released,
                lines(&r.removed, "removed")
            )
        })
    };
    store.close().await;
    print!("{}", outcome?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dry_run_names_each_partition_with_its_rows_and_period() {
        assert_eq!(partition_lines(&[]), "");
        let text = partition_lines(&[Partition {
            table: "events",
            name: "events_p20261028".into(),
            from_ms: 1_793_145_600_000,
            to_ms: 1_793_232_000_000,
            rows: 34_710,
        }]);
        assert_eq!(
            text,
            "1 partitions would be dropped\n\
             events_p20261028 (34710 rows, 2026-10-28 00:00:00 to 2026-10-29 00:00:00 UTC): would be dropped\n"
        );
    }
}
