//! The SSRF guard through the API, for both kinds of outbound call: event
//! endpoints (their test ping) and story webhooks (their test call). Every
//! private, loopback, link-local, reserved or metadata address, in every
//! spelling, is refused — and logged as `blocked` — unless an allowlist
//! opens it; redirects are never followed.

use crate::common;

use botwire::delivery::ssrf::AllowList;
use botwire::delivery::{Delivery, Settings};
use common::{App, Db, spawn_app_with};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const TARGETS: [&str; 31] = [
    "http://127.0.0.1/",
    "http://127.1/",
    "http://0x7f000001/",
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://0.0.0.0/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/",
    "http://224.0.0.1/",
    "http://240.0.0.1/",
    "http://255.255.255.255/",
    "http://192.0.0.1/",
    "http://198.18.0.1/",
    "http://[::1]/",
    "http://[::]/",
    "http://[fc00::1]/",
    "http://[fd00:ec2::254]/",
    "http://[fe80::1]/",
    "http://[ff02::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[64:ff9b::a00:1]/",
    "http://[2002:7f00:1::]/",
    "http://localhost/",
    "http://foo.localhost/",
    "http://metadata.internal/",
    "https://10.1.2.3:8443/hooks",
];

async fn app(allow: &[&str]) -> App {
    let delivery = Delivery::new(Settings {
        allow: AllowList::parse(allow.iter().copied()).unwrap(),
        ..Settings::default()
    })
    .unwrap();
    let app = spawn_app_with(Db::Sqlite, delivery).await.unwrap();
    app.create_bot("guarded", "data_collection").await;
    app
}

/// Pings an endpoint at `url`: (error kind, status).
async fn ping_endpoint(app: &App, url: &str) -> (Option<String>, Option<u64>) {
    let r = app
        .admin(
            "POST",
            "/v1/bots/guarded/endpoints",
            Some(json!({"url": url})),
        )
        .await;
    assert_eq!(r.status, 201, "{url}: {}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let t = app
        .admin("POST", &format!("/v1/endpoints/{id}/test"), None)
        .await;
    assert_eq!(t.status, 200, "{url}: {}", t.body);
    // The attempt log says the same.
    let d = t.body["delivery_id"].as_str().unwrap();
    let a = app
        .admin("GET", &format!("/v1/deliveries/{d}/attempts"), None)
        .await;
    assert_eq!(
        a.body["data"][0]["error_kind"], t.body["error_kind"],
        "{url}: {}",
        a.body
    );
    app.admin("DELETE", &format!("/v1/endpoints/{id}"), None)
        .await;
    (
        t.body["error_kind"].as_str().map(str::to_owned),
        t.body["status"].as_u64(),
    )
}

/// Test-calls a story webhook at `url`: (outcome, error).
async fn call_story(app: &App, url: &str) -> (String, String) {
    let name = format!(
        "w{}",
        botwire::domain::ids::new_id("x").split('_').nth(1).unwrap()
    );
    let r = app
        .admin(
            "POST",
            "/v1/bots/guarded/webhooks",
            Some(json!({"name": name, "method": "GET", "url": url})),
        )
        .await;
    assert_eq!(r.status, 201, "{url}: {}", r.body);
    let t = app
        .admin(
            "POST",
            &format!("/v1/bots/guarded/webhooks/{name}/test"),
            Some(json!({})),
        )
        .await;
    assert_eq!(t.status, 200, "{url}: {}", t.body);
    let calls = app
        .admin(
            "GET",
            &format!("/v1/bots/guarded/webhooks/{name}/calls"),
            None,
        )
        .await;
    assert_eq!(calls.body["data"][0]["outcome"], "error", "{url}: logged");
    (
        t.body["outcome"].as_str().unwrap().to_owned(),
        t.body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_private_or_reserved_target_is_refused_without_an_allowlist() {
    let app = app(&[]).await;
    let mut refused = 0;
    for url in TARGETS {
        let (kind, status) = ping_endpoint(&app, url).await;
        assert_eq!(kind.as_deref(), Some("blocked"), "endpoint {url}");
        assert_eq!(status, None, "endpoint {url}: nothing was sent");
        let (outcome, error) = call_story(&app, url).await;
        assert_eq!(outcome, "error", "story webhook {url}");
        assert!(error.starts_with("blocked"), "story webhook {url}: {error}");
        refused += 2;
    }
    eprintln!(
        "SSRF matrix: {refused} of {} calls refused",
        TARGETS.len() * 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowlist_opens_only_its_ranges_and_names_are_checked_after_resolution() {
    // A receiver on 127.0.0.1 that counts requests and redirects to the
    // metadata address.
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let receiver = axum::Router::new().fallback(move || {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            (
                axum::http::StatusCode::FOUND,
                [("location", "http://169.254.169.254/latest/meta-data/")],
                "",
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, receiver).await.unwrap() });

    // Allowlisting an unrelated range: `localhost` passes the name check but
    // resolves to 127.0.0.1, which the resolver refuses; nothing arrives.
    let app1 = app(&["198.51.100.0/24"]).await;
    let (kind, _) = ping_endpoint(&app1, &format!("http://localhost:{port}/hook")).await;
    assert_eq!(kind.as_deref(), Some("blocked"));
    let (_, error) = call_story(&app1, &format!("http://localhost:{port}/hook")).await;
    assert!(error.starts_with("blocked"), "{error}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the guard checks the address actually connected"
    );

    // Allowlisting loopback opens it — and only it.
    let app2 = app(&["127.0.0.0/8"]).await;
    let (kind, status) = ping_endpoint(&app2, &format!("http://127.0.0.1:{port}/hook")).await;
    assert_eq!(status, Some(302), "the receiver answered");
    assert_eq!(
        kind.as_deref(),
        Some("status"),
        "a redirect is a failure, not followed"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "one request, no redirect followed"
    );
    let (outcome, error) = call_story(&app2, &format!("http://127.0.0.1:{port}/x")).await;
    assert_eq!(
        (outcome.as_str(), error.contains("302")),
        ("error", true),
        "{error}"
    );
    for url in [
        "http://10.0.0.1/",
        "http://169.254.169.254/",
        "http://[::1]/",
    ] {
        let (kind, _) = ping_endpoint(&app2, url).await;
        assert_eq!(kind.as_deref(), Some("blocked"), "{url} stays closed");
    }
}
