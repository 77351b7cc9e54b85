//! The store conformance suite: the same operations and guarantees, checked
//! on SQLite and on PostgreSQL.

use crate::common;

use botwire::auth::Pepper;
use botwire::domain::bot::{BotId, BotType};
use botwire::store::bots::BotPatch;
use botwire::store::conversations::{
    BookingWrite, ContactRow, ConversationRow, TurnCommit, TurnWrite,
};
use botwire::store::events::{EventRow, Published};
use botwire::store::{Conn, PageRequest, Store, StoreError};
use common::{Db, test_db};

async fn suite(kind: Db) {
    let Some(db) = test_db(kind) else { return };
    let store = Store::open(&db.url).await.expect("open");
    let pepper = Pepper::new(b"pepper".to_vec());

    accounts_and_keys(&store, &pepper).await;
    bots(&store, &pepper).await;
    group_commit(&store).await;
    failed_write_spares_its_batch(&store).await;
    sent_statements_answer_for_their_own_write(&store).await;
    publishes_waiting_together_share_a_write(&store).await;
    an_endpoint_changed_in_a_batch_is_seen_by_the_turns_after_it(&store).await;
    a_stale_turn_fails_alone_in_its_batch(&store).await;
    migrations_are_idempotent(&store, &db.url).await;
    one_booking_per_slot(&store, &db.url).await;
    claims_take_only_due_work_of_enabled_endpoints(&store).await;
    endpoint_cap_holds_across_writers(&store, &db.url).await;
    timers_are_replaced_with_the_turn_and_claimed_once(&store, &db.url).await;
    flow_saves_based_on_one_version_conflict(&store, &db.url).await;
    store.close().await;
}

/// Eight saves based on the same version, half through a second store (another
/// process's writer): exactly one is saved, the others are conflicts naming
/// the current version; a save without an expected version always goes in.
async fn flow_saves_based_on_one_version_conflict(store: &Store, url: &str) {
    let account = store.first_account().await.unwrap().unwrap();
    store
        .create_bot(
            &account.id,
            BotId::parse("versions").unwrap(),
            "v",
            BotType::Support,
        )
        .await
        .unwrap();
    let doc = r#"{"start":"a","nodes":{"a":{"end":true}}}"#;
    let first = store
        .put_flow_if(&account.id, "versions", doc.into(), Some(0))
        .await
        .unwrap();
    assert_eq!(first, 1);
    let second = Store::open(url).await.expect("second store");
    let saves: Vec<_> = (0..8)
        .map(|i| {
            let s = if i % 2 == 0 {
                store.clone()
            } else {
                second.clone()
            };
            let account = account.id.clone();
            tokio::spawn(async move {
                s.put_flow_if(&account, "versions", doc.into(), Some(1))
                    .await
            })
        })
        .collect();
    let mut results = Vec::new();
    for h in saves {
        results.push(h.await.unwrap());
    }
    let saved: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(saved, [&2], "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(r, StoreError::Conflict(m) if m.contains("version 2 is current")),
            "{r:?}"
        );
    }
    assert_eq!(
        store
            .put_flow(&account.id, "versions", doc.into())
            .await
            .unwrap(),
        3
    );
    // Without an expected version every save goes in, each with its own number.
    let saves: Vec<_> = (0..6)
        .map(|i| {
            let s = if i % 2 == 0 {
                store.clone()
            } else {
                second.clone()
            };
            let account = account.id.clone();
            tokio::spawn(async move { s.put_flow(&account, "versions", doc.into()).await })
        })
        .collect();
    let mut versions = Vec::new();
    for h in saves {
        versions.push(h.await.unwrap().unwrap());
    }
    versions.sort();
    assert_eq!(versions, [4, 5, 6, 7, 8, 9]);
    second.close().await;
}

/// 40 concurrent creations against a cap of 10, half through a second
/// store (another process's writer): exactly 10 endpoints exist after, and
/// the others are refused as over the limit.
async fn endpoint_cap_holds_across_writers(store: &Store, url: &str) {
    use botwire::store::endpoints::{NewEndpoint, kind};
    let account = store.first_account().await.unwrap().unwrap().id;
    store
        .create_bot(
            &account,
            BotId::parse("capped").unwrap(),
            "Capped",
            BotType::Support,
        )
        .await
        .unwrap();
    let second = Store::open(url).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let s = if i % 2 == 0 {
            store.clone()
        } else {
            second.clone()
        };
        let a = account.clone();
        let k = if i % 3 == 0 {
            kind::HOOK
        } else {
            kind::ENDPOINT
        };
        tasks.push(tokio::spawn(async move {
            s.create_endpoint(
                &a,
                NewEndpoint::new("capped", "https://cap.example/h", k),
                10,
            )
            .await
        }));
    }
    let (mut created, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => created += 1,
            Err(StoreError::LimitReached(m)) => {
                assert!(m.contains("limits.max_endpoints_per_bot"), "{m}");
                refused += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    let stored = store
        .read(|c| {
            c.query_one(
                "SELECT COUNT(*) FROM endpoints WHERE bot_id = 'capped'",
                &[],
            )?
            .int(0)
        })
        .await
        .unwrap();
    assert_eq!((created, refused, stored), (10, 30, 10));
    second.close().await;
}

/// A claim finds every enabled endpoint's due deliveries among many idle
/// endpoints, skips a disabled endpoint's and future ones, and respects the
/// per-endpoint and total limits.
async fn claims_take_only_due_work_of_enabled_endpoints(store: &Store) {
    use botwire::store::deliveries::{ClaimLimits, Lease};
    use botwire::store::endpoints::{EndpointPatch, NewEndpoint, kind};
    let account = store.first_account().await.unwrap().unwrap();
    store
        .create_bot(
            &account.id,
            BotId::parse("claims").unwrap(),
            "Claims",
            BotType::Support,
        )
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..60 {
        let e = store
            .create_endpoint(
                &account.id,
                NewEndpoint::new("claims", &format!("https://c{i}.example/h"), kind::ENDPOINT),
                100,
            )
            .await
            .unwrap();
        ids.push(e.id);
    }
    // Work for three of the sixty: 5, 3 and (disabled) 4 deliveries.
    for (i, n) in [(7, 5), (31, 3), (52, 4)] {
        let written = store
            .insert_backlog(&account.id, &ids[i], "order.paid", "{}", n, 100)
            .await
            .unwrap();
        assert_eq!(written, n);
    }
    store
        .update_endpoint(
            &account.id,
            &ids[52],
            EndpointPatch {
                enabled: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let lease = Lease {
        node: std::sync::Arc::from("node_conformance"),
        ms: 60_000,
    };
    let now = botwire::store::now_ms() + 1_000;
    let mut limits = ClaimLimits::total(100);
    limits.endpoints.insert(ids[7].clone(), 2);
    let got = store.claim_due(now, lease.clone(), limits).await.unwrap();
    let count = |id: &str| got.iter().filter(|t| t.endpoint.id == id).count();
    assert_eq!(
        (count(&ids[7]), count(&ids[31]), count(&ids[52]), got.len()),
        (2, 3, 0, 5),
        "a limit of 2 for the first, all 3 of the second, none of the disabled one"
    );
    // Leased now: a second claim at once takes only what was left.
    let again = store
        .claim_due(now, lease.clone(), ClaimLimits::total(100))
        .await
        .unwrap();
    assert_eq!(again.len(), 3);
    assert!(again.iter().all(|t| t.endpoint.id == ids[7]));
    // Nothing was due an hour ago.
    let none = store
        .claim_due(now - 3_600_000, lease.clone(), ClaimLimits::total(100))
        .await
        .unwrap();
    assert!(none.is_empty());
}

async fn accounts_and_keys(store: &Store, pepper: &Pepper) {
    let (account, admin) = store
        .bootstrap(pepper)
        .await
        .unwrap()
        .expect("first account");
    assert!(
        store.bootstrap(pepper).await.unwrap().is_none(),
        "bootstrap runs once"
    );
    assert_eq!(store.first_account().await.unwrap().unwrap().id, account.id);

    let p = store
        .authenticate(&admin, pepper)
        .await
        .unwrap()
        .expect("admin key works");
    assert_eq!(p.account_id, account.id);
    assert!(p.bot_id.is_none());
    let wrong_pepper = Pepper::new(b"other".to_vec());
    assert!(
        store
            .authenticate(&admin, &wrong_pepper)
            .await
            .unwrap()
            .is_none()
    );

    let (row, key) = store
        .create_key(&account.id, None, "ci", pepper)
        .await
        .unwrap();
    assert!(store.authenticate(&key, pepper).await.unwrap().is_some());
    let revoked = store.revoke_key(&account.id, &row.id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(
        store.authenticate(&key, pepper).await.unwrap().is_none(),
        "revoked at once"
    );

    // A key for a bot that does not exist is refused.
    let err = store
        .create_key(&account.id, Some("nope"), "x", pepper)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");

    // Keys of another account are invisible.
    let (other, _) = store.create_account("other", pepper).await.unwrap();
    assert!(matches!(
        store.revoke_key(&other.id, &row.id).await,
        Err(StoreError::NotFound)
    ));
    let page = store
        .list_keys(
            &account.id,
            PageRequest {
                limit: 1,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    let next = page.next_cursor.clone().expect("second page");
    let page2 = store
        .list_keys(
            &account.id,
            PageRequest {
                limit: 10,
                after: Some(next),
            },
        )
        .await
        .unwrap();
    assert_eq!(page2.items.len(), 1);
    assert!(page2.next_cursor.is_none());
    assert_ne!(page.items[0].id, page2.items[0].id);
}

async fn bots(store: &Store, pepper: &Pepper) {
    let account = store.first_account().await.unwrap().unwrap();
    let (other, _) = store.create_account("third", pepper).await.unwrap();
    let id = BotId::parse("eli").unwrap();
    let bot = store
        .create_bot(&account.id, id.clone(), "Eli", BotType::DataCollection)
        .await
        .unwrap();
    assert_eq!(bot.flow_version, 0);
    let dup = store
        .create_bot(&account.id, id.clone(), "Again", BotType::Support)
        .await
        .unwrap_err();
    assert!(
        matches!(dup, StoreError::Conflict(ref m) if m.contains("eli")),
        "{dup:?}"
    );
    // The same id in another account is another bot.
    store
        .create_bot(&other.id, id.clone(), "Theirs", BotType::Support)
        .await
        .unwrap();
    assert_eq!(store.get_bot(&account.id, "eli").await.unwrap().name, "Eli");
    assert_eq!(
        store.get_bot(&other.id, "eli").await.unwrap().name,
        "Theirs"
    );

    for n in 0..5 {
        store
            .create_bot(
                &account.id,
                BotId::parse(&format!("b{n}")).unwrap(),
                "b",
                BotType::Support,
            )
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_bots(&account.id, None, PageRequest { limit: 2, after })
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|b| b.id.to_string()));
        match page.next_cursor {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ["b0", "b1", "b2", "b3", "b4", "eli"]);
    let only = store
        .list_bots(
            &account.id,
            Some("b3"),
            PageRequest {
                limit: 50,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(only.items.len(), 1);

    let patched = store
        .update_bot(
            &account.id,
            "eli",
            BotPatch {
                name: Some("EliPackage".into()),
                bot_type: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(patched.name, "EliPackage");
    assert_eq!(patched.bot_type, BotType::DataCollection);
    assert!(matches!(
        store.update_bot(&other.id, "b1", BotPatch::default()).await,
        Err(StoreError::NotFound)
    ));

    let (_, scoped) = store
        .create_key(&account.id, Some("b4"), "b4", pepper)
        .await
        .unwrap();
    assert_eq!(
        store
            .authenticate(&scoped, pepper)
            .await
            .unwrap()
            .unwrap()
            .bot_id
            .as_deref(),
        Some("b4")
    );
    store.delete_bot(&account.id, "b4").await.unwrap();
    assert!(matches!(
        store.get_bot(&account.id, "b4").await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store.authenticate(&scoped, pepper).await.unwrap().is_none(),
        "a deleted bot's keys stop working"
    );
    assert!(matches!(
        store.delete_bot(&account.id, "b4").await,
        Err(StoreError::NotFound)
    ));
}

async fn group_commit(store: &Store) {
    store
        .write(|c| c.batch("CREATE TABLE gc_probe (id BIGINT PRIMARY KEY, v TEXT NOT NULL)"))
        .await
        .unwrap();
    let before = store.writer_stats();
    let mut tasks = Vec::new();
    for i in 0..400i64 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.write(move |c| {
                c.execute(
                    "INSERT INTO gc_probe (id, v) VALUES ($1, $2)",
                    &[i.into(), "x".into()],
                )
            })
            .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 1);
    }
    let after = store.writer_stats();
    let n = store
        .read(|c| c.query_one("SELECT COUNT(*) FROM gc_probe", &[])?.int(0))
        .await
        .unwrap();
    assert_eq!(n, 400, "every acknowledged write is readable");
    assert_eq!(after.writes - before.writes, 400);
    assert!(
        after.commits - before.commits < 400,
        "concurrent writes shared commits ({} commits for 400 writes)",
        after.commits - before.commits
    );
}

async fn failed_write_spares_its_batch(store: &Store) {
    let mut tasks = Vec::new();
    for i in 0..50i64 {
        let s = store.clone();
        // Every tenth write clashes with an existing row.
        let id = if i % 10 == 0 { 0 } else { 1000 + i };
        tasks.push(tokio::spawn(async move {
            s.write(move |c| {
                c.execute(
                    "INSERT INTO gc_probe (id, v) VALUES ($1, $2)",
                    &[id.into(), "y".into()],
                )?;
                c.execute(
                    "INSERT INTO gc_probe (id, v) VALUES ($1, $2)",
                    &[(id + 100_000).into(), "z".into()],
                )
            })
            .await
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => {}
            Err(StoreError::Conflict(_)) => conflicts += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(conflicts, 5);
    let (ok_rows, orphan) = store
        .read(|c| {
            let ok = c
                .query_one("SELECT COUNT(*) FROM gc_probe WHERE v = 'y'", &[])?
                .int(0)?;
            let orphan = c
                .query_one("SELECT COUNT(*) FROM gc_probe WHERE id = 100000", &[])?
                .int(0)?;
            Ok((ok, orphan))
        })
        .await
        .unwrap();
    assert_eq!(ok_rows, 45, "the 45 good writes landed");
    assert_eq!(orphan, 0, "a failed write left none of its own changes");
}

/// Statements given to `send` (held and pipelined on PostgreSQL) fail the
/// write that sent them, not the next one in the batch or the commit; a
/// later query of the same write sees them; once-only and re-runnable writes
/// alike.
async fn sent_statements_answer_for_their_own_write(store: &Store) {
    let mut tasks = Vec::new();
    for i in 0..60i64 {
        let s = store.clone();
        // Every fifth write (of either kind) clashes with a row of
        // group_commit's (ids 0..400).
        let id = if i % 5 == 0 { i } else { 500_000 + i };
        tasks.push(tokio::spawn(async move {
            let write = move |c: &mut dyn Conn| {
                c.send(
                    "INSERT INTO gc_probe (id, v) VALUES ($1, $2)",
                    &[id.into(), "sent".into()],
                )?;
                c.send(
                    "INSERT INTO gc_probe (id, v) VALUES ($1, $2)",
                    &[(id + 1_000_000).into(), "sent".into()],
                )?;
                Ok(())
            };
            let result = if i % 2 == 0 {
                s.write(write).await
            } else {
                s.write_again(write).await
            };
            (id, result)
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        match t.await.unwrap() {
            (id, Ok(())) => assert!(id >= 500_000, "write {id} should have clashed"),
            (id, Err(StoreError::Conflict(_))) => {
                assert!(id < 400, "write {id} failed for another's row");
                conflicts += 1;
            }
            (id, Err(e)) => panic!("write {id}: unexpected {e:?}"),
        }
    }
    assert_eq!(conflicts, 12);
    let (sent, orphans) = store
        .read(|c| {
            let sent = c
                .query_one("SELECT COUNT(*) FROM gc_probe WHERE v = 'sent'", &[])?
                .int(0)?;
            let orphans = c
                .query_one(
                    "SELECT COUNT(*) FROM gc_probe WHERE id >= 1000000 AND id < 1000400",
                    &[],
                )?
                .int(0)?;
            Ok((sent, orphans))
        })
        .await
        .unwrap();
    assert_eq!(sent, 96, "the 48 good writes landed, two rows each");
    assert_eq!(orphans, 0, "a failed write left none of its rows");

    // A query after a sent statement, in the same write, sees it.
    let seen = store
        .write(|c| {
            c.send(
                "INSERT INTO gc_probe (id, v) VALUES ($1, $2)",
                &[700_000i64.into(), "ordered".into()],
            )?;
            c.query_one("SELECT v FROM gc_probe WHERE id = $1", &[700_000i64.into()])?
                .text(0)
        })
        .await
        .unwrap();
    assert_eq!(seen, "ordered");
}

/// Keeps `store`'s writer busy for `ms` (a write that sleeps), so that the
/// writes queued meanwhile share the next transaction.
fn hold_writer(store: &Store, ms: u64) -> tokio::task::JoinHandle<botwire::store::Result<()>> {
    let store = store.clone();
    tokio::spawn(async move {
        store
            .write(move |_| {
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Ok(())
            })
            .await
    })
}

/// Publishes queued while the writer is busy go in as one write; each
/// caller still gets its own answer: an unknown bot is `NotFound`, a second
/// body under one Idempotency-Key a `Conflict`, the rest written once.
async fn publishes_waiting_together_share_a_write(store: &Store) {
    let account = store.first_account().await.unwrap().unwrap().id;
    store
        .create_bot(
            &account,
            BotId::parse("pub").unwrap(),
            "p",
            BotType::Support,
        )
        .await
        .unwrap();
    let publish = |bot: &str, key: Option<(String, String)>| {
        let store = store.clone();
        let event = EventRow::new(&account, bot, "order.paid", None, "{}".into());
        tokio::spawn(async move { store.publish_event(event, key).await })
    };
    // Hold the writer while 100 publishes queue up.
    let busy = hold_writer(store, 300);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let before = store.writer_stats();
    let tasks: Vec<_> = (0..100).map(|_| publish("pub", None)).collect();
    busy.await.unwrap().unwrap();
    for t in tasks {
        assert!(matches!(t.await.unwrap(), Ok(Published::Created(_))));
    }
    let writes = store.writer_stats().writes - before.writes;
    assert!(writes <= 3, "100 queued publishes took {writes} writes");

    // Failures mixed in: each gets its own answer, the others go in once.
    let mut tasks = Vec::new();
    for i in 0..60 {
        let task = match i % 6 {
            0 => publish("nobody", None),
            1 => publish("pub", Some(("dup".into(), format!("body-{i}")))),
            _ => publish("pub", None),
        };
        tasks.push((i % 6, task));
    }
    let (mut created, mut dup_created, mut dup_conflicts, mut missing) = (0, 0, 0, 0);
    for (kind, t) in tasks {
        match (kind, t.await.unwrap()) {
            (0, Err(StoreError::NotFound)) => missing += 1,
            (1, Ok(Published::Created(_))) => dup_created += 1,
            (1, Err(StoreError::Conflict(_))) => dup_conflicts += 1,
            (k, Ok(Published::Created(_))) if k > 1 => created += 1,
            (k, other) => panic!("publish of kind {k}: {other:?}"),
        }
    }
    assert_eq!(
        (missing, dup_created, dup_conflicts, created),
        (10, 1, 9, 40)
    );
    let n = store
        .read(|c| {
            c.query_one("SELECT COUNT(*) FROM events WHERE bot_id = 'pub'", &[])?
                .int(0)
        })
        .await
        .unwrap();
    assert_eq!(n, 100 + 1 + 40, "every created event is written once");
}

/// Turns, an endpoint change and turns again, all in one transaction (the
/// writer held busy while they queue, in this order): the turns before the
/// change fan out to the endpoint, those after it see it disabled.
/// PostgreSQL's writer keeps the endpoints a transaction read for its later
/// writes; the change (a 410 Gone in an outcome batch) must make it read
/// them again.
async fn an_endpoint_changed_in_a_batch_is_seen_by_the_turns_after_it(store: &Store) {
    use botwire::store::deliveries::{AttemptRow, DeliveryFilter, NextState, Outcome};
    use botwire::store::endpoints::{NewEndpoint, kind};
    let account = store.first_account().await.unwrap().unwrap().id;
    store
        .create_bot(
            &account,
            BotId::parse("memo").unwrap(),
            "m",
            BotType::Support,
        )
        .await
        .unwrap();
    let ep = store
        .create_endpoint(
            &account,
            NewEndpoint::new("memo", "https://memo.example/h", kind::ENDPOINT),
            100,
        )
        .await
        .unwrap();
    let turn = |n: usize| {
        let mut t = booking_turn(&account, 9_000 + n, 1);
        t.bot_id = "memo".into();
        t.conversation.bot_id = "memo".into();
        t.booking = None;
        t.events = vec![EventRow::new(
            &account,
            "memo",
            "message.received",
            Some(&t.conversation.id),
            "{}".into(),
        )];
        let id = t.events[0].id.clone();
        let store = store.clone();
        (id, tokio::spawn(async move { store.commit_turn(t).await }))
    };
    let deliveries_of = |event: String| {
        let (store, account) = (store.clone(), account.clone());
        async move {
            let filter = DeliveryFilter {
                event_id: Some(event),
                ..Default::default()
            };
            let page = PageRequest {
                limit: 10,
                after: None,
            };
            store
                .list_deliveries(&account, filter, page)
                .await
                .unwrap()
                .items
        }
    };
    // A delivery to answer 410 for later.
    let (first, task) = turn(0);
    task.await.unwrap().unwrap();
    let delivery = deliveries_of(first).await.remove(0);

    let busy = hold_writer(store, 400);
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(40));
    pause().await;
    let before: Vec<_> = (1..4).map(turn).collect();
    pause().await;
    let gone = {
        let store = store.clone();
        let outcome = Outcome {
            delivery_id: delivery.id.clone(),
            endpoint_id: ep.id.clone(),
            account_id: account.clone(),
            attempt: Some(AttemptRow {
                id: botwire::domain::ids::new_id("att"),
                delivery_id: delivery.id.clone(),
                endpoint_id: ep.id.clone(),
                started_at: botwire::store::now_ms(),
                duration_ms: 1,
                request_headers: "{}".into(),
                status: Some(410),
                response_body: String::new(),
                error_kind: Some("status".into()),
                error_message: Some("410 Gone".into()),
                node: None,
            }),
            next: NextState::Dead,
            gone: true,
        };
        tokio::spawn(async move {
            store
                .record_outcomes(vec![outcome], botwire::store::now_ms(), 60_000)
                .await
        })
    };
    pause().await;
    let after: Vec<_> = (4..7).map(turn).collect();
    let before_writes = store.writer_stats();
    busy.await.unwrap().unwrap();
    let disabled = gone.await.unwrap().unwrap();
    assert_eq!(disabled.len(), 1, "the 410 disabled the endpoint");
    let mut counts = Vec::new();
    for (event, task) in before.into_iter().chain(after) {
        task.await.unwrap().unwrap();
        counts.push(deliveries_of(event).await.len());
    }
    assert_eq!(counts, [1, 1, 1, 0, 0, 0]);
    let commits = store.writer_stats().commits - before_writes.commits;
    assert!(
        commits <= 3,
        "the turns and the outcome shared a commit ({commits})"
    );
}

/// Two turns based on the same revision of one conversation, queued in
/// one transaction with others: one commits, the other is refused as stale
/// (the revision check runs held, with the rest of the turn, on
/// PostgreSQL), and the others commit.
async fn a_stale_turn_fails_alone_in_its_batch(store: &Store) {
    let account = store.first_account().await.unwrap().unwrap().id;
    store
        .create_bot(
            &account,
            BotId::parse("stale").unwrap(),
            "s",
            BotType::Support,
        )
        .await
        .unwrap();
    let turn = |n: usize, revision: Option<i64>| {
        let mut t = booking_turn(&account, 20_000 + n, 1);
        t.bot_id = "stale".into();
        t.conversation.bot_id = "stale".into();
        t.booking = None;
        t.events = vec![];
        if revision.is_some() {
            t.contact_is_new = false;
        }
        t.expected_revision = revision;
        t
    };
    // The conversation, at revision 1.
    store.commit_turn(turn(0, None)).await.unwrap();
    let busy = hold_writer(store, 300);
    tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    let spawn = |t: TurnWrite| {
        let store = store.clone();
        tokio::spawn(async move { store.commit_turn(t).await })
    };
    let others: Vec<_> = (1..4).map(|n| spawn(turn(n, None))).collect();
    let racing: Vec<_> = (0..2).map(|_| spawn(turn(0, Some(1)))).collect();
    let more: Vec<_> = (4..7).map(|n| spawn(turn(n, None))).collect();
    busy.await.unwrap().unwrap();
    let (mut committed, mut stale) = (0, 0);
    for t in racing {
        match t.await.unwrap() {
            Ok(TurnCommit::Committed(2)) => committed += 1,
            Err(StoreError::Conflict(m)) if m == botwire::store::conversations::STALE => stale += 1,
            other => panic!("racing turn: {other:?}"),
        }
    }
    assert_eq!((committed, stale), (1, 1));
    for t in others.into_iter().chain(more) {
        assert!(matches!(t.await.unwrap(), Ok(TurnCommit::Committed(1))));
    }
}

async fn migrations_are_idempotent(store: &Store, url: &str) {
    let again = Store::open(url)
        .await
        .expect("reopen runs no migration twice");
    let versions = again
        .read(|c| {
            c.query_one("SELECT COUNT(*) FROM schema_migrations", &[])?
                .int(0)
        })
        .await
        .unwrap();
    assert!(versions >= 1);
    assert!(store.first_account().await.unwrap().is_some());
    again.close().await;
}

/// A turn's timers replace its conversation's; a due timer is claimed by
/// one claimer at a time (two stores claiming at once get it once), claimed
/// again only after its lease, and deleted by the turn that handles it.
async fn timers_are_replaced_with_the_turn_and_claimed_once(store: &Store, url: &str) {
    use botwire::store::timers::{TimerChange, TimerWrite};
    let account = store.first_account().await.unwrap().unwrap().id;
    let mut turn = booking_turn(&account, 900, 1);
    turn.booking = None;
    turn.events.clear();
    let timer = |kind: &str, due_at: i64| TimerWrite {
        kind: kind.into(),
        node: Some("ask".into()),
        due_at,
    };
    turn.timers = TimerChange {
        replace: Some(vec![timer("reminder", 1_000), timer("expiry", 50_000)]),
        fired: None,
    };
    assert_eq!(
        store.commit_turn(turn.clone()).await.unwrap(),
        TurnCommit::Committed(1)
    );
    let conv = turn.conversation.id.clone();
    let kinds = |rows: Vec<botwire::store::timers::TimerRow>| -> Vec<String> {
        rows.into_iter().map(|t| t.kind).collect()
    };
    assert_eq!(
        kinds(store.conversation_timers(&conv).await.unwrap()),
        ["reminder", "expiry"]
    );
    // Nothing due yet.
    assert!(
        store
            .claim_due_timers(999, 10, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // Two stores claim at once: one gets the reminder.
    let other = Store::open(url).await.unwrap();
    let (a, b) = tokio::join!(
        store.claim_due_timers(1_000, 10, 100),
        other.claim_due_timers(1_000, 10, 100)
    );
    let claimed: Vec<_> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    assert_eq!(kinds(claimed.clone()), ["reminder"]);
    // Leased: not again until the lease runs out.
    assert!(
        store
            .claim_due_timers(1_050, 10, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let again = other.claim_due_timers(1_101, 10, 100).await.unwrap();
    assert_eq!(again.len(), 1, "claimed again after the lease");
    other.close().await;
    // The next turn handles it (deleted) and keeps the others.
    turn.contact_is_new = false;
    turn.expected_revision = Some(1);
    turn.messages.clear();
    turn.timers = TimerChange {
        replace: None,
        fired: Some(again[0].id.clone()),
    };
    store.commit_turn(turn.clone()).await.unwrap();
    assert_eq!(
        kinds(store.conversation_timers(&conv).await.unwrap()),
        ["expiry"]
    );
    // A turn that replaces them leaves only its own.
    turn.expected_revision = Some(2);
    turn.timers = TimerChange {
        replace: Some(vec![timer("timeout", 7_000)]),
        fired: None,
    };
    store.commit_turn(turn).await.unwrap();
    assert_eq!(
        kinds(store.conversation_timers(&conv).await.unwrap()),
        ["timeout"]
    );
}

fn booking_turn(account: &str, n: usize, seat_capacity: u32) -> TurnWrite {
    let contact = ContactRow {
        id: format!("ct_{n}"),
        phone: Some(format!("+3460000{n:04}")),
        external_id: None,
        attributes: "{}".into(),
    };
    let conversation_id = format!("cnv_{n}");
    TurnWrite {
        account_id: account.into(),
        bot_id: "clinic".into(),
        contact: contact.clone(),
        contact_is_new: true,
        contact_changed: false,
        conversation: ConversationRow {
            id: conversation_id.clone(),
            bot_id: "clinic".into(),
            contact_id: contact.id.clone(),
            flow_version: 1,
            state: "{}".into(),
            status: "active".into(),
            revision: 1,
            created_at: 0,
            updated_at: 0,
            channel: "api".into(),
        },
        expected_revision: None,
        messages: vec![("in".into(), "{\"text\":\"1\"}".into())],
        events: vec![EventRow::new(
            account,
            "clinic",
            "appointment.booked",
            Some(&conversation_id),
            "{}".into(),
        )],
        booking: Some(BookingWrite {
            id: format!("apt_{n}"),
            start_ms: 1_900_000_000_000,
            end_ms: 1_900_000_000_000 + 1_800_000,
            label: "Mon 09:00".into(),
            capacity: seat_capacity,
        }),
        cancel: None,
        calls: vec![],
        channel: None,
        timers: Default::default(),
        broadcast: None,
    }
}

/// 50 concurrent attempts on one slot book exactly one — through one
/// store and, on PostgreSQL, through two stores (two processes' writers).
async fn one_booking_per_slot(store: &Store, url: &str) {
    let account = store.first_account().await.unwrap().unwrap().id;
    let second = Store::open(url).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..50 {
        let s = if n % 2 == 0 {
            store.clone()
        } else {
            second.clone()
        };
        let t = booking_turn(&account, n, 1);
        tasks.push(tokio::spawn(async move { s.commit_turn(t).await.unwrap() }));
    }
    let mut committed = 0;
    for t in tasks {
        match t.await.unwrap() {
            TurnCommit::Committed(_) => committed += 1,
            TurnCommit::SlotTaken => {}
        }
    }
    assert_eq!(committed, 1, "exactly one booking of a one-seat slot");
    let (appointments, events, conversations) = store
        .read(|c| {
            Ok((
                c.query_one(
                    "SELECT COUNT(*) FROM appointments WHERE status = 'booked'",
                    &[],
                )?
                .int(0)?,
                c.query_one(
                    "SELECT COUNT(*) FROM events WHERE type = 'appointment.booked'",
                    &[],
                )?
                .int(0)?,
                c.query_one(
                    "SELECT COUNT(*) FROM conversations WHERE bot_id = 'clinic'",
                    &[],
                )?
                .int(0)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(
        (appointments, events, conversations),
        (1, 1, 1),
        "a refused booking writes nothing"
    );
    // A slot with three seats takes three.
    let mut tasks = Vec::new();
    for n in 100..130 {
        let s = if n % 2 == 0 {
            store.clone()
        } else {
            second.clone()
        };
        let mut t = booking_turn(&account, n, 3);
        t.booking.as_mut().unwrap().start_ms += 3_600_000;
        tasks.push(tokio::spawn(async move { s.commit_turn(t).await.unwrap() }));
    }
    let mut committed = 0;
    for t in tasks {
        if let TurnCommit::Committed(_) = t.await.unwrap() {
            committed += 1;
        }
    }
    assert_eq!(committed, 3);
    second.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_sqlite() {
    suite(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_postgres() {
    suite(Db::Postgres).await;
}
