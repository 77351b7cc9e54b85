//! API keys: generation, keyed hashing and comparison.
//!
//! A key is `bw_` followed by 43 base64url characters (256 random bits). It
//! is shown once; the store keeps only HMAC-SHA256(pepper, key), so a stolen
//! database does not yield usable keys without the pepper. Lookups go by the
//! hash; the final comparison is constant-time all the same.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::fmt;
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
}
