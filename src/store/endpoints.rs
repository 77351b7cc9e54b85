//! Endpoints: where a bot's events are delivered, with their filters,
//! payload format, custom headers and body, rate limit and signing secrets.
//!
//! Every change to an endpoint is reported to the delivery engine of this
//! process (through the store's delivery sink) once it is committed, so
//! deliveries already queued in memory use the endpoint as it now is, and a
//! disabled or deleted endpoint gets nothing more.
//!
//! A bot has at most a configured number of endpoints, of every kind
//! together (`limits.max_endpoints_per_bot`): the count is taken inside the
//! inserting transaction, after locking the bot's row, so concurrent
//! creators — in this process or another sharing PostgreSQL — cannot pass
//! it together.
//!
//! Secrets are kept newest first and rotated by the domain's one rule
//! ([`crate::domain::secret::rotate`]): a new secret goes in front and the
//! previous one gets an expiry; until then both sign (the receiver may hold
//! either).
//!
//! Custom headers are stored as two columns: `headers`, a JSON object of
//! name → value (as before the values could be marked plain, so an older
//! process still reads it), and `plain_headers`, a JSON array of the names
//! whose values are not secrets.

use super::{Page, PageRequest, Result, Row, Store, StoreError, now_ms};
use crate::domain::endpoint;
use crate::domain::ids::new_id;
use crate::domain::outbound::CustomHeader;
use crate::domain::secret::{self, Secret};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// How an endpoint came to be.
pub mod kind {
    /// Created with `POST /v1/bots/{bot}/endpoints`.
    pub const ENDPOINT: &str = "endpoint";
    /// Registered with `POST /api/v1.0/chatbot-webhook/{uniqueId}/` (one per bot).
    pub const REGISTRATION: &str = "registration";
    /// A REST hook subscription (`POST /v1/hooks/subscribe`); a 410 deletes it.
    pub const HOOK: &str = "hook";
}

pub use crate::domain::endpoint::PayloadFormat;
pub use crate::domain::secret::SecretEntry;

/// An endpoint as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointRow {
    /// `ep_…`
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// The bot whose events it receives.
    pub bot_id: String,
    /// Where to POST.
    pub url: String,
    /// Free text.
    pub description: String,
    /// Event types it receives; `None` for every type.
    pub event_types: Option<Vec<String>>,
    /// Whether deliveries are made to it.
    pub enabled: bool,
    /// Why it was disabled, when it was.
    pub disabled_reason: Option<String>,
    /// When it was disabled (Unix ms).
    pub disabled_at: Option<i64>,
    /// Custom headers sent with every request.
    pub headers: BTreeMap<String, CustomHeader>,
    /// Extra JSON params merged into every payload.
    pub body: Map<String, Value>,
    /// Payload shape.
    pub format: PayloadFormat,
    /// Most requests per second, when limited.
    pub rate_limit: Option<i64>,
    /// Signing secrets, newest first.
    pub secrets: Vec<SecretEntry>,
    /// See [`kind`].
    pub kind: String,
    /// First failure since the last success (Unix ms).
    pub first_failure_at: Option<i64>,
    /// Last success (Unix ms).
    pub last_success_at: Option<i64>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms; moves on every configuration change.
    pub updated_at: i64,
}

impl EndpointRow {
    /// Whether it receives events of this type.
    pub fn wants(&self, event_type: &str) -> bool {
        endpoint::wants(self.event_types.as_deref(), event_type)
    }

    /// Whether it receives `event_type` about `bot_id` (see
    /// [`endpoint::receives`]).
    pub fn receives(&self, bot_id: &str, event_type: &str) -> bool {
        endpoint::receives(
            self.event_types.as_deref(),
            &self.bot_id,
            bot_id,
            event_type,
        )
    }

    /// The secrets that sign at `now`, newest first.
    pub fn live_secrets(&self, now: i64) -> Vec<Secret> {
        secret::live(&self.secrets, now)
    }

    /// The current secret (`whsec_…`).
    pub fn current_secret(&self) -> Option<&str> {
        secret::current(&self.secrets)
    }
}

/// The endpoint columns [`endpoint_from`] reads, for a table aliased (or
/// named) `ep`.
pub(super) const EP_COLUMNS: &str = "ep.id, ep.account_id, ep.bot_id, ep.url, ep.description, ep.event_types, ep.enabled,
     ep.disabled_reason, ep.disabled_at, ep.headers, ep.body, ep.format, ep.rate_limit, ep.secrets, ep.kind,
     ep.first_failure_at, ep.last_success_at, ep.created_at, ep.updated_at, ep.plain_headers";

/// How many columns [`EP_COLUMNS`] names.
pub(super) const EP_WIDTH: usize = 20;

fn bad(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(format!("endpoint {what}: {e}"))
}

/// Reads an endpoint from `row` by column name (a row of [`EP_COLUMNS`],
/// or that part of a joined row).
pub(super) fn endpoint_from(row: &Row) -> Result<EndpointRow> {
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

/// A new endpoint, before it is stored.
#[derive(Clone, Debug)]
pub struct NewEndpoint {
    /// The bot.
    pub bot_id: String,
    /// Where to POST (already validated).
    pub url: String,
    /// Free text.
    pub description: String,
    /// Types, or `None` for all.
    pub event_types: Option<Vec<String>>,
    /// Starts enabled?
    pub enabled: bool,
    /// Custom headers (validated).
    pub headers: BTreeMap<String, CustomHeader>,
    /// Extra body params.
    pub body: Map<String, Value>,
    /// Payload shape.
    pub format: PayloadFormat,
    /// Requests per second, when limited.
    pub rate_limit: Option<i64>,
    /// See [`kind`].
    pub kind: &'static str,
    /// The secret to start with; a fresh one when `None`.
    pub secret: Option<Secret>,
}

impl NewEndpoint {
    /// An endpoint of `kind` for `bot` at `url` with every other field at
    /// its default (all events, standard format, enabled).
    pub fn new(bot_id: &str, url: &str, kind: &'static str) -> Self {
        Self {
            bot_id: bot_id.to_owned(),
            url: url.to_owned(),
            description: String::new(),
            event_types: None,
            enabled: true,
            headers: BTreeMap::new(),
            body: Map::new(),
            format: PayloadFormat::Standard,
            rate_limit: None,
            kind,
            secret: None,
        }
    }

    fn into_row(self, account_id: &str) -> EndpointRow {
        let now = now_ms();
        EndpointRow {
            id: new_id("ep"),
            account_id: account_id.to_owned(),
            bot_id: self.bot_id,
            url: self.url,
            description: self.description,
            event_types: self.event_types,
            enabled: self.enabled,
            disabled_reason: None,
            disabled_at: None,
            headers: self.headers,
            body: self.body,
            format: self.format,
            rate_limit: self.rate_limit,
            secrets: secret::ring_of(&self.secret.unwrap_or_else(Secret::generate)),
            kind: self.kind.to_owned(),
            first_failure_at: None,
            last_success_at: None,
            created_at: now,
            updated_at: now,
        }
    }
}

/// Changes to an endpoint; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct EndpointPatch {
    /// New URL (validated).
    pub url: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New filter: `Some(None)` for every type.
    pub event_types: Option<Option<Vec<String>>>,
    /// Enable or disable. Enabling clears the disable reason and the
    /// failure streak.
    pub enabled: Option<bool>,
    /// Replace the custom headers.
    pub headers: Option<BTreeMap<String, CustomHeader>>,
    /// Replace the extra body params.
    pub body: Option<Map<String, Value>>,
    /// New payload shape.
    pub format: Option<PayloadFormat>,
    /// New limit: `Some(None)` removes it.
    pub rate_limit: Option<Option<i64>>,
}

fn insert(c: &mut dyn super::Conn, e: &EndpointRow) -> Result<()> {
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
fn insert_capped(c: &mut dyn super::Conn, e: &EndpointRow, max_per_bot: usize) -> Result<()> {
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
pub(super) fn save(c: &mut dyn super::Conn, e: &EndpointRow) -> Result<()> {
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
pub(super) fn load(c: &mut dyn super::Conn, account_id: &str, id: &str) -> Result<EndpointRow> {
    endpoint_from(&c.query_one(
        &format!("SELECT {EP_COLUMNS} FROM endpoints ep WHERE ep.account_id = $1 AND ep.id = $2"),
        &[account_id.into(), id.into()],
    )?)
}

/// Deletes an endpoint with its deliveries and attempts.
pub(super) fn remove(c: &mut dyn super::Conn, id: &str) -> Result<()> {
    for sql in [
        "DELETE FROM attempts WHERE endpoint_id = $1",
        "DELETE FROM deliveries WHERE endpoint_id = $1",
        "DELETE FROM endpoints WHERE id = $1",
    ] {
        c.execute(sql, &[id.into()])?;
    }
    Ok(())
}

/// What registering through the chatbot-webhook route did.
#[derive(Clone, Debug)]
pub enum Registered {
    /// A new endpoint.
    Created(EndpointRow),
    /// The bot's registered endpoint now points at the new URL.
    Updated(EndpointRow),
}

impl Store {
    /// Creates an endpoint, unless its bot already has `max_per_bot`
    /// ([`StoreError::LimitReached`]).
    pub async fn create_endpoint(
        &self,
        account_id: &str,
        new: NewEndpoint,
        max_per_bot: usize,
    ) -> Result<EndpointRow> {
        let row = new.into_row(account_id);
        let r = row.clone();
        self.write(move |c| insert_capped(c, &r, max_per_bot))
            .await?;
        Ok(row)
    }

    /// One endpoint of the account.
    pub async fn get_endpoint(&self, account_id: &str, id: &str) -> Result<EndpointRow> {
        let (a, id) = (account_id.to_owned(), id.to_owned());
        self.read(move |c| load(c, &a, &id)).await
    }

    /// A bot's endpoints, oldest first.
    pub async fn list_endpoints(
        &self,
        account_id: &str,
        bot_id: &str,
        page: PageRequest,
    ) -> Result<Page<EndpointRow>> {
        let sql = format!(
            "SELECT {EP_COLUMNS} FROM endpoints ep
             WHERE ep.account_id = $1 AND ep.bot_id = $2
               AND (CAST($3 AS TEXT) IS NULL OR ep.id > $3)
             ORDER BY ep.id LIMIT $4"
        );
        let params = vec![account_id.into(), bot_id.into(), page.after.clone().into()];
        self.read_page(sql, params, page, endpoint_from, |e| e.id.clone())
            .await
    }

    /// Applies `patch`; answers the endpoint as it now is.
    pub async fn update_endpoint(
        &self,
        account_id: &str,
        id: &str,
        patch: EndpointPatch,
    ) -> Result<EndpointRow> {
        let (a, id) = (account_id.to_owned(), id.to_owned());
        let row = self
            .write(move |c| {
                let mut e = load(c, &a, &id)?;
                if let Some(v) = patch.url {
                    e.url = v;
                }
                if let Some(v) = patch.description {
                    e.description = v;
                }
                if let Some(v) = patch.event_types {
                    e.event_types = v;
                }
                if let Some(v) = patch.headers {
                    e.headers = v;
                }
                if let Some(v) = patch.body {
                    e.body = v;
                }
                if let Some(v) = patch.format {
                    e.format = v;
                }
                if let Some(v) = patch.rate_limit {
                    e.rate_limit = v;
                }
                match patch.enabled {
                    Some(true) if !e.enabled => {
                        e.enabled = true;
                        e.disabled_reason = None;
                        e.disabled_at = None;
                        e.first_failure_at = None;
                    }
                    Some(false) if e.enabled => {
                        e.enabled = false;
                        e.disabled_reason = Some("disabled by a user".into());
                        e.disabled_at = Some(now_ms());
                    }
                    _ => {}
                }
                e.updated_at = now_ms().max(e.updated_at + 1);
                save(c, &e)?;
                Ok(e)
            })
            .await?;
        self.endpoint_changed(&row.id, Some(&row));
        Ok(row)
    }

    /// Deletes an endpoint (of `kind`, when given) with its deliveries and
    /// attempts.
    pub async fn delete_endpoint(
        &self,
        account_id: &str,
        id: &str,
        kind: Option<&'static str>,
    ) -> Result<EndpointRow> {
        let (a, id) = (account_id.to_owned(), id.to_owned());
        let row = self
            .write(move |c| {
                let e = load(c, &a, &id)?;
                if kind.is_some_and(|k| k != e.kind) {
                    return Err(StoreError::NotFound);
                }
                remove(c, &e.id)?;
                Ok(e)
            })
            .await?;
        self.endpoint_changed(&row.id, None);
        Ok(row)
    }

    /// Makes a new current secret; the previous one keeps signing for
    /// `grace_ms`. Secrets already expired are dropped.
    pub async fn rotate_secret(
        &self,
        account_id: &str,
        id: &str,
        grace_ms: i64,
    ) -> Result<EndpointRow> {
        let (a, id) = (account_id.to_owned(), id.to_owned());
        let row = self
            .write(move |c| {
                let mut e = load(c, &a, &id)?;
                let now = now_ms();
                e.secrets = secret::rotate(&e.secrets, &Secret::generate(), now, grace_ms);
                e.updated_at = now.max(e.updated_at + 1);
                save(c, &e)?;
                Ok(e)
            })
            .await?;
        self.endpoint_changed(&row.id, Some(&row));
        Ok(row)
    }

    /// The chatbot-webhook route: creates the bot's registered endpoint
    /// (unless the bot already has `max_per_bot`), or points the existing
    /// one at `url` (and re-enables it).
    pub async fn register_endpoint(
        &self,
        account_id: &str,
        bot_id: &str,
        url: &str,
        max_per_bot: usize,
    ) -> Result<Registered> {
        let (a, b, url) = (account_id.to_owned(), bot_id.to_owned(), url.to_owned());
        let outcome = self
            .write(move |c| {
                let existing = c.query_opt(
                    &format!(
                        "SELECT {EP_COLUMNS} FROM endpoints ep
                         WHERE ep.account_id = $1 AND ep.bot_id = $2 AND ep.kind = $3"
                    ),
                    &[(&a).into(), (&b).into(), kind::REGISTRATION.into()],
                )?;
                match existing {
                    Some(row) => {
                        let mut e = endpoint_from(&row)?;
                        e.url = url;
                        e.enabled = true;
                        e.disabled_reason = None;
                        e.disabled_at = None;
                        e.first_failure_at = None;
                        e.updated_at = now_ms().max(e.updated_at + 1);
                        save(c, &e)?;
                        Ok(Registered::Updated(e))
                    }
                    None => {
                        let e = NewEndpoint::new(&b, &url, kind::REGISTRATION).into_row(&a);
                        insert_capped(c, &e, max_per_bot)?;
                        Ok(Registered::Created(e))
                    }
                }
            })
            .await?;
        if let Registered::Updated(e) = &outcome {
            self.endpoint_changed(&e.id, Some(e));
        }
        Ok(outcome)
    }

    /// Tells this process's delivery engine that an endpoint changed
    /// (`None`: it is gone).
    pub(super) fn endpoint_changed(&self, id: &str, row: Option<&EndpointRow>) {
        if let Some(sink) = self.delivery_sink() {
            sink.endpoint_changed(id, row.cloned().map(Arc::new));
        }
    }
}
