//! Hostile input at the HTTP level: deeply nested JSON, huge headers, an
//! oversize body, and a body dripped one byte at a time. Each gets a 4xx or
//! a closed connection, and the server keeps answering everyone else.

use botwire::api::{self, AppState, RouterOptions};
use botwire::auth::Pepper;
use botwire::store::Store;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Server {
    addr: String,
    key: String,
    _dir: std::path::PathBuf,
}

async fn server() -> Server {
    let dir = std::env::temp_dir().join(format!(
        "botwire-hostile-{}",
        botwire::domain::ids::new_id("t")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.join("h.db").display()))
        .await
        .unwrap();
    let pepper = Pepper::new(b"p".to_vec());
    let (_, key) = store.bootstrap(&pepper).await.unwrap().unwrap();
    let delivery = botwire::delivery::Delivery::new(Default::default()).unwrap();
    let app = api::router(
        AppState::new(store, pepper, delivery),
        &RouterOptions {
            body_limit: 64 * 1024,
            body_deadline: Duration::from_secs(1),
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server {
        addr,
        key,
        _dir: dir,
    }
}

/// Sends raw bytes and returns the status line (empty when the server
/// closed the connection without answering).
async fn raw(addr: &str, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("the server answers or closes, it does not hang")
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

async fn healthz_fast(addr: &str) {
    let t = Instant::now();
    let line = raw(
        addr,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(line.contains("200"), "{line}");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "healthz took {:?}",
        t.elapsed()
    );
}

fn post(key: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST /v1/bots HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_json_huge_headers_and_oversize_bodies_get_4xx() {
    let s = server().await;
    let nested = "[".repeat(60_000);
    let line = raw(&s.addr, &post(&s.key, nested.as_bytes())).await;
    assert!(
        line.contains(" 400 ") || line.contains(" 422 "),
        "nested JSON: {line}"
    );
    let deep_object = format!(
        "{{\"name\":{}1{}, \"type\":\"support\"}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let line = raw(&s.addr, &post(&s.key, deep_object.as_bytes())).await;
    assert!(
        line.contains(" 400 ") || line.contains(" 422 "),
        "deep value: {line}"
    );

    let line = raw(&s.addr, &post(&s.key, &vec![b' '; 200 * 1024])).await;
    assert!(
        line.contains(" 413 ") || line.is_empty(),
        "oversize body: {line}"
    );

    let huge = format!(
        "GET /v1/bots HTTP/1.1\r\nhost: x\r\nx-big: {}\r\nconnection: close\r\n\r\n",
        "a".repeat(512 * 1024)
    );
    let line = raw(&s.addr, huge.as_bytes()).await;
    assert!(
        line.contains(" 431 ") || line.contains(" 400 ") || line.is_empty(),
        "huge header: {line}"
    );
    healthz_fast(&s.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dripped_body_is_cut_off_and_others_are_still_served() {
    let s = server().await;
    let mut drip = TcpStream::connect(&s.addr).await.unwrap();
    let head = format!(
        "POST /v1/bots HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n",
        s.key
    );
    drip.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let dripper = tokio::spawn(async move {
        let mut buf = vec![0u8; 1024];
        for _ in 0..100 {
            if drip.write_all(b" ").await.is_err() {
                break;
            }
            // A read that returns means the server answered or closed.
            if let Ok(r) =
                tokio::time::timeout(Duration::from_millis(200), drip.read(&mut buf)).await
            {
                let n = r.unwrap_or(0);
                return String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned();
            }
        }
        String::new()
    });
    // Meanwhile everyone else is served.
    for _ in 0..5 {
        healthz_fast(&s.addr).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let line = dripper.await.unwrap();
    let took = started.elapsed();
    eprintln!("dripped body: {line:?} after {took:?}");
    assert!(
        line.contains(" 408 ") || line.is_empty(),
        "dripped body: {line:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "cut off after {took:?}, not waited for"
    );
    healthz_fast(&s.addr).await;
}

// Outbound calls: paths, hosts, headers, redaction.

/// Sends `body` as JSON (or a bot file as YAML) with the server's key;
/// answers the status and the error message, if any.
async fn save(s: &Server, method: &str, path: &str, body: serde_json::Value) -> (u16, String) {
    let req = reqwest::Client::new()
        .request(method.parse().unwrap(), format!("http://{}{path}", s.addr))
        .bearer_auth(&s.key);
    let req = match body {
        serde_json::Value::String(yaml) => {
            req.header("content-type", "application/yaml").body(yaml)
        }
        json => req.json(&json),
    };
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    let details = body["error"]["details"].to_string();
    (status, format!("{message} {details}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_urls_and_headers_are_refused_at_save_by_one_set_of_rules() {
    use serde_json::json;
    let s = server().await;
    let (status, m) = save(
        &s,
        "POST",
        "/v1/bots",
        json!({"id": "out", "name": "Out", "type": "support"}),
    )
    .await;
    assert_eq!(status, 201, "{m}");

    // URLs refused for endpoints and story webhooks alike.
    let urls = [
        ("http://u:p@example.com/x", "user name"),
        ("http://token@example.com/x", "user name"),
        ("http://[fe80::1%25eth0]/x", "zone"),
        ("http://exa\tmple.com/x", "tabs"),
        ("http://example.com/a\r\nb", "line breaks"),
        ("http://example.com/a b", "spaces"),
        ("http://example.com/a/../b", ". or .."),
        ("http://example.com/a/%2e%2E/b", ". or .."),
        ("http://example.com/x#frag", "fragment"),
        ("ftp://example.com/x", "http or https"),
    ];
    for (url, hint) in urls {
        let (status, m) = save(&s, "POST", "/v1/bots/out/endpoints", json!({"url": url})).await;
        assert_eq!(status, 422, "endpoint {url:?}: {m}");
        assert!(m.contains(hint), "endpoint {url:?}: {m}");
        let (status, m) = save(
            &s,
            "POST",
            "/v1/bots/out/webhooks",
            json!({"name": "w", "url": url}),
        )
        .await;
        assert_eq!(status, 422, "story webhook {url:?}: {m}");
        assert!(m.contains(hint), "story webhook {url:?}: {m}");
    }
    // Merge tags outside the path and query of a story webhook's URL.
    for url in [
        "http://{{memory.host}}:9001/x",
        "http://127.0.0.1:{{memory.port}}/x",
        "http://{{memory.user}}@example.com/x",
        "http://example.com{{memory.rest}}",
        "https://api.{{ memory.region }}.example.com/x",
        "{{memory.url}}",
    ] {
        let (status, m) = save(
            &s,
            "POST",
            "/v1/bots/out/webhooks",
            json!({"name": "w", "url": url}),
        )
        .await;
        assert_eq!(status, 422, "{url}: {m}");
        assert!(m.contains("only in its path and query"), "{url}: {m}");
    }
    // Headers refused for both.
    let headers = [
        (json!({"x-a": "v\r\nx-evil: 1"}), "control"),
        (json!({"x-a": "v\u{0}"}), "control"),
        (json!({"x-a": "a\tb"}), "control"),
        (json!({"Expect": "100-continue"}), "Expect"),
        (
            json!({"proxy-connection": "keep-alive"}),
            "proxy-connection",
        ),
        (json!({"content-encoding": "gzip"}), "content-encoding"),
        (json!({"Content-MD5": "Q2hlY2s="}), "Content-MD5"),
        (json!({"content-range": "bytes 0-1/2"}), "content-range"),
        (json!({"Host": "internal"}), "Host"),
        (json!({"Transfer-Encoding": "chunked"}), "Transfer-Encoding"),
        (json!({"webhook-signature": "v1,x"}), "webhook-signature"),
        (json!({"X-A": "1", "x-a": "2"}), "twice"),
        (json!({"x-a": "••••abcd"}), "redacted"),
        (json!({"x-a": {"value": "v", "secret": true}}), "secret"),
    ];
    for (h, hint) in &headers {
        let (status, m) = save(
            &s,
            "POST",
            "/v1/bots/out/endpoints",
            json!({"url": "http://example.com/x", "headers": h}),
        )
        .await;
        assert_eq!(status, 422, "endpoint {h}: {m}");
        assert!(m.contains(hint), "endpoint {h}: {m}");
        let (status, m) = save(
            &s,
            "POST",
            "/v1/bots/out/webhooks",
            json!({"name": "w", "url": "http://example.com/x", "headers": h}),
        )
        .await;
        assert_eq!(status, 422, "story webhook {h}: {m}");
        assert!(m.contains(hint), "story webhook {h}: {m}");
    }

    // The other ways a story webhook is saved follow the same rules.
    let (status, m) = save(
        &s,
        "POST",
        "/v1/bots/out/webhooks",
        json!({"name": "w", "url": "http://example.com/users/{{memory.x}}"}),
    )
    .await;
    assert_eq!(status, 201, "{m}");
    let (status, m) = save(
        &s,
        "PATCH",
        "/v1/bots/out/webhooks/w",
        json!({"url": "http://{{memory.host}}/x"}),
    )
    .await;
    assert_eq!(status, 422, "PATCH: {m}");
    let (status, m) = save(
        &s,
        "PATCH",
        "/v1/bots/out/webhooks/w",
        json!({"headers": {"expect": "100-continue"}}),
    )
    .await;
    assert_eq!(status, 422, "PATCH: {m}");
    let (status, m) = save(
        &s,
        "PUT",
        "/v1/bots/out/settings",
        json!({"webhooks": [{"name": "w", "url": "http://{{memory.host}}/x"}]}),
    )
    .await;
    assert_eq!(status, 422, "PUT settings: {m}");
    assert!(m.contains("only in its path and query"), "{m}");
    let (status, m) = save(
        &s,
        "PUT",
        "/v1/bots/out/settings",
        json!({"webhooks": [{"name": "w", "url": "http://example.com/", "headers": {"x-a": "a\r\nb: c"}}]}),
    )
    .await;
    assert_eq!(status, 422, "PUT settings: {m}");
    let file = "id: out2\nname: Out\ntype: support\nwebhooks:\n  - name: w\n    url: \"http://{{memory.host}}:9001/x\"\nflow:\n  start: a\n  nodes:\n    a: { webhook: w, next: b }\n    b: { end: true, message: Bye }\n";
    let (status, m) = save(&s, "POST", "/v1/bots/import", json!(file)).await;
    assert_eq!(status, 422, "import: {m}");
    assert!(m.contains("only in its path and query"), "{m}");

    // Nothing refused was stored.
    let list = |path: &'static str| {
        let (addr, key) = (s.addr.clone(), s.key.clone());
        async move {
            reqwest::Client::new()
                .get(format!("http://{addr}{path}"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let r = list("/v1/bots/out/endpoints").await;
    assert_eq!(r["data"], json!([]), "{r}");
    let r = list("/v1/bots/out/webhooks").await;
    assert_eq!(r["data"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["data"][0]["url"], "http://example.com/users/{{memory.x}}");
}
