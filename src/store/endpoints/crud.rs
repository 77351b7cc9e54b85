//! What the API does with endpoints: create (under the bot's cap, counted
//! inside the inserting transaction), read, list, update, delete, rotate
//! the signing secret and register through the chatbot-webhook route.
//! Each committed change is reported to this process's delivery engine.

use super::rows::{EP_COLUMNS, endpoint_from, insert_capped, load, remove, save};
use super::{EndpointPatch, EndpointRow, NewEndpoint, Registered, kind};
use crate::domain::secret::{self, Secret};
use crate::store::{Page, PageRequest, Result, Store, StoreError, now_ms};
use std::sync::Arc;

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
    pub(in crate::store) fn endpoint_changed(&self, id: &str, row: Option<&EndpointRow>) {
        if let Some(sink) = self.delivery_sink() {
            sink.endpoint_changed(id, row.cloned().map(Arc::new));
        }
    }
}
