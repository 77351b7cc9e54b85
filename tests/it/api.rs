//! The HTTP API over a real server and database: authentication and scope
//! on every route, bad input on every body, and snapshots of the answers.

use crate::common;

use common::{App, Db, spawn_app};
use serde_json::{Value, json};
use std::sync::Arc;

/// Every authenticated route, with a body where it takes one. `{bot}` is
/// the victim bot, `{key}` one of its account's keys, `{endpoint}`,
/// `{hook}`, `{event}` and `{delivery}` the victim's.
fn routes() -> Vec<(&'static str, &'static str, Option<Value>)> {
    vec![
        ("GET", "/v1/bots", None),
        (
            "POST",
            "/v1/bots",
            Some(json!({"name": "n", "type": "support"})),
        ),
        ("GET", "/v1/bots/{bot}", None),
        ("PATCH", "/v1/bots/{bot}", Some(json!({"name": "stolen"}))),
        ("DELETE", "/v1/bots/{bot}", None),
        ("GET", "/v1/keys", None),
        ("POST", "/v1/keys", Some(json!({"name": "x"}))),
        ("DELETE", "/v1/keys/{key}", None),
        ("GET", "/v1/bots/{bot}/flow", None),
        (
            "PUT",
            "/v1/bots/{bot}/flow",
            Some(json!({"start": "a", "nodes": {"a": {"end": true}}})),
        ),
        (
            "POST",
            "/v1/bots/{bot}/flow/check",
            Some(json!({"start": "a", "nodes": {"a": {"end": true}}})),
        ),
        (
            "POST",
            "/v1/bots/{bot}/payload-preview",
            Some(json!({"node": "a", "format": "flat"})),
        ),
        ("GET", "/v1/bots/{bot}/settings", None),
        ("PUT", "/v1/bots/{bot}/settings", Some(json!({}))),
        ("GET", "/v1/bots/{bot}/export", None),
        (
            "POST",
            "/v1/bots/import",
            Some(
                json!({"id": "intruder", "name": "x", "type": "support", "flow": {"start": "a", "nodes": {"a": {"end": true}}}}),
            ),
        ),
        (
            "POST",
            "/v1/bots/{bot}/chat",
            Some(json!({"contact": {"id": "c"}, "text": "hi"})),
        ),
        ("GET", "/v1/bots/{bot}/conversations", None),
        ("GET", "/v1/bots/{bot}/conversations/{conversation}", None),
        ("GET", "/v1/conversations", None),
        (
            "POST",
            "/v1/conversations/{conversation}/messages",
            Some(json!({"text": "hello from outside"})),
        ),
        (
            "POST",
            "/v1/conversations/{conversation}/release",
            Some(json!({})),
        ),
        (
            "GET",
            "/v1/bots/{bot}/chat/messages?contact=%2B34600000000",
            None,
        ),
        ("GET", "/v1/events", None),
        ("GET", "/v1/events/{event}", None),
        ("GET", "/v1/event-types", None),
        ("GET", "/v1/event-types/message.received/sample", None),
        (
            "POST",
            "/v1/bots/{bot}/events",
            Some(json!({"type": "order.paid", "data": {}})),
        ),
        ("GET", "/v1/bots/{bot}/appointments", None),
        ("DELETE", "/v1/bots/{bot}/appointments/{appointment}", None),
        ("GET", "/v1/bots/{bot}/webhooks", None),
        (
            "POST",
            "/v1/bots/{bot}/webhooks",
            Some(json!({"name": "steal", "url": "https://example.com/x"})),
        ),
        ("GET", "/v1/bots/{bot}/webhooks/lookup", None),
        (
            "PATCH",
            "/v1/bots/{bot}/webhooks/lookup",
            Some(json!({"url": "https://example.com/stolen"})),
        ),
        ("DELETE", "/v1/bots/{bot}/webhooks/lookup", None),
        ("GET", "/v1/bots/{bot}/webhooks/lookup/calls", None),
        (
            "POST",
            "/v1/bots/{bot}/webhooks/lookup/test",
            Some(json!({})),
        ),
        ("GET", "/v1/bots/{bot}/webhook-secret", None),
        ("POST", "/v1/bots/{bot}/webhook-secret/rotate", None),
        (
            "POST",
            "/v1/bots/{bot}/endpoints",
            Some(json!({"url": "https://example.com/stolen"})),
        ),
        ("GET", "/v1/bots/{bot}/endpoints", None),
        ("GET", "/v1/endpoints/{endpoint}", None),
        (
            "PATCH",
            "/v1/endpoints/{endpoint}",
            Some(json!({"url": "https://example.com/stolen"})),
        ),
        ("GET", "/v1/endpoints/{endpoint}/secret", None),
        ("POST", "/v1/endpoints/{endpoint}/secret/rotate", None),
        ("POST", "/v1/endpoints/{endpoint}/test", None),
        ("GET", "/v1/endpoints/{endpoint}/health", None),
        ("GET", "/v1/endpoints/{endpoint}/health/chart.svg", None),
        (
            "POST",
            "/v1/endpoints/{endpoint}/recover",
            Some(json!({"since": "2020-01-01T00:00:00Z"})),
        ),
        ("GET", "/v1/endpoints/{endpoint}/deliveries", None),
        ("DELETE", "/v1/endpoints/{endpoint}", None),
        ("GET", "/v1/events/{event}/deliveries", None),
        ("GET", "/v1/deliveries", None),
        ("GET", "/v1/deliveries/{delivery}", None),
        ("GET", "/v1/deliveries/{delivery}/attempts", None),
        ("POST", "/v1/deliveries/{delivery}/retry", None),
        (
            "POST",
            "/v1/hooks/subscribe",
            Some(
                json!({"target_url": "https://example.com/z", "event": "order.paid", "bot_id": "victim"}),
            ),
        ),
        ("DELETE", "/v1/hooks/{hook}", None),
        ("GET", "/v1/bots/{bot}/contacts", None),
        ("GET", "/v1/bots/{bot}/contacts/export", None),
        (
            "POST",
            "/v1/bots/{bot}/contacts/import",
            Some(json!({"phone": "+34600000000"})),
        ),
        ("GET", "/v1/contacts/{contact}", None),
        (
            "PATCH",
            "/v1/contacts/{contact}",
            Some(json!({"attributes": {"name": "stolen"}})),
        ),
        ("GET", "/v1/contacts/{contact}/conversations", None),
        ("GET", "/v1/bots/{bot}/segments", None),
        (
            "POST",
            "/v1/bots/{bot}/segments",
            Some(json!({"name": "steal", "filter": "true"})),
        ),
        ("GET", "/v1/bots/{bot}/segments/{segment}", None),
        (
            "PATCH",
            "/v1/bots/{bot}/segments/{segment}",
            Some(json!({"name": "stolen"})),
        ),
        ("DELETE", "/v1/bots/{bot}/segments/{segment}", None),
        ("GET", "/v1/bots/{bot}/broadcasts", None),
        (
            "POST",
            "/v1/bots/{bot}/broadcasts",
            Some(json!({"segment": "{segment}", "message": "stolen"})),
        ),
        ("GET", "/v1/broadcasts/{broadcast}", None),
        ("POST", "/v1/broadcasts/{broadcast}/pause", None),
        ("POST", "/v1/broadcasts/{broadcast}/resume", None),
        ("POST", "/v1/broadcasts/{broadcast}/cancel", None),
        (
            "POST",
            "/api/v1.0/chatbot-webhook/{bot}/",
            Some(json!({"url": "https://example.com/stolen"})),
        ),
    ]
}

/// Routes that read public reference data: any valid key may call them.
const PUBLIC_TO_ANY_KEY: [&str; 2] = ["/v1/event-types", "/v1/event-types/message.received/sample"];

async fn app() -> App {
    spawn_app(Db::Sqlite).await.expect("sqlite always runs")
}

#[tokio::test]
async fn every_route_needs_a_key_and_respects_its_scope() {
    let app = app().await;
    let victim = std::fs::read_to_string("examples/appointment.yaml")
        .unwrap()
        .replace("id: appointment", "id: victim");
    app.import_yaml(victim).await;
    app.create_bot("mine", "support").await;
    let keys = app.admin("GET", "/v1/keys", None).await;
    let victim_key_id = keys.body["data"][0]["id"].as_str().unwrap().to_owned();
    // A conversation, its events and an appointment of the victim bot.
    let mut chat = Value::Null;
    for text in ["hi", "Victor", "1"] {
        chat = app
            .admin(
                "POST",
                "/v1/bots/victim/chat",
                Some(json!({"contact": {"phone": "+34600000000"}, "text": text})),
            )
            .await
            .body;
    }
    let conversation = chat["conversation_id"].as_str().unwrap().to_owned();
    let chat_event = chat["events"][0].as_str().unwrap().to_owned();
    let appointments = app.admin("GET", "/v1/bots/victim/appointments", None).await;
    let appointment = appointments.body["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .admin(
            "POST",
            "/v1/bots/victim/webhooks",
            Some(json!({"name": "lookup", "url": "https://example.com/victim-api"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let story_secret = app
        .admin("GET", "/v1/bots/victim/webhook-secret", None)
        .await
        .body["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = app.other_account_key().await;
    let scoped = app.bot_key("mine").await;
    let publishable = app
        .admin(
            "POST",
            "/v1/keys",
            Some(json!({"kind": "publishable", "bot_id": "victim", "origins": ["https://shop.example"]})),
        )
        .await;
    assert_eq!(publishable.status, 201, "{}", publishable.body);
    let publishable = publishable.body["key"].as_str().unwrap().to_owned();
    let endpoint = app
        .admin(
            "POST",
            "/v1/bots/victim/endpoints",
            Some(json!({"url": "https://example.com/victim"})),
        )
        .await;
    let endpoint = endpoint.body["id"].as_str().unwrap().to_owned();
    let hook = app
        .admin(
            "POST",
            "/v1/hooks/subscribe",
            Some(json!({"target_url": "https://example.com/zap", "event": "order.paid", "bot_id": "victim"})),
        )
        .await;
    let hook = hook.body["id"].as_str().unwrap().to_owned();
    let event = app
        .admin(
            "POST",
            "/v1/bots/victim/events",
            Some(json!({"type": "order.paid", "data": {}})),
        )
        .await;
    let event = event.body["id"].as_str().unwrap().to_owned();
    let deliveries = app
        .admin("GET", &format!("/v1/events/{event}/deliveries"), None)
        .await;
    let delivery = deliveries.body["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let contacts = app.admin("GET", "/v1/bots/victim/contacts", None).await;
    let contact = contacts.body["data"][0]["id"].as_str().unwrap().to_owned();
    let segment = app
        .admin(
            "POST",
            "/v1/bots/victim/segments",
            Some(json!({"name": "Victim VIPs", "filter": "user.name == \"Victor\""})),
        )
        .await;
    assert_eq!(segment.status, 201, "{}", segment.body);
    let segment = segment.body["id"].as_str().unwrap().to_owned();
    let broadcast = app
        .admin(
            "POST",
            "/v1/bots/victim/broadcasts",
            Some(json!({"segment": segment, "message": "Victim news", "schedule_at": "2999-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(broadcast.status, 201, "{}", broadcast.body);
    let broadcast = broadcast.body["id"].as_str().unwrap().to_owned();
    for (method, template, body) in routes() {
        let body = body.map(|b| {
            serde_json::from_str::<Value>(&b.to_string().replace("{segment}", &segment)).unwrap()
        });
        let path = template
            .replace("{broadcast}", &broadcast)
            .replace("{contact}", &contact)
            .replace("{segment}", &segment)
            .replace("{bot}", "victim")
            .replace("{key}", &victim_key_id)
            .replace("{endpoint}", &endpoint)
            .replace("{hook}", &hook)
            .replace("{delivery}", &delivery)
            .replace("{conversation}", &conversation)
            .replace("{event}", &event)
            .replace("{appointment}", &appointment);
        let secret = |body: &Value| {
            let text = body.to_string();
            [
                "Victor",
                "+34600000000",
                victim_key_id.as_str(),
                conversation.as_str(),
                chat_event.as_str(),
                event.as_str(),
                appointment.as_str(),
                contact.as_str(),
                segment.as_str(),
                broadcast.as_str(),
                "Victim news",
                endpoint.as_str(),
                delivery.as_str(),
                story_secret.as_str(),
                "victim-api",
            ]
            .iter()
            .any(|s| text.contains(s))
        };

        let r = app.call(method, &path, None, body.clone()).await;
        assert_eq!(r.status, 401, "{method} {path} without a key: {}", r.body);
        assert_eq!(r.body["error"]["code"], "unauthorized");

        let r = app
            .call(
                method,
                &path,
                Some("bw_not-a-real-key-but-the-right-length-xxxxxx"),
                body.clone(),
            )
            .await;
        assert_eq!(r.status, 401, "{method} {path} with a bad key: {}", r.body);

        let r = app.call(method, &path, Some(&other), body.clone()).await;
        // An error may echo the name asked for; a success must not hold the victim's data.
        let leaked = r.status < 300 && (r.body.to_string().contains("victim") || secret(&r.body));
        assert!(
            matches!(r.status, 403 | 404) || (r.status < 300 && !leaked && !template.contains('{')),
            "{method} {path} with another account's key: {} {}",
            r.status,
            r.body
        );
        assert!(
            !leaked,
            "{method} {path} leaked data to another account: {}",
            r.body
        );

        let r = app.call(method, &path, Some(&scoped), body.clone()).await;
        let leaked =
            r.status < 300 && (r.body.to_string().contains("\"victim\"") || secret(&r.body));
        let own_lists = [
            "/v1/bots",
            "/v1/events",
            "/v1/deliveries",
            "/v1/conversations",
        ];
        assert!(
            matches!(r.status, 403 | 404)
                || (r.status == 200
                    && !leaked
                    && method == "GET"
                    && (own_lists.contains(&template) || PUBLIC_TO_ANY_KEY.contains(&template))),
            "{method} {path} with a key scoped to another bot: {} {}",
            r.status,
            r.body
        );

        // The victim's own publishable key, from its own website, may chat
        // and nothing else.
        if !template.starts_with("/v1/bots/{bot}/chat") {
            let mut req = app
                .client
                .request(method.parse().unwrap(), format!("{}{path}", app.base))
                .bearer_auth(&publishable)
                .header("origin", "https://shop.example");
            if let Some(b) = &body {
                req = req.json(b);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            assert!(
                matches!(status, 403 | 404),
                "{method} {path} with a publishable key: {status} {text}"
            );
            assert!(
                !text.contains("Victor") && !text.contains(&conversation),
                "{method} {path} leaked to a publishable key: {text}"
            );
        }
    }
    // Nothing of the victim changed.
    let r = app.admin("GET", "/v1/bots/victim", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["name"], "Clinic appointments");
    assert_eq!(r.body["flow_version"], 1);
    let r = app
        .admin("GET", "/v1/bots/victim/appointments?status=booked", None)
        .await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    let r = app.admin("GET", "/v1/keys", None).await;
    assert!(r.body["data"][0]["revoked_at"].is_null());
    let r = app
        .admin("GET", &format!("/v1/endpoints/{endpoint}"), None)
        .await;
    assert_eq!(r.body["url"], "https://example.com/victim");
    let r = app
        .admin("GET", "/v1/bots/victim/webhooks/lookup", None)
        .await;
    assert_eq!(r.body["url"], "https://example.com/victim-api");
    let r = app
        .admin("GET", "/v1/bots/victim/webhook-secret", None)
        .await;
    assert_eq!(
        r.body["secret"],
        story_secret.as_str(),
        "not rotated by an intruder"
    );
    let r = app.admin("GET", "/v1/bots/victim/endpoints", None).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 2, "nothing added");
    let r = app
        .admin("GET", &format!("/v1/contacts/{contact}"), None)
        .await;
    assert!(
        r.body["attributes"].get("name") != Some(&json!("stolen")),
        "{}",
        r.body
    );
    let r = app
        .admin("GET", &format!("/v1/bots/victim/segments/{segment}"), None)
        .await;
    assert_eq!(r.body["name"], "Victim VIPs");
    let r = app
        .admin("GET", &format!("/v1/broadcasts/{broadcast}"), None)
        .await;
    assert_eq!(r.body["state"], "scheduled", "{}", r.body);
    let r = app.admin("GET", "/v1/bots/victim/broadcasts", None).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1, "nothing added");
}

#[tokio::test]
async fn a_publishable_key_chats_from_its_origins_only() {
    let app = app().await;
    let r = app.import_example("elipackage").await;
    let bot_id = r["bot_id"].as_str().unwrap().to_owned();

    for (body, fix) in [
        (
            json!({"kind": "publishable", "origins": ["https://shop.example"]}),
            "bot_id",
        ),
        (json!({"kind": "publishable", "bot_id": bot_id}), "origins"),
        (
            json!({"kind": "publishable", "bot_id": bot_id, "origins": ["shop.example"]}),
            "https://shop.example.com",
        ),
        (
            json!({"kind": "secret", "origins": ["https://shop.example"]}),
            "only publishable",
        ),
        (json!({"kind": "magic"}), "secret or publishable"),
        (
            json!({"kind": "publishable", "bot_id": "nope", "origins": ["https://a.example"]}),
            "nope",
        ),
    ] {
        let r = app.admin("POST", "/v1/keys", Some(body.clone())).await;
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        let msg = r.body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(fix), "{body}: {msg}");
    }
    let r = app
        .admin(
            "POST",
            "/v1/keys",
            Some(
                json!({"name": "widget", "kind": "publishable", "bot_id": bot_id,
                        "origins": ["https://Shop.example/", "http://localhost:8080"]}),
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["kind"], "publishable");
    assert_eq!(
        r.body["origins"],
        json!(["https://shop.example", "http://localhost:8080"])
    );
    let key = r.body["key"].as_str().unwrap().to_owned();
    let listed = app.admin("GET", "/v1/keys", None).await;
    assert!(
        listed.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kind"] == "publishable" && k["name"] == "widget")
    );

    let chat = |origin: Option<&'static str>, contact: Value, path: String| {
        let mut req = app
            .client
            .post(format!("{}{path}", app.base))
            .bearer_auth(&key)
            .json(&json!({"contact": contact, "text": "hi"}));
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    let visitor = json!({"id": "v_0123456789abcdef"});
    let path = format!("/v1/bots/{bot_id}/chat");

    // From a listed origin: the bot answers, and the page may read it.
    let r = chat(Some("https://shop.example"), visitor.clone(), path.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    assert_eq!(r.headers()["vary"], "origin");
    let body: Value = r.json().await.unwrap();
    assert!(!body["replies"].as_array().unwrap().is_empty(), "{body}");
    // The visitor is stored apart from contacts named by secret keys.
    let conv = app
        .admin(
            "GET",
            &format!(
                "/v1/bots/{bot_id}/conversations/{}",
                body["conversation_id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(conv.status, 200, "{}", conv.body);
    assert!(
        conv.body.to_string().contains("web:v_0123456789abcdef"),
        "{}",
        conv.body
    );

    // Another origin, no origin, a phone, a short id, another bot: refused.
    let r = chat(Some("https://evil.example"), visitor.clone(), path.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.headers().get("access-control-allow-origin").is_none(),
        "an origin the key does not list may not read the answer: {:?}",
        r.headers()
    );
    assert_eq!(r.headers()["vary"], "origin");
    let r = chat(None, visitor.clone(), path.clone()).await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["vary"], "origin");
    let r = chat(
        Some("http://localhost:8080"),
        json!({"phone": "+525500000000"}),
        path.clone(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 422);
    let r = chat(
        Some("http://localhost:8080"),
        json!({"id": "short"}),
        path.clone(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 422);
    app.create_bot("other", "support").await;
    let r = chat(
        Some("http://localhost:8080"),
        visitor.clone(),
        "/v1/bots/other/chat".into(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);

    // A visitor address may send 30 messages a minute through the key; the
    // requests above that passed the origin check counted (4 of them).
    let mut sent = 4;
    let refused = loop {
        let r = chat(Some("https://shop.example"), visitor.clone(), path.clone())
            .await
            .unwrap();
        if r.status() != 200 {
            break r;
        }
        sent += 1;
        assert!(sent <= 30, "message {sent} was not limited");
    };
    assert_eq!(sent, 30);
    assert_eq!(refused.status(), 429);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // The 429 is readable by the listed origin, so the widget can say why.
    assert_eq!(
        refused.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("a minute"),
        "{body}"
    );
    // Secret keys are not limited this way.
    for _ in 0..3 {
        let r = app
            .admin(
                "POST",
                &path,
                Some(json!({"contact": {"id": "c1"}, "text": "hi"})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // A secret key never lets a page read the answer, whatever its origin.
    for origin in ["https://shop.example", "https://evil.example"] {
        let r = app
            .client
            .post(format!("{}{path}", app.base))
            .bearer_auth(&app.admin_key)
            .header("origin", origin)
            .json(&json!({"contact": {"id": "c1"}, "text": "hi"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers().get("access-control-allow-origin").is_none(),
            "secret key from {origin}: {:?}",
            r.headers()
        );
        assert_eq!(r.headers()["vary"], "origin");
    }

    // The browser's preflight.
    let r = app
        .client
        .request(reqwest::Method::OPTIONS, format!("{}{path}", app.base))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    assert_eq!(
        r.headers().get_all("vary").iter().collect::<Vec<_>>(),
        ["origin"]
    );
    let allowed = r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"));
}

#[tokio::test]
async fn a_bot_scoped_key_sees_and_changes_only_its_bot() {
    let app = app().await;
    app.create_bot("mine", "support").await;
    app.create_bot("theirs", "support").await;
    let scoped = app.bot_key("mine").await;
    let r = app.call("GET", "/v1/bots", Some(&scoped), None).await;
    assert_eq!(r.status, 200);
    let ids: Vec<_> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].clone())
        .collect();
    assert_eq!(ids, [json!("mine")]);
    let r = app
        .call(
            "PATCH",
            "/v1/bots/mine",
            Some(&scoped),
            Some(json!({"name": "Mine"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["name"], "Mine");
    let r = app
        .call("DELETE", "/v1/bots/mine", Some(&scoped), None)
        .await;
    assert_eq!(r.status, 403, "deleting needs an account-wide key");
}

#[tokio::test]
async fn revoked_keys_stop_at_once() {
    let app = app().await;
    let r = app
        .admin("POST", "/v1/keys", Some(json!({"name": "temp"})))
        .await;
    assert_eq!(r.status, 201);
    let key = r.body["key"].as_str().unwrap().to_owned();
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.call("GET", "/v1/bots", Some(&key), None).await.status,
        200
    );
    let r = app.admin("DELETE", &format!("/v1/keys/{id}"), None).await;
    assert_eq!(r.status, 200);
    assert!(r.body["revoked_at"].is_string());
    assert_eq!(
        app.call("GET", "/v1/bots", Some(&key), None).await.status,
        401
    );
    assert_eq!(
        app.admin("DELETE", "/v1/keys/key_nope", None).await.status,
        404
    );
}

#[tokio::test]
async fn bad_input_gets_a_4xx_that_says_what_to_fix() {
    let app = app().await;
    let key = app.admin_key.clone();
    // (method, path, content type, body, expected status, hint in the message)
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        Vec<u8>,
        u16,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/v1/bots",
            "application/json",
            b"{\"name\":".to_vec(),
            400,
            "malformed JSON",
        ),
        (
            "POST",
            "/v1/bots",
            "application/json",
            b"[1,2]".to_vec(),
            422,
            "request body",
        ),
        (
            "POST",
            "/v1/bots",
            "application/json",
            br#"{"name": 5, "type": "support"}"#.to_vec(),
            422,
            "field `name`",
        ),
        (
            "POST",
            "/v1/bots",
            "application/json",
            br#"{"name": "a", "type": "faq"}"#.to_vec(),
            422,
            "data_collection",
        ),
        (
            "POST",
            "/v1/bots",
            "application/json",
            br#"{"name": "a"}"#.to_vec(),
            422,
            "type",
        ),
        (
            "POST",
            "/v1/bots",
            "application/json",
            br#"{"name": "a", "type": "support", "colour": 1}"#.to_vec(),
            422,
            "colour",
        ),
        (
            "POST",
            "/v1/bots",
            "application/json",
            br#"{"id": "Bad Id", "name": "a", "type": "support"}"#.to_vec(),
            422,
            "field `id`",
        ),
        (
            "POST",
            "/v1/bots",
            "application/json",
            br#"{"id": "", "name": "a", "type": "support"}"#.to_vec(),
            422,
            "field `id`",
        ),
        (
            "POST",
            "/v1/bots",
            "application/json",
            br#"{"name": "  ", "type": "support"}"#.to_vec(),
            422,
            "field `name`",
        ),
        (
            "POST",
            "/v1/bots",
            "application/json",
            br#"{"name": "a\u0007", "type": "support"}"#.to_vec(),
            422,
            "control",
        ),
        (
            "POST",
            "/v1/bots",
            "text/plain",
            br#"{"name": "a", "type": "support"}"#.to_vec(),
            415,
            "application/json",
        ),
        (
            "POST",
            "/v1/bots",
            "application/json",
            vec![b' '; 70 * 1024],
            413,
            "larger",
        ),
        (
            "POST",
            "/v1/keys",
            "application/json",
            br#"{"bot_id": "ghost"}"#.to_vec(),
            422,
            "ghost",
        ),
        (
            "POST",
            "/v1/keys",
            "application/json",
            br#"{"name": ""}"#.to_vec(),
            422,
            "field `name`",
        ),
        (
            "PATCH",
            "/v1/bots/ghost",
            "application/json",
            br#"{"name": "x"}"#.to_vec(),
            404,
            "ghost",
        ),
        (
            "GET",
            "/v1/bots?limit=0",
            "application/json",
            vec![],
            400,
            "limit",
        ),
        (
            "GET",
            "/v1/bots?limit=abc",
            "application/json",
            vec![],
            400,
            "limit",
        ),
        (
            "GET",
            "/v1/bots?cursor=!!!",
            "application/json",
            vec![],
            400,
            "cursor",
        ),
        (
            "GET",
            "/v1/nothing-here",
            "application/json",
            vec![],
            404,
            "openapi",
        ),
        ("PUT", "/v1/bots", "application/json", vec![], 405, "method"),
    ];
    for (method, path, ct, body, status, hint) in cases {
        let r = app.raw(method, path, Some(&key), ct, body).await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.body);
        let message = r.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(hint),
            "{method} {path}: message {message:?} should mention {hint:?}"
        );
        assert!(r.body["error"]["code"].is_string());
    }
}

#[tokio::test]
async fn bots_crud_and_paging() {
    let app = app().await;
    let created = app
        .admin(
            "POST",
            "/v1/bots",
            Some(json!({"id": "elipackage", "name": "EliPackage", "type": "data_collection"})),
        )
        .await;
    assert_eq!(created.status, 201);
    insta::assert_json_snapshot!("bot_created", created.body, {
        ".created_at" => "[time]", ".updated_at" => "[time]"
    });
    let dup = app
        .admin(
            "POST",
            "/v1/bots",
            Some(json!({"id": "elipackage", "name": "Again", "type": "support"})),
        )
        .await;
    assert_eq!(dup.status, 409);
    insta::assert_json_snapshot!("bot_duplicate", dup.body);

    let generated = app
        .admin(
            "POST",
            "/v1/bots",
            Some(json!({"name": "No id", "type": "support"})),
        )
        .await;
    assert_eq!(generated.status, 201);
    assert!(generated.body["id"].as_str().unwrap().starts_with("bot-"));

    let r = app
        .admin(
            "PATCH",
            "/v1/bots/elipackage",
            Some(json!({"type": "appointment"})),
        )
        .await;
    assert_eq!(r.body["type"], "appointment");
    assert_eq!(r.body["name"], "EliPackage");

    for n in 0..4 {
        app.create_bot(&format!("p{n}"), "support").await;
    }
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/bots?limit=2&cursor={c}"),
            None => "/v1/bots?limit=2".to_owned(),
        };
        let r = app.admin("GET", &path, None).await;
        assert_eq!(r.status, 200);
        assert!(r.body["data"].as_array().unwrap().len() <= 2);
        ids.extend(
            r.body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["id"].as_str().unwrap().to_owned()),
        );
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(ids.len(), 6);
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);

    assert_eq!(app.admin("DELETE", "/v1/bots/p0", None).await.status, 204);
    assert_eq!(app.admin("GET", "/v1/bots/p0", None).await.status, 404);
}

#[tokio::test]
async fn keys_are_shown_once() {
    let app = app().await;
    app.create_bot("eli", "data_collection").await;
    let r = app
        .admin(
            "POST",
            "/v1/keys",
            Some(json!({"name": "partner", "bot_id": "eli"})),
        )
        .await;
    assert_eq!(r.status, 201);
    let key = r.body["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("bw_") && key.len() == 46);
    insta::assert_json_snapshot!("key_created", r.body, {
        ".id" => "[id]", ".key" => "[key]", ".prefix" => "[prefix]", ".created_at" => "[time]"
    });
    let list = app.admin("GET", "/v1/keys", None).await;
    assert!(
        !list.body.to_string().contains(&key),
        "a listed key never shows the key"
    );
    assert_eq!(list.body["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn health_metrics_request_ids_and_the_openapi_document() {
    let app = app().await;
    let r = app.call("GET", "/healthz", None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "ok");

    // The recorder is process-wide and other tests run beside this one:
    // compare the route's count after with before.
    let scrape = || async {
        app.client
            .get(format!("{}/metrics", app.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let series = "botwire_http_requests_total{method=\"GET\",route=\"/v1/bots\",status=\"200\"} ";
    let count = |text: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .map_or(0, |v| v.parse().unwrap())
    };
    let before = count(&scrape().await);
    app.admin("GET", "/v1/bots", None).await;
    let text = scrape().await;
    assert!(count(&text) > before, "{text}");
    assert!(text.contains("botwire_store_commits_total"));

    let resp = app
        .client
        .get(format!("{}/v1/bots", app.base))
        .send()
        .await
        .unwrap();
    let id = resp
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(id.starts_with("req_"), "{id}");

    let doc = app.call("GET", "/openapi.json", None, None).await;
    assert_eq!(doc.status, 200);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(doc.body, botwire::api::openapi::document());
    insta::assert_json_snapshot!("openapi", doc.body, { ".info.version" => "[version]" });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_under_load_stops_at_once() {
    let app = app().await;
    let r = app
        .admin("POST", "/v1/keys", Some(json!({"name": "busy"})))
        .await;
    let (key, id) = (
        r.body["key"].as_str().unwrap().to_owned(),
        r.body["id"].as_str().unwrap().to_owned(),
    );
    let revoked_at: Arc<std::sync::Mutex<Option<std::time::Instant>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, base, key, revoked_at) = (
            app.client.clone(),
            app.base.clone(),
            key.clone(),
            revoked_at.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..60 {
                let started = std::time::Instant::now();
                let status = client
                    .get(format!("{base}/v1/bots"))
                    .bearer_auth(&key)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16();
                let after_revoke = revoked_at.lock().unwrap().is_some_and(|t| started > t);
                seen.push((after_revoke, status));
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            seen
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    let r = app.admin("DELETE", &format!("/v1/keys/{id}"), None).await;
    assert_eq!(r.status, 200);
    *revoked_at.lock().unwrap() = Some(std::time::Instant::now());
    let mut before_ok = 0;
    let mut after = 0;
    for t in tasks {
        for (after_revoke, status) in t.await.unwrap() {
            if after_revoke {
                after += 1;
                assert_eq!(
                    status, 401,
                    "a request sent after the revocation was let in"
                );
            } else if status == 200 {
                before_ok += 1;
            }
        }
    }
    assert!(
        before_ok > 0 && after > 0,
        "load ran on both sides ({before_ok} before, {after} after)"
    );
}

#[tokio::test]
async fn readiness_says_when_the_store_cannot_commit() {
    let app = app().await;
    let r = app.call("GET", "/readyz", None, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["ready"], true);
    assert_eq!(r.body["reason"], "ready");

    // The writer is gone: reads still answer, commits cannot happen.
    app.store.close().await;
    let r = app.call("GET", "/readyz", None, None).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["ready"], false);
    assert_eq!(r.body["reason"], "store_unavailable");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("cannot commit"),
        "{}",
        r.body
    );
    let r = app.call("GET", "/healthz", None, None).await;
    assert_eq!(r.status, 200, "liveness stays cheap: {}", r.body);
}

/// `PUT …/flow` with the `x-flow-version` it was based on.
async fn put_flow_if(app: &App, bot: &str, if_match: Option<&str>, flow: &Value) -> (u16, Value) {
    let mut req = app
        .client
        .put(format!("{}/v1/bots/{bot}/flow", app.base))
        .bearer_auth(&app.admin_key)
        .json(flow);
    if let Some(v) = if_match {
        req = req.header("if-match", v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn two_saves_from_the_same_version_conflict_with_409() {
    let app = app().await;
    app.import_example("elipackage").await;
    let r = app.admin("GET", "/v1/bots/elipackage/flow", None).await;
    let mut mine = r.body.clone();
    let mut theirs = r.body.clone();
    mine["nodes"]["thanks"]["message"] = json!("Mine");
    theirs["nodes"]["thanks"]["message"] = json!("Theirs");

    // Both start from version 1: the first save wins, the second is told to reload.
    let (status, body) = put_flow_if(&app, "elipackage", Some("\"1\""), &theirs).await;
    assert_eq!((status, body["version"].clone()), (200, json!(2)), "{body}");
    let (status, body) = put_flow_if(&app, "elipackage", Some("\"1\""), &mine).await;
    assert_eq!(status, 409, "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("version 2 is current") && msg.contains("Reload"),
        "{msg}"
    );
    let now = app.admin("GET", "/v1/bots/elipackage/flow", None).await;
    assert_eq!(
        now.body["nodes"]["thanks"]["message"], "Theirs",
        "the first save stays"
    );

    // Based on the current version (bare or weak forms too), it saves.
    let (status, body) = put_flow_if(&app, "elipackage", Some("W/\"2\""), &mine).await;
    assert_eq!((status, body["version"].clone()), (200, json!(3)), "{body}");
    // Without If-Match (API users) the last save wins, as before; `*` too.
    let (status, _) = put_flow_if(&app, "elipackage", None, &theirs).await;
    assert_eq!(status, 200);
    let (status, _) = put_flow_if(&app, "elipackage", Some("*"), &theirs).await;
    assert_eq!(status, 200);
    // A malformed If-Match says what it wants.
    let (status, body) = put_flow_if(&app, "elipackage", Some("yesterday"), &mine).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-flow-version")
    );
    // An invalid flow based on a stale version: either refusal is a 4xx and nothing is saved.
    let (status, _) = put_flow_if(&app, "elipackage", Some("\"1\""), &json!({"nodes": {}})).await;
    assert!(status == 409 || status == 422, "{status}");
    let r = app.admin("GET", "/v1/bots/elipackage", None).await;
    assert_eq!(r.body["flow_version"], 5);
}

#[tokio::test]
async fn the_payload_preview_renders_a_node_as_each_format_sends_it() {
    let app = app().await;
    app.import_example("elipackage").await;
    let r = app
        .admin(
            "POST",
            "/v1/bots/elipackage/payload-preview",
            Some(json!({"node": "welcome", "format": "flat", "extra_body": {"source": "crm"}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = &r.body["payloads"][0]["body"];
    assert_eq!(r.body["payloads"][0]["event_type"], "response.received");
    assert_eq!(body["label"], "Welcome Message");
    assert_eq!(body["response"], "John Doe");
    assert_eq!(body["phoneNumber"], "+525500000000");
    assert_eq!(body["source"], "crm");
    assert!(body["date"].as_str().unwrap().ends_with('Z'));

    let r = app
        .admin(
            "POST",
            "/v1/bots/elipackage/payload-preview",
            Some(json!({"node": "membership", "format": "standard"})),
        )
        .await;
    assert_eq!(r.status, 200);
    let p = r.body["payloads"].as_array().unwrap();
    assert_eq!(p.len(), 3, "three options notify");
    assert_eq!(p[0]["body"]["type"], "option.selected");
    assert_eq!(p[0]["body"]["data"]["option"], "One month");

    for (req, want) in [
        (json!({"node": "nowhere"}), 422),
        (json!({"node": "welcome", "format": "xml"}), 422),
        (json!({"nodes": "welcome"}), 422),
    ] {
        let r = app
            .admin(
                "POST",
                "/v1/bots/elipackage/payload-preview",
                Some(req.clone()),
            )
            .await;
        assert_eq!(r.status, want, "{req}: {}", r.body);
        assert!(r.body["error"]["message"].as_str().is_some());
    }
}

#[tokio::test]
async fn a_flow_is_checked_without_saving() {
    let app = app().await;
    app.import_example("elipackage").await;
    let yaml = std::fs::read_to_string("examples/elipackage.yaml")
        .unwrap()
        .split("\nflow:\n")
        .nth(1)
        .unwrap()
        .lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("Thank you", "Many thanks");
    let r = app
        .raw(
            "POST",
            "/v1/bots/elipackage/flow/check",
            Some(&app.admin_key),
            "application/yaml",
            yaml.clone().into_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["nodes"]["thanks"]["message"],
        "Many thanks, {{memory.name}}!"
    );
    assert_eq!(
        r.body["nodes"]["membership"]["options"][3]["campaign"],
        "raffle"
    );
    let bot = app.admin("GET", "/v1/bots/elipackage", None).await;
    assert_eq!(bot.body["flow_version"], 1, "nothing saved");
    let r = app
        .raw(
            "POST",
            "/v1/bots/elipackage/flow/check",
            Some(&app.admin_key),
            "application/yaml",
            yaml.replace("next: membership", "next: nowhere")
                .into_bytes(),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["error"]["details"][0]["node"], "welcome");
}
