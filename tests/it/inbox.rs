//! Handoff to a person end to end: `examples/helpdesk`'s `agent` keyword
//! hands a conversation over, the bot goes silent, a person answers it
//! (`POST /v1/conversations/{id}/messages`) and gives it back
//! (`POST /v1/conversations/{id}/release`), and the bot answers again.
//!
//! - Over WhatsApp: a fake platform on 127.0.0.1 records what the outbox
//!   sends; the person's answer and the release's replies reach it.
//! - Across two API nodes over one database (the chat API and its poll on
//!   one, the person on the other): the state lives in the database.
//! - In a real browser (headless chromium): the widget shows the person's
//!   answer without the visitor typing (it polls), and the console's Inbox
//!   takes over a conversation that asked for an agent, answers it and
//!   releases it, 375 px wide, by keyboard. Skipped with a notice without
//!   chromium unless `BOTWIRE_REQUIRE_BROWSER=1`; the PostgreSQL cases are
//!   skipped without `BOTWIRE_TEST_POSTGRES_URL`.

use crate::common;
use crate::common::webdriver;

use axum::body::Bytes;
use axum::extract::State;
use botwire::api::{self, AppState, RouterOptions};
use botwire::auth::Pepper;
use botwire::channels::meta;
use botwire::delivery::outbox::Sender;
use botwire::delivery::ssrf::AllowList;
use botwire::delivery::{Delivery, Engine, Settings};
use botwire::runtime::inbound::{Inbound, Processor};
use common::{App, Db, TestDb, spawn_app, test_db};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use webdriver::{Driver, Session, WAIT};

const HANDOFF_SAYS: &str = "A person from the helpdesk will join this conversation shortly.";
const FIRST_QUESTION: &str = "Hi! What is the problem?";

// ------------------------------------------------------- fake WhatsApp API

/// Records every request body and answers as WhatsApp's Cloud API does.
#[derive(Default)]
struct Platform {
    got: Mutex<Vec<Value>>,
    /// The `traceparent` header of each request, in the same order.
    traces: Mutex<Vec<Option<String>>>,
}

async fn platform_answer(
    State(p): State<Arc<Platform>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> axum::Json<Value> {
    let n = {
        let mut got = p.got.lock().unwrap();
        got.push(serde_json::from_slice(&body).unwrap_or(Value::Null));
        p.traces.lock().unwrap().push(
            headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        );
        got.len()
    };
    axum::Json(json!({"messaging_product": "whatsapp",
        "contacts": [{"input": "525500000000", "wa_id": "525500000000"}],
        "messages": [{"id": format!("wamid.out{n}")}]}))
}

/// The texts WhatsApp was asked to send, in order.
fn sent(p: &Platform) -> Vec<String> {
    p.got
        .lock()
        .unwrap()
        .iter()
        .map(|b| {
            b["text"]["body"]
                .as_str()
                .or_else(|| b["interactive"]["body"]["text"].as_str())
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

struct World {
    base: String,
    key: String,
    client: reqwest::Client,
    engine: Engine,
    sender: Sender,
    processor: Processor,
    platform: Arc<Platform>,
    platform_base: String,
    store: botwire::store::Store,
    chat: botwire::runtime::chat::Chat,
    _db: TestDb,
}

async fn world(kind: Db) -> Option<World> {
    let db = test_db(kind)?;
    let store = botwire::store::Store::open(&db.url).await.unwrap();
    let pepper = Pepper::new(b"test pepper".to_vec());
    let (_, key) = store.bootstrap(&pepper).await.unwrap().unwrap();
    let delivery = Delivery::new(Settings {
        allow: AllowList::parse(["127.0.0.0/8"]).unwrap(),
        timeout: Duration::from_secs(5),
        poll: None,
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
    let chat = state.chat.clone();
    let app = api::router(state, &RouterOptions::default());
    tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app).await.unwrap();
    });
    let engine = Engine::start(store.clone(), delivery.clone());
    let sender = Sender::start(store.clone(), delivery.clone(), &base);
    let processor = Processor::start(inbound, Duration::from_secs(120), None);
    let platform = Arc::new(Platform::default());
    let fake = axum::Router::new()
        .fallback(platform_answer)
        .with_state(platform.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let platform_base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, fake).await });
    Some(World {
        base,
        key,
        client: reqwest::Client::new(),
        engine,
        sender,
        processor,
        platform,
        platform_base,
        store,
        chat,
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

    async fn settle(&self) {
        for _ in 0..3 {
            self.processor.idle().await;
            self.sender.idle().await;
            self.engine.idle().await;
        }
    }

    /// José writes `text` on WhatsApp; waits until it is answered and sent.
    async fn whatsapp(&self, url: &str, id: &str, text: &str) {
        self.whatsapp_traced(url, id, text, None).await;
    }

    /// As [`World::whatsapp`], the platform's request carrying `traceparent`.
    async fn whatsapp_traced(&self, url: &str, id: &str, text: &str, traceparent: Option<&str>) {
        let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "contacts": [{"profile": {"name": "José Pérez"}, "wa_id": "525500000000"}],
            "messages": [{"from": "525500000000", "id": id, "timestamp": "1749416383", "text": {"body": text}, "type": "text"}]},
            "field": "messages"}]}]})
        .to_string()
        .into_bytes();
        let mut req = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("x-hub-signature-256", meta::signature("app-secret", &body));
        if let Some(t) = traceparent {
            req = req.header("traceparent", t);
        }
        let status = req.body(body).send().await.unwrap().status();
        assert_eq!(status, 200);
        self.settle().await;
    }
}

async fn import_helpdesk(client: &reqwest::Client, base: &str, key: &str) {
    let text = std::fs::read_to_string("examples/helpdesk.yaml").unwrap();
    let r = client
        .post(format!("{base}/v1/bots/import"))
        .bearer_auth(key)
        .header("content-type", "application/yaml")
        .body(text)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

fn types(events: &Value) -> Vec<String> {
    events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

// ----------------------------------------------------------------- timers

#[tokio::test]
async fn a_reminder_reaches_a_whatsapp_contact() {
    let Some(w) = world(Db::Sqlite).await else {
        return;
    };
    import_helpdesk(&w.client, &w.base, &w.key).await;
    let (s, ch) = w
        .call(
            "POST",
            "/v1/bots/helpdesk/channels",
            Some(json!({"kind": "whatsapp", "name": "Helpdesk", "phone_number_id": "106540352242922",
                        "access_token": "EAAG-token", "app_secret": "app-secret", "verify_token": "verify-me",
                        "api_base": format!("{}/v21.0", w.platform_base)})),
        )
        .await;
    assert_eq!(s, 201, "{ch}");
    let url = ch["inbound_url"].as_str().unwrap().to_owned();
    w.whatsapp(&url, "wamid.t1", "hi").await;
    w.whatsapp(&url, "wamid.t2", "The VPN is down").await;
    let before = sent(&w.platform).len();
    assert_eq!(before, 2, "{:?}", sent(&w.platform));

    // Ten minutes later (the severity question's remind_after).
    let said = w
        .chat
        .fire_due_timers(&w.store, botwire::store::now_ms() + 11 * 60_000, 100)
        .await
        .unwrap();
    assert_eq!(said.len(), 1, "{said:?}");
    w.settle().await;
    let texts = sent(&w.platform);
    assert_eq!(texts.len(), before + 1, "{texts:?}");
    assert!(
        texts[before].starts_with("Are you still there?"),
        "the reminder went out on WhatsApp: {texts:?}"
    );
}

#[tokio::test]
async fn channel_sends_continue_the_trace_that_caused_them() {
    let Some(w) = world(Db::Sqlite).await else {
        return;
    };
    import_helpdesk(&w.client, &w.base, &w.key).await;
    let (s, ch) = w
        .call(
            "POST",
            "/v1/bots/helpdesk/channels",
            Some(json!({"kind": "whatsapp", "name": "Helpdesk", "phone_number_id": "106540352242922",
                        "access_token": "EAAG-token", "app_secret": "app-secret", "verify_token": "verify-me",
                        "api_base": format!("{}/v21.0", w.platform_base)})),
        )
        .await;
    assert_eq!(s, 201, "{ch}");
    let url = ch["inbound_url"].as_str().unwrap().to_owned();
    let trace_of = |tp: &Option<String>| -> String {
        let tp = tp.as_deref().expect("the send carries a traceparent");
        let fields: Vec<&str> = tp.split('-').collect();
        assert_eq!(fields.len(), 4, "{tp}");
        assert_eq!((fields[0], fields[3]), ("00", "01"), "{tp}");
        fields[1].to_owned()
    };

    // The reply to an inbound message continues the platform request's trace.
    let inbound_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    w.whatsapp_traced(
        &url,
        "wamid.tr1",
        "hi",
        Some(&format!("00-{inbound_trace}-00f067aa0ba902b7-01")),
    )
    .await;
    let traces = w.platform.traces.lock().unwrap().clone();
    assert_eq!(traces.len(), 1, "{traces:?}");
    assert_eq!(trace_of(&traces[0]), inbound_trace);
    assert!(
        !traces[0].as_deref().unwrap().contains("00f067aa0ba902b7"),
        "a span of its own"
    );

    // A person's answer continues the trace of the API request that sent it.
    w.whatsapp(&url, "wamid.tr2", "AGENT").await;
    let (_, inbox) = w
        .call("GET", "/v1/conversations?status=handoff", None)
        .await;
    let conv = inbox["data"][0]["id"].as_str().unwrap().to_owned();
    let api_trace = "0af7651916cd43dd8448eb211c80319c";
    let r = w
        .client
        .post(format!("{}/v1/conversations/{conv}/messages", w.base))
        .bearer_auth(&w.key)
        .header("traceparent", format!("00-{api_trace}-b7ad6b7169203331-01"))
        .json(&json!({"text": "Hola, soy Eve."}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    w.settle().await;
    let traces = w.platform.traces.lock().unwrap().clone();
    assert_eq!(sent(&w.platform).last().unwrap(), "Hola, soy Eve.");
    assert_eq!(trace_of(traces.last().unwrap()), api_trace);
    // Without a traceparent of their own, sends still carry one.
    assert!(traces.iter().all(Option::is_some), "{traces:?}");
}

// --------------------------------------------------------------- WhatsApp

#[tokio::test]
async fn a_person_answers_on_whatsapp_and_gives_it_back_sqlite() {
    a_person_answers_on_whatsapp_and_gives_it_back(Db::Sqlite).await;
}

#[tokio::test]
async fn a_person_answers_on_whatsapp_and_gives_it_back_postgres() {
    a_person_answers_on_whatsapp_and_gives_it_back(Db::Postgres).await;
}

async fn a_person_answers_on_whatsapp_and_gives_it_back(kind: Db) {
    let Some(w) = world(kind).await else {
        return;
    };
    import_helpdesk(&w.client, &w.base, &w.key).await;
    let (s, ch) = w
        .call(
            "POST",
            "/v1/bots/helpdesk/channels",
            Some(json!({"kind": "whatsapp", "name": "Helpdesk", "phone_number_id": "106540352242922",
                        "access_token": "EAAG-token", "app_secret": "app-secret", "verify_token": "verify-me",
                        "api_base": format!("{}/v21.0", w.platform_base)})),
        )
        .await;
    assert_eq!(s, 201, "{ch}");
    let url = ch["inbound_url"].as_str().unwrap().to_owned();

    w.whatsapp(&url, "wamid.in1", "hi").await;
    w.whatsapp(&url, "wamid.in2", "AGENT").await;
    assert_eq!(sent(&w.platform), [FIRST_QUESTION, HANDOFF_SAYS]);
    // The bot is silent now: the message is kept, nothing is sent.
    w.whatsapp(&url, "wamid.in3", "is anyone there?").await;
    assert_eq!(sent(&w.platform).len(), 2, "{:?}", sent(&w.platform));

    let (s, inbox) = w
        .call(
            "GET",
            "/v1/conversations?status=handoff&channel=whatsapp",
            None,
        )
        .await;
    assert_eq!(s, 200, "{inbox}");
    assert_eq!(inbox["data"].as_array().unwrap().len(), 1, "{inbox}");
    let conv = inbox["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(inbox["data"][0]["bot_id"], "helpdesk");
    let (_, active) = w.call("GET", "/v1/conversations?status=active", None).await;
    assert_eq!(active["data"], json!([]), "{active}");

    // Refusals say what to fix.
    let (s, b) = w
        .call(
            "POST",
            &format!("/v1/conversations/{conv}/messages"),
            Some(json!({"text": "   "})),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    let (s, b) = w
        .call(
            "POST",
            &format!("/v1/conversations/{conv}/release"),
            Some(json!({"node": "nowhere"})),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("nowhere"),
        "{b}"
    );
    let (s, _) = w
        .call(
            "POST",
            "/v1/conversations/cnv_00000000000000000000000000/messages",
            Some(json!({"text": "hello"})),
        )
        .await;
    assert_eq!(s, 404);

    // The person answers: it reaches WhatsApp through the outbox.
    let (s, b) = w
        .call(
            "POST",
            &format!("/v1/conversations/{conv}/messages"),
            Some(json!({"text": "Hola José, soy Eve. ¿Qué impresora?"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "handoff");
    w.settle().await;
    assert_eq!(
        sent(&w.platform).last().unwrap(),
        "Hola José, soy Eve. ¿Qué impresora?"
    );

    // Given back at the first question: the bot asks it on WhatsApp.
    let (s, b) = w
        .call(
            "POST",
            &format!("/v1/conversations/{conv}/release"),
            Some(json!({"node": "describe"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "active");
    assert_eq!(b["replies"], json!([FIRST_QUESTION]));
    w.settle().await;
    assert_eq!(sent(&w.platform).last().unwrap(), FIRST_QUESTION);
    for (path, body) in [
        ("messages", json!({"text": "too late"})),
        ("release", json!({})),
    ] {
        let (s, b) = w
            .call(
                "POST",
                &format!("/v1/conversations/{conv}/{path}"),
                Some(body),
            )
            .await;
        assert_eq!(s, 409, "{path}: {b}");
        assert!(
            b["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not in handoff"),
            "{b}"
        );
    }

    // The bot answers again.
    w.whatsapp(&url, "wamid.in4", "Printer jam").await;
    assert!(
        sent(&w.platform)
            .last()
            .unwrap()
            .starts_with("How bad is it"),
        "{:?}",
        sent(&w.platform)
    );
    let (_, events) = w
        .call(
            "GET",
            &format!("/v1/events?conversation={conv}&limit=50"),
            None,
        )
        .await;
    let types = types(&events);
    for (t, n) in [
        ("conversation.handoff", 1),
        ("agent.message", 1),
        ("conversation.released", 1),
        ("message.received", 4),
    ] {
        assert_eq!(
            types.iter().filter(|x| *x == t).count(),
            n,
            "{t} in {types:?}"
        );
    }
    let agent = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "agent.message")
        .unwrap();
    assert_eq!(agent["data"]["channel"], "whatsapp");
    assert_eq!(agent["data"]["text"], "Hola José, soy Eve. ¿Qué impresora?");
    let (_, detail) = w
        .call(
            "GET",
            &format!("/v1/bots/helpdesk/conversations/{conv}"),
            None,
        )
        .await;
    let lines: Vec<&str> = detail["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["direction"].as_str().unwrap())
        .collect();
    assert_eq!(
        lines,
        ["in", "out", "in", "out", "in", "agent", "out", "in", "out"],
        "{detail}"
    );
}

// ------------------------------------------------------------ two nodes

#[tokio::test]
async fn handoff_state_holds_across_nodes_sqlite() {
    handoff_state_holds_across_nodes(Db::Sqlite).await;
}

#[tokio::test]
async fn handoff_state_holds_across_nodes_postgres() {
    handoff_state_holds_across_nodes(Db::Postgres).await;
}

async fn handoff_state_holds_across_nodes(kind: Db) {
    let Some(app) = spawn_app(kind).await else {
        return;
    };
    app.import_example("helpdesk").await;
    let other = app.second_node().await;
    let key = app.admin_key.clone();
    let chat = |text: &'static str| {
        let app = &app;
        async move {
            let r = app
                .admin(
                    "POST",
                    "/v1/bots/helpdesk/chat",
                    Some(json!({"contact": {"phone": "+34600000777"}, "text": text})),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            r.body
        }
    };
    let on_other = |method: &'static str, path: String, body: Option<Value>| {
        let (app, other, key) = (&app, other.clone(), key.clone());
        async move {
            let mut req = app
                .client
                .request(method.parse().unwrap(), format!("{other}{path}"))
                .bearer_auth(key);
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let poll = "/v1/bots/helpdesk/chat/messages?contact=%2B34600000777";

    chat("hi").await;
    let b = chat("agent").await;
    assert_eq!(b["replies"][0]["text"], HANDOFF_SAYS);
    let conv = b["conversation_id"].as_str().unwrap().to_owned();
    let b = chat("hello?").await;
    assert_eq!(b["replies"], json!([]), "the bot stays silent: {b}");
    let start = app.admin("GET", poll, None).await;
    assert_eq!(start.status, 200, "{}", start.body);
    assert_eq!(start.body["messages"], json!([]));
    assert_eq!(start.body["handoff"], true);
    let cursor = start.body["cursor"].as_str().unwrap().to_owned();

    // The person works on the other node.
    let (s, inbox) = on_other("GET", "/v1/conversations?status=handoff".into(), None).await;
    assert_eq!(s, 200);
    assert_eq!(inbox["data"][0]["id"], conv.as_str(), "{inbox}");
    let (s, b) = on_other(
        "POST",
        format!("/v1/conversations/{conv}/messages"),
        Some(json!({"text": "Eve here: which printer?"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let b = chat("the one on floor 2").await;
    assert_eq!(b["replies"], json!([]), "still with the person: {b}");

    // The chat API's poll on the first node shows the person's answer once.
    let got = app
        .admin("GET", &format!("{poll}&after={cursor}"), None)
        .await;
    let messages = got.body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{}", got.body);
    assert_eq!(messages[0]["from"], "agent");
    assert_eq!(
        messages[0]["replies"][0]["text"],
        "Eve here: which printer?"
    );
    let cursor = got.body["cursor"].as_str().unwrap().to_owned();
    let again = app
        .admin("GET", &format!("{poll}&after={cursor}"), None)
        .await;
    assert_eq!(again.body["messages"], json!([]), "{}", again.body);

    // Released on the other node, to the start: the first node's bot answers.
    let (s, b) = on_other("POST", format!("/v1/conversations/{conv}/release"), None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["replies"], json!([FIRST_QUESTION]));
    let got = app
        .admin("GET", &format!("{poll}&after={cursor}"), None)
        .await;
    assert_eq!(got.body["handoff"], false);
    assert_eq!(got.body["messages"][0]["from"], "bot", "{}", got.body);
    assert_eq!(
        got.body["messages"][0]["replies"][0]["text"],
        FIRST_QUESTION
    );
    let b = chat("Printer jam").await;
    assert!(
        b["replies"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("How bad is it"),
        "{b}"
    );
    let (s, _) = on_other("POST", format!("/v1/conversations/{conv}/release"), None).await;
    assert_eq!(s, 409);

    // A publishable key polls only from a page on an origin it lists.
    let r = app
        .admin(
            "POST",
            "/v1/keys",
            Some(json!({"name": "site", "kind": "publishable", "bot_id": "helpdesk", "origins": ["https://shop.example"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let publishable = r.body["key"].as_str().unwrap().to_owned();
    let visitor_poll = format!(
        "{}/v1/bots/helpdesk/chat/messages?contact=v_0123456789abcdef",
        app.base
    );
    for (headers, want) in [
        (vec![("origin", "https://shop.example")], 200),
        (vec![("origin", "https://evil.example")], 403),
        (vec![("sec-fetch-site", "same-origin")], 403),
        (vec![], 403),
    ] {
        let mut req = app.client.get(&visitor_poll).bearer_auth(&publishable);
        for (k, v) in &headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), want, "{headers:?}");
    }
    let r = app
        .admin("GET", "/v1/conversations?status=bogus", None)
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("handoff")
    );
}

// ------------------------------------------------------------- browsers

/// JavaScript that finds the widget's shadow root.
const ROOT: &str = "const root = document.querySelector('[data-botwire-widget]').shadowRoot;";

/// The widget's log as the visitor reads it (inside its shadow root).
async fn widget_log(s: &Session) -> String {
    s.execute(
        &format!("{ROOT} return root ? root.querySelector('.log').innerText : ''"),
        vec![],
    )
    .await
    .as_str()
    .unwrap_or("")
    .to_owned()
}

async fn wait_widget(s: &Session, want: &str) -> String {
    s.wait_until(&format!("the widget to show {want:?}"), WAIT, || async {
        let text = widget_log(s).await;
        text.contains(want).then_some(text)
    })
    .await
}

/// The conversation of `bot` waiting for a person.
async fn handed_off(app: &App) -> String {
    let r = app
        .admin("GET", "/v1/conversations?status=handoff", None)
        .await;
    r.body["data"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no conversation in handoff: {}", r.body))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_widget_shows_a_person_answer_without_the_visitor_typing() {
    // A browser loads both cores: never beside a heavy test.
    let _timed = common::timed().await;
    if !webdriver::browser_available() {
        return;
    }
    let app = spawn_app(Db::Sqlite).await.expect("sqlite always runs");
    app.import_example("helpdesk").await;
    let r = app
        .admin(
            "POST",
            "/v1/keys",
            Some(json!({"name": "website", "kind": "publishable", "bot_id": "helpdesk", "origins": [app.base]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let key = r.body["key"].as_str().unwrap().to_owned();
    let driver = Driver::start().await;
    let s = driver.session(1280, 800).await;
    s.goto(&format!("{}/widget/demo?bot=helpdesk&key={key}", app.base))
        .await;
    s.wait_until("the widget's bubble", WAIT, || async {
        let v = s
            .execute(
                &format!("{ROOT} if (!root) return false; root.querySelector('.bubble').click(); return true;"),
                vec![],
            )
            .await;
        (v == true).then_some(())
    })
    .await;
    s.type_keys("hi\u{E007}").await;
    wait_widget(&s, FIRST_QUESTION).await;
    s.type_keys("agent\u{E007}").await;
    wait_widget(&s, HANDOFF_SAYS).await;

    // The person answers; the visitor does nothing.
    let conv = handed_off(&app).await;
    let r = app
        .admin(
            "POST",
            &format!("/v1/conversations/{conv}/messages"),
            Some(json!({"text": "Hi, this is Eve from the helpdesk."})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let text = wait_widget(&s, "Hi, this is Eve from the helpdesk.").await;
    assert_eq!(text.matches("Eve from the helpdesk").count(), 1, "{text}");
    s.screenshot("inbox-widget-agent").await;

    // Released: the bot's question arrives the same way.
    let r = app
        .admin("POST", &format!("/v1/conversations/{conv}/release"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    s.wait_until("the bot's question a second time", WAIT, || async {
        (widget_log(&s).await.matches(FIRST_QUESTION).count() == 2).then_some(())
    })
    .await;
    s.type_keys("Printer jam\u{E007}").await;
    let text = wait_widget(&s, "How bad is it").await;
    assert_eq!(text.matches("Eve from the helpdesk").count(), 1, "{text}");
    let severe = s.severe_logs().await;
    assert!(severe.is_empty(), "browser console errors: {severe:#?}");
    s.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_takes_over_answers_and_releases_a_conversation() {
    // A browser loads both cores: never beside a heavy test.
    let _timed = common::timed().await;
    if !webdriver::browser_available() {
        return;
    }
    let app = spawn_app(Db::Sqlite).await.expect("sqlite always runs");
    app.import_example("helpdesk").await;
    let chat = |phone: &'static str, text: &'static str| {
        let app = &app;
        async move {
            let r = app
                .admin(
                    "POST",
                    "/v1/bots/helpdesk/chat",
                    Some(json!({"contact": {"phone": phone}, "text": text})),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            r.body
        }
    };
    chat("+34600000888", "hi").await;
    let driver = Driver::start().await;
    let s = driver.session(375, 800).await;
    s.goto(&format!("{}/", app.base)).await;
    s.fill("input[name=key]", &app.admin_key).await;
    s.click("form button[type=submit]").await;
    s.wait_text("h1", "Bots").await;
    s.goto(&format!("{}/#/inbox", app.base)).await;
    s.wait_text("h1", "Inbox").await;
    s.wait_text("tbody", "Bot answering").await;

    // The contact asks for a person: the list shows it without a reload.
    chat("+34600000888", "agent").await;
    s.wait_text("tbody", "Waiting for a person").await;
    s.select("select[name=status]", "handoff").await;
    let conv = handed_off(&app).await;
    s.wait_text("tbody", &conv).await;
    s.screenshot("inbox-list").await;
    s.click(&format!("a[href='#/inbox/helpdesk/{conv}']")).await;
    s.wait_text("h1", &conv).await;
    s.wait_text(".transcript", HANDOFF_SAYS).await;
    s.wait_text("main", "Contact attributes").await;

    // Answered by keyboard: Ctrl+Enter sends.
    s.keys(
        "textarea[name=text]",
        "Hello, Eve here. Which printer?\u{E009}\u{E007}\u{E000}",
    )
    .await;
    s.wait_text(".transcript", "Hello, Eve here. Which printer?")
        .await;
    chat("+34600000888", "floor 2").await;
    s.wait_text(".transcript", "floor 2").await;
    s.screenshot("inbox-conversation").await;

    // Given back at the first question.
    s.select("select[name=node]", "describe").await;
    s.click("form[aria-label='Give back to the bot'] button[type=submit]")
        .await;
    s.wait_text("main", "Bot answering").await;
    let b = chat("+34600000888", "Printer jam").await;
    assert!(
        b["replies"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("How bad is it"),
        "{b}"
    );
    s.wait_text(".transcript", "Printer jam").await;
    let detail = app
        .admin(
            "GET",
            &format!("/v1/bots/helpdesk/conversations/{conv}"),
            None,
        )
        .await;
    let agent: Vec<&Value> = detail.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] == "agent")
        .collect();
    assert_eq!(agent.len(), 1, "{}", detail.body);
    assert_eq!(agent[0]["text"], "Hello, Eve here. Which printer?");
    let events = app
        .admin(
            "GET",
            &format!("/v1/events?conversation={conv}&limit=50"),
            None,
        )
        .await;
    let types = types(&events.body);
    assert!(
        types.contains(&"conversation.released".to_owned()),
        "{types:?}"
    );
    s.screenshot("inbox-released").await;
    let severe = s.severe_logs().await;
    assert!(severe.is_empty(), "browser console errors: {severe:#?}");
    s.quit().await;
}
