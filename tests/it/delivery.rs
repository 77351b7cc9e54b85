//! Event delivery end to end: a real server, store and delivery engine, and
//! a real HTTP receiver on 127.0.0.1 whose answers each test chooses.
//!
//! The engine runs steppable (no claim loop): the hot path delivers first
//! attempts at once, and tests drive retries with `run_due_once` at times
//! of their choosing on a manual clock, so no test waits out a delay.
//! Signatures are checked with the `standardwebhooks` crate as an
//! independent oracle.

use crate::common;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use botwire::delivery::clock::ManualClock;
use botwire::delivery::schedule::RetrySchedule;
use botwire::delivery::ssrf::AllowList;
use botwire::delivery::{Delivery, Engine, Settings};
use botwire::store::PageRequest;
use botwire::store::deliveries::DeliveryFilter;
use common::{App, Db, spawn_app_with};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

// ---------------------------------------------------------------- receiver

#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).unwrap().to_str().unwrap()
    }
}

#[derive(Default)]
struct ReceiverState {
    got: Mutex<Vec<Received>>,
    /// Status per path (default 200).
    status: Mutex<HashMap<String, u16>>,
    /// Delay before answering, per path.
    delay: Mutex<HashMap<String, Duration>>,
    /// A `Retry-After` to answer with, per path.
    retry_after: Mutex<HashMap<String, String>>,
}

/// An HTTP receiver on 127.0.0.1:0.
#[derive(Clone)]
struct Receiver {
    base: String,
    state: Arc<ReceiverState>,
}

async fn receive(
    State(s): State<Arc<ReceiverState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = uri.path().to_owned();
    s.got.lock().unwrap().push(Received {
        path: path.clone(),
        headers,
        body,
    });
    let delay = s.delay.lock().unwrap().get(&path).copied();
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let status = s.status.lock().unwrap().get(&path).copied().unwrap_or(200);
    let status = StatusCode::from_u16(status).unwrap();
    match s.retry_after.lock().unwrap().get(&path) {
        Some(ra) => (status, [("retry-after", ra.clone())], "thanks").into_response(),
        None => (status, "thanks").into_response(),
    }
}

impl Receiver {
    async fn start() -> Self {
        let state = Arc::new(ReceiverState::default());
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, state }
    }
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
    fn answer(&self, path: &str, status: u16) {
        self.state
            .status
            .lock()
            .unwrap()
            .insert(path.into(), status);
    }
    fn delay(&self, path: &str, d: Duration) {
        self.state.delay.lock().unwrap().insert(path.into(), d);
    }
    fn at(&self, path: &str) -> Vec<Received> {
        self.state
            .got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

// ------------------------------------------------------------------- world

struct World {
    app: App,
    engine: Engine,
    clock: ManualClock,
    rx: Receiver,
}

fn settings(clock: &ManualClock, schedule: &str) -> Settings {
    Settings {
        allow: AllowList::parse(["127.0.0.0/8"]).unwrap(),
        timeout: Duration::from_secs(5),
        schedule: RetrySchedule::parse(schedule).unwrap(),
        disable_after: Duration::from_secs(3600),
        poll: None,
        clock: Arc::new(clock.clone()),
        ..Settings::default()
    }
}

async fn world_with(kind: Db, f: impl FnOnce(&mut Settings)) -> Option<World> {
    let clock = ManualClock::now();
    let mut s = settings(&clock, "10s,20s");
    f(&mut s);
    let delivery = Delivery::new(s).unwrap();
    let app = spawn_app_with(kind, delivery.clone()).await?;
    let engine = Engine::start(app.store.clone(), delivery);
    let rx = Receiver::start().await;
    Some(World {
        app,
        engine,
        clock,
        rx,
    })
}

async fn world(kind: Db) -> Option<World> {
    world_with(kind, |_| {}).await
}

impl World {
    async fn endpoint(&self, bot: &str, body: Value) -> Value {
        let r = self
            .app
            .admin("POST", &format!("/v1/bots/{bot}/endpoints"), Some(body))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body
    }
    async fn secret(&self, endpoint: &Value) -> String {
        let r = self
            .app
            .admin(
                "GET",
                &format!("/v1/endpoints/{}/secret", endpoint["id"].as_str().unwrap()),
                None,
            )
            .await;
        r.body["secret"].as_str().unwrap().to_owned()
    }
    async fn publish(&self, bot: &str, event_type: &str) -> String {
        let r = self
            .app
            .admin(
                "POST",
                &format!("/v1/bots/{bot}/events"),
                Some(json!({"type": event_type, "data": {"n": 1}})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["id"].as_str().unwrap().to_owned()
    }
    async fn chat(&self, bot: &str, text: &str) {
        let r = self
            .app
            .admin(
                "POST",
                &format!("/v1/bots/{bot}/chat"),
                Some(json!({"contact": {"phone": "+525500000000"}, "text": text})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    async fn import(&self, file: &str) {
        let text = std::fs::read_to_string(file).unwrap();
        let bot = botwire::runtime::bots::parse_bot_file(&text, true).unwrap();
        botwire::runtime::bots::import(&self.app.store, &self.app.account_id, &bot)
            .await
            .unwrap();
    }
    async fn deliveries_of(&self, endpoint: &Value) -> Vec<Value> {
        let r = self
            .app
            .admin(
                "GET",
                &format!(
                    "/v1/endpoints/{}/deliveries",
                    endpoint["id"].as_str().unwrap()
                ),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["data"].as_array().unwrap().clone()
    }
    async fn get(&self, path: &str) -> Value {
        let r = self.app.admin("GET", path, None).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        r.body
    }
}

/// Verifies a received request with the `standardwebhooks` crate.
fn oracle_verifies(secret: &str, r: &Received) -> bool {
    let wh = standardwebhooks::Webhook::new(secret).unwrap();
    let mut h = HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        h.insert(name, r.header(name).parse().unwrap());
    }
    wh.verify(&r.body, &h).is_ok()
}

macro_rules! both {
    ($name:ident, $sqlite:ident, $postgres:ident) => {
        #[tokio::test]
        async fn $sqlite() {
            $name(Db::Sqlite).await;
        }
        #[tokio::test]
        async fn $postgres() {
            $name(Db::Postgres).await;
        }
    };
}

// ------------------------------------------------------------------- tests

both!(
    chat_events_reach_every_format_signed,
    chat_events_reach_every_format_signed_sqlite,
    chat_events_reach_every_format_signed_postgres
);

async fn chat_events_reach_every_format_signed(kind: Db) {
    let Some(w) = world(kind).await else { return };
    w.import("examples/elipackage.yaml").await;
    w.import("examples/quote.yaml").await;
    let standard = w
        .endpoint(
            "elipackage",
            json!({"url": w.rx.url("/standard"), "headers": {"X-Team": "crm"}, "body": {"source": "botwire-test"}}),
        )
        .await;
    let bot9 = w
        .endpoint(
            "elipackage",
            json!({"url": w.rx.url("/bot9"), "format": "bot9"}),
        )
        .await;
    let flat = w
        .endpoint(
            "elipackage",
            json!({"url": w.rx.url("/flat"), "format": "flat"}),
        )
        .await;
    let filtered = w
        .endpoint(
            "elipackage",
            json!({"url": w.rx.url("/options"), "events": ["option.selected"]}),
        )
        .await;
    let quotes = w
        .endpoint("quote", json!({"url": w.rx.url("/quotes")}))
        .await;

    w.chat("elipackage", "Hi").await;
    w.chat("elipackage", "John Doe").await;
    w.chat("elipackage", "1").await;
    for text in ["Hi", "Small box", "2", "No", "Standard"] {
        w.chat("quote", text).await;
    }
    let custom = w.publish("elipackage", "order.paid").await;
    w.engine.idle().await;

    let types = |rs: &[Received], key: &str| -> Vec<String> {
        rs.iter()
            .map(|r| r.json()[key].as_str().unwrap().to_owned())
            .collect()
    };
    let std_got = w.rx.at("/standard");
    let mut seen = types(&std_got, "type");
    seen.sort();
    seen.dedup();
    for t in [
        "conversation.started",
        "message.received",
        "response.received",
        "option.selected",
        "conversation.completed",
        "order.paid",
    ] {
        assert!(seen.contains(&t.to_owned()), "{t} missing from {seen:?}");
    }
    let quote_types = types(&w.rx.at("/quotes"), "type");
    for t in ["datapoint.collected", "quote.generated"] {
        assert!(
            quote_types.contains(&t.to_owned()),
            "{t} missing from {quote_types:?}"
        );
    }

    // Signed, verifiable by an independent library; webhook-id is the event id.
    for (ep, path) in [(&standard, "/standard"), (&bot9, "/bot9"), (&flat, "/flat")] {
        let secret = w.secret(ep).await;
        let got = w.rx.at(path);
        assert_eq!(got.len(), std_got.len(), "{path} got every event");
        for r in &got {
            assert!(oracle_verifies(&secret, r), "{path}: signature");
            assert!(r.header("webhook-id").starts_with("evt_"));
            assert!(r.header("user-agent").starts_with("botwire/"));
        }
    }
    let custom_req = std_got
        .iter()
        .find(|r| r.header("webhook-id") == custom)
        .expect("custom event delivered");
    assert_eq!(custom_req.header("x-team"), "crm", "custom header sent");
    assert_eq!(
        custom_req.json()["source"],
        "botwire-test",
        "body param merged"
    );
    assert_eq!(custom_req.json()["data"], json!({"n": 1}));

    // bot9: camelCase event names, chatbotId.
    let b9 = w.rx.at("/bot9");
    let msg = b9
        .iter()
        .map(Received::json)
        .find(|v| v["event"] == "messageReceived")
        .unwrap();
    assert_eq!(msg["data"]["chatbotId"], "elipackage");
    assert_eq!(msg["data"]["sender"], "+525500000000");
    assert!(msg["data"]["message"].is_string());

    // flat: seed 003's keys.
    let fl: Vec<Value> = w.rx.at("/flat").iter().map(Received::json).collect();
    let response = fl
        .iter()
        .find(|v| v["event"] == "response.received")
        .unwrap();
    assert_eq!(response["label"], "Welcome Message");
    assert_eq!(response["response"], "John Doe");
    assert_eq!(response["phoneNumber"], "+525500000000");
    let date = response["date"].as_str().unwrap();
    assert!(date.ends_with('Z') && date.len() == 24, "{date}");
    let option = fl.iter().find(|v| v["event"] == "option.selected").unwrap();
    assert_eq!(option["option"], "One month");
    assert_eq!(option["keyword"], 1);
    assert_eq!(option["label"], "Membership");

    // The filter held.
    let only = types(&w.rx.at("/options"), "type");
    assert_eq!(only, ["option.selected"]);

    // The attempt log.
    let ds = w.deliveries_of(&standard).await;
    assert_eq!(ds.len(), std_got.len());
    assert!(
        ds.iter()
            .all(|d| d["status"] == "succeeded" && d["attempts"] == 1)
    );
    let attempts = w
        .get(&format!(
            "/v1/deliveries/{}/attempts",
            ds[0]["id"].as_str().unwrap()
        ))
        .await;
    let a = &attempts["data"][0];
    assert_eq!(a["response_status"], 200);
    assert_eq!(a["response_body"], "thanks");
    assert_eq!(a["node"].as_str(), Some(w.engine.node()), "{a}");
    assert!(a["error_kind"].is_null());
    assert!(
        a["request_headers"]["webhook-signature"]
            .as_str()
            .unwrap()
            .starts_with("v1,")
    );
    let per_event = w.get(&format!("/v1/events/{custom}/deliveries")).await;
    assert_eq!(
        per_event["data"].as_array().unwrap().len(),
        3,
        "standard, bot9 and flat wanted order.paid; the filtered one did not"
    );
    assert_eq!(w.deliveries_of(&quotes).await.len(), quote_types.len());
    assert_eq!(w.deliveries_of(&filtered).await.len(), 1);
}

both!(
    retries_follow_the_schedule,
    retries_follow_the_schedule_sqlite,
    retries_follow_the_schedule_postgres
);

/// After `break_after` failed attempts in a row an endpoint's circuit
/// opens: its other deliveries wait in the database unattempted and no
/// claim takes them; after the retry schedule's first delay one probe goes
/// out, and once it succeeds the rest follow. (The probe delay runs on the
/// real clock, so this test waits one second.)
async fn a_failing_endpoint_is_probed_then_drained(kind: Db) {
    let Some(w) = world_with(kind, |s| {
        s.schedule = RetrySchedule::parse("1s,1s,1s").unwrap();
        s.break_after = 5;
        s.per_endpoint = 2;
    })
    .await
    else {
        return;
    };
    w.app.create_bot("eli", "data_collection").await;
    let ep = w.endpoint("eli", json!({"url": w.rx.url("/down")})).await;
    w.rx.answer("/down", 503);
    for _ in 0..20 {
        w.publish("eli", "order.paid").await;
    }
    w.engine.idle().await;
    let sent = w.rx.at("/down").len();
    assert!(
        (5..=7).contains(&sent),
        "5 failures open the circuit, with at most 2 in flight: {sent} requests"
    );
    let ds = w.deliveries_of(&ep).await;
    assert_eq!(ds.len(), 20);
    assert_eq!(
        ds.iter().filter(|d| d["attempts"] == 0).count(),
        20 - sent,
        "the others wait unattempted"
    );
    // Far past every retry delay by the scheduling clock: still nothing is
    // claimed while the circuit waits for its probe.
    let far = w.clock.advance(0) + 3_600_000;
    assert_eq!(w.engine.run_due_once(far).await.unwrap(), 0);

    w.rx.answer("/down", 200);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(w.engine.run_due_once(far).await.unwrap(), 1, "one probe");
    assert_eq!(
        w.engine.run_due_once(far).await.unwrap(),
        19,
        "the probe succeeded: the circuit is closed and the rest go out"
    );
    let ds = w.deliveries_of(&ep).await;
    assert!(ds.iter().all(|d| d["status"] == "succeeded"), "{ds:?}");
    assert_eq!(w.rx.at("/down").len(), sent + 20);
}

both!(
    a_failing_endpoint_is_probed_then_drained,
    a_failing_endpoint_is_probed_then_drained_sqlite,
    a_failing_endpoint_is_probed_then_drained_postgres
);

async fn retries_follow_the_schedule(kind: Db) {
    let Some(w) = world(kind).await else { return };
    w.app.create_bot("eli", "data_collection").await;
    let ep = w.endpoint("eli", json!({"url": w.rx.url("/down")})).await;
    w.rx.answer("/down", 500);
    let t0 = w.clock.advance(0);
    w.publish("eli", "order.paid").await;
    w.engine.idle().await;

    let d = &w.deliveries_of(&ep).await[0];
    assert_eq!(d["status"], "failed");
    assert_eq!(d["attempts"], 1);
    let id = d["id"].as_str().unwrap().to_owned();
    let next = |d: &Value| {
        chrono::DateTime::parse_from_rfc3339(d["next_attempt_at"].as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    // First delay 10 s ±20 %.
    let due = next(d);
    assert!((t0 + 8_000..=t0 + 12_000).contains(&due), "{}", due - t0);
    assert_eq!(
        w.engine.run_due_once(t0 + 7_900).await.unwrap(),
        0,
        "not yet due"
    );
    w.clock.set(due);
    assert_eq!(w.engine.run_due_once(due).await.unwrap(), 1);
    let d = w.get(&format!("/v1/deliveries/{id}")).await;
    assert_eq!(d["attempts"], 2);
    // Second delay 20 s ±20 %.
    let due2 = next(&d);
    assert!(
        (due + 16_000..=due + 24_000).contains(&due2),
        "{}",
        due2 - due
    );
    w.clock.set(due2);
    assert_eq!(w.engine.run_due_once(due2).await.unwrap(), 1);
    let d = w.get(&format!("/v1/deliveries/{id}")).await;
    assert_eq!(d["status"], "dead", "out of attempts: {d}");
    assert_eq!(d["attempts"], 3);
    assert!(d["last_error"].as_str().unwrap().contains("500"));
    assert_eq!(w.engine.run_due_once(due2 + 86_400_000).await.unwrap(), 0);
    assert_eq!(w.rx.at("/down").len(), 3);
    // Every try carried the same webhook-id.
    let ids: Vec<_> =
        w.rx.at("/down")
            .iter()
            .map(|r| r.header("webhook-id").to_owned())
            .collect();
    assert!(ids.windows(2).all(|p| p[0] == p[1]));

    // Health reflects it.
    let epid = ep["id"].as_str().unwrap();
    let h = w.get(&format!("/v1/endpoints/{epid}/health")).await;
    assert_eq!(h["state"], "failing");
    assert_eq!(h["consecutive_failures"], 3);
    assert_eq!(h["success_rate_last_100"], 0.0);
    assert_eq!(h["last_error"]["kind"], "status");
    assert_eq!(h["last_error"]["status"], 500);
    assert!(h["latency"]["p99_ms"].is_number());

    // A manual retry sends now, once.
    w.rx.answer("/down", 200);
    let r = w
        .app
        .admin("POST", &format!("/v1/deliveries/{id}/retry"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["success"], true);
    assert_eq!(r.body["status"], 200);
    let d = w.get(&format!("/v1/deliveries/{id}")).await;
    assert_eq!(d["status"], "succeeded");
    let h = w.get(&format!("/v1/endpoints/{epid}/health")).await;
    assert_eq!(h["state"], "healthy", "{h}");
    assert_eq!(h["consecutive_failures"], 0);
    let attempts = w.get(&format!("/v1/deliveries/{id}/attempts")).await;
    let attempts = attempts["data"].as_array().unwrap();
    assert_eq!(attempts.len(), 4);
    // Newest first: the manual retry was the API's own send; the three
    // before it were the engine's.
    assert_eq!(attempts[0]["node"], "api");
    for a in &attempts[1..] {
        assert_eq!(a["node"].as_str(), Some(w.engine.node()), "{a}");
    }
}

#[tokio::test]
async fn retry_after_is_honoured_within_bounds() {
    let w = world(Db::Sqlite).await.unwrap();
    w.app.create_bot("eli", "data_collection").await;
    let ep = w.endpoint("eli", json!({"url": w.rx.url("/busy")})).await;
    w.rx.answer("/busy", 429);
    // The receiver asks for two minutes; the schedule says 10 s.
    w.rx.state
        .retry_after
        .lock()
        .unwrap()
        .insert("/busy".into(), "120".into());
    let t0 = w.clock.advance(0);
    w.publish("eli", "order.paid").await;
    w.engine.idle().await;
    let d = &w.deliveries_of(&ep).await[0];
    assert_eq!(d["status"], "failed");
    let due = chrono::DateTime::parse_from_rfc3339(d["next_attempt_at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    assert!((t0 + 120_000..t0 + 121_000).contains(&due), "{}", due - t0);
    // Absurd requests are capped at a day.
    w.rx.state
        .retry_after
        .lock()
        .unwrap()
        .insert("/busy".into(), "99999999".into());
    w.clock.set(due);
    let t = due;
    assert_eq!(w.engine.run_due_once(t).await.unwrap(), 1);
    let d = &w.deliveries_of(&ep).await[0];
    let due2 = chrono::DateTime::parse_from_rfc3339(d["next_attempt_at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    assert!(due2 - due <= 86_400_000 + 1_000, "{}", due2 - due);
}

#[tokio::test]
async fn gone_disables_at_once_and_endpoint_disabled_is_sent() {
    let w = world(Db::Sqlite).await.unwrap();
    w.app.create_bot("eli", "data_collection").await;
    w.app.create_bot("ops", "support").await;
    let gone = w.endpoint("eli", json!({"url": w.rx.url("/gone")})).await;
    // Another bot's endpoint that asks for endpoint.disabled by name.
    w.endpoint(
        "ops",
        json!({"url": w.rx.url("/ops"), "events": ["endpoint.disabled"]}),
    )
    .await;
    w.rx.answer("/gone", 410);
    w.publish("eli", "order.paid").await;
    w.engine.idle().await;

    let id = gone["id"].as_str().unwrap();
    let e = w.get(&format!("/v1/endpoints/{id}")).await;
    assert_eq!(e["enabled"], false);
    assert!(e["disabled_reason"].as_str().unwrap().contains("410"));
    let ops = w.rx.at("/ops");
    assert_eq!(ops.len(), 1);
    let v = ops[0].json();
    assert_eq!(v["type"], "endpoint.disabled");
    assert_eq!(v["data"]["endpoint_id"], id);
    assert_eq!(v["data"]["url"], w.rx.url("/gone"));
    assert!(v["data"]["reason"].as_str().unwrap().contains("410"));
    let h = w.get(&format!("/v1/endpoints/{id}/health")).await;
    assert_eq!(h["state"], "disabled");

    // A disabled endpoint gets nothing, and nothing is queued for it.
    w.publish("eli", "order.paid").await;
    w.engine.idle().await;
    assert_eq!(w.rx.at("/gone").len(), 1);
    assert_eq!(w.deliveries_of(&gone).await.len(), 1);

    // Re-enabled, it receives again.
    w.rx.answer("/gone", 200);
    let r = w
        .app
        .admin(
            "PATCH",
            &format!("/v1/endpoints/{id}"),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body["disabled_reason"].is_null());
    w.publish("eli", "order.paid").await;
    w.engine.idle().await;
    assert_eq!(w.rx.at("/gone").len(), 2);
}

both!(
    failing_endpoints_are_disabled_after_the_span,
    failing_endpoints_are_disabled_after_the_span_sqlite,
    failing_endpoints_are_disabled_after_the_span_postgres
);

async fn failing_endpoints_are_disabled_after_the_span(kind: Db) {
    let Some(w) = world_with(kind, |s| {
        s.schedule = RetrySchedule::parse("1m,1m,1m,1m").unwrap();
    })
    .await
    else {
        return;
    };
    w.app.create_bot("eli", "data_collection").await;
    let ep = w.endpoint("eli", json!({"url": w.rx.url("/flaky")})).await;
    w.endpoint(
        "eli",
        json!({"url": w.rx.url("/ops"), "events": ["endpoint.disabled"]}),
    )
    .await;
    w.rx.answer("/flaky", 502);
    w.publish("eli", "order.paid").await;
    w.engine.idle().await;
    let id = ep["id"].as_str().unwrap();
    // Half an hour later: still failing, still enabled.
    let t = w.clock.advance(30 * 60_000);
    assert_eq!(w.engine.run_due_once(t).await.unwrap(), 1);
    assert_eq!(w.get(&format!("/v1/endpoints/{id}")).await["enabled"], true);
    // Past the hour since the first failure: disabled, and said so.
    let t = w.clock.advance(31 * 60_000);
    assert_eq!(w.engine.run_due_once(t).await.unwrap(), 1);
    let e = w.get(&format!("/v1/endpoints/{id}")).await;
    assert_eq!(e["enabled"], false, "{e}");
    assert!(
        e["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("no successful delivery"),
        "{e}"
    );
    let ops = w.rx.at("/ops");
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].json()["data"]["endpoint_id"], id);
    // Held: its delivery is not claimed while it is disabled.
    assert_eq!(w.engine.run_due_once(t + 3_600_000).await.unwrap(), 0);
}

#[tokio::test]
async fn recover_requeues_failed_and_dead_deliveries() {
    let w = world_with(Db::Sqlite, |s| {
        s.schedule = RetrySchedule::parse("1s").unwrap();
    })
    .await
    .unwrap();
    w.app.create_bot("eli", "data_collection").await;
    let ep = w.endpoint("eli", json!({"url": w.rx.url("/r")})).await;
    w.rx.answer("/r", 500);
    let before = botwire::api::time(botwire::store::now_ms() - 1000);
    w.publish("eli", "order.paid").await;
    w.publish("eli", "order.paid").await;
    w.engine.idle().await;
    let t = w.clock.advance(5_000);
    assert_eq!(w.engine.run_due_once(t).await.unwrap(), 2);
    assert!(
        w.deliveries_of(&ep)
            .await
            .iter()
            .all(|d| d["status"] == "dead")
    );

    w.rx.answer("/r", 200);
    let id = ep["id"].as_str().unwrap();
    let r = w
        .app
        .admin(
            "POST",
            &format!("/v1/endpoints/{id}/recover"),
            Some(json!({"since": before})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["requeued"], 2);
    assert_eq!(
        w.engine
            .run_due_once(botwire::store::now_ms())
            .await
            .unwrap(),
        2
    );
    assert!(
        w.deliveries_of(&ep)
            .await
            .iter()
            .all(|d| d["status"] == "succeeded")
    );

    let r = w
        .app
        .admin(
            "POST",
            &format!("/v1/endpoints/{id}/recover"),
            Some(json!({"since": "yesterday"})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("RFC 3339")
    );
}

#[tokio::test]
async fn test_ping_and_secret_rotation() {
    let w = world(Db::Sqlite).await.unwrap();
    w.app.create_bot("eli", "data_collection").await;
    let ep = w.endpoint("eli", json!({"url": w.rx.url("/ping")})).await;
    let id = ep["id"].as_str().unwrap();
    let old = w.secret(&ep).await;
    assert!(old.starts_with("whsec_"));

    let r = w
        .app
        .admin("POST", &format!("/v1/endpoints/{id}/test"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["success"], true);
    assert_eq!(r.body["status"], 200);
    assert_eq!(r.body["body"], "thanks");
    assert!(r.body["latency_ms"].is_number());
    let got = w.rx.at("/ping");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["type"], "webhook.test");
    assert!(oracle_verifies(&old, &got[0]));

    let r = w
        .app
        .admin("POST", &format!("/v1/endpoints/{id}/secret/rotate"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let new = r.body["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(r.body["previous_expires_at"].is_string());
    assert_eq!(w.secret(&ep).await, new);

    w.rx.answer("/ping", 503);
    let r = w
        .app
        .admin("POST", &format!("/v1/endpoints/{id}/test"), None)
        .await;
    assert_eq!(r.body["success"], false);
    assert_eq!(r.body["status"], 503);
    assert_eq!(r.body["error_kind"], "status");
    let got = w.rx.at("/ping");
    let sig = got[1].header("webhook-signature");
    assert_eq!(sig.split(' ').count(), 2, "both secrets sign: {sig}");
    assert!(oracle_verifies(&new, &got[1]), "the new secret verifies");
    assert!(
        oracle_verifies(&old, &got[1]),
        "the old secret still verifies"
    );
    // A failed ping is not retried.
    assert_eq!(
        w.engine
            .run_due_once(w.clock.advance(86_400_000))
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn the_ssrf_guard_blocks_loopback_without_the_allowlist() {
    let clock = ManualClock::now();
    let mut s = settings(&clock, "10s");
    s.allow = AllowList::empty();
    let delivery = Delivery::new(s).unwrap();
    let app = spawn_app_with(Db::Sqlite, delivery.clone()).await.unwrap();
    let engine = Engine::start(app.store.clone(), delivery);
    let rx = Receiver::start().await;
    app.create_bot("eli", "data_collection").await;
    let port = rx.base.rsplit(':').next().unwrap().to_owned();
    let urls = [
        rx.url("/x"),
        format!("http://0x7f000001:{port}/x"),
        format!("http://2130706433:{port}/x"),
        format!("http://[::ffff:127.0.0.1]:{port}/x"),
        format!("http://localhost:{port}/x"),
        "http://169.254.169.254/latest/meta-data".to_owned(),
    ];
    let mut ids = Vec::new();
    for url in &urls {
        let r = app
            .admin("POST", "/v1/bots/eli/endpoints", Some(json!({"url": url})))
            .await;
        assert_eq!(r.status, 201, "{url}: {}", r.body);
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let r = app
        .admin(
            "POST",
            "/v1/bots/eli/events",
            Some(json!({"type": "order.paid", "data": {}})),
        )
        .await;
    assert_eq!(r.status, 201);
    engine.idle().await;
    assert!(rx.at("/x").is_empty(), "nothing reached the receiver");
    for (url, id) in urls.iter().zip(&ids) {
        let ds = app
            .store
            .list_deliveries(
                &app.account_id,
                DeliveryFilter {
                    endpoint_id: Some(id.clone()),
                    ..Default::default()
                },
                PageRequest {
                    limit: 10,
                    after: None,
                },
            )
            .await
            .unwrap();
        let d = &ds.items[0];
        let attempts = app
            .admin("GET", &format!("/v1/deliveries/{}/attempts", d.id), None)
            .await;
        let a = &attempts.body["data"][0];
        assert_eq!(a["error_kind"], "blocked", "{url}: {a}");
        assert!(a["response_status"].is_null());
    }
}

#[tokio::test]
async fn a_worker_dropped_mid_delivery_leaves_it_to_another() {
    let clock = ManualClock::now();
    let mut s = settings(&clock, "10s");
    s.lease = Duration::from_secs(60);
    let delivery = Delivery::new(s).unwrap();
    let app = spawn_app_with(Db::Sqlite, delivery.clone()).await.unwrap();
    let rx = Receiver::start().await;
    app.create_bot("eli", "data_collection").await;
    let r = app
        .admin(
            "POST",
            "/v1/bots/eli/endpoints",
            Some(json!({"url": rx.url("/slow")})),
        )
        .await;
    assert_eq!(r.status, 201);
    rx.delay("/slow", Duration::from_secs(30));

    let first = Engine::start(app.store.clone(), delivery.clone());
    let r = app
        .admin(
            "POST",
            "/v1/bots/eli/events",
            Some(json!({"type": "order.paid", "data": {}})),
        )
        .await;
    assert_eq!(r.status, 201);
    // Wait (briefly, for a real socket) until the request is in flight.
    for _ in 0..200 {
        if !rx.at("/slow").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(rx.at("/slow").len(), 1);
    first.abort();
    drop(first);

    rx.delay("/slow", Duration::ZERO);
    let second = Engine::start(app.store.clone(), delivery);
    let now = botwire::store::now_ms();
    assert_eq!(second.run_due_once(now).await.unwrap(), 0, "still leased");
    assert_eq!(
        second.run_due_once(now + 61_000).await.unwrap(),
        1,
        "lease ran out"
    );
    let got = rx.at("/slow");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    let ds = app
        .store
        .list_deliveries(
            &app.account_id,
            DeliveryFilter::default(),
            PageRequest {
                limit: 10,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(ds.items[0].status, "succeeded");
    assert_eq!(
        ds.items[0].attempts, 1,
        "the dropped attempt was never recorded"
    );
}

#[tokio::test]
async fn a_slow_endpoint_does_not_hold_up_the_others() {
    let w = world_with(Db::Sqlite, |s| s.per_endpoint = 2)
        .await
        .unwrap();
    w.app.create_bot("eli", "data_collection").await;
    w.endpoint("eli", json!({"url": w.rx.url("/slow")})).await;
    w.endpoint("eli", json!({"url": w.rx.url("/fast")})).await;
    w.rx.delay("/slow", Duration::from_secs(3));
    for _ in 0..10 {
        w.publish("eli", "order.paid").await;
    }
    for _ in 0..400 {
        if w.rx.at("/fast").len() == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        w.rx.at("/fast").len(),
        10,
        "the fast endpoint got everything"
    );
    assert_eq!(
        w.rx.at("/slow").len(),
        2,
        "the slow one has its two slots only"
    );
    w.engine.abort();
}

#[tokio::test]
async fn rate_limits_space_requests() {
    let w = world(Db::Sqlite).await.unwrap();
    w.app.create_bot("eli", "data_collection").await;
    w.endpoint("eli", json!({"url": w.rx.url("/rl"), "rate_limit": 50}))
        .await;
    let started = std::time::Instant::now();
    for _ in 0..6 {
        w.publish("eli", "order.paid").await;
    }
    w.engine.idle().await;
    assert_eq!(w.rx.at("/rl").len(), 6);
    assert!(
        started.elapsed() >= Duration::from_millis(95),
        "6 requests at 50/s take at least 100 ms: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn seed_000_registration_route_word_for_word() {
    let w = world(Db::Sqlite).await.unwrap();
    w.app.create_bot("eli", "data_collection").await;
    w.app.create_bot("helpdesk", "support").await;
    let r = w
        .app
        .admin(
            "POST",
            "/api/v1.0/chatbot-webhook/eli/",
            Some(json!({"url": w.rx.url("/first")})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"message": "New Webhook has been added, you can now start listening on the URL for updates."})
    );
    let r = w
        .app
        .admin(
            "POST",
            "/api/v1.0/chatbot-webhook/eli",
            Some(json!({"url": w.rx.url("/second")})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"chatbot_id": "Existing webhook URL was updated, you can now start listening on the new URL for updates."})
    );
    let list = w.get("/v1/bots/eli/endpoints").await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "replaced, not added"
    );
    assert_eq!(list["data"][0]["kind"], "registration");
    w.publish("eli", "order.paid").await;
    w.engine.idle().await;
    assert!(w.rx.at("/first").is_empty());
    assert_eq!(w.rx.at("/second").len(), 1);

    let r = w
        .app
        .admin(
            "POST",
            "/api/v1.0/chatbot-webhook/helpdesk/",
            Some(json!({"url": w.rx.url("/x")})),
        )
        .await;
    assert_eq!(r.status, 422);
    let m = r.body["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("Quote Generation, Data Collection and Appointment/Calendar Support"),
        "{m}"
    );
    let r = w
        .app
        .call(
            "POST",
            "/api/v1.0/chatbot-webhook/eli/",
            None,
            Some(json!({"url": w.rx.url("/x")})),
        )
        .await;
    assert_eq!(r.status, 401);
    let r = w
        .app
        .admin(
            "POST",
            "/api/v1.0/chatbot-webhook/eli/",
            Some(json!({"url": "ftp://example.com"})),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("http")
    );
    let r = w
        .app
        .admin(
            "POST",
            "/api/v1.0/chatbot-webhook/ghost/",
            Some(json!({"url": w.rx.url("/x")})),
        )
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn rest_hooks_subscribe_unsubscribe_and_410() {
    let w = world(Db::Sqlite).await.unwrap();
    w.app.create_bot("eli", "data_collection").await;
    let r = w
        .app
        .admin(
            "POST",
            "/v1/hooks/subscribe",
            Some(json!({"target_url": w.rx.url("/zap"), "event": "order.paid", "bot_id": "eli"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    w.publish("eli", "order.paid").await;
    w.publish("eli", "order.other").await;
    w.engine.idle().await;
    assert_eq!(w.rx.at("/zap").len(), 1, "one event type only");
    let r = w
        .app
        .admin("DELETE", &format!("/v1/hooks/{id}"), None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        w.app
            .admin("DELETE", &format!("/v1/hooks/{id}"), None)
            .await
            .status,
        404
    );
    w.publish("eli", "order.paid").await;
    w.engine.idle().await;
    assert_eq!(w.rx.at("/zap").len(), 1, "unsubscribed");

    // A 410 from the target ends the subscription.
    let r = w
        .app
        .admin(
            "POST",
            "/v1/hooks/subscribe",
            Some(json!({"target_url": w.rx.url("/zap2"), "event": "order.paid", "bot_id": "eli"})),
        )
        .await;
    let id = r.body["id"].as_str().unwrap().to_owned();
    w.rx.answer("/zap2", 410);
    w.publish("eli", "order.paid").await;
    w.engine.idle().await;
    assert_eq!(w.rx.at("/zap2").len(), 1);
    assert_eq!(
        w.app
            .admin("GET", &format!("/v1/endpoints/{id}"), None)
            .await
            .status,
        404
    );

    let sample = w.get("/v1/event-types/response.received/sample").await;
    assert!(sample.as_array().unwrap().len() == 1);
    let r = w
        .app
        .admin(
            "POST",
            "/v1/hooks/subscribe",
            Some(json!({"target_url": w.rx.url("/z"), "event": "nope", "bot_id": "eli"})),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("event")
    );
}

#[tokio::test]
async fn endpoint_input_is_checked_with_messages_that_say_what_to_fix() {
    let w = world(Db::Sqlite).await.unwrap();
    w.app.create_bot("eli", "data_collection").await;
    let cases = [
        (json!({"url": "ftp://example.com/x"}), "http or https"),
        (json!({"url": "https://user:pw@example.com/x"}), "user name"),
        (
            json!({"url": format!("https://example.com/{}", "a".repeat(2100))}),
            "2048",
        ),
        (json!({"url": "not a url"}), "valid URL"),
        (
            json!({"url": "https://example.com", "headers": {"Connection": "close"}}),
            "hop-by-hop",
        ),
        (
            json!({"url": "https://example.com", "headers": {"webhook-signature": "x"}}),
            "webhook-*",
        ),
        (
            json!({"url": "https://example.com", "body": [1]}),
            "body must be a JSON object",
        ),
        (
            json!({"url": "https://example.com", "events": ["message.bounced"]}),
            "catalog",
        ),
        (
            json!({"url": "https://example.com", "events": ["Bad Name"]}),
            "event names",
        ),
        (
            json!({"url": "https://example.com", "format": "xml"}),
            "standard, bot9, flat",
        ),
        (
            json!({"url": "https://example.com", "rate_limit": 0}),
            "rate_limit",
        ),
        (
            json!({"url": "https://example.com", "secret": "nope"}),
            "whsec_",
        ),
        (json!({"url": "https://example.com", "colour": 1}), "colour"),
        (json!({}), "url"),
    ];
    for (body, hint) in cases {
        let r = w
            .app
            .admin("POST", "/v1/bots/eli/endpoints", Some(body.clone()))
            .await;
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        let m = r.body["error"]["message"].as_str().unwrap();
        assert!(m.contains(hint), "{body}: {m:?} should mention {hint:?}");
    }
    let ep = w
        .endpoint("eli", json!({"url": "https://example.com/h"}))
        .await;
    let id = ep["id"].as_str().unwrap();
    let r = w
        .app
        .admin(
            "PATCH",
            &format!("/v1/endpoints/{id}"),
            Some(json!({"url": "gopher://x"})),
        )
        .await;
    assert_eq!(r.status, 422);
    let r = w
        .app
        .admin(
            "PATCH",
            &format!("/v1/endpoints/{id}"),
            Some(json!({"events": null, "rate_limit": null, "description": "all of them"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["events"].is_null());
    let r = w
        .app
        .admin(
            "GET",
            &format!("/v1/endpoints/{id}/deliveries?status=lost"),
            None,
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("succeeded")
    );
    let r = w
        .app
        .admin(
            "POST",
            "/v1/bots/ghost/events",
            Some(json!({"type": "order.paid", "data": {}})),
        )
        .await;
    assert_eq!(r.status, 404, "publishing to a missing bot: {}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ghost")
    );
    assert_eq!(
        w.app
            .admin("DELETE", &format!("/v1/endpoints/{id}"), None)
            .await
            .status,
        204
    );
    assert_eq!(
        w.app
            .admin("GET", &format!("/v1/endpoints/{id}"), None)
            .await
            .status,
        404
    );
}

both!(
    the_delivery_log_filters_and_the_health_chart,
    the_delivery_log_filters_and_the_health_chart_sqlite,
    the_delivery_log_filters_and_the_health_chart_postgres
);

async fn the_delivery_log_filters_and_the_health_chart(kind: Db) {
    let Some(w) = world(kind).await else { return };
    w.app.create_bot("eli", "data_collection").await;
    w.app.create_bot("ana", "data_collection").await;
    let ok = w.endpoint("eli", json!({"url": w.rx.url("/ok")})).await;
    let bad = w.endpoint("eli", json!({"url": w.rx.url("/bad")})).await;
    w.endpoint("ana", json!({"url": w.rx.url("/ana")})).await;
    w.rx.answer("/bad", 500);
    let before = botwire::api::time(botwire::store::now_ms() - 1000);
    w.publish("eli", "order.paid").await;
    w.publish("eli", "order.paid").await;
    w.publish("eli", "order.shipped").await;
    w.publish("ana", "order.paid").await;
    w.engine.idle().await;

    let ids = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = w.get("/v1/deliveries").await;
    assert_eq!(ids(&all).len(), 7, "3 events x 2 endpoints + 1: {all}");
    let ok_id = ok["id"].as_str().unwrap();
    let paid_ok = w
        .get(&format!(
            "/v1/deliveries?endpoint_id={ok_id}&event_type=order.paid"
        ))
        .await;
    assert_eq!(ids(&paid_ok).len(), 2);
    assert!(paid_ok["data"].as_array().unwrap().iter().all(|d| {
        d["event_type"] == "order.paid" && d["endpoint_id"] == ok_id && d["status"] == "succeeded"
    }));
    let failed = w.get("/v1/deliveries?status=failed").await;
    assert_eq!(ids(&failed).len(), 3);
    assert!(
        failed["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["endpoint_id"] == bad["id"])
    );
    let since = w
        .get(&format!("/v1/deliveries?since={before}&limit=2"))
        .await;
    assert_eq!(ids(&since).len(), 2);
    assert!(since["next_cursor"].is_string());
    let until = w.get(&format!("/v1/deliveries?until={before}")).await;
    assert!(ids(&until).is_empty(), "{until}");

    // A bot-scoped key sees its bot's deliveries only.
    let ana_key = w.app.bot_key("ana").await;
    let r = w
        .app
        .call("GET", "/v1/deliveries", Some(&ana_key), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(ids(&r.body).len(), 1);
    assert_eq!(r.body["data"][0]["bot_id"], "ana");

    for bad_query in ["status=lost", "since=yesterday", "limit=0"] {
        let r = w
            .app
            .admin("GET", &format!("/v1/deliveries?{bad_query}"), None)
            .await;
        assert_eq!(r.status, 400, "{bad_query}: {}", r.body);
    }

    // The chart counts the last 24 h of attempts.
    let r = w
        .app
        .client
        .get(format!(
            "{}/v1/endpoints/{}/health/chart.svg",
            w.app.base,
            bad["id"].as_str().unwrap()
        ))
        .bearer_auth(&w.app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    let svg = r.text().await.unwrap();
    assert!(svg.starts_with("<svg "), "{svg}");
    assert!(svg.contains("0 of 3 attempts succeeded"), "{svg}");
    let r = w
        .app
        .call(
            "GET",
            &format!("/v1/endpoints/{ok_id}/health/chart.svg"),
            Some(&ana_key),
            None,
        )
        .await;
    assert_eq!(r.status, 404, "another bot's endpoint");
}

/// An API-only node (no engine) writes deliveries for any worker; a worker
/// in another process whose claim loop polls only once a minute still
/// delivers them at once, woken by PostgreSQL LISTEN/NOTIFY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_in_other_processes_are_woken_at_once_on_postgres() {
    let api_delivery = Delivery::new(Settings {
        allow: AllowList::parse(["127.0.0.0/8"]).unwrap(),
        poll: None,
        ..Settings::default()
    })
    .unwrap();
    let Some(app) = spawn_app_with(Db::Postgres, api_delivery).await else {
        return;
    };
    let rx = Receiver::start().await;
    let worker_store = botwire::store::Store::open(app.db_url()).await.unwrap();
    let worker = Engine::start(
        worker_store,
        Delivery::new(Settings {
            allow: AllowList::parse(["127.0.0.0/8"]).unwrap(),
            poll: Some(Duration::from_secs(60)),
            ..Settings::default()
        })
        .unwrap(),
    );
    // Wait for the worker's listening connection.
    let url = app.db_url().to_owned();
    let listening = tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        for _ in 0..100 {
            let n: i64 = c
                .query_one(
                    "SELECT COUNT(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND query LIKE 'LISTEN botwire_deliveries%'",
                    &[],
                )
                .unwrap()
                .get(0);
            if n > 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    })
    .await
    .unwrap();
    assert!(listening, "the worker never listened");

    app.create_bot("eli", "data_collection").await;
    let r = app
        .admin(
            "POST",
            "/v1/bots/eli/endpoints",
            Some(json!({"url": rx.url("/hook")})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let started = std::time::Instant::now();
    for _ in 0..5 {
        let r = app
            .admin(
                "POST",
                "/v1/bots/eli/events",
                Some(json!({"type": "order.paid", "data": {}})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    while rx.at("/hook").len() < 5 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "only {} of 5 delivered after {:?} (the worker polls once a minute)",
            rx.at("/hook").len(),
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "5 events published on an API-only node reached the receiver through another process's worker in {:?}",
        started.elapsed()
    );
    drop(worker);
}

both!(
    custom_header_values_are_secrets_in_answers_and_the_attempt_log,
    custom_header_values_are_secrets_in_answers_and_the_attempt_log_sqlite,
    custom_header_values_are_secrets_in_answers_and_the_attempt_log_postgres
);

async fn custom_header_values_are_secrets_in_answers_and_the_attempt_log(kind: Db) {
    let Some(w) = world(kind).await else { return };
    w.app.create_bot("eli", "data_collection").await;
    let secrets = [
        ("authorization", "Bearer tok-0123456789abcd", "••••abcd"),
        ("x-signature", "sha256=feedface00112233", "••••2233"),
        ("x-hmac", "hmac-value-987654321", "••••4321"),
        ("x-pass", "hunter2", "••••"),
        ("x-credential", "cred-aaaabbbbcccc", "••••cccc"),
    ];
    let mut headers = serde_json::Map::new();
    for (name, value, _) in secrets {
        headers.insert(name.into(), json!(value));
    }
    headers.insert(
        "X-Team".into(),
        json!({"value": "growth", "sensitive": false}),
    );
    // The answer that creates the endpoint shows every value once.
    let ep = w
        .endpoint(
            "eli",
            json!({"url": w.rx.url("/secret-headers"), "headers": headers}),
        )
        .await;
    let id = ep["id"].as_str().unwrap().to_owned();
    for (name, value, _) in secrets {
        assert_eq!(
            ep["headers"][name],
            json!({"value": value, "sensitive": true})
        );
    }
    assert_eq!(
        ep["headers"]["x-team"],
        json!({"value": "growth", "sensitive": false})
    );

    // Every later answer shows secrets redacted, plain values as they are.
    let shown = |body: &Value| {
        for (name, value, redacted) in secrets {
            assert_eq!(
                body["headers"][name],
                json!({"value": redacted, "sensitive": true}),
                "{name}"
            );
            assert!(!body.to_string().contains(value), "{name} leaked: {body}");
        }
        assert_eq!(body["headers"]["x-team"]["value"], "growth");
    };
    let got = w.get(&format!("/v1/endpoints/{id}")).await;
    shown(&got);
    shown(&w.get("/v1/bots/eli/endpoints").await["data"][0]);

    // The receiver gets the real values; the attempt log does not keep them.
    let r = w
        .app
        .admin("POST", &format!("/v1/endpoints/{id}/test"), None)
        .await;
    assert_eq!(r.body["success"], true, "{}", r.body);
    w.publish("eli", "order.paid").await;
    w.engine.idle().await;
    let received = w.rx.at("/secret-headers");
    assert_eq!(received.len(), 2, "the test ping and the event");
    for r in &received {
        for (name, value, _) in secrets {
            assert_eq!(r.header(name), value);
        }
        assert_eq!(r.header("x-team"), "growth");
    }
    let deliveries = w.deliveries_of(&ep).await;
    assert_eq!(deliveries.len(), 2);
    for d in &deliveries {
        let attempts = w
            .get(&format!(
                "/v1/deliveries/{}/attempts",
                d["id"].as_str().unwrap()
            ))
            .await;
        let logged = &attempts["data"][0]["request_headers"];
        for (name, value, redacted) in secrets {
            assert_eq!(logged[name], redacted, "{name}: {logged}");
            assert!(!logged.to_string().contains(value));
        }
        assert_eq!(logged["x-team"], "growth");
        assert!(
            logged["webhook-signature"]
                .as_str()
                .unwrap()
                .starts_with("v1,")
        );
        // Redacted when written, not only when shown.
        let rows = w
            .app
            .store
            .list_attempts(
                &w.app.account_id,
                d["id"].as_str().unwrap(),
                PageRequest {
                    limit: 10,
                    after: None,
                },
            )
            .await
            .unwrap();
        for (_, value, _) in secrets {
            assert!(!rows.items[0].request_headers.contains(value));
        }
    }

    // PATCH with the headers as shown keeps the stored secrets; a value
    // typed again (with sensitive: false) becomes plain.
    let mut back = got["headers"].clone();
    back["x-team"] = json!({"value": "platform", "sensitive": false});
    back["x-pass"] = json!({"value": "hunter2", "sensitive": false});
    let r = w
        .app
        .admin(
            "PATCH",
            &format!("/v1/endpoints/{id}"),
            Some(json!({"headers": back})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["headers"]["authorization"],
        json!({"value": "••••abcd", "sensitive": true}),
        "the PATCH answer is redacted too"
    );
    assert_eq!(
        r.body["headers"]["x-pass"],
        json!({"value": "hunter2", "sensitive": false})
    );
    w.app
        .admin("POST", &format!("/v1/endpoints/{id}/test"), None)
        .await;
    let last = w.rx.at("/secret-headers").pop().unwrap();
    for (name, value, _) in secrets {
        assert_eq!(last.header(name), value, "{name} kept its stored value");
    }
    assert_eq!(last.header("x-team"), "platform");

    // A redacted value that is not the stored one's, or a secret turned
    // plain without its value, is refused: it would be sent as ••••.
    for (name, value) in [
        ("authorization", json!("••••0000")),
        ("x-new", json!("••••abcd")),
        (
            "x-signature",
            json!({"value": "••••2233", "sensitive": false}),
        ),
    ] {
        let mut h = back.clone();
        h[name] = value;
        let r = w
            .app
            .admin(
                "PATCH",
                &format!("/v1/endpoints/{id}"),
                Some(json!({"headers": h})),
            )
            .await;
        assert_eq!(r.status, 422, "{name}: {}", r.body);
        let m = r.body["error"]["message"].as_str().unwrap();
        assert!(m.contains(name) && m.contains("redacted"), "{m}");
    }
}

#[tokio::test]
async fn deliveries_carry_the_trace_of_the_request_that_caused_them_retries_too() {
    let w = world(Db::Sqlite).await.unwrap();
    w.app.create_bot("eli", "data_collection").await;
    w.endpoint("eli", json!({"url": w.rx.url("/traced")})).await;
    w.rx.answer("/traced", 503);
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let parent = "b7ad6b7169203331";
    let resp = w
        .app
        .client
        .post(format!("{}/v1/bots/eli/events", w.app.base))
        .bearer_auth(&w.app.admin_key)
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .json(&json!({"type": "order.paid", "data": {"n": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    w.engine.idle().await;
    w.rx.answer("/traced", 200);
    assert_eq!(
        w.engine
            .run_due_once(w.clock.advance(15_000))
            .await
            .unwrap(),
        1
    );
    let got = w.rx.at("/traced");
    assert_eq!(got.len(), 2, "the first attempt and its retry");
    let spans: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            let v = r.header("traceparent");
            let parts: Vec<&str> = v.split('-').collect();
            assert_eq!(parts.len(), 4, "{v}");
            assert_eq!((parts[0], parts[3]), ("00", "01"), "{v}");
            (parts[1].to_owned(), parts[2].to_owned())
        })
        .collect();
    for (t, span) in &spans {
        assert_eq!(t, trace, "every attempt continues the request's trace");
        assert_ne!(span, parent);
    }
    assert_ne!(spans[0].1, spans[1].1, "each attempt is its own span");

    // Without a traceparent each request starts its own trace.
    w.publish("eli", "order.paid").await;
    w.publish("eli", "order.paid").await;
    w.engine.idle().await;
    let got = w.rx.at("/traced");
    let t3 = got[2].header("traceparent").split('-').nth(1).unwrap();
    let t4 = got[3].header("traceparent").split('-').nth(1).unwrap();
    assert!(t3 != trace && t4 != trace && t3 != t4, "{t3} {t4}");
}
// ----------------------------------------------------------------- metrics

/// The value of the series of `name` whose labels include every pair of
/// `labels`, summed over the series that match (0 when none does).
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let have: Vec<(&str, &str)> = rest
                .split("\",")
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once("=\"")?;
                    Some((k, v.trim_end_matches('"')))
                })
                .collect();
            (n == name && labels.iter().all(|l| have.contains(l)))
                .then(|| value.parse::<f64>().unwrap())
        })
        .sum()
}

/// Every family `/metrics` declares with a `# TYPE` line.
fn families(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// Metric names (`botwire_…`) a dashboard or rules file refers to, without
/// the `_bucket`/`_sum`/`_count` suffixes of histogram series.
fn names_used(text: &str) -> std::collections::BTreeSet<String> {
    let re = regex::Regex::new(r"botwire_[a-z0-9_]+").unwrap();
    re.find_iter(text)
        .map(|m| {
            let n = m.as_str();
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n)
                .to_owned()
        })
        .collect()
}

/// A scripted run — chat turns, a story-webhook call, deliveries of an
/// event type this test owns to a receiver answering 200 then 500 until
/// the delivery is dead — moves every family of `/metrics` by what it did.
/// The recorder is process-wide and other tests run beside this one, so it
/// compares values after against before, exactly for the series labelled
/// with what only this test uses (its bot, its event type, its endpoint)
/// and as a lower bound for the shared ones.
async fn metrics_move_by_what_a_scripted_run_did(kind: Db) {
    let Some(w) = world_with(kind, |s| s.break_after = 3).await else {
        return;
    };
    // Labels only this test (on this backend) uses.
    let (bot, ty) = match kind {
        Db::Sqlite => ("metered-sqlite", "metrics.sqlite"),
        Db::Postgres => ("metered-postgres", "metrics.postgres"),
    };
    let scrape = || async {
        let r = w
            .app
            .client
            .get(format!("{}/metrics", w.app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    };
    // A story API answering JSON, on 127.0.0.1.
    let story = axum::Router::new()
        .fallback(|| async { axum::Json(json!({"responses": ["Your random number is 15"]})) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let story_base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, story).await });
    let file = std::fs::read_to_string("examples/stories.yaml")
        .unwrap()
        .replace("id: stories", &format!("id: {bot}"))
        .replace("http://127.0.0.1:8787", &story_base);
    w.app.import_yaml(file).await;
    let ep = w
        .endpoint(bot, json!({"url": w.rx.url("/m"), "events": [ty]}))
        .await;
    let ep_id = ep["id"].as_str().unwrap().to_owned();
    let before = scrape().await;

    // Two chat turns; the second calls the story webhook.
    w.chat(bot, "hi").await;
    w.chat(bot, "1").await;
    // One delivery succeeds; one fails three times (the schedule has two
    // retries) and is dead, which opens the endpoint's circuit (3 in a row).
    w.publish(bot, ty).await;
    w.engine.idle().await;
    w.rx.answer("/m", 500);
    w.publish(bot, ty).await;
    w.engine.idle().await;

    // It waits: the backlog shows it once the delivery clock passes its
    // due time (a minute later, well past the first delay of 10 s ±20 %).
    let t = w.clock.advance(60_000);
    let waiting = scrape().await;
    let mine = [("endpoint", ep_id.as_str())];
    assert_eq!(series(&waiting, "botwire_deliveries_pending", &mine), 1.0);
    assert!(series(&waiting, "botwire_deliveries_pending_all", &[]) >= 1.0);
    let age = series(&waiting, "botwire_delivery_oldest_due_age_seconds", &mine);
    assert!(
        (47.0..=53.0).contains(&age),
        "waited {age} s past its due time"
    );
    assert!(series(&waiting, "botwire_delivery_oldest_due_age_all_seconds", &[]) >= age);
    assert_eq!(w.engine.run_due_once(t + 3_600_000).await.unwrap(), 1);
    assert_eq!(w.engine.run_due_once(t + 7_200_000).await.unwrap(), 1);
    // Now dead, but the reading is cached for a few seconds of the same
    // clock; a minute later it is read afresh.
    let cached = scrape().await;
    assert_eq!(series(&cached, "botwire_deliveries_pending", &mine), 1.0);
    w.clock.advance(60_000);
    let after = scrape().await;
    assert_eq!(series(&after, "botwire_deliveries_pending", &mine), 0.0);
    let moved = |name: &str, labels: &[(&str, &str)]| {
        series(&after, name, labels) - series(&before, name, labels)
    };
    let probe = [("event_type", ty)];
    // Attempts: one success, then the second delivery's three failures
    // (the third one in a row opens the endpoint's circuit).
    assert_eq!(moved("botwire_delivery_attempts_total", &probe), 4.0);
    assert_eq!(moved("botwire_deliveries_succeeded_total", &probe), 1.0);
    assert_eq!(
        moved(
            "botwire_delivery_attempt_failures_total",
            &[("event_type", ty), ("error_kind", "status")]
        ),
        3.0
    );
    assert_eq!(moved("botwire_deliveries_dead_total", &probe), 1.0);
    assert_eq!(
        moved("botwire_delivery_attempt_duration_seconds_count", &probe),
        4.0
    );
    assert!(moved("botwire_delivery_attempt_duration_seconds_sum", &probe) > 0.0);
    assert!(moved("botwire_delivery_circuit_opens_total", &[]) >= 1.0);

    let turns = [("bot", bot), ("channel", "api")];
    assert_eq!(
        moved(
            "botwire_chat_turns_total",
            &[("bot", bot), ("channel", "api"), ("outcome", "ok")]
        ),
        2.0
    );
    assert_eq!(
        moved("botwire_chat_turn_duration_seconds_count", &turns),
        2.0
    );
    assert!(moved("botwire_story_calls_total", &[("outcome", "ok")]) >= 1.0);
    assert!(
        moved(
            "botwire_story_call_duration_seconds_count",
            &[("outcome", "ok")]
        ) >= 1.0
    );
    assert!(moved("botwire_store_commit_batch_size_count", &[]) >= 1.0);
    assert!(moved("botwire_store_commit_duration_seconds_count", &[]) >= 1.0);
    assert!(moved("botwire_store_commits_total", &[]) >= 1.0);
    assert!(series(&after, "botwire_store_read_pool_size", &[]) >= 1.0);
    let chat_route = [
        ("method", "POST"),
        ("route", "/v1/bots/{bot}/chat"),
        ("status", "200"),
    ];
    assert!(moved("botwire_http_requests_total", &chat_route) >= 2.0);
    assert!(moved("botwire_http_request_duration_seconds_count", &chat_route) >= 2.0);
    assert!(
        !after.contains(&w.rx.base) && !after.contains("+525500000000"),
        "no URL or contact in a label"
    );

    // Every name the shipped dashboard and alert rules use is one botwire
    // exports.
    let exported = families(&after);
    for file in [
        "deploy/grafana/botwire.json",
        "deploy/prometheus/alerts.yml",
    ] {
        let used = names_used(&std::fs::read_to_string(file).unwrap());
        assert!(!used.is_empty(), "{file} uses no botwire metric");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses unknown metrics {unknown:?}"
        );
    }
}

both!(
    metrics_move_by_what_a_scripted_run_did,
    metrics_move_by_what_a_scripted_run_did_sqlite,
    metrics_move_by_what_a_scripted_run_did_postgres
);

both!(
    a_template_endpoint_receives_its_json_filled_and_signed,
    a_template_endpoint_receives_its_json_filled_and_signed_sqlite,
    a_template_endpoint_receives_its_json_filled_and_signed_postgres
);

async fn a_template_endpoint_receives_its_json_filled_and_signed(kind: Db) {
    let Some(w) = world(kind).await else { return };
    w.import("examples/elipackage.yaml").await;
    // An unknown tag is refused at save, naming it and where it is.
    let r = w
        .app
        .admin(
            "POST",
            "/v1/bots/elipackage/endpoints",
            Some(json!({"url": w.rx.url("/t"), "format": "template",
                        "body": {"who": {"name": "{{memory.name}}"}}})),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let msg = r.body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("{{memory.name}}") && msg.contains("body.who.name"),
        "{msg}"
    );
    let ep = w
        .endpoint(
            "elipackage",
            json!({"url": w.rx.url("/t"), "format": "template",
                   "events": ["response.received", "option.selected"],
                   "body": {"kind": "{{event.type}}", "id": "{{event.id}}",
                            "customer": {"phone": "{{data.contact.phone}}", "answer": "{{data.response}}"},
                            "choice": "{{data.keyword}}: {{data.option}}", "v": 2}}),
        )
        .await;
    assert_eq!(ep["format"], "template");
    // Switching an endpoint to template checks the body it already has.
    let plain = w
        .endpoint(
            "elipackage",
            json!({"url": w.rx.url("/p"), "body": {"x": "{{oops}}"}, "events": ["order.paid"]}),
        )
        .await;
    let r = w
        .app
        .admin(
            "PATCH",
            &format!("/v1/endpoints/{}", plain["id"].as_str().unwrap()),
            Some(json!({"format": "template"})),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("{{oops}}")
    );

    w.chat("elipackage", "Hi").await;
    w.chat("elipackage", "John Doe").await;
    w.chat("elipackage", "2").await;
    w.engine.idle().await;

    let got = w.rx.at("/t");
    assert_eq!(got.len(), 2, "{got:?}");
    let secret = w.secret(&ep).await;
    for r in &got {
        assert!(oracle_verifies(&secret, r), "a template payload is signed");
        assert_eq!(r.json()["id"], r.header("webhook-id"));
    }
    let mut bodies: Vec<Value> = got
        .iter()
        .map(|r| {
            let mut b = r.json();
            b.as_object_mut().unwrap().remove("id");
            b
        })
        .collect();
    bodies.sort_by_key(|b| b["kind"].as_str().unwrap().to_owned());
    assert_eq!(
        bodies,
        [
            json!({"kind": "option.selected", "customer": {"phone": "+525500000000", "answer": ""},
                   "choice": "2: Six months", "v": 2}),
            json!({"kind": "response.received", "customer": {"phone": "+525500000000", "answer": "John Doe"},
                   "choice": ": ", "v": 2}),
        ]
    );
}
