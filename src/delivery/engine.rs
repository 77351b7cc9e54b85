//! The delivery engine of one process: dispatcher, recorder and claim loop
//! wired to the store.
//!
//! * **Hot path.** The engine plugs itself into the store as its
//!   [`DeliverySink`]: deliveries a commit creates are written leased to
//!   this node and handed to the dispatcher in memory as soon as the commit
//!   is durable. Nothing polls for them.
//! * **Claim path.** Retries, deliveries left by a dead worker (expired
//!   lease), recovered ones and those written by API-only nodes are claimed
//!   from the database by the claim loop, woken in-process by a `Notify`,
//!   across processes by PostgreSQL `LISTEN/NOTIFY`, and otherwise every
//!   `poll` interval. Each claim takes per endpoint only
//!   what the dispatcher has room for (nothing for an endpoint whose
//!   circuit is open), so a backlog stays in the database, not in memory.
//! * **Steppable.** With `poll: None` there is no claim loop; tests call
//!   [`Engine::run_due_once`] with a time of their choosing and
//!   [`Engine::idle`] to wait for the hot path, so no test sleeps through a
//!   retry delay.
//! * **Manual sends.** [`send_now`] is the one path for a send a person asks
//!   for (a test ping, a manual retry): it leases or creates the delivery,
//!   sends it at once from the calling process, and records the attempt,
//!   with or without a running engine.

use super::attempt::{Delivery, Settings};
use super::dispatcher::{Command, Dispatcher};
use super::http::Attempt;
use super::recorder;
use crate::store::Store;
use crate::store::deliveries::{ClaimLimits, DeliverySink, DeliveryTicket, Lease};
use crate::store::endpoints::EndpointRow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

/// Most deliveries one claim takes.
const CLAIM_BATCH: usize = 512;
/// The claim loop leaves the database alone while this many tickets wait
/// here already (their leases would otherwise run out in the queue).
const MAX_BACKLOG: usize = 20_000;

struct Inner {
    store: Store,
    delivery: Delivery,
    lease: Lease,
    commands: mpsc::UnboundedSender<Command>,
    /// Tickets handed to the dispatcher whose outcome is not yet recorded.
    pending: AtomicUsize,
    /// Signalled whenever `pending` drops.
    settled: Notify,
    /// Wakes the claim loop.
    wake: Notify,
}

impl Inner {
    fn dispatch(&self, tickets: Vec<DeliveryTicket>) {
        if tickets.is_empty() {
            return;
        }
        self.pending.fetch_add(tickets.len(), Ordering::SeqCst);
        if let Err(mpsc::error::SendError(Command::Tickets(t))) =
            self.commands.send(Command::Tickets(tickets))
        {
            // The dispatcher has stopped: the rows stay leased and fall due.
            self.settle(t.len());
        }
    }

    /// What a claim of at most `total` may take per endpoint, as the
    /// dispatcher sees its lanes (no limit if it has stopped).
    async fn claim_limits(&self, total: usize) -> ClaimLimits {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::ClaimLimits(total, tx)).is_err() {
            return ClaimLimits::total(total);
        }
        rx.await.unwrap_or_else(|_| ClaimLimits::total(total))
    }

    fn settle(&self, n: usize) {
        self.pending.fetch_sub(n, Ordering::SeqCst);
        self.settled.notify_waiters();
    }
}

struct Sink(Arc<Inner>);

impl DeliverySink for Sink {
    fn lease(&self) -> Option<Lease> {
        Some(self.0.lease.clone())
    }
    fn hand_over(&self, tickets: Vec<DeliveryTicket>) {
        self.0.dispatch(tickets);
    }
    fn endpoint_changed(&self, id: &str, row: Option<Arc<EndpointRow>>) {
        let enabled = row.as_ref().is_some_and(|r| r.enabled);
        let _ = self
            .0
            .commands
            .send(Command::EndpointChanged(id.to_owned(), row));
        if enabled {
            // Held deliveries of a re-enabled endpoint are due.
            self.0.wake.notify_one();
        }
    }
    fn wake(&self) {
        self.0.wake.notify_one();
    }
}

/// A running delivery engine.
pub struct Engine {
    inner: Arc<Inner>,
    sink: Arc<dyn DeliverySink>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The cross-process listener runs while this lives.
    _listening: Arc<()>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Engine(node {})", self.inner.lease.node)
    }
}

impl Engine {
    /// Starts an engine over `store` and connects it as the store's
    /// delivery sink. Must run inside a Tokio runtime.
    pub fn start(store: Store, delivery: Delivery) -> Self {
        crate::telemetry::install();
        let settings: &Settings = delivery.settings();
        let lease = Lease {
            node: Arc::from(crate::domain::ids::new_id("node")),
            ms: i64::try_from(settings.lease.as_millis()).unwrap_or(i64::MAX / 4),
        };
        let poll = settings.poll;
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (outcomes, outcome_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            store: store.clone(),
            delivery: delivery.clone(),
            lease,
            commands,
            pending: AtomicUsize::new(0),
            settled: Notify::new(),
            wake: Notify::new(),
        });
        let mut tasks = Vec::new();
        let listening = Arc::new(());
        let i = inner.clone();
        let dispatcher =
            Dispatcher::new(delivery.clone(), outcomes, Box::new(move |n| i.settle(n)));
        tasks.push(tokio::spawn(dispatcher.run(command_rx)));
        let i = inner.clone();
        tasks.push(tokio::spawn(recorder::run(
            store.clone(),
            delivery,
            inner.lease.node.clone(),
            outcome_rx,
            move |n| i.settle(n),
        )));
        if let Some(every) = poll {
            tasks.push(tokio::spawn(claim_loop(inner.clone(), every)));
            // Deliveries other processes write for any worker (API-only
            // nodes, recoveries) wake the claim loop at once where the
            // backend can announce them (PostgreSQL LISTEN/NOTIFY).
            let woken = Arc::downgrade(&inner);
            let alive = Arc::downgrade(&listening);
            store.listen_for_deliveries(crate::store::Listener {
                wake: Box::new(move || {
                    if let Some(i) = woken.upgrade() {
                        i.wake.notify_one();
                    }
                }),
                alive: Box::new(move || alive.strong_count() > 0),
            });
        }
        let sink: Arc<dyn DeliverySink> = Arc::new(Sink(inner.clone()));
        store.set_delivery_sink(Some(sink.clone()));
        Self {
            inner,
            sink,
            tasks: Mutex::new(tasks),
            _listening: listening,
        }
    }

    /// This engine's node id (`locked_by` of its leases).
    pub fn node(&self) -> &str {
        &self.inner.lease.node
    }

    /// The attempt maker this engine sends with.
    pub fn delivery(&self) -> &Delivery {
        &self.inner.delivery
    }

    /// Tickets handed over whose results are not yet recorded.
    pub fn pending(&self) -> usize {
        self.inner.pending.load(Ordering::SeqCst)
    }

    /// Waits until every ticket handed over has been sent and its result
    /// recorded.
    pub async fn idle(&self) {
        loop {
            let settled = self.inner.settled.notified();
            if self.pending() == 0 {
                return;
            }
            // A periodic re-check covers a notification lost between the
            // check and the wait.
            let _ = tokio::time::timeout(Duration::from_millis(50), settled).await;
        }
    }

    /// Claims the deliveries due at `now` (by this engine's clock or any
    /// other), sends them, records the results, and answers how many were
    /// claimed. Hot-path work in flight is waited for too.
    pub async fn run_due_once(&self, now: i64) -> crate::store::Result<usize> {
        let limits = self.inner.claim_limits(10_000).await;
        let tickets = self
            .inner
            .store
            .claim_due(now, self.inner.lease.clone(), limits)
            .await?;
        let n = tickets.len();
        self.inner.dispatch(tickets);
        self.idle().await;
        Ok(n)
    }

    /// Hands tickets to the dispatcher directly (deliveries leased to this
    /// node by other means, e.g. a manual retry).
    pub fn dispatch(&self, tickets: Vec<DeliveryTicket>) {
        self.inner.dispatch(tickets);
    }

    /// Disconnects from the store, lets queued work finish (up to `grace`),
    /// then stops. Deliveries not finished stay leased and fall due later.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.store.remove_delivery_sink(&self.sink);
        let _ = tokio::time::timeout(grace, self.idle()).await;
        self.abort();
    }

    /// Stops at once, as a crash would: sends in flight are dropped and
    /// their deliveries stay leased until the lease runs out.
    pub fn abort(&self) {
        self.inner.store.remove_delivery_sink(&self.sink);
        for t in self.tasks.lock().expect("tasks lock").drain(..) {
            t.abort();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.abort();
    }
}

/// How soon the claim loop looks again after a claim that may have left
/// due deliveries behind (it took all an endpoint was allowed).
const CLAIM_AGAIN: Duration = Duration::from_millis(20);

async fn claim_loop(inner: Arc<Inner>, every: Duration) {
    let mut again = false;
    loop {
        let wait = if again { CLAIM_AGAIN } else { every };
        let _ = tokio::time::timeout(wait, inner.wake.notified()).await;
        again = false;
        if inner.pending.load(Ordering::SeqCst) > MAX_BACKLOG {
            continue;
        }
        let limits = inner.claim_limits(CLAIM_BATCH).await;
        let now = inner.delivery.now_ms();
        match inner
            .store
            .claim_due(now, inner.lease.clone(), limits.clone())
            .await
        {
            Ok(tickets) => {
                let mut per_endpoint: HashMap<&str, usize> = HashMap::new();
                for t in &tickets {
                    *per_endpoint.entry(t.endpoint.id.as_str()).or_default() += 1;
                }
                let full = tickets.len() == CLAIM_BATCH;
                again = per_endpoint
                    .iter()
                    .any(|(id, n)| *n >= limits.for_endpoint(id));
                inner.dispatch(tickets);
                if full {
                    inner.wake.notify_one();
                }
            }
            Err(e) => tracing::error!(error = %e, "could not claim due deliveries"),
        }
    }
}

/// The node name a manual send's lease and attempt carry.
pub const MANUAL_NODE: &str = "api";

/// What a manual send sends.
#[derive(Clone, Copy, Debug)]
pub enum ManualSend<'a> {
    /// A delivery again, whatever its state (its endpoint must be enabled).
    Retry {
        /// The delivery.
        delivery_id: &'a str,
    },
    /// A `webhook.test` event to one endpoint (even a disabled one).
    Test {
        /// The endpoint.
        endpoint_id: &'a str,
    },
}

/// What a manual send did.
#[derive(Debug)]
pub struct SentNow {
    /// The attempt as the receiver answered it.
    pub attempt: Attempt,
    /// The delivery sent.
    pub delivery_id: String,
    /// Its event (`webhook-id`).
    pub event_id: String,
}

/// The lease a manual send holds its delivery under.
pub fn manual_lease(delivery: &Delivery) -> Lease {
    Lease {
        node: Arc::from(MANUAL_NODE),
        ms: i64::try_from(delivery.settings().lease.as_millis()).unwrap_or(i64::MAX / 4),
    }
}

/// Sends one delivery of `account_id` now, from this process, and records
/// the attempt (a failure of a test ping makes it dead; a retry keeps the
/// delivery's schedule). An unknown delivery or endpoint is `NotFound`, a
/// retry to a disabled endpoint `Invalid`.
pub async fn send_now(
    store: &Store,
    delivery: &Delivery,
    account_id: &str,
    what: ManualSend<'_>,
) -> crate::store::Result<SentNow> {
    let lease = manual_lease(delivery);
    let ticket = match what {
        ManualSend::Retry { delivery_id } => {
            store
                .lease_for_retry(account_id, delivery_id, lease)
                .await?
        }
        ManualSend::Test { endpoint_id } => {
            store
                .create_test_delivery(account_id, endpoint_id, lease)
                .await?
        }
    };
    let (attempt, mut outcome) = delivery.attempt(&ticket).await;
    if let Some(a) = &mut outcome.attempt {
        a.node = Some(MANUAL_NODE.to_owned());
    }
    let disable_after =
        i64::try_from(delivery.settings().disable_after.as_millis()).unwrap_or(i64::MAX / 4);
    store
        .record_outcomes(vec![outcome], delivery.now_ms(), disable_after)
        .await?;
    Ok(SentNow {
        attempt,
        delivery_id: ticket.delivery_id,
        event_id: ticket.event.id.clone(),
    })
}
