//! Bots: what they are called, what kind of work they do, and who owns them.
//!
//! A bot id is chosen by the user (a slug, `[a-z0-9-]{1,64}`) or generated;
//! it is unique within its account and is the `uniqueId` of the per-bot
//! webhook registration route.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The id of a bot, unique within its account.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BotId(String);

impl BotId {
    /// Parses a user-chosen slug: 1–64 characters of `a-z`, `0-9` and `-`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 64 {
            return Err(format!(
                "bot id must be 1 to 64 characters long, got {}",
                s.chars().count()
            ));
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(format!(
                "bot id may hold only a-z, 0-9 and '-'; {bad:?} is not allowed"
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// A fresh id for a bot whose creator did not choose one.
    pub fn generate() -> Self {
        let id = super::ids::new_id("bot");
        Self(id.replace('_', "-"))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a bot is for. Only the first three may register event webhooks
/// through the per-bot registration route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BotType {
    /// Collects incidents and datapoints.
    DataCollection,
    /// Prices requests against a price table.
    QuoteGeneration,
    /// Books appointments from a calendar.
    Appointment,
    /// Answers questions; no structured output.
    Support,
}

impl BotType {
    /// Every type, in documentation order.
    pub const ALL: [BotType; 4] = [
        BotType::DataCollection,
        BotType::QuoteGeneration,
        BotType::Appointment,
        BotType::Support,
    ];

    /// The wire name, e.g. `data_collection`.
    pub fn as_str(self) -> &'static str {
        match self {
            BotType::DataCollection => "data_collection",
            BotType::QuoteGeneration => "quote_generation",
            BotType::Appointment => "appointment",
            BotType::Support => "support",
        }
    }

    /// Parses a wire name; the error lists the accepted ones.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown bot type {s:?}; expected one of data_collection, quote_generation, appointment, support"
                )
            })
    }

    /// Whether a bot of this type may register event webhooks by the per-bot
    /// registration route (quote generation, data collection, appointments).
    pub fn may_register_webhooks(self) -> bool {
        !matches!(self, BotType::Support)
    }
}

/// A bot as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bot {
    /// The owning account.
    pub account_id: String,
    /// The bot's id within the account.
    pub id: BotId,
    /// A display name.
    pub name: String,
    /// What the bot is for.
    pub bot_type: BotType,
    /// The current flow version, 0 when no flow was saved yet.
    pub flow_version: i64,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
    /// Last change, Unix milliseconds.
    pub updated_at: i64,
}

/// Checks a bot's display name: 1–200 characters, no control characters.
pub fn check_name(name: &str) -> Result<(), String> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err("name must not be empty".into());
    }
    if name.chars().count() > 200 {
        return Err("name must be at most 200 characters".into());
    }
    if name.chars().any(char::is_control) {
        return Err("name must not contain control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bot_ids_are_slugs() {
        assert!(BotId::parse("elipackage").is_ok());
        assert!(BotId::parse("a-1").is_ok());
        assert!(BotId::parse(&"a".repeat(64)).is_ok());
        assert!(BotId::parse("").is_err());
        assert!(BotId::parse(&"a".repeat(65)).is_err());
        let err = BotId::parse("Eli Package").unwrap_err();
        assert!(err.contains("'E'"), "{err}");
        assert!(BotId::parse(BotId::generate().as_str()).is_ok());
    }

    #[test]
    fn bot_types_round_trip_and_support_is_not_eligible() {
        for t in BotType::ALL {
            assert_eq!(BotType::parse(t.as_str()), Ok(t));
        }
        assert!(
            BotType::parse("faq")
                .unwrap_err()
                .contains("data_collection")
        );
        assert!(!BotType::Support.may_register_webhooks());
        assert!(BotType::Appointment.may_register_webhooks());
    }
}
