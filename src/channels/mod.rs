//! Channels: the messaging platforms a bot meets people on — WhatsApp
//! (Cloud API), Telegram, Twilio (SMS, and WhatsApp through Twilio) and
//! Messenger.
//!
//! This room knows each platform's formats and nothing else: it does no I/O.
//! One module per platform ([`whatsapp`], [`telegram`], [`twilio`],
//! [`messenger`]; the two Meta platforms share [`meta`]) and, for each:
//!
//! * **verify** — the platform's webhook security, checked on the raw bytes
//!   received before anything is parsed, compared in constant time;
//! * **parse** — the platform's webhook body into the normalised
//!   [`Received`]: messages ([`InboundMessage`]) and delivery statuses
//!   ([`StatusUpdate`]), so the runtime and the domain never see a
//!   platform's JSON;
//! * **render** — a pure function from the bot's reply (texts and quick
//!   replies) to the platform's request bodies ([`Outgoing`]), by what the
//!   platform can show and its limits (buttons, lists, keyboards, numbered
//!   text; long texts split on word boundaries);
//! * **request** — the HTTP request that sends one [`Outgoing`]
//!   ([`SendRequest`]), and **read** — what the platform's answer means
//!   ([`SendResult`]: sent with its message id, retry later, or failed with
//!   the platform's own error text).
//!
//! Invariants: nothing here panics on input from a platform or a user;
//! secrets never reach `Debug` output ([`Secret`]); a choice offered as a
//! button carries the option's label as its id, so tapping it is the same
//! as typing the label (titles may be shortened to fit, ids never are — an
//! option whose label does not fit the platform's id limit is offered as
//! numbered text instead).

pub mod messenger;
pub mod meta;
pub mod telegram;
pub mod twilio;
pub mod whatsapp;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// A messaging platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// WhatsApp Cloud API (Meta).
    Whatsapp,
    /// Telegram Bot API.
    Telegram,
    /// Twilio Programmable Messaging: SMS, and WhatsApp through Twilio.
    Twilio,
    /// Messenger (Meta).
    Messenger,
}

impl ChannelKind {
    /// Every kind.
    pub const ALL: [ChannelKind; 4] = [
        ChannelKind::Whatsapp,
        ChannelKind::Telegram,
        ChannelKind::Twilio,
        ChannelKind::Messenger,
    ];

    /// The lowercase name (also the contact-id prefix and events' `channel`).
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Whatsapp => "whatsapp",
            ChannelKind::Telegram => "telegram",
            ChannelKind::Twilio => "twilio",
            ChannelKind::Messenger => "messenger",
        }
    }

    /// Parses a lowercase name.
    pub fn parse(s: &str) -> Option<ChannelKind> {
        ChannelKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Most characters in one text message.
    pub fn text_limit(self) -> usize {
        match self {
            ChannelKind::Whatsapp | ChannelKind::Telegram => 4096,
            ChannelKind::Twilio => 1600,
            ChannelKind::Messenger => 2000,
        }
    }

    /// The platform's API base URL when none is given.
    pub fn default_api_base(self) -> &'static str {
        match self {
            ChannelKind::Whatsapp | ChannelKind::Messenger => meta::DEFAULT_API_BASE,
            ChannelKind::Telegram => telegram::DEFAULT_API_BASE,
            ChannelKind::Twilio => twilio::DEFAULT_API_BASE,
        }
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A credential: serialised as itself (it is stored), shown as `***` in
/// `Debug` output so it never reaches a log line.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The credential itself: call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// One platform account's settings, secrets included. Stored as JSON; never
/// returned by the API (see [`ChannelConfig::public`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ChannelConfig {
    /// WhatsApp Cloud API.
    Whatsapp(whatsapp::Config),
    /// Telegram Bot API.
    Telegram(telegram::Config),
    /// Twilio.
    Twilio(twilio::Config),
    /// Messenger.
    Messenger(messenger::Config),
}

/// The fields a channel may be created or changed with, as the API and the
/// CLI take them (all optional here; each kind says which it needs).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelFields {
    /// WhatsApp: the sending number's id in the Cloud API.
    pub phone_number_id: Option<String>,
    /// WhatsApp: a system-user or business access token.
    pub access_token: Option<Secret>,
    /// WhatsApp, Messenger: the Meta app's secret (signs webhooks).
    pub app_secret: Option<Secret>,
    /// WhatsApp, Messenger: the string Meta's handshake echoes.
    pub verify_token: Option<String>,
    /// Telegram: the bot's token from BotFather.
    pub bot_token: Option<Secret>,
    /// Telegram: the `secret_token` given to `setWebhook`.
    pub secret_token: Option<Secret>,
    /// Twilio: the account SID (`AC…`).
    pub account_sid: Option<String>,
    /// Twilio: the auth token (signs webhooks, authenticates sends).
    pub auth_token: Option<Secret>,
    /// Twilio: the sending number, `+E164` or `whatsapp:+E164`.
    pub from: Option<String>,
    /// Messenger: the Facebook page's id.
    pub page_id: Option<String>,
    /// Messenger: the page access token.
    pub page_access_token: Option<Secret>,
    /// The platform API's base URL; the platform's own when absent.
    pub api_base: Option<String>,
}

/// Why channel fields were refused; the text says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FieldError(pub String);

fn need<T: Clone>(field: &'static str, v: &Option<T>, kind: ChannelKind) -> Result<T, FieldError> {
    v.clone()
        .ok_or_else(|| FieldError(format!("a {kind} channel needs {field}")))
}

/// Checks a plain identifier-like field: 1–`max` printable characters.
pub(crate) fn check_plain(field: &str, v: &str, max: usize) -> Result<(), FieldError> {
    if v.trim().is_empty()
        || v.chars().count() > max
        || v.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(FieldError(format!(
            "{field} must be 1 to {max} characters without spaces or control characters"
        )));
    }
    Ok(())
}

fn check_secret(field: &str, v: &Secret) -> Result<(), FieldError> {
    check_plain(field, v.expose(), 1024)
}

/// Checks an `api_base`: an http(s) URL without user name, query or
/// fragment, kept without its trailing `/`.
pub fn check_api_base(url: &str) -> Result<String, FieldError> {
    let bad = || {
        FieldError(format!(
            "api_base must be an http(s) URL without user name, query or fragment, e.g. https://graph.facebook.com/v21.0; got {url:?}"
        ))
    };
    let parsed = url::Url::parse(url).map_err(|_| bad())?;
    if !matches!(parsed.scheme(), "http" | "https")
        || parsed.host_str().is_none()
        || !parsed.username().is_empty()
        || parsed.password().is_some()
        || parsed.query().is_some()
        || parsed.fragment().is_some()
        || url.len() > 2048
    {
        return Err(bad());
    }
    Ok(url.trim_end_matches('/').to_owned())
}

impl ChannelConfig {
    /// Builds a new channel's settings from the given fields, checking each
    /// one the kind needs and refusing those it does not take.
    pub fn create(kind: ChannelKind, f: &ChannelFields) -> Result<Self, FieldError> {
        let api_base = match &f.api_base {
            Some(b) => check_api_base(b)?,
            None => kind.default_api_base().to_owned(),
        };
        let config = match kind {
            ChannelKind::Whatsapp => ChannelConfig::Whatsapp(whatsapp::Config {
                phone_number_id: need("phone_number_id", &f.phone_number_id, kind)?,
                access_token: need("access_token", &f.access_token, kind)?,
                app_secret: need("app_secret", &f.app_secret, kind)?,
                verify_token: need("verify_token", &f.verify_token, kind)?,
                api_base,
            }),
            ChannelKind::Telegram => ChannelConfig::Telegram(telegram::Config {
                bot_token: need("bot_token", &f.bot_token, kind)?,
                secret_token: need("secret_token", &f.secret_token, kind)?,
                api_base,
            }),
            ChannelKind::Twilio => ChannelConfig::Twilio(twilio::Config {
                account_sid: need("account_sid", &f.account_sid, kind)?,
                auth_token: need("auth_token", &f.auth_token, kind)?,
                from: need("from", &f.from, kind)?,
                api_base,
            }),
            ChannelKind::Messenger => ChannelConfig::Messenger(messenger::Config {
                page_id: need("page_id", &f.page_id, kind)?,
                page_access_token: need("page_access_token", &f.page_access_token, kind)?,
                app_secret: need("app_secret", &f.app_secret, kind)?,
                verify_token: need("verify_token", &f.verify_token, kind)?,
                api_base,
            }),
        };
        config.refuse_foreign(f)?;
        config.check()?;
        Ok(config)
    }

    /// These settings with the given fields changed (absent ones kept).
    pub fn patched(&self, f: &ChannelFields) -> Result<Self, FieldError> {
        self.refuse_foreign(f)?;
        let mut next = self.clone();
        let set = |target: &mut String, v: &Option<String>| {
            if let Some(v) = v {
                *target = v.clone();
            }
        };
        let set_secret = |target: &mut Secret, v: &Option<Secret>| {
            if let Some(v) = v {
                *target = v.clone();
            }
        };
        match &mut next {
            ChannelConfig::Whatsapp(c) => {
                set(&mut c.phone_number_id, &f.phone_number_id);
                set_secret(&mut c.access_token, &f.access_token);
                set_secret(&mut c.app_secret, &f.app_secret);
                set(&mut c.verify_token, &f.verify_token);
            }
            ChannelConfig::Telegram(c) => {
                set_secret(&mut c.bot_token, &f.bot_token);
                set_secret(&mut c.secret_token, &f.secret_token);
            }
            ChannelConfig::Twilio(c) => {
                set(&mut c.account_sid, &f.account_sid);
                set_secret(&mut c.auth_token, &f.auth_token);
                set(&mut c.from, &f.from);
            }
            ChannelConfig::Messenger(c) => {
                set(&mut c.page_id, &f.page_id);
                set_secret(&mut c.page_access_token, &f.page_access_token);
                set_secret(&mut c.app_secret, &f.app_secret);
                set(&mut c.verify_token, &f.verify_token);
            }
        }
        if let Some(b) = &f.api_base {
            *next.api_base_mut() = check_api_base(b)?;
        }
        next.check()?;
        Ok(next)
    }

    /// Refuses fields another kind takes (a typo would otherwise be lost).
    fn refuse_foreign(&self, f: &ChannelFields) -> Result<(), FieldError> {
        let given: [(&str, bool); 11] = [
            ("phone_number_id", f.phone_number_id.is_some()),
            ("access_token", f.access_token.is_some()),
            ("app_secret", f.app_secret.is_some()),
            ("verify_token", f.verify_token.is_some()),
            ("bot_token", f.bot_token.is_some()),
            ("secret_token", f.secret_token.is_some()),
            ("account_sid", f.account_sid.is_some()),
            ("auth_token", f.auth_token.is_some()),
            ("from", f.from.is_some()),
            ("page_id", f.page_id.is_some()),
            ("page_access_token", f.page_access_token.is_some()),
        ];
        let takes: &[&str] = match self {
            ChannelConfig::Whatsapp(_) => &[
                "phone_number_id",
                "access_token",
                "app_secret",
                "verify_token",
            ],
            ChannelConfig::Telegram(_) => &["bot_token", "secret_token"],
            ChannelConfig::Twilio(_) => &["account_sid", "auth_token", "from"],
            ChannelConfig::Messenger(_) => {
                &["page_id", "page_access_token", "app_secret", "verify_token"]
            }
        };
        for (name, present) in given {
            if present && !takes.contains(&name) {
                return Err(FieldError(format!(
                    "a {} channel does not take {name}; it takes {}",
                    self.kind(),
                    takes.join(", ")
                )));
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<(), FieldError> {
        match self {
            ChannelConfig::Whatsapp(c) => {
                if c.phone_number_id.is_empty()
                    || c.phone_number_id.len() > 32
                    || !c.phone_number_id.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(FieldError(
                        "phone_number_id must be the digits of the number's id in the Cloud API (WhatsApp Manager → API setup)".into(),
                    ));
                }
                check_secret("access_token", &c.access_token)?;
                check_secret("app_secret", &c.app_secret)?;
                check_plain("verify_token", &c.verify_token, 256)
            }
            ChannelConfig::Telegram(c) => {
                check_secret("bot_token", &c.bot_token)?;
                telegram::check_secret_token(c.secret_token.expose())
            }
            ChannelConfig::Twilio(c) => {
                let sid = &c.account_sid;
                if sid.len() != 34
                    || !sid.starts_with("AC")
                    || !sid[2..].bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err(FieldError(
                        "account_sid must be AC followed by 32 hexadecimal digits".into(),
                    ));
                }
                check_secret("auth_token", &c.auth_token)?;
                twilio::check_from(&c.from)
            }
            ChannelConfig::Messenger(c) => {
                check_plain("page_id", &c.page_id, 64)?;
                if !c.page_id.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(FieldError("page_id must be the page's numeric id".into()));
                }
                check_secret("page_access_token", &c.page_access_token)?;
                check_secret("app_secret", &c.app_secret)?;
                check_plain("verify_token", &c.verify_token, 256)
            }
        }
    }

    /// Which platform.
    pub fn kind(&self) -> ChannelKind {
        match self {
            ChannelConfig::Whatsapp(_) => ChannelKind::Whatsapp,
            ChannelConfig::Telegram(_) => ChannelKind::Telegram,
            ChannelConfig::Twilio(_) => ChannelKind::Twilio,
            ChannelConfig::Messenger(_) => ChannelKind::Messenger,
        }
    }

    /// The platform API's base URL.
    pub fn api_base(&self) -> &str {
        match self {
            ChannelConfig::Whatsapp(c) => &c.api_base,
            ChannelConfig::Telegram(c) => &c.api_base,
            ChannelConfig::Twilio(c) => &c.api_base,
            ChannelConfig::Messenger(c) => &c.api_base,
        }
    }

    fn api_base_mut(&mut self) -> &mut String {
        match self {
            ChannelConfig::Whatsapp(c) => &mut c.api_base,
            ChannelConfig::Telegram(c) => &mut c.api_base,
            ChannelConfig::Twilio(c) => &mut c.api_base,
            ChannelConfig::Messenger(c) => &mut c.api_base,
        }
    }

    /// What may be shown: every field but the secrets, and the names of the
    /// secrets that are set.
    pub fn public(&self) -> (serde_json::Map<String, Value>, Vec<&'static str>) {
        let mut m = serde_json::Map::new();
        let secrets = match self {
            ChannelConfig::Whatsapp(c) => {
                m.insert("phone_number_id".into(), c.phone_number_id.clone().into());
                m.insert("verify_token".into(), c.verify_token.clone().into());
                vec!["access_token", "app_secret"]
            }
            ChannelConfig::Telegram(_) => vec!["bot_token", "secret_token"],
            ChannelConfig::Twilio(c) => {
                m.insert("account_sid".into(), c.account_sid.clone().into());
                m.insert("from".into(), c.from.clone().into());
                vec!["auth_token"]
            }
            ChannelConfig::Messenger(c) => {
                m.insert("page_id".into(), c.page_id.clone().into());
                m.insert("verify_token".into(), c.verify_token.clone().into());
                vec!["page_access_token", "app_secret"]
            }
        };
        m.insert("api_base".into(), self.api_base().to_owned().into());
        (m, secrets)
    }

    /// `text` with every secret of these settings replaced by `***`: for
    /// error messages that may quote a request (Telegram's token is part
    /// of its URLs).
    pub fn redact(&self, text: &str) -> String {
        let secrets: Vec<&Secret> = match self {
            ChannelConfig::Whatsapp(c) => vec![&c.access_token, &c.app_secret],
            ChannelConfig::Telegram(c) => vec![&c.bot_token, &c.secret_token],
            ChannelConfig::Twilio(c) => vec![&c.auth_token],
            ChannelConfig::Messenger(c) => vec![&c.page_access_token, &c.app_secret],
        };
        let mut out = text.to_owned();
        for s in secrets {
            if !s.expose().is_empty() {
                out = out.replace(s.expose(), "***");
            }
        }
        out
    }

    /// The token Meta's subscription handshake must echo (Meta kinds only).
    pub fn verify_token(&self) -> Option<&str> {
        match self {
            ChannelConfig::Whatsapp(c) => Some(&c.verify_token),
            ChannelConfig::Messenger(c) => Some(&c.verify_token),
            _ => None,
        }
    }

    /// Checks a webhook request with the platform's scheme, on the raw body.
    pub fn verify(&self, req: &WebhookRequest<'_>) -> Result<(), VerifyError> {
        match self {
            ChannelConfig::Whatsapp(c) => meta::verify_signature(c.app_secret.expose(), req),
            ChannelConfig::Messenger(c) => meta::verify_signature(c.app_secret.expose(), req),
            ChannelConfig::Telegram(c) => telegram::verify(c, req),
            ChannelConfig::Twilio(c) => twilio::verify(c, req),
        }
    }

    /// Reads a verified webhook body.
    pub fn parse(&self, req: &WebhookRequest<'_>) -> Result<Received, ParseError> {
        match self {
            ChannelConfig::Whatsapp(c) => whatsapp::parse(c, req.body),
            ChannelConfig::Messenger(c) => messenger::parse(c, req.body),
            ChannelConfig::Telegram(_) => telegram::parse(req.body),
            ChannelConfig::Twilio(c) => twilio::parse(c, req.body),
        }
    }

    /// The platform requests that show `reply` to `recipient`.
    pub fn render(&self, recipient: &str, reply: &Reply<'_>) -> Vec<Outgoing> {
        match self {
            ChannelConfig::Whatsapp(_) => whatsapp::render(recipient, reply),
            ChannelConfig::Telegram(_) => telegram::render(recipient, reply),
            ChannelConfig::Twilio(c) => twilio::render(c, recipient, reply),
            ChannelConfig::Messenger(_) => messenger::render(recipient, reply),
        }
    }

    /// What must be sent back at once for an inbound message, before the
    /// bot's reply (Telegram: answer a tapped button's callback query, which
    /// stops its spinner).
    pub fn acknowledge(&self, message: &InboundMessage) -> Option<Outgoing> {
        match self {
            ChannelConfig::Telegram(_) => message
                .callback_id
                .as_deref()
                .map(telegram::answer_callback),
            _ => None,
        }
    }

    /// The HTTP request that sends `out`. `status_callback` is where the
    /// platform should report delivery statuses when it is told per message
    /// (Twilio).
    pub fn request(&self, out: &Outgoing, status_callback: Option<&str>) -> SendRequest {
        match self {
            ChannelConfig::Whatsapp(c) => whatsapp::request(c, out),
            ChannelConfig::Telegram(c) => telegram::request(c, out),
            ChannelConfig::Twilio(c) => twilio::request(c, out, status_callback),
            ChannelConfig::Messenger(c) => messenger::request(c, out),
        }
    }

    /// What the platform's answer to a send means.
    pub fn read_result(&self, status: u16, body: &str) -> SendResult {
        match self.kind() {
            ChannelKind::Whatsapp | ChannelKind::Messenger => meta::read_result(status, body),
            ChannelKind::Telegram => telegram::read_result(status, body),
            ChannelKind::Twilio => twilio::read_result(status, body),
        }
    }
}

/// A webhook request as received: everything a platform's security scheme
/// may cover.
#[derive(Debug, Clone, Copy)]
pub struct WebhookRequest<'a> {
    /// The full URL the platform called, as it sees it (public URL, path
    /// and query).
    pub url: &'a str,
    /// Request headers, names in lower case.
    pub headers: &'a [(String, String)],
    /// The raw body.
    pub body: &'a [u8],
}

impl WebhookRequest<'_> {
    /// The first value of a header (name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a webhook request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The platform's signature header is absent (401).
    #[error("the request carries no {0} header")]
    Missing(&'static str),
    /// The signature or token does not match (403).
    #[error("the {0} does not match")]
    Mismatch(&'static str),
}

/// A verified body that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// Media in an inbound message: its kind and the platform's reference to
/// it (a media id on WhatsApp, a `file_id` on Telegram, a URL on Messenger
/// and Twilio). Nothing is downloaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    /// `image`, `audio`, `video`, `document`, `sticker`, `location`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The platform's reference, when it gives one.
    pub id: Option<String>,
}

/// One message a person sent, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundMessage {
    /// The platform's id of the message (or update): what deduplicates it.
    pub message_id: String,
    /// Who wrote, in the platform's terms (WhatsApp `wa_id`, Telegram chat
    /// id, Twilio `From`, Messenger PSID); replies go back to it.
    pub user: String,
    /// What they typed (or a caption, or a tapped button's title).
    pub text: Option<String>,
    /// The id of the option they tapped (a button, list row, keyboard key
    /// or quick reply): the option's label.
    pub choice_id: Option<String>,
    /// Media they sent.
    pub media: Option<Media>,
    /// Their phone number, E.164, where the platform gives one.
    pub phone: Option<String>,
    /// Their profile name, where the platform gives one.
    pub name: Option<String>,
    /// Telegram: the callback query to answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_id: Option<String>,
}

impl InboundMessage {
    /// What the conversation reads: the chosen option, else the text.
    pub fn input_text(&self) -> Option<&str> {
        self.choice_id
            .as_deref()
            .or(self.text.as_deref())
            .filter(|t| !t.trim().is_empty())
    }
}

/// Where a sent message got to, as the platform reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Accepted by the platform.
    Sent,
    /// On the person's device.
    Delivered,
    /// Seen.
    Read,
    /// Will not arrive.
    Failed,
}

impl DeliveryStatus {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Read => "read",
            DeliveryStatus::Failed => "failed",
        }
    }
}

/// Which sent messages a status concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatusTarget {
    /// One message, by the platform's id of it.
    Message(String),
    /// Every message to `user` sent at or before `until_ms` (Messenger's
    /// read watermark).
    Until {
        /// The person.
        user: String,
        /// Unix ms.
        until_ms: i64,
    },
}

/// A delivery status report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdate {
    /// Which message(s).
    pub target: StatusTarget,
    /// The new status.
    pub status: DeliveryStatus,
    /// The platform's error text, for a failure.
    pub error: Option<String>,
}

/// What one webhook request carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Received {
    /// Messages people sent, in order.
    pub messages: Vec<InboundMessage>,
    /// Delivery statuses of messages the bot sent.
    pub statuses: Vec<StatusUpdate>,
}

/// The bot's reply to show: texts in order, and the options offered with
/// the last one.
#[derive(Debug, Clone, Copy)]
pub struct Reply<'a> {
    /// Texts.
    pub texts: &'a [String],
    /// Quick replies (option labels).
    pub options: &'a [String],
}

/// One request body to send to a platform, stored in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    /// The platform operation: `messages` (Meta), `sendMessage` or
    /// `answerCallbackQuery` (Telegram), `Messages.json` (Twilio).
    pub op: String,
    /// The body: JSON, or for Twilio the form fields as a JSON object.
    pub body: Value,
}

/// An HTTP request to a platform.
#[derive(Clone, PartialEq)]
pub struct SendRequest {
    /// Full URL.
    pub url: String,
    /// Headers (credentials included: never log them as they are).
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl fmt::Debug for SendRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendRequest")
            .field("url", &redact_url(&self.url))
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish_non_exhaustive()
    }
}

/// A platform URL fit for logs: Telegram's `bot<token>` path segment and
/// any `access_token` query value hidden.
pub fn redact_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    for (i, seg) in url.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if seg.starts_with("bot") && seg.contains(':') {
            out.push_str("bot***");
        } else {
            out.push_str(seg);
        }
    }
    match out.find("access_token=") {
        Some(i) => {
            let end = out[i..].find('&').map_or(out.len(), |e| i + e);
            out.replace_range(i + "access_token=".len()..end, "***");
            out
        }
        None => out,
    }
}

/// What a platform's answer to a send means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendResult {
    /// Accepted; the platform's id of the message when it gave one.
    Sent(Option<String>),
    /// Refused for now (rate limit, outage): try again later, at the
    /// earliest after the hint (seconds) when the platform gave one.
    Retry {
        /// The platform's words.
        reason: String,
        /// Seconds to wait, from the body (Telegram's `retry_after`).
        after_secs: Option<u64>,
    },
    /// Refused for good, with the platform's error text.
    Failed(String),
}

/// Splits `text` into pieces of at most `max` characters, on whitespace
/// where it can (a word longer than `max` is cut). Pieces are trimmed;
/// an empty text gives no piece.
pub fn split_text(text: &str, max: usize) -> Vec<String> {
    let max = max.max(1);
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        if rest.chars().count() <= max {
            out.push(rest.to_owned());
            break;
        }
        // Byte index just past `max` characters.
        let limit = rest.char_indices().nth(max).map_or(rest.len(), |(i, _)| i);
        let window = &rest[..limit];
        let cut = window
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace())
            .map(|(i, _)| i)
            .filter(|i| *i > 0)
            .unwrap_or(limit);
        out.push(rest[..cut].trim_end().to_owned());
        rest = rest[cut..].trim_start();
    }
    out
}

/// At most `max` characters of `s`, ending in `…` when shortened.
pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `text`, with the options appended as numbered lines unless every one of
/// them is already in it (a menu's text lists its options itself).
pub fn numbered(text: &str, options: &[String]) -> String {
    if options.iter().all(|o| text.contains(o.as_str())) {
        return text.to_owned();
    }
    let mut out = text.to_owned();
    for (i, o) in options.iter().enumerate() {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!("{}. {o}", i + 1));
    }
    out
}

/// The reply's texts as plain messages of at most `limit` characters, the
/// last one (which carries the options) with its options listed when
/// `list_options` is set. Answers (messages before the last, the last).
pub(crate) fn plain_parts(
    reply: &Reply<'_>,
    limit: usize,
    last_limit: usize,
    list_options: bool,
) -> (Vec<String>, Option<String>) {
    let mut texts: Vec<String> = reply.texts.to_vec();
    if list_options && !reply.options.is_empty() {
        let last = texts.pop().unwrap_or_default();
        texts.push(numbered(&last, reply.options));
    }
    let mut pieces: Vec<String> = Vec::new();
    let n = texts.len();
    for (i, t) in texts.iter().enumerate() {
        let limit = if i + 1 == n { last_limit } else { limit };
        pieces.extend(split_text(t, limit));
    }
    let last = pieces.pop();
    (pieces, last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting_keeps_words_whole_and_pieces_in_bounds() {
        assert_eq!(split_text("", 10), Vec::<String>::new());
        assert_eq!(split_text("hello world", 20), vec!["hello world"]);
        assert_eq!(
            split_text("hello big wide world", 10),
            vec!["hello big", "wide world"]
        );
        assert_eq!(split_text("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        let long = "word ".repeat(2000);
        for p in split_text(&long, 1600) {
            assert!(p.chars().count() <= 1600);
            assert!(!p.starts_with(' ') && !p.ends_with(' '));
            assert!(p.split(' ').all(|w| w == "word"), "a word was cut");
        }
        // Characters, not bytes.
        let accents = "ñandú ".repeat(10);
        for p in split_text(&accents, 7) {
            assert!(p.chars().count() <= 7, "{p}");
        }
    }

    #[test]
    fn numbered_lists_only_what_the_text_lacks() {
        let opts = vec!["One month".to_owned(), "Six months".to_owned()];
        let menu = "Choose:\n1. One month\n2. Six months";
        assert_eq!(numbered(menu, &opts), menu);
        assert_eq!(
            numbered("Pick one", &opts),
            "Pick one\n1. One month\n2. Six months"
        );
        assert_eq!(shorten("Six months", 20), "Six months");
        assert_eq!(shorten("A very long option label", 10), "A very lo…");
    }

    #[test]
    fn fields_of_another_kind_are_refused_and_secrets_hidden() {
        let f = ChannelFields {
            bot_token: Some(Secret::new("123:abc")),
            secret_token: Some(Secret::new("s3cret_token")),
            page_id: Some("1".into()),
            ..Default::default()
        };
        let err = ChannelConfig::create(ChannelKind::Telegram, &f).unwrap_err();
        assert!(err.0.contains("page_id"), "{err}");
        let f = ChannelFields { page_id: None, ..f };
        let c = ChannelConfig::create(ChannelKind::Telegram, &f).unwrap();
        assert!(!format!("{c:?}").contains("s3cret_token"));
        assert!(!format!("{c:?}").contains("123:abc"));
        let (public, secrets) = c.public();
        assert!(!serde_json::to_string(&public).unwrap().contains("s3cret"));
        assert_eq!(secrets, vec!["bot_token", "secret_token"]);
        assert_eq!(c.api_base(), "https://api.telegram.org");
        assert_eq!(
            c.redact(
                "error sending request for url (https://api.telegram.org/bot123:abc/sendMessage)"
            ),
            "error sending request for url (https://api.telegram.org/bot***/sendMessage)"
        );
        let err = ChannelConfig::create(ChannelKind::Whatsapp, &ChannelFields::default());
        assert!(err.unwrap_err().0.contains("phone_number_id"));
    }

    #[test]
    fn api_base_must_be_a_plain_http_url() {
        assert_eq!(
            check_api_base("http://127.0.0.1:9000/graph/").unwrap(),
            "http://127.0.0.1:9000/graph"
        );
        for bad in [
            "ftp://x",
            "http://u:p@x",
            "https://x/?q=1",
            "not a url",
            "https://x/#f",
        ] {
            assert!(check_api_base(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_are_redacted_for_logs() {
        assert_eq!(
            redact_url("https://api.telegram.org/bot123:ABC/sendMessage"),
            "https://api.telegram.org/bot***/sendMessage"
        );
        assert_eq!(
            redact_url("https://g/v21.0/me/messages?access_token=EAAB&x=1"),
            "https://g/v21.0/me/messages?access_token=***&x=1"
        );
    }
}
