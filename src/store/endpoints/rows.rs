//! Endpoint rows: the columns, reading a row (alone or as part of a joined
//! one) and writing it back. Custom headers take two columns, `headers`
//! (name → value) and `plain_headers` (the names whose values are not
//! secrets), so an older process still reads the first.

use super::EndpointRow;
use crate::domain::outbound::CustomHeader;
use crate::store::deliveries::endpoints_changed;
use crate::store::{Conn, Result, Row, StoreError};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The endpoint columns [`endpoint_from`] reads, for a table aliased (or
/// named) `ep`.
pub(in crate::store) const EP_COLUMNS: &str = "ep.id, ep.account_id, ep.bot_id, ep.url, ep.description, ep.event_types, ep.enabled,
     ep.disabled_reason, ep.disabled_at, ep.headers, ep.body, ep.format, ep.rate_limit, ep.secrets, ep.kind,
     ep.first_failure_at, ep.last_success_at, ep.created_at, ep.updated_at, ep.plain_headers";

/// How many columns [`EP_COLUMNS`] names.
pub(in crate::store) const EP_WIDTH: usize = 20;

fn bad(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(format!("endpoint {what}: {e}"))
}

/// Reads an endpoint from `row` by column name (a row of [`EP_COLUMNS`],
/// or that part of a joined row).
pub(in crate::store) fn endpoint_from(row: &Row) -> Result<EndpointRow> {
    let event_types = match row.opt_text_at("event_types")? {
        None => None,
        Some(t) => Some(serde_json::from_str(&t).map_err(|e| bad("event_types", e))?),
    };
    let format = serde_json::from_value(Value::String(row.text_at("format")?))
        .map_err(|e| bad("format", e))?;
    Ok(EndpointRow {
        id: row.text_at("id")?,
        account_id: row.text_at("account_id")?,
        bot_id: row.text_at("bot_id")?,
        url: row.text_at("url")?,
        description: row.text_at("description")?,
        event_types,
        enabled: row.bool_at("enabled")?,
        disabled_reason: row.opt_text_at("disabled_reason")?,
        disabled_at: row.opt_int_at("disabled_at")?,
        headers: headers_from(row.json_at("headers")?, row.json_at("plain_headers")?),
        body: row.json_at("body")?,
        format,
        rate_limit: row.opt_int_at("rate_limit")?,
        secrets: row.json_at("secrets")?,
        kind: row.text_at("kind")?,
        first_failure_at: row.opt_int_at("first_failure_at")?,
        last_success_at: row.opt_int_at("last_success_at")?,
        created_at: row.int_at("created_at")?,
        updated_at: row.int_at("updated_at")?,
    })
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("endpoint fields serialise")
}

/// The custom headers from their two columns.
fn headers_from(
    values: BTreeMap<String, String>,
    plain: BTreeSet<String>,
) -> BTreeMap<String, CustomHeader> {
    values
        .into_iter()
        .map(|(k, value)| {
            let sensitive = !plain.contains(&k);
            (k, CustomHeader { value, sensitive })
        })
        .collect()
}

/// The `headers` column: name → value.
fn header_values(headers: &BTreeMap<String, CustomHeader>) -> String {
    json(
        &headers
            .iter()
            .map(|(k, h)| (k, &h.value))
            .collect::<BTreeMap<_, _>>(),
    )
}

/// The `plain_headers` column: the names whose values are not secrets.
fn plain_names(headers: &BTreeMap<String, CustomHeader>) -> String {
    json(
        &headers
            .iter()
            .filter(|(_, h)| !h.sensitive)
            .map(|(k, _)| k)
            .collect::<Vec<_>>(),
    )
}

fn insert(c: &mut dyn Conn, e: &EndpointRow) -> Result<()> {
    endpoints_changed(c);
    c.execute(
        "INSERT INTO endpoints (id, account_id, bot_id, url, description, event_types, enabled,
            disabled_reason, disabled_at, headers, body, format, rate_limit, secrets, kind,
            first_failure_at, last_success_at, created_at, updated_at, plain_headers)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
        &[
            (&e.id).into(),
            (&e.account_id).into(),
            (&e.bot_id).into(),
            (&e.url).into(),
            (&e.description).into(),
            e.event_types.as_ref().map(json).into(),
            e.enabled.into(),
            e.disabled_reason.clone().into(),
            e.disabled_at.into(),
            header_values(&e.headers).into(),
            json(&e.body).into(),
            e.format.as_str().into(),
            e.rate_limit.into(),
            json(&e.secrets).into(),
            (&e.kind).into(),
            e.first_failure_at.into(),
            e.last_success_at.into(),
            e.created_at.into(),
            e.updated_at.into(),
            plain_names(&e.headers).into(),
        ],
    )?;
    Ok(())
}

/// Inserts `e` unless its bot already has `max_per_bot` endpoints.
pub(super) fn insert_capped(c: &mut dyn Conn, e: &EndpointRow, max_per_bot: usize) -> Result<()> {
    // A write to the bot's row: on PostgreSQL it holds the row's lock until
    // commit, so a second transaction adding to the same bot waits here and
    // then counts what the first added. SQLite's one writer already runs
    // them one after the other.
    c.execute(
        "UPDATE bots SET updated_at = updated_at WHERE account_id = $1 AND id = $2",
        &[(&e.account_id).into(), (&e.bot_id).into()],
    )?;
    let count = c
        .query_one(
            "SELECT COUNT(*) AS n FROM endpoints WHERE account_id = $1 AND bot_id = $2",
            &[(&e.account_id).into(), (&e.bot_id).into()],
        )?
        .int_at("n")?;
    if usize::try_from(count).is_ok_and(|n| n >= max_per_bot) {
        return Err(StoreError::LimitReached(format!(
            "bot {:?} already has {count} endpoints, the most a bot may have (limits.max_endpoints_per_bot = {max_per_bot}); delete one it no longer needs (REST hook subscriptions count too) before adding another",
            e.bot_id
        )));
    }
    insert(c, e)
}

/// Writes every configuration column of `e` back (inside a transaction).
pub(in crate::store) fn save(c: &mut dyn Conn, e: &EndpointRow) -> Result<()> {
    endpoints_changed(c);
    let n = c.execute(
        "UPDATE endpoints SET url = $1, description = $2, event_types = $3, enabled = $4,
            disabled_reason = $5, disabled_at = $6, headers = $7, body = $8, format = $9,
            rate_limit = $10, secrets = $11, first_failure_at = $12, updated_at = $13,
            plain_headers = $14
         WHERE id = $15",
        &[
            (&e.url).into(),
            (&e.description).into(),
            e.event_types.as_ref().map(json).into(),
            e.enabled.into(),
            e.disabled_reason.clone().into(),
            e.disabled_at.into(),
            header_values(&e.headers).into(),
            json(&e.body).into(),
            e.format.as_str().into(),
            e.rate_limit.into(),
            json(&e.secrets).into(),
            e.first_failure_at.into(),
            e.updated_at.into(),
            plain_names(&e.headers).into(),
            (&e.id).into(),
        ],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// One endpoint of the account, inside a transaction or on a reader.
pub(in crate::store) fn load(c: &mut dyn Conn, account_id: &str, id: &str) -> Result<EndpointRow> {
    endpoint_from(&c.query_one(
        &format!("SELECT {EP_COLUMNS} FROM endpoints ep WHERE ep.account_id = $1 AND ep.id = $2"),
        &[account_id.into(), id.into()],
    )?)
}

/// Deletes an endpoint with its deliveries and attempts.
pub(in crate::store) fn remove(c: &mut dyn Conn, id: &str) -> Result<()> {
    endpoints_changed(c);
    for sql in [
        "DELETE FROM attempts WHERE endpoint_id = $1",
        "DELETE FROM deliveries WHERE endpoint_id = $1",
        "DELETE FROM endpoints WHERE id = $1",
    ] {
        c.execute(sql, &[id.into()])?;
    }
    Ok(())
}
