//! `botwire bench chat`: chat turns per second over HTTP.
//!
//! Starts the real server in this process on a fresh SQLite database in
//! `--dir` (or the empty PostgreSQL database `--database` names), imports an example (`--example elipackage`, seed 003's bot, or
//! `leads`, whose every turn evaluates CEL conditions, its scoring turn a
//! `set` node too), and has many contacts chat through it at once, every turn writing its events in the
//! same transaction as the conversation change. Then a paced run at a fixed
//! rate reports the latency distribution. Client and server share this
//! machine's cores, as they would in a single-box deployment.

use super::bench_client::Connection;
use crate::store::Store;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The examples the bench can run: (name, bot file, the conversation each
/// contact repeats, which ends it so the next "hi" starts another).
const EXAMPLES: [(&str, &str, &[&str]); 2] = [
    (
        "elipackage",
        include_str!("../../examples/elipackage.yaml"),
        // welcome, name, menu → end
        &["hi", "John Doe", "1"],
    ),
    (
        "leads",
        include_str!("../../examples/leads.yaml"),
        // welcome (branch), e-mail (branch), budget (branch), size → set + branches → end
        &["hi", "ana@acme.com", "1500", "3"],
    ),
];

/// Options of `bench chat`.
#[derive(clap::Args, Debug)]
pub struct ChatBench {
    /// Contacts chatting at once.
    #[arg(long, default_value_t = 64)]
    contacts: usize,
    /// Seconds of the throughput run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Turns per second of the paced latency run.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of the paced run.
    #[arg(long, default_value_t = 10.0)]
    paced_seconds: f64,
    /// Folder for the scratch database.
    #[arg(long, default_value = ".")]
    dir: std::path::PathBuf,
    /// The example bot: `elipackage` or `leads`.
    #[arg(long, default_value = "elipackage")]
    example: String,
    /// Use this (empty) database instead, e.g. postgres://…
    #[arg(long)]
    database: Option<String>,
}

struct Server {
    bot: &'static str,
    addr: std::net::SocketAddr,
    /// `Bearer <key>`.
    auth: String,
    store: Store,
    /// The scratch SQLite file, removed at the end (none on PostgreSQL).
    path: Option<String>,
}

impl Server {
    /// What a client task needs of the server.
    fn handle(&self) -> Server {
        Server {
            bot: self.bot,
            addr: self.addr,
            auth: self.auth.clone(),
            store: self.store.clone(),
            path: None,
        }
    }
}

async fn start(
    dir: &std::path::Path,
    database: Option<&str>,
    example: &str,
) -> anyhow::Result<(Server, &'static [&'static str])> {
    let Some(&(bot, source, script)) = EXAMPLES.iter().find(|(name, _, _)| *name == example) else {
        anyhow::bail!("--example must be elipackage or leads, not {example:?}");
    };
    let (store, path) = match database {
        Some(url) => (Store::open(url).await?, None),
        None => {
            let path = dir.join(format!(
                "botwire-bench-chat-{}.db",
                crate::domain::ids::new_id("b")
            ));
            let path = path.display().to_string();
            (Store::open(&format!("sqlite://{path}")).await?, Some(path))
        }
    };
    let (pepper, account, key) = super::bench::fresh_account(&store).await?;
    let file = crate::runtime::bots::parse_bot_file(source, true)?;
    crate::runtime::bots::import(&store, &account.id, &file).await?;
    let delivery = crate::delivery::Delivery::new(Default::default())?;
    let (addr, _) = super::bench::serve_locally(&store, pepper, delivery).await?;
    Ok((
        Server {
            bot,
            addr,
            auth: format!("Bearer {key}"),
            store,
            path,
        },
        script,
    ))
}

async fn turn(conn: &mut Connection, s: &Server, contact: usize, text: &str) -> anyhow::Result<()> {
    let body =
        serde_json::to_vec(&json!({"contact": {"id": format!("bench-{contact}")}, "text": text}))?;
    let (status, _) = conn
        .post_json(&format!("/v1/bots/{}/chat", s.bot), &s.auth, body.into())
        .await?;
    anyhow::ensure!(status.is_success(), "chat answered {status}");
    Ok(())
}

/// The `p` quantile of sorted microseconds, in milliseconds.
pub(super) fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i] as f64 / 1000.0
}

/// Runs the benchmark and prints its figures.
pub async fn run(b: ChatBench) -> anyhow::Result<()> {
    let (server, script) = start(&b.dir, b.database.as_deref(), &b.example).await?;
    let on = match &b.database {
        Some(url) => crate::cli::redact_url(url),
        None => "SQLite (synchronous=FULL)".into(),
    };
    eprintln!(
        "bench chat: {} flow over HTTP, {on}, {} contacts, {:.0} s",
        server.bot, b.contacts, b.seconds
    );
    // Throughput: every contact chats as fast as the server answers.
    let stop = Arc::new(AtomicBool::new(false));
    let turns = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for contact in 0..b.contacts {
        let (stop, turns) = (stop.clone(), turns.clone());
        let s = server.handle();
        tasks.push(tokio::spawn(async move {
            let mut conn = Connection::new(s.addr);
            let mut lat = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                turn(&mut conn, &s, contact, script[i % script.len()]).await?;
                lat.push(t.elapsed().as_micros() as u64);
                turns.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(lat)
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(b.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let n = turns.load(Ordering::Relaxed);
    let events = server
        .store
        .read(|c| c.query_one("SELECT COUNT(*) FROM events", &[])?.int(0))
        .await?;
    println!(
        "throughput: {:.0} turns/s ({n} turns, {events} events written, {} contacts); latency p50 {:.2} ms, p99 {:.2} ms",
        n as f64 / elapsed,
        b.contacts,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );

    // Latency at a fixed rate: one turn started every 1/rate s, each by
    // the next contact in turn (contacts never overlap: a contact gets a
    // new turn only after its last one answered).
    let interval = Duration::from_secs_f64(1.0 / b.rate.max(1) as f64);
    let total = (b.rate as f64 * b.paced_seconds) as usize;
    let pool = (b.rate as usize / 10).max(b.contacts);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let busy: Arc<Vec<tokio::sync::Mutex<(usize, Connection)>>> = Arc::new(
        (0..pool)
            .map(|_| tokio::sync::Mutex::new((0, Connection::new(server.addr))))
            .collect(),
    );
    let paced_start = Instant::now();
    for k in 0..total {
        ticker.tick().await;
        let (tx, busy) = (tx.clone(), busy.clone());
        let s = server.handle();
        tokio::spawn(async move {
            let slot = k % busy.len();
            let mut guard = busy[slot].lock().await;
            let (step, conn) = &mut *guard;
            let t = Instant::now();
            if turn(conn, &s, 100_000 + slot, script[*step % script.len()])
                .await
                .is_ok()
            {
                let _ = tx.send(t.elapsed().as_micros() as u64);
            }
            *step += 1;
        });
    }
    drop(tx);
    let mut paced = Vec::new();
    while let Some(v) = rx.recv().await {
        paced.push(v);
    }
    let paced_elapsed = paced_start.elapsed().as_secs_f64();
    paced.sort_unstable();
    println!(
        "paced at {} turns/s: {} turns in {:.1} s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        b.rate,
        paced.len(),
        paced_elapsed,
        percentile(&paced, 0.5),
        percentile(&paced, 0.99),
        paced.last().copied().unwrap_or(0) as f64 / 1000.0
    );
    server.store.close().await;
    if let Some(path) = &server.path {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    }
    Ok(())
}
