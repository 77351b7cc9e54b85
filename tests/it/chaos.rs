//! A chaos receiver: every request gets, at random (seeded, so a failure
//! reproduces), a 200, a 500, a 429 with `Retry-After`, a hang past the
//! timeout, a reset connection, or a 10 MB body. With a short retry
//! schedule every delivery must end `succeeded` or `dead`, with each
//! attempt logged under the right kind; a 410 disables its endpoint; and a
//! hanging endpoint must not hold up a healthy one.

use crate::common;

use botwire::delivery::schedule::RetrySchedule;
use botwire::delivery::ssrf::AllowList;
use botwire::delivery::{Delivery, Engine, Settings};
use common::{App, Db, spawn_app_with};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Act {
    Ok,
    ServerError,
    TooMany,
    Hang,
    Reset,
    Huge,
}

const ACTS: [Act; 6] = [
    Act::Ok,
    Act::ServerError,
    Act::TooMany,
    Act::Hang,
    Act::Reset,
    Act::Huge,
];

/// A raw HTTP/1.1 receiver whose answer each test shapes: `/chaos` draws an
/// act per request, `/gone` answers 410, `/fast` answers 200 at once,
/// `/hang` never answers in time.
struct Chaos {
    base: String,
    acts: Arc<Mutex<HashMap<Act, usize>>>,
    fast_arrivals: Arc<Mutex<Vec<Instant>>>,
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(head.split_whitespace().nth(1).unwrap_or("/").to_owned());
        }
    }
}

impl Chaos {
    async fn start(seed: u64) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let acts: Arc<Mutex<HashMap<Act, usize>>> = Arc::default();
        let fast_arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let counter = Arc::new(AtomicU64::new(seed));
        let (a, f) = (acts.clone(), fast_arrivals.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (acts, fast, counter) = (a.clone(), f.clone(), counter.clone());
                tokio::spawn(async move {
                    while let Some(path) = read_request(&mut stream).await {
                        let act = match path.as_str() {
                            "/chaos" => {
                                // A small LCG: reproducible from the seed.
                                let n = counter.fetch_add(1, Ordering::SeqCst);
                                let x = n
                                    .wrapping_mul(6364136223846793005)
                                    .wrapping_add(1442695040888963407)
                                    >> 33;
                                ACTS[(x % ACTS.len() as u64) as usize]
                            }
                            "/hang" => Act::Hang,
                            "/fast" => {
                                fast.lock().unwrap().push(Instant::now());
                                Act::Ok
                            }
                            _ => {
                                let _ = stream
                                    .write_all(
                                        b"HTTP/1.1 410 Gone\r\ncontent-length: 4\r\n\r\ngone",
                                    )
                                    .await;
                                continue;
                            }
                        };
                        *acts.lock().unwrap().entry(act).or_default() += 1;
                        let ok = match act {
                            Act::Ok => stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await,
                            Act::ServerError => {
                                stream.write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\nboom").await
                            }
                            Act::TooMany => {
                                stream
                                    .write_all(b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 0\r\ncontent-length: 4\r\n\r\nslow")
                                    .await
                            }
                            Act::Hang => {
                                tokio::time::sleep(Duration::from_secs(5)).await;
                                return;
                            }
                            Act::Reset => {
                                let _ = stream.set_zero_linger();
                                return;
                            }
                            Act::Huge => {
                                let head = "HTTP/1.1 200 OK\r\ncontent-length: 10485760\r\n\r\n";
                                let _ = stream.write_all(head.as_bytes()).await;
                                let block = vec![b'x'; 64 * 1024];
                                for _ in 0..160 {
                                    if stream.write_all(&block).await.is_err() {
                                        return;
                                    }
                                }
                                Ok(())
                            }
                        };
                        if ok.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            base,
            acts,
            fast_arrivals,
        }
    }
}

async fn setup() -> (App, Engine, Chaos) {
    let settings = Settings {
        allow: AllowList::parse(["127.0.0.0/8"]).unwrap(),
        timeout: Duration::from_millis(300),
        schedule: RetrySchedule::parse("10ms,10ms,10ms,10ms,10ms").unwrap(),
        poll: Some(Duration::from_millis(20)),
        ..Settings::default()
    };
    let delivery = Delivery::new(settings).unwrap();
    let app = spawn_app_with(Db::Sqlite, delivery.clone()).await.unwrap();
    let engine = Engine::start(app.store.clone(), delivery);
    app.create_bot("chaos", "data_collection").await;
    (app, engine, Chaos::start(7).await)
}

async fn endpoint(app: &App, url: String) -> String {
    let r = app
        .admin(
            "POST",
            "/v1/bots/chaos/endpoints",
            Some(json!({"url": url})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn all_deliveries(app: &App, endpoint: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = app
            .admin(
                "GET",
                &format!("/v1/endpoints/{endpoint}/deliveries?limit=200{cursor}"),
                None,
            )
            .await;
        out.extend(r.body["data"].as_array().unwrap().iter().cloned());
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_ends_every_delivery_succeeded_or_dead() {
    let _heavy = common::heavy().await;
    let (app, _engine, chaos) = setup().await;
    let ep = endpoint(&app, format!("{}/chaos", chaos.base)).await;
    for n in 0..60 {
        let r = app
            .admin(
                "POST",
                "/v1/bots/chaos/events",
                Some(json!({"type": "order.paid", "data": {"n": n}})),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    // Bounded wait until every delivery is final.
    let started = Instant::now();
    let deliveries = loop {
        let d = all_deliveries(&app, &ep).await;
        if d.len() == 60
            && d.iter()
                .all(|x| x["status"] == "succeeded" || x["status"] == "dead")
        {
            break d;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "deliveries still open: {:?}",
            d.iter().map(|x| x["status"].clone()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let succeeded = deliveries
        .iter()
        .filter(|d| d["status"] == "succeeded")
        .count();
    // Every attempt is logged with the kind its answer deserves.
    let mut kinds: HashMap<String, usize> = HashMap::new();
    let mut attempts = 0;
    for d in &deliveries {
        let a = app
            .admin(
                "GET",
                &format!(
                    "/v1/deliveries/{}/attempts?limit=200",
                    d["id"].as_str().unwrap()
                ),
                None,
            )
            .await;
        for at in a.body["data"].as_array().unwrap() {
            attempts += 1;
            let kind = at["error_kind"].as_str().unwrap_or("none").to_owned();
            match kind.as_str() {
                "none" => assert!(matches!(at["response_status"].as_u64(), Some(200)), "{at}"),
                "status" => assert!(
                    matches!(at["response_status"].as_u64(), Some(500 | 429)),
                    "{at}"
                ),
                "timeout" | "connect" => assert!(at["response_status"].is_null(), "{at}"),
                other => panic!("unexpected kind {other}: {at}"),
            }
            *kinds.entry(kind).or_default() += 1;
        }
        if d["status"] == "dead" {
            assert_eq!(d["attempts"], 6, "dead only after the whole schedule: {d}");
        }
    }
    let acts = chaos.acts.lock().unwrap().clone();
    eprintln!(
        "chaos: 60 deliveries, {succeeded} succeeded, {} dead, {attempts} attempts; receiver acts {acts:?}; logged kinds {kinds:?}",
        60 - succeeded
    );
    for kind in ["none", "status", "timeout", "connect"] {
        assert!(
            kinds.contains_key(kind),
            "no attempt of kind {kind}: {kinds:?}"
        );
    }
    assert!(acts.contains_key(&Act::Huge), "a 10 MB body was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_and_a_hanging_endpoint_does_not_hold_up_a_healthy_one() {
    let _heavy = common::heavy().await;
    let (app, _engine, chaos) = setup().await;
    let gone = endpoint(&app, format!("{}/gone", chaos.base)).await;
    let _hang = endpoint(&app, format!("{}/hang", chaos.base)).await;
    let _fast = endpoint(&app, format!("{}/fast", chaos.base)).await;
    let mut published = Vec::new();
    for n in 0..40 {
        published.push(Instant::now());
        let r = app
            .admin(
                "POST",
                "/v1/bots/chaos/events",
                Some(json!({"type": "order.paid", "data": {"n": n}})),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let started = Instant::now();
    while chaos.fast_arrivals.lock().unwrap().len() < 40 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the healthy endpoint starved"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let arrivals = chaos.fast_arrivals.lock().unwrap().clone();
    let worst = arrivals
        .iter()
        .zip(&published)
        .map(|(a, p)| a.saturating_duration_since(*p))
        .max()
        .unwrap();
    eprintln!("healthy endpoint beside a hanging one: worst publish→arrival {worst:?}");
    assert!(
        worst < Duration::from_secs(1),
        "a hanging endpoint delayed a healthy one by {worst:?}"
    );
    let r = app
        .admin("GET", &format!("/v1/endpoints/{gone}"), None)
        .await;
    assert_eq!(r.body["enabled"], false, "{}", r.body);
    assert!(
        r.body["disabled_reason"].as_str().unwrap().contains("410"),
        "{}",
        r.body
    );
}
