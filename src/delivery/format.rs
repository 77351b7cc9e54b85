//! Payload formats: the JSON body an endpoint receives for one event.
//!
//! An endpoint picks one of three shapes:
//! - `standard` — `{"type", "timestamp", "data"}`, the Standard Webhooks shape;
//! - `bot9` — `{"event": "messageReceived", "data": {"message", "sender", "chatbotId", …}}`;
//! - `flat` — seed 003's flat object: `campaignId`, `label`, `phoneNumber`, `date`,
//!   then `response`, or `option` + `keyword`, plus `event`;
//! - `template` — the endpoint's own JSON (its `body`), whose string values
//!   hold merge tags over the event: `{{event.type}}`, `{{event.id}}`,
//!   `{{event.timestamp}}`, `{{event.bot_id}}`, `{{data.contact.phone}}` ….
//!   Tags are substituted inside string values only (the template's shape and
//!   types never change, so an answer cannot inject JSON); a missing key is
//!   empty. [`check_template`] refuses unknown tags when the endpoint is saved.
//!
//! Invariants:
//! - rendering is total: any `data` (even not an object, or with fields missing)
//!   gives valid JSON, never a panic;
//! - the endpoint's extra body params are merged into the top level of every
//!   format but never replace a key the format itself sets, so a receiver can
//!   always trust `type`/`event`/`data`/`date`… to be botwire's;
//! - times are UTC with exactly three fractional digits and a `Z`.
//!
//! Keys are inserted in the order the formats document; whether that order
//! survives depends on serde_json's `preserve_order` feature (without it, keys
//! come out sorted). JSON receivers do not depend on key order.

use crate::domain::merge;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

pub use crate::domain::endpoint::PayloadFormat;

/// The parts of an event that the formats need, borrowed from wherever it lives.
#[derive(Debug, Clone, Copy)]
pub struct EventView<'a> {
    /// Event id (also sent as `webhook-id`).
    pub id: &'a str,
    /// Dotted event type, e.g. `message.received`.
    pub event_type: &'a str,
    /// The bot the event belongs to.
    pub bot_id: &'a str,
    /// When it happened, in milliseconds since the Unix epoch.
    pub occurred_at_ms: i64,
    /// The event's data object.
    pub data: &'a Value,
}

/// Renders `ev` in `format`, with `extra_body` merged into the top level, as JSON bytes.
///
/// Extra body params never override the keys the format sets itself. For
/// [`PayloadFormat::Template`], `extra_body` is the template itself.
pub fn render(
    format: PayloadFormat,
    ev: &EventView<'_>,
    extra_body: Option<&Map<String, Value>>,
) -> Vec<u8> {
    let mut top = match format {
        PayloadFormat::Standard => standard(ev),
        PayloadFormat::Bot9 => bot9(ev),
        PayloadFormat::Flat => flat(ev),
        PayloadFormat::Template => {
            let template = Value::Object(extra_body.cloned().unwrap_or_default());
            let out = merge::render_json(&template, &template_context(ev));
            return serde_json::to_vec(&out).unwrap_or_else(|_| b"{}".to_vec());
        }
    };
    if let Some(extra) = extra_body {
        for (k, v) in extra {
            if !top.contains_key(k) {
                top.insert(k.clone(), v.clone());
            }
        }
    }
    // Serialising a Value with string keys cannot fail; fall back to `{}` anyway.
    serde_json::to_vec(&Value::Object(top)).unwrap_or_else(|_| b"{}".to_vec())
}

/// What a template's tags see: `event` (`type`, `id`, `timestamp`, `bot_id`) and `data`.
fn template_context(ev: &EventView<'_>) -> Value {
    serde_json::json!({
        "event": {
            "type": ev.event_type,
            "id": ev.id,
            "timestamp": format_timestamp_ms(ev.occurred_at_ms),
            "bot_id": ev.bot_id,
        },
        "data": ev.data,
    })
}

/// The fields of `event` a template may name.
const EVENT_FIELDS: [&str; 4] = ["type", "id", "timestamp", "bot_id"];

/// Checks a template: every `{{…}}` in its string values must be a merge tag
/// naming `event.type`, `event.id`, `event.timestamp`, `event.bot_id`, or
/// something under `data`. The error names the tag and where it is
/// (`body.customer.phone`).
pub fn check_template(template: &Map<String, Value>) -> Result<(), String> {
    if template.is_empty() {
        return Err("a template endpoint needs its JSON template in body, e.g. \
             {\"kind\": \"{{event.type}}\", \"phone\": \"{{data.contact.phone}}\"}"
            .into());
    }
    fn walk(v: &Value, at: &str) -> Result<(), String> {
        match v {
            Value::String(s) => check_tags(s, at),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .try_for_each(|(i, v)| walk(v, &format!("{at}[{i}]"))),
            Value::Object(m) => m
                .iter()
                .try_for_each(|(k, v)| walk(v, &format!("{at}.{k}"))),
            _ => Ok(()),
        }
    }
    template
        .iter()
        .try_for_each(|(k, v)| walk(v, &format!("body.{k}")))
}

fn check_tags(s: &str, at: &str) -> Result<(), String> {
    let spans = merge::tag_spans(s);
    for span in &spans {
        let tag = &s[span.clone()];
        let path = tag.trim_start_matches('{').trim_end_matches('}').trim();
        let ok = match path.split_once('.') {
            Some(("event", field)) => EVENT_FIELDS.contains(&field),
            Some(("data", _)) => true,
            None => path == "data",
            _ => false,
        };
        if !ok {
            return Err(format!(
                "{at}: unknown merge tag {tag}: a template's tags are {{{{event.type}}}}, \
                 {{{{event.id}}}}, {{{{event.timestamp}}}}, {{{{event.bot_id}}}} or {{{{data.KEY}}}} \
                 (e.g. {{{{data.contact.phone}}}}, {{{{data.response}}}})"
            ));
        }
    }
    // A `{{` that starts no tag is a typo the receiver would get as is.
    let mut pos = 0;
    while let Some(found) = s[pos..].find("{{") {
        let i = pos + found;
        if !spans.iter().any(|r| r.contains(&i)) {
            let rest: String = s[i..].chars().take(30).collect();
            return Err(format!(
                "{at}: {rest:?} is not a merge tag: write {{{{event.type}}}} or {{{{data.KEY}}}} \
                 (letters, digits, _ and - joined by dots)"
            ));
        }
        pos = i + 2;
    }
    Ok(())
}

/// `2024-06-18T23:22:36.560Z`: UTC, exactly three millisecond digits, `Z`.
///
/// Times outside chrono's range (about ±262,000 years) are clamped to its ends.
pub fn format_timestamp_ms(ms: i64) -> String {
    let dt = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or(if ms < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    });
    dt.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `message.received` → `messageReceived`, `order.paid-now` → `orderPaidNow`.
///
/// Segments are split on `.`, `-`, `_` and spaces; the first keeps its case, each
/// later one gets an upper-case first letter.
pub fn camel_case(event_type: &str) -> String {
    let mut out = String::with_capacity(event_type.len());
    let mut first = true;
    for seg in event_type
        .split(['.', '-', '_', ' '])
        .filter(|s| !s.is_empty())
    {
        if first {
            out.push_str(seg);
            first = false;
        } else {
            let mut chars = seg.chars();
            if let Some(c) = chars.next() {
                out.extend(c.to_uppercase());
                out.push_str(chars.as_str());
            }
        }
    }
    out
}

fn standard(ev: &EventView<'_>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("type".into(), Value::from(ev.event_type));
    m.insert(
        "timestamp".into(),
        Value::from(format_timestamp_ms(ev.occurred_at_ms)),
    );
    m.insert("data".into(), ev.data.clone());
    m
}

/// The first of `contact.phone`, `contact.external_id`, `contact.id` that is set.
fn sender(data: &Value) -> Option<Value> {
    let contact = data.get("contact")?;
    ["phone", "external_id", "id"]
        .iter()
        .filter_map(|k| contact.get(*k))
        .find(|v| !v.is_null())
        .cloned()
}

fn bot9(ev: &EventView<'_>) -> Map<String, Value> {
    let mut inner = Map::new();
    if let Some(text) = ev.data.get("text").filter(|v| !v.is_null()) {
        inner.insert("message".into(), text.clone());
    }
    if let Some(s) = sender(ev.data) {
        inner.insert("sender".into(), s);
    }
    inner.insert("chatbotId".into(), Value::from(ev.bot_id));
    if let Some(obj) = ev.data.as_object() {
        for (k, v) in obj {
            if k != "text" && !inner.contains_key(k) {
                inner.insert(k.clone(), v.clone());
            }
        }
    }
    let mut m = Map::new();
    m.insert("event".into(), Value::from(camel_case(ev.event_type)));
    m.insert("data".into(), Value::Object(inner));
    m
}

/// Data keys the flat format maps to its own names, so they are not copied again.
const FLAT_MAPPED: &[&str] = &["flow", "label", "contact"];

fn flat(ev: &EventView<'_>) -> Map<String, Value> {
    let field = |k: &str| ev.data.get(k).cloned().unwrap_or(Value::Null);
    let phone = ev
        .data
        .get("contact")
        .and_then(|c| c.get("phone"))
        .cloned()
        .unwrap_or(Value::Null);

    let mut m = Map::new();
    m.insert("campaignId".into(), field("flow"));
    m.insert("label".into(), field("label"));
    match ev.event_type {
        "response.received" => {
            m.insert("phoneNumber".into(), phone);
            m.insert("date".into(), format_timestamp_ms(ev.occurred_at_ms).into());
            m.insert("response".into(), field("response"));
        }
        "option.selected" => {
            m.insert("option".into(), field("option"));
            m.insert("keyword".into(), field("keyword"));
            m.insert("phoneNumber".into(), phone);
            m.insert("date".into(), format_timestamp_ms(ev.occurred_at_ms).into());
        }
        _ => {
            m.insert("phoneNumber".into(), phone);
            m.insert("date".into(), format_timestamp_ms(ev.occurred_at_ms).into());
            if let Some(obj) = ev.data.as_object() {
                for (k, v) in obj {
                    if !FLAT_MAPPED.contains(&k.as_str()) && !m.contains_key(k) {
                        m.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }
    m.insert("event".into(), Value::from(ev.event_type));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn a_template_is_filled_inside_its_string_values() {
        let data = json!({"flow": "main", "label": "Welcome Message", "response": "John \"}, {\"x\": 1",
                          "contact": {"phone": "+525500000000"}});
        let ev = view("response.received", T_RESPONSE, &data);
        let template: Map<String, Value> = serde_json::from_value(json!({
            "kind": "{{event.type}}", "id": "{{ event.id }}", "at": "{{event.timestamp}}",
            "who": {"phone": "{{data.contact.phone}}", "said": "{{data.response}}"},
            "tags": ["{{data.label}} / {{data.missing}}", 7, true],
        }))
        .unwrap();
        check_template(&template).unwrap();
        let out = parse(&render(PayloadFormat::Template, &ev, Some(&template)));
        assert_eq!(
            out,
            json!({"kind": "response.received", "id": "evt_1", "at": "2024-06-18T23:22:36.560Z",
                   "who": {"phone": "+525500000000", "said": "John \"}, {\"x\": 1"},
                   "tags": ["Welcome Message / ", 7, true]})
        );
    }

    #[test]
    fn a_template_with_an_unknown_tag_is_refused_naming_it() {
        for (t, want) in [
            (
                json!({"a": {"b": "{{memory.name}}"}}),
                "body.a.b: unknown merge tag {{memory.name}}",
            ),
            (
                json!({"a": ["x", "{{event.when}}"]}),
                "body.a[1]: unknown merge tag {{event.when}}",
            ),
            (
                json!({"a": "{{data.contact phone}}"}),
                "body.a: \"{{data.contact phone}}\" is not a merge tag",
            ),
            (json!({}), "needs its JSON template"),
        ] {
            let m: Map<String, Value> = serde_json::from_value(t).unwrap();
            let err = check_template(&m).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
    }

    /// 2024-06-18T23:22:36.560Z
    const T_RESPONSE: i64 = 1_718_752_956_560;
    /// 2024-06-18T23:26:14.206Z
    const T_OPTION: i64 = 1_718_753_174_206;

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    fn view<'a>(event_type: &'a str, ms: i64, data: &'a Value) -> EventView<'a> {
        EventView {
            id: "evt_1",
            event_type,
            bot_id: "bot_42",
            occurred_at_ms: ms,
            data,
        }
    }

    fn contact() -> Value {
        json!({"id": "ct_9", "phone": "+525500000000", "external_id": null})
    }

    fn without_event(mut v: Value) -> Value {
        v.as_object_mut().unwrap().remove("event");
        v
    }

    #[test]
    fn flat_reproduces_seed_003_response_payload() {
        let data = json!({
            "conversation_id": "cv_1", "flow": "13010", "node": "welcome",
            "label": "Welcome Message", "contact": contact(),
            "field": "name", "response": "John Doe"
        });
        let out = parse(&render(
            PayloadFormat::Flat,
            &view("response.received", T_RESPONSE, &data),
            None,
        ));
        let seed = json!({
            "campaignId": "13010",
            "label": "Welcome Message",
            "phoneNumber": "+525500000000",
            "date": "2024-06-18T23:22:36.560Z",
            "response": "John Doe"
        });
        assert_eq!(out["event"], "response.received");
        assert_eq!(without_event(out), seed);
    }

    #[test]
    fn flat_reproduces_seed_003_option_payload() {
        let data = json!({
            "conversation_id": "cv_1", "flow": "13010", "node": "membership",
            "label": "Welcome Message", "contact": contact(),
            "option": "One month", "keyword": 1
        });
        let out = parse(&render(
            PayloadFormat::Flat,
            &view("option.selected", T_OPTION, &data),
            None,
        ));
        let seed = json!({
            "campaignId": "13010",
            "label": "Welcome Message",
            "option": "One month",
            "keyword": 1,
            "phoneNumber": "+525500000000",
            "date": "2024-06-18T23:26:14.206Z"
        });
        assert_eq!(out["event"], "option.selected");
        assert_eq!(without_event(out), seed);
    }

    #[test]
    fn flat_other_types_flatten_remaining_data() {
        let data = json!({
            "conversation_id": "cv_1", "flow": "main", "node": "n1", "label": "Hi",
            "contact": {"id": "c", "phone": null, "external_id": "u-7"}, "text": "hello",
            "date": "not ours", "event": "nor this"
        });
        let out = parse(&render(
            PayloadFormat::Flat,
            &view("message.received", 0, &data),
            None,
        ));
        assert_eq!(
            out,
            json!({
                "campaignId": "main", "label": "Hi", "phoneNumber": null,
                "date": "1970-01-01T00:00:00.000Z", "conversation_id": "cv_1",
                "node": "n1", "text": "hello", "event": "message.received"
            })
        );
    }

    #[test]
    fn standard_shape() {
        let data = json!({"text": "hi", "contact": contact()});
        let out = parse(&render(
            PayloadFormat::Standard,
            &view("message.received", T_RESPONSE, &data),
            None,
        ));
        assert_eq!(
            out,
            json!({"type": "message.received", "timestamp": "2024-06-18T23:22:36.560Z", "data": data})
        );
    }

    #[test]
    fn bot9_shape_matches_seed_001() {
        let data = json!({
            "conversation_id": "cv_1", "flow": "f", "node": "n", "label": "l",
            "contact": {"id": "ct_1", "phone": null, "external_id": "user123"},
            "text": "Hello, how can I assist you today?"
        });
        let out = parse(&render(
            PayloadFormat::Bot9,
            &view("message.received", 0, &data),
            None,
        ));
        assert_eq!(out["event"], "messageReceived");
        assert_eq!(out["data"]["message"], "Hello, how can I assist you today?");
        assert_eq!(out["data"]["sender"], "user123");
        assert_eq!(out["data"]["chatbotId"], "bot_42");
        assert_eq!(out["data"]["conversation_id"], "cv_1");
        assert!(out["data"].get("text").is_none());
        assert_eq!(out.as_object().unwrap().len(), 2);
    }

    #[test]
    fn bot9_sender_preference() {
        let cases = [
            (
                json!({"id": "i", "phone": "+1", "external_id": "e"}),
                json!("+1"),
            ),
            (
                json!({"id": "i", "phone": null, "external_id": "e"}),
                json!("e"),
            ),
            (
                json!({"id": "i", "phone": null, "external_id": null}),
                json!("i"),
            ),
        ];
        for (contact, expected) in cases {
            let data = json!({"contact": contact});
            let out = parse(&render(
                PayloadFormat::Bot9,
                &view("appointment.booked", 0, &data),
                None,
            ));
            assert_eq!(out["data"]["sender"], expected);
            assert_eq!(out["event"], "appointmentBooked");
            assert!(out["data"].get("message").is_none());
        }
    }

    #[test]
    fn camel_case_names() {
        assert_eq!(camel_case("message.received"), "messageReceived");
        assert_eq!(camel_case("appointment.booked"), "appointmentBooked");
        assert_eq!(camel_case("order.paid-now"), "orderPaidNow");
        assert_eq!(camel_case("webhook.test"), "webhookTest");
        assert_eq!(camel_case("a..b"), "aB");
        assert_eq!(camel_case(""), "");
    }

    #[test]
    fn extra_body_merges_without_overriding() {
        let data = json!({"flow": "13010", "label": "L", "contact": contact(), "response": "x"});
        let mut extra = Map::new();
        extra.insert("source".into(), json!("crm"));
        extra.insert("campaignId".into(), json!("spoofed"));
        extra.insert("type".into(), json!("spoofed"));
        for format in [
            PayloadFormat::Standard,
            PayloadFormat::Bot9,
            PayloadFormat::Flat,
        ] {
            let out = parse(&render(
                format,
                &view("response.received", 0, &data),
                Some(&extra),
            ));
            assert_eq!(out["source"], "crm", "{format:?}");
            match format {
                PayloadFormat::Standard => {
                    assert_eq!(out["type"], "response.received");
                    assert_eq!(out["campaignId"], "spoofed");
                }
                PayloadFormat::Bot9 => assert_eq!(out["type"], "spoofed"),
                PayloadFormat::Flat => assert_eq!(out["campaignId"], "13010"),
                PayloadFormat::Template => unreachable!("its body is the template"),
            }
        }
    }

    #[test]
    fn format_names_serde() {
        for (f, name) in [
            (PayloadFormat::Standard, "\"standard\""),
            (PayloadFormat::Bot9, "\"bot9\""),
            (PayloadFormat::Flat, "\"flat\""),
            (PayloadFormat::Template, "\"template\""),
        ] {
            assert_eq!(serde_json::to_string(&f).unwrap(), name);
            assert_eq!(serde_json::from_str::<PayloadFormat>(name).unwrap(), f);
            assert_eq!(format!("\"{}\"", f.as_str()), name);
        }
        assert!(serde_json::from_str::<PayloadFormat>("\"Flat\"").is_err());
        assert_eq!(PayloadFormat::default(), PayloadFormat::Standard);
    }

    #[test]
    fn timestamps() {
        assert_eq!(format_timestamp_ms(T_RESPONSE), "2024-06-18T23:22:36.560Z");
        assert_eq!(format_timestamp_ms(T_OPTION), "2024-06-18T23:26:14.206Z");
        assert_eq!(format_timestamp_ms(1_000), "1970-01-01T00:00:01.000Z");
        // Out of range is clamped, not a panic.
        assert!(format_timestamp_ms(i64::MAX).ends_with('Z'));
        assert!(format_timestamp_ms(i64::MIN).ends_with('Z'));
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            ".{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn render_is_total_and_valid_json(
            data in arb_json(),
            ty in prop_oneof![
                Just("message.received".to_string()),
                Just("response.received".to_string()),
                Just("option.selected".to_string()),
                "[a-z.\\-]{0,20}",
            ],
            ms in any::<i64>(),
        ) {
            for f in [PayloadFormat::Standard, PayloadFormat::Bot9, PayloadFormat::Flat] {
                let bytes = render(f, &view(&ty, ms, &data), None);
                let v: Value = serde_json::from_slice(&bytes).unwrap();
                prop_assert!(v.is_object());
            }
        }
    }
}
