//! Bots as stored, scoped by account.

use super::{Page, PageRequest, Result, Row, Store, StoreError, now_ms};
use crate::domain::bot::{Bot, BotId, BotType};

const COLUMNS: &str = "account_id, id, name, type, flow_version, created_at, updated_at";

fn bot_from(row: &Row) -> Result<Bot> {
    Ok(Bot {
        account_id: row.text(0)?,
        id: BotId::parse(&row.text(1)?).map_err(StoreError::Database)?,
        name: row.text(2)?,
        bot_type: BotType::parse(&row.text(3)?).map_err(StoreError::Database)?,
        flow_version: row.int(4)?,
        created_at: row.int(5)?,
        updated_at: row.int(6)?,
    })
}

/// Changes to a bot; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct BotPatch {
    /// New display name.
    pub name: Option<String>,
    /// New type.
    pub bot_type: Option<BotType>,
}

impl Store {
    /// Creates a bot; a taken id is a `Conflict`.
    pub async fn create_bot(
        &self,
        account_id: &str,
        id: BotId,
        name: &str,
        bot_type: BotType,
    ) -> Result<Bot> {
        let now = now_ms();
        let bot = Bot {
            account_id: account_id.to_owned(),
            id,
            name: name.to_owned(),
            bot_type,
            flow_version: 0,
            created_at: now,
            updated_at: now,
        };
        let b = bot.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO bots (account_id, id, name, type, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    (&b.account_id).into(),
                    b.id.as_str().into(),
                    (&b.name).into(),
                    b.bot_type.as_str().into(),
                    b.created_at.into(),
                    b.updated_at.into(),
                ],
            )
            .map_err(|e| match e {
                StoreError::Conflict(_) => StoreError::Conflict(format!(
                    "a bot with id {:?} already exists",
                    b.id.as_str()
                )),
                other => other,
            })
        })
        .await?;
        Ok(bot)
    }

    /// One bot of the account.
    pub async fn get_bot(&self, account_id: &str, id: &str) -> Result<Bot> {
        let (account_id, id) = (account_id.to_owned(), id.to_owned());
        self.read(move |c| {
            bot_from(&c.query_one(
                &format!("SELECT {COLUMNS} FROM bots WHERE account_id = $1 AND id = $2"),
                &[account_id.into(), id.into()],
            )?)
        })
        .await
    }

    /// Bots of the account by id; `only` restricts to one bot (scoped keys).
    pub async fn list_bots(
        &self,
        account_id: &str,
        only: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<Bot>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM bots
             WHERE account_id = $1 AND id > $2 AND (CAST($3 AS TEXT) IS NULL OR id = $3)
             ORDER BY id LIMIT $4"
        );
        let after = page.after.clone().unwrap_or_default();
        let params = vec![account_id.into(), after.into(), only.into()];
        self.read_page(sql, params, page, bot_from, |b| b.id.as_str().to_owned())
            .await
    }

    /// Applies a patch; returns the bot as it is now.
    pub async fn update_bot(&self, account_id: &str, id: &str, patch: BotPatch) -> Result<Bot> {
        let (account_id, id) = (account_id.to_owned(), id.to_owned());
        self.write(move |c| {
            let n = c.execute(
                "UPDATE bots SET name = COALESCE($1, name), type = COALESCE($2, type),
                 updated_at = $3 WHERE account_id = $4 AND id = $5",
                &[
                    patch.name.into(),
                    patch.bot_type.map(|t| t.as_str()).into(),
                    now_ms().into(),
                    (&account_id).into(),
                    (&id).into(),
                ],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            bot_from(&c.query_one(
                &format!("SELECT {COLUMNS} FROM bots WHERE account_id = $1 AND id = $2"),
                &[account_id.into(), id.into()],
            )?)
        })
        .await
    }

    /// Deletes a bot with everything it owns (flows, contacts,
    /// conversations, transcripts, events, appointments) and revokes the
    /// keys scoped to it.
    pub async fn delete_bot(&self, account_id: &str, id: &str) -> Result<()> {
        let (account_id, id) = (account_id.to_owned(), id.to_owned());
        self.write(move |c| {
            let n = c.execute(
                "DELETE FROM bots WHERE account_id = $1 AND id = $2",
                &[(&account_id).into(), (&id).into()],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            let scope = [(&account_id).into(), (&id).into()];
            super::deliveries::endpoints_changed(c);
            c.execute(
                "DELETE FROM messages WHERE conversation_id IN
                 (SELECT id FROM conversations WHERE account_id = $1 AND bot_id = $2)",
                &scope,
            )?;
            c.execute(
                "DELETE FROM attempts WHERE endpoint_id IN
                 (SELECT id FROM endpoints WHERE account_id = $1 AND bot_id = $2)",
                &scope,
            )?;
            for table in [
                "conversations",
                "contacts",
                "flows",
                "events",
                "event_keys",
                "appointments",
                "deliveries",
                "endpoints",
                "webhook_calls",
            ] {
                c.execute(
                    &format!("DELETE FROM {table} WHERE account_id = $1 AND bot_id = $2"),
                    &scope,
                )?;
            }
            c.execute(
                "UPDATE api_keys SET revoked_at = $1
                 WHERE account_id = $2 AND bot_id = $3 AND revoked_at IS NULL",
                &[now_ms().into(), account_id.into(), id.into()],
            )?;
            Ok(())
        })
        .await
    }
}
