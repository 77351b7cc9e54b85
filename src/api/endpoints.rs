//! `/v1/bots/{bot}/endpoints` and `/v1/endpoints/{id}`: where a bot's
//! events go, their secrets, a test ping, health, and recovery.
//!
//! An endpoint belongs to a bot; a key scoped to another bot (or of another
//! account) sees none of it (404).
//!
//! Custom header values are secrets unless marked `sensitive: false`: the
//! answer that creates an endpoint shows them in full, every later answer
//! shows `••••` and their last four characters, and a redacted value sent
//! back on `PATCH` keeps the stored one (see [`super::headers`]).

use super::bots::load;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::events::parse_time;
use super::extract::{ApiJson, ApiQuery, Auth, PageQuery};
use super::headers::{self, HeaderInput, HeaderView};
use super::sends::{self, SendResult};
use super::{AppState, List, time};
use crate::delivery::engine::ManualSend;
use crate::delivery::format::{self, PayloadFormat};
use crate::delivery::rules;
use crate::delivery::signing::Secret;
use crate::domain::endpoint_health::{self, AttemptSample, HealthInput};
use crate::domain::outbound::{self, CustomHeader};
use crate::domain::secret;
use crate::store::endpoints::{EndpointPatch, EndpointRow, NewEndpoint, kind};
use crate::store::now_ms;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// An endpoint on the wire (its secret is only at `/secret`).
#[derive(Serialize, ToSchema)]
pub struct EndpointView {
    /// `ep_…`
    pub id: String,
    /// The bot whose events it receives.
    pub bot_id: String,
    /// Where events are POSTed.
    pub url: String,
    /// Free text.
    pub description: String,
    /// Event types it receives; null for every type.
    pub events: Option<Vec<String>>,
    /// Whether events are delivered to it.
    pub enabled: bool,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// When it was disabled (RFC 3339).
    pub disabled_at: Option<String>,
    /// Custom headers sent with every request; secrets in full only in the
    /// answer that created the endpoint.
    pub headers: BTreeMap<String, HeaderView>,
    /// Extra JSON params merged into every payload (with `template`: the template).
    #[schema(value_type = Object)]
    pub body: Value,
    /// `standard`, `bot9`, `flat` or `template`.
    pub format: String,
    /// Most requests per second, when limited.
    pub rate_limit: Option<i64>,
    /// `endpoint`, `registration` (the chatbot-webhook route) or `hook` (a REST hook).
    pub kind: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<EndpointRow> for EndpointView {
    fn from(e: EndpointRow) -> Self {
        Self::of(e, false)
    }
}

impl EndpointView {
    /// `e` as shown; `reveal` (secret header values in full) only in the
    /// answer that created it.
    fn of(e: EndpointRow, reveal: bool) -> Self {
        Self {
            id: e.id,
            bot_id: e.bot_id,
            url: e.url,
            description: e.description,
            events: e.event_types,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            disabled_at: e.disabled_at.map(time),
            headers: headers::view(&e.headers, reveal),
            body: Value::Object(e.body),
            format: e.format.as_str().to_owned(),
            rate_limit: e.rate_limit,
            kind: e.kind,
            created_at: time(e.created_at),
            updated_at: time(e.updated_at),
        }
    }
}

/// `POST /v1/bots/{bot}/endpoints` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// http(s) URL, at most 2048 bytes, no user name or password.
    pub url: String,
    /// Free text (at most 1000 characters).
    pub description: Option<String>,
    /// Event types (catalog or custom names); absent or null for every type.
    pub events: Option<Vec<String>>,
    /// Default true.
    pub enabled: Option<bool>,
    /// Custom headers; hop-by-hop, `host`, `user-agent`, `content-*` and
    /// `webhook-*` names are refused. A value is a secret unless given as
    /// `{"value": "...", "sensitive": false}`.
    #[schema(value_type = Option<BTreeMap<String, HeaderInput>>)]
    pub headers: Option<BTreeMap<String, CustomHeader>>,
    /// A JSON object merged into every payload.
    #[schema(value_type = Option<Object>)]
    pub body: Option<Value>,
    /// `standard` (default), `bot9`, `flat`, or `template` (then `body` is the
    /// payload, with merge tags such as `{{event.type}}`, `{{data.response}}`).
    pub format: Option<String>,
    /// Requests per second, 1–100000.
    pub rate_limit: Option<i64>,
    /// Your own `whsec_` secret (24–64 bytes, base64); generated when absent.
    pub secret: Option<String>,
}

/// `PATCH /v1/endpoints/{id}` body; absent fields stay as they are.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    /// New URL.
    pub url: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New filter; null for every type.
    #[serde(default, deserialize_with = "present")]
    pub events: Option<Option<Vec<String>>>,
    /// Enable (clears the disable reason) or disable.
    pub enabled: Option<bool>,
    /// Replaces the custom headers. A secret sent back as shown (`••••…`)
    /// keeps its stored value.
    #[schema(value_type = Option<BTreeMap<String, HeaderInput>>)]
    pub headers: Option<BTreeMap<String, CustomHeader>>,
    /// Replaces the extra body params.
    #[schema(value_type = Option<Object>)]
    pub body: Option<Value>,
    /// New format.
    pub format: Option<String>,
    /// New limit; null removes it.
    #[serde(default, deserialize_with = "present")]
    pub rate_limit: Option<Option<i64>>,
}

/// Tells "absent" (outer `None`) from "null" (`Some(None)`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn invalid(m: String) -> ApiError {
    ApiError::unprocessable(m)
}

/// Checks custom headers on their way in; `stored` are the endpoint's
/// headers until now (none for a new one), whose secrets a redacted value
/// sent back keeps.
fn check_headers(
    mut headers: BTreeMap<String, CustomHeader>,
    stored: &BTreeMap<String, CustomHeader>,
) -> ApiResult<BTreeMap<String, CustomHeader>> {
    outbound::restore_redacted(&mut headers, stored)
        .map_err(|p| invalid(format!("headers: {p}")))?;
    rules::check_headers(&headers).map_err(invalid)
}

fn parse_format(s: &str) -> ApiResult<PayloadFormat> {
    serde_json::from_value(Value::String(s.to_owned())).map_err(|_| {
        invalid(format!(
            "format must be one of standard, bot9, flat, template; got {s:?}"
        ))
    })
}

fn check_description(d: &str) -> ApiResult<String> {
    if d.chars().count() > 1000 {
        return Err(invalid(
            "description must be at most 1000 characters".into(),
        ));
    }
    Ok(d.to_owned())
}

fn check_body(v: Value) -> ApiResult<serde_json::Map<String, Value>> {
    match v {
        Value::Object(m) => {
            if Value::Object(m.clone()).to_string().len() > 16 * 1024 {
                return Err(invalid("body must be at most 16 KiB of JSON".into()));
            }
            Ok(m)
        }
        Value::Null => Ok(serde_json::Map::new()),
        _ => Err(invalid(
            "body must be a JSON object of extra params, e.g. {\"source\": \"crm\"}".into(),
        )),
    }
}

/// Creates an endpoint for a bot.
#[utoipa::path(post, path = "/v1/bots/{bot}/endpoints", tag = "endpoints", params(("bot" = String, Path)),
    request_body = CreateEndpoint,
    responses((status = 201, body = EndpointView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_endpoint(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
    ApiJson(body): ApiJson<CreateEndpoint>,
) -> ApiResult<(StatusCode, Json<EndpointView>)> {
    let p = auth.bot(&bot)?.clone();
    let mut new = NewEndpoint::new(
        &bot,
        &rules::check_url("url", &body.url).map_err(invalid)?,
        kind::ENDPOINT,
    );
    if let Some(d) = &body.description {
        new.description = check_description(d)?;
    }
    if let Some(types) = &body.events {
        new.event_types = Some(rules::check_event_types(types).map_err(invalid)?);
    }
    new.enabled = body.enabled.unwrap_or(true);
    if let Some(h) = body.headers {
        new.headers = check_headers(h, &BTreeMap::new())?;
    }
    if let Some(b) = body.body {
        new.body = check_body(b)?;
    }
    if let Some(f) = &body.format {
        new.format = parse_format(f)?;
    }
    if let Some(r) = body.rate_limit {
        new.rate_limit = Some(rules::check_rate_limit(r).map_err(invalid)?);
    }
    if new.format == PayloadFormat::Template {
        format::check_template(&new.body).map_err(invalid)?;
    }
    if let Some(s) = &body.secret {
        new.secret = Some(Secret::parse(s).map_err(|e| invalid(format!("secret: {e}")))?);
    }
    load(&state, &p.account_id, &bot).await?;
    let row = state
        .store
        .create_endpoint(&p.account_id, new, state.limits.max_endpoints_per_bot)
        .await?;
    Ok((StatusCode::CREATED, Json(EndpointView::of(row, true))))
}

/// A bot's endpoints, oldest first.
#[utoipa::path(get, path = "/v1/bots/{bot}/endpoints", tag = "endpoints", params(("bot" = String, Path), PageQuery),
    responses((status = 200, body = List<EndpointView>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_endpoints(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<List<EndpointView>>> {
    let p = auth.bot(&bot)?.clone();
    let page = q.parse()?;
    load(&state, &p.account_id, &bot).await?;
    let rows = state
        .store
        .list_endpoints(&p.account_id, &bot, page)
        .await?;
    Ok(Json(List::from_page(rows, EndpointView::from)))
}

/// One endpoint.
#[utoipa::path(get, path = "/v1/endpoints/{id}", tag = "endpoints", params(("id" = String, Path)),
    responses((status = 200, body = EndpointView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_endpoint(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<EndpointView>> {
    Ok(Json(auth.endpoint(&state, &id).await?.into()))
}

/// Changes an endpoint. `enabled: true` re-enables a disabled one; its held
/// deliveries then go out.
#[utoipa::path(patch, path = "/v1/endpoints/{id}", tag = "endpoints", params(("id" = String, Path)),
    request_body = UpdateEndpoint,
    responses((status = 200, body = EndpointView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_endpoint(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateEndpoint>,
) -> ApiResult<Json<EndpointView>> {
    let e = auth.endpoint(&state, &id).await?;
    let mut patch = EndpointPatch::default();
    if let Some(u) = &body.url {
        patch.url = Some(rules::check_url("url", u).map_err(invalid)?);
    }
    if let Some(d) = &body.description {
        patch.description = Some(check_description(d)?);
    }
    if let Some(types) = &body.events {
        patch.event_types = Some(match types {
            Some(t) => Some(rules::check_event_types(t).map_err(invalid)?),
            None => None,
        });
    }
    patch.enabled = body.enabled;
    if let Some(h) = body.headers {
        patch.headers = Some(check_headers(h, &e.headers)?);
    }
    if let Some(b) = body.body {
        patch.body = Some(check_body(b)?);
    }
    if let Some(f) = &body.format {
        patch.format = Some(parse_format(f)?);
    }
    if let Some(r) = body.rate_limit {
        patch.rate_limit = Some(match r {
            Some(r) => Some(rules::check_rate_limit(r).map_err(invalid)?),
            None => None,
        });
    }
    // A template is checked whichever of format and body changes.
    if patch.format.unwrap_or(e.format) == PayloadFormat::Template {
        format::check_template(patch.body.as_ref().unwrap_or(&e.body)).map_err(invalid)?;
    }
    let row = state
        .store
        .update_endpoint(&auth.0.account_id, &e.id, patch)
        .await?;
    Ok(Json(row.into()))
}

/// Deletes an endpoint with its delivery log.
#[utoipa::path(delete, path = "/v1/endpoints/{id}", tag = "endpoints", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_endpoint(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let e = auth.endpoint(&state, &id).await?;
    state
        .store
        .delete_endpoint(&auth.0.account_id, &e.id, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An endpoint's signing secret.
#[derive(Serialize, ToSchema)]
pub struct SecretView {
    /// `whsec_…`: verify `webhook-signature` with it.
    pub secret: String,
    /// During a rotation: when the previous secret stops signing (RFC 3339).
    pub previous_expires_at: Option<String>,
}

fn secret_view(e: &EndpointRow) -> SecretView {
    let now = now_ms();
    SecretView {
        secret: e.current_secret().unwrap_or_default().to_owned(),
        previous_expires_at: secret::previous_expires_at(&e.secrets, now).map(time),
    }
}

/// The endpoint's current signing secret.
#[utoipa::path(get, path = "/v1/endpoints/{id}/secret", tag = "endpoints", params(("id" = String, Path)),
    responses((status = 200, body = SecretView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_secret(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<SecretView>> {
    let e = auth.endpoint(&state, &id).await?;
    Ok(Json(secret_view(&e)))
}

/// Makes a new secret. The previous one keeps signing too (both signatures,
/// space-separated) for the grace period (`delivery.secret_grace`, 24 h).
#[utoipa::path(post, path = "/v1/endpoints/{id}/secret/rotate", tag = "endpoints", params(("id" = String, Path)),
    responses((status = 200, body = SecretView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<SecretView>> {
    let e = auth.endpoint(&state, &id).await?;
    let grace =
        i64::try_from(state.delivery.settings().secret_grace.as_millis()).unwrap_or(i64::MAX / 4);
    let e = state
        .store
        .rotate_secret(&auth.0.account_id, &e.id, grace)
        .await?;
    Ok(Json(secret_view(&e)))
}

/// Sends a `webhook.test` event to this endpoint now (even when it is
/// disabled) and answers with the receiver's status, latency and body.
#[utoipa::path(post, path = "/v1/endpoints/{id}/test", tag = "endpoints", params(("id" = String, Path)),
    responses((status = 200, body = SendResult), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn test_endpoint(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<SendResult>> {
    let e = auth.endpoint(&state, &id).await?;
    Ok(Json(
        sends::send(
            &state,
            &auth.0.account_id,
            ManualSend::Test { endpoint_id: &e.id },
        )
        .await?,
    ))
}

/// `POST /v1/endpoints/{id}/recover` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recover {
    /// RFC 3339: re-queue failed and dead deliveries created at or after this time.
    pub since: String,
}

/// How many deliveries a recover re-queued.
#[derive(Serialize, ToSchema)]
pub struct Recovered {
    /// Deliveries due again now.
    pub requeued: u64,
}

/// Re-queues the endpoint's failed and dead deliveries since a time.
#[utoipa::path(post, path = "/v1/endpoints/{id}/recover", tag = "endpoints", params(("id" = String, Path)),
    request_body = Recover,
    responses((status = 202, body = Recovered), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn recover_endpoint(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Recover>,
) -> ApiResult<(StatusCode, Json<Recovered>)> {
    let since = parse_time("since", &body.since)?;
    let e = auth.endpoint(&state, &id).await?;
    let requeued = state
        .store
        .recover_deliveries(&auth.0.account_id, &e.id, since)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(Recovered { requeued })))
}

/// Latency percentiles over the last 100 attempts.
#[derive(Serialize, ToSchema)]
pub struct Latency {
    /// Median, ms.
    pub p50_ms: i64,
    /// 99th percentile, ms.
    pub p99_ms: i64,
}

/// The last failure.
#[derive(Serialize, ToSchema)]
pub struct LastError {
    /// RFC 3339.
    pub at: String,
    /// Error kind.
    pub kind: Option<String>,
    /// HTTP status, when there was an answer.
    pub status: Option<i64>,
    /// In words.
    pub message: Option<String>,
}

/// How an endpoint is doing.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `healthy`, `failing` or `disabled`.
    pub state: String,
    /// Why it is disabled.
    pub reason: Option<String>,
    /// Successful attempts / attempts in the last 24 h (null: none).
    pub success_rate_24h: Option<f64>,
    /// Attempts in the last 24 h.
    pub attempts_24h: i64,
    /// Success rate of the last 100 attempts (null: none).
    pub success_rate_last_100: Option<f64>,
    /// Failed attempts since the last success.
    pub consecutive_failures: usize,
    /// The most recent failed attempt.
    pub last_error: Option<LastError>,
    /// Over the last 100 attempts.
    pub latency: Option<Latency>,
    /// RFC 3339.
    pub last_success_at: Option<String>,
    /// First failure since the last success (RFC 3339); the automatic disable counts from it.
    pub failing_since: Option<String>,
}

/// State, success rates, last error, consecutive failures and latency.
#[utoipa::path(get, path = "/v1/endpoints/{id}/health", tag = "endpoints", params(("id" = String, Path)),
    responses((status = 200, body = Health), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn endpoint_health(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Health>> {
    let e = auth.endpoint(&state, &id).await?;
    let f = state
        .store
        .endpoint_health(&auth.0.account_id, &e.id, state.delivery.now_ms())
        .await?;
    let samples: Vec<AttemptSample> = f
        .recent
        .iter()
        .map(|a| AttemptSample {
            succeeded: a.error_kind.is_none(),
            duration_ms: a.duration_ms,
        })
        .collect();
    let report = endpoint_health::assess(HealthInput {
        enabled: e.enabled,
        first_failure_at: e.first_failure_at,
        attempts_24h: f.attempts_24h,
        succeeded_24h: f.succeeded_24h,
        recent: &samples,
    });
    Ok(Json(Health {
        state: report.state.as_str().into(),
        reason: e.disabled_reason.clone(),
        success_rate_24h: report.success_rate_24h,
        attempts_24h: f.attempts_24h,
        success_rate_last_100: report.success_rate_recent,
        consecutive_failures: report.consecutive_failures,
        last_error: report
            .last_failure
            .map(|i| &f.recent[i])
            .map(|a| LastError {
                at: time(a.started_at),
                kind: a.error_kind.clone(),
                status: a.status,
                message: a.error_message.clone(),
            }),
        latency: report.latency.map(|l| Latency {
            p50_ms: l.p50_ms,
            p99_ms: l.p99_ms,
        }),
        last_success_at: e.last_success_at.map(time),
        failing_since: e.first_failure_at.map(time),
    }))
}

/// Success rate and mean latency per hour over the last 24 h, as an SVG
/// chart (self-contained: no script, no external resource).
#[utoipa::path(get, path = "/v1/endpoints/{id}/health/chart.svg", tag = "endpoints", params(("id" = String, Path)),
    responses((status = 200, content_type = "image/svg+xml", body = String), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn endpoint_health_chart(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<impl axum::response::IntoResponse> {
    const HOURS: i64 = 24;
    let e = auth.endpoint(&state, &id).await?;
    let hours = state
        .store
        .endpoint_hours(&auth.0.account_id, &e.id, state.delivery.now_ms(), HOURS)
        .await?;
    let svg = super::chart::health_svg(&format!("Health of {}", e.url), HOURS, &hours);
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "image/svg+xml"),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        svg,
    ))
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/bots/{bot}/endpoints",
            get(list_endpoints).post(create_endpoint),
        )
        .route(
            "/v1/endpoints/{id}",
            get(get_endpoint)
                .patch(update_endpoint)
                .delete(delete_endpoint),
        )
        .route("/v1/endpoints/{id}/secret", get(get_secret))
        .route("/v1/endpoints/{id}/secret/rotate", post(rotate_secret))
        .route("/v1/endpoints/{id}/test", post(test_endpoint))
        .route("/v1/endpoints/{id}/health", get(endpoint_health))
        .route(
            "/v1/endpoints/{id}/health/chart.svg",
            get(endpoint_health_chart),
        )
        .route("/v1/endpoints/{id}/recover", post(recover_endpoint))
}
