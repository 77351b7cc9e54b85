//! The one error type of the HTTP API and its wire form,
//! `{"error": {"code": "...", "message": "..."}}`.
//!
//! Client errors carry a code and a message that says what to fix. Anything
//! else is logged with its cause and answered as an opaque 500 — a 500 is a
//! bug, never the answer to bad input.

use crate::store::StoreError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An API failure: a status, a stable code, and a human message.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `not_found`.
    pub code: &'static str,
    /// What went wrong and what to do about it.
    pub message: String,
    /// Structured detail, e.g. one entry per flow validation error.
    pub details: Option<Box<serde_json::Value>>,
    /// Seconds to wait before trying again (`Retry-After`), for a 429.
    pub retry_after: Option<u64>,
}

/// The error body.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of an error body.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Structured detail when there is some (e.g. flow errors by node and field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }
    /// 429: too many requests; try again after `seconds`.
    pub fn too_many_requests(message: impl Into<String>, seconds: u64) -> Self {
        Self {
            retry_after: Some(seconds),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }
    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    /// 401: no valid key.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    /// 403: the key may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    /// 404: nothing here (or not yours).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// 409: clashes with what exists.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    /// 422: well-formed but not acceptable.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }
    /// 500: a bug or an outage; the cause is logged, not shown.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "something went wrong on our side; it has been logged",
        )
    }
}

impl From<crate::runtime::RuntimeError> for ApiError {
    fn from(e: crate::runtime::RuntimeError) -> Self {
        use crate::runtime::RuntimeError;
        match e {
            RuntimeError::Store(s) => s.into(),
            RuntimeError::Invalid(m) => ApiError::unprocessable(m),
            RuntimeError::NotReady(m) => ApiError::new(StatusCode::CONFLICT, "not_ready", m),
            RuntimeError::Handoff(h) => {
                use crate::domain::engine::HandoffError;
                match h {
                    HandoffError::NotInHandoff | HandoffError::Ended => {
                        ApiError::new(StatusCode::CONFLICT, "not_in_handoff", h.to_string())
                    }
                    HandoffError::UnknownNode(_) | HandoffError::Text(_) => {
                        ApiError::unprocessable(h.to_string())
                    }
                }
            }
            RuntimeError::Flow(errors) => {
                let details = errors
                    .iter()
                    .map(|e| {
                        let mut d = serde_json::json!({"node": e.node, "field": e.field, "message": e.message});
                        if let Some(c) = e.column {
                            d["column"] = c.into();
                        }
                        d
                    })
                    .collect();
                let mut err = ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_flow",
                    crate::domain::flow::join_errors(&errors),
                );
                err.details = Some(Box::new(serde_json::Value::Array(details)));
                err
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found("not found"),
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::Invalid(m) => ApiError::unprocessable(m),
            StoreError::LimitReached(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "limit_reached", m)
            }
            StoreError::Unavailable(m) => {
                tracing::error!(error = %m, "store unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is unavailable; try again shortly",
                )
            }
            StoreError::Database(m) => ApiError::internal(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                details: self.details.map(|d| *d),
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
        resp
    }
}

/// Turns a store `NotFound` into a 404 that names what was asked for;
/// other store errors keep their usual mapping.
pub trait OrNotFound<T> {
    /// `error` makes the 404.
    fn or_not_found(self, error: impl FnOnce() -> ApiError) -> ApiResult<T>;
}

impl<T> OrNotFound<T> for Result<T, StoreError> {
    fn or_not_found(self, error: impl FnOnce() -> ApiError) -> ApiResult<T> {
        self.map_err(|e| match e {
            StoreError::NotFound => error(),
            other => other.into(),
        })
    }
}

/// Shorthand for handler results.
pub type ApiResult<T> = Result<T, ApiError>;
