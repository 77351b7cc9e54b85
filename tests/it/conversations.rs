//! Bots that talk, through the HTTP API: the five example bots as golden
//! transcripts, the events each turn writes (checked against the catalog's
//! JSON Schemas), flow validation and versioning, serialised messages,
//! bookings and custom events.

use crate::common;

use common::{App, Db, spawn_app};
use serde_json::{Value, json};
use std::collections::HashMap;

async fn app() -> App {
    spawn_app(Db::Sqlite).await.expect("sqlite always runs")
}

fn schemas() -> HashMap<String, jsonschema::Validator> {
    botwire::domain::event::catalog()
        .into_iter()
        .map(|i| {
            (
                i.name.to_owned(),
                jsonschema::validator_for(&i.schema).expect("schema compiles"),
            )
        })
        .collect()
}

async fn import(app: &App, example: &str) {
    app.import_example(example).await;
}

/// Chats through `inputs` as one contact and renders a transcript: what
/// was said, the quick replies offered, and the events each turn wrote
/// (each validated against its schema).
async fn transcript(app: &App, bot: &str, phone: &str, inputs: &[&str]) -> (String, Vec<Value>) {
    let schemas = schemas();
    let mut out = String::new();
    let mut events = Vec::new();
    for input in inputs {
        let r = app
            .admin(
                "POST",
                &format!("/v1/bots/{bot}/chat"),
                Some(json!({"contact": {"phone": phone}, "text": input})),
            )
            .await;
        assert_eq!(r.status, 200, "{input}: {}", r.body);
        out.push_str(&format!("> {input}\n"));
        for reply in r.body["replies"].as_array().unwrap() {
            match reply["type"].as_str().unwrap() {
                "text" => {
                    for line in reply["text"].as_str().unwrap().lines() {
                        out.push_str(&format!("< {line}\n"));
                    }
                }
                media => {
                    let caption = reply["caption"].as_str().unwrap_or("");
                    out.push_str(&format!(
                        "< [{media}] {} {caption}\n",
                        reply["url"].as_str().unwrap()
                    ));
                }
            }
        }
        let quick: Vec<&str> = r.body["quick_replies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q.as_str().unwrap())
            .collect();
        if !quick.is_empty() {
            out.push_str(&format!("  quick replies: {}\n", quick.join(" | ")));
        }
        let mut types = Vec::new();
        for id in r.body["events"].as_array().unwrap() {
            let e = app
                .admin("GET", &format!("/v1/events/{}", id.as_str().unwrap()), None)
                .await;
            assert_eq!(e.status, 200);
            let t = e.body["type"].as_str().unwrap().to_owned();
            let v = &schemas[&t];
            let errors: Vec<String> = v
                .iter_errors(&e.body["data"])
                .map(|e| e.to_string())
                .collect();
            assert!(
                errors.is_empty(),
                "{t} does not match its schema: {errors:?}\n{}",
                e.body["data"]
            );
            types.push(t);
            events.push(e.body);
        }
        out.push_str(&format!("  events: {}\n", types.join(", ")));
        if r.body["ended"] == true {
            out.push_str("  (ended)\n");
        }
    }
    (normalise(&out), events)
}

/// Replaces what depends on today's date (slot labels, validity dates).
fn normalise(s: &str) -> String {
    let slot =
        regex::Regex::new(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d\d [A-Z][a-z]{2} \d\d:\d\d").unwrap();
    let date = regex::Regex::new(r"\d{4}-\d{2}-\d{2}").unwrap();
    date.replace_all(&slot.replace_all(s, "[slot]"), "[date]")
        .into_owned()
}

#[tokio::test]
async fn elipackage_seed_003() {
    let app = app().await;
    import(&app, "elipackage").await;
    let (t, events) = transcript(
        &app,
        "elipackage",
        "+525500000000",
        &["hi", "J", "John Doe", "one  MONTH"],
    )
    .await;
    insta::assert_snapshot!("elipackage", t);
    let response = events
        .iter()
        .find(|e| e["type"] == "response.received")
        .unwrap();
    assert_eq!(response["data"]["response"], "John Doe");
    assert_eq!(response["data"]["label"], "Welcome Message");
    assert_eq!(response["data"]["contact"]["phone"], "+525500000000");
    let option = events
        .iter()
        .find(|e| e["type"] == "option.selected")
        .unwrap();
    assert_eq!(option["data"]["option"], "One month");
    assert_eq!(option["data"]["keyword"], 1);

    // The same through /v1/events, filtered by type.
    let r = app
        .admin(
            "GET",
            "/v1/events?type=option.selected&bot=elipackage",
            None,
        )
        .await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["data"][0]["data"]["option"], "One month");

    // A new message after the end starts a new conversation; the menu is
    // answered by number this time, and a campaign is reached.
    let (t2, _) = transcript(
        &app,
        "elipackage",
        "+525500000000",
        &["hello again", "Ana", "4"],
    )
    .await;
    insta::assert_snapshot!("elipackage_raffle", t2);
    let r = app
        .admin("GET", "/v1/bots/elipackage/conversations", None)
        .await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn incident_datapoints_seed_000() {
    let app = app().await;
    import(&app, "incident").await;
    let (t, events) = transcript(
        &app,
        "incident",
        "+34600000001",
        &[
            "hi",
            "2",
            "short",
            "Water is coming out of the wall",
            "Calle Mayor 1",
            "not-an-email",
            "ana@example.com",
            "+34 600 000 001",
        ],
    )
    .await;
    insta::assert_snapshot!("incident", t);
    let datapoints: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "datapoint.collected")
        .collect();
    assert_eq!(datapoints.len(), 4);
    assert_eq!(
        datapoints[3]["data"]["value"], "+34600000001",
        "phones are normalised to E.164"
    );
}

#[tokio::test]
async fn quote_bot_prices_in_decimal() {
    let app = app().await;
    import(&app, "quote").await;
    let (t, events) = transcript(
        &app,
        "quote",
        "+34600000002",
        &["hi", "medium box", "3", "yes", "express"],
    )
    .await;
    insta::assert_snapshot!("quote", t);
    let quote = &events
        .iter()
        .find(|e| e["type"] == "quote.generated")
        .unwrap()["data"]["quote"];
    // (7.90 + 1.75) × 1.5 = 14.475 → a unit price of 14.48 (half-up, to the
    // cent); × 3 = 43.44; tax 21 % = 9.1224 → 9.12; total 52.56.
    assert_eq!(quote["currency"], "EUR");
    assert_eq!(quote["lines"][0]["unit_price"], "14.48");
    assert_eq!(quote["subtotal"], "43.44");
    assert_eq!(quote["tax"], "9.12");
    assert_eq!(quote["total"], "52.56");
}

#[tokio::test]
async fn appointment_bot_books_and_cancels() {
    let app = app().await;
    import(&app, "appointment").await;
    let (t, events) = transcript(&app, "appointment", "+34600000003", &["hi", "Ana", "1"]).await;
    insta::assert_snapshot!("appointment", t);
    let booked = events
        .iter()
        .find(|e| e["type"] == "appointment.booked")
        .unwrap();
    let id = booked["data"]["appointment"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let list = app
        .admin("GET", "/v1/bots/appointment/appointments", None)
        .await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(list.body["data"][0]["status"], "booked");

    // The slot is no longer offered to someone else.
    let first_offer = |r: &Value| r["quick_replies"][0].as_str().unwrap().to_owned();
    app.admin(
        "POST",
        "/v1/bots/appointment/chat",
        Some(json!({"contact": {"phone": "+34600000004"}, "text": "hi"})),
    )
    .await;
    let r = app
        .admin(
            "POST",
            "/v1/bots/appointment/chat",
            Some(json!({"contact": {"phone": "+34600000004"}, "text": "Bea"})),
        )
        .await;
    assert_ne!(
        first_offer(&r.body),
        booked["data"]["appointment"]["label"].as_str().unwrap()
    );

    // Cancelling through the API frees it and emits appointment.cancelled.
    let r = app
        .admin(
            "DELETE",
            &format!("/v1/bots/appointment/appointments/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "cancelled");
    let again = app
        .admin(
            "DELETE",
            &format!("/v1/bots/appointment/appointments/{id}"),
            None,
        )
        .await;
    assert_eq!(again.status, 409);
    let cancelled = app
        .admin("GET", "/v1/events?type=appointment.cancelled", None)
        .await;
    let data = &cancelled.body["data"][0]["data"];
    let schema = &schemas()["appointment.cancelled"];
    assert!(schema.is_valid(data), "{data}");
    assert_eq!(data["appointment"]["id"], id.as_str());
}

#[tokio::test]
async fn support_bot_answers_and_runs_a_campaign() {
    let app = app().await;
    import(&app, "support").await;
    let (t, _) = transcript(
        &app,
        "support",
        "+34600000005",
        &["hi", "opening hours", "4", "9", "5", "Great service"],
    )
    .await;
    insta::assert_snapshot!("support", t);
}

#[tokio::test]
async fn flows_are_validated_as_a_whole_and_the_old_one_stays() {
    let app = app().await;
    import(&app, "elipackage").await;
    let bad = "start: welcome\nnodes:\n  welcome:\n    menu: Pick\n    options:\n      - { keyword: 1, label: A, next: nowhere }\n      - { keyword: 1, label: B, next: welcome }\n  orphan: { message: hi, next: orphan }\n";
    let r = app
        .raw(
            "PUT",
            "/v1/bots/elipackage/flow",
            Some(&app.admin_key),
            "application/yaml",
            bad.into(),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "invalid_flow");
    let details = r.body["error"]["details"].as_array().unwrap();
    let has = |node: &str, field: &str| {
        details
            .iter()
            .any(|d| d["node"] == node && d["field"].as_str().unwrap().contains(field))
    };
    assert!(
        has("welcome", "options[0].next"),
        "unknown target named: {details:?}"
    );
    assert!(
        has("welcome", "options[1].keyword"),
        "duplicate keyword named: {details:?}"
    );
    assert!(
        details.iter().any(|d| d["node"] == "orphan"),
        "unreachable node named: {details:?}"
    );
    let flow = app.admin("GET", "/v1/bots/elipackage/flow", None).await;
    assert_eq!(flow.body["start"], "welcome", "the old flow stays");
    assert!(flow.body["nodes"].to_string().contains("membership"));

    let r = app
        .raw(
            "PUT",
            "/v1/bots/elipackage/flow",
            Some(&app.admin_key),
            "application/yaml",
            b"start: [".to_vec(),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let r = app
        .raw(
            "PUT",
            "/v1/bots/elipackage/flow",
            Some(&app.admin_key),
            "text/plain",
            b"start: a".to_vec(),
        )
        .await;
    assert_eq!(r.status, 415);

    // YAML out on request.
    let resp = app
        .client
        .get(format!("{}/v1/bots/elipackage/flow", app.base))
        .bearer_auth(&app.admin_key)
        .header("accept", "application/yaml")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/yaml");
    assert_eq!(resp.headers()["x-flow-version"], "1");
    assert!(resp.text().await.unwrap().contains("start: welcome"));
}

#[tokio::test]
async fn conversations_in_progress_follow_the_new_flow_version() {
    let app = app().await;
    import(&app, "elipackage").await;
    let phone = "+525500000001";
    transcript(&app, "elipackage", phone, &["hi"]).await; // waits at `welcome`
    // v2 changes the thank-you text; the conversation continues from `welcome`.
    let flow = app
        .admin("GET", "/v1/bots/elipackage/flow", None)
        .await
        .body;
    let mut v2 = flow.clone();
    v2["nodes"]["thanks"]["message"] = json!("Gracias, {{memory.name}}!");
    let r = app
        .call(
            "PUT",
            "/v1/bots/elipackage/flow",
            Some(&app.admin_key.clone()),
            Some(v2),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["version"], 2);
    let (t, _) = transcript(&app, "elipackage", phone, &["Eva", "1"]).await;
    assert!(t.contains("Gracias, Eva!"), "{t}");

    // v3 removes the node a conversation waits at: it restarts, and says so.
    let phone = "+525500000002";
    transcript(&app, "elipackage", phone, &["hi", "Max"]).await; // waits at `membership`
    let mut v3 = flow.clone();
    v3["nodes"]["welcome"]["next"] = json!("thanks");
    v3["nodes"].as_object_mut().unwrap().remove("membership");
    v3["campaigns"] = json!({});
    let r = app
        .call(
            "PUT",
            "/v1/bots/elipackage/flow",
            Some(&app.admin_key.clone()),
            Some(v3),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (t, _) = transcript(&app, "elipackage", phone, &["1"]).await;
    assert!(t.contains("starting again"), "{t}");
    let list = app
        .admin(
            "GET",
            "/v1/bots/elipackage/conversations?status=active",
            None,
        )
        .await;
    assert!(
        list.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["flow_version"] == 3 || c["flow_version"] == 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_messages_from_one_contact_are_serialised() {
    let app = app().await;
    import(&app, "incident").await;
    let phone = "+34600000009";
    transcript(&app, "incident", phone, &["hi", "1"]).await; // waits at `description`
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = app.client.clone();
        let url = format!("{}/v1/bots/incident/chat", app.base);
        let key = app.admin_key.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(key)
                .json(
                    &json!({"contact": {"phone": phone}, "text": format!("message number {i:02}")}),
                )
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let list = app
        .admin("GET", "/v1/bots/incident/conversations", None)
        .await;
    let id = list.body["data"][0]["id"].as_str().unwrap().to_owned();
    let conv = app
        .admin(
            "GET",
            &format!("/v1/bots/incident/conversations/{id}"),
            None,
        )
        .await;
    let inbound = conv.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] == "in")
        .count();
    assert_eq!(inbound, 22, "every message is in the transcript once");
    let received = app
        .admin(
            "GET",
            &format!("/v1/events?conversation={id}&type=message.received&limit=200"),
            None,
        )
        .await;
    assert_eq!(received.body["data"].as_array().unwrap().len(), 22);
    // Whichever two messages came first filled `description` and
    // `location`; the other eighteen were not e-mail addresses and were
    // re-asked. Nothing was lost or applied twice.
    assert_eq!(conv.body["status"], "active");
    assert_eq!(conv.body["node"], "email");
    let description = conv.body["memory"]["description"].as_str().unwrap();
    let location = conv.body["memory"]["location"].as_str().unwrap();
    assert!(description.starts_with("message number") && location.starts_with("message number"));
    assert_ne!(description, location);
}

#[tokio::test]
async fn chat_bad_input_is_a_4xx_or_a_polite_reask() {
    let app = app().await;
    import(&app, "elipackage").await;
    let key = app.admin_key.clone();
    let post = |body: Value| app.call("POST", "/v1/bots/elipackage/chat", Some(&key), Some(body));
    assert_eq!(
        post(json!({"contact": {"phone": "5500"}, "text": "hi"}))
            .await
            .status,
        422
    );
    assert_eq!(post(json!({"contact": {}, "text": "hi"})).await.status, 422);
    assert_eq!(
        post(json!({"contact": {"phone": "+525500000000", "id": "x"}, "text": "hi"}))
            .await
            .status,
        422
    );
    assert_eq!(post(json!({"text": "hi"})).await.status, 422);
    assert_eq!(
        post(json!({"contact": {"phone": "+525500000000"}, "text": 5}))
            .await
            .status,
        422
    );
    let r = app
        .call(
            "POST",
            "/v1/bots/ghost/chat",
            Some(&key),
            Some(json!({"contact": {"id": "a"}, "text": "hi"})),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = app
        .call(
            "POST",
            "/v1/bots",
            Some(&key),
            Some(json!({"id": "empty", "name": "Empty", "type": "support"})),
        )
        .await;
    assert_eq!(r.status, 201);
    let r = app
        .call(
            "POST",
            "/v1/bots/empty/chat",
            Some(&key),
            Some(json!({"contact": {"id": "a"}, "text": "hi"})),
        )
        .await;
    assert_eq!(r.status, 409, "no flow yet: {}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/flow")
    );

    post(json!({"contact": {"id": "u1"}, "text": "hi"})).await;
    for text in ["", "\u{0007}bell"] {
        let r = post(json!({"contact": {"id": "u1"}, "text": text})).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            !r.body["replies"].as_array().unwrap().is_empty(),
            "a polite answer, not silence"
        );
    }
    // Too long: a 422 that says the limit, and nothing stored.
    let r = post(json!({"contact": {"id": "u1"}, "text": "x".repeat(5000)})).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 4096"),
        "{}",
        r.body
    );
    // Ids with a reserved prefix: a 422 naming it.
    let r = post(json!({"contact": {"id": "web:u1"}, "text": "hi"})).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"web:\""),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn custom_events_are_idempotent() {
    let app = app().await;
    app.create_bot("shop", "support").await;
    let key = app.admin_key.clone();
    let send = |idem: &'static str, body: Value| {
        let req = app
            .client
            .post(format!("{}/v1/bots/shop/events", app.base))
            .bearer_auth(&key)
            .header("idempotency-key", idem)
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s1, e1) = send("k1", json!({"type": "order.paid", "data": {"order": 1}})).await;
    assert_eq!(s1, 201, "{e1}");
    let (s2, e2) = send("k1", json!({"type": "order.paid", "data": {"order": 1}})).await;
    assert_eq!(s2, 200);
    assert_eq!(e1["id"], e2["id"], "same key, same body: the same event");
    let (s3, e3) = send("k1", json!({"type": "order.paid", "data": {"order": 2}})).await;
    assert_eq!(s3, 409, "{e3}");
    let (s4, e4) = send("k2", json!({"type": "message.received", "data": {}})).await;
    assert_eq!(s4, 422, "reserved names are refused: {e4}");
    let (s5, _) = send("k3", json!({"type": "order.paid", "data": [1]})).await;
    assert_eq!(s5, 422);
    let r = app.admin("GET", "/v1/events?bot=shop", None).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);

    let types = app.admin("GET", "/v1/event-types", None).await;
    assert_eq!(
        types.body["data"].as_array().unwrap().len(),
        botwire::domain::event::EventType::ALL.len()
    );
    let sample = app
        .admin("GET", "/v1/event-types/quote.generated/sample", None)
        .await;
    assert_eq!(sample.body.as_array().unwrap().len(), 1);
    assert_eq!(
        app.admin("GET", "/v1/event-types/nope/sample", None)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn bot_files_round_trip_through_export() {
    let app = app().await;
    import(&app, "quote").await;
    let r = app.admin("GET", "/v1/bots/quote/export", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["id"], "quote");
    assert_eq!(r.body["price_table"]["currency"], "EUR");
    // Re-importing the export updates the bot and saves version 2.
    let again = app
        .raw(
            "POST",
            "/v1/bots/import",
            Some(&app.admin_key),
            "application/json",
            r.body.to_string().into_bytes(),
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["created"], false);
    assert_eq!(again.body["flow_version"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_take_turns_on_one_conversation() {
    // Each node caches what it last committed; when the other node moved the
    // conversation on, the stale turn is refused by the revision check and
    // retried from the database — so alternating nodes never lose a step.
    let app = app().await;
    import(&app, "incident").await;
    let other = app.second_node().await;
    let inputs = [
        "hi",
        "2",
        "Water is coming out of the wall",
        "Calle Mayor 1",
        "ana@example.com",
        "+34 600 000 001",
    ];
    let mut last = Value::Null;
    for (i, text) in inputs.iter().enumerate() {
        let base = if i % 2 == 0 {
            app.base.clone()
        } else {
            other.clone()
        };
        let r = app
            .client
            .post(format!("{base}/v1/bots/incident/chat"))
            .bearer_auth(&app.admin_key)
            .json(&json!({"contact": {"phone": "+34600000077"}, "text": text}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        last = r.json().await.unwrap();
    }
    assert_eq!(last["ended"], true, "{last}");
    let list = app
        .admin("GET", "/v1/bots/incident/conversations", None)
        .await;
    assert_eq!(
        list.body["data"].as_array().unwrap().len(),
        1,
        "one conversation, not one per node"
    );
    let id = list.body["data"][0]["id"].as_str().unwrap();
    let conv = app
        .admin(
            "GET",
            &format!("/v1/bots/incident/conversations/{id}"),
            None,
        )
        .await;
    assert_eq!(conv.body["memory"]["email"], "ana@example.com");
    assert_eq!(conv.body["memory"]["location"], "Calle Mayor 1");
}

/// Fires the timers due `minutes` from now on `chat` and renders what they
/// said like `transcript` does.
async fn fire(
    chat: &botwire::runtime::chat::Chat,
    store: &botwire::store::Store,
    minutes: i64,
) -> String {
    let at = botwire::store::now_ms() + minutes * 60_000;
    let said = chat.fire_due_timers(store, at, 100).await.unwrap();
    let mut out = format!("~ {minutes} minutes later\n");
    for p in said {
        for r in &p.reply.replies {
            for line in r.lines() {
                out.push_str(&format!("< {line}\n"));
            }
        }
        for (_, m) in &p.reply.media {
            out.push_str(&format!("< [{}] {}\n", m.kind.as_str(), m.url));
        }
        if !p.reply.quick_replies.is_empty() {
            out.push_str(&format!(
                "  quick replies: {}\n",
                p.reply.quick_replies.join(" | ")
            ));
        }
        if p.reply.ended {
            out.push_str("  (ended)\n");
        }
    }
    out
}

#[tokio::test]
async fn leads_bot_scores_branches_and_opts_out() {
    let app = app().await;
    import(&app, "leads").await;
    let (sales, _) = transcript(
        &app,
        "leads",
        "+34600000101",
        &["hi", "ana@acme.com", "lots", "1500", "3"],
    )
    .await;
    insta::assert_snapshot!("leads_sales", sales);
    let (rest, events) = transcript(
        &app,
        "leads",
        "+34600000102",
        &[
            "hi",
            "bob@gmail.com",
            "menu",
            "bob@gmail.com",
            "50",
            "1-9",
            "hello",
            "STOP",
            "start",
        ],
    )
    .await;
    insta::assert_snapshot!("leads_thanks_stop_start", rest);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(types.contains(&"contact.opted_out") && types.contains(&"contact.opted_in"));
    let list = app.admin("GET", "/v1/bots/leads/conversations", None).await;
    let first = list.body["data"].as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let conv = app
        .admin(
            "GET",
            &format!("/v1/bots/leads/conversations/{first}"),
            None,
        )
        .await;
    assert_eq!(conv.body["memory"]["score"], 100, "{}", conv.body);
    assert_eq!(conv.body["contact"]["attributes"]["segment"], "enterprise");
}

#[tokio::test]
async fn helpdesk_escalates_reminds_and_times_out() {
    let app = app().await;
    import(&app, "helpdesk").await;
    let (mut t, _) = transcript(&app, "helpdesk", "+34600000201", &["hi", "VPN is down"]).await;
    t.push_str(&fire(&app.chat, &app.store, 11).await);
    t.push_str(
        &transcript(&app, "helpdesk", "+34600000201", &["5", "critical"])
            .await
            .0,
    );
    insta::assert_snapshot!("helpdesk_escalates", t);

    let (mut t, _) = transcript(&app, "helpdesk", "+34600000202", &["hi", "Printer jam"]).await;
    // Reminder (10 min) then timeout (30 min), in their order, each once.
    t.push_str(&fire(&app.chat, &app.store, 31).await);
    t.push_str(&fire(&app.chat, &app.store, 32).await);
    t.push_str(
        &transcript(&app, "helpdesk", "+34600000202", &["hi", "AGENT"])
            .await
            .0,
    );
    insta::assert_snapshot!("helpdesk_times_out", t);
}

#[tokio::test]
async fn a_typo_in_a_condition_is_refused_with_its_column() {
    let app = app().await;
    import(&app, "leads").await;
    let flow = app.admin("GET", "/v1/bots/leads/flow", None).await;
    let text = flow.body.to_string().replace(
        "memory.score >= 70",
        "memory.score >= 70 && usr.plan == 'vip'",
    );
    let r = app
        .raw(
            "PUT",
            "/v1/bots/leads/flow",
            Some(&app.admin_key),
            "application/json",
            text.into_bytes(),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let d = &r.body["error"]["details"][0];
    assert_eq!(
        (&d["node"], &d["field"], &d["column"]),
        (&json!("score"), &json!("next[0].if"), &json!(23)),
        "{}",
        r.body
    );
    assert!(d["message"].as_str().unwrap().contains("usr"), "{d}");
    // A branch list without else.
    let text = flow.body.to_string().replace(r#",{"else":"thanks"}"#, "");
    let r = app
        .raw(
            "PUT",
            "/v1/bots/leads/flow",
            Some(&app.admin_key),
            "application/json",
            text.into_bytes(),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body.to_string().contains("must end with - else"),
        "{}",
        r.body
    );
}

/// An idle conversation gets its reminder and then expires, across a
/// restart: the timers are in the database, and a new process (new store,
/// new runtime) fires them. Two runtimes claiming at once fire each timer
/// once.
async fn idle_conversations_are_reminded_then_expire_across_a_restart(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    import(&app, "helpdesk").await;
    transcript(&app, "helpdesk", "+34600000301", &["hi", "Disk full"]).await;
    let list = app
        .admin("GET", "/v1/bots/helpdesk/conversations", None)
        .await;
    let id = list.body["data"][0]["id"].as_str().unwrap().to_owned();
    let kinds: Vec<String> = app
        .store
        .conversation_timers(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.kind)
        .collect();
    assert_eq!(kinds, ["reminder", "timeout", "expiry"]);

    // "Restart": two fresh runtimes over fresh stores on the same database.
    let a = botwire::store::Store::open(app.db_url()).await.unwrap();
    let b = botwire::store::Store::open(app.db_url()).await.unwrap();
    let (ca, cb) = (
        botwire::runtime::chat::Chat::default(),
        botwire::runtime::chat::Chat::default(),
    );
    let at = botwire::store::now_ms() + 11 * 60_000;
    let (ra, rb) = tokio::join!(
        ca.fire_due_timers(&a, at, 100),
        cb.fire_due_timers(&b, at, 100)
    );
    let said: Vec<_> = ra.unwrap().into_iter().chain(rb.unwrap()).collect();
    assert_eq!(said.len(), 1, "the reminder fires once: {said:?}");
    assert!(said[0].reply.replies[0].starts_with("Are you still there?"));
    // Nothing more is due yet; the timeout and expiry wait.
    assert!(ca.fire_due_timers(&a, at, 100).await.unwrap().is_empty());
    assert_eq!(app.store.conversation_timers(&id).await.unwrap().len(), 2);

    // A message moves the conversation on: its timers are replaced ("menu"
    // goes back to the first question, which has no reminder or timeout).
    transcript(&app, "helpdesk", "+34600000301", &["menu"]).await;
    let kinds: Vec<String> = app
        .store
        .conversation_timers(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.kind)
        .collect();
    assert_eq!(kinds, ["expiry"]);
    // The expiry, a day later, ends it with conversation.expired.
    let day = botwire::store::now_ms() + 25 * 3_600_000;
    let said = cb.fire_due_timers(&b, day, 100).await.unwrap();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].reply.ended);
    let conv = app
        .admin(
            "GET",
            &format!("/v1/bots/helpdesk/conversations/{id}"),
            None,
        )
        .await;
    assert_eq!(conv.body["status"], "completed", "{}", conv.body);
    let events = app
        .admin("GET", "/v1/events?type=conversation.expired", None)
        .await;
    assert_eq!(
        events.body["data"].as_array().unwrap().len(),
        1,
        "{}",
        events.body
    );
    assert!(app.store.conversation_timers(&id).await.unwrap().is_empty());
    // The reminder is in the transcript.
    assert!(
        conv.body["messages"]
            .to_string()
            .contains("Are you still there?")
    );
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_conversations_expire_across_a_restart_sqlite() {
    idle_conversations_are_reminded_then_expire_across_a_restart(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_conversations_expire_across_a_restart_postgres() {
    idle_conversations_are_reminded_then_expire_across_a_restart(Db::Postgres).await;
}

/// A turn that only moves the expiry later leaves the stored timer where it
/// was; when that timer comes due it waits again, until the latest turn's
/// expiry, and only then ends the conversation.
async fn an_early_expiry_waits_for_the_latest_turn(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    import(&app, "leads").await;
    transcript(&app, "leads", "+34600000302", &["hi", "ana@acme.com"]).await;
    let list = app.admin("GET", "/v1/bots/leads/conversations", None).await;
    let id = list.body["data"][0]["id"].as_str().unwrap().to_owned();
    let timers = app.store.conversation_timers(&id).await.unwrap();
    assert_eq!(timers.len(), 1, "{timers:?}");
    let (timer, latest) = (timers[0].id.clone(), timers[0].due_at);
    // As if the expiry had been stored by a turn an hour before the latest.
    app.store
        .rearm_timer(&timer, latest - 3_600_000)
        .await
        .unwrap();
    let chat = botwire::runtime::chat::Chat::default();
    let said = chat
        .fire_due_timers(&app.store, latest - 3_600_000 + 1, 100)
        .await
        .unwrap();
    assert!(said.is_empty(), "nothing said before the expiry: {said:?}");
    let timers = app.store.conversation_timers(&id).await.unwrap();
    assert_eq!(timers.len(), 1, "{timers:?}");
    assert!(
        timers[0].due_at >= latest,
        "due again at the latest turn's expiry: {} < {latest}",
        timers[0].due_at
    );
    let conv = app
        .admin("GET", &format!("/v1/bots/leads/conversations/{id}"), None)
        .await;
    assert_eq!(conv.body["status"], "active", "{}", conv.body);
    let said = chat
        .fire_due_timers(&app.store, timers[0].due_at + 1, 100)
        .await
        .unwrap();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].reply.ended);
    assert!(app.store.conversation_timers(&id).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_expiry_waits_for_the_latest_turn_sqlite() {
    an_early_expiry_waits_for_the_latest_turn(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_expiry_waits_for_the_latest_turn_postgres() {
    an_early_expiry_waits_for_the_latest_turn(Db::Postgres).await;
}

/// `/metrics` counts conversation timers by bot and kind: each one claimed
/// as due, and each one that ran its turn.
#[tokio::test]
async fn timers_are_counted_by_bot_and_kind() {
    let app = app().await;
    let text = std::fs::read_to_string("examples/helpdesk.yaml")
        .unwrap()
        .replacen("id: helpdesk", "id: timed-helpdesk", 1);
    app.import_yaml(text).await;
    let count = |text: &str, name: &str, kind: &str| -> u64 {
        let series = format!("{name}{{bot=\"timed-helpdesk\",kind=\"{kind}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0, |v| v.trim().parse().unwrap())
    };
    let scrape = || async {
        let r = app
            .client
            .get(format!("{}/metrics", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    };
    transcript(
        &app,
        "timed-helpdesk",
        "+34600000401",
        &["hi", "Printer jam"],
    )
    .await;
    transcript(&app, "timed-helpdesk", "+34600000402", &["hi", "Disk full"]).await;
    let before = scrape().await;
    assert_eq!(count(&before, "botwire_timers_due_total", "reminder"), 0);
    // Both reminders are due after 11 minutes; the timeouts after 31.
    fire(&app.chat, &app.store, 11).await;
    let after = scrape().await;
    assert_eq!(count(&after, "botwire_timers_due_total", "reminder"), 2);
    assert_eq!(count(&after, "botwire_timers_fired_total", "reminder"), 2);
    assert_eq!(count(&after, "botwire_timers_fired_total", "timeout"), 0);
    fire(&app.chat, &app.store, 31).await;
    let later = scrape().await;
    assert_eq!(count(&later, "botwire_timers_due_total", "timeout"), 2);
    assert_eq!(count(&later, "botwire_timers_fired_total", "timeout"), 2);
    assert_eq!(count(&later, "botwire_timers_fired_total", "reminder"), 2);
}
