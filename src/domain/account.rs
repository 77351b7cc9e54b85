//! Accounts (tenants) and the API keys that act for them.
//!
//! A key is either account-wide or scoped to one bot (the "chatbot id +
//! secret key" pair): a bot-scoped key sees and changes that bot only, and
//! never manages keys or other bots. A *publishable* key is scoped to one
//! bot and to chatting only, from the website origins listed on it: it is
//! meant to sit in a page's source, so it can read and manage nothing.

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
    /// Whether the key is publishable (chat only, from `origins`).
    pub publishable: bool,
    /// The website origins a publishable key may chat from.
    pub origins: Vec<String>,
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
    /// A publishable key: chat only, from `origins`.
    pub publishable: bool,
    /// The website origins a publishable key may chat from.
    pub origins: Vec<String>,
}

impl Principal {
    /// Whether this principal may act on `bot`.
    pub fn may_use_bot(&self, bot: &str) -> bool {
        self.bot_id.as_deref().is_none_or(|b| b == bot)
    }

    /// Whether this principal acts for the whole account.
    pub fn is_account_wide(&self) -> bool {
        self.bot_id.is_none() && !self.publishable
    }

    /// Whether a browser page at `origin` may use this key to chat.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin.trim_end_matches('/')))
    }
}

/// Checks a website origin for a publishable key: `http(s)://host[:port]`,
/// nothing after the host but an optional `/`. Returns it lower-cased.
pub fn parse_origin(s: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "origins: {s:?} is not an origin; give scheme and host, e.g. https://shop.example.com"
        )
    };
    let lower = s.trim().trim_end_matches('/').to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .ok_or_else(bad)?;
    let (host, port) = match rest.find(']') {
        Some(end) if rest.starts_with('[') => {
            let (h, p) = rest.split_at(end + 1);
            (
                h,
                (!p.is_empty()).then(|| p.strip_prefix(':').unwrap_or("x")),
            )
        }
        _ => match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        },
    };
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    if host_ok && port_ok {
        Ok(lower)
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        for ok in [
            "https://shop.example.com",
            "http://localhost:8080/",
            "HTTPS://Shop.Example.COM",
            "http://[::1]:3000",
            "http://[::1]",
        ] {
            assert!(parse_origin(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            parse_origin("HTTPS://Shop.Example.COM/").unwrap(),
            "https://shop.example.com"
        );
        for bad in [
            "shop.example.com",
            "ftp://x.example",
            "https://",
            "https://x.example/path",
            "https://x.example:99999",
            "https://x.example:0",
            "*",
            "https://exa mple.com",
            "http://[::1",
            "http://[zz]:80",
        ] {
            let e = parse_origin(bad).unwrap_err();
            assert!(e.contains("https://shop.example.com"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_publishable_key_is_never_account_wide() {
        let p = Principal {
            account_id: "acc".into(),
            key_id: "key".into(),
            bot_id: Some("eli".into()),
            publishable: true,
            origins: vec!["https://shop.example.com".into()],
        };
        assert!(!p.is_account_wide());
        assert!(p.may_use_bot("eli"));
        assert!(p.allows_origin("https://SHOP.example.com"));
        assert!(!p.allows_origin("https://evil.example"));
        assert!(!p.allows_origin("null"));
    }
}
