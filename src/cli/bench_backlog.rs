//! `botwire bench backlog`: a healthy endpoint beside a large backlog for a
//! dead one.
//!
//! A real server (API, store, delivery engine with its default settings)
//! and a receiver run in this process, on loopback. The receiver answers
//! 200 on `/live` and 503 on `/dead`. Two bots each have one endpoint: `live`
//! → `/live`, `dead` → `/dead`. The run:
//!
//! 1. publishes E events to `live` through `POST /v1/bots/live/events`
//!    (closed loop, a fixed number in flight) and measures the healthy
//!    endpoint's rate alone: events delivered per second from the first
//!    publish to the last arrival (best of R rounds);
//! 2. writes N pending deliveries to the dead endpoint straight through the
//!    store ([`Store::insert_backlog`]: multi-row inserts, big transactions),
//!    due now, while the engine runs;
//! 3. publishes R × E more events to `live` and measures the same rate with
//!    the backlog present.
//!
//! Throughout, a client calls `GET /v1/bots` every few milliseconds (one at
//! a time) and its latency is kept per phase, and the process's resident
//! memory (`VmRSS`) is sampled every 100 ms. At the end every acknowledged
//! healthy event must have arrived, the database must show each healthy
//! delivery `succeeded`, and the dead endpoint must still have all N
//! deliveries, none finished. The process holds the server, the receiver
//! and the load generator, so its memory is an upper bound on the server's.

use crate::delivery::ssrf::AllowList;
use crate::delivery::{Delivery, Engine, Settings};
use crate::domain::bot::{BotId, BotType};
use crate::store::Store;
use crate::store::endpoints::{NewEndpoint, kind};
use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use clap::Args;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Flags of `botwire bench backlog`.
#[derive(Args, Debug)]
pub struct BacklogArgs {
    /// Pending deliveries to write for the dead endpoint.
    #[arg(long, default_value_t = 1_000_000)]
    pending: u64,
    /// Healthy events published in each phase.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Publish requests in flight.
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
    /// Rounds of `--events` per phase (each phase reports its best round).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Folder for the scratch SQLite database.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Use this (empty) database instead, e.g. postgres://…
    #[arg(long)]
    database: Option<String>,
}

/// What one backlog run is asked to do.
#[derive(Clone, Debug)]
pub struct BacklogPlan {
    /// Database URL (an empty database).
    pub database: String,
    /// Pending deliveries for the dead endpoint.
    pub pending: u64,
    /// Healthy events per phase.
    pub events: usize,
    /// Publish requests in flight.
    pub in_flight: usize,
    /// Rounds per phase; a phase's rate is its best round's, so a moment
    /// of noise from elsewhere on the machine does not decide the ratio.
    pub rounds: usize,
    /// Print progress to stderr.
    pub progress: bool,
}

/// One measured phase: the healthy endpoint's rate and the API's latency.
#[derive(Clone, Debug, Default)]
pub struct PhaseFigures {
    /// Healthy events published per round (all acknowledged).
    pub events: usize,
    /// First publish to last arrival, the fastest round.
    pub seconds: f64,
    /// `events / seconds`: the best round's rate.
    pub rate: f64,
    /// Every round's rate, in order.
    pub rates: Vec<f64>,
    /// `GET /v1/bots` answers timed in this phase.
    pub list_samples: usize,
    /// Their p50, ms.
    pub list_p50_ms: f64,
    /// Their p99, ms.
    pub list_p99_ms: f64,
    /// Their maximum, ms.
    pub list_max_ms: f64,
    /// `GET /v1/bots` answers that were not 200.
    pub list_errors: usize,
    /// Highest sampled `VmRSS` in this phase, KiB.
    pub rss_max_kib: u64,
    /// Requests the dead endpoint got in this phase.
    pub dead_requests: usize,
}

/// What a backlog run measured.
#[derive(Clone, Debug, Default)]
pub struct BacklogReport {
    /// Healthy endpoint alone.
    pub alone: PhaseFigures,
    /// Healthy endpoint with the backlog present.
    pub with_backlog: PhaseFigures,
    /// Deliveries written for the dead endpoint.
    pub pending: u64,
    /// How long writing them took.
    pub seed_seconds: f64,
    /// Highest sampled `VmRSS` while they were written, KiB.
    pub seed_rss_max_kib: u64,
    /// `VmRSS` before the backlog was written, KiB.
    pub rss_before_kib: u64,
    /// `VmHWM` (peak resident memory of the process) at the end, KiB.
    pub rss_peak_kib: u64,
    /// Healthy events acknowledged but never delivered.
    pub lost: usize,
    /// Healthy events delivered more than once.
    pub duplicates: usize,
    /// Healthy deliveries the database shows `succeeded` at the end.
    pub healthy_succeeded: i64,
    /// Healthy events acknowledged in all (warm-up included).
    pub healthy_published: usize,
    /// The dead endpoint's deliveries at the end, by status.
    pub dead_by_status: Vec<(String, i64)>,
}

impl BacklogReport {
    /// Healthy rate with the backlog over the rate alone.
    pub fn ratio(&self) -> f64 {
        self.with_backlog.rate / self.alone.rate.max(f64::MIN_POSITIVE)
    }

    /// The dead endpoint's deliveries that still exist, any status.
    pub fn dead_total(&self) -> i64 {
        self.dead_by_status.iter().map(|(_, n)| n).sum()
    }
}

/// `VmRSS` and `VmHWM` of this process, KiB (0 where /proc is missing).
pub fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[derive(Default)]
struct Receiver {
    /// How often each healthy event number arrived.
    seen: Mutex<HashMap<u64, u32>>,
    arrived: AtomicUsize,
    dead: AtomicUsize,
}

/// The event number the bench put in the body (`"n":<digits>`).
fn event_number(body: &[u8]) -> Option<u64> {
    let at = body.windows(4).position(|w| w == b"\"n\":")? + 4;
    let digits = body[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&body[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

async fn live(State(r): State<Arc<Receiver>>, body: Bytes) -> StatusCode {
    if let Some(n) = event_number(&body) {
        *r.seen.lock().expect("lock").entry(n).or_default() += 1;
    }
    r.arrived.fetch_add(1, Ordering::SeqCst);
    StatusCode::OK
}

async fn dead(State(r): State<Arc<Receiver>>) -> StatusCode {
    r.dead.fetch_add(1, Ordering::Relaxed);
    StatusCode::SERVICE_UNAVAILABLE
}

/// Samples taken in the background, per phase.
#[derive(Default)]
struct Samples {
    /// 0: not recording; otherwise the phase number.
    phase: AtomicUsize,
    list_ms: Mutex<HashMap<usize, Vec<f64>>>,
    list_errors: Mutex<HashMap<usize, usize>>,
    rss_max: Mutex<HashMap<usize, u64>>,
}

const ALONE: usize = 1;
const SEEDING: usize = 2;
const WITH_BACKLOG: usize = 3;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Publishes events `first..first + n` to `url` with `in_flight` requests
/// at once; every one must be acknowledged with a 2xx.
async fn publish(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    first: u64,
    n: usize,
    in_flight: usize,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(first));
    let end = first + n as u64;
    let mut tasks = Vec::new();
    for _ in 0..in_flight.max(1) {
        let (client, url, key, next) =
            (client.clone(), url.to_owned(), key.to_owned(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return anyhow::Ok(());
                }
                let body = serde_json::json!({"type": "bench.event", "data": {"n": i}});
                let resp = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await?;
                anyhow::ensure!(
                    resp.status().is_success(),
                    "POST {url} answered {}",
                    resp.status()
                );
                resp.bytes().await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Runs one backlog measurement and answers its figures. Fails when a
/// publish is refused or a healthy delivery does not arrive in time; the
/// caller judges the figures.
pub async fn measure(plan: BacklogPlan) -> anyhow::Result<BacklogReport> {
    let say = |msg: String| {
        if plan.progress {
            eprintln!("{msg}");
        }
    };
    let store = Store::open(&plan.database).await?;
    let (pepper, account, key) = super::bench::fresh_account(&store).await?;
    for (id, name) in [("live", "Live"), ("dead", "Dead")] {
        store
            .create_bot(
                &account.id,
                BotId::parse(id).map_err(|e| anyhow::anyhow!(e))?,
                name,
                BotType::DataCollection,
            )
            .await?;
    }

    let receiver = Arc::new(Receiver::default());
    let app = Router::new()
        .route("/live", post(live))
        .route("/dead", post(dead))
        .with_state(receiver.clone());
    let (raddr, receiver_task) = super::bench::spawn_local(app).await?;
    let live_ep = store
        .create_endpoint(
            &account.id,
            NewEndpoint::new("live", &format!("http://{raddr}/live"), kind::ENDPOINT),
            usize::MAX,
        )
        .await?;
    let dead_ep = store
        .create_endpoint(
            &account.id,
            NewEndpoint::new("dead", &format!("http://{raddr}/dead"), kind::ENDPOINT),
            usize::MAX,
        )
        .await?;

    let settings = Settings {
        allow: AllowList::parse(["127.0.0.0/8"])?,
        ..Settings::default()
    };
    let delivery = Delivery::new(settings)?;
    let engine = Engine::start(store.clone(), delivery.clone());
    let (addr, server_task) = super::bench::serve_locally(&store, pepper, delivery).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(plan.in_flight * 2 + 4)
        .build()?;
    let publish_url = format!("http://{addr}/v1/bots/live/events");

    // Background samplers: GET /v1/bots one at a time, and memory.
    let samples = Arc::new(Samples::default());
    let sampler = {
        let (samples, client, key) = (samples.clone(), client.clone(), key.clone());
        let url = format!("http://{addr}/v1/bots");
        tokio::spawn(async move {
            loop {
                let phase = samples.phase.load(Ordering::SeqCst);
                if phase != 0 {
                    let t = Instant::now();
                    let ok = match client.get(&url).bearer_auth(&key).send().await {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    let ms = t.elapsed().as_secs_f64() * 1000.0;
                    if ok {
                        samples
                            .list_ms
                            .lock()
                            .expect("lock")
                            .entry(phase)
                            .or_default()
                            .push(ms);
                    } else {
                        *samples
                            .list_errors
                            .lock()
                            .expect("lock")
                            .entry(phase)
                            .or_default() += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let rss_sampler = {
        let samples = samples.clone();
        tokio::spawn(async move {
            loop {
                let phase = samples.phase.load(Ordering::SeqCst);
                let (rss, _) = memory_kib();
                {
                    let mut max = samples.rss_max.lock().expect("lock");
                    let m = max.entry(phase).or_default();
                    *m = (*m).max(rss);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // Warm-up: connections, statement caches.
    let warm = 500usize;
    publish(&client, &publish_url, &key, 0, warm, plan.in_flight).await?;
    super::bench::wait_count(
        &receiver.arrived,
        warm,
        Duration::from_secs(60),
        "healthy deliveries",
    )
    .await?;
    let mut next = warm as u64;

    let phase = |id: usize, label: &str| {
        samples.phase.store(id, Ordering::SeqCst);
        say(format!("backlog: {label}"));
    };

    let rounds = plan.rounds.max(1);
    // One round: E healthy events, first publish to last arrival.
    let round = |first: u64| {
        let (client, publish_url, key, receiver) = (
            client.clone(),
            publish_url.clone(),
            key.clone(),
            receiver.clone(),
        );
        async move {
            let expected = receiver.arrived.load(Ordering::SeqCst) + plan.events;
            let started = Instant::now();
            publish(
                &client,
                &publish_url,
                &key,
                first,
                plan.events,
                plan.in_flight,
            )
            .await?;
            super::bench::wait_count(
                &receiver.arrived,
                expected,
                Duration::from_secs(600),
                "healthy deliveries",
            )
            .await?;
            anyhow::Ok(started.elapsed().as_secs_f64())
        }
    };

    // 1. Healthy endpoint alone.
    phase(
        ALONE,
        &format!(
            "healthy endpoint alone: {rounds} round(s) of {} events",
            plan.events
        ),
    );
    let dead_before = receiver.dead.load(Ordering::SeqCst);
    let mut alone_secs = Vec::new();
    for _ in 0..rounds {
        alone_secs.push(round(next).await?);
        next += plan.events as u64;
    }
    let alone_dead = receiver.dead.load(Ordering::SeqCst) - dead_before;
    samples.phase.store(0, Ordering::SeqCst);
    let (rss_before, _) = memory_kib();

    // 2. The backlog.
    phase(
        SEEDING,
        &format!(
            "writing {} pending deliveries for the dead endpoint",
            plan.pending
        ),
    );
    let seed_started = Instant::now();
    let chunk = 100_000u64;
    let mut written = 0u64;
    while written < plan.pending {
        let n = (plan.pending - written).min(chunk);
        written += store
            .insert_backlog(
                &account.id,
                &dead_ep.id,
                "bench.backlog",
                r#"{"backlog":true}"#,
                n,
                10_000,
            )
            .await?;
        say(format!(
            "backlog: {written} of {} written ({:.0}/s)",
            plan.pending,
            written as f64 / seed_started.elapsed().as_secs_f64()
        ));
    }
    let seed_seconds = seed_started.elapsed().as_secs_f64();
    // Let the engine take up the backlog before measuring beside it.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 3. Healthy endpoint with the backlog present.
    phase(
        WITH_BACKLOG,
        &format!(
            "healthy endpoint beside the backlog: {rounds} round(s) of {} events",
            plan.events
        ),
    );
    let dead_before = receiver.dead.load(Ordering::SeqCst);
    let mut backlog_secs = Vec::new();
    for _ in 0..rounds {
        backlog_secs.push(round(next).await?);
        next += plan.events as u64;
    }
    let backlog_dead = receiver.dead.load(Ordering::SeqCst) - dead_before;
    // Sample once more so the phase has at least one memory reading.
    tokio::time::sleep(Duration::from_millis(150)).await;
    samples.phase.store(0, Ordering::SeqCst);

    // Checks: every acknowledged healthy event arrived; the database agrees;
    // the backlog is all still there.
    say("backlog: checking that nothing was lost".to_owned());
    let published = next as usize;
    let (lost, duplicates) = {
        let seen = receiver.seen.lock().expect("lock");
        let lost = (0..next).filter(|n| !seen.contains_key(n)).count();
        let duplicates = seen.values().filter(|&&c| c > 1).count();
        (lost, duplicates)
    };
    let count_by_status = |endpoint: String| {
        store.read(move |c| {
            c.query(
                "SELECT status, COUNT(*) FROM deliveries WHERE endpoint_id = $1 GROUP BY status ORDER BY status",
                &[endpoint.into()],
            )?
            .iter()
            .map(|r| Ok((r.text(0)?, r.int(1)?)))
            .collect::<crate::store::Result<Vec<(String, i64)>>>()
        })
    };
    // Results are recorded in batches behind the arrivals: give them time.
    let deadline = Instant::now() + Duration::from_secs(60);
    let healthy_succeeded = loop {
        let rows = count_by_status(live_ep.id.clone()).await?;
        let ok = rows
            .iter()
            .find(|(s, _)| s == "succeeded")
            .map_or(0, |r| r.1);
        if ok as usize >= published || Instant::now() > deadline {
            break ok;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let dead_by_status = count_by_status(dead_ep.id.clone()).await?;

    let phase_figures = |id: usize, events: usize, secs: &[f64], dead: usize| {
        let rates: Vec<f64> = secs.iter().map(|s| events as f64 / s).collect();
        let best = secs.iter().copied().fold(f64::INFINITY, f64::min);
        let mut ms = samples
            .list_ms
            .lock()
            .expect("lock")
            .remove(&id)
            .unwrap_or_default();
        ms.sort_by(f64::total_cmp);
        PhaseFigures {
            events,
            seconds: best,
            rate: events as f64 / best,
            rates,
            list_samples: ms.len(),
            list_p50_ms: percentile(&ms, 0.50),
            list_p99_ms: percentile(&ms, 0.99),
            list_max_ms: percentile(&ms, 1.0),
            list_errors: samples
                .list_errors
                .lock()
                .expect("lock")
                .get(&id)
                .copied()
                .unwrap_or(0),
            rss_max_kib: samples
                .rss_max
                .lock()
                .expect("lock")
                .get(&id)
                .copied()
                .unwrap_or(0),
            dead_requests: dead,
        }
    };
    let report = BacklogReport {
        alone: phase_figures(ALONE, plan.events, &alone_secs, alone_dead),
        with_backlog: phase_figures(WITH_BACKLOG, plan.events, &backlog_secs, backlog_dead),
        pending: written,
        seed_seconds,
        seed_rss_max_kib: samples
            .rss_max
            .lock()
            .expect("lock")
            .get(&SEEDING)
            .copied()
            .unwrap_or(0),
        rss_before_kib: rss_before,
        rss_peak_kib: memory_kib().1,
        lost,
        duplicates,
        healthy_succeeded,
        healthy_published: published,
        dead_by_status,
    };

    sampler.abort();
    rss_sampler.abort();
    engine.shutdown(Duration::from_secs(5)).await;
    server_task.abort();
    receiver_task.abort();
    store.close().await;
    Ok(report)
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: BacklogArgs) -> anyhow::Result<()> {
    let scratch = args.dir.join(format!(
        "botwire-bench-backlog-{}.db",
        crate::domain::ids::new_id("b")
    ));
    let database = args
        .database
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", scratch.display()));
    eprintln!(
        "bench backlog: {} pending deliveries for a dead endpoint (503), {} healthy events per phase, {} in flight, {}",
        args.pending,
        args.events,
        args.in_flight,
        crate::cli::redact_url(&database)
    );
    let result = measure(BacklogPlan {
        database,
        pending: args.pending,
        events: args.events,
        in_flight: args.in_flight,
        rounds: args.rounds,
        progress: true,
    })
    .await;
    if args.database.is_none() {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", scratch.display()));
        }
    }
    let r = result.context("backlog run failed")?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "backlog:        {} pending deliveries for the dead endpoint written in {:.1} s",
        r.pending, r.seed_seconds
    );
    for (label, p) in [("alone", &r.alone), ("with backlog", &r.with_backlog)] {
        println!(
            "{:<15} healthy {:>7.0} events/s (best of {}; {} in {:.2} s); GET /v1/bots p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} calls, {} failed); RSS max {:.0} MiB; dead endpoint got {} requests",
            format!("{label}:"),
            p.rate,
            p.rates
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            p.events,
            p.seconds,
            p.list_p50_ms,
            p.list_p99_ms,
            p.list_max_ms,
            p.list_samples,
            p.list_errors,
            mib(p.rss_max_kib),
            p.dead_requests
        );
    }
    println!(
        "ratio:          healthy rate with backlog / alone = {:.0} %",
        100.0 * r.ratio()
    );
    println!(
        "memory:         RSS {:.0} MiB before the backlog, max {:.0} MiB while writing it, max {:.0} MiB beside it; peak (VmHWM) {:.0} MiB",
        mib(r.rss_before_kib),
        mib(r.seed_rss_max_kib),
        mib(r.with_backlog.rss_max_kib),
        mib(r.rss_peak_kib)
    );
    println!(
        "healthy:        {} acknowledged, {} lost, {} delivered twice, {} succeeded in the database",
        r.healthy_published, r.lost, r.duplicates, r.healthy_succeeded
    );
    let statuses = r
        .dead_by_status
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "dead endpoint:  {} deliveries in the database ({statuses})",
        r.dead_total()
    );
    anyhow::ensure!(
        r.lost == 0,
        "{} acknowledged healthy events never arrived",
        r.lost
    );
    anyhow::ensure!(
        r.dead_total() == r.pending as i64,
        "the dead endpoint has {} deliveries, {} were written",
        r.dead_total(),
        r.pending
    );
    Ok(())
}
