//! Request extractors that answer bad input in the API's own error format:
//! JSON bodies, the bearer key, and paging parameters.

use super::AppState;
use super::error::{ApiError, OrNotFound};
use crate::domain::account::Principal;
use crate::store::PageRequest;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use base64::Engine;
use serde::de::DeserializeOwned;

/// A JSON request body. Wrong content type → 415, too large → 413,
/// malformed JSON → 400, well-formed but wrong shape → 422 naming the field.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let essence = v.split(';').next().unwrap_or("").trim();
                essence.eq_ignore_ascii_case("application/json")
                    || (essence.starts_with("application/") && essence.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let bytes = read_body(req, state).await?;
        // Every body of this API is an object; say so rather than let a
        // sequence be read as a struct's fields.
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') | None => {}
            Some(_) if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err() => {}
            Some(_) => {
                return Err(ApiError::unprocessable(
                    "request body must be a JSON object",
                ));
            }
        }
        parse_json(&bytes).map(ApiJson)
    }
}

/// Reads a body, answering 413 when it exceeds the configured limit.
pub async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is larger than the server accepts (body_limit_bytes)",
            )
        } else if format!("{e:?}").contains("TimeoutError") {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body took too long to arrive",
            )
        } else {
            ApiError::bad_request(format!("could not read the request body: {e}"))
        }
    })
}

/// Parses JSON, telling syntax errors (400) from shape errors (422).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("malformed JSON: {inner}"))
        } else if path == "." || path.is_empty() {
            ApiError::unprocessable(format!("request body: {inner}"))
        } else {
            ApiError::unprocessable(format!("field `{path}`: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// The principal behind a valid `Authorization: Bearer <key>` header.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let p = authenticate(parts, state).await?;
        if p.publishable {
            return Err(ApiError::forbidden(
                "a publishable key can only chat with its bot (POST /v1/bots/{bot}/chat); \
                 use a secret key for everything else",
            ));
        }
        Ok(Auth(p))
    }
}

/// The principal of a chat request: [`Auth`], or a publishable key used from
/// a web page on one of the origins listed on it.
pub struct ChatAuth(pub Principal);

impl FromRequestParts<AppState> for ChatAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let p = authenticate(parts, state).await?;
        if p.publishable {
            from_listed_origin(parts, &p)?;
            let client = parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip());
            if let Err(wait) = state
                .visitors
                .check(&p.key_id, client, std::time::Instant::now())
            {
                return Err(ApiError::too_many_requests(
                    format!(
                        "too many messages from this visitor; at most {} a minute, try again in {wait} s",
                        super::limits::VISITOR_MESSAGES_PER_MINUTE
                    ),
                    wait,
                ));
            }
        }
        Ok(ChatAuth(p))
    }
}

/// The principal of a chat poll: like [`ChatAuth`], but a poll is a cheap
/// read and does not count against the visitor's messages a minute.
pub struct ChatPollAuth(pub Principal);

impl FromRequestParts<AppState> for ChatPollAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let p = authenticate(parts, state).await?;
        if p.publishable && !same_listed_origin(parts, &p) {
            from_listed_origin(parts, &p)?;
        }
        Ok(ChatPollAuth(p))
    }
}

/// Whether a request without `Origin` comes from a page of this server's
/// own origin that the key lists. Browsers leave `Origin` out of
/// same-origin GET requests (the widget's demo page polling) but always send
/// `Sec-Fetch-Site`, which a page cannot set; the origin is then this
/// server's, read from `Host` (http or https, whichever the key lists).
fn same_listed_origin(parts: &Parts, p: &Principal) -> bool {
    let h = &parts.headers;
    if h.contains_key(axum::http::header::ORIGIN) {
        return false;
    }
    let same = h
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"same-origin");
    let Some(host) = h
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    same && ["http", "https"]
        .iter()
        .any(|scheme| p.allows_origin(&format!("{scheme}://{host}")))
}

/// Refuses a publishable key used from a page whose origin it does not
/// list; grants that page the answer otherwise (errors below included).
fn from_listed_origin(parts: &Parts, p: &Principal) -> Result<(), ApiError> {
    let origin = parts
        .headers
        .get(axum::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    match origin {
        Some(o) if p.allows_origin(o) => {
            if let Some(grant) = parts.extensions.get::<super::chat::CorsGrant>() {
                grant.grant();
            }
            Ok(())
        }
        Some(o) => Err(ApiError::forbidden(format!(
            "this publishable key may not be used from {o}; add the origin to the key"
        ))),
        None => Err(ApiError::forbidden(
            "a publishable key works only from a web page on an origin listed on the key",
        )),
    }
}

/// The live principal behind the request's `Authorization: Bearer` key.
async fn authenticate(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized("send an API key as `Authorization: Bearer <key>`")
    })?;
    let key = header
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <key>`"))?;
    if !crate::auth::looks_like_key(key) {
        return Err(ApiError::unauthorized("invalid or revoked API key"));
    }
    let hash = state.pepper.hash(key);
    let p = if let Some(p) = state.keys.get(&hash) {
        p
    } else {
        // Taken before the lookup: the cache entry's age counts from here.
        let checked_at = std::time::Instant::now();
        match state
            .store
            .authenticate_hash(key, hash.clone(), &state.pepper)
            .await?
        {
            Some(p) => {
                state.keys.put(hash, p.clone(), checked_at);
                p
            }
            None => return Err(ApiError::unauthorized("invalid or revoked API key")),
        }
    };
    // An audited route records who acted (see `super::audit`).
    if let Some(slot) = parts.extensions.get::<super::audit::AuditSlot>() {
        slot.set(&p);
    }
    Ok(p)
}

impl Auth {
    /// Refuses bot-scoped keys (403).
    pub fn account_wide(&self) -> Result<&Principal, ApiError> {
        if self.0.is_account_wide() {
            Ok(&self.0)
        } else {
            Err(ApiError::forbidden(
                "this key is scoped to one bot; use an account-wide key",
            ))
        }
    }

    /// Refuses keys that may not use `bot`, as if the bot did not exist (404).
    pub fn bot(&self, bot: &str) -> Result<&Principal, ApiError> {
        if self.0.may_use_bot(bot) {
            Ok(&self.0)
        } else {
            Err(ApiError::not_found(format!("bot {bot:?} not found")))
        }
    }

    /// An endpoint the caller may see, or 404 (a bot-scoped key sees its
    /// bot's only).
    pub async fn endpoint(
        &self,
        state: &AppState,
        id: &str,
    ) -> Result<crate::store::endpoints::EndpointRow, ApiError> {
        let not_found = || ApiError::not_found(format!("endpoint {id:?} not found"));
        let e = state
            .store
            .get_endpoint(&self.0.account_id, id)
            .await
            .or_not_found(not_found)?;
        if !self.0.may_use_bot(&e.bot_id) {
            return Err(not_found());
        }
        Ok(e)
    }
}

/// `?limit=&cursor=` as given.
#[derive(serde::Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1–200 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    /// Validates into a [`PageRequest`].
    pub fn parse(&self) -> Result<PageRequest, ApiError> {
        let limit = match self.limit.as_deref() {
            None | Some("") => 50,
            Some(s) => s
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=200).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "limit must be a number from 1 to 200, got {s:?}"
                    ))
                })?,
        };
        let after = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(c) => Some(decode_cursor(c).ok_or_else(|| {
                ApiError::bad_request(
                    "cursor is not valid; pass back next_cursor from a previous page",
                )
            })?),
        };
        Ok(PageRequest { limit, after })
    }
}

/// Makes an opaque cursor from a sort key.
pub fn encode_cursor(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.as_bytes())
}

fn decode_cursor(cursor: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    let s = String::from_utf8(bytes).ok()?;
    (!s.is_empty() && s.len() <= 200 && !s.chars().any(char::is_control)).then_some(s)
}

/// Query strings parsed into `T` with our error format (400 naming the key).
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded_parse(query).map(ApiQuery)
    }
}

fn serde_urlencoded_parse<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{query}")
            .parse()
            .map_err(|_| ApiError::bad_request("malformed query string"))?,
    )
    .map(|q| q.0)
    .map_err(|e| ApiError::bad_request(format!("query string: {}", e.body_text())))
}
