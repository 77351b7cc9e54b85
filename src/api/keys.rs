//! `/v1/keys`: create, list and revoke API keys. Account-wide keys only.
//!
//! A key is `secret` (account-wide or scoped to one bot) or `publishable`:
//! scoped to one bot and to chatting only, from the website origins listed
//! on it — the key the chat widget puts in a page.

use super::error::{ApiError, ApiResult, ErrorBody, OrNotFound};
use super::extract::{ApiJson, ApiQuery, Auth, PageQuery};
use super::{AppState, List, time};
use crate::domain::account::ApiKey;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A key as listed: never the key itself.
#[derive(Serialize, ToSchema)]
pub struct KeyView {
    /// `key_…`
    pub id: String,
    /// Label.
    pub name: String,
    /// Set when the key is scoped to one bot.
    pub bot_id: Option<String>,
    /// `secret` or `publishable`.
    pub kind: String,
    /// The website origins a publishable key may chat from.
    pub origins: Vec<String>,
    /// The key's first characters.
    pub prefix: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, when revoked.
    pub revoked_at: Option<String>,
}

impl From<ApiKey> for KeyView {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            name: k.name,
            bot_id: k.bot_id,
            kind: if k.publishable {
                "publishable"
            } else {
                "secret"
            }
            .into(),
            origins: k.origins,
            prefix: k.prefix,
            created_at: time(k.created_at),
            revoked_at: k.revoked_at.map(time),
        }
    }
}

/// A key just created: the only time `key` is shown.
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    /// The key; store it now, it cannot be shown again.
    pub key: String,
    /// The key's record.
    #[serde(flatten)]
    pub record: KeyView,
}

/// `POST /v1/keys` body.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Label (default `api`).
    pub name: Option<String>,
    /// Scope the key to one bot of the account (required for `publishable`).
    pub bot_id: Option<String>,
    /// `secret` (default) or `publishable`: chat only, from `origins`.
    pub kind: Option<String>,
    /// For a publishable key: the website origins allowed to chat with it,
    /// e.g. `https://shop.example.com`.
    pub origins: Option<Vec<String>>,
}

/// Creates a key: secret (account-wide or scoped to one bot) or publishable.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, body = CreatedKey), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_key(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<CreateKey>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    let p = auth.account_wide()?;
    let name = body.name.unwrap_or_else(|| "api".into());
    if name.trim().is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "field `name`: 1 to 100 characters, no control characters",
        ));
    }
    let (row, key) = match body.kind.as_deref() {
        None | Some("secret") => {
            if body.origins.is_some() {
                return Err(ApiError::unprocessable(
                    "field `origins`: only publishable keys list origins",
                ));
            }
            state
                .store
                .create_key(
                    &p.account_id,
                    body.bot_id.as_deref(),
                    name.trim(),
                    &state.pepper,
                )
                .await?
        }
        Some("publishable") => {
            let bot = body.bot_id.as_deref().ok_or_else(|| {
                ApiError::unprocessable("field `bot_id`: a publishable key is for one bot")
            })?;
            let origins = body.origins.unwrap_or_default();
            if origins.is_empty() || origins.len() > 20 {
                return Err(ApiError::unprocessable(
                    "field `origins`: list 1 to 20 website origins the widget may chat from, \
                     e.g. [\"https://shop.example.com\"]",
                ));
            }
            let origins = origins
                .iter()
                .map(|o| crate::domain::account::parse_origin(o))
                .collect::<Result<Vec<_>, _>>()
                .map_err(ApiError::unprocessable)?;
            state
                .store
                .create_publishable_key(&p.account_id, bot, name.trim(), origins, &state.pepper)
                .await?
        }
        Some(other) => {
            return Err(ApiError::unprocessable(format!(
                "field `kind`: secret or publishable, not {other:?}"
            )));
        }
    };
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key,
            record: row.into(),
        }),
    ))
}

/// Lists the account's keys, oldest first.
#[utoipa::path(get, path = "/v1/keys", tag = "keys", params(PageQuery),
    responses((status = 200, body = List<KeyView>), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list_keys(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<List<KeyView>>> {
    let p = auth.account_wide()?;
    let page = state.store.list_keys(&p.account_id, q.parse()?).await?;
    Ok(Json(List::from_page(page, KeyView::from)))
}

/// Revokes a key at once.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path)),
    responses((status = 200, body = KeyView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn revoke_key(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<KeyView>> {
    let p = auth.account_wide()?;
    let key = state
        .store
        .revoke_key(&p.account_id, &id)
        .await
        .or_not_found(|| ApiError::not_found(format!("key {id:?} not found")))?;
    state.keys.clear();
    Ok(Json(key.into()))
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/keys", get(list_keys).post(create_key))
        .route("/v1/keys/{id}", delete(revoke_key))
}
