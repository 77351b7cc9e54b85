//! `/v1/events`, `/v1/event-types`, and publishing custom events with
//! `POST /v1/bots/{bot}/events`.

use super::error::{ApiError, ApiResult, ErrorBody, OrNotFound};
use super::extract::{ApiJson, ApiQuery, Auth, PageQuery};
use super::{AppState, List, time};
use crate::domain::event::{self, EventType};
use crate::store::events::{EventFilter, EventRow, Published};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

/// An event on the wire.
#[derive(Serialize, ToSchema)]
pub struct EventView {
    /// `evt_…`; also the `webhook-id` of its deliveries.
    pub id: String,
    /// e.g. `option.selected`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The bot.
    pub bot_id: String,
    /// The conversation, when there is one.
    pub conversation_id: Option<String>,
    /// RFC 3339.
    pub timestamp: String,
    /// The payload.
    pub data: Value,
}

impl From<EventRow> for EventView {
    fn from(e: EventRow) -> Self {
        Self {
            data: serde_json::from_str(&e.data).unwrap_or(Value::Null),
            id: e.id,
            event_type: e.event_type,
            bot_id: e.bot_id,
            conversation_id: e.conversation_id,
            timestamp: time(e.created_at),
        }
    }
}

/// `?bot=&type=&since=&conversation=`
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only this bot's events.
    pub bot: Option<String>,
    /// Only this type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
    /// RFC 3339: only events at or after this time.
    pub since: Option<String>,
    /// Only this conversation's events.
    pub conversation: Option<String>,
    /// Items per page, 1–200.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Parses an RFC 3339 time given in a query or body field.
pub fn parse_time(field: &str, s: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            ApiError::bad_request(format!(
                "{field} must be an RFC 3339 time such as 2026-11-22T10:00:00Z, got {s:?}"
            ))
        })
}

/// Events, newest first.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventQuery),
    responses((status = 200, body = List<EventView>), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list_events(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> ApiResult<Json<List<EventView>>> {
    let p = &auth.0;
    let bot = match (&p.bot_id, q.bot) {
        (Some(scope), Some(asked)) if *scope != asked => {
            return Err(ApiError::not_found(format!("bot {asked:?} not found")));
        }
        (Some(scope), _) => Some(scope.clone()),
        (None, asked) => asked,
    };
    let since_ms = q
        .since
        .as_deref()
        .map(|s| parse_time("since", s))
        .transpose()?;
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .parse()?;
    let rows = state
        .store
        .list_events(
            &p.account_id,
            EventFilter {
                bot_id: bot,
                event_type: q.event_type,
                since_ms,
                conversation_id: q.conversation,
            },
            page,
        )
        .await?;
    Ok(Json(List::from_page(rows, EventView::from)))
}

/// One event.
#[utoipa::path(get, path = "/v1/events/{id}", tag = "events", params(("id" = String, Path)),
    responses((status = 200, body = EventView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_event(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<EventView>> {
    let p = &auth.0;
    let not_found = || ApiError::not_found(format!("event {id:?} not found"));
    let e = state
        .store
        .get_event(&p.account_id, &id)
        .await
        .or_not_found(not_found)?;
    if !p.may_use_bot(&e.bot_id) {
        return Err(not_found());
    }
    Ok(Json(e.into()))
}

/// An event type with its JSON Schema and a sample.
#[derive(Serialize, ToSchema)]
pub struct EventTypeView {
    /// e.g. `quote.generated`.
    pub name: String,
    /// When it fires.
    pub description: String,
    /// JSON Schema of `data`.
    pub schema: Value,
    /// A sample `data`.
    pub sample: Value,
}

/// The event catalog.
#[utoipa::path(get, path = "/v1/event-types", tag = "events",
    responses((status = 200, body = List<EventTypeView>)), security(("bearer" = [])))]
pub async fn list_event_types(_auth: Auth) -> Json<List<EventTypeView>> {
    Json(List {
        data: event::catalog()
            .into_iter()
            .map(|i| EventTypeView {
                name: i.name.to_owned(),
                description: i.description.to_owned(),
                schema: i.schema,
                sample: i.sample,
            })
            .collect(),
        next_cursor: None,
    })
}

/// A one-item array holding a sample event (for Zapier-style REST hooks).
#[utoipa::path(get, path = "/v1/event-types/{type}/sample", tag = "events", params(("type" = String, Path)),
    responses((status = 200, description = "A JSON array with one sample event", body = [Object]), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn event_type_sample(_auth: Auth, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let t = EventType::parse(&name).ok_or_else(|| {
        ApiError::not_found(format!("no event type {name:?}; see /v1/event-types"))
    })?;
    let info = event::info(t);
    Ok(Json(serde_json::json!([{
        "id": "evt_sample",
        "type": info.name,
        "timestamp": "2024-06-18T23:22:36.560Z",
        "data": info.sample,
    }])))
}

/// `POST /v1/bots/{bot}/events` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishEvent {
    /// Your event type, e.g. `order.paid`; the catalog's names are reserved.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Any JSON object.
    pub data: Value,
}

/// Publishes a custom event. With an `Idempotency-Key` header, a repeat with
/// the same body returns the first event (200); another body → 409.
#[utoipa::path(post, path = "/v1/bots/{bot}/events", tag = "events", params(("bot" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    request_body = PublishEvent,
    responses((status = 201, body = EventView), (status = 200, body = EventView, description = "A replay of an earlier request"),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn publish_event(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PublishEvent>,
) -> ApiResult<(StatusCode, Json<EventView>)> {
    let p = auth.bot(&bot)?.clone();
    if event::is_reserved(&body.event_type) {
        return Err(ApiError::unprocessable(format!(
            "field `type`: {:?} is reserved for botwire's own events; choose another name such as order.paid",
            body.event_type
        )));
    }
    event::check_custom_name(&body.event_type)
        .map_err(|m| ApiError::unprocessable(format!("field `type`: {m}")))?;
    if !body.data.is_object() {
        return Err(ApiError::unprocessable(
            "field `data`: must be a JSON object",
        ));
    }
    let idempotency = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 200)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "Idempotency-Key must be 1 to 200 visible ASCII characters",
                    )
                })?;
            let canonical =
                serde_json::json!({"type": body.event_type, "data": body.data}).to_string();
            Some((
                key.to_owned(),
                hex::encode(Sha256::digest(canonical.as_bytes())),
            ))
        }
    };
    let row = EventRow::new(
        &p.account_id,
        &bot,
        &body.event_type,
        None,
        body.data.to_string(),
    );
    let published = state
        .store
        .publish_event(row, idempotency)
        .await
        .or_not_found(|| ApiError::not_found(format!("bot {bot:?} not found")))?;
    match published {
        Published::Created(e) => Ok((StatusCode::CREATED, Json(e.into()))),
        Published::Replayed(e) => Ok((StatusCode::OK, Json(e.into()))),
    }
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/events", get(list_events))
        .route("/v1/events/{id}", get(get_event))
        .route("/v1/event-types", get(list_event_types))
        .route("/v1/event-types/{type}/sample", get(event_type_sample))
        .route("/v1/bots/{bot}/events", axum::routing::post(publish_event))
}
