//! `botwire bench cluster`: one API node and N worker nodes on one
//! PostgreSQL database, beside one API node and one worker.
//!
//! For each configuration (1 worker, then `--workers`) the bench creates a
//! fresh database next to the one `--database` names (`<name>_c1`,
//! `<name>_c<N>`), starts `botwire serve --role api` and N ×
//! `botwire serve --role worker` as child processes of this same binary on
//! it, and a receiver in this process on 127.0.0.1. Through the API node it
//! creates a bot and one endpoint pointing at the receiver, publishes a
//! warm-up and then `--events` events with a fixed number in flight, and
//! waits until every one arrived and every attempt is recorded. The API
//! node only writes deliveries; the workers claim them from the database
//! (woken by `LISTEN/NOTIFY`), so every delivery is made by a worker.
//!
//! Measured per configuration:
//!
//! * events/s end to end, first publish → last arrival;
//! * CPU time of each child process (`/proc/<pid>/stat`, user + system)
//!   from the first publish until every attempt is recorded, per delivered
//!   event; and the same with the CPU time of every `postgres` process on
//!   the machine added (the whole server, whatever else it serves);
//! * the split of deliveries over the workers, from `attempts.node`.
//!
//! Checked: every event arrived exactly once (lost and doubled are counted
//! from the receiver's arrivals by event number), and every delivery has
//! one successful attempt in the database. The bench fails when any event
//! is lost or doubled. The children are stopped with SIGTERM (SIGKILL if
//! they do not exit) and the databases dropped, also when a run fails.

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use clap::Args;
use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Events published (and awaited) before the measured run: connections,
/// prepared statements and the endpoint cache of every node warm up.
const WARM_UP: usize = 200;
/// How long a node may take to start (migrations included).
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long a node may take to exit after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(15);

/// Flags of `botwire bench cluster`.
#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// The PostgreSQL server, as a URL of a database the bench may connect
    /// to (postgres://…). Each configuration runs on a database of its own
    /// that the bench creates beside it (`<name>_c1`, `<name>_c<N>`) and
    /// drops at the end; the named database itself is not changed. The
    /// user needs the CREATEDB privilege.
    #[arg(long)]
    database: String,
    /// Worker nodes of the second configuration (the first has one).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Events to publish in each configuration's measured run.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Publish requests in flight.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Seconds to wait for all deliveries of a run to arrive.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

/// What one configuration measured.
#[derive(Clone, Debug, Default)]
pub struct ClusterFigures {
    /// Worker nodes.
    pub workers: usize,
    /// Events in the measured run.
    pub events: usize,
    /// First publish → last arrival, seconds.
    pub seconds: f64,
    /// First publish → every attempt recorded, seconds.
    pub recorded_seconds: f64,
    /// CPU seconds of the API node in the measured run.
    pub api_cpu: f64,
    /// CPU seconds of each worker node in the measured run, in start order.
    pub worker_cpu: Vec<f64>,
    /// CPU seconds of all `postgres` processes in the measured run.
    pub postgres_cpu: f64,
    /// Successful attempts per worker (warm-up included), in start order.
    pub per_worker: Vec<u64>,
    /// Successful attempts made by nodes the bench did not start (should be
    /// none).
    pub other_nodes: u64,
    /// Attempts that did not succeed (each is retried; the event still
    /// arrives once it succeeds).
    pub failed_attempts: u64,
    /// Events published in all (warm-up included).
    pub published: usize,
    /// Published events that never arrived.
    pub lost: usize,
    /// Published events that arrived more than once.
    pub doubled: usize,
}

impl ClusterFigures {
    /// Delivered events per second end to end.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.seconds.max(f64::MIN_POSITIVE)
    }

    /// CPU milliseconds of the botwire nodes per delivered event.
    pub fn node_ms_per_event(&self) -> f64 {
        let cpu = self.api_cpu + self.worker_cpu.iter().sum::<f64>();
        1000.0 * cpu / self.events.max(1) as f64
    }

    /// CPU milliseconds of the botwire nodes and PostgreSQL per event.
    pub fn total_ms_per_event(&self) -> f64 {
        self.node_ms_per_event() + 1000.0 * self.postgres_cpu / self.events.max(1) as f64
    }

    /// Each worker's share of the successful attempts, percent.
    pub fn shares(&self) -> Vec<f64> {
        let total = self.per_worker.iter().sum::<u64>() + self.other_nodes;
        self.per_worker
            .iter()
            .map(|&n| 100.0 * n as f64 / total.max(1) as f64)
            .collect()
    }
}

/// `url` with its database name replaced by `name` (query kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{host_part}/{name}{query}")
}

/// A PostgreSQL identifier, quoted.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A connection to `url` with the store's TLS handling of `sslmode`.
async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let settings = crate::store::postgres::tls::settings(url)?;
    let (client, connection) = settings
        .config
        .connect(settings.tls)
        .await
        .map_err(|e| anyhow::anyhow!(crate::store::postgres::tls::describe(&e)))
        .with_context(|| format!("cannot connect to {}", super::redact_url(url)))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`;
/// 100, Linux's value, when that cannot be run).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// A process's command name and its user + system CPU time in ticks, from
/// the text of `/proc/<pid>/stat`.
fn parse_stat(stat: &str) -> Option<(&str, u64)> {
    // The command name is in parentheses and may itself hold spaces and
    // parentheses: the fields resume after the last ')'.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the name: state(3) … utime(14) stime(15), numbered from pid(1).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// CPU ticks a process has used so far (0 once it is gone).
fn process_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| parse_stat(&s).map(|(_, t)| t))
        .unwrap_or(0)
}

/// CPU ticks of every `postgres` process on the machine, by pid (the
/// server's backends come and go: a run's share is the growth of each pid
/// seen at the end over what it had at the start, or all of it if new).
fn postgres_ticks() -> HashMap<u32, u64> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(("postgres", ticks)) = parse_stat(&stat) {
            out.insert(pid, ticks);
        }
    }
    out
}

/// Ticks the `postgres` processes used between two readings.
fn postgres_growth(before: &HashMap<u32, u64>, after: &HashMap<u32, u64>) -> u64 {
    after
        .iter()
        .map(|(pid, &t)| t.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum()
}

/// A `botwire serve` child: stopped (SIGTERM, then SIGKILL) when dropped.
struct Node {
    child: Child,
    log: PathBuf,
}

impl Node {
    /// Starts `botwire serve --role <role>` on `database`, listening on a
    /// port the kernel picks, loopback endpoints allowed, its stderr
    /// appended to `log`. Its stdout is handed back (the admin key is
    /// printed there on a first start).
    fn start(
        role: &str,
        database: &str,
        log: PathBuf,
    ) -> anyhow::Result<(Node, std::process::ChildStdout)> {
        let file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let exe = std::env::current_exe().context("cannot find this program's path")?;
        let mut child = Command::new(exe)
            .args(["serve", "--role", role, "--database", database])
            .args(["--listen", "127.0.0.1:0", "--allow-net", "127.0.0.0/8"])
            // Startup lines (the listening address, the delivery engine's
            // node id) and warnings; nothing per request.
            .env("BOTWIRE_LOG", "warn,botwire::cli::serve=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(file))
            .spawn()
            .context("cannot start botwire serve")?;
        let stdout = child.stdout.take().context("no stdout of botwire serve")?;
        Ok((Node { child, log }, stdout))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's last lines, for an error message.
    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits until the log has a line containing `needle`; answers that
    /// line. Fails when the process exits or [`START_LIMIT`] passes.
    async fn wait_for_line(&mut self, needle: &str) -> anyhow::Result<String> {
        let started = Instant::now();
        loop {
            if let Some(line) = self.log_text().lines().find(|l| l.contains(needle)) {
                return Ok(line.to_owned());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "botwire serve (pid {}) exited with {status} while starting; its log:\n{}",
                    self.pid(),
                    self.log_tail()
                );
            }
            if started.elapsed() > START_LIMIT {
                bail!(
                    "botwire serve (pid {}) did not start within {START_LIMIT:?}; its log:\n{}",
                    self.pid(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The delivery engine's node id from the log (`node_…`), if logged.
    fn engine_node(&self) -> Option<String> {
        let text = self.log_text();
        let line = text
            .lines()
            .find(|l| l.contains("delivery engine started"))?;
        let at = line.find("node_")?;
        let id: String = line[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect();
        Some(id)
    }

    /// SIGTERM, up to [`STOP_LIMIT`] to exit, then SIGKILL.
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let started = Instant::now();
        while started.elapsed() < STOP_LIMIT {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The receiver: how often each event number arrived, and when the last
/// delivery came.
struct Receiver {
    seen: Mutex<HashMap<u64, u32>>,
    arrived: AtomicUsize,
    /// Microseconds since `epoch` of the latest arrival.
    last_us: AtomicU64,
    epoch: Instant,
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

async fn hook(State(r): State<Arc<Receiver>>, body: Bytes) -> &'static str {
    if let Some(n) = event_number(&body) {
        *r.seen.lock().expect("lock").entry(n).or_default() += 1;
    }
    let now = u64::try_from(r.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
    r.last_us.fetch_max(now, Ordering::SeqCst);
    r.arrived.fetch_add(1, Ordering::SeqCst);
    "ok"
}

/// Publishes events `first..first + n` through the API node with
/// `in_flight` requests at once; every one must be acknowledged.
async fn publish(
    addr: std::net::SocketAddr,
    auth: &str,
    first: u64,
    n: usize,
    in_flight: usize,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(first));
    let end = first + n as u64;
    let mut tasks = Vec::new();
    for _ in 0..in_flight.max(1) {
        let (auth, next) = (auth.to_owned(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut connection = super::bench_client::Connection::new(addr);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return anyhow::Ok(());
                }
                let body = format!(r#"{{"type":"bench.event","data":{{"n":{i}}}}}"#);
                let (status, answer) = connection
                    .post_json("/v1/bots/bench/events", &auth, body.into())
                    .await?;
                anyhow::ensure!(
                    status.is_success(),
                    "publishing event {i} answered {status}: {}",
                    String::from_utf8_lossy(&answer)
                );
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Successful attempts per node, and attempts that failed.
async fn attempts_by_node(
    db: &tokio_postgres::Client,
) -> anyhow::Result<(HashMap<String, u64>, u64)> {
    let rows = db
        .query(
            "SELECT COALESCE(node, ''), (status BETWEEN 200 AND 299) AS ok, COUNT(*) \
             FROM attempts GROUP BY 1, 2",
            &[],
        )
        .await
        .context("cannot count attempts")?;
    let mut ok = HashMap::new();
    let mut failed = 0;
    for row in rows {
        let node: String = row.get(0);
        let success: Option<bool> = row.get(1);
        let n = u64::try_from(row.get::<_, i64>(2)).unwrap_or(0);
        if success == Some(true) {
            *ok.entry(node).or_default() += n;
        } else {
            failed += n;
        }
    }
    Ok((ok, failed))
}

/// Waits until `n` successful attempts are recorded.
async fn wait_recorded(db: &tokio_postgres::Client, n: u64, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let (ok, _) = attempts_by_node(db).await?;
        let recorded: u64 = ok.values().sum();
        if recorded >= n {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {recorded} of {n} successful attempts recorded within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Answers a reqwest answer's JSON, or fails with its status and body.
async fn expect_created(
    response: reqwest::Response,
    what: &str,
) -> anyhow::Result<serde_json::Value> {
    let status = response.status();
    let text = response.text().await?;
    anyhow::ensure!(status.is_success(), "{what} answered {status}: {text}");
    Ok(serde_json::from_str(&text).unwrap_or_default())
}

/// What one configuration's run is asked to do.
struct Plan<'a> {
    database: &'a str,
    workers: usize,
    events: usize,
    in_flight: usize,
    timeout: Duration,
    logs: &'a Path,
    ticks: f64,
}

/// Runs one configuration on the empty database `plan.database`.
async fn measure(plan: &Plan<'_>) -> anyhow::Result<ClusterFigures> {
    let label = configuration(plan.workers);
    let receiver = Arc::new(Receiver {
        seen: Mutex::new(HashMap::new()),
        arrived: AtomicUsize::new(0),
        last_us: AtomicU64::new(0),
        epoch: Instant::now(),
    });
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(receiver.clone());
    let (raddr, receiver_task) = super::bench::spawn_local(app).await?;
    let result = measure_with(plan, &label, &receiver, raddr).await;
    receiver_task.abort();
    result
}

async fn measure_with(
    plan: &Plan<'_>,
    label: &str,
    receiver: &Receiver,
    raddr: std::net::SocketAddr,
) -> anyhow::Result<ClusterFigures> {
    // The API node first: it migrates the empty database and makes the
    // first account, whose admin key it prints once.
    eprintln!("{label}: starting the API node…");
    let (mut api, stdout) = Node::start(
        "api",
        plan.database,
        plan.logs.join(format!("c{}-api.log", plan.workers)),
    )?;
    let (key_tx, key_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let line = line.trim();
            if line.starts_with("bw_") {
                let _ = key_tx.send(line.to_owned());
            }
        }
    });
    let line = api.wait_for_line("listening on http://").await?;
    let addr: std::net::SocketAddr = line
        .rsplit("http://")
        .next()
        .and_then(|a| a.trim().parse().ok())
        .with_context(|| format!("no address in the API node's line {line:?}"))?;
    let key = tokio::task::spawn_blocking(move || key_rx.recv_timeout(START_LIMIT))
        .await?
        .context("the API node printed no admin key (is the database empty?)")?;
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let ready = client
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < START_LIMIT,
            "the API node's /readyz did not answer 200 within {START_LIMIT:?}; its log:\n{}",
            api.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    eprintln!("{label}: starting {}…", plural(plan.workers, "worker node"));
    let mut workers = Vec::new();
    for i in 1..=plan.workers {
        let log = plan.logs.join(format!("c{}-worker{i}.log", plan.workers));
        let (node, _stdout) = Node::start("worker", plan.database, log)?;
        workers.push(node);
    }
    let mut node_ids = Vec::new();
    for w in &mut workers {
        w.wait_for_line("delivering events (role worker)").await?;
        node_ids.push(w.engine_node());
    }

    // The bot and its endpoint, through the API.
    let auth = format!("Bearer {key}");
    let r = client
        .post(format!("http://{addr}/v1/bots"))
        .header("authorization", &auth)
        .json(&serde_json::json!({"id": "bench", "name": "Bench", "type": "data_collection"}))
        .send()
        .await?;
    expect_created(r, "creating the bot").await?;
    let r = client
        .post(format!("http://{addr}/v1/bots/bench/endpoints"))
        .header("authorization", &auth)
        .json(&serde_json::json!({"url": format!("http://{raddr}/hook")}))
        .send()
        .await?;
    expect_created(r, "creating the endpoint").await?;

    let db = connect(plan.database).await?;
    let warm = WARM_UP.min(plan.events);
    eprintln!("{label}: warming up with {warm} events…");
    publish(addr, &auth, 0, warm, plan.in_flight).await?;
    super::bench::wait_count(&receiver.arrived, warm, plan.timeout, "deliveries").await?;
    wait_recorded(&db, warm as u64, Duration::from_secs(60)).await?;

    // The measured run.
    let pids: Vec<u32> = std::iter::once(api.pid())
        .chain(workers.iter().map(Node::pid))
        .collect();
    let cpu_before: Vec<u64> = pids.iter().map(|&p| process_ticks(p)).collect();
    let pg_before = postgres_ticks();
    let first_us = u64::try_from(receiver.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
    let t0 = Instant::now();
    eprintln!(
        "{label}: publishing {} events, {} in flight…",
        plan.events, plan.in_flight
    );
    publish(addr, &auth, warm as u64, plan.events, plan.in_flight).await?;
    let published = warm + plan.events;
    eprintln!("{label}: waiting for {published} arrivals (warm-up included)…");
    super::bench::wait_count(&receiver.arrived, published, plan.timeout, "deliveries").await?;
    let last_us = receiver.last_us.load(Ordering::SeqCst);
    let seconds = last_us.saturating_sub(first_us) as f64 / 1e6;
    wait_recorded(&db, published as u64, Duration::from_secs(120)).await?;
    let recorded_seconds = t0.elapsed().as_secs_f64();
    let cpu_after: Vec<u64> = pids.iter().map(|&p| process_ticks(p)).collect();
    let pg_after = postgres_ticks();
    // Late duplicates would arrive within moments of the last delivery.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let cpu: Vec<f64> = cpu_before
        .iter()
        .zip(&cpu_after)
        .map(|(b, a)| a.saturating_sub(*b) as f64 / plan.ticks)
        .collect();
    let (mut ok, failed_attempts) = attempts_by_node(&db).await?;
    let per_worker: Vec<u64> = node_ids
        .iter()
        .map(|id| id.as_ref().and_then(|id| ok.remove(id)).unwrap_or(0))
        .collect();
    let mut other_nodes: u64 = ok.values().sum();
    // Node ids not found in the logs: their attempts are the workers' in
    // the order the database holds them.
    let mut per_worker = per_worker;
    if node_ids.iter().any(Option::is_none) {
        let mut rest: Vec<(String, u64)> = ok
            .into_iter()
            .filter(|(n, _)| n.starts_with("node_"))
            .collect();
        rest.sort();
        let mut rest = rest.into_iter();
        for (slot, id) in per_worker.iter_mut().zip(&node_ids) {
            if id.is_none()
                && let Some((_, n)) = rest.next()
            {
                *slot = n;
                other_nodes -= n;
            }
        }
    }
    let (lost, doubled) = {
        let seen = receiver.seen.lock().expect("lock");
        let lost = (0..published as u64)
            .filter(|n| !seen.contains_key(n))
            .count();
        let doubled = seen.values().filter(|&&c| c > 1).count();
        (lost, doubled)
    };

    eprintln!("{label}: stopping the nodes…");
    for w in &mut workers {
        w.stop();
    }
    api.stop();
    Ok(ClusterFigures {
        workers: plan.workers,
        events: plan.events,
        seconds,
        recorded_seconds,
        api_cpu: cpu[0],
        worker_cpu: cpu[1..].to_vec(),
        postgres_cpu: postgres_growth(&pg_before, &pg_after) as f64 / plan.ticks,
        per_worker,
        other_nodes,
        failed_attempts,
        published,
        lost,
        doubled,
    })
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn configuration(workers: usize) -> String {
    format!("api + {}", plural(workers, "worker"))
}

/// Runs one configuration on a database of its own, created and dropped
/// around it.
async fn run_configuration(
    args: &ClusterArgs,
    admin: &tokio_postgres::Client,
    base: &str,
    workers: usize,
    logs: &Path,
    ticks: f64,
) -> anyhow::Result<ClusterFigures> {
    let name = format!("{base}_c{workers}");
    admin
        .batch_execute(&format!("CREATE DATABASE {}", quoted(&name)))
        .await
        .map_err(|e| anyhow::anyhow!(crate::store::postgres::tls::describe(&e)))
        .with_context(|| {
            format!("cannot create database {name} (if a previous run left it, drop it: DROP DATABASE {})", quoted(&name))
        })?;
    let url = with_database(&args.database, &name);
    let result = measure(&Plan {
        database: &url,
        workers,
        events: args.events,
        in_flight: args.in_flight,
        timeout: Duration::from_secs(args.timeout.max(1)),
        logs,
        ticks,
    })
    .await;
    let dropped = admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quoted(&name)
        ))
        .await;
    let figures = result.with_context(|| format!("{} failed", configuration(workers)))?;
    dropped
        .map_err(|e| anyhow::anyhow!(crate::store::postgres::tls::describe(&e)))
        .with_context(|| format!("cannot drop database {name}"))?;
    Ok(figures)
}

/// The table the bench prints: one row per configuration.
fn table(figures: &[ClusterFigures]) -> String {
    let mut out = format!(
        "{:<18} {:>9} {:<22} {:>20} {:>26} {:>5} {:>7}\n",
        "configuration",
        "events/s",
        "per-worker share",
        "CPU ms/event (nodes)",
        "CPU ms/event (+PostgreSQL)",
        "lost",
        "doubled"
    );
    for f in figures {
        let shares = f
            .shares()
            .iter()
            .map(|s| format!("{s:.0}%"))
            .collect::<Vec<_>>()
            .join("/");
        out.push_str(&format!(
            "{:<18} {:>9.0} {:<22} {:>20.2} {:>26.2} {:>5} {:>7}\n",
            configuration(f.workers),
            f.rate(),
            shares,
            f.node_ms_per_event(),
            f.total_ms_per_event(),
            f.lost,
            f.doubled
        ));
    }
    out
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.database.starts_with("postgres://") || args.database.starts_with("postgresql://"),
        "bench cluster runs on PostgreSQL: --database postgres://…"
    );
    anyhow::ensure!(args.workers >= 1, "--workers must be at least 1");
    anyhow::ensure!(args.events >= 1, "--events must be at least 1");
    let settings = crate::store::postgres::tls::settings(&args.database)?;
    let base = settings
        .config
        .get_dbname()
        .or(settings.config.get_user())
        .unwrap_or("postgres")
        .to_owned();
    // The bench's own HTTP client (readiness, set-up calls) needs the
    // process's TLS provider, as the delivery client does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let admin = connect(&args.database).await?;
    let ticks = clock_ticks();
    let logs = std::env::temp_dir().join(format!(
        "botwire-bench-cluster-{}",
        crate::domain::ids::new_id("b")
    ));
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    eprintln!(
        "bench cluster: {} events per configuration ({WARM_UP} warm-up before), {} in flight, on {}; node logs in {}",
        args.events,
        args.in_flight,
        super::redact_url(&args.database),
        logs.display()
    );
    let mut configurations = vec![1];
    if args.workers > 1 {
        configurations.push(args.workers);
    }
    let mut figures = Vec::new();
    for workers in configurations {
        let f = run_configuration(&args, &admin, &base, workers, &logs, ticks).await?;
        let ids = f
            .per_worker
            .iter()
            .zip(&f.worker_cpu)
            .enumerate()
            .map(|(i, (n, cpu))| format!("worker {} {n} ({cpu:.2} s CPU)", i + 1))
            .collect::<Vec<_>>()
            .join(", ");
        eprintln!(
            "{}: {} events in {:.2} s ({:.0}/s; all attempts recorded at {:.2} s); deliveries per worker: {ids}; API node {:.2} s CPU; PostgreSQL {:.2} s CPU; {} failed attempts, {} by other nodes",
            configuration(f.workers),
            f.events,
            f.seconds,
            f.rate(),
            f.recorded_seconds,
            f.api_cpu,
            f.postgres_cpu,
            f.failed_attempts,
            f.other_nodes
        );
        figures.push(f);
    }
    let _ = std::fs::remove_dir_all(&logs);

    print!("{}", table(&figures));
    for f in &figures {
        println!(
            "{}: {} published, {} arrived once, {} lost, {} doubled; deliveries per worker: {}",
            configuration(f.workers),
            f.published,
            f.published - f.lost - f.doubled,
            f.lost,
            f.doubled,
            f.per_worker
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let [one, many] = figures.as_slice() {
        println!(
            "{} beside 1: {:.2}x the events/s; CPU per delivered event {:.0} % (nodes), {:.0} % (with PostgreSQL)",
            plural(many.workers, "worker"),
            many.rate() / one.rate().max(f64::MIN_POSITIVE),
            100.0 * many.node_ms_per_event() / one.node_ms_per_event().max(f64::MIN_POSITIVE),
            100.0 * many.total_ms_per_event() / one.total_ms_per_event().max(f64::MIN_POSITIVE)
        );
    }
    println!(
        "CPU: user + system time of each botwire process from the first publish until every attempt was recorded; PostgreSQL is every `postgres` process on this machine (the whole server)."
    );
    let lost: usize = figures.iter().map(|f| f.lost).sum();
    let doubled: usize = figures.iter().map(|f| f.doubled).sum();
    anyhow::ensure!(
        lost == 0 && doubled == 0,
        "{lost} events lost and {doubled} delivered more than once"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_is_replaced_and_the_query_kept() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/app?sslmode=require", "app_c2"),
            "postgres://u:p@h:5432/app_c2?sslmode=require"
        );
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1", "postgres_c1"),
            "postgres://postgres@127.0.0.1/postgres_c1"
        );
    }

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        // utime 7, stime 5; the name holds a space and a parenthesis.
        let stat = "42 (post gres) x) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 100 0 0";
        assert_eq!(parse_stat(stat), Some(("post gres) x", 12)));
        assert_eq!(parse_stat("42 (postgres) S 1"), None);
    }

    #[test]
    fn postgres_growth_counts_new_backends_whole_and_old_ones_by_growth() {
        let before = HashMap::from([(1, 100), (2, 50), (3, 10)]);
        let after = HashMap::from([(1, 130), (2, 50), (4, 7)]);
        assert_eq!(postgres_growth(&before, &after), 30 + 7);
    }

    #[test]
    fn shares_split_successful_attempts_over_the_workers() {
        let f = ClusterFigures {
            per_worker: vec![300, 100],
            ..Default::default()
        };
        assert_eq!(f.shares(), vec![75.0, 25.0]);
        let table = table(&[f]);
        assert!(table.contains("75%/25%"), "{table}");
    }

    #[test]
    fn the_event_number_is_read_from_the_body() {
        assert_eq!(event_number(br#"{"data":{"n":1234},"x":1}"#), Some(1234));
        assert_eq!(event_number(br#"{"data":{}}"#), None);
    }
}
