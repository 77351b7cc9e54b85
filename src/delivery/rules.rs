//! What an endpoint may be configured with, checked before it is stored;
//! every refusal says what to fix.
//!
//! * URLs and custom headers: the rules story webhooks follow too, in
//!   [`crate::domain::outbound`] (http(s), no user name or password, no zone
//!   id, no whitespace, no dot segments, at most 2048 bytes; at most 32
//!   headers, none hop-by-hop or set by botwire, values without control
//!   characters). Whether the host is reachable through the SSRF guard is
//!   decided at send time, against the operator's allowlist, and logged as
//!   a `blocked` attempt.
//! * Event filters: catalog types or valid custom names, no duplicates.

use crate::domain::event::{self, EventType};
use crate::domain::outbound::{self, CustomHeader};
use std::collections::BTreeMap;

/// Most event types in one filter.
pub const MAX_EVENT_TYPES: usize = 100;

/// Checks a webhook URL given as `field`; answers it trimmed.
pub fn check_url(field: &str, url: &str) -> Result<String, String> {
    outbound::check_url(url).map_err(|p| format!("{field} {p}"))
}

/// Checks custom headers, their stored values already put back in place of
/// redacted ones; answers them with lower-case names.
pub fn check_headers(
    headers: &BTreeMap<String, CustomHeader>,
) -> Result<BTreeMap<String, CustomHeader>, String> {
    outbound::check_headers(headers).map_err(|p| format!("headers: {p}"))
}

/// Checks an event filter: catalog types or valid custom names.
pub fn check_event_types(types: &[String]) -> Result<Vec<String>, String> {
    if types.is_empty() {
        return Err(
            "events: give at least one type, or null (or leave it out) for every type".into(),
        );
    }
    if types.len() > MAX_EVENT_TYPES {
        return Err(format!("events: at most {MAX_EVENT_TYPES} types"));
    }
    let mut out: Vec<String> = Vec::with_capacity(types.len());
    for t in types {
        if EventType::parse(t).is_none()
            && let Err(m) = event::check_custom_name(t)
        {
            let hint = if event::is_reserved(t) {
                "it is not in the catalog (see GET /v1/event-types)".to_owned()
            } else {
                m
            };
            return Err(format!("events: {t:?}: {hint}"));
        }
        if out.contains(t) {
            return Err(format!("events: {t:?} is listed twice"));
        }
        out.push(t.clone());
    }
    Ok(out)
}

/// Checks a rate limit (requests per second).
pub fn check_rate_limit(limit: i64) -> Result<i64, String> {
    if (1..=100_000).contains(&limit) {
        Ok(limit)
    } else {
        Err(format!(
            "rate_limit must be a whole number of requests per second from 1 to 100000, got {limit}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_headers_say_which_field() {
        assert!(check_url("url", "https://example.com/h").is_ok());
        let e = check_url("target_url", "https://u:p@x.com").unwrap_err();
        assert!(
            e.starts_with("target_url must not contain a user name"),
            "{e}"
        );
        let mut h = BTreeMap::new();
        h.insert("Expect".to_owned(), CustomHeader::secret("100-continue"));
        let e = check_headers(&h).unwrap_err();
        assert!(e.starts_with("headers: \"Expect\" cannot be set"), "{e}");
    }

    #[test]
    fn events_and_limits() {
        assert!(check_event_types(&["message.received".into(), "order.paid".into()]).is_ok());
        assert!(
            check_event_types(&["message.sent".into()])
                .unwrap_err()
                .contains("catalog")
        );
        assert!(check_event_types(&[]).is_err());
        assert!(check_rate_limit(0).is_err());
    }
}
