//! Which rows a prune removes and which it must leave, on rows written
//! with chosen times and statuses.

use super::*;
use crate::domain::retention::RetentionPolicy;
use crate::store::testing::TestStore;
use std::time::Duration;

const MIN: i64 = 60_000;

async fn sql(t: &TestStore, statement: &'static str, params: Vec<Value>) {
    t.store
        .write(move |c| c.execute(statement, &params).map(|_| ()))
        .await
        .unwrap();
}

async fn event(t: &TestStore, id: &str, at: i64) {
    sql(
        t,
        "INSERT INTO events (id, account_id, bot_id, type, data, created_at)
         VALUES ($1, $2, 'alpha', 'message.received', '{}', $3)",
        vec![id.into(), (&t.account).into(), at.into()],
    )
    .await;
}

async fn delivery(t: &TestStore, id: &str, event: &str, status: &str, updated: i64) {
    sql(
        t,
        "INSERT INTO deliveries (id, account_id, bot_id, endpoint_id, event_id, status,
             attempts, created_at, updated_at)
         VALUES ($1, $2, 'alpha', 'ep_1', $3, $4, 1, $5, $5)",
        vec![
            id.into(),
            (&t.account).into(),
            event.into(),
            status.into(),
            updated.into(),
        ],
    )
    .await;
    sql(
        t,
        "INSERT INTO attempts (id, delivery_id, endpoint_id, account_id, started_at,
             duration_ms, request_headers)
         VALUES ($1, $2, 'ep_1', $3, $4, 5, '{}')",
        vec![
            format!("att_{id}").into(),
            id.into(),
            (&t.account).into(),
            updated.into(),
        ],
    )
    .await;
}

async fn conversation(t: &TestStore, id: &str, status: &str, updated: i64) {
    sql(
        t,
        "INSERT INTO conversations (id, account_id, bot_id, contact_id, flow_version, state,
             status, revision, created_at, updated_at)
         VALUES ($1, $2, 'alpha', 'ct_1', 1, '{}', $3, 1, $4, $4)",
        vec![
            id.into(),
            (&t.account).into(),
            status.into(),
            updated.into(),
        ],
    )
    .await;
    for n in 0..3 {
        sql(
            t,
            "INSERT INTO messages (id, conversation_id, direction, body, created_at)
             VALUES ($1, $2, 'in', 'hi', $3)",
            vec![format!("msg_{id}_{n}").into(), id.into(), updated.into()],
        )
        .await;
    }
    sql(
        t,
        "INSERT INTO timers (id, account_id, bot_id, conversation_id, kind, due_at)
         VALUES ($1, $2, 'alpha', $3, 'reminder', $4)",
        vec![
            format!("tmr_{id}").into(),
            (&t.account).into(),
            id.into(),
            updated.into(),
        ],
    )
    .await;
}

async fn left(t: &TestStore, table: &'static str) -> Vec<String> {
    t.store
        .read(move |c| {
            c.query(&format!("SELECT id FROM {table} ORDER BY id"), &[])?
                .iter()
                .map(|r| r.text(0))
                .collect()
        })
        .await
        .unwrap()
}

fn policy(minutes: u64) -> RetentionPolicy {
    let keep = Some(Duration::from_secs(minutes * 60));
    RetentionPolicy {
        events: keep,
        attempts: keep,
        conversations: keep,
        audit: keep,
    }
}

#[tokio::test]
async fn only_finished_old_events_go_with_their_deliveries() {
    let t = TestStore::open().await;
    let now = 100 * MIN;
    // Old, all deliveries done long ago: goes.
    event(&t, "evt_a", now - 10 * MIN).await;
    delivery(&t, "dlv_a1", "evt_a", "succeeded", now - 10 * MIN).await;
    delivery(&t, "dlv_a2", "evt_a", "dead", now - 9 * MIN).await;
    // Old, one delivery still retrying: stays, all of it.
    event(&t, "evt_b", now - 10 * MIN).await;
    delivery(&t, "dlv_b1", "evt_b", "succeeded", now - 10 * MIN).await;
    delivery(&t, "dlv_b2", "evt_b", "failed", now - 10 * MIN).await;
    // Old, pending: stays.
    event(&t, "evt_c", now - 10 * MIN).await;
    delivery(&t, "dlv_c", "evt_c", "pending", now - 10 * MIN).await;
    // Old, but its delivery finished recently: stays for now.
    event(&t, "evt_d", now - 10 * MIN).await;
    delivery(&t, "dlv_d", "evt_d", "succeeded", now - MIN / 2).await;
    // Old, no endpoint wanted it: goes.
    event(&t, "evt_e", now - 10 * MIN).await;
    // Recent: stays.
    event(&t, "evt_f", now - MIN / 2).await;

    // Attempts kept forever here: only those of pruned deliveries go.
    let cutoffs = RetentionPolicy {
        attempts: None,
        ..policy(1)
    }
    .cutoffs(now);
    let dry = t.store.count_prunable(&cutoffs).await.unwrap();
    let done = t.store.prune(&cutoffs).await.unwrap();
    assert_eq!(dry, done, "a dry run counts what a prune removes");
    assert_eq!(done.get(PruneKind::Events), 2);
    assert_eq!(done.get(PruneKind::Deliveries), 2);
    assert_eq!(done.get(PruneKind::Attempts), 2);
    assert_eq!(
        left(&t, "events").await,
        ["evt_b", "evt_c", "evt_d", "evt_f"]
    );
    assert_eq!(
        left(&t, "deliveries").await,
        ["dlv_b1", "dlv_b2", "dlv_c", "dlv_d"]
    );
    assert_eq!(left(&t, "attempts").await.len(), 4);
    // A second pass finds nothing.
    assert_eq!(t.store.prune(&cutoffs).await.unwrap().total(), 0);
}

#[tokio::test]
async fn attempts_go_by_age_even_of_pending_deliveries() {
    let t = TestStore::open().await;
    let now = 100 * MIN;
    event(&t, "evt_a", now - 10 * MIN).await;
    delivery(&t, "dlv_a", "evt_a", "pending", now - 10 * MIN).await;
    event(&t, "evt_b", now - 10 * MIN).await;
    delivery(&t, "dlv_b", "evt_b", "pending", now - MIN / 2).await;
    let cutoffs = RetentionPolicy {
        events: None,
        ..policy(1)
    }
    .cutoffs(now);
    let done = t.store.prune(&cutoffs).await.unwrap();
    assert_eq!(done.get(PruneKind::Attempts), 1);
    assert_eq!(done.get(PruneKind::Events), 0);
    assert_eq!(left(&t, "attempts").await, ["att_dlv_b"]);
    assert_eq!(left(&t, "deliveries").await, ["dlv_a", "dlv_b"]);
}

#[tokio::test]
async fn ended_conversations_go_with_their_transcripts_open_ones_stay() {
    let t = TestStore::open().await;
    let now = 100 * MIN;
    conversation(&t, "cnv_done_old", "completed", now - 10 * MIN).await;
    conversation(&t, "cnv_done_new", "completed", now - MIN / 2).await;
    conversation(&t, "cnv_active_old", "active", now - 50 * MIN).await;
    conversation(&t, "cnv_handoff_old", "handoff", now - 50 * MIN).await;
    let cutoffs = policy(1).cutoffs(now);
    let dry = t.store.count_prunable(&cutoffs).await.unwrap();
    let done = t.store.prune(&cutoffs).await.unwrap();
    assert_eq!(dry, done);
    assert_eq!(done.get(PruneKind::Conversations), 1);
    assert_eq!(done.get(PruneKind::Messages), 3);
    assert_eq!(done.get(PruneKind::Timers), 1);
    assert_eq!(
        left(&t, "conversations").await,
        ["cnv_active_old", "cnv_done_new", "cnv_handoff_old"]
    );
    assert_eq!(left(&t, "messages").await.len(), 9);
    assert_eq!(left(&t, "timers").await.len(), 3);
}

#[tokio::test]
async fn batches_stop_at_their_size_and_a_prune_takes_them_all() {
    let t = TestStore::open().await;
    let now = 100 * MIN;
    let n = BATCH_ROWS + 5;
    t.store
        .write(move |c| {
            for i in 0..n {
                c.execute(
                    "INSERT INTO audit (id, account_id, at, actor_name, action, resource_type)
                     VALUES ($1, 'acc', $2, 'cli', 'create', 'bot')",
                    &[format!("aud_{i:05}").into(), (now - 10 * MIN + i).into()],
                )?;
            }
            Ok(())
        })
        .await
        .unwrap();
    let cut = policy(1).cutoffs(now).audit.unwrap();
    let one = t
        .store
        .prune_batch(Stage::Audit, cut, None, 10)
        .await
        .unwrap();
    assert_eq!(one.removed.get(PruneKind::Audit), 10);
    assert!(one.next.is_some(), "a full batch says more may follow");
    // The oldest go first.
    assert_eq!(left(&t, "audit").await[0], "aud_00010");
    let rest = t.store.prune(&policy(1).cutoffs(now)).await.unwrap();
    assert_eq!(rest.get(PruneKind::Audit), n as u64 - 10);
    assert!(left(&t, "audit").await.is_empty());
}

#[tokio::test]
async fn zero_retention_keeps_everything() {
    let t = TestStore::open().await;
    event(&t, "evt_a", 0).await;
    conversation(&t, "cnv_a", "completed", 0).await;
    let cutoffs = RetentionPolicy::default().cutoffs(100 * MIN);
    assert_eq!(t.store.prune(&cutoffs).await.unwrap().total(), 0);
    assert_eq!(t.store.count_prunable(&cutoffs).await.unwrap().total(), 0);
    assert_eq!(left(&t, "events").await, ["evt_a"]);
}

#[tokio::test]
async fn freed_pages_go_back_to_the_file_system() {
    let t = TestStore::open().await;
    let body = "x".repeat(2000);
    t.store
        .write(move |c| {
            for i in 0..2000 {
                c.execute(
                    "INSERT INTO events (id, account_id, bot_id, type, data, created_at)
                     VALUES ($1, 'acc', 'alpha', 'custom', $2, 0)",
                    &[format!("evt_{i:05}").into(), (&body).into()],
                )?;
            }
            Ok(())
        })
        .await
        .unwrap();
    let (before, _) = t.store.sqlite_size().await.unwrap().unwrap();
    let done = t.store.prune(&policy(1).cutoffs(100 * MIN)).await.unwrap();
    assert_eq!(done.get(PruneKind::Events), 2000);
    let (_, free) = t.store.sqlite_size().await.unwrap().unwrap();
    assert!(free > 1_000_000, "{free} bytes free after the prune");
    while t.store.release_free_pages(VACUUM_PAGES).await.unwrap() > 0 {}
    let (after, free) = t.store.sqlite_size().await.unwrap().unwrap();
    assert_eq!(free, 0);
    assert!(
        after < before / 4,
        "the file shrank from {before} to {after} bytes"
    );
}

#[tokio::test]
async fn a_file_made_without_auto_vacuum_keeps_working() {
    let dir = std::env::temp_dir().join(crate::domain::ids::new_id("botwire-retention-old"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("old.db");
    // A file whose first table exists before botwire opens it: SQLite's
    // default, auto_vacuum = NONE, sticks.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE older (x INTEGER)")
        .unwrap();
    let store = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let mode = store
        .read(|c| c.query_one("PRAGMA auto_vacuum", &[])?.int(0))
        .await
        .unwrap();
    assert_eq!(mode, 0, "NONE");
    let body = "y".repeat(2000);
    store
        .write(move |c| {
            for i in 0..500 {
                c.execute(
                    "INSERT INTO audit (id, account_id, at, actor_name, action, resource_type, changes)
                     VALUES ($1, 'acc', 0, 'cli', 'create', 'bot', $2)",
                    &[format!("aud_{i:04}").into(), (&body).into()],
                )?;
            }
            Ok(())
        })
        .await
        .unwrap();
    let done = store.prune(&policy(1).cutoffs(100 * MIN)).await.unwrap();
    assert_eq!(done.get(PruneKind::Audit), 500);
    // The pages are free for reuse but stay in the file.
    let free = store.release_free_pages(VACUUM_PAGES).await.unwrap();
    assert!(free > 100, "{free} free pages");
    let (_, still_free) = store.sqlite_size().await.unwrap().unwrap();
    assert!(still_free > 0);
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_new_file_uses_incremental_auto_vacuum() {
    let t = TestStore::open().await;
    let mode = t
        .store
        .read(|c| c.query_one("PRAGMA auto_vacuum", &[])?.int(0))
        .await
        .unwrap();
    assert_eq!(mode, 2, "INCREMENTAL");
}

#[tokio::test]
async fn old_rows_that_stay_are_walked_past_not_rescanned() {
    let t = TestStore::open().await;
    let now = 100 * MIN;
    // 250 old active conversations, then one old ended one behind them.
    t.store
        .write(move |c| {
            for i in 0..250 {
                c.execute(
                    "INSERT INTO conversations (id, account_id, bot_id, contact_id, flow_version,
                         state, status, revision, created_at, updated_at)
                     VALUES ($1, 'acc', 'alpha', 'ct', 1, '{}', 'active', 1, $2, $2)",
                    &[format!("cnv_{i:04}").into(), (now - 50 * MIN).into()],
                )?;
            }
            Ok(())
        })
        .await
        .unwrap();
    conversation(&t, "cnv_zz_ended", "completed", now - 10 * MIN).await;
    let cut = policy(1).cutoffs(now).conversations.unwrap();
    // Each batch looks at 100 rows and moves on.
    let first = t
        .store
        .prune_batch(Stage::Conversations, cut, None, 100)
        .await
        .unwrap();
    assert_eq!(first.removed.total(), 0);
    let at = first.next.clone().expect("more to walk");
    assert_eq!(at.id, "cnv_0099");
    let second = t
        .store
        .prune_batch(Stage::Conversations, cut, Some(at), 100)
        .await
        .unwrap();
    assert_eq!(second.next.as_ref().unwrap().id, "cnv_0199");
    let third = t
        .store
        .prune_batch(Stage::Conversations, cut, second.next, 100)
        .await
        .unwrap();
    assert_eq!(third.removed.get(PruneKind::Conversations), 1);
    assert_eq!(third.next, None, "the walk is done");
    assert_eq!(left(&t, "conversations").await.len(), 250);

    // The same for events held by a pending delivery.
    for i in 0..30 {
        let id = format!("evt_{i:03}");
        event(&t, &id, now - 20 * MIN).await;
        delivery(&t, &format!("dlv_{i:03}"), &id, "pending", now - 20 * MIN).await;
    }
    event(&t, "evt_zzz", now - 10 * MIN).await;
    let cut = policy(1).cutoffs(now).events.unwrap();
    let mut after = None;
    let mut batches = 0;
    let mut removed = 0;
    loop {
        let b = t
            .store
            .prune_batch(Stage::Events, cut, after, 10)
            .await
            .unwrap();
        batches += 1;
        removed += b.removed.get(PruneKind::Events);
        match b.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!((batches, removed), (4, 1));
    assert_eq!(left(&t, "events").await.len(), 30);
}
