//! Broadcasts: one message to every contact of a segment, on each
//! contact's messaging channel. `POST /v1/bots/{bot}/broadcasts` schedules
//! one (now when `schedule_at` is absent); the worker on every node starts
//! it at its time — choosing the recipients from the segment's filter then
//! — and sends them at its `rate`. `GET /v1/broadcasts/{id}` shows its state
//! and counts; cancel, pause and resume change its course.
//!
//! A broadcast sends a text (with a WhatsApp template for those outside the
//! 24-hour window), or starts a campaign of the bot's flow for each
//! recipient. `POST /v1/bots/{bot}/broadcasts/preview` renders a text for a
//! sample recipient with the merge-tag code the send uses.

use super::bots::load;
use super::contacts::ContactView;
use super::error::{ApiError, ApiResult, ErrorBody, OrNotFound};
use super::extract::{ApiJson, ApiQuery, Auth, PageQuery};
use super::{AppState, List, time};
use crate::domain::broadcast::{self, BroadcastAction, BroadcastMessage, TemplateMessage};
use crate::domain::people::ContactFilter;
use crate::store::broadcasts::BroadcastRow;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most messages per second a broadcast may ask for.
pub const MAX_RATE: u32 = 1000;

/// How a broadcast's recipients stand.
#[derive(Serialize, ToSchema)]
pub struct CountsView {
    /// Not handled yet.
    pub pending: u64,
    /// Written to their channel's outbox (and not failed since).
    pub sent: u64,
    /// Their message failed on the platform.
    pub failed: u64,
    /// Not sent: opted out, no messaging channel, or outside WhatsApp's
    /// 24-hour window without a template (a campaign broadcast: always
    /// outside it, and also when a person answers the conversation).
    pub skipped: u64,
}

/// A WhatsApp template on the wire.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateView {
    /// The template's name as approved (`promo_june`).
    pub name: String,
    /// The language code it was approved in (`en_US`).
    pub language: String,
    /// The body's `{{1}}`, `{{2}}`, … values in order; merge tags allowed.
    #[serde(default)]
    pub params: Vec<String>,
}

/// A broadcast on the wire.
#[derive(Serialize, ToSchema)]
pub struct BroadcastView {
    /// `bc_…`
    pub id: String,
    /// The bot.
    pub bot_id: String,
    /// The segment whose contacts receive it.
    pub segment_id: String,
    /// The text, with merge tags over `user` and `contact` (empty for a
    /// campaign broadcast).
    pub message: String,
    /// What goes outside WhatsApp's 24-hour window.
    pub template: Option<TemplateView>,
    /// The campaign of the bot's flow each recipient is started at.
    pub campaign: Option<String>,
    /// `scheduled`, `running`, `paused`, `completed` or `cancelled`.
    pub state: String,
    /// When it starts (RFC 3339).
    pub schedule_at: String,
    /// Most messages per second.
    pub rate: i64,
    /// How its recipients stand (all zero before it starts).
    pub counts: CountsView,
    /// When its recipients were chosen.
    pub started_at: Option<String>,
    /// When it completed or was cancelled.
    pub finished_at: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

async fn view(state: &AppState, b: BroadcastRow) -> ApiResult<BroadcastView> {
    let c = state.store.broadcast_counts(&b.id).await?;
    Ok(BroadcastView {
        id: b.id,
        bot_id: b.bot_id,
        segment_id: b.segment_id,
        message: b.message.text,
        template: b.message.template.map(|t| TemplateView {
            name: t.name,
            language: t.language,
            params: t.params,
        }),
        campaign: b.message.campaign,
        state: b.state.as_str().to_owned(),
        schedule_at: time(b.schedule_at),
        rate: b.rate,
        counts: CountsView {
            pending: c.pending,
            sent: c.sent,
            failed: c.failed,
            skipped: c.skipped,
        },
        started_at: b.started_at.map(time),
        finished_at: b.finished_at.map(time),
        created_at: time(b.created_at),
    })
}

/// `POST` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBroadcast {
    /// The segment (`seg_…`) of the bot whose contacts receive it.
    pub segment: String,
    /// 1 to 4,096 characters; merge tags over `user` and `contact`
    /// (`Hi {{user.first_name}}`). Give `message` (with an optional
    /// `template`) or `campaign`.
    pub message: Option<String>,
    /// A campaign of the bot's flow: each recipient's conversation starts
    /// (or restarts) there, and the flow's replies are sent like a chat
    /// turn's. On WhatsApp only contacts inside the 24-hour window get it.
    pub campaign: Option<String>,
    /// When to start (RFC 3339); now when absent.
    pub schedule_at: Option<String>,
    /// Most messages per second, 1 to 1,000; the server's default when
    /// absent.
    pub rate: Option<u32>,
    /// WhatsApp: an approved template, sent to contacts who have not
    /// written in the last 24 hours (without one they are skipped).
    pub template: Option<TemplateView>,
}

fn check_text(text: &str) -> ApiResult<String> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > 4096 {
        return Err(ApiError::unprocessable(
            "message must be 1 to 4096 characters",
        ));
    }
    broadcast::check_tags(text).map_err(|e| ApiError::unprocessable(format!("message: {e}")))?;
    Ok(text.to_owned())
}

fn check_template(t: Option<&TemplateView>) -> ApiResult<Option<TemplateMessage>> {
    let Some(t) = t else { return Ok(None) };
    let checked = crate::channels::whatsapp::Template {
        name: t.name.clone(),
        language: t.language.clone(),
        params: t.params.clone(),
    };
    checked
        .check()
        .map_err(|e| ApiError::unprocessable(format!("template: {e}")))?;
    for p in &t.params {
        broadcast::check_tags(p)
            .map_err(|e| ApiError::unprocessable(format!("template.params: {e}")))?;
    }
    Ok(Some(TemplateMessage {
        name: t.name.clone(),
        language: t.language.clone(),
        params: t.params.clone(),
    }))
}

async fn check_message(
    state: &AppState,
    account: &str,
    bot: &str,
    body: &CreateBroadcast,
) -> ApiResult<BroadcastMessage> {
    match (&body.message, &body.template, &body.campaign) {
        (_, _, Some(campaign)) => {
            if body.message.is_some() || body.template.is_some() {
                return Err(ApiError::unprocessable(
                    "give message (with an optional template) or campaign, not both: a campaign sends its flow's messages",
                ));
            }
            let def = state
                .chat
                .definitions()
                .load(&state.store, account, bot)
                .await
                .map_err(|e| match e {
                    crate::runtime::RuntimeError::NotReady(m) => {
                        ApiError::unprocessable(format!("campaign: {m}"))
                    }
                    other => other.into(),
                })?;
            if !def.flow.campaigns.contains_key(campaign) {
                let known: Vec<&str> = def.flow.campaigns.keys().map(String::as_str).collect();
                return Err(ApiError::unprocessable(format!(
                    "campaign {campaign:?} is not a campaign of bot {bot:?}'s flow (its campaigns: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                )));
            }
            Ok(BroadcastMessage {
                text: String::new(),
                template: None,
                campaign: Some(campaign.clone()),
            })
        }
        (Some(text), template, None) => Ok(BroadcastMessage {
            text: check_text(text)?,
            template: check_template(template.as_ref())?,
            campaign: None,
        }),
        (None, _, None) => Err(ApiError::unprocessable(
            "give message (with an optional template) or campaign",
        )),
    }
}

/// Schedules a broadcast to a segment.
#[utoipa::path(post, path = "/v1/bots/{bot}/broadcasts", tag = "broadcasts",
    params(("bot" = String, Path)), request_body = CreateBroadcast,
    responses((status = 201, body = BroadcastView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_broadcast(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
    ApiJson(body): ApiJson<CreateBroadcast>,
) -> ApiResult<(StatusCode, Json<BroadcastView>)> {
    let p = auth.bot(&bot)?;
    load(&state, &p.account_id, &bot).await?;
    let message = check_message(&state, &p.account_id, &bot, &body).await?;
    let now = crate::store::now_ms();
    let schedule_at = match body.schedule_at.as_deref() {
        None => now,
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|e| {
                ApiError::unprocessable(format!(
                    "schedule_at must be an RFC 3339 time such as 2026-12-24T09:00:00Z, got {s:?} ({e})"
                ))
            })?
            .timestamp_millis()
            .max(now),
    };
    let rate = body.rate.unwrap_or(state.broadcast_rate);
    if !(1..=MAX_RATE).contains(&rate) {
        return Err(ApiError::unprocessable(format!(
            "rate must be 1 to {MAX_RATE} messages per second, got {rate}"
        )));
    }
    state
        .store
        .get_segment(&p.account_id, &bot, &body.segment)
        .await
        .or_not_found(|| {
            ApiError::unprocessable(format!(
                "segment {:?} is not a segment of bot {bot:?}",
                body.segment
            ))
        })?;
    let row = state
        .store
        .create_broadcast(
            &p.account_id,
            &bot,
            &body.segment,
            message,
            schedule_at,
            i64::from(rate),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(view(&state, row).await?)))
}

/// `POST …/broadcasts/preview` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewBroadcast {
    /// The segment (`seg_…`) of the bot.
    pub segment: String,
    /// The text to render, as in a broadcast.
    pub message: Option<String>,
    /// A template whose parameters to render, as in a broadcast.
    pub template: Option<TemplateView>,
    /// A contact (`ct_…`) of the bot to render for; the segment's first
    /// when absent.
    pub contact: Option<String>,
}

/// One recipient's message, rendered.
#[derive(Serialize, ToSchema)]
pub struct SampleView {
    /// The recipient.
    pub contact: ContactView,
    /// The message as it would receive it (when a `message` was given).
    pub text: Option<String>,
    /// The template's parameters as it would receive them.
    pub params: Vec<String>,
}

/// What a broadcast to a segment would send.
#[derive(Serialize, ToSchema)]
pub struct PreviewView {
    /// How many contacts the segment matches now.
    pub count: u64,
    /// The message for the sample recipient; `null` when the segment
    /// matches nobody (and no `contact` was named).
    pub sample: Option<SampleView>,
}

/// Renders a broadcast's text for one recipient (the segment's first, or a
/// named contact), with the merge-tag code the send uses; nothing is sent.
#[utoipa::path(post, path = "/v1/bots/{bot}/broadcasts/preview", tag = "broadcasts",
    params(("bot" = String, Path)), request_body = PreviewBroadcast,
    responses((status = 200, body = PreviewView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn preview_broadcast(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
    ApiJson(body): ApiJson<PreviewBroadcast>,
) -> ApiResult<Json<PreviewView>> {
    let p = auth.bot(&bot)?;
    load(&state, &p.account_id, &bot).await?;
    if body.message.is_none() && body.template.is_none() {
        return Err(ApiError::unprocessable(
            "give message or template to preview",
        ));
    }
    let message = BroadcastMessage {
        text: match &body.message {
            Some(t) => check_text(t)?,
            None => String::new(),
        },
        template: check_template(body.template.as_ref())?,
        campaign: None,
    };
    let segment = state
        .store
        .get_segment(&p.account_id, &bot, &body.segment)
        .await
        .or_not_found(|| {
            ApiError::unprocessable(format!(
                "segment {:?} is not a segment of bot {bot:?}",
                body.segment
            ))
        })?;
    let filter = ContactFilter::compile(&segment.filter).map_err(|e| {
        ApiError::unprocessable(format!("segment: its filter no longer compiles: {e}"))
    })?;
    let count = state
        .store
        .count_contacts(&p.account_id, &bot, filter.clone())
        .await?;
    let contact = match &body.contact {
        Some(id) => {
            let not_of_bot = || {
                ApiError::unprocessable(format!("contact {id:?} is not a contact of bot {bot:?}"))
            };
            let c = state
                .store
                .get_contact(&p.account_id, id)
                .await
                .or_not_found(not_of_bot)?;
            if c.bot_id != bot {
                return Err(not_of_bot());
            }
            Some(c)
        }
        None => state
            .store
            .filter_contacts(&p.account_id, &bot, Some(filter), None, None, 1)
            .await?
            .items
            .into_iter()
            .next(),
    };
    let sample = contact.map(|c| {
        let r = broadcast::personalise(&message, &c.facts());
        SampleView {
            contact: ContactView::from(c),
            text: body.message.is_some().then_some(r.text),
            params: r.params,
        }
    });
    Ok(Json(PreviewView { count, sample }))
}

/// A bot's broadcasts, newest first.
#[utoipa::path(get, path = "/v1/bots/{bot}/broadcasts", tag = "broadcasts",
    params(("bot" = String, Path), PageQuery),
    responses((status = 200, body = List<BroadcastView>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_broadcasts(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<List<BroadcastView>>> {
    let p = auth.bot(&bot)?;
    load(&state, &p.account_id, &bot).await?;
    let rows = state
        .store
        .list_broadcasts(&p.account_id, &bot, page.parse()?)
        .await?;
    let mut data = Vec::with_capacity(rows.items.len());
    for b in rows.items {
        data.push(view(&state, b).await?);
    }
    Ok(Json(List {
        data,
        next_cursor: rows
            .next_cursor
            .as_deref()
            .map(super::extract::encode_cursor),
    }))
}

async fn visible(state: &AppState, auth: &Auth, id: &str) -> ApiResult<BroadcastRow> {
    let missing = || ApiError::not_found(format!("broadcast {id:?} not found"));
    let row = state
        .store
        .get_broadcast(&auth.0.account_id, id)
        .await
        .or_not_found(missing)?;
    if !auth.0.may_use_bot(&row.bot_id) {
        return Err(missing());
    }
    Ok(row)
}

/// One broadcast, its state and its counts.
#[utoipa::path(get, path = "/v1/broadcasts/{id}", tag = "broadcasts",
    params(("id" = String, Path)),
    responses((status = 200, body = BroadcastView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_broadcast(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<BroadcastView>> {
    let row = visible(&state, &auth, &id).await?;
    Ok(Json(view(&state, row).await?))
}

async fn act(
    state: AppState,
    auth: Auth,
    id: String,
    action: BroadcastAction,
) -> ApiResult<Json<BroadcastView>> {
    visible(&state, &auth, &id).await?;
    let row = state
        .store
        .act_on_broadcast(&auth.0.account_id, &id, action)
        .await
        .or_not_found(|| ApiError::not_found(format!("broadcast {id:?} not found")))?;
    Ok(Json(view(&state, row).await?))
}

/// Stops a broadcast for good: recipients not sent yet never are.
#[utoipa::path(post, path = "/v1/broadcasts/{id}/cancel", tag = "broadcasts",
    params(("id" = String, Path)),
    responses((status = 200, body = BroadcastView), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Already completed or cancelled")),
    security(("bearer" = [])))]
pub async fn cancel_broadcast(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<BroadcastView>> {
    act(state, auth, id, BroadcastAction::Cancel).await
}

/// Stops a scheduled or running broadcast until it is resumed.
#[utoipa::path(post, path = "/v1/broadcasts/{id}/pause", tag = "broadcasts",
    params(("id" = String, Path)),
    responses((status = 200, body = BroadcastView), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Not scheduled or running")),
    security(("bearer" = [])))]
pub async fn pause_broadcast(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<BroadcastView>> {
    act(state, auth, id, BroadcastAction::Pause).await
}

/// Goes on with a paused broadcast where it stopped.
#[utoipa::path(post, path = "/v1/broadcasts/{id}/resume", tag = "broadcasts",
    params(("id" = String, Path)),
    responses((status = 200, body = BroadcastView), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Not paused")),
    security(("bearer" = [])))]
pub async fn resume_broadcast(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<BroadcastView>> {
    act(state, auth, id, BroadcastAction::Resume).await
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/bots/{bot}/broadcasts",
            get(list_broadcasts).post(create_broadcast),
        )
        .route("/v1/bots/{bot}/broadcasts/preview", post(preview_broadcast))
        .route("/v1/broadcasts/{id}", get(get_broadcast))
        .route("/v1/broadcasts/{id}/cancel", post(cancel_broadcast))
        .route("/v1/broadcasts/{id}/pause", post(pause_broadcast))
        .route("/v1/broadcasts/{id}/resume", post(resume_broadcast))
}
