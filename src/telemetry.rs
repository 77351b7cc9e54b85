//! Operator metrics: what botwire counts and times, through the `metrics`
//! facade, rendered in Prometheus text format by `GET /metrics`.
//!
//! One recorder is installed per process ([`install`]); every server, engine
//! and store of the process reports to it. Its histograms keep their samples
//! until rendered or upkept, so a thread runs upkeep every few seconds even
//! when nobody scrapes.
//!
//! Cardinality is bounded by construction: no label is ever a URL, a path, a
//! contact or a message. Labels are route templates, event type names (the
//! catalog plus the custom names bot authors declare), error kinds, bot ids
//! channel ids (a deployment has a handful) and channel kinds. Figures that belong to one store — the delivery
//! backlog, the read pool — are not recorded here but computed at scrape
//! time by the server that owns the store (see `api::metrics`).
//!
//! Messaging channel traffic is counted per platform kind and outcome, in
//! each direction; conversation timers per timer kind; pruned rows per kind,
//! with the last prune pass's duration.

use metrics::{counter, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// Latency buckets, in seconds, for every `*_seconds` histogram.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0,
];

/// Buckets for the group-commit batch size (writes per transaction).
pub const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// HTTP requests by method, route template and status.
pub const HTTP_REQUESTS: &str = "botwire_http_requests_total";
/// HTTP request latency by method, route template and status.
pub const HTTP_DURATION: &str = "botwire_http_request_duration_seconds";
/// Delivery attempts made, by event type.
pub const DELIVERY_ATTEMPTS: &str = "botwire_delivery_attempts_total";
/// Attempts that failed, by event type and error kind.
pub const DELIVERY_FAILURES: &str = "botwire_delivery_attempt_failures_total";
/// Deliveries that succeeded, by event type.
pub const DELIVERIES_SUCCEEDED: &str = "botwire_deliveries_succeeded_total";
/// Deliveries out of attempts, by event type.
pub const DELIVERIES_DEAD: &str = "botwire_deliveries_dead_total";
/// Attempt latency by event type.
pub const DELIVERY_DURATION: &str = "botwire_delivery_attempt_duration_seconds";
/// Channel webhook requests refused (bad or missing signature), by platform.
pub const CHANNEL_WEBHOOKS_REFUSED: &str = "botwire_channel_webhooks_refused_total";
/// Times an endpoint's circuit opened.
pub const CIRCUIT_OPENS: &str = "botwire_delivery_circuit_opens_total";
/// Chat turns by bot, channel and outcome.
pub const CHAT_TURNS: &str = "botwire_chat_turns_total";
/// Chat turn latency by bot and channel.
pub const CHAT_DURATION: &str = "botwire_chat_turn_duration_seconds";
/// Story-webhook calls by outcome.
pub const STORY_CALLS: &str = "botwire_story_calls_total";
/// Story-webhook call latency by outcome.
pub const STORY_DURATION: &str = "botwire_story_call_duration_seconds";
/// Messages received on channel webhooks, by platform kind, channel and
/// outcome (`accepted`, `duplicate`, `refused`: one per refused request).
pub const CHANNEL_INBOUND: &str = "botwire_channel_inbound_messages_total";
/// Send attempts of channel messages, by platform kind, channel and outcome
/// (`sent`, `failed`, `retried`).
pub const CHANNEL_OUTBOUND: &str = "botwire_channel_outbound_sends_total";
/// Times a channel's sends had to wait for its rate (`[channels]`), by
/// platform kind and channel: one per pause, however long.
pub const CHANNEL_THROTTLED: &str = "botwire_channel_throttled_total";
/// Conversation timers claimed as due, by bot and timer kind.
pub const TIMERS_DUE: &str = "botwire_timers_due_total";
/// Conversation timers that ran their turn, by bot and timer kind.
pub const TIMERS_FIRED: &str = "botwire_timers_fired_total";
/// Writes per group-commit transaction.
pub const COMMIT_BATCH: &str = "botwire_store_commit_batch_size";
/// Time from BEGIN to the end of COMMIT of one group-commit transaction.
pub const COMMIT_DURATION: &str = "botwire_store_commit_duration_seconds";

/// Rows removed by the pruner, by kind (events, deliveries, attempts, …).
pub const PRUNED_ROWS: &str = "botwire_pruned_rows_total";
/// How long the last prune pass took, in seconds.
pub const PRUNE_LAST_DURATION: &str = "botwire_prune_last_duration_seconds";

/// Counter families declared on `/metrics` (`# HELP`, `# TYPE`) even
/// before their first sample, so dashboards and alert rules find them in a
/// process that has not yet had channel traffic or timers: name and help.
pub const DECLARED: [(&str, &str); 6] = [
    (
        CHANNEL_INBOUND,
        "Messages received on channel webhooks, by platform kind, channel and outcome (accepted, duplicate, refused: one per refused request).",
    ),
    (
        CHANNEL_OUTBOUND,
        "Channel message send attempts, by platform kind, channel and outcome (sent, failed, retried).",
    ),
    (
        CHANNEL_THROTTLED,
        "Times a channel's sends paused for its rate limit, by platform kind and channel.",
    ),
    (
        TIMERS_DUE,
        "Conversation timers claimed as due, by bot and kind.",
    ),
    (
        TIMERS_FIRED,
        "Conversation timers that ran their turn, by bot and kind.",
    ),
    (
        PRUNED_ROWS,
        "Rows removed by the pruner (retention.*), by kind.",
    ),
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder (once; later calls return the same
/// handle) and describes every family.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(COMMIT_BATCH.into()), &BATCH_BUCKETS)
            })
            .expect("bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "a metrics recorder was already installed; /metrics shows only scrape-time figures"
            );
        }
        describe();
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("botwire-metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            });
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_histogram};
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests by method, route template and status."
    );
    describe_histogram!(
        HTTP_DURATION,
        "HTTP request latency by method, route template and status."
    );
    describe_counter!(DELIVERY_ATTEMPTS, "Delivery attempts made, by event type.");
    describe_counter!(
        DELIVERY_FAILURES,
        "Delivery attempts that failed, by event type and error kind."
    );
    describe_counter!(
        DELIVERIES_SUCCEEDED,
        "Deliveries that succeeded, by event type."
    );
    describe_counter!(
        DELIVERIES_DEAD,
        "Deliveries that ran out of attempts, by event type."
    );
    describe_histogram!(DELIVERY_DURATION, "Delivery attempt latency by event type.");
    describe_counter!(
        CIRCUIT_OPENS,
        "Times an endpoint's circuit opened (failures in a row reached delivery.break_after)."
    );
    describe_counter!(
        CHAT_TURNS,
        "Chat turns by bot, channel and outcome (ok or error)."
    );
    describe_histogram!(CHAT_DURATION, "Chat turn latency by bot and channel.");
    describe_counter!(STORY_CALLS, "Story-webhook calls by outcome (ok or error).");
    describe_histogram!(STORY_DURATION, "Story-webhook call latency by outcome.");
    for (name, help) in DECLARED {
        describe_counter!(name, help);
    }
    metrics::describe_gauge!(
        PRUNE_LAST_DURATION,
        "Seconds the last prune pass took (all batches and the SQLite vacuum)."
    );
    describe_histogram!(COMMIT_BATCH, "Writes per group-commit transaction.");
    describe_histogram!(
        COMMIT_DURATION,
        "Group-commit transaction time, BEGIN to the end of COMMIT."
    );
}

/// One finished HTTP request, under its route template.
pub fn http_request(method: &str, route: &str, status: u16, elapsed: Duration) {
    let labels = [
        ("method", method.to_owned()),
        ("route", route.to_owned()),
        ("status", status.to_string()),
    ];
    counter!(HTTP_REQUESTS, &labels).increment(1);
    histogram!(HTTP_DURATION, &labels).record(elapsed.as_secs_f64());
}

/// What one delivery attempt led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    /// A 2xx: the delivery succeeded.
    Succeeded,
    /// Failed; it will be tried again.
    Retrying,
    /// Failed with no attempt left.
    Dead,
}

/// One delivery attempt: `error_kind` is `None` on success.
pub fn delivery_attempt(
    event_type: &str,
    error_kind: Option<&'static str>,
    result: AttemptResult,
    elapsed: Duration,
) {
    let event_type = event_type.to_owned();
    counter!(DELIVERY_ATTEMPTS, "event_type" => event_type.clone()).increment(1);
    histogram!(DELIVERY_DURATION, "event_type" => event_type.clone()).record(elapsed.as_secs_f64());
    if let Some(kind) = error_kind {
        counter!(DELIVERY_FAILURES, "event_type" => event_type.clone(), "error_kind" => kind)
            .increment(1);
    }
    match result {
        AttemptResult::Succeeded => {
            counter!(DELIVERIES_SUCCEEDED, "event_type" => event_type).increment(1);
        }
        AttemptResult::Dead => counter!(DELIVERIES_DEAD, "event_type" => event_type).increment(1),
        AttemptResult::Retrying => {}
    }
}

/// A channel webhook request of a `kind` platform was refused by its
/// signature scheme.
pub fn channel_webhook_refused(kind: &'static str, channel: &str) {
    counter!(CHANNEL_WEBHOOKS_REFUSED, "kind" => kind).increment(1);
    counter!(CHANNEL_INBOUND, "kind" => kind, "channel" => channel.to_owned(), "outcome" => "refused")
        .increment(1);
}

/// What a channel webhook request brought: `accepted` new messages and
/// `duplicate` ones already received (a platform's retry).
pub fn channel_inbound(kind: &'static str, channel: &str, accepted: usize, duplicate: usize) {
    for (outcome, n) in [("accepted", accepted), ("duplicate", duplicate)] {
        counter!(CHANNEL_INBOUND, "kind" => kind, "channel" => channel.to_owned(), "outcome" => outcome)
            .increment(n as u64);
    }
}

/// What one send attempt of a channel message led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// The platform took it.
    Sent,
    /// Failed for good.
    Failed,
    /// Failed; it will be tried again.
    Retried,
}

/// One send attempt of a message of a `kind` channel.
pub fn channel_send(kind: &'static str, channel: &str, outcome: SendOutcome) {
    let outcome = match outcome {
        SendOutcome::Sent => "sent",
        SendOutcome::Failed => "failed",
        SendOutcome::Retried => "retried",
    };
    counter!(CHANNEL_OUTBOUND, "kind" => kind, "channel" => channel.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// The sends of a `kind` channel paused: it is out of tokens for its rate.
pub fn channel_throttled(kind: &'static str, channel: &str) {
    counter!(CHANNEL_THROTTLED, "kind" => kind, "channel" => channel.to_owned()).increment(1);
}

/// A conversation timer of `kind` of `bot` was claimed as due.
pub fn timer_due(bot: &str, kind: &'static str) {
    counter!(TIMERS_DUE, "bot" => bot.to_owned(), "kind" => kind).increment(1);
}

/// A conversation timer of `kind` of `bot` ran its turn.
pub fn timer_fired(bot: &str, kind: &'static str) {
    counter!(TIMERS_FIRED, "bot" => bot.to_owned(), "kind" => kind).increment(1);
}

/// An endpoint's circuit opened.
pub fn circuit_opened() {
    counter!(CIRCUIT_OPENS).increment(1);
}

/// One chat turn of `bot` through `channel` (`api`, `web`, or a messaging
/// channel's kind).
pub fn chat_turn(bot: &str, channel: &'static str, ok: bool, elapsed: Duration) {
    let bot = bot.to_owned();
    counter!(CHAT_TURNS, "bot" => bot.clone(), "channel" => channel,
        "outcome" => if ok { "ok" } else { "error" })
    .increment(1);
    histogram!(CHAT_DURATION, "bot" => bot, "channel" => channel).record(elapsed.as_secs_f64());
}

/// One story-webhook call; `elapsed` is `None` when nothing was sent.
pub fn story_call(ok: bool, elapsed: Option<Duration>) {
    let outcome = if ok { "ok" } else { "error" };
    counter!(STORY_CALLS, "outcome" => outcome).increment(1);
    if let Some(e) = elapsed {
        histogram!(STORY_DURATION, "outcome" => outcome).record(e.as_secs_f64());
    }
}

/// One prune pass: rows removed of each kind, and how long it took.
pub fn pruned(counts: &crate::domain::retention::PruneCounts, elapsed: Duration) {
    for kind in crate::domain::retention::PruneKind::ALL {
        let n = counts.get(kind);
        if n > 0 {
            counter!(PRUNED_ROWS, "kind" => kind.as_str()).increment(n);
        }
    }
    metrics::gauge!(PRUNE_LAST_DURATION).set(elapsed.as_secs_f64());
}

/// One group-commit transaction of `writes` writes.
pub fn commit(writes: usize, elapsed: Duration) {
    histogram!(COMMIT_BATCH).record(writes as f64);
    histogram!(COMMIT_DURATION).record(elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_latency_family_gets_the_latency_buckets() {
        for name in [
            HTTP_DURATION,
            DELIVERY_DURATION,
            CHAT_DURATION,
            STORY_DURATION,
            COMMIT_DURATION,
        ] {
            assert!(name.ends_with("_seconds"), "{name}");
        }
        assert!(LATENCY_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        assert!(BATCH_BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }
}
