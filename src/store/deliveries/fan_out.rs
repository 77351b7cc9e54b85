//! Fan-out: the deliveries an event creates, written in the event's own
//! transaction, and the one-off test delivery aimed at a single endpoint.

use super::{DeliveryTicket, Lease};
use crate::domain::endpoint;
use crate::domain::ids::new_id;
use crate::store::endpoints::{EP_COLUMNS, EndpointRow, endpoint_from};
use crate::store::events::EventRow;
use crate::store::{Conn, Result, Store, StoreError, now_ms};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

/// The bot's enabled endpoints.
static FAN_OUT_BOT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {EP_COLUMNS} FROM endpoints ep
         WHERE ep.account_id = $1 AND ep.bot_id = $2 AND ep.enabled"
    )
});

/// The same joined to the bot itself, for a write that must check the bot
/// exists: no row at all means there is no such bot; one row of nulls,
/// that it has no endpoint.
static FAN_OUT_BOT_CHECKED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {EP_COLUMNS} FROM bots b
         LEFT JOIN endpoints ep ON ep.account_id = b.account_id AND ep.bot_id = b.id AND ep.enabled
         WHERE b.account_id = $1 AND b.id = $2"
    )
});

static FAN_OUT_ACCOUNT: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {EP_COLUMNS} FROM endpoints ep WHERE ep.account_id = $1 AND ep.enabled")
});

/// Endpoints read in a write transaction, by account, bot (`None`: the
/// account-wide reading) and whether the reading checked the bot exists,
/// for its later writes to reuse (the PostgreSQL
/// writer's connection keeps one per transaction, [`Conn::endpoint_memo`]):
/// a batch of chat turns of one bot reads its endpoints once, not once per
/// turn. A write that changes endpoints forgets it ([`endpoints_changed`]);
/// so does the start or rollback of a transaction or savepoint.
#[derive(Default)]
pub struct EndpointMemo(HashMap<(String, Option<String>, bool), Endpoints>);

impl EndpointMemo {
    /// Forgets everything read.
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// Tells the transaction's memo that endpoints changed.
pub(in crate::store) fn endpoints_changed(c: &mut dyn Conn) {
    if let Some(memo) = c.endpoint_memo() {
        memo.clear();
    }
}

/// Endpoints read for the events of one write, where the connection keeps
/// no [`EndpointMemo`] (SQLite, where a read costs no round trip), so that
/// several events of a turn still cost one query.
#[derive(Default)]
pub(in crate::store) struct Audiences {
    read: EndpointMemo,
    /// Whether this write already tells other processes (one `NOTIFY` per
    /// write is enough: it is delivered at the commit).
    notified: bool,
}

/// Endpoints shared by the tickets made from them.
type Endpoints = Arc<[Arc<EndpointRow>]>;

impl Audiences {
    /// The enabled endpoints `event` may go to (before each one's filter).
    /// With `require_bot`, a bot that does not exist is `NotFound`.
    fn candidates(
        &mut self,
        c: &mut dyn Conn,
        event: &EventRow,
        require_bot: bool,
    ) -> Result<Endpoints> {
        let account_wide = endpoint::account_wide(&event.event_type);
        let key = (
            event.account_id.clone(),
            (!account_wide).then(|| event.bot_id.clone()),
            require_bot && !account_wide,
        );
        let kept = match c.endpoint_memo() {
            Some(memo) => memo.0.get(&key).cloned(),
            None => self.read.0.get(&key).cloned(),
        };
        if let Some(found) = kept {
            return Ok(found);
        }
        let rows = if account_wide {
            c.query(&FAN_OUT_ACCOUNT, &[(&event.account_id).into()])?
        } else {
            let sql: &str = if require_bot {
                &FAN_OUT_BOT_CHECKED
            } else {
                &FAN_OUT_BOT
            };
            let rows = c.query(sql, &[(&event.account_id).into(), (&event.bot_id).into()])?;
            if rows.is_empty() && require_bot {
                return Err(StoreError::NotFound);
            }
            rows
        };
        let mut endpoints = Vec::with_capacity(rows.len());
        for row in &rows {
            // The bot's row alone has no endpoint joined.
            if row.opt_text_at("id")?.is_some() {
                endpoints.push(Arc::new(endpoint_from(row)?));
            }
        }
        let endpoints: Endpoints = endpoints.into();
        match c.endpoint_memo() {
            Some(memo) => memo.0.insert(key, endpoints.clone()),
            None => self.read.0.insert(key, endpoints.clone()),
        };
        Ok(endpoints)
    }
}

/// Inserts one delivery per enabled endpoint that wants `event`, inside the
/// event's transaction, and returns them as tickets. With `require_bot`, an
/// event of a bot that does not exist is `NotFound` (an account-wide one is
/// not checked). `audiences` keeps the endpoints read for the write's
/// earlier events.
///
/// `endpoint.disabled` goes to every endpoint of the account that names it
/// explicitly, and to the disabled endpoint's own bot's endpoints that take
/// every type; other events go to their bot's endpoints only.
pub(in crate::store) fn fan_out(
    c: &mut dyn Conn,
    audiences: &mut Audiences,
    event: &EventRow,
    lease: Option<&Lease>,
    require_bot: bool,
) -> Result<Vec<DeliveryTicket>> {
    let candidates = audiences.candidates(c, event, require_bot)?;
    let mut tickets = Vec::new();
    let mut event_arc: Option<Arc<EventRow>> = None;
    for ep in candidates.iter() {
        if !ep.receives(&event.bot_id, &event.event_type) {
            continue;
        }
        let id = new_id("dlv");
        insert_delivery(c, &id, ep, event, lease)?;
        tickets.push(DeliveryTicket {
            delivery_id: id,
            attempts: 0,
            final_attempt: false,
            endpoint: ep.clone(),
            event: event_arc
                .get_or_insert_with(|| Arc::new(event.clone()))
                .clone(),
        });
    }
    if lease.is_none() && !tickets.is_empty() && !audiences.notified {
        // Written for any worker to claim: wake those in other processes.
        c.notify_deliveries()?;
        audiences.notified = true;
    }
    Ok(tickets)
}

fn insert_delivery(
    c: &mut dyn Conn,
    id: &str,
    ep: &EndpointRow,
    event: &EventRow,
    lease: Option<&Lease>,
) -> Result<()> {
    let now = now_ms();
    c.send(
        "INSERT INTO deliveries (id, account_id, bot_id, endpoint_id, event_id, status, attempts,
            next_attempt_at, locked_until, locked_by, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $7, $8, $6, $6)",
        &[
            id.into(),
            (&ep.account_id).into(),
            (&event.bot_id).into(),
            (&ep.id).into(),
            (&event.id).into(),
            now.into(),
            lease.map(|l| now + l.ms).into(),
            lease.map(|l| l.node.to_string()).into(),
        ],
    )
}

impl Store {
    /// Writes a `webhook.test` event with one delivery to this endpoint only,
    /// leased to `lease`, and returns it.
    pub async fn create_test_delivery(
        &self,
        account_id: &str,
        endpoint_id: &str,
        lease: Lease,
    ) -> Result<DeliveryTicket> {
        let (a, id) = (account_id.to_owned(), endpoint_id.to_owned());
        self.write(move |c| {
            let ep = crate::store::endpoints::load(c, &a, &id)?;
            let event = EventRow::new(
                &a,
                &ep.bot_id,
                "webhook.test",
                None,
                json!({"message": "A test event from botwire: if you can read this, the endpoint works."})
                    .to_string(),
            );
            crate::store::events::insert_event_only(c, &event)?;
            let delivery_id = new_id("dlv");
            insert_delivery(c, &delivery_id, &ep, &event, Some(&lease))?;
            Ok(DeliveryTicket {
                delivery_id,
                attempts: 0,
                // A test ping is not retried: its answer is the point.
                final_attempt: true,
                endpoint: Arc::new(ep),
                event: Arc::new(event),
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::endpoint::ENDPOINT_DISABLED;
    use crate::store::deliveries::DeliveryFilter;
    use crate::store::testing::TestStore;
    use crate::store::{PageRequest, now_ms};

    /// The endpoints that got a delivery of `event_id`, sorted.
    async fn receivers(t: &TestStore, event_id: &str) -> Vec<String> {
        let page = t
            .store
            .list_deliveries(
                &t.account,
                DeliveryFilter {
                    event_id: Some(event_id.to_owned()),
                    ..Default::default()
                },
                PageRequest {
                    limit: 200,
                    after: None,
                },
            )
            .await
            .unwrap();
        let mut ids: Vec<String> = page.items.into_iter().map(|d| d.endpoint_id).collect();
        ids.sort();
        ids
    }

    fn sorted(ids: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn fan_out_follows_each_endpoints_filter() {
        let t = TestStore::open().await;
        let every = t.endpoint("alpha", None).await;
        let received = t.endpoint("alpha", Some(&["message.received"])).await;
        let other = t.endpoint("alpha", Some(&["conversation.ended"])).await;
        let beta_every = t.endpoint("beta", None).await;
        let beta_named = t.endpoint("beta", Some(&[ENDPOINT_DISABLED])).await;

        let e = t.publish("alpha", "message.received").await;
        assert_eq!(
            receivers(&t, &e.id).await,
            sorted(&[&every.id, &received.id])
        );

        // The account-wide event: its bot's endpoints by their filters, the
        // other bot's only where they name it.
        let e = t.publish("alpha", ENDPOINT_DISABLED).await;
        assert_eq!(
            receivers(&t, &e.id).await,
            sorted(&[&every.id, &beta_named.id])
        );
        let _ = (other, beta_every);
    }

    #[tokio::test]
    async fn disabled_endpoints_get_nothing_and_rows_are_due_unleased() {
        let t = TestStore::open().await;
        let on = t.endpoint("alpha", None).await;
        let off = t.endpoint("alpha", None).await;
        t.store
            .update_endpoint(
                &t.account,
                &off.id,
                crate::store::endpoints::EndpointPatch {
                    enabled: Some(false),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let before = now_ms();
        let e = t.publish("alpha", "message.received").await;
        assert_eq!(receivers(&t, &e.id).await, vec![on.id.clone()]);
        let d = t
            .store
            .list_deliveries(
                &t.account,
                DeliveryFilter::default(),
                PageRequest {
                    limit: 10,
                    after: None,
                },
            )
            .await
            .unwrap()
            .items
            .remove(0);
        assert_eq!(d.status, "pending");
        assert_eq!(d.attempts, 0);
        assert!(d.next_attempt_at.is_some_and(|at| at >= before));
    }

    #[tokio::test]
    async fn a_test_delivery_goes_to_its_endpoint_alone_and_is_final() {
        let t = TestStore::open().await;
        let a = t.endpoint("alpha", None).await;
        let _b = t.endpoint("alpha", None).await;
        let lease = super::Lease {
            node: "api".into(),
            ms: 60_000,
        };
        let ticket = t
            .store
            .create_test_delivery(&t.account, &a.id, lease)
            .await
            .unwrap();
        assert!(ticket.final_attempt);
        assert_eq!(ticket.event.event_type, "webhook.test");
        assert_eq!(receivers(&t, &ticket.event.id).await, vec![a.id]);
    }
}
