//! Story webhooks end to end (seed 002): a real server, and a real HTTP
//! receiver on 127.0.0.1 playing the user's API. Golden transcripts of the
//! three examples — the random number, the favourite thing, the age — and
//! every failure path: timeout, refused connection, blocked target,
//! non-2xx, non-JSON, a known key of the wrong type; a chat answer that
//! would walk up the URL's path; secret header values shown once.

use crate::common;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Uri};
use axum::routing::{get, post};
use botwire::delivery::signing::{Secret, verify};
use botwire::delivery::ssrf::AllowList;
use botwire::delivery::{Delivery, Settings};
use common::{App, Db, spawn_app_with};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, HeaderMap, String)>>>);

async fn receiver() -> (String, Seen) {
    let seen = Seen::default();
    let app = axum::Router::new()
        .route(
            "/random_number",
            get(|State(s): State<Seen>, h: HeaderMap, Query(q): Query<HashMap<String, String>>| async move {
                s.0.lock().unwrap().push(("random_number".into(), h, format!("{q:?}")));
                let min: i64 = q.get("min").and_then(|v| v.parse().ok()).unwrap_or(0);
                let max: i64 = q.get("max").and_then(|v| v.parse().ok()).unwrap_or(0);
                // Deterministic for golden transcripts: the middle of the range.
                Json(json!({"responses": [format!("Your random number is {}", (min + max) / 2)], "extra": "ignored"}))
            }),
        )
        .route(
            "/favourite",
            post(|State(s): State<Seen>, h: HeaderMap, body: String| async move {
                s.0.lock().unwrap().push(("favourite".into(), h, body.clone()));
                let v: Value = serde_json::from_str(&body).unwrap_or_default();
                Json(json!({
                    "memory": {"favourite-thing": v["thing"], "thing": null},
                    "responses": ["Noted!"],
                }))
            }),
        )
        .route(
            "/profile",
            post(|State(s): State<Seen>, h: HeaderMap, body: String| async move {
                s.0.lock().unwrap().push(("profile".into(), h, body.clone()));
                let v: Value = serde_json::from_str(&body).unwrap_or_default();
                let born: i64 = v["born"].as_str().and_then(|b| b.parse().ok()).unwrap_or(2000);
                Json(json!({"user_attributes": {"age": 2026 - born}, "quickreplies": ["Random number", "Goodbye"]}))
            }),
        )
        .route(
            "/delay",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Json(json!({"responses": ["Slow but here"]}))
            }),
        )
        .route("/status500", get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }))
        .route("/notjson", get(|| async { "hello" }))
        .route("/wrongtype", get(|| async { Json(json!({"responses": "not a list"})) }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                Json(json!({}))
            }),
        )
        // Anything else: recorded with the exact path and query it came on.
        .fallback(|State(s): State<Seen>, uri: Uri, h: HeaderMap| async move {
            s.0.lock().unwrap().push(("fallback".into(), h, uri.to_string()));
            Json(json!({}))
        })
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen)
}

async fn app_with_local_api() -> (App, String, Seen) {
    let delivery = Delivery::new(Settings {
        allow: AllowList::parse(["127.0.0.0/8"]).unwrap(),
        ..Settings::default()
    })
    .unwrap();
    let app = spawn_app_with(Db::Sqlite, delivery).await.unwrap();
    let (base, seen) = receiver().await;
    let file = std::fs::read_to_string("examples/stories.yaml")
        .unwrap()
        .replace("http://127.0.0.1:8787", &base);
    app.import_yaml(file).await;
    (app, base, seen)
}

async fn say(app: &App, phone: &str, text: &str) -> Value {
    let r = app
        .admin(
            "POST",
            "/v1/bots/stories/chat",
            Some(json!({"contact": {"phone": phone}, "text": text})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

async fn transcript(app: &App, phone: &str, inputs: &[&str]) -> String {
    let mut out = String::new();
    for input in inputs {
        let r = say(app, phone, input).await;
        out.push_str(&format!("> {input}\n"));
        for reply in r["replies"].as_array().unwrap() {
            for line in reply["text"].as_str().unwrap().lines() {
                out.push_str(&format!("< {line}\n"));
            }
        }
        let quick: Vec<&str> = r["quick_replies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q.as_str().unwrap())
            .collect();
        if !quick.is_empty() {
            out.push_str(&format!("  quick replies: {}\n", quick.join(" | ")));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_stories_against_a_real_receiver() {
    let (app, _base, seen) = app_with_local_api().await;

    // The test button first, as a new user would: the exact request, the
    // answer, and what would be merged.
    let r = app
        .admin(
            "POST",
            "/v1/bots/stories/webhooks/random_number/test",
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body["request"]["line"]
            .as_str()
            .unwrap()
            .ends_with("/random_number?min=10&max=20"),
        "{}",
        r.body
    );
    assert_eq!(r.body["response"]["status"], 200);
    assert_eq!(
        r.body["would_merge"]["responses"],
        json!(["Your random number is 15"])
    );

    let phone = "+6591234567";
    let t = transcript(&app, phone, &["hi", "1", "2", "kites", "3", "1984", "4"]).await;
    insta::assert_snapshot!("stories", t);
    assert!(t.contains("< Your random number is 15"));
    assert!(t.contains("I will remember that your favourite thing is kites."));
    assert!(t.contains("So you are 42."));

    // Memory and user attributes landed where the answer put them.
    let convs = app
        .admin("GET", "/v1/bots/stories/conversations", None)
        .await;
    let id = convs.body["data"][0]["id"].as_str().unwrap();
    let conv = app
        .admin("GET", &format!("/v1/bots/stories/conversations/{id}"), None)
        .await;
    assert_eq!(conv.body["memory"]["favourite-thing"], "kites");
    assert!(
        conv.body["memory"].get("thing").is_none(),
        "a null in the answer deletes the key"
    );
    assert_eq!(conv.body["contact"]["attributes"]["age"], 42);
    let calls = conv.body["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 3, "the conversation's history shows its calls");
    assert!(calls.iter().all(|c| c["outcome"] == "ok"));

    // The receiver got signed requests with botwire's user agent; the
    // signature verifies with the bot's story-webhook secret.
    let secret = app
        .admin("GET", "/v1/bots/stories/webhook-secret", None)
        .await;
    let secret = Secret::parse(secret.body["secret"].as_str().unwrap()).unwrap();
    let seen = seen.0.lock().unwrap().clone();
    let (_, headers, body) = seen.iter().find(|(p, _, _)| p == "favourite").unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(body).unwrap(),
        json!({"thing": "kites", "phone": phone})
    );
    assert!(
        headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("botwire/")
    );
    let h = |n: &str| headers[n].to_str().unwrap().to_owned();
    let ts = h("webhook-timestamp");
    verify(
        &[secret],
        &h("webhook-id"),
        &ts,
        &h("webhook-signature"),
        body.as_bytes(),
        ts.parse().unwrap(),
        300,
    )
    .expect("story webhook requests are signed");

    // The call log, with the signature redacted.
    let log = app
        .admin("GET", "/v1/bots/stories/webhooks/random_number/calls", None)
        .await;
    let data = log.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "the test call and the chat call");
    let headers = data[0]["record"]["request_headers"].to_string();
    assert!(
        headers.contains("\"***\"") && !headers.contains("v1,"),
        "{headers}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_takes_the_error_path_and_is_logged() {
    let (app, base, _seen) = app_with_local_api().await;
    let phone = "+6591234500";
    say(&app, phone, "hi").await;
    let cases = [
        (format!("{base}/status500"), "500"),
        (format!("{base}/notjson"), "not JSON"),
        (format!("{base}/wrongtype"), "responses"),
        (format!("{base}/slow"), "timeout"),
        ("http://127.0.0.1:9/closed".to_owned(), "connect"),
        (
            "http://169.254.169.254/latest/meta-data".to_owned(),
            "blocked",
        ),
    ];
    for (url, why) in &cases {
        let r = app
            .admin(
                "PATCH",
                "/v1/bots/stories/webhooks/random_number",
                Some(json!({"url": url, "timeout_ms": 300})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let reply = say(&app, phone, "1").await;
        let texts = reply["replies"].to_string();
        assert!(
            texts.contains("not answering"),
            "{url}: the error path is taken: {texts}"
        );
        assert!(
            texts.contains("What shall we try?"),
            "{url}: the conversation goes on: {texts}"
        );
        let log = app
            .admin(
                "GET",
                "/v1/bots/stories/webhooks/random_number/calls?limit=1",
                None,
            )
            .await;
        let call = &log.body["data"][0];
        assert_eq!(call["outcome"], "error");
        let error = call["record"]["error"].as_str().unwrap();
        assert!(
            error.contains(why),
            "{url}: logged error {error:?} should mention {why:?}"
        );
    }
}

#[tokio::test]
async fn definitions_are_validated_and_flows_must_name_defined_webhooks() {
    let (app, base, _) = app_with_local_api().await;
    let bad = [
        (json!({"name": "x", "url": "ftp://a"}), "url"),
        (
            json!({"name": "x", "url": "http://a", "method": "TRACE"}),
            "method",
        ),
        (
            json!({"name": "x", "url": "http://a", "timeout_ms": 60000}),
            "timeout_ms",
        ),
        (
            json!({"name": "x", "url": "http://a", "headers": {"Host": "b"}}),
            "headers.Host",
        ),
        (
            json!({"name": "x", "url": "http://a", "headers": {"webhook-id": "b"}}),
            "webhook-id",
        ),
        (json!({"name": "bad name", "url": "http://a"}), "name"),
        (
            json!({"name": "random_number", "url": "http://a"}),
            "already exists",
        ),
    ];
    for (body, hint) in bad {
        let r = app
            .admin("POST", "/v1/bots/stories/webhooks", Some(body.clone()))
            .await;
        assert!(matches!(r.status, 409 | 422), "{body}: {}", r.body);
        assert!(
            r.body["error"]["message"].as_str().unwrap().contains(hint),
            "{body}: {}",
            r.body
        );
    }
    let r = app
        .admin(
            "POST",
            "/v1/bots/stories/webhooks",
            Some(
                json!({"name": "weather", "method": "get", "url": format!("{base}/random_number")}),
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["method"], "GET");
    assert_eq!(r.body["timeout_ms"], 10000);
    assert_eq!(r.body["sign"], true);

    // A flow calling an undefined webhook is refused, naming node and field.
    let flow =
        json!({"start": "a", "nodes": {"a": {"webhook": "nope", "next": "b"}, "b": {"end": true}}});
    let r = app
        .call(
            "PUT",
            "/v1/bots/stories/flow",
            Some(&app.admin_key.clone()),
            Some(flow),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nope")
    );
    // A webhook the flow calls cannot be deleted; one it does not call can.
    assert_eq!(
        app.admin("DELETE", "/v1/bots/stories/webhooks/profile", None)
            .await
            .status,
        409
    );
    assert_eq!(
        app.admin("DELETE", "/v1/bots/stories/webhooks/weather", None)
            .await
            .status,
        204
    );
    assert_eq!(
        app.admin("GET", "/v1/bots/stories/webhooks/weather", None)
            .await
            .status,
        404
    );

    // Rotation: two secrets sign during the grace period.
    let before = app
        .admin("GET", "/v1/bots/stories/webhook-secret", None)
        .await;
    let after = app
        .admin("POST", "/v1/bots/stories/webhook-secret/rotate", None)
        .await;
    assert_ne!(before.body["secret"], after.body["secret"]);
    assert_eq!(after.body["previous"], json!([before.body["secret"]]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_during_a_call_waits_for_it() {
    let (app, base, _) = app_with_local_api().await;
    let phone = "+6591234511";
    say(&app, phone, "hi").await;
    let r = app
        .admin(
            "PATCH",
            "/v1/bots/stories/webhooks/random_number",
            Some(json!({"url": format!("{base}/delay")})),
        )
        .await;
    assert_eq!(r.status, 200);
    let first = {
        let (client, base, key) = (app.client.clone(), app.base.clone(), app.admin_key.clone());
        tokio::spawn(async move {
            client
                .post(format!("{base}/v1/bots/stories/chat"))
                .bearer_auth(key)
                .json(&json!({"contact": {"phone": phone}, "text": "1"}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Sent while the first message's call is in flight: it waits, then is
    // answered from the state the first one left (back at the menu).
    let second = say(&app, phone, "2").await;
    let first = first.await.unwrap();
    assert!(
        first["replies"].to_string().contains("Slow but here"),
        "{first}"
    );
    assert!(
        second["replies"].to_string().contains("favourite thing"),
        "{second}"
    );
    let id = second["conversation_id"].as_str().unwrap();
    let conv = app
        .admin("GET", &format!("/v1/bots/stories/conversations/{id}"), None)
        .await;
    let texts: Vec<String> = conv.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] == "in")
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["hi", "1", "2"], "handled in order, one at a time");
}

/// What the receiver's fallback route recorded: the exact path and query
/// of each request, in order.
fn fallback_paths(seen: &Seen) -> Vec<String> {
    seen.0
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _, _)| p == "fallback")
        .map(|(_, _, uri)| uri.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_answer_cannot_walk_up_the_webhook_path() {
    let (app, base, seen) = app_with_local_api().await;
    // The answer to "What is your favourite thing?" goes into the path.
    let r = app
        .admin(
            "PATCH",
            "/v1/bots/stories/webhooks/remember_thing",
            Some(json!({"url": format!("{base}/users/{{{{memory.thing}}}}/profile?of={{{{memory.thing}}}}")})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let phone = "+6591234599";
    say(&app, phone, "hi").await;
    // Sent, each value one encoded segment under /users/: the receiver
    // records the exact path it got.
    for (answer, path) in [
        ("%2e%2e", "/users/%252e%252e/profile?of=%252e%252e"),
        (".%2E", "/users/.%252E/profile?of=.%252E"),
        ("../profile", "/users/..%2Fprofile/profile?of=..%2Fprofile"),
        ("...", "/users/.../profile?of=..."),
        ("a.b", "/users/a.b/profile?of=a.b"),
    ] {
        say(&app, phone, "2").await;
        let reply = say(&app, phone, answer).await;
        assert!(
            reply["replies"].to_string().contains("I will remember"),
            "{answer}: {reply}"
        );
        assert_eq!(
            fallback_paths(&seen).last().map(String::as_str),
            Some(path),
            "{answer}"
        );
    }
    let sent = fallback_paths(&seen).len();
    // Refused unsent: the flow takes its error path and the log says why.
    for answer in ["..", "."] {
        say(&app, phone, "2").await;
        let reply = say(&app, phone, answer).await;
        let texts = reply["replies"].to_string();
        assert!(texts.contains("not answering"), "{answer}: {texts}");
        assert!(texts.contains("What shall we try?"), "{answer}: {texts}");
        let log = app
            .admin(
                "GET",
                "/v1/bots/stories/webhooks/remember_thing/calls?limit=1",
                None,
            )
            .await;
        let call = &log.body["data"][0];
        assert_eq!(call["outcome"], "error");
        let error = call["record"]["error"].as_str().unwrap();
        assert!(
            error.contains("not sent") && error.contains(". or .. path segment"),
            "{answer}: {error}"
        );
        assert!(call["record"]["status"].is_null());
    }
    assert_eq!(fallback_paths(&seen).len(), sent, "nothing more was sent");
    assert!(
        !seen
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|(p, _, _)| p == "profile"),
        "nothing reached /profile"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn story_webhook_header_values_are_shown_once_and_sent_whole() {
    let (app, base, seen) = app_with_local_api().await;
    let token = "tok-0123456789abcdef";
    let r = app
        .admin(
            "POST",
            "/v1/bots/stories/webhooks",
            Some(json!({
                "name": "crm", "url": format!("{base}/crm/{{{{contact.phone}}}}"),
                "headers": {
                    "X-Api-Token": token,
                    "X-Team": {"value": "growth", "sensitive": false},
                    "X-Who": {"value": "{{memory.name}}", "sensitive": false}
                }
            })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.body["headers"]["X-Api-Token"],
        json!({"value": token, "sensitive": true}),
        "shown in full once"
    );
    let redacted = json!({"value": "••••cdef", "sensitive": true});
    let get = app
        .admin("GET", "/v1/bots/stories/webhooks/crm", None)
        .await;
    assert_eq!(get.body["headers"]["X-Api-Token"], redacted);
    assert_eq!(get.body["headers"]["X-Team"]["value"], "growth");
    let list = app.admin("GET", "/v1/bots/stories/webhooks", None).await;
    assert!(!list.body.to_string().contains(token), "{}", list.body);

    // PATCH with the headers as shown: the stored token is kept.
    let mut headers = get.body["headers"].clone();
    headers["X-Team"] = json!({"value": "platform", "sensitive": false});
    let r = app
        .admin(
            "PATCH",
            "/v1/bots/stories/webhooks/crm",
            Some(json!({"headers": headers})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["headers"]["X-Api-Token"], redacted);

    // The test bench: the receiver gets the real token; the request shown
    // and the call log do not hold it. A line break from the chat is sent
    // as a space.
    let t = app
        .admin(
            "POST",
            "/v1/bots/stories/webhooks/crm/test",
            Some(json!({"memory": {"name": "Ana\r\nX-Admin: yes"}, "contact": {"phone": "+1"}})),
        )
        .await;
    assert_eq!(t.status, 200, "{}", t.body);
    assert_eq!(t.body["outcome"], "ok", "{}", t.body);
    let shown = t.body["request"]["headers"].to_string();
    assert!(
        shown.contains("••••cdef") && !shown.contains(token),
        "{shown}"
    );
    let received = |n: usize| {
        let all = seen.0.lock().unwrap().clone();
        all.into_iter()
            .filter(|(p, _, _)| p == "fallback")
            .nth(n)
            .unwrap()
    };
    let (_, h, uri) = received(0);
    assert_eq!(uri, "/crm/%2B1");
    assert_eq!(h["x-api-token"], token);
    assert_eq!(h["x-team"], "platform");
    assert_eq!(h["x-who"], "Ana  X-Admin: yes");
    assert!(h.get("x-admin").is_none(), "no header injected");
    let calls = app
        .admin("GET", "/v1/bots/stories/webhooks/crm/calls", None)
        .await;
    let logged = calls.body["data"][0]["record"]["request_headers"].to_string();
    assert!(
        logged.contains("••••cdef") && logged.contains("platform") && !logged.contains(token),
        "{logged}"
    );

    // Settings and export show it redacted; sending them back keeps it.
    let settings = app.admin("GET", "/v1/bots/stories/settings", None).await;
    assert!(!settings.body.to_string().contains(token));
    let crm = settings.body["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "crm")
        .unwrap();
    assert_eq!(crm["headers"]["X-Api-Token"], "••••cdef");
    let r = app
        .admin(
            "PUT",
            "/v1/bots/stories/settings",
            Some(settings.body.clone()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let export = app
        .client
        .get(format!("{}/v1/bots/stories/export", app.base))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(export.contains("••••cdef") && !export.contains(token));
    let r = app
        .raw(
            "POST",
            "/v1/bots/import",
            Some(&app.admin_key),
            "application/json",
            export.clone().into_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    app.admin(
        "POST",
        "/v1/bots/stories/webhooks/crm/test",
        Some(json!({})),
    )
    .await;
    assert_eq!(received(1).1["x-api-token"], token, "still the real token");

    // A redacted value that matches nothing stored is refused everywhere.
    let r = app
        .admin(
            "PATCH",
            "/v1/bots/stories/webhooks/crm",
            Some(json!({"headers": {"X-Api-Token": "••••0000"}})),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("redacted")
    );
    let r = app
        .raw(
            "POST",
            "/v1/bots/import",
            Some(&app.admin_key),
            "application/json",
            export.replace("••••cdef", "••••beef").into_bytes(),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
}

/// The trace id in a received `traceparent`, and its span id.
fn trace_of(headers: &HeaderMap) -> (String, String) {
    let v = headers
        .get("traceparent")
        .expect("a traceparent header")
        .to_str()
        .unwrap();
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!(parts.len(), 4, "{v}");
    assert_eq!((parts[0], parts[3]), ("00", "01"), "{v}");
    (parts[1].to_owned(), parts[2].to_owned())
}

#[tokio::test]
async fn story_calls_carry_the_trace_of_the_chat_request() {
    let (app, _base, seen) = app_with_local_api().await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    for text in ["hi", "1"] {
        let resp = app
            .client
            .post(format!("{}/v1/bots/stories/chat", app.base))
            .bearer_auth(&app.admin_key)
            .header("traceparent", format!("00-{trace}-{parent}-01"))
            .json(&json!({"contact": {"phone": "+6590000001"}, "text": text}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let calls = seen.0.lock().unwrap().clone();
    let (_, headers, _) = calls
        .iter()
        .find(|(p, _, _)| p == "random_number")
        .expect("the flow called random_number");
    let (got_trace, span) = trace_of(headers);
    assert_eq!(got_trace, trace, "the call continues the request's trace");
    assert_ne!(span, parent, "the call is a new span of it");

    // No (or an invalid) traceparent: a new trace, still sent.
    seen.0.lock().unwrap().clear();
    for text in ["hi", "1"] {
        let resp = app
            .client
            .post(format!("{}/v1/bots/stories/chat", app.base))
            .bearer_auth(&app.admin_key)
            .header("traceparent", "00-not-a-trace-01")
            .json(&json!({"contact": {"phone": "+6590000002"}, "text": text}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let calls = seen.0.lock().unwrap().clone();
    let (_, headers, _) = calls
        .iter()
        .find(|(p, _, _)| p == "random_number")
        .expect("the flow called random_number");
    let (fresh, _) = trace_of(headers);
    assert_ne!(fresh, trace);
    assert!(botwire::trace::TraceId::parse(&fresh).is_some(), "{fresh}");
}
