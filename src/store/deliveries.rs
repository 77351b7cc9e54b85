//! Deliveries and attempts: the durable side of the delivery engine.
//!
//! * **Fan-out** ([`fan_out`]) runs inside the transaction that writes an
//!   event: one `deliveries` row per enabled endpoint that wants the event.
//!   When this process runs a delivery engine the rows are written already
//!   leased to it and handed to it in memory once the commit is durable (the
//!   hot path); otherwise they are written due now and unleased, for any
//!   worker's claim loop.
//! * **Claims** ([`Store::claim_due`]) lease due rows whose lease is absent
//!   or expired, so retries, restarts and other nodes share one path; on
//!   PostgreSQL concurrent claimers skip each other's rows. A claim takes
//!   each endpoint's rows through its own slice of the due index and only
//!   as many as the claimer allows that endpoint ([`ClaimLimits`]), so a
//!   backlog of millions for one endpoint costs the others nothing.
//! * **Outcomes** ([`Store::record_outcomes`]) are written in batches: the
//!   attempt, the delivery's new state, the endpoint's failure streak, and
//!   any disable (with its `endpoint.disabled` event) in one transaction.
//!
//! Nothing here runs while an HTTP request is in flight: leases, not open
//! transactions, keep two workers off one delivery, and a delivery is
//! at-least-once (a worker that dies after sending but before recording
//! sends again after its lease expires).

use super::endpoints::{EP_COLUMNS, EP_WIDTH, EndpointRow, endpoint_from, kind};
use super::events::{EventRow, event_from, insert_event};
use super::{Conn, Page, PageRequest, Result, Row, Store, StoreError, Value, now_ms};
use crate::domain::ids::new_id;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

/// A worker's hold on the deliveries it writes or claims.
#[derive(Clone, Debug)]
pub struct Lease {
    /// The node holding it (`locked_by`).
    pub node: Arc<str>,
    /// How long a hold lasts, ms.
    pub ms: i64,
}

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

/// One delivery ready to be attempted: everything the sender needs, so the
/// hot path reads nothing back from the database.
#[derive(Clone, Debug)]
pub struct DeliveryTicket {
    /// `dlv_…`
    pub delivery_id: String,
    /// Attempts already made.
    pub attempts: u32,
    /// Whether this attempt is the last whatever the schedule: a manual
    /// retry of a dead delivery, or a test ping. A failure makes it `dead`.
    pub final_attempt: bool,
    /// The endpoint as it was when the ticket was made.
    pub endpoint: Arc<EndpointRow>,
    /// The event to deliver.
    pub event: Arc<EventRow>,
}

/// Where committed deliveries go: the delivery engine of this process.
pub trait DeliverySink: Send + Sync {
    /// The lease new deliveries are written under; `None` writes them
    /// unleased and due now (an API-only node).
    fn lease(&self) -> Option<Lease>;
    /// Takes deliveries whose rows are durable.
    fn hand_over(&self, tickets: Vec<DeliveryTicket>);
    /// An endpoint changed (`None`: deleted).
    fn endpoint_changed(&self, id: &str, row: Option<Arc<EndpointRow>>);
    /// Deliveries fell due outside the hot path (a recover, a re-enable).
    fn wake(&self);
}

impl Store {
    /// Connects (or with `None` disconnects) this process's delivery engine.
    pub fn set_delivery_sink(&self, sink: Option<Arc<dyn DeliverySink>>) {
        *self.sink.write().expect("sink lock") = sink;
    }

    /// Disconnects `sink` if it is the one connected (an engine stopping
    /// must not disconnect its successor).
    pub fn remove_delivery_sink(&self, sink: &Arc<dyn DeliverySink>) {
        let mut current = self.sink.write().expect("sink lock");
        if current
            .as_ref()
            .is_some_and(|c| std::ptr::addr_eq(Arc::as_ptr(c), Arc::as_ptr(sink)))
        {
            *current = None;
        }
    }

    pub(super) fn delivery_sink(&self) -> Option<Arc<dyn DeliverySink>> {
        self.sink.read().expect("sink lock").clone()
    }

    /// The lease new deliveries are written under.
    pub(super) fn delivery_lease(&self) -> Option<Lease> {
        self.delivery_sink().and_then(|s| s.lease())
    }

    /// Hands committed deliveries to the engine (dropped when there is none:
    /// their rows are due and unleased, or leased and will fall due).
    pub(super) fn hand_over(&self, tickets: Vec<DeliveryTicket>) {
        if tickets.is_empty() {
            return;
        }
        if let Some(sink) = self.delivery_sink() {
            sink.hand_over(tickets);
        }
    }
}

static FAN_OUT_BOT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {EP_COLUMNS} FROM endpoints ep
         WHERE ep.account_id = $1 AND ep.bot_id = $2 AND ep.enabled"
    )
});

static FAN_OUT_ACCOUNT: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {EP_COLUMNS} FROM endpoints ep WHERE ep.account_id = $1 AND ep.enabled")
});

/// Inserts one delivery per enabled endpoint that wants `event`, inside the
/// event's transaction, and returns them as tickets.
///
/// `endpoint.disabled` goes to every endpoint of the account that names it
/// explicitly, and to the disabled endpoint's own bot's endpoints that take
/// every type; other events go to their bot's endpoints only.
pub(super) fn fan_out(
    c: &mut dyn Conn,
    event: &EventRow,
    lease: Option<&Lease>,
) -> Result<Vec<DeliveryTicket>> {
    let account_wide = event.event_type == "endpoint.disabled";
    let rows = if account_wide {
        c.query(&FAN_OUT_ACCOUNT, &[(&event.account_id).into()])?
    } else {
        c.query(
            &FAN_OUT_BOT,
            &[(&event.account_id).into(), (&event.bot_id).into()],
        )?
    };
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let event_arc = Arc::new(event.clone());
    let mut tickets = Vec::new();
    for row in &rows {
        let ep = endpoint_from(row, 0)?;
        let wanted = if ep.bot_id == event.bot_id {
            ep.wants(&event.event_type)
        } else {
            ep.event_types
                .as_ref()
                .is_some_and(|t| t.contains(&event.event_type))
        };
        if !wanted {
            continue;
        }
        let id = new_id("dlv");
        insert_delivery(c, &id, &ep, event, lease)?;
        tickets.push(DeliveryTicket {
            delivery_id: id,
            attempts: 0,
            final_attempt: false,
            endpoint: Arc::new(ep),
            event: event_arc.clone(),
        });
    }
    if lease.is_none() && !tickets.is_empty() {
        // Written for any worker to claim: wake those in other processes.
        c.notify_deliveries()?;
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
    c.execute(
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
    )?;
    Ok(())
}

/// A delivery as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryRow {
    /// `dlv_…`
    pub id: String,
    /// The bot.
    pub bot_id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// The event.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// `pending`, `failed`, `succeeded` or `dead`.
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// When the next attempt is due (Unix ms), while one is.
    pub next_attempt_at: Option<i64>,
    /// The last failure, in words.
    pub last_error: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// Delivery columns, read from `deliveries d JOIN events e`.
const D_COLUMNS: &str = "d.id, d.bot_id, d.endpoint_id, d.event_id, d.status, d.attempts, d.next_attempt_at, d.last_error, d.created_at, d.updated_at, e.type";

fn delivery_from(r: &Row) -> Result<DeliveryRow> {
    Ok(DeliveryRow {
        id: r.text(0)?,
        bot_id: r.text(1)?,
        endpoint_id: r.text(2)?,
        event_id: r.text(3)?,
        status: r.text(4)?,
        attempts: r.int(5)?,
        next_attempt_at: r.opt_int(6)?,
        last_error: r.opt_text(7)?,
        created_at: r.int(8)?,
        updated_at: r.int(9)?,
        event_type: r.text(10)?,
    })
}

/// An attempt as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptRow {
    /// `att_…`
    pub id: String,
    /// The delivery.
    pub delivery_id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// Unix ms.
    pub started_at: i64,
    /// How long it took.
    pub duration_ms: i64,
    /// Request headers, JSON object, secrets redacted.
    pub request_headers: String,
    /// HTTP status, when an answer came.
    pub status: Option<i64>,
    /// The first 16 KiB of the answer.
    pub response_body: String,
    /// `timeout`, `connect`, `dns`, `blocked`, `tls`, `status`, `invalid`; `None` on success.
    pub error_kind: Option<String>,
    /// The failure in words.
    pub error_message: Option<String>,
    /// The node that made it: its delivery engine's id (`node_…`), or `api`
    /// for a send the API made itself; `None` before it was recorded.
    pub node: Option<String>,
}

const A_COLUMNS: &str = "id, delivery_id, endpoint_id, started_at, duration_ms, request_headers, status, response_body, error_kind, error_message, node";

fn attempt_from(r: &Row) -> Result<AttemptRow> {
    Ok(AttemptRow {
        id: r.text(0)?,
        delivery_id: r.text(1)?,
        endpoint_id: r.text(2)?,
        started_at: r.int(3)?,
        duration_ms: r.int(4)?,
        request_headers: r.text(5)?,
        status: r.opt_int(6)?,
        response_body: r.text(7)?,
        error_kind: r.opt_text(8)?,
        error_message: r.opt_text(9)?,
        node: r.opt_text(10)?,
    })
}

/// What a delivery becomes after an attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum NextState {
    /// A 2xx: done.
    Succeeded,
    /// Failed; try again at this time (Unix ms).
    RetryAt(i64),
    /// Failed and out of attempts.
    Dead,
    /// Not attempted (its endpoint is disabled or gone): release the lease,
    /// keep the state.
    Held,
}

/// The result of one attempt, ready to be recorded.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The delivery.
    pub delivery_id: String,
    /// Its endpoint.
    pub endpoint_id: String,
    /// Its account.
    pub account_id: String,
    /// The attempt, unless the delivery was held.
    pub attempt: Option<AttemptRow>,
    /// The delivery's new state.
    pub next: NextState,
    /// The receiver answered 410 Gone: disable the endpoint now (delete it
    /// when it is a REST hook).
    pub gone: bool,
}

/// An endpoint a batch of outcomes disabled (or deleted).
#[derive(Clone, Debug)]
pub struct DisabledEndpoint {
    /// The endpoint as it now is.
    pub endpoint: EndpointRow,
    /// Whether it was deleted (a REST hook answering 410).
    pub deleted: bool,
}

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
    let mut ep = endpoint_from(&row, 0)?;
    if !ep.enabled {
        return Ok(None);
    }
    let deleted = delete_hook && ep.kind == kind::HOOK;
    ep.enabled = false;
    ep.disabled_reason = Some(reason.to_owned());
    ep.disabled_at = Some(now);
    ep.updated_at = now_ms().max(ep.updated_at + 1);
    if deleted {
        super::endpoints::remove(c, &ep.id)?;
    } else {
        super::endpoints::save(c, &ep)?;
    }
    let event = EventRow::new(
        &ep.account_id,
        &ep.bot_id,
        "endpoint.disabled",
        None,
        json!({"endpoint_id": ep.id, "url": ep.url, "reason": reason}).to_string(),
    );
    tickets.extend(insert_event(c, &event, None, lease)?);
    Ok(Some(DisabledEndpoint {
        endpoint: ep,
        deleted,
    }))
}

/// How an endpoint fared in one batch.
#[derive(Default)]
struct Streak {
    last_success: Option<i64>,
    failing_since: Option<i64>,
    gone: bool,
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
                .map(|r| r.text(0))
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
                    ids.push(r.text(0)?);
                }
            }
            load_tickets(c, &ids)
        })
        .await
    }

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
            .write(move |c| apply_outcomes(c, &outcomes, now, disable_after_ms, lease.as_ref()))
            .await?;
        for d in &disabled {
            self.endpoint_changed(&d.endpoint.id, (!d.deleted).then_some(&d.endpoint));
        }
        self.hand_over(tickets);
        Ok(disabled)
    }

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
            let ep = super::endpoints::load(c, &a, &row.text(0)?)?;
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
            let ep = super::endpoints::load(c, &a, &id)?;
            let event = EventRow::new(
                &a,
                &ep.bot_id,
                "webhook.test",
                None,
                json!({"message": "A test event from botwire: if you can read this, the endpoint works."})
                    .to_string(),
            );
            super::events::insert_event_only(c, &event)?;
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
                super::endpoints::load(c, &a, &id)?;
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
                "SELECT COUNT(*), COALESCE(SUM(CASE WHEN error_kind IS NULL THEN 1 ELSE 0 END), 0)
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
                attempts_24h: day.int(0)?,
                succeeded_24h: day.int(1)?,
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
                "SELECT ($3 - started_at) / 3600000 AS h, COUNT(*),
                        COALESCE(SUM(CASE WHEN error_kind IS NULL THEN 1 ELSE 0 END), 0),
                        CAST(COALESCE(AVG(duration_ms), 0) AS BIGINT), COALESCE(MAX(duration_ms), 0)
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
                        hours_ago: r.int(0)?.max(0),
                        attempts: r.int(1)?,
                        succeeded: r.int(2)?,
                        mean_ms: r.int(3)?,
                        max_ms: r.int(4)?,
                    })
                })
                .collect()
        })
        .await
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
                "SELECT d.id, d.attempts, d.status,
                        e.id, e.account_id, e.bot_id, e.type, e.conversation_id, e.data, e.created_at,
                        e.trace_id, {EP_COLUMNS}
                 FROM deliveries d
                 JOIN events e ON e.id = d.event_id
                 JOIN endpoints ep ON ep.id = d.endpoint_id
                 WHERE d.id IN ({marks})"
            ),
            &params,
        )?;
        for r in &rows {
            let event = event_from(&Row(r.0[3..11].to_vec()))?;
            let endpoint = endpoint_from(r, 11)?;
            debug_assert_eq!(r.0.len(), 11 + EP_WIDTH);
            out.push(DeliveryTicket {
                delivery_id: r.text(0)?,
                attempts: u32::try_from(r.int(1)?).unwrap_or(u32::MAX),
                final_attempt: r.text(2)? == "dead",
                endpoint: Arc::new(endpoint),
                event: Arc::new(event),
            });
        }
    }
    Ok(out)
}

fn apply_outcomes(
    c: &mut dyn Conn,
    outcomes: &[Outcome],
    now: i64,
    disable_after_ms: i64,
    lease: Option<&Lease>,
) -> Result<(Vec<DisabledEndpoint>, Vec<DeliveryTicket>)> {
    let mut streaks: HashMap<&str, Streak> = HashMap::new();
    for o in outcomes {
        let updated = match &o.next {
            NextState::Held => c.execute(
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
                c.execute(
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
        if updated == 0 {
            // The delivery is gone (its endpoint was deleted meanwhile).
            continue;
        }
        c.execute(
            &format!(
                "INSERT INTO attempts ({A_COLUMNS}, account_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ),
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
        let s = streaks.entry(o.endpoint_id.as_str()).or_default();
        if a.error_kind.is_none() {
            s.last_success = Some(a.started_at);
            s.failing_since = None;
        } else if s.failing_since.is_none() {
            s.failing_since = Some(now);
        }
        s.gone |= o.gone;
    }

    let mut disabled = Vec::new();
    let mut tickets = Vec::new();
    let mut ids: Vec<&str> = streaks.keys().copied().collect();
    ids.sort_unstable();
    for id in ids {
        let s = &streaks[id];
        match (s.last_success, s.failing_since) {
            (Some(ok), failing) => {
                c.execute(
                    "UPDATE endpoints SET last_success_at = $1, first_failure_at = $2 WHERE id = $3",
                    &[ok.into(), failing.map(|_| now).into(), id.into()],
                )?;
            }
            (None, Some(_)) => {
                c.execute(
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
                "the endpoint answered 410 Gone",
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
                .map(|r| r.opt_int(0))
                .transpose()?
                .flatten();
            if let Some(first) = first
                && now - first >= disable_after_ms
            {
                let reason = format!(
                    "no successful delivery for {} since the first failure",
                    human_span(now - first)
                );
                disabled.extend(disable(c, id, &reason, now, false, lease, &mut tickets)?);
            }
        }
    }
    Ok((disabled, tickets))
}

/// `5d 2h`, `3h 10m`, `42s`: a span for messages.
fn human_span(ms: i64) -> String {
    let s = ms / 1000;
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {}s", s % 60)
    } else {
        format!("{s}s")
    }
}

/// Rows per multi-row INSERT in [`Store::insert_backlog`] (8 parameters a
/// row stays far below both backends' parameter limits).
const BACKLOG_ROWS_PER_STATEMENT: usize = 200;

impl Store {
    /// Writes `n` events of `event_type` carrying `data` for the endpoint's
    /// bot, each with one delivery to that endpoint alone, due now and
    /// unleased (as an API-only node writes them), `per_commit` events per
    /// transaction. Answers how many were written.
    ///
    /// For load tests and `botwire bench backlog`: the fast way to build a
    /// large backlog (multi-row inserts in big transactions instead of one
    /// publish per event). No other endpoint gets a delivery.
    pub async fn insert_backlog(
        &self,
        account_id: &str,
        endpoint_id: &str,
        event_type: &str,
        data: &str,
        n: u64,
        per_commit: usize,
    ) -> Result<u64> {
        let (a, id) = (account_id.to_owned(), endpoint_id.to_owned());
        let ep = self
            .read(move |c| super::endpoints::load(c, &a, &id))
            .await?;
        let per_commit = per_commit.max(1) as u64;
        let mut written = 0;
        while written < n {
            let count = (n - written).min(per_commit) as usize;
            let (ep, event_type, data) = (ep.clone(), event_type.to_owned(), data.to_owned());
            self.write(move |c| insert_backlog_chunk(c, &ep, &event_type, &data, count))
                .await?;
            written += count as u64;
        }
        Ok(written)
    }
}

fn insert_backlog_chunk(
    c: &mut dyn Conn,
    ep: &EndpointRow,
    event_type: &str,
    data: &str,
    count: usize,
) -> Result<()> {
    let marks = |rows: usize, width: usize| {
        (0..rows)
            .map(|r| {
                let cols = (1..=width)
                    .map(|k| format!("${}", r * width + k))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("({cols})")
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut left = count;
    while left > 0 {
        let rows = left.min(BACKLOG_ROWS_PER_STATEMENT);
        left -= rows;
        let now = now_ms();
        let mut events = Vec::with_capacity(rows * 6);
        let mut deliveries = Vec::with_capacity(rows * 8);
        for _ in 0..rows {
            let event_id = new_id("evt");
            events.extend([
                Value::from(&event_id),
                (&ep.account_id).into(),
                (&ep.bot_id).into(),
                event_type.into(),
                data.into(),
                now.into(),
            ]);
            deliveries.extend([
                Value::from(new_id("dlv")),
                (&ep.account_id).into(),
                (&ep.bot_id).into(),
                (&ep.id).into(),
                event_id.into(),
                now.into(),
                now.into(),
                now.into(),
            ]);
        }
        c.execute(
            &format!(
                "INSERT INTO events (id, account_id, bot_id, type, data, created_at) VALUES {}",
                marks(rows, 6)
            ),
            &events,
        )?;
        c.execute(
            &format!(
                "INSERT INTO deliveries (id, account_id, bot_id, endpoint_id, event_id, next_attempt_at,
                    created_at, updated_at, status, attempts) VALUES {}",
                marks(rows, 8).replace(')', ", 'pending', 0)")
            ),
            &deliveries,
        )?;
    }
    Ok(())
}
