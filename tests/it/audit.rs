//! The audit log: changes made through the API and the command line are
//! listed by `GET /v1/audit` with their actor and request id, and never
//! with a secret value.

use crate::common;

use common::{Db, spawn_app};
use serde_json::{Value, json};

/// Sends a change with a chosen request id; answers the JSON body.
async fn change(
    app: &common::App,
    method: &str,
    path: &str,
    body: Option<Value>,
    request_id: &str,
) -> Value {
    let mut req = app
        .client
        .request(method.parse().unwrap(), format!("{}{path}", app.base))
        .bearer_auth(&app.admin_key)
        .header("x-request-id", request_id);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "{method} {path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn find<'a>(entries: &'a [Value], action: &str) -> &'a Value {
    entries
        .iter()
        .find(|e| e["action"] == action && e["actor"]["kind"] == "key")
        .unwrap_or_else(|| panic!("no {action} in {entries:#?}"))
}

async fn changes_are_audited_without_secrets(kind: Db) {
    let Some(app) = spawn_app(kind).await else {
        return;
    };
    let admin_id = app.admin("GET", "/v1/keys", None).await.body["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut secrets: Vec<String> = vec![app.admin_key.clone()];

    change(
        &app,
        "POST",
        "/v1/bots",
        Some(json!({"id": "shop", "name": "Shop", "type": "support"})),
        "req-bot",
    )
    .await;
    let key = change(
        &app,
        "POST",
        "/v1/keys",
        Some(json!({"name": "deploy"})),
        "req-key",
    )
    .await;
    secrets.push(key["key"].as_str().unwrap().to_owned());
    let ep = change(
        &app,
        "POST",
        "/v1/bots/shop/endpoints",
        Some(json!({"url": "https://example.com/hook", "headers": {"X-Api-Key": "sk_live_header_value_1234"}})),
        "req-ep",
    )
    .await;
    secrets.push("sk_live_header_value_1234".into());
    let ep_id = ep["id"].as_str().unwrap().to_owned();
    let ep_secret = app
        .admin("GET", &format!("/v1/endpoints/{ep_id}/secret"), None)
        .await
        .body["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    secrets.push(ep_secret);
    let rotated = change(
        &app,
        "POST",
        &format!("/v1/endpoints/{ep_id}/secret/rotate"),
        None,
        "req-rotate",
    )
    .await;
    secrets.push(rotated["secret"].as_str().unwrap().to_owned());
    change(
        &app,
        "POST",
        "/v1/bots/shop/webhooks",
        Some(json!({"name": "crm", "url": "https://example.com/crm", "headers": {"Authorization": "Bearer story_token_5678"}})),
        "req-wh",
    )
    .await;
    secrets.push("Bearer story_token_5678".into());
    secrets.push("story_token_5678".into());
    let story = change(
        &app,
        "POST",
        "/v1/bots/shop/webhook-secret/rotate",
        None,
        "req-wh-rotate",
    )
    .await;
    secrets.push(story["secret"].as_str().unwrap().to_owned());
    change(
        &app,
        "DELETE",
        &format!("/v1/keys/{}", key["id"].as_str().unwrap()),
        None,
        "req-revoke",
    )
    .await;

    // A refused change is not recorded; a read is not recorded.
    let r = app
        .admin("POST", "/v1/keys", Some(json!({"kind": "nonsense"})))
        .await;
    assert_eq!(r.status, 422);
    app.admin("GET", "/v1/bots", None).await;

    // One change from the command line, on the same database.
    if matches!(kind, Db::Sqlite) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_botwire"))
            .env("BOTWIRE_DELIVERY_SYSTEM_DNS", "false")
            .env("BOTWIRE_SECRET_KEY", "test pepper")
            .args([
                "keys",
                "create",
                "--name",
                "from-shell",
                "--database",
                app.db_url(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cli_key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(cli_key.starts_with("bw_"), "{cli_key}");
        secrets.push(cli_key);
    }

    let r = app.admin("GET", "/v1/audit?limit=200", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let text = r.body.to_string();
    for s in &secrets {
        assert!(
            !text.contains(s.as_str()),
            "secret {s:?} in the audit answer: {text}"
        );
    }
    let entries = r.body["data"].as_array().unwrap().clone();
    let expected = [
        ("bot.created", "req-bot", "bot"),
        ("key.created", "req-key", "key"),
        ("endpoint.created", "req-ep", "endpoint"),
        ("endpoint.secret_rotated", "req-rotate", "endpoint"),
        ("webhook.created", "req-wh", "webhook"),
        ("webhook.secret_rotated", "req-wh-rotate", "bot"),
        ("key.revoked", "req-revoke", "key"),
    ];
    for (action, request_id, resource_type) in expected {
        let e = find(&entries, action);
        assert_eq!(e["request_id"], request_id, "{e}");
        assert_eq!(e["resource_type"], resource_type, "{e}");
        assert_eq!(e["actor"]["kind"], "key", "{e}");
        assert_eq!(e["actor"]["key_id"], admin_id.as_str(), "{e}");
        assert_eq!(e["actor"]["name"], "admin", "{e}");
    }
    assert_eq!(find(&entries, "bot.created")["resource_id"], "shop");
    assert_eq!(
        find(&entries, "endpoint.created")["resource_id"],
        ep_id.as_str()
    );
    assert_eq!(find(&entries, "webhook.created")["resource_id"], "crm");
    assert_eq!(
        find(&entries, "key.revoked")["resource_id"],
        key["id"].as_str().unwrap()
    );
    assert_eq!(
        find(&entries, "endpoint.created")["changes"]["url"],
        "https://example.com/hook"
    );
    let cli_entries = if matches!(kind, Db::Sqlite) { 1 } else { 0 };
    assert_eq!(entries.len(), expected.len() + cli_entries, "{entries:#?}");
    if cli_entries == 1 {
        let e = &entries[0];
        assert_eq!(e["action"], "key.created", "newest first: {e}");
        assert_eq!(
            e["actor"],
            json!({"kind": "cli", "key_id": null, "name": "cli"})
        );
        assert_eq!(e["request_id"], Value::Null);
        assert_eq!(e["changes"]["name"], "from-shell");
    }

    // Filters and paging.
    let r = app
        .admin("GET", &format!("/v1/audit?resource={ep_id}"), None)
        .await;
    let actions: Vec<&str> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["endpoint.secret_rotated", "endpoint.created"]);
    let r = app.admin("GET", "/v1/audit?action=key.revoked", None).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    let r = app
        .admin("GET", &format!("/v1/audit?actor={admin_id}&limit=3"), None)
        .await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 3);
    let cursor = r.body["next_cursor"].as_str().unwrap().to_owned();
    let r = app
        .admin(
            "GET",
            &format!("/v1/audit?actor={admin_id}&limit=200&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), expected.len() - 3);
    let r = app
        .admin("GET", "/v1/audit?since=2999-01-01T00:00:00Z", None)
        .await;
    assert_eq!(r.body["data"], json!([]));
    let r = app.admin("GET", "/v1/audit?since=yesterday", None).await;
    assert_eq!(r.status, 400, "{}", r.body);

    // Account-wide keys only; other accounts see nothing of this one.
    let bot_key = app.bot_key("shop").await;
    let r = app.call("GET", "/v1/audit", Some(&bot_key), None).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let other = app.other_account_key().await;
    let r = app.call("GET", "/v1/audit", Some(&other), None).await;
    assert_eq!(r.body["data"], json!([]));
}

#[tokio::test]
async fn changes_are_audited_without_secrets_sqlite() {
    changes_are_audited_without_secrets(Db::Sqlite).await;
}

#[tokio::test]
async fn changes_are_audited_without_secrets_postgres() {
    changes_are_audited_without_secrets(Db::Postgres).await;
}

#[tokio::test]
async fn pruning_removes_only_old_entries() {
    let Some(app) = spawn_app(Db::Sqlite).await else {
        return;
    };
    app.create_bot("old", "support").await;
    let cut = botwire::store::now_ms() + 1;
    // Nothing is older than the start of the test.
    assert_eq!(app.store.prune_audit(cut - 60_000).await.unwrap(), 0);
    assert_eq!(app.store.prune_audit(cut).await.unwrap(), 1);
    let r = app.admin("GET", "/v1/audit", None).await;
    assert_eq!(r.body["data"], json!([]));
}

#[tokio::test]
async fn a_key_and_its_audit_row_commit_together_or_not_at_all() {
    use botwire::store::audit::{Actor, Pending, scope};
    let Some(app) = spawn_app(Db::Sqlite).await else {
        return;
    };
    // Recorded in the key's own write: one row, with the scope's actor.
    let cli = Pending::new(Some(Actor::Cli), None);
    let (row, _) = scope(
        cli.clone(),
        app.store
            .create_key(&app.account_id, None, "together", &app.pepper),
    )
    .await
    .unwrap();
    assert!(cli.recorded());
    let r = app.admin("GET", "/v1/audit?action=key.created", None).await;
    assert_eq!(r.body["data"][0]["resource_id"], row.id.as_str());
    assert_eq!(r.body["data"][0]["actor"]["kind"], "cli");

    // When the audit row cannot be written, the key is not created either.
    app.store
        .write(|c| c.batch("ALTER TABLE audit RENAME TO audit_away"))
        .await
        .unwrap();
    let failed = scope(
        Pending::new(Some(Actor::Cli), None),
        app.store
            .create_key(&app.account_id, None, "alone", &app.pepper),
    )
    .await;
    assert!(failed.is_err(), "{failed:?}");
    app.store
        .write(|c| c.batch("ALTER TABLE audit_away RENAME TO audit"))
        .await
        .unwrap();
    let r = app.admin("GET", "/v1/keys", None).await;
    let names: Vec<&str> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"together") && !names.contains(&"alone"),
        "{names:?}"
    );
}
