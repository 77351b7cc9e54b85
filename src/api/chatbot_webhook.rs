//! `POST /api/v1.0/chatbot-webhook/{uniqueId}/`: seed 000's registration
//! route, answered word for word.
//!
//! The body is `{"url": "…"}`; `uniqueId` is the bot's id. The first call
//! for a bot creates its registered endpoint (201 with `message`); later
//! calls replace that endpoint's URL (200 with, as seed 000 spells it, the
//! key `chatbot_id`). Only quote generation, data collection and
//! appointment bots may register. The route also answers without the
//! trailing slash.

use super::AppState;
use super::bots::load;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, Auth};
use crate::delivery::rules;
use crate::store::endpoints::Registered;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

/// The answer when a webhook is added.
pub const ADDED: &str =
    "New Webhook has been added, you can now start listening on the URL for updates.";
/// The answer when the URL of an existing one is replaced.
pub const UPDATED: &str =
    "Existing webhook URL was updated, you can now start listening on the new URL for updates.";

/// The registration body.
#[derive(Deserialize, ToSchema)]
pub struct Register {
    /// Your webhook URL (http or https).
    pub url: String,
}

/// Registers (or re-points) the bot's webhook.
#[utoipa::path(post, path = "/api/v1.0/chatbot-webhook/{uniqueId}/", tag = "endpoints",
    params(("uniqueId" = String, Path, description = "The bot's id")),
    request_body = Register,
    responses(
        (status = 201, description = "`{\"message\": \"New Webhook has been added, you can now start listening on the URL for updates.\"}`", body = Object),
        (status = 200, description = "`{\"chatbot_id\": \"Existing webhook URL was updated, you can now start listening on the new URL for updates.\"}`", body = Object),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn register_webhook(
    State(state): State<AppState>,
    auth: Auth,
    Path(unique_id): Path<String>,
    ApiJson(body): ApiJson<Register>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let p = auth.bot(&unique_id)?.clone();
    let url = rules::check_url("url", &body.url).map_err(ApiError::unprocessable)?;
    let bot = load(&state, &p.account_id, &unique_id).await?;
    if !bot.bot_type.may_register_webhooks() {
        return Err(ApiError::unprocessable(
            "only Quote Generation, Data Collection and Appointment/Calendar Support chatbots are eligible for webhook registration; this one is a support bot",
        ));
    }
    match state
        .store
        .register_endpoint(
            &p.account_id,
            &unique_id,
            &url,
            state.limits.max_endpoints_per_bot,
        )
        .await?
    {
        Registered::Created(_) => Ok((StatusCode::CREATED, Json(json!({"message": ADDED})))),
        Registered::Updated(_) => Ok((StatusCode::OK, Json(json!({"chatbot_id": UPDATED})))),
    }
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1.0/chatbot-webhook/{unique_id}/",
            post(register_webhook),
        )
        .route(
            "/api/v1.0/chatbot-webhook/{unique_id}",
            post(register_webhook),
        )
}
