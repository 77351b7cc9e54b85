//! `/v1/bots`: create, list, read, change and delete bots.

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery, Auth, PageQuery};
use super::{AppState, List, time};
use crate::domain::bot::{Bot, BotId, BotType, check_name};
use crate::store::bots::BotPatch;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A bot on the wire.
#[derive(Serialize, ToSchema)]
pub struct BotView {
    /// Unique within the account; the `uniqueId` of the webhook registration route.
    #[schema(example = "elipackage")]
    pub id: String,
    /// Display name.
    pub name: String,
    /// What the bot is for.
    #[serde(rename = "type")]
    pub bot_type: BotTypeView,
    /// Current flow version (0: no flow yet).
    pub flow_version: i64,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// Bot types on the wire.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum BotTypeView {
    /// Collects incidents and datapoints.
    DataCollection,
    /// Generates quotes.
    QuoteGeneration,
    /// Books appointments.
    Appointment,
    /// Answers questions.
    Support,
}

impl From<BotTypeView> for BotType {
    fn from(v: BotTypeView) -> Self {
        match v {
            BotTypeView::DataCollection => BotType::DataCollection,
            BotTypeView::QuoteGeneration => BotType::QuoteGeneration,
            BotTypeView::Appointment => BotType::Appointment,
            BotTypeView::Support => BotType::Support,
        }
    }
}

impl From<BotType> for BotTypeView {
    fn from(v: BotType) -> Self {
        match v {
            BotType::DataCollection => BotTypeView::DataCollection,
            BotType::QuoteGeneration => BotTypeView::QuoteGeneration,
            BotType::Appointment => BotTypeView::Appointment,
            BotType::Support => BotTypeView::Support,
        }
    }
}

impl From<Bot> for BotView {
    fn from(b: Bot) -> Self {
        Self {
            id: b.id.to_string(),
            name: b.name,
            bot_type: b.bot_type.into(),
            flow_version: b.flow_version,
            created_at: time(b.created_at),
            updated_at: time(b.updated_at),
        }
    }
}

/// `POST /v1/bots` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBot {
    /// `[a-z0-9-]{1,64}`; generated when absent.
    #[schema(pattern = "^[a-z0-9-]{1,64}$")]
    pub id: Option<String>,
    /// Display name: 1 to 200 characters, no control characters.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// What the bot is for.
    #[serde(rename = "type")]
    pub bot_type: BotTypeView,
}

/// `PATCH /v1/bots/{bot}` body; absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBot {
    /// New display name: 1 to 200 characters, no control characters.
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    /// New type.
    #[serde(rename = "type")]
    pub bot_type: Option<BotTypeView>,
}

/// Creates a bot. Account-wide keys only.
#[utoipa::path(post, path = "/v1/bots", tag = "bots", request_body = CreateBot,
    responses((status = 201, body = BotView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_bot(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<CreateBot>,
) -> ApiResult<(StatusCode, Json<BotView>)> {
    let p = auth.account_wide()?;
    let id = match body.id.as_deref() {
        Some(id) => {
            BotId::parse(id).map_err(|m| ApiError::unprocessable(format!("field `id`: {m}")))?
        }
        None => BotId::generate(),
    };
    check_name(&body.name).map_err(|m| ApiError::unprocessable(format!("field `name`: {m}")))?;
    let bot = state
        .store
        .create_bot(&p.account_id, id, body.name.trim(), body.bot_type.into())
        .await?;
    Ok((StatusCode::CREATED, Json(bot.into())))
}

/// Lists the bots the key may see, by id.
#[utoipa::path(get, path = "/v1/bots", tag = "bots", params(PageQuery),
    responses((status = 200, body = List<BotView>)), security(("bearer" = [])))]
pub async fn list_bots(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<List<BotView>>> {
    let page = q.parse()?;
    let p = &auth.0;
    let bots = state
        .store
        .list_bots(&p.account_id, p.bot_id.as_deref(), page)
        .await?;
    Ok(Json(List::from_page(bots, BotView::from)))
}

/// One bot.
#[utoipa::path(get, path = "/v1/bots/{bot}", tag = "bots", params(("bot" = String, Path)),
    responses((status = 200, body = BotView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_bot(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
) -> ApiResult<Json<BotView>> {
    let p = auth.bot(&bot)?;
    Ok(Json(load(&state, &p.account_id, &bot).await?.into()))
}

/// Changes a bot's name or type.
#[utoipa::path(patch, path = "/v1/bots/{bot}", tag = "bots", params(("bot" = String, Path)),
    request_body = UpdateBot,
    responses((status = 200, body = BotView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_bot(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
    ApiJson(body): ApiJson<UpdateBot>,
) -> ApiResult<Json<BotView>> {
    let p = auth.bot(&bot)?;
    if let Some(name) = &body.name {
        check_name(name).map_err(|m| ApiError::unprocessable(format!("field `name`: {m}")))?;
    }
    let patch = BotPatch {
        name: body.name.map(|n| n.trim().to_owned()),
        bot_type: body.bot_type.map(Into::into),
    };
    let updated = state
        .store
        .update_bot(&p.account_id, &bot, patch)
        .await
        .map_err(|e| not_found_as_bot(e, &bot))?;
    Ok(Json(updated.into()))
}

/// Deletes a bot (and revokes keys scoped to it). Account-wide keys only.
#[utoipa::path(delete, path = "/v1/bots/{bot}", tag = "bots", params(("bot" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete_bot(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
) -> ApiResult<StatusCode> {
    auth.bot(&bot)?;
    let p = auth.account_wide()?;
    state
        .store
        .delete_bot(&p.account_id, &bot)
        .await
        .map_err(|e| not_found_as_bot(e, &bot))?;
    state.keys.clear();
    state.chat.forget_bot(&p.account_id, &bot);
    Ok(StatusCode::NO_CONTENT)
}

/// Loads a bot of the account, answering 404 with its id.
pub async fn load(state: &AppState, account: &str, bot: &str) -> ApiResult<Bot> {
    state
        .store
        .get_bot(account, bot)
        .await
        .map_err(|e| not_found_as_bot(e, bot))
}

fn not_found_as_bot(e: crate::store::StoreError, bot: &str) -> ApiError {
    match e {
        crate::store::StoreError::NotFound => ApiError::not_found(format!("bot {bot:?} not found")),
        other => other.into(),
    }
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/bots", get(list_bots).post(create_bot))
        .route(
            "/v1/bots/{bot}",
            get(get_bot).patch(update_bot).delete(delete_bot),
        )
}
