//! Messaging channels end to end: a real server, store, inbound processor,
//! outbox sender and delivery engine, and one fake platform per kind — a
//! real HTTP server on 127.0.0.1 that records what it receives and answers
//! as the platform does (its success bodies, a 429 with `Retry-After`, a
//! permanent 400 with the platform's error body).
//!
//! Inbound bodies are shaped like the platforms' documented examples (Meta's
//! with `\u`-escaped Unicode) and signed with each platform's scheme. The
//! sender, processor and engine run steppable: the hot path works at once,
//! and retries are driven with `run_due_once` on a manual clock, so no test
//! waits out a delay.

use crate::common;
use crate::common::node::Node;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use botwire::api::{self, AppState, RouterOptions};
use botwire::auth::Pepper;
use botwire::channels::{meta, twilio};
use botwire::delivery::clock::ManualClock;
use botwire::delivery::outbox::Sender;
use botwire::delivery::schedule::RetrySchedule;
use botwire::delivery::ssrf::AllowList;
use botwire::delivery::{Delivery, Engine, Settings};
use botwire::runtime::inbound::{Inbound, Processor};
use botwire::store::Store;
use common::{Db, TestDb, test_db};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

// ------------------------------------------------------------ fake platform

#[derive(Clone, Debug)]
struct Got {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&self.body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
    fn field(&self, k: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v)
    }
}

/// A scripted answer: status, body, extra headers.
type Answer = (u16, String, Vec<(&'static str, String)>);

#[derive(Default)]
struct PlatformState {
    got: Mutex<Vec<Got>>,
    script: Mutex<VecDeque<Answer>>,
    kind: Mutex<String>,
}

/// A fake platform API on 127.0.0.1.
#[derive(Clone)]
struct Platform {
    base: String,
    state: Arc<PlatformState>,
}

async fn platform_answer(
    State(s): State<Arc<PlatformState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let path = uri.path().to_owned();
    let n = {
        let mut got = s.got.lock().unwrap();
        got.push(Got {
            path: path.clone(),
            headers,
            body,
        });
        got.len()
    };
    if let Some((status, body, headers)) = s.script.lock().unwrap().pop_front() {
        let mut resp = (StatusCode::from_u16(status).unwrap(), body).into_response();
        for (k, v) in headers {
            resp.headers_mut().insert(k, v.parse().unwrap());
        }
        resp.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        return resp;
    }
    let kind = s.kind.lock().unwrap().clone();
    let (status, body) = match kind.as_str() {
        "whatsapp" => (
            200,
            json!({"messaging_product": "whatsapp", "contacts": [{"input": "525500000000", "wa_id": "525500000000"}],
                   "messages": [{"id": format!("wamid.out{n}")}]}),
        ),
        "telegram" => (
            200,
            json!({"ok": true, "result": if path.ends_with("/sendMessage") { json!({"message_id": n}) } else { json!(true) }}),
        ),
        "twilio" => (
            201,
            json!({"sid": format!("SM{n:032}"), "status": "queued"}),
        ),
        _ => (
            200,
            json!({"recipient_id": "2498128583546742", "message_id": format!("m_out{n}")}),
        ),
    };
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

impl Platform {
    async fn start(kind: &str) -> Self {
        let state = Arc::new(PlatformState::default());
        *state.kind.lock().unwrap() = kind.to_owned();
        let app = axum::Router::new()
            .fallback(platform_answer)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, state }
    }
    fn got(&self) -> Vec<Got> {
        self.state.got.lock().unwrap().clone()
    }
    fn answer_next(&self, status: u16, body: Value, headers: Vec<(&'static str, String)>) {
        self.state
            .script
            .lock()
            .unwrap()
            .push_back((status, body.to_string(), headers));
    }
}

// ------------------------------------------------------- endpoint receiver

#[derive(Default)]
struct Hooks {
    got: Mutex<Vec<Value>>,
}

async fn hook(State(h): State<Arc<Hooks>>, body: Bytes) -> &'static str {
    h.got
        .lock()
        .unwrap()
        .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
    "ok"
}

// ------------------------------------------------------------------- world

struct World {
    base: String,
    key: String,
    store: Store,
    client: reqwest::Client,
    clock: ManualClock,
    engine: Engine,
    sender: Sender,
    processor: Processor,
    hooks: Arc<Hooks>,
    hooks_url: String,
    _db: TestDb,
}

async fn world(kind: Db) -> Option<World> {
    let db = test_db(kind)?;
    let store = Store::open(&db.url).await.unwrap();
    let pepper = Pepper::new(b"test pepper".to_vec());
    let (_, key) = store.bootstrap(&pepper).await.unwrap().unwrap();
    let clock = ManualClock::now();
    let delivery = Delivery::new(Settings {
        allow: AllowList::parse(["127.0.0.0/8"]).unwrap(),
        timeout: Duration::from_secs(5),
        schedule: RetrySchedule::parse("10s,20s,40s").unwrap(),
        poll: None,
        clock: Arc::new(clock.clone()),
        ..Settings::default()
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = AppState::new(store.clone(), pepper, delivery.clone()).with_public_url(&base);
    let inbound = Inbound::new(
        store.clone(),
        state.chat.clone(),
        delivery.client().clone(),
        state.channels.clone(),
    );
    let app = api::router(state, &RouterOptions::default());
    tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app).await.unwrap();
    });
    let engine = Engine::start(store.clone(), delivery.clone());
    let sender = Sender::start(store.clone(), delivery.clone(), &base);
    let processor = Processor::start(inbound, Duration::from_secs(120), None);
    let hooks = Arc::new(Hooks::default());
    let hook_app = axum::Router::new().fallback(hook).with_state(hooks.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hooks_url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, hook_app).await });
    Some(World {
        base,
        key,
        store,
        client: reqwest::Client::new(),
        clock,
        engine,
        sender,
        processor,
        hooks,
        hooks_url,
        _db: db,
    })
}

impl World {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Imports EliPackage and subscribes a `flat` endpoint to its seed-003
    /// events.
    async fn elipackage(&self) {
        let text = std::fs::read_to_string("examples/elipackage.yaml").unwrap();
        let r = self
            .client
            .post(format!("{}/v1/bots/import", self.base))
            .bearer_auth(&self.key)
            .header("content-type", "application/yaml")
            .body(text)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let (s, b) = self
            .call(
                "POST",
                "/v1/bots/elipackage/endpoints",
                Some(json!({"url": self.hooks_url, "format": "flat",
                            "events": ["response.received", "option.selected", "message.failed"]})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }

    async fn channel(&self, body: Value) -> Value {
        let (s, b) = self
            .call("POST", "/v1/bots/elipackage/channels", Some(body))
            .await;
        assert_eq!(s, 201, "{b}");
        b
    }

    /// Posts a webhook body as the platform would; waits until what it
    /// causes is processed, sent and delivered.
    async fn post(&self, url: &str, headers: &[(&str, String)], body: &[u8], ct: &str) -> u16 {
        let mut req = self
            .client
            .post(url)
            .header("content-type", ct)
            .body(body.to_vec());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let status = req.send().await.unwrap().status().as_u16();
        self.settle().await;
        status
    }

    /// What `/metrics` says of one channel's messages: the series `name`
    /// with labels `channel` and `outcome` (0 when there is none yet).
    async fn channel_count(&self, name: &str, channel: &str, outcome: &str) -> u64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let (want_channel, want_outcome) = (
            format!("channel=\"{channel}\""),
            format!("outcome=\"{outcome}\""),
        );
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter(|l| l.contains(&want_channel) && l.contains(&want_outcome))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
            .sum()
    }

    async fn settle(&self) {
        for _ in 0..3 {
            self.processor.idle().await;
            self.sender.idle().await;
            self.engine.idle().await;
        }
    }

    fn flat(&self) -> Vec<Value> {
        self.hooks.got.lock().unwrap().clone()
    }

    async fn events(&self, ty: &str) -> Vec<Value> {
        let (_, b) = self
            .call("GET", &format!("/v1/events?type={ty}"), None)
            .await;
        b["data"].as_array().cloned().unwrap_or_default()
    }
}

fn wa_text(id: &str, text_json: &str) -> Vec<u8> {
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"106540352242922"}},"contacts":[{{"profile":{{"name":"Jos\u00e9 P\u00e9rez"}},"wa_id":"525500000000"}}],"messages":[{{"from":"525500000000","id":"{id}","timestamp":"1749416383","text":{{"body":"{text_json}"}},"type":"text"}}]}},"field":"messages"}}]}}]}}"#
    )
    .into_bytes()
}

fn wa_list_reply(id: &str, choice: &str) -> Vec<u8> {
    json!({"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"value":{
        "messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},
        "contacts":[{"profile":{"name":"José Pérez"},"wa_id":"525500000000"}],
        "messages":[{"context":{"from":"15550783881","id":"wamid.out2"},"from":"525500000000","id":id,"timestamp":"1749416390",
                     "type":"interactive","interactive":{"type":"list_reply","list_reply":{"id":choice,"title":choice}}}]},
        "field":"messages"}]}]})
    .to_string()
    .into_bytes()
}

fn wa_status(wamid: &str, status: &str) -> Vec<u8> {
    json!({"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"value":{
        "messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},
        "statuses":[{"id":wamid,"status":status,"timestamp":"1749416400","recipient_id":"525500000000"}]},
        "field":"messages"}]}]})
    .to_string()
    .into_bytes()
}

fn meta_sig(body: &[u8]) -> Vec<(&'static str, String)> {
    vec![("x-hub-signature-256", meta::signature("app-secret", body))]
}

async fn whatsapp(w: &World, fake: &Platform) -> (Value, String) {
    let ch = w
        .channel(json!({"kind": "whatsapp", "name": "EliPackage WhatsApp", "phone_number_id": "106540352242922",
                        "access_token": "EAAG-token", "app_secret": "app-secret", "verify_token": "verify-me",
                        "api_base": format!("{}/v21.0", fake.base)}))
        .await;
    let url = ch["inbound_url"].as_str().unwrap().to_owned();
    (ch, url)
}

// ------------------------------------------------------------------- tests

#[tokio::test]
async fn whatsapp_runs_elipackage_to_the_end_sqlite() {
    whatsapp_runs_elipackage_to_the_end(Db::Sqlite).await;
}

#[tokio::test]
async fn whatsapp_runs_elipackage_to_the_end_postgres() {
    whatsapp_runs_elipackage_to_the_end(Db::Postgres).await;
}

async fn whatsapp_runs_elipackage_to_the_end(kind: Db) {
    let Some(w) = world(kind).await else {
        return;
    };
    w.elipackage().await;
    let fake = Platform::start("whatsapp").await;
    let (ch, url) = whatsapp(&w, &fake).await;
    assert_eq!(
        url,
        format!("{}/channels/{}/webhook", w.base, ch["id"].as_str().unwrap())
    );
    assert_eq!(ch["secrets"], json!(["access_token", "app_secret"]));
    assert!(!ch.to_string().contains("EAAG-token") && !ch.to_string().contains("app-secret"));

    // Meta's handshake.
    let r = w
        .client
        .get(format!(
            "{url}?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=1158201444"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "1158201444");
    let r = w
        .client
        .get(format!(
            "{url}?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    let ct = "application/json";
    let b = wa_text("wamid.in1", "Hola");
    assert_eq!(w.post(&url, &meta_sig(&b), &b, ct).await, 200);
    let b = wa_text("wamid.in2", "Jos\\u00e9 P\\u00e9rez");
    assert_eq!(w.post(&url, &meta_sig(&b), &b, ct).await, 200);
    let b = wa_list_reply("wamid.in3", "Six months");
    assert_eq!(w.post(&url, &meta_sig(&b), &b, ct).await, 200);

    let got = fake.got();
    assert_eq!(
        got.len(),
        3,
        "{:?}",
        got.iter().map(Got::json).collect::<Vec<_>>()
    );
    for g in &got {
        assert_eq!(g.path, "/v21.0/106540352242922/messages");
        assert_eq!(g.headers["authorization"], "Bearer EAAG-token");
        assert_eq!(g.json()["messaging_product"], "whatsapp");
        assert_eq!(g.json()["to"], "525500000000");
    }
    assert_eq!(
        got[0].json()["text"]["body"],
        "Welcome to EliPackage, can you enter your name, please?"
    );
    let list = &got[1].json()["interactive"];
    assert_eq!(list["type"], "list");
    assert!(
        list["body"]["text"]
            .as_str()
            .unwrap()
            .starts_with("José Pérez, enter the best option")
    );
    let rows = list["action"]["sections"][0]["rows"].as_array().unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["One month", "Six months", "One year", "Raffle"]);
    assert_eq!(got[2].json()["text"]["body"], "Thank you, José Pérez!");

    // Seed 003's flat payloads, with the phone number WhatsApp gave.
    let flat = w.flat();
    let response = flat.iter().find(|p| p.get("response").is_some()).unwrap();
    assert_eq!(response["phoneNumber"], "+525500000000");
    assert_eq!(response["response"], "José Pérez");
    assert_eq!(response["label"], "Welcome Message");
    let option = flat.iter().find(|p| p.get("option").is_some()).unwrap();
    assert_eq!(
        (option["option"].as_str(), option["keyword"].as_i64()),
        (Some("Six months"), Some(2))
    );
    assert_eq!(option["phoneNumber"], "+525500000000");

    // Events say where the conversation happens.
    let received = w.events("message.received").await;
    assert_eq!(received.len(), 3);
    assert!(received.iter().all(|e| e["data"]["channel"] == "whatsapp"));
    let sent = w.events("message.sent").await;
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[0]["data"]["channel_id"], ch["id"]);

    // A status report moves the message on, with its event, and no turn.
    let b = wa_status("wamid.out1", "delivered");
    assert_eq!(w.post(&url, &meta_sig(&b), &b, ct).await, 200);
    let b = wa_status("wamid.out1", "read");
    assert_eq!(w.post(&url, &meta_sig(&b), &b, ct).await, 200);
    let b = wa_status("wamid.out1", "delivered");
    assert_eq!(w.post(&url, &meta_sig(&b), &b, ct).await, 200);
    assert_eq!(
        w.events("message.delivered").await.len(),
        1,
        "a late report changes nothing"
    );
    assert_eq!(w.events("message.read").await.len(), 1);
    assert_eq!(
        w.events("message.received").await.len(),
        3,
        "statuses start no turn"
    );
    assert_eq!(fake.got().len(), 3);
    let (_, msgs) = w
        .call(
            "GET",
            &format!(
                "/v1/channels/{}/messages?status=read",
                ch["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(msgs["data"].as_array().unwrap().len(), 1);
    assert_eq!(msgs["data"][0]["platform_message_id"], "wamid.out1");
}

#[tokio::test]
async fn whatsapp_signatures_duplicates_and_batches_sqlite() {
    whatsapp_signatures_duplicates_and_batches(Db::Sqlite).await;
}

#[tokio::test]
async fn whatsapp_signatures_duplicates_and_batches_postgres() {
    whatsapp_signatures_duplicates_and_batches(Db::Postgres).await;
}

async fn whatsapp_signatures_duplicates_and_batches(kind: Db) {
    let Some(w) = world(kind).await else {
        return;
    };
    w.elipackage().await;
    let fake = Platform::start("whatsapp").await;
    let (ch, url) = whatsapp(&w, &fake).await;
    let id = ch["id"].as_str().unwrap();
    let ct = "application/json";
    let b = wa_text("wamid.in1", "Hola");

    // Missing and wrong signatures: refused, stored nowhere, counted. The
    // counter is the process's, shared with this test's other backend: the
    // lock keeps the two from counting into each other's window.
    static REFUSALS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let counted = REFUSALS.lock().await;
    let refused = || async {
        let text = w
            .client
            .get(format!("{}/metrics", w.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| {
                l.strip_prefix("botwire_channel_webhooks_refused_total{kind=\"whatsapp\"} ")
            })
            .map_or(0, |v| v.trim().parse::<u64>().unwrap())
    };
    let before = refused().await;
    assert_eq!(w.post(&url, &[], &b, ct).await, 401);
    let wrong = vec![("x-hub-signature-256", meta::signature("not-the-secret", &b))];
    assert_eq!(w.post(&url, &wrong, &b, ct).await, 403);
    // Re-serialised JSON does not verify (the signature covers the bytes).
    let reserialised = serde_json::to_vec(&serde_json::from_slice::<Value>(&b).unwrap()).unwrap();
    assert_eq!(w.post(&url, &meta_sig(&b), &reserialised, ct).await, 403);
    assert!(w.store.inbound_counts(id).await.unwrap().is_empty());
    assert!(fake.got().is_empty());
    assert_eq!(refused().await - before, 3, "three refusals counted");
    drop(counted);
    const INBOUND: &str = "botwire_channel_inbound_messages_total";
    const OUTBOUND: &str = "botwire_channel_outbound_sends_total";
    assert_eq!(w.channel_count(INBOUND, id, "refused").await, 3);
    let (_, view) = w.call("GET", &format!("/v1/channels/{id}"), None).await;
    assert!(
        view["last_inbound_error"]
            .as_str()
            .unwrap()
            .contains("does not match")
    );

    // The same message twice (Meta retries): one turn.
    assert_eq!(w.post(&url, &meta_sig(&b), &b, ct).await, 200);
    assert_eq!(w.post(&url, &meta_sig(&b), &b, ct).await, 200);
    assert_eq!(w.events("message.received").await.len(), 1);
    assert_eq!(fake.got().len(), 1);
    assert_eq!(
        w.store.inbound_counts(id).await.unwrap(),
        vec![("done".to_owned(), 1)]
    );

    // Two messages in one request: both handled, in order.
    let batch = json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{
        "messaging_product":"whatsapp","metadata":{"phone_number_id":"106540352242922"},
        "contacts":[{"profile":{"name":"Ana"},"wa_id":"525500000000"}],
        "messages":[
            {"from":"525500000000","id":"wamid.in2","timestamp":"2","type":"text","text":{"body":"Ana"}},
            {"from":"525500000000","id":"wamid.in3","timestamp":"3","type":"text","text":{"body":"3"}}]}}]}]})
    .to_string()
    .into_bytes();
    assert_eq!(w.post(&url, &meta_sig(&batch), &batch, ct).await, 200);
    let got = fake.got();
    assert_eq!(got.len(), 3);
    assert_eq!(got[2].json()["text"]["body"], "Thank you, Ana!");
    // Counted per channel: three messages taken, one retry of a message
    // already received, three refused requests; three replies sent.
    assert_eq!(w.channel_count(INBOUND, id, "accepted").await, 3);
    assert_eq!(w.channel_count(INBOUND, id, "duplicate").await, 1);
    assert_eq!(w.channel_count(INBOUND, id, "refused").await, 3);
    assert_eq!(w.channel_count(OUTBOUND, id, "sent").await, 3);
    assert_eq!(w.channel_count(OUTBOUND, id, "failed").await, 0);
    let option = w
        .flat()
        .into_iter()
        .find(|p| p.get("option").is_some())
        .unwrap();
    assert_eq!(option["option"], "One year");
}

#[tokio::test]
async fn outbox_retries_in_order_and_records_permanent_failures_sqlite() {
    outbox_retries_in_order_and_records_permanent_failures(Db::Sqlite).await;
}

#[tokio::test]
async fn outbox_retries_in_order_and_records_permanent_failures_postgres() {
    outbox_retries_in_order_and_records_permanent_failures(Db::Postgres).await;
}

async fn outbox_retries_in_order_and_records_permanent_failures(kind: Db) {
    let Some(w) = world(kind).await else {
        return;
    };
    w.elipackage().await;
    let fake = Platform::start("whatsapp").await;
    let (ch, url) = whatsapp(&w, &fake).await;
    let id = ch["id"].as_str().unwrap();
    let ct = "application/json";

    // 429 with Retry-After on the first reply: nothing behind it goes first.
    fake.answer_next(
        429,
        json!({"error": {"message": "(#130429) Rate limit hit", "type": "OAuthException", "code": 130429}}),
        vec![("retry-after", "30".into())],
    );
    let b = wa_text("wamid.in1", "Hola");
    assert_eq!(w.post(&url, &meta_sig(&b), &b, ct).await, 200);
    let b = wa_text("wamid.in2", "Ana");
    assert_eq!(w.post(&url, &meta_sig(&b), &b, ct).await, 200);
    assert_eq!(fake.got().len(), 1, "the menu waits behind the welcome");
    // Retry-After (30 s) is longer than the first delay (10 s): not yet.
    let now = w.clock.advance(15_000);
    w.sender.run_due_once(now).await.unwrap();
    assert_eq!(fake.got().len(), 1);
    let now = w.clock.advance(30_000);
    assert_eq!(w.sender.run_due_once(now).await.unwrap(), 1);
    w.sender.run_due_once(now).await.unwrap();
    let got = fake.got();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].json(), got[1].json(), "the welcome again");
    assert_eq!(
        got[2].json()["interactive"]["type"],
        "list",
        "then the menu"
    );

    // A permanent 400 fails the reply at once with Meta's own words.
    fake.answer_next(
        400,
        json!({"error": {"message": "(#131030) Recipient phone number not in allowed list", "type": "OAuthException", "code": 131030, "fbtrace_id": "A1"}}),
        vec![],
    );
    let b = wa_text("wamid.in3", "1");
    assert_eq!(w.post(&url, &meta_sig(&b), &b, ct).await, 200);
    let (_, failed) = w
        .call(
            "GET",
            &format!("/v1/channels/{id}/messages?status=failed"),
            None,
        )
        .await;
    let failed = failed["data"].as_array().unwrap();
    assert_eq!(failed.len(), 1);
    // Send attempts by outcome: the welcome's 429, then the welcome and the
    // menu, then the 400.
    let sends = "botwire_channel_outbound_sends_total";
    assert_eq!(w.channel_count(sends, id, "retried").await, 1);
    assert_eq!(w.channel_count(sends, id, "sent").await, 2);
    assert_eq!(w.channel_count(sends, id, "failed").await, 1);
    assert_eq!(
        failed[0]["last_error"],
        "(#131030) Recipient phone number not in allowed list (code 131030)"
    );
    let (_, view) = w.call("GET", &format!("/v1/channels/{id}"), None).await;
    assert!(
        view["last_outbound_error"]
            .as_str()
            .unwrap()
            .contains("131030")
    );
    // Every attempt is logged: the 400 with Meta's body.
    let (_, attempts) = w
        .call(
            "GET",
            &format!(
                "/v1/channels/{id}/messages/{}/attempts",
                failed[0]["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(attempts["data"][0]["status"], 400);
    assert!(
        attempts["data"][0]["response_body"]
            .as_str()
            .unwrap()
            .contains("fbtrace_id")
    );
    let (_, first) = w
        .call(
            "GET",
            &format!("/v1/channels/{id}/messages?limit=200"),
            None,
        )
        .await;
    let welcome = first["data"].as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, attempts) = w
        .call(
            "GET",
            &format!("/v1/channels/{id}/messages/{welcome}/attempts"),
            None,
        )
        .await;
    let statuses: Vec<i64> = attempts["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 429], "newest first");
    let events = w.events("message.failed").await;
    assert_eq!(events.len(), 1);
    assert!(
        events[0]["data"]["error"]
            .as_str()
            .unwrap()
            .contains("allowed list")
    );
    // The flat endpoint hears of it too, with the phone.
    let flat = w.flat();
    let f = flat
        .iter()
        .find(|p| p["event"] == "message.failed")
        .unwrap();
    assert_eq!(f["phoneNumber"], "+525500000000");

    // A reply retried past WhatsApp's 24-hour window is refused unsent.
    fake.answer_next(
        503,
        json!({"error": {"message": "Service unavailable", "code": 2}}),
        vec![],
    );
    let b = wa_text("wamid.in4", "Hola de nuevo");
    assert_eq!(w.post(&url, &meta_sig(&b), &b, ct).await, 200);
    let sends = fake.got().len();
    let now = w.clock.advance(25 * 3_600_000);
    w.sender.run_due_once(now).await.unwrap();
    assert_eq!(fake.got().len(), sends, "nothing sent outside the window");
    let (_, failed) = w
        .call(
            "GET",
            &format!("/v1/channels/{id}/messages?status=failed"),
            None,
        )
        .await;
    assert!(
        failed["data"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("24-hour")
    );

    // A test message to someone who never wrote: refused at once.
    let (s, b) = w
        .call(
            "POST",
            &format!("/v1/channels/{id}/messages"),
            Some(json!({"to": "14155550100", "text": "hi"})),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("24 hours"));
    // An approved template may go to them: Meta's template message format.
    let (s, b) = w
        .call(
            "POST",
            &format!("/v1/channels/{id}/messages"),
            Some(json!({"to": "14155550100", "template": {"name": "order_update", "language": "en_US", "params": ["Ana"]}})),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    w.settle().await;
    let last = fake.got().last().cloned().unwrap();
    let sent: Value = serde_json::from_slice(&last.body).unwrap();
    assert_eq!(sent["type"], "template", "{sent}");
    assert_eq!(sent["to"], "14155550100");
    assert_eq!(sent["template"]["name"], "order_update");
    assert_eq!(
        sent["template"]["components"][0]["parameters"][0]["text"],
        "Ana"
    );
    let (s, b) = w
        .call(
            "POST",
            &format!("/v1/channels/{id}/messages"),
            Some(json!({"to": "14155550100", "template": {"name": "Bad Name", "language": "en"}})),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("template.name")
    );
}

#[tokio::test]
async fn telegram_runs_elipackage_with_an_inline_keyboard() {
    let Some(w) = world(Db::Sqlite).await else {
        return;
    };
    w.elipackage().await;
    let fake = Platform::start("telegram").await;
    let ch = w
        .channel(
            json!({"kind": "telegram", "bot_token": "123456:ABC-DEF", "secret_token": "tg_secret-1",
                        "api_base": fake.base, "register": true}),
        )
        .await;
    let url = ch["inbound_url"].as_str().unwrap().to_owned();
    let got = fake.got();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/bot123456:ABC-DEF/setWebhook");
    assert_eq!(got[0].json()["url"], url.as_str());
    assert_eq!(got[0].json()["secret_token"], "tg_secret-1");

    let sig = vec![("x-telegram-bot-api-secret-token", "tg_secret-1".to_owned())];
    let ct = "application/json";
    let msg = |id: i64, text: &str| {
        json!({"update_id": id, "message": {"message_id": id, "from": {"id": 1111111, "is_bot": false, "first_name": "Test", "last_name": "User"},
               "chat": {"id": 1111111, "first_name": "Test", "type": "private"}, "date": 1441645532, "text": text}})
        .to_string()
        .into_bytes()
    };
    assert_eq!(w.post(&url, &[], &msg(1, "hi"), ct).await, 401);
    let wrong = vec![("x-telegram-bot-api-secret-token", "tg_secret-2".to_owned())];
    assert_eq!(w.post(&url, &wrong, &msg(1, "hi"), ct).await, 403);
    assert_eq!(w.post(&url, &sig, &msg(10000, "/start"), ct).await, 200);
    assert_eq!(w.post(&url, &sig, &msg(10001, "Test User"), ct).await, 200);
    let tap = json!({"update_id": 10002, "callback_query": {"id": "4382bfdwdsb323b2d9",
        "from": {"id": 1111111, "first_name": "Test"}, "chat_instance": "-1",
        "message": {"message_id": 3, "chat": {"id": 1111111, "type": "private"}, "date": 1441645550, "text": "x"},
        "data": "One month"}})
    .to_string()
    .into_bytes();
    assert_eq!(w.post(&url, &sig, &tap, ct).await, 200);
    assert_eq!(w.post(&url, &sig, &tap, ct).await, 200, "a retried update");

    let got = fake.got();
    let paths: Vec<&str> = got
        .iter()
        .map(|g| g.path.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "setWebhook",
            "sendMessage",
            "sendMessage",
            "answerCallbackQuery",
            "sendMessage"
        ]
    );
    assert_eq!(got[1].json()["chat_id"], 1111111);
    let keyboard = &got[2].json()["reply_markup"]["inline_keyboard"];
    assert_eq!(
        keyboard[0][0],
        json!({"text": "One month", "callback_data": "One month"})
    );
    assert_eq!(keyboard.as_array().unwrap().len(), 4);
    assert_eq!(got[3].json()["callback_query_id"], "4382bfdwdsb323b2d9");
    assert_eq!(got[4].json()["text"], "Thank you, Test User!");
    let option = w
        .flat()
        .into_iter()
        .find(|p| p.get("option").is_some())
        .unwrap();
    assert_eq!(
        (option["option"].as_str(), option["keyword"].as_i64()),
        (Some("One month"), Some(1))
    );
    assert!(
        w.events("message.received")
            .await
            .iter()
            .all(|e| e["data"]["channel"] == "telegram")
    );
}

#[tokio::test]
async fn twilio_runs_elipackage_over_sms() {
    let Some(w) = world(Db::Sqlite).await else {
        return;
    };
    w.elipackage().await;
    let fake = Platform::start("twilio").await;
    let sid = format!("AC{}", "a".repeat(32));
    let ch = w
        .channel(json!({"kind": "twilio", "account_sid": sid, "auth_token": "tw-token", "from": "+14155550100",
                        "api_base": fake.base}))
        .await;
    let url = ch["inbound_url"].as_str().unwrap().to_owned();
    let form = |msid: &str, body: &str| -> Vec<(String, String)> {
        [
            ("ToCountry", "US"),
            ("SmsMessageSid", msid),
            ("NumMedia", "0"),
            ("SmsSid", msid),
            ("SmsStatus", "received"),
            ("Body", body),
            ("To", "+14155550100"),
            ("NumSegments", "1"),
            ("MessageSid", msid),
            ("AccountSid", sid.as_str()),
            ("From", "+525500000000"),
            ("ApiVersion", "2010-04-01"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    };
    let send = |params: Vec<(String, String)>| {
        let sig = twilio::signature("tw-token", &url, &params);
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        (vec![("x-twilio-signature", sig)], body.into_bytes())
    };
    let ct = "application/x-www-form-urlencoded";
    let (mut h, b) = send(form("SM1", "Hola"));
    h[0].1 = "bm90IGl0".into();
    assert_eq!(w.post(&url, &h, &b, ct).await, 403);
    for (msid, text) in [("SM1", "Hola"), ("SM2", "Ana María"), ("SM3", "2")] {
        let (h, b) = send(form(msid, text));
        assert_eq!(w.post(&url, &h, &b, ct).await, 200);
    }
    let got = fake.got();
    assert_eq!(got.len(), 3);
    assert_eq!(
        got[0].path,
        format!("/2010-04-01/Accounts/{sid}/Messages.json")
    );
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{sid}:tw-token"),
    );
    assert_eq!(
        got[0].headers["authorization"],
        format!("Basic {basic}").as_str()
    );
    assert_eq!(got[0].field("To").as_deref(), Some("+525500000000"));
    assert_eq!(got[0].field("From").as_deref(), Some("+14155550100"));
    assert_eq!(
        got[0].field("StatusCallback").as_deref(),
        Some(url.as_str())
    );
    assert_eq!(
        got[1].field("Body").as_deref(),
        Some(
            "Ana María, enter the best option for streaming membership:\n1. One month\n2. Six months\n3. One year\n4. Raffle"
        )
    );
    assert_eq!(
        got[2].field("Body").as_deref(),
        Some("Thank you, Ana María!")
    );
    let option = w
        .flat()
        .into_iter()
        .find(|p| p.get("option").is_some())
        .unwrap();
    assert_eq!(option["phoneNumber"], "+525500000000");
    assert_eq!(option["keyword"], 2);

    // Twilio's status callback for the last reply: delivered, no turn.
    let sm = format!("SM{:032}", 3);
    let params: Vec<(String, String)> = [
        ("MessageSid", sm.as_str()),
        ("MessageStatus", "delivered"),
        ("AccountSid", sid.as_str()),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let (h, b) = send(params);
    assert_eq!(w.post(&url, &h, &b, ct).await, 200);
    assert_eq!(w.events("message.delivered").await.len(), 1);
    assert_eq!(w.events("message.received").await.len(), 3);
}

#[tokio::test]
async fn messenger_runs_elipackage_with_quick_replies() {
    let Some(w) = world(Db::Sqlite).await else {
        return;
    };
    w.elipackage().await;
    let fake = Platform::start("messenger").await;
    let ch = w
        .channel(json!({"kind": "messenger", "page_id": "109876543210", "page_access_token": "EAAPAGE",
                        "app_secret": "page-secret", "verify_token": "v-token", "api_base": fake.base}))
        .await;
    let url = ch["inbound_url"].as_str().unwrap().to_owned();
    let event = |m: Value| {
        json!({"object": "page", "entry": [{"id": "109876543210", "time": 1458692752478_i64, "messaging": [
            {"sender": {"id": "2498128583546742"}, "recipient": {"id": "109876543210"}, "timestamp": 1458692752478_i64, "message": m}]}]})
        .to_string()
        .replace('é', "\\u00e9")
        .into_bytes()
    };
    let sig = |b: &[u8]| vec![("x-hub-signature-256", meta::signature("page-secret", b))];
    let ct = "application/json";
    let b = event(json!({"mid": "m_1", "text": "Hola"}));
    assert_eq!(w.post(&url, &sig(&b), &b, ct).await, 200);
    let b = event(json!({"mid": "m_2", "text": "André"}));
    assert!(String::from_utf8_lossy(&b).contains("Andr\\u00e9"));
    assert_eq!(w.post(&url, &sig(&b), &b, ct).await, 200);
    let b =
        event(json!({"mid": "m_3", "text": "One year", "quick_reply": {"payload": "One year"}}));
    assert_eq!(w.post(&url, &sig(&b), &b, ct).await, 200);
    let got = fake.got();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].path, "/me/messages");
    assert_eq!(got[0].headers["authorization"], "Bearer EAAPAGE");
    assert_eq!(got[0].json()["recipient"]["id"], "2498128583546742");
    assert_eq!(got[0].json()["messaging_type"], "RESPONSE");
    let q = got[1].json()["message"]["quick_replies"].clone();
    assert_eq!(q.as_array().unwrap().len(), 4);
    assert_eq!(
        q[2],
        json!({"content_type": "text", "title": "One year", "payload": "One year"})
    );
    assert_eq!(got[2].json()["message"]["text"], "Thank you, André!");
    let flat = w.flat();
    let response = flat.iter().find(|p| p.get("response").is_some()).unwrap();
    assert_eq!(response["response"], "André");
    assert_eq!(
        response["phoneNumber"],
        Value::Null,
        "Messenger gives no phone"
    );

    // Delivery and read receipts: statuses only.
    let receipt =
        json!({"object": "page", "entry": [{"id": "109876543210", "time": 1, "messaging": [
        {"sender": {"id": "2498128583546742"}, "recipient": {"id": "109876543210"}, "timestamp": 2,
         "delivery": {"mids": ["m_out1", "m_out2"], "watermark": 1}}]}]})
        .to_string()
        .into_bytes();
    assert_eq!(w.post(&url, &sig(&receipt), &receipt, ct).await, 200);
    assert_eq!(w.events("message.delivered").await.len(), 2);
    assert_eq!(w.events("message.received").await.len(), 3);
}

#[tokio::test]
async fn channel_crud_keeps_secrets_write_only() {
    let Some(w) = world(Db::Sqlite).await else {
        return;
    };
    w.elipackage().await;
    let (s, b) = w
        .call(
            "POST",
            "/v1/bots/elipackage/channels",
            Some(json!({"kind": "fax"})),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    let (s, b) = w
        .call(
            "POST",
            "/v1/bots/elipackage/channels",
            Some(json!({"kind": "telegram", "bot_token": "1:a"})),
        )
        .await;
    assert_eq!(s, 422);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("secret_token"),
        "{b}"
    );
    let (s, b) = w
        .call(
            "POST",
            "/v1/bots/elipackage/channels",
            Some(
                json!({"kind": "telegram", "bot_token": "1:a", "secret_token": "ok", "colour": 1}),
            ),
        )
        .await;
    assert_eq!(s, 422);
    assert!(
        b["error"]["message"].as_str().unwrap().contains("colour"),
        "{b}"
    );
    let (s, b) = w
        .call(
            "POST",
            "/v1/bots/nobot/channels",
            Some(json!({"kind": "telegram", "bot_token": "1:a", "secret_token": "ok"})),
        )
        .await;
    assert_eq!(s, 404, "{b}");

    let ch = w
        .channel(json!({"kind": "twilio", "account_sid": format!("AC{}", "0".repeat(32)), "auth_token": "tok-1",
                        "from": "whatsapp:+14155550100"}))
        .await;
    let id = ch["id"].as_str().unwrap();
    assert_eq!(ch["settings"]["api_base"], "https://api.twilio.com");
    assert_eq!(ch["settings"]["from"], "whatsapp:+14155550100");
    let (s, b) = w
        .call(
            "PATCH",
            &format!("/v1/channels/{id}"),
            Some(json!({"auth_token": "tok-2", "name": "SMS"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["name"], "SMS");
    assert!(!b.to_string().contains("tok-2"));
    let stored = w.store.find_channel(id).await.unwrap().unwrap();
    let botwire::channels::ChannelConfig::Twilio(t) = &stored.config else {
        panic!()
    };
    assert_eq!(t.auth_token.expose(), "tok-2");
    let (s, _) = w
        .call(
            "PATCH",
            &format!("/v1/channels/{id}"),
            Some(json!({"page_id": "1"})),
        )
        .await;
    assert_eq!(s, 422);
    let (_, list) = w.call("GET", "/v1/bots/elipackage/channels", None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);

    // The SSRF guard covers api_base: a channel aimed at the cloud metadata
    // address gets nothing sent there; its message fails as blocked.
    let tg = w
        .channel(
            json!({"kind": "telegram", "bot_token": "1:a", "secret_token": "ok",
                        "api_base": "http://169.254.169.254/latest"}),
        )
        .await;
    let tg_id = tg["id"].as_str().unwrap();
    let (s, b) = w
        .call(
            "POST",
            &format!("/v1/channels/{tg_id}/messages"),
            Some(json!({"to": "42", "text": "hi"})),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    w.settle().await;
    let (_, msgs) = w
        .call("GET", &format!("/v1/channels/{tg_id}/messages"), None)
        .await;
    assert_eq!(msgs["data"][0]["status"], "failed");
    let (_, attempts) = w
        .call(
            "GET",
            &format!(
                "/v1/channels/{tg_id}/messages/{}/attempts",
                msgs["data"][0]["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(attempts["data"][0]["error_kind"], "blocked", "{attempts}");
    w.call("DELETE", &format!("/v1/channels/{tg_id}"), None)
        .await;

    // A transport error quotes the URL, and Telegram's holds the bot token:
    // the attempt log never shows it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let tg = w
        .channel(
            json!({"kind": "telegram", "bot_token": "777:SECRET-TOKEN", "secret_token": "ok",
                        "api_base": closed_base}),
        )
        .await;
    let tg_id = tg["id"].as_str().unwrap();
    let (s, _) = w
        .call(
            "POST",
            &format!("/v1/channels/{tg_id}/messages"),
            Some(json!({"to": "42", "text": "hi"})),
        )
        .await;
    assert_eq!(s, 202);
    w.settle().await;
    let (_, msgs) = w
        .call("GET", &format!("/v1/channels/{tg_id}/messages"), None)
        .await;
    assert_eq!(msgs["data"][0]["status"], "retrying");
    let (_, attempts) = w
        .call(
            "GET",
            &format!(
                "/v1/channels/{tg_id}/messages/{}/attempts",
                msgs["data"][0]["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(attempts["data"][0]["error_kind"], "connect", "{attempts}");
    for shown in [attempts.to_string(), msgs.to_string()] {
        assert!(!shown.contains("SECRET-TOKEN"), "{shown}");
    }
    let (s, _) = w.call("DELETE", &format!("/v1/channels/{id}"), None).await;
    assert_eq!(s, 204);
    let (s, _) = w.call("GET", &format!("/v1/channels/{id}"), None).await;
    assert_eq!(s, 404);
    let r = w
        .client
        .post(format!("{}/channels/{id}/webhook", w.base))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

// ------------------------------------------------------------ crash test

/// A message answered 200 and then lost to a `kill -9` before any worker
/// processed it is processed when a worker starts on the same database.
/// The first process serves the API only (`--role api`), as a node of a
/// scaled-out setup does: it stores and answers, and never processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_stored_before_a_kill_is_processed_after_restart_sqlite() {
    a_message_stored_before_a_kill_is_processed_after_restart(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_stored_before_a_kill_is_processed_after_restart_postgres() {
    a_message_stored_before_a_kill_is_processed_after_restart(Db::Postgres).await;
}

async fn a_message_stored_before_a_kill_is_processed_after_restart(kind: Db) {
    let Some(db) = test_db(kind) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!(
        "botwire_channels_crash_{kind:?}_{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let port = crate::common::server_port();
    let base = format!("http://127.0.0.1:{port}");
    // Installs the TLS provider the HTTP client needs.
    Delivery::new(Settings::default()).unwrap();
    let fake = Platform::start("whatsapp").await;
    let (mut api_node, keys) =
        Node::start(&db.url, port, dir.join("api.log"), &["--role", "api"], &[]);
    let key = keys
        .recv_timeout(Duration::from_secs(30))
        .expect("admin key");
    let client = reqwest::Client::new();
    let text = std::fs::read_to_string("examples/elipackage.yaml").unwrap();
    let r = client
        .post(format!("{base}/v1/bots/import"))
        .bearer_auth(&key)
        .header("content-type", "application/yaml")
        .body(text)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let ch: Value = client
        .post(format!("{base}/v1/bots/elipackage/channels"))
        .bearer_auth(&key)
        .json(&json!({"kind": "whatsapp", "phone_number_id": "106540352242922", "access_token": "EAAG-token",
                      "app_secret": "app-secret", "verify_token": "v", "api_base": fake.base}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = ch["inbound_url"].as_str().unwrap().to_owned();
    let b = wa_text("wamid.crash1", "Hola");
    let r = client
        .post(&url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", meta::signature("app-secret", &b))
        .body(b)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    api_node.kill();
    assert!(
        fake.got().is_empty(),
        "nothing was processed before the kill"
    );

    let (_worker, _) = Node::start(&db.url, port, dir.join("all.log"), &["--role", "all"], &[]);
    let started = std::time::Instant::now();
    while fake.got().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the stored message was never processed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = fake.got();
    assert_eq!(got.len(), 1, "processed once");
    assert_eq!(
        got[0].json()["text"]["body"],
        "Welcome to EliPackage, can you enter your name, please?"
    );
    println!(
        "processed {:.0?} after the worker started",
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(dir);
}
