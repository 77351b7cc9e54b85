//! `/metrics`: the process's metrics (see [`crate::telemetry`]) in
//! Prometheus text format, followed by the figures of this server's store.
//!
//! HTTP requests are labelled by route template (`/v1/bots/{bot}`), never
//! the raw path or a URL, so cardinality stays bounded. The store's figures
//! are computed at scrape time: the group-commit writer's counters, the read
//! pool's use, and the delivery backlog — a total plus the [`TOP_ENDPOINTS`]
//! endpoints with the most waiting, read at most once per
//! [`BACKLOG_TTL`] however often Prometheus scrapes.

use super::AppState;
use crate::store::deliveries::Backlog;
use crate::store::writer_stats_fields;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use std::fmt::Write;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Endpoints shown one by one in the backlog gauges.
pub const TOP_ENDPOINTS: usize = 10;

/// How long one reading of the backlog is served.
pub const BACKLOG_TTL: Duration = Duration::from_secs(5);

/// Pending deliveries of one of the top endpoints.
pub const PENDING: &str = "botwire_deliveries_pending";
/// Pending deliveries of all endpoints.
pub const PENDING_ALL: &str = "botwire_deliveries_pending_all";
/// How long the oldest due delivery of one of the top endpoints has waited.
pub const OLDEST_DUE: &str = "botwire_delivery_oldest_due_age_seconds";
/// How long the oldest due delivery of all has waited.
pub const OLDEST_DUE_ALL: &str = "botwire_delivery_oldest_due_age_all_seconds";
/// Read connections in use.
pub const POOL_IN_USE: &str = "botwire_store_read_pool_in_use";
/// Read connections at most.
pub const POOL_SIZE: &str = "botwire_store_read_pool_size";

/// The scrape-time state of one server: its cached backlog reading.
#[derive(Default)]
pub struct Metrics {
    /// The last reading and when it was taken, by the delivery clock.
    backlog: Mutex<Option<(i64, Backlog)>>,
}

impl Metrics {
    /// The backlog, read afresh when the cached reading is older than
    /// [`BACKLOG_TTL`] by the delivery clock (the clock its due times are
    /// kept in); `None` when the database cannot be read.
    async fn backlog(&self, state: &AppState, now: i64) -> Option<Backlog> {
        let ttl = i64::try_from(BACKLOG_TTL.as_millis()).unwrap_or(i64::MAX);
        let mut cached = self.backlog.lock().await;
        if let Some((at, b)) = &*cached
            && (*at..at.saturating_add(ttl)).contains(&now)
        {
            return Some(b.clone());
        }
        match state.store.backlog(TOP_ENDPOINTS).await {
            Ok(b) => {
                *cached = Some((now, b.clone()));
                Some(b)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the delivery backlog for /metrics");
                None
            }
        }
    }

    /// The exposition text.
    pub async fn render(&self, state: &AppState) -> String {
        let mut out = crate::telemetry::install().render();
        for (name, help) in crate::telemetry::DECLARED {
            if !out.contains(&format!("# TYPE {name} ")) {
                family(&mut out, name, help, "counter");
            }
        }
        for (name, help, value) in writer_stats_fields(&state.store.writer_stats()) {
            family(&mut out, name, help, "counter");
            let _ = writeln!(out, "{name} {value}");
        }
        let (size, in_use) = state.store.read_pool_usage();
        family(&mut out, POOL_SIZE, "Read connections at most.", "gauge");
        let _ = writeln!(out, "{POOL_SIZE} {size}");
        family(&mut out, POOL_IN_USE, "Read connections in use.", "gauge");
        let _ = writeln!(out, "{POOL_IN_USE} {in_use}");
        let now = state.delivery.now_ms();
        if let Some(b) = self.backlog(state, now).await {
            let age =
                |earliest: Option<i64>| earliest.map_or(0.0, |e| (now - e).max(0) as f64 / 1000.0);
            family(
                &mut out,
                PENDING_ALL,
                "Deliveries waiting (pending or to be retried), all endpoints.",
                "gauge",
            );
            let _ = writeln!(out, "{PENDING_ALL} {}", b.pending);
            family(
                &mut out,
                OLDEST_DUE_ALL,
                "Seconds the oldest due delivery has waited past its time, all endpoints (0 when none is due).",
                "gauge",
            );
            let _ = writeln!(out, "{OLDEST_DUE_ALL} {}", age(b.earliest_ms));
            family(
                &mut out,
                PENDING,
                "Deliveries waiting, for the endpoints with the most.",
                "gauge",
            );
            for e in &b.top {
                let _ = writeln!(
                    out,
                    "{PENDING}{{endpoint=\"{}\"}} {}",
                    e.endpoint_id, e.pending
                );
            }
            family(
                &mut out,
                OLDEST_DUE,
                "Seconds the oldest due delivery has waited past its time, for the endpoints with the most waiting.",
                "gauge",
            );
            for e in &b.top {
                let _ = writeln!(
                    out,
                    "{OLDEST_DUE}{{endpoint=\"{}\"}} {}",
                    e.endpoint_id,
                    age(e.earliest_ms)
                );
            }
        }
        out
    }
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Middleware: times each request and records it under its route template.
pub async fn track(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(req).await;
    crate::telemetry::http_request(
        method.as_str(),
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
