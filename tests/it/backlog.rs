//! Backlog: a healthy endpoint keeps its rate beside a dead endpoint with
//! tens of thousands of deliveries pending, on SQLite and PostgreSQL.
//!
//! Runs `botwire bench backlog`'s measurement (`cli::bench_backlog`) in
//! its short form: the healthy endpoint's rate alone, then N pending
//! deliveries for an endpoint that answers 503, then the healthy rate
//! again, with `GET /v1/bots` timed and memory sampled throughout. Asserts
//! that every healthy event arrived once and is `succeeded` in the
//! database, that the backlog is all still there, that the healthy rate
//! with the backlog is at least 80 % of the rate alone, that the dead
//! endpoint is probed rather than hammered, that memory grew by less than
//! a bound, and that `GET /v1/bots` stayed fast.
//!
//! Each phase is several rounds (SQLite five of 3,000 events, PostgreSQL
//! three of 1,500) and counts its best round. A run that misses the rate
//! or latency bound (the machine is shared) is measured once more on a
//! fresh database and the second run decides; every correctness check
//! applies to both. `BOTWIRE_BACKLOG_PENDING` and `BOTWIRE_BACKLOG_EVENTS`
//! change the sizes (default 30,000 pending).

use crate::common;

use botwire::cli::bench_backlog::{BacklogPlan, BacklogReport, measure};
use common::{Db, test_db};

/// The healthy rate beside the backlog must be at least this share of the
/// rate alone.
const MIN_RATIO: f64 = 0.80;
/// `GET /v1/bots` p99 beside the backlog must stay under this (a debug
/// build sharing two cores with the load generator and the receiver).
const MAX_LIST_P99_MS: f64 = 250.0;
/// Resident memory (sampled) may grow by at most this much from before the
/// backlog to the end of the run.
const MAX_RSS_GROWTH_MIB: f64 = 200.0;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn print(label: &str, r: &BacklogReport) {
    let mib = |kib: u64| kib as f64 / 1024.0;
    for (phase, p) in [("alone", &r.alone), ("with backlog", &r.with_backlog)] {
        eprintln!(
            "{label} {phase}: healthy {:.0} events/s (rounds {:?}; {} in {:.2} s); GET /v1/bots p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} calls, {} failed); dead endpoint got {} requests",
            p.rate,
            p.rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
            p.events,
            p.seconds,
            p.list_p50_ms,
            p.list_p99_ms,
            p.list_max_ms,
            p.list_samples,
            p.list_errors,
            p.dead_requests
        );
    }
    eprintln!(
        "{label}: ratio {:.0} %; {} pending written in {:.1} s; RSS {:.0} MiB before, {:.0} MiB max beside the backlog, peak {:.0} MiB; healthy {} acknowledged, {} lost, {} twice, {} succeeded; dead endpoint {:?}",
        100.0 * r.ratio(),
        r.pending,
        r.seed_seconds,
        mib(r.rss_before_kib),
        mib(r.with_backlog.rss_max_kib),
        mib(r.rss_peak_kib),
        r.healthy_published,
        r.lost,
        r.duplicates,
        r.healthy_succeeded,
        r.dead_by_status
    );
}

/// The bounds a run missed on rate or latency (empty: none).
fn performance_misses(r: &BacklogReport) -> Vec<String> {
    let mut misses = Vec::new();
    if r.ratio() < MIN_RATIO {
        misses.push(format!(
            "healthy rate beside the backlog {:.0}/s is {:.0} % of {:.0}/s alone (at least {:.0} % required)",
            r.with_backlog.rate,
            100.0 * r.ratio(),
            r.alone.rate,
            100.0 * MIN_RATIO
        ));
    }
    if r.with_backlog.list_p99_ms >= MAX_LIST_P99_MS {
        misses.push(format!(
            "GET /v1/bots p99 {:.1} ms beside the backlog (under {MAX_LIST_P99_MS} ms required)",
            r.with_backlog.list_p99_ms
        ));
    }
    misses
}

async fn backlog(kind: Db) {
    let _serial = common::heavy().await;
    let pending = env_or("BOTWIRE_BACKLOG_PENDING", 30_000) as u64;
    // Rounds of about two seconds each: SQLite delivers two to three times
    // as fast as PostgreSQL here, so it gets longer and more rounds.
    let (events, rounds) = match kind {
        Db::Sqlite => (3_000, 5),
        Db::Postgres => (1_500, 3),
    };
    let events = env_or("BOTWIRE_BACKLOG_EVENTS", events);
    let label = format!("{kind:?}");
    // Rates and latencies on a shared two-core machine are noisy: a run
    // that misses a performance bound is measured once more on a fresh
    // database, and the second run decides. Correctness is checked on both.
    for run in 1..=2 {
        let Some(db) = test_db(kind) else { return };
        let r = measure(BacklogPlan {
            database: db.url.clone(),
            pending,
            events,
            in_flight: 32,
            rounds,
            progress: true,
        })
        .await
        .expect("backlog run");
        print(&label, &r);

        assert_eq!(r.lost, 0, "{label}: acknowledged healthy events lost");
        assert_eq!(r.duplicates, 0, "{label}: healthy events delivered twice");
        assert_eq!(
            r.healthy_succeeded as usize, r.healthy_published,
            "{label}: healthy deliveries succeeded in the database"
        );
        assert_eq!(
            r.dead_total(),
            pending as i64,
            "{label}: the backlog must all still be there"
        );
        // The dead endpoint's circuit opens after a few failures: from then
        // on it gets one probe per retry delay, not a request per pending
        // delivery.
        assert!(
            r.with_backlog.dead_requests < 1_000,
            "{label}: the dead endpoint got {} requests while the healthy one was measured",
            r.with_backlog.dead_requests
        );
        assert_eq!(
            r.with_backlog.list_errors, 0,
            "{label}: GET /v1/bots failed"
        );
        assert!(
            r.with_backlog.list_samples >= 20,
            "{label}: too few GET /v1/bots samples"
        );
        let growth = r
            .seed_rss_max_kib
            .max(r.with_backlog.rss_max_kib)
            .saturating_sub(r.rss_before_kib) as f64
            / 1024.0;
        assert!(
            growth < MAX_RSS_GROWTH_MIB,
            "{label}: resident memory grew by {growth:.0} MiB"
        );

        let misses = performance_misses(&r);
        if misses.is_empty() {
            return;
        }
        assert!(run < 2, "{label}: {}", misses.join("; "));
        eprintln!(
            "{label}: {} — measuring once more on a fresh database",
            misses.join("; ")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn backlog_sqlite() {
    backlog(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn backlog_postgres() {
    backlog(Db::Postgres).await;
}
