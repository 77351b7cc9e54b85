//! Several nodes on one PostgreSQL database (docs/SCALING.md).
//!
//! * A key revoked through one node is refused by every other node within
//!   the key cache's TTL (1 s): secret and publishable keys alike.
//! * What stays per node, shown with its multiplier: the visitor limit
//!   (two API nodes let one visitor send twice the messages a minute) and
//!   the circuit breaker (two worker nodes probe a dead endpoint about
//!   twice as often as one).

use crate::common;

use axum::Router;
use axum::http::StatusCode;
use botwire::delivery::schedule::RetrySchedule;
use botwire::delivery::ssrf::AllowList;
use botwire::delivery::{Delivery, Engine, Settings};
use botwire::store::Store;
use common::{App, Db, spawn_app};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The longest a revocation may take to reach another node: the cache's
/// one-second TTL plus room for a loaded test machine.
const REVOCATION_BOUND: Duration = Duration::from_millis(1_200);

/// Polls `status` every 20 ms until it answers 401; answers how long that
/// took from `since`. Until then it must answer `alive` (the key is known).
async fn time_until_refused<F, Fut>(since: Instant, alive: u16, mut status: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    loop {
        let s = status().await;
        if s == 401 {
            return since.elapsed();
        }
        assert_eq!(s, alive, "before it is refused, the key is recognised");
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "the revoked key still works after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get_bots(app: &App, base: &str, key: &str) -> u16 {
    app.client
        .get(format!("{base}/v1/bots"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn chat(app: &App, base: &str, key: &str, visitor: &str) -> reqwest::Response {
    app.client
        .post(format!("{base}/v1/bots/elipackage/chat"))
        .bearer_auth(key)
        .header("origin", "https://shop.example")
        .json(&json!({"contact": {"id": visitor}, "text": "hi"}))
        .send()
        .await
        .unwrap()
}

async fn create_key(app: &App, body: Value) -> (String, String) {
    let r = app.admin("POST", "/v1/keys", Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    (
        r.body["id"].as_str().unwrap().to_owned(),
        r.body["key"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_one_node_is_refused_on_every_node_within_a_second() {
    let Some(app) = spawn_app(Db::Postgres).await else {
        return;
    };
    let _timed = common::timed().await;
    let node_b = app.second_node().await;
    app.import_example("elipackage").await;

    // A secret key, in use on node B (so B has it cached), revoked on A.
    let (id, key) = create_key(&app, json!({"name": "ci"})).await;
    assert_eq!(get_bots(&app, &node_b, &key).await, 200);
    assert_eq!(get_bots(&app, &node_b, &key).await, 200);
    let r = app.admin("DELETE", &format!("/v1/keys/{id}"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let revoked = Instant::now();
    assert_eq!(get_bots(&app, &app.base, &key).await, 401, "at once on A");
    let took = time_until_refused(revoked, 200, || get_bots(&app, &node_b, &key)).await;
    eprintln!("secret key refused on the other node {took:?} after its revocation");
    assert!(took <= REVOCATION_BOUND, "{took:?}");

    // A publishable key, chatting through node B, revoked on A. Polled with
    // a request that authenticates it and then refuses it for not being a
    // chat (403) rather than with chats, which the visitor limit counts.
    let (id, key) = create_key(
        &app,
        json!({"name": "site", "kind": "publishable", "bot_id": "elipackage",
               "origins": ["https://shop.example"]}),
    )
    .await;
    let visitor = "v_0123456789abcdef";
    let r = chat(&app, &node_b, &key, visitor).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert_eq!(
        get_bots(&app, &node_b, &key).await,
        403,
        "known, not a chat"
    );
    let r = app.admin("DELETE", &format!("/v1/keys/{id}"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let revoked = Instant::now();
    let took = time_until_refused(revoked, 403, || get_bots(&app, &node_b, &key)).await;
    let r = chat(&app, &node_b, &key, visitor).await;
    assert_eq!(r.status(), 401, "and it no longer chats");
    eprintln!("publishable key refused on the other node {took:?} after its revocation");
    assert!(took <= REVOCATION_BOUND, "{took:?}");
}

/// The visitor limit counts per node: behind a balancer spreading requests
/// over N API nodes one visitor may send up to N × 30 messages a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_visitor_limit_counts_per_node() {
    let Some(app) = spawn_app(Db::Postgres).await else {
        return;
    };
    let node_b = app.second_node().await;
    app.import_example("elipackage").await;
    let (_, key) = create_key(
        &app,
        json!({"name": "site", "kind": "publishable", "bot_id": "elipackage",
               "origins": ["https://shop.example"]}),
    )
    .await;
    let visitor = "v_0123456789abcdef";
    let mut accepted = [0u32; 2];
    for (i, base) in [&app.base, &node_b].into_iter().enumerate() {
        loop {
            let r = chat(&app, base, &key, visitor).await;
            if r.status() == StatusCode::TOO_MANY_REQUESTS {
                break;
            }
            assert_eq!(r.status(), 200, "{:?}", r.text().await);
            accepted[i] += 1;
            assert!(accepted[i] <= 30, "node {i} did not limit");
        }
    }
    assert_eq!(
        accepted,
        [30, 30],
        "each node allows the visitor its own 30 messages a minute"
    );
}

/// A loopback endpoint that is down: answers every request 503 and counts.
async fn dead_endpoint() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = Router::new().fallback(move || {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            (StatusCode::SERVICE_UNAVAILABLE, "down")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

/// Probe delay of the circuit in [`probes_with`]: every retry delay.
const PROBE_DELAY: Duration = Duration::from_millis(200);
/// How long probes are counted once the circuits are open.
const WINDOW: Duration = Duration::from_secs(3);

/// Requests a dead endpoint gets during [`WINDOW`] from `nodes` worker
/// nodes once their circuits are open; `None` when PostgreSQL is not set.
async fn probes_with(nodes: usize) -> Option<usize> {
    let app = spawn_app(Db::Postgres).await?;
    let (url, hits) = dead_endpoint().await;
    app.create_bot("eli", "data_collection").await;
    let r = app
        .admin("POST", "/v1/bots/eli/endpoints", Some(json!({"url": url})))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    // Written by this API-only node for any worker to claim.
    for _ in 0..40 {
        let r = app
            .admin(
                "POST",
                "/v1/bots/eli/events",
                Some(json!({"type": "order.paid", "data": {"n": 1}})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let schedule = vec!["200ms"; 30].join(",");
    let mut engines = Vec::new();
    for _ in 0..nodes {
        let settings = Settings {
            allow: AllowList::parse(["127.0.0.0/8"]).unwrap(),
            timeout: Duration::from_secs(5),
            schedule: RetrySchedule::parse(&schedule).unwrap(),
            disable_after: Duration::from_secs(3600),
            break_after: 3,
            per_endpoint: 2,
            poll: Some(Duration::from_millis(50)),
            ..Settings::default()
        };
        let store = Store::open(app.db_url()).await.unwrap();
        engines.push(Engine::start(store, Delivery::new(settings).unwrap()));
    }
    // Until every node's circuit has opened (3 failures each), then count.
    let started = Instant::now();
    while hits.load(Ordering::SeqCst) < 3 * nodes {
        assert!(started.elapsed() < Duration::from_secs(10), "no attempts");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = hits.load(Ordering::SeqCst);
    tokio::time::sleep(WINDOW).await;
    let probes = hits.load(Ordering::SeqCst) - before;
    for e in &engines {
        e.abort();
    }
    Some(probes)
}

/// The circuit breaker is per node: once each node's circuit for a dead
/// endpoint is open, each node probes it once per probe delay, so N worker
/// nodes send it about N× the probes of one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_worker_node_probes_a_dead_endpoint_on_its_own() {
    let _timed = common::timed().await;
    let Some(one) = probes_with(1).await else {
        return;
    };
    let two = probes_with(2).await.unwrap();
    let bound = (WINDOW.as_millis() / PROBE_DELAY.as_millis()) as usize + 1;
    eprintln!(
        "probes of a dead endpoint in {WINDOW:?} with a {PROBE_DELAY:?} probe delay: \
         one worker node {one}, two worker nodes {two} (one node at most {bound})"
    );
    assert!(
        (1..=bound).contains(&one),
        "one node: one probe per delay at most, {one}"
    );
    assert!(
        two > one && two <= 2 * bound,
        "two nodes: each probes on its own, {two} (one node {one})"
    );
    assert!(
        two as f64 >= 1.5 * one as f64,
        "two nodes send about twice the probes of one: {two} vs {one}"
    );
}
