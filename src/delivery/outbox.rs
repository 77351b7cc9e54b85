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
//! * **Guards.** Sends go through the SSRF-guarded client, so a channel's
//!   `api_base` reaches only what event webhooks may. WhatsApp free-form
//!   messages are refused unsent outside the 24-hour customer-service
//!   window (from the person's last message).
//! * **Steppable.** With `poll: None` there is no claim loop: tests call
//!   [`Sender::run_due_once`] at a time of their choosing.

use super::attempt::Delivery;
use super::http::{Attempt, ErrorKind, OutboundRequest};
use crate::channels::{ChannelKind, SendResult};
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
use tokio::sync::{Notify, mpsc};
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

/// Lanes per conversation, one send in flight each, at most `global` in all.
async fn dispatch_loop(
    inner: Arc<Inner>,
    mut commands: mpsc::UnboundedReceiver<(Vec<OutboxTicket>, bool)>,
    outcomes: mpsc::UnboundedSender<(MessageOutcome, bool)>,
    global: usize,
) {
    let mut lanes: HashMap<String, VecDeque<(OutboxTicket, bool)>> = HashMap::new();
    let mut busy: HashSet<String> = HashSet::new();
    let mut ready: VecDeque<String> = VecDeque::new();
    let mut known: HashSet<String> = HashSet::new();
    // Lanes whose first message waits for a retry: new messages for them go
    // behind it, through the database, until a claimed one settles.
    let mut blocked: HashSet<String> = HashSet::new();
    let mut sends: JoinSet<(String, String, bool, bool)> = JoinSet::new();
    let mut open = true;
    loop {
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
                            let held = MessageOutcome {
                                ticket: t,
                                attempt: None,
                                next: MessageNext::Held,
                            };
                            let _ = outcomes.send((held, claimed));
                            continue;
                        }
                        lanes.entry(lane.clone()).or_default().push_back((t, claimed));
                        if !busy.contains(&lane) && !ready.contains(&lane) {
                            ready.push_back(lane);
                        }
                    }
                    if dropped > 0 {
                        inner.settle(dropped);
                    }
                }
                None => open = false,
            },
            Some(done) = sends.join_next(), if !sends.is_empty() => {
                if let Ok((lane, id, retry, claimed)) = done {
                    known.remove(&id);
                    busy.remove(&lane);
                    if claimed && !retry {
                        // The message the lane waited for is settled.
                        blocked.remove(&lane);
                    }
                    if retry {
                        if blocked.len() > 100_000 {
                            blocked.clear();
                        }
                        blocked.insert(lane.clone());
                        // Order: nothing behind a message that must be
                        // retried goes first. Hand the rest back.
                        for (t, claimed) in lanes.remove(&lane).unwrap_or_default() {
                            known.remove(&t.id);
                            let held = MessageOutcome {
                                ticket: t,
                                attempt: None,
                                next: MessageNext::Held,
                            };
                            let _ = outcomes.send((held, claimed));
                        }
                    } else if lanes.get(&lane).is_some_and(|q| !q.is_empty()) {
                        ready.push_back(lane);
                    } else {
                        lanes.remove(&lane);
                    }
                }
            }
        }
        if !open && sends.is_empty() {
            return;
        }
        while sends.len() < global.max(1) {
            let Some(lane) = ready.pop_front() else { break };
            let Some((ticket, claimed)) = lanes.get_mut(&lane).and_then(VecDeque::pop_front) else {
                lanes.remove(&lane);
                continue;
            };
            busy.insert(lane.clone());
            let (inner, outcomes) = (inner.clone(), outcomes.clone());
            sends.spawn(async move {
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
                let _ = outcomes.send((outcome, claimed));
                (lane, ticket.id, retry, claimed)
            });
        }
    }
}

/// Writes outcomes in batches; wakes the claim loop when a message that
/// came through it settled (the next in its lane may now go).
async fn record_loop(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<(MessageOutcome, bool)>) {
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
            .any(|(o, claimed)| *claimed || matches!(o.next, MessageNext::Held));
        let outcomes: Vec<MessageOutcome> = batch.iter().map(|(o, _)| o.clone()).collect();
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
        for (o, _) in &batch {
            if let (MessageNext::Failed, Some(a)) = (&o.next, &o.attempt) {
                tracing::warn!(
                    message = %o.ticket.id,
                    channel = %o.ticket.channel.id,
                    error = a.error_message.as_deref().unwrap_or(""),
                    "channel message failed"
                );
            }
        }
        batch.clear();
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
