//! Signing secrets and their rotation, the one rule endpoints and story
//! webhooks share.
//!
//! A [`Secret`] is the key value (`whsec_` + base64 of 24 to 64 random
//! bytes); its bytes never appear in `Debug` output. A ring of
//! [`SecretEntry`] is kept newest first: the current secret has no expiry,
//! secrets rotated out keep signing until theirs. [`rotate`] puts a fresh
//! secret in front, gives the one that was current `now + grace`, and drops
//! those already expired; [`live`] answers the secrets that sign at a time.
//!
//! Pure: the time and the fresh secret are passed in (generating one only
//! draws random bytes).

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

/// Prefix of a serialised secret, as the Standard Webhooks specification names it.
pub const SECRET_PREFIX: &str = "whsec_";
/// Fewest secret bytes accepted (192 bits).
pub const MIN_SECRET_LEN: usize = 24;
/// Most secret bytes accepted (512 bits).
pub const MAX_SECRET_LEN: usize = 64;
/// Length of a secret made by [`Secret::generate`].
pub const GENERATED_SECRET_LEN: usize = 32;

/// An endpoint signing secret: 24 to 64 random bytes.
///
/// Serialised as `whsec_` + standard base64; `Debug` prints `Secret(***)` so a
/// secret never reaches a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

/// Why a secret was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The text does not start with `whsec_`.
    #[error("a webhook secret must start with `whsec_`")]
    MissingPrefix,
    /// The part after `whsec_` is not standard base64.
    #[error("the part after `whsec_` is not valid base64")]
    InvalidBase64,
    /// The decoded secret has the wrong number of bytes.
    #[error(
        "a webhook secret must decode to {MIN_SECRET_LEN} to {MAX_SECRET_LEN} bytes, this one has {0}"
    )]
    BadLength(usize),
}

impl Secret {
    /// Makes a fresh secret of [`GENERATED_SECRET_LEN`] bytes from the thread's CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; GENERATED_SECRET_LEN];
        rand::fill(&mut bytes[..]);
        Secret(bytes)
    }

    /// Parses `whsec_<base64>`, requiring 24 to 64 bytes once decoded.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let bytes = BASE64
            .decode(encoded)
            .map_err(|_| SecretError::InvalidBase64)?;
        Self::from_bytes(bytes)
    }

    /// Wraps raw secret bytes, requiring 24 to 64 of them.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, SecretError> {
        if (MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&bytes.len()) {
            Ok(Secret(bytes))
        } else {
            Err(SecretError::BadLength(bytes.len()))
        }
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    /// The serialised form, `whsec_<base64>`. This *is* the secret: show it once.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SECRET_PREFIX}{}", BASE64.encode(&self.0))
    }
}

impl FromStr for Secret {
    type Err = SecretError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Secret::parse(s)
    }
}

/// One secret of a ring and, for a rotated-out one, when it stops signing.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct SecretEntry {
    /// `whsec_…`
    pub secret: String,
    /// Unix ms after which it no longer signs; `None` for the current one.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

impl fmt::Debug for SecretEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretEntry(***, expires_at: {:?})", self.expires_at)
    }
}

impl SecretEntry {
    /// `secret` as the current one (no expiry).
    pub fn current(secret: &Secret) -> Self {
        Self {
            secret: secret.to_string(),
            expires_at: None,
        }
    }

    /// Whether it still signs at `now_ms`.
    pub fn signs_at(&self, now_ms: i64) -> bool {
        self.expires_at.is_none_or(|t| t > now_ms)
    }
}

/// A ring holding `fresh` as its only, current secret.
pub fn ring_of(fresh: &Secret) -> Vec<SecretEntry> {
    vec![SecretEntry::current(fresh)]
}

/// Rotates `ring` (newest first): `fresh` becomes the current secret; the
/// one that was current keeps signing until `now_ms + grace_ms`; secrets
/// rotated out earlier keep their own expiry; expired ones are dropped.
pub fn rotate(
    ring: &[SecretEntry],
    fresh: &Secret,
    now_ms: i64,
    grace_ms: i64,
) -> Vec<SecretEntry> {
    let until = now_ms.saturating_add(grace_ms);
    let mut next = ring_of(fresh);
    for s in ring {
        let expires_at = s.expires_at.unwrap_or(until);
        if expires_at > now_ms {
            next.push(SecretEntry {
                secret: s.secret.clone(),
                expires_at: Some(expires_at),
            });
        }
    }
    next
}

/// The secrets of `ring` that sign at `now_ms`, newest first (entries that
/// do not parse are skipped).
pub fn live(ring: &[SecretEntry], now_ms: i64) -> Vec<Secret> {
    ring.iter()
        .filter(|s| s.signs_at(now_ms))
        .filter_map(|s| Secret::parse(&s.secret).ok())
        .collect()
}

/// The current secret (`whsec_…`): the newest.
pub fn current(ring: &[SecretEntry]) -> Option<&str> {
    ring.first().map(|s| s.secret.as_str())
}

/// When the last secret rotated out stops signing, if one still signs at
/// `now_ms`.
pub fn previous_expires_at(ring: &[SecretEntry], now_ms: i64) -> Option<i64> {
    ring.iter()
        .skip(1)
        .filter_map(|s| s.expires_at)
        .filter(|t| *t > now_ms)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_old_secret_for_the_grace_period_only() {
        let (a, b, c) = (Secret::generate(), Secret::generate(), Secret::generate());
        let ring = ring_of(&a);
        assert_eq!(live(&ring, 0), vec![a.clone()]);

        let ring = rotate(&ring, &b, 1_000, 500);
        assert_eq!(current(&ring), Some(b.to_string().as_str()));
        assert_eq!(ring[1].expires_at, Some(1_500));
        assert_eq!(live(&ring, 1_499), vec![b.clone(), a.clone()], "both sign");
        assert_eq!(live(&ring, 1_500), vec![b.clone()], "the old one stops");
        assert_eq!(previous_expires_at(&ring, 1_200), Some(1_500));
        assert_eq!(previous_expires_at(&ring, 1_500), None);

        // A second rotation within the grace: the first keeps its expiry,
        // the second gets a fresh one.
        let ring2 = rotate(&ring, &c, 1_200, 500);
        assert_eq!(ring2.len(), 3);
        assert_eq!(ring2[1].expires_at, Some(1_700));
        assert_eq!(ring2[2].expires_at, Some(1_500));

        // After the grace, expired secrets are dropped.
        let ring3 = rotate(&ring2, &a, 2_000, 500);
        assert_eq!(ring3.len(), 2);
        assert_eq!(live(&ring3, 2_100), vec![a, c]);
    }

    #[test]
    fn an_unparsable_entry_does_not_sign_and_debug_hides_secrets() {
        let s = Secret::generate();
        let ring = vec![
            SecretEntry {
                secret: "nope".into(),
                expires_at: None,
            },
            SecretEntry::current(&s),
        ];
        assert_eq!(live(&ring, 0), vec![s.clone()]);
        let shown = format!("{:?} {:?}", ring, s);
        assert!(!shown.contains("whsec_"), "{shown}");
    }

    #[test]
    fn entries_read_without_an_expiry_are_current() {
        let e: SecretEntry = serde_json::from_str(r#"{"secret": "whsec_x"}"#).unwrap();
        assert_eq!(e.expires_at, None);
        assert!(e.signs_at(i64::MAX));
    }

    #[test]
    fn secret_text_round_trips() {
        let s = Secret::generate();
        assert_eq!(s.as_bytes().len(), GENERATED_SECRET_LEN);
        assert_eq!(s.to_string().parse::<Secret>().unwrap(), s);
        assert_eq!(Secret::parse("whsec_AAAA"), Err(SecretError::BadLength(3)));
    }
}
