//! Story webhooks as stored: definitions live in the bot's settings
//! document (changed here read-modify-write inside one write, so concurrent
//! edits never lose one another), the bot's signing secrets in
//! `bots.story_secrets`, and every call in `webhook_calls`.

use super::{Conn, Page, PageRequest, Result, Row, Store, now_ms};

/// A logged call.
#[derive(Clone, Debug, PartialEq)]
pub struct CallRow {
    /// `call_…`
    pub id: String,
    /// The webhook's name.
    pub webhook: String,
    /// The conversation it was made in, if any (not for tests).
    pub conversation_id: Option<String>,
    /// `ok` or `error`.
    pub outcome: String,
    /// The call record, JSON.
    pub record: String,
    /// Unix ms.
    pub created_at: i64,
}

fn call_from(r: &Row) -> Result<CallRow> {
    Ok(CallRow {
        id: r.text(0)?,
        webhook: r.text(1)?,
        conversation_id: r.opt_text(2)?,
        outcome: r.text(3)?,
        record: r.text(4)?,
        created_at: r.int(5)?,
    })
}

const CALL_COLUMNS: &str = "id, webhook, conversation_id, outcome, record, created_at";

/// Inserts a call record inside the caller's transaction.
pub(super) fn insert_call(
    c: &mut dyn Conn,
    account_id: &str,
    bot_id: &str,
    call: &CallRow,
) -> Result<()> {
    c.send(
        "INSERT INTO webhook_calls (id, account_id, bot_id, webhook, conversation_id, outcome, record, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            (&call.id).into(),
            account_id.into(),
            bot_id.into(),
            (&call.webhook).into(),
            call.conversation_id.as_deref().into(),
            (&call.outcome).into(),
            (&call.record).into(),
            call.created_at.into(),
        ],
    )
}

impl Store {
    /// Changes the bot's settings document atomically: `f` gets the current
    /// JSON and returns the new JSON (or an error, which changes nothing).
    pub async fn modify_bot_settings<R, F>(&self, account_id: &str, bot_id: &str, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(String) -> Result<(String, R)> + Send + 'static,
    {
        let (a, b) = (account_id.to_owned(), bot_id.to_owned());
        self.write(move |c| {
            let current = c
                .query_one(
                    "SELECT config FROM bots WHERE account_id = $1 AND id = $2",
                    &[(&a).into(), (&b).into()],
                )?
                .text(0)?;
            let (next, out) = f(current)?;
            c.execute(
                "UPDATE bots SET config = $1, updated_at = $2 WHERE account_id = $3 AND id = $4",
                &[next.into(), now_ms().into(), a.into(), b.into()],
            )?;
            Ok(out)
        })
        .await
    }

    /// The bot's story-webhook secrets (JSON), creating the first one —
    /// `fresh` — when there is none yet.
    pub async fn story_secrets(
        &self,
        account_id: &str,
        bot_id: &str,
        fresh: String,
    ) -> Result<String> {
        let (a, b) = (account_id.to_owned(), bot_id.to_owned());
        self.write(move |c| {
            let current = c
                .query_one(
                    "SELECT story_secrets FROM bots WHERE account_id = $1 AND id = $2",
                    &[(&a).into(), (&b).into()],
                )?
                .text(0)?;
            if current != "[]" {
                return Ok(current);
            }
            c.execute(
                "UPDATE bots SET story_secrets = $1 WHERE account_id = $2 AND id = $3",
                &[(&fresh).into(), a.into(), b.into()],
            )?;
            Ok(fresh)
        })
        .await
    }

    /// Replaces the bot's story-webhook secrets (JSON) with what `f` makes
    /// of them, atomically; bumps the bot so caches reload.
    pub async fn rotate_story_secrets<F>(
        &self,
        account_id: &str,
        bot_id: &str,
        f: F,
    ) -> Result<String>
    where
        F: FnOnce(String) -> String + Send + 'static,
    {
        let (a, b) = (account_id.to_owned(), bot_id.to_owned());
        self.write(move |c| {
            let current = c
                .query_one(
                    "SELECT story_secrets FROM bots WHERE account_id = $1 AND id = $2",
                    &[(&a).into(), (&b).into()],
                )?
                .text(0)?;
            let next = f(current);
            c.execute(
                "UPDATE bots SET story_secrets = $1, updated_at = $2 WHERE account_id = $3 AND id = $4",
                &[(&next).into(), now_ms().into(), a.into(), b.into()],
            )?;
            Ok(next)
        })
        .await
    }

    /// Records a call made outside a conversation (the test endpoint).
    pub async fn record_call(&self, account_id: &str, bot_id: &str, call: CallRow) -> Result<()> {
        let (a, b) = (account_id.to_owned(), bot_id.to_owned());
        self.write(move |c| insert_call(c, &a, &b, &call)).await
    }

    /// Calls of one webhook, newest first.
    pub async fn list_calls(
        &self,
        account_id: &str,
        bot_id: &str,
        webhook: &str,
        page: PageRequest,
    ) -> Result<Page<CallRow>> {
        let sql = format!(
            "SELECT {CALL_COLUMNS} FROM webhook_calls
             WHERE account_id = $1 AND bot_id = $2 AND webhook = $3
               AND (CAST($4 AS TEXT) IS NULL OR id < $4)
             ORDER BY id DESC LIMIT $5"
        );
        let params = vec![
            account_id.into(),
            bot_id.into(),
            webhook.into(),
            page.after.clone().into(),
        ];
        self.read_page(sql, params, page, call_from, |c| c.id.clone())
            .await
    }

    /// Calls made in one conversation, oldest first.
    pub async fn conversation_calls(&self, conversation_id: &str) -> Result<Vec<CallRow>> {
        let id = conversation_id.to_owned();
        self.read(move |c| {
            c.query(
                &format!(
                    "SELECT {CALL_COLUMNS} FROM webhook_calls WHERE conversation_id = $1 ORDER BY id"
                ),
                &[id.into()],
            )?
            .iter()
            .map(call_from)
            .collect()
        })
        .await
    }
}
