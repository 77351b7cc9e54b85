//! Manual sends: what the receiver answered to a test ping or a manual
//! retry. Both go through the delivery engine's one manual-send path
//! ([`crate::delivery::engine::send_now`]).

use super::AppState;
use super::error::ApiResult;
use crate::delivery::engine::{self, ManualSend};
use serde::Serialize;
use utoipa::ToSchema;

/// What the receiver answered to a test or a manual retry.
#[derive(Serialize, ToSchema)]
pub struct SendResult {
    /// Whether it answered 2xx.
    pub success: bool,
    /// Its HTTP status, when it answered.
    pub status: Option<u16>,
    /// How long it took.
    pub latency_ms: u64,
    /// The first 16 KiB of its answer.
    pub body: String,
    /// `timeout`, `connect`, `dns`, `blocked`, `tls`, `status`, `invalid`.
    pub error_kind: Option<String>,
    /// The failure in words.
    pub error: Option<String>,
    /// The delivery.
    pub delivery_id: String,
    /// The event (`webhook-id`).
    pub event_id: String,
}

/// Sends `what` now and answers what the receiver said.
pub async fn send(
    state: &AppState,
    account_id: &str,
    what: ManualSend<'_>,
) -> ApiResult<SendResult> {
    let sent = engine::send_now(&state.store, &state.delivery, account_id, what).await?;
    let attempt = sent.attempt;
    Ok(SendResult {
        success: attempt.is_success(),
        status: attempt.status,
        latency_ms: attempt.duration_ms,
        body: attempt.response_body,
        error_kind: attempt.error.map(|k| k.as_str().to_owned()),
        error: attempt.error_message,
        delivery_id: sent.delivery_id,
        event_id: sent.event_id,
    })
}
