//! Broadcasts: the API's answers and refusals, what each recipient gets
//! (personalised text, a template outside WhatsApp's window, a skip with
//! its reason), and exactly-once sending through `botwire serve` processes
//! killed with SIGKILL mid-way, to a fake WhatsApp API on 127.0.0.1 that
//! counts what each recipient receives. Campaign broadcasts start each
//! recipient's conversation at a campaign of the flow: the fake receives
//! the campaign's first messages and the contact's answer continues it.
//! The preview renders a message for a sample recipient.

use crate::common::node::Node;
use crate::common::{App, Db, spawn_app, spawn_app_with, test_db};
use axum::body::Bytes;
use axum::extract::State;
use botwire::runtime::broadcasts::BroadcastWorker;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ------------------------------------------------------------ fake WhatsApp

/// A fake WhatsApp Cloud API: records every message body it is sent, and
/// when it arrived.
#[derive(Clone)]
pub(crate) struct Fake {
    pub(crate) base: String,
    pub(crate) got: Arc<Mutex<Vec<Value>>>,
    at: Arc<Mutex<Vec<Instant>>>,
}

type Seen = (Arc<Mutex<Vec<Value>>>, Arc<Mutex<Vec<Instant>>>);

async fn fake_answer(State((got, at)): State<Seen>, body: Bytes) -> axum::Json<Value> {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let n = {
        let mut g = got.lock().unwrap();
        g.push(v);
        at.lock().unwrap().push(Instant::now());
        g.len()
    };
    axum::Json(
        json!({"messaging_product": "whatsapp", "messages": [{"id": format!("wamid.b{n}")}]}),
    )
}

impl Fake {
    pub(crate) async fn start() -> Self {
        let got = Arc::new(Mutex::new(Vec::new()));
        let at = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .fallback(fake_answer)
            .with_state((got.clone(), at.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, got, at }
    }

    /// The texts sent to `to`, in order.
    pub(crate) fn texts_to(&self, to: &str) -> Vec<String> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["to"] == to)
            .map(|v| {
                v["text"]["body"]
                    .as_str()
                    .or_else(|| v["interactive"]["body"]["text"].as_str())
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    /// How many messages each recipient (`to`) received.
    pub(crate) fn per_recipient(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for v in self.got.lock().unwrap().iter() {
            *out.entry(v["to"].as_str().unwrap_or("").to_owned())
                .or_default() += 1;
        }
        out
    }
}

pub(crate) fn channel_body(fake: &Fake) -> Value {
    json!({"kind": "whatsapp", "name": "Shop WhatsApp", "phone_number_id": "106540352242922",
           "access_token": "EAAG-token", "app_secret": "app-secret", "verify_token": "v",
           "api_base": fake.base})
}

/// `n` contacts with phones (every tenth opted out) and `no_phone` known
/// only by an id of the caller's system, all `group` "all".
fn contacts_csv(n: usize, no_phone: usize) -> String {
    let mut csv = String::from("phone,external_id,first_name,group,opted_out\n");
    for i in 0..n {
        csv.push_str(&format!("+1555{i:07},,Name{i},all,{}\n", i % 10 == 0));
    }
    for i in 0..no_phone {
        csv.push_str(&format!(",crm-{i},Crm{i},all,false\n"));
    }
    csv
}

/// Bot `shop` with a WhatsApp channel to `fake`, [`contacts_csv`]`(n,
/// no_phone)` imported, and a segment "All" of them: answers its id.
async fn shop_with_all_segment(app: &App, fake: &Fake, n: usize, no_phone: usize) -> String {
    app.create_bot("shop", "support").await;
    let r = app
        .admin("POST", "/v1/bots/shop/channels", Some(channel_body(fake)))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = app
        .raw(
            "POST",
            "/v1/bots/shop/contacts/import",
            Some(&app.admin_key),
            "text/csv",
            contacts_csv(n, no_phone).into_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = app
        .admin(
            "POST",
            "/v1/bots/shop/segments",
            Some(json!({"name": "All", "filter": "user.group == \"all\""})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

// ------------------------------------------------------ channel workers

/// An app with the channel workers of a node beside it: the inbound
/// processor (messages become turns) and the outbox sender (to the fake).
pub(crate) struct Live {
    pub(crate) app: App,
    pub(crate) delivery: botwire::delivery::Delivery,
    pub(crate) processor: botwire::runtime::inbound::Processor,
    pub(crate) sender: botwire::delivery::outbox::Sender,
}

impl Live {
    pub(crate) async fn start(kind: Db) -> Option<Live> {
        let delivery = botwire::delivery::Delivery::new(botwire::delivery::Settings {
            allow: botwire::delivery::ssrf::AllowList::parse(["127.0.0.0/8"]).unwrap(),
            timeout: Duration::from_secs(5),
            poll: None,
            ..Default::default()
        })
        .unwrap();
        let app = spawn_app_with(kind, delivery.clone()).await?;
        let inbound = botwire::runtime::inbound::Inbound::new(
            app.store.clone(),
            app.chat.clone(),
            delivery.client().clone(),
            Arc::new(botwire::runtime::inbound::ChannelCache::default()),
        );
        let processor =
            botwire::runtime::inbound::Processor::start(inbound, Duration::from_secs(120), None);
        let sender = botwire::delivery::outbox::Sender::start(
            app.store.clone(),
            delivery.clone(),
            &app.base,
        );
        Some(Live {
            app,
            delivery,
            processor,
            sender,
        })
    }

    /// A worker that runs campaign broadcasts with the app's chat runtime.
    pub(crate) fn worker(&self) -> BroadcastWorker {
        BroadcastWorker::with_chat(self.app.chat.clone(), self.delivery.client().clone())
    }

    /// Waits until what was received is answered and what is in the outbox
    /// is sent.
    pub(crate) async fn settle(&self) {
        for _ in 0..3 {
            self.processor.idle().await;
            self.sender.idle().await;
        }
    }

    /// `from` (digits) writes `text` on the WhatsApp channel whose inbound
    /// URL is `url`; waits until it is answered.
    pub(crate) async fn whatsapp(&self, url: &str, from: &str, id: &str, text: &str) {
        let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "contacts": [{"profile": {"name": "Customer"}, "wa_id": from}],
            "messages": [{"from": from, "id": id, "timestamp": "1749416383", "text": {"body": text}, "type": "text"}]},
            "field": "messages"}]}]})
        .to_string()
        .into_bytes();
        let status = self
            .app
            .client
            .post(url)
            .header("content-type", "application/json")
            .header(
                "x-hub-signature-256",
                botwire::channels::meta::signature("app-secret", &body),
            )
            .body(body)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
        self.settle().await;
    }
}

// ------------------------------------------------------------- in-process

#[tokio::test]
async fn broadcast_api_and_recipients_sqlite() {
    broadcast_api_and_recipients(Db::Sqlite).await;
}

#[tokio::test]
async fn broadcast_api_and_recipients_postgres() {
    broadcast_api_and_recipients(Db::Postgres).await;
}

/// The API refuses bad input with what to fix; a broadcast is scheduled,
/// paused, resumed and run by stepping the worker; each recipient gets one
/// outbox message (the template, its parameter personalised, since none
/// has written in 24 hours) or is skipped with its reason.
async fn broadcast_api_and_recipients(kind: Db) {
    let Some(app) = spawn_app(kind).await else {
        return;
    };
    let fake = Fake::start().await;
    let seg = shop_with_all_segment(&app, &fake, 30, 5).await;
    let template = json!({"name": "promo", "language": "en_US", "params": ["{{user.first_name}}"]});

    // Bad input: 4xx saying what to fix.
    for (body, needle) in [
        (json!({"segment": seg, "message": ""}), "message must be"),
        (
            json!({"segment": "seg_nope", "message": "hi"}),
            "is not a segment",
        ),
        (
            json!({"segment": seg, "message": "hi", "rate": 0}),
            "rate must be",
        ),
        (
            json!({"segment": seg, "message": "hi {{memory.x}}"}),
            "merge tag",
        ),
        (
            json!({"segment": seg, "message": "hi", "schedule_at": "tomorrow"}),
            "RFC 3339",
        ),
        (
            json!({"segment": seg, "message": "hi", "template": {"name": "Bad Name", "language": "en"}}),
            "template",
        ),
    ] {
        let r = app
            .admin("POST", "/v1/bots/shop/broadcasts", Some(body.clone()))
            .await;
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        let msg = r.body["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    let r = app
        .admin(
            "POST",
            "/v1/bots/shop/broadcasts",
            Some(json!({"segment": seg})),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let r = app
        .admin(
            "POST",
            "/v1/bots/nobot/broadcasts",
            Some(json!({"segment": seg, "message": "x"})),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.body);

    // Scheduled in the future: the worker leaves it alone.
    let r = app
        .admin(
            "POST",
            "/v1/bots/shop/broadcasts",
            Some(
                json!({"segment": seg, "message": "later", "schedule_at": "2999-01-01T00:00:00Z"}),
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let later = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(r.body["state"], "scheduled");

    let r = app
        .admin(
            "POST",
            "/v1/bots/shop/broadcasts",
            Some(json!({"segment": seg, "message": "Hi {{user.first_name}}", "rate": 1000, "template": template})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(r.body["rate"], 1000);
    assert_eq!(
        r.body["counts"],
        json!({"pending": 0, "sent": 0, "failed": 0, "skipped": 0})
    );

    // Pause before it starts: not started by the worker; resume: it runs.
    let r = app
        .admin("POST", &format!("/v1/broadcasts/{id}/pause"), None)
        .await;
    assert_eq!(
        (r.status, r.body["state"].clone()),
        (200, json!("paused")),
        "{}",
        r.body
    );
    let mut worker = BroadcastWorker::default();
    worker.step(&app.store).await.unwrap();
    let r = app
        .admin("GET", &format!("/v1/broadcasts/{id}"), None)
        .await;
    assert_eq!(r.body["state"], "paused");
    assert_eq!(r.body["counts"]["pending"], 0);
    let r = app
        .admin("POST", &format!("/v1/broadcasts/{id}/pause"), None)
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = app
        .admin("POST", &format!("/v1/broadcasts/{id}/resume"), None)
        .await;
    assert_eq!(
        (r.status, r.body["state"].clone()),
        (200, json!("scheduled")),
        "{}",
        r.body
    );

    let mut handled = 0;
    for _ in 0..50 {
        handled += worker.step(&app.store).await.unwrap();
        let r = app
            .admin("GET", &format!("/v1/broadcasts/{id}"), None)
            .await;
        if r.body["state"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(handled, 35);
    let r = app
        .admin("GET", &format!("/v1/broadcasts/{id}"), None)
        .await;
    assert_eq!(r.body["state"], "completed", "{}", r.body);
    // 30 with phones, 3 of them opted out; 5 with no channel.
    assert_eq!(
        r.body["counts"],
        json!({"pending": 0, "sent": 27, "failed": 0, "skipped": 8}),
        "{}",
        r.body
    );
    assert!(r.body["finished_at"].is_string());
    let recipients = app
        .store
        .list_broadcast_recipients(&id, None, 100)
        .await
        .unwrap();
    let mut reasons: HashMap<String, usize> = HashMap::new();
    for rec in &recipients {
        *reasons
            .entry(rec.reason.clone().unwrap_or_else(|| rec.status.clone()))
            .or_default() += 1;
    }
    assert_eq!(reasons.get("sent"), Some(&27));
    assert_eq!(reasons.get("opted_out"), Some(&3));
    assert_eq!(reasons.get("no_channel"), Some(&5));
    // A second pass sends nobody again.
    assert_eq!(worker.step(&app.store).await.unwrap(), 0);
    // broadcast.started and broadcast.completed, once each, with the tally.
    let r = app
        .admin("GET", "/v1/events?type=broadcast.started", None)
        .await;
    let started = r.body["data"].as_array().unwrap().clone();
    assert_eq!(started.len(), 1, "{}", r.body);
    assert_eq!(started[0]["data"]["broadcast_id"], id.as_str());
    assert_eq!(started[0]["data"]["recipients"], 35);
    let r = app
        .admin("GET", "/v1/events?type=broadcast.completed", None)
        .await;
    let completed = r.body["data"].as_array().unwrap().clone();
    assert_eq!(completed.len(), 1, "{}", r.body);
    assert_eq!(
        completed[0]["data"],
        json!({"broadcast_id": id, "sent": 27, "skipped": {"opted_out": 3, "no_channel": 5, "outside_window": 0}})
    );

    // Without a template, nobody who has not written in 24 hours is sent.
    let r = app
        .admin(
            "POST",
            "/v1/bots/shop/broadcasts",
            Some(json!({"segment": seg, "message": "Text only", "rate": 1000})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let text_only = r.body["id"].as_str().unwrap().to_owned();
    for _ in 0..50 {
        worker.step(&app.store).await.unwrap();
        let r = app
            .admin("GET", &format!("/v1/broadcasts/{text_only}"), None)
            .await;
        if r.body["state"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = app
        .admin("GET", &format!("/v1/broadcasts/{text_only}"), None)
        .await;
    assert_eq!(
        (r.body["state"].clone(), r.body["counts"].clone()),
        (
            json!("completed"),
            json!({"pending": 0, "sent": 0, "failed": 0, "skipped": 35})
        ),
        "{}",
        r.body
    );
    let recipients = app
        .store
        .list_broadcast_recipients(&text_only, None, 100)
        .await
        .unwrap();
    let outside = recipients
        .iter()
        .filter(|r| r.reason.as_deref() == Some("outside_window"))
        .count();
    assert_eq!(outside, 27);

    // The outbox holds one template per recipient, personalised.
    let r = app.admin("GET", "/v1/bots/shop/channels", None).await;
    let ch = r.body["data"][0]["id"].as_str().unwrap().to_owned();
    let mut bodies = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = app
            .admin(
                "GET",
                &format!("/v1/channels/{ch}/messages?limit=200{cursor}"),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        bodies.extend(r.body["data"].as_array().unwrap().iter().cloned());
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(bodies.len(), 27, "one outbox message per recipient");
    let one = bodies
        .iter()
        .find(|m| m["recipient"] == "15550000001")
        .unwrap_or_else(|| panic!("no message to 15550000001: {:?}", bodies.first()));
    let text = one.to_string();
    assert!(text.contains("promo") && text.contains("Name1"), "{text}");
    assert!(
        !bodies.iter().any(|m| m["recipient"] == "15550000000"),
        "opted out"
    );

    // Cancel: the scheduled one; a completed one cannot be.
    let r = app
        .admin("POST", &format!("/v1/broadcasts/{later}/cancel"), None)
        .await;
    assert_eq!(
        (r.status, r.body["state"].clone()),
        (200, json!("cancelled")),
        "{}",
        r.body
    );
    let r = app
        .admin("POST", &format!("/v1/broadcasts/{id}/cancel"), None)
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let msg = r.body["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("completed"), "{msg}");
    let r = app.admin("GET", "/v1/bots/shop/broadcasts", None).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 3, "{}", r.body);
    let r = app.admin("GET", "/v1/broadcasts/bc_nope", None).await;
    assert_eq!(r.status, 404);
}

// ------------------------------------------------------------ throttling

/// A WhatsApp channel limited to 20 messages a second: a broadcast of 63
/// (handled at 1,000 a second) reaches the platform no faster than that.
/// The bucket holds one second's worth, so the last of 63 cannot arrive
/// before (63 - 20) / 20 = 2.15 s after the first; only that lower bound is
/// asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_sends_no_faster_than_its_rate() {
    use botwire::config::ChannelsConfig;
    use botwire::delivery::outbox::Sender;
    let _timed = crate::common::timed().await;
    let Some(app) = spawn_app(Db::Sqlite).await else {
        return;
    };
    let fake = Fake::start().await;
    // 70 with phones, 7 of them opted out: 63 to send.
    let seg = shop_with_all_segment(&app, &fake, 70, 0).await;
    let delivery = botwire::delivery::Delivery::new(botwire::delivery::Settings {
        allow: botwire::delivery::ssrf::AllowList::parse(["127.0.0.0/8"]).unwrap(),
        ..Default::default()
    })
    .unwrap();
    let sender = Sender::start_throttled(
        app.store.clone(),
        delivery,
        &app.base,
        ChannelsConfig {
            rate_whatsapp: 20,
            ..ChannelsConfig::UNTHROTTLED
        },
    );
    let r = app
        .admin(
            "POST",
            "/v1/bots/shop/broadcasts",
            Some(json!({"segment": seg, "message": "Hi", "rate": 1000,
                        "template": {"name": "promo", "language": "en_US"}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let mut worker = BroadcastWorker::default();
    let started = Instant::now();
    while fake.got.lock().unwrap().len() < 63 {
        worker.step(&app.store).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {} of 63 arrived",
            fake.got.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sender.idle().await;
    let at = fake.at.lock().unwrap().clone();
    assert_eq!(at.len(), 63, "each once");
    let spread = *at.last().unwrap() - at[0];
    println!("63 messages at 20/s reached the platform over {spread:.2?}");
    assert!(
        spread >= Duration::from_millis(2_100),
        "63 messages at 20/s arrived within {spread:?}"
    );
    sender.shutdown(Duration::from_secs(1)).await;
}

// ------------------------------------------------------------ bench

fn bench_broadcast(extra: &[&str]) -> String {
    let dir = std::env::temp_dir().join(format!("botwire_bench_broadcast_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_botwire"));
    for (k, _) in std::env::vars() {
        if k.starts_with("BOTWIRE_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .args([
            "bench",
            "broadcast",
            "--recipients",
            "300",
            "--stall-secs",
            "20",
            "--dir",
        ])
        .arg(&dir)
        .args(extra)
        .output()
        .expect("run botwire bench broadcast");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("arrived"), "progress lines: {stderr}");
    let _ = std::fs::remove_dir_all(dir);
    stdout
}

/// `botwire bench broadcast` sends a broadcast to its fake platform and
/// says none doubled and all arrived, with the rate.
#[test]
fn bench_broadcast_reports_none_doubled_sqlite() {
    let out = bench_broadcast(&[]);
    assert!(out.contains("none doubled"), "{out}");
    assert!(out.contains("all arrived: 300 of 300"), "{out}");
    assert!(out.contains("messages/s"), "{out}");
    assert!(
        out.contains("300 sent, 0 failed, 0 skipped, 0 pending"),
        "{out}"
    );
}

#[test]
fn bench_broadcast_reports_none_doubled_postgres() {
    let Some(db) = test_db(Db::Postgres) else {
        return;
    };
    let out = bench_broadcast(&["--database", &db.url]);
    assert!(out.contains("none doubled"), "{out}");
    assert!(out.contains("all arrived: 300 of 300"), "{out}");
}

// ------------------------------------------------------------ crash test

/// The crash test's server: a dead node's leased outbox rows are taken over
/// quickly, and sends go as fast as the fake platform answers (the kills
/// must catch sends in flight).
const NODE_ENV: &[(&str, &str)] = &[
    ("BOTWIRE_DELIVERY_LEASE", "2s"),
    ("BOTWIRE_CHANNELS_RATE_WHATSAPP", "0"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_survives_two_kills_sqlite() {
    a_broadcast_survives_two_kills(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_survives_two_kills_postgres() {
    a_broadcast_survives_two_kills(Db::Postgres).await;
}

/// 10,000 contacts with phones (4,000 on PostgreSQL; a tenth opted out) and
/// 20 without a channel; the serving process is killed with SIGKILL twice
/// while messages are reaching the fake platform, and started again on the
/// same database. Every recipient gets exactly one outbox message, and the
/// platform never gets a message twice: a send cut by a kill (marked
/// sending, outcome not recorded) is settled as failed `interrupted`, never
/// repeated. Every recipient listed `sent` was received exactly once; every
/// reachable one not received is `failed` with that reason; at most the
/// sends in flight at each kill end so; the opted out and unreachable ones
/// carry their reasons and receive nothing; the counts add up.
async fn a_broadcast_survives_two_kills(kind: Db) {
    // 10,000 on SQLite (about 12 s here, debug build). PostgreSQL, where
    // the same run took 31-54 s, sends 4,000 to keep CI short: the kills
    // land at the same fractions and the checks are the same.
    let (n, rate): (usize, u32) = match kind {
        Db::Sqlite => (10_000, 1000),
        Db::Postgres => (4_000, 1000),
    };
    const NO_PHONE: usize = 20;
    // Sends in flight per process at most (delivery.max_in_flight).
    const IN_FLIGHT: usize = 256;
    let _heavy = crate::common::heavy().await;
    let Some(db) = test_db(kind) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!(
        "botwire_broadcast_kill_{kind:?}_{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let port = crate::common::server_port();
    let base = format!("http://127.0.0.1:{port}");
    // Installs the TLS provider the HTTP client needs.
    botwire::delivery::Delivery::new(Default::default()).unwrap();
    let fake = Fake::start().await;
    let (mut node, keys) = Node::start(&db.url, port, dir.join("1.log"), &[], NODE_ENV);
    let key = keys
        .recv_timeout(Duration::from_secs(30))
        .expect("admin key");
    let client = reqwest::Client::new();
    let call = |method: &str, path: &str, body: Option<Value>| {
        let mut req = client
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .bearer_auth(&key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let r = req.send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, b) = call(
        "POST",
        "/v1/bots",
        Some(json!({"id": "shop", "name": "Shop", "type": "support"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = call("POST", "/v1/bots/shop/channels", Some(channel_body(&fake))).await;
    assert_eq!(s, 201, "{b}");
    let r = client
        .post(format!("{base}/v1/bots/shop/contacts/import"))
        .bearer_auth(&key)
        .header("content-type", "text/csv")
        .body(contacts_csv(n, NO_PHONE))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, b) = call(
        "POST",
        "/v1/bots/shop/segments",
        Some(json!({"name": "All", "filter": "user.group == \"all\""})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let seg = b["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let (s, b) = call(
        "POST",
        "/v1/bots/shop/broadcasts",
        Some(json!({"segment": seg, "message": "Hi {{user.first_name}}", "rate": rate,
                    "template": {"name": "promo", "language": "en_US", "params": ["{{user.first_name}}"]}})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let id = b["id"].as_str().unwrap().to_owned();

    let expected_sent = n - n / 10;
    let arrived = || fake.got.lock().unwrap().len();
    // Kill when a quarter, then six tenths, of the messages have arrived.
    for (round, at) in [(2, expected_sent / 4), (3, expected_sent * 6 / 10)] {
        while arrived() < at {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "stuck before kill {}: {} arrived",
                round - 1,
                arrived()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        node.kill();
        let seen = arrived();
        println!(
            "kill {} after {:.1?}: {seen} messages at the platform",
            round - 1,
            started.elapsed()
        );
        assert!(
            seen < expected_sent,
            "everything arrived before kill {}",
            round - 1
        );
        node = Node::start(
            &db.url,
            port,
            dir.join(format!("{round}.log")),
            &[],
            NODE_ENV,
        )
        .0;
    }
    // Done when every reachable recipient's message arrived or failed.
    let counts = |b: &Value| b["counts"].clone();
    loop {
        let (_, b) = call("GET", &format!("/v1/broadcasts/{id}"), None).await;
        let failed = counts(&b)["failed"].as_u64().unwrap_or(0) as usize;
        let received = fake.per_recipient().len();
        if b["state"] == "completed" && received + failed >= expected_sent {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not finished: {b}, {received} received"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let any late send arrive before counting.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, b) = call("GET", &format!("/v1/broadcasts/{id}"), None).await;
    node.kill();
    let api = counts(&b);
    let per = fake.per_recipient();
    let twice: Vec<_> = per.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} recipients received the message more than once, e.g. {:?}",
        twice.len(),
        twice.first()
    );
    let store = botwire::store::Store::open(&db.url).await.unwrap();
    let recipients = store
        .list_broadcast_recipients(&id, None, 2 * n)
        .await
        .unwrap();
    assert_eq!(recipients.len(), n + NO_PHONE);
    // Contact id → phone digits, from the contacts themselves.
    let phones: HashMap<String, String> = store
        .read(|c| {
            c.query(
                "SELECT id, COALESCE(phone, '') FROM contacts WHERE bot_id = 'shop'",
                &[],
            )
        })
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.text(0).unwrap(),
                r.text(1).unwrap().trim_start_matches('+').to_owned(),
            )
        })
        .collect();
    let (mut sent, mut failed, mut in_doubt_received) = (0, 0, 0);
    let mut reasons = HashMap::<String, usize>::new();
    for r in &recipients {
        let phone = phones.get(&r.contact_id).cloned().unwrap_or_default();
        let got = per.get(&phone).copied().unwrap_or(0);
        match r.status.as_str() {
            "sent" => {
                sent += 1;
                assert_eq!(got, 1, "{phone} is listed sent");
            }
            "failed" => {
                failed += 1;
                assert_eq!(
                    r.reason.as_deref(),
                    Some(botwire::store::channels::INTERRUPTED),
                    "{phone}"
                );
                // It may or may not have reached the platform; once at most.
                in_doubt_received += got;
            }
            "skipped" => {
                assert_eq!(got, 0, "{phone} skipped ({:?}) but received", r.reason);
                *reasons
                    .entry(r.reason.clone().unwrap_or_default())
                    .or_default() += 1;
            }
            other => panic!("{phone} still {other}"),
        }
    }
    println!(
        "{n} contacts in {:.1?}: {} recipients reached, {sent} sent, {failed} in doubt after the kills (failed as interrupted; {in_doubt_received} of them had reached the platform), none received twice",
        started.elapsed(),
        per.len(),
    );
    assert_eq!(sent + failed, expected_sent, "every reachable recipient");
    assert!(
        failed <= 2 * IN_FLIGHT,
        "{failed} in doubt: more than the sends in flight at two kills"
    );
    assert_eq!(reasons.get("opted_out"), Some(&(n / 10)));
    assert_eq!(reasons.get("no_channel"), Some(&NO_PHONE));
    for i in (0..n).step_by(10) {
        assert_eq!(per.get(&format!("1555{i:07}")), None, "opted out");
    }
    assert_eq!(
        api,
        json!({"pending": 0, "sent": sent, "failed": failed, "skipped": n / 10 + NO_PHONE}),
        "{b}"
    );
    // Exactly one outbox message per reachable recipient, none still
    // waiting or marked sending.
    let rows = store
        .read(|c| {
            c.query(
                "SELECT recipient, COUNT(*), SUM(CASE WHEN status IN ('sent', 'failed') AND sending_at IS NULL THEN 1 ELSE 0 END)
                 FROM channel_messages GROUP BY recipient",
                &[],
            )
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), expected_sent);
    for r in &rows {
        assert_eq!(r.int(1).unwrap(), 1, "{:?}", r.text(0));
        assert_eq!(r.int(2).unwrap(), 1, "{:?} not settled", r.text(0));
    }
    // Each interrupted send has its `message.failed` event.
    let events = store
        .read(|c| {
            c.query(
                "SELECT COUNT(*) FROM events WHERE type = 'message.failed' AND data LIKE '%interrupted%'",
                &[],
            )
        })
        .await
        .unwrap();
    assert_eq!(events[0].int(0).unwrap() as usize, failed);
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

// ------------------------------------------------------------- campaigns

/// A bot with a `sale` campaign (and a keyword that hands off).
pub(crate) const CAMPAIGN_BOT: &str = r#"
id: shop
name: Shop
type: support
flow:
  start: hello
  keywords: { agent: human }
  nodes:
    hello: { ask: "Hi! Your name?", save_as: name, next: thanks }
    thanks: { message: "Thanks {{memory.name}}", next: done }
    done: { end: true }
    human: { handoff: true, message: "A person will answer." }
  campaigns:
    sale:
      start: s1
      nodes:
        s1: { message: "Sale today{{memory.name}}!", next: s2 }
        s2: { ask: "Want a coupon: yes or no?", save_as: coupon, validate: { kind: choice, options: [yes, no] }, next: s3 }
        s3: { message: "Coupon {{memory.coupon}} noted.", next: s4 }
        s4: { end: true }
"#;

#[tokio::test]
async fn a_campaign_broadcast_starts_each_conversation_sqlite() {
    a_campaign_broadcast_starts_each_conversation(Db::Sqlite).await;
}

#[tokio::test]
async fn a_campaign_broadcast_starts_each_conversation_postgres() {
    a_campaign_broadcast_starts_each_conversation(Db::Postgres).await;
}

/// A campaign broadcast to WhatsApp contacts: one waiting at a question and
/// one whose conversation ended get the campaign's first messages at the
/// fake platform; their next message continues the campaign. One in
/// handoff, one outside the window and one opted out are skipped, each
/// with its reason.
async fn a_campaign_broadcast_starts_each_conversation(kind: Db) {
    let Some(live) = Live::start(kind).await else {
        return;
    };
    let app = &live.app;
    app.import_yaml(CAMPAIGN_BOT.into()).await;
    let fake = Fake::start().await;
    let r = app
        .admin("POST", "/v1/bots/shop/channels", Some(channel_body(&fake)))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let url = r.body["inbound_url"].as_str().unwrap().to_owned();
    // Waiting at the first question.
    live.whatsapp(&url, "525500000001", "w1", "hi").await;
    // Conversation over.
    live.whatsapp(&url, "525500000002", "w2", "hi").await;
    live.whatsapp(&url, "525500000002", "w3", "Bob").await;
    // A person answers.
    live.whatsapp(&url, "525500000003", "w4", "hi").await;
    live.whatsapp(&url, "525500000003", "w5", "agent").await;
    // Opted out.
    live.whatsapp(&url, "525500000004", "w6", "hi").await;
    let r = app
        .admin(
            "GET",
            "/v1/bots/shop/contacts?q=whatsapp:525500000004",
            None,
        )
        .await;
    let opted = r.body["data"][0]["id"].as_str().unwrap().to_owned();
    let r = app
        .admin(
            "PATCH",
            &format!("/v1/contacts/{opted}"),
            Some(json!({"opted_out": true})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Never wrote: outside the window.
    let r = app
        .raw(
            "POST",
            "/v1/bots/shop/contacts/import",
            Some(&app.admin_key),
            "text/csv",
            b"phone,plan\n+15550009999,x\n".to_vec(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = app
        .admin(
            "POST",
            "/v1/bots/shop/segments",
            Some(json!({"name": "Everyone", "filter": "contact.channel == \"whatsapp\" || user.plan == \"x\""})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let seg = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(r.body["count"], 5, "{}", r.body);

    // Refusals name the fields.
    for (body, needle) in [
        (
            json!({"segment": seg, "campaign": "sale", "message": "hi"}),
            "not both",
        ),
        (
            json!({"segment": seg, "campaign": "nope"}),
            "\"nope\" is not a campaign",
        ),
        (
            json!({"segment": seg}),
            "message (with an optional template) or campaign",
        ),
    ] {
        let r = app
            .admin("POST", "/v1/bots/shop/broadcasts", Some(body.clone()))
            .await;
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        let msg = r.body["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(needle), "{body}: {msg}");
    }

    let before = fake.got.lock().unwrap().len();
    let r = app
        .admin(
            "POST",
            "/v1/bots/shop/broadcasts",
            Some(json!({"segment": seg, "campaign": "sale"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        (r.body["campaign"].clone(), r.body["message"].clone()),
        (json!("sale"), json!(""))
    );
    let id = r.body["id"].as_str().unwrap().to_owned();
    // A worker without a chat runtime leaves campaign recipients alone.
    let mut plain = BroadcastWorker::default();
    plain.step(&app.store).await.unwrap();
    let r = app
        .admin("GET", &format!("/v1/broadcasts/{id}"), None)
        .await;
    assert_eq!(r.body["counts"]["pending"], 5, "{}", r.body);
    let mut worker = live.worker();
    let mut handled = 0;
    for _ in 0..50 {
        handled += worker.step(&app.store).await.unwrap();
        let r = app
            .admin("GET", &format!("/v1/broadcasts/{id}"), None)
            .await;
        if r.body["state"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(handled, 5);
    live.settle().await;
    let r = app
        .admin("GET", &format!("/v1/broadcasts/{id}"), None)
        .await;
    assert_eq!(
        (r.body["state"].clone(), r.body["counts"].clone()),
        (
            json!("completed"),
            json!({"pending": 0, "sent": 2, "failed": 0, "skipped": 3})
        ),
        "{}",
        r.body
    );
    let mut reasons: HashMap<String, String> = HashMap::new();
    for rec in app
        .store
        .list_broadcast_recipients(&id, None, 100)
        .await
        .unwrap()
    {
        let contact = app
            .store
            .get_contact(&app.account_id, &rec.contact_id)
            .await
            .unwrap();
        let who = contact.external_id.or(contact.phone).unwrap_or_default();
        reasons.insert(who, rec.reason.unwrap_or(rec.status));
    }
    assert_eq!(reasons["whatsapp:525500000001"], "sent");
    assert_eq!(reasons["whatsapp:525500000002"], "sent");
    assert_eq!(reasons["whatsapp:525500000003"], "in_handoff");
    assert_eq!(reasons["whatsapp:525500000004"], "opted_out");
    assert_eq!(reasons["+15550009999"], "outside_window");
    // The campaign's first messages, once each, over the contact's channel.
    assert_eq!(fake.got.lock().unwrap().len(), before + 4);
    for who in ["525500000001", "525500000002"] {
        let texts = fake.texts_to(who);
        let n = texts.len();
        assert_eq!(
            texts[n - 2..],
            [
                "Sale today!".to_owned(),
                "Want a coupon: yes or no?".to_owned()
            ],
            "{who}: {texts:?}"
        );
    }
    assert!(
        fake.texts_to("525500000003")
            .iter()
            .all(|t| !t.contains("Sale"))
    );
    assert!(fake.texts_to("15550009999").is_empty());
    // A second pass sends nobody again.
    assert_eq!(worker.step(&app.store).await.unwrap(), 0);
    let r = app
        .admin("GET", "/v1/events?type=broadcast.completed", None)
        .await;
    assert_eq!(
        r.body["data"][0]["data"]["skipped"],
        json!({"opted_out": 1, "no_channel": 0, "outside_window": 1, "in_handoff": 1, "no_campaign": 0}),
        "{}",
        r.body
    );

    // The contact's answer continues the campaign's flow.
    live.whatsapp(&url, "525500000001", "w7", "yes").await;
    live.whatsapp(&url, "525500000002", "w8", "2").await;
    assert_eq!(
        fake.texts_to("525500000001").last().map(String::as_str),
        Some("Coupon yes noted.")
    );
    assert_eq!(
        fake.texts_to("525500000002").last().map(String::as_str),
        Some("Coupon no noted.")
    );

    // A campaign removed from the flow after the broadcast was made: its
    // recipients are skipped, and the broadcast completes.
    let r = app
        .admin(
            "POST",
            "/v1/bots/shop/broadcasts",
            Some(json!({"segment": seg, "campaign": "sale"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let gone = r.body["id"].as_str().unwrap().to_owned();
    let flow = CAMPAIGN_BOT
        .split("\nflow:\n")
        .nth(1)
        .unwrap()
        .split("  campaigns:")
        .next()
        .unwrap()
        .lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let r = app
        .raw(
            "PUT",
            "/v1/bots/shop/flow",
            Some(&app.admin_key),
            "application/yaml",
            flow.into_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let sent_before = fake.got.lock().unwrap().len();
    for _ in 0..50 {
        worker.step(&app.store).await.unwrap();
        let r = app
            .admin("GET", &format!("/v1/broadcasts/{gone}"), None)
            .await;
        if r.body["state"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    live.settle().await;
    let r = app
        .admin("GET", &format!("/v1/broadcasts/{gone}"), None)
        .await;
    assert_eq!(
        (r.body["state"].clone(), r.body["counts"]["skipped"].clone()),
        (json!("completed"), json!(5)),
        "{}",
        r.body
    );
    let no_campaign = app
        .store
        .list_broadcast_recipients(&gone, None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.reason.as_deref() == Some("no_campaign"))
        .count();
    assert_eq!(no_campaign, 2);
    assert_eq!(fake.got.lock().unwrap().len(), sent_before);
}

#[tokio::test]
async fn a_preview_renders_the_message_for_a_sample_recipient() {
    let Some(app) = spawn_app(Db::Sqlite).await else {
        return;
    };
    app.create_bot("shop", "support").await;
    let r = app
        .raw(
            "POST",
            "/v1/bots/shop/contacts/import",
            Some(&app.admin_key),
            "text/csv",
            b"phone,first_name,plan\n+15550000001,Ada,vip\n+15550000002,Bob,vip\n+15550000003,Cy,free\n"
                .to_vec(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = app
        .admin(
            "POST",
            "/v1/bots/shop/segments",
            Some(json!({"name": "VIP", "filter": "user.plan == \"vip\""})),
        )
        .await;
    let seg = r.body["id"].as_str().unwrap().to_owned();
    let r = app
        .admin(
            "POST",
            "/v1/bots/shop/broadcasts/preview",
            Some(json!({"segment": seg, "message": "Hi {{user.first_name}} ({{contact.phone}})",
                        "template": {"name": "promo", "language": "en_US", "params": ["{{user.plan}}"]}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["count"], 2);
    let name = r.body["sample"]["contact"]["attributes"]["first_name"]
        .as_str()
        .unwrap()
        .to_owned();
    let phone = r.body["sample"]["contact"]["phone"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(name == "Ada" || name == "Bob", "{}", r.body);
    assert_eq!(r.body["sample"]["text"], format!("Hi {name} ({phone})"));
    assert_eq!(r.body["sample"]["params"], json!(["vip"]));
    // A named contact.
    let cy = app
        .admin("GET", "/v1/bots/shop/contacts?q=%2B15550000003", None)
        .await;
    let cy = cy.body["data"][0]["id"].as_str().unwrap().to_owned();
    let r = app
        .admin(
            "POST",
            "/v1/bots/shop/broadcasts/preview",
            Some(json!({"segment": seg, "message": "Hi {{user.first_name}}", "contact": cy})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["sample"]["text"], "Hi Cy");
    // Nothing matches: no sample.
    let r = app
        .admin(
            "POST",
            "/v1/bots/shop/segments",
            Some(json!({"name": "None", "filter": "user.plan == \"gold\""})),
        )
        .await;
    let empty = r.body["id"].as_str().unwrap().to_owned();
    let r = app
        .admin(
            "POST",
            "/v1/bots/shop/broadcasts/preview",
            Some(json!({"segment": empty, "message": "Hi"})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["count"].clone(), r.body["sample"].clone()),
        (200, json!(0), Value::Null)
    );
    // Refusals name what to fix.
    for (body, needle) in [
        (
            json!({"segment": seg, "message": "Hi {{user.first_name}} {{memory.x}}"}),
            "{{memory.x}}",
        ),
        (
            json!({"segment": seg, "message": "Hi {{contact.email}}"}),
            "{{contact.email}}",
        ),
        (json!({"segment": seg}), "give message or template"),
        (
            json!({"segment": "seg_nope", "message": "x"}),
            "is not a segment",
        ),
        (
            json!({"segment": seg, "message": "x", "contact": "ct_nope"}),
            "is not a contact",
        ),
    ] {
        let r = app
            .admin(
                "POST",
                "/v1/bots/shop/broadcasts/preview",
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        let msg = r.body["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(needle), "{body}: {msg}");
    }
}
