//! The outbox's sending mark, step by step on the store, on both backends:
//! only the node holding a message can mark it; a recorded outcome clears
//! the mark; a message another node left marked (it stopped mid-send) is
//! never claimed again but settled as failed `interrupted`, with its
//! attempt and `message.failed` event, and a late outcome from the node
//! that marked it changes nothing.

use crate::common::{Db, test_db};
use botwire::channels::{ChannelConfig, ChannelFields, ChannelKind, Outgoing, Secret};
use botwire::domain::bot::{BotId, BotType};
use botwire::store::Store;
use botwire::store::channels::{
    ChannelAttemptRow, INTERRUPTED, MessageNext, MessageOutcome, OutboxWrite,
};
use botwire::store::deliveries::Lease;
use serde_json::json;
use std::sync::Arc;

#[tokio::test]
async fn an_interrupted_send_is_failed_not_repeated_sqlite() {
    an_interrupted_send_is_failed_not_repeated(Db::Sqlite).await;
}

#[tokio::test]
async fn an_interrupted_send_is_failed_not_repeated_postgres() {
    an_interrupted_send_is_failed_not_repeated(Db::Postgres).await;
}

fn lease(node: &str) -> Lease {
    Lease {
        node: Arc::from(node),
        ms: 60_000,
    }
}

fn message(to: &str) -> OutboxWrite {
    OutboxWrite {
        id: botwire::domain::ids::new_id("out"),
        lane: format!("lane:{to}"),
        conversation_id: None,
        contact_id: None,
        recipient: to.to_owned(),
        outgoing: Outgoing {
            op: "messages".into(),
            body: json!({"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": "hi"}}),
        },
    }
}

fn status_of(rows: &[botwire::store::channels::MessageRow], id: &str) -> (String, Option<String>) {
    let m = rows.iter().find(|m| m.id == id).expect("message listed");
    (m.status.clone(), m.last_error.clone())
}

async fn an_interrupted_send_is_failed_not_repeated(kind: Db) {
    let Some(db) = test_db(kind) else {
        return;
    };
    let store = Store::open(&db.url).await.unwrap();
    let pepper = botwire::auth::Pepper::new(b"test pepper".to_vec());
    let (account, _) = store.bootstrap(&pepper).await.unwrap().unwrap();
    store
        .create_bot(
            &account.id,
            BotId::parse("shop").unwrap(),
            "Shop",
            BotType::Support,
        )
        .await
        .unwrap();
    let fields = ChannelFields {
        phone_number_id: Some("106540352242922".into()),
        access_token: Some(Secret::new("token")),
        app_secret: Some(Secret::new("secret")),
        verify_token: Some("v".into()),
        api_base: Some("http://127.0.0.1:9".into()),
        ..Default::default()
    };
    let config = ChannelConfig::create(ChannelKind::Whatsapp, &fields).unwrap();
    let channel = Arc::new(
        store
            .create_channel(&account.id, "shop", "ch_outbox", "wa", config)
            .await
            .unwrap(),
    );
    let (done, cut) = (message("15550000001"), message("15550000002"));
    store
        .enqueue_messages(channel.clone(), vec![done.clone()], None)
        .await
        .unwrap();
    store
        .enqueue_messages(channel.clone(), vec![cut.clone()], None)
        .await
        .unwrap();
    let (a, b) = (lease("node_a"), lease("node_b"));
    let now = botwire::store::now_ms();
    let tickets = store.claim_outbox(now, a.clone(), 10).await.unwrap();
    assert_eq!(tickets.len(), 2);

    // Only the holder marks; marking twice marks nothing more.
    assert!(
        store
            .mark_sending(vec![done.id.clone(), cut.id.clone()], b.clone())
            .await
            .unwrap()
            .is_empty(),
        "node b holds neither"
    );
    let marked = store
        .mark_sending(vec![done.id.clone(), cut.id.clone()], a.clone())
        .await
        .unwrap();
    assert_eq!(marked.len(), 2);
    assert!(
        store
            .mark_sending(vec![done.id.clone()], a.clone())
            .await
            .unwrap()
            .is_empty()
    );

    // Node a records the first send; the second's outcome never comes (a
    // stopped mid-send).
    let ticket = tickets.iter().find(|t| t.id == done.id).unwrap().clone();
    store
        .record_message_outcomes(vec![MessageOutcome {
            ticket,
            attempt: Some(ChannelAttemptRow {
                id: botwire::domain::ids::new_id("catt"),
                started_at: now,
                duration_ms: 3,
                status: Some(200),
                response_body: "{}".into(),
                error_kind: None,
                error_message: None,
                node: Some("node_a".into()),
            }),
            next: MessageNext::Sent(Some("wamid.1".into())),
        }])
        .await
        .unwrap();

    // Before a's lease runs out nobody touches the marked one; after, node a
    // itself does not either (it would still be in its memory).
    let later = now + a.ms + 1_000;
    assert!(
        store
            .claim_outbox(now + 1, b.clone(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .claim_outbox(later, a.clone(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let page = botwire::store::PageRequest {
        after: None,
        limit: 10,
    };
    let rows = store
        .list_channel_messages(&channel.id, Default::default(), page.clone())
        .await
        .unwrap()
        .items;
    assert_eq!(status_of(&rows, &cut.id).0, "pending");

    // Node b, after a's lease: settles it as failed, does not send it.
    assert!(
        store
            .claim_outbox(later, b.clone(), 10)
            .await
            .unwrap()
            .is_empty(),
        "an interrupted send is never handed out again"
    );
    let rows = store
        .list_channel_messages(&channel.id, Default::default(), page.clone())
        .await
        .unwrap()
        .items;
    assert_eq!(
        status_of(&rows, &cut.id),
        ("failed".to_owned(), Some(INTERRUPTED.to_owned()))
    );
    assert_eq!(status_of(&rows, &done.id).0, "sent");
    let attempts = store
        .list_message_attempts(&channel.id, &cut.id)
        .await
        .unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].error_kind.as_deref(), Some("interrupted"));
    assert_eq!(attempts[0].node.as_deref(), Some("node_a"));
    let failed = store
        .read(|c| c.query("SELECT data FROM events WHERE type = 'message.failed'", &[]))
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    let data: serde_json::Value = serde_json::from_str(&failed[0].text(0).unwrap()).unwrap();
    assert_eq!(data["message_id"], cut.id.as_str());
    assert_eq!(data["error"], INTERRUPTED);

    // A late outcome from node a changes nothing.
    let ticket = tickets.iter().find(|t| t.id == cut.id).unwrap().clone();
    store
        .record_message_outcomes(vec![MessageOutcome {
            ticket,
            attempt: None,
            next: MessageNext::Sent(Some("wamid.2".into())),
        }])
        .await
        .unwrap();
    let rows = store
        .list_channel_messages(&channel.id, Default::default(), page)
        .await
        .unwrap()
        .items;
    assert_eq!(status_of(&rows, &cut.id).0, "failed");
    store.close().await;
}
