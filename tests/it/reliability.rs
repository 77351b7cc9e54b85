//! Reliability under faults, with the real `botwire` binary, a real receiver
//! in this process and real databases (docs/RELIABILITY.md).
//!
//! * Crash: events are published while the server is killed with SIGKILL
//!   three times and restarted on the same database; every acknowledged
//!   event must reach the receiver (duplicates are reported, not failed).
//! * Scale-out (PostgreSQL): one `--role api` node and one or two
//!   `--role worker` nodes; every event delivered exactly once, the work
//!   spread over both workers (counted per node from the attempts API),
//!   and events/s with one and with two workers.
//!
//! `BOTWIRE_RELIABILITY_EVENTS` sets the number of events (2,000 by default,
//! the CI variant). PostgreSQL runs need `BOTWIRE_TEST_POSTGRES_URL`.

use crate::common;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use common::{Db, test_db};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

fn events() -> usize {
    std::env::var("BOTWIRE_RELIABILITY_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

fn free_port() -> u16 {
    crate::common::server_port()
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "botwire-reliability-{name}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// How to start one botwire process.
#[derive(Clone)]
struct Spec {
    database: String,
    role: &'static str,
    listen: Option<String>,
    env: Vec<(&'static str, String)>,
    dir: PathBuf,
}

/// One running botwire process; killed with SIGKILL when dropped, so no
/// test leaves one behind, also on panic.
struct Node {
    child: Child,
    log: PathBuf,
    key: mpsc::Receiver<String>,
}

impl Node {
    fn start(spec: &Spec, name: &str) -> Node {
        let log = spec.dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_botwire"));
        for (k, _) in std::env::vars() {
            if k.starts_with("BOTWIRE_") {
                cmd.env_remove(k);
            }
        }
        cmd.args([
            "serve",
            "--database",
            &spec.database,
            "--role",
            spec.role,
            "--allow-net",
            "127.0.0.0/8",
        ]);
        if let Some(listen) = &spec.listen {
            cmd.args(["--listen", listen]);
        }
        cmd.env("BOTWIRE_LOG", "warn");
        // No test sends a name to the system resolver.
        cmd.env("BOTWIRE_DELIVERY_SYSTEM_DNS", "false");
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn botwire");
        let stdout = child.stdout.take().unwrap();
        let (tx, key) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let line = line.trim();
                if line.starts_with("bw_") && line.len() == 46 {
                    let _ = tx.send(line.to_owned());
                }
            }
        });
        Node { child, log, key }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with the log) if the process has exited.
    fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("botwire exited ({status}):\n{}", self.log_text());
        }
    }

    /// Waits until the HTTP listener answers (api/all) or the worker says
    /// it runs.
    fn wait_ready(&mut self, spec: &Spec) {
        let started = Instant::now();
        loop {
            self.check_alive();
            let ready = match &spec.listen {
                Some(listen) => std::net::TcpStream::connect(listen).is_ok(),
                None => self.log_text().contains("delivering events"),
            };
            if ready {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "botwire did not start within 30 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The admin key printed on first start.
    fn admin_key(&mut self) -> String {
        match self.key.recv_timeout(Duration::from_secs(30)) {
            Ok(k) => k,
            Err(_) => panic!("no admin key printed:\n{}", self.log_text()),
        }
    }

    /// SIGKILL (`kill -9`) and reap.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the receiver saw: per `webhook-id` how many times, and per client
/// port how many requests.
#[derive(Default)]
struct Received {
    by_id: Mutex<HashMap<String, u32>>,
    total: AtomicUsize,
}

impl Received {
    fn has_all(&self, ids: &[String]) -> usize {
        let seen = self.by_id.lock().unwrap();
        ids.iter().filter(|id| seen.contains_key(*id)).count()
    }
}

async fn hook(State(r): State<Arc<Received>>, headers: HeaderMap, _body: Bytes) -> &'static str {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    *r.by_id.lock().unwrap().entry(id).or_default() += 1;
    r.total.fetch_add(1, Ordering::SeqCst);
    "ok"
}

/// A receiver on 127.0.0.1:0 answering 200 to everything; its URL.
async fn receiver() -> (String, Arc<Received>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Received::default());
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(received.clone());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/hook"), received)
}

fn client() -> reqwest::Client {
    // The crate builds reqwest without a default TLS provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A bot `rel` with one endpoint pointing at `url`; answers the endpoint's id.
async fn setup_bot(base: &str, key: &str, url: &str) -> String {
    let c = client();
    let r = c
        .post(format!("{base}/v1/bots"))
        .bearer_auth(key)
        .json(&json!({"id": "rel", "name": "rel", "type": "data_collection"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    let r = c
        .post(format!("{base}/v1/bots/rel/endpoints"))
        .bearer_auth(key)
        .json(&json!({"url": url}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let body: Value = r.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

/// Publishes `n` events with `in_flight` requests at a time. A publish
/// that fails (server down) is tried again until acknowledged, up to
/// `deadline`. Answers the acknowledged event ids.
async fn publish(
    base: &str,
    key: &str,
    n: usize,
    in_flight: usize,
    acked: Arc<AtomicUsize>,
    deadline: Instant,
) -> Vec<String> {
    let next = Arc::new(AtomicUsize::new(0));
    let ids = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let url = format!("{base}/v1/bots/rel/events");
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (c, url, key) = (client(), url.clone(), key.to_owned());
        let (next, ids, acked) = (next.clone(), ids.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    return;
                }
                let body = json!({"type": "order.paid", "data": {"n": i}});
                loop {
                    let sent = c.post(&url).bearer_auth(&key).json(&body).send().await;
                    if let Ok(resp) = sent
                        && resp.status().is_success()
                        && let Ok(v) = resp.json::<Value>().await
                        && let Some(id) = v["id"].as_str()
                    {
                        ids.lock().unwrap().push(id.to_owned());
                        acked.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "event {i} not acknowledged in time"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(ids).unwrap().into_inner().unwrap()
}

/// Waits (bounded) until every id in `ids` has arrived; answers how many did.
async fn wait_arrived(rx: &Received, ids: &[String], limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let got = rx.has_all(ids);
        if got == ids.len() || Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `f` on a plain thread (the sync PostgreSQL client must not run on a
/// runtime thread).
fn pg<T: Send + 'static>(
    url: &str,
    f: impl FnOnce(&mut postgres::Client) -> T + Send + 'static,
) -> T {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        f(&mut c)
    })
    .join()
    .unwrap()
}

// ---------------------------------------------------------------------------
// Item 1: crash

const KILLS: usize = 3;

async fn crash(kind: Db) {
    let Some(db) = test_db(kind) else { return };
    let n = events();
    let dir = scratch_dir("crash");
    let port = free_port();
    let spec = Spec {
        database: db.url.clone(),
        role: "all",
        listen: Some(format!("127.0.0.1:{port}")),
        env: vec![
            // Deliveries held by a killed process come due after this.
            ("BOTWIRE_DELIVERY_LEASE", "5s".into()),
            ("BOTWIRE_DELIVERY_TIMEOUT", "2s".into()),
            (
                "BOTWIRE_DELIVERY_RETRY_SCHEDULE",
                "100ms,200ms,500ms,1s,1s,1s,1s,1s".into(),
            ),
        ],
        dir: dir.clone(),
    };
    let base = format!("http://127.0.0.1:{port}");
    let (hook_url, rx) = receiver().await;
    let mut node = Node::start(&spec, "node-0");
    let key = node.admin_key();
    node.wait_ready(&spec);
    setup_bot(&base, &key, &hook_url).await;

    let started = Instant::now();
    let deadline = started + Duration::from_secs(60 + n as u64 / 50);
    let acked = Arc::new(AtomicUsize::new(0));

    // The killer: three SIGKILLs at random points of the run, each followed
    // by a restart on the same database and port.
    let mut points: Vec<usize> = (0..KILLS)
        .map(|_| n / 10 + (rand::random::<f64>() * (n * 8 / 10) as f64) as usize)
        .collect();
    points.sort_unstable();
    let killer = {
        let (acked, spec) = (acked.clone(), spec.clone());
        tokio::task::spawn_blocking(move || {
            let mut log = Vec::new();
            for (k, point) in points.into_iter().enumerate() {
                while acked.load(Ordering::SeqCst) < point {
                    assert!(Instant::now() < deadline, "publishing stalled");
                    std::thread::sleep(Duration::from_millis(1));
                }
                std::thread::sleep(Duration::from_millis((rand::random::<f64>() * 50.0) as u64));
                let at = acked.load(Ordering::SeqCst);
                node.kill();
                log.push((at, started.elapsed()));
                node = Node::start(&spec, &format!("node-{}", k + 1));
                node.wait_ready(&spec);
            }
            (node, log)
        })
    };

    let ids = publish(&base, &key, n, 32, acked, deadline).await;
    let published = started.elapsed();
    let (node, kills) = killer.await.unwrap();
    assert_eq!(kills.len(), KILLS);
    assert_eq!(ids.len(), n);

    let arrived = wait_arrived(&rx, &ids, Duration::from_secs(60)).await;
    let elapsed = started.elapsed();
    let seen = rx.by_id.lock().unwrap().clone();
    let lost: Vec<&String> = ids.iter().filter(|id| !seen.contains_key(*id)).collect();
    let duplicates: Vec<(&String, &u32)> = seen.iter().filter(|(_, c)| **c > 1).collect();
    let extra = duplicates
        .iter()
        .map(|(_, c)| u64::from(**c - 1))
        .sum::<u64>();
    let unacked = seen.len() - arrived;
    println!(
        "crash {kind:?}: {n} events acknowledged in {published:.1?}, {KILLS} kills (acked count, time): {kills:?}; \
         all arrived after {elapsed:.1?}; lost {}; {} events delivered more than once ({extra} extra deliveries); \
         {unacked} delivered events whose publish was never acknowledged",
        lost.len(),
        duplicates.len(),
    );
    if !duplicates.is_empty() {
        let mut d: Vec<String> = duplicates
            .iter()
            .map(|(id, c)| format!("{id}×{c}"))
            .collect();
        d.sort();
        println!("duplicates: {}", d.join(" "));
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged events never arrived, e.g. {:?}\nlast log:\n{}",
        lost.len(),
        &lost[..lost.len().min(10)],
        node.log_text()
    );
    drop(node);
    drop(db);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_sqlite() {
    let _one_at_a_time = common::heavy().await;
    crash(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_postgres() {
    let _one_at_a_time = common::heavy().await;
    crash(Db::Postgres).await;
}

// ---------------------------------------------------------------------------
// Item 3: scale-out on PostgreSQL

async fn get_json(c: &reqwest::Client, url: &str, key: &str) -> Value {
    let r = c.get(url).bearer_auth(key).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "GET {url}");
    r.json().await.unwrap()
}

/// How many attempts each node made for the endpoint's deliveries, read
/// through the API: its deliveries page by page, then each one's attempts
/// (the `node` of an attempt is the engine that made it).
async fn attempts_by_node(base: &str, key: &str, endpoint: &str) -> HashMap<String, u64> {
    let c = client();
    let mut deliveries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/endpoints/{endpoint}/deliveries?limit=200");
        if let Some(cur) = &cursor {
            url.push_str(&format!("&cursor={cur}"));
        }
        let page = get_json(&c, &url, key).await;
        for d in page["data"].as_array().unwrap() {
            deliveries.push(d["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let next = Arc::new(AtomicUsize::new(0));
    let deliveries = Arc::new(deliveries);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (c, next, deliveries) = (c.clone(), next.clone(), deliveries.clone());
        let (base, key) = (base.to_owned(), key.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut counts: HashMap<String, u64> = HashMap::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(id) = deliveries.get(i) else {
                    return counts;
                };
                let page = get_json(&c, &format!("{base}/v1/deliveries/{id}/attempts"), &key).await;
                for a in page["data"].as_array().unwrap() {
                    let node = a["node"].as_str().unwrap_or("(none)").to_owned();
                    *counts.entry(node).or_default() += 1;
                }
            }
        }));
    }
    let mut counts = HashMap::new();
    for t in tasks {
        for (node, n) in t.await.unwrap() {
            *counts.entry(node).or_default() += n;
        }
    }
    counts
}

/// One run: an api node and `workers` worker nodes over a fresh PostgreSQL
/// database. Answers events/s end to end and deliveries per worker.
/// The shape of a scale-out run.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// One `--role api` node taking every publish, and this many
    /// `--role worker` nodes delivering.
    ApiAndWorkers(usize),
    /// This many `--role all` nodes, each taking an equal share of the
    /// publishes and delivering.
    AllNodes(usize),
}

async fn scale_out(layout: Layout, n: usize) -> Option<(f64, Vec<u64>)> {
    let db = test_db(Db::Postgres)?;
    let (workers, tag) = match layout {
        Layout::ApiAndWorkers(w) => (w, format!("scale{w}")),
        Layout::AllNodes(k) => (k, format!("scale-all{k}")),
    };
    let dir = scratch_dir(&tag);
    let port = free_port();
    let first_spec = Spec {
        database: db.url.clone(),
        role: if matches!(layout, Layout::AllNodes(_)) {
            "all"
        } else {
            "api"
        },
        listen: Some(format!("127.0.0.1:{port}")),
        env: vec![],
        dir: dir.clone(),
    };
    let mut bases = vec![format!("http://127.0.0.1:{port}")];
    let (hook_url, rx) = receiver().await;
    let mut first = Node::start(&first_spec, "node-0");
    let key = first.admin_key();
    first.wait_ready(&first_spec);
    let (api, mut nodes): (Option<Node>, Vec<Node>) = match layout {
        Layout::ApiAndWorkers(w) => {
            // Workers need --allow-net (they make the calls) but no --listen.
            let worker_spec = Spec {
                role: "worker",
                listen: None,
                ..first_spec.clone()
            };
            let mut nodes: Vec<Node> = (0..w)
                .map(|i| Node::start(&worker_spec, &format!("worker-{i}")))
                .collect();
            for node in &mut nodes {
                node.wait_ready(&worker_spec);
            }
            (Some(first), nodes)
        }
        Layout::AllNodes(k) => {
            let mut nodes = vec![first];
            for i in 1..k {
                let port = free_port();
                let spec = Spec {
                    listen: Some(format!("127.0.0.1:{port}")),
                    ..first_spec.clone()
                };
                let mut node = Node::start(&spec, &format!("node-{i}"));
                node.wait_ready(&spec);
                bases.push(format!("http://127.0.0.1:{port}"));
                nodes.push(node);
            }
            (None, nodes)
        }
    };
    let base = bases[0].clone();
    let endpoint = setup_bot(&base, &key, &hook_url).await;

    let started = Instant::now();
    let deadline = started + Duration::from_secs(60 + n as u64 / 50);
    // Each publishing node takes an equal share, all at once.
    let share = n / bases.len();
    let in_flight = 64 / bases.len();
    let mut tasks = Vec::new();
    for (i, b) in bases.iter().enumerate() {
        let count = if i == 0 {
            n - share * (bases.len() - 1)
        } else {
            share
        };
        let (b, key) = (b.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            publish(
                &b,
                &key,
                count,
                in_flight,
                Arc::new(AtomicUsize::new(0)),
                deadline,
            )
            .await
        }));
    }
    let mut ids = Vec::with_capacity(n);
    for t in tasks {
        ids.extend(t.await.unwrap());
    }
    assert_eq!(ids.len(), n);
    let published = started.elapsed();
    let limit = deadline.saturating_duration_since(Instant::now());
    let arrived = wait_arrived(&rx, &ids, limit).await;
    let elapsed = started.elapsed();
    // A moment for any second delivery of the same event to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for w in &mut nodes {
        w.check_alive();
    }

    assert_eq!(arrived, n, "{} of {n} events never arrived", n - arrived);
    let seen = rx.by_id.lock().unwrap().clone();
    let twice: Vec<(&String, &u32)> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        twice.is_empty(),
        "{} events delivered more than once, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(10)]
    );
    assert_eq!(seen.len(), n, "only the published events arrive");
    assert_eq!(rx.total.load(Ordering::SeqCst), n);

    // The database agrees: one succeeded delivery and one attempt per event.
    let (succeeded, attempts) = pg(&db.url, |c| {
        let s: i64 = c
            .query_one(
                "SELECT COUNT(*) FROM deliveries WHERE status = 'succeeded'",
                &[],
            )
            .unwrap()
            .get(0);
        let a: i64 = c
            .query_one("SELECT COUNT(*) FROM attempts", &[])
            .unwrap()
            .get(0);
        (s, a)
    });
    assert_eq!(succeeded as usize, n);
    assert_eq!(attempts as usize, n, "one attempt per event");

    // Which node delivered, from the attempts API.
    let by_node = attempts_by_node(&base, &key, &endpoint).await;
    let mut nodes_seen: Vec<&String> = by_node.keys().collect();
    nodes_seen.sort();
    let split: Vec<u64> = nodes_seen.iter().map(|n| by_node[*n]).collect();
    let rate = n as f64 / elapsed.as_secs_f64();
    println!(
        "scale-out ({layout:?}): {workers} delivering node(s), {n} events, published in {published:.2?}, \
         delivered once each in {elapsed:.2?}: {rate:.0} events/s end to end; attempts per node (attempts API) {split:?}"
    );
    assert_eq!(
        split.iter().sum::<u64>() as usize,
        n,
        "one attempt per event: {by_node:?}"
    );
    assert!(
        nodes_seen.iter().all(|n| n.starts_with("node_")),
        "every attempt made by an engine: {by_node:?}"
    );
    assert!(
        nodes_seen.len() <= workers,
        "no more nodes than delivering processes: {by_node:?}"
    );
    drop(nodes);
    drop(api);
    drop(db);
    let _ = std::fs::remove_dir_all(dir);
    Some((rate, split))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_postgres() {
    let _one_at_a_time = common::heavy().await;
    let n = events();
    let Some((one, _)) = scale_out(Layout::ApiAndWorkers(1), n).await else {
        return;
    };
    let (two, split) = scale_out(Layout::ApiAndWorkers(2), n)
        .await
        .expect("PostgreSQL configured");
    println!("scale-out: {one:.0} events/s with one worker node, {two:.0} with two");
    let (all, all_split) = scale_out(Layout::AllNodes(2), n)
        .await
        .expect("PostgreSQL configured");
    println!("scale-out: {all:.0} events/s with two --role all nodes");
    assert!(
        split.len() == 2 && split.iter().all(|&d| d > 0),
        "both workers delivered: {split:?}"
    );
    assert!(
        all_split.len() == 2 && all_split.iter().all(|&d| d > 0),
        "both --role all nodes delivered: {all_split:?}"
    );
}
