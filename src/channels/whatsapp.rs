//! WhatsApp Cloud API (Meta).
//!
//! * Webhooks: Meta's handshake and `X-Hub-Signature-256` ([`super::meta`]).
//!   A body is `{"object": "whatsapp_business_account", "entry": [{"changes":
//!   [{"field": "messages", "value": {…}}]}]}`; several entries, changes and
//!   messages may share one request, and each is read. Changes for another
//!   phone number than the channel's are skipped.
//! * Messages: `text`, `interactive` (`button_reply`, `list_reply`: the
//!   tapped option's id), `button` (a template's quick reply), media by id
//!   (`image`, `audio`, `video`, `document`, `sticker`) with their caption,
//!   `location`, `contacts`. Statuses (`sent`, `delivered`, `read`,
//!   `failed` with the error's title) arrive in payloads of their own.
//! * Sending: `POST {api_base}/{phone_number_id}/messages` with a bearer
//!   token. Options are shown as reply buttons (≤ 3, titles ≤ 20
//!   characters), a list (≤ 10 rows, titles ≤ 24, descriptions ≤ 72, the
//!   list's button ≤ 20) or numbered text; a text longer than 4,096
//!   characters (1,024 for an interactive message's body) is split.
//! * Templates: an approved template ([`Template`], [`render_template`]) is
//!   `"type": "template"` with its name, language code and the body's
//!   parameters as text, in order (`{{1}}`, `{{2}}`, …); it is the only kind
//!   of message WhatsApp accepts outside the 24-hour window.

use super::{
    DeliveryStatus, InboundMessage, Media, Outgoing, ParseError, Received, Reply, Secret,
    SendRequest, StatusTarget, StatusUpdate, plain_parts, shorten,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A WhatsApp channel's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// The sending number's id in the Cloud API.
    pub phone_number_id: String,
    /// Bearer token for sends.
    pub access_token: Secret,
    /// The Meta app's secret (webhook signatures).
    pub app_secret: Secret,
    /// The handshake token.
    pub verify_token: String,
    /// Graph API base, e.g. `https://graph.facebook.com/v21.0`.
    pub api_base: String,
}

/// Most reply buttons.
pub const MAX_BUTTONS: usize = 3;
/// Most list rows.
pub const MAX_ROWS: usize = 10;
/// Longest button title.
pub const BUTTON_TITLE: usize = 20;
/// Longest list row title.
pub const ROW_TITLE: usize = 24;
/// Longest list row description.
pub const ROW_DESCRIPTION: usize = 72;
/// Longest body of an interactive message.
pub const INTERACTIVE_BODY: usize = 1024;
/// Longest button id.
const BUTTON_ID: usize = 256;
/// Longest list row id.
const ROW_ID: usize = 200;
/// The list's button label.
const LIST_BUTTON: &str = "Options";

/// Reads a webhook body.
pub fn parse(config: &Config, body: &[u8]) -> Result<Received, ParseError> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| ParseError(format!("the body is not JSON: {e}")))?;
    let mut out = Received::default();
    for entry in doc["entry"].as_array().into_iter().flatten() {
        for change in entry["changes"].as_array().into_iter().flatten() {
            let value = &change["value"];
            if change["field"].as_str().is_some_and(|f| f != "messages") {
                continue;
            }
            let number = value["metadata"]["phone_number_id"].as_str();
            if number.is_some_and(|n| n != config.phone_number_id) {
                tracing::info!(
                    phone_number_id = number.unwrap_or(""),
                    "WhatsApp change for another phone number skipped"
                );
                continue;
            }
            let names: Vec<(&str, &str)> = value["contacts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| Some((c["wa_id"].as_str()?, c["profile"]["name"].as_str()?)))
                .collect();
            for m in value["messages"].as_array().into_iter().flatten() {
                if let Some(msg) = message(m, &names) {
                    out.messages.push(msg);
                }
            }
            for s in value["statuses"].as_array().into_iter().flatten() {
                if let Some(st) = status(s) {
                    out.statuses.push(st);
                }
            }
        }
    }
    Ok(out)
}

fn message(m: &Value, names: &[(&str, &str)]) -> Option<InboundMessage> {
    let from = m["from"].as_str()?.to_owned();
    let id = m["id"].as_str()?.to_owned();
    let kind = m["type"].as_str().unwrap_or("unknown");
    let mut msg = InboundMessage {
        message_id: id,
        phone: (!from.is_empty() && from.bytes().all(|b| b.is_ascii_digit()))
            .then(|| format!("+{from}")),
        name: names
            .iter()
            .find(|(wa, _)| *wa == from)
            .map(|(_, n)| (*n).to_owned()),
        user: from,
        text: None,
        choice_id: None,
        media: None,
        callback_id: None,
    };
    match kind {
        "text" => msg.text = m["text"]["body"].as_str().map(str::to_owned),
        "interactive" => {
            let i = &m["interactive"];
            let reply = if i["type"] == "list_reply" {
                &i["list_reply"]
            } else {
                &i["button_reply"]
            };
            msg.choice_id = reply["id"].as_str().map(str::to_owned);
            msg.text = reply["title"].as_str().map(str::to_owned);
        }
        "button" => {
            msg.choice_id = m["button"]["payload"].as_str().map(str::to_owned);
            msg.text = m["button"]["text"].as_str().map(str::to_owned);
        }
        "image" | "audio" | "video" | "document" | "sticker" | "voice" => {
            msg.media = Some(Media {
                kind: kind.to_owned(),
                id: m[kind]["id"].as_str().map(str::to_owned),
            });
            msg.text = m[kind]["caption"].as_str().map(str::to_owned);
        }
        other => {
            msg.media = Some(Media {
                kind: other.to_owned(),
                id: None,
            });
        }
    }
    Some(msg)
}

fn status(s: &Value) -> Option<StatusUpdate> {
    let status = match s["status"].as_str()? {
        "sent" => DeliveryStatus::Sent,
        "delivered" => DeliveryStatus::Delivered,
        "read" => DeliveryStatus::Read,
        "failed" => DeliveryStatus::Failed,
        _ => return None,
    };
    let error = s["errors"][0].as_object().map(|e| {
        let title = e
            .get("title")
            .or_else(|| e.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("failed");
        match e.get("code").and_then(Value::as_i64) {
            Some(c) => format!("{title} (code {c})"),
            None => title.to_owned(),
        }
    });
    Some(StatusUpdate {
        target: StatusTarget::Message(s["id"].as_str()?.to_owned()),
        status,
        error,
    })
}

fn text_body(to: &str, text: String) -> Outgoing {
    Outgoing {
        op: "messages".into(),
        body: json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "text",
            "text": {"preview_url": false, "body": text},
        }),
    }
}

fn interactive(to: &str, interactive: Value) -> Outgoing {
    Outgoing {
        op: "messages".into(),
        body: json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "interactive",
            "interactive": interactive,
        }),
    }
}

/// Whether `options` can be reply buttons: at most three, ids that fit,
/// and titles still distinct once shortened.
fn fits_buttons(options: &[String]) -> bool {
    let titles: std::collections::HashSet<String> =
        options.iter().map(|o| shorten(o, BUTTON_TITLE)).collect();
    options.len() <= MAX_BUTTONS
        && titles.len() == options.len()
        && options
            .iter()
            .all(|o| !o.trim().is_empty() && o.chars().count() <= BUTTON_ID && o.trim() == o)
}

/// Whether `options` can be list rows.
fn fits_list(options: &[String]) -> bool {
    options.len() <= MAX_ROWS
        && options
            .iter()
            .all(|o| !o.trim().is_empty() && o.chars().count() <= ROW_ID && o.trim() == o)
}

/// An approved template message to send: its name, its language code and
/// the values of its body's variables, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    /// The template's name as approved (`order_update`).
    pub name: String,
    /// The language code it was approved in (`en_US`, `es`).
    pub language: String,
    /// The body's `{{1}}`, `{{2}}`, … values.
    #[serde(default)]
    pub params: Vec<String>,
}

/// Why a template is refused before anything is sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Names are lowercase letters, digits and underscores.
    #[error("template.name must be 1 to 512 lowercase letters, digits or underscores, got {0:?}")]
    Name(String),
    /// Codes are like `en`, `en_US`, `pt_BR`.
    #[error("template.language must be a language code such as en or en_US, got {0:?}")]
    Language(String),
    /// A parameter is empty or too long.
    #[error("template.params[{0}] must be 1 to 1,024 characters")]
    Param(usize),
}

impl Template {
    /// Checks the name, language code and parameters.
    pub fn check(&self) -> Result<(), TemplateError> {
        let n = &self.name;
        if n.is_empty()
            || n.len() > 512
            || !n
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(TemplateError::Name(n.clone()));
        }
        let l = &self.language;
        let (lang, region) = l.split_once('_').unwrap_or((l, ""));
        let lang_ok = (2..=3).contains(&lang.len()) && lang.bytes().all(|b| b.is_ascii_lowercase());
        let region_ok = region.is_empty()
            || ((2..=4).contains(&region.len())
                && region.bytes().all(|b| b.is_ascii_alphanumeric()));
        if !(lang_ok && region_ok) {
            return Err(TemplateError::Language(l.clone()));
        }
        if let Some(i) = self
            .params
            .iter()
            .position(|p| p.trim().is_empty() || p.chars().count() > 1024)
        {
            return Err(TemplateError::Param(i));
        }
        Ok(())
    }
}

/// The message that sends an approved template to `to` (the `wa_id`): its
/// body's parameters as text, in order.
pub fn render_template(to: &str, t: &Template) -> Outgoing {
    let mut template = json!({"name": t.name, "language": {"code": t.language}});
    if !t.params.is_empty() {
        let parameters: Vec<Value> = t
            .params
            .iter()
            .map(|p| json!({"type": "text", "text": p}))
            .collect();
        template["components"] = json!([{"type": "body", "parameters": parameters}]);
    }
    Outgoing {
        op: "messages".into(),
        body: json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "template",
            "template": template,
        }),
    }
}

/// The messages that show `reply` to `to` (the `wa_id`).
pub fn render(to: &str, reply: &Reply<'_>) -> Vec<Outgoing> {
    let options = reply.options;
    let kind = if options.is_empty() {
        None
    } else if fits_buttons(options) {
        Some("button")
    } else if fits_list(options) {
        Some("list")
    } else {
        None
    };
    let limit = super::ChannelKind::Whatsapp.text_limit();
    let last_limit = if kind.is_some() {
        INTERACTIVE_BODY
    } else {
        limit
    };
    let (before, last) = plain_parts(reply, limit, last_limit, kind.is_none());
    let mut out: Vec<Outgoing> = before.into_iter().map(|t| text_body(to, t)).collect();
    match (kind, last) {
        (Some("button"), body) => {
            let buttons: Vec<Value> = options
                .iter()
                .map(|o| json!({"type": "reply", "reply": {"id": o, "title": shorten(o, BUTTON_TITLE)}}))
                .collect();
            out.push(interactive(
                to,
                json!({
                    "type": "button",
                    "body": {"text": body.unwrap_or_else(|| "Please choose:".into())},
                    "action": {"buttons": buttons},
                }),
            ));
        }
        (Some(_), body) => {
            let rows: Vec<Value> = options
                .iter()
                .map(|o| {
                    let title = shorten(o, ROW_TITLE);
                    if title == *o {
                        json!({"id": o, "title": title})
                    } else {
                        json!({"id": o, "title": title, "description": shorten(o, ROW_DESCRIPTION)})
                    }
                })
                .collect();
            out.push(interactive(
                to,
                json!({
                    "type": "list",
                    "body": {"text": body.unwrap_or_else(|| "Please choose:".into())},
                    "action": {"button": LIST_BUTTON, "sections": [{"rows": rows}]},
                }),
            ));
        }
        (None, Some(text)) => out.push(text_body(to, text)),
        (None, None) => {}
    }
    out
}

/// The request that sends `out`.
pub fn request(config: &Config, out: &Outgoing) -> SendRequest {
    SendRequest {
        url: format!("{}/{}/{}", config.api_base, config.phone_number_id, out.op),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            (
                "authorization".into(),
                format!("Bearer {}", config.access_token.expose()),
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
            phone_number_id: "106540352242922".into(),
            access_token: Secret::new("EAAG"),
            app_secret: Secret::new("app-secret"),
            verify_token: "verify-me".into(),
            api_base: "https://graph.facebook.com/v21.0".into(),
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn reads_the_documented_text_example_with_escaped_unicode() {
        let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},"contacts":[{"profile":{"name":"Jos\u00e9 P\u00e9rez"},"wa_id":"525500000000"}],"messages":[{"from":"525500000000","id":"wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=","timestamp":"1749416383","text":{"body":"Jos\u00e9"},"type":"text"}]},"field":"messages"}]}]}"#;
        let r = parse(&config(), body).unwrap();
        assert_eq!(r.messages.len(), 1);
        let m = &r.messages[0];
        assert_eq!(m.user, "525500000000");
        assert_eq!(m.phone.as_deref(), Some("+525500000000"));
        assert_eq!(m.name.as_deref(), Some("José Pérez"));
        assert_eq!(m.text.as_deref(), Some("José"));
        assert!(m.message_id.starts_with("wamid."));
    }

    #[test]
    fn reads_replies_media_statuses_and_batches() {
        let body = json!({"object":"whatsapp_business_account","entry":[
            {"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp",
                "metadata":{"phone_number_id":"106540352242922"},
                "contacts":[{"profile":{"name":"Ana"},"wa_id":"5215511112222"}],
                "messages":[
                    {"from":"5215511112222","id":"wamid.1","timestamp":"1","type":"interactive",
                     "interactive":{"type":"button_reply","button_reply":{"id":"Six months","title":"Six months"}}},
                    {"from":"5215511112222","id":"wamid.2","timestamp":"2","type":"interactive",
                     "interactive":{"type":"list_reply","list_reply":{"id":"One year","title":"One year","description":""}}},
                    {"from":"5215511112222","id":"wamid.3","timestamp":"3","type":"image",
                     "image":{"caption":"my receipt","mime_type":"image/jpeg","sha256":"x","id":"1479537139650973"}}
                ]}}]},
            {"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp",
                "metadata":{"phone_number_id":"106540352242922"},
                "statuses":[
                    {"id":"wamid.out1","status":"delivered","timestamp":"4","recipient_id":"5215511112222"},
                    {"id":"wamid.out2","status":"failed","timestamp":"5","recipient_id":"5215511112222",
                     "errors":[{"code":131047,"title":"Re-engagement message"}]}
                ]}}]},
            {"id":"1","changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"999"},
                "messages":[{"from":"1","id":"wamid.other","type":"text","text":{"body":"x"}}]}}]}
        ]});
        let r = parse(&config(), body.to_string().as_bytes()).unwrap();
        assert_eq!(r.messages.len(), 3, "the other number's message is skipped");
        assert_eq!(r.messages[0].choice_id.as_deref(), Some("Six months"));
        assert_eq!(r.messages[1].choice_id.as_deref(), Some("One year"));
        assert_eq!(r.messages[0].input_text(), Some("Six months"));
        let media = r.messages[2].media.as_ref().unwrap();
        assert_eq!(
            (media.kind.as_str(), media.id.as_deref()),
            ("image", Some("1479537139650973"))
        );
        assert_eq!(r.messages[2].text.as_deref(), Some("my receipt"));
        assert_eq!(r.statuses.len(), 2);
        assert_eq!(r.statuses[0].status, DeliveryStatus::Delivered);
        assert_eq!(
            r.statuses[1].error.as_deref(),
            Some("Re-engagement message (code 131047)")
        );
        assert!(parse(&config(), b"not json").is_err());
    }

    #[test]
    fn renders_template_messages_as_meta_documents_them() {
        let t = Template {
            name: "order_update".into(),
            language: "en_US".into(),
            params: vec!["Ana".into(), "A-12".into()],
        };
        t.check().unwrap();
        let out = render_template("525500000000", &t);
        assert_eq!(out.op, "messages");
        assert_eq!(
            out.body,
            json!({
                "messaging_product": "whatsapp", "recipient_type": "individual",
                "to": "525500000000", "type": "template",
                "template": {"name": "order_update", "language": {"code": "en_US"},
                    "components": [{"type": "body", "parameters": [
                        {"type": "text", "text": "Ana"}, {"type": "text", "text": "A-12"}]}]},
            })
        );
        let bare = render_template(
            "1",
            &Template {
                params: vec![],
                ..t.clone()
            },
        );
        assert!(bare.body["template"].get("components").is_none());
        for (bad, want) in [
            (
                Template {
                    name: "Order Update".into(),
                    ..t.clone()
                },
                "template.name",
            ),
            (
                Template {
                    language: "english".into(),
                    ..t.clone()
                },
                "template.language",
            ),
            (
                Template {
                    params: vec!["".into()],
                    ..t.clone()
                },
                "template.params[0]",
            ),
        ] {
            assert!(bad.check().unwrap_err().to_string().contains(want));
        }
    }

    #[test]
    fn renders_buttons_lists_and_numbered_text() {
        let texts = strings(&["Hi Ana!", "Choose:\n1. Yes\n2. No"]);
        let opts = strings(&["Yes", "No"]);
        let out = render(
            "5215511112222",
            &Reply {
                texts: &texts,
                options: &opts,
            },
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].body["type"], "text");
        assert_eq!(out[0].body["text"]["body"], "Hi Ana!");
        let i = &out[1].body["interactive"];
        assert_eq!(out[1].body["messaging_product"], "whatsapp");
        assert_eq!(out[1].body["to"], "5215511112222");
        assert_eq!(i["type"], "button");
        assert_eq!(i["body"]["text"], "Choose:\n1. Yes\n2. No");
        assert_eq!(i["action"]["buttons"][1]["reply"]["id"], "No");

        // Four options: a list; long labels keep their id, shortened titles.
        let opts = strings(&[
            "One month",
            "Six months",
            "One year",
            "Raffle with a very long name",
        ]);
        let texts = strings(&["Pick"]);
        let out = render(
            "1",
            &Reply {
                texts: &texts,
                options: &opts,
            },
        );
        assert_eq!(out.len(), 1);
        let i = &out[0].body["interactive"];
        assert_eq!(i["type"], "list");
        let rows = i["action"]["sections"][0]["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[3]["id"], "Raffle with a very long name");
        assert_eq!(
            rows[3]["title"].as_str().unwrap().chars().count(),
            ROW_TITLE
        );
        assert!(i["action"]["button"].as_str().unwrap().chars().count() <= BUTTON_TITLE);

        // Button titles past 20 characters are shortened, ids kept.
        let opts = strings(&["Streaming membership one", "Other"]);
        let out = render(
            "1",
            &Reply {
                texts: &texts,
                options: &opts,
            },
        );
        let b = &out[0].body["interactive"]["action"]["buttons"][0]["reply"];
        assert_eq!(b["id"], "Streaming membership one");
        assert_eq!(b["title"].as_str().unwrap().chars().count(), BUTTON_TITLE);

        // Eleven options: numbered text.
        let opts: Vec<String> = (1..=11).map(|i| format!("Option {i}")).collect();
        let out = render(
            "1",
            &Reply {
                texts: &texts,
                options: &opts,
            },
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].body["type"], "text");
        let body = out[0].body["text"]["body"].as_str().unwrap();
        assert!(
            body.starts_with("Pick\n1. Option 1\n") && body.ends_with("11. Option 11"),
            "{body}"
        );
    }

    #[test]
    fn long_texts_are_split_within_limits() {
        let long = "word ".repeat(1500); // 7,500 characters
        let texts = vec![long.clone()];
        let out = render(
            "1",
            &Reply {
                texts: &texts,
                options: &[],
            },
        );
        assert_eq!(out.len(), 2);
        for o in &out {
            assert!(o.body["text"]["body"].as_str().unwrap().chars().count() <= 4096);
        }
        // With buttons the last piece is an interactive body of ≤ 1,024.
        let opts = strings(&["Yes", "No"]);
        let out = render(
            "1",
            &Reply {
                texts: &texts,
                options: &opts,
            },
        );
        let last = out.last().unwrap();
        assert_eq!(last.body["type"], "interactive");
        assert!(
            last.body["interactive"]["body"]["text"]
                .as_str()
                .unwrap()
                .chars()
                .count()
                <= 1024
        );
        assert!(
            out[..out.len() - 1]
                .iter()
                .all(|o| o.body["type"] == "text")
        );
    }

    #[test]
    fn request_goes_to_the_number_with_a_bearer_token() {
        let out = render(
            "1",
            &Reply {
                texts: &strings(&["hi"]),
                options: &[],
            },
        );
        let r = request(&config(), &out[0]);
        assert_eq!(
            r.url,
            "https://graph.facebook.com/v21.0/106540352242922/messages"
        );
        assert!(
            r.headers
                .contains(&("authorization".into(), "Bearer EAAG".into()))
        );
        assert!(!format!("{r:?}").contains("EAAG"));
    }
}
