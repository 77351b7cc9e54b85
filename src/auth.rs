//! API keys: generation, keyed hashing and comparison.
//!
//! A key is `bw_` followed by 43 base64url characters (256 random bits). It
//! is shown once; the store keeps only HMAC-SHA256(pepper, key), so a stolen
//! database does not yield usable keys without the pepper. Lookups go by the
//! hash; the final comparison is constant-time all the same.

use crate::domain::account::Principal;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The secret mixed into every key hash. Never printed.
#[derive(Clone)]
pub struct Pepper(Vec<u8>);

impl Pepper {
    /// Wraps pepper bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// 32 fresh random bytes, hex-encoded for storage.
    pub fn generate_hex() -> String {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        hex::encode(bytes)
    }

    /// The keyed hash of a presented key, hex-encoded.
    pub fn hash(&self, key: &str) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes keys of any length");
        mac.update(key.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `key` hashes to `stored`, compared in constant time.
    pub fn verify(&self, key: &str, stored: &str) -> bool {
        self.hash(key).as_bytes().ct_eq(stored.as_bytes()).into()
    }
}

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pepper(***)")
    }
}

/// A freshly generated key, to be shown once and then forgotten.
pub struct NewKey {
    /// The key itself: `bw_…`.
    pub plaintext: String,
    /// Its first characters, kept to recognise it in lists.
    pub prefix: String,
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NewKey({}…)", self.prefix)
    }
}

/// A new random key: 256 bits, base64url without padding.
pub fn generate_key() -> NewKey {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let plaintext = format!(
        "bw_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let prefix = plaintext[..10].to_owned();
    NewKey { plaintext, prefix }
}

/// Whether a presented string has the shape of a key (cheap pre-check that
/// avoids a database lookup for obvious garbage).
pub fn looks_like_key(s: &str) -> bool {
    s.len() == 46
        && s.starts_with("bw_")
        && s[3..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Recently verified keys, so a busy client costs one hash, not one
/// database read, per request.
///
/// Entries live for [`KeyCache::TTL`], counted from the moment the
/// database lookup that verified the key *began*, not from when its answer
/// arrived: a lookup that raced a revocation cannot stretch the key's life
/// past the TTL. Revoking a key through this process forgets it at once; a
/// revocation committed by another process (another node, or the CLI) is
/// refused here at most one TTL after its commit, with no cross-node
/// message: every node asks the database again once its entry expires.
#[derive(Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<String, (Principal, Instant)>>,
}

impl KeyCache {
    /// How long a verified key is trusted without asking the database.
    pub const TTL: Duration = Duration::from_secs(1);

    /// The principal for a key hash verified less than a TTL ago.
    pub fn get(&self, hash: &str) -> Option<Principal> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(hash)
            .filter(|(_, at)| at.elapsed() < Self::TTL)
            .map(|(p, _)| p.clone())
    }

    /// Remembers a key verified by a lookup that began at `checked_at`.
    pub fn put(&self, hash: String, principal: Principal, checked_at: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() > 100_000 {
            entries.retain(|_, (_, at)| at.elapsed() < Self::TTL);
        }
        entries.insert(hash, (principal, checked_at));
    }

    /// Forgets every cached key (after a revocation or a bot deletion).
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_hash_with_the_pepper() {
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a.plaintext, b.plaintext);
        assert!(looks_like_key(&a.plaintext), "{}", a.plaintext);
        assert!(!looks_like_key("bw_short"));
        let p1 = Pepper::new(b"one".to_vec());
        let p2 = Pepper::new(b"two".to_vec());
        let h = p1.hash(&a.plaintext);
        assert!(p1.verify(&a.plaintext, &h));
        assert!(!p1.verify(&b.plaintext, &h));
        assert!(!p2.verify(&a.plaintext, &h));
        assert_eq!(format!("{p1:?}"), "Pepper(***)");
        assert!(!format!("{a:?}").contains(&a.plaintext));
    }

    #[test]
    fn a_cached_key_expires_one_ttl_after_its_lookup_began() {
        let cache = KeyCache::default();
        let p = Principal {
            account_id: "acc".into(),
            key_id: "key".into(),
            bot_id: None,
            publishable: false,
            origins: Vec::new(),
        };
        let now = Instant::now();
        cache.put("fresh".into(), p.clone(), now);
        assert!(cache.get("fresh").is_some());
        // A lookup that began a TTL ago (and answered late) is not trusted.
        let Some(long_ago) = now.checked_sub(KeyCache::TTL) else {
            return;
        };
        cache.put("slow".into(), p, long_ago);
        assert!(cache.get("slow").is_none());
        cache.clear();
        assert!(cache.get("fresh").is_none());
    }
}
