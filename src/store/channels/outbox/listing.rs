//! What the API lists of the outbox: a channel's messages, newest first,
//! and the attempts of one message.

use super::*;
use crate::store::{Page, PageRequest, Result, Row, Store};

/// An outbox message as the API lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct MessageRow {
    /// `out_…`
    pub id: String,
    /// The channel.
    pub channel_id: String,
    /// The conversation, when there is one.
    pub conversation_id: Option<String>,
    /// Who it goes to.
    pub recipient: String,
    /// The platform operation.
    pub op: String,
    /// The platform request body, JSON.
    pub body: String,
    /// `pending`, `retrying`, `sent`, `delivered`, `read`, `failed`.
    pub status: String,
    /// The platform's id of it, once sent.
    pub platform_message_id: Option<String>,
    /// Attempts made.
    pub attempts: i64,
    /// The last failure.
    pub last_error: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

const MSG_COLUMNS: &str = "id, channel_id, conversation_id, recipient, op, body, status, platform_message_id, attempts, last_error, created_at, updated_at";

fn message_from(r: &Row) -> Result<MessageRow> {
    Ok(MessageRow {
        id: r.text(0)?,
        channel_id: r.text(1)?,
        conversation_id: r.opt_text(2)?,
        recipient: r.text(3)?,
        op: r.text(4)?,
        body: r.text(5)?,
        status: r.text(6)?,
        platform_message_id: r.opt_text(7)?,
        attempts: r.int(8)?,
        last_error: r.opt_text(9)?,
        created_at: r.int(10)?,
        updated_at: r.int(11)?,
    })
}

/// Filters for an outbox listing.
#[derive(Clone, Debug, Default)]
pub struct MessageFilter {
    /// Only this status.
    pub status: Option<String>,
    /// Only this conversation's.
    pub conversation_id: Option<String>,
}

impl Store {
    /// A channel's outbox, newest first.
    pub async fn list_channel_messages(
        &self,
        channel_id: &str,
        filter: MessageFilter,
        page: PageRequest,
    ) -> Result<Page<MessageRow>> {
        let sql = format!(
            "SELECT {MSG_COLUMNS} FROM channel_messages
             WHERE channel_id = $1
               AND (CAST($2 AS TEXT) IS NULL OR status = $2)
               AND (CAST($3 AS TEXT) IS NULL OR conversation_id = $3)
               AND (CAST($4 AS TEXT) IS NULL OR id < $4)
             ORDER BY id DESC LIMIT $5"
        );
        let params = vec![
            channel_id.into(),
            filter.status.into(),
            filter.conversation_id.into(),
            page.after.clone().into(),
        ];
        self.read_page(sql, params, page, message_from, |m| m.id.clone())
            .await
    }

    /// The attempts of one outbox message of a channel, newest first (at
    /// most 100: a message gets fewer than the retry schedule has delays).
    pub async fn list_message_attempts(
        &self,
        channel_id: &str,
        message_id: &str,
    ) -> Result<Vec<ChannelAttemptRow>> {
        let (ch, id) = (channel_id.to_owned(), message_id.to_owned());
        self.read(move |c| {
            c.query(
                "SELECT id, started_at, duration_ms, status, response_body, error_kind, error_message, node
                 FROM channel_attempts WHERE channel_id = $1 AND message_id = $2 ORDER BY id DESC LIMIT 100",
                &[ch.into(), id.into()],
            )?
            .iter()
            .map(|r| {
                Ok(ChannelAttemptRow {
                    id: r.text(0)?,
                    started_at: r.int(1)?,
                    duration_ms: r.int(2)?,
                    status: r.opt_int(3)?,
                    response_body: r.text(4)?,
                    error_kind: r.opt_text(5)?,
                    error_message: r.opt_text(6)?,
                    node: r.opt_text(7)?,
                })
            })
            .collect()
        })
        .await
    }
}
