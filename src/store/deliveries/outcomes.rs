//! Outcomes: recording what attempts did, in batches, and disabling the
//! endpoints that keep failing (or answer 410 Gone).

use super::rows::A_COLUMNS;
use super::{DeliveryTicket, DisabledEndpoint, Lease, NextState, Outcome};
use crate::domain::endpoint::{self, DisablePolicy, Streak};
use crate::store::endpoints::{EP_COLUMNS, endpoint_from, kind};
use crate::store::events::{EventRow, insert_event};
use crate::store::{Conn, Result, Store, now_ms};
use serde_json::json;
use std::collections::HashMap;
use std::sync::LazyLock;

static INSERT_ATTEMPT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO attempts ({A_COLUMNS}, account_id)
         SELECT $1, $2, $3, CAST($4 AS BIGINT), CAST($5 AS BIGINT), $6, CAST($7 AS BIGINT),
                $8, $9, $10, $11, $12
         WHERE EXISTS (SELECT 1 FROM deliveries WHERE id = $2)"
    )
});

fn disable(
    c: &mut dyn Conn,
    endpoint_id: &str,
    reason: &str,
    now: i64,
    delete_hook: bool,
    lease: Option<&Lease>,
    tickets: &mut Vec<DeliveryTicket>,
) -> Result<Option<DisabledEndpoint>> {
    let Some(row) = c.query_opt(
        &format!("SELECT {EP_COLUMNS} FROM endpoints ep WHERE ep.id = $1"),
        &[endpoint_id.into()],
    )?
    else {
        return Ok(None);
    };
    let mut ep = endpoint_from(&row)?;
    if !ep.enabled {
        return Ok(None);
    }
    let deleted = delete_hook && ep.kind == kind::HOOK;
    ep.enabled = false;
    ep.disabled_reason = Some(reason.to_owned());
    ep.disabled_at = Some(now);
    ep.updated_at = now_ms().max(ep.updated_at + 1);
    if deleted {
        crate::store::endpoints::remove(c, &ep.id)?;
    } else {
        crate::store::endpoints::save(c, &ep)?;
    }
    let event = EventRow::new(
        &ep.account_id,
        &ep.bot_id,
        endpoint::ENDPOINT_DISABLED,
        None,
        json!({"endpoint_id": ep.id, "url": ep.url, "reason": reason}).to_string(),
    );
    tickets.extend(insert_event(c, &event, None, lease)?);
    Ok(Some(DisabledEndpoint {
        endpoint: ep,
        deleted,
    }))
}

impl Store {
    /// Writes a batch of outcomes in one transaction: attempts, delivery
    /// states, endpoint failure streaks, and the disables they cause (after
    /// `disable_after_ms` of failing without a success, or at once on 410).
    pub async fn record_outcomes(
        &self,
        outcomes: Vec<Outcome>,
        now: i64,
        disable_after_ms: i64,
    ) -> Result<Vec<DisabledEndpoint>> {
        let lease = self.delivery_lease();
        let (disabled, tickets) = self
            .write_again(move |c| {
                apply_outcomes(c, &outcomes, now, disable_after_ms, lease.as_ref())
            })
            .await?;
        for d in &disabled {
            self.endpoint_changed(&d.endpoint.id, (!d.deleted).then_some(&d.endpoint));
        }
        self.hand_over(tickets);
        Ok(disabled)
    }
}

fn apply_outcomes(
    c: &mut dyn Conn,
    outcomes: &[Outcome],
    now: i64,
    disable_after_ms: i64,
    lease: Option<&Lease>,
) -> Result<(Vec<DisabledEndpoint>, Vec<DeliveryTicket>)> {
    let policy = DisablePolicy {
        after_ms: disable_after_ms,
    };
    let mut streaks: HashMap<&str, Streak> = HashMap::new();
    for o in outcomes {
        // Sent without waiting for answers (pipelined on PostgreSQL).
        match &o.next {
            NextState::Held => c.send(
                "UPDATE deliveries SET locked_until = NULL, locked_by = NULL WHERE id = $1",
                &[(&o.delivery_id).into()],
            )?,
            next => {
                let (status, next_at) = match next {
                    NextState::Succeeded => ("succeeded", None),
                    NextState::RetryAt(t) => ("failed", Some(*t)),
                    _ => ("dead", None),
                };
                let last_error = o.attempt.as_ref().and_then(|a| a.error_message.clone());
                c.send(
                    "UPDATE deliveries SET status = $1, attempts = attempts + 1, next_attempt_at = $2,
                        locked_until = NULL, locked_by = NULL,
                        last_error = CASE WHEN $1 = 'succeeded' THEN last_error ELSE $3 END,
                        updated_at = $4
                     WHERE id = $5",
                    &[
                        status.into(),
                        next_at.into(),
                        last_error.into(),
                        now.into(),
                        (&o.delivery_id).into(),
                    ],
                )?
            }
        };
        let Some(a) = &o.attempt else { continue };
        // No attempt for a delivery that is gone (its endpoint was deleted
        // meanwhile).
        c.send(
            &INSERT_ATTEMPT,
            &[
                (&a.id).into(),
                (&a.delivery_id).into(),
                (&a.endpoint_id).into(),
                a.started_at.into(),
                a.duration_ms.into(),
                (&a.request_headers).into(),
                a.status.into(),
                (&a.response_body).into(),
                a.error_kind.clone().into(),
                a.error_message.clone().into(),
                a.node.clone().into(),
                (&o.account_id).into(),
            ],
        )?;
        streaks.entry(o.endpoint_id.as_str()).or_default().observe(
            a.error_kind.is_none(),
            a.started_at,
            now,
            o.gone,
        );
    }

    let mut disabled = Vec::new();
    let mut tickets = Vec::new();
    let mut ids: Vec<&str> = streaks.keys().copied().collect();
    ids.sort_unstable();
    for id in ids {
        let s = &streaks[id];
        match (s.last_success, s.failing_since) {
            (Some(ok), failing) => {
                c.send(
                    "UPDATE endpoints SET last_success_at = $1, first_failure_at = $2 WHERE id = $3",
                    &[ok.into(), failing.map(|_| now).into(), id.into()],
                )?;
            }
            (None, Some(_)) => {
                c.send(
                    "UPDATE endpoints SET first_failure_at = COALESCE(first_failure_at, $1) WHERE id = $2",
                    &[now.into(), id.into()],
                )?;
            }
            (None, None) => {}
        }
        if s.gone {
            disabled.extend(disable(
                c,
                id,
                endpoint::GONE_REASON,
                now,
                true,
                lease,
                &mut tickets,
            )?);
            continue;
        }
        if s.failing_since.is_some() {
            let first = c
                .query_opt(
                    "SELECT first_failure_at FROM endpoints WHERE id = $1 AND enabled",
                    &[id.into()],
                )?
                .map(|r| r.opt_int_at("first_failure_at"))
                .transpose()?
                .flatten();
            if let Some(reason) = policy.verdict(first, now) {
                disabled.extend(disable(c, id, &reason, now, false, lease, &mut tickets)?);
            }
        }
    }
    Ok((disabled, tickets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::new_id;
    use crate::store::deliveries::{AttemptRow, ClaimLimits, DeliveryFilter};
    use crate::store::testing::TestStore;
    use crate::store::{PageRequest, StoreError};

    async fn claim_one(t: &TestStore) -> DeliveryTicket {
        let lease = Lease {
            node: "n1".into(),
            ms: 60_000,
        };
        t.store
            .claim_due(now_ms() + 1, lease, ClaimLimits::total(1))
            .await
            .unwrap()
            .pop()
            .expect("a due delivery")
    }

    fn outcome(ticket: &DeliveryTicket, failed: bool, next: NextState) -> Outcome {
        Outcome {
            delivery_id: ticket.delivery_id.clone(),
            endpoint_id: ticket.endpoint.id.clone(),
            account_id: ticket.endpoint.account_id.clone(),
            attempt: Some(AttemptRow {
                id: new_id("att"),
                delivery_id: ticket.delivery_id.clone(),
                endpoint_id: ticket.endpoint.id.clone(),
                started_at: now_ms(),
                duration_ms: 5,
                request_headers: "{}".into(),
                status: Some(if failed { 500 } else { 200 }),
                response_body: String::new(),
                error_kind: failed.then(|| "status".to_owned()),
                error_message: failed.then(|| "HTTP 500".to_owned()),
                node: Some("n1".into()),
            }),
            next,
            gone: false,
        }
    }

    const DAY: i64 = 86_400_000;

    #[tokio::test]
    async fn outcomes_move_a_delivery_through_its_states() {
        let t = TestStore::open().await;
        t.endpoint("alpha", None).await;
        t.publish("alpha", "x").await;
        let ticket = claim_one(&t).await;
        let id = ticket.delivery_id.clone();
        let retry_at = now_ms() + 5_000;
        let now = now_ms();

        t.store
            .record_outcomes(
                vec![outcome(&ticket, true, NextState::RetryAt(retry_at))],
                now,
                DAY,
            )
            .await
            .unwrap();
        let d = t.store.get_delivery(&t.account, &id).await.unwrap();
        assert_eq!((d.status.as_str(), d.attempts), ("failed", 1));
        assert_eq!(d.next_attempt_at, Some(retry_at));
        assert_eq!(d.last_error.as_deref(), Some("HTTP 500"));

        // Held: the lease goes, nothing else changes.
        let mut held = outcome(&ticket, false, NextState::Held);
        held.attempt = None;
        t.store.record_outcomes(vec![held], now, DAY).await.unwrap();
        let d = t.store.get_delivery(&t.account, &id).await.unwrap();
        assert_eq!((d.status.as_str(), d.attempts), ("failed", 1));

        t.store
            .record_outcomes(
                vec![outcome(&ticket, false, NextState::Succeeded)],
                now,
                DAY,
            )
            .await
            .unwrap();
        let d = t.store.get_delivery(&t.account, &id).await.unwrap();
        assert_eq!((d.status.as_str(), d.attempts), ("succeeded", 2));
        assert_eq!(d.next_attempt_at, None);
        assert_eq!(d.last_error.as_deref(), Some("HTTP 500"), "kept on success");
        let attempts = t
            .store
            .list_attempts(
                &t.account,
                &id,
                PageRequest {
                    limit: 10,
                    after: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(attempts.items.len(), 2);
        let ep = t
            .store
            .get_endpoint(&t.account, &ticket.endpoint.id)
            .await
            .unwrap();
        assert!(ep.last_success_at.is_some());
        assert_eq!(ep.first_failure_at, None, "a success ends the streak");
    }

    #[tokio::test]
    async fn failing_past_the_policy_disables_and_announces_it() {
        let t = TestStore::open().await;
        let ep = t.endpoint("alpha", None).await;
        let watcher = t
            .endpoint("beta", Some(&[endpoint::ENDPOINT_DISABLED]))
            .await;
        t.publish("alpha", "x").await;
        let ticket = claim_one(&t).await;
        let now = now_ms();

        let fail = |at| outcome(&ticket, true, NextState::RetryAt(at));
        let disabled = t
            .store
            .record_outcomes(vec![fail(now + 1)], now, DAY)
            .await
            .unwrap();
        assert!(disabled.is_empty(), "the streak has just begun");

        let later = now + DAY;
        let disabled = t
            .store
            .record_outcomes(vec![fail(later + 1)], later, DAY)
            .await
            .unwrap();
        assert_eq!(disabled.len(), 1);
        assert!(!disabled[0].deleted);
        let ep = t.store.get_endpoint(&t.account, &ep.id).await.unwrap();
        assert!(!ep.enabled);
        assert_eq!(
            ep.disabled_reason.as_deref(),
            Some("no successful delivery for 1d 0h since the first failure")
        );
        // The announcement reached the other bot's endpoint that asked for it.
        let to_watcher = t
            .store
            .list_deliveries(
                &t.account,
                DeliveryFilter {
                    endpoint_id: Some(watcher.id.clone()),
                    ..Default::default()
                },
                PageRequest {
                    limit: 10,
                    after: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(to_watcher.items.len(), 1);
        assert_eq!(to_watcher.items[0].event_type, endpoint::ENDPOINT_DISABLED);
    }

    #[tokio::test]
    async fn a_hook_answering_gone_is_deleted_at_once() {
        let t = TestStore::open().await;
        let hook = t.endpoint_of_kind("alpha", None, kind::HOOK).await;
        t.publish("alpha", "x").await;
        let ticket = claim_one(&t).await;
        let mut gone = outcome(&ticket, true, NextState::Dead);
        gone.gone = true;
        let disabled = t
            .store
            .record_outcomes(vec![gone], now_ms(), DAY)
            .await
            .unwrap();
        assert_eq!(disabled.len(), 1);
        assert!(disabled[0].deleted);
        assert_eq!(
            disabled[0].endpoint.disabled_reason.as_deref(),
            Some(endpoint::GONE_REASON)
        );
        assert!(matches!(
            t.store.get_endpoint(&t.account, &hook.id).await,
            Err(StoreError::NotFound)
        ));
    }
}
