//! The audit log: who changed what, when, through which request.
//!
//! [`record`] inserts one row on a connection, so a write closure can log
//! its change in the same transaction; [`Store::record_audit`] does the same
//! as a write of its own.
//!
//! A change made on behalf of someone runs inside [`scope`] with a
//! [`Pending`] naming the actor and request id. A store function that can
//! record in its own transaction takes [`pending`] before its write, inserts
//! the row in the same closure, and marks the change recorded, so the route
//! layer does not record it a second time (key creation and revocation do
//! this). The acting key's name is read when the row is
//! written, so a later rename or revocation does not rewrite history.
//! Callers pass `changes` with secret values already removed (see
//! `api::audit::redact`); nothing here looks inside it.

use super::{Conn, Page, PageRequest, Result, Row, Store, StoreError, now_ms};
use crate::domain::ids::new_id;
use std::sync::{Arc, Mutex};

/// Who is changing things in the running task, and whether the change has
/// been recorded already (see the module documentation).
#[derive(Clone, Debug, Default)]
pub struct Pending(Arc<Mutex<PendingState>>);

#[derive(Debug, Default)]
struct PendingState {
    actor: Option<Actor>,
    request_id: Option<String>,
    recorded: bool,
}

impl Pending {
    /// A change made by `actor` (set later with [`Pending::set_actor`] when
    /// not yet known) in request `request_id`.
    pub fn new(actor: Option<Actor>, request_id: Option<String>) -> Self {
        Self(Arc::new(Mutex::new(PendingState {
            actor,
            request_id,
            recorded: false,
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PendingState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Names the actor once the request's key is known.
    pub fn set_actor(&self, actor: Actor) {
        self.state().actor = Some(actor);
    }

    /// The row to record for a change, when the actor is known.
    pub fn entry(
        &self,
        account_id: &str,
        action: &str,
        resource_type: &str,
        resource_id: &str,
        changes: serde_json::Value,
    ) -> Option<NewAudit> {
        let s = self.state();
        Some(NewAudit {
            account_id: account_id.to_owned(),
            actor: s.actor.clone()?,
            request_id: s.request_id.clone(),
            action: action.to_owned(),
            resource_type: resource_type.to_owned(),
            resource_id: Some(resource_id.to_owned()),
            changes,
        })
    }

    /// Notes that the change was recorded with its own commit.
    pub fn mark_recorded(&self) {
        self.state().recorded = true;
    }

    /// Whether the change was recorded already.
    pub fn recorded(&self) -> bool {
        self.state().recorded
    }
}

tokio::task_local! {
    static PENDING: Pending;
}

/// Runs `f` as a change on behalf of `pending`'s actor.
pub async fn scope<F: std::future::Future>(pending: Pending, f: F) -> F::Output {
    PENDING.scope(pending, f).await
}

/// The running task's [`Pending`], inside [`scope`].
pub fn pending() -> Option<Pending> {
    PENDING.try_with(Clone::clone).ok()
}

/// Who made a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// An API key, by id (its name is looked up when the row is written).
    Key(String),
    /// The `botwire` command line on the server.
    Cli,
}

/// One change to record.
#[derive(Clone, Debug)]
pub struct NewAudit {
    /// The account the change belongs to.
    pub account_id: String,
    /// Who made it.
    pub actor: Actor,
    /// The request's `x-request-id`, when made through the API.
    pub request_id: Option<String>,
    /// What happened, `resource.verb`, e.g. `endpoint.created`.
    pub action: String,
    /// The kind of thing changed, e.g. `endpoint`.
    pub resource_type: String,
    /// Its id, when it has one.
    pub resource_id: Option<String>,
    /// A summary of the change, secret values removed.
    pub changes: serde_json::Value,
}

/// A recorded change.
#[derive(Clone, Debug)]
pub struct AuditEntry {
    /// `aud_…`, increasing with time.
    pub id: String,
    /// Unix milliseconds.
    pub at: i64,
    /// The acting key's id; `None` for the command line.
    pub actor_key_id: Option<String>,
    /// The acting key's name at the time, or `cli`.
    pub actor_name: String,
    /// The request id, if any.
    pub request_id: Option<String>,
    /// `resource.verb`.
    pub action: String,
    /// Kind of resource.
    pub resource_type: String,
    /// Its id.
    pub resource_id: Option<String>,
    /// Summary of the change.
    pub changes: serde_json::Value,
}

/// Filters of [`Store::list_audit`]; `None` means any.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// At or after this Unix millisecond.
    pub since: Option<i64>,
    /// Before this Unix millisecond.
    pub until: Option<i64>,
    /// The acting key's id, or `cli`.
    pub actor: Option<String>,
    /// A resource id, or a resource type.
    pub resource: Option<String>,
    /// An exact action.
    pub action: Option<String>,
}

const COLUMNS: &str = "id, at, actor_key_id, actor_name, request_id, action, resource_type, \
                       resource_id, changes";

fn entry_from(row: &Row) -> Result<AuditEntry> {
    Ok(AuditEntry {
        id: row.text(0)?,
        at: row.int(1)?,
        actor_key_id: row.opt_text(2)?,
        actor_name: row.text(3)?,
        request_id: row.opt_text(4)?,
        action: row.text(5)?,
        resource_type: row.text(6)?,
        resource_id: row.opt_text(7)?,
        changes: row.json(8)?,
    })
}

/// Inserts one audit row on `c` (inside the caller's transaction).
pub fn record(c: &mut dyn Conn, entry: &NewAudit) -> Result<String> {
    let (key_id, name) = match &entry.actor {
        Actor::Cli => (None, "cli".to_owned()),
        Actor::Key(id) => {
            let name = c
                .query_opt("SELECT name FROM api_keys WHERE id = $1", &[id.into()])?
                .map(|r| r.text(0))
                .transpose()?
                .unwrap_or_default();
            (Some(id.clone()), name)
        }
    };
    let id = new_id("aud");
    let changes = serde_json::to_string(&entry.changes)
        .map_err(|e| StoreError::Invalid(format!("audit changes: {e}")))?;
    c.execute(
        "INSERT INTO audit (id, account_id, at, actor_key_id, actor_name, request_id, action,
                            resource_type, resource_id, changes)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            (&id).into(),
            (&entry.account_id).into(),
            now_ms().into(),
            key_id.into(),
            name.into(),
            entry.request_id.clone().into(),
            (&entry.action).into(),
            (&entry.resource_type).into(),
            entry.resource_id.clone().into(),
            changes.into(),
        ],
    )?;
    Ok(id)
}

impl Store {
    /// Records one change as a write of its own.
    pub async fn record_audit(&self, entry: NewAudit) -> Result<String> {
        self.write(move |c| record(c, &entry)).await
    }

    /// An account's audit log, newest first.
    pub async fn list_audit(
        &self,
        account_id: &str,
        filter: AuditFilter,
        page: PageRequest,
    ) -> Result<Page<AuditEntry>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM audit
             WHERE account_id = $1
               AND (CAST($2 AS TEXT) IS NULL OR id < $2)
               AND (CAST($3 AS BIGINT) IS NULL OR at >= $3)
               AND (CAST($4 AS BIGINT) IS NULL OR at < $4)
               AND (CAST($5 AS TEXT) IS NULL OR actor_key_id = $5
                    OR ($5 = 'cli' AND actor_key_id IS NULL))
               AND (CAST($6 AS TEXT) IS NULL OR resource_id = $6 OR resource_type = $6)
               AND (CAST($7 AS TEXT) IS NULL OR action = $7)
             ORDER BY id DESC LIMIT $8"
        );
        let params = vec![
            account_id.into(),
            page.after.clone().into(),
            filter.since.into(),
            filter.until.into(),
            filter.actor.into(),
            filter.resource.into(),
            filter.action.into(),
        ];
        self.read_page(sql, params, page, entry_from, |e| e.id.clone())
            .await
    }

    /// Deletes audit rows older than `before` (Unix ms); answers how many.
    pub async fn prune_audit(&self, before: i64) -> Result<u64> {
        self.write(move |c| c.execute("DELETE FROM audit WHERE at < $1", &[before.into()]))
            .await
    }
}
