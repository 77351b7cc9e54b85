//! Request metrics for `/metrics`, in Prometheus text format.
//!
//! Labels are the route template (`/v1/bots/{bot}`), never the raw path or
//! a URL, so cardinality stays bounded.

use super::AppState;
use crate::store::writer_stats_fields;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Instant;

const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

#[derive(Default)]
struct Series {
    count: u64,
    sum: f64,
    buckets: [u64; BUCKETS.len()],
}

/// Counters and latency histograms per (method, route, status).
#[derive(Default)]
pub struct Metrics {
    series: Mutex<BTreeMap<(String, String, u16), Series>>,
    /// Channel webhook requests refused, per platform.
    refused: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Records one finished request.
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut map = self.series.lock().expect("metrics lock");
        let s = map
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default();
        s.count += 1;
        s.sum += seconds;
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                s.buckets[i] += 1;
            }
        }
    }

    /// Counts a channel webhook request refused by its platform's scheme.
    pub fn channel_refused(&self, kind: &'static str) {
        *self
            .refused
            .lock()
            .expect("metrics lock")
            .entry(kind)
            .or_default() += 1;
    }

    /// The exposition text.
    pub fn render(&self, writer: &crate::store::writer::WriterStats) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP botwire_http_requests_total HTTP requests by method, route and status.\n",
        );
        out.push_str("# TYPE botwire_http_requests_total counter\n");
        let map = self.series.lock().expect("metrics lock");
        for ((m, r, st), s) in map.iter() {
            let _ = writeln!(
                out,
                "botwire_http_requests_total{{method=\"{m}\",route=\"{r}\",status=\"{st}\"}} {}",
                s.count
            );
        }
        out.push_str("# HELP botwire_http_request_duration_seconds HTTP request latency.\n");
        out.push_str("# TYPE botwire_http_request_duration_seconds histogram\n");
        for ((m, r, st), s) in map.iter() {
            let labels = format!("method=\"{m}\",route=\"{r}\",status=\"{st}\"");
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "botwire_http_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                    s.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "botwire_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "botwire_http_request_duration_seconds_sum{{{labels}}} {}",
                s.sum
            );
            let _ = writeln!(
                out,
                "botwire_http_request_duration_seconds_count{{{labels}}} {}",
                s.count
            );
        }
        out.push_str("# HELP botwire_channel_webhooks_refused_total Channel webhook requests refused (bad or missing signature), by platform.\n");
        out.push_str("# TYPE botwire_channel_webhooks_refused_total counter\n");
        for (kind, n) in self.refused.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "botwire_channel_webhooks_refused_total{{kind=\"{kind}\"}} {n}"
            );
        }
        for (name, help, value) in writer_stats_fields(writer) {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        out
    }
}

/// Middleware: times each request and records it under its route template.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(req).await;
    state.metrics.observe(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}
