//! Outbound calls as configured: the one set of rules for the URLs and
//! custom headers of event endpoints and story webhooks, and which custom
//! header values are secrets.
//!
//! Both kinds of call are checked here when they are saved, so whatever is
//! stored can be sent:
//!
//! * **URLs**: `http://` or `https://`, at most [`MAX_URL_LEN`] bytes, a
//!   host, no user name or password, no IPv6 zone id, no `#fragment`, no
//!   space, tab, line break or other control character anywhere (a URL
//!   parser would drop some of them silently), and no `.` or `..` path
//!   segment in any spelling (`%2e`, `.%2E`, …), which a parser folds away.
//! * **URL templates** (story webhooks): the same, and merge tags only in
//!   the path and the query — never in the scheme, user info, host or port,
//!   so a chat visitor can never choose where a call goes. Once rendered,
//!   the URL is checked again ([`check_rendered_url`]): substituted values
//!   are percent-encoded, so they cannot add a `/`, `?` or `#`, but a value
//!   of `..` (or `.` beside a literal dot) would make a segment that walks
//!   up the path.
//! * **Custom headers**: at most [`MAX_HEADERS`], valid names, each name
//!   once (case-insensitively), none that is hop-by-hop or that botwire sets
//!   itself ([`is_reserved_header`]), values of at most [`MAX_HEADER_VALUE`]
//!   bytes without control characters. A story webhook's rendered values
//!   are cleaned again ([`clean_header_value`]), since a merge tag's value
//!   comes from the chat.
//! * **Secrets**: a custom header's value is a secret unless it is marked
//!   `sensitive: false` ([`CustomHeader`]). A secret is shown in full only
//!   in the answer that created it; everywhere else it is [`redact`]ed to
//!   `••••` and its last four characters. An update that sends a redacted
//!   value back keeps the stored one ([`restore_redacted`]); a redacted
//!   value that matches nothing stored is refused, never sent.
//!
//! Everything here is pure: the API, the runtime and the delivery engine
//! call it.

use super::merge;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;

/// Longest URL, in bytes.
pub const MAX_URL_LEN: usize = 2048;
/// Most custom headers on one endpoint or story webhook.
pub const MAX_HEADERS: usize = 32;
/// Longest custom header value (as written, merge tags included), in bytes.
pub const MAX_HEADER_VALUE: usize = 4096;
/// What a secret's value is shown as, followed by its last four characters.
pub const REDACTED: &str = "••••";
/// Values shorter than this show no characters at all when redacted.
const SHOW_TAIL_FROM: usize = 12;

/// Why a URL is refused. Each message follows the field's name
/// (`url must …`) and says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlProblem {
    /// Empty.
    #[error("is required: the http(s) URL to call")]
    Missing,
    /// Longer than [`MAX_URL_LEN`] bytes.
    #[error("is {0} bytes long; the limit is {MAX_URL_LEN}")]
    TooLong(usize),
    /// A space, tab, line break or other control character.
    #[error(
        "must not contain spaces, tabs, line breaks or other control characters; percent-encode them (%20 for a space)"
    )]
    Whitespace,
    /// Not a URL at all.
    #[error("is not a valid URL ({0}); write it like https://example.com/hooks")]
    Unparsable(String),
    /// Another scheme than `http` or `https`.
    #[error("must use http or https, not {0:?}")]
    Scheme(String),
    /// A user name or password before the host.
    #[error(
        "must not contain a user name or password; send credentials in a custom header instead"
    )]
    UserInfo,
    /// No host.
    #[error("has no host")]
    NoHost,
    /// An IPv6 zone id (`[fe80::1%eth0]`).
    #[error(
        "must not name an IPv6 zone (the %… in [fe80::1%25eth0]): zones only mean something on one machine"
    )]
    ZoneId,
    /// A `#fragment`.
    #[error("must not have a #fragment (it is never sent)")]
    Fragment,
    /// A `.` or `..` path segment, in any spelling.
    #[error(
        "must not have a . or .. path segment (in any spelling, %2e included): it would change which path is called"
    )]
    DotSegment,
    /// A merge tag in the scheme, user info, host or port.
    #[error(
        "may use merge tags only in its path and query, not in its scheme, host or port (found {0})"
    )]
    TagBeforePath(String),
}

/// Why a set of custom headers is refused; each message names the header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderProblem {
    /// More than [`MAX_HEADERS`].
    #[error("at most {MAX_HEADERS} custom headers, got {0}")]
    TooMany(usize),
    /// Not an HTTP token.
    #[error("{0:?} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)")]
    BadName(String),
    /// Hop-by-hop, or set by botwire.
    #[error(
        "{0:?} cannot be set: hop-by-hop headers (connection, expect, keep-alive, proxy-*, te, trailer, transfer-encoding, upgrade), host, user-agent, content headers (content-*) and the webhook-* signature headers are botwire's own"
    )]
    Reserved(String),
    /// The same name twice, ignoring case.
    #[error("{0:?} is given twice (names are case-insensitive)")]
    Duplicate(String),
    /// A line break, tab, NUL or other control character in the value.
    #[error(
        "the value of {0:?} must not contain line breaks, tabs, NUL or other control characters"
    )]
    ControlInValue(String),
    /// A value longer than [`MAX_HEADER_VALUE`] bytes.
    #[error("the value of {name:?} is {len} bytes long; the limit is {MAX_HEADER_VALUE}")]
    ValueTooLong {
        /// The header.
        name: String,
        /// Its value's length in bytes.
        len: usize,
    },
    /// A redacted value that is not the stored secret's redaction.
    #[error(
        "the value of {0:?} is a redacted one ({REDACTED}…), which matches no stored secret: give the real value (a secret is never shown again, so making one plain means typing it again)"
    )]
    Redacted(String),
}

impl HeaderProblem {
    /// The header the problem is about, if it is about one.
    pub fn header(&self) -> Option<&str> {
        match self {
            Self::TooMany(_) => None,
            Self::BadName(n)
            | Self::Reserved(n)
            | Self::Duplicate(n)
            | Self::ControlInValue(n)
            | Self::Redacted(n)
            | Self::ValueTooLong { name: n, .. } => Some(n),
        }
    }
}

/// Where the authority (user info, host, port) of `url` lies: from just
/// after `://` to the first `/`, `\`, `?` or `#` (URL parsers treat `\`
/// as `/` in http URLs).
fn authority(url: &str) -> Option<Range<usize>> {
    let start = url.find("://")? + 3;
    let len = url[start..]
        .find(['/', '\\', '?', '#'])
        .unwrap_or(url.len() - start);
    Some(start..start + len)
}

/// The path of `url` as written: after the authority, before `?` or `#`.
fn raw_path(url: &str) -> &str {
    let Some(auth) = authority(url) else {
        return "";
    };
    let rest = &url[auth.end..];
    &rest[..rest.find(['?', '#']).unwrap_or(rest.len())]
}

/// Whether a path has a segment a URL parser treats as `.` or `..`.
fn has_dot_segment(path: &str) -> bool {
    path.split(['/', '\\']).any(|seg| {
        matches!(
            seg.to_ascii_lowercase().as_str(),
            "." | ".." | "%2e" | ".%2e" | "%2e." | "%2e%2e"
        )
    })
}

fn starts_with_ignoring_case(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// The checks every URL passes, tags already replaced.
fn check_static(url: &str) -> Result<(), UrlProblem> {
    if url.is_empty() {
        return Err(UrlProblem::Missing);
    }
    if url.len() > MAX_URL_LEN {
        return Err(UrlProblem::TooLong(url.len()));
    }
    if let Some(auth) = authority(url) {
        let auth = &url[auth];
        if let Some(open) = auth.find('[') {
            let inside = &auth[open..auth[open..].find(']').map_or(auth.len(), |c| open + c)];
            if inside.contains('%') {
                return Err(UrlProblem::ZoneId);
            }
        }
    }
    let parsed = url::Url::parse(url).map_err(|e| UrlProblem::Unparsable(e.to_string()))?;
    // The parser drops tabs and line breaks and encodes spaces: refused
    // here, so what is stored is what is called.
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UrlProblem::Whitespace);
    }
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(UrlProblem::Scheme(parsed.scheme().to_owned()));
    }
    if !(starts_with_ignoring_case(url, "http://") || starts_with_ignoring_case(url, "https://")) {
        return Err(UrlProblem::Unparsable(
            "the scheme must be followed by ://".into(),
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(UrlProblem::UserInfo);
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(UrlProblem::NoHost);
    }
    if parsed.fragment().is_some() {
        return Err(UrlProblem::Fragment);
    }
    if has_dot_segment(raw_path(url)) {
        return Err(UrlProblem::DotSegment);
    }
    Ok(())
}

/// Checks an endpoint's URL (no merge tags); answers it without the
/// spaces around it.
pub fn check_url(url: &str) -> Result<String, UrlProblem> {
    let url = url.trim();
    check_static(url)?;
    Ok(url.to_owned())
}

/// `text` with each merge tag replaced by `with`.
fn replace_tags<'a>(text: &'a str, with: &str) -> Cow<'a, str> {
    let spans = merge::tag_spans(text);
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for s in spans {
        out.push_str(&text[last..s.start]);
        out.push_str(with);
        last = s.end;
    }
    out.push_str(&text[last..]);
    Cow::Owned(out)
}

/// Checks a story webhook's URL template: merge tags only in the path and
/// query, and the URL with each tag replaced by a sample value passes
/// every URL check.
pub fn check_url_template(template: &str) -> Result<(), UrlProblem> {
    let path_from = authority(template).map_or(template.len(), |a| a.end);
    if let Some(tag) = merge::tag_spans(template)
        .into_iter()
        .find(|t| t.start < path_from)
    {
        return Err(UrlProblem::TagBeforePath(template[tag].to_owned()));
    }
    check_static(&replace_tags(template, "x"))
}

/// Checks a story webhook's URL once its merge tags are rendered: above
/// all, that no value made a `.` or `..` path segment.
pub fn check_rendered_url(url: &str) -> Result<(), UrlProblem> {
    check_static(url)
}

/// Header names no endpoint or story webhook may set: hop-by-hop ones, the
/// ones botwire sets itself (`host`, `user-agent`, `content-*`) and the
/// Standard Webhooks signature headers (`webhook-*`).
pub fn is_reserved_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "http2-settings"
            | "expect"
            | "host"
            | "user-agent"
    ) || n.starts_with("content-")
        || n.starts_with("webhook-")
}

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// How header values are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Values {
    /// Sent as written (endpoints).
    Literal,
    /// Merge-tag templates (story webhooks): a tag may hold spaces or line
    /// breaks inside its braces; what it renders to is cleaned when sent.
    MergeTags,
}

/// Every problem with a set of custom headers, in name order.
pub fn header_problems(
    headers: &BTreeMap<String, CustomHeader>,
    values: Values,
) -> Vec<HeaderProblem> {
    let mut out = Vec::new();
    if headers.len() > MAX_HEADERS {
        out.push(HeaderProblem::TooMany(headers.len()));
    }
    let mut seen = BTreeSet::new();
    for (name, header) in headers {
        if !is_token(name) {
            out.push(HeaderProblem::BadName(name.clone()));
            continue;
        }
        if is_reserved_header(name) {
            out.push(HeaderProblem::Reserved(name.clone()));
            continue;
        }
        if !seen.insert(name.to_ascii_lowercase()) {
            out.push(HeaderProblem::Duplicate(name.clone()));
        }
        let value = &header.value;
        let text = match values {
            Values::Literal => Cow::Borrowed(value.as_str()),
            Values::MergeTags => replace_tags(value, ""),
        };
        if value.len() > MAX_HEADER_VALUE {
            out.push(HeaderProblem::ValueTooLong {
                name: name.clone(),
                len: value.len(),
            });
        } else if text.chars().any(char::is_control) {
            out.push(HeaderProblem::ControlInValue(name.clone()));
        }
    }
    out
}

/// Checks an endpoint's custom headers; answers them with lower-case names.
pub fn check_headers(
    headers: &BTreeMap<String, CustomHeader>,
) -> Result<BTreeMap<String, CustomHeader>, HeaderProblem> {
    if let Some(p) = header_problems(headers, Values::Literal).into_iter().next() {
        return Err(p);
    }
    Ok(headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect())
}

/// A rendered header value fit to send: each control character (a line
/// break, NUL, tab …) becomes a space, so no value can end a header or
/// start another.
pub fn clean_header_value(value: &str) -> Cow<'_, str> {
    if value.chars().any(char::is_control) {
        Cow::Owned(
            value
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(value)
    }
}

/// A secret as shown after it was saved: `••••` and its last four
/// characters, or `••••` alone for a value shorter than 12 characters (so
/// a short secret is never mostly shown).
pub fn redact(value: &str) -> String {
    let n = value.chars().count();
    if n < SHOW_TAIL_FROM {
        return REDACTED.to_owned();
    }
    let tail: String = value.chars().skip(n - 4).collect();
    format!("{REDACTED}{tail}")
}

/// A custom header's value and whether it is a secret.
///
/// Written as a plain string (a secret) or as `{"value": "…", "sensitive":
/// false}` (shown in clear everywhere); `{"value": "…"}` and `"sensitive":
/// true` are accepted too. It is serialised the same short way, so bot
/// files and settings documents read naturally.
#[derive(Clone, PartialEq, Eq)]
pub struct CustomHeader {
    /// The value (for story webhooks, with merge tags).
    pub value: String,
    /// Whether the value is a secret (the default).
    pub sensitive: bool,
}

impl CustomHeader {
    /// A secret value.
    pub fn secret(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            sensitive: true,
        }
    }

    /// A value shown in clear.
    pub fn plain(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            sensitive: false,
        }
    }

    /// The value as it may be shown after creation.
    pub fn shown(&self) -> Cow<'_, str> {
        if self.sensitive {
            Cow::Owned(redact(&self.value))
        } else {
            Cow::Borrowed(&self.value)
        }
    }

    /// This header with its value as it may be shown after creation.
    pub fn redacted(&self) -> Self {
        Self {
            value: self.shown().into_owned(),
            sensitive: self.sensitive,
        }
    }
}

impl fmt::Debug for CustomHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomHeader")
            .field("value", &self.shown())
            .field("sensitive", &self.sensitive)
            .finish()
    }
}

impl Serialize for CustomHeader {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.sensitive {
            s.serialize_str(&self.value)
        } else {
            let mut m = s.serialize_map(Some(2))?;
            m.serialize_entry("value", &self.value)?;
            m.serialize_entry("sensitive", &false)?;
            m.end()
        }
    }
}

impl<'de> Deserialize<'de> for CustomHeader {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct HeaderVisitor;
        impl<'de> Visitor<'de> for HeaderVisitor {
            type Value = CustomHeader;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    r#"a header value: a string (a secret), or {"value": "...", "sensitive": false}"#,
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CustomHeader, E> {
                Ok(CustomHeader::secret(v))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<CustomHeader, E> {
                Ok(CustomHeader::secret(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CustomHeader, A::Error> {
                let (mut value, mut sensitive) = (None, None);
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match key.as_ref() {
                        "value" if value.is_none() => value = Some(map.next_value::<String>()?),
                        "sensitive" if sensitive.is_none() => {
                            sensitive = Some(map.next_value::<bool>()?)
                        }
                        "value" | "sensitive" => {
                            return Err(de::Error::custom(format!("{key} is given twice")));
                        }
                        other => {
                            return Err(de::Error::unknown_field(other, &["value", "sensitive"]));
                        }
                    }
                }
                Ok(CustomHeader {
                    value: value.ok_or_else(|| de::Error::missing_field("value"))?,
                    sensitive: sensitive.unwrap_or(true),
                })
            }
        }
        d.deserialize_any(HeaderVisitor)
    }
}

/// Every header of `headers` as it may be shown after creation.
pub fn redact_all(headers: &BTreeMap<String, CustomHeader>) -> BTreeMap<String, CustomHeader> {
    headers
        .iter()
        .map(|(k, v)| (k.clone(), v.redacted()))
        .collect()
}

/// Every save of custom headers goes through here, with `old` the headers
/// stored until now (none for a create): each secret sent back exactly as
/// it is shown (same name ignoring case, stored and sent as a secret, value
/// equal to the stored one's redaction) gets its stored value back. Any
/// other value that starts with `••••` is refused, so a redaction is never
/// stored or sent in place of a secret.
pub fn restore_redacted(
    new: &mut BTreeMap<String, CustomHeader>,
    old: &BTreeMap<String, CustomHeader>,
) -> Result<(), HeaderProblem> {
    for (name, header) in new.iter_mut() {
        if !header.value.starts_with(REDACTED) {
            continue;
        }
        match old
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
        {
            Some(stored)
                if header.sensitive
                    && stored.sensitive
                    && redact(&stored.value) == header.value =>
            {
                header.value = stored.value.clone();
            }
            _ => return Err(HeaderProblem::Redacted(name.clone())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, CustomHeader> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), CustomHeader::secret(*v)))
            .collect()
    }

    #[test]
    fn urls() {
        assert_eq!(
            check_url("  https://example.com/h?a=1 ").unwrap(),
            "https://example.com/h?a=1"
        );
        assert!(check_url("http://[::1]:8080/x").is_ok());
        assert!(check_url("HTTPS://Example.com/a.b/..c/x..").is_ok());
        for (bad, want) in [
            ("", UrlProblem::Missing),
            ("ftp://x.com", UrlProblem::Scheme("ftp".into())),
            ("https://u:p@x.com", UrlProblem::UserInfo),
            ("https://u@x.com/", UrlProblem::UserInfo),
            ("https://x.com/#a", UrlProblem::Fragment),
            ("http://[fe80::1%25eth0]/x", UrlProblem::ZoneId),
            ("http://[fe80::1%eth0]:80/", UrlProblem::ZoneId),
            ("http://exa\tmple.com/", UrlProblem::Whitespace),
            ("http://example.com/a\nb", UrlProblem::Whitespace),
            ("http://example.com/a b", UrlProblem::Whitespace),
            ("http://example.com/\0", UrlProblem::Whitespace),
            ("http://x.com/a/../b", UrlProblem::DotSegment),
            ("http://x.com/a/./b", UrlProblem::DotSegment),
            ("http://x.com/a/%2e%2E/b", UrlProblem::DotSegment),
            ("http://x.com/a/.%2e", UrlProblem::DotSegment),
            ("http://x.com/a\\..\\b", UrlProblem::DotSegment),
            ("http:x.com/a", UrlProblem::Unparsable("".into())),
        ] {
            let got = check_url(bad).unwrap_err();
            match (&got, &want) {
                (UrlProblem::Unparsable(_), UrlProblem::Unparsable(_)) => {}
                _ => assert_eq!(got, want, "{bad:?}"),
            }
        }
        assert!(matches!(
            check_url("not a url"),
            Err(UrlProblem::Unparsable(_))
        ));
        let long = format!("https://x.com/{}", "a".repeat(2100));
        assert!(check_url(&long).unwrap_err().to_string().contains("2048"));
    }

    #[test]
    fn templates_keep_tags_in_the_path_and_query() {
        for ok in [
            "http://api.test/users/{{memory.x}}/profile",
            "https://api.test/s?q={{ memory.q }}&z=1",
            "http://127.0.0.1:9001/{{contact.id}}",
            "http://api.test/{{memory.a}}.json",
        ] {
            assert_eq!(check_url_template(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://{{memory.host}}:9001/x",
            "http://api.test:{{memory.port}}/x",
            "http://{{memory.user}}@api.test/x",
            "http://api{{memory.x}}.test/x",
            "{{memory.scheme}}://api.test/x",
            "{{memory.url}}",
            "http://{{memory.host}}",
            "http://{{memory.host}}\\x",
        ] {
            assert!(
                matches!(check_url_template(bad), Err(UrlProblem::TagBeforePath(_))),
                "{bad}: {:?}",
                check_url_template(bad)
            );
        }
        assert_eq!(
            check_url_template("http://u:p@api.test/{{memory.x}}"),
            Err(UrlProblem::UserInfo)
        );
        assert_eq!(
            check_url_template("http://api.test/{{memory.x}}\t"),
            Err(UrlProblem::Whitespace)
        );
        assert_eq!(
            check_url_template("http://api.test/{{ memory.x }}"),
            Ok(()),
            "spaces inside a tag are the tag's"
        );
        assert_eq!(
            check_url_template("http://api.test/{{memory x}}"),
            Err(UrlProblem::Whitespace),
            "a malformed tag is literal text"
        );
        assert!(matches!(
            check_url_template("ftp://a/{{memory.x}}"),
            Err(UrlProblem::Scheme(_))
        ));
    }

    #[test]
    fn rendered_urls_refuse_dot_segments_a_value_made() {
        let ctx = |v: &str| serde_json::json!({"memory": {"x": v}});
        let t = "http://api.test/users/{{memory.x}}/profile";
        for v in [".", ".."] {
            let url = merge::render_url(t, &ctx(v));
            assert_eq!(
                check_rendered_url(&url),
                Err(UrlProblem::DotSegment),
                "{url}"
            );
        }
        // A literal dot beside a value's dot.
        let url = merge::render_url("http://api.test/a/{{memory.x}}./b", &ctx("."));
        assert_eq!(check_rendered_url(&url), Err(UrlProblem::DotSegment));
        // %2e forms arrive encoded (%252e), so they are no segment at all.
        for v in ["%2e%2e", "%2E.", "..%2f..", "../..", "...", "a..b"] {
            let url = merge::render_url(t, &ctx(v));
            assert_eq!(check_rendered_url(&url), Ok(()), "{v}: {url}");
            assert!(
                url::Url::parse(&url).unwrap().path().starts_with("/users/"),
                "{v}: {url}"
            );
        }
    }

    #[test]
    fn header_rules() {
        let ok = headers(&[("X-Team", "red"), ("Authorization", "Bearer abc")]);
        let checked = check_headers(&ok).unwrap();
        assert_eq!(checked["x-team"].value, "red");
        assert!(checked["authorization"].sensitive);
        for name in [
            "Connection",
            "expect",
            "Proxy-Connection",
            "proxy-authorization",
            "Transfer-Encoding",
            "TE",
            "upgrade",
            "host",
            "User-Agent",
            "content-type",
            "Content-Length",
            "content-encoding",
            "content-md5",
            "Content-Range",
            "webhook-signature",
            "Webhook-Id",
        ] {
            assert_eq!(
                check_headers(&headers(&[(name, "v")])),
                Err(HeaderProblem::Reserved(name.into())),
                "{name}"
            );
        }
        for name in ["bad name", "", "x:y", "é"] {
            assert_eq!(
                check_headers(&headers(&[(name, "v")])),
                Err(HeaderProblem::BadName(name.into()))
            );
        }
        for value in ["a\r\nx-evil: 1", "a\nb", "a\0b", "a\tb", "\u{7f}", "\u{85}"] {
            assert_eq!(
                check_headers(&headers(&[("x-a", value)])),
                Err(HeaderProblem::ControlInValue("x-a".into())),
                "{value:?}"
            );
        }
        assert!(matches!(
            check_headers(&headers(&[("x-a", &"v".repeat(4097))])),
            Err(HeaderProblem::ValueTooLong { len: 4097, .. })
        ));
        assert_eq!(
            check_headers(&headers(&[("X-A", "1"), ("x-a", "2")])),
            Err(HeaderProblem::Duplicate("x-a".into()))
        );
        let many: BTreeMap<String, CustomHeader> = (0..33)
            .map(|i| (format!("x-{i}"), CustomHeader::plain("v")))
            .collect();
        assert_eq!(check_headers(&many), Err(HeaderProblem::TooMany(33)));
        // Templates: a tag may hold a line break inside its braces; the
        // text around it may not.
        let t = headers(&[("x-who", "{{\n memory.name }}")]);
        assert!(header_problems(&t, Values::MergeTags).is_empty());
        assert_eq!(
            header_problems(&t, Values::Literal),
            [HeaderProblem::ControlInValue("x-who".into())]
        );
        let t = headers(&[("x-who", "{{memory.name}}\r\nx: y")]);
        assert_eq!(header_problems(&t, Values::MergeTags).len(), 1);
        assert_eq!(
            clean_header_value("a\r\nb\0c\td"),
            "a  b c d",
            "rendered values lose their control characters"
        );
        assert_eq!(clean_header_value("plain é"), "plain é");
    }

    #[test]
    fn secrets_are_redacted_and_restored_only_exactly() {
        assert_eq!(redact("Bearer abcdef123456"), "••••3456");
        assert_eq!(redact("short"), "••••", "short secrets show nothing");
        assert_eq!(redact("ééééééééééé€€€€"), "••••€€€€");
        let stored: BTreeMap<String, CustomHeader> = [
            (
                "x-signature".to_string(),
                CustomHeader::secret("s3cr3t-value-9876"),
            ),
            ("x-team".to_string(), CustomHeader::plain("red")),
        ]
        .into();
        let shown = redact_all(&stored);
        assert_eq!(shown["x-signature"].value, "••••9876");
        assert_eq!(shown["x-team"].value, "red");
        assert!(!format!("{stored:?}").contains("s3cr3t"), "Debug redacts");

        // Sent back as shown: the stored value is kept.
        let mut back = shown.clone();
        restore_redacted(&mut back, &stored).unwrap();
        assert_eq!(back, stored);
        // Under another case of the name, too.
        let mut back: BTreeMap<String, CustomHeader> =
            [("X-Signature".to_string(), CustomHeader::secret("••••9876"))].into();
        restore_redacted(&mut back, &stored).unwrap();
        assert_eq!(back["X-Signature"].value, "s3cr3t-value-9876");
        // Anything else that looks redacted is refused: another tail, a
        // new header, a secret turned plain without its value, a create.
        for (name, h, old) in [
            ("x-signature", CustomHeader::secret("••••0000"), &stored),
            ("x-other", CustomHeader::secret("••••9876"), &stored),
            ("x-signature", CustomHeader::plain("••••9876"), &stored),
            (
                "x-signature",
                CustomHeader::secret("••••9876"),
                &BTreeMap::new(),
            ),
        ] {
            let mut back: BTreeMap<String, CustomHeader> = [(name.to_string(), h)].into();
            assert_eq!(
                restore_redacted(&mut back, old),
                Err(HeaderProblem::Redacted(name.into()))
            );
        }
    }

    #[test]
    fn header_values_read_as_strings_or_objects() {
        let h: BTreeMap<String, CustomHeader> = serde_json::from_value(serde_json::json!({
            "a": "one", "b": {"value": "two", "sensitive": false}, "c": {"value": "three"},
            "d": {"value": "four", "sensitive": true}
        }))
        .unwrap();
        assert_eq!(h["a"], CustomHeader::secret("one"));
        assert_eq!(h["b"], CustomHeader::plain("two"));
        assert_eq!(h["c"], CustomHeader::secret("three"));
        assert_eq!(h["d"], CustomHeader::secret("four"));
        assert_eq!(
            serde_json::to_value(&h).unwrap(),
            serde_json::json!({"a": "one", "b": {"value": "two", "sensitive": false}, "c": "three", "d": "four"})
        );
        for bad in [
            serde_json::json!(1),
            serde_json::json!({"sensitive": false}),
            serde_json::json!({"value": "x", "secret": true}),
            serde_json::json!({"value": "x", "sensitive": "no"}),
        ] {
            let e = serde_json::from_value::<CustomHeader>(bad.clone()).unwrap_err();
            assert!(!e.to_string().is_empty(), "{bad}");
        }
        let yaml: BTreeMap<String, CustomHeader> =
            serde_yaml_ng::from_str("a: one\nb: { value: two, sensitive: false }\n").unwrap();
        assert_eq!(yaml["b"], CustomHeader::plain("two"));
    }

    proptest! {
        #[test]
        fn no_value_walks_a_rendered_path(v in "\\PC{0,12}") {
            let ctx = serde_json::json!({"memory": {"x": v}});
            let url = merge::render_url("http://api.test/users/{{memory.x}}/profile", &ctx);
            if check_rendered_url(&url).is_ok() {
                let parsed = url::Url::parse(&url).unwrap();
                prop_assert!(parsed.path().starts_with("/users/"), "{}", url);
                prop_assert!(parsed.path().ends_with("/profile"), "{}", url);
                prop_assert_eq!(parsed.host_str(), Some("api.test"));
            }
        }

        #[test]
        fn a_cleaned_value_has_no_control_character(v in "\\PC*|[\\x00-\\x1f\\x7f]*") {
            prop_assert!(!clean_header_value(&v).chars().any(char::is_control));
        }
    }
}
