//! W3C trace context (`traceparent`) for outbound calls.
//!
//! Each API request belongs to a trace: the one its valid `traceparent`
//! header names, or a new one. The request runs inside [`scope`], so code
//! that makes an outbound call on its behalf — a story-webhook call, or an
//! event written for later delivery — finds the trace id with
//! [`current`] without it being passed through every signature. Events
//! store the trace id, so every attempt of their deliveries (retries
//! included, in any process) continues the same trace. Each outbound call
//! gets its own new span id: `traceparent: 00-<trace id>-<span id>-01`.

/// A trace id: 32 lower-case hex characters, not all zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceId(String);

impl TraceId {
    /// A fresh random trace id.
    pub fn new() -> Self {
        Self(random_hex::<16>())
    }

    /// Accepts a stored or received trace id (32 lower-case hex, not all
    /// zero).
    pub fn parse(s: &str) -> Option<Self> {
        is_hex_id(s, 32).then(|| Self(s.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A `traceparent` value for one outbound call in this trace: a new span
    /// id, sampled.
    pub fn child_traceparent(&self) -> String {
        format!("00-{}-{}-01", self.0, random_hex::<8>())
    }
}

impl Default for TraceId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The trace id of a `traceparent` header value, if the value is valid per
/// W3C Trace Context: `version-traceid-parentid-flags`, lower-case hex,
/// version not `ff`, trace and parent ids not all zero; version `00` has
/// exactly four fields, a later version at least four.
pub fn parse_traceparent(value: &str) -> Option<TraceId> {
    let fields: Vec<&str> = value.trim().split('-').collect();
    if fields.len() < 4 {
        return None;
    }
    let (version, trace, parent, flags) = (fields[0], fields[1], fields[2], fields[3]);
    let lower_hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if !lower_hex(version, 2) || version == "ff" || !lower_hex(flags, 2) {
        return None;
    }
    if version == "00" && fields.len() != 4 {
        return None;
    }
    if !is_hex_id(parent, 16) {
        return None;
    }
    TraceId::parse(trace)
}

fn is_hex_id(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && s.bytes().any(|b| b != b'0')
}

fn random_hex<const N: usize>() -> String {
    let bytes = loop {
        let bytes: [u8; N] = rand::random();
        if bytes.iter().any(|b| *b != 0) {
            break bytes;
        }
    };
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Adds `traceparent` for a new span of `id` to an outbound request's
/// headers, unless they already carry one (a header the user configured
/// on the endpoint or story webhook wins).
pub fn add_traceparent(headers: &mut Vec<(String, String)>, id: &TraceId) {
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case(TRACEPARENT))
    {
        headers.push((TRACEPARENT.to_owned(), id.child_traceparent()));
    }
}

/// The W3C header name.
pub const TRACEPARENT: &str = "traceparent";

tokio::task_local! {
    static CURRENT: TraceId;
}

/// Runs `f` as part of trace `id` (see [`current`]).
pub async fn scope<F: std::future::Future>(id: TraceId, f: F) -> F::Output {
    CURRENT.scope(id, f).await
}

/// The trace the running task belongs to, if it runs inside [`scope`].
pub fn current() -> Option<TraceId> {
    CURRENT.try_with(Clone::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_traceparents_give_their_trace_id() {
        let t =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(t.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        // A later version may carry more fields.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x")
                .is_some()
        );
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        for bad in [
            "",
            "garbage",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn children_keep_the_trace_and_get_new_spans() {
        let t = TraceId::new();
        let a = t.child_traceparent();
        let b = t.child_traceparent();
        assert_ne!(a, b);
        assert_eq!(parse_traceparent(&a), Some(t.clone()));
        assert!(
            a.starts_with("00-") && a.ends_with("-01") && a.len() == 55,
            "{a}"
        );
    }
}
