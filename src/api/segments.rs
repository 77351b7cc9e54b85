//! `/v1/bots/{bot}/segments`: named contact filters. A segment is a rule,
//! not a frozen list: its `count` is computed when it is read, and a
//! broadcast to it takes whoever matches when the broadcast starts. A
//! filter that does not compile is refused (422 with its column), so a saved
//! segment always compiles.

use super::bots::load;
use super::contacts::filter_error;
use super::error::{ApiError, ApiResult, ErrorBody, OrNotFound};
use super::extract::{ApiJson, ApiQuery, Auth, PageQuery};
use super::{AppState, List, time};
use crate::domain::people::ContactFilter;
use crate::store::segments::SegmentRow;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A segment on the wire.
#[derive(Serialize, ToSchema)]
pub struct SegmentView {
    /// `seg_…`
    pub id: String,
    /// The bot.
    pub bot_id: String,
    /// Human name.
    pub name: String,
    /// CEL over `user` and `contact`.
    pub filter: String,
    /// How many contacts match now.
    pub count: u64,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

async fn view(state: &AppState, account: &str, s: SegmentRow) -> ApiResult<SegmentView> {
    let filter = ContactFilter::compile(&s.filter).map_err(|e| filter_error("filter", &e))?;
    let count = state
        .store
        .count_contacts(account, &s.bot_id, filter)
        .await?;
    Ok(SegmentView {
        id: s.id,
        bot_id: s.bot_id,
        name: s.name,
        filter: s.filter,
        count,
        created_at: time(s.created_at),
        updated_at: time(s.updated_at),
    })
}

/// `POST` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSegment {
    /// 1 to 100 characters.
    pub name: String,
    /// CEL over `user` and `contact`, e.g. `user.plan == "vip"`.
    pub filter: String,
}

/// `PATCH` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSegment {
    /// New name.
    pub name: Option<String>,
    /// New filter.
    pub filter: Option<String>,
}

fn check_name(name: &str) -> ApiResult<String> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 100 || n.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "name must be 1 to 100 characters without control characters",
        ));
    }
    Ok(n.to_owned())
}

fn check_filter(filter: &str) -> ApiResult<String> {
    ContactFilter::compile(filter).map_err(|e| filter_error("filter", &e))?;
    Ok(filter.trim().to_owned())
}

/// Saves a segment.
#[utoipa::path(post, path = "/v1/bots/{bot}/segments", tag = "segments",
    params(("bot" = String, Path)), request_body = CreateSegment,
    responses((status = 201, body = SegmentView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_segment(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
    ApiJson(body): ApiJson<CreateSegment>,
) -> ApiResult<(StatusCode, Json<SegmentView>)> {
    let p = auth.bot(&bot)?;
    load(&state, &p.account_id, &bot).await?;
    let name = check_name(&body.name)?;
    let filter = check_filter(&body.filter)?;
    let row = state
        .store
        .create_segment(&p.account_id, &bot, &name, &filter)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(view(&state, &p.account_id, row).await?),
    ))
}

/// A bot's segments, newest first, each with its live count.
#[utoipa::path(get, path = "/v1/bots/{bot}/segments", tag = "segments",
    params(("bot" = String, Path), PageQuery),
    responses((status = 200, body = List<SegmentView>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_segments(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<List<SegmentView>>> {
    let p = auth.bot(&bot)?;
    load(&state, &p.account_id, &bot).await?;
    let rows = state
        .store
        .list_segments(&p.account_id, &bot, page.parse()?)
        .await?;
    let mut data = Vec::with_capacity(rows.items.len());
    for s in rows.items {
        data.push(view(&state, &p.account_id, s).await?);
    }
    Ok(Json(List {
        data,
        next_cursor: rows
            .next_cursor
            .as_deref()
            .map(super::extract::encode_cursor),
    }))
}

/// One segment and its live count.
#[utoipa::path(get, path = "/v1/bots/{bot}/segments/{id}", tag = "segments",
    params(("bot" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = SegmentView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_segment(
    State(state): State<AppState>,
    auth: Auth,
    Path((bot, id)): Path<(String, String)>,
) -> ApiResult<Json<SegmentView>> {
    let p = auth.bot(&bot)?;
    let row = state
        .store
        .get_segment(&p.account_id, &bot, &id)
        .await
        .or_not_found(|| ApiError::not_found(format!("segment {id:?} not found")))?;
    Ok(Json(view(&state, &p.account_id, row).await?))
}

/// Renames a segment or changes its filter.
#[utoipa::path(patch, path = "/v1/bots/{bot}/segments/{id}", tag = "segments",
    params(("bot" = String, Path), ("id" = String, Path)), request_body = UpdateSegment,
    responses((status = 200, body = SegmentView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_segment(
    State(state): State<AppState>,
    auth: Auth,
    Path((bot, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<UpdateSegment>,
) -> ApiResult<Json<SegmentView>> {
    let p = auth.bot(&bot)?;
    let name = body.name.as_deref().map(check_name).transpose()?;
    let filter = body.filter.as_deref().map(check_filter).transpose()?;
    let row = state
        .store
        .update_segment(&p.account_id, &bot, &id, name, filter)
        .await
        .or_not_found(|| ApiError::not_found(format!("segment {id:?} not found")))?;
    Ok(Json(view(&state, &p.account_id, row).await?))
}

/// Deletes a segment (the contacts stay).
#[utoipa::path(delete, path = "/v1/bots/{bot}/segments/{id}", tag = "segments",
    params(("bot" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_segment(
    State(state): State<AppState>,
    auth: Auth,
    Path((bot, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let p = auth.bot(&bot)?;
    state
        .store
        .delete_segment(&p.account_id, &bot, &id)
        .await
        .or_not_found(|| ApiError::not_found(format!("segment {id:?} not found")))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/bots/{bot}/segments",
            get(list_segments).post(create_segment),
        )
        .route(
            "/v1/bots/{bot}/segments/{id}",
            get(get_segment)
                .patch(update_segment)
                .delete(delete_segment),
        )
}
