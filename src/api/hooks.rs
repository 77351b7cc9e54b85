//! Zapier-style REST hooks: `POST /v1/hooks/subscribe` and
//! `DELETE /v1/hooks/{id}`.
//!
//! A subscription is an endpoint of kind `hook` that receives one event
//! type of one bot in the `standard` format. A 410 Gone from its target
//! deletes it (the REST hooks convention for "unsubscribe me"). The sample
//! a Zap shows while it is set up is `GET /v1/event-types/{type}/sample`.

use super::AppState;
use super::bots::load;
use super::error::{ApiError, ApiResult, ErrorBody, OrNotFound};
use super::extract::{ApiJson, Auth};
use crate::delivery::rules;
use crate::store::endpoints::{NewEndpoint, kind};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/hooks/subscribe` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Subscribe {
    /// Where to POST events (http or https).
    pub target_url: String,
    /// One event type, e.g. `response.received`.
    pub event: String,
    /// The bot whose events to send.
    pub bot_id: String,
}

/// A subscription's id, to unsubscribe with.
#[derive(Serialize, ToSchema)]
pub struct Subscribed {
    /// `ep_…`
    pub id: String,
}

/// Subscribes a target URL to one event type of a bot.
#[utoipa::path(post, path = "/v1/hooks/subscribe", tag = "hooks", request_body = Subscribe,
    responses((status = 201, body = Subscribed), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn subscribe(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<Subscribe>,
) -> ApiResult<(StatusCode, Json<Subscribed>)> {
    let p = auth.bot(&body.bot_id)?.clone();
    let url = rules::check_url("target_url", &body.target_url).map_err(ApiError::unprocessable)?;
    let types = rules::check_event_types(std::slice::from_ref(&body.event))
        .map_err(|m| ApiError::unprocessable(m.replacen("events", "event", 1)))?;
    load(&state, &p.account_id, &body.bot_id).await?;
    let mut new = NewEndpoint::new(&body.bot_id, &url, kind::HOOK);
    new.event_types = Some(types);
    new.description = format!("REST hook for {}", body.event);
    let row = state
        .store
        .create_endpoint(&p.account_id, new, state.limits.max_endpoints_per_bot)
        .await?;
    Ok((StatusCode::CREATED, Json(Subscribed { id: row.id })))
}

/// Ends a subscription.
#[utoipa::path(delete, path = "/v1/hooks/{id}", tag = "hooks", params(("id" = String, Path)),
    responses((status = 200, body = Subscribed), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn unsubscribe(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Subscribed>> {
    let not_found = || ApiError::not_found(format!("subscription {id:?} not found"));
    let e = state
        .store
        .get_endpoint(&auth.0.account_id, &id)
        .await
        .or_not_found(not_found)?;
    if e.kind != kind::HOOK || !auth.0.may_use_bot(&e.bot_id) {
        return Err(not_found());
    }
    state
        .store
        .delete_endpoint(&auth.0.account_id, &e.id, Some(kind::HOOK))
        .await
        .or_not_found(not_found)?;
    Ok(Json(Subscribed { id: e.id }))
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/hooks/subscribe", post(subscribe))
        .route("/v1/hooks/{id}", delete(unsubscribe))
}
