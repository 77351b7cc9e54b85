//! Retention over simulated time: with one-minute retention, a steady
//! stream of events and chat turns leaves the database bounded (row counts,
//! and on SQLite the file's size after incremental vacuum), while
//! deliveries to an endpoint held failing are never removed and all arrive
//! once it answers again. Runs on SQLite and PostgreSQL.

use crate::common::{self, App, Db};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use botwire::delivery::clock::{Clock, ManualClock};
use botwire::delivery::schedule::RetrySchedule;
use botwire::delivery::ssrf::AllowList;
use botwire::delivery::{Delivery, Engine, Settings};
use botwire::domain::retention::{PruneKind, RetentionPolicy};
use botwire::runtime::retention::Pruner;
use botwire::store::events::{EventRow, Published};
use botwire::store::retention::{BATCH_ROWS, Stage};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MINUTE: i64 = 60_000;
const MINUTES: i64 = 20;
/// Events published to the healthy endpoint's bot each simulated minute.
const EVENTS_PER_MINUTE: usize = 50;
/// Events to the failing endpoint's bot each simulated minute.
const HELD_PER_MINUTE: usize = 2;
/// Conversations run to their end each simulated minute (two turns each).
const CHATS_PER_MINUTE: usize = 3;

const SHOP: &str = r#"
id: shop
name: Shop
type: support
flow:
  start: hello
  nodes:
    hello: { ask: "Hi! Your name?", save_as: name, next: thanks }
    thanks: { message: "Thanks {{memory.name}}", next: done }
    done: { end: true }
"#;

/// A loopback receiver: what each path got, and the status it answers
/// (`/down` answers 503 until told otherwise).
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<HashMap<String, Vec<Value>>>>,
    down_status: Arc<AtomicU16>,
}

async fn receive(State(r): State<Receiver>, uri: Uri, body: Bytes) -> StatusCode {
    let path = uri.path().to_owned();
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    r.got
        .lock()
        .unwrap()
        .entry(path.clone())
        .or_default()
        .push(value);
    if path == "/down" {
        StatusCode::from_u16(r.down_status.load(Ordering::SeqCst)).unwrap()
    } else {
        StatusCode::OK
    }
}

impl Receiver {
    async fn start() -> (Self, String) {
        let r = Receiver::default();
        r.down_status.store(503, Ordering::SeqCst);
        let app = axum::Router::new().fallback(receive).with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, base)
    }
    fn count(&self, path: &str) -> usize {
        self.got.lock().unwrap().get(path).map_or(0, Vec::len)
    }
    /// The `data.n` of every 2xx-answered body at `path`, once each.
    fn marks(&self, path: &str) -> BTreeSet<i64> {
        self.got
            .lock()
            .unwrap()
            .get(path)
            .into_iter()
            .flatten()
            .filter_map(|v| v["data"]["n"].as_i64())
            .collect()
    }
}

async fn count(app: &App, sql: &'static str) -> i64 {
    app.store
        .read(move |c| c.query_one(sql, &[])?.int(0))
        .await
        .unwrap()
}

async fn endpoint(app: &App, bot: &str, url: String) {
    let r = app
        .admin(
            "POST",
            &format!("/v1/bots/{bot}/endpoints"),
            Some(json!({ "url": url })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
}

async fn publish(app: &App, bot: &str, n: i64, at: i64) {
    let mut e = EventRow::new(
        &app.account_id,
        bot,
        "order.placed",
        None,
        json!({"n": n, "pad": "x".repeat(4000)}).to_string(),
    );
    e.created_at = at;
    match app.store.publish_event(e, None).await.unwrap() {
        Published::Created(_) => {}
        Published::Replayed(e) => panic!("replayed {}", e.id),
    }
}

async fn chat(app: &App, phone: &str, text: &str) {
    let r = app
        .admin(
            "POST",
            "/v1/bots/shop/chat",
            Some(json!({"contact": {"phone": phone}, "text": text})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[derive(Debug)]
struct Reading {
    events: i64,
    deliveries: i64,
    attempts: i64,
    conversations: i64,
    messages: i64,
    unfinished: i64,
    sqlite_bytes: Option<u64>,
}

async fn reading(app: &App) -> Reading {
    Reading {
        events: count(app, "SELECT COUNT(*) FROM events").await,
        deliveries: count(app, "SELECT COUNT(*) FROM deliveries").await,
        attempts: count(app, "SELECT COUNT(*) FROM attempts").await,
        conversations: count(app, "SELECT COUNT(*) FROM conversations").await,
        messages: count(app, "SELECT COUNT(*) FROM messages").await,
        unfinished: count(
            app,
            "SELECT COUNT(*) FROM deliveries WHERE status IN ('pending', 'failed')",
        )
        .await,
        sqlite_bytes: app.store.sqlite_size().await.unwrap().map(|(b, _)| b),
    }
}

async fn bounded_over_simulated_time(kind: Db) {
    let _heavy = common::heavy().await;
    let clock = ManualClock::now();
    let settings = Settings {
        allow: AllowList::parse(["127.0.0.0/8"]).unwrap(),
        timeout: Duration::from_secs(5),
        // One retry, half an hour later: the failing endpoint's deliveries
        // stay "retrying" for the whole run.
        schedule: RetrySchedule::parse("30m,30m").unwrap(),
        disable_after: Duration::from_secs(86_400),
        break_after: 0,
        poll: None,
        clock: Arc::new(clock.clone()),
        ..Settings::default()
    };
    let delivery = Delivery::new(settings).unwrap();
    let Some(app) = common::spawn_app_with(kind, delivery.clone()).await else {
        return;
    };
    let engine = Engine::start(app.store.clone(), delivery);
    let (rx, base) = Receiver::start().await;
    app.import_yaml(SHOP.into()).await;
    app.create_bot("slow", "support").await;
    endpoint(&app, "shop", format!("{base}/up")).await;
    endpoint(&app, "slow", format!("{base}/down")).await;
    let keep = Some(Duration::from_secs(60));
    let pruner = Pruner::new(
        app.store.clone(),
        RetentionPolicy {
            events: keep,
            attempts: keep,
            conversations: keep,
            audit: None,
        },
        Arc::new(clock.clone()),
    );

    // One conversation stays open (waiting at its question) throughout.
    chat(&app, "+34600999999", "hi").await;
    let open_id = app
        .store
        .read(|c| {
            c.query_one("SELECT id FROM conversations WHERE status = 'active'", &[])?
                .text(0)
        })
        .await
        .unwrap();

    let mut readings = Vec::new();
    let mut held = 0i64;
    let mut published = 0i64;
    let mut batch_ms = Vec::new();
    for minute in 0..MINUTES {
        let now = clock.now_ms();
        for _ in 0..EVENTS_PER_MINUTE {
            publish(&app, "shop", published, now).await;
            published += 1;
        }
        for _ in 0..HELD_PER_MINUTE {
            publish(&app, "slow", 1_000_000 + held, now).await;
            held += 1;
        }
        for c in 0..CHATS_PER_MINUTE {
            let phone = format!("+3460{:03}{:04}", minute, c);
            chat(&app, &phone, "hello").await;
            chat(&app, &phone, "Ann").await;
        }
        engine.idle().await;
        engine.run_due_once(clock.now_ms()).await.unwrap();
        clock.advance(MINUTE);
        let pass = pruner.prune_once().await.unwrap();
        if pass.removed.total() > 0 {
            batch_ms.push(pass.took.as_secs_f64() * 1000.0);
        }
        let r = reading(&app).await;
        // Never a pending or retrying delivery removed.
        assert_eq!(r.unfinished, held, "minute {minute}: {r:?}");
        if minute >= 2 {
            assert!(
                pass.removed.get(PruneKind::Events) > 0
                    && pass.removed.get(PruneKind::Conversations) > 0,
                "minute {minute}: the pass removed {:?}",
                pass.removed
            );
        }
        readings.push(r);
    }
    for (minute, r) in readings.iter().enumerate() {
        eprintln!("{kind:?} minute {minute}: {r:?}");
    }
    eprintln!("{kind:?} prune passes took {batch_ms:.1?} ms");

    // Bounded: what stays is about one minute of traffic plus the held
    // deliveries, whatever the minute.
    let per_minute = (EVENTS_PER_MINUTE + HELD_PER_MINUTE) as i64 + 10 * CHATS_PER_MINUTE as i64;
    for r in &readings[2..] {
        assert!(
            r.events - held <= 2 * per_minute,
            "events grow: {r:?} (held {held})"
        );
        assert!(r.deliveries <= 2 * per_minute + held, "{r:?}");
        assert!(r.attempts <= 2 * per_minute + held, "{r:?}");
        assert!(r.conversations <= 2 * CHATS_PER_MINUTE as i64 + 1, "{r:?}");
        assert!(
            r.messages <= 10 * (2 * CHATS_PER_MINUTE as i64 + 1),
            "{r:?}"
        );
    }
    if let Some(early) = readings[4].sqlite_bytes {
        let late = readings[5..]
            .iter()
            .filter_map(|r| r.sqlite_bytes)
            .max()
            .unwrap();
        // 20 minutes wrote about 20 times what one minute keeps; the file
        // holds about what minute 4 held (plus the held events).
        assert!(
            late <= early + early / 2,
            "the file grew from {early} bytes at minute 4 to {late}"
        );
    }

    // The open conversation and its transcript are all there.
    let open = open_id.clone();
    let still = app
        .store
        .read(move |c| {
            c.query_one(
                "SELECT COUNT(*) FROM messages WHERE conversation_id = $1",
                &[open.into()],
            )?
            .int(0)
        })
        .await
        .unwrap();
    assert!(still >= 2, "the open conversation kept its messages");
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM conversations WHERE status = 'active'"
        )
        .await,
        1
    );

    // Every healthy delivery arrived; the failing endpoint saw one attempt
    // of each held event.
    assert_eq!(rx.marks("/up").len() as i64, published);
    assert_eq!(rx.count("/down") as i64, held);

    // The endpoint comes back; the retries fall due: every held event
    // arrives, none was lost to pruning.
    rx.down_status.store(200, Ordering::SeqCst);
    // (30 minutes, ±20 % jitter.)
    clock.advance(40 * MINUTE);
    while engine.run_due_once(clock.now_ms()).await.unwrap() > 0 {}
    let expected: BTreeSet<i64> = (0..held).map(|n| 1_000_000 + n).collect();
    assert_eq!(rx.marks("/down"), expected);
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM deliveries WHERE status IN ('pending', 'failed')"
        )
        .await,
        0
    );
    // Once delivered and old enough, they go too.
    clock.advance(2 * MINUTE);
    pruner.prune_once().await.unwrap();
    assert_eq!(count(&app, "SELECT COUNT(*) FROM events").await, 0);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM deliveries").await, 0);

    // How long one full batch holds the writer: 1,500 delivered events,
    // pruned 500 (with their deliveries and attempts) per write. The
    // writer's own counters give the time spent applying and committing.
    let now = clock.now_ms();
    for n in 0..3 * BATCH_ROWS {
        publish(&app, "shop", 10_000_000 + n, now).await;
    }
    engine.idle().await;
    clock.advance(2 * MINUTE);
    let mut took = Vec::new();
    let mut after = None;
    loop {
        let before = app.store.writer_stats();
        let n = app
            .store
            .prune_batch(Stage::Events, clock.now_ms() - MINUTE, after, BATCH_ROWS)
            .await
            .unwrap();
        let after_stats = app.store.writer_stats();
        let apply_ms = (after_stats.apply_us - before.apply_us) as f64 / 1000.0;
        let commit_ms = (after_stats.commit_us - before.commit_us) as f64 / 1000.0;
        took.push((n.removed.total(), apply_ms, commit_ms));
        match n.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    eprintln!(
        "{kind:?} batches of events with their deliveries and attempts (rows, ms applying, ms committing): {took:.1?}"
    );
    // Three full batches, and a fourth that finds the end.
    assert_eq!(took.len(), 4, "{took:?}");
    assert_eq!(
        took.iter().map(|t| t.0).sum::<u64>(),
        9 * BATCH_ROWS as u64,
        "{took:?}"
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_database_stays_bounded_and_held_deliveries_survive_sqlite() {
    bounded_over_simulated_time(Db::Sqlite).await;
}

#[tokio::test]
async fn the_database_stays_bounded_and_held_deliveries_survive_postgres() {
    bounded_over_simulated_time(Db::Postgres).await;
}

#[tokio::test]
async fn the_pruned_rows_show_on_metrics() {
    let Some(app) = common::spawn_app(Db::Sqlite).await else {
        return;
    };
    app.create_bot("eli", "support").await;
    let clock = ManualClock::now();
    let mut e = EventRow::new(&app.account_id, "eli", "order.placed", None, "{}".into());
    e.created_at = clock.now_ms() - 2 * MINUTE;
    app.store.publish_event(e, None).await.unwrap();
    let pruner = Pruner::new(
        app.store.clone(),
        RetentionPolicy {
            events: Some(Duration::from_secs(60)),
            ..Default::default()
        },
        Arc::new(clock),
    );
    let pass = pruner.prune_once().await.unwrap();
    assert_eq!(pass.removed.get(PruneKind::Events), 1);
    let text = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("botwire_pruned_rows_total{kind=\"events\"}"))
        .unwrap_or_else(|| panic!("no pruned events line in\n{text}"));
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 1.0, "{line}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("botwire_prune_last_duration_seconds ")),
        "{text}"
    );
}
