//! Reading contacts and conversations: the contact and conversation a turn
//! continues, a conversation with its transcript, listings for the API and
//! the inbox, and where a contact is reached on a messaging channel.

use super::{
    CONV_COLUMNS, ContactRow, ConversationRow, MessageRow, contact_from, conversation_from,
};
use crate::store::{Page, PageRequest, Result, Store};

/// Filters for listing conversations.
#[derive(Clone, Debug, Default)]
pub struct ConversationFilter {
    /// `active`, `handoff` or `completed`.
    pub status: Option<String>,
    /// Only this contact's.
    pub contact_id: Option<String>,
}

/// Filters of the inbox: conversations of an account by last activity.
#[derive(Clone, Debug, Default)]
pub struct InboxFilter {
    /// Only this bot's.
    pub bot_id: Option<String>,
    /// `active`, `handoff` or `completed`.
    pub status: Option<String>,
    /// `api`, `web`, or a messaging channel's kind.
    pub channel: Option<String>,
    /// Most rows.
    pub limit: i64,
}

/// The platform address of a conversation's contact on a messaging channel.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelAddress {
    /// The channel (`ch_…`).
    pub channel_id: String,
    /// The person, in the platform's terms.
    pub user: String,
    /// When they last wrote (Unix ms).
    pub last_inbound_at: i64,
}

impl Store {
    /// The contact a bot knows by this phone number or external id.
    pub async fn find_contact(
        &self,
        account_id: &str,
        bot_id: &str,
        phone: Option<&str>,
        external_id: Option<&str>,
    ) -> Result<Option<ContactRow>> {
        let (a, b) = (account_id.to_owned(), bot_id.to_owned());
        let (phone, external_id) = (phone.map(str::to_owned), external_id.map(str::to_owned));
        self.read(move |c| {
            c.query_opt(
                "SELECT id, phone, external_id, attributes FROM contacts
                 WHERE account_id = $1 AND bot_id = $2
                   AND ((CAST($3 AS TEXT) IS NOT NULL AND phone = $3 AND external_id IS NULL)
                     OR (CAST($4 AS TEXT) IS NOT NULL AND external_id = $4))
                 LIMIT 1",
                &[a.into(), b.into(), phone.into(), external_id.into()],
            )?
            .as_ref()
            .map(contact_from)
            .transpose()
        })
        .await
    }

    /// The contact's conversation still in progress, if any.
    pub async fn active_conversation(&self, contact_id: &str) -> Result<Option<ConversationRow>> {
        let contact_id = contact_id.to_owned();
        self.read(move |c| {
            c.query_opt(
                &format!(
                    "SELECT {CONV_COLUMNS} FROM conversations
                     WHERE contact_id = $1 AND status IN ('active', 'handoff')
                     ORDER BY id DESC LIMIT 1"
                ),
                &[contact_id.into()],
            )?
            .as_ref()
            .map(conversation_from)
            .transpose()
        })
        .await
    }

    /// A conversation and its contact, by conversation id alone (timers).
    pub async fn conversation_with_contact(
        &self,
        id: &str,
    ) -> Result<Option<(ConversationRow, ContactRow)>> {
        let id = id.to_owned();
        self.read(move |c| {
            let Some(row) = c.query_opt(
                &format!("SELECT {CONV_COLUMNS} FROM conversations WHERE id = $1"),
                &[id.into()],
            )?
            else {
                return Ok(None);
            };
            let conv = conversation_from(&row)?;
            let contact = contact_from(&c.query_one(
                "SELECT id, phone, external_id, attributes FROM contacts WHERE id = $1",
                &[(&conv.contact_id).into()],
            )?)?;
            Ok(Some((conv, contact)))
        })
        .await
    }

    /// One conversation of a bot, its contact and its transcript.
    pub async fn get_conversation(
        &self,
        account_id: &str,
        bot_id: &str,
        id: &str,
    ) -> Result<(ConversationRow, ContactRow, Vec<MessageRow>)> {
        let (a, b, id) = (account_id.to_owned(), bot_id.to_owned(), id.to_owned());
        self.read(move |c| {
            let conv = conversation_from(&c.query_one(
                &format!(
                    "SELECT {CONV_COLUMNS} FROM conversations
                     WHERE account_id = $1 AND bot_id = $2 AND id = $3"
                ),
                &[a.into(), b.into(), id.into()],
            )?)?;
            let contact = contact_from(&c.query_one(
                "SELECT id, phone, external_id, attributes FROM contacts WHERE id = $1",
                &[(&conv.contact_id).into()],
            )?)?;
            let messages = c
                .query(
                    "SELECT id, direction, body, created_at FROM messages
                     WHERE conversation_id = $1 ORDER BY id",
                    &[(&conv.id).into()],
                )?
                .iter()
                .map(|r| {
                    Ok(MessageRow {
                        id: r.text(0)?,
                        direction: r.text(1)?,
                        body: r.text(2)?,
                        created_at: r.int(3)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((conv, contact, messages))
        })
        .await
    }

    /// Conversations of a bot, newest first.
    pub async fn list_conversations(
        &self,
        account_id: &str,
        bot_id: &str,
        filter: ConversationFilter,
        page: PageRequest,
    ) -> Result<Page<ConversationRow>> {
        let sql = format!(
            "SELECT {CONV_COLUMNS} FROM conversations
             WHERE account_id = $1 AND bot_id = $2
               AND (CAST($3 AS TEXT) IS NULL OR status = $3)
               AND (CAST($4 AS TEXT) IS NULL OR contact_id = $4)
               AND (CAST($5 AS TEXT) IS NULL OR id < $5)
             ORDER BY id DESC LIMIT $6"
        );
        let params = vec![
            account_id.into(),
            bot_id.into(),
            filter.status.into(),
            filter.contact_id.into(),
            page.after.clone().into(),
        ];
        self.read_page(sql, params, page, conversation_from, |c| c.id.clone())
            .await
    }

    /// An account's conversations by last activity, newest first (the inbox).
    pub async fn inbox(
        &self,
        account_id: &str,
        filter: InboxFilter,
    ) -> Result<Vec<ConversationRow>> {
        let a = account_id.to_owned();
        self.read(move |c| {
            c.query(
                &format!(
                    "SELECT {CONV_COLUMNS} FROM conversations
                     WHERE account_id = $1
                       AND (CAST($2 AS TEXT) IS NULL OR bot_id = $2)
                       AND (CAST($3 AS TEXT) IS NULL OR status = $3)
                       AND (CAST($4 AS TEXT) IS NULL OR channel = $4)
                     ORDER BY updated_at DESC, id DESC LIMIT $5"
                ),
                &[
                    a.into(),
                    filter.bot_id.into(),
                    filter.status.into(),
                    filter.channel.into(),
                    filter.limit.into(),
                ],
            )?
            .iter()
            .map(conversation_from)
            .collect()
        })
        .await
    }

    /// The contact's newest conversation, whatever its status.
    pub async fn latest_conversation(&self, contact_id: &str) -> Result<Option<ConversationRow>> {
        let contact_id = contact_id.to_owned();
        self.read(move |c| {
            c.query_opt(
                &format!(
                    "SELECT {CONV_COLUMNS} FROM conversations
                     WHERE contact_id = $1 ORDER BY id DESC LIMIT 1"
                ),
                &[contact_id.into()],
            )?
            .as_ref()
            .map(conversation_from)
            .transpose()
        })
        .await
    }

    /// A conversation of an account, by id alone.
    pub async fn find_conversation(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<ConversationRow>> {
        let (a, id) = (account_id.to_owned(), id.to_owned());
        self.read(move |c| {
            c.query_opt(
                &format!(
                    "SELECT {CONV_COLUMNS} FROM conversations WHERE account_id = $1 AND id = $2"
                ),
                &[a.into(), id.into()],
            )?
            .as_ref()
            .map(conversation_from)
            .transpose()
        })
        .await
    }

    /// Lines of a conversation's transcript after `after` (a message id),
    /// oldest first, at most `limit`.
    pub async fn messages_after(
        &self,
        conversation_id: &str,
        after: Option<String>,
        limit: i64,
    ) -> Result<Vec<MessageRow>> {
        let id = conversation_id.to_owned();
        self.read(move |c| {
            c.query(
                "SELECT id, direction, body, created_at FROM messages
                 WHERE conversation_id = $1 AND (CAST($2 AS TEXT) IS NULL OR id > $2)
                 ORDER BY id LIMIT $3",
                &[id.into(), after.into(), limit.into()],
            )?
            .iter()
            .map(|r| {
                Ok(MessageRow {
                    id: r.text(0)?,
                    direction: r.text(1)?,
                    body: r.text(2)?,
                    created_at: r.int(3)?,
                })
            })
            .collect()
        })
        .await
    }

    /// The id of a conversation's last transcript line, if any.
    pub async fn last_message_id(&self, conversation_id: &str) -> Result<Option<String>> {
        let id = conversation_id.to_owned();
        self.read(move |c| {
            c.query_opt(
                "SELECT id FROM messages WHERE conversation_id = $1 ORDER BY id DESC LIMIT 1",
                &[id.into()],
            )?
            .map(|r| r.text(0))
            .transpose()
        })
        .await
    }

    /// Where a contact last wrote from on a messaging channel, if anywhere.
    pub async fn channel_address(&self, contact_id: &str) -> Result<Option<ChannelAddress>> {
        let id = contact_id.to_owned();
        self.read(move |c| {
            c.query_opt(
                "SELECT channel_id, user_id, last_inbound_at FROM channel_contacts
                 WHERE contact_id = $1 ORDER BY last_inbound_at DESC LIMIT 1",
                &[id.into()],
            )?
            .map(|r| {
                Ok(ChannelAddress {
                    channel_id: r.text(0)?,
                    user: r.text(1)?,
                    last_inbound_at: r.int(2)?,
                })
            })
            .transpose()
        })
        .await
    }
}
