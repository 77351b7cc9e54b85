//! Queries for the API, the health page and chart, and `/metrics`: lists
//! of deliveries and attempts, an endpoint's figures, and the backlog.

use super::rows::{A_COLUMNS, D_COLUMNS, attempt_from, delivery_from};
use super::{AttemptRow, DeliveryRow};
use crate::store::{Page, PageRequest, Result, Store};

/// Filters for listing deliveries.
#[derive(Clone, Debug, Default)]
pub struct DeliveryFilter {
    /// Only this endpoint's.
    pub endpoint_id: Option<String>,
    /// Only this event's.
    pub event_id: Option<String>,
    /// Only in this status.
    pub status: Option<String>,
    /// Only for events of this type.
    pub event_type: Option<String>,
    /// Only those created at or after this time (Unix ms).
    pub since: Option<i64>,
    /// Only those created before this time (Unix ms).
    pub until: Option<i64>,
    /// Only this bot's.
    pub bot_id: Option<String>,
}

/// Attempt figures behind an endpoint's health.
#[derive(Clone, Debug, Default)]
pub struct HealthFigures {
    /// Attempts in the last 24 h.
    pub attempts_24h: i64,
    /// Of which succeeded.
    pub succeeded_24h: i64,
    /// The last (up to) 100 attempts, newest first.
    pub recent: Vec<AttemptRow>,
}

/// One hour of an endpoint's attempts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HourFigures {
    /// Hours before the current one: 0 is the hour ending now.
    pub hours_ago: i64,
    /// Attempts started in that hour.
    pub attempts: i64,
    /// Of which succeeded.
    pub succeeded: i64,
    /// Mean attempt duration, milliseconds.
    pub mean_ms: i64,
    /// Slowest attempt, milliseconds.
    pub max_ms: i64,
}

impl Store {
    /// Deliveries of the account, newest first.
    pub async fn list_deliveries(
        &self,
        account_id: &str,
        filter: DeliveryFilter,
        page: PageRequest,
    ) -> Result<Page<DeliveryRow>> {
        let sql = format!(
            "SELECT {D_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id
             WHERE d.account_id = $1
               AND (CAST($2 AS TEXT) IS NULL OR d.endpoint_id = $2)
               AND (CAST($3 AS TEXT) IS NULL OR d.event_id = $3)
               AND (CAST($4 AS TEXT) IS NULL OR d.status = $4)
               AND (CAST($5 AS TEXT) IS NULL OR e.type = $5)
               AND (CAST($6 AS BIGINT) IS NULL OR d.created_at >= $6)
               AND (CAST($7 AS BIGINT) IS NULL OR d.created_at < $7)
               AND (CAST($8 AS TEXT) IS NULL OR d.bot_id = $8)
               AND (CAST($9 AS TEXT) IS NULL OR d.id < $9)
             ORDER BY d.id DESC LIMIT $10"
        );
        let params = vec![
            account_id.into(),
            filter.endpoint_id.into(),
            filter.event_id.into(),
            filter.status.into(),
            filter.event_type.into(),
            filter.since.into(),
            filter.until.into(),
            filter.bot_id.into(),
            page.after.clone().into(),
        ];
        self.read_page(sql, params, page, delivery_from, |d| d.id.clone())
            .await
    }

    /// One delivery of the account.
    pub async fn get_delivery(&self, account_id: &str, id: &str) -> Result<DeliveryRow> {
        let (a, id) = (account_id.to_owned(), id.to_owned());
        self.read(move |c| {
            delivery_from(&c.query_one(
                &format!(
                    "SELECT {D_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id
                     WHERE d.account_id = $1 AND d.id = $2"
                ),
                &[a.into(), id.into()],
            )?)
        })
        .await
    }

    /// Attempts of a delivery, newest first.
    pub async fn list_attempts(
        &self,
        account_id: &str,
        delivery_id: &str,
        page: PageRequest,
    ) -> Result<Page<AttemptRow>> {
        let sql = format!(
            "SELECT {A_COLUMNS} FROM attempts
             WHERE account_id = $1 AND delivery_id = $2
               AND (CAST($3 AS TEXT) IS NULL OR id < $3)
             ORDER BY id DESC LIMIT $4"
        );
        let params = vec![
            account_id.into(),
            delivery_id.into(),
            page.after.clone().into(),
        ];
        self.read_page(sql, params, page, attempt_from, |a| a.id.clone())
            .await
    }

    /// Attempt figures for an endpoint's health, as of `now`.
    pub async fn endpoint_health(
        &self,
        account_id: &str,
        endpoint_id: &str,
        now: i64,
    ) -> Result<HealthFigures> {
        let (a, id) = (account_id.to_owned(), endpoint_id.to_owned());
        self.read(move |c| {
            let day = c.query_one(
                "SELECT COUNT(*) AS attempts,
                        COALESCE(SUM(CASE WHEN error_kind IS NULL THEN 1 ELSE 0 END), 0) AS succeeded
                 FROM attempts WHERE account_id = $1 AND endpoint_id = $2 AND started_at >= $3",
                &[(&a).into(), (&id).into(), (now - 86_400_000).into()],
            )?;
            let recent = c
                .query(
                    &format!(
                        "SELECT {A_COLUMNS} FROM attempts WHERE account_id = $1 AND endpoint_id = $2
                         ORDER BY started_at DESC, id DESC LIMIT 100"
                    ),
                    &[a.into(), id.into()],
                )?
                .iter()
                .map(attempt_from)
                .collect::<Result<Vec<_>>>()?;
            Ok(HealthFigures {
                attempts_24h: day.int_at("attempts")?,
                succeeded_24h: day.int_at("succeeded")?,
                recent,
            })
        })
        .await
    }
}

impl Store {
    /// An endpoint's attempts over the `hours` hours before `now`, one entry
    /// per hour that had any (attempts stamped after `now`, by another
    /// node's clock, count in the current hour).
    pub async fn endpoint_hours(
        &self,
        account_id: &str,
        endpoint_id: &str,
        now: i64,
        hours: i64,
    ) -> Result<Vec<HourFigures>> {
        let (a, id) = (account_id.to_owned(), endpoint_id.to_owned());
        self.read(move |c| {
            let rows = c.query(
                "SELECT ($3 - started_at) / 3600000 AS h, COUNT(*) AS attempts,
                        COALESCE(SUM(CASE WHEN error_kind IS NULL THEN 1 ELSE 0 END), 0) AS succeeded,
                        CAST(COALESCE(AVG(duration_ms), 0) AS BIGINT) AS mean_ms,
                        COALESCE(MAX(duration_ms), 0) AS max_ms
                 FROM attempts
                 WHERE account_id = $1 AND endpoint_id = $2 AND started_at > $4
                 GROUP BY h ORDER BY h",
                &[
                    a.into(),
                    id.into(),
                    now.into(),
                    (now - hours * 3_600_000).into(),
                ],
            )?;
            rows.iter()
                .map(|r| {
                    Ok(HourFigures {
                        hours_ago: r.int_at("h")?.max(0),
                        attempts: r.int_at("attempts")?,
                        succeeded: r.int_at("succeeded")?,
                        mean_ms: r.int_at("mean_ms")?,
                        max_ms: r.int_at("max_ms")?,
                    })
                })
                .collect()
        })
        .await
    }
}

/// The delivery backlog as `/metrics` shows it: a total, and the endpoints
/// with the most waiting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Deliveries pending or failed-and-retrying, all endpoints.
    pub pending: i64,
    /// The earliest `next_attempt_at` among them (Unix ms).
    pub earliest_ms: Option<i64>,
    /// The endpoints with the largest backlogs, largest first.
    pub top: Vec<EndpointBacklog>,
}

/// One endpoint's share of the [`Backlog`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointBacklog {
    /// The endpoint.
    pub endpoint_id: String,
    /// Its deliveries pending or failed-and-retrying.
    pub pending: i64,
    /// The earliest `next_attempt_at` among them (Unix ms).
    pub earliest_ms: Option<i64>,
}

impl Store {
    /// The backlog: a total and the `top` endpoints with the most deliveries
    /// waiting. Both read the due index only; the caller caches the answer
    /// so that frequent scrapes stay cheap.
    pub async fn backlog(&self, top: usize) -> Result<Backlog> {
        let top = i64::try_from(top).unwrap_or(i64::MAX);
        self.read(move |c| {
            let all = c.query_one(
                "SELECT COUNT(*) AS pending, MIN(next_attempt_at) AS earliest FROM deliveries
                 WHERE status IN ('pending', 'failed')",
                &[],
            )?;
            let rows = c.query(
                "SELECT endpoint_id, COUNT(*) AS n, MIN(next_attempt_at) AS earliest FROM deliveries
                 WHERE status IN ('pending', 'failed')
                 GROUP BY endpoint_id ORDER BY n DESC, endpoint_id LIMIT $1",
                &[top.into()],
            )?;
            Ok(Backlog {
                pending: all.int_at("pending")?,
                earliest_ms: all.opt_int_at("earliest")?,
                top: rows
                    .iter()
                    .map(|r| {
                        Ok(EndpointBacklog {
                            endpoint_id: r.text_at("endpoint_id")?,
                            pending: r.int_at("n")?,
                            earliest_ms: r.opt_int_at("earliest")?,
                        })
                    })
                    .collect::<Result<_>>()?,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::ids::new_id;
    use crate::store::deliveries::{AttemptRow, ClaimLimits, Lease, NextState, Outcome};
    use crate::store::now_ms;
    use crate::store::testing::TestStore;

    #[tokio::test]
    async fn health_and_hours_count_attempts_by_outcome() {
        let t = TestStore::open().await;
        let ep = t.endpoint("alpha", None).await;
        for _ in 0..3 {
            t.publish("alpha", "x").await;
        }
        let now = now_ms();
        let lease = Lease {
            node: "n1".into(),
            ms: 60_000,
        };
        let tickets = t
            .store
            .claim_due(now + 1, lease, ClaimLimits::total(10))
            .await
            .unwrap();
        assert_eq!(tickets.len(), 3);
        let outcomes = tickets
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let failed = i == 0;
                Outcome {
                    delivery_id: k.delivery_id.clone(),
                    endpoint_id: k.endpoint.id.clone(),
                    account_id: t.account.clone(),
                    attempt: Some(AttemptRow {
                        id: new_id("att"),
                        delivery_id: k.delivery_id.clone(),
                        endpoint_id: k.endpoint.id.clone(),
                        // Two hours ago, and now.
                        started_at: if failed { now - 7_200_000 } else { now },
                        duration_ms: 10 * (i as i64 + 1),
                        request_headers: "{}".into(),
                        status: Some(200),
                        response_body: String::new(),
                        error_kind: failed.then(|| "timeout".to_owned()),
                        error_message: None,
                        node: None,
                    }),
                    next: if failed {
                        NextState::Dead
                    } else {
                        NextState::Succeeded
                    },
                    gone: false,
                }
            })
            .collect();
        t.store
            .record_outcomes(outcomes, now, 86_400_000)
            .await
            .unwrap();

        let h = t
            .store
            .endpoint_health(&t.account, &ep.id, now)
            .await
            .unwrap();
        assert_eq!((h.attempts_24h, h.succeeded_24h), (3, 2));
        assert_eq!(h.recent.len(), 3);
        assert_eq!(
            h.recent[2].error_kind.as_deref(),
            Some("timeout"),
            "oldest last"
        );

        let hours = t
            .store
            .endpoint_hours(&t.account, &ep.id, now, 24)
            .await
            .unwrap();
        assert_eq!(hours.len(), 2, "{hours:?}");
        assert_eq!(
            (hours[0].hours_ago, hours[0].attempts, hours[0].succeeded),
            (0, 2, 2)
        );
        assert_eq!((hours[0].mean_ms, hours[0].max_ms), (25, 30));
        assert_eq!(
            (hours[1].hours_ago, hours[1].attempts, hours[1].succeeded),
            (2, 1, 0)
        );
    }
}
