//! The recorder: writes attempt results in batches.
//!
//! Sends push their [`Outcome`]s on a channel; the recorder takes whatever
//! has queued (up to [`MAX_BATCH`]) and writes it with one store write —
//! attempts, delivery states, endpoint failure streaks and any disables —
//! so bookkeeping costs one commit per batch, not one per delivery. While a
//! batch commits the next one gathers.
//!
//! Each attempt is recorded with this engine's node id.
//!
//! A batch that fails to commit is retried (the database may be briefly
//! unavailable); its deliveries stay leased meanwhile, and if the process
//! dies they fall due again when their leases expire.

use super::attempt::Delivery;
use crate::store::Store;
use crate::store::deliveries::Outcome;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Most outcomes written by one store write.
pub const MAX_BATCH: usize = 2048;

/// Runs until the channel closes and everything queued is written.
/// `recorded(n)` is called after each committed batch.
pub async fn run(
    store: Store,
    delivery: Delivery,
    node: Arc<str>,
    mut rx: mpsc::UnboundedReceiver<Outcome>,
    recorded: impl Fn(usize) + Send,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        for o in &mut batch {
            if let Some(a) = &mut o.attempt
                && a.node.is_none()
            {
                a.node = Some(node.to_string());
            }
        }
        let n = batch.len();
        let disable_after =
            i64::try_from(delivery.settings().disable_after.as_millis()).unwrap_or(i64::MAX);
        let mut backoff = Duration::from_millis(50);
        loop {
            match store
                .record_outcomes(batch.clone(), delivery.now_ms(), disable_after)
                .await
            {
                Ok(disabled) => {
                    for d in disabled {
                        tracing::warn!(
                            endpoint = %d.endpoint.id,
                            reason = d.endpoint.disabled_reason.as_deref().unwrap_or(""),
                            deleted = d.deleted,
                            "endpoint disabled"
                        );
                    }
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, outcomes = n, "could not record delivery results; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        batch.clear();
        recorded(n);
    }
}
