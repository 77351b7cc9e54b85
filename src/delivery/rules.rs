//! What an endpoint may be configured with, checked before it is stored;
//! every refusal says what to fix.
//!
//! * URLs: `http` or `https`, no user name or password, at most
//!   [`MAX_URL_LEN`] bytes, a host. (Whether the host is reachable through
//!   the SSRF guard is decided at send time, against the operator's
//!   allowlist, and logged as a `blocked` attempt.)
//! * Custom headers: valid names and values, at most [`MAX_HEADERS`]; not
//!   hop-by-hop, not the signature headers, not ones the engine sets.
//! * Event filters: catalog types or valid custom names, no duplicates.

use super::ssrf::MAX_URL_LEN;
use crate::domain::event::{self, EventType};
use std::collections::BTreeMap;

/// Most custom headers per endpoint.
pub const MAX_HEADERS: usize = 32;
/// Most event types in one filter.
pub const MAX_EVENT_TYPES: usize = 100;

/// Checks a webhook URL; answers it trimmed.
pub fn check_url(field: &str, url: &str) -> Result<String, String> {
    let url = url.trim();
    if url.is_empty() {
        return Err(format!(
            "{field} is required: the http(s) URL to POST events to"
        ));
    }
    if url.len() > MAX_URL_LEN {
        return Err(format!(
            "{field} is {} bytes long; the limit is {MAX_URL_LEN}",
            url.len()
        ));
    }
    let parsed = url::Url::parse(url).map_err(|e| {
        format!("{field} is not a valid URL ({e}); write it like https://example.com/hooks")
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "{field} must use http or https, not {:?}",
            parsed.scheme()
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "{field} must not contain a user name or password; send credentials in a custom header instead"
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{field} has no host"));
    }
    if parsed.fragment().is_some() {
        return Err(format!("{field} must not have a #fragment"));
    }
    Ok(url.to_owned())
}

/// Header names an endpoint may not set: hop-by-hop ones, the ones the
/// engine sets itself, and the Standard Webhooks ones.
fn reserved_header(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
            | "content-type"
            | "user-agent"
            | "expect"
    ) || name.starts_with("webhook-")
}

/// Checks custom headers; answers them with lower-case names.
pub fn check_headers(
    headers: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    if headers.len() > MAX_HEADERS {
        return Err(format!(
            "headers: at most {MAX_HEADERS} custom headers, got {}",
            headers.len()
        ));
    }
    let mut out = BTreeMap::new();
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if reqwest::header::HeaderName::from_bytes(lower.as_bytes()).is_err() || lower.is_empty() {
            return Err(format!(
                "headers: {name:?} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)"
            ));
        }
        if reserved_header(&lower) {
            return Err(format!(
                "headers: {name:?} cannot be set: hop-by-hop headers, content headers, user-agent and the webhook-* signature headers are botwire's own"
            ));
        }
        if value.len() > 4096 || reqwest::header::HeaderValue::from_str(value).is_err() {
            return Err(format!(
                "headers: the value of {name:?} must be at most 4096 visible characters without line breaks"
            ));
        }
        if out.insert(lower, value.clone()).is_some() {
            return Err(format!(
                "headers: {name:?} is given twice (names are case-insensitive)"
            ));
        }
    }
    Ok(out)
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
    fn urls() {
        assert!(check_url("url", "https://example.com/h").is_ok());
        for (bad, hint) in [
            ("", "required"),
            ("ftp://x.com", "http or https"),
            ("https://u:p@x.com", "user name"),
            ("not a url", "not a valid URL"),
            ("https://x.com/#a", "fragment"),
        ] {
            let e = check_url("url", bad).unwrap_err();
            assert!(e.contains(hint), "{bad}: {e}");
        }
        let long = format!("https://x.com/{}", "a".repeat(2100));
        assert!(check_url("url", &long).unwrap_err().contains("2048"));
    }

    #[test]
    fn headers_and_events() {
        let mut h = BTreeMap::new();
        h.insert("X-Team".to_owned(), "red".to_owned());
        assert_eq!(check_headers(&h).unwrap()["x-team"], "red");
        for bad in [
            "Connection",
            "webhook-signature",
            "Transfer-Encoding",
            "bad name",
        ] {
            let mut h = BTreeMap::new();
            h.insert(bad.to_owned(), "v".to_owned());
            assert!(check_headers(&h).is_err(), "{bad}");
        }
        assert!(check_event_types(&["message.received".into(), "order.paid".into()]).is_ok());
        assert!(
            check_event_types(&["message.bounced".into()])
                .unwrap_err()
                .contains("catalog")
        );
        assert!(check_event_types(&[]).is_err());
        assert!(check_rate_limit(0).is_err());
    }
}
