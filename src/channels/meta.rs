//! What WhatsApp Cloud API and Messenger share, both being Meta's Graph
//! API: the subscription handshake, the `X-Hub-Signature-256` webhook
//! signature and the Graph error format.
//!
//! The signature is an HMAC-SHA256 of the raw body under the app secret.
//! Meta escapes non-ASCII characters as `\uXXXX` in the JSON it sends, so
//! the bytes received are what is hashed — never a re-serialised document,
//! which would differ.

use super::{SendResult, VerifyError, WebhookRequest};
use hmac::{KeyInit, Mac};
use subtle::ConstantTimeEq;

/// The Graph API's base when a channel names none.
pub const DEFAULT_API_BASE: &str = "https://graph.facebook.com/v21.0";

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// `sha256=<hex HMAC-SHA256(secret, body)>`, as Meta sends it.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks `X-Hub-Signature-256` against the raw body, in constant time.
pub fn verify_signature(secret: &str, req: &WebhookRequest<'_>) -> Result<(), VerifyError> {
    let given = req
        .header(SIGNATURE_HEADER)
        .ok_or(VerifyError::Missing("X-Hub-Signature-256"))?;
    let expected = signature(secret, req.body);
    // Compare the hex digests as bytes: equal length is not secret.
    let given = given.trim().to_ascii_lowercase();
    if given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch("X-Hub-Signature-256 signature"))
    }
}

/// Answers Meta's subscription handshake: the challenge to echo when
/// `hub.mode` is `subscribe` and `hub.verify_token` matches.
pub fn handshake(verify_token: &str, query: &str) -> Result<String, VerifyError> {
    let mut mode = None;
    let mut token = None;
    let mut challenge = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "hub.mode" => mode = Some(v.into_owned()),
            "hub.verify_token" => token = Some(v.into_owned()),
            "hub.challenge" => challenge = Some(v.into_owned()),
            _ => {}
        }
    }
    let (Some(mode), Some(token), Some(challenge)) = (mode, token, challenge) else {
        return Err(VerifyError::Missing(
            "hub.mode, hub.verify_token and hub.challenge",
        ));
    };
    if mode == "subscribe" && bool::from(token.as_bytes().ct_eq(verify_token.as_bytes())) {
        Ok(challenge)
    } else {
        Err(VerifyError::Mismatch("hub.verify_token"))
    }
}

/// Graph error codes that mean "slow down" rather than "never": the
/// throughput limit (130429), the per-user pair limit (131056), the app
/// call limit (4) and Messenger's account limit (80007).
const RATE_LIMIT_CODES: [i64; 4] = [130429, 131056, 4, 80007];

/// What a Graph API answer to a send means.
pub fn read_result(status: u16, body: &str) -> SendResult {
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    if (200..300).contains(&status) {
        let id = json["messages"][0]["id"]
            .as_str()
            .or(json["message_id"].as_str())
            .map(str::to_owned);
        return SendResult::Sent(id);
    }
    let err = &json["error"];
    let code = err["code"].as_i64();
    let text = match (err["message"].as_str(), code) {
        (Some(m), Some(c)) => format!("{m} (code {c})"),
        (Some(m), None) => m.to_owned(),
        _ => format!("HTTP {status}: {}", super::shorten(body.trim(), 500)),
    };
    if status == 429 || status >= 500 || code.is_some_and(|c| RATE_LIMIT_CODES.contains(&c)) {
        SendResult::Retry {
            reason: text,
            after_secs: None,
        }
    } else {
        SendResult::Failed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(headers: &'a [(String, String)], body: &'a [u8]) -> WebhookRequest<'a> {
        WebhookRequest {
            url: "https://bot.example/channels/ch_1/webhook",
            headers,
            body,
        }
    }

    #[test]
    fn published_vector() {
        // The GitHub/Meta-style vector of CHANNELS.md.
        assert_eq!(
            signature("It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        let h = vec![(
            SIGNATURE_HEADER.to_owned(),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17".to_owned(),
        )];
        assert_eq!(
            verify_signature("It's a Secret to Everybody", &req(&h, b"Hello, World!")),
            Ok(())
        );
        assert!(matches!(
            verify_signature("It's a Secret to Everybody", &req(&h, b"Hello, World?")),
            Err(VerifyError::Mismatch(_))
        ));
        assert!(matches!(
            verify_signature("It's a Secret to Everybody", &req(&[], b"Hello, World!")),
            Err(VerifyError::Missing(_))
        ));
    }

    #[test]
    fn escaped_unicode_is_hashed_as_received() {
        // Meta sends "José" as "Jos\u00e9": the signature covers those
        // bytes, and the same text re-serialised would not verify.
        let sent = br#"{"name":"Jos\u00e9"}"#;
        let h = vec![(SIGNATURE_HEADER.to_owned(), signature("s", sent))];
        assert_eq!(verify_signature("s", &req(&h, sent)), Ok(()));
        let reserialised =
            serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(sent).unwrap())
                .unwrap();
        assert_ne!(reserialised, sent.to_vec());
        assert!(verify_signature("s", &req(&h, &reserialised)).is_err());
    }

    #[test]
    fn handshake_echoes_only_for_the_right_token() {
        let q = "hub.mode=subscribe&hub.verify_token=tok%201&hub.challenge=1158201444";
        assert_eq!(handshake("tok 1", q).unwrap(), "1158201444");
        assert!(matches!(
            handshake("other", q),
            Err(VerifyError::Mismatch(_))
        ));
        assert!(matches!(
            handshake(
                "tok 1",
                "hub.mode=unsubscribe&hub.verify_token=tok%201&hub.challenge=1"
            ),
            Err(VerifyError::Mismatch(_))
        ));
        assert!(matches!(handshake("tok", ""), Err(VerifyError::Missing(_))));
    }

    #[test]
    fn graph_answers() {
        assert_eq!(
            read_result(
                200,
                r#"{"messaging_product":"whatsapp","contacts":[{"input":"1","wa_id":"1"}],"messages":[{"id":"wamid.X"}]}"#
            ),
            SendResult::Sent(Some("wamid.X".into()))
        );
        assert_eq!(
            read_result(200, r#"{"recipient_id":"1","message_id":"m_1"}"#),
            SendResult::Sent(Some("m_1".into()))
        );
        let bad = r#"{"error":{"message":"(#100) Invalid parameter","type":"OAuthException","code":100,"fbtrace_id":"A"}}"#;
        assert_eq!(
            read_result(400, bad),
            SendResult::Failed("(#100) Invalid parameter (code 100)".into())
        );
        let limited = r#"{"error":{"message":"(#131056) Pair rate limit hit","code":131056}}"#;
        assert!(matches!(
            read_result(400, limited),
            SendResult::Retry { .. }
        ));
        assert!(matches!(read_result(503, "down"), SendResult::Retry { .. }));
        assert!(matches!(read_result(429, "{}"), SendResult::Retry { .. }));
    }
}
