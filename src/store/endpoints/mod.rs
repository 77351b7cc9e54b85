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
//!
//! One concern per file:
//!
//! * this file: the endpoint as stored and the inputs that create
//!   ([`NewEndpoint`]) and change ([`EndpointPatch`]) it;
//! * `rows.rs`: its columns, how a row is read and written (custom headers
//!   over their two columns), and the writes the delivery engine shares
//!   (save, load, remove);
//! * `crud.rs`: what the API does with endpoints (create under the bot's
//!   cap, read, list, update, delete, rotate the secret, register) and the
//!   report of each change to this process's delivery engine.

mod crud;
mod rows;

pub(super) use rows::{EP_COLUMNS, EP_WIDTH, endpoint_from, load, remove, save};

use super::now_ms;
use crate::domain::endpoint;
use crate::domain::ids::new_id;
use crate::domain::outbound::CustomHeader;
use crate::domain::secret::{self, Secret};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

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

/// What registering through the chatbot-webhook route did.
#[derive(Clone, Debug)]
pub enum Registered {
    /// A new endpoint.
    Created(EndpointRow),
    /// The bot's registered endpoint now points at the new URL.
    Updated(EndpointRow),
}
