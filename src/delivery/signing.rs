//! Standard Webhooks signing and verification.
//!
//! Every outbound request (event webhooks and story webhooks alike) carries
//! `webhook-id`, `webhook-timestamp` and `webhook-signature`, where the signature
//! is `v1,` followed by the base64 of HMAC-SHA256 over `"{id}.{timestamp}.{body}"`
//! keyed with the endpoint secret. During secret rotation several signatures are
//! sent, separated by single spaces, and a receiver accepts the request when any
//! of them matches one of its secrets.
//!
//! Invariants:
//! - a [`Secret`] always holds 24 to 64 bytes, and its bytes never appear in
//!   `Debug` output;
//! - signature comparison is constant-time in the signature bytes;
//! - verification never panics, whatever the header, timestamp or body.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub use crate::domain::secret::{
    GENERATED_SECRET_LEN, MAX_SECRET_LEN, MIN_SECRET_LEN, SECRET_PREFIX, Secret, SecretError,
};

type HmacSha256 = Hmac<Sha256>;

/// Default allowed distance between a signature's timestamp and now: 5 minutes.
pub const DEFAULT_TOLERANCE_SECS: u64 = 5 * 60;
/// Signature scheme version this module produces and accepts.
pub const SIGNATURE_VERSION: &str = "v1";

/// Header carrying the message id (the event id: stable across retries).
pub const HEADER_ID: &str = "webhook-id";
/// Header carrying the signing time, in seconds since the Unix epoch.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying the space-separated signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// HMAC-SHA256 of `"{id}.{ts}.{body}"`, fed piecewise so the body is not copied.
fn mac(secret: &Secret, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length, so this cannot fail; the fallback keeps
    // the function total without a panic path.
    let Ok(mut mac) = <HmacSha256 as KeyInit>::new_from_slice(secret.as_bytes()) else {
        return [0u8; 32];
    };
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Signs one message: `v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp_secs}.{body}">`.
pub fn sign(secret: &Secret, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> String {
    format!(
        "{SIGNATURE_VERSION},{}",
        BASE64.encode(mac(secret, msg_id, timestamp_secs, body))
    )
}

/// The `webhook-signature` header value: one signature per secret, space-separated.
///
/// Pass every live secret during rotation (new and old) so receivers that still
/// hold either can verify. With no secrets the result is empty.
pub fn signature_header(
    secrets: &[Secret],
    msg_id: &str,
    timestamp_secs: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| sign(s, msg_id, timestamp_secs, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a signed message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No secret was given to verify with.
    #[error("no secret to verify with")]
    NoSecrets,
    /// `webhook-timestamp` is not an integer number of seconds.
    #[error("webhook-timestamp {0:?} is not an integer number of seconds since the epoch")]
    BadTimestamp(String),
    /// The timestamp is further in the past than the tolerance allows.
    #[error(
        "webhook-timestamp {timestamp} is {age_secs} s old, more than the {tolerance_secs} s allowed"
    )]
    TooOld {
        /// The timestamp received.
        timestamp: i64,
        /// How far behind `now` it is.
        age_secs: u64,
        /// The tolerance in force.
        tolerance_secs: u64,
    },
    /// The timestamp is further in the future than the tolerance allows.
    #[error(
        "webhook-timestamp {timestamp} is {ahead_secs} s in the future, more than the {tolerance_secs} s allowed"
    )]
    TooNew {
        /// The timestamp received.
        timestamp: i64,
        /// How far ahead of `now` it is.
        ahead_secs: u64,
        /// The tolerance in force.
        tolerance_secs: u64,
    },
    /// The signature header is empty or has an entry not shaped `version,signature`.
    #[error("webhook-signature is malformed: {0}")]
    MalformedHeader(String),
    /// The header is well formed but no `v1` entry matches any secret.
    #[error("no signature matches ({v1_entries} v1 signature(s) checked)")]
    NoMatchingSignature {
        /// How many `v1,` entries the header held.
        v1_entries: usize,
    },
}

/// Verifies a Standard Webhooks message.
///
/// `timestamp` is the raw `webhook-timestamp` header, `signature_header` the raw
/// `webhook-signature` header, `now_secs` the current Unix time. The message is
/// accepted when the timestamp is within `tolerance_secs` of `now_secs` and any
/// `v1,` entry of the header equals the signature under any of `secrets`. Entries
/// of other versions (such as `v1a`) are ignored.
pub fn verify(
    secrets: &[Secret],
    msg_id: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: u64,
) -> Result<(), VerifyError> {
    if secrets.is_empty() {
        return Err(VerifyError::NoSecrets);
    }
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp(truncate_for_error(timestamp)))?;
    let diff = i128::from(now_secs) - i128::from(ts);
    let tolerance = i128::from(tolerance_secs);
    if diff > tolerance {
        return Err(VerifyError::TooOld {
            timestamp: ts,
            age_secs: u64::try_from(diff).unwrap_or(u64::MAX),
            tolerance_secs,
        });
    }
    if -diff > tolerance {
        return Err(VerifyError::TooNew {
            timestamp: ts,
            ahead_secs: u64::try_from(-diff).unwrap_or(u64::MAX),
            tolerance_secs,
        });
    }

    let entries: Vec<&str> = signature_header.split_whitespace().collect();
    if entries.is_empty() {
        return Err(VerifyError::MalformedHeader("it is empty".into()));
    }
    let mut candidates = Vec::with_capacity(entries.len());
    for entry in &entries {
        let Some((version, sig)) = entry.split_once(',') else {
            return Err(VerifyError::MalformedHeader(format!(
                "entry {:?} is not `version,signature`",
                truncate_for_error(entry)
            )));
        };
        if version != SIGNATURE_VERSION {
            continue;
        }
        // A v1 entry that is not base64 of 32 bytes can never match; it still
        // counts as checked, so the error reports it.
        candidates.push(BASE64.decode(sig).ok());
    }

    let macs: Vec<[u8; 32]> = secrets.iter().map(|s| mac(s, msg_id, ts, body)).collect();
    let mut matched = subtle::Choice::from(0u8);
    for candidate in candidates.iter().flatten() {
        for mac in &macs {
            // Lengths are public; ct_eq returns false for a length mismatch.
            matched |= candidate.as_slice().ct_eq(mac.as_slice());
        }
    }
    if bool::from(matched) {
        Ok(())
    } else {
        Err(VerifyError::NoMatchingSignature {
            v1_entries: candidates.len(),
        })
    }
}

/// Keeps error messages short when a caller passes a huge header.
fn truncate_for_error(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn oracle_headers(id: &str, ts: i64, sig: &str) -> reqwest::header::HeaderMap {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("webhook-id", id.parse().unwrap());
        h.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        h.insert("webhook-signature", sig.parse().unwrap());
        h
    }

    #[test]
    fn secret_roundtrips_and_hides_in_debug() {
        let s = Secret::generate();
        assert_eq!(s.as_bytes().len(), 32);
        let text = s.to_string();
        assert!(text.starts_with("whsec_"));
        assert_eq!(Secret::parse(&text).unwrap(), s);
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_ne!(Secret::generate(), s);
    }

    #[test]
    fn secret_parse_errors_say_what_is_wrong() {
        assert_eq!(
            Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Err(SecretError::MissingPrefix)
        );
        assert_eq!(
            Secret::parse("whsec_not base64!"),
            Err(SecretError::InvalidBase64)
        );
        let short = format!("whsec_{}", BASE64.encode([1u8; 23]));
        assert_eq!(Secret::parse(&short), Err(SecretError::BadLength(23)));
        let long = format!("whsec_{}", BASE64.encode([1u8; 65]));
        assert_eq!(Secret::parse(&long), Err(SecretError::BadLength(65)));
        for n in [24, 64] {
            let ok = format!("whsec_{}", BASE64.encode(vec![7u8; n]));
            assert!(Secret::parse(&ok).is_ok());
        }
        assert!(
            SecretError::BadLength(3)
                .to_string()
                .contains("24 to 64 bytes")
        );
    }

    #[test]
    fn oracle_verifies_what_we_sign() {
        let secret = Secret::generate();
        let oracle = standardwebhooks::Webhook::new(&secret.to_string()).unwrap();
        let body = br#"{"type":"message.received","data":{"text":"h\u00e9llo"}}"#;
        let ts = now();
        let sig = sign(&secret, "evt_2a1b", ts, body);
        oracle
            .verify(body, &oracle_headers("evt_2a1b", ts, &sig))
            .unwrap();
        // Exactly what the oracle would produce.
        assert_eq!(oracle.sign("evt_2a1b", ts, body).unwrap(), sig);
    }

    #[test]
    fn oracle_accepts_rotation_header() {
        let old = Secret::generate();
        let new = Secret::generate();
        let ts = now();
        let header = signature_header(&[new.clone(), old.clone()], "m1", ts, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        for s in [&old, &new] {
            let oracle = standardwebhooks::Webhook::new(&s.to_string()).unwrap();
            oracle
                .verify(b"{}", &oracle_headers("m1", ts, &header))
                .unwrap();
        }
    }

    #[test]
    fn we_verify_what_the_oracle_signs() {
        let secret = Secret::generate();
        let oracle = standardwebhooks::Webhook::new(&secret.to_string()).unwrap();
        let ts = now();
        let body = br#"{"a":1}"#;
        let sig = oracle
            .sign("msg_p5jXN8AQM9LWM0D4loKWxJek", ts, body)
            .unwrap();
        let header = format!("v1a,AAAA {sig}");
        verify(
            &[secret],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            &ts.to_string(),
            &header,
            body,
            ts,
            DEFAULT_TOLERANCE_SECS,
        )
        .unwrap();
    }

    #[test]
    fn known_vector_from_the_specification_example() {
        // The Standard Webhooks example secret, id, timestamp and body.
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn verify_errors_name_the_problem() {
        let s = Secret::generate();
        let ts = 1_700_000_000;
        let sig = sign(&s, "id", ts, b"x");
        let secrets = std::slice::from_ref(&s);
        let v = |t: &str, h: &str, body: &[u8], now: i64| {
            verify(secrets, "id", t, h, body, now, DEFAULT_TOLERANCE_SECS)
        };
        assert!(v(&ts.to_string(), &sig, b"x", ts).is_ok());
        assert!(v(&ts.to_string(), &sig, b"x", ts + 300).is_ok());
        assert!(v(&ts.to_string(), &sig, b"x", ts - 300).is_ok());
        assert!(matches!(
            v("17e8", &sig, b"x", ts),
            Err(VerifyError::BadTimestamp(_))
        ));
        assert!(matches!(
            v(&ts.to_string(), &sig, b"x", ts + 301),
            Err(VerifyError::TooOld { age_secs: 301, .. })
        ));
        assert!(matches!(
            v(&ts.to_string(), &sig, b"x", ts - 301),
            Err(VerifyError::TooNew {
                ahead_secs: 301,
                ..
            })
        ));
        assert!(matches!(
            v(&ts.to_string(), "", b"x", ts),
            Err(VerifyError::MalformedHeader(_))
        ));
        assert!(matches!(
            v(&ts.to_string(), "garbage", b"x", ts),
            Err(VerifyError::MalformedHeader(_))
        ));
        assert_eq!(
            v(&ts.to_string(), &sig, b"y", ts),
            Err(VerifyError::NoMatchingSignature { v1_entries: 1 })
        );
        assert_eq!(
            v(&ts.to_string(), "v1,!!notbase64", b"x", ts),
            Err(VerifyError::NoMatchingSignature { v1_entries: 1 })
        );
        assert_eq!(
            v(&ts.to_string(), "v2,abc", b"x", ts),
            Err(VerifyError::NoMatchingSignature { v1_entries: 0 })
        );
        assert_eq!(
            verify(&[], "id", "1", &sig, b"x", 1, 300),
            Err(VerifyError::NoSecrets)
        );
        // Extreme values do not overflow.
        assert!(matches!(
            verify(
                secrets,
                "id",
                &i64::MIN.to_string(),
                &sig,
                b"x",
                i64::MAX,
                300
            ),
            Err(VerifyError::TooOld { .. })
        ));
    }

    proptest! {
        #[test]
        fn sign_verify_roundtrip(
            key in proptest::collection::vec(any::<u8>(), 24..=64),
            id in "[a-zA-Z0-9_]{1,40}",
            ts in 0i64..4_000_000_000,
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let s = Secret::from_bytes(key).unwrap();
            let sig = signature_header(std::slice::from_ref(&s), &id, ts, &body);
            prop_assert!(verify(&[s], &id, &ts.to_string(), &sig, &body, ts, 300).is_ok());
        }

        #[test]
        fn any_body_mutation_fails(
            body in proptest::collection::vec(any::<u8>(), 1..512),
            index in any::<prop::sample::Index>(),
            flip in 1u8..=255,
            append in any::<bool>(),
        ) {
            let s = Secret::generate();
            let sig = sign(&s, "evt", 42, &body);
            let mut changed = body.clone();
            if append {
                changed.push(flip);
            } else {
                let i = index.index(changed.len());
                changed[i] ^= flip;
            }
            let res = verify(&[s], "evt", "42", &sig, &changed, 42, 300);
            let rejected = matches!(res, Err(VerifyError::NoMatchingSignature { .. }));
            prop_assert!(rejected);
        }

        #[test]
        fn verify_never_panics(
            ts in ".{0,30}",
            header in ".{0,200}",
            body in proptest::collection::vec(any::<u8>(), 0..64),
            now in any::<i64>(),
            tol in any::<u64>(),
        ) {
            let _ = verify(&[Secret::generate()], "id", &ts, &header, &body, now, tol);
        }

        #[test]
        fn secret_parse_never_panics(text in ".{0,120}") {
            let _ = Secret::parse(&text);
        }
    }
}
