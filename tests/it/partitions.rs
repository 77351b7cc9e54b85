//! PostgreSQL time partitions of events, deliveries and attempts, with
//! one-minute periods: old finished periods are dropped whole (a dry run
//! names them and drops nothing), a period that holds a retrying delivery
//! stays with that delivery intact and deliverable, and goes once it is
//! delivered; new rows land in their own period's partition, not in
//! DEFAULT; two processes making partitions at once both succeed, and rows
//! that landed in DEFAULT move into their period's partition when it is
//! made (PostgreSQL only: on SQLite none of this exists). On both
//! backends: a database of the version before keeps its rows and
//! Idempotency-Keys when it is upgraded, and a key goes with its event.

use crate::common::{self, Db};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use botwire::delivery::clock::{Clock, ManualClock};
use botwire::delivery::schedule::RetrySchedule;
use botwire::delivery::ssrf::AllowList;
use botwire::delivery::{Delivery, Engine, Settings};
use botwire::domain::ids::new_id_at;
use botwire::domain::retention::{PruneKind, RetentionPolicy};
use botwire::runtime::retention::Pruner;
use botwire::store::events::{EventRow, Published};
use botwire::store::retention::partitions::{
    ATTEMPTS, DAY_MS, DELIVERIES, EVENTS, PartitionPlan, partition_name,
};
use botwire::store::{Store, Value};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// One period: a minute.
const W: i64 = 60_000;

async fn exec(store: &Store, sql: &'static str, params: Vec<Value>) -> u64 {
    store.write(move |c| c.execute(sql, &params)).await.unwrap()
}

async fn scalar(store: &Store, sql: &'static str, params: Vec<Value>) -> i64 {
    store
        .read(move |c| c.query_one(sql, &params)?.int(0))
        .await
        .unwrap()
}

/// The partition a row of `table` sits in.
async fn home(store: &Store, table: &'static str, id: &str) -> String {
    let id = id.to_owned();
    store
        .read(move |c| {
            c.query_one(
                &format!("SELECT tableoid::regclass::text FROM {table} WHERE id = $1"),
                &[id.into()],
            )?
            .text(0)
        })
        .await
        .unwrap()
}

async fn table_exists(store: &Store, name: String) -> bool {
    scalar(
        store,
        "SELECT COUNT(*) FROM pg_class WHERE relname = $1",
        vec![name.into()],
    )
    .await
        == 1
}

/// Publishes an event made at `at` (its id minted for that time), through
/// the store; its delivery (made now by the fan-out) is moved to the same
/// time with `status`, and gets an attempt at that time. Answers the event
/// and delivery ids.
async fn old_event(
    store: &Store,
    account: &str,
    at: i64,
    status: &str,
    key: Option<(&str, &str)>,
) -> (String, String) {
    let mut e = EventRow::new(
        account,
        "shop",
        "order.placed",
        None,
        json!({"at": at}).to_string(),
    );
    e.id = new_id_at("evt", at);
    e.created_at = at;
    let id = e.id.clone();
    let key = key.map(|(k, h)| (k.to_owned(), h.to_owned()));
    match store.publish_event(e, key).await.unwrap() {
        Published::Created(_) => {}
        Published::Replayed(e) => panic!("replayed {}", e.id),
    }
    let dlv = new_id_at("dlv", at + 1);
    let moved = exec(
        store,
        "UPDATE deliveries SET id = $1, status = $2, attempts = 1, created_at = $3,
             updated_at = $3, next_attempt_at = $5
         WHERE event_id = $4",
        vec![
            dlv.as_str().into(),
            status.into(),
            (at + 1).into(),
            id.as_str().into(),
            (status == "failed").then_some(at + 1).into(),
        ],
    )
    .await;
    assert_eq!(moved, 1, "one endpoint, one delivery");
    attempt(store, account, &dlv, at + 2).await;
    (id, dlv)
}

async fn attempt(store: &Store, account: &str, delivery: &str, at: i64) -> String {
    let id = new_id_at("att", at);
    exec(
        store,
        "INSERT INTO attempts (id, delivery_id, endpoint_id, account_id, started_at,
             duration_ms, request_headers)
         SELECT $1, id, endpoint_id, $2, $3, 5, '{}' FROM deliveries WHERE id = $4",
        vec![
            id.as_str().into(),
            account.into(),
            at.into(),
            delivery.into(),
        ],
    )
    .await;
    id
}

async fn receive(State(got): State<Arc<AtomicUsize>>, _body: Bytes) -> StatusCode {
    got.fetch_add(1, Ordering::SeqCst);
    StatusCode::OK
}

#[tokio::test]
async fn old_periods_are_dropped_whole_and_a_retrying_delivery_keeps_its_own() {
    let clock = ManualClock::now();
    let settings = Settings {
        allow: AllowList::parse(["127.0.0.0/8"]).unwrap(),
        timeout: Duration::from_secs(5),
        schedule: RetrySchedule::parse("30m,30m").unwrap(),
        disable_after: Duration::from_secs(86_400),
        break_after: 0,
        poll: None,
        clock: Arc::new(clock.clone()),
        ..Settings::default()
    };
    let delivery = Delivery::new(settings).unwrap();
    let Some(app) = common::spawn_app_with(Db::Postgres, delivery.clone()).await else {
        return;
    };
    let store = app.store.clone();
    let account = app.account_id.clone();
    let got = Arc::new(AtomicUsize::new(0));
    let receiver = axum::Router::new()
        .fallback(receive)
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    app.create_bot("shop", "support").await;
    let r = app
        .admin(
            "POST",
            "/v1/bots/shop/endpoints",
            Some(json!({ "url": url })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);

    // Periods from ten minutes ago to two minutes ahead.
    let now = clock.now_ms();
    let base = now.div_euclid(W) * W - 10 * W;
    let plan = PartitionPlan::new(W, 12).unwrap();
    assert_eq!(store.ensure_partitions(base, plan).await.unwrap(), 3 * 13);
    assert_eq!(store.ensure_partitions(base, plan).await.unwrap(), 0);
    let name = |table: &str, period: i64| partition_name(table, base + period * W, W);

    // Period 0: two finished events (one with an Idempotency-Key), and a
    // retry of one of them recorded in period 3. Period 1: one finished
    // event, one whose delivery is still retrying.
    let (e00, d00) = old_event(
        &store,
        &account,
        base + 1_000,
        "succeeded",
        Some(("k-1", "h-1")),
    )
    .await;
    let (_e01, _) = old_event(&store, &account, base + 2_000, "dead", None).await;
    let late_retry = attempt(&store, &account, &d00, base + 3 * W + 5).await;
    let (e10, _) = old_event(&store, &account, base + W + 1_000, "succeeded", None).await;
    let (e11, held) = old_event(&store, &account, base + W + 2_000, "failed", None).await;
    assert_eq!(home(&store, "events", &e00).await, name("events", 0));
    assert_eq!(
        home(&store, "deliveries", &d00).await,
        name("deliveries", 0)
    );
    assert_eq!(
        home(&store, "attempts", &late_retry).await,
        name("attempts", 3)
    );
    assert_eq!(
        home(&store, "deliveries", &held).await,
        name("deliveries", 1)
    );

    // Events and deliveries kept five minutes; attempts for now forever.
    let policy = RetentionPolicy {
        events: Some(Duration::from_secs(300)),
        ..Default::default()
    };
    let cutoffs = policy.cutoffs(now);

    // The dry run names period 0 with its rows, and the empty periods 2 to
    // 4 (older than the cut-off too), not period 1 (held); it drops
    // nothing.
    let would = store.droppable_partitions(&cutoffs).await.unwrap();
    let mut named: Vec<(String, u64)> = would.iter().map(|p| (p.name.clone(), p.rows)).collect();
    named.sort();
    let mut expected = vec![(name("events", 0), 2), (name("deliveries", 0), 2)];
    for period in 2..=4 {
        expected.push((name("events", period), 0));
        expected.push((name("deliveries", period), 0));
    }
    expected.sort();
    assert_eq!(named, expected);
    assert!(table_exists(&store, name("events", 0)).await);
    assert_eq!(
        scalar(&store, "SELECT COUNT(*) FROM events", vec![]).await,
        4
    );

    let pruner = Pruner::new(store.clone(), policy, Arc::new(clock.clone())).with_partitions(plan);
    let pass = pruner.prune_once().await.unwrap();
    assert_eq!(pass.removed.partitions(), 8, "{:?}", pass.removed);
    // Two events dropped with their partition, one by the batched delete.
    assert_eq!(pass.removed.get(PruneKind::Events), 3, "{:?}", pass.removed);
    assert!(!table_exists(&store, name("events", 0)).await);
    assert!(!table_exists(&store, name("deliveries", 0)).await);
    // Period 1 stays, with its retrying delivery and that one's event.
    assert!(table_exists(&store, name("events", 1)).await);
    assert!(table_exists(&store, name("deliveries", 1)).await);
    assert_eq!(home(&store, "events", &e11).await, name("events", 1));
    assert_eq!(
        scalar(
            &store,
            "SELECT COUNT(*) FROM deliveries WHERE id = $1 AND status = 'failed'",
            vec![held.as_str().into()]
        )
        .await,
        1
    );
    assert_eq!(
        scalar(
            &store,
            "SELECT COUNT(*) FROM events WHERE id = $1",
            vec![e10.as_str().into()]
        )
        .await,
        0,
        "the finished event of the kept period went by the batched delete"
    );
    // The dropped deliveries' attempts went too, the later retry as well;
    // the held delivery's stays.
    assert_eq!(
        scalar(
            &store,
            "SELECT COUNT(*) FROM attempts WHERE delivery_id = $1",
            vec![d00.as_str().into()]
        )
        .await,
        0
    );
    assert_eq!(
        scalar(
            &store,
            "SELECT COUNT(*) FROM attempts WHERE delivery_id = $1",
            vec![held.as_str().into()]
        )
        .await,
        1
    );
    // The dropped event's Idempotency-Key is free again.
    let mut again = EventRow::new(&account, "shop", "order.placed", None, "{}".into());
    again.created_at = now;
    let fresh = match store
        .publish_event(again, Some(("k-1".into(), "h-2".into())))
        .await
        .unwrap()
    {
        Published::Created(e) => e,
        Published::Replayed(e) => panic!("replayed {}", e.id),
    };
    // A new event lands in its own period's partition (by the time in its
    // id, which may be past a period's end since `now`), not in DEFAULT.
    let minted = botwire::domain::ids::id_time("evt", &fresh.id).expect("an event id");
    assert_eq!(
        home(&store, "events", &fresh.id).await,
        partition_name("events", minted.div_euclid(W) * W, W)
    );

    // The retrying delivery is still delivered.
    let engine = Engine::start(store.clone(), delivery);
    while engine.run_due_once(clock.now_ms()).await.unwrap() > 0 {}
    engine.idle().await;
    assert!(got.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        scalar(
            &store,
            "SELECT COUNT(*) FROM deliveries WHERE id = $1 AND status = 'succeeded'",
            vec![held.as_str().into()]
        )
        .await,
        1
    );
    engine.shutdown(Duration::from_secs(5)).await;

    // Once it is old enough, its period goes too; attempts kept five
    // minutes now drop by period.
    clock.advance(10 * W);
    let policy = RetentionPolicy {
        events: Some(Duration::from_secs(300)),
        attempts: Some(Duration::from_secs(300)),
        ..Default::default()
    };
    let pruner = Pruner::new(store.clone(), policy, Arc::new(clock.clone())).with_partitions(plan);
    let pass = pruner.prune_once().await.unwrap();
    assert!(!table_exists(&store, name("events", 1)).await);
    assert!(!table_exists(&store, name("deliveries", 1)).await);
    assert!(!table_exists(&store, name("attempts", 1)).await);
    assert!(pass.removed.partitions() >= 2 + 10, "{:?}", pass.removed);
    assert_eq!(
        scalar(
            &store,
            "SELECT COUNT(*) FROM events WHERE id = $1",
            vec![e11.as_str().into()]
        )
        .await,
        0
    );
    // The partitions now start at the clock's period.
    let first = store.partitions(ATTEMPTS).await.unwrap();
    assert!(
        first.iter().all(|p| p.to_ms > clock.now_ms() - 5 * W),
        "{first:?}"
    );
}

#[tokio::test]
async fn two_processes_make_partitions_at_once_and_strays_move_in() {
    let Some(db) = common::test_db(Db::Postgres) else {
        return;
    };
    let a = Store::open(&db.url).await.unwrap();
    let b = Store::open(&db.url).await.unwrap();
    let plan = PartitionPlan::new(W, 4).unwrap();
    let now = botwire::store::now_ms();
    // An event of a period that has no partition yet lands in DEFAULT.
    let later = now.div_euclid(W) * W + 7 * W;
    let stray = new_id_at("evt", later + 5);
    exec(
        &a,
        "INSERT INTO events (id, account_id, bot_id, type, data, created_at)
         VALUES ($1, 'acc', 'bot', 'order.placed', '{}', $2)",
        vec![stray.as_str().into(), (later + 5).into()],
    )
    .await;
    assert_eq!(home(&a, "events", &stray).await, "events_default");

    let (x, y) = tokio::join!(
        a.ensure_partitions(now, plan),
        b.ensure_partitions(now, plan)
    );
    assert_eq!(x.unwrap() + y.unwrap(), 3 * 5);
    // From period 4 (made already) to 8: four new ones, period 7 with the
    // stray row moved in.
    let (x, y) = tokio::join!(
        a.ensure_partitions(later - 3 * W, plan),
        b.ensure_partitions(later - 3 * W, plan)
    );
    assert_eq!(x.unwrap() + y.unwrap(), 3 * 4);
    assert_eq!(
        home(&a, "events", &stray).await,
        partition_name("events", later, W)
    );
    for table in [EVENTS, DELIVERIES, ATTEMPTS] {
        assert_eq!(
            a.partitions(table).await.unwrap().len(),
            9,
            "{}",
            table.name
        );
    }
    a.close().await;
    b.close().await;
}

/// A database of the version before partitions, with rows in it (one
/// event with an Idempotency-Key, one with an id of another shape), then
/// opened by this version: the rows are all there, on PostgreSQL each in
/// its day's partition (the odd one in DEFAULT), and the key still
/// answers with its event, or a conflict for another body.
async fn upgrade_keeps_rows_and_keys(kind: Db) {
    let Some(db) = common::test_db(kind) else {
        return;
    };
    let backend = botwire::store::backend_for_url(&db.url).unwrap();
    let day = botwire::store::now_ms().div_euclid(DAY_MS) * DAY_MS - 3 * DAY_MS;
    let keyed = new_id_at("evt", day + 5_000);
    let dlv = new_id_at("dlv", day + 5_001);
    let att = new_id_at("att", day + 5_002);
    let b = backend.clone();
    let rows = (keyed.clone(), dlv.clone(), att.clone());
    tokio::task::spawn_blocking(move || {
        let mut c = b.open_writer().unwrap();
        c.batch(
            "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL,
                 applied_at BIGINT NOT NULL)",
        )
        .unwrap();
        for &(version, name, sql) in b.migrations().iter().filter(|m| m.0 < 17) {
            c.batch(sql).unwrap();
            c.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, 0)",
                &[version.into(), name.into()],
            )
            .unwrap();
        }
        let (keyed, dlv, att) = rows;
        c.batch(
            "INSERT INTO accounts (id, name, created_at) VALUES ('acc_1', 'Acme', 0);
             INSERT INTO bots (account_id, id, name, type, created_at, updated_at)
                 VALUES ('acc_1', 'shop', 'Shop', 'support', 0, 0)",
        )
        .unwrap();
        c.execute(
            "INSERT INTO events (id, account_id, bot_id, type, data, created_at,
                 idempotency_key, request_hash)
             VALUES ($1, 'acc_1', 'shop', 'order.paid', '{}', $2, 'k-1', 'h-1'),
                    ('evt_legacy', 'acc_1', 'shop', 'order.paid', '{}', $2, NULL, NULL)",
            &[keyed.as_str().into(), (day + 5_000).into()],
        )
        .unwrap();
        c.execute(
            "INSERT INTO deliveries (id, account_id, bot_id, endpoint_id, event_id, status,
                 attempts, created_at, updated_at)
             VALUES ($1, 'acc_1', 'shop', 'ep_1', $2, 'succeeded', 1, $3, $3)",
            &[
                dlv.as_str().into(),
                keyed.as_str().into(),
                (day + 5_001).into(),
            ],
        )
        .unwrap();
        c.execute(
            "INSERT INTO attempts (id, delivery_id, endpoint_id, account_id, started_at,
                 duration_ms, request_headers)
             VALUES ($1, $2, 'ep_1', 'acc_1', $3, 5, '{}')",
            &[
                att.as_str().into(),
                dlv.as_str().into(),
                (day + 5_002).into(),
            ],
        )
        .unwrap();
    })
    .await
    .unwrap();

    let store = Store::open_backend(backend).await.unwrap();
    assert_eq!(
        scalar(&store, "SELECT COUNT(*) FROM events", vec![]).await,
        2
    );
    if matches!(kind, Db::Postgres) {
        assert_eq!(
            home(&store, "events", &keyed).await,
            partition_name("events", day, DAY_MS)
        );
        assert_eq!(home(&store, "events", "evt_legacy").await, "events_default");
        assert_eq!(
            home(&store, "deliveries", &dlv).await,
            partition_name("deliveries", day, DAY_MS)
        );
        assert_eq!(
            home(&store, "attempts", &att).await,
            partition_name("attempts", day, DAY_MS)
        );
    }
    let publish = |hash: &str| {
        let e = EventRow::new("acc_1", "shop", "order.paid", None, "{}".into());
        store.publish_event(e, Some(("k-1".into(), hash.into())))
    };
    match publish("h-1").await.unwrap() {
        Published::Replayed(e) => assert_eq!(e.id, keyed),
        Published::Created(e) => panic!("created {} again", e.id),
    }
    assert!(matches!(
        publish("h-2").await,
        Err(botwire::store::StoreError::Conflict(_))
    ));
    store.close().await;
}

#[tokio::test]
async fn an_upgraded_database_keeps_its_rows_and_keys_postgres() {
    upgrade_keeps_rows_and_keys(Db::Postgres).await;
}

#[tokio::test]
async fn an_upgraded_database_keeps_its_rows_and_keys_sqlite() {
    upgrade_keeps_rows_and_keys(Db::Sqlite).await;
}

/// An Idempotency-Key lives exactly as long as its event: the prune that
/// removes the event removes the key, and the key can then be used again.
async fn keys_go_with_their_events(kind: Db) {
    let Some(app) = common::spawn_app(kind).await else {
        return;
    };
    app.create_bot("shop", "support").await;
    let store = app.store.clone();
    let clock = ManualClock::now();
    let publish = |hash: &str, at: i64| {
        let mut e = EventRow::new(&app.account_id, "shop", "order.paid", None, "{}".into());
        e.created_at = at;
        store.publish_event(e, Some(("k-1".into(), hash.into())))
    };
    let old = clock.now_ms() - 10 * W;
    let first = match publish("h-1", old).await.unwrap() {
        Published::Created(e) => e,
        Published::Replayed(e) => panic!("replayed {}", e.id),
    };
    assert!(matches!(
        publish("h-1", old).await.unwrap(),
        Published::Replayed(e) if e.id == first.id
    ));
    assert!(matches!(
        publish("h-2", old).await,
        Err(botwire::store::StoreError::Conflict(_))
    ));
    let policy = RetentionPolicy {
        events: Some(Duration::from_secs(300)),
        ..Default::default()
    };
    let pass = Pruner::new(store.clone(), policy, Arc::new(clock.clone()))
        .prune_once()
        .await
        .unwrap();
    assert_eq!(pass.removed.get(PruneKind::Events), 1);
    assert_eq!(
        scalar(&store, "SELECT COUNT(*) FROM event_keys", vec![]).await,
        0
    );
    assert!(matches!(
        publish("h-2", clock.now_ms()).await.unwrap(),
        Published::Created(e) if e.id != first.id
    ));

    // Deleting the bot takes its keys along with its events.
    store.delete_bot(&app.account_id, "shop").await.unwrap();
    assert_eq!(
        scalar(&store, "SELECT COUNT(*) FROM event_keys", vec![]).await,
        0
    );
}

#[tokio::test]
async fn idempotency_keys_go_with_their_events_postgres() {
    keys_go_with_their_events(Db::Postgres).await;
}

#[tokio::test]
async fn idempotency_keys_go_with_their_events_sqlite() {
    keys_go_with_their_events(Db::Sqlite).await;
}
