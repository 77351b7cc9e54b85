//! Claims: leasing due deliveries to a worker, a manual retry's lease,
//! and making failed or dead deliveries due again.

use super::{DeliveryTicket, Lease};
use crate::store::endpoints::{EP_COLUMNS, EP_WIDTH, endpoint_from};
use crate::store::events::event_from;
use crate::store::{Conn, Result, Store, StoreError, Value, now_ms};
use std::collections::HashMap;
use std::sync::Arc;

/// How many deliveries one claim may take: in all, and per endpoint.
#[derive(Clone, Debug)]
pub struct ClaimLimits {
    /// At most this many in all.
    pub total: usize,
    /// At most this many for an endpoint not named in `endpoints`.
    pub per_endpoint: usize,
    /// At most this many for these endpoints (0: none).
    pub endpoints: HashMap<String, usize>,
}

impl ClaimLimits {
    /// Up to `total` in all, with no limit per endpoint.
    pub fn total(total: usize) -> Self {
        Self {
            total,
            per_endpoint: total,
            endpoints: HashMap::new(),
        }
    }

    /// What `endpoint` may take.
    pub fn for_endpoint(&self, endpoint: &str) -> usize {
        self.endpoints
            .get(endpoint)
            .copied()
            .unwrap_or(self.per_endpoint)
    }
}

impl Store {
    /// Leases due deliveries of enabled endpoints to `lease`, at most
    /// `limits.total` in all and, per endpoint, what `limits` allows it, and
    /// returns them as tickets.
    ///
    /// The claim goes endpoint by endpoint (starting at a random one, so no
    /// endpoint is always last), oldest due first within each, through the
    /// `(endpoint_id, next_attempt_at)` due index: an endpoint allowed
    /// nothing costs nothing, however many deliveries it has waiting.
    pub async fn claim_due(
        &self,
        now: i64,
        lease: Lease,
        limits: ClaimLimits,
    ) -> Result<Vec<DeliveryTicket>> {
        let skip = self.backend.skip_locked();
        self.write(move |c| {
            let mut endpoints = c
                .query(DUE_ENDPOINTS, &[])?
                .iter()
                .map(|r| r.text_at("id"))
                .collect::<Result<Vec<_>>>()?;
            if !endpoints.is_empty() {
                let start = rand::random::<u64>() as usize % endpoints.len();
                endpoints.rotate_left(start);
            }
            let sql = format!(
                "UPDATE deliveries SET locked_until = $1, locked_by = $2
                 WHERE id IN (
                    SELECT id FROM deliveries
                    WHERE endpoint_id = $3 AND status IN ('pending', 'failed')
                      AND next_attempt_at <= $4
                      AND (locked_until IS NULL OR locked_until < $4)
                    ORDER BY next_attempt_at LIMIT $5 {skip})
                 RETURNING id"
            );
            let mut ids = Vec::new();
            for endpoint in endpoints {
                let room = limits.total.saturating_sub(ids.len());
                if room == 0 {
                    break;
                }
                let n = limits.for_endpoint(&endpoint).min(room);
                if n == 0 {
                    continue;
                }
                for r in c.query(
                    &sql,
                    &[
                        (now + lease.ms).into(),
                        lease.node.to_string().into(),
                        endpoint.into(),
                        now.into(),
                        (n as i64).into(),
                    ],
                )? {
                    ids.push(r.text_at("id")?);
                }
            }
            load_tickets(c, &ids)
        })
        .await
    }

    /// Leases one delivery for a manual attempt now, whatever its state.
    /// A disabled endpoint is `Invalid` (enable it first).
    pub async fn lease_for_retry(
        &self,
        account_id: &str,
        id: &str,
        lease: Lease,
    ) -> Result<DeliveryTicket> {
        let (a, id) = (account_id.to_owned(), id.to_owned());
        self.write(move |c| {
            let row = c.query_one(
                "SELECT endpoint_id FROM deliveries WHERE account_id = $1 AND id = $2",
                &[(&a).into(), (&id).into()],
            )?;
            let ep = crate::store::endpoints::load(c, &a, &row.text_at("endpoint_id")?)?;
            if !ep.enabled {
                return Err(StoreError::Invalid(format!(
                    "endpoint {} is disabled; enable it (PATCH enabled: true) before retrying",
                    ep.id
                )));
            }
            let now = now_ms();
            c.execute(
                "UPDATE deliveries SET locked_until = $1, locked_by = $2 WHERE id = $3",
                &[
                    (now + lease.ms).into(),
                    lease.node.to_string().into(),
                    (&id).into(),
                ],
            )?;
            load_tickets(c, std::slice::from_ref(&id))?
                .pop()
                .ok_or(StoreError::NotFound)
        })
        .await
    }

    /// Makes the endpoint's failed and dead deliveries created at or after
    /// `since_ms` due now; answers how many.
    pub async fn recover_deliveries(
        &self,
        account_id: &str,
        endpoint_id: &str,
        since_ms: i64,
    ) -> Result<u64> {
        let (a, id) = (account_id.to_owned(), endpoint_id.to_owned());
        let n = self
            .write(move |c| {
                crate::store::endpoints::load(c, &a, &id)?;
                let now = now_ms();
                let n = c.execute(
                    "UPDATE deliveries SET status = 'pending', next_attempt_at = $1, locked_until = NULL,
                        locked_by = NULL, updated_at = $1
                     WHERE account_id = $2 AND endpoint_id = $3 AND status IN ('failed', 'dead')
                       AND created_at >= $4",
                    &[now.into(), a.into(), id.into(), since_ms.into()],
                )?;
                if n > 0 {
                    c.notify_deliveries()?;
                }
                Ok(n)
            })
            .await?;
        if let Some(sink) = self.delivery_sink() {
            sink.wake();
        }
        Ok(n)
    }
}

/// Enabled endpoints with pending or failed deliveries. The recursive query
/// walks the due index one endpoint at a time (an index probe per endpoint
/// that has any, none per delivery), so a claim costs nothing for the many
/// endpoints with nothing to send, and a million-row backlog is not read.
const DUE_ENDPOINTS: &str = "WITH RECURSIVE due(endpoint_id) AS (
        SELECT (SELECT MIN(endpoint_id) FROM deliveries WHERE status IN ('pending', 'failed'))
        UNION ALL
        SELECT (SELECT MIN(d.endpoint_id) FROM deliveries d
                WHERE d.status IN ('pending', 'failed') AND d.endpoint_id > due.endpoint_id)
        FROM due WHERE due.endpoint_id IS NOT NULL
    )
    SELECT e.id FROM endpoints e JOIN due ON due.endpoint_id = e.id WHERE e.enabled";

/// Tickets for deliveries by id (with their events and endpoints).
fn load_tickets(c: &mut dyn Conn, ids: &[String]) -> Result<Vec<DeliveryTicket>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(200) {
        let marks = (1..=chunk.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let params: Vec<Value> = chunk.iter().map(Value::from).collect();
        let rows = c.query(
            &format!(
                "SELECT d.id AS delivery_id, d.attempts, d.status AS delivery_status,
                        e.id, e.account_id, e.bot_id, e.type, e.conversation_id, e.data, e.created_at,
                        e.trace_id, {EP_COLUMNS}
                 FROM deliveries d
                 JOIN events e ON e.id = d.event_id
                 JOIN endpoints ep ON ep.id = d.endpoint_id
                 WHERE d.id IN ({marks})"
            ),
            &params,
        )?;
        for mut r in rows {
            debug_assert_eq!(r.0.len(), 11 + EP_WIDTH);
            // The event's and the endpoint's columns share names (`id`,
            // `bot_id`, …): each is read from its own part of the row,
            // split off without copying.
            let endpoint = endpoint_from(&r.split_off(11))?;
            let event = event_from(&r.split_off(3))?;
            out.push(DeliveryTicket {
                delivery_id: r.text_at("delivery_id")?,
                attempts: u32::try_from(r.int_at("attempts")?).unwrap_or(u32::MAX),
                final_attempt: r.text_at("delivery_status")? == "dead",
                endpoint: Arc::new(endpoint),
                event: Arc::new(event),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::TestStore;

    fn lease(node: &str) -> Lease {
        Lease {
            node: node.into(),
            ms: 60_000,
        }
    }

    #[tokio::test]
    async fn a_claim_takes_due_unleased_rows_only() {
        let t = TestStore::open().await;
        let ep = t.endpoint("alpha", None).await;
        let before = now_ms() - 1;
        t.publish("alpha", "message.received").await;
        let all = || ClaimLimits::total(100);

        // Not yet due.
        let early = t.store.claim_due(before - 1_000, lease("n1"), all()).await;
        assert!(early.unwrap().is_empty());
        // Due: claimed once, with its endpoint and event.
        let now = now_ms() + 1;
        let got = t.store.claim_due(now, lease("n1"), all()).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].endpoint.id, ep.id);
        assert_eq!(got[0].event.event_type, "message.received");
        assert!(!got[0].final_attempt);
        // Leased: another claimer gets nothing until the lease runs out.
        let again = t.store.claim_due(now, lease("n2"), all()).await.unwrap();
        assert!(again.is_empty());
        let later = t
            .store
            .claim_due(now + 60_001, lease("n2"), all())
            .await
            .unwrap();
        assert_eq!(later.len(), 1);
    }

    #[tokio::test]
    async fn a_claim_respects_each_endpoints_share() {
        let t = TestStore::open().await;
        let a = t.endpoint("alpha", Some(&["a"])).await;
        let b = t.endpoint("alpha", Some(&["b"])).await;
        for _ in 0..3 {
            t.publish("alpha", "a").await;
            t.publish("alpha", "b").await;
        }
        let limits = ClaimLimits {
            total: 4,
            per_endpoint: 2,
            endpoints: HashMap::from([(a.id.clone(), 0)]),
        };
        let got = t
            .store
            .claim_due(now_ms() + 1, lease("n1"), limits)
            .await
            .unwrap();
        assert_eq!(got.len(), 2, "b's share");
        assert!(got.iter().all(|t| t.endpoint.id == b.id));
    }

    #[tokio::test]
    async fn a_retry_needs_an_enabled_endpoint_and_recover_makes_rows_due() {
        let t = TestStore::open().await;
        let ep = t.endpoint("alpha", None).await;
        t.publish("alpha", "x").await;
        let ticket = t
            .store
            .claim_due(now_ms() + 1, lease("n1"), ClaimLimits::total(10))
            .await
            .unwrap()
            .remove(0);
        // Leased already, yet a manual retry takes it.
        let retry = t
            .store
            .lease_for_retry(&t.account, &ticket.delivery_id, lease("api"))
            .await
            .unwrap();
        assert_eq!(retry.delivery_id, ticket.delivery_id);

        t.store
            .update_endpoint(
                &t.account,
                &ep.id,
                crate::store::endpoints::EndpointPatch {
                    enabled: Some(false),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let refused = t
            .store
            .lease_for_retry(&t.account, &ticket.delivery_id, lease("api"))
            .await;
        assert!(
            matches!(&refused, Err(StoreError::Invalid(m)) if m.contains("enable it")),
            "{refused:?}"
        );
        assert!(matches!(
            t.store
                .lease_for_retry(&t.account, "dlv_nope", lease("api"))
                .await,
            Err(StoreError::NotFound)
        ));
        // Nothing failed or dead yet: nothing to recover.
        let n = t
            .store
            .recover_deliveries(&t.account, &ep.id, 0)
            .await
            .unwrap();
        assert_eq!(n, 0);
    }
}
