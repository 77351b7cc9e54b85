//! Messenger (Meta).
//!
//! * Webhooks: Meta's handshake and `X-Hub-Signature-256` ([`super::meta`]).
//!   A body is `{"object": "page", "entry": [{"id", "time", "messaging":
//!   [{"sender": {"id"}, "recipient": {"id"}, "timestamp", …}]}]}` where each
//!   event holds a `message` (`mid`, `text`, `quick_reply.payload`,
//!   `attachments`), a `postback` (`title`, `payload`), a `delivery`
//!   (`mids`) or a `read` (`watermark`: everything sent before it was
//!   read). Echoes of the page's own messages are skipped, and so are
//!   entries for another page.
//! * Sending: `POST {api_base}/me/messages` with the page token as a bearer
//!   token, `messaging_type: RESPONSE`; options as quick replies (≤ 13,
//!   titles ≤ 20 characters, the label as payload) or numbered text; texts
//!   split at 2,000 characters.

use super::{
    DeliveryStatus, InboundMessage, Media, Outgoing, ParseError, Received, Reply, Secret,
    SendRequest, StatusTarget, StatusUpdate, plain_parts, shorten,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A Messenger channel's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// The page's id.
    pub page_id: String,
    /// The page access token.
    pub page_access_token: Secret,
    /// The Meta app's secret (webhook signatures).
    pub app_secret: Secret,
    /// The handshake token.
    pub verify_token: String,
    /// Graph API base.
    pub api_base: String,
}

/// Most quick replies.
pub const MAX_QUICK_REPLIES: usize = 13;
/// Longest quick reply title.
pub const QUICK_REPLY_TITLE: usize = 20;
/// Longest quick reply payload.
const PAYLOAD: usize = 1000;

/// Reads a webhook body.
pub fn parse(config: &Config, body: &[u8]) -> Result<Received, ParseError> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| ParseError(format!("the body is not JSON: {e}")))?;
    let mut out = Received::default();
    for entry in doc["entry"].as_array().into_iter().flatten() {
        if entry["id"].as_str().is_some_and(|p| p != config.page_id) {
            tracing::info!("Messenger entry for another page skipped");
            continue;
        }
        for ev in entry["messaging"].as_array().into_iter().flatten() {
            let Some(sender) = ev["sender"]["id"].as_str() else {
                continue;
            };
            if let Some(m) = ev.get("message") {
                if m["is_echo"] == true {
                    continue;
                }
                let Some(mid) = m["mid"].as_str() else {
                    continue;
                };
                let media = m["attachments"][0].as_object().map(|a| Media {
                    kind: a
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("file")
                        .to_owned(),
                    id: a
                        .get("payload")
                        .and_then(|p| p.get("url"))
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                });
                out.messages.push(InboundMessage {
                    message_id: mid.to_owned(),
                    user: sender.to_owned(),
                    text: m["text"].as_str().map(str::to_owned),
                    choice_id: m["quick_reply"]["payload"].as_str().map(str::to_owned),
                    media,
                    phone: None,
                    name: None,
                    callback_id: None,
                });
            } else if let Some(p) = ev.get("postback") {
                // A postback has no message id of its own; its `mid` when
                // given, else the sender and time, identify it.
                let id = p["mid"].as_str().map(str::to_owned).unwrap_or_else(|| {
                    format!(
                        "postback:{sender}:{}",
                        ev["timestamp"].as_i64().unwrap_or(0)
                    )
                });
                out.messages.push(InboundMessage {
                    message_id: id,
                    user: sender.to_owned(),
                    text: p["title"].as_str().map(str::to_owned),
                    choice_id: p["payload"].as_str().map(str::to_owned),
                    media: None,
                    phone: None,
                    name: None,
                    callback_id: None,
                });
            } else if let Some(d) = ev.get("delivery") {
                for mid in d["mids"].as_array().into_iter().flatten() {
                    if let Some(mid) = mid.as_str() {
                        out.statuses.push(StatusUpdate {
                            target: StatusTarget::Message(mid.to_owned()),
                            status: DeliveryStatus::Delivered,
                            error: None,
                        });
                    }
                }
            } else if let Some(w) = ev.get("read").and_then(|r| r["watermark"].as_i64()) {
                out.statuses.push(StatusUpdate {
                    target: StatusTarget::Until {
                        user: sender.to_owned(),
                        until_ms: w,
                    },
                    status: DeliveryStatus::Read,
                    error: None,
                });
            }
        }
    }
    Ok(out)
}

fn message(to: &str, message: Value) -> Outgoing {
    Outgoing {
        op: "messages".into(),
        body: json!({
            "recipient": {"id": to},
            "messaging_type": "RESPONSE",
            "message": message,
        }),
    }
}

/// The messages that show `reply` to `to` (the PSID).
pub fn render(to: &str, reply: &Reply<'_>) -> Vec<Outgoing> {
    let options = reply.options;
    let quick = !options.is_empty()
        && options.len() <= MAX_QUICK_REPLIES
        && options
            .iter()
            .all(|o| !o.trim().is_empty() && o.chars().count() <= PAYLOAD);
    let limit = super::ChannelKind::Messenger.text_limit();
    let (before, last) = plain_parts(reply, limit, limit, !quick);
    let mut out: Vec<Outgoing> = before
        .into_iter()
        .map(|t| message(to, json!({"text": t})))
        .collect();
    if quick {
        let replies: Vec<Value> = options
            .iter()
            .map(|o| json!({"content_type": "text", "title": shorten(o, QUICK_REPLY_TITLE), "payload": o}))
            .collect();
        let text = last.unwrap_or_else(|| "Please choose:".into());
        out.push(message(to, json!({"text": text, "quick_replies": replies})));
    } else if let Some(t) = last {
        out.push(message(to, json!({"text": t})));
    }
    out
}

/// The request that sends `out`.
pub fn request(config: &Config, out: &Outgoing) -> SendRequest {
    SendRequest {
        url: format!("{}/me/{}", config.api_base, out.op),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            (
                "authorization".into(),
                format!("Bearer {}", config.page_access_token.expose()),
            ),
        ],
        body: serde_json::to_vec(&out.body).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            page_id: "109876543210".into(),
            page_access_token: Secret::new("EAAPAGE"),
            app_secret: Secret::new("s"),
            verify_token: "v".into(),
            api_base: super::super::meta::DEFAULT_API_BASE.into(),
        }
    }

    #[test]
    fn reads_messages_quick_replies_postbacks_and_receipts() {
        let body = br#"{"object":"page","entry":[{"id":"109876543210","time":1458692752478,"messaging":[
            {"sender":{"id":"2498128583546742"},"recipient":{"id":"109876543210"},"timestamp":1458692752478,"message":{"mid":"m_1","text":"Jos\u00e9"}},
            {"sender":{"id":"2498128583546742"},"recipient":{"id":"109876543210"},"timestamp":1458692752479,"message":{"mid":"m_2","text":"Six months","quick_reply":{"payload":"Six months"}}},
            {"sender":{"id":"2498128583546742"},"recipient":{"id":"109876543210"},"timestamp":1458692752480,"postback":{"title":"Start","payload":"GET_STARTED","mid":"m_3"}},
            {"sender":{"id":"109876543210"},"recipient":{"id":"2498128583546742"},"timestamp":1,"message":{"mid":"m_echo","is_echo":true,"text":"x"}},
            {"sender":{"id":"2498128583546742"},"recipient":{"id":"109876543210"},"timestamp":2,"delivery":{"mids":["m_out1"],"watermark":1458668856253}},
            {"sender":{"id":"2498128583546742"},"recipient":{"id":"109876543210"},"timestamp":3,"read":{"watermark":1458668856253}}
        ]},{"id":"other-page","messaging":[{"sender":{"id":"9"},"message":{"mid":"m_x","text":"x"}}]}]}"#;
        let r = parse(&config(), body).unwrap();
        assert_eq!(r.messages.len(), 3);
        assert_eq!(r.messages[0].text.as_deref(), Some("José"));
        assert_eq!(r.messages[1].choice_id.as_deref(), Some("Six months"));
        assert_eq!(r.messages[2].choice_id.as_deref(), Some("GET_STARTED"));
        assert_eq!(r.messages[2].message_id, "m_3");
        assert_eq!(r.statuses.len(), 2);
        assert_eq!(r.statuses[0].target, StatusTarget::Message("m_out1".into()));
        assert_eq!(
            r.statuses[1].target,
            StatusTarget::Until {
                user: "2498128583546742".into(),
                until_ms: 1458668856253
            }
        );
    }

    #[test]
    fn renders_quick_replies() {
        let texts = vec!["Choose:\n1. One month\n2. Six months".to_owned()];
        let opts = vec![
            "One month".to_owned(),
            "A rather long option name".to_owned(),
        ];
        let out = render(
            "42",
            &Reply {
                texts: &texts,
                options: &opts,
            },
        );
        assert_eq!(out.len(), 1);
        let b = &out[0].body;
        assert_eq!(b["recipient"]["id"], "42");
        assert_eq!(b["messaging_type"], "RESPONSE");
        let q = b["message"]["quick_replies"].as_array().unwrap();
        assert_eq!(q[1]["payload"], "A rather long option name");
        assert_eq!(
            q[1]["title"].as_str().unwrap().chars().count(),
            QUICK_REPLY_TITLE
        );
        let many: Vec<String> = (1..=14).map(|i| format!("O{i}")).collect();
        let out = render(
            "42",
            &Reply {
                texts: &texts,
                options: &many,
            },
        );
        assert!(out[0].body["message"].get("quick_replies").is_none());
        assert!(
            out[0].body["message"]["text"]
                .as_str()
                .unwrap()
                .contains("14. O14")
        );
        let r = request(&config(), &out[0]);
        assert_eq!(r.url, "https://graph.facebook.com/v21.0/me/messages");
        assert!(!format!("{r:?}").contains("EAAPAGE"));
    }
}
