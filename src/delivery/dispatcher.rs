//! The dispatcher: an in-memory queue of delivery tickets, one lane per
//! endpoint, and the rules for which ticket is sent next.
//!
//! * At most `per_endpoint` requests are in flight to one endpoint and at
//!   most `global` in all. A lane whose slots are full keeps its tickets
//!   waiting without holding anything else up; lanes with work take global
//!   slots in turn (round robin), so one slow or dead endpoint cannot starve
//!   the others.
//! * An endpoint with a rate limit starts requests no faster than its
//!   limit ([`TokenBucket`]).
//! * A lane uses the newest endpoint row it has seen (from a ticket, or
//!   from a change reported by the store). When its endpoint is disabled or
//!   deleted, its waiting tickets are handed back as *held* (their leases
//!   are released and they wait in the database).
//! * A ticket for a delivery already queued or in flight here is dropped
//!   (a claim that raced the hot path).
//! * **Circuit breaker.** After `break_after` failed attempts in a row an
//!   endpoint's circuit opens: its waiting tickets are handed back as held,
//!   new ones too, and it is sent one delivery at a time (a probe), the
//!   next probe after the next delay of the retry schedule (at most
//!   [`MAX_PROBE_DELAY`]). A success closes it. So a dead endpoint with a
//!   million due deliveries costs one request per probe delay instead of
//!   `per_endpoint` requests all the time, and the claim loop takes none of
//!   its deliveries meanwhile ([`Dispatcher::claim_limits`]).
//!   The circuit is this process's own: N worker nodes each probe a dead
//!   endpoint, so it gets up to N probes per delay (docs/SCALING.md says
//!   why that is kept rather than shared through the database).
//! * A lane holds at most [`LANE_CAP`] tickets, waiting or in flight; claims
//!   ask how much room each lane has.
//!
//! One task owns all of this state; sends run as tasks in a `JoinSet` it
//! owns, so aborting the dispatcher aborts its sends (which is how a test
//! kills a worker mid-delivery).

use super::attempt::{Delivery, held};
use super::ratelimit::TokenBucket;
use crate::store::deliveries::{ClaimLimits, DeliveryTicket, NextState, Outcome};
use crate::store::endpoints::EndpointRow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Most tickets one lane holds, waiting or in flight.
pub const LANE_CAP: usize = 1024;
/// The longest wait between two probes of an endpoint whose circuit is open.
pub const MAX_PROBE_DELAY: Duration = Duration::from_secs(60);

/// What the dispatcher is told.
pub enum Command {
    /// New tickets to send.
    Tickets(Vec<DeliveryTicket>),
    /// An endpoint changed (`None`: deleted).
    EndpointChanged(String, Option<Arc<EndpointRow>>),
    /// Answer how many deliveries a claim of at most this many may take,
    /// per endpoint.
    ClaimLimits(usize, oneshot::Sender<ClaimLimits>),
}

/// Where results go: the recorder's queue.
pub type OutcomeSender = mpsc::UnboundedSender<Outcome>;

struct Lane {
    endpoint: Arc<EndpointRow>,
    waiting: VecDeque<DeliveryTicket>,
    running: usize,
    bucket: Option<TokenBucket>,
    /// Rate-limited until then.
    blocked_until: Option<Instant>,
    /// Already in the ready queue.
    queued: bool,
    /// Failed attempts in a row.
    failures: u32,
    /// The circuit is open: one probe at a time, none before `blocked_until`.
    open: bool,
    /// Probes that failed since the circuit opened.
    probes: u32,
}

impl Lane {
    fn new(endpoint: Arc<EndpointRow>, now: Instant) -> Self {
        let bucket = endpoint.rate_limit.map(|r| TokenBucket::new(r, now));
        Self {
            endpoint,
            waiting: VecDeque::new(),
            running: 0,
            bucket,
            blocked_until: None,
            queued: false,
            failures: 0,
            open: false,
            probes: 0,
        }
    }

    fn set_endpoint(&mut self, endpoint: Arc<EndpointRow>, now: Instant) {
        if endpoint.rate_limit != self.endpoint.rate_limit {
            self.bucket = endpoint.rate_limit.map(|r| TokenBucket::new(r, now));
            self.blocked_until = None;
        }
        self.endpoint = endpoint;
    }

    /// A failure streak keeps its lane (and so its count and circuit) until
    /// a success ends it, however sparse the endpoint's traffic.
    fn idle(&self, now: Instant) -> bool {
        self.waiting.is_empty()
            && self.running == 0
            && self.failures == 0
            && !self.open
            && self.bucket.as_ref().is_none_or(|b| b.is_full(now))
    }

    /// Requests this lane may have in flight.
    fn slots(&self, per_endpoint: usize) -> usize {
        if self.open { 1 } else { per_endpoint }
    }

    /// Whether the lane waits for its next probe or rate-limit token.
    fn blocked(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|t| t > now)
    }

    /// Whether a new ticket may wait here: not while the circuit is open,
    /// unless it can be the next probe.
    fn accepts(&self, now: Instant) -> bool {
        !self.open || (!self.blocked(now) && self.running == 0 && self.waiting.is_empty())
    }

    /// How many more tickets a claim may give this lane.
    fn room(&self, now: Instant) -> usize {
        if self.open {
            usize::from(self.accepts(now))
        } else {
            LANE_CAP.saturating_sub(self.waiting.len() + self.running)
        }
    }
}

/// The dispatcher's state; [`Dispatcher::run`] drives it.
pub struct Dispatcher {
    delivery: Delivery,
    outcomes: OutcomeSender,
    lanes: HashMap<String, Lane>,
    ready: VecDeque<String>,
    running: usize,
    known: HashSet<String>,
    sends: JoinSet<(String, String, bool)>,
    /// Tickets dropped as duplicates are reported here (count) so the
    /// engine's pending counter stays right.
    dropped: Box<dyn Fn(usize) + Send>,
}

impl Dispatcher {
    /// A dispatcher sending with `delivery` and reporting to `outcomes`.
    pub fn new(
        delivery: Delivery,
        outcomes: OutcomeSender,
        dropped: Box<dyn Fn(usize) + Send>,
    ) -> Self {
        Self {
            delivery,
            outcomes,
            lanes: HashMap::new(),
            ready: VecDeque::new(),
            running: 0,
            known: HashSet::new(),
            sends: JoinSet::new(),
            dropped,
        }
    }

    /// Runs until the command channel closes and every send has finished.
    pub async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut open = true;
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        loop {
            let wake = self.next_wake();
            tokio::select! {
                cmd = commands.recv(), if open => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => open = false,
                },
                Some(done) = self.sends.join_next(), if !self.sends.is_empty() => {
                    if let Ok((endpoint_id, delivery_id, ok)) = done {
                        self.finished(&endpoint_id, &delivery_id, ok);
                    }
                }
                _ = sleep_until(wake), if wake.is_some() => self.unblock(),
                _ = sweep.tick() => self.sweep(),
            }
            if !open && self.sends.is_empty() && self.running == 0 {
                return;
            }
            self.pump();
        }
    }

    /// How many tickets wait or are in flight.
    pub fn backlog(&self) -> usize {
        self.known.len()
    }

    fn command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Tickets(tickets) => {
                let mut dropped = 0;
                for t in tickets {
                    if !self.known.insert(t.delivery_id.clone()) {
                        dropped += 1;
                        continue;
                    }
                    let id = t.endpoint.id.clone();
                    let lane = self
                        .lanes
                        .entry(id.clone())
                        .or_insert_with(|| Lane::new(t.endpoint.clone(), now));
                    if t.endpoint.updated_at > lane.endpoint.updated_at {
                        lane.set_endpoint(t.endpoint.clone(), now);
                    }
                    if !lane.accepts(now) {
                        // The circuit is open: the delivery waits in the
                        // database for the endpoint to come back.
                        self.known.remove(&t.delivery_id);
                        let _ = self.outcomes.send(held(&t));
                        continue;
                    }
                    lane.waiting.push_back(t);
                    self.mark(&id);
                }
                if dropped > 0 {
                    (self.dropped)(dropped);
                }
            }
            Command::EndpointChanged(id, row) => {
                let Some(lane) = self.lanes.get_mut(&id) else {
                    return;
                };
                let enabled = row.as_ref().is_some_and(|r| r.enabled);
                let deleted = row.is_none();
                if let Some(row) = row {
                    lane.set_endpoint(row, now);
                }
                if !enabled {
                    let waiting: Vec<_> = lane.waiting.drain(..).collect();
                    for t in waiting {
                        self.known.remove(&t.delivery_id);
                        let _ = self.outcomes.send(held(&t));
                    }
                }
                if deleted && lane.running == 0 {
                    // Nothing more will come for it: forget its streak too.
                    self.lanes.remove(&id);
                    return;
                }
                self.mark(&id);
            }
            Command::ClaimLimits(total, reply) => {
                let _ = reply.send(self.claim_limits(total, now));
            }
        }
    }

    /// How many deliveries a claim of at most `total` may give each
    /// endpoint: the room in its lane (none while its circuit is open and
    /// no probe is due), [`LANE_CAP`] for an endpoint without a lane.
    pub fn claim_limits(&self, total: usize, now: Instant) -> ClaimLimits {
        ClaimLimits {
            total,
            per_endpoint: LANE_CAP,
            endpoints: self
                .lanes
                .iter()
                .map(|(id, lane)| (id.clone(), lane.room(now)))
                .collect(),
        }
    }

    /// Queues a lane for a global slot if it has work it may start.
    fn mark(&mut self, id: &str) {
        let per_endpoint = self.delivery.settings().per_endpoint;
        let Some(lane) = self.lanes.get_mut(id) else {
            return;
        };
        if !lane.queued
            && !lane.waiting.is_empty()
            && lane.running < lane.slots(per_endpoint)
            && lane.blocked_until.is_none()
        {
            lane.queued = true;
            self.ready.push_back(id.to_owned());
        }
    }

    /// Starts sends while global slots are free and lanes have work.
    fn pump(&mut self) {
        let global = self.delivery.settings().global;
        let per_endpoint = self.delivery.settings().per_endpoint;
        let now = Instant::now();
        while self.running < global {
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let Some(lane) = self.lanes.get_mut(&id) else {
                continue;
            };
            lane.queued = false;
            if lane.waiting.is_empty()
                || lane.running >= lane.slots(per_endpoint)
                || lane.blocked(now)
            {
                continue;
            }
            if let Some(bucket) = &mut lane.bucket
                && let Err(at) = bucket.try_take(now)
            {
                lane.blocked_until = Some(at);
                continue;
            }
            let Some(ticket) = lane.waiting.pop_front() else {
                continue;
            };
            if !lane.endpoint.enabled {
                self.known.remove(&ticket.delivery_id);
                let _ = self.outcomes.send(held(&ticket));
                let waiting: Vec<_> = lane.waiting.drain(..).collect();
                for t in waiting {
                    self.known.remove(&t.delivery_id);
                    let _ = self.outcomes.send(held(&t));
                }
                continue;
            }
            lane.running += 1;
            self.running += 1;
            let ticket = DeliveryTicket {
                endpoint: lane.endpoint.clone(),
                ..ticket
            };
            let delivery = self.delivery.clone();
            let outcomes = self.outcomes.clone();
            self.sends.spawn(async move {
                let (_, outcome) = delivery.attempt(&ticket).await;
                let ok = outcome.next == NextState::Succeeded;
                let _ = outcomes.send(outcome);
                (ticket.endpoint.id.clone(), ticket.delivery_id.clone(), ok)
            });
            self.mark(&id);
        }
    }

    fn finished(&mut self, endpoint_id: &str, delivery_id: &str, ok: bool) {
        self.running = self.running.saturating_sub(1);
        self.known.remove(delivery_id);
        let now = Instant::now();
        let break_after = self.delivery.settings().break_after;
        if let Some(lane) = self.lanes.get_mut(endpoint_id) {
            lane.running = lane.running.saturating_sub(1);
            if ok {
                lane.failures = 0;
                if lane.open {
                    lane.open = false;
                    lane.probes = 0;
                    lane.blocked_until = None;
                }
            } else {
                lane.failures = lane.failures.saturating_add(1);
                // A failure while the circuit is open and no probe wait is
                // running is a failed probe; failures of requests that were
                // in flight when it opened do not lengthen the wait.
                let failed_probe = lane.open && lane.blocked_until.is_none();
                let opens = !lane.open && break_after > 0 && lane.failures >= break_after;
                if opens || failed_probe {
                    if failed_probe {
                        lane.probes = lane.probes.saturating_add(1);
                    }
                    lane.open = true;
                    let delays = self.delivery.settings().schedule.delays();
                    let delay = delays
                        .get(lane.probes as usize)
                        .or(delays.last())
                        .copied()
                        .unwrap_or(MAX_PROBE_DELAY)
                        .min(MAX_PROBE_DELAY);
                    lane.blocked_until = Some(now + delay);
                    for t in lane.waiting.drain(..) {
                        self.known.remove(&t.delivery_id);
                        let _ = self.outcomes.send(held(&t));
                    }
                    if opens {
                        crate::telemetry::circuit_opened();
                        tracing::warn!(
                            endpoint = endpoint_id,
                            failures = lane.failures,
                            "endpoint failing: sending one delivery at a time until it succeeds"
                        );
                    }
                }
            }
            if lane.idle(now) {
                self.lanes.remove(endpoint_id);
                return;
            }
        }
        self.mark(endpoint_id);
    }

    fn next_wake(&self) -> Option<Instant> {
        self.lanes.values().filter_map(|l| l.blocked_until).min()
    }

    fn unblock(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .lanes
            .iter_mut()
            .filter(|(_, l)| l.blocked_until.is_some_and(|t| t <= now))
            .map(|(id, l)| {
                l.blocked_until = None;
                id.clone()
            })
            .collect();
        for id in due {
            self.mark(&id);
        }
    }

    /// Forgets idle lanes (a rate-limited one only once its token is back,
    /// so forgetting it lets no burst through).
    fn sweep(&mut self) {
        let now = Instant::now();
        self.lanes.retain(|_, l| !l.idle(now));
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
