//! Liveness and metrics: `/healthz` and `/metrics`.

use super::AppState;
use super::error::ApiResult;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

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
        .route("/metrics", get(metrics))
}
