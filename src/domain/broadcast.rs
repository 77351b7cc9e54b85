//! Broadcasts: one message to every contact of a segment, as rules without
//! I/O. What a broadcast is in ([`BroadcastState`]) and which moves between
//! states are allowed ([`BroadcastState::apply`]); what each recipient gets
//! ([`decide`]): the message personalised with merge tags over `user` and
//! `contact`, or a skip with its [`SkipReason`].
//!
//! The store materialises the recipients when a broadcast starts and marks
//! each one in the same transaction that writes its outbox message; these
//! functions only say what to write.

use super::merge;
use super::people::ContactFacts;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Where a broadcast is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BroadcastState {
    /// Waiting for its `schedule_at`; recipients not chosen yet.
    Scheduled,
    /// Recipients chosen; being sent.
    Running,
    /// Stopped by a person; resumes where it stopped.
    Paused,
    /// Every recipient was sent, skipped or failed.
    Completed,
    /// Stopped for good; pending recipients are never sent.
    Cancelled,
}

/// A person's action on a broadcast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BroadcastAction {
    /// Stop for good.
    Cancel,
    /// Stop for now.
    Pause,
    /// Go on after a pause.
    Resume,
}

impl BroadcastState {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Reads the stored text.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "scheduled" => Self::Scheduled,
            "running" => Self::Running,
            "paused" => Self::Paused,
            "completed" => Self::Completed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    /// The state an action leads to from this one, or why it cannot.
    /// Resuming a broadcast paused before it started makes it scheduled
    /// again (it starts at its time); one paused while running runs again.
    pub fn apply(self, action: BroadcastAction, started: bool) -> Result<Self, String> {
        use BroadcastAction::*;
        use BroadcastState::*;
        match (self, action) {
            (Scheduled | Running | Paused, Cancel) => Ok(Cancelled),
            (Scheduled | Running, Pause) => Ok(Paused),
            (Paused, Resume) => Ok(if started { Running } else { Scheduled }),
            (s, a) => Err(format!(
                "a {} broadcast cannot be {}",
                s.as_str(),
                match a {
                    Cancel => "cancelled",
                    Pause => "paused",
                    Resume => "resumed (only a paused one can)",
                }
            )),
        }
    }
}

/// A WhatsApp template, as approved on the platform.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateMessage {
    /// The template's name.
    pub name: String,
    /// Its language code.
    pub language: String,
    /// The body's parameters in order; merge tags allowed.
    #[serde(default)]
    pub params: Vec<String>,
}

/// What a broadcast sends, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastMessage {
    /// The text, with merge tags (`{{user.first_name}}`).
    pub text: String,
    /// On WhatsApp, a template to send instead of the text outside the
    /// 24-hour window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateMessage>,
    /// A campaign of the bot's flow to start for each recipient instead of
    /// a text (then `text` is empty and there is no template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
}

/// Why a recipient was not sent the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// The contact asked not to be messaged.
    OptedOut,
    /// The contact has no messaging channel to reach it on.
    NoChannel,
    /// WhatsApp: the contact has not written in 24 hours and the broadcast
    /// has no template (a campaign's messages are free-form, so always).
    OutsideWindow,
    /// A campaign broadcast: a person answers the contact's conversation.
    InHandoff,
    /// A campaign broadcast: the bot's flow no longer has the campaign.
    NoCampaign,
}

impl SkipReason {
    /// The stored and shown text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OptedOut => "opted_out",
            Self::NoChannel => "no_channel",
            Self::OutsideWindow => "outside_window",
            Self::InHandoff => "in_handoff",
            Self::NoCampaign => "no_campaign",
        }
    }
}

/// Where a recipient can be reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// Whether the channel is WhatsApp (the only one with a window).
    pub whatsapp: bool,
    /// When the contact last wrote on it (Unix ms), if ever.
    pub last_inbound_at: Option<i64>,
}

/// What one recipient gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send this text.
    Text(String),
    /// Send this template (parameters personalised).
    Template(TemplateMessage),
    /// Send nothing, for this reason.
    Skip(SkipReason),
}

/// WhatsApp's customer-service window.
pub const WHATSAPP_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// The merge-tag context of a recipient: `user` (its attributes) and
/// `contact` (id, phone, external id, channel).
pub fn context(c: &ContactFacts) -> Value {
    json!({
        "user": Value::Object(c.attributes.clone()),
        "contact": {
            "id": c.id,
            "phone": c.phone,
            "external_id": c.external_id,
            "channel": c.channel,
        },
    })
}

/// The fields of `contact` a merge tag may name.
pub const CONTACT_FIELDS: [&str; 4] = ["id", "phone", "external_id", "channel"];

/// Checks the merge tags of a broadcast's text: each must name
/// `user.ATTRIBUTE` or one of [`CONTACT_FIELDS`] of `contact`. The error
/// names the first tag that does not, and says what would.
pub fn check_tags(text: &str) -> Result<(), String> {
    for tag in merge::tags(text) {
        let mut parts = tag.split('.');
        let root = parts.next().unwrap_or("");
        let field = parts.next();
        let known = match (root, field) {
            ("user", Some(_)) => true,
            ("contact", Some(f)) => CONTACT_FIELDS.contains(&f) && parts.next().is_none(),
            _ => false,
        };
        if !known {
            return Err(format!(
                "unknown merge tag {{{{{tag}}}}}: use user.ATTRIBUTE (user.first_name) or contact.{}",
                CONTACT_FIELDS.join(", contact.")
            ));
        }
    }
    Ok(())
}

/// Whether a campaign may start for recipient `c`, reachable at `address`
/// (if anywhere), whose conversation is in handoff or not, at `now`: a
/// campaign says free-form messages, so on WhatsApp only inside the
/// 24-hour window.
pub fn decide_campaign(
    c: &ContactFacts,
    address: Option<&Address>,
    in_handoff: bool,
    now: i64,
) -> Result<(), SkipReason> {
    if c.opted_out {
        return Err(SkipReason::OptedOut);
    }
    let Some(a) = address else {
        return Err(SkipReason::NoChannel);
    };
    let in_window = a
        .last_inbound_at
        .is_some_and(|at| now - at <= WHATSAPP_WINDOW_MS);
    if a.whatsapp && !in_window {
        return Err(SkipReason::OutsideWindow);
    }
    if in_handoff {
        return Err(SkipReason::InHandoff);
    }
    Ok(())
}

/// A broadcast's message as one recipient receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Personalised {
    /// The text, merge tags rendered.
    pub text: String,
    /// The template's parameters, rendered (empty without a template).
    pub params: Vec<String>,
}

/// Renders `m`'s text and template parameters for recipient `c`: what
/// [`decide`] sends, and what a preview shows.
pub fn personalise(m: &BroadcastMessage, c: &ContactFacts) -> Personalised {
    let ctx = context(c);
    Personalised {
        text: merge::render_text(&m.text, &ctx),
        params: m
            .template
            .iter()
            .flat_map(|t| t.params.iter().map(|p| merge::render_text(p, &ctx)))
            .collect(),
    }
}

/// Decides what recipient `c`, reachable at `address` (if anywhere), gets
/// at `now` (Unix ms). Inside WhatsApp's window the text goes; outside it
/// the template, or nothing.
pub fn decide(
    m: &BroadcastMessage,
    c: &ContactFacts,
    address: Option<&Address>,
    now: i64,
) -> Decision {
    if c.opted_out {
        return Decision::Skip(SkipReason::OptedOut);
    }
    let Some(a) = address else {
        return Decision::Skip(SkipReason::NoChannel);
    };
    let in_window = a
        .last_inbound_at
        .is_some_and(|at| now - at <= WHATSAPP_WINDOW_MS);
    let p = personalise(m, c);
    if a.whatsapp && !in_window {
        return match &m.template {
            Some(t) => Decision::Template(TemplateMessage {
                name: t.name.clone(),
                language: t.language.clone(),
                params: p.params,
            }),
            None => Decision::Skip(SkipReason::OutsideWindow),
        };
    }
    Decision::Text(p.text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn facts(opted_out: bool) -> ContactFacts {
        let mut attributes = Map::new();
        attributes.insert("first_name".into(), json!("Ada"));
        ContactFacts {
            id: "ct_1".into(),
            phone: Some("+15550001".into()),
            external_id: None,
            channel: "whatsapp".into(),
            first_seen: 0,
            last_seen: None,
            opted_out,
            attributes,
        }
    }

    fn message(template: bool) -> BroadcastMessage {
        BroadcastMessage {
            text: "Hi {{user.first_name}} ({{contact.phone}})".into(),
            template: template.then(|| TemplateMessage {
                name: "promo".into(),
                language: "en_US".into(),
                params: vec!["{{user.first_name}}".into()],
            }),
            campaign: None,
        }
    }

    const NOW: i64 = 10 * WHATSAPP_WINDOW_MS;

    #[test]
    fn personalises_text_inside_the_window() {
        let a = Address {
            whatsapp: true,
            last_inbound_at: Some(NOW - 1000),
        };
        assert_eq!(
            decide(&message(true), &facts(false), Some(&a), NOW),
            Decision::Text("Hi Ada (+15550001)".into())
        );
    }

    #[test]
    fn outside_the_window_sends_the_template_or_skips() {
        let a = Address {
            whatsapp: true,
            last_inbound_at: Some(NOW - WHATSAPP_WINDOW_MS - 1),
        };
        match decide(&message(true), &facts(false), Some(&a), NOW) {
            Decision::Template(t) => assert_eq!(t.params, vec!["Ada".to_string()]),
            other => panic!("expected a template, got {other:?}"),
        }
        assert_eq!(
            decide(&message(false), &facts(false), Some(&a), NOW),
            Decision::Skip(SkipReason::OutsideWindow)
        );
        let other_channel = Address {
            whatsapp: false,
            last_inbound_at: None,
        };
        assert!(matches!(
            decide(&message(false), &facts(false), Some(&other_channel), NOW),
            Decision::Text(_)
        ));
    }

    #[test]
    fn opted_out_and_unreachable_are_skipped() {
        let a = Address {
            whatsapp: false,
            last_inbound_at: None,
        };
        assert_eq!(
            decide(&message(true), &facts(true), Some(&a), NOW),
            Decision::Skip(SkipReason::OptedOut)
        );
        assert_eq!(
            decide(&message(true), &facts(false), None, NOW),
            Decision::Skip(SkipReason::NoChannel)
        );
    }

    #[test]
    fn merge_tags_must_name_a_user_attribute_or_a_contact_field() {
        assert_eq!(
            check_tags("Hi {{user.first_name}} {{ contact.phone }}"),
            Ok(())
        );
        for bad in [
            "{{memory.x}}",
            "{{contact.email}}",
            "{{user}}",
            "{{contact.id.x}}",
        ] {
            let e = check_tags(&format!("Hi {bad}")).unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn campaigns_need_the_window_and_a_bot_that_answers() {
        let inside = Address {
            whatsapp: true,
            last_inbound_at: Some(NOW - 1000),
        };
        let outside = Address {
            whatsapp: true,
            last_inbound_at: None,
        };
        assert_eq!(
            decide_campaign(&facts(false), Some(&inside), false, NOW),
            Ok(())
        );
        assert_eq!(
            decide_campaign(&facts(false), Some(&outside), false, NOW),
            Err(SkipReason::OutsideWindow)
        );
        assert_eq!(
            decide_campaign(&facts(false), Some(&inside), true, NOW),
            Err(SkipReason::InHandoff)
        );
        assert_eq!(
            decide_campaign(&facts(true), Some(&inside), false, NOW),
            Err(SkipReason::OptedOut)
        );
        assert_eq!(
            decide_campaign(&facts(false), None, false, NOW),
            Err(SkipReason::NoChannel)
        );
    }

    #[test]
    fn state_moves() {
        use BroadcastAction::*;
        use BroadcastState::*;
        assert_eq!(Running.apply(Pause, true), Ok(Paused));
        assert_eq!(Paused.apply(Resume, true), Ok(Running));
        assert_eq!(Paused.apply(Resume, false), Ok(Scheduled));
        assert_eq!(Scheduled.apply(Cancel, false), Ok(Cancelled));
        assert!(Completed.apply(Cancel, true).is_err());
        assert!(Running.apply(Resume, true).is_err());
        assert!(Cancelled.apply(Pause, true).is_err());
    }
}
