//! `/v1/bots/{bot}/webhooks`: story webhooks — the user's APIs a flow calls
//! (seed 002) — their call log, a test button, and the bot's signing secret.

use super::bots::load;
use super::error::{ApiError, ApiResult, ErrorBody, OrNotFound};
use super::extract::{ApiJson, ApiQuery, Auth, PageQuery};
use super::headers::{self, HeaderInput, HeaderView};
use super::{AppState, List, time};
use crate::domain::flow::{Flow, FlowError, StoryWebhook};
use crate::domain::outbound::{self, CustomHeader};
use crate::runtime::RuntimeError;
use crate::runtime::bots::Settings;
use crate::runtime::story;
use crate::store::StoreError;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A story webhook as defined (the body that creates one).
#[derive(Deserialize, ToSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct WebhookDefinition {
    /// Unique per bot; flows call it by this name.
    pub name: String,
    /// GET, POST, PUT, PATCH or DELETE (default POST).
    #[serde(default)]
    pub method: Option<String>,
    /// URL; merge tags allowed in its path and query only (values are
    /// percent-encoded).
    pub url: String,
    /// Query parameters (GET, DELETE) or JSON body (others); merge tags in string values.
    #[serde(default)]
    pub params: Map<String, Value>,
    /// Extra headers; merge tags allowed. A value is a secret unless given
    /// as `{"value": "...", "sensitive": false}`; hop-by-hop, `host`,
    /// `user-agent`, `content-*` and `webhook-*` names are refused.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, HeaderInput>)]
    pub headers: BTreeMap<String, CustomHeader>,
    /// Timeout in ms (default 10000, at most 30000).
    #[serde(default)]
    pub timeout_ms: Option<u32>,
    /// Sign requests like event webhooks (default true).
    #[serde(default)]
    pub sign: Option<bool>,
}

impl WebhookDefinition {
    fn into_domain(self) -> StoryWebhook {
        StoryWebhook {
            name: self.name,
            method: self
                .method
                .unwrap_or_else(|| "POST".into())
                .to_ascii_uppercase(),
            url: self.url,
            params: self.params,
            headers: self.headers,
            timeout_ms: self.timeout_ms,
            sign: self.sign,
        }
    }
}

/// A story webhook as shown.
#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    /// Unique per bot; flows call it by this name.
    pub name: String,
    /// GET, POST, PUT, PATCH or DELETE.
    pub method: String,
    /// URL, with merge tags.
    pub url: String,
    /// Query parameters (GET, DELETE) or JSON body (others).
    pub params: Map<String, Value>,
    /// Extra headers: secret values in full only in the answer that created
    /// them, `••••` and their last four characters after that.
    pub headers: BTreeMap<String, HeaderView>,
    /// Timeout in ms.
    pub timeout_ms: u32,
    /// Whether requests are signed.
    pub sign: bool,
}

impl WebhookView {
    /// `w` as shown; `reveal` only in the answer that created it.
    fn of(w: &StoryWebhook, reveal: bool) -> Self {
        Self {
            name: w.name.clone(),
            method: w.method.clone(),
            url: w.url.clone(),
            params: w.params.clone(),
            headers: headers::view(&w.headers, reveal),
            timeout_ms: w.timeout_ms(),
            sign: w.signs(),
        }
    }
}

/// `PATCH` body: absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatch {
    /// New method.
    pub method: Option<String>,
    /// New URL.
    pub url: Option<String>,
    /// New params (replaces all).
    pub params: Option<Map<String, Value>>,
    /// New headers (replaces all; send `{}` to delete every header). A
    /// secret sent back as shown (`••••…`) keeps its stored value.
    #[schema(value_type = Option<BTreeMap<String, HeaderInput>>)]
    pub headers: Option<BTreeMap<String, CustomHeader>>,
    /// New timeout in ms.
    pub timeout_ms: Option<u32>,
    /// Sign or not.
    pub sign: Option<bool>,
}

fn check(w: &StoryWebhook) -> Result<(), ApiError> {
    let problems = w.problems(&w.name, "");
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RuntimeError::Flow(problems).into())
    }
}

/// Puts back the stored secrets sent back redacted (`old`: the headers
/// stored until now), refusing any other redacted value.
fn restore(w: &mut StoryWebhook, old: &BTreeMap<String, CustomHeader>) -> Result<(), ApiError> {
    outbound::restore_redacted(&mut w.headers, old).map_err(|p| {
        RuntimeError::Flow(vec![FlowError::new(
            &w.name,
            format!("headers.{}", p.header().unwrap_or_default()),
            p.to_string(),
        )])
        .into()
    })
}

fn settings_of(json: &str) -> Result<Settings, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Database(format!("bot settings: {e}")))
}

fn to_json(s: &Settings) -> String {
    serde_json::to_string(s).expect("settings serialise")
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("story webhook {name:?} not found"))
}

/// Defines a story webhook.
#[utoipa::path(post, path = "/v1/bots/{bot}/webhooks", tag = "story webhooks", params(("bot" = String, Path)),
    request_body = WebhookDefinition,
    responses((status = 201, body = WebhookView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_webhook(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
    ApiJson(body): ApiJson<WebhookDefinition>,
) -> ApiResult<(StatusCode, Json<WebhookView>)> {
    let p = auth.bot(&bot)?.clone();
    load(&state, &p.account_id, &bot).await?;
    let mut hook = body.into_domain();
    restore(&mut hook, &BTreeMap::new())?;
    check(&hook)?;
    let h = hook.clone();
    state
        .store
        .modify_bot_settings(&p.account_id, &bot, move |json| {
            let mut s = settings_of(&json)?;
            if s.webhooks.iter().any(|w| w.name == h.name) {
                return Err(StoreError::Conflict(format!(
                    "a story webhook named {:?} already exists; PATCH it instead",
                    h.name
                )));
            }
            s.webhooks.push(h);
            Ok((to_json(&s), ()))
        })
        .await?;
    state.chat.forget_bot(&p.account_id, &bot);
    Ok((StatusCode::CREATED, Json(WebhookView::of(&hook, true))))
}

/// The bot's story webhooks.
#[utoipa::path(get, path = "/v1/bots/{bot}/webhooks", tag = "story webhooks", params(("bot" = String, Path)),
    responses((status = 200, body = List<WebhookView>), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
) -> ApiResult<Json<List<WebhookView>>> {
    let p = auth.bot(&bot)?;
    Ok(Json(List {
        data: defined(&state, &p.account_id, &bot)
            .await?
            .iter()
            .map(|w| WebhookView::of(w, false))
            .collect(),
        next_cursor: None,
    }))
}

/// The bot's story webhooks as stored (secrets in full: not for answers).
pub async fn defined(state: &AppState, account: &str, bot: &str) -> ApiResult<Vec<StoryWebhook>> {
    load(state, account, bot).await?;
    Ok(settings_of(&state.store.get_bot_settings(account, bot).await?)?.webhooks)
}

async fn find(state: &AppState, account: &str, bot: &str, name: &str) -> ApiResult<StoryWebhook> {
    load(state, account, bot).await?;
    let s = settings_of(&state.store.get_bot_settings(account, bot).await?)?;
    s.webhooks
        .into_iter()
        .find(|w| w.name == name)
        .ok_or_else(|| not_found(name))
}

/// One story webhook.
#[utoipa::path(get, path = "/v1/bots/{bot}/webhooks/{name}", tag = "story webhooks",
    params(("bot" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_webhook(
    State(state): State<AppState>,
    auth: Auth,
    Path((bot, name)): Path<(String, String)>,
) -> ApiResult<Json<WebhookView>> {
    let p = auth.bot(&bot)?;
    let w = find(&state, &p.account_id, &bot, &name).await?;
    Ok(Json(WebhookView::of(&w, false)))
}

/// Changes a story webhook.
#[utoipa::path(patch, path = "/v1/bots/{bot}/webhooks/{name}", tag = "story webhooks",
    params(("bot" = String, Path), ("name" = String, Path)), request_body = WebhookPatch,
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_webhook(
    State(state): State<AppState>,
    auth: Auth,
    Path((bot, name)): Path<(String, String)>,
    ApiJson(patch): ApiJson<WebhookPatch>,
) -> ApiResult<Json<WebhookView>> {
    let p = auth.bot(&bot)?.clone();
    let mut w = find(&state, &p.account_id, &bot, &name).await?;
    if let Some(m) = patch.method {
        w.method = m.to_ascii_uppercase();
    }
    if let Some(u) = patch.url {
        w.url = u;
    }
    if let Some(ps) = patch.params {
        w.params = ps;
    }
    if let Some(h) = patch.headers {
        let stored = std::mem::replace(&mut w.headers, h);
        restore(&mut w, &stored)?;
    }
    if patch.timeout_ms.is_some() {
        w.timeout_ms = patch.timeout_ms;
    }
    if patch.sign.is_some() {
        w.sign = patch.sign;
    }
    check(&w)?;
    let updated = w.clone();
    state
        .store
        .modify_bot_settings(&p.account_id, &bot, move |json| {
            let mut s = settings_of(&json)?;
            let slot = s
                .webhooks
                .iter_mut()
                .find(|x| x.name == updated.name)
                .ok_or(StoreError::NotFound)?;
            *slot = updated;
            Ok((to_json(&s), ()))
        })
        .await
        .or_not_found(|| not_found(&name))?;
    state.chat.forget_bot(&p.account_id, &bot);
    Ok(Json(WebhookView::of(&w, false)))
}

/// Deletes a story webhook the current flow does not call.
#[utoipa::path(delete, path = "/v1/bots/{bot}/webhooks/{name}", tag = "story webhooks",
    params(("bot" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    auth: Auth,
    Path((bot, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let p = auth.bot(&bot)?.clone();
    find(&state, &p.account_id, &bot, &name).await?;
    if let Some(row) = state.store.get_flow(&p.account_id, &bot, None).await?
        && let Ok(flow) = Flow::from_json(&row.document)
        && flow.webhook_names().contains(&name)
    {
        return Err(ApiError::conflict(format!(
            "the current flow calls {name:?}; change the flow first"
        )));
    }
    let n = name.clone();
    state
        .store
        .modify_bot_settings(&p.account_id, &bot, move |json| {
            let mut s = settings_of(&json)?;
            s.webhooks.retain(|w| w.name != n);
            Ok((to_json(&s), ()))
        })
        .await?;
    state.chat.forget_bot(&p.account_id, &bot);
    Ok(StatusCode::NO_CONTENT)
}

/// A logged call.
#[derive(Serialize, ToSchema)]
pub struct CallView {
    /// `call_…` (also the request's `webhook-id`).
    pub id: String,
    /// The conversation it was made in (absent for tests).
    pub conversation_id: Option<String>,
    /// `ok` or `error`.
    pub outcome: String,
    /// RFC 3339.
    pub at: String,
    /// Request line, headers (the signature and secret values redacted),
    /// body, status, duration, response head, error.
    pub record: Value,
}

/// Turns a stored call into its wire form; `hooks` are the bot's story
/// webhooks as defined now, whose plain headers alone show their values.
pub fn call_view(c: crate::store::story::CallRow, hooks: &[StoryWebhook]) -> CallView {
    let mut record = serde_json::from_str(&c.record).unwrap_or(Value::Null);
    story::redact_record(&mut record, hooks.iter().find(|w| w.name == c.webhook));
    CallView {
        record,
        id: c.id,
        conversation_id: c.conversation_id,
        outcome: c.outcome,
        at: time(c.created_at),
    }
}

/// The calls made to a story webhook, newest first.
#[utoipa::path(get, path = "/v1/bots/{bot}/webhooks/{name}/calls", tag = "story webhooks",
    params(("bot" = String, Path), ("name" = String, Path), PageQuery),
    responses((status = 200, body = List<CallView>), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list_calls(
    State(state): State<AppState>,
    auth: Auth,
    Path((bot, name)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<List<CallView>>> {
    let p = auth.bot(&bot)?;
    let hook = find(&state, &p.account_id, &bot, &name).await?;
    let page = state
        .store
        .list_calls(&p.account_id, &bot, &name, q.parse()?)
        .await?;
    Ok(Json(List::from_page(page, |c| {
        call_view(c, std::slice::from_ref(&hook))
    })))
}

/// `POST …/test` body: the memory and user attributes to render with.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct TestCall {
    /// Session memory to pretend.
    #[serde(default)]
    pub memory: Map<String, Value>,
    /// Contact attributes to pretend.
    #[serde(default)]
    pub user: Map<String, Value>,
    /// Contact fields to pretend (`phone`, `id`, `external_id`).
    #[serde(default)]
    pub contact: Map<String, Value>,
}

/// What a test call did.
#[derive(Serialize, ToSchema)]
pub struct TestResult {
    /// The exact request sent (the signature and secret header values redacted).
    pub request: Value,
    /// The response received.
    pub response: Value,
    /// `ok` or `error`.
    pub outcome: String,
    /// Why it failed.
    pub error: Option<String>,
    /// What would be merged into the conversation: responses, quick replies,
    /// memory and user attributes afterwards.
    pub would_merge: Option<Value>,
}

/// Calls a story webhook now, outside any conversation.
#[utoipa::path(post, path = "/v1/bots/{bot}/webhooks/{name}/test", tag = "story webhooks",
    params(("bot" = String, Path), ("name" = String, Path)), request_body = TestCall,
    responses((status = 200, body = TestResult), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn test_webhook(
    State(state): State<AppState>,
    auth: Auth,
    Path((bot, name)): Path<(String, String)>,
    ApiJson(body): ApiJson<TestCall>,
) -> ApiResult<Json<TestResult>> {
    let p = auth.bot(&bot)?.clone();
    let hook = find(&state, &p.account_id, &bot, &name).await?;
    let secrets_json = state
        .store
        .story_secrets(&p.account_id, &bot, story::fresh_secrets())
        .await?;
    let secrets = story::live_secrets(&secrets_json, crate::store::now_ms());
    let ctx = serde_json::json!({
        "memory": body.memory, "user": body.user, "contact": body.contact,
        "quote": body.memory.get("quote"), "appointment": body.memory.get("appointment"),
    });
    let (outcome, record) = story::call(state.delivery.client(), &hook, &ctx, &secrets).await;
    state
        .store
        .record_call(
            &p.account_id,
            &bot,
            crate::store::story::CallRow {
                id: record.id.clone(),
                webhook: name.clone(),
                conversation_id: None,
                outcome: record.outcome.clone(),
                record: serde_json::to_string(&record).map_err(ApiError::internal)?,
                created_at: record.started_at,
            },
        )
        .await?;
    Ok(Json(TestResult {
        request: serde_json::json!({
            "line": record.request_line, "headers": record.request_headers, "body": record.request_body,
        }),
        response: serde_json::json!({
            "status": record.status, "duration_ms": record.duration_ms, "body": record.response_head,
        }),
        outcome: record.outcome.clone(),
        error: record.error.clone(),
        would_merge: outcome
            .ok()
            .map(|r| story::would_merge(&r, &body.memory, &body.user)),
    }))
}

/// The bot's story-webhook signing secret.
#[derive(Serialize, ToSchema)]
pub struct SecretView {
    /// The current secret, `whsec_…`.
    pub secret: String,
    /// Secrets that still sign during a rotation's grace period.
    pub previous: Vec<String>,
}

fn secret_view(json: &str) -> SecretView {
    let list: Vec<story::StoredSecret> = serde_json::from_str(json).unwrap_or_default();
    let now = crate::store::now_ms();
    SecretView {
        secret: list
            .iter()
            .find(|s| s.expires_at.is_none())
            .map(|s| s.secret.clone())
            .unwrap_or_default(),
        previous: list
            .iter()
            .filter(|s| s.expires_at.is_some_and(|t| t > now))
            .map(|s| s.secret.clone())
            .collect(),
    }
}

/// The secret story-webhook requests are signed with.
#[utoipa::path(get, path = "/v1/bots/{bot}/webhook-secret", tag = "story webhooks", params(("bot" = String, Path)),
    responses((status = 200, body = SecretView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_secret(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
) -> ApiResult<Json<SecretView>> {
    let p = auth.bot(&bot)?;
    load(&state, &p.account_id, &bot).await?;
    let json = state
        .store
        .story_secrets(&p.account_id, &bot, story::fresh_secrets())
        .await?;
    Ok(Json(secret_view(&json)))
}

/// Makes a new secret; the old one keeps signing too for 24 hours.
#[utoipa::path(post, path = "/v1/bots/{bot}/webhook-secret/rotate", tag = "story webhooks", params(("bot" = String, Path)),
    responses((status = 200, body = SecretView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
) -> ApiResult<Json<SecretView>> {
    let p = auth.bot(&bot)?.clone();
    load(&state, &p.account_id, &bot).await?;
    let json = state
        .store
        .rotate_story_secrets(&p.account_id, &bot, |current| {
            story::rotate_secrets(&current, crate::store::now_ms(), 24 * 3600 * 1000)
        })
        .await?;
    state.chat.forget_bot(&p.account_id, &bot);
    Ok(Json(secret_view(&json)))
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/bots/{bot}/webhooks",
            get(list_webhooks).post(create_webhook),
        )
        .route(
            "/v1/bots/{bot}/webhooks/{name}",
            get(get_webhook)
                .patch(update_webhook)
                .delete(delete_webhook),
        )
        .route("/v1/bots/{bot}/webhooks/{name}/calls", get(list_calls))
        .route("/v1/bots/{bot}/webhooks/{name}/test", post(test_webhook))
        .route("/v1/bots/{bot}/webhook-secret", get(get_secret))
        .route("/v1/bots/{bot}/webhook-secret/rotate", post(rotate_secret))
}
