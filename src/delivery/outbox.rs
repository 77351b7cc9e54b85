//! The channel outbox sender: gets the bots' replies to the messaging
//! platforms, with the guarantees event delivery has.
//!
//! * **Hot path.** It plugs into the store as its [`OutboxSink`]: replies a
//!   turn commits are written leased to this node and handed over in memory
//!   once durable.
//! * **Order.** One lane per conversation; a lane sends one message at a
//!   time, the next only once the previous is settled. A message that must
//!   be retried stops its lane: the messages behind it are handed back
//!   (their leases released) and go out after it, through the claim path,
//!   which only ever takes the first unsettled message of a lane.
//! * **Retries.** A 429, a 5xx, a platform rate-limit code or a network
//!   failure is retried on the delivery retry schedule (jitter, and the
//!   platform's `Retry-After` or `retry_after` honoured up to 24 h); a
//!   permanent refusal (other 4xx) fails the message at once with the
//!   platform's own error text. Every attempt is recorded, in batches.
//! * **At most once at the platform.** The platforms take no idempotency
//!   key, so a send that may have reached one is never repeated: just
//!   before the calls, the messages about to go are marked sending in one
//!   write ([`Store::mark_sending`], group-committed with the writer's other
//!   work), and only those this node still holds and marked are sent. The
//!   recorded outcome clears the mark; a message found still marked after
//!   its lease ran out (the process stopped mid-send) is settled as failed
//!   (`interrupted`) by another node's claim, never sent again. A send
//!   keeps its slot until its outcome is committed, so a crash leaves at
//!   most `global` (the in-flight limit) in doubt. A 429 or 5xx is an
//!   answer, not a doubt: it is retried as before.
//! * **Throttled per channel.** A token bucket per channel (one second's
//!   worth, refilled at the platform's rate from `[channels]`) spaces the
//!   sends of every producer; a channel out of tokens waits without holding
//!   a send slot, so other channels go meanwhile.
//! * **Guards.** Sends go through the SSRF-guarded client, so a channel's
//!   `api_base` reaches only what event webhooks may. WhatsApp free-form
//!   messages are refused unsent outside the 24-hour customer-service
//!   window (from the person's last message).
//! * **Steppable.** With `poll: None` there is no claim loop: tests call
//!   [`Sender::run_due_once`] at a time of their choosing.

use super::attempt::Delivery;
use super::http::{Attempt, ErrorKind, OutboundRequest};
use crate::channels::{ChannelKind, SendResult};
use crate::config::ChannelsConfig;
use crate::domain::ids::new_id;
use crate::store::Store;
use crate::store::channels::{
    ChannelAttemptRow, MessageNext, MessageOutcome, OutboxSink, OutboxTicket,
};
use crate::store::deliveries::Lease;
use crate::telemetry::SendOutcome;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, OnceCell, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

/// WhatsApp's customer-service window.
pub const WHATSAPP_WINDOW_MS: i64 = 24 * 3_600_000;
/// Most messages one claim takes.
const CLAIM_BATCH: usize = 256;
/// Most outcomes one record takes.
const RECORD_BATCH: usize = 1024;

struct Inner {
    store: Store,
    delivery: Delivery,
    lease: Lease,
    public_url: String,
    commands: mpsc::UnboundedSender<(Vec<OutboxTicket>, bool)>,
    pending: AtomicUsize,
    settled: Notify,
    wake: Notify,
    rates: ChannelsConfig,
}

impl Inner {
    fn dispatch(&self, tickets: Vec<OutboxTicket>, claimed: bool) {
        if tickets.is_empty() {
            return;
        }
        self.pending.fetch_add(tickets.len(), Ordering::SeqCst);
        if let Err(mpsc::error::SendError((t, _))) = self.commands.send((tickets, claimed)) {
            self.settle(t.len());
        }
    }

    fn settle(&self, n: usize) {
        self.pending.fetch_sub(n, Ordering::SeqCst);
        self.settled.notify_waiters();
    }

    /// Marks `ids` as sending, retrying a failed write a few times; answers
    /// those marked (none when the database stays unreachable: then nothing
    /// is sent, and the leases run out).
    async fn mark(&self, ids: Vec<String>) -> HashSet<String> {
        let mut backoff = Duration::from_millis(50);
        for _ in 0..5 {
            match self
                .store
                .mark_sending(ids.clone(), self.lease.clone())
                .await
            {
                Ok(marked) => return marked.into_iter().collect(),
                Err(e) => {
                    tracing::error!(error = %e, messages = ids.len(), "could not mark channel messages as sending; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
        }
        HashSet::new()
    }

    /// One attempt of one message, and what it becomes.
    async fn attempt(&self, t: &OutboxTicket) -> MessageOutcome {
        let now = self.delivery.now_ms();
        let config = &t.channel.config;
        if config.kind() == ChannelKind::Whatsapp
            && t.outgoing.op == "messages"
            && t.outgoing.body["type"] != "template"
            && t.last_inbound_at
                .is_none_or(|at| now - at > WHATSAPP_WINDOW_MS)
        {
            let message = "outside WhatsApp's 24-hour customer-service window (the person has not written in the last 24 hours): only approved template messages may be sent now (WhatsApp error 131047)".to_owned();
            return MessageOutcome {
                ticket: t.clone(),
                attempt: Some(ChannelAttemptRow {
                    id: new_id("catt"),
                    started_at: now,
                    duration_ms: 0,
                    status: None,
                    response_body: String::new(),
                    error_kind: Some("window".into()),
                    error_message: Some(message),
                    node: Some(self.lease.node.to_string()),
                }),
                next: MessageNext::Failed,
            };
        }
        let callback = format!("{}/channels/{}/webhook", self.public_url, t.channel.id);
        let mut req = config.request(&t.outgoing, Some(&callback));
        // The send continues the trace of the turn or request that caused it.
        if let Some(trace) = t.trace_id.as_deref().and_then(crate::trace::TraceId::parse) {
            crate::trace::add_traceparent(&mut req.headers, &trace);
        }
        let attempt = self
            .delivery
            .client()
            .send(OutboundRequest {
                method: reqwest::Method::POST,
                url: req.url,
                headers: req.headers,
                body: Some(req.body),
                timeout: None,
            })
            .await;
        self.outcome(t, attempt)
    }

    fn outcome(&self, t: &OutboxTicket, mut a: Attempt) -> MessageOutcome {
        // A transport error may quote the URL, and Telegram's holds its token.
        let config = &t.channel.config;
        a.error_message = a.error_message.map(|m| config.redact(&m));
        a.response_body = config.redact(&a.response_body);
        let result = match (a.status, a.error) {
            (Some(status), None | Some(ErrorKind::Status)) => {
                t.channel.config.read_result(status, &a.response_body)
            }
            (_, Some(ErrorKind::Blocked | ErrorKind::Invalid)) => {
                SendResult::Failed(a.error_message.clone().unwrap_or_default())
            }
            _ => SendResult::Retry {
                reason: a.error_message.clone().unwrap_or_default(),
                after_secs: None,
            },
        };
        let (next, error) = match result {
            SendResult::Sent(id) => (MessageNext::Sent(id), None),
            SendResult::Failed(text) => (MessageNext::Failed, Some(text)),
            SendResult::Retry { reason, after_secs } => {
                let hint = a
                    .retry_after
                    .into_iter()
                    .chain(after_secs.map(Duration::from_secs))
                    .max();
                let jitter = rand::random::<f64>() * 2.0 - 1.0;
                let next = match self.delivery.settings().schedule.next_delay(
                    t.attempts.saturating_add(1),
                    jitter,
                    hint,
                ) {
                    Some(d) => MessageNext::RetryAt(
                        self.delivery.now_ms()
                            + i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4),
                    ),
                    None => MessageNext::Failed,
                };
                (next, Some(reason))
            }
        };
        let trace_id = t.trace_id.as_deref().unwrap_or("");
        match &error {
            None => {
                tracing::debug!(message = %t.id, channel = %t.channel.id, trace_id, status = ?a.status, "channel message sent")
            }
            Some(e) => {
                tracing::warn!(message = %t.id, channel = %t.channel.id, trace_id, status = ?a.status, error = %e, "channel send failed")
            }
        }
        MessageOutcome {
            ticket: t.clone(),
            attempt: Some(ChannelAttemptRow {
                id: new_id("catt"),
                started_at: a.started_at_ms,
                duration_ms: i64::try_from(a.duration_ms).unwrap_or(i64::MAX),
                status: a.status.map(i64::from),
                response_body: a.response_body,
                error_kind: match (&next, a.error) {
                    (MessageNext::Sent(_), _) => None,
                    (_, Some(k)) => Some(k.as_str().to_owned()),
                    (_, None) => Some("status".to_owned()),
                },
                error_message: error,
                node: Some(self.lease.node.to_string()),
            }),
            next,
        }
    }
}

struct Sink(Arc<Inner>);

impl OutboxSink for Sink {
    fn lease(&self) -> Option<Lease> {
        Some(self.0.lease.clone())
    }
    fn hand_over(&self, tickets: Vec<OutboxTicket>) {
        self.0.dispatch(tickets, false);
    }
}

/// A running channel sender.
pub struct Sender {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Sender {
    /// Starts a sender with `delivery`'s client and settings (retry
    /// schedule, lease, in-flight limit, poll, clock), telling platforms
    /// that report statuses per message to report them at
    /// `{public_url}/channels/{id}/webhook`; connects it to the store.
    pub fn start(store: Store, delivery: Delivery, public_url: &str) -> Self {
        Self::start_throttled(store, delivery, public_url, ChannelsConfig::UNTHROTTLED)
    }

    /// [`Sender::start`], sending through each channel at most the rate
    /// `rates` gives its platform.
    pub fn start_throttled(
        store: Store,
        delivery: Delivery,
        public_url: &str,
        rates: ChannelsConfig,
    ) -> Self {
        let settings = delivery.settings().clone();
        let lease = Lease {
            node: Arc::from(new_id("node")),
            ms: i64::try_from(settings.lease.as_millis()).unwrap_or(i64::MAX / 4),
        };
        let (commands, rx) = mpsc::unbounded_channel();
        let (outcomes, outcome_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            store: store.clone(),
            delivery,
            lease,
            public_url: public_url.trim_end_matches('/').to_owned(),
            commands,
            pending: AtomicUsize::new(0),
            settled: Notify::new(),
            wake: Notify::new(),
            rates,
        });
        let mut tasks = vec![
            tokio::spawn(dispatch_loop(inner.clone(), rx, outcomes, settings.global)),
            tokio::spawn(record_loop(inner.clone(), outcome_rx)),
        ];
        if let Some(every) = settings.poll {
            tasks.push(tokio::spawn(claim_loop(inner.clone(), every)));
        }
        let sink: Arc<dyn OutboxSink> = Arc::new(Sink(inner.clone()));
        store.set_outbox_sink(Some(sink));
        Self {
            inner,
            tasks: Mutex::new(tasks),
        }
    }

    /// Messages handed over whose outcome is not yet recorded.
    pub fn pending(&self) -> usize {
        self.inner.pending.load(Ordering::SeqCst)
    }

    /// Waits until every message handed over is sent (or held) and recorded.
    pub async fn idle(&self) {
        loop {
            let settled = self.inner.settled.notified();
            if self.pending() == 0 {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), settled).await;
        }
    }

    /// Claims what is due at `now` (first in each lane), sends it, records
    /// it, and answers how many were claimed. Repeat to walk a lane.
    pub async fn run_due_once(&self, now: i64) -> crate::store::Result<usize> {
        self.idle().await;
        let tickets = self
            .inner
            .store
            .claim_outbox(now, self.inner.lease.clone(), CLAIM_BATCH)
            .await?;
        let n = tickets.len();
        self.inner.dispatch(tickets, true);
        self.idle().await;
        Ok(n)
    }

    /// Disconnects from the store, lets sends in flight finish (up to
    /// `grace`), then stops. Unsent messages stay leased and fall due later.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.store.set_outbox_sink(None);
        let _ = tokio::time::timeout(grace, self.idle()).await;
        for t in self.tasks.lock().expect("tasks lock").drain(..) {
            t.abort();
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        for t in self.tasks.lock().expect("tasks lock").drain(..) {
            t.abort();
        }
    }
}

/// A channel's token bucket: up to one second's worth of sends, refilled
/// at `rate` per second.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: tokio::time::Instant,
}

impl Bucket {
    fn new(rate: u32, now: tokio::time::Instant) -> Self {
        let rate = f64::from(rate);
        Self {
            rate,
            tokens: rate.max(1.0),
            at: now,
        }
    }

    /// Takes a token, or answers when the next one is there.
    fn take(&mut self, now: tokio::time::Instant) -> Result<(), tokio::time::Instant> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate.max(1.0));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(now + Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// An outcome to record, whether its message came through the claim path,
/// and who waits for it to be recorded (a send holds its slot until then).
type Record = (MessageOutcome, bool, Option<oneshot::Sender<()>>);

/// What a send task answers: its lane, its message, whether the lane must
/// stop behind it (a retry, or a message this node could not mark), and
/// whether it came through the claim path.
type Done = (String, String, bool, bool);

/// The dispatcher's state: lanes per conversation, and per channel the
/// lanes ready to send and its token bucket.
#[derive(Default)]
struct Lanes {
    lanes: HashMap<String, VecDeque<(OutboxTicket, bool)>>,
    busy: HashSet<String>,
    /// Lanes ready to send, per channel.
    ready: HashMap<String, VecDeque<String>>,
    queued: HashSet<String>,
    /// Channels with ready lanes, in turn.
    turn: VecDeque<String>,
    buckets: HashMap<String, Bucket>,
    /// Channels waiting for a token.
    throttled: HashSet<String>,
}

impl Lanes {
    /// Queues `lane` (whose messages go through `channel`) as ready.
    fn make_ready(&mut self, lane: String, channel: &str) {
        if self.busy.contains(&lane) || !self.queued.insert(lane.clone()) {
            return;
        }
        let q = self.ready.entry(channel.to_owned()).or_default();
        if q.is_empty() {
            self.turn.push_back(channel.to_owned());
        }
        q.push_back(lane);
    }

    /// Takes up to `room` messages to send now, one per ready lane, the
    /// channels in turn, each within its rate; answers them and when the
    /// earliest throttled channel has its next token.
    fn take(
        &mut self,
        room: usize,
        rates: &ChannelsConfig,
    ) -> (
        Vec<(String, OutboxTicket, bool)>,
        Option<tokio::time::Instant>,
    ) {
        let now = tokio::time::Instant::now();
        let mut out = Vec::new();
        let mut waiting = Vec::new();
        let mut wake: Option<tokio::time::Instant> = None;
        while out.len() < room {
            let Some(channel) = self.turn.pop_front() else {
                break;
            };
            let Some(q) = self.ready.get_mut(&channel) else {
                continue;
            };
            let Some(lane) = q.pop_front() else {
                self.ready.remove(&channel);
                continue;
            };
            self.queued.remove(&lane);
            let Some((ticket, claimed)) = self.lanes.get_mut(&lane).and_then(VecDeque::pop_front)
            else {
                self.lanes.remove(&lane);
                if self.ready.get(&channel).is_some_and(|q| !q.is_empty()) {
                    self.turn.push_back(channel);
                } else {
                    self.ready.remove(&channel);
                }
                continue;
            };
            let rate = rates.rate(ticket.channel.config.kind());
            if rate > 0 {
                let bucket = self
                    .buckets
                    .entry(channel.clone())
                    .or_insert_with(|| Bucket::new(rate, now));
                if let Err(at) = bucket.take(now) {
                    let kind = ticket.channel.config.kind().as_str();
                    // Put it back where it was; the channel waits.
                    if let Some(l) = self.lanes.get_mut(&lane) {
                        l.push_front((ticket, claimed));
                    }
                    self.queued.insert(lane.clone());
                    if let Some(q) = self.ready.get_mut(&channel) {
                        q.push_front(lane);
                    }
                    if self.throttled.insert(channel.clone()) {
                        crate::telemetry::channel_throttled(kind, &channel);
                    }
                    wake = Some(wake.map_or(at, |w| w.min(at)));
                    waiting.push(channel);
                    continue;
                }
            }
            self.throttled.remove(&channel);
            self.busy.insert(lane.clone());
            if self.ready.get(&channel).is_some_and(|q| !q.is_empty()) {
                self.turn.push_back(channel);
            } else {
                self.ready.remove(&channel);
            }
            out.push((lane, ticket, claimed));
        }
        // Throttled channels keep their turn for when their token comes.
        for (i, channel) in waiting.into_iter().enumerate() {
            self.turn.insert(i, channel);
        }
        (out, wake)
    }
}

/// Lanes per conversation, one send in flight each, at most `global` in
/// all, each channel within its rate; a batch about to go is marked
/// sending in one write first.
async fn dispatch_loop(
    inner: Arc<Inner>,
    mut commands: mpsc::UnboundedReceiver<(Vec<OutboxTicket>, bool)>,
    outcomes: mpsc::UnboundedSender<Record>,
    global: usize,
) {
    let mut st = Lanes::default();
    let mut known: HashSet<String> = HashSet::new();
    // Lanes whose first message waits for a retry: new messages for them go
    // behind it, through the database, until a claimed one settles.
    let mut blocked: HashSet<String> = HashSet::new();
    let mut sends: JoinSet<Done> = JoinSet::new();
    let mut open = true;
    let mut wake_at: Option<tokio::time::Instant> = None;
    let hold = |t: OutboxTicket, claimed: bool| {
        let held = MessageOutcome {
            ticket: t,
            attempt: None,
            next: MessageNext::Held,
        };
        let _ = outcomes.send((held, claimed, None));
    };
    loop {
        let mut finished: Vec<Done> = Vec::new();
        tokio::select! {
            cmd = commands.recv(), if open => match cmd {
                Some((tickets, claimed)) => {
                    let mut dropped = 0;
                    for t in tickets {
                        if !known.insert(t.id.clone()) {
                            dropped += 1;
                            continue;
                        }
                        let lane = t.lane.clone();
                        if !claimed && blocked.contains(&lane) {
                            known.remove(&t.id);
                            hold(t, claimed);
                            continue;
                        }
                        let channel = t.channel.id.clone();
                        st.lanes.entry(lane.clone()).or_default().push_back((t, claimed));
                        st.make_ready(lane, &channel);
                    }
                    if dropped > 0 {
                        inner.settle(dropped);
                    }
                }
                None => open = false,
            },
            Some(done) = sends.join_next(), if !sends.is_empty() => {
                finished.extend(done.ok());
                while let Some(more) = sends.try_join_next() {
                    finished.extend(more.ok());
                }
            }
            () = sleep_until(wake_at), if wake_at.is_some() => {
                wake_at = None;
            }
        }
        for (lane, id, stop, claimed) in finished {
            known.remove(&id);
            st.busy.remove(&lane);
            if claimed && !stop {
                // The message the lane waited for is settled.
                blocked.remove(&lane);
            }
            if stop {
                if blocked.len() > 100_000 {
                    blocked.clear();
                }
                blocked.insert(lane.clone());
                // Order: nothing behind a message that must be retried
                // goes first. Hand the rest back.
                for (t, claimed) in st.lanes.remove(&lane).unwrap_or_default() {
                    known.remove(&t.id);
                    hold(t, claimed);
                }
            } else if let Some(channel) = st
                .lanes
                .get(&lane)
                .and_then(|q| q.front())
                .map(|(t, _)| t.channel.id.clone())
            {
                st.make_ready(lane, &channel);
            } else {
                st.lanes.remove(&lane);
            }
        }
        if !open && sends.is_empty() {
            return;
        }
        let (batch, wake) = st.take(global.max(1).saturating_sub(sends.len()), &inner.rates);
        if wake.is_some() {
            wake_at = wake;
        }
        if batch.is_empty() {
            continue;
        }
        // One write marks the whole batch; each send waits for it.
        let ids: Vec<String> = batch.iter().map(|(_, t, _)| t.id.clone()).collect();
        let marked: Arc<OnceCell<HashSet<String>>> = Arc::new(OnceCell::new());
        let ids = Arc::new(ids);
        for (lane, ticket, claimed) in batch {
            let (inner, outcomes) = (inner.clone(), outcomes.clone());
            let (marked, ids) = (marked.clone(), ids.clone());
            sends.spawn(async move {
                let marked = marked
                    .get_or_init(|| inner.mark(ids.as_ref().clone()))
                    .await;
                if !marked.contains(&ticket.id) {
                    // Settled meanwhile, or no longer this node's: not ours
                    // to send. The lane stops behind it.
                    inner.settle(1);
                    return (lane, ticket.id, true, claimed);
                }
                let outcome = inner.attempt(&ticket).await;
                crate::telemetry::channel_send(
                    ticket.channel.config.kind().as_str(),
                    &ticket.channel.id,
                    match outcome.next {
                        MessageNext::Sent(_) => SendOutcome::Sent,
                        MessageNext::RetryAt(_) => SendOutcome::Retried,
                        _ => SendOutcome::Failed,
                    },
                );
                let retry = matches!(outcome.next, MessageNext::RetryAt(_));
                // The slot (and the lane) stays taken until the outcome is
                // recorded: what a crash can leave in doubt is bounded by
                // the in-flight limit, however slow the records.
                let (recorded, wait) = oneshot::channel();
                let _ = outcomes.send((outcome, claimed, Some(recorded)));
                let _ = wait.await;
                (lane, ticket.id, retry, claimed)
            });
        }
    }
}

/// Sleeps until `at` (forever without one).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Writes outcomes in batches; wakes the claim loop when a message that
/// came through it settled (the next in its lane may now go).
async fn record_loop(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Record>) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < RECORD_BATCH {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        let wake = batch
            .iter()
            .any(|(o, claimed, _)| *claimed || matches!(o.next, MessageNext::Held));
        let outcomes: Vec<MessageOutcome> = batch.iter().map(|(o, _, _)| o.clone()).collect();
        let n = outcomes.len();
        let mut backoff = Duration::from_millis(50);
        loop {
            match inner.store.record_message_outcomes(outcomes.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(error = %e, outcomes = n, "could not record channel send results; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        for (o, _, recorded) in batch.drain(..) {
            if let (MessageNext::Failed, Some(a)) = (&o.next, &o.attempt) {
                tracing::warn!(
                    message = %o.ticket.id,
                    channel = %o.ticket.channel.id,
                    error = a.error_message.as_deref().unwrap_or(""),
                    "channel message failed"
                );
            }
            if let Some(r) = recorded {
                let _ = r.send(());
            }
        }
        inner.settle(n);
        if wake {
            inner.wake.notify_one();
        }
    }
}

async fn claim_loop(inner: Arc<Inner>, every: Duration) {
    loop {
        let _ = tokio::time::timeout(every, inner.wake.notified()).await;
        let now = inner.delivery.now_ms();
        match inner
            .store
            .claim_outbox(now, inner.lease.clone(), CLAIM_BATCH)
            .await
        {
            Ok(tickets) => {
                let full = tickets.len() == CLAIM_BATCH;
                inner.dispatch(tickets, true);
                if full {
                    inner.wake.notify_one();
                }
            }
            Err(e) => tracing::error!(error = %e, "could not claim channel messages"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Bucket;
    use std::time::Duration;

    #[test]
    fn a_bucket_holds_one_seconds_worth_then_spaces_sends_at_its_rate() {
        let t0 = tokio::time::Instant::now();
        let mut b = Bucket::new(20, t0);
        for _ in 0..20 {
            assert!(b.take(t0).is_ok());
        }
        let next = b.take(t0).expect_err("empty after a second's worth");
        assert_eq!(next - t0, Duration::from_millis(50));
        assert!(b.take(t0 + Duration::from_millis(50)).is_ok());
        assert!(b.take(t0 + Duration::from_millis(60)).is_err());
        // Idle for long: still no more than a second's worth at once.
        let later = t0 + Duration::from_secs(60);
        let burst = (0..100).take_while(|_| b.take(later).is_ok()).count();
        assert_eq!(burst, 20);
        // A rate below one a second still lets one through, then waits.
        let mut slow = Bucket::new(1, t0);
        assert!(slow.take(t0).is_ok());
        assert_eq!(
            slow.take(t0).expect_err("one a second") - t0,
            Duration::from_secs(1)
        );
    }
}
