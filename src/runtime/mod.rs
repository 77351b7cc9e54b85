//! The runtime: what turns stored bots into running conversations.
//!
//! * [`chat`] runs one chat turn: loads the conversation, steps the pure
//!   engine, and commits state, transcript, events and bookings in one
//!   transaction — retrying when a slot was just taken or the conversation
//!   moved on under it.
//! * [`bots`] loads a bot's flow and settings (cached per change) and
//!   imports and exports whole bot files.
//! * [`story`] calls the user's APIs from flows (story webhooks) and reads
//!   their answers back into the conversation.
//! * [`inbound`] turns messages received on messaging channels into chat
//!   turns whose replies go to the channel's outbox.
//! * [`broadcasts`] paces broadcasts: starts the due ones and sends their
//!   recipients at each one's rate.
//! * [`campaigns`] starts a campaign broadcast's campaign for each of its
//!   recipients, as a turn of the recipient's conversation.
//! * [`handoff`] lets a person answer a conversation in handoff and give it
//!   back to the bot.
//! * [`retention`] prunes old events, attempts, conversations and audit
//!   entries, so the database stays bounded.
//!
//! Nothing here knows about HTTP; the API and the CLI both call it.

pub mod bots;
pub mod broadcasts;
pub mod campaigns;
pub mod chat;
pub mod handoff;
pub mod inbound;
pub mod retention;
pub mod story;
pub mod timers;

use crate::store::StoreError;

/// Why a runtime operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The input is not acceptable; the message says why.
    #[error("{0}")]
    Invalid(String),
    /// A flow or bot file that fails validation; each error names its node
    /// and field.
    #[error("{}", crate::domain::flow::join_errors(.0))]
    Flow(Vec<crate::domain::flow::FlowError>),
    /// The bot cannot chat yet.
    #[error("{0}")]
    NotReady(String),
    /// A person's action on a conversation was refused.
    #[error(transparent)]
    Handoff(#[from] crate::domain::engine::HandoffError),
}
