//! Flow documents, versioned per bot, and the bot's settings (price table,
//! calendar) kept beside them.

use super::{Result, Store, StoreError, now_ms};

/// A stored flow version.
#[derive(Clone, Debug)]
pub struct FlowRow {
    /// 1, 2, 3 … per bot.
    pub version: i64,
    /// The flow as JSON.
    pub document: String,
    /// When it was saved, Unix ms.
    pub created_at: i64,
}

impl Store {
    /// Saves a new flow version and makes it current; returns its number.
    pub async fn put_flow(&self, account_id: &str, bot_id: &str, document: String) -> Result<i64> {
        self.put_flow_if(account_id, bot_id, document, None).await
    }

    /// Like [`Store::put_flow`], but only when the current version is still
    /// `expected` (0: the bot has no flow yet); otherwise
    /// [`StoreError::Conflict`] saying which version is current. Of several
    /// saves based on the same version, on any number of nodes, exactly one
    /// succeeds; saves without `expected` each get their own next number.
    pub async fn put_flow_if(
        &self,
        account_id: &str,
        bot_id: &str,
        document: String,
        expected: Option<i64>,
    ) -> Result<i64> {
        let (account_id, bot_id) = (account_id.to_owned(), bot_id.to_owned());
        self.write(move |c| {
            // The version is taken by one conditional UPDATE: it locks the
            // bot's row, so a concurrent save (another node's writer on
            // PostgreSQL) waits, then sees the new version and no longer
            // matches `expected` — or, without one, takes the next number.
            let now = now_ms();
            let bumped = match expected {
                Some(e) => c.query_opt(
                    "UPDATE bots SET flow_version = flow_version + 1, updated_at = $1
                     WHERE account_id = $2 AND id = $3 AND flow_version = $4
                     RETURNING flow_version",
                    &[now.into(), (&account_id).into(), (&bot_id).into(), e.into()],
                )?,
                None => c.query_opt(
                    "UPDATE bots SET flow_version = flow_version + 1, updated_at = $1
                     WHERE account_id = $2 AND id = $3
                     RETURNING flow_version",
                    &[now.into(), (&account_id).into(), (&bot_id).into()],
                )?,
            };
            let Some(row) = bumped else {
                let current = c
                    .query_opt(
                        "SELECT flow_version FROM bots WHERE account_id = $1 AND id = $2",
                        &[(&account_id).into(), (&bot_id).into()],
                    )?
                    .ok_or(StoreError::NotFound)?
                    .int(0)?;
                return Err(StoreError::Conflict(format!(
                    "the flow was saved by someone else since version {}: \
                     version {current} is current. Reload it, make your changes again and save",
                    expected.unwrap_or_default()
                )));
            };
            let version = row.int(0)?;
            c.execute(
                "INSERT INTO flows (account_id, bot_id, version, document, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    account_id.into(),
                    bot_id.into(),
                    version.into(),
                    document.into(),
                    now.into(),
                ],
            )?;
            Ok(version)
        })
        .await
    }

    /// A flow version of a bot; `None` asks for the current one. `Ok(None)`
    /// when the bot has no flow (yet, or of that version).
    pub async fn get_flow(
        &self,
        account_id: &str,
        bot_id: &str,
        version: Option<i64>,
    ) -> Result<Option<FlowRow>> {
        let (account_id, bot_id) = (account_id.to_owned(), bot_id.to_owned());
        self.read(move |c| {
            let row = c.query_opt(
                "SELECT f.version, f.document, f.created_at FROM flows f
                 JOIN bots b ON b.account_id = f.account_id AND b.id = f.bot_id
                 WHERE f.account_id = $1 AND f.bot_id = $2
                   AND f.version = COALESCE($3, b.flow_version)",
                &[account_id.into(), bot_id.into(), version.into()],
            )?;
            row.map(|r| {
                Ok(FlowRow {
                    version: r.int(0)?,
                    document: r.text(1)?,
                    created_at: r.int(2)?,
                })
            })
            .transpose()
        })
        .await
    }

    /// The bot's settings document (JSON object: `price_table`, `calendar`).
    pub async fn get_bot_settings(&self, account_id: &str, bot_id: &str) -> Result<String> {
        let (account_id, bot_id) = (account_id.to_owned(), bot_id.to_owned());
        self.read(move |c| {
            c.query_one(
                "SELECT config FROM bots WHERE account_id = $1 AND id = $2",
                &[account_id.into(), bot_id.into()],
            )?
            .text(0)
        })
        .await
    }

    /// Replaces the bot's settings document.
    pub async fn put_bot_settings(
        &self,
        account_id: &str,
        bot_id: &str,
        settings: String,
    ) -> Result<()> {
        let (account_id, bot_id) = (account_id.to_owned(), bot_id.to_owned());
        self.write(move |c| {
            let n = c.execute(
                "UPDATE bots SET config = $1, updated_at = $2 WHERE account_id = $3 AND id = $4",
                &[
                    settings.into(),
                    now_ms().into(),
                    account_id.into(),
                    bot_id.into(),
                ],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }
}
