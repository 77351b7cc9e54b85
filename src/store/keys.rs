//! API keys as stored: a keyed hash, a recognisable prefix, an optional bot
//! scope, a kind (`secret` or `publishable`, with its allowed website
//! origins), and a revocation time.

use super::{Conn, Page, PageRequest, Result, Row, Store, StoreError, now_ms};
use crate::auth::{NewKey, Pepper, generate_key};
use crate::domain::account::{ApiKey, Principal};
use crate::domain::ids::new_id;

const COLUMNS: &str = "id, account_id, bot_id, name, prefix, created_at, revoked_at, kind, origins";

fn origins_from(row: &Row, i: usize) -> Result<Vec<String>> {
    serde_json::from_str(&row.text(i)?)
        .map_err(|e| StoreError::Database(format!("api_keys.origins: {e}")))
}

fn key_from(row: &Row) -> Result<ApiKey> {
    Ok(ApiKey {
        id: row.text(0)?,
        account_id: row.text(1)?,
        bot_id: row.opt_text(2)?,
        name: row.text(3)?,
        prefix: row.text(4)?,
        created_at: row.int(5)?,
        revoked_at: row.opt_int(6)?,
        publishable: row.text(7)? == "publishable",
        origins: origins_from(row, 8)?,
    })
}

/// Inserts a key row for `key` (whose plaintext is never stored);
/// `origins` makes it publishable.
pub(super) fn insert_key(
    c: &mut dyn Conn,
    account_id: &str,
    bot_id: Option<&str>,
    name: &str,
    pepper: &Pepper,
    key: &NewKey,
    origins: Option<&[String]>,
) -> Result<ApiKey> {
    let row = ApiKey {
        id: new_id("key"),
        account_id: account_id.to_owned(),
        bot_id: bot_id.map(str::to_owned),
        name: name.to_owned(),
        prefix: key.prefix.clone(),
        created_at: now_ms(),
        revoked_at: None,
        publishable: origins.is_some(),
        origins: origins.map(<[String]>::to_vec).unwrap_or_default(),
    };
    c.execute(
        "INSERT INTO api_keys (id, account_id, bot_id, name, prefix, hash, created_at, kind, origins)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            (&row.id).into(),
            account_id.into(),
            bot_id.into(),
            name.into(),
            (&row.prefix).into(),
            pepper.hash(&key.plaintext).into(),
            row.created_at.into(),
            if row.publishable { "publishable" } else { "secret" }.into(),
            serde_json::to_string(&row.origins)
                .expect("strings serialise")
                .into(),
        ],
    )?;
    Ok(row)
}

impl Store {
    /// Creates a key; returns its row and its plaintext (shown once).
    ///
    /// A bot-scoped key needs the bot to exist in the account.
    pub async fn create_key(
        &self,
        account_id: &str,
        bot_id: Option<&str>,
        name: &str,
        pepper: &Pepper,
    ) -> Result<(ApiKey, String)> {
        self.create_key_of_kind(account_id, bot_id, name, None, pepper)
            .await
    }

    /// Creates a publishable key for `bot_id`, usable from `origins` (already
    /// checked with [`crate::domain::account::parse_origin`]).
    pub async fn create_publishable_key(
        &self,
        account_id: &str,
        bot_id: &str,
        name: &str,
        origins: Vec<String>,
        pepper: &Pepper,
    ) -> Result<(ApiKey, String)> {
        self.create_key_of_kind(account_id, Some(bot_id), name, Some(origins), pepper)
            .await
    }

    async fn create_key_of_kind(
        &self,
        account_id: &str,
        bot_id: Option<&str>,
        name: &str,
        origins: Option<Vec<String>>,
        pepper: &Pepper,
    ) -> Result<(ApiKey, String)> {
        let key = generate_key();
        let plaintext = key.plaintext.clone();
        let (account_id, bot_id, name, pepper) = (
            account_id.to_owned(),
            bot_id.map(str::to_owned),
            name.to_owned(),
            pepper.clone(),
        );
        let audit = super::audit::pending();
        let pending = audit.clone();
        let row = self
            .write(move |c| {
                if let Some(bot) = &bot_id {
                    c.query_opt(
                        "SELECT id FROM bots WHERE account_id = $1 AND id = $2",
                        &[(&account_id).into(), bot.into()],
                    )?
                    .ok_or_else(|| StoreError::Invalid(format!("bot {bot:?} does not exist")))?;
                }
                let row = insert_key(
                    c,
                    &account_id,
                    bot_id.as_deref(),
                    &name,
                    &pepper,
                    &key,
                    origins.as_deref(),
                )?;
                // Recorded in the key's own transaction.
                let changes = serde_json::json!({
                    "name": row.name,
                    "bot_id": row.bot_id,
                    "kind": if row.publishable { "publishable" } else { "secret" },
                    "origins": row.origins,
                });
                if let Some(e) = pending
                    .as_ref()
                    .and_then(|p| p.entry(&account_id, "key.created", "key", &row.id, changes))
                {
                    super::audit::record(c, &e)?;
                }
                Ok(row)
            })
            .await?;
        if let Some(p) = audit {
            p.mark_recorded();
        }
        Ok((row, plaintext))
    }

    /// Keys of an account, oldest first.
    pub async fn list_keys(&self, account_id: &str, page: PageRequest) -> Result<Page<ApiKey>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM api_keys WHERE account_id = $1 AND id > $2
             ORDER BY id LIMIT $3"
        );
        let after = page.after.clone().unwrap_or_default();
        let params = vec![account_id.into(), after.into()];
        self.read_page(sql, params, page, key_from, |k| k.id.clone())
            .await
    }

    /// Revokes a key of the account; revoking twice is harmless.
    pub async fn revoke_key(&self, account_id: &str, key_id: &str) -> Result<ApiKey> {
        let (account_id, key_id) = (account_id.to_owned(), key_id.to_owned());
        let audit = super::audit::pending();
        let pending = audit.clone();
        let key = self
            .write(move |c| {
                c.execute(
                    "UPDATE api_keys SET revoked_at = $1
                     WHERE account_id = $2 AND id = $3 AND revoked_at IS NULL",
                    &[now_ms().into(), (&account_id).into(), (&key_id).into()],
                )?;
                let key = key_from(&c.query_one(
                    &format!("SELECT {COLUMNS} FROM api_keys WHERE account_id = $1 AND id = $2"),
                    &[(&account_id).into(), key_id.into()],
                )?)?;
                // Recorded in the revocation's own transaction.
                let changes = serde_json::json!({"name": key.name});
                if let Some(e) = pending
                    .as_ref()
                    .and_then(|p| p.entry(&account_id, "key.revoked", "key", &key.id, changes))
                {
                    super::audit::record(c, &e)?;
                }
                Ok(key)
            })
            .await?;
        if let Some(p) = audit {
            p.mark_recorded();
        }
        Ok(key)
    }

    /// The principal a presented key stands for, if it is live.
    pub async fn authenticate(
        &self,
        presented: &str,
        pepper: &Pepper,
    ) -> Result<Option<Principal>> {
        self.authenticate_hash(presented, pepper.hash(presented), pepper)
            .await
    }

    /// [`Store::authenticate`] with the keyed hash already computed.
    pub async fn authenticate_hash(
        &self,
        presented: &str,
        hash: String,
        pepper: &Pepper,
    ) -> Result<Option<Principal>> {
        let presented = presented.to_owned();
        let pepper = pepper.clone();
        self.read(move |c| {
            let Some(row) = c.query_opt(
                "SELECT id, account_id, bot_id, hash, kind, origins FROM api_keys
                 WHERE hash = $1 AND revoked_at IS NULL",
                &[hash.into()],
            )?
            else {
                return Ok(None);
            };
            if !pepper.verify(&presented, &row.text(3)?) {
                return Ok(None);
            }
            Ok(Some(Principal {
                key_id: row.text(0)?,
                account_id: row.text(1)?,
                bot_id: row.opt_text(2)?,
                publishable: row.text(4)? == "publishable",
                origins: origins_from(&row, 5)?,
            }))
        })
        .await
    }
}
