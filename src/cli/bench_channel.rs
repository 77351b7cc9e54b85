//! `botwire bench channel --kind whatsapp`: messages answered per second
//! through a messaging channel, end to end.
//!
//! Everything runs in this process on loopback: the real server (API,
//! SQLite store with `synchronous = FULL`, inbound processor, outbox sender,
//! delivery engine) with the `elipackage` example bound to a WhatsApp
//! channel, and a fake Graph API that answers as WhatsApp does and notes
//! when each reply arrives. Many people (`--users`) write at once, each the
//! next line of the EliPackage conversation as soon as the previous one was
//! answered: a signed webhook is posted (stored, 200), turned into a chat
//! turn, and its reply sent to the fake Graph API. Then a paced run posts at
//! a fixed rate and reports inbound→outbound latency.

use super::bench_chat::percentile;
use crate::channels::meta;
use crate::store::Store;
use axum::body::Bytes;
use axum::extract::State;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const ELIPACKAGE: &str = include_str!("../../examples/elipackage.yaml");
/// What each person writes, over and over: welcome, name, menu → end.
const SCRIPT: [&str; 3] = ["hi", "John Doe", "1"];
const APP_SECRET: &str = "bench-app-secret";
const PHONE_NUMBER_ID: &str = "106540352242922";

/// Options of `bench channel`.
#[derive(clap::Args, Debug)]
pub struct ChannelBench {
    /// The platform (only whatsapp is measured so far).
    #[arg(long, default_value = "whatsapp")]
    kind: String,
    /// People writing at once.
    #[arg(long, default_value_t = 256)]
    users: usize,
    /// Seconds of the throughput run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Inbound messages per second of the paced latency run.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Seconds of the paced run.
    #[arg(long, default_value_t = 10.0)]
    paced_seconds: f64,
    /// Folder for the scratch database.
    #[arg(long, default_value = ".")]
    dir: std::path::PathBuf,
}

/// Where the fake Graph API tells each person's waiter that a reply came.
#[derive(Clone, Default)]
struct Graph {
    waiters: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Instant>>>>,
    sent: Arc<AtomicU64>,
}

async fn graph(State(g): State<Graph>, body: Bytes) -> axum::Json<Value> {
    let at = Instant::now();
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let to = v["to"].as_str().unwrap_or_default().to_owned();
    let n = g.sent.fetch_add(1, Ordering::Relaxed);
    if let Some(w) = g.waiters.lock().expect("waiters").get(&to) {
        let _ = w.send(at);
    }
    axum::Json(
        json!({"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}],
                      "messages": [{"id": format!("wamid.bench{n}")}]}),
    )
}

fn inbound(user: &str, id: &str, text: &str) -> Vec<u8> {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
        "contacts": [{"profile": {"name": "Bench"}, "wa_id": user}],
        "messages": [{"from": user, "id": id, "timestamp": "1", "type": "text", "text": {"body": text}}]}}]}]})
    .to_string()
    .into_bytes()
}

struct Bench {
    url: String,
    client: reqwest::Client,
    graph: Graph,
    seq: AtomicU64,
}

impl Bench {
    /// Posts one signed message from `user`; answers when it was sent.
    async fn post(&self, user: &str, text: &str) -> anyhow::Result<Instant> {
        let id = format!("wamid.in{}", self.seq.fetch_add(1, Ordering::Relaxed));
        let body = inbound(user, &id, text);
        let sig = meta::signature(APP_SECRET, &body);
        let t = Instant::now();
        let r = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header(meta::SIGNATURE_HEADER, sig)
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "webhook answered {}", r.status());
        r.bytes().await?;
        Ok(t)
    }

    fn waiter(&self, user: &str) -> mpsc::UnboundedReceiver<Instant> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.graph
            .waiters
            .lock()
            .expect("waiters")
            .insert(user.to_owned(), tx);
        rx
    }
}

/// A person of the paced run: the next line of the script, and where
/// their replies arrive.
type Person = (usize, mpsc::UnboundedReceiver<Instant>);

/// Runs the benchmark and prints its figures.
pub async fn run(b: ChannelBench) -> anyhow::Result<()> {
    anyhow::ensure!(
        b.kind == "whatsapp",
        "only --kind whatsapp is measured so far"
    );
    let path = b
        .dir
        .join(format!(
            "botwire-bench-channel-{}.db",
            crate::domain::ids::new_id("b")
        ))
        .display()
        .to_string();
    let store = Store::open(&format!("sqlite://{path}")).await?;
    let (pepper, account, _) = super::bench::fresh_account(&store).await?;
    let file = crate::runtime::bots::parse_bot_file(ELIPACKAGE, true)?;
    crate::runtime::bots::import(&store, &account.id, &file).await?;

    let g = Graph::default();
    let (graph_addr, _) =
        super::bench::spawn_local(axum::Router::new().fallback(graph).with_state(g.clone()))
            .await?;
    let delivery = crate::delivery::Delivery::new(crate::delivery::Settings {
        allow: crate::delivery::ssrf::AllowList::parse(["127.0.0.0/8"])?,
        ..Default::default()
    })?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let state =
        crate::api::AppState::new(store.clone(), pepper, delivery.clone()).with_public_url(&base);
    let inbound_runtime = crate::runtime::inbound::Inbound::new(
        store.clone(),
        state.chat.clone(),
        delivery.client().clone(),
        state.channels.clone(),
    );
    let app = crate::api::router(state, &crate::api::RouterOptions::default());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let engine = crate::delivery::Engine::start(store.clone(), delivery.clone());
    let sender = crate::delivery::outbox::Sender::start(store.clone(), delivery.clone(), &base);
    let mut processor = crate::runtime::inbound::Processor::start(
        inbound_runtime,
        delivery.settings().lease,
        delivery.settings().poll,
    );
    let fields = crate::channels::ChannelFields {
        phone_number_id: Some(PHONE_NUMBER_ID.into()),
        access_token: Some(crate::channels::Secret::new("bench-token")),
        app_secret: Some(crate::channels::Secret::new(APP_SECRET)),
        verify_token: Some("bench".into()),
        api_base: Some(format!("http://{graph_addr}/v21.0")),
        ..Default::default()
    };
    let config =
        crate::channels::ChannelConfig::create(crate::channels::ChannelKind::Whatsapp, &fields)
            .map_err(|e| anyhow::anyhow!(e))?;
    let id = crate::domain::ids::new_id("ch");
    store
        .create_channel(&account.id, "elipackage", &id, "bench", config)
        .await?;
    let bench = Arc::new(Bench {
        url: format!("{base}/channels/{id}/webhook"),
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(b.users * 2)
            .build()?,
        graph: g.clone(),
        seq: AtomicU64::new(0),
    });
    eprintln!(
        "bench channel: WhatsApp, elipackage, SQLite (synchronous=FULL), {} people writing at once, {:.0} s",
        b.users, b.seconds
    );

    // Throughput: each person writes the next line once the last was answered.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for u in 0..b.users {
        let (bench, stop, answered) = (bench.clone(), stop.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            let user = format!("5255{u:08}");
            let mut replies = bench.waiter(&user);
            let mut lat = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = bench.post(&user, SCRIPT[i % SCRIPT.len()]).await?;
                match tokio::time::timeout(Duration::from_secs(30), replies.recv()).await {
                    Ok(Some(at)) => lat.push(at.duration_since(t).as_micros() as u64),
                    _ => anyhow::bail!("no reply within 30 s"),
                }
                answered.fetch_add(1, Ordering::Relaxed);
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
    let n = answered.load(Ordering::Relaxed);
    println!(
        "throughput: {:.0} inbound messages/s answered end to end ({n} messages, {} replies sent, {} people); inbound→outbound p50 {:.2} ms, p99 {:.2} ms",
        n as f64 / elapsed,
        g.sent.load(Ordering::Relaxed),
        b.users,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );

    // Latency at a fixed rate: a message every 1/rate s, from people who are
    // not waiting for an answer.
    let interval = Duration::from_secs_f64(1.0 / b.rate.max(1) as f64);
    let total = (b.rate as f64 * b.paced_seconds) as usize;
    let pool = (b.rate as usize / 5).max(b.users);
    let people: Arc<Vec<tokio::sync::Mutex<Person>>> = Arc::new(
        (0..pool)
            .map(|u| tokio::sync::Mutex::new((0, bench.waiter(&format!("5266{u:08}")))))
            .collect(),
    );
    let (tx, mut rx) = mpsc::unbounded_channel::<u64>();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let paced_start = Instant::now();
    for k in 0..total {
        ticker.tick().await;
        let (bench, people, tx) = (bench.clone(), people.clone(), tx.clone());
        tokio::spawn(async move {
            let slot = k % people.len();
            let mut person = people[slot].lock().await;
            let user = format!("5266{slot:08}");
            let Ok(t) = bench.post(&user, SCRIPT[person.0 % SCRIPT.len()]).await else {
                return;
            };
            person.0 += 1;
            if let Ok(Some(at)) =
                tokio::time::timeout(Duration::from_secs(30), person.1.recv()).await
            {
                let _ = tx.send(at.duration_since(t).as_micros() as u64);
            }
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
        "paced at {} inbound messages/s: {} answered in {:.1} s; inbound→outbound p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        b.rate,
        paced.len(),
        paced_elapsed,
        percentile(&paced, 0.5),
        percentile(&paced, 0.99),
        paced.last().copied().unwrap_or(0) as f64 / 1000.0
    );
    processor.shutdown(Duration::from_secs(5)).await;
    sender.shutdown(Duration::from_secs(5)).await;
    engine.shutdown(Duration::from_secs(5)).await;
    store.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    Ok(())
}
