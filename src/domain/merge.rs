//! Merge tags: `{{ memory.name }}`, `{{user.age}}`, `{{quote.total}}` …
//!
//! A tag is `{{`, optional whitespace, a path of one or more segments joined by
//! `.` (each segment `[A-Za-z0-9_-]+`, so `{{memory.favourite-thing}}` works),
//! optional whitespace, `}}`. The first segment is a root of the context object
//! (`memory`, `user`, `contact`, `quote`, `appointment`, as supplied by the caller);
//! later segments walk into objects by key and into arrays by index.
//!
//! Invariants, all relied upon by callers and checked by property tests:
//! - rendering never fails and never panics, whatever the template or context;
//! - a missing key (or a `null`) renders as the empty string;
//! - strings render raw, numbers and booleans as JSON text, objects and arrays
//!   as compact JSON;
//! - anything that is not a well-formed tag is copied literally, so text
//!   without `{{` comes back unchanged;
//! - [`render_json`] substitutes only inside string values of an already
//!   parsed document: it never changes keys, array lengths or value types, so
//!   a chat message can never inject JSON structure.

use serde_json::Value;

/// One tag found in a template: byte range in the template and its path.
struct Tag<'a> {
    start: usize,
    end: usize,
    path: &'a str,
}

fn is_seg_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Tries to read a tag that starts exactly at `start` (which holds `{{`).
fn tag_at(template: &str, start: usize) -> Option<Tag<'_>> {
    let bytes = template.as_bytes();
    let mut i = start + 2;
    while i < bytes.len() && is_space(bytes[i]) {
        i += 1;
    }
    let path_start = i;
    loop {
        let seg_start = i;
        while i < bytes.len() && is_seg_byte(bytes[i]) {
            i += 1;
        }
        if i == seg_start {
            return None;
        }
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            continue;
        }
        break;
    }
    let path_end = i;
    while i < bytes.len() && is_space(bytes[i]) {
        i += 1;
    }
    if bytes.get(i) == Some(&b'}') && bytes.get(i + 1) == Some(&b'}') {
        // Only ASCII bytes were consumed, so both ends are char boundaries.
        Some(Tag {
            start,
            end: i + 2,
            path: &template[path_start..path_end],
        })
    } else {
        None
    }
}

/// A piece of a template: literal text or the path of a tag.
enum Piece<'a> {
    Text(&'a str),
    Tag(&'a str),
}

/// Splits the template into literal text and tags.
fn scan(template: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut pos = 0;
    let mut literal_from = 0;
    while let Some(found) = template[pos..].find("{{") {
        let at = pos + found;
        match tag_at(template, at) {
            Some(tag) => {
                pieces.push(Piece::Text(&template[literal_from..tag.start]));
                pieces.push(Piece::Tag(tag.path));
                pos = tag.end;
                literal_from = tag.end;
            }
            // `{` is ASCII, so at + 1 is a char boundary.
            None => pos = at + 1,
        }
    }
    pieces.push(Piece::Text(&template[literal_from..]));
    pieces
}

/// Looks a dotted path up in the context; `None` when any step is missing.
pub fn lookup<'v>(ctx: &'v Value, path: &str) -> Option<&'v Value> {
    let mut cur = ctx;
    for seg in path.split('.') {
        cur = match cur {
            Value::Object(map) => map.get(seg)?,
            Value::Array(items) => items.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// How a context value is written into text.
pub fn value_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn render_with(template: &str, ctx: &Value, encode: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len());
    for piece in scan(template) {
        match piece {
            Piece::Tag(path) => {
                let text = lookup(ctx, path).map(value_text).unwrap_or_default();
                out.push_str(&encode(&text));
            }
            Piece::Text(t) => out.push_str(t),
        }
    }
    out
}

/// Renders a template as plain text (chat messages, headers).
pub fn render_text(template: &str, ctx: &Value) -> String {
    render_with(template, ctx, |s| s.to_string())
}

/// Renders a template as a URL: every substituted value is percent-encoded as a
/// URL component (only RFC 3986 unreserved characters are kept); the literal
/// parts of the template are left as written.
pub fn render_url(template: &str, ctx: &Value) -> String {
    render_with(template, ctx, percent_encode)
}

/// Percent-encodes everything but `A-Z a-z 0-9 - . _ ~`, byte by byte of UTF-8.
pub fn percent_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0x0f) as usize] as char);
        }
    }
    out
}

/// Renders merge tags inside every string value of `value`, recursively.
/// Keys, numbers, booleans, nulls and the shape of the document are untouched.
pub fn render_json(value: &Value, ctx: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(render_text(s, ctx)),
        Value::Array(items) => Value::Array(items.iter().map(|v| render_json(v, ctx)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), render_json(v, ctx)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The byte ranges of all well-formed tags in a template, in order
/// (each from its `{{` to just after its `}}`).
pub fn tag_spans(template: &str) -> Vec<std::ops::Range<usize>> {
    let mut spans = Vec::new();
    let mut pos = 0;
    while let Some(found) = template[pos..].find("{{") {
        let at = pos + found;
        match tag_at(template, at) {
            Some(tag) => {
                spans.push(tag.start..tag.end);
                pos = tag.end;
            }
            None => pos = at + 1,
        }
    }
    spans
}

/// Lists the paths of all well-formed tags in a template, in order
/// (`"memory.name"` for `{{ memory.name }}`).
pub fn tags(template: &str) -> Vec<String> {
    scan(template)
        .into_iter()
        .filter_map(|p| match p {
            Piece::Tag(path) => Some(path.to_string()),
            Piece::Text(_) => None,
        })
        .collect()
}

/// Renders a template as plain text, but stops once the text is longer than
/// `limit` bytes, so a template full of tags naming a long value costs no
/// more than the caller will keep. The result is the whole rendering when
/// that is at most `limit` bytes; otherwise it is a prefix of it longer than
/// `limit` bytes (at most `limit + 4`, cut on a char boundary), which tells the
/// caller it has to cut.
pub fn render_text_within(template: &str, ctx: &Value, limit: usize) -> String {
    let mut out = String::new();
    for piece in scan(template) {
        let value;
        let part = match piece {
            Piece::Text(t) => t,
            Piece::Tag(path) => {
                value = lookup(ctx, path).map(value_text).unwrap_or_default();
                value.as_str()
            }
        };
        if out.len() + part.len() > limit {
            // Keep just enough to pass the limit: one byte more, rounded up
            // to the end of the char it falls in.
            let mut end = limit - out.len() + 1;
            while !part.is_char_boundary(end) {
                end += 1;
            }
            out.push_str(&part[..end]);
            return out;
        }
        out.push_str(part);
    }
    out
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char
/// boundary.
pub fn prefix_within(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ctx() -> Value {
        json!({
            "memory": {"name": "John Doe", "favourite-thing": "tea", "n": 3, "ok": true,
                       "obj": {"a": 1}, "list": [1, 2], "nothing": null},
            "user": {"age": 42},
            "contact": {"phone": "+525500000000"},
            "quote": {"total": "11.60", "lines": [{"name": "Box"}]}
        })
    }

    #[test]
    fn renders_values_by_type() {
        let c = ctx();
        assert_eq!(render_text("Hi {{memory.name}}!", &c), "Hi John Doe!");
        assert_eq!(render_text("{{ memory.favourite-thing }}", &c), "tea");
        assert_eq!(render_text("{{memory.n}}/{{memory.ok}}", &c), "3/true");
        assert_eq!(
            render_text("{{memory.obj}}{{memory.list}}", &c),
            "{\"a\":1}[1,2]"
        );
        assert_eq!(
            render_text("[{{memory.nothing}}][{{memory.zzz}}]", &c),
            "[][]"
        );
        assert_eq!(
            render_text("{{user.age}} {{contact.phone}}", &c),
            "42 +525500000000"
        );
        assert_eq!(render_text("{{quote.lines.0.name}}", &c), "Box");
        assert_eq!(render_text("{{\n memory.name\t}}", &c), "John Doe");
    }

    #[test]
    fn leaves_non_tags_alone() {
        let c = ctx();
        for t in [
            "{{",
            "{{}}",
            "{{ }}",
            "{{memory..name}}",
            "{{memory.name",
            "{{memory name}}",
            "{memory.name}",
            "{{.a}}",
            "{{a.}}",
        ] {
            assert_eq!(render_text(t, &c), t, "template {t:?}");
        }
        assert_eq!(render_text("{{{memory.name}}}", &c), "{John Doe}");
        assert_eq!(render_text("é{{memory.name}}ü", &c), "éJohn Doeü");
    }

    #[test]
    fn url_encodes_only_values() {
        let c = json!({"memory": {"q": "a b&c=d/é"}});
        assert_eq!(
            render_url("https://x.test/s?q={{memory.q}}&z=1", &c),
            "https://x.test/s?q=a%20b%26c%3Dd%2F%C3%A9&z=1"
        );
        assert_eq!(percent_encode("AZaz09-._~"), "AZaz09-._~");
    }

    #[test]
    fn json_rendering_cannot_inject() {
        let c = json!({"memory": {"name": "\", \"admin\": true, \"x\": \""}});
        let body = json!({"name": "{{memory.name}}", "n": 1, "list": ["{{memory.name}}", null]});
        let out = render_json(&body, &c);
        assert_eq!(out["name"], json!("\", \"admin\": true, \"x\": \""));
        assert_eq!(out.as_object().unwrap().len(), 3);
        assert_eq!(out["n"], json!(1));
        assert_eq!(out["list"][1], Value::Null);
    }

    #[test]
    fn finds_tag_spans() {
        let t = "a{{memory.x}}b{{ y }}{{bad tag}}";
        let spans = tag_spans(t);
        assert_eq!(spans, vec![1..13, 14..21]);
        assert_eq!(&t[spans[1].clone()], "{{ y }}");
        assert!(tag_spans("{{{{").is_empty());
    }

    #[test]
    fn lists_tags() {
        assert_eq!(
            tags("{{memory.a}} and {{ user.b-c }} but not {{x y}}"),
            vec!["memory.a".to_string(), "user.b-c".to_string()]
        );
    }

    #[test]
    fn rendering_within_a_limit_stops_early() {
        let c = json!({"memory": {"n": "é".repeat(2000)}});
        let template = "{{memory.n}}".repeat(341);
        let out = render_text_within(&template, &c, 4096);
        assert!(out.len() > 4096 && out.len() <= 4100, "{}", out.len());
        assert!(render_text(&template, &c).starts_with(&out));
        assert_eq!(render_text_within("Hi {{memory.n}}", &json!({}), 3), "Hi ");
        assert_eq!(prefix_within("aé", 2), "a");
        assert_eq!(prefix_within("aé", 3), "aé");
    }

    fn same_shape(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .all(|(k, v)| y.get(k).is_some_and(|w| same_shape(v, w)))
            }
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_shape(v, w))
            }
            (Value::String(_), Value::String(_)) => true,
            (x, y) => x == y,
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "(\\{\\{ ?(memory|user)\\.[a-z-]{1,5} ?\\}\\}|[a-z {}.]){0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z{}]{1,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn never_panics(t in ".*", key in "[a-z-]{1,8}") {
            let c = json!({"memory": {key.clone(): t.clone()}});
            let _ = render_text(&t, &c);
            let _ = render_url(&t, &c);
            let _ = tags(&t);
        }

        #[test]
        fn text_without_braces_is_unchanged(t in "[^{]*|([^{]*\\{[^{]+)*") {
            prop_assume!(!t.contains("{{"));
            prop_assert_eq!(render_text(&t, &ctx()), t);
        }

        #[test]
        fn substitutes_value(k in "[A-Za-z0-9_-]{1,12}", v in "\\PC*", pre in "[a-z ]{0,5}") {
            let c = json!({"memory": {k.clone(): v.clone()}});
            let out = render_text(&format!("{pre}{{{{ memory.{k} }}}}"), &c);
            prop_assert_eq!(out, format!("{pre}{v}"));
        }

        #[test]
        fn rendering_within_is_a_prefix_past_the_limit(t in "(\\{\\{memory\\.v\\}\\}|[a-zé€ ]){0,40}", v in "\\PC{0,30}", limit in 0usize..80) {
            let c = json!({"memory": {"v": v}});
            let full = render_text(&t, &c);
            let within = render_text_within(&t, &c, limit);
            if full.len() <= limit {
                prop_assert_eq!(within, full);
            } else {
                prop_assert!(full.starts_with(&within));
                prop_assert!(within.len() > limit && within.len() <= limit + 4);
            }
        }

        #[test]
        fn json_keeps_structure(doc in arb_json(), v in ".*") {
            let c = json!({"memory": {"a": v.clone(), "b-c": v}});
            let out = render_json(&doc, &c);
            prop_assert!(same_shape(&doc, &out));
        }
    }
}
