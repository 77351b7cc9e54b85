//! Deliveries and attempts as stored, and how rows are read into them.

use crate::store::{Result, Row};

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

/// Delivery columns, read from `deliveries d JOIN events e` (the event's
/// `type` is the only `e` column, so no name is read twice).
pub(super) const D_COLUMNS: &str = "d.id, d.bot_id, d.endpoint_id, d.event_id, d.status, d.attempts, d.next_attempt_at, d.last_error, d.created_at, d.updated_at, e.type";

pub(super) fn delivery_from(r: &Row) -> Result<DeliveryRow> {
    Ok(DeliveryRow {
        id: r.text_at("id")?,
        bot_id: r.text_at("bot_id")?,
        endpoint_id: r.text_at("endpoint_id")?,
        event_id: r.text_at("event_id")?,
        status: r.text_at("status")?,
        attempts: r.int_at("attempts")?,
        next_attempt_at: r.opt_int_at("next_attempt_at")?,
        last_error: r.opt_text_at("last_error")?,
        created_at: r.int_at("created_at")?,
        updated_at: r.int_at("updated_at")?,
        event_type: r.text_at("type")?,
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

pub(super) const A_COLUMNS: &str = "id, delivery_id, endpoint_id, started_at, duration_ms, request_headers, status, response_body, error_kind, error_message, node";

pub(super) fn attempt_from(r: &Row) -> Result<AttemptRow> {
    Ok(AttemptRow {
        id: r.text_at("id")?,
        delivery_id: r.text_at("delivery_id")?,
        endpoint_id: r.text_at("endpoint_id")?,
        started_at: r.int_at("started_at")?,
        duration_ms: r.int_at("duration_ms")?,
        request_headers: r.text_at("request_headers")?,
        status: r.opt_int_at("status")?,
        response_body: r.text_at("response_body")?,
        error_kind: r.opt_text_at("error_kind")?,
        error_message: r.opt_text_at("error_message")?,
        node: r.opt_text_at("node")?,
    })
}
