//! Liveness, readiness and metrics: `/healthz`, `/readyz` and `/metrics`.
//!
//! `/healthz` is cheap: the process runs and its database answers a read.
//! `/readyz` is what a load balancer should route by: 503 while migrations
//! run (answered by `botwire serve`'s front door before the API exists),
//! while shutting down, or while the store cannot commit (a no-op write
//! through the group-commit writer, so a stuck writer or a read-only
//! database shows), each with its reason in the answer.

use super::AppState;
use super::error::ApiResult;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
use utoipa::ToSchema;

/// Where the process is in its life, for `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The store is opening and migrations may be running.
    Migrating = 0,
    /// Serving.
    Ready = 1,
    /// A shutdown signal arrived: requests in flight finish, new traffic
    /// should go elsewhere.
    ShuttingDown = 2,
}

/// The process's [`Phase`], shared by the server and its routes.
#[derive(Debug)]
pub struct Readiness(AtomicU8);

impl Readiness {
    /// Starts in `phase`.
    pub fn new(phase: Phase) -> Self {
        Self(AtomicU8::new(phase as u8))
    }
    /// Moves to `phase`.
    pub fn set(&self, phase: Phase) {
        self.0.store(phase as u8, Ordering::Release);
    }
    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.0.load(Ordering::Acquire) {
            0 => Phase::Migrating,
            1 => Phase::Ready,
            _ => Phase::ShuttingDown,
        }
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new(Phase::Ready)
    }
}

/// `/readyz` answer.
#[derive(Serialize, ToSchema)]
pub struct ReadyStatus {
    /// Whether this process should get traffic.
    pub ready: bool,
    /// `ready`, `migrating`, `shutting_down` or `store_unavailable`.
    pub reason: String,
    /// The reason in words.
    pub message: String,
}

impl ReadyStatus {
    /// An answer for `phase` (not `Ready`) or a store that cannot commit.
    pub fn not_ready(reason: &str, message: impl Into<String>) -> axum::response::Response {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(ReadyStatus {
                ready: false,
                reason: reason.into(),
                message: message.into(),
            }),
        )
            .into_response()
    }
}

/// How long the commit probe of `/readyz` may take.
const COMMIT_PROBE: Duration = Duration::from_secs(2);

/// `/healthz` answer.
#[derive(Serialize, ToSchema)]
pub struct ServiceHealth {
    /// `ok` when the database answers.
    pub status: String,
    /// `sqlite` or `postgres`.
    pub database: String,
    /// botwire's version.
    pub version: String,
}

/// Liveness: the process runs and its database answers.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, body = ServiceHealth), (status = 503, body = super::error::ErrorBody)))]
pub async fn healthz(State(state): State<AppState>) -> ApiResult<Json<ServiceHealth>> {
    state.store.ping().await?;
    Ok(Json(ServiceHealth {
        status: "ok".into(),
        database: match state.store.kind() {
            crate::store::BackendKind::Sqlite => "sqlite".into(),
            crate::store::BackendKind::Postgres => "postgres".into(),
        },
        version: env!("CARGO_PKG_VERSION").into(),
    }))
}

/// Readiness: 200 when this process should get traffic; 503 with the
/// reason while migrating, shutting down or unable to commit.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = ReadyStatus), (status = 503, body = ReadyStatus)))]
pub async fn readyz(State(state): State<AppState>) -> axum::response::Response {
    match state.readiness.phase() {
        Phase::Migrating => {
            return ReadyStatus::not_ready("migrating", "database migrations are running");
        }
        Phase::ShuttingDown => {
            return ReadyStatus::not_ready(
                "shutting_down",
                "a shutdown signal arrived; requests in flight are finishing",
            );
        }
        Phase::Ready => {}
    }
    match tokio::time::timeout(COMMIT_PROBE, state.store.write(|_| Ok(()))).await {
        Ok(Ok(())) => Json(ReadyStatus {
            ready: true,
            reason: "ready".into(),
            message: "serving".into(),
        })
        .into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness probe: the store cannot commit");
            ReadyStatus::not_ready("store_unavailable", format!("the store cannot commit: {e}"))
        }
        Err(_) => ReadyStatus::not_ready(
            "store_unavailable",
            format!("a commit did not finish within {COMMIT_PROBE:?}"),
        ),
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let text = state.metrics.render(&state.store.writer_stats());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}
