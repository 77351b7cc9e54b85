//! Twilio Programmable Messaging: SMS, and WhatsApp through Twilio when the
//! channel's `from` is `whatsapp:+…`.
//!
//! * Webhooks are `application/x-www-form-urlencoded`. Security is
//!   `X-Twilio-Signature`: base64 of an HMAC-SHA1, under the auth token, of
//!   the full URL Twilio called followed by every form parameter, sorted by
//!   name, as name then value. The URL is the public one (the `public_url`
//!   setting), checked with and without the scheme's default port, since
//!   Twilio may sign either form.
//! * An inbound message has `MessageSid`, `From`, `To`, `Body`, `NumMedia`
//!   (+ `MediaUrl0`, `MediaContentType0`), and through WhatsApp `WaId`,
//!   `ProfileName`, `ButtonPayload`. A status callback has `MessageSid` and
//!   `MessageStatus` (`sent`, `delivered`, `read`, `undelivered`, `failed`,
//!   with `ErrorCode`).
//! * Sending: `POST {api_base}/2010-04-01/Accounts/{AccountSid}/Messages.json`,
//!   form-encoded, basic auth, `StatusCallback` pointing back at the
//!   channel's webhook. SMS shows no buttons: options are numbered text;
//!   `Body` is at most 1,600 characters, longer texts are split.

use super::{
    DeliveryStatus, FieldError, InboundMessage, Media, Outgoing, ParseError, Received, Reply,
    Secret, SendRequest, SendResult, StatusTarget, StatusUpdate, VerifyError, WebhookRequest,
    plain_parts,
};
use base64::Engine;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

/// Twilio's API base when a channel names none.
pub const DEFAULT_API_BASE: &str = "https://api.twilio.com";
/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// A Twilio channel's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// `AC…`
    pub account_sid: String,
    /// Signs webhooks; authenticates sends.
    pub auth_token: Secret,
    /// The sending number: `+E164`, or `whatsapp:+E164`.
    pub from: String,
    /// API base, e.g. `https://api.twilio.com`.
    pub api_base: String,
}

fn is_e164(p: &str) -> bool {
    let digits = p.strip_prefix('+').unwrap_or("");
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// `from` is `+` and 8–15 digits, optionally after `whatsapp:`.
pub fn check_from(from: &str) -> Result<(), FieldError> {
    if is_e164(from.strip_prefix("whatsapp:").unwrap_or(from)) {
        Ok(())
    } else {
        Err(FieldError(format!(
            "from must be the sending number in E.164 (+14155550100), or whatsapp:+14155550100 for WhatsApp through Twilio; got {from:?}"
        )))
    }
}

/// The signature Twilio sends for `url` and form `params`.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut mac = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(auth_token.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `url` with the scheme's default port added when it has none, or removed
/// when it has it; `None` when neither applies.
fn port_variant(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let default = match parsed.scheme() {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    parsed.host_str()?;
    let scheme_end = url.find("://")? + 3;
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    let replaced = if authority.ends_with(&format!(":{default}")) {
        authority[..authority.len() - default.to_string().len() - 1].to_owned()
    } else if parsed.port().is_none() {
        format!("{authority}:{default}")
    } else {
        return None;
    };
    Some(format!(
        "{}{}{}",
        &url[..scheme_end],
        replaced,
        &url[authority_end..]
    ))
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Checks `X-Twilio-Signature` over the public URL and the form body, in
/// constant time, with and without the default port.
pub fn verify(config: &Config, req: &WebhookRequest<'_>) -> Result<(), VerifyError> {
    let given = req
        .header(SIGNATURE_HEADER)
        .ok_or(VerifyError::Missing("X-Twilio-Signature"))?;
    let params = form(req.body);
    let token = config.auth_token.expose();
    let candidates = std::iter::once(req.url.to_owned()).chain(port_variant(req.url));
    for url in candidates {
        let expected = signature(token, &url, &params);
        if given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
        {
            return Ok(());
        }
    }
    Err(VerifyError::Mismatch("X-Twilio-Signature signature"))
}

/// Reads a form body: a message, or a status callback.
pub fn parse(config: &Config, body: &[u8]) -> Result<Received, ParseError> {
    let params = form(body);
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let mut out = Received::default();
    let sid = get("MessageSid")
        .or_else(|| get("SmsMessageSid"))
        .ok_or_else(|| ParseError("the form has no MessageSid".into()))?;
    if get("AccountSid").is_some_and(|a| a != config.account_sid) {
        tracing::info!("Twilio request for another account skipped");
        return Ok(out);
    }
    let status = get("MessageStatus").or_else(|| get("SmsStatus"));
    let status = match status.as_deref() {
        Some("sent") => Some(DeliveryStatus::Sent),
        Some("delivered") => Some(DeliveryStatus::Delivered),
        Some("read") => Some(DeliveryStatus::Read),
        Some("failed" | "undelivered") => Some(DeliveryStatus::Failed),
        Some("received" | "receiving") | None => None,
        // queued, accepted, sending, scheduled…: nothing to report.
        Some(_) if get("Body").is_none() => return Ok(out),
        Some(_) => None,
    };
    if let Some(status) = status {
        let error = (status == DeliveryStatus::Failed).then(|| {
            match (get("ErrorCode"), get("ErrorMessage")) {
                (Some(c), Some(m)) => format!("{m} (error {c})"),
                (Some(c), None) => format!("Twilio error {c}"),
                (None, Some(m)) => m,
                (None, None) => "the message was not delivered".into(),
            }
        });
        out.statuses.push(StatusUpdate {
            target: StatusTarget::Message(sid),
            status,
            error,
        });
        return Ok(out);
    }
    let from = get("From").ok_or_else(|| ParseError("the form has no From".into()))?;
    let number = from.strip_prefix("whatsapp:").unwrap_or(&from);
    let media = get("NumMedia")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| *n > 0)
        .map(|_| Media {
            kind: get("MediaContentType0")
                .and_then(|t| t.split('/').next().map(str::to_owned))
                .unwrap_or_else(|| "file".into()),
            id: get("MediaUrl0"),
        });
    out.messages.push(InboundMessage {
        message_id: sid,
        phone: is_e164(number).then(|| number.to_owned()),
        user: from.clone(),
        text: get("Body").or_else(|| get("ButtonText")),
        choice_id: get("ButtonPayload"),
        media,
        name: get("ProfileName"),
        callback_id: None,
    });
    Ok(out)
}

/// The messages that show `reply` to `to` (the person's `From`).
pub fn render(config: &Config, to: &str, reply: &Reply<'_>) -> Vec<Outgoing> {
    let limit = super::ChannelKind::Twilio.text_limit();
    let (mut parts, last) = plain_parts(reply, limit, limit, true);
    parts.extend(last);
    parts
        .into_iter()
        .map(|text| {
            let mut body = Map::new();
            body.insert("To".into(), Value::from(to));
            body.insert("From".into(), Value::from(config.from.as_str()));
            body.insert("Body".into(), Value::from(text));
            Outgoing {
                op: "Messages.json".into(),
                body: Value::Object(body),
            }
        })
        .collect()
}

/// The request that sends `out`, asking for status callbacks at
/// `status_callback`.
pub fn request(config: &Config, out: &Outgoing, status_callback: Option<&str>) -> SendRequest {
    let mut fields = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in out.body.as_object().into_iter().flatten() {
        match v {
            Value::String(s) => fields.append_pair(k, s),
            other => fields.append_pair(k, &other.to_string()),
        };
    }
    if let Some(cb) = status_callback {
        fields.append_pair("StatusCallback", cb);
    }
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        config.account_sid,
        config.auth_token.expose()
    ));
    SendRequest {
        url: format!(
            "{}/2010-04-01/Accounts/{}/{}",
            config.api_base, config.account_sid, out.op
        ),
        headers: vec![
            (
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            ),
            ("authorization".into(), format!("Basic {credentials}")),
        ],
        body: fields.finish().into_bytes(),
    }
}

/// What Twilio's answer means: 201 with `sid` is sent; 429 and 5xx are
/// retried; other errors (`{"code", "message", "status"}`) failed.
pub fn read_result(status: u16, body: &str) -> SendResult {
    let json: Value = serde_json::from_str(body).unwrap_or_default();
    if (200..300).contains(&status) {
        return SendResult::Sent(json["sid"].as_str().map(str::to_owned));
    }
    let text = match (json["message"].as_str(), json["code"].as_i64()) {
        (Some(m), Some(c)) => format!("{m} (error {c})"),
        (Some(m), None) => m.to_owned(),
        _ => format!("HTTP {status}: {}", super::shorten(body.trim(), 500)),
    };
    if status == 429 || status >= 500 {
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

    fn vector_params() -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    fn config(token: &str) -> Config {
        Config {
            account_sid: format!("AC{}", "0".repeat(32)),
            auth_token: Secret::new(token),
            from: "+14155550100".into(),
            api_base: DEFAULT_API_BASE.into(),
        }
    }

    #[test]
    fn published_vectors() {
        // Twilio's SDK test vectors (CHANNELS.md).
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            signature("12345", url, &vector_params()),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert_eq!(
            signature(
                "12345",
                "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                &vector_params()
            ),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        );
    }

    #[test]
    fn verifies_with_and_without_the_default_port() {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(vector_params())
            .finish();
        let check = |url: &str, sig: &str| {
            let h = vec![(SIGNATURE_HEADER.to_owned(), sig.to_owned())];
            verify(
                &config("12345"),
                &WebhookRequest {
                    url,
                    headers: &h,
                    body: body.as_bytes(),
                },
            )
        };
        let plain = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let ported = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        // Twilio signed with the port; we know the URL without it, and the
        // other way round.
        assert_eq!(check(plain, "kvajT1Ptam85bY51eRf/AJRuM3w="), Ok(()));
        assert_eq!(check(ported, "RSOYDt4T1cUTdK1PDd93/VVr8B8="), Ok(()));
        assert_eq!(check(plain, "RSOYDt4T1cUTdK1PDd93/VVr8B8="), Ok(()));
        assert!(matches!(
            check(plain, "AAAADt4T1cUTdK1PDd93/VVr8B8="),
            Err(VerifyError::Mismatch(_))
        ));
        let none = verify(
            &config("12345"),
            &WebhookRequest {
                url: plain,
                headers: &[],
                body: body.as_bytes(),
            },
        );
        assert!(matches!(none, Err(VerifyError::Missing(_))));
        assert_eq!(port_variant("http://127.0.0.1:8080/x"), None);
        assert_eq!(port_variant("http://h/x").as_deref(), Some("http://h:80/x"));
    }

    #[test]
    fn reads_messages_and_status_callbacks() {
        let c = config("t");
        let inbound = format!(
            "ToCountry=US&SmsMessageSid=SM1&NumMedia=0&SmsSid=SM1&SmsStatus=received&Body=Hola+Jos%C3%A9&To=%2B14155550100&NumSegments=1&MessageSid=SM1&AccountSid={}&From=%2B525500000000&ApiVersion=2010-04-01",
            c.account_sid
        );
        let r = parse(&c, inbound.as_bytes()).unwrap();
        let m = &r.messages[0];
        assert_eq!(m.user, "+525500000000");
        assert_eq!(m.phone.as_deref(), Some("+525500000000"));
        assert_eq!(m.text.as_deref(), Some("Hola José"));
        assert!(r.statuses.is_empty());

        let wa = "MessageSid=SM2&From=whatsapp%3A%2B525500000000&To=whatsapp%3A%2B14155550100&Body=&NumMedia=1&MediaUrl0=https%3A%2F%2Fapi.twilio.com%2Fmedia%2FME1&MediaContentType0=image%2Fjpeg&ProfileName=Ana&WaId=525500000000";
        let m = &parse(&c, wa.as_bytes()).unwrap().messages[0];
        assert_eq!(m.user, "whatsapp:+525500000000");
        assert_eq!(m.phone.as_deref(), Some("+525500000000"));
        assert_eq!(m.media.as_ref().unwrap().kind, "image");
        assert_eq!(m.name.as_deref(), Some("Ana"));

        let st = "MessageSid=SM9&MessageStatus=undelivered&ErrorCode=30003&To=%2B525500000000&From=%2B14155550100";
        let r = parse(&c, st.as_bytes()).unwrap();
        assert!(r.messages.is_empty());
        assert_eq!(r.statuses[0].status, DeliveryStatus::Failed);
        assert_eq!(r.statuses[0].error.as_deref(), Some("Twilio error 30003"));
        let queued = "MessageSid=SM9&MessageStatus=queued";
        assert_eq!(parse(&c, queued.as_bytes()).unwrap(), Received::default());
        assert!(parse(&c, b"Body=x").is_err());
    }

    #[test]
    fn renders_numbered_text_and_form_requests() {
        let c = config("tok");
        let texts = vec!["Choose:\n1. One month\n2. Six months".to_owned()];
        let opts = vec!["One month".to_owned(), "Six months".to_owned()];
        let out = render(
            &c,
            "+525500000000",
            &Reply {
                texts: &texts,
                options: &opts,
            },
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].body["Body"], texts[0].as_str());
        let r = request(
            &c,
            &out[0],
            Some("https://bot.example/channels/ch_1/webhook"),
        );
        assert_eq!(
            r.url,
            format!(
                "https://api.twilio.com/2010-04-01/Accounts/{}/Messages.json",
                c.account_sid
            )
        );
        let body = String::from_utf8(r.body.clone()).unwrap();
        assert!(
            body.starts_with("To=%2B525500000000&From=%2B14155550100&Body=Choose"),
            "{body}"
        );
        assert!(
            body.contains("StatusCallback=https%3A%2F%2Fbot.example"),
            "{body}"
        );
        assert!(!format!("{r:?}").contains("tok"));

        let long = vec!["word ".repeat(700)];
        let out = render(
            &c,
            "+1",
            &Reply {
                texts: &long,
                options: &[],
            },
        );
        assert_eq!(out.len(), 3);
        assert!(
            out.iter()
                .all(|o| o.body["Body"].as_str().unwrap().chars().count() <= 1600)
        );
    }

    #[test]
    fn send_answers() {
        assert_eq!(
            read_result(201, r#"{"sid":"SM123","status":"queued"}"#),
            SendResult::Sent(Some("SM123".into()))
        );
        assert_eq!(
            read_result(
                400,
                r#"{"code":21211,"message":"The 'To' number is not a valid phone number.","status":400}"#
            ),
            SendResult::Failed("The 'To' number is not a valid phone number. (error 21211)".into())
        );
        assert!(matches!(
            read_result(429, r#"{"code":20429,"message":"Too Many Requests"}"#),
            SendResult::Retry { .. }
        ));
        assert!(check_from("whatsapp:+14155550100").is_ok());
        assert!(check_from("14155550100").is_err());
    }
}
