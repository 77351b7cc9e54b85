//! The audit log: every change made through the API is recorded, and
//! `GET /v1/audit` lists an account's changes to account-wide keys.
//!
//! # How changes are recorded
//!
//! [`track`] runs around every `/v1` route (a route layer, so it sees the
//! matched route). For a route listed in [`AUDITED`] whose answer is a
//! success, it records who (the acting key, set aside by the `Auth`
//! extractor in [`AuditSlot`]), the request id, the action, the resource and
//! a summary of the change: the answer's JSON with every secret value
//! removed by [`redact`]. A new mutating route is audited by adding one line
//! to [`AUDITED`]; code that changes something outside a route calls
//! [`crate::store::Store::record_audit`] (or, inside a write closure,
//! [`crate::store::audit::record`]).
//!
//! The handler runs inside [`crate::store::audit::scope`]: a store function
//! that records the change in its own transaction (keys created and
//! revoked) marks it recorded, and [`track`] writes nothing more. For the
//! other routes the row is written right after the change's own commit, not
//! inside it: recording at the route layer covers every route the same way
//! without threading an audit row through each store function, at the price
//! that a process killed between the two commits leaves that one change
//! unrecorded.

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiQuery, Auth, PageQuery};
use super::{AppState, List, time};
use crate::domain::account::Principal;
use crate::store::audit::{Actor, AuditEntry, AuditFilter, NewAudit, Pending};
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use utoipa::{IntoParams, ToSchema};

/// Where the `Auth` extractor leaves the request's principal for [`track`],
/// and the [`Pending`] change store functions that record in their own
/// transaction see.
#[derive(Clone, Default)]
pub struct AuditSlot {
    principal: Arc<Mutex<Option<Principal>>>,
    pending: Pending,
}

impl AuditSlot {
    /// Sets the principal the request acts as.
    pub fn set(&self, p: &Principal) {
        *self.principal.lock().expect("audit slot") = Some(p.clone());
        self.pending.set_actor(Actor::Key(p.key_id.clone()));
    }

    fn take(&self) -> Option<Principal> {
        self.principal.lock().expect("audit slot").take()
    }
}

/// Where a resource's id comes from.
#[derive(Clone, Copy, Debug)]
pub enum IdFrom {
    /// Path parameters, joined by `/` (e.g. `["bot", "name"]`).
    Path(&'static [&'static str]),
    /// A field of the JSON answer (e.g. a created resource's `id`).
    Answer(&'static str),
}

/// One audited route: method, route pattern, action, resource type, id.
pub type AuditedRoute = (Method, &'static str, &'static str, &'static str, IdFrom);

/// Every route that changes something, and how it is recorded. Routes not
/// listed (reads, chat turns, test pings) are not audited.
pub static AUDITED: &[AuditedRoute] = &[
    (
        Method::PATCH,
        "/v1/contacts/{id}",
        "contact.updated",
        "contact",
        IdFrom::Path(&["id"]),
    ),
    (
        Method::POST,
        "/v1/bots/{bot}/contacts/import",
        "contacts.imported",
        "bot",
        IdFrom::Path(&["bot"]),
    ),
    (
        Method::POST,
        "/v1/bots/{bot}/segments",
        "segment.created",
        "segment",
        IdFrom::Answer("id"),
    ),
    (
        Method::PATCH,
        "/v1/bots/{bot}/segments/{id}",
        "segment.updated",
        "segment",
        IdFrom::Path(&["id"]),
    ),
    (
        Method::DELETE,
        "/v1/bots/{bot}/segments/{id}",
        "segment.deleted",
        "segment",
        IdFrom::Path(&["id"]),
    ),
    (
        Method::POST,
        "/v1/bots/{bot}/broadcasts",
        "broadcast.created",
        "broadcast",
        IdFrom::Answer("id"),
    ),
    (
        Method::POST,
        "/v1/broadcasts/{id}/cancel",
        "broadcast.cancelled",
        "broadcast",
        IdFrom::Path(&["id"]),
    ),
    (
        Method::POST,
        "/v1/broadcasts/{id}/pause",
        "broadcast.paused",
        "broadcast",
        IdFrom::Path(&["id"]),
    ),
    (
        Method::POST,
        "/v1/broadcasts/{id}/resume",
        "broadcast.resumed",
        "broadcast",
        IdFrom::Path(&["id"]),
    ),
    (
        Method::POST,
        "/v1/keys",
        "key.created",
        "key",
        IdFrom::Answer("id"),
    ),
    (
        Method::DELETE,
        "/v1/keys/{id}",
        "key.revoked",
        "key",
        IdFrom::Path(&["id"]),
    ),
    (
        Method::POST,
        "/v1/bots",
        "bot.created",
        "bot",
        IdFrom::Answer("id"),
    ),
    (
        Method::PATCH,
        "/v1/bots/{bot}",
        "bot.updated",
        "bot",
        IdFrom::Path(&["bot"]),
    ),
    (
        Method::DELETE,
        "/v1/bots/{bot}",
        "bot.deleted",
        "bot",
        IdFrom::Path(&["bot"]),
    ),
    (
        Method::PUT,
        "/v1/bots/{bot}/flow",
        "flow.published",
        "bot",
        IdFrom::Path(&["bot"]),
    ),
    (
        Method::PUT,
        "/v1/bots/{bot}/settings",
        "settings.updated",
        "bot",
        IdFrom::Path(&["bot"]),
    ),
    (
        Method::POST,
        "/v1/bots/import",
        "bot.imported",
        "bot",
        IdFrom::Answer("bot_id"),
    ),
    (
        Method::POST,
        "/v1/bots/{bot}/endpoints",
        "endpoint.created",
        "endpoint",
        IdFrom::Answer("id"),
    ),
    (
        Method::PATCH,
        "/v1/endpoints/{id}",
        "endpoint.updated",
        "endpoint",
        IdFrom::Path(&["id"]),
    ),
    (
        Method::DELETE,
        "/v1/endpoints/{id}",
        "endpoint.deleted",
        "endpoint",
        IdFrom::Path(&["id"]),
    ),
    (
        Method::POST,
        "/v1/endpoints/{id}/secret/rotate",
        "endpoint.secret_rotated",
        "endpoint",
        IdFrom::Path(&["id"]),
    ),
    (
        Method::POST,
        "/v1/endpoints/{id}/recover",
        "endpoint.recovered",
        "endpoint",
        IdFrom::Path(&["id"]),
    ),
    (
        Method::POST,
        "/v1/bots/{bot}/webhooks",
        "webhook.created",
        "webhook",
        IdFrom::Answer("name"),
    ),
    (
        Method::PATCH,
        "/v1/bots/{bot}/webhooks/{name}",
        "webhook.updated",
        "webhook",
        IdFrom::Path(&["bot", "name"]),
    ),
    (
        Method::DELETE,
        "/v1/bots/{bot}/webhooks/{name}",
        "webhook.deleted",
        "webhook",
        IdFrom::Path(&["bot", "name"]),
    ),
    (
        Method::POST,
        "/v1/bots/{bot}/webhook-secret/rotate",
        "webhook.secret_rotated",
        "bot",
        IdFrom::Path(&["bot"]),
    ),
    (
        Method::POST,
        "/v1/hooks/subscribe",
        "hook.subscribed",
        "endpoint",
        IdFrom::Answer("id"),
    ),
    (
        Method::DELETE,
        "/v1/hooks/{id}",
        "hook.unsubscribed",
        "endpoint",
        IdFrom::Path(&["id"]),
    ),
    (
        Method::POST,
        "/api/v1.0/chatbot-webhook/{unique_id}/",
        "chatbot_webhook.registered",
        "bot",
        IdFrom::Path(&["unique_id"]),
    ),
    (
        Method::POST,
        "/api/v1.0/chatbot-webhook/{unique_id}",
        "chatbot_webhook.registered",
        "bot",
        IdFrom::Path(&["unique_id"]),
    ),
    (
        Method::DELETE,
        "/v1/bots/{bot}/appointments/{id}",
        "appointment.cancelled",
        "appointment",
        IdFrom::Path(&["id"]),
    ),
    (
        Method::POST,
        "/v1/deliveries/{id}/retry",
        "delivery.retried",
        "delivery",
        IdFrom::Path(&["id"]),
    ),
];

/// The largest answer kept as a change summary; a larger one is summarised
/// by its top-level field names.
const MAX_SUMMARY_BYTES: usize = 16 * 1024;

/// Field names whose values are secrets wherever they appear.
fn is_secret_field(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "key"
            | "secret"
            | "secrets"
            | "previous"
            | "token"
            | "password"
            | "authorization"
            | "signing_secret"
    ) || n.ends_with("_secret")
        || n.ends_with("_token")
        || n.ends_with("_key")
        || n.ends_with("_password")
}

/// Removes secret values from a change summary: fields that name a secret
/// (`key`, `secret`, `token`, `*_secret`, …) and every value of a `headers`
/// object (custom headers carry credentials) become `"[redacted]"`.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_secret_field(k) && !v.is_null() {
                    *v = Value::String("[redacted]".into());
                } else if k.eq_ignore_ascii_case("headers") {
                    redact_all(v);
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

fn redact_all(value: &mut Value) {
    match value {
        Value::Object(map) => map.values_mut().for_each(redact_all),
        Value::Array(items) => items.iter_mut().for_each(redact_all),
        Value::Null => {}
        other => *other = Value::String("[redacted]".into()),
    }
}

/// The values of `pattern`'s `{param}`s in `path`, in pattern order.
fn path_params<'a>(pattern: &str, path: &'a str) -> Vec<(String, &'a str)> {
    pattern
        .split('/')
        .zip(path.split('/'))
        .filter_map(|(p, v)| {
            p.strip_prefix('{')
                .and_then(|p| p.strip_suffix('}'))
                .map(|name| (name.to_owned(), v))
        })
        .collect()
}

/// Records successful changes of the routes in [`AUDITED`] (see the module
/// documentation).
pub async fn track(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(route) = req.extensions().get::<MatchedPath>().and_then(|m| {
        AUDITED
            .iter()
            .find(|r| r.0 == req.method() && r.1 == m.as_str())
    }) else {
        return next.run(req).await;
    };
    let path = req.uri().path().to_owned();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let slot = AuditSlot {
        principal: Arc::default(),
        pending: Pending::new(None, request_id.clone()),
    };
    req.extensions_mut().insert(slot.clone());
    let response = crate::store::audit::scope(slot.pending.clone(), next.run(req)).await;
    if !response.status().is_success() || slot.pending.recorded() {
        return response;
    }
    let Some(principal) = slot.take() else {
        return response;
    };
    let (parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "audit: could not read the answer");
            return Response::from_parts(parts, axum::body::Body::empty());
        }
    };
    let mut answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let resource_id = match route.4 {
        IdFrom::Path(names) => {
            let params = path_params(route.1, &path);
            let parts: Vec<&str> = names
                .iter()
                .filter_map(|n| params.iter().find(|(k, _)| k == n).map(|(_, v)| *v))
                .collect();
            (!parts.is_empty()).then(|| parts.join("/"))
        }
        IdFrom::Answer(field) => answer.get(field).and_then(Value::as_str).map(str::to_owned),
    };
    redact(&mut answer);
    let changes = if bytes.len() > MAX_SUMMARY_BYTES {
        summarise(&answer)
    } else {
        answer
    };
    let entry = NewAudit {
        account_id: principal.account_id.clone(),
        actor: Actor::Key(principal.key_id.clone()),
        request_id,
        action: route.2.to_owned(),
        resource_type: route.3.to_owned(),
        resource_id,
        changes,
    };
    if let Err(e) = state.store.record_audit(entry).await {
        tracing::error!(error = %e, action = route.2, "audit: could not record a change");
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// A large answer's top-level field names, plus its `id` and `version`.
fn summarise(answer: &Value) -> Value {
    let mut out = serde_json::Map::new();
    if let Value::Object(map) = answer {
        for k in ["id", "version", "name"] {
            if let Some(v) = map.get(k).filter(|v| !v.is_object() && !v.is_array()) {
                out.insert(k.into(), v.clone());
            }
        }
        out.insert(
            "fields".into(),
            Value::Array(map.keys().cloned().map(Value::String).collect()),
        );
    }
    Value::Object(out)
}

/// A recorded change.
#[derive(Serialize, ToSchema)]
pub struct AuditView {
    /// `aud_…`
    pub id: String,
    /// RFC 3339.
    pub at: String,
    /// Who made the change.
    pub actor: ActorView,
    /// The request's `x-request-id`; null for the command line.
    pub request_id: Option<String>,
    /// `resource.verb`, e.g. `endpoint.created`.
    pub action: String,
    /// Kind of resource, e.g. `endpoint`.
    pub resource_type: String,
    /// The resource's id.
    pub resource_id: Option<String>,
    /// What the resource looked like after the change, secret values
    /// replaced by `"[redacted]"`; `{}` when the change answered nothing
    /// (a delete).
    #[schema(value_type = Object)]
    pub changes: Value,
}

/// The actor of a change.
#[derive(Serialize, ToSchema)]
pub struct ActorView {
    /// `key` or `cli`.
    pub kind: String,
    /// The key's id (`key_…`); null for the command line.
    pub key_id: Option<String>,
    /// The key's name at the time, or `cli`.
    pub name: String,
}

impl From<AuditEntry> for AuditView {
    fn from(e: AuditEntry) -> Self {
        Self {
            id: e.id,
            at: time(e.at),
            actor: ActorView {
                kind: if e.actor_key_id.is_some() {
                    "key"
                } else {
                    "cli"
                }
                .into(),
                key_id: e.actor_key_id,
                name: e.actor_name,
            },
            request_id: e.request_id,
            action: e.action,
            resource_type: e.resource_type,
            resource_id: e.resource_id,
            changes: match e.changes {
                Value::Null => Value::Object(Default::default()),
                other => other,
            },
        }
    }
}

/// `?since=&until=&actor=&resource=&action=&limit=&cursor=`
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// RFC 3339: changes at or after.
    pub since: Option<String>,
    /// RFC 3339: changes before.
    pub until: Option<String>,
    /// A key id (`key_…`), or `cli`.
    pub actor: Option<String>,
    /// A resource id, or a resource type (`endpoint`).
    pub resource: Option<String>,
    /// An action, e.g. `key.revoked`.
    pub action: Option<String>,
    /// Items per page, 1–200 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// Lists the account's changes, newest first. Account-wide keys only.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = List<AuditView>), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_audit(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<List<AuditView>>> {
    let p = auth.account_wide()?;
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .parse()?;
    let at = |field: &str, v: Option<String>| -> Result<Option<i64>, ApiError> {
        non_empty(v)
            .map(|s| super::events::parse_time(field, &s))
            .transpose()
    };
    let filter = AuditFilter {
        since: at("since", q.since)?,
        until: at("until", q.until)?,
        actor: non_empty(q.actor),
        resource: non_empty(q.resource),
        action: non_empty(q.action),
    };
    let page = state.store.list_audit(&p.account_id, filter, page).await?;
    Ok(Json(List::from_page(page, AuditView::from)))
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/audit", get(list_audit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_removes_secret_fields_and_header_values() {
        let mut v = serde_json::json!({
            "id": "ep_1",
            "secret": "whsec_abc",
            "key": "bw_live_xyz",
            "headers": {"X-Api-Key": "hunter2", "X-Plain": "visible?"},
            "nested": [{"auth_token": "t0k"}],
            "url": "https://example.com/hook"
        });
        redact(&mut v);
        let text = v.to_string();
        for secret in ["whsec_abc", "bw_live_xyz", "hunter2", "visible?", "t0k"] {
            assert!(!text.contains(secret), "{secret} left in {text}");
        }
        assert_eq!(v["url"], "https://example.com/hook");
        assert_eq!(v["id"], "ep_1");
    }

    #[test]
    fn path_params_follow_the_pattern() {
        let p = path_params(
            "/v1/bots/{bot}/webhooks/{name}",
            "/v1/bots/bot_1/webhooks/crm",
        );
        assert_eq!(
            p,
            vec![("bot".to_owned(), "bot_1"), ("name".to_owned(), "crm")]
        );
    }
}
