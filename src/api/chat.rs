//! `/v1/bots/{bot}/chat` and `/v1/bots/{bot}/conversations`: talk to a bot
//! and read what was said.
//!
//! The chat route also answers web pages (CORS): the chat widget calls it
//! with a publishable key from a visitor's browser, and only an origin
//! listed on that key may read the answer. Such a visitor is `contact.id`
//! only, a random id the widget keeps, stored as `web:<id>`; secret keys
//! may not name ids with that prefix (nor the messaging channels' ones), so
//! the two kinds of contact never share a conversation.
//!
//! A message longer than [`MAX_TEXT`] characters is refused with a 422
//! before anything is stored.

use super::bots::load;
use super::error::{ApiError, ApiResult, ErrorBody, OrNotFound};
use super::extract::{ApiJson, ApiQuery, Auth, ChatAuth, ChatPollAuth, PageQuery};
use super::{AppState, List, time};
use crate::domain::engine::Input;
use crate::domain::flow::MAX_TEXT;
use crate::runtime::chat::{ContactRef, Source};
use crate::store::conversations::{ConversationFilter, ConversationRow};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use utoipa::{IntoParams, ToSchema};

/// Who is writing: a phone number (E.164) or an id of yours.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactInput {
    /// E.164, e.g. `+525500000000`.
    pub phone: Option<String>,
    /// An id in your system.
    pub id: Option<String>,
}

/// `POST /v1/bots/{bot}/chat` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// Who is writing.
    pub contact: ContactInput,
    /// What they wrote: at most 4096 characters.
    #[schema(max_length = 4096)]
    pub text: String,
}

/// One part of the bot's answer: a text, or a media (picture, video,
/// sound, file) that follows the text it was sent with.
#[derive(Serialize, ToSchema, Debug, PartialEq)]
pub struct ReplyPart {
    /// `text`, `image`, `video`, `audio` or `file`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text (text parts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Where the media is (media parts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Text shown with the media, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
}

/// Texts and their media as typed parts, in order; a text that rendered
/// empty (a media sent alone) gives no text part.
pub fn reply_parts(
    replies: Vec<String>,
    media: &[(usize, crate::domain::flow::Media)],
) -> Vec<ReplyPart> {
    let mut out = Vec::new();
    for (i, text) in replies.into_iter().enumerate() {
        if !text.is_empty() {
            out.push(ReplyPart {
                kind: "text".into(),
                text: Some(text),
                url: None,
                caption: None,
            });
        }
        for (_, m) in media.iter().filter(|(at, _)| *at == i) {
            out.push(ReplyPart {
                kind: m.kind.as_str().into(),
                text: None,
                url: Some(m.url.clone()),
                caption: m.caption.clone(),
            });
        }
    }
    out
}

/// The bot's answer.
#[derive(Serialize, ToSchema)]
pub struct ChatResponse {
    /// The conversation the message went to.
    pub conversation_id: String,
    /// Messages to show, in order.
    pub replies: Vec<ReplyPart>,
    /// Options to offer as buttons.
    pub quick_replies: Vec<String>,
    /// Whether the conversation ended with this turn.
    pub ended: bool,
    /// Ids of the events the turn emitted.
    pub events: Vec<String>,
}

/// Sends a message to a bot and returns its replies.
#[utoipa::path(post, path = "/v1/bots/{bot}/chat", tag = "conversations", params(("bot" = String, Path)),
    request_body = ChatRequest,
    responses((status = 200, body = ChatResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "The bot has no flow yet"),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody, description = "A publishable key's visitor sent too many messages this minute")),
    security(("bearer" = [])))]
pub async fn chat(
    State(state): State<AppState>,
    ChatAuth(p): ChatAuth,
    Path(bot): Path<String>,
    ApiJson(body): ApiJson<ChatRequest>,
) -> ApiResult<Json<ChatResponse>> {
    if !p.may_use_bot(&bot) {
        return Err(ApiError::not_found(format!("bot {bot:?} not found")));
    }
    let contact = if p.publishable {
        visitor(&body.contact)?
    } else {
        ContactRef::parse(body.contact.phone.as_deref(), body.contact.id.as_deref())
            .map_err(|e| ApiError::unprocessable(e.to_string()))?
    };
    let length = body.text.chars().count();
    if length > MAX_TEXT {
        return Err(ApiError::unprocessable(format!(
            "text is {length} characters long; a message may hold at most {MAX_TEXT}: send it in parts"
        )));
    }
    let source = if p.publishable {
        Source::Web
    } else {
        Source::Api
    };
    let reply = state
        .chat
        .handle(
            &state.store,
            state.delivery.client(),
            &p.account_id,
            &bot,
            &contact,
            Input::Text(&body.text),
            &source,
        )
        .await
        .map_err(|e| match e {
            crate::runtime::RuntimeError::Store(crate::store::StoreError::NotFound) => {
                ApiError::not_found(format!("bot {bot:?} not found"))
            }
            other => other.into(),
        })?;
    Ok(Json(ChatResponse {
        conversation_id: reply.conversation_id,
        replies: reply_parts(reply.replies, &reply.media),
        quick_replies: reply.quick_replies,
        ended: reply.ended,
        events: reply.event_ids,
    }))
}

/// The contact a publishable key chats as: a website visitor known only by
/// the random id its widget keeps (16 to 64 characters `[A-Za-z0-9_-]`),
/// stored as `web:<id>` so a page can never write as another kind of contact.
fn visitor(contact: &ContactInput) -> ApiResult<ContactRef> {
    let id = match (&contact.phone, &contact.id) {
        (None, Some(id)) => id,
        _ => {
            return Err(ApiError::unprocessable(
                "a publishable key chats as a website visitor: send contact.id only",
            ));
        }
    };
    let ok = (16..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(ApiError::unprocessable(
            "contact.id of a website visitor: 16 to 64 characters of A-Z, a-z, 0-9, - and _",
        ));
    }
    Ok(ContactRef::External(format!("web:{id}")))
}

/// Whether a chat answer may be read by the page that sent the request: set
/// by [`ChatAuth`](super::extract::ChatAuth) when the key is publishable and
/// lists the request's `Origin`. [`allow_origin`] puts one in every chat
/// request's extensions and reads it once the answer is made.
#[derive(Clone, Debug, Default)]
pub struct CorsGrant(Arc<AtomicBool>);

impl CorsGrant {
    /// Lets the request's origin read the answer.
    pub fn grant(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn granted(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Answers a browser's CORS preflight for the chat route. A preflight never
/// carries the key (browsers send no `Authorization` with it), so it cannot
/// tell a listed origin from another: it lets the browser send the request,
/// and the answer itself is readable only from an origin listed on a
/// publishable key ([`allow_origin`], which also adds `Vary: Origin` here).
async fn preflight(headers: HeaderMap) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    resp
}

/// Lets the page that sent a chat request read the answer (errors too, so
/// the widget can say what went wrong) only when the request's key is
/// publishable and lists that page's origin: never for secret keys, never
/// for other origins. Every answer varies by `Origin`, so no cache hands
/// one origin's answer to another.
async fn allow_origin(mut req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let grant = CorsGrant::default();
    req.extensions_mut().insert(grant.clone());
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("origin"));
    if let Some(origin) = origin.filter(|_| grant.granted()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("x-request-id"),
        );
    }
    resp
}

/// `?contact=&after=` of a chat poll.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PollQuery {
    /// Who is asking: a website visitor's id (publishable key), or with a
    /// secret key a contact id of yours or an E.164 phone.
    pub contact: String,
    /// `cursor` of the previous poll; absent on the first, which only
    /// answers where to start.
    pub after: Option<String>,
}

/// One message said to the contact without answering one of theirs.
#[derive(Serialize, ToSchema)]
pub struct PushedMessage {
    /// Transcript line id.
    pub id: String,
    /// `agent` (a person, in handoff) or `bot` (a release, a reminder …).
    pub from: String,
    /// What to show, in order.
    pub replies: Vec<ReplyPart>,
    /// Options to offer as buttons.
    pub quick_replies: Vec<String>,
    /// RFC 3339.
    pub at: String,
}

/// What was said since the last poll.
#[derive(Serialize, ToSchema)]
pub struct ChatMessages {
    /// New messages, oldest first.
    pub messages: Vec<PushedMessage>,
    /// Pass as `after` to the next poll.
    pub cursor: String,
    /// Whether a person answers the conversation now.
    pub handoff: bool,
}

/// Most transcript lines one poll reads.
const POLL_LINES: i64 = 100;

/// What was said to a contact since the last poll, unprompted: a person's
/// answers in handoff and what the bot says on release or on a timer.
/// Replies to the contact's own messages are not repeated (their request
/// carried them). The widget polls it every few seconds; it is one indexed
/// read and does not count against a visitor's messages a minute.
#[utoipa::path(get, path = "/v1/bots/{bot}/chat/messages", tag = "conversations",
    params(("bot" = String, Path), PollQuery),
    responses((status = 200, body = ChatMessages), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn chat_messages(
    State(state): State<AppState>,
    ChatPollAuth(p): ChatPollAuth,
    Path(bot): Path<String>,
    ApiQuery(q): ApiQuery<PollQuery>,
) -> ApiResult<Json<ChatMessages>> {
    if !p.may_use_bot(&bot) {
        return Err(ApiError::not_found(format!("bot {bot:?} not found")));
    }
    state
        .chat
        .definitions()
        .load(&state.store, &p.account_id, &bot)
        .await
        .map_err(|e| match e {
            crate::runtime::RuntimeError::Store(crate::store::StoreError::NotFound) => {
                ApiError::not_found(format!("bot {bot:?} not found"))
            }
            other => other.into(),
        })?;
    let contact = if p.publishable {
        visitor(&ContactInput {
            phone: None,
            id: Some(q.contact.clone()),
        })?
    } else if q.contact.starts_with('+') {
        ContactRef::parse(Some(&q.contact), None)
            .map_err(|e| ApiError::unprocessable(e.to_string()))?
    } else {
        ContactRef::parse(None, Some(&q.contact))
            .map_err(|e| ApiError::unprocessable(e.to_string()))?
    };
    let (phone, external) = match &contact {
        ContactRef::Phone(ph) => (Some(ph.as_str()), None),
        ContactRef::External(i) | ContactRef::Channel { id: i, .. } => (None, Some(i.as_str())),
    };
    let empty = |cursor: String| ChatMessages {
        messages: Vec::new(),
        cursor,
        handoff: false,
    };
    let Some(row) = state
        .store
        .find_contact(&p.account_id, &bot, phone, external)
        .await?
    else {
        return Ok(Json(empty(q.after.unwrap_or_default())));
    };
    let Some(conv) = state.store.latest_conversation(&row.id).await? else {
        return Ok(Json(empty(q.after.unwrap_or_default())));
    };
    let handoff = conv.status == "handoff";
    let Some(after) = q.after else {
        let cursor = state
            .store
            .last_message_id(&conv.id)
            .await?
            .unwrap_or_default();
        return Ok(Json(ChatMessages {
            handoff,
            ..empty(cursor)
        }));
    };
    let lines = state
        .store
        .messages_after(&conv.id, Some(after.clone()), POLL_LINES)
        .await?;
    let cursor = lines.last().map_or(after, |m| m.id.clone());
    let messages = lines
        .into_iter()
        .filter_map(|m| {
            let body: Value = serde_json::from_str(&m.body).ok()?;
            let strings = |v: &Value| -> Vec<String> {
                v.as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let (from, replies, quick_replies) = match m.direction.as_str() {
                "agent" => (
                    "agent",
                    reply_parts(vec![body["text"].as_str()?.to_owned()], &[]),
                    Vec::new(),
                ),
                "out" if body["unprompted"] == Value::Bool(true) => {
                    let media: Vec<(usize, crate::domain::flow::Media)> = body["media"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| {
                                    Some((
                                        usize::try_from(x["reply"].as_u64()?).ok()?,
                                        serde_json::from_value(x.clone()).ok()?,
                                    ))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    (
                        "bot",
                        reply_parts(strings(&body["replies"]), &media),
                        strings(&body["quick_replies"]),
                    )
                }
                _ => return None,
            };
            Some(PushedMessage {
                id: m.id,
                from: from.into(),
                replies,
                quick_replies,
                at: time(m.created_at),
            })
        })
        .collect();
    Ok(Json(ChatMessages {
        messages,
        cursor,
        handoff,
    }))
}

/// A conversation in a list.
#[derive(Serialize, ToSchema)]
pub struct ConversationSummary {
    /// `cnv_…`
    pub id: String,
    /// The contact.
    pub contact_id: String,
    /// `active`, `handoff` (a person answers) or `completed`.
    pub status: String,
    /// The flow version it last ran on.
    pub flow_version: i64,
    /// The node it waits at.
    pub node: Option<String>,
    /// `main` or a campaign.
    pub flow: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

pub(crate) fn summary(c: &ConversationRow) -> (ConversationSummary, Value) {
    let state: Value = serde_json::from_str(&c.state).unwrap_or(Value::Null);
    (
        ConversationSummary {
            id: c.id.clone(),
            contact_id: c.contact_id.clone(),
            status: c.status.clone(),
            flow_version: c.flow_version,
            node: state["node"].as_str().map(str::to_owned),
            flow: state["flow"].as_str().unwrap_or("main").to_owned(),
            created_at: time(c.created_at),
            updated_at: time(c.updated_at),
        },
        state,
    )
}

/// `?status=&contact=`
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConversationQuery {
    /// `active`, `handoff` or `completed`.
    pub status: Option<String>,
    /// A contact id (`ct_…`).
    pub contact: Option<String>,
    /// Items per page, 1–200.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Lists a bot's conversations, newest first.
#[utoipa::path(get, path = "/v1/bots/{bot}/conversations", tag = "conversations",
    params(("bot" = String, Path), ConversationQuery),
    responses((status = 200, body = List<ConversationSummary>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_conversations(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
    ApiQuery(q): ApiQuery<ConversationQuery>,
) -> ApiResult<Json<List<ConversationSummary>>> {
    let p = auth.bot(&bot)?;
    load(&state, &p.account_id, &bot).await?;
    if let Some(s) = &q.status
        && !matches!(s.as_str(), "active" | "handoff" | "completed")
    {
        return Err(ApiError::bad_request(format!(
            "status must be active, handoff or completed, got {s:?}"
        )));
    }
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .parse()?;
    let rows = state
        .store
        .list_conversations(
            &p.account_id,
            &bot,
            ConversationFilter {
                status: q.status,
                contact_id: q.contact,
            },
            page,
        )
        .await?;
    Ok(Json(List::from_page(rows, |c| summary(&c).0)))
}

/// A conversation with its contact, memory and transcript.
#[derive(Serialize, ToSchema)]
pub struct ConversationDetail {
    /// Summary fields.
    #[serde(flatten)]
    pub summary: ConversationSummary,
    /// The contact: id, phone, external id, `user` attributes.
    pub contact: Value,
    /// Session memory.
    pub memory: Value,
    /// Transcript, oldest first: `{direction, text | replies, at}`.
    pub messages: Vec<Value>,
    /// Story-webhook calls made in this conversation, oldest first.
    pub calls: Vec<super::webhooks::CallView>,
}

/// One conversation and its history.
#[utoipa::path(get, path = "/v1/bots/{bot}/conversations/{id}", tag = "conversations",
    params(("bot" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = ConversationDetail), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_conversation(
    State(state): State<AppState>,
    auth: Auth,
    Path((bot, id)): Path<(String, String)>,
) -> ApiResult<Json<ConversationDetail>> {
    let p = auth.bot(&bot)?;
    let (conv, contact, messages) = state
        .store
        .get_conversation(&p.account_id, &bot, &id)
        .await
        .or_not_found(|| ApiError::not_found(format!("conversation {id:?} not found")))?;
    let calls = state.store.conversation_calls(&conv.id).await?;
    let hooks = super::webhooks::defined(&state, &p.account_id, &bot).await?;
    let (summary, st) = summary(&conv);
    let attributes: Value = serde_json::from_str(&contact.attributes).unwrap_or(Value::Null);
    Ok(Json(ConversationDetail {
        summary,
        contact: serde_json::json!({
            "id": contact.id, "phone": contact.phone, "external_id": contact.external_id, "attributes": attributes,
        }),
        memory: st
            .get("memory")
            .cloned()
            .unwrap_or(Value::Object(Default::default())),
        messages: messages
            .into_iter()
            .map(|m| {
                let mut body: Value = serde_json::from_str(&m.body).unwrap_or(Value::Null);
                if let Value::Object(o) = &mut body {
                    o.insert("direction".into(), m.direction.into());
                    o.insert("at".into(), time(m.created_at).into());
                }
                body
            })
            .collect(),
        calls: calls
            .into_iter()
            .map(|c| super::webhooks::call_view(c, &hooks))
            .collect(),
    }))
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/bots/{bot}/chat",
            post(chat)
                .options(preflight)
                .layer(axum::middleware::from_fn(allow_origin)),
        )
        .route(
            "/v1/bots/{bot}/chat/messages",
            get(chat_messages)
                .options(preflight)
                .layer(axum::middleware::from_fn(allow_origin)),
        )
        .route("/v1/bots/{bot}/conversations", get(list_conversations))
        .route("/v1/bots/{bot}/conversations/{id}", get(get_conversation))
}
