//! Contacts: the people a bot talks to. `GET /v1/bots/{bot}/contacts`
//! lists them through a filter (CEL over `user` and `contact`), `GET/PATCH
//! /v1/contacts/{id}` reads one and merges its attributes, and the CSV
//! export (streamed) and import (a report of rejected rows) move them in and
//! out in bulk.
//!
//! A bad filter is a 422 whose `details` give the `column` of the problem.

use super::bots::load;
use super::error::{ApiError, ApiResult, ErrorBody, OrNotFound};
use super::extract::{ApiJson, ApiQuery, Auth, PageQuery, encode_cursor};
use super::{AppState, List, time};
use crate::domain::csv;
use crate::domain::flow::condition::ExprError;
use crate::domain::people::{self, ContactFilter};
use crate::store::contacts::{ContactRecord, ImportOutcome, ImportRow};
use crate::store::conversations::ConversationFilter;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::pin::Pin;
use std::task::{Context, Poll};
use utoipa::{IntoParams, ToSchema};

/// A contact on the wire.
#[derive(Serialize, ToSchema)]
pub struct ContactView {
    /// `ct_…`
    pub id: String,
    /// The bot it talks to.
    pub bot_id: String,
    /// E.164 phone, when known by one.
    pub phone: Option<String>,
    /// An id in your system (or a channel's `kind:user`).
    pub external_id: Option<String>,
    /// `api`, `web`, `whatsapp`, `telegram`, `twilio` or `messenger`.
    pub channel: String,
    /// `user` attributes.
    #[schema(value_type = Object)]
    pub attributes: Value,
    /// Whether it asked not to be messaged (broadcasts skip it).
    pub opted_out: bool,
    /// RFC 3339: created (first turn or import).
    pub first_seen: String,
    /// RFC 3339: its last turn, if it ever talked.
    pub last_seen: Option<String>,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<ContactRecord> for ContactView {
    fn from(c: ContactRecord) -> Self {
        Self {
            id: c.id,
            bot_id: c.bot_id,
            phone: c.phone,
            external_id: c.external_id,
            channel: c.channel,
            attributes: Value::Object(c.attributes),
            opted_out: c.opted_out,
            first_seen: time(c.created_at),
            last_seen: c.last_seen.map(time),
            updated_at: time(c.updated_at),
        }
    }
}

/// A 422 for a filter that does not compile, with its column.
pub fn filter_error(field: &str, e: &ExprError) -> ApiError {
    let mut err = ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_filter",
        format!("{field}: {e}"),
    );
    let mut d = serde_json::json!({"field": field});
    if let Some(c) = e.column() {
        d["column"] = c.into();
    }
    err.details = Some(Box::new(d));
    err
}

/// Compiles an optional filter parameter.
pub fn compile_filter(field: &str, source: Option<&str>) -> ApiResult<Option<ContactFilter>> {
    match source.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => ContactFilter::compile(s)
            .map(Some)
            .map_err(|e| filter_error(field, &e)),
    }
}

/// `?filter=&q=&limit=&cursor=`
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ContactQuery {
    /// CEL over `user` and `contact`, e.g. `user.plan == "vip" && contact.channel == "whatsapp"`.
    pub filter: Option<String>,
    /// Text found in the phone, external id or attributes (any case).
    pub q: Option<String>,
    /// Items per page, 1–200.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A bot's contacts, newest first, through an optional filter. A page may
/// hold fewer items than `limit` and still carry a `next_cursor` when the
/// filter is selective: keep following it until it is null.
#[utoipa::path(get, path = "/v1/bots/{bot}/contacts", tag = "contacts",
    params(("bot" = String, Path), ContactQuery),
    responses((status = 200, body = List<ContactView>), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_contacts(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
    ApiQuery(q): ApiQuery<ContactQuery>,
) -> ApiResult<Json<List<ContactView>>> {
    let p = auth.bot(&bot)?;
    load(&state, &p.account_id, &bot).await?;
    let filter = compile_filter("filter", q.filter.as_deref())?;
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .parse()?;
    let found = state
        .store
        .filter_contacts(&p.account_id, &bot, filter, q.q, page.after, page.limit)
        .await?;
    Ok(Json(List {
        data: found.items.into_iter().map(ContactView::from).collect(),
        next_cursor: found.next_after.as_deref().map(encode_cursor),
    }))
}

async fn contact_for(state: &AppState, auth: &Auth, id: &str) -> ApiResult<ContactRecord> {
    let not_found = || ApiError::not_found(format!("contact {id:?} not found"));
    let c = state
        .store
        .get_contact(&auth.0.account_id, id)
        .await
        .or_not_found(not_found)?;
    if !auth.0.may_use_bot(&c.bot_id) {
        return Err(not_found());
    }
    Ok(c)
}

/// One contact.
#[utoipa::path(get, path = "/v1/contacts/{id}", tag = "contacts",
    params(("id" = String, Path)),
    responses((status = 200, body = ContactView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_contact(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<ContactView>> {
    Ok(Json(contact_for(&state, &auth, &id).await?.into()))
}

/// `PATCH /v1/contacts/{id}`
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactPatch {
    /// Merged into the attributes: each key replaces its value, `null` deletes it.
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Map<String, Value>>,
    /// Opt the contact out of (or back into) broadcasts.
    pub opted_out: Option<bool>,
}

/// Merges attributes into a contact (`null` deletes a key), like a story
/// webhook's `user_attributes`, and sets its opt-out.
#[utoipa::path(patch, path = "/v1/contacts/{id}", tag = "contacts",
    params(("id" = String, Path)), request_body = ContactPatch,
    responses((status = 200, body = ContactView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_contact(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ContactPatch>,
) -> ApiResult<Json<ContactView>> {
    let c = contact_for(&state, &auth, &id).await?;
    let patch = body.attributes.unwrap_or_default();
    people::check_patch(&patch).map_err(|e| ApiError::unprocessable(format!("attributes: {e}")))?;
    let rec = state
        .store
        .update_contact(&auth.0.account_id, &id, patch, body.opted_out, |merged| {
            people::check_size(merged).map_err(|e| e.to_string())
        })
        .await
        .or_not_found(|| ApiError::not_found(format!("contact {id:?} not found")))?;
    state.chat.forget_sessions(&auth.0.account_id, &c.bot_id);
    Ok(Json(rec.into()))
}

/// A contact's conversations, newest first.
#[utoipa::path(get, path = "/v1/contacts/{id}/conversations", tag = "contacts",
    params(("id" = String, Path), PageQuery),
    responses((status = 200, body = List<super::chat::ConversationSummary>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_contact_conversations(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<List<super::chat::ConversationSummary>>> {
    let c = contact_for(&state, &auth, &id).await?;
    let page = page.parse()?;
    let rows = state
        .store
        .list_conversations(
            &auth.0.account_id,
            &c.bot_id,
            ConversationFilter {
                status: None,
                contact_id: Some(c.id),
            },
            page,
        )
        .await?;
    Ok(Json(List::from_page(rows, |c| super::chat::summary(&c).0)))
}

/// `?filter=&q=` of the export.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// CEL over `user` and `contact`; every contact without it.
    pub filter: Option<String>,
    /// Text found in the phone, external id or attributes.
    pub q: Option<String>,
    /// Attribute columns, comma-separated; without it, the keys of the
    /// first 500 contacts exported.
    pub columns: Option<String>,
}

/// The fixed columns of an export, before the attributes.
const FIXED_COLUMNS: [&str; 7] = [
    "id",
    "phone",
    "external_id",
    "channel",
    "opted_out",
    "first_seen",
    "last_seen",
];

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn csv_row(c: &ContactRecord, keys: &[String]) -> String {
    let fixed = [
        c.id.clone(),
        c.phone.clone().unwrap_or_default(),
        c.external_id.clone().unwrap_or_default(),
        c.channel.clone(),
        c.opted_out.to_string(),
        time(c.created_at),
        c.last_seen.map(time).unwrap_or_default(),
    ];
    csv::line(
        fixed
            .into_iter()
            .chain(keys.iter().map(|k| cell(c.attributes.get(k)))),
    )
}

/// A body fed from a channel, chunk by chunk.
struct ChunkStream(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl futures_core::Stream for ChunkStream {
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// The bot's contacts as CSV (RFC 4180), streamed page by page: the fixed
/// columns, then one column per attribute.
#[utoipa::path(get, path = "/v1/bots/{bot}/contacts/export", tag = "contacts",
    params(("bot" = String, Path), ExportQuery),
    responses((status = 200, description = "CSV", content_type = "text/csv"), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn export_contacts(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> ApiResult<Response> {
    let p = auth.bot(&bot)?.clone();
    load(&state, &p.account_id, &bot).await?;
    let filter = compile_filter("filter", q.filter.as_deref())?;
    let first = state
        .store
        .filter_contacts(&p.account_id, &bot, filter.clone(), q.q.clone(), None, 500)
        .await?;
    let keys: Vec<String> = match q.columns.as_deref().filter(|c| !c.trim().is_empty()) {
        Some(cols) => cols.split(',').map(|c| c.trim().to_owned()).collect(),
        None => first
            .items
            .iter()
            .flat_map(|c| c.attributes.keys().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let store = state.store.clone();
    tokio::spawn(async move {
        let header = csv::line(
            FIXED_COLUMNS
                .iter()
                .map(|s| (*s).to_owned())
                .chain(keys.iter().cloned()),
        );
        let mut chunk = header;
        let mut page = first;
        loop {
            for c in &page.items {
                chunk.push_str(&csv_row(c, &keys));
            }
            if tx
                .send(Ok(Bytes::from(std::mem::take(&mut chunk))))
                .await
                .is_err()
            {
                return;
            }
            let Some(after) = page.next_after.take() else {
                return;
            };
            match store
                .filter_contacts(
                    &p.account_id,
                    &bot,
                    filter.clone(),
                    q.q.clone(),
                    Some(after),
                    500,
                )
                .await
            {
                Ok(next) => page = next,
                Err(e) => {
                    tracing::error!(error = %e, "contacts export stopped");
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            }
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"contacts.csv\"",
            ),
        ],
        Body::from_stream(ChunkStream(rx)),
    )
        .into_response())
}

/// One rejected line of an import.
#[derive(Serialize, ToSchema)]
pub struct RejectedRow {
    /// 1-based line of the CSV.
    pub line: usize,
    /// Why, and what to fix.
    pub reason: String,
}

/// What an import did.
#[derive(Serialize, ToSchema)]
pub struct ImportReport {
    /// New contacts.
    pub created: usize,
    /// Existing contacts (same external id, or same phone) updated.
    pub updated: usize,
    /// Lines refused, with the reason.
    pub rejected: Vec<RejectedRow>,
}

/// A CSV cell as an attribute value: `true`/`false` are booleans, numbers
/// written plainly (no leading zeros, no `+`) are numbers, the rest text.
fn attribute_value(s: &str) -> Value {
    match s {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    let digits = s.strip_prefix('-').unwrap_or(s);
    let plain = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().filter(|b| *b == b'.').count() <= 1
        && !digits.starts_with('.')
        && !digits.ends_with('.')
        && !(digits.len() > 1 && digits.starts_with('0') && !digits.starts_with("0."));
    if plain && let Ok(n) = serde_json::from_str::<serde_json::Number>(s) {
        return Value::Number(n);
    }
    Value::String(s.to_owned())
}

/// Parses an import file into rows and rejections.
pub fn parse_import(text: &str) -> Result<(Vec<ImportRow>, Vec<RejectedRow>), ApiError> {
    let records = csv::parse(text).map_err(|e| ApiError::unprocessable(format!("CSV: {e}")))?;
    let mut it = records.into_iter();
    let header = it
        .next()
        .ok_or_else(|| ApiError::unprocessable("the CSV is empty; its first line names the columns (phone, external_id, opted_out, then attributes)"))?;
    let columns: Vec<String> = header
        .fields
        .iter()
        .map(|h| {
            let h = h.trim();
            h.strip_prefix("user.").unwrap_or(h).to_owned()
        })
        .collect();
    if !columns.iter().any(|c| c == "phone" || c == "external_id") {
        return Err(ApiError::unprocessable(
            "the CSV needs a phone or an external_id column to find each contact by",
        ));
    }
    let ignored = ["id", "channel", "first_seen", "last_seen", ""];
    let mut rows = Vec::new();
    let mut rejected = Vec::new();
    for rec in it {
        if rec.fields.len() != columns.len() {
            rejected.push(RejectedRow {
                line: rec.line,
                reason: format!(
                    "{} fields where the header has {}",
                    rec.fields.len(),
                    columns.len()
                ),
            });
            continue;
        }
        let mut row = ImportRow {
            line: rec.line,
            phone: None,
            external_id: None,
            attributes: Map::new(),
            opted_out: None,
        };
        let mut reason = None;
        for (col, value) in columns.iter().zip(rec.fields) {
            let value = value.trim().to_owned();
            match col.as_str() {
                "phone" if !value.is_empty() => {
                    match crate::runtime::chat::ContactRef::parse(Some(&value), None) {
                        Ok(_) => row.phone = Some(value),
                        Err(e) => reason = Some(e.to_string().replace("contact.phone", "phone")),
                    }
                }
                "external_id" if !value.is_empty() => {
                    match crate::runtime::chat::ContactRef::parse(None, Some(&value)) {
                        Ok(_) => row.external_id = Some(value),
                        Err(e) => reason = Some(e.to_string().replace("contact.id", "external_id")),
                    }
                }
                "opted_out" if !value.is_empty() => match value.to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" => row.opted_out = Some(true),
                    "false" | "0" | "no" => row.opted_out = Some(false),
                    _ => reason = Some(format!("opted_out must be true or false, got {value:?}")),
                },
                "phone" | "external_id" | "opted_out" => {}
                c if ignored.contains(&c) => {}
                key => {
                    if !value.is_empty() {
                        row.attributes
                            .insert(key.to_owned(), attribute_value(&value));
                    }
                }
            }
            if reason.is_some() {
                break;
            }
        }
        if reason.is_none() && row.phone.is_none() && row.external_id.is_none() {
            reason = Some("a phone or an external_id is needed to find the contact".into());
        }
        if reason.is_none()
            && let Err(e) = people::check_patch(&row.attributes)
        {
            reason = Some(format!("column {e}"));
        }
        match reason {
            Some(reason) => rejected.push(RejectedRow {
                line: rec.line,
                reason,
            }),
            None => rows.push(row),
        }
    }
    Ok((rows, rejected))
}

/// Imports contacts from CSV (`text/csv`): a header line naming the
/// columns (`phone` and/or `external_id`, optionally `opted_out`; every
/// other column is an attribute, `user.` prefix optional), then one contact
/// per line. A contact is found by external id, else by phone, and updated
/// (attributes merged); importing the same file twice changes nothing.
/// Rejected lines are reported with their line number and the reason.
#[utoipa::path(post, path = "/v1/bots/{bot}/contacts/import", tag = "contacts",
    params(("bot" = String, Path)),
    request_body(content = String, description = "CSV with a header line", content_type = "text/csv"),
    responses((status = 200, body = ImportReport), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn import_contacts(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
    req: Request,
) -> ApiResult<Json<ImportReport>> {
    let p = auth.bot(&bot)?.clone();
    load(&state, &p.account_id, &bot).await?;
    let is_csv = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let e = v.split(';').next().unwrap_or("").trim();
            e.eq_ignore_ascii_case("text/csv") || e.eq_ignore_ascii_case("text/plain")
        });
    if !is_csv {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the contacts as Content-Type: text/csv",
        ));
    }
    let bytes = super::extract::read_body(req, &state).await?;
    let text = String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::unprocessable("the CSV must be UTF-8"))?;
    let (rows, mut rejected) = parse_import(&text)?;
    let lines: Vec<usize> = rows.iter().map(|r| r.line).collect();
    let (mut created, mut updated) = (0, 0);
    for (chunk, lines) in rows.chunks(500).zip(lines.chunks(500)) {
        let outcomes = state
            .store
            .import_contacts(&p.account_id, &bot, chunk.to_vec())
            .await?;
        for (o, line) in outcomes.into_iter().zip(lines) {
            match o {
                ImportOutcome::Created(_) => created += 1,
                ImportOutcome::Updated(_) => updated += 1,
                ImportOutcome::Rejected(reason) => rejected.push(RejectedRow {
                    line: *line,
                    reason,
                }),
            }
        }
    }
    rejected.sort_by_key(|r| r.line);
    state.chat.forget_sessions(&p.account_id, &bot);
    Ok(Json(ImportReport {
        created,
        updated,
        rejected,
    }))
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/bots/{bot}/contacts", get(list_contacts))
        .route("/v1/bots/{bot}/contacts/export", get(export_contacts))
        .route("/v1/bots/{bot}/contacts/import", post(import_contacts))
        .route("/v1/contacts/{id}", get(get_contact).patch(update_contact))
        .route(
            "/v1/contacts/{id}/conversations",
            get(list_contact_conversations),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_cells_become_typed_attributes() {
        assert_eq!(attribute_value("42"), Value::from(42));
        assert_eq!(attribute_value("-1.5"), Value::from(-1.5));
        assert_eq!(attribute_value("007"), Value::from("007"));
        assert_eq!(attribute_value("+34600"), Value::from("+34600"));
        assert_eq!(attribute_value("true"), Value::Bool(true));
        assert_eq!(attribute_value("vip"), Value::from("vip"));
    }

    #[test]
    fn import_rows_are_validated_with_their_line() {
        let (rows, rejected) = parse_import(
            "phone,plan,age\n+34600000001,vip,30\nnot-a-phone,free,1\n+34600000002,gold\n,vip,3\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].attributes["age"], Value::from(30));
        let lines: Vec<_> = rejected.iter().map(|r| r.line).collect();
        assert_eq!(lines, [3, 4, 5]);
        assert!(
            rejected[0].reason.contains("E.164"),
            "{}",
            rejected[0].reason
        );
        assert!(parse_import("plan\nvip\n").is_err());
    }
}
