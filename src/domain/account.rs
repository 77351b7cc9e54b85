//! Accounts (tenants) and the API keys that act for them.
//!
//! A key is either account-wide or scoped to one bot (the "chatbot id +
//! secret key" pair): a bot-scoped key sees and changes that bot only, and
//! never manages keys or other bots.

use serde::{Deserialize, Serialize};

/// A tenant: owns bots and API keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// `acc_…`
    pub id: String,
    /// Display name.
    pub name: String,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
}

/// An API key as stored: never the key itself, only its keyed hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    /// `key_…`
    pub id: String,
    /// The account the key acts for.
    pub account_id: String,
    /// `Some(bot)` for a key scoped to one bot.
    pub bot_id: Option<String>,
    /// A label chosen by its creator.
    pub name: String,
    /// The first characters of the key, to recognise it in lists.
    pub prefix: String,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
    /// Revocation time, if revoked.
    pub revoked_at: Option<i64>,
}

/// What an authenticated request may touch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The account the request acts for.
    pub account_id: String,
    /// The key that authenticated it.
    pub key_id: String,
    /// `Some(bot)` when the key is scoped to one bot.
    pub bot_id: Option<String>,
}

impl Principal {
    /// Whether this principal may act on `bot`.
    pub fn may_use_bot(&self, bot: &str) -> bool {
        self.bot_id.as_deref().is_none_or(|b| b == bot)
    }

    /// Whether this principal acts for the whole account.
    pub fn is_account_wide(&self) -> bool {
        self.bot_id.is_none()
    }
}
