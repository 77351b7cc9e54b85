//! The JSON HTTP API (v1), one module per resource.
//!
//! Conventions every route follows:
//!
//! * errors are `{"error": {"code", "message"}}` with the right status
//!   ([`error`]); bad input is a 4xx that says what to fix;
//! * `Authorization: Bearer <key>`; a missing or invalid key is 401, a key
//!   that may not see a thing gets 403 or 404, never another account's data;
//! * lists are `{"data": [...], "next_cursor": ...}` paged by
//!   `?limit=&cursor=`;
//! * every response carries `x-request-id`: the client's own when it is 1 to
//!   64 characters of `A-Z a-z 0-9 . _ -`, else one generated here (the id
//!   is echoed and logged, so nothing else is let through);
//! * a valid W3C `traceparent` puts the request in the caller's trace (else
//!   it starts a new one); its `trace_id` is in the request's log span, and
//!   the event deliveries and story-webhook calls it causes send a
//!   `traceparent` of that trace (see [`crate::trace`]);
//! * `/openapi.json` describes it all.

pub mod appointments;
pub mod audit;
pub mod bots;
pub mod broadcasts;
pub mod channels;
pub mod chart;
pub mod chat;
pub mod chatbot_webhook;
pub mod console;
pub mod contacts;
pub mod conversations;
pub mod deliveries;
pub mod endpoints;
pub mod error;
pub mod events;
pub mod extract;
pub mod flows;
pub mod headers;
pub mod health;
pub mod hooks;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod payload_preview;
pub mod segments;
pub mod sends;
pub mod server;
pub mod webhooks;
pub mod widget;

use crate::auth::Pepper;
use crate::store::{Page, Store};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request, header};
use error::ApiError;
use serde::Serialize;
pub use server::{ServerOptions, serve};
use std::sync::Arc;
use std::time::Duration;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use utoipa::ToSchema;

/// What every handler can reach: one shared [`Shared`], so the copy axum
/// makes for each request and extractor is one reference count, not one per
/// field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The state's fields.
#[derive(Clone)]
pub struct Shared {
    /// The database.
    pub store: Store,
    /// The key-hash pepper.
    pub pepper: Pepper,
    /// What `/metrics` computes at scrape time (the cached backlog).
    pub metrics: Arc<metrics::Metrics>,
    /// Runs chat turns (and caches bot definitions).
    pub chat: crate::runtime::chat::Chat,
    /// Recently verified API keys.
    pub keys: Arc<crate::auth::KeyCache>,
    /// Makes attempts for the routes that send now (test ping, manual retry)
    /// and holds the delivery settings.
    pub delivery: crate::delivery::Delivery,
    /// Chat messages counted per publishable key and visitor address.
    pub visitors: Arc<limits::VisitorLimit>,
    /// Migrating, ready or shutting down, for `/readyz`.
    pub readiness: Arc<health::Readiness>,
    /// Bounds on what an account may create (`[limits]` of the config).
    pub limits: crate::config::LimitsConfig,
    /// Channels by id, for the webhook route and the inbound processor.
    pub channels: Arc<crate::runtime::inbound::ChannelCache>,
    /// The address platforms see (`public_url`); empty: each request's host.
    pub public_url: Arc<str>,
    /// A broadcast's messages per second when it does not say
    /// (`[broadcasts] rate`).
    pub broadcast_rate: u32,
}

impl AppState {
    /// State over a store, with empty caches and counters.
    pub fn new(store: Store, pepper: Pepper, delivery: crate::delivery::Delivery) -> Self {
        crate::telemetry::install();
        Self(Arc::new(Shared {
            store,
            pepper,
            metrics: Arc::default(),
            chat: Default::default(),
            keys: Arc::default(),
            delivery,
            visitors: Arc::default(),
            readiness: Arc::default(),
            limits: Default::default(),
            channels: Arc::default(),
            public_url: Arc::from(""),
            broadcast_rate: crate::config::DEFAULT_BROADCAST_RATE,
        }))
    }

    /// The same state with `public_url` as the address platforms see.
    pub fn with_public_url(mut self, url: &str) -> Self {
        self.edit().public_url = Arc::from(url.trim_end_matches('/'));
        self
    }

    /// The fields, to set up before the state is shared (a state already
    /// shared is copied first, so no handler sees a change).
    pub fn edit(&mut self) -> &mut Shared {
        Arc::make_mut(&mut self.0)
    }
}

/// Settings the router needs beyond the state.
#[derive(Clone, Debug)]
pub struct RouterOptions {
    /// Largest request body, bytes.
    pub body_limit: usize,
    /// Longest time a request body may take to arrive, start to end (a
    /// client that drips its body slowly is cut off, not waited for).
    pub body_deadline: Duration,
}

impl Default for RouterOptions {
    fn default() -> Self {
        Self {
            body_limit: 1 << 20,
            body_deadline: Duration::from_secs(30),
        }
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Clone, Copy)]
struct MakeId;

impl MakeRequestId for MakeId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        crate::domain::ids::new_id("req")
            .parse()
            .ok()
            .map(RequestId::new)
    }
}

/// Whether a client's `x-request-id` value may be kept as the request's id:
/// 1 to 64 characters of `A-Z a-z 0-9 . _ -`. Anything else (braces, quotes,
/// spaces, `=`, control characters) could pass for log syntax once logged.
pub fn is_valid_request_id(value: &[u8]) -> bool {
    (1..=64).contains(&value.len())
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Removes a client's `x-request-id` unless it is one valid value, so that
/// [`SetRequestIdLayer`] generates one in its place.
async fn drop_unfit_request_id(mut req: axum::extract::Request) -> axum::extract::Request {
    let mut values = req.headers().get_all(&REQUEST_ID).iter();
    let fit = match (values.next(), values.next()) {
        (None, _) => true,
        (Some(v), None) => is_valid_request_id(v.as_bytes()),
        (Some(_), Some(_)) => false,
    };
    if !fit {
        req.headers_mut().remove(&REQUEST_ID);
    }
    req
}

/// Gives the request its trace: the one a valid W3C `traceparent` header
/// names, else a new one (see [`crate::trace`]).
async fn assign_trace(mut req: axum::extract::Request) -> axum::extract::Request {
    let mut values = req.headers().get_all(crate::trace::TRACEPARENT).iter();
    let given = match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().ok().and_then(crate::trace::parse_traceparent),
        _ => None,
    };
    req.extensions_mut().insert(given.unwrap_or_default());
    req
}

/// Runs the handler inside its request's trace, so the outbound calls it
/// causes carry it.
async fn in_trace(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match req.extensions().get::<crate::trace::TraceId>().cloned() {
        Some(trace) => crate::trace::scope(trace, next.run(req)).await,
        None => next.run(req).await,
    }
}

/// The whole HTTP application.
pub fn router(state: AppState, options: &RouterOptions) -> Router {
    let v1 = Router::new()
        .merge(bots::routes())
        .merge(keys::routes())
        .merge(flows::routes())
        .merge(payload_preview::routes())
        .merge(chat::routes())
        .merge(conversations::routes())
        .merge(events::routes())
        .merge(appointments::routes())
        .merge(webhooks::routes())
        .merge(endpoints::routes())
        .merge(deliveries::routes())
        .merge(hooks::routes())
        .merge(channels::routes())
        .merge(chatbot_webhook::routes())
        .merge(audit::routes())
        .merge(contacts::routes())
        .merge(segments::routes())
        .merge(broadcasts::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::track,
        ));
    Router::new()
        .merge(v1)
        .merge(health::routes())
        .merge(openapi::routes())
        .merge(console::routes())
        .merge(widget::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(axum::middleware::from_fn(in_trace))
        .layer(DefaultBodyLimit::max(options.body_limit))
        .layer(tower_http::timeout::RequestBodyDeadlineLayer::new(
            options.body_deadline,
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let id = req
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let trace = req
                    .extensions()
                    .get::<crate::trace::TraceId>()
                    .map(|t| t.as_str())
                    .unwrap_or("");
                tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), trace_id = %trace, request_id = %id)
            }),
        )
        .layer(axum::middleware::map_request(assign_trace))
        .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION]))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeId))
        .layer(axum::middleware::map_request(drop_unfit_request_id))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                axum::response::IntoResponse::into_response(ApiError::internal("handler panicked"))
            },
        ))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see /openapi.json for the API")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; see /openapi.json",
    )
}

/// A page of items on the wire.
#[derive(Serialize, ToSchema)]
pub struct List<T> {
    /// The items.
    pub data: Vec<T>,
    /// Pass as `cursor` to get the next page; null on the last one.
    pub next_cursor: Option<String>,
}

impl<T> List<T> {
    /// Converts a store page, mapping each item.
    pub fn from_page<U>(page: Page<U>, f: impl Fn(U) -> T) -> Self {
        Self {
            data: page.items.into_iter().map(f).collect(),
            next_cursor: page.next_cursor.as_deref().map(extract::encode_cursor),
        }
    }
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds, e.g.
/// `2024-06-18T23:22:36.560Z`.
pub fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
