//! `/v1/bots/{bot}/channels` and `/v1/channels/{id}`: a bot's messaging
//! channels (WhatsApp, Telegram, Twilio, Messenger), their outbox and a test
//! send; and `/channels/{id}/webhook`, where the platforms call.
//!
//! Secrets are write-only: an answer names which are set, never their
//! values. The webhook route takes no API key: each request is checked with
//! the platform's own scheme on the raw bytes before anything else; one
//! that fails is answered 401 (no signature) or 403 (wrong signature),
//! stored nowhere, and counted in `/metrics`
//! (`botwire_channel_webhooks_refused_total`). One that passes is stored
//! before it is answered 200, then processed.

use super::bots::load;
use super::error::{ApiError, ApiResult, ErrorBody, OrNotFound};
use super::extract::{ApiJson, ApiQuery, Auth, PageQuery};
use super::{AppState, List, time};
use crate::channels::{
    ChannelConfig, ChannelFields, ChannelKind, Reply, Secret, SendResult, VerifyError,
    WebhookRequest, meta, telegram,
};
use crate::delivery::http::OutboundRequest;
use crate::domain::ids::new_id;
use crate::store::channels::{ChannelRow, MessageFilter, MessageRow, OutboxWrite};
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

/// A channel on the wire: its settings without secrets.
#[derive(Serialize, ToSchema)]
pub struct ChannelView {
    /// `ch_…`
    pub id: String,
    /// The bot it is bound to.
    pub bot_id: String,
    /// `whatsapp`, `telegram`, `twilio` or `messenger`.
    pub kind: String,
    /// A name for people.
    pub name: String,
    /// The settings that are not secret (`phone_number_id`, `verify_token`,
    /// `page_id`, `account_sid`, `from`, `api_base`).
    #[schema(value_type = Object)]
    pub settings: Value,
    /// The secrets that are set (never their values).
    pub secrets: Vec<String>,
    /// Paste this into the platform as the webhook (callback) URL.
    pub inbound_url: String,
    /// When the last message came in (RFC 3339).
    pub last_inbound_at: Option<String>,
    /// The last webhook request refused, in words.
    pub last_inbound_error: Option<String>,
    /// When the last reply was sent or failed (RFC 3339).
    pub last_outbound_at: Option<String>,
    /// The last send failure, in the platform's words.
    pub last_outbound_error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

fn view(state: &AppState, headers: &HeaderMap, c: &ChannelRow) -> ChannelView {
    let (settings, secrets) = c.config.public();
    let refused = state.channels.refusal(&c.id);
    ChannelView {
        id: c.id.clone(),
        bot_id: c.bot_id.clone(),
        kind: c.kind().as_str().to_owned(),
        name: c.name.clone(),
        settings: Value::Object(settings),
        secrets: secrets.into_iter().map(str::to_owned).collect(),
        inbound_url: format!("{}/channels/{}/webhook", public_url(state, headers), c.id),
        last_inbound_at: c.last_inbound_at.map(time),
        last_inbound_error: refused
            .filter(|(at, _)| c.last_inbound_at.is_none_or(|l| *at > l))
            .map(|(_, e)| e),
        last_outbound_at: c.last_outbound_at.map(time),
        last_outbound_error: c.last_outbound_error.clone(),
        created_at: time(c.created_at),
        updated_at: time(c.updated_at),
    }
}

/// The address platforms see: the `public_url` setting, else this request's
/// host over http.
fn public_url(state: &AppState, headers: &HeaderMap) -> String {
    if !state.public_url.is_empty() {
        return state.public_url.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// `POST /v1/bots/{bot}/channels` body: `kind` and the fields that kind
/// takes.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateChannel {
    /// `whatsapp`, `telegram`, `twilio` or `messenger`.
    pub kind: String,
    /// A name for people (at most 200 characters).
    pub name: Option<String>,
    /// Telegram: call `setWebhook` with the inbound URL and `secret_token` now.
    pub register: Option<bool>,
    #[serde(flatten)]
    #[schema(inline)]
    /// The kind's fields.
    pub fields: Fields,
}

/// A channel's fields; each kind takes its own (see `docs/CHANNELS.md`).
#[derive(Deserialize, ToSchema, Default)]
pub struct Fields {
    /// WhatsApp: the number's id in the Cloud API.
    pub phone_number_id: Option<String>,
    /// WhatsApp: access token (write-only).
    pub access_token: Option<String>,
    /// WhatsApp, Messenger: the Meta app secret (write-only).
    pub app_secret: Option<String>,
    /// WhatsApp, Messenger: the handshake's verify token.
    pub verify_token: Option<String>,
    /// Telegram: the bot token (write-only).
    pub bot_token: Option<String>,
    /// Telegram: the webhook secret token, 1–256 of `A-Za-z0-9_-` (write-only).
    pub secret_token: Option<String>,
    /// Twilio: `AC…`.
    pub account_sid: Option<String>,
    /// Twilio: auth token (write-only).
    pub auth_token: Option<String>,
    /// Twilio: `+E164` or `whatsapp:+E164`.
    pub from: Option<String>,
    /// Messenger: the page id.
    pub page_id: Option<String>,
    /// Messenger: page access token (write-only).
    pub page_access_token: Option<String>,
    /// The platform API's base URL; the platform's own when absent.
    pub api_base: Option<String>,
}

impl Fields {
    fn into_fields(self) -> ChannelFields {
        ChannelFields {
            phone_number_id: self.phone_number_id,
            access_token: self.access_token.map(Secret::new),
            app_secret: self.app_secret.map(Secret::new),
            verify_token: self.verify_token,
            bot_token: self.bot_token.map(Secret::new),
            secret_token: self.secret_token.map(Secret::new),
            account_sid: self.account_sid,
            auth_token: self.auth_token.map(Secret::new),
            from: self.from,
            page_id: self.page_id,
            page_access_token: self.page_access_token.map(Secret::new),
            api_base: self.api_base,
        }
    }
}

/// `PATCH /v1/channels/{id}` body: a new name, and any field of the
/// channel's kind (absent ones stay; secrets are replaced when given).
#[derive(Deserialize, ToSchema)]
pub struct UpdateChannel {
    /// A new name.
    pub name: Option<String>,
    #[serde(flatten)]
    #[schema(inline)]
    /// Fields to change.
    pub fields: Fields,
}

fn check_name(name: Option<&str>) -> ApiResult<Option<String>> {
    match name {
        Some(n) if n.chars().count() > 200 || n.chars().any(char::is_control) => {
            Err(ApiError::unprocessable(
                "name must be at most 200 characters without control characters",
            ))
        }
        other => Ok(other.map(str::to_owned)),
    }
}

/// Unknown keys are refused: `flatten` cannot say so itself.
fn refuse_unknown(body: &Value, extra: &[&str]) -> ApiResult<()> {
    const KNOWN: [&str; 12] = [
        "phone_number_id",
        "access_token",
        "app_secret",
        "verify_token",
        "bot_token",
        "secret_token",
        "account_sid",
        "auth_token",
        "from",
        "page_id",
        "page_access_token",
        "api_base",
    ];
    for k in body.as_object().into_iter().flatten().map(|(k, _)| k) {
        if !KNOWN.contains(&k.as_str()) && !extra.contains(&k.as_str()) {
            return Err(ApiError::unprocessable(format!(
                "unknown field `{k}`; a channel takes kind, name, {} and api_base",
                KNOWN[..11].join(", ")
            )));
        }
    }
    Ok(())
}

/// A channel the caller may see, or 404.
async fn channel_for(state: &AppState, auth: &Auth, id: &str) -> ApiResult<ChannelRow> {
    let not_found = || ApiError::not_found(format!("channel {id:?} not found"));
    let c = state
        .store
        .get_channel(&auth.0.account_id, id)
        .await
        .or_not_found(not_found)?;
    if !auth.0.may_use_bot(&c.bot_id) {
        return Err(not_found());
    }
    Ok(c)
}

/// Puts a bot on a messaging platform. The answer's `inbound_url` is what
/// the platform must call; secrets are never shown again.
#[utoipa::path(post, path = "/v1/bots/{bot}/channels", tag = "channels", params(("bot" = String, Path)),
    request_body = CreateChannel,
    responses((status = 201, body = ChannelView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 502, body = ErrorBody, description = "register: Telegram could not be reached")),
    security(("bearer" = [])))]
pub async fn create_channel(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
    headers: HeaderMap,
    ApiJson(raw): ApiJson<Value>,
) -> ApiResult<(StatusCode, Json<ChannelView>)> {
    let p = auth.bot(&bot)?.clone();
    refuse_unknown(&raw, &["kind", "name", "register"])?;
    let body: CreateChannel = super::extract::parse_json(raw.to_string().as_bytes())?;
    let kind = ChannelKind::parse(&body.kind).ok_or_else(|| {
        ApiError::unprocessable(format!(
            "kind must be one of whatsapp, telegram, twilio, messenger; got {:?}",
            body.kind
        ))
    })?;
    let name = check_name(body.name.as_deref())?.unwrap_or_default();
    let config = ChannelConfig::create(kind, &body.fields.into_fields())
        .map_err(|e| ApiError::unprocessable(e.0))?;
    load(&state, &p.account_id, &bot).await?;
    let id = new_id("ch");
    if body.register == Some(true) {
        let ChannelConfig::Telegram(tg) = &config else {
            return Err(ApiError::unprocessable(
                "register is for Telegram channels; set the webhook URL in the platform's console for the others",
            ));
        };
        let url = format!("{}/channels/{id}/webhook", public_url(&state, &headers));
        register_telegram(&state, tg, &url).await?;
    }
    let row = state
        .store
        .create_channel(&p.account_id, &bot, &id, &name, config)
        .await?;
    Ok((StatusCode::CREATED, Json(view(&state, &headers, &row))))
}

/// Calls Telegram's `setWebhook`; its refusal is a 422 with Telegram's
/// words, no answer a 502.
async fn register_telegram(
    state: &AppState,
    config: &telegram::Config,
    url: &str,
) -> ApiResult<()> {
    let req = telegram::set_webhook(config, url);
    let attempt = state
        .delivery
        .client()
        .send(OutboundRequest {
            method: reqwest::Method::POST,
            url: req.url,
            headers: req.headers,
            body: Some(req.body),
            timeout: None,
        })
        .await;
    let Some(status) = attempt.status else {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "platform_unreachable",
            format!(
                "could not reach Telegram to register the webhook: {}",
                ChannelConfig::Telegram(config.clone())
                    .redact(&attempt.error_message.unwrap_or_default())
            ),
        ));
    };
    match telegram::read_result(status, &attempt.response_body) {
        SendResult::Sent(_) => Ok(()),
        SendResult::Failed(text) | SendResult::Retry { reason: text, .. } => Err(
            ApiError::unprocessable(format!("Telegram refused setWebhook: {text}")),
        ),
    }
}

/// A bot's channels, oldest first.
#[utoipa::path(get, path = "/v1/bots/{bot}/channels", tag = "channels", params(("bot" = String, Path), PageQuery),
    responses((status = 200, body = List<ChannelView>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_channels(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<List<ChannelView>>> {
    let p = auth.bot(&bot)?.clone();
    let page = q.parse()?;
    load(&state, &p.account_id, &bot).await?;
    let rows = state.store.list_channels(&p.account_id, &bot, page).await?;
    Ok(Json(List::from_page(rows, |c| view(&state, &headers, &c))))
}

/// One channel.
#[utoipa::path(get, path = "/v1/channels/{id}", tag = "channels", params(("id" = String, Path)),
    responses((status = 200, body = ChannelView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_channel(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<ChannelView>> {
    let c = channel_for(&state, &auth, &id).await?;
    Ok(Json(view(&state, &headers, &c)))
}

/// Changes a channel's name or fields (its kind stays).
#[utoipa::path(patch, path = "/v1/channels/{id}", tag = "channels", params(("id" = String, Path)),
    request_body = UpdateChannel,
    responses((status = 200, body = ChannelView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_channel(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(raw): ApiJson<Value>,
) -> ApiResult<Json<ChannelView>> {
    refuse_unknown(&raw, &["name"])?;
    let body: UpdateChannel = super::extract::parse_json(raw.to_string().as_bytes())?;
    let mut c = channel_for(&state, &auth, &id).await?;
    if let Some(n) = check_name(body.name.as_deref())? {
        c.name = n;
    }
    c.config = c
        .config
        .patched(&body.fields.into_fields())
        .map_err(|e| ApiError::unprocessable(e.0))?;
    let row = state.store.update_channel(c).await?;
    state.channels.forget(&id);
    Ok(Json(view(&state, &headers, &row)))
}

/// Deletes a channel with its messages and their log.
#[utoipa::path(delete, path = "/v1/channels/{id}", tag = "channels", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_channel(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let c = channel_for(&state, &auth, &id).await?;
    state
        .store
        .delete_channel(&auth.0.account_id, &c.id)
        .await?;
    state.channels.forget(&id);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/channels/{id}/messages` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestMessage {
    /// The person, in the platform's terms: WhatsApp `wa_id` (digits),
    /// Telegram chat id, Twilio number (`+E164` or `whatsapp:+E164`),
    /// Messenger PSID.
    pub to: String,
    /// The text (split when longer than the platform takes). Give `text` or
    /// `template`.
    #[serde(default)]
    pub text: String,
    /// WhatsApp only: an approved template (`name`, `language`, body
    /// `params` in order), which may be sent outside the 24-hour window.
    pub template: Option<TemplateBody>,
}

/// An approved WhatsApp template to send.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    /// The template's name as approved (`order_update`).
    pub name: String,
    /// The language code it was approved in (`en_US`).
    pub language: String,
    /// The body's `{{1}}`, `{{2}}`, … values, in order.
    #[serde(default)]
    pub params: Vec<String>,
}

/// The messages queued.
#[derive(Serialize, ToSchema)]
pub struct Queued {
    /// Outbox ids (`out_…`), one per platform message.
    pub messages: Vec<String>,
}

/// Sends a text through the channel (the console's "send a test message"),
/// or on WhatsApp an approved template. It goes through the outbox like a
/// bot's reply; its outcome shows in the channel's messages. WhatsApp
/// refuses a text outside the 24-hour window, not a template.
#[utoipa::path(post, path = "/v1/channels/{id}/messages", tag = "channels", params(("id" = String, Path)),
    request_body = TestMessage,
    responses((status = 202, body = Queued), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn send_message(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<TestMessage>,
) -> ApiResult<(StatusCode, Json<Queued>)> {
    let c = channel_for(&state, &auth, &id).await?;
    crate::channels::check_plain("to", &body.to, 128).map_err(|e| ApiError::unprocessable(e.0))?;
    let text = body.text.trim();
    let template = body
        .template
        .as_ref()
        .map(|t| crate::channels::whatsapp::Template {
            name: t.name.clone(),
            language: t.language.clone(),
            params: t.params.clone(),
        });
    if let Some(t) = &template {
        if c.kind() != ChannelKind::Whatsapp {
            return Err(ApiError::unprocessable(
                "template messages are WhatsApp's; send text on this channel",
            ));
        }
        if !text.is_empty() {
            return Err(ApiError::unprocessable("give text or template, not both"));
        }
        t.check()
            .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    } else if text.is_empty() || text.chars().count() > 16_384 {
        return Err(ApiError::unprocessable(
            "text must be 1 to 16384 characters",
        ));
    }
    let known = state.store.channel_contact(&c.id, &body.to).await?;
    let now = crate::store::now_ms();
    if c.kind() == ChannelKind::Whatsapp
        && body.template.is_none()
        && known
            .as_ref()
            .is_none_or(|(_, at)| now - at > crate::delivery::outbox::WHATSAPP_WINDOW_MS)
    {
        return Err(ApiError::unprocessable(format!(
            "{} has not written to this WhatsApp number in the last 24 hours: outside that window WhatsApp accepts only template messages",
            body.to
        )));
    }
    let texts = vec![text.to_owned()];
    let lane = format!("{}:{}", c.id, body.to);
    let outgoing = match &template {
        Some(t) => vec![crate::channels::whatsapp::render_template(&body.to, t)],
        None => c.config.render(
            &body.to,
            &Reply {
                texts: &texts,
                options: &[],
            },
        ),
    };
    let rows: Vec<OutboxWrite> = outgoing
        .into_iter()
        .map(|outgoing| OutboxWrite {
            id: new_id("out"),
            lane: lane.clone(),
            conversation_id: None,
            contact_id: known.as_ref().map(|(contact, _)| contact.clone()),
            recipient: body.to.clone(),
            outgoing,
        })
        .collect();
    let ids = rows.iter().map(|r| r.id.clone()).collect();
    state
        .store
        .enqueue_messages(Arc::new(c), rows, known.map(|(_, at)| at))
        .await?;
    Ok((StatusCode::ACCEPTED, Json(Queued { messages: ids })))
}

/// `?status=&conversation_id=` and paging.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// `pending`, `retrying`, `sent`, `delivered`, `read` or `failed`.
    pub status: Option<String>,
    /// Only this conversation's.
    pub conversation_id: Option<String>,
    /// Items per page, 1–200 (default 50).
    #[param(value_type = Option<i64>)]
    pub limit: Option<String>,
    /// `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

/// One message in a channel's outbox.
#[derive(Serialize, ToSchema)]
pub struct ChannelMessageView {
    /// `out_…`
    pub id: String,
    /// The conversation, when the message is a bot's reply.
    pub conversation_id: Option<String>,
    /// Who it goes to.
    pub recipient: String,
    /// The platform operation (`messages`, `sendMessage`, `Messages.json`…).
    pub op: String,
    /// The request body sent to the platform.
    #[schema(value_type = Object)]
    pub body: Value,
    /// `pending`, `retrying`, `sent`, `delivered`, `read`, `failed`.
    pub status: String,
    /// The platform's id of the message, once sent.
    pub platform_message_id: Option<String>,
    /// Attempts made.
    pub attempts: i64,
    /// The last failure, in the platform's words.
    pub last_error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<MessageRow> for ChannelMessageView {
    fn from(m: MessageRow) -> Self {
        Self {
            id: m.id,
            conversation_id: m.conversation_id,
            recipient: m.recipient,
            op: m.op,
            body: serde_json::from_str(&m.body).unwrap_or(Value::Null),
            status: m.status,
            platform_message_id: m.platform_message_id,
            attempts: m.attempts,
            last_error: m.last_error,
            created_at: time(m.created_at),
            updated_at: time(m.updated_at),
        }
    }
}

/// The channel's outbox, newest first: every reply and test message with
/// its status and last error.
#[utoipa::path(get, path = "/v1/channels/{id}/messages", tag = "channels", params(("id" = String, Path), MessagesQuery),
    responses((status = 200, body = List<ChannelMessageView>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_messages(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<MessagesQuery>,
) -> ApiResult<Json<List<ChannelMessageView>>> {
    let c = channel_for(&state, &auth, &id).await?;
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .parse()?;
    const STATUSES: [&str; 6] = ["pending", "retrying", "sent", "delivered", "read", "failed"];
    if let Some(s) = &q.status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "status must be one of {}; got {s:?}",
            STATUSES.join(", ")
        )));
    }
    let rows = state
        .store
        .list_channel_messages(
            &c.id,
            MessageFilter {
                status: q.status,
                conversation_id: q.conversation_id,
            },
            page,
        )
        .await?;
    Ok(Json(List::from_page(rows, ChannelMessageView::from)))
}

/// One send attempt of a channel message.
#[derive(Serialize, ToSchema)]
pub struct ChannelAttemptView {
    /// `catt_…`
    pub id: String,
    /// RFC 3339.
    pub started_at: String,
    /// How long it took.
    pub duration_ms: i64,
    /// The platform's HTTP status, when it answered.
    pub status: Option<i64>,
    /// The first 16 KiB of its answer.
    pub response_body: String,
    /// `timeout`, `connect`, `dns`, `blocked`, `tls`, `status`, `invalid`,
    /// `window` (outside WhatsApp's 24 hours); null on success.
    pub error_kind: Option<String>,
    /// The failure, in the platform's words when it gave some.
    pub error: Option<String>,
    /// The node that made it.
    pub node: Option<String>,
}

/// Every attempt to send one message of the channel's outbox, newest first.
#[utoipa::path(get, path = "/v1/channels/{id}/messages/{message}/attempts", tag = "channels",
    params(("id" = String, Path), ("message" = String, Path)),
    responses((status = 200, body = List<ChannelAttemptView>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_message_attempts(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, message)): Path<(String, String)>,
) -> ApiResult<Json<List<ChannelAttemptView>>> {
    let c = channel_for(&state, &auth, &id).await?;
    let attempts = state.store.list_message_attempts(&c.id, &message).await?;
    Ok(Json(List {
        data: attempts
            .into_iter()
            .map(|a| ChannelAttemptView {
                id: a.id,
                started_at: time(a.started_at),
                duration_ms: a.duration_ms,
                status: a.status,
                response_body: a.response_body,
                error_kind: a.error_kind,
                error: a.error_message,
                node: a.node,
            })
            .collect(),
        next_cursor: None,
    }))
}

fn refused(state: &AppState, channel: &ChannelRow, e: &VerifyError) -> Response {
    let kind = channel.kind().as_str();
    crate::telemetry::channel_webhook_refused(kind, &channel.id);
    state.channels.note_refusal(&channel.id, e.to_string());
    tracing::warn!(channel = %channel.id, kind, reason = %e, "channel webhook refused");
    let err = match e {
        VerifyError::Missing(_) => ApiError::unauthorized(e.to_string()),
        VerifyError::Mismatch(_) => ApiError::forbidden(e.to_string()),
    };
    err.into_response()
}

async fn webhook_channel(state: &AppState, id: &str) -> ApiResult<Arc<ChannelRow>> {
    state
        .channels
        .get(&state.store, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("channel {id:?} not found")))
}

/// Meta's subscription handshake (WhatsApp, Messenger): answers
/// `hub.challenge` when `hub.verify_token` matches, else 403.
pub async fn webhook_handshake(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OriginalUri(uri): OriginalUri,
) -> ApiResult<Response> {
    let c = webhook_channel(&state, &id).await?;
    let Some(token) = c.config.verify_token() else {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this channel's platform calls with POST only",
        ));
    };
    match meta::handshake(token, uri.query().unwrap_or("")) {
        Ok(challenge) => Ok(([(header::CONTENT_TYPE, "text/plain")], challenge).into_response()),
        Err(e) => Ok(refused(&state, &c, &e)),
    }
}

/// A platform's webhook: verified on the raw bytes, stored, answered 200,
/// then processed.
pub async fn webhook_receive(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let c = webhook_channel(&state, &id).await?;
    let url = format!(
        "{}{}",
        public_url(&state, &headers),
        uri.path_and_query().map_or(uri.path(), |p| p.as_str())
    );
    let header_list: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let req = WebhookRequest {
        url: &url,
        headers: &header_list,
        body: &body,
    };
    if let Err(e) = c.config.verify(&req) {
        return Ok(refused(&state, &c, &e));
    }
    let received = c
        .config
        .parse(&req)
        .map_err(|e| ApiError::bad_request(format!("could not read the webhook body: {e}")))?;
    let given = received.messages.len();
    let fresh = state
        .store
        .receive(&c, received.messages, received.statuses)
        .await?;
    crate::telemetry::channel_inbound(
        c.kind().as_str(),
        &c.id,
        fresh.len(),
        given.saturating_sub(fresh.len()),
    );
    Ok(match c.kind() {
        ChannelKind::Twilio => (
            [(header::CONTENT_TYPE, "text/xml")],
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>",
        )
            .into_response(),
        _ => "ok".into_response(),
    })
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/bots/{bot}/channels",
            get(list_channels).post(create_channel),
        )
        .route(
            "/v1/channels/{id}",
            get(get_channel)
                .patch(update_channel)
                .delete(delete_channel),
        )
        .route(
            "/v1/channels/{id}/messages",
            get(list_messages).post(send_message),
        )
        .route(
            "/v1/channels/{id}/messages/{message}/attempts",
            get(list_message_attempts),
        )
        .route(
            "/channels/{id}/webhook",
            get(webhook_handshake).post(webhook_receive),
        )
}
