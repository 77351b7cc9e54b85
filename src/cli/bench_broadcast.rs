//! `botwire bench broadcast`: messages per second a broadcast gets to a
//! messaging platform, and that none is sent twice.
//!
//! Everything runs in this process on loopback: a store (a scratch SQLite
//! file with `synchronous = FULL`, or the empty database `--database`
//! names), the broadcast worker, the outbox sender with throttling off, and
//! a fake WhatsApp Cloud API that counts what each recipient receives and
//! notes the first and last arrival. N contacts with phones, one segment of
//! them all, one broadcast of a template (nobody has written, so WhatsApp
//! takes only a template) with no pacing. The figure is messages per second
//! from the first send to the last arrival; the run fails if a recipient got
//! the message twice or not at all.

use crate::channels::{ChannelConfig, ChannelFields, ChannelKind, Secret};
use crate::domain::bot::{BotId, BotType};
use crate::domain::broadcast::{BroadcastMessage, TemplateMessage};
use crate::runtime::broadcasts::BroadcastWorker;
use crate::store::Store;
use crate::store::contacts::ImportRow;
use axum::body::Bytes;
use axum::extract::State;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Options of `bench broadcast`.
#[derive(clap::Args, Debug)]
pub struct BroadcastBench {
    /// Contacts the broadcast goes to.
    #[arg(long, default_value_t = 100_000)]
    recipients: usize,
    /// An empty database to run on (`postgres://…`); by default a scratch
    /// SQLite file in `--dir`.
    #[arg(long)]
    database: Option<String>,
    /// Folder for the scratch SQLite database.
    #[arg(long, default_value = ".")]
    dir: std::path::PathBuf,
    /// Give up when nothing arrives for this many seconds.
    #[arg(long, default_value_t = 60)]
    stall_secs: u64,
}

/// What the fake platform saw: messages per recipient, first and last
/// arrival.
#[derive(Default)]
struct Seen {
    per: HashMap<String, u32>,
    total: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

async fn platform(State(seen): State<Arc<Mutex<Seen>>>, body: Bytes) -> axum::Json<Value> {
    let at = Instant::now();
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let to = v["to"].as_str().unwrap_or_default().to_owned();
    let n = {
        let mut s = seen.lock().expect("seen");
        *s.per.entry(to.clone()).or_default() += 1;
        s.total += 1;
        s.first.get_or_insert(at);
        s.last = Some(at);
        s.total
    };
    axum::Json(
        json!({"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}],
               "messages": [{"id": format!("wamid.bench{n}")}]}),
    )
}

/// Runs the benchmark and prints its figures; an error if any recipient
/// got the message twice or not at all.
pub async fn run(b: BroadcastBench) -> anyhow::Result<()> {
    anyhow::ensure!(b.recipients > 0, "--recipients must be at least 1");
    let (url, scratch) = match &b.database {
        Some(url) => (url.clone(), None),
        None => {
            let path = b
                .dir
                .join(format!(
                    "botwire-bench-broadcast-{}.db",
                    crate::domain::ids::new_id("b")
                ))
                .display()
                .to_string();
            (format!("sqlite://{path}"), Some(path))
        }
    };
    let store = Store::open(&url).await?;
    let result = measure(&store, &b).await;
    store.close().await;
    if let Some(path) = scratch {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    }
    result
}

async fn measure(store: &Store, b: &BroadcastBench) -> anyhow::Result<()> {
    let n = b.recipients;
    let (_, account, _) = super::bench::fresh_account(store).await?;
    let bot = BotId::parse("bench").map_err(|e| anyhow::anyhow!(e))?;
    store
        .create_bot(&account.id, bot, "Bench", BotType::Support)
        .await?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (addr, _) = super::bench::spawn_local(
        axum::Router::new()
            .fallback(platform)
            .with_state(seen.clone()),
    )
    .await?;
    let fields = ChannelFields {
        phone_number_id: Some("106540352242922".into()),
        access_token: Some(Secret::new("bench-token")),
        app_secret: Some(Secret::new("bench-app-secret")),
        verify_token: Some("bench".into()),
        api_base: Some(format!("http://{addr}/v21.0")),
        ..Default::default()
    };
    let config =
        ChannelConfig::create(ChannelKind::Whatsapp, &fields).map_err(|e| anyhow::anyhow!(e))?;
    store
        .create_channel(
            &account.id,
            "bench",
            &crate::domain::ids::new_id("ch"),
            "bench",
            config,
        )
        .await?;
    let db = if b.database.is_some() {
        "PostgreSQL"
    } else {
        "SQLite (synchronous=FULL)"
    };
    eprintln!(
        "bench broadcast: {n} recipients over WhatsApp to a fake Cloud API, {db}, throttling off"
    );
    let t = Instant::now();
    for start in (0..n).step_by(5_000) {
        let rows: Vec<ImportRow> = (start..(start + 5_000).min(n))
            .map(|i| {
                let mut attributes = Map::new();
                attributes.insert("first_name".into(), json!(format!("Name{i}")));
                ImportRow {
                    line: i + 2,
                    phone: Some(format!("+1555{i:07}")),
                    external_id: None,
                    attributes,
                    opted_out: Some(false),
                }
            })
            .collect();
        store.import_contacts(&account.id, "bench", rows).await?;
    }
    let segment = store
        .create_segment(&account.id, "bench", "All", "true")
        .await?;
    eprintln!(
        "{n} contacts imported in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let delivery = crate::delivery::Delivery::new(crate::delivery::Settings {
        allow: crate::delivery::ssrf::AllowList::parse(["127.0.0.0/8"])?,
        ..Default::default()
    })?;
    let sender = crate::delivery::outbox::Sender::start(
        store.clone(),
        delivery.clone(),
        "http://127.0.0.1:9",
    );
    let message = BroadcastMessage {
        text: "Hi {{user.first_name}}".into(),
        template: Some(TemplateMessage {
            name: "promo".into(),
            language: "en_US".into(),
            params: vec!["{{user.first_name}}".into()],
        }),
        campaign: None,
    };
    // No pacing: as many recipients per step as a batch holds.
    let broadcast = store
        .create_broadcast(
            &account.id,
            "bench",
            &segment.id,
            message,
            crate::store::now_ms(),
            1_000_000,
        )
        .await?;
    let worker =
        tokio::spawn(BroadcastWorker::default().run(store.clone(), Duration::from_millis(5)));
    let started = Instant::now();
    let mut last_total = 0;
    let mut last_change = Instant::now();
    let mut last_line = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let total = seen.lock().expect("seen").total;
        if total != last_total {
            last_total = total;
            last_change = Instant::now();
        }
        let done = total >= n as u64 || last_change.elapsed() > Duration::from_secs(b.stall_secs);
        if done || last_line.elapsed() >= Duration::from_secs(1) {
            last_line = Instant::now();
            let counts = store.broadcast_counts(&broadcast.id).await?;
            eprintln!(
                "  {:>5.1} s: {total} arrived, {} recipients handled, {} pending",
                started.elapsed().as_secs_f64(),
                counts.sent + counts.skipped + counts.failed,
                counts.pending
            );
        }
        if total >= n as u64 {
            // Let a late duplicate show itself before counting.
            tokio::time::sleep(Duration::from_millis(500)).await;
            break;
        }
        if last_change.elapsed() > Duration::from_secs(b.stall_secs) {
            eprintln!("nothing arrived for {} s; stopping", b.stall_secs);
            break;
        }
    }
    worker.abort();
    sender.shutdown(Duration::from_secs(5)).await;
    let counts = store.broadcast_counts(&broadcast.id).await?;
    let s = seen.lock().expect("seen");
    let doubled = s.per.values().filter(|c| **c > 1).count();
    let missing = n.saturating_sub(s.per.len());
    let secs = match (s.first, s.last) {
        (Some(a), Some(z)) => z.duration_since(a).as_secs_f64().max(1e-3),
        _ => 0.0,
    };
    let rate = if secs > 0.0 {
        s.total as f64 / secs
    } else {
        0.0
    };
    println!(
        "broadcast to {n} recipients: {} messages in {secs:.2} s (first send to last arrival): {rate:.0} messages/s",
        s.total
    );
    println!(
        "recipients: {} sent, {} failed, {} skipped, {} pending",
        counts.sent, counts.failed, counts.skipped, counts.pending
    );
    if doubled == 0 {
        println!("none doubled: every recipient that got the message got it once");
    } else {
        println!("DOUBLED: {doubled} recipients got the message more than once");
    }
    if missing == 0 {
        println!("all arrived: {n} of {n} recipients");
    } else {
        println!("MISSING: {missing} of {n} recipients got nothing");
    }
    anyhow::ensure!(
        doubled == 0 && missing == 0,
        "{doubled} doubled, {missing} missing"
    );
    Ok(())
}
