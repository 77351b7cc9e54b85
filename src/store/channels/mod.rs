//! Messaging channels: the channels themselves, the messages people send
//! through them (the inbound table), and the bot's replies waiting to go out
//! (the outbox, `channel_messages`).
//!
//! * **Inbound.** [`Store::receive`] writes a webhook's messages, and
//!   applies its delivery statuses, in one transaction before the platform
//!   is answered. The unique index on (channel, platform message id) makes a
//!   retried message a no-op: only rows written now come back to be
//!   processed. A row stays `pending` until the chat turn it causes commits,
//!   which marks it `done` in the same transaction ([`ChannelTurnWrite`]),
//!   so a crash in between loses nothing and a second processing commits
//!   nothing. Rows written by a node that processes them are leased to it;
//!   others (an API-only node's, or a dead node's once the lease expires)
//!   are claimed with [`Store::claim_inbound`].
//! * **Outbox.** Replies are written in the turn's transaction. A lane (the
//!   conversation) sends one message at a time, in id order: a claim takes
//!   only the first unfinished message of each lane ([`Store::claim_outbox`]).
//!   Rows written by a node that sends them are leased to it and handed to
//!   its sender in memory once durable ([`OutboxSink`]).
//! * **Sending.** Just before calling the platform, the sender marks the
//!   messages it is about to send `sending_at` ([`Store::mark_sending`], one
//!   write per batch, only rows still leased to it); the recorded outcome
//!   clears the mark. The platforms take no idempotency key, so a row found
//!   still marked once its lease ran out (its process stopped mid-send) is
//!   in doubt: it is never sent again but settled as failed with
//!   [`INTERRUPTED`] by the next claim of another node (a node never
//!   settles its own), with its `message.failed` event.
//! * **Statuses** only move forward (sent → delivered → read; failed from
//!   any), so a report that arrives twice or late changes nothing; each
//!   change writes its `message.*` event.
//!
//! The code is in three parts: the channels themselves (here), what comes
//! in ([`inbound`]) and what goes out ([`outbox`]).

mod inbound;
mod outbox;

pub use inbound::*;
pub use outbox::*;
pub(super) use outbox::{insert_outbox, lane_lease, write_channel_turn};

use super::{Page, PageRequest, Result, Row, Store, StoreError, now_ms};
use crate::channels::{ChannelConfig, ChannelKind};
use crate::domain::ids::new_id;

/// A channel as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelRow {
    /// `ch_…`
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// The bot it is bound to.
    pub bot_id: String,
    /// A name for people.
    pub name: String,
    /// Settings, secrets included.
    pub config: ChannelConfig,
    /// When the last message came in.
    pub last_inbound_at: Option<i64>,
    /// The last refused webhook request, in words.
    pub last_inbound_error: Option<String>,
    /// When the last reply was sent (or failed).
    pub last_outbound_at: Option<i64>,
    /// The last send failure, in the platform's words.
    pub last_outbound_error: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

impl ChannelRow {
    /// Which platform.
    pub fn kind(&self) -> ChannelKind {
        self.config.kind()
    }
}

pub(super) const CH_COLUMNS: &str = "id, account_id, bot_id, name, config, last_inbound_at, last_inbound_error, last_outbound_at, last_outbound_error, created_at, updated_at";

pub(super) fn channel_from(r: &Row) -> Result<ChannelRow> {
    Ok(ChannelRow {
        id: r.text(0)?,
        account_id: r.text(1)?,
        bot_id: r.text(2)?,
        name: r.text(3)?,
        config: r.json(4)?,
        last_inbound_at: r.opt_int(5)?,
        last_inbound_error: r.opt_text(6)?,
        last_outbound_at: r.opt_int(7)?,
        last_outbound_error: r.opt_text(8)?,
        created_at: r.int(9)?,
        updated_at: r.int(10)?,
    })
}

fn config_json(c: &ChannelConfig) -> String {
    serde_json::to_string(c).expect("channel settings serialise")
}

impl Store {
    /// Creates a channel for a bot (the bot must exist).
    pub async fn create_channel(
        &self,
        account_id: &str,
        bot_id: &str,
        id: &str,
        name: &str,
        config: ChannelConfig,
    ) -> Result<ChannelRow> {
        let now = now_ms();
        let row = ChannelRow {
            id: id.to_owned(),
            account_id: account_id.to_owned(),
            bot_id: bot_id.to_owned(),
            name: name.to_owned(),
            config,
            last_inbound_at: None,
            last_inbound_error: None,
            last_outbound_at: None,
            last_outbound_error: None,
            created_at: now,
            updated_at: now,
        };
        let r = row.clone();
        self.write(move |c| {
            c.query_one(
                "SELECT 1 FROM bots WHERE account_id = $1 AND id = $2",
                &[(&r.account_id).into(), (&r.bot_id).into()],
            )?;
            c.execute(
                &format!(
                    "INSERT INTO channels ({CH_COLUMNS}, kind) VALUES ($1, $2, $3, $4, $5, NULL, NULL, NULL, NULL, $6, $6, $7)"
                ),
                &[
                    (&r.id).into(),
                    (&r.account_id).into(),
                    (&r.bot_id).into(),
                    (&r.name).into(),
                    config_json(&r.config).into(),
                    now.into(),
                    r.kind().as_str().into(),
                ],
            )?;
            Ok(())
        })
        .await?;
        Ok(row)
    }

    /// A bot's channels, oldest first.
    pub async fn list_channels(
        &self,
        account_id: &str,
        bot_id: &str,
        page: PageRequest,
    ) -> Result<Page<ChannelRow>> {
        let sql = format!(
            "SELECT {CH_COLUMNS} FROM channels
             WHERE account_id = $1 AND bot_id = $2 AND (CAST($3 AS TEXT) IS NULL OR id > $3)
             ORDER BY id LIMIT $4"
        );
        let params = vec![account_id.into(), bot_id.into(), page.after.clone().into()];
        self.read_page(sql, params, page, channel_from, |c| c.id.clone())
            .await
    }

    /// One channel of the account.
    pub async fn get_channel(&self, account_id: &str, id: &str) -> Result<ChannelRow> {
        let (a, id) = (account_id.to_owned(), id.to_owned());
        self.read(move |c| {
            channel_from(&c.query_one(
                &format!("SELECT {CH_COLUMNS} FROM channels WHERE account_id = $1 AND id = $2"),
                &[a.into(), id.into()],
            )?)
        })
        .await
    }

    /// A channel by id alone (the webhook route knows nothing else).
    pub async fn find_channel(&self, id: &str) -> Result<Option<ChannelRow>> {
        let id = id.to_owned();
        self.read(move |c| {
            c.query_opt(
                &format!("SELECT {CH_COLUMNS} FROM channels WHERE id = $1"),
                &[id.into()],
            )?
            .as_ref()
            .map(channel_from)
            .transpose()
        })
        .await
    }

    /// Saves a channel's name and settings.
    pub async fn update_channel(&self, row: ChannelRow) -> Result<ChannelRow> {
        let mut row = row;
        row.updated_at = now_ms().max(row.updated_at + 1);
        let r = row.clone();
        self.write(move |c| {
            let n = c.execute(
                "UPDATE channels SET name = $1, config = $2, updated_at = $3
                 WHERE account_id = $4 AND id = $5",
                &[
                    (&r.name).into(),
                    config_json(&r.config).into(),
                    r.updated_at.into(),
                    (&r.account_id).into(),
                    (&r.id).into(),
                ],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await?;
        Ok(row)
    }

    /// Deletes a channel with its inbound rows, outbox and attempts.
    pub async fn delete_channel(&self, account_id: &str, id: &str) -> Result<()> {
        let (a, id) = (account_id.to_owned(), id.to_owned());
        self.write(move |c| {
            let n = c.execute(
                "DELETE FROM channels WHERE account_id = $1 AND id = $2",
                &[a.into(), (&id).into()],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            for table in [
                "channel_inbound",
                "channel_messages",
                "channel_attempts",
                "channel_contacts",
            ] {
                c.execute(
                    &format!("DELETE FROM {table} WHERE channel_id = $1"),
                    &[(&id).into()],
                )?;
            }
            Ok(())
        })
        .await
    }

    /// Notes a refused webhook request on the channel (nothing else is
    /// stored of it).
    pub async fn note_inbound_error(&self, id: &str, error: String) -> Result<()> {
        let id = id.to_owned();
        self.write(move |c| {
            c.execute(
                "UPDATE channels SET last_inbound_error = $1 WHERE id = $2",
                &[error.into(), id.into()],
            )?;
            Ok(())
        })
        .await
    }
}
