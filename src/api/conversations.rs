//! `/v1/conversations`: the inbox across an account's bots, and a person's
//! hand in a conversation in handoff — answering it and giving it back to
//! the bot.
//!
//! A bot-scoped key sees and acts on its bot's conversations only; another
//! bot's conversation is a 404, as if it did not exist. Acting on a
//! conversation the bot is answering is a 409; releasing to a node the
//! main flow does not have is a 422.

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery, Auth};
use super::{AppState, time};
use crate::store::conversations::{ConversationRow, InboxFilter};
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// Statuses a conversation can have.
const STATUSES: [&str; 3] = ["active", "handoff", "completed"];
/// Channels a conversation can happen on.
const CHANNELS: [&str; 6] = ["api", "web", "whatsapp", "telegram", "twilio", "messenger"];

/// A conversation in the inbox.
#[derive(Serialize, ToSchema)]
pub struct InboxItem {
    /// `cnv_…`
    pub id: String,
    /// The bot.
    pub bot_id: String,
    /// The contact.
    pub contact_id: String,
    /// `active` (the bot answers), `handoff` (a person answers) or `completed`.
    pub status: String,
    /// `api`, `web`, `whatsapp`, `telegram`, `twilio` or `messenger`.
    pub channel: String,
    /// The node it is at.
    pub node: Option<String>,
    /// `main` or a campaign.
    pub flow: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339: the last turn, answer or release.
    pub updated_at: String,
}

impl From<ConversationRow> for InboxItem {
    fn from(c: ConversationRow) -> Self {
        let state: Value = serde_json::from_str(&c.state).unwrap_or(Value::Null);
        InboxItem {
            node: state["node"].as_str().map(str::to_owned),
            flow: state["flow"].as_str().unwrap_or("main").to_owned(),
            id: c.id,
            bot_id: c.bot_id,
            contact_id: c.contact_id,
            status: c.status,
            channel: c.channel,
            created_at: time(c.created_at),
            updated_at: time(c.updated_at),
        }
    }
}

/// `?status=&bot=&channel=&limit=`
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InboxQuery {
    /// `active`, `handoff` or `completed`.
    pub status: Option<String>,
    /// Only this bot's.
    pub bot: Option<String>,
    /// `api`, `web`, `whatsapp`, `telegram`, `twilio` or `messenger`.
    pub channel: Option<String>,
    /// Most items, 1–200 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
}

/// The inbox: an account's conversations, last activity first.
#[derive(Serialize, ToSchema)]
pub struct Inbox {
    /// The conversations.
    pub data: Vec<InboxItem>,
}

/// Lists conversations across the account's bots (a bot-scoped key: its
/// bot's), the most recently active first.
#[utoipa::path(get, path = "/v1/conversations", tag = "conversations", params(InboxQuery),
    responses((status = 200, body = Inbox), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_inbox(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<InboxQuery>,
) -> ApiResult<Json<Inbox>> {
    let p = &auth.0;
    let bot = match (&p.bot_id, q.bot) {
        (Some(scope), Some(asked)) if *scope != asked => {
            return Err(ApiError::not_found(format!("bot {asked:?} not found")));
        }
        (Some(scope), _) => Some(scope.clone()),
        (None, asked) => asked,
    };
    if let Some(s) = &q.status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "status must be active, handoff or completed, got {s:?}"
        )));
    }
    if let Some(c) = &q.channel
        && !CHANNELS.contains(&c.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "channel must be one of {}, got {c:?}",
            CHANNELS.join(", ")
        )));
    }
    let limit = match q.limit.as_deref() {
        None => 50,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("limit must be a number from 1 to 200, got {l:?}"))
            })?,
    };
    let rows = state
        .store
        .inbox(
            &p.account_id,
            InboxFilter {
                bot_id: bot,
                status: q.status,
                channel: q.channel,
                limit,
            },
        )
        .await?;
    Ok(Json(Inbox {
        data: rows.into_iter().map(InboxItem::from).collect(),
    }))
}

/// The conversation `id` if the key may see it, else a 404.
async fn visible(state: &AppState, auth: &Auth, id: &str) -> ApiResult<ConversationRow> {
    let missing = || ApiError::not_found(format!("conversation {id:?} not found"));
    let conv = state
        .store
        .find_conversation(&auth.0.account_id, id)
        .await?
        .ok_or_else(missing)?;
    if !auth.0.may_use_bot(&conv.bot_id) {
        return Err(missing());
    }
    Ok(conv)
}

/// `POST /v1/conversations/{id}/messages` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentMessage {
    /// What the person writes to the contact: 1 to 4096 characters.
    #[schema(max_length = 4096)]
    pub text: String,
}

/// What a person's action did.
#[derive(Serialize, ToSchema)]
pub struct HandoffResult {
    /// The conversation.
    pub conversation_id: String,
    /// Its status now: `handoff`, `active` or `completed`.
    pub status: String,
    /// What the bot said on release (empty for an answer).
    pub replies: Vec<String>,
    /// Ids of the events written.
    pub events: Vec<String>,
}

/// Answers a conversation in handoff as a person: stored in the transcript
/// (`agent`), sent on the conversation's channel (a messaging channel's
/// outbox; the chat API's and widget's next poll), `agent.message`.
#[utoipa::path(post, path = "/v1/conversations/{id}/messages", tag = "conversations",
    params(("id" = String, Path)), request_body = AgentMessage,
    responses((status = 200, body = HandoffResult), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The conversation is not in handoff"),
        (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn send_agent_message(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AgentMessage>,
) -> ApiResult<Json<HandoffResult>> {
    let conv = visible(&state, &auth, &id).await?;
    let out = state
        .chat
        .agent_message(
            &state.store,
            state.delivery.client(),
            &auth.0.account_id,
            &conv.id,
            &body.text,
        )
        .await?;
    Ok(Json(HandoffResult {
        conversation_id: conv.id,
        status: out.status,
        replies: out.replies,
        events: out.event_ids,
    }))
}

/// `POST /v1/conversations/{id}/release` body.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// A node of the main flow to go on from; its start when absent.
    pub node: Option<String>,
}

/// Gives a conversation in handoff back to the bot at a node of the main
/// flow (or its start): `conversation.released`, and the bot's replies
/// from there go out like an answer's.
#[utoipa::path(post, path = "/v1/conversations/{id}/release", tag = "conversations",
    params(("id" = String, Path)), request_body(content = Release, description = "Optional: an empty body releases to the start"),
    responses((status = 200, body = HandoffResult), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The conversation is not in handoff"),
        (status = 422, body = ErrorBody, description = "No such node in the main flow")),
    security(("bearer" = [])))]
pub async fn release(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<HandoffResult>> {
    let body: Release = if body.iter().all(u8::is_ascii_whitespace) {
        Release::default()
    } else {
        super::extract::parse_json(&body)?
    };
    let conv = visible(&state, &auth, &id).await?;
    let out = state
        .chat
        .release(
            &state.store,
            state.delivery.client(),
            &auth.0.account_id,
            &conv.id,
            body.node.as_deref(),
        )
        .await?;
    Ok(Json(HandoffResult {
        conversation_id: conv.id,
        status: out.status,
        replies: out.replies,
        events: out.event_ids,
    }))
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/conversations", get(list_inbox))
        .route("/v1/conversations/{id}/messages", post(send_agent_message))
        .route("/v1/conversations/{id}/release", post(release))
}
