//! `botwire bench`: throughput measurements of the running system's parts.
//!
//! `bench store` measures acknowledged durable writes per second on SQLite
//! with many concurrent writers, through the group-commit writer and through
//! the same writer limited to one write per commit (the classic way), so the
//! difference is the group commit alone. Each write is a single-row INSERT
//! whose caller is answered only after its commit (with fsync) returns.

use crate::store::{Store, sqlite::Sqlite};
use clap::Subcommand;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `botwire bench`
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Messages/s a broadcast gets to a fake platform (first send → last
    /// arrival), checking none is sent twice and all arrive.
    Broadcast(super::bench_broadcast::BroadcastBench),
    /// Chat turns/s over HTTP on an example flow, and latency at a fixed rate.
    Chat(super::bench_chat::ChatBench),
    /// Messages/s answered through a messaging channel (signed webhook →
    /// turn → send to a fake platform API), and latency at a fixed rate.
    Channel(super::bench_channel::ChannelBench),
    /// What one CEL condition costs to evaluate, as a chat turn evaluates it.
    Cel(super::bench_flow::CelBench),
    /// Idle conversations with timers: memory they cost, and the due-timer scan.
    Timers(super::bench_flow::TimersBench),
    /// Pages of a filtered contacts list over a large bot (p50, p99).
    Contacts(super::bench_contacts::ContactsBench),
    /// What a story-webhook call adds to a chat turn (p50, p99).
    Story(super::bench_story::StoryBench),
    /// Durable writes/s with concurrent writers: group commit vs one commit per write.
    Store {
        /// Concurrent writers.
        #[arg(long, default_value_t = 64)]
        writers: usize,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Folder for the scratch database (on the disk you want to measure).
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
        /// Measure on this PostgreSQL database instead (`postgres://…`;
        /// the bench makes and drops its own table there).
        #[arg(long)]
        database: Option<String>,
    },
    /// Events/s end to end through the API, the store and the delivery engine.
    Deliver(super::bench_deliver::DeliverArgs),
    /// A healthy endpoint's rate beside a large backlog for a dead one.
    Backlog(super::bench_backlog::BacklogArgs),
    /// One API node and N worker nodes on one PostgreSQL database beside
    /// one worker: events/s, the split over the workers, CPU per event.
    Cluster(super::bench_cluster::ClusterArgs),
}

/// Runs a bench subcommand.
/// Waits until `count` reaches `n`, polling every 2 ms; fails after
/// `limit`, saying how many of the `what` arrived.
pub(super) async fn wait_count(
    count: &std::sync::atomic::AtomicUsize,
    n: usize,
    limit: std::time::Duration,
    what: &str,
) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    let deadline = std::time::Instant::now() + limit;
    while count.load(Ordering::SeqCst) < n {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "only {} of {n} {what} arrived within {limit:?}",
            count.load(Ordering::SeqCst)
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    Ok(())
}

/// Makes the first account of a bench's empty database; answers the
/// pepper, the account and its admin key.
pub(super) async fn fresh_account(
    store: &Store,
) -> anyhow::Result<(crate::auth::Pepper, crate::domain::account::Account, String)> {
    let pepper = crate::auth::Pepper::new(b"bench".to_vec());
    let (account, key) = store
        .bootstrap(&pepper)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the bench needs an empty database"))?;
    Ok((pepper, account, key))
}

/// Serves `app` on a free port of 127.0.0.1; answers its address and the
/// server's task.
pub(super) async fn spawn_local(
    app: axum::Router,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, task))
}

/// Serves the API over `store` on a free port of 127.0.0.1 for a bench to
/// load; answers its address and the server's task.
pub(super) async fn serve_locally(
    store: &Store,
    pepper: crate::auth::Pepper,
    delivery: crate::delivery::Delivery,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = crate::api::router(
        crate::api::AppState::new(store.clone(), pepper, delivery),
        &crate::api::RouterOptions {
            body_limit: 1 << 20,
            ..Default::default()
        },
    );
    spawn_local(app).await
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Broadcast(b) => super::bench_broadcast::run(b).await,
        BenchCommand::Chat(b) => super::bench_chat::run(b).await,
        BenchCommand::Channel(b) => super::bench_channel::run(b).await,
        BenchCommand::Cel(b) => super::bench_flow::run_cel(b),
        BenchCommand::Timers(b) => super::bench_flow::run_timers(b).await,
        BenchCommand::Story(b) => super::bench_story::run(b).await,
        BenchCommand::Contacts(b) => super::bench_contacts::run(b).await,
        BenchCommand::Deliver(args) => super::bench_deliver::run(args).await,
        BenchCommand::Backlog(args) => super::bench_backlog::run(args).await,
        BenchCommand::Cluster(args) => super::bench_cluster::run(args).await,
        BenchCommand::Store {
            writers,
            seconds,
            dir,
            database,
        } => {
            let duration = Duration::from_secs_f64(seconds.max(0.5));
            let on = match &database {
                Some(url) => StoreOn::Url(url.clone()),
                None => StoreOn::Dir(dir),
            };
            eprintln!(
                "bench store: {writers} concurrent writers, {:.1} s per run, {}",
                duration.as_secs_f64(),
                match &on {
                    StoreOn::Dir(dir) => format!("SQLite in {} (synchronous=FULL)", dir.display()),
                    StoreOn::Url(_) => "PostgreSQL (the server's synchronous_commit)".to_owned(),
                }
            );
            let single = measure(&on, writers, duration, 1).await?;
            report("one commit per write", &single);
            let group = measure(&on, writers, duration, crate::store::writer::MAX_BATCH).await?;
            report("group commit", &group);
            println!(
                "group commit: {:.0} acknowledged durable writes/s; one commit per write: {:.0}/s ({:.1}x)",
                group.rate,
                single.rate,
                group.rate / single.rate.max(1.0)
            );
            Ok(())
        }
    }
}

/// What one measurement saw.
pub struct StoreBench {
    /// Acknowledged writes per second.
    pub rate: f64,
    /// Writes acknowledged.
    pub writes: u64,
    /// Commits (fsyncs) they took.
    pub commits: u64,
    /// p50 / p99 acknowledgement latency, microseconds.
    pub p50_us: u64,
    /// p99 latency.
    pub p99_us: u64,
    /// Writer time running writes vs committing, microseconds.
    pub apply_us: u64,
    /// Writer time in COMMIT.
    pub commit_us: u64,
}

fn report(label: &str, b: &StoreBench) {
    eprintln!(
        "  {label:<22} {:>9.0} writes/s  ({} writes in {} commits, {:.1} per commit; ack p50 {:.2} ms, p99 {:.2} ms; writer: {:.0} µs/commit applying, {:.0} µs/commit in COMMIT)",
        b.rate,
        b.writes,
        b.commits,
        b.writes as f64 / b.commits.max(1) as f64,
        b.p50_us as f64 / 1000.0,
        b.p99_us as f64 / 1000.0,
        b.apply_us as f64 / b.commits.max(1) as f64,
        b.commit_us as f64 / b.commits.max(1) as f64,
    );
}

/// Where `bench store` measures.
pub enum StoreOn {
    /// A scratch SQLite file in this folder.
    Dir(std::path::PathBuf),
    /// This database (PostgreSQL), in a table of the bench's own.
    Url(String),
}

/// Runs `writers` tasks inserting rows for `duration` through a store whose
/// transactions take at most `max_batch` writes.
pub async fn measure(
    on: &StoreOn,
    writers: usize,
    duration: Duration,
    max_batch: usize,
) -> anyhow::Result<StoreBench> {
    let (backend, path_s) = match on {
        StoreOn::Dir(dir) => {
            let path = dir.join(format!(
                "botwire-bench-{}.db",
                crate::domain::ids::new_id("b")
            ));
            let path_s = path.display().to_string();
            let backend: Arc<dyn crate::store::Backend> = Arc::new(Sqlite::new(&path_s)?);
            (backend, Some(path_s))
        }
        StoreOn::Url(url) => (crate::store::backend_for_url(url)?, None),
    };
    let store = Store::open_with(backend, max_batch).await?;
    store
        .write(|c| {
            c.batch("DROP TABLE IF EXISTS bench_writes; CREATE TABLE bench_writes (id TEXT PRIMARY KEY, writer BIGINT NOT NULL, body TEXT NOT NULL, at BIGINT NOT NULL)")
        })
        .await?;
    let before = store.writer_stats();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, stop, count) = (store.clone(), stop.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let id = crate::domain::ids::new_id("w");
                store
                    .write(move |c| {
                        c.execute(
                            "INSERT INTO bench_writes (id, writer, body, at) VALUES ($1, $2, $3, $4)",
                            &[id.into(), (w as i64).into(), "{\"hello\":\"world\"}".into(), crate::store::now_ms().into()],
                        )
                    })
                    .await?;
                latencies.push(t.elapsed().as_micros() as u64);
                count.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(latencies)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = store.writer_stats();
    let stored = store
        .read(|c| {
            c.query_one("SELECT COUNT(*) FROM bench_writes", &[])?
                .int(0)
        })
        .await?;
    if path_s.is_none() {
        store.write(|c| c.batch("DROP TABLE bench_writes")).await?;
    }
    store.close().await;
    if let Some(path_s) = path_s {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path_s}{suffix}"));
        }
    }
    let writes = count.load(Ordering::Relaxed);
    anyhow::ensure!(
        stored as u64 == writes,
        "{writes} writes acknowledged but {stored} rows stored"
    );
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Ok(StoreBench {
        rate: writes as f64 / elapsed,
        writes,
        commits: after.commits - before.commits,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        apply_us: after.apply_us - before.apply_us,
        commit_us: after.commit_us - before.commit_us,
    })
}
