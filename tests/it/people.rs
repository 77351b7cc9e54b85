//! People end to end: contacts listed through CEL filters, read and changed,
//! exported and imported as CSV; segments with live counts. Filters are
//! checked against a reference predicate written in Rust on both backends.

use crate::common;
use crate::common::webdriver;

use botwire::auth::Pepper;
use botwire::domain::people::ContactFilter;
use botwire::store::Store;
use botwire::store::contacts::ImportRow;
use common::{App, Db, spawn_app, test_db};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};

async fn csv_import(app: &App, bot: &str, csv: &str) -> common::Reply {
    app.raw(
        "POST",
        &format!("/v1/bots/{bot}/contacts/import"),
        Some(&app.admin_key),
        "text/csv",
        csv.as_bytes().to_vec(),
    )
    .await
}

/// Every contact a filter lists, following cursors to the end.
async fn list_all(app: &App, bot: &str, filter: &str, limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/v1/bots/{bot}/contacts", app.base),
            &[
                ("filter", filter),
                ("limit", &limit.to_string()),
                ("cursor", &cursor),
            ],
        )
        .unwrap();
        let r = app
            .client
            .get(url)
            .bearer_auth(&app.admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        out.extend(body["data"].as_array().unwrap().iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => return out,
        }
    }
}

#[tokio::test]
async fn contacts_and_segments_sqlite() {
    contacts_and_segments(Db::Sqlite).await;
}

#[tokio::test]
async fn contacts_and_segments_postgres() {
    contacts_and_segments(Db::Postgres).await;
}

async fn contacts_and_segments(kind: Db) {
    let Some(app) = spawn_app(kind).await else {
        return;
    };
    app.create_bot("shop", "support").await;
    // 1,000 contacts: every third a vip, ages 0..99, every tenth opted out.
    let mut csv = String::from("phone,plan,age,opted_out\n");
    for i in 0..1000 {
        let plan = if i % 3 == 0 { "vip" } else { "free" };
        let opted = i % 10 == 0;
        csv.push_str(&format!("+3460000{i:04},{plan},{},{opted}\n", i % 100));
    }
    csv.push_str("12345,vip,3,false\n+34600009999,vip,3,maybe\n,vip,1,false\n");
    let r = csv_import(&app, "shop", &csv).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["created"], 1000);
    assert_eq!(r.body["updated"], 0);
    let rejected = r.body["rejected"].as_array().unwrap();
    let lines: Vec<_> = rejected
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [1002, 1003, 1004], "{}", r.body);
    assert!(rejected[0]["reason"].as_str().unwrap().contains("E.164"));
    assert!(
        rejected[1]["reason"]
            .as_str()
            .unwrap()
            .contains("opted_out")
    );
    // Idempotent on phone: the same file again creates nothing.
    let r = csv_import(&app, "shop", &csv).await;
    assert_eq!(
        (r.body["created"].clone(), r.body["updated"].clone()),
        (json!(0), json!(1000))
    );

    let vips = list_all(&app, "shop", r#"user.plan == "vip""#, 50).await;
    assert_eq!(vips.len(), 334);
    let ids: Vec<_> = vips.iter().map(|c| c["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(ids, sorted, "newest first, no repeats across pages");
    let young_vips = list_all(
        &app,
        "shop",
        r#"user.plan == "vip" && user.age < 10 && !contact.opted_out"#,
        7,
    )
    .await;
    let expected = (0..1000)
        .filter(|i| i % 3 == 0 && i % 100 < 10 && i % 10 != 0)
        .count();
    assert_eq!(young_vips.len(), expected);
    assert!(
        young_vips
            .iter()
            .all(|c| c["attributes"]["age"].as_i64().unwrap() < 10)
    );

    // A bad filter is a 422 with the column.
    let r = app
        .admin(
            "GET",
            "/v1/bots/shop/contacts?filter=user.plan%20%3D%3D%20memory.x",
            None,
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "invalid_filter");
    assert_eq!(r.body["error"]["details"]["column"], 14);
    let r = app
        .admin(
            "GET",
            "/v1/bots/shop/contacts?filter=user.plan%20%3D%3D",
            None,
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body["error"]["details"]["column"].is_u64());

    // Text search, then one contact: read, patch (merge, null deletes).
    let r = app
        .admin("GET", "/v1/bots/shop/contacts?q=600000042", None)
        .await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1, "{}", r.body);
    let id = r.body["data"][0]["id"].as_str().unwrap().to_owned();
    let r = app
        .admin(
            "PATCH",
            &format!("/v1/contacts/{id}"),
            Some(json!({"attributes": {"plan": "gold", "age": null, "city": "Madrid"}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["attributes"],
        json!({"plan": "gold", "city": "Madrid"})
    );
    let r = app
        .admin(
            "PATCH",
            &format!("/v1/contacts/{id}"),
            Some(json!({"attributes": {"bad key": 1}})),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let gold = list_all(&app, "shop", r#"user.plan == "gold""#, 50).await;
    assert_eq!(gold.len(), 1, "the index follows the patch");
    let r = app.admin("GET", &format!("/v1/contacts/{id}"), None).await;
    assert_eq!(r.body["phone"], "+34600000042");
    assert_eq!(r.body["channel"], "api");

    // A chat turn: the contact's conversations, last_seen, channel.
    let r = app
        .admin(
            "PUT",
            "/v1/bots/shop/flow",
            Some(json!({"start": "a", "nodes": {"a": {"message": "Hello {{user.plan}}", "end": true}}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = app
        .admin(
            "POST",
            "/v1/bots/shop/chat",
            Some(json!({"contact": {"phone": "+34600000042"}, "text": "hi"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = app
        .admin("GET", &format!("/v1/contacts/{id}/conversations"), None)
        .await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1, "{}", r.body);
    let r = app.admin("GET", &format!("/v1/contacts/{id}"), None).await;
    assert!(r.body["last_seen"].is_string());
    assert_eq!(
        r.body["attributes"]["plan"], "gold",
        "the turn kept the patch"
    );

    // Export: streamed CSV that imports back to the same contacts.
    let resp = app
        .client
        .get(format!(
            "{}/v1/bots/shop/contacts/export?filter=user.plan%20%3D%3D%20%22vip%22",
            app.base
        ))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = resp.text().await.unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 334, "a header and 333 vips (one is gold now)");
    assert!(lines[0].starts_with("id,phone,external_id,channel,opted_out,first_seen,last_seen"));
    let r = csv_import(&app, "shop", &text).await;
    assert_eq!(r.body["updated"], 333, "{}", r.body);
    assert_eq!(r.body["created"], 0);

    // Segments: rules with a live count.
    let r = app
        .admin(
            "POST",
            "/v1/bots/shop/segments",
            Some(json!({"name": "VIP", "filter": "user.plan == \"vip\""})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["count"], 333);
    let seg = r.body["id"].as_str().unwrap().to_owned();
    let r = app
        .admin(
            "POST",
            "/v1/bots/shop/segments",
            Some(json!({"name": "x", "filter": "user.plan == "})),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body["error"]["details"]["column"].is_u64(), "{}", r.body);
    let r = app
        .admin(
            "POST",
            "/v1/bots/shop/segments",
            Some(json!({"name": "x", "filter": "memory.a == 1"})),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["error"]["details"]["column"], 1, "{}", r.body);
    // A rule, not a list: a patched contact joins the count.
    let r = app
        .admin(
            "PATCH",
            &format!("/v1/contacts/{id}"),
            Some(json!({"attributes": {"plan": "vip"}})),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = app
        .admin("GET", &format!("/v1/bots/shop/segments/{seg}"), None)
        .await;
    assert_eq!(r.body["count"], 334);
    let r = app
        .admin(
            "PATCH",
            &format!("/v1/bots/shop/segments/{seg}"),
            Some(json!({"filter": "user.plan == \"vip\" && user.age >= 50"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let expected = (0..1000).filter(|i| i % 3 == 0 && i % 100 >= 50).count();
    assert_eq!(r.body["count"], expected as u64);
    let r = app.admin("GET", "/v1/bots/shop/segments", None).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    let r = app
        .admin("DELETE", &format!("/v1/bots/shop/segments/{seg}"), None)
        .await;
    assert_eq!(r.status, 204);
    let r = app
        .admin("GET", &format!("/v1/bots/shop/segments/{seg}"), None)
        .await;
    assert_eq!(r.status, 404);
}

// ------------------------------------------------ filters against a reference

#[derive(Clone, Debug)]
enum F {
    Plan(&'static str),
    AgeGe(i64),
    AgeLt(i64),
    Channel(&'static str),
    OptedOut,
    Not(Box<F>),
    And(Box<F>, Box<F>),
    Or(Box<F>, Box<F>),
}

#[derive(Clone, Debug)]
struct Person {
    plan: Option<&'static str>,
    age: Option<i64>,
    channel: &'static str,
    opted_out: bool,
}

impl F {
    fn cel(&self) -> String {
        match self {
            F::Plan(p) => format!("(has(user.plan) && user.plan == \"{p}\")"),
            F::AgeGe(n) => format!("(has(user.age) && user.age >= {n})"),
            F::AgeLt(n) => format!("(has(user.age) && user.age < {n})"),
            F::Channel(c) => format!("contact.channel == \"{c}\""),
            F::OptedOut => "contact.opted_out".into(),
            F::Not(f) => format!("!({})", f.cel()),
            F::And(a, b) => format!("{} && {}", a.cel(), b.cel()),
            F::Or(a, b) => format!("({} || {})", a.cel(), b.cel()),
        }
    }

    fn eval(&self, p: &Person) -> bool {
        match self {
            F::Plan(x) => p.plan == Some(*x),
            F::AgeGe(n) => p.age.is_some_and(|a| a >= *n),
            F::AgeLt(n) => p.age.is_some_and(|a| a < *n),
            F::Channel(c) => p.channel == *c,
            F::OptedOut => p.opted_out,
            F::Not(f) => !f.eval(p),
            F::And(a, b) => a.eval(p) && b.eval(p),
            F::Or(a, b) => a.eval(p) || b.eval(p),
        }
    }
}

fn filters() -> impl Strategy<Value = F> {
    let leaf = prop_oneof![
        prop::sample::select(vec!["vip", "free", "gold"]).prop_map(F::Plan),
        (0i64..100).prop_map(F::AgeGe),
        (0i64..100).prop_map(F::AgeLt),
        prop::sample::select(vec!["api", "whatsapp", "web"]).prop_map(F::Channel),
        Just(F::OptedOut),
    ];
    leaf.prop_recursive(3, 8, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|f| F::Not(Box::new(f))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| F::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner).prop_map(|(a, b)| F::Or(Box::new(a), Box::new(b))),
        ]
    })
}

#[test]
fn segment_filters_match_a_reference_sqlite() {
    filters_match_a_reference(Db::Sqlite);
}

#[test]
fn segment_filters_match_a_reference_postgres() {
    filters_match_a_reference(Db::Postgres);
}

fn filters_match_a_reference(kind: Db) {
    let Some(db) = test_db(kind) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (store, account, people) = rt.block_on(async {
        let store = Store::open(&db.url).await.unwrap();
        let (account, _) = store
            .bootstrap(&Pepper::new(b"p".to_vec()))
            .await
            .unwrap()
            .unwrap();
        let mut people = Vec::new();
        let mut rows = Vec::new();
        for i in 0..300usize {
            let p = Person {
                plan: [None, Some("vip"), Some("free"), Some("gold")][i % 4],
                age: (i % 7 != 0).then_some(((i * 37) % 100) as i64),
                channel: ["api", "whatsapp", "web"][(i / 4) % 3],
                opted_out: i % 5 == 0,
            };
            let mut attributes = Map::new();
            if let Some(plan) = p.plan {
                attributes.insert("plan".into(), json!(plan));
            }
            if let Some(age) = p.age {
                attributes.insert("age".into(), json!(age));
            }
            let (phone, external_id) = match p.channel {
                "api" => (Some(format!("+3461{i:07}")), None),
                ch => (None, Some(format!("{ch}:{i}"))),
            };
            rows.push(ImportRow {
                line: i + 2,
                phone,
                external_id,
                attributes,
                opted_out: Some(p.opted_out),
            });
            people.push(p);
        }
        store.import_contacts(&account.id, "b", rows).await.unwrap();
        (store, account.id, people)
    });
    let mut runner = TestRunner::new(Config {
        cases: 48,
        ..Config::default()
    });
    runner
        .run(&filters(), |f| {
            let source = f.cel();
            let filter = ContactFilter::compile(&source).unwrap();
            let expected = people.iter().filter(|p| f.eval(p)).count();
            let (listed, counted) = rt.block_on(async {
                let mut n = 0;
                let mut after = None;
                loop {
                    let page = store
                        .filter_contacts(&account, "b", Some(filter.clone()), None, after, 37)
                        .await
                        .unwrap();
                    n += page.items.len();
                    match page.next_after {
                        Some(a) => after = Some(a),
                        None => break,
                    }
                }
                let c = store
                    .count_contacts(&account, "b", filter.clone())
                    .await
                    .unwrap();
                (n, c)
            });
            prop_assert_eq!(listed, expected, "listing {}", source);
            prop_assert_eq!(counted as usize, expected, "counting {}", source);
            Ok(())
        })
        .unwrap();
    // Top-level conjunctions exercise the pushdown; check a few by hand.
    for (source, f) in [
        (
            r#"user.plan == "vip" && user.age >= 50"#,
            F::And(Box::new(F::Plan("vip")), Box::new(F::AgeGe(50))),
        ),
        (
            r#"contact.channel == "whatsapp" && !contact.opted_out && user.age < 30"#,
            F::And(
                Box::new(F::Channel("whatsapp")),
                Box::new(F::And(
                    Box::new(F::Not(Box::new(F::OptedOut))),
                    Box::new(F::AgeLt(30)),
                )),
            ),
        ),
        (
            r#"user.plan == "gold" && contact.opted_out == false"#,
            F::And(
                Box::new(F::Plan("gold")),
                Box::new(F::Not(Box::new(F::OptedOut))),
            ),
        ),
    ] {
        let filter = ContactFilter::compile(source).unwrap();
        assert!(!filter.pushdown().is_empty(), "{source}");
        let expected = people.iter().filter(|p| f.eval(p)).count();
        let got = rt.block_on(async {
            let all = store
                .filter_contacts(&account, "b", Some(filter.clone()), None, None, 200)
                .await
                .unwrap();
            let count = store.count_contacts(&account, "b", filter).await.unwrap();
            (all.items.len(), count as usize)
        });
        assert_eq!(got, (expected, expected), "{source}");
    }
    drop(store);
}

// ------------------------------------------------------------ the console

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_users_page_filters_saves_a_segment_and_edits_a_contact() {
    // A browser loads both cores: never beside a heavy test.
    let _timed = common::timed().await;
    if !webdriver::browser_available() {
        return;
    }
    let app = spawn_app(Db::Sqlite).await.unwrap();
    app.create_bot("shop", "support").await;
    let mut csv = String::from("phone,plan,age\n");
    for i in 0..30 {
        let plan = if i % 3 == 0 { "vip" } else { "free" };
        csv.push_str(&format!("+3460000{i:04},{plan},{}\n", 20 + i));
    }
    let r = csv_import(&app, "shop", &csv).await;
    assert_eq!(r.body["created"], 30, "{}", r.body);
    let base = app.base.clone();
    let driver = webdriver::Driver::start().await;
    let s = driver.session(1280, 900).await;
    s.goto(&format!("{base}/")).await;
    s.fill("input[name=key]", &app.admin_key).await;
    s.click("form button[type=submit]").await;
    s.wait_text("h1", "Bots").await;

    // The builder writes CEL into the raw field; the list follows it.
    s.goto(&format!("{base}/#/users")).await;
    s.wait_text("h1", "Users").await;
    s.wait_text("#user-count", "30 users shown").await;
    s.fill("input[name=attribute]", "plan").await;
    s.select("select[name=op]", "==").await;
    s.fill("input[name=value]", "vip").await;
    s.click("button[data-action=add-condition]").await;
    s.click("button[data-action=show]").await;
    s.wait_text("#user-count", "10 users shown").await;
    s.screenshot("people-01-users-vip").await;
    // Keyboard: a second condition typed and sent with Enter.
    s.fill("input[name=attribute]", "age").await;
    s.select("select[name=op]", ">=").await;
    s.fill("input[name=value]", "40").await;
    s.click("button[data-action=add-condition]").await;
    s.keys("input[name=q]", "\u{E007}").await;
    s.wait_text("#user-count", "3 users shown").await;

    // A bad filter is shown under the field with its column.
    s.fill("textarea[name=filter]", "user.plan ==").await;
    s.click("button[data-action=show]").await;
    s.wait_text("[data-name=filter] .field-error", "column 14")
        .await;
    for e in s.severe_logs().await {
        assert!(e.contains("422"), "unexpected console error: {e}");
    }

    // Save a segment: it is listed with its live count.
    s.fill("textarea[name=filter]", "user.plan == \"vip\"")
        .await;
    s.fill("input[name=name]", "VIP").await;
    s.click("button[data-action=save-segment]").await;
    s.wait_text("#segments", "10 users").await;
    let r = app.admin("GET", "/v1/bots/shop/segments", None).await;
    assert_eq!(r.body["data"][0]["filter"], "user.plan == \"vip\"");

    // Open a contact and edit its attributes.
    s.click("button[data-action=show]").await;
    s.wait_text("#user-count", "10 users shown").await;
    s.click("tr[data-contact] a").await;
    s.wait_for("textarea[name=attributes]").await;
    let url_id = {
        let r = app
            .admin(
                "GET",
                "/v1/bots/shop/contacts?filter=user.plan%20%3D%3D%20%22vip%22&limit=1",
                None,
            )
            .await;
        r.body["data"][0]["id"].as_str().unwrap().to_owned()
    };
    s.fill(
        "textarea[name=attributes]",
        r#"{"plan": "gold", "city": "Lima"}"#,
    )
    .await;
    s.click("button[data-action=save-contact]").await;
    s.wait_text("#toast", "Saved").await;
    let r = app
        .admin("GET", &format!("/v1/contacts/{url_id}"), None)
        .await;
    assert_eq!(
        r.body["attributes"],
        json!({"plan": "gold", "city": "Lima"}),
        "age deleted, plan changed"
    );
    s.screenshot("people-02-contact").await;
    assert!(s.severe_logs().await.is_empty());

    // 375 px wide: the page works the same.
    let narrow = driver.session(375, 800).await;
    narrow.goto(&format!("{base}/")).await;
    narrow.fill("input[name=key]", &app.admin_key).await;
    narrow.click("form button[type=submit]").await;
    narrow.wait_text("h1", "Bots").await;
    narrow.goto(&format!("{base}/#/users")).await;
    narrow.wait_text("#segments", "VIP").await;
    narrow.wait_text("#user-count", "30 users shown").await;
    narrow.screenshot("people-03-users-375").await;
    assert!(narrow.severe_logs().await.is_empty());
}
