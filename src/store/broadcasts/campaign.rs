//! Campaign broadcasts: each recipient is a chat turn the runtime runs.
//! The store lists pending recipients with their contact and reach, and the
//! turn's transaction marks its recipient sent ([`RecipientMark`]), which
//! fails when another node marked it first; nothing is claimed.

use super::reach::{Reach, address_of};
use super::{BroadcastRow, load};
use crate::domain::broadcast::BroadcastState;
use crate::store::channels::{CH_COLUMNS, ChannelRow, channel_from};
use crate::store::contacts::{COLUMNS as CONTACT_COLUMNS, record_from};
use crate::store::{Conn, Result, Store, StoreError, now_ms};
use std::collections::HashMap;
use std::sync::Arc;

/// The `Conflict` message when a recipient was handled already (by another
/// node, or an earlier attempt).
pub const RECIPIENT_HANDLED: &str = "this broadcast recipient was handled already";

/// What a campaign turn writes besides the turn: its recipient marked sent.
#[derive(Clone, Debug, PartialEq)]
pub struct RecipientMark {
    /// The broadcast.
    pub broadcast_id: String,
    /// The contact.
    pub contact_id: String,
    /// Its first outbox message.
    pub message_id: Option<String>,
}

/// Marks a pending recipient sent, in the turn's transaction; `Conflict`
/// when it is not pending any more, which rolls the turn back.
pub(in crate::store) fn mark_sent(c: &mut dyn Conn, m: &RecipientMark) -> Result<()> {
    let n = c.execute(
        "UPDATE broadcast_recipients SET status = 'sent', reason = NULL, message_id = $1, updated_at = $2
         WHERE broadcast_id = $3 AND contact_id = $4 AND status = 'pending'",
        &[
            m.message_id.as_deref().into(),
            now_ms().into(),
            (&m.broadcast_id).into(),
            (&m.contact_id).into(),
        ],
    )?;
    if n == 0 {
        return Err(StoreError::Conflict(RECIPIENT_HANDLED.into()));
    }
    Ok(())
}

/// One pending recipient of a campaign broadcast, with what deciding and
/// starting its campaign needs.
#[derive(Clone, Debug)]
pub struct CampaignRecipient {
    /// The recipient's contact id.
    pub contact_id: String,
    /// The contact as a chat turn reads it, and what the skip rules see of
    /// it; `None` when it was deleted since the start.
    pub found: Option<(
        crate::store::conversations::ContactRow,
        crate::domain::people::ContactFacts,
    )>,
    /// Its channel, its id there and when it last wrote there.
    pub reach: Option<Reach>,
}

impl Store {
    /// A running campaign broadcast and up to `limit` of its pending
    /// recipients (in contact order), each with its contact and where it is
    /// reached; `None` when the broadcast is not a running campaign one.
    /// Nothing is claimed: each recipient is marked in its own turn's
    /// transaction ([`RecipientMark`]), which fails when another node
    /// marked it first.
    pub async fn campaign_recipients(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<Option<(BroadcastRow, Vec<CampaignRecipient>)>> {
        let id = id.to_owned();
        self.read(move |c| {
            let b = load(c, &id)?;
            if b.state != BroadcastState::Running || b.message.campaign.is_none() {
                return Ok(None);
            }
            let channels: HashMap<String, Arc<ChannelRow>> = c
                .query(
                    &format!(
                        "SELECT {CH_COLUMNS} FROM channels WHERE account_id = $1 AND bot_id = $2"
                    ),
                    &[(&b.account_id).into(), (&b.bot_id).into()],
                )?
                .iter()
                .map(|r| channel_from(r).map(|ch| (ch.id.clone(), Arc::new(ch))))
                .collect::<Result<_>>()?;
            let pending = c.query(
                "SELECT contact_id FROM broadcast_recipients
                 WHERE broadcast_id = $1 AND status = 'pending'
                 ORDER BY contact_id LIMIT $2",
                &[(&id).into(), i64::try_from(limit).unwrap_or(1).into()],
            )?;
            let mut out = Vec::with_capacity(pending.len());
            for r in pending {
                let contact_id = r.text(0)?;
                let rec = c
                    .query_opt(
                        &format!("SELECT {CONTACT_COLUMNS} FROM contacts c WHERE c.id = $1"),
                        &[(&contact_id).into()],
                    )?
                    .map(|r| record_from(&r))
                    .transpose()?;
                let Some(rec) = rec else {
                    // Deleted since the start: nowhere to reach it.
                    out.push(CampaignRecipient {
                        contact_id,
                        found: None,
                        reach: None,
                    });
                    continue;
                };
                let reach = address_of(c, &channels, &rec.id, rec.phone.as_deref(), false)?;
                let row = crate::store::conversations::ContactRow {
                    id: rec.id.clone(),
                    phone: rec.phone.clone(),
                    external_id: rec.external_id.clone(),
                    attributes: serde_json::Value::Object(rec.attributes.clone()).to_string(),
                };
                out.push(CampaignRecipient {
                    contact_id,
                    found: Some((row, rec.facts())),
                    reach,
                });
            }
            Ok(Some((b, out)))
        })
        .await
    }

    /// Marks a pending recipient skipped for `reason`; answers whether it
    /// was still pending.
    pub async fn skip_broadcast_recipient(
        &self,
        id: &str,
        contact_id: &str,
        reason: &str,
    ) -> Result<bool> {
        let (id, contact, reason) = (id.to_owned(), contact_id.to_owned(), reason.to_owned());
        self.write(move |c| {
            let n = c.execute(
                "UPDATE broadcast_recipients SET status = 'skipped', reason = $1, updated_at = $2
                 WHERE broadcast_id = $3 AND contact_id = $4 AND status = 'pending'",
                &[reason.into(), now_ms().into(), id.into(), contact.into()],
            )?;
            Ok(n == 1)
        })
        .await
    }
}
