//! `/v1/bots/{bot}/appointments`: the bookings a bot made, and cancelling
//! them (which frees the slot and emits `appointment.cancelled` in the same
//! transaction).

use super::bots::load;
use super::error::{ApiError, ApiResult, ErrorBody, OrNotFound};
use super::extract::{ApiQuery, Auth, PageQuery};
use super::{AppState, List, time};
use crate::domain::event::EventType;
use crate::store::appointments::AppointmentRow;
use crate::store::events::EventRow;
use axum::extract::{Path, State};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// An appointment on the wire.
#[derive(Serialize, ToSchema)]
pub struct AppointmentView {
    /// Appointment id.
    pub id: String,
    /// RFC 3339 start.
    pub start: String,
    /// RFC 3339 end.
    pub end: String,
    /// Human label in the calendar's time zone.
    pub label: String,
    /// `booked` or `cancelled`.
    pub status: String,
    /// Who booked it.
    pub contact_id: String,
    /// Where it was booked.
    pub conversation_id: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, when cancelled.
    pub cancelled_at: Option<String>,
}

impl From<AppointmentRow> for AppointmentView {
    fn from(a: AppointmentRow) -> Self {
        Self {
            id: a.id,
            start: time(a.slot_start),
            end: time(a.slot_end),
            label: a.label,
            status: a.status,
            contact_id: a.contact_id,
            conversation_id: a.conversation_id,
            created_at: time(a.created_at),
            cancelled_at: a.cancelled_at.map(time),
        }
    }
}

/// `?status=`
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AppointmentQuery {
    /// `booked` or `cancelled`.
    pub status: Option<String>,
    /// Items per page, 1–200.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A bot's appointments, newest booking first.
#[utoipa::path(get, path = "/v1/bots/{bot}/appointments", tag = "appointments",
    params(("bot" = String, Path), AppointmentQuery),
    responses((status = 200, body = List<AppointmentView>), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list_appointments(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
    ApiQuery(q): ApiQuery<AppointmentQuery>,
) -> ApiResult<Json<List<AppointmentView>>> {
    let p = auth.bot(&bot)?;
    load(&state, &p.account_id, &bot).await?;
    if let Some(s) = &q.status
        && !matches!(s.as_str(), "booked" | "cancelled")
    {
        return Err(ApiError::bad_request(format!(
            "status must be booked or cancelled, got {s:?}"
        )));
    }
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .parse()?;
    let rows = state
        .store
        .list_appointments(&p.account_id, &bot, q.status, page)
        .await?;
    Ok(Json(List::from_page(rows, AppointmentView::from)))
}

/// Cancels an appointment: the slot is free again and
/// `appointment.cancelled` is emitted.
#[utoipa::path(delete, path = "/v1/bots/{bot}/appointments/{id}", tag = "appointments",
    params(("bot" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = AppointmentView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel_appointment(
    State(state): State<AppState>,
    auth: Auth,
    Path((bot, id)): Path<(String, String)>,
) -> ApiResult<Json<AppointmentView>> {
    let p = auth.bot(&bot)?.clone();
    let def = state
        .chat
        .definitions()
        .load(&state.store, &p.account_id, &bot)
        .await
        .ok();
    let timezone = def
        .as_ref()
        .and_then(|d| d.settings.calendar.as_ref())
        .map(|c| c.timezone.clone());
    let contact = state
        .store
        .get_appointment(&p.account_id, &bot, &id)
        .await
        .or_not_found(|| ApiError::not_found(format!("appointment {id:?} not found")))?;
    let contact_json = match &contact.conversation_id {
        Some(cnv) => state
            .store
            .get_conversation(&p.account_id, &bot, cnv)
            .await
            .ok()
            .map(|(_, c, _)| serde_json::json!({"id": c.id, "phone": c.phone, "external_id": c.external_id})),
        None => None,
    }
    .unwrap_or_else(|| serde_json::json!({"id": contact.contact_id, "phone": null, "external_id": null}));
    let (account, bot_id) = (p.account_id.clone(), bot.clone());
    let row = state
        .store
        .cancel_appointment(&p.account_id, &bot, &id, move |a| {
            let data = serde_json::json!({
                "conversation_id": a.conversation_id.clone().unwrap_or_default(),
                "flow": "main",
                "node": null,
                "label": "API",
                "contact": contact_json,
                "appointment": {
                    "id": a.id, "start": time(a.slot_start), "end": time(a.slot_end),
                    "label": a.label, "timezone": timezone.unwrap_or_else(|| "UTC".into()),
                },
            });
            EventRow::new(
                &account,
                &bot_id,
                EventType::AppointmentCancelled.as_str(),
                a.conversation_id.as_deref(),
                data.to_string(),
            )
        })
        .await?;
    Ok(Json(row.into()))
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/bots/{bot}/appointments", get(list_appointments))
        .route(
            "/v1/bots/{bot}/appointments/{id}",
            delete(cancel_appointment),
        )
}
