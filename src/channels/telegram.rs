//! Telegram Bot API.
//!
//! * Webhooks: `setWebhook` is given a `secret_token`; every update then
//!   carries it in `X-Telegram-Bot-Api-Secret-Token`, compared in constant
//!   time. An update is `{"update_id", "message": {…}}` or `{"update_id",
//!   "callback_query": {"id", "from", "message", "data"}}` (a tapped inline
//!   keyboard key). The update id is what deduplicates (Telegram retries an
//!   update until it gets a 2xx). The conversation is the chat: replies go to
//!   `chat.id` (for a private chat, the person's own id).
//! * Sending: `POST {api_base}/bot<token>/sendMessage` with an inline
//!   keyboard (one key per row; `callback_data` is the option's label, at
//!   most 64 bytes — options that do not fit are offered as numbered text),
//!   texts split at 4,096 characters; a tapped key's callback query is
//!   answered with `answerCallbackQuery`. Telegram has no delivery receipts.

use super::{
    FieldError, InboundMessage, Media, Outgoing, ParseError, Received, Reply, Secret, SendRequest,
    SendResult, VerifyError, WebhookRequest, plain_parts,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

/// The Bot API's base when a channel names none.
pub const DEFAULT_API_BASE: &str = "https://api.telegram.org";
/// The header carrying the secret token.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";
/// Most bytes of a key's `callback_data`.
pub const CALLBACK_DATA: usize = 64;

/// A Telegram channel's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// The bot's token.
    pub bot_token: Secret,
    /// The webhook's secret token.
    pub secret_token: Secret,
    /// Bot API base, e.g. `https://api.telegram.org`.
    pub api_base: String,
}

/// A `secret_token` is 1–256 characters of `A-Z a-z 0-9 _ -`.
pub fn check_secret_token(t: &str) -> Result<(), FieldError> {
    if t.is_empty()
        || t.len() > 256
        || !t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(FieldError(
            "secret_token must be 1 to 256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule)"
                .into(),
        ));
    }
    Ok(())
}

/// Checks the secret token header, in constant time.
pub fn verify(config: &Config, req: &WebhookRequest<'_>) -> Result<(), VerifyError> {
    let given = req
        .header(SECRET_HEADER)
        .ok_or(VerifyError::Missing("X-Telegram-Bot-Api-Secret-Token"))?;
    let want = config.secret_token.expose().as_bytes();
    if given.len() == want.len() && bool::from(given.as_bytes().ct_eq(want)) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch("X-Telegram-Bot-Api-Secret-Token"))
    }
}

fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn full_name(from: &Value) -> Option<String> {
    let first = from["first_name"].as_str()?;
    Some(match from["last_name"].as_str() {
        Some(last) => format!("{first} {last}"),
        None => first.to_owned(),
    })
}

/// Reads one update.
pub fn parse(body: &[u8]) -> Result<Received, ParseError> {
    let u: Value = serde_json::from_slice(body)
        .map_err(|e| ParseError(format!("the body is not JSON: {e}")))?;
    let update_id =
        id_text(&u["update_id"]).ok_or_else(|| ParseError("the update has no update_id".into()))?;
    let mut out = Received::default();
    if let Some(q) = u.get("callback_query") {
        let chat = id_text(&q["message"]["chat"]["id"]).or_else(|| id_text(&q["from"]["id"]));
        if let Some(chat) = chat {
            out.messages.push(InboundMessage {
                message_id: update_id,
                user: chat,
                text: q["data"].as_str().map(str::to_owned),
                choice_id: q["data"].as_str().map(str::to_owned),
                media: None,
                phone: None,
                name: full_name(&q["from"]),
                callback_id: q["id"].as_str().map(str::to_owned),
            });
        }
        return Ok(out);
    }
    // Edits, channel posts, joins…: nothing to answer.
    let Some(m) = u.get("message") else {
        return Ok(out);
    };
    let Some(chat) = id_text(&m["chat"]["id"]) else {
        return Ok(out);
    };
    let media = [
        "photo",
        "voice",
        "audio",
        "video",
        "document",
        "sticker",
        "video_note",
    ]
    .into_iter()
    .find(|k| m.get(*k).is_some())
    .map(|k| {
        let item = if k == "photo" {
            m[k].as_array()
                .and_then(|a| a.last())
                .cloned()
                .unwrap_or_default()
        } else {
            m[k].clone()
        };
        Media {
            kind: if k == "photo" {
                "image".into()
            } else {
                k.to_owned()
            },
            id: item["file_id"].as_str().map(str::to_owned),
        }
    })
    .or_else(|| {
        ["location", "contact"]
            .into_iter()
            .find(|k| m.get(*k).is_some())
            .map(|k| Media {
                kind: k.to_owned(),
                id: None,
            })
    });
    out.messages.push(InboundMessage {
        message_id: update_id,
        user: chat,
        text: m["text"]
            .as_str()
            .or(m["caption"].as_str())
            .map(str::to_owned),
        choice_id: None,
        media,
        phone: m["contact"]["phone_number"]
            .as_str()
            .filter(|_| m["contact"]["user_id"] == m["from"]["id"])
            .map(|p| {
                if p.starts_with('+') {
                    p.to_owned()
                } else {
                    format!("+{p}")
                }
            }),
        name: full_name(&m["from"]),
        callback_id: None,
    });
    Ok(out)
}

fn chat_id(to: &str) -> Value {
    to.parse::<i64>().map_or_else(|_| json!(to), |n| json!(n))
}

fn send_message(to: &str, text: String, keyboard: Option<Value>) -> Outgoing {
    let mut body = json!({"chat_id": chat_id(to), "text": text});
    if let Some(k) = keyboard {
        body["reply_markup"] = json!({"inline_keyboard": k});
    }
    Outgoing {
        op: "sendMessage".into(),
        body,
    }
}

/// The messages that show `reply` in chat `to`.
pub fn render(to: &str, reply: &Reply<'_>) -> Vec<Outgoing> {
    let options = reply.options;
    let keyboard = !options.is_empty()
        && options
            .iter()
            .all(|o| !o.trim().is_empty() && o.len() <= CALLBACK_DATA);
    let limit = super::ChannelKind::Telegram.text_limit();
    let (before, last) = plain_parts(reply, limit, limit, !keyboard);
    let mut out: Vec<Outgoing> = before
        .into_iter()
        .map(|t| send_message(to, t, None))
        .collect();
    if keyboard {
        let rows: Vec<Value> = options
            .iter()
            .map(|o| json!([{"text": o, "callback_data": o}]))
            .collect();
        let text = last.unwrap_or_else(|| "Please choose:".into());
        out.push(send_message(to, text, Some(Value::Array(rows))));
    } else if let Some(t) = last {
        out.push(send_message(to, t, None));
    }
    out
}

/// Answers a tapped key's callback query (stops the spinner on the key).
pub fn answer_callback(callback_id: &str) -> Outgoing {
    Outgoing {
        op: "answerCallbackQuery".into(),
        body: json!({"callback_query_id": callback_id}),
    }
}

/// `setWebhook` for `url` with the channel's secret token: the request the
/// API sends when a channel is created with `register: true`.
pub fn set_webhook(config: &Config, url: &str) -> SendRequest {
    request(
        config,
        &Outgoing {
            op: "setWebhook".into(),
            body: json!({
                "url": url,
                "secret_token": config.secret_token.expose(),
                "allowed_updates": ["message", "callback_query"],
            }),
        },
    )
}

/// The request that sends `out`.
pub fn request(config: &Config, out: &Outgoing) -> SendRequest {
    SendRequest {
        url: format!(
            "{}/bot{}/{}",
            config.api_base,
            config.bot_token.expose(),
            out.op
        ),
        headers: vec![("content-type".into(), "application/json".into())],
        body: serde_json::to_vec(&out.body).unwrap_or_default(),
    }
}

/// What a Bot API answer means: `{"ok": true, "result"}` is sent;
/// `{"ok": false, "error_code", "description", "parameters":
/// {"retry_after"}}` is retried on 429 and 5xx, else failed.
pub fn read_result(status: u16, body: &str) -> SendResult {
    let json: Value = serde_json::from_str(body).unwrap_or_default();
    if (200..300).contains(&status) && json["ok"] != false {
        return SendResult::Sent(id_text(&json["result"]["message_id"]));
    }
    let text = match json["description"].as_str() {
        Some(d) => d.to_owned(),
        None => format!("HTTP {status}: {}", super::shorten(body.trim(), 500)),
    };
    let code = json["error_code"].as_u64().unwrap_or(u64::from(status));
    if code == 429 || code >= 500 || status >= 500 {
        SendResult::Retry {
            reason: text,
            after_secs: json["parameters"]["retry_after"].as_u64(),
        }
    } else {
        SendResult::Failed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            bot_token: Secret::new("123456:ABC-DEF"),
            secret_token: Secret::new("my_secret-1"),
            api_base: DEFAULT_API_BASE.into(),
        }
    }

    #[test]
    fn secret_token_is_checked() {
        let good = vec![(SECRET_HEADER.to_owned(), "my_secret-1".to_owned())];
        let bad = vec![(SECRET_HEADER.to_owned(), "my_secret-2".to_owned())];
        let req = |h| WebhookRequest {
            url: "",
            headers: h,
            body: b"{}",
        };
        assert_eq!(verify(&config(), &req(&good)), Ok(()));
        assert!(matches!(
            verify(&config(), &req(&bad)),
            Err(VerifyError::Mismatch(_))
        ));
        assert!(matches!(
            verify(&config(), &req(&[])),
            Err(VerifyError::Missing(_))
        ));
        assert!(check_secret_token("ok_token-1").is_ok());
        assert!(check_secret_token("no spaces").is_err());
        assert!(check_secret_token("").is_err());
    }

    #[test]
    fn reads_messages_and_callback_queries() {
        let msg = br#"{"update_id":10000,"message":{"date":1441645532,"chat":{"last_name":"Test Lastname","id":1111111,"first_name":"Test","username":"Test","type":"private"},"message_id":1365,"from":{"last_name":"Test Lastname","id":1111111,"first_name":"Test","username":"Test"},"text":"/start"}}"#;
        let r = parse(msg).unwrap();
        let m = &r.messages[0];
        assert_eq!(
            (m.message_id.as_str(), m.user.as_str()),
            ("10000", "1111111")
        );
        assert_eq!(m.text.as_deref(), Some("/start"));
        assert_eq!(m.name.as_deref(), Some("Test Test Lastname"));

        let cb = br#"{"update_id":10001,"callback_query":{"id":"4382bfdwdsb323b2d9","from":{"id":1111111,"first_name":"Test"},"message":{"message_id":1366,"chat":{"id":1111111,"type":"private"},"date":1441645550,"text":"Choose"},"chat_instance":"-1","data":"Six months"}}"#;
        let r = parse(cb).unwrap();
        let m = &r.messages[0];
        assert_eq!(m.choice_id.as_deref(), Some("Six months"));
        assert_eq!(m.callback_id.as_deref(), Some("4382bfdwdsb323b2d9"));
        assert_eq!(m.user, "1111111");

        let photo = br#"{"update_id":10002,"message":{"message_id":1,"chat":{"id":5,"type":"private"},"from":{"id":5,"first_name":"A"},"date":1,"caption":"look","photo":[{"file_id":"small","width":90},{"file_id":"big","width":800}]}}"#;
        let m = &parse(photo).unwrap().messages[0];
        assert_eq!(m.media.as_ref().unwrap().id.as_deref(), Some("big"));
        assert_eq!(m.media.as_ref().unwrap().kind, "image");
        assert_eq!(m.text.as_deref(), Some("look"));

        assert!(
            parse(br#"{"update_id":3,"edited_message":{}}"#)
                .unwrap()
                .messages
                .is_empty()
        );
        assert!(parse(br#"{"message":{}}"#).is_err());
    }

    #[test]
    fn renders_an_inline_keyboard() {
        let texts = vec![
            "Hi".to_owned(),
            "Choose:\n1. One month\n2. Six months".to_owned(),
        ];
        let opts = vec!["One month".to_owned(), "Six months".to_owned()];
        let out = render(
            "1111111",
            &Reply {
                texts: &texts,
                options: &opts,
            },
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].body, json!({"chat_id": 1111111, "text": "Hi"}));
        assert_eq!(out[1].op, "sendMessage");
        assert_eq!(
            out[1].body["reply_markup"]["inline_keyboard"],
            json!([[{"text": "One month", "callback_data": "One month"}],
                   [{"text": "Six months", "callback_data": "Six months"}]])
        );
        // A label over 64 bytes cannot be callback data: numbered text.
        let opts = vec!["x".repeat(65), "Other".to_owned()];
        let texts = vec!["Pick".to_owned()];
        let out = render(
            "1",
            &Reply {
                texts: &texts,
                options: &opts,
            },
        );
        assert!(out[0].body.get("reply_markup").is_none());
        assert!(out[0].body["text"].as_str().unwrap().contains("2. Other"));
    }

    #[test]
    fn requests_and_answers() {
        let r = request(&config(), &answer_callback("q1"));
        assert_eq!(
            r.url,
            "https://api.telegram.org/bot123456:ABC-DEF/answerCallbackQuery"
        );
        assert!(!format!("{r:?}").contains("ABC-DEF"));
        let hook = set_webhook(&config(), "https://bot.example/channels/ch_1/webhook");
        let body: Value = serde_json::from_slice(&hook.body).unwrap();
        assert_eq!(body["secret_token"], "my_secret-1");
        assert_eq!(
            read_result(200, r#"{"ok":true,"result":{"message_id":42}}"#),
            SendResult::Sent(Some("42".into()))
        );
        assert_eq!(
            read_result(
                429,
                r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7","parameters":{"retry_after":7}}"#
            ),
            SendResult::Retry {
                reason: "Too Many Requests: retry after 7".into(),
                after_secs: Some(7)
            }
        );
        assert_eq!(
            read_result(
                400,
                r#"{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}"#
            ),
            SendResult::Failed("Bad Request: chat not found".into())
        );
    }
}
