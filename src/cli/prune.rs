//! `botwire prune [--dry-run]`: applies the retention settings once, as the
//! pruner of `botwire serve` does every minute, and says per kind how many
//! rows went (or, with `--dry-run`, would go). Safe beside a running
//! server: the batches are the server's own.

use crate::config::Config;
use crate::delivery::clock::SystemClock;
use crate::domain::retention::{PruneCounts, PruneKind};
use crate::runtime::retention::Pruner;
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

/// Runs `botwire prune`.
pub async fn run(args: PruneArgs, config: &Config) -> anyhow::Result<()> {
    let store = super::open_store(config).await?;
    let policy = config.retention.policy();
    let outcome = if args.dry_run {
        let counts = store
            .count_prunable(&policy.cutoffs(crate::store::now_ms()))
            .await;
        counts.map(|c| {
            format!(
                "dry run, nothing removed; {} rows would go\n{}",
                c.total(),
                lines(&c, "would go")
            )
        })
    } else {
        let pruner = Pruner::new(store.clone(), policy, Arc::new(SystemClock));
        pruner.prune_once().await.map(|r| {
            format!(
                "removed {} rows in {} ms; {} free pages handed back to the file system\n{}",
                r.removed.total(),
                r.took.as_millis(),
                r.pages_released,
                lines(&r.removed, "removed")
            )
        })
    };
    store.close().await;
    print!("{}", outcome?);
    Ok(())
}
