//! Endpoint policies: which events an endpoint takes, the payload shape it
//! receives, and when failures disable it.
//!
//! * **Event filter.** An endpoint lists the event types it takes, or none
//!   for every type. Events go to their own bot's endpoints; the one
//!   account-wide event, `endpoint.disabled`, also goes to the account's
//!   other endpoints that name it explicitly (an endpoint taking every
//!   type of another bot does not hear about it).
//! * **Disable policy.** A streak of failures starts at the first failure
//!   after a success; when it has lasted `after_ms` with no success between,
//!   the endpoint is disabled. A `410 Gone` disables at once.
//!
//! Pure: times are passed in.

use serde::{Deserialize, Serialize};

/// The event type that goes to every endpoint of the account naming it.
pub const ENDPOINT_DISABLED: &str = "endpoint.disabled";

/// Which JSON shape an endpoint receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// `{"type", "timestamp", "data"}` (the default).
    #[default]
    Standard,
    /// Bot9's `{"event": "<camelCase>", "data": {"message", "sender", "chatbotId", …}}`.
    Bot9,
    /// Seed 003's flat object (`campaignId`, `label`, `phoneNumber`, `date`, …).
    Flat,
    /// The endpoint's own JSON template with merge tags over the event.
    Template,
}

impl PayloadFormat {
    /// The name used in configuration and the API (`standard`, `bot9`, `flat`).
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadFormat::Standard => "standard",
            PayloadFormat::Bot9 => "bot9",
            PayloadFormat::Flat => "flat",
            PayloadFormat::Template => "template",
        }
    }
}

/// Whether an endpoint with this filter (`None`: every type) takes events
/// of `event_type`.
pub fn wants(event_types: Option<&[String]>, event_type: &str) -> bool {
    event_types.is_none_or(|types| types.iter().any(|t| t == event_type))
}

/// Whether events of `event_type` fan out across the account, not only to
/// their own bot's endpoints.
pub fn account_wide(event_type: &str) -> bool {
    event_type == ENDPOINT_DISABLED
}

/// Whether an endpoint of `endpoint_bot` with this filter receives an event
/// of `event_type` about `event_bot`: its own bot's events by its filter,
/// another bot's only when it names the type explicitly.
pub fn receives(
    event_types: Option<&[String]>,
    endpoint_bot: &str,
    event_bot: &str,
    event_type: &str,
) -> bool {
    if endpoint_bot == event_bot {
        wants(event_types, event_type)
    } else {
        event_types.is_some_and(|t| t.iter().any(|x| x == event_type))
    }
}

/// Why an endpoint answering 410 Gone was disabled.
pub const GONE_REASON: &str = "the endpoint answered 410 Gone";

/// When failing endpoints are disabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DisablePolicy {
    /// How long a streak of failures with no success may last, ms.
    pub after_ms: i64,
}

impl DisablePolicy {
    /// The reason to disable an endpoint failing since `first_failure_at`,
    /// as of `now`; `None` while it may keep trying.
    pub fn verdict(&self, first_failure_at: Option<i64>, now: i64) -> Option<String> {
        let first = first_failure_at?;
        (now - first >= self.after_ms).then(|| {
            format!(
                "no successful delivery for {} since the first failure",
                human_span(now - first)
            )
        })
    }
}

/// How an endpoint fared over a batch of attempts, in the order they were
/// recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Streak {
    /// When the last successful attempt started.
    pub last_success: Option<i64>,
    /// When the batch's failures began (the batch's time), if the last
    /// attempts failed.
    pub failing_since: Option<i64>,
    /// Whether any attempt was answered 410 Gone.
    pub gone: bool,
}

impl Streak {
    /// Takes one attempt: a success started at `started_at` ends any
    /// streak; a failure starts one at `now` unless one is running.
    pub fn observe(&mut self, succeeded: bool, started_at: i64, now: i64, gone: bool) {
        if succeeded {
            self.last_success = Some(started_at);
            self.failing_since = None;
        } else if self.failing_since.is_none() {
            self.failing_since = Some(now);
        }
        self.gone |= gone;
    }
}

/// `5d 2h`, `3h 10m`, `4m 2s`, `42s`: a span for messages.
pub fn human_span(ms: i64) -> String {
    let s = ms / 1000;
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {}s", s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_filter_takes_what_it_names_and_none_takes_all() {
        let only = types(&["message.received"]);
        assert!(wants(None, "anything"));
        assert!(wants(Some(&only), "message.received"));
        assert!(!wants(Some(&only), "conversation.ended"));
        assert!(!wants(Some(&[]), "message.received"));
    }

    #[test]
    fn another_bot_hears_only_what_it_names() {
        let named = types(&[ENDPOINT_DISABLED]);
        assert!(receives(None, "bot_a", "bot_a", ENDPOINT_DISABLED));
        assert!(!receives(None, "bot_b", "bot_a", ENDPOINT_DISABLED));
        assert!(receives(Some(&named), "bot_b", "bot_a", ENDPOINT_DISABLED));
        assert!(account_wide(ENDPOINT_DISABLED));
        assert!(!account_wide("message.received"));
    }

    #[test]
    fn the_policy_disables_after_the_span_and_not_before() {
        let p = DisablePolicy { after_ms: 60_000 };
        assert_eq!(p.verdict(None, 1_000_000), None);
        assert_eq!(p.verdict(Some(1_000), 60_999), None);
        assert_eq!(
            p.verdict(Some(1_000), 61_000).as_deref(),
            Some("no successful delivery for 1m 0s since the first failure")
        );
    }

    #[test]
    fn a_success_ends_the_streak_and_a_failure_keeps_its_start() {
        let mut s = Streak::default();
        s.observe(false, 10, 100, false);
        s.observe(false, 20, 200, false);
        assert_eq!(s.failing_since, Some(100));
        s.observe(true, 30, 300, false);
        assert_eq!((s.last_success, s.failing_since), (Some(30), None));
        s.observe(false, 40, 400, true);
        assert_eq!(s.failing_since, Some(400));
        assert!(s.gone);
    }

    #[test]
    fn spans_read_naturally() {
        assert_eq!(human_span(42_000), "42s");
        assert_eq!(human_span(242_000), "4m 2s");
        assert_eq!(human_span(3 * 3_600_000 + 600_000), "3h 10m");
        assert_eq!(human_span(5 * 86_400_000 + 7_200_000), "5d 2h");
    }

    #[test]
    fn formats_have_their_names() {
        for f in [
            PayloadFormat::Standard,
            PayloadFormat::Bot9,
            PayloadFormat::Flat,
            PayloadFormat::Template,
        ] {
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(json, format!("\"{}\"", f.as_str()));
        }
    }
}
