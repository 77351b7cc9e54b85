//! Contacts, conversations, their messages, and the one write that commits
//! a chat turn: state, messages, contact attributes, events and a booking,
//! all in one transaction.
//!
//! One concern per file:
//!
//! * `turn.rs`: committing a chat turn ([`TurnWrite`]) in one transaction,
//!   guarded by the conversation's revision, so a turn racing another
//!   commits nothing ([`STALE`]);
//! * `queries.rs`: finding a contact and its conversation for a turn, and
//!   what the API, the inbox, timers and channels read.
//!
//! This file holds the rows they share and how they are read.

mod queries;
mod turn;

pub use queries::{ChannelAddress, ConversationFilter, InboxFilter};
pub use turn::{BookingWrite, LAST_SEEN_GRAIN_MS, STALE, TurnCommit, TurnWrite};

use super::{Result, Row};

/// A contact as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct ContactRow {
    /// `ct_…`
    pub id: String,
    /// E.164 phone number, when the contact is known by one.
    pub phone: Option<String>,
    /// An id in the caller's system, when known by one.
    pub external_id: Option<String>,
    /// `user` attributes, a JSON object.
    pub attributes: String,
}

/// A conversation as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct ConversationRow {
    /// `cnv_…`
    pub id: String,
    /// The bot.
    pub bot_id: String,
    /// The contact.
    pub contact_id: String,
    /// The flow version it last ran on.
    pub flow_version: i64,
    /// The engine state, JSON.
    pub state: String,
    /// `active`, `handoff` (a person answers) or `completed`.
    pub status: String,
    /// Bumped by every committed turn.
    pub revision: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// Where it happens: `api`, `web`, or a messaging channel's kind; set
    /// when the conversation starts.
    pub channel: String,
}

/// One line of a transcript.
#[derive(Clone, Debug, PartialEq)]
pub struct MessageRow {
    /// `msg_…`
    pub id: String,
    /// `in` (from the contact), `out` (from the bot), `agent` (from a
    /// person, in handoff) or `log`.
    pub direction: String,
    /// JSON: `{"text"}` in, `{"replies", "quick_replies"}` out.
    pub body: String,
    /// Unix ms.
    pub created_at: i64,
}

const CONV_COLUMNS: &str = "id, bot_id, contact_id, flow_version, state, status, revision, created_at, updated_at, channel";

fn conversation_from(r: &Row) -> Result<ConversationRow> {
    Ok(ConversationRow {
        id: r.text(0)?,
        bot_id: r.text(1)?,
        contact_id: r.text(2)?,
        flow_version: r.int(3)?,
        state: r.text(4)?,
        status: r.text(5)?,
        revision: r.int(6)?,
        created_at: r.int(7)?,
        updated_at: r.int(8)?,
        channel: r.text(9)?,
    })
}

fn contact_from(r: &Row) -> Result<ContactRow> {
    Ok(ContactRow {
        id: r.text(0)?,
        phone: r.opt_text(1)?,
        external_id: r.opt_text(2)?,
        attributes: r.text(3)?,
    })
}
