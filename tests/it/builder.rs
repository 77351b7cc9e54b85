//! The interactions editor (`#/bots/{bot}/build`) in a real browser: Debian's
//! headless `chromium` through `chromedriver`, against a real server, a
//! real delivery engine and a real HTTP receiver on 127.0.0.1.
//!
//! - Seed 003's EliPackage bot built from a blank bot with the forms alone
//!   (a welcome question with Redirect Type Webhook, a membership menu with
//!   three toggled options and a campaign, a condition from the rule
//!   builder), an endpoint with an `X-Api-Key` header and an extra body
//!   param, then a chat in the preview: the receiver gets seed 003's flat
//!   payloads exactly.
//! - Every example loaded in the forms and saved unchanged gives the same
//!   flow back, and its map renders (a screenshot each).
//!
//! Skipped with a notice when chromium or chromedriver is missing, unless
//! `BOTWIRE_REQUIRE_BROWSER=1`.

use crate::common;
use crate::common::webdriver;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use botwire::delivery::ssrf::AllowList;
use botwire::delivery::{Delivery, Engine, Settings};
use common::{App, Db, spawn_app, spawn_app_with};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use webdriver::{Driver, Session, WAIT};

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Got {
    path: String,
    headers: HeaderMap,
    body: Value,
}

/// A receiver that records every request and answers 200.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
}

async fn receive(
    State(r): State<Receiver>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> &'static str {
    r.got.lock().unwrap().push(Got {
        path: uri.path().to_owned(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    "ok"
}

impl Receiver {
    async fn start() -> (Receiver, String) {
        let r = Receiver::default();
        let app = axum::Router::new().fallback(receive).with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, base)
    }

    /// The first request whose body's `event` is `event`.
    fn event(&self, event: &str) -> Option<Got> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .find(|g| g.body["event"] == event)
            .cloned()
    }

    /// The first `option.selected` request for the option labelled `label`.
    fn option(&self, label: &str) -> Option<Got> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .find(|g| g.body["event"] == "option.selected" && g.body["option"] == label)
            .cloned()
    }
}

/// Waits until the chat log holds `text` at least `n` times.
async fn chat_shows(s: &Session, text: &str, n: usize) {
    let js = "return [...document.querySelectorAll('.chat-log *')].filter(e => !e.children.length && e.textContent.includes(arguments[0])).length";
    s.wait_until(&format!("{n} × {text:?} in the chat"), WAIT, || async {
        let c = s.execute(js, vec![json!(text)]).await.as_u64().unwrap_or(0);
        (c as usize >= n).then_some(())
    })
    .await;
}

async fn no_console_errors(s: &Session, step: &str) {
    let severe = s.severe_logs().await;
    assert!(
        severe.is_empty(),
        "browser console errors during {step}: {severe:#?}"
    );
}

async fn sign_in(s: &Session, app: &App) {
    s.goto(&format!("{}/", app.base)).await;
    s.fill("input[name=key]", &app.admin_key).await;
    s.click("form button[type=submit]").await;
    s.wait_text("h1", "Bots").await;
}

/// Clicks `css` after scrolling it to the middle of the window, clear of
/// the sticky header.
async fn tap(s: &Session, css: &str) {
    s.wait_for(css).await;
    s.execute(
        "document.querySelector(arguments[0]).scrollIntoView({block: 'center'})",
        vec![json!(css)],
    )
    .await;
    s.click(css).await;
}

/// Picks `value` in the `<select>` matching `css`, scrolled clear of the header.
async fn pick(s: &Session, css: &str, value: &str) {
    s.wait_for(css).await;
    s.execute(
        "document.querySelector(arguments[0]).scrollIntoView({block: 'center'})",
        vec![json!(css)],
    )
    .await;
    s.select(css, value).await;
}

/// Sets a field inside node card `node` (CSS inside the card).
fn card(node: &str, css: &str) -> String {
    format!("article[data-node=\"{node}\"] {css}")
}

/// Opens a node's card (its `<details>`) if it is closed.
async fn open_card(s: &Session, node: &str) {
    s.execute(
        "const d = document.querySelector(`article[data-node=\"${arguments[0]}\"] details`); if (d && !d.open) d.open = true;",
        vec![json!(node)],
    )
    .await;
}

/// Adds a node of `kind` with `id` from the "Add an interaction" form.
async fn add_node(s: &Session, kind: &str, id: &str) {
    pick(s, "#add-node select[name=new_kind]", kind).await;
    s.fill("#add-node input[name=new_id]", id).await;
    tap(s, "#add-node button[type=submit]").await;
    s.wait_for(&format!("article[data-node=\"{id}\"]")).await;
    open_card(s, id).await;
}

async fn chat(s: &Session, text: &str, reply: &str) {
    s.fill(".chat-form input[name=text]", text).await;
    s.click(".chat-form button[type=submit]").await;
    s.wait_text(".chat-log", reply).await;
}

/// Asserts the page is not wider than the window and every control is labelled.
async fn fits_and_is_labelled(s: &Session, page: &str) {
    let v = s
        .execute(
            "const bad = [];
             for (const el of document.querySelectorAll('input, select, textarea')) {
               if (el.type === 'hidden' || el.closest('[hidden]')) continue;
               if (!(el.labels && el.labels.length) && !el.getAttribute('aria-label')) bad.push(el.outerHTML.slice(0, 120));
             }
             for (const el of document.querySelectorAll('button, a')) {
               if (!el.textContent.trim() && !el.getAttribute('aria-label')) bad.push(el.outerHTML.slice(0, 120));
             }
             return [document.documentElement.scrollWidth, window.innerWidth, bad];",
            vec![],
        )
        .await;
    assert!(
        v[0].as_u64() <= v[1].as_u64(),
        "{page} scrolls sideways: {} px in {} px",
        v[0],
        v[1]
    );
    assert_eq!(v[2], json!([]), "unlabelled controls on {page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elipackage_built_with_the_forms_sends_seed_003s_flat_payloads() {
    // A browser loads both cores: never beside a heavy test.
    let _timed = common::timed().await;
    if !webdriver::browser_available() {
        return;
    }
    let delivery = Delivery::new(Settings {
        allow: AllowList::parse(["127.0.0.0/8"]).unwrap(),
        timeout: Duration::from_secs(5),
        poll: Some(Duration::from_millis(200)),
        ..Settings::default()
    })
    .unwrap();
    let app = spawn_app_with(Db::Sqlite, delivery.clone()).await.unwrap();
    let _engine = Engine::start(app.store.clone(), delivery);
    let (rx, rx_base) = Receiver::start().await;
    let base = app.base.clone();
    let driver = Driver::start().await;
    let s = driver.session(1280, 900).await;
    sign_in(&s, &app).await;

    // ---- A blank bot, from the New bot page.
    s.goto(&format!("{base}/#/bots/new")).await;
    s.fill("input[name=name]", "EliPackage").await;
    s.fill("input[name=id]", "eli").await;
    s.click_text("button", "Create bot").await;
    s.wait_text("h1", "Edit flow").await;
    s.goto(&format!("{base}/#/bots/eli/build")).await;
    s.wait_text("h1", "Build: EliPackage").await;
    s.wait_text("#build-state", "Not saved yet").await;

    // ---- The nodes: the first one added is the Welcome Message.
    add_node(&s, "ask", "welcome").await;
    add_node(&s, "menu", "membership").await;
    add_node(&s, "message", "thanks").await;
    add_node(&s, "end", "done").await;
    // Not linked yet: the map flags them as unreachable.
    tap(&s, ".tabs [data-graph='#map']").await;
    s.wait_for("svg.flowmap").await;
    let flagged = s
        .execute(
            "return [...document.querySelectorAll('.map-node.unreachable')].map(n => n.dataset.node).sort()",
            vec![],
        )
        .await;
    assert_eq!(flagged, json!(["done", "membership", "thanks"]));
    assert_eq!(
        s.execute(
            "return document.querySelector('.map-node.start').dataset.node",
            vec![]
        )
        .await,
        json!("welcome")
    );
    s.screenshot("builder-map-unlinked").await;
    // Clicking a node on the map opens it in the forms.
    tap(&s, ".map-node[data-node=thanks]").await;
    s.wait_for(&card("thanks", "textarea[name=message]")).await;

    // Welcome: a question whose answer goes to the endpoints (Redirect Type Webhook).
    open_card(&s, "welcome").await;
    s.fill(&card("welcome", "input[name=label]"), "Welcome Message")
        .await;
    s.fill(
        &card("welcome", "textarea[name=ask]"),
        "Welcome to EliPackage, can you enter your name, please?",
    )
    .await;
    s.fill(&card("welcome", "input[name=save_as]"), "name")
        .await;
    pick(&s, &card("welcome", "select[name=validate_kind]"), "text").await;
    s.fill(&card("welcome", "input[name=min]"), "2").await;
    s.fill(&card("welcome", "input[name=max]"), "80").await;
    s.fill(
        &card("welcome", "input[name=retry]"),
        "Please enter your name (2-80 characters).",
    )
    .await;
    pick(
        &s,
        &card("welcome", "select[name=redirect_type]"),
        "webhook",
    )
    .await;
    pick(&s, &card("welcome", "select[name=next]"), "membership").await;

    // The membership menu: three toggled options and a campaign.
    open_card(&s, "membership").await;
    s.fill(&card("membership", "input[name=label]"), "Membership")
        .await;
    s.fill(
        &card("membership", "textarea[name=menu]"),
        "{{memory.name}}, enter the best option for streaming membership:",
    )
    .await;
    for (i, label) in ["One month", "Six months", "One year"].iter().enumerate() {
        let row = format!("tbody tr:nth-child({})", i + 1);
        tap(&s, &card("membership", "[data-action=add-option]")).await;
        s.fill(
            &card("membership", &format!("{row} input[name=label]")),
            label,
        )
        .await;
        pick(
            &s,
            &card("membership", &format!("{row} select[name=redirect_to]")),
            "thanks",
        )
        .await;
        tap(
            &s,
            &card("membership", &format!("{row} input[name=notify]")),
        )
        .await;
    }

    // The raffle campaign, in its own tab.
    s.fill("#add-campaign input[name=new_campaign]", "raffle")
        .await;
    tap(&s, "#add-campaign button[type=submit]").await;
    s.wait_for(".tabs [data-graph=raffle][aria-selected=true]")
        .await;
    add_node(&s, "message", "r1").await;
    add_node(&s, "end", "r2").await;
    s.fill(
        &card("r1", "textarea[name=message]"),
        "You are in the raffle!",
    )
    .await;
    pick(&s, &card("r1", "select[name=next]"), "r2").await;
    tap(&s, ".tabs [data-graph=main]").await;
    s.wait_for("article[data-node=membership]").await;
    open_card(&s, "membership").await;
    tap(&s, &card("membership", "[data-action=add-option]")).await;
    s.fill(
        &card("membership", "tbody tr:nth-child(4) input[name=label]"),
        "Raffle",
    )
    .await;
    pick(
        &s,
        &card(
            "membership",
            "tbody tr:nth-child(4) select[name=redirect_type]",
        ),
        "campaign",
    )
    .await;
    pick(
        &s,
        &card(
            "membership",
            "tbody tr:nth-child(4) select[name=redirect_to]",
        ),
        "raffle",
    )
    .await;
    // Option 5, Redirect Type Webhook: no Redirect To, no toggle; it notifies
    // and the receiving system takes the conversation from there.
    tap(&s, &card("membership", "[data-action=add-option]")).await;
    let row5 = "tbody tr:nth-child(5)";
    s.fill(
        &card("membership", &format!("{row5} input[name=label]")),
        "Call me",
    )
    .await;
    pick(
        &s,
        &card("membership", &format!("{row5} select[name=redirect_type]")),
        "webhook",
    )
    .await;
    s.wait_for(&card(
        "membership",
        &format!("{row5} [data-redirect=endpoint]"),
    ))
    .await;
    let shown = s
        .execute(
            "const r = document.querySelector(arguments[0]); \
             return [!!r.querySelector('select[name=redirect_to]'), r.querySelector('input[name=notify]').closest('label').hidden];",
            vec![json!(card("membership", row5))],
        )
        .await;
    assert_eq!(
        shown,
        json!([false, true]),
        "Redirect Type Webhook hides Redirect To and the toggle"
    );
    s.fill(
        &card("membership", "input[name=retry]"),
        "Please answer 1, 2, 3, 4 or 5.",
    )
    .await;

    // Thanks: a condition from the rule builder, then the end.
    open_card(&s, "thanks").await;
    s.fill(
        &card("thanks", "textarea[name=message]"),
        "Thank you, {{memory.name}}!",
    )
    .await;
    pick(&s, &card("thanks", "select[name=next_mode]"), "conditions").await;
    tap(&s, &card("thanks", "[data-action=add-rule]")).await;
    s.fill(&card("thanks", ".rule input[name=variable]"), "memory.name")
        .await;
    pick(&s, &card("thanks", ".rule select[name=operator]"), "has").await;
    pick(&s, &card("thanks", "select[name=then]"), "done").await;
    pick(&s, &card("thanks", "select[name=else]"), "done").await;
    let cel = s
        .execute(
            "return document.querySelector('article[data-node=thanks] input[name=cel]').value",
            vec![],
        )
        .await;
    assert_eq!(
        cel,
        json!("has(memory.name)"),
        "the rule builder writes CEL"
    );

    // First save with a mistake: the server's error lands beside the field.
    s.fill(&card("welcome", "input[name=save_as]"), "my name")
        .await;
    tap(&s, "#build-save").await;
    s.wait_text(&card("welcome", ".here-errors"), "save_as")
        .await;
    s.screenshot("builder-error-beside-field").await;
    let _ = s.severe_logs().await; // the 422 is expected
    s.fill(&card("welcome", "input[name=save_as]"), "name")
        .await;
    tap(&s, "#build-save").await;
    s.wait_text("#build-result", "Saved as version 1").await;
    s.screenshot("builder-elipackage").await;
    no_console_errors(&s, "building EliPackage").await;

    let flow = app.admin("GET", "/v1/bots/eli/flow", None).await.body;
    assert_eq!(flow["start"], "welcome");
    assert_eq!(
        flow["nodes"]["welcome"],
        json!({"label": "Welcome Message", "ask": "Welcome to EliPackage, can you enter your name, please?",
               "save_as": "name", "validate": {"kind": "text", "min": 2, "max": 80},
               "retry": "Please enter your name (2-80 characters).", "notify": true, "next": "membership"})
    );
    assert_eq!(
        flow["nodes"]["membership"]["options"],
        json!([
            {"keyword": 1, "label": "One month", "notify": true, "next": "thanks"},
            {"keyword": 2, "label": "Six months", "notify": true, "next": "thanks"},
            {"keyword": 3, "label": "One year", "notify": true, "next": "thanks"},
            {"keyword": 4, "label": "Raffle", "campaign": "raffle"},
            {"keyword": 5, "label": "Call me", "notify": true},
        ])
    );
    assert_eq!(
        flow["nodes"]["thanks"]["next"],
        json!([{"if": "has(memory.name)", "then": "done"}, {"else": "done"}])
    );
    assert_eq!(flow["campaigns"]["raffle"]["start"], "r1");

    // ---- The Webhook section: an endpoint with a header and an extra body param.
    tap(&s, ".tabs [data-graph='#webhook']").await;
    s.wait_text("#bot-endpoints", "No endpoint yet").await;
    s.wait_text("#payload-preview", "response.received").await;
    let preview = s.text("#payload-preview").await;
    assert!(
        preview.contains("\"label\": \"Welcome Message\"") && preview.contains("\"response\""),
        "{preview}"
    );
    s.fill("textarea[name=preview_body]", "{\"source\": ").await;
    s.wait_text(
        "textarea[name=preview_body] ~ .field-error",
        "Not valid JSON",
    )
    .await;
    s.fill("textarea[name=preview_body]", "{\"source\": \"eli\"}")
        .await;
    s.wait_text("#payload-preview", "\"source\": \"eli\"").await;
    pick(&s, "select[name=preview_node]", "membership").await;
    s.wait_text("#payload-preview", "Six months").await;
    s.screenshot("builder-webhook-section").await;
    // A payload template, previewed live: its tags filled from the sample.
    pick(&s, "select[name=preview_node]", "welcome").await;
    pick(&s, "select[name=preview_format]", "template").await;
    s.fill(
        "textarea[name=preview_body]",
        r#"{"kind": "{{event.type}}", "name": "{{data.response}}", "at": "{{data.label}}"}"#,
    )
    .await;
    let preview = s
        .wait_text("#payload-preview", "\"name\": \"John Doe\"")
        .await;
    assert!(
        preview.contains("\"kind\": \"response.received\"")
            && preview.contains("\"at\": \"Welcome Message\""),
        "{preview}"
    );
    s.screenshot("builder-template-preview").await;
    // No endpoint yet: created in the tab, then its headers and body set there.
    s.fill("input[name=endpoint_url]", &format!("{rx_base}/eli"))
        .await;
    assert_eq!(
        s.execute(
            "return document.querySelector('select[name=endpoint_format]').value",
            vec![]
        )
        .await,
        json!("flat")
    );
    s.click_text("button", "Create endpoint").await;
    s.wait_text("#bot-endpoints", "POST").await;
    s.wait_text("#bot-endpoints", &format!("{rx_base}/eli"))
        .await;
    tap(&s, "[data-action=add-header]").await;
    s.fill("input[name=header_key]", "X-Api-Key").await;
    s.fill("input[name=header_value]", "eli-key-123").await;
    tap(&s, "[data-action=done-header]").await;
    s.wait_text("tr[data-header='X-Api-Key']", "eli-key-123")
        .await;
    // A second header, edited then deleted with the row's buttons.
    tap(&s, "[data-action=add-header]").await;
    s.fill("input[name=header_key]", "X-Drop").await;
    s.fill("input[name=header_value]", "one").await;
    tap(&s, "[data-action=done-header]").await;
    tap(&s, "tr[data-header='X-Drop'] [data-action=edit-header]").await;
    s.fill("input[name=header_value]", "two").await;
    // Keyboard: Enter keeps the edited row and focus returns to its Edit.
    s.keys("input[name=header_value]", "\u{E007}").await;
    s.wait_text("tr[data-header='X-Drop']", "two").await;
    assert_eq!(
        s.execute(
            "return document.activeElement.closest('tr').dataset.header + ' ' + document.activeElement.dataset.action",
            vec![]
        )
        .await,
        json!("X-Drop edit-header")
    );
    tap(&s, "tr[data-header='X-Drop'] [data-action=delete-header]").await;
    s.fill("textarea[name=endpoint_body]", "{\"source\": ")
        .await;
    s.wait_text(
        "textarea[name=endpoint_body] ~ .field-error",
        "not valid JSON",
    )
    .await;
    s.fill("textarea[name=endpoint_body]", "{\"source\": \"eli\"}")
        .await;
    tap(&s, "[data-action=save-endpoint]").await;
    s.wait_text("#endpoint-saved", "Endpoint saved").await;
    let eps = app.admin("GET", "/v1/bots/eli/endpoints", None).await.body;
    let ep = &eps["data"][0];
    assert_eq!(ep["body"], json!({"source": "eli"}));
    assert_eq!(ep["format"], "flat");
    let keys: Vec<&String> = ep["headers"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["x-api-key"], "X-Drop was deleted: {ep}");
    // Shown again (names as stored, lower case): the secret is redacted, and
    // saving it as shown keeps it.
    tap(&s, ".tabs [data-graph='#map']").await;
    tap(&s, ".tabs [data-graph='#webhook']").await;
    let row = s.wait_text("tr[data-header='x-api-key']", "••••").await;
    assert!(!row.contains("eli-key-123"), "{row}");
    tap(&s, "[data-action=save-endpoint]").await;
    s.wait_text("#endpoint-saved", "Endpoint saved").await;
    tap(&s, "[data-action=test-endpoint]").await;
    let answer = s.wait_text("#tab-test-result", "200").await;
    assert!(answer.contains("ms"), "latency shown: {answer}");
    let test = s
        .wait_until("the test event at the receiver", WAIT, || async {
            rx.got.lock().unwrap().first().cloned()
        })
        .await;
    assert_eq!(test.headers["x-api-key"], "eli-key-123");
    s.screenshot("builder-webhook-endpoint").await;

    // ---- Chat through it in the preview.
    s.goto(&format!("{base}/#/bots/eli")).await;
    // The bot page's outline says where option 5 goes.
    s.wait_text("main", "your endpoint; the conversation ends")
        .await;
    chat(&s, "hi", "Welcome to EliPackage").await;
    chat(&s, "John Doe", "streaming membership").await;
    s.click_text(".quick button", "One month").await;
    s.wait_text(".chat-log", "Thank you, John Doe!").await;
    chat_shows(&s, "The conversation ended", 1).await;
    // A second conversation: option 5 hands it to the endpoint and ends it.
    s.fill(".chat-form input[name=text]", "hi").await;
    s.click(".chat-form button[type=submit]").await;
    chat_shows(&s, "Welcome to EliPackage", 2).await;
    s.fill(".chat-form input[name=text]", "Ana").await;
    s.click(".chat-form button[type=submit]").await;
    chat_shows(&s, "streaming membership", 2).await;
    s.click_text(".quick button", "Call me").await;
    chat_shows(&s, "The conversation ended", 2).await;
    no_console_errors(&s, "chatting").await;
    let handed = s
        .wait_until("option.selected for Call me", WAIT, || async {
            rx.option("Call me")
        })
        .await;
    assert_eq!(handed.body["keyword"], 5);
    assert_eq!(handed.body["label"], "Membership");
    assert_eq!(handed.headers["x-api-key"], "eli-key-123");
    let convs = app
        .admin("GET", "/v1/conversations?bot=eli&status=completed", None)
        .await;
    assert_eq!(convs.status, 200, "{:?}", convs.body);
    assert_eq!(
        convs.body["data"].as_array().map(Vec::len),
        Some(2),
        "both conversations completed: {:?}",
        convs.body
    );

    let response = s
        .wait_until("response.received at the receiver", WAIT, || async {
            rx.event("response.received")
        })
        .await;
    let option = s
        .wait_until("option.selected at the receiver", WAIT, || async {
            rx.event("option.selected")
        })
        .await;
    for got in [&response, &option] {
        assert_eq!(got.path, "/eli");
        assert_eq!(got.headers["x-api-key"], "eli-key-123");
        assert!(got.headers.contains_key("webhook-signature"));
        let date = got.body["date"].as_str().unwrap();
        assert!(
            date.len() == 24 && date.ends_with('Z') && date.as_bytes()[19] == b'.',
            "{date}"
        );
    }
    let without_date = |b: &Value| {
        let mut b = b.clone();
        b.as_object_mut().unwrap().remove("date");
        b
    };
    // Console test contacts have no phone number: the key is there, empty.
    assert_eq!(
        without_date(&response.body),
        json!({"campaignId": "main", "label": "Welcome Message", "phoneNumber": null,
               "response": "John Doe", "event": "response.received", "source": "eli"})
    );
    assert_eq!(
        without_date(&option.body),
        json!({"campaignId": "main", "label": "Membership", "option": "One month", "keyword": 1,
               "phoneNumber": null, "event": "option.selected", "source": "eli"})
    );

    // ---- Unsaved changes are not lost by accident: leaving asks first.
    s.goto(&format!("{base}/#/bots/eli/build")).await;
    s.wait_text("#build-state", "Saved: version 1").await;
    open_card(&s, "thanks").await;
    s.fill(&card("thanks", "textarea[name=message]"), "Thanks!")
        .await;
    s.wait_text("#build-state", "Unsaved changes").await;
    // ---- Keyboard: Escape in a card closes it onto its title; Enter opens it again.
    s.keys(&card("thanks", "textarea[name=message]"), "\u{E00C}")
        .await;
    let v = s
        .execute(
            "const d = document.querySelector('article[data-node=thanks] details'); \
             return [d.open, document.activeElement === d.querySelector('summary')];",
            vec![],
        )
        .await;
    assert_eq!(
        v,
        json!([false, true]),
        "Escape closes the card onto its title"
    );
    s.type_keys("\u{E007}").await;
    s.wait_for(&card("thanks", "textarea[name=message]")).await;

    tap(&s, "nav a[href='#/webhooks']").await;
    let asked = s.accept_dialog().await;
    assert!(asked.contains("unsaved"), "{asked}");
    s.wait_text("h1", "Webhooks").await;

    // ---- One document, two editors: unsaved changes go along both ways.
    s.goto(&format!("{base}/#/bots/eli/build")).await;
    open_card(&s, "thanks").await;
    s.fill(&card("thanks", "textarea[name=message]"), "Thanks a lot!")
        .await;
    s.click_text("a.button", "Edit as YAML").await;
    s.wait_text("main", "unsaved changes from the form editor")
        .await;
    let text = s
        .execute(
            "const t = document.getElementById('flow-text'); \
             t.value = t.value.replace('Welcome to EliPackage', 'Hello from EliPackage'); \
             t.dispatchEvent(new Event('input')); return t.value;",
            vec![],
        )
        .await;
    assert!(text.as_str().unwrap().contains("Thanks a lot!"), "{text}");
    s.click_text("button", "Edit with forms").await;
    s.wait_text("main", "unsaved changes from the YAML editor")
        .await;
    s.wait_text("#build-state", "Unsaved changes").await;
    tap(&s, "#build-save").await;
    s.wait_text("#build-result", "Saved as version 2").await;
    let flow = app.admin("GET", "/v1/bots/eli/flow", None).await.body;
    assert_eq!(flow["nodes"]["thanks"]["message"], "Thanks a lot!");
    assert!(
        flow["nodes"]["welcome"]["ask"]
            .as_str()
            .unwrap()
            .starts_with("Hello from EliPackage")
    );
    // Someone else saves meanwhile: the YAML editor's save is refused with 409.
    s.goto(&format!("{base}/#/bots/eli/edit")).await;
    s.wait_for("#flow-text").await;
    let mut theirs = flow.clone();
    theirs["nodes"]["thanks"]["message"] = json!("Theirs");
    assert_eq!(
        app.admin("PUT", "/v1/bots/eli/flow", Some(theirs))
            .await
            .status,
        200
    );
    s.execute(
        "const t = document.getElementById('flow-text'); \
         t.value = t.value.replace('Thanks a lot!', 'Mine'); t.dispatchEvent(new Event('input'));",
        vec![],
    )
    .await;
    s.click_text("button", "Save flow").await;
    s.wait_text("main", "version 3 is current").await;
    let _ = s.severe_logs().await; // the 409 is expected
    let flow = app.admin("GET", "/v1/bots/eli/flow", None).await.body;
    assert_eq!(
        flow["nodes"]["thanks"]["message"], "Theirs",
        "their save stays"
    );

    // ---- 375 px wide: no sideways scrolling, every control labelled.
    s.resize(375, 800).await;
    s.goto(&format!("{base}/#/bots/eli/build")).await;
    s.wait_for("article[data-node=membership]").await;
    open_card(&s, "membership").await;
    open_card(&s, "thanks").await;
    fits_and_is_labelled(&s, "the interactions editor").await;
    s.screenshot("builder-mobile").await;
    tap(&s, ".tabs [data-graph='#map']").await;
    s.wait_for("svg.flowmap").await;
    fits_and_is_labelled(&s, "the map").await;
    tap(&s, ".tabs [data-graph='#webhook']").await;
    s.wait_text("#bot-endpoints", "POST").await;
    fits_and_is_labelled(&s, "the Webhook tab").await;
    s.screenshot("builder-webhook-mobile").await;
    no_console_errors(&s, "the editor 375 px wide").await;
    s.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_bot_wizard_ends_on_the_chat_preview() {
    // A browser loads both cores: never beside a heavy test.
    let _timed = common::timed().await;
    if !webdriver::browser_available() {
        return;
    }
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let base = app.base.clone();
    let driver = Driver::start().await;
    let s = driver.session(1280, 900).await;
    sign_in(&s, &app).await;

    // Blank, by keyboard: Enter on each step.
    s.goto(&format!("{base}/#/bots/new")).await;
    tap(&s, "a.button[href='#/bots/new/wizard']").await;
    s.wait_text("#wizard", "Step 1 of 3").await;
    tap(&s, "#from-blank").await;
    s.keys("#from-blank", "\u{E007}").await;
    s.wait_text("#wizard", "Step 2 of 3").await;
    s.fill("#wizard input[name=name]", "Front desk").await;
    s.fill("#wizard input[name=id]", "desk").await;
    pick(&s, "#wizard select[name=type]", "support").await;
    fits_and_is_labelled(&s, "the wizard").await;
    s.keys("#wizard input[name=id]", "\u{E007}").await;
    s.wait_text("h1", "Front desk").await;
    chat(&s, "hi", "This bot is new").await;
    let bot = app.admin("GET", "/v1/bots/desk", None).await.body;
    assert_eq!(
        (bot["type"].as_str(), bot["flow_version"].as_i64()),
        (Some("support"), Some(1))
    );

    // From an example, under another id and type, going back once.
    s.goto(&format!("{base}/#/bots/new/wizard")).await;
    tap(&s, "#from-quote").await;
    tap(&s, "#wizard button[type=submit]").await;
    s.wait_text("#wizard", "Step 2 of 3").await;
    tap(&s, "#wizard button:not([type=submit])").await;
    s.wait_text("#wizard", "Step 1 of 3").await;
    tap(&s, "#wizard button[type=submit]").await;
    s.fill("#wizard input[name=name]", "Quotes, second copy")
        .await;
    s.fill("#wizard input[name=id]", "quote-2").await;
    pick(&s, "#wizard select[name=type]", "support").await;
    tap(&s, "#wizard button[type=submit]").await;
    s.wait_text("h1", "Quotes, second copy").await;
    s.wait_for(".chat-form input[name=text]").await;
    let bot = app.admin("GET", "/v1/bots/quote-2", None).await.body;
    assert_eq!(bot["type"], "support");
    assert_eq!(bot["name"], "Quotes, second copy");
    let example = app.admin("GET", "/v1/bots/quote", None).await;
    assert_eq!(example.status, 404, "the example's own id is left alone");
    s.screenshot("builder-wizard-done").await;
    no_console_errors(&s, "the wizard").await;
    s.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_saves_unchanged_from_the_forms_and_maps() {
    // A browser loads both cores: never beside a heavy test.
    let _timed = common::timed().await;
    if !webdriver::browser_available() {
        return;
    }
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let mut names: Vec<String> = std::fs::read_dir("examples")
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "yaml")
                .then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    assert!(names.len() >= 8, "{names:?}");
    let driver = Driver::start().await;
    let s = driver.session(1280, 900).await;
    sign_in(&s, &app).await;
    for name in &names {
        let text = std::fs::read_to_string(format!("examples/{name}.yaml")).unwrap();
        let bot = app.import_yaml(text).await["bot_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let before = app
            .admin("GET", &format!("/v1/bots/{bot}/flow"), None)
            .await;
        assert_eq!(before.status, 200);
        s.goto(&format!("{}/#/bots/{bot}/build", app.base)).await;
        s.wait_text("#build-state", "Saved: version 1").await;
        tap(&s, "#build-save").await;
        s.wait_text("#build-result", "Saved as version 2").await;
        let after = app
            .admin("GET", &format!("/v1/bots/{bot}/flow"), None)
            .await;
        assert_eq!(
            after.body, before.body,
            "{name}: the flow saved from the forms differs"
        );

        // Conditions show as rules where the builder can show them.
        let branches = s
            .execute(
                "return [...document.querySelectorAll('.branch')].map(b => \
                   [b.querySelectorAll('.rule').length, b.querySelector('input[name=cel]').value, \
                    [...b.querySelectorAll('.rule select[name=operator]')].map(o => o.value).join(' ')])",
                vec![],
            )
            .await;
        if name == "helpdesk" {
            let want = json!([
                3,
                "memory.severity == \"high\" && has(user.plan) && user.plan == \"premium\"",
                "== has =="
            ]);
            assert!(branches.as_array().unwrap().contains(&want), "{branches}");
            let remind = s
                .execute(
                    "return document.querySelector('article[data-node=severity] input[name=remind_after]').value",
                    vec![],
                )
                .await;
            assert_eq!(remind, json!("10m"));
        }
        if name == "leads" {
            let want = json!([
                1,
                "memory.email.endsWith(\"@competitor.example\")",
                "endsWith"
            ]);
            assert!(branches.as_array().unwrap().contains(&want), "{branches}");
            let media = s
                .execute(
                    "return document.querySelector('article[data-node=welcome] input[name=media_url]').value",
                    vec![],
                )
                .await;
            assert_eq!(media, json!("https://example.com/leads/welcome.png"));
            tap(&s, "#flow-settings summary").await;
            let words = s
                .execute(
                    "return [...document.querySelectorAll('input[name=keyword_word]')].map(i => i.value)",
                    vec![],
                )
                .await;
            assert!(words.as_array().unwrap().len() >= 2, "{words}");
        }

        // The map: one box per node (plus one per campaign a menu starts).
        tap(&s, ".tabs [data-graph='#map']").await;
        s.wait_for("svg.flowmap").await;
        let flow = &before.body;
        let mut nodes = flow["nodes"].as_object().unwrap().len();
        for g in flow["campaigns"].as_object().into_iter().flatten() {
            nodes += g.1["nodes"].as_object().unwrap().len();
        }
        let drawn = s
            .execute(
                "return document.querySelectorAll('.map-node:not([data-node^=\"campaign:\"])').length",
                vec![],
            )
            .await;
        assert_eq!(drawn, json!(nodes), "{name}: every node is on the map");
        let unreachable = s
            .execute(
                "return document.querySelectorAll('.map-node.unreachable').length",
                vec![],
            )
            .await;
        assert_eq!(
            unreachable,
            json!(0),
            "{name}: a saved flow has no unreachable node"
        );
        s.screenshot(&format!("map-{name}")).await;
        no_console_errors(&s, name).await;
    }

    // Sixty nodes, with branches: every box drawn, none on another, and the
    // map stays within eight boxes a row.
    let mut nodes = serde_json::Map::new();
    for i in 0..59 {
        let node = if i % 6 == 0 {
            json!({"menu": format!("Step {i}"), "options": [
                {"keyword": 1, "label": "on", "next": format!("n{}", i + 1)},
                {"keyword": 2, "label": "skip", "next": format!("n{}", (i + 2).min(59))}]})
        } else {
            json!({"ask": format!("Question {i}?"), "save_as": format!("a{i}"), "next": format!("n{}", i + 1)})
        };
        nodes.insert(format!("n{i}"), node);
    }
    nodes.insert("n59".into(), json!({"end": true}));
    app.create_bot("sixty", "support").await;
    let r = app
        .admin(
            "PUT",
            "/v1/bots/sixty/flow",
            Some(json!({"start": "n0", "nodes": nodes})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    s.goto(&format!("{}/#/bots/sixty/build", app.base)).await;
    tap(&s, ".tabs [data-graph='#map']").await;
    s.wait_for("svg.flowmap").await;
    let v = s
        .execute(
            "const boxes = [...document.querySelectorAll('.map-node')].map(g => g.getAttribute('transform'));
             const svg = document.querySelector('svg.flowmap');
             return [boxes.length, new Set(boxes).size, Number(svg.getAttribute('width')),
                     document.querySelectorAll('.edge').length, document.documentElement.scrollWidth <= window.innerWidth];",
            vec![],
        )
        .await;
    assert_eq!(v[0], json!(60));
    assert_eq!(v[1], json!(60), "two boxes in one place");
    assert!(v[2].as_u64().unwrap() <= 8 * (168 + 28) + 28, "{v}");
    assert_eq!(v[3], json!(59 + 10), "one arrow per next and option");
    assert_eq!(
        v[4],
        json!(true),
        "the page itself does not scroll sideways"
    );
    s.screenshot("map-60-nodes").await;
    // By keyboard: Enter on a node of the map opens its card in the forms.
    s.execute(
        "document.querySelector('.map-node[data-node=n31]').focus()",
        vec![],
    )
    .await;
    s.type_keys("\u{E007}").await;
    s.wait_for(&card("n31", "textarea[name=ask]")).await;

    no_console_errors(&s, "sixty nodes").await;
    s.quit().await;
}
