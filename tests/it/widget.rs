//! The website chat widget in a real browser: Debian's headless `chromium`
//! through `chromedriver`, on botwire's own demo page, against a real
//! server.
//!
//! The site owner makes a publishable key on the console's Keys page (its
//! origin list prefilled with the page's own origin) and follows the demo
//! link; a visitor then opens the bubble, chats through `examples/elipackage` with the
//! keyboard (Enter sends, Escape closes) and a quick-reply-free menu answer,
//! and the conversation's events are there afterwards; a reload continues
//! the same conversation; a key whose origin list leaves the page out gets
//! the refusal in words; 375 px wide the panel fits. Screenshots go to
//! `target/screenshots/widget-*.png`. Skipped with a notice without
//! chromium, unless `BOTWIRE_REQUIRE_BROWSER=1`.

use crate::common;
use crate::common::webdriver;

use common::{App, Db, spawn_app};
use serde_json::{Value, json};
use std::time::Duration;
use webdriver::{Driver, Session, WAIT};

/// JavaScript that finds the widget's shadow root.
const ROOT: &str = "const root = document.querySelector('[data-botwire-widget]').shadowRoot;";

async fn publishable_key(app: &App, origins: Value) -> String {
    let r = app
        .admin(
            "POST",
            "/v1/keys",
            Some(json!({"name": "website", "kind": "publishable", "bot_id": "elipackage", "origins": origins})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["key"].as_str().unwrap().to_owned()
}

/// The widget's log, as the visitor reads it.
async fn log_text(s: &Session) -> String {
    s.execute(
        &format!("{ROOT} return root ? root.querySelector('.log').innerText : ''"),
        vec![],
    )
    .await
    .as_str()
    .unwrap_or("")
    .to_owned()
}

async fn wait_log(s: &Session, want: &str) -> String {
    s.wait_until(&format!("the widget to show {want:?}"), WAIT, || async {
        let text = log_text(s).await;
        text.contains(want).then_some(text)
    })
    .await
}

/// What has the focus inside the widget (`tag.class` or `#id`).
async fn focused(s: &Session) -> String {
    s.execute(
        &format!(
            "{ROOT} const a = root.activeElement; \
             return a ? (a.id ? '#' + a.id : a.tagName.toLowerCase() + '.' + a.className) : ''"
        ),
        vec![],
    )
    .await
    .as_str()
    .unwrap_or("")
    .to_owned()
}

async fn open_widget(s: &Session) {
    s.wait_until("the widget's bubble", WAIT, || async {
        let v = s
            .execute(
                "const h = document.querySelector('[data-botwire-widget]'); \
                 return !!(h && h.shadowRoot && h.shadowRoot.querySelector('.bubble'));",
                vec![],
            )
            .await;
        (v == true).then_some(())
    })
    .await;
    s.execute(
        &format!("{ROOT} root.querySelector('.bubble').click()"),
        vec![],
    )
    .await;
    s.wait_until("the input to take the focus", WAIT, || async {
        (focused(s).await == "#botwire-input").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_chats_through_the_widget() {
    // A browser loads both cores: never beside a heavy test.
    let _timed = common::timed().await;
    if !webdriver::browser_available() {
        return;
    }
    let app = spawn_app(Db::Sqlite).await.expect("sqlite always runs");
    app.import_example("elipackage").await;
    let driver = Driver::start().await;
    let s = driver.session(1280, 800).await;

    // The owner makes the key in the console.
    s.goto(&format!("{}/", app.base)).await;
    s.fill("input[name=key]", &app.admin_key).await;
    s.click("form button[type=submit]").await;
    s.wait_text("h1", "Bots").await;
    s.click("a[href='#/keys']").await;
    s.wait_text("h1", "Keys").await;
    let origins = s
        .execute(
            "return document.querySelector('textarea[name=origins]').value",
            vec![],
        )
        .await;
    assert_eq!(
        origins,
        json!(app.base),
        "the origin list starts with this site"
    );
    s.click("form button[type=submit]").await;
    let key = s.text("[data-new-key]").await.trim().to_owned();
    assert!(key.starts_with("bw_"), "{key}");
    s.wait_text("tbody", "Publishable").await;
    s.screenshot("widget-keys-page").await;
    let severe = s.severe_logs().await;
    assert!(severe.is_empty(), "browser console errors: {severe:#?}");
    let demo = s
        .execute(
            "return [...document.querySelectorAll('a')].find(a => a.textContent.includes('widget demo')).href",
            vec![],
        )
        .await;
    let demo = demo.as_str().unwrap().to_owned();
    assert_eq!(
        demo,
        format!("{}/widget/demo?bot=elipackage&key={key}", app.base)
    );
    s.goto(&demo).await;
    open_widget(&s).await;

    // Keyboard only: type, Enter sends.
    s.type_keys("hi\u{E007}").await;
    wait_log(&s, "Welcome to EliPackage").await;
    s.type_keys("Ada Lovelace\u{E007}").await;
    wait_log(&s, "Ada Lovelace, enter the best option").await;
    s.type_keys("2\u{E007}").await;
    let text = wait_log(&s, "Thank you, Ada Lovelace!").await;
    assert!(text.contains("4. Raffle"), "{text}");
    s.screenshot("widget-chat").await;
    let severe = s.severe_logs().await;
    assert!(severe.is_empty(), "browser console errors: {severe:#?}");

    // The conversation happened on the server, with its events.
    let list = app
        .admin("GET", "/v1/bots/elipackage/conversations", None)
        .await;
    let convs = list.body["data"].as_array().unwrap();
    assert_eq!(convs.len(), 1, "{}", list.body);
    let conv_id = convs[0]["id"].as_str().unwrap();
    let conv = app
        .admin(
            "GET",
            &format!("/v1/bots/elipackage/conversations/{conv_id}"),
            None,
        )
        .await;
    assert_eq!(conv.body["memory"]["name"], "Ada Lovelace", "{}", conv.body);
    let visitor = conv.body["contact"].to_string();
    assert!(visitor.contains("web:v_"), "{visitor}");
    let events = app
        .admin(
            "GET",
            &format!("/v1/events?conversation={conv_id}&limit=50"),
            None,
        )
        .await;
    let types: Vec<&str> = events.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for want in [
        "conversation.started",
        "option.selected",
        "conversation.completed",
    ] {
        assert!(types.contains(&want), "{want} missing from {types:?}");
    }

    // Escape closes and gives the focus back to the bubble.
    s.type_keys("\u{E00C}").await;
    s.wait_until("the panel to close", WAIT, || async {
        let hidden = s
            .execute(
                &format!("{ROOT} return root.querySelector('.panel').hidden"),
                vec![],
            )
            .await;
        (hidden == true && focused(&s).await.starts_with("button.bubble")).then_some(())
    })
    .await;

    // A reload keeps the visitor: the next message continues as the same contact.
    s.goto(&demo).await;
    open_widget(&s).await;
    s.type_keys("hello again\u{E007}").await;
    wait_log(&s, "Welcome to EliPackage").await;
    let list = app
        .admin("GET", "/v1/bots/elipackage/conversations", None)
        .await;
    let contacts: Vec<&str> = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["contact_id"].as_str().unwrap())
        .collect();
    assert_eq!(contacts.len(), 2, "a new conversation after the ended one");
    assert_eq!(contacts[0], contacts[1], "the same visitor: {contacts:?}");

    // 375 px wide: the open panel fits the window.
    s.resize(375, 740).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fits = s
        .execute(
            &format!(
                "{ROOT} const r = root.querySelector('.panel').getBoundingClientRect(); \
                 return [r.left, r.right, window.innerWidth, document.documentElement.scrollWidth]"
            ),
            vec![],
        )
        .await;
    let n = |i: usize| fits[i].as_f64().unwrap();
    assert!(
        n(0) >= 0.0 && n(1) <= n(2) && n(3) <= n(2),
        "panel {fits} in a 375 px window"
    );
    s.screenshot("widget-375").await;

    // A key that does not list this page's origin: refused, in words.
    let elsewhere = publishable_key(&app, json!(["https://shop.example"])).await;
    s.resize(1280, 800).await;
    s.goto(&format!(
        "{}/widget/demo?bot=elipackage&key={elsewhere}",
        app.base
    ))
    .await;
    open_widget(&s).await;
    s.type_keys("hi\u{E007}").await;
    wait_log(&s, "may not be used from").await;
    s.screenshot("widget-wrong-origin").await;
    for e in s.severe_logs().await {
        assert!(
            e.contains("status of 403"),
            "unexpected browser console error: {e}"
        );
    }
    s.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_widget_shows_images_links_and_tappable_choices() {
    // A browser loads both cores: never beside a heavy test.
    let _timed = common::timed().await;
    if !webdriver::browser_available() {
        return;
    }
    let app = spawn_app(Db::Sqlite).await.expect("sqlite always runs");
    // Media URLs on this server only: the browser fetches nothing elsewhere.
    let base = &app.base;
    app.import_yaml(format!(
        r#"
id: media
name: Media
type: support
flow:
  start: hello
  nodes:
    hello:
      message: "Our catalogue:"
      image: {{ url: "{base}/widget/catalogue.png", caption: "Spring catalogue" }}
      next: size
    size:
      ask: "Which size?"
      save_as: size
      validate: {{ kind: choice, options: [Small, Large] }}
      file: {{ url: "{base}/widget/sizes.pdf", caption: "Size guide" }}
      next: done
    done: {{ end: true, message: "You chose {{{{memory.size}}}}." }}
"#
    ))
    .await;
    let r = app
        .admin(
            "POST",
            "/v1/keys",
            Some(json!({"name": "site", "kind": "publishable", "bot_id": "media", "origins": [base]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let key = r.body["key"].as_str().unwrap().to_owned();
    let driver = Driver::start().await;
    let s = driver.session(1280, 800).await;
    s.goto(&format!("{base}/widget/demo?bot=media&key={key}"))
        .await;
    open_widget(&s).await;
    s.type_keys("hi\u{E007}").await;
    wait_log(&s, "Which size?").await;
    let seen = s
        .execute(
            &format!(
                "{ROOT} const img = root.querySelector('.log img'); \
                 const a = root.querySelector('.log figure a'); \
                 return [img && img.getAttribute('src'), img && img.getAttribute('alt'), \
                         a && a.getAttribute('href'), a && a.textContent, \
                         [...root.querySelectorAll('.quick button')].map(b => b.textContent)]"
            ),
            vec![],
        )
        .await;
    assert_eq!(
        seen,
        json!([
            format!("{base}/widget/catalogue.png"),
            "Spring catalogue",
            format!("{base}/widget/sizes.pdf"),
            "Size guide",
            ["Small", "Large"]
        ])
    );
    s.screenshot("widget-media").await;
    // Tapping a choice answers it.
    s.execute(
        &format!("{ROOT} root.querySelectorAll('.quick button')[1].click()"),
        vec![],
    )
    .await;
    wait_log(&s, "You chose Large.").await;
    s.quit().await;
}
