//! The broadcast worker: runs on every API and worker node. Each tick it
//! starts the broadcasts that are due and sends the next recipients of
//! each running one, at most its `rate` per second from this node (a token
//! bucket per broadcast). Which recipients are sent, and that each is sent
//! once, is the store's business ([`Store::send_broadcast_batch`]); this
//! loop only paces it, so a node killed at any point loses nothing and a
//! restarted one goes on where the database says.
//!
//! A campaign broadcast's recipients are chat turns instead
//! ([`super::campaigns`]): a worker built [`BroadcastWorker::with_chat`]
//! runs them at the same pace; one without a chat runtime leaves them to
//! the nodes that have one.

use super::campaigns::CampaignOutcome;
use super::chat::Chat;
use crate::delivery::http::OutboundClient;
use crate::store::{Store, now_ms};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most recipients handled in one transaction.
pub const MAX_BATCH: usize = 500;
/// Most broadcasts started in one tick.
const START_BATCH: usize = 10;

/// Paces the broadcasts of one node.
#[derive(Default)]
pub struct BroadcastWorker {
    /// Per running broadcast: messages it may send now, and when that was
    /// last topped up.
    buckets: HashMap<String, (f64, Instant)>,
    /// What runs campaign broadcasts' turns (and calls their story
    /// webhooks), when this node runs them.
    campaigns: Option<(Chat, OutboundClient)>,
}

impl BroadcastWorker {
    /// A worker that also runs campaign broadcasts, with `chat` (sharing
    /// its locks and caches with the node's chat turns) and story-webhook
    /// calls through `client`.
    pub fn with_chat(chat: Chat, client: OutboundClient) -> Self {
        Self {
            buckets: HashMap::new(),
            campaigns: Some((chat, client)),
        }
    }

    /// Starts what is due and sends one paced batch of each running
    /// broadcast. Answers how many recipients were handled.
    pub async fn step(&mut self, store: &Store) -> crate::store::Result<usize> {
        let now = now_ms();
        store.start_due_broadcasts(now, START_BATCH).await?;
        let running = store.running_broadcasts().await?;
        self.buckets
            .retain(|id, _| running.iter().any(|(r, _)| r == id));
        let mut handled = 0;
        for (id, rate) in running {
            let rate = rate.max(1) as f64;
            let at = Instant::now();
            let (tokens, last) = self
                .buckets
                .entry(id.clone())
                .or_insert((rate.min(MAX_BATCH as f64), at));
            *tokens = (*tokens + at.duration_since(*last).as_secs_f64() * rate).min(rate.max(1.0));
            *last = at;
            let n = (*tokens as usize).min(MAX_BATCH);
            if n == 0 {
                continue;
            }
            if let Some((chat, client)) = &self.campaigns
                && let Some((b, recipients)) = store.campaign_recipients(&id, n).await?
            {
                let mut done = 0;
                for r in recipients {
                    let contact = r.contact_id.clone();
                    match chat.campaign_recipient(store, client, &b, r, now).await {
                        Ok(CampaignOutcome::AlreadyHandled) => {}
                        Ok(_) => done += 1,
                        Err(e) => {
                            // Left pending: tried again at the next tick.
                            tracing::warn!(broadcast = %id, contact = %contact, error = %e, "campaign recipient not handled");
                        }
                    }
                }
                *tokens -= done as f64;
                handled += done;
                if store.finish_broadcast_if_done(&id, now).await? {
                    tracing::info!(broadcast = %id, "broadcast completed");
                }
                continue;
            }
            let out = store.send_broadcast_batch(&id, n, now).await?;
            let done = out.sent + out.skipped;
            *tokens -= done as f64;
            handled += done;
            if out.completed {
                tracing::info!(broadcast = %id, "broadcast completed");
            }
        }
        Ok(handled)
    }

    /// Steps every `tick` until the task is dropped; a failed step is
    /// logged and tried again at the next tick.
    pub async fn run(mut self, store: Store, tick: Duration) {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if let Err(e) = self.step(&store).await {
                tracing::warn!(error = %e, "broadcast step failed");
            }
        }
    }
}
