//! The console's Broadcasts page in headless chromium, over the fake
//! WhatsApp API and channel workers of `broadcasts.rs`. Skipped with a
//! notice without chromium unless `BOTWIRE_REQUIRE_BROWSER=1`.

use crate::broadcasts::{CAMPAIGN_BOT, Fake, Live, channel_body};
use crate::common::Db;
use serde_json::json;
use std::time::Duration;

/// The Broadcasts page in headless chromium: a personalised message to a
/// segment, previewed for a sample recipient, sent, its progress bar
/// followed to 100 % while the fake WhatsApp API receives one message per
/// vip contact; a merge-tag error beside the message; a second broadcast
/// scheduled and cancelled by keyboard; 375 px wide without sideways
/// scrolling, every control labelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broadcasts_page_sends_and_cancels() {
    let _timed = crate::common::timed().await;
    if !crate::common::webdriver::browser_available() {
        return;
    }
    let live = Live::start(Db::Sqlite).await.unwrap();
    let app = &live.app;
    app.import_yaml(CAMPAIGN_BOT.into()).await;
    let fake = Fake::start().await;
    let r = app
        .admin("POST", "/v1/bots/shop/channels", Some(channel_body(&fake)))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let url = r.body["inbound_url"].as_str().unwrap().to_owned();
    // Each number wrote in the last 24 hours, so a text may go to it.
    let people = [
        ("525500000011", "Ana", "vip"),
        ("525500000012", "Ben", "vip"),
        ("525500000013", "Cai", "vip"),
        ("525500000014", "Dee", "free"),
    ];
    let mut csv = String::from("phone,first_name,plan\n");
    for (i, (phone, name, plan)) in people.iter().enumerate() {
        live.whatsapp(&url, phone, &format!("wamid.in{i}"), "hi")
            .await;
        csv.push_str(&format!("+{phone},{name},{plan}\n"));
    }
    let r = app
        .raw(
            "POST",
            "/v1/bots/shop/contacts/import",
            Some(&app.admin_key),
            "text/csv",
            csv.into_bytes(),
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
    assert_eq!(r.status, 201, "{}", r.body);
    // The node's broadcast worker.
    let mut worker = live.worker();
    let store = app.store.clone();
    let ticking = tokio::spawn(async move {
        loop {
            let _ = worker.step(&store).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let base = app.base.clone();
    let driver = crate::common::webdriver::Driver::start().await;
    let s = driver.session(1280, 900).await;
    s.goto(&format!("{base}/")).await;
    s.fill("input[name=key]", &app.admin_key).await;
    s.click("form button[type=submit]").await;
    s.wait_text("h1", "Bots").await;
    // The navigation's link opens the bot's page.
    s.click("nav a[data-section=broadcasts]").await;
    s.wait_text("h1", "Broadcasts").await;
    assert!(s.current_url().await.ends_with("#/bots/shop/broadcasts"));
    s.wait_text("#segment-count", "3 contacts now").await;

    // A merge-tag error shows beside the message.
    s.fill("textarea[name=message]", "Hi {{memory.x}}").await;
    s.wait_text("[data-name=message] .field-error", "{{memory.x}}")
        .await;
    for e in s.severe_logs().await {
        assert!(e.contains("422"), "unexpected console error: {e}");
    }
    // The preview names the sample recipient.
    s.fill(
        "textarea[name=message]",
        "Hi {{user.first_name}}, our sale starts today.",
    )
    .await;
    let shown = s
        .wait_until(
            "a personalised preview",
            crate::common::webdriver::WAIT,
            || async {
                let t = s.text("#broadcast-preview").await;
                ["Ana", "Ben", "Cai"]
                    .iter()
                    .any(|n| t.contains(&format!("Hi {n}, our sale starts today.")))
                    .then_some(t)
            },
        )
        .await;
    assert!(shown.contains("1 of 3"), "{shown}");
    s.screenshot("broadcasts-01-compose").await;
    s.click("button[data-action=send]").await;
    s.wait_for("tr[data-state=completed]").await;
    s.wait_text("tr[data-state=completed] .bc-progress", "100 %")
        .await;
    s.screenshot("broadcasts-02-completed").await;
    live.settle().await;
    for (phone, name, plan) in people {
        let got: Vec<String> = fake
            .texts_to(phone)
            .into_iter()
            .filter(|t| t.contains("sale"))
            .collect();
        if plan == "vip" {
            assert_eq!(
                got,
                [format!("Hi {name}, our sale starts today.")],
                "{phone}"
            );
        } else {
            assert!(got.is_empty(), "{phone}: {got:?}");
        }
    }

    // A second one, scheduled, then cancelled from the keyboard.
    s.fill("textarea[name=message]", "Later, {{user.first_name}}.")
        .await;
    s.execute(
        "document.querySelector('input[name=schedule_at]').value = '2999-01-01T09:00';",
        vec![],
    )
    .await;
    s.click("button[data-action=send]").await;
    s.wait_for("tr[data-state=scheduled]").await;
    s.keys("tr[data-state=scheduled] button.danger", "\u{E007}")
        .await;
    s.wait_for("tr[data-state=cancelled]").await;
    let r = app.admin("GET", "/v1/bots/shop/broadcasts", None).await;
    let states: Vec<&str> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["cancelled", "completed"], "{}", r.body);
    assert_eq!(
        r.body["data"][0]["schedule_at"].as_str().map(|t| &t[..4]),
        Some("2999")
    );
    assert!(s.severe_logs().await.is_empty());

    // 375 px wide: no sideways scrolling, every control labelled.
    let narrow = driver.session(375, 800).await;
    narrow.goto(&format!("{base}/")).await;
    narrow.fill("input[name=key]", &app.admin_key).await;
    narrow.click("form button[type=submit]").await;
    narrow.wait_text("h1", "Bots").await;
    narrow.goto(&format!("{base}/#/bots/shop/broadcasts")).await;
    narrow.wait_for("tr[data-state=cancelled]").await;
    narrow.click("input[name=kind][value=campaign]").await;
    narrow.wait_for("select[name=campaign]").await;
    let v = narrow
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
        "the page scrolls sideways: {} px in {} px",
        v[0],
        v[1]
    );
    assert_eq!(v[2], json!([]), "unlabelled controls");
    narrow.screenshot("broadcasts-03-375").await;
    assert!(narrow.severe_logs().await.is_empty());
    ticking.abort();
}
