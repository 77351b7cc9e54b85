//! `botwire bench deliver`: events per second end to end, in one process.
//!
//! A real server (API, store, delivery engine) and a receiver run in this
//! process, on loopback. N events are published over HTTP to
//! `POST /v1/bots/{bot}/events` with a fixed number in flight; each is
//! acknowledged only once durable, fanned out to the endpoint(s), signed,
//! sent to the receiver, and its attempt recorded. Reported:
//!
//! * ingest: acknowledged events/s;
//! * end to end: events delivered to the receiver per second, from the first
//!   publish to the last arrival, and ingest→arrival latency (p50, p99);
//! * the loopback ceiling: the same client posting the same bodies straight
//!   to the receiver (one hop instead of two, no database);
//! * a fixed-rate run (open loop, default 2,000 events/s) for its latency.

use super::bench_client::Connection;
use crate::delivery::ssrf::AllowList;
use crate::delivery::{Delivery, Engine, Settings};
use crate::domain::bot::{BotId, BotType};
use crate::store::Store;
use crate::store::endpoints::{NewEndpoint, kind};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use clap::Args;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Flags of `botwire bench deliver`.
#[derive(Args, Debug)]
pub struct DeliverArgs {
    /// Events to publish in the throughput run.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Events per second of the fixed-rate run (0 skips it).
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// Seconds of the fixed-rate run.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Endpoints subscribed to the bot (each event goes to each); 0
    /// measures ingest alone.
    #[arg(long, default_value_t = 1)]
    endpoints: usize,
    /// Requests in flight to one endpoint at most
    /// (`delivery.max_in_flight_per_endpoint`).
    #[arg(long, default_value_t = Settings::default().per_endpoint)]
    per_endpoint: usize,
    /// Folder for the scratch SQLite database.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Use this (empty) database instead, e.g. postgres://…
    #[arg(long)]
    database: Option<String>,
}

fn epoch() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn micros() -> u64 {
    u64::try_from(epoch().elapsed().as_micros()).unwrap_or(u64::MAX)
}

#[derive(Default)]
struct Arrivals {
    count: AtomicUsize,
    latencies_us: Mutex<Vec<u64>>,
}

impl Arrivals {
    fn reset(&self) {
        self.count.store(0, Ordering::SeqCst);
        self.latencies_us.lock().expect("lock").clear();
    }
}

/// The send time the bench put in the event (`"t":<micros>`), read without
/// parsing the whole body: the receiver should cost as little as a real
/// receiver's first step.
fn sent_at(body: &[u8]) -> Option<u64> {
    let at = body.windows(4).position(|w| w == b"\"t\":")? + 4;
    let digits = body[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&body[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

async fn hook(State(a): State<Arc<Arrivals>>, body: Bytes) -> &'static str {
    let sent = sent_at(&body);
    if let Some(t) = sent {
        a.latencies_us
            .lock()
            .expect("lock")
            .push(micros().saturating_sub(t));
    }
    a.count.fetch_add(1, Ordering::SeqCst);
    "ok"
}

async fn echo() -> &'static str {
    "ok"
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

fn body(n: usize) -> String {
    serde_json::json!({"type": "bench.event", "data": {"t": micros(), "n": n}}).to_string()
}

/// Posts `n` bodies to `path` on `addr` with `in_flight` concurrent
/// requests, each over its own keep-alive connection (the benches' light
/// client: the load generator shares the cores with the server); answers
/// the elapsed time.
async fn closed_loop(
    addr: std::net::SocketAddr,
    path: &str,
    auth: &str,
    n: usize,
    in_flight: usize,
) -> anyhow::Result<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (path, auth, next) = (path.to_owned(), auth.to_owned(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Connection::new(addr);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                let (status, _) = conn.post_json(&path, &auth, body(i).into()).await?;
                anyhow::ensure!(status.is_success(), "POST {path} answered {status}");
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed())
}

fn latencies(arrivals: &Arrivals) -> Vec<u64> {
    let mut l = arrivals.latencies_us.lock().expect("lock").clone();
    l.sort_unstable();
    l
}

/// Runs the benchmark.
pub async fn run(args: DeliverArgs) -> anyhow::Result<()> {
    epoch();
    let scratch = args.dir.join(format!(
        "botwire-bench-deliver-{}.db",
        crate::domain::ids::new_id("b")
    ));
    let url = args
        .database
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", scratch.display()));
    let store = Store::open(&url).await?;
    let (pepper, account, key) = super::bench::fresh_account(&store).await?;
    store
        .create_bot(
            &account.id,
            BotId::parse("bench").map_err(|e| anyhow::anyhow!(e))?,
            "Bench",
            BotType::DataCollection,
        )
        .await?;

    // The receiver.
    let arrivals = Arc::new(Arrivals::default());
    let receiver = Router::new()
        .route("/hook", post(hook))
        .route("/echo", post(echo))
        .with_state(arrivals.clone());
    let (raddr, _) = super::bench::spawn_local(receiver).await?;
    for _ in 0..args.endpoints {
        store
            .create_endpoint(
                &account.id,
                NewEndpoint::new("bench", &format!("http://{raddr}/hook"), kind::ENDPOINT),
                // The bench sets its own fan-out: no cap.
                usize::MAX,
            )
            .await?;
    }

    // The server.
    let settings = Settings {
        allow: AllowList::parse(["127.0.0.0/8"])?,
        per_endpoint: args.per_endpoint.max(1),
        ..Settings::default()
    };
    let delivery = Delivery::new(settings)?;
    let engine = Engine::start(store.clone(), delivery.clone());
    let (addr, _) = super::bench::serve_locally(&store, pepper, delivery).await?;

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.in_flight * 2)
        .build()?;
    let publish_path = "/v1/bots/bench/events";
    let publish = format!("http://{addr}{publish_path}");
    let auth = format!("Bearer {key}");
    let fan = args.endpoints;
    eprintln!(
        "bench deliver: {} events, {} in flight, {} endpoint(s) with up to {} requests in flight each, {}",
        args.events,
        args.in_flight,
        fan,
        args.per_endpoint,
        crate::cli::redact_url(&url)
    );

    // Warm-up: connections, statement caches.
    closed_loop(addr, publish_path, &auth, 500, args.in_flight).await?;
    super::bench::wait_count(
        &arrivals.count,
        500 * fan,
        Duration::from_secs(60),
        "deliveries",
    )
    .await?;
    engine.idle().await;
    arrivals.reset();

    // Throughput.
    let started = Instant::now();
    let ingest = closed_loop(addr, publish_path, &auth, args.events, args.in_flight).await?;
    super::bench::wait_count(
        &arrivals.count,
        args.events * fan,
        Duration::from_secs(300),
        "deliveries",
    )
    .await?;
    let e2e = started.elapsed();
    engine.idle().await;
    let recorded = started.elapsed();
    let lat = latencies(&arrivals);
    let ingest_rate = args.events as f64 / ingest.as_secs_f64();
    let e2e_rate = (args.events * fan) as f64 / e2e.as_secs_f64();
    println!(
        "ingest:      {ingest_rate:>9.0} events/s acknowledged durable ({} in {:.2} s)",
        args.events,
        ingest.as_secs_f64()
    );
    println!(
        "end to end:  {e2e_rate:>9.0} deliveries/s arrived ({} in {:.2} s; all attempts recorded at {:.2} s)",
        args.events * fan,
        e2e.as_secs_f64(),
        recorded.as_secs_f64()
    );
    println!(
        "latency:     ingest→arrival p50 {:.1} ms, p99 {:.1} ms",
        percentile(&lat, 0.50),
        percentile(&lat, 0.99)
    );

    // Loopback ceiling: the same client straight to the receiver.
    let ceiling = closed_loop(raddr, "/echo", &auth, args.events, args.in_flight).await?;
    let ceiling_rate = args.events as f64 / ceiling.as_secs_f64();
    println!(
        "loopback:    {ceiling_rate:>9.0} requests/s one hop, same client, no database (end to end is {:.0} % of it)",
        100.0 * e2e_rate / ceiling_rate
    );

    // Fixed rate, open loop.
    if args.rate > 0 {
        arrivals.reset();
        let total = (args.rate as f64 * args.seconds).round() as usize;
        let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
        let started = tokio::time::Instant::now();
        let failures = Arc::new(AtomicUsize::new(0));
        for i in 0..total {
            tokio::time::sleep_until(started + interval * i as u32).await;
            let (client, url, key, failures) = (
                client.clone(),
                publish.clone(),
                key.clone(),
                failures.clone(),
            );
            tokio::spawn(async move {
                let ok = client
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(body(i))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let failed = failures.load(Ordering::Relaxed);
        super::bench::wait_count(
            &arrivals.count,
            (total - failed) * fan,
            Duration::from_secs(120),
            "deliveries",
        )
        .await?;
        let lat = latencies(&arrivals);
        println!(
            "fixed rate:  {} events/s for {:.0} s: ingest→arrival p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({failed} failed)",
            args.rate,
            args.seconds,
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            percentile(&lat, 1.0)
        );
    }

    engine.shutdown(Duration::from_secs(10)).await;
    store.close().await;
    if args.database.is_none() {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", scratch.display()));
        }
    }
    Ok(())
}
