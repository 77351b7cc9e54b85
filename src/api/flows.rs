//! `/v1/bots/{bot}/flow`, `/v1/bots/{bot}/settings`, and whole bot files:
//! `/v1/bots/import`, `/v1/bots/{bot}/export`.
//!
//! Flows are accepted as YAML (`application/yaml`) or JSON, validated as a
//! whole, and saved as a new version only when valid; an invalid flow is
//! answered 422 with one entry per problem (node, field, message) and the
//! previous version stays current.
//!
//! `POST …/flow/check` runs the same checks without saving.
//!
//! A save may say which version it was based on (`If-Match: "3"`, the
//! `x-flow-version` it loaded): when another save came first it is refused
//! with 409 and the flow is left as the other save made it. Without
//! `If-Match` the last save wins, as it always has.

use super::AppState;
use super::bots::load;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, Auth, read_body};
use crate::runtime::bots::{self as runtime_bots, Settings};
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

/// Answer to a flow save.
#[derive(Serialize, ToSchema)]
pub struct FlowSaved {
    /// The bot.
    pub bot_id: String,
    /// The new current version.
    pub version: i64,
}

/// Answer to an import.
#[derive(Serialize, ToSchema)]
pub struct BotImported {
    /// The bot.
    pub bot_id: String,
    /// Whether the bot was created by this import.
    pub created: bool,
    /// The flow version saved.
    pub flow_version: i64,
}

/// YAML or JSON, from the Content-Type; anything else is 415.
fn body_is_yaml(headers: &HeaderMap) -> Result<bool, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match ct.as_str() {
        "application/json" => Ok(false),
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => Ok(true),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the flow as Content-Type: application/yaml or application/json",
        )),
    }
}

/// YAML when the client asks for it (`Accept: application/yaml` or `?format=yaml`).
fn wants_yaml(req_headers: &HeaderMap, query: Option<&str>) -> bool {
    query.is_some_and(|q| q.split('&').any(|p| p == "format=yaml"))
        || req_headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("yaml"))
}

async fn text_body(req: Request, state: &AppState) -> ApiResult<String> {
    let bytes = read_body(req, state).await?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::bad_request("the body is not UTF-8 text"))
}

fn document(yaml: bool, text: String) -> Response {
    let ct = if yaml {
        "application/yaml"
    } else {
        "application/json"
    };
    ([(header::CONTENT_TYPE, ct)], Body::from(text)).into_response()
}

/// The version an `If-Match` header names (`"3"`, `3` or `W/"3"`); `None`
/// without the header or with `*`.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    let bare = text.trim_start_matches("W/").trim_matches('"');
    bare.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "If-Match must be the flow version the edit started from, like \"3\" (x-flow-version), not {text:?}"
            ))
        })
}

/// Saves a new flow version (YAML or JSON), validated as a whole.
///
/// With `If-Match: "N"` the save happens only if version N is still current.
#[utoipa::path(put, path = "/v1/bots/{bot}/flow", tag = "flows", params(("bot" = String, Path),
        ("If-Match" = Option<String>, Header, description = "The flow version the edit started from (`\"3\"`); 409 when another save came first")),
    request_body(content = String, description = "The flow document", content_type = "application/yaml"),
    responses((status = 200, body = FlowSaved), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The flow moved past the If-Match version: reload and save again"),
        (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "The flow is invalid; `details` lists each problem by node and field")),
    security(("bearer" = [])))]
pub async fn put_flow(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
    req: Request,
) -> ApiResult<Json<FlowSaved>> {
    let p = auth.bot(&bot)?.clone();
    let yaml = body_is_yaml(req.headers())?;
    let expected = if_match(req.headers())?;
    load(&state, &p.account_id, &bot).await?;
    let text = text_body(req, &state).await?;
    let settings: Settings =
        serde_json::from_str(&state.store.get_bot_settings(&p.account_id, &bot).await?)
            .map_err(ApiError::internal)?;
    let known: Vec<String> = settings.webhooks.iter().map(|w| w.name.clone()).collect();
    let flow = runtime_bots::parse_flow(&text, yaml, &known)?;
    let version =
        runtime_bots::save_flow(&state.store, &p.account_id, &bot, &flow, expected).await?;
    state.chat.forget_bot(&p.account_id, &bot);
    Ok(Json(FlowSaved {
        bot_id: bot,
        version,
    }))
}

/// Checks a flow document (YAML or JSON) without saving it, and answers it
/// as the server reads it: the JSON a later `GET …/flow` would give. The
/// console uses it to carry unsaved YAML into the form editor.
#[utoipa::path(post, path = "/v1/bots/{bot}/flow/check", tag = "flows", params(("bot" = String, Path)),
    request_body(content = String, description = "The flow document", content_type = "application/yaml"),
    responses((status = 200, description = "The flow as JSON, not saved", content_type = "application/json"),
        (status = 404, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "The flow is invalid; `details` lists each problem by node and field")),
    security(("bearer" = [])))]
pub async fn check_flow(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let p = auth.bot(&bot)?.clone();
    let yaml = body_is_yaml(req.headers())?;
    load(&state, &p.account_id, &bot).await?;
    let text = text_body(req, &state).await?;
    let settings = stored_settings(&state, &p.account_id, &bot).await?;
    let known: Vec<String> = settings.webhooks.iter().map(|w| w.name.clone()).collect();
    let flow = runtime_bots::parse_flow(&text, yaml, &known)?;
    Ok(document(false, flow.to_json()))
}

/// The current flow, as JSON (default) or YAML (`Accept: application/yaml`).
#[utoipa::path(get, path = "/v1/bots/{bot}/flow", tag = "flows", params(("bot" = String, Path)),
    responses((status = 200, description = "The flow document", content_type = "application/json"),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_flow(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> ApiResult<Response> {
    let p = auth.bot(&bot)?;
    load(&state, &p.account_id, &bot).await?;
    let row = state
        .store
        .get_flow(&p.account_id, &bot, None)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("bot {bot:?} has no flow yet")))?;
    let flow = crate::domain::flow::Flow::from_json(&row.document)
        .map_err(|e| ApiError::internal(crate::domain::flow::join_errors(&e)))?;
    let yaml = wants_yaml(&headers, uri.query());
    let mut resp = document(yaml, if yaml { flow.to_yaml() } else { flow.to_json() });
    resp.headers_mut().insert(
        "x-flow-version",
        row.version
            .to_string()
            .parse()
            .expect("digits are a header value"),
    );
    Ok(resp)
}

/// The bot's settings: price table, calendar, declared story webhooks.
#[utoipa::path(get, path = "/v1/bots/{bot}/settings", tag = "flows", params(("bot" = String, Path)),
    responses((status = 200, description = "Settings document", body = Object), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_settings(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let p = auth.bot(&bot)?;
    load(&state, &p.account_id, &bot).await?;
    let settings = stored_settings(&state, &p.account_id, &bot).await?;
    Ok(Json(
        serde_json::to_value(runtime_bots::redacted(&settings)).map_err(ApiError::internal)?,
    ))
}

async fn stored_settings(state: &AppState, account: &str, bot: &str) -> ApiResult<Settings> {
    let text = state.store.get_bot_settings(account, bot).await?;
    serde_json::from_str(&text).map_err(ApiError::internal)
}

/// Replaces the bot's settings (validated).
#[utoipa::path(put, path = "/v1/bots/{bot}/settings", tag = "flows", params(("bot" = String, Path)),
    request_body(content = Object, description = "`{price_table?, calendar?, webhooks?}`"),
    responses((status = 200, description = "Settings document", body = Object), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn put_settings(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
    ApiJson(mut settings): ApiJson<Settings>,
) -> ApiResult<Json<serde_json::Value>> {
    let p = auth.bot(&bot)?;
    load(&state, &p.account_id, &bot).await?;
    let stored = stored_settings(&state, &p.account_id, &bot).await?;
    runtime_bots::restore_secrets(&mut settings.webhooks, &stored.webhooks)?;
    settings
        .validate()
        .map_err(|e| ApiError::from(crate::runtime::RuntimeError::Flow(e)))?;
    let text = serde_json::to_string(&settings).map_err(ApiError::internal)?;
    state
        .store
        .put_bot_settings(&p.account_id, &bot, text)
        .await?;
    state.chat.forget_bot(&p.account_id, &bot);
    Ok(Json(
        serde_json::to_value(runtime_bots::redacted(&settings)).map_err(ApiError::internal)?,
    ))
}

/// Creates or updates a whole bot from a bot file (YAML or JSON): bot,
/// settings and a new flow version. Account-wide keys only.
#[utoipa::path(post, path = "/v1/bots/import", tag = "flows",
    request_body(content = String, description = "A bot file: id, name, type, price_table?, calendar?, webhooks?, flow", content_type = "application/yaml"),
    responses((status = 201, body = BotImported), (status = 200, body = BotImported), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn import_bot(
    State(state): State<AppState>,
    auth: Auth,
    req: Request,
) -> ApiResult<(StatusCode, Json<BotImported>)> {
    let p = auth.account_wide()?.clone();
    let yaml = body_is_yaml(req.headers())?;
    let text = text_body(req, &state).await?;
    let file = runtime_bots::parse_bot_file(&text, yaml)?;
    let done = runtime_bots::import(&state.store, &p.account_id, &file).await?;
    state.chat.forget_bot(&p.account_id, &done.bot_id);
    let status = if done.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(BotImported {
            bot_id: done.bot_id,
            created: done.created,
            flow_version: done.flow_version,
        }),
    ))
}

/// The whole bot as a bot file (JSON, or YAML with `Accept: application/yaml`).
#[utoipa::path(get, path = "/v1/bots/{bot}/export", tag = "flows", params(("bot" = String, Path)),
    responses((status = 200, description = "A bot file", content_type = "application/json"), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn export_bot(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> ApiResult<Response> {
    let p = auth.bot(&bot)?;
    load(&state, &p.account_id, &bot).await?;
    let mut file = runtime_bots::export(&state.store, &p.account_id, &bot).await?;
    file.webhooks = file.webhooks.iter().map(|w| w.redacted()).collect();
    let yaml = wants_yaml(&headers, uri.query());
    Ok(document(
        yaml,
        if yaml { file.to_yaml() } else { file.to_json() },
    ))
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/bots/{bot}/flow", get(get_flow).put(put_flow))
        .route("/v1/bots/{bot}/flow/check", post(check_flow))
        .route(
            "/v1/bots/{bot}/settings",
            get(get_settings).put(put_settings),
        )
        .route("/v1/bots/import", post(import_bot))
        .route("/v1/bots/{bot}/export", get(export_bot))
}
