//! `/v1/deliveries` (filtered), `/v1/deliveries/{id}`, its attempt log, a
//! manual retry, `/v1/events/{id}/deliveries` and
//! `/v1/endpoints/{id}/deliveries`.
//!
//! A delivery is one event on its way to one endpoint; each HTTP try is an
//! attempt, logged with its request headers (secret-looking values
//! redacted), status, the first 16 KiB of the answer and an error kind.

use super::error::{ApiError, ApiResult, ErrorBody, OrNotFound};
use super::extract::{ApiQuery, Auth, PageQuery};
use super::sends::{self, SendResult};
use super::{AppState, List, time};
use crate::delivery::engine::ManualSend;
use crate::domain::outbound::CustomHeader;
use crate::store::PageRequest;
use crate::store::deliveries::{AttemptRow, DeliveryFilter, DeliveryRow};
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// A delivery on the wire.
#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    /// `dlv_…`
    pub id: String,
    /// The bot.
    pub bot_id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// The event (its id is the `webhook-id`).
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// `pending`, `failed` (a retry is scheduled), `succeeded` or `dead`.
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// When the next attempt is due (RFC 3339).
    pub next_attempt_at: Option<String>,
    /// The last failure.
    pub last_error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<DeliveryRow> for DeliveryView {
    fn from(d: DeliveryRow) -> Self {
        Self {
            id: d.id,
            bot_id: d.bot_id,
            endpoint_id: d.endpoint_id,
            event_id: d.event_id,
            event_type: d.event_type,
            next_attempt_at: match d.status.as_str() {
                "pending" | "failed" => d.next_attempt_at.map(time),
                _ => None,
            },
            status: d.status,
            attempts: d.attempts,
            last_error: d.last_error,
            created_at: time(d.created_at),
            updated_at: time(d.updated_at),
        }
    }
}

/// An attempt on the wire.
#[derive(Serialize, ToSchema)]
pub struct AttemptView {
    /// `att_…`
    pub id: String,
    /// The delivery.
    pub delivery_id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// How long it took.
    pub duration_ms: i64,
    /// What was sent; custom header values redacted (`••••` and their last
    /// four characters) unless the endpoint marks them plain.
    #[schema(value_type = Object)]
    pub request_headers: Value,
    /// The receiver's status, when it answered.
    pub response_status: Option<i64>,
    /// The first 16 KiB of its answer.
    pub response_body: String,
    /// `timeout`, `connect`, `dns`, `blocked`, `tls`, `status` or `invalid`; null on success.
    pub error_kind: Option<String>,
    /// The failure in words.
    pub error_message: Option<String>,
    /// The botwire node that made it: its delivery engine's id (`node_…`),
    /// or `api` for a send the API made itself (a retry, a test ping).
    pub node: Option<String>,
}

impl AttemptView {
    /// `a` as shown, its headers redacted by the endpoint's custom headers
    /// as they are now (`custom`).
    fn shown(a: AttemptRow, custom: &BTreeMap<String, CustomHeader>) -> Self {
        Self {
            id: a.id,
            delivery_id: a.delivery_id,
            endpoint_id: a.endpoint_id,
            started_at: time(a.started_at),
            duration_ms: a.duration_ms,
            request_headers: crate::delivery::attempt::shown_headers(&a.request_headers, custom),
            response_status: a.status,
            response_body: a.response_body,
            error_kind: a.error_kind,
            error_message: a.error_message,
            node: a.node,
        }
    }
}

/// `?status=&limit=&cursor=`
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    /// `pending`, `failed`, `succeeded` or `dead`.
    pub status: Option<String>,
    /// Items per page, 1–200.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl StatusQuery {
    /// Validates into (status filter, page).
    pub fn parse(self) -> ApiResult<(Option<String>, PageRequest)> {
        let status = match self.status.as_deref() {
            None | Some("") => None,
            Some(s @ ("pending" | "failed" | "succeeded" | "dead")) => Some(s.to_owned()),
            Some(s) => {
                return Err(ApiError::bad_request(format!(
                    "status must be pending, failed, succeeded or dead; got {s:?}"
                )));
            }
        };
        let page = PageQuery {
            limit: self.limit,
            cursor: self.cursor,
        }
        .parse()?;
        Ok((status, page))
    }
}

async fn delivery_for(state: &AppState, auth: &Auth, id: &str) -> ApiResult<DeliveryRow> {
    let not_found = || ApiError::not_found(format!("delivery {id:?} not found"));
    let d = state
        .store
        .get_delivery(&auth.0.account_id, id)
        .await
        .or_not_found(not_found)?;
    if !auth.0.may_use_bot(&d.bot_id) {
        return Err(not_found());
    }
    Ok(d)
}

/// `?endpoint_id=&event_type=&status=&since=&until=&limit=&cursor=`
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// Only this endpoint's deliveries.
    pub endpoint_id: Option<String>,
    /// Only deliveries of events of this type.
    pub event_type: Option<String>,
    /// `pending`, `failed`, `succeeded` or `dead`.
    pub status: Option<String>,
    /// Only deliveries created at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Only deliveries created before this time (RFC 3339).
    pub until: Option<String>,
    /// Items per page, 1–200.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The account's deliveries (a bot-scoped key: its bot's), newest first,
/// filtered by endpoint, event type, status and creation time.
#[utoipa::path(get, path = "/v1/deliveries", tag = "deliveries", params(DeliveryQuery),
    responses((status = 200, body = List<DeliveryView>), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> ApiResult<Json<List<DeliveryView>>> {
    let (status, page) = StatusQuery {
        status: q.status,
        limit: q.limit,
        cursor: q.cursor,
    }
    .parse()?;
    let given = |v: Option<String>| v.filter(|v| !v.is_empty());
    let time = |field: &str, v: Option<String>| {
        given(v)
            .map(|v| super::events::parse_time(field, &v))
            .transpose()
    };
    let filter = DeliveryFilter {
        endpoint_id: given(q.endpoint_id),
        event_type: given(q.event_type),
        status,
        since: time("since", q.since)?,
        until: time("until", q.until)?,
        bot_id: auth.0.bot_id.clone(),
        ..Default::default()
    };
    let rows = state
        .store
        .list_deliveries(&auth.0.account_id, filter, page)
        .await?;
    Ok(Json(List::from_page(rows, DeliveryView::from)))
}

/// An event's deliveries (one per endpoint that wanted it), newest first.
#[utoipa::path(get, path = "/v1/events/{id}/deliveries", tag = "deliveries", params(("id" = String, Path), StatusQuery),
    responses((status = 200, body = List<DeliveryView>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_event_deliveries(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<StatusQuery>,
) -> ApiResult<Json<List<DeliveryView>>> {
    let (status, page) = q.parse()?;
    let not_found = || ApiError::not_found(format!("event {id:?} not found"));
    let e = state
        .store
        .get_event(&auth.0.account_id, &id)
        .await
        .or_not_found(not_found)?;
    if !auth.0.may_use_bot(&e.bot_id) {
        return Err(not_found());
    }
    let rows = state
        .store
        .list_deliveries(
            &auth.0.account_id,
            DeliveryFilter {
                event_id: Some(e.id),
                status,
                ..Default::default()
            },
            page,
        )
        .await?;
    Ok(Json(List::from_page(rows, DeliveryView::from)))
}

/// One delivery.
#[utoipa::path(get, path = "/v1/deliveries/{id}", tag = "deliveries", params(("id" = String, Path)),
    responses((status = 200, body = DeliveryView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_delivery(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<DeliveryView>> {
    Ok(Json(delivery_for(&state, &auth, &id).await?.into()))
}

/// A delivery's attempts, newest first.
#[utoipa::path(get, path = "/v1/deliveries/{id}/attempts", tag = "deliveries", params(("id" = String, Path), PageQuery),
    responses((status = 200, body = List<AttemptView>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_attempts(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<List<AttemptView>>> {
    let page = q.parse()?;
    let d = delivery_for(&state, &auth, &id).await?;
    let rows = state
        .store
        .list_attempts(&auth.0.account_id, &d.id, page)
        .await?;
    let custom = state
        .store
        .get_endpoint(&auth.0.account_id, &d.endpoint_id)
        .await
        .map(|e| e.headers)
        .unwrap_or_default();
    Ok(Json(List::from_page(rows, |a| {
        AttemptView::shown(a, &custom)
    })))
}

/// Attempts a delivery now, once, whatever its state, and answers what the
/// receiver said. A success marks it succeeded; a failure keeps its retry
/// schedule (a dead delivery stays dead).
#[utoipa::path(post, path = "/v1/deliveries/{id}/retry", tag = "deliveries", params(("id" = String, Path)),
    responses((status = 200, body = SendResult), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn retry_delivery(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<SendResult>> {
    let d = delivery_for(&state, &auth, &id).await?;
    Ok(Json(
        sends::send(
            &state,
            &auth.0.account_id,
            ManualSend::Retry { delivery_id: &d.id },
        )
        .await?,
    ))
}

/// An endpoint's deliveries, newest first, optionally by status.
#[utoipa::path(get, path = "/v1/endpoints/{id}/deliveries", tag = "deliveries", params(("id" = String, Path), StatusQuery),
    responses((status = 200, body = List<DeliveryView>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_endpoint_deliveries(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<StatusQuery>,
) -> ApiResult<Json<List<DeliveryView>>> {
    let (status, page) = q.parse()?;
    let e = auth.endpoint(&state, &id).await?;
    let rows = state
        .store
        .list_deliveries(
            &auth.0.account_id,
            DeliveryFilter {
                endpoint_id: Some(e.id),
                status,
                ..Default::default()
            },
            page,
        )
        .await?;
    Ok(Json(List::from_page(rows, DeliveryView::from)))
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/deliveries", get(list_deliveries))
        .route("/v1/events/{id}/deliveries", get(list_event_deliveries))
        .route("/v1/deliveries/{id}", get(get_delivery))
        .route("/v1/deliveries/{id}/attempts", get(list_attempts))
        .route("/v1/deliveries/{id}/retry", post(retry_delivery))
        .route(
            "/v1/endpoints/{id}/deliveries",
            get(list_endpoint_deliveries),
        )
}
