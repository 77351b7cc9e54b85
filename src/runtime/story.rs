//! Story webhooks: calls to the user's API made from inside a flow (seed
//! 002), and what their answers do to the conversation.
//!
//! A call is built from its definition and the conversation's merge
//! context: the URL with merge tags in its path and query (values
//! percent-encoded), `params` as a query string (GET, DELETE) or a JSON
//! body (otherwise; merge tags are substituted inside string values only,
//! so an answer can never inject JSON), headers with merge tags (control
//! characters in what they render to become spaces), `User-Agent:
//! botwire/<version>`, and — unless `sign: false` — the Standard Webhooks
//! signature headers made with the bot's story-webhook secret(s). It goes
//! through the shared outbound client, so the SSRF guard applies, with the
//! definition's timeout.
//!
//! A call is refused unsent, as a failure that names why, when its
//! definition breaks the outbound rules (one saved before they existed) or
//! when a value from the chat made a `.` or `..` segment in the URL's path
//! (`users/{{memory.x}}/profile` with the answer `..` would call
//! `/profile`); see [`crate::domain::outbound`].
//!
//! The answer, when it is a 2xx with a JSON object, is read for
//! `responses`, `memory`, `user_attributes` and `quickreplies` (other keys
//! ignored; a known key of the wrong type is a failure that names it).
//! `responses` and `quickreplies` are text: they are shown as the API wrote
//! them, never rendered as merge tags, here and in the test bench.
//! Anything else — timeout, refused connection, blocked target, non-2xx,
//! non-JSON — is a failure, and the flow takes its error path.
//!
//! Every call is recorded ([`CallRecord`]) with the signature and the
//! secret header values redacted (custom headers are secrets unless marked
//! plain), and records are redacted again when shown ([`redact_record`]),
//! so ones written before that rule show no secret either. No
//! database transaction is open while a call is in flight: the chat turn
//! commits the call's record with the rest of the turn afterwards.

use crate::delivery::http::{Attempt, OutboundClient, OutboundRequest};
use crate::delivery::signing::{self, Secret};
use crate::domain::engine::{self, ReplyCut, WebhookReply};
use crate::domain::flow::StoryWebhook;
use crate::domain::ids::new_id;
use crate::domain::merge;
use crate::domain::outbound::{self, CustomHeader};
use crate::domain::secret;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// How much of a response is kept in the call log.
const LOGGED_BODY: usize = 2048;

/// One story-webhook call as logged.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CallRecord {
    /// `call_…`; also the `webhook-id` header of the request.
    pub id: String,
    /// The webhook's name.
    pub webhook: String,
    /// `GET https://…?min=10&max=20`
    pub request_line: String,
    /// Request headers, the signature and secret values redacted.
    pub request_headers: Vec<(String, String)>,
    /// The JSON body sent, if any.
    pub request_body: Option<String>,
    /// The response status, when one came.
    pub status: Option<u16>,
    /// Time taken, ms.
    pub duration_ms: u64,
    /// The response's first bytes.
    pub response_head: String,
    /// `ok` or `error`.
    pub outcome: String,
    /// Why it failed, in plain words.
    pub error: Option<String>,
    /// When it started, Unix ms.
    pub started_at: i64,
}

/// A request ready to send, and its loggable form.
pub struct Prepared {
    /// What goes on the wire.
    pub request: OutboundRequest,
    /// The call's id.
    pub id: String,
    /// The request body as text, if any.
    pub body_text: Option<String>,
}

/// Builds the request for `def` against the merge context `ctx`, or says
/// why it must not be sent.
pub fn prepare(
    def: &StoryWebhook,
    ctx: &Value,
    secrets: &[Secret],
    now_secs: i64,
) -> Result<Prepared, String> {
    if let Some(p) = def.call_problems(&def.name, "").first() {
        return Err(format!(
            "not sent: the definition breaks the rules for outbound calls ({}: {}); fix the webhook",
            p.field, p.message
        ));
    }
    let id = new_id("call");
    let mut url = merge::render_url(&def.url, ctx);
    if let Err(p) = outbound::check_rendered_url(&url) {
        return Err(format!(
            "not sent: with the conversation's values filled in, the url {p}"
        ));
    }
    let rendered = merge::render_json(&Value::Object(def.params.clone()), ctx);
    let params = rendered.as_object().cloned().unwrap_or_default();
    let mut body: Option<Vec<u8>> = None;
    if def.params_in_query() {
        if !params.is_empty() {
            let query: Vec<String> = params
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        merge::percent_encode(k),
                        merge::percent_encode(&merge::value_text(v))
                    )
                })
                .collect();
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&query.join("&"));
        }
    } else {
        body = Some(serde_json::to_vec(&Value::Object(params)).expect("JSON serialises"));
    }
    let mut headers: Vec<(String, String)> = def
        .headers
        .iter()
        .map(|(k, v)| {
            let rendered = merge::render_text(&v.value, ctx);
            (
                k.clone(),
                outbound::clean_header_value(&rendered).into_owned(),
            )
        })
        .collect();
    if body.is_some() {
        headers.push(("content-type".into(), "application/json".into()));
    }
    if def.signs() && !secrets.is_empty() {
        let payload = body.as_deref().unwrap_or_default();
        headers.push((signing::HEADER_ID.into(), id.clone()));
        headers.push((signing::HEADER_TIMESTAMP.into(), now_secs.to_string()));
        headers.push((
            signing::HEADER_SIGNATURE.into(),
            signing::signature_header(secrets, &id, now_secs, payload),
        ));
    }
    let body_text = body
        .as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned());
    Ok(Prepared {
        request: OutboundRequest {
            method: def.method.parse().unwrap_or(reqwest::Method::POST),
            url,
            headers,
            body,
            timeout: Some(Duration::from_millis(u64::from(def.timeout_ms()))),
        },
        id,
        body_text,
    })
}

/// Reads an attempt's outcome as a webhook reply, or says why it failed.
pub fn interpret(attempt: &Attempt) -> Result<WebhookReply, String> {
    if let Some(kind) = attempt.error {
        return Err(match (&attempt.error_message, attempt.status) {
            (_, Some(status)) => format!("the API answered HTTP {status}"),
            (Some(m), None) => format!("{}: {m}", kind.as_str()),
            (None, None) => kind.as_str().to_owned(),
        });
    }
    let value: Value = serde_json::from_str(&attempt.response_body).map_err(|_| {
        if attempt.response_body.len() >= crate::delivery::http::MAX_RESPONSE_BODY {
            "the answer is larger than 16 KiB".to_owned()
        } else {
            "the answer is not JSON".to_owned()
        }
    })?;
    WebhookReply::from_json(&value)
}

/// Makes a call and logs it.
pub async fn call(
    client: &OutboundClient,
    def: &StoryWebhook,
    ctx: &Value,
    secrets: &[Secret],
) -> (Result<WebhookReply, String>, CallRecord) {
    let now = chrono::Utc::now();
    let mut prepared = match prepare(def, ctx, secrets, now.timestamp()) {
        Ok(p) => p,
        Err(why) => {
            let record = CallRecord {
                id: new_id("call"),
                webhook: def.name.clone(),
                request_line: format!("{} {}", def.method, merge::render_url(&def.url, ctx)),
                request_headers: Vec::new(),
                request_body: None,
                status: None,
                duration_ms: 0,
                response_head: String::new(),
                outcome: "error".into(),
                error: Some(why.clone()),
                started_at: now.timestamp_millis(),
            };
            crate::telemetry::story_call(false, None);
            return (Err(why), record);
        }
    };
    if let Some(trace) = crate::trace::current() {
        crate::trace::add_traceparent(&mut prepared.request.headers, &trace);
    }
    let request_line = format!("{} {}", def.method, prepared.request.url);
    let request_headers = redact(&prepared.request.headers, &def.headers);
    let sent = std::time::Instant::now();
    let attempt = client.send(prepared.request).await;
    let elapsed = sent.elapsed();
    let outcome = interpret(&attempt);
    crate::telemetry::story_call(outcome.is_ok(), Some(elapsed));
    let mut head = attempt.response_body.clone();
    if head.len() > LOGGED_BODY {
        let mut cut = LOGGED_BODY;
        while !head.is_char_boundary(cut) {
            cut -= 1;
        }
        head.truncate(cut);
    }
    let record = CallRecord {
        id: prepared.id,
        webhook: def.name.clone(),
        request_line,
        request_headers,
        request_body: prepared.body_text,
        status: attempt.status,
        duration_ms: attempt.duration_ms,
        response_head: head,
        outcome: if outcome.is_ok() { "ok" } else { "error" }.into(),
        error: outcome.as_ref().err().cloned(),
        started_at: attempt.started_at_ms,
    };
    (outcome, record)
}

/// The headers the engine itself writes, shown in the log as they are
/// (but the signature).
fn engine_header(name: &str) -> bool {
    name.eq_ignore_ascii_case("content-type")
        || name.eq_ignore_ascii_case(signing::HEADER_ID)
        || name.eq_ignore_ascii_case(signing::HEADER_TIMESTAMP)
        || name.eq_ignore_ascii_case(crate::trace::TRACEPARENT)
}

/// The request headers as logged: the signature as `***`, each custom
/// header's value redacted unless `custom` marks it plain.
pub fn redact(
    headers: &[(String, String)],
    custom: &BTreeMap<String, CustomHeader>,
) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| (k.clone(), logged_value(k, v, custom, false)))
        .collect()
}

/// How one header is logged; `stored` when `value` comes from a record,
/// where a value already redacted (`***`, `••••…`) stays as it is.
fn logged_value(
    name: &str,
    value: &str,
    custom: &BTreeMap<String, CustomHeader>,
    stored: bool,
) -> String {
    if name.eq_ignore_ascii_case(signing::HEADER_SIGNATURE) {
        return "***".into();
    }
    if engine_header(name)
        || (stored && (value == "***" || value.starts_with(outbound::REDACTED)))
        || custom
            .iter()
            .any(|(k, h)| k.eq_ignore_ascii_case(name) && !h.sensitive)
    {
        return value.to_owned();
    }
    outbound::redact(value)
}

/// Redacts a stored call record's request headers for showing, by the
/// webhook's definition as it is now (`None` when it is gone): only the
/// engine's own headers and headers marked plain keep their values. Records
/// are redacted when written; this also covers ones written before custom
/// headers were secrets by default.
pub fn redact_record(record: &mut Value, def: Option<&StoryWebhook>) {
    let empty = BTreeMap::new();
    let custom = def.map_or(&empty, |d| &d.headers);
    if let Some(Value::Array(pairs)) = record.get_mut("request_headers") {
        for pair in pairs {
            if let Value::Array(kv) = pair
                && let [Value::String(k), Value::String(v)] = kv.as_mut_slice()
            {
                *v = logged_value(k, v, custom, true);
            }
        }
    }
}

/// What a reply would do, for the test endpoint: the memory and user
/// attributes after merging, and the replies and quick replies as a
/// conversation would show them (as written, never rendered as merge tags;
/// replies cut to the output caps).
pub fn would_merge(
    reply: &WebhookReply,
    memory: &Map<String, Value>,
    user: &Map<String, Value>,
) -> Value {
    let apply = |base: &Map<String, Value>, changes: &Map<String, Value>| {
        let mut out = base.clone();
        for (k, v) in changes {
            if v.is_null() {
                out.remove(k);
            } else {
                out.insert(k.clone(), v.clone());
            }
        }
        Value::Object(out)
    };
    let (memory, user) = (
        apply(memory, &reply.memory),
        apply(user, &reply.user_attributes),
    );
    let responses = engine::cap_replies(reply.responses.clone(), &mut ReplyCut::default());
    serde_json::json!({
        "responses": responses,
        "quickreplies": reply.quickreplies,
        "memory": memory,
        "user": user,
    })
}

/// One of a bot's story-webhook secrets as stored (`bots.story_secrets`),
/// rotated by the same rule as an endpoint's.
pub use crate::domain::secret::SecretEntry as StoredSecret;

fn ring(stored: &str) -> Vec<StoredSecret> {
    serde_json::from_str(stored).unwrap_or_default()
}

fn ring_json(ring: &[StoredSecret]) -> String {
    serde_json::to_string(ring).expect("secrets serialise")
}

/// A fresh secrets document holding one new secret.
pub fn fresh_secrets() -> String {
    ring_json(&secret::ring_of(&Secret::generate()))
}

/// The secrets that still sign at `now_ms`, newest first.
pub fn live_secrets(stored: &str, now_ms: i64) -> Vec<Secret> {
    secret::live(&ring(stored), now_ms)
}

/// Rotates ([`secret::rotate`]): a new current secret; the old current one
/// keeps signing until `now + grace`; expired ones are dropped.
pub fn rotate_secrets(stored: &str, now_ms: i64, grace_ms: i64) -> String {
    ring_json(&secret::rotate(
        &ring(stored),
        &Secret::generate(),
        now_ms,
        grace_ms,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(method: &str) -> StoryWebhook {
        serde_json::from_value(json!({
            "name": "n", "method": method, "url": "http://api.test/r/{{memory.thing}}",
            "params": {"min": "10", "who": "{{user.name}}", "n": 5},
            "headers": {"x-team": "{{memory.thing}}"}
        }))
        .unwrap()
    }

    #[test]
    fn a_value_that_would_walk_the_path_is_not_sent() {
        let hook: StoryWebhook = serde_json::from_value(json!({
            "name": "n", "url": "http://api.test/users/{{memory.x}}/profile?q={{memory.x}}"
        }))
        .unwrap();
        for v in [".", "..", "../..", "%2e%2e", ".%2E", "a/b"] {
            let ctx = json!({"memory": {"x": v}});
            match prepare(&hook, &ctx, &[], 0) {
                Ok(p) => {
                    assert!(!matches!(v, "." | ".."), "{v:?} must not be sent");
                    let url = url::Url::parse(&p.request.url).unwrap();
                    assert!(url.path().starts_with("/users/"), "{v:?}: {url}");
                    assert!(url.path().ends_with("/profile"), "{v:?}: {url}");
                }
                Err(why) => {
                    assert!(matches!(v, "." | ".."), "{v:?} is harmless: {why}");
                    assert!(why.contains("not sent") && why.contains(".."), "{why}");
                }
            }
        }
        // Dots in the query are only data.
        let ctx = json!({"memory": {"x": "a"}});
        let q: StoryWebhook =
            serde_json::from_value(json!({"name": "n", "url": "http://api.test/s?q={{memory.x}}"}))
                .unwrap();
        let ctx2 = json!({"memory": {"x": ".."}});
        assert!(prepare(&q, &ctx2, &[], 0).is_ok());
        assert!(prepare(&hook, &ctx, &[], 0).is_ok());
    }

    #[test]
    fn a_definition_saved_before_the_rules_is_refused_unsent() {
        for (bad, why) in [
            (
                json!({"name": "n", "url": "http://{{memory.host}}:9001/x"}),
                "merge tags",
            ),
            (
                json!({"name": "n", "url": "http://a.test/", "headers": {"expect": "100-continue"}}),
                "expect",
            ),
            (
                json!({"name": "n", "url": "http://a.test/", "headers": {"x-a": "1\r\nx-b: 2"}}),
                "control",
            ),
        ] {
            let hook: StoryWebhook = serde_json::from_value(bad).unwrap();
            let e = prepare(&hook, &json!({}), &[], 0).err().unwrap();
            assert!(e.contains("not sent") && e.contains(why), "{e}");
        }
    }

    #[test]
    fn rendered_header_values_lose_control_characters_and_secrets_are_logged_redacted() {
        let hook: StoryWebhook = serde_json::from_value(json!({
            "name": "n", "url": "http://api.test/x",
            "headers": {
                "x-who": {"value": "{{memory.name}}", "sensitive": false},
                "x-signature": "hmac-{{memory.name}}-0123456789"
            }
        }))
        .unwrap();
        let ctx = json!({"memory": {"name": "Ana\r\nx-admin: true\u{0}"}});
        let p = prepare(&hook, &ctx, &[Secret::generate()], 0).unwrap();
        let who = &p
            .request
            .headers
            .iter()
            .find(|(k, _)| k == "x-who")
            .unwrap()
            .1;
        assert_eq!(who, "Ana  x-admin: true ");
        let logged = redact(&p.request.headers, &hook.headers);
        let get = |n: &str| logged.iter().find(|(k, _)| k == n).unwrap().1.clone();
        assert_eq!(get("x-who"), "Ana  x-admin: true ", "plain stays");
        assert_eq!(get("x-signature"), "••••6789", "secret is redacted");
        assert_eq!(get("webhook-signature"), "***");
        assert!(get("webhook-id").starts_with("call_"));
        // An old record, written when only secret-looking names were
        // redacted, is redacted again when shown.
        let mut old = json!({"request_headers": [["x-signature", "hmac-top-secret-1"], ["x-who", "Ana"], ["content-type", "application/json"], ["authorization", "***"]]});
        redact_record(&mut old, Some(&hook));
        assert_eq!(
            old["request_headers"],
            json!([
                ["x-signature", "••••et-1"],
                ["x-who", "Ana"],
                ["content-type", "application/json"],
                ["authorization", "***"]
            ])
        );
        let mut gone = json!({"request_headers": [["x-who", "Ana"]]});
        redact_record(&mut gone, None);
        assert_eq!(gone["request_headers"], json!([["x-who", "••••"]]));
    }

    #[test]
    fn get_params_go_to_the_query_and_others_to_a_json_body() {
        let ctx = json!({"memory": {"thing": "a b/c"}, "user": {"name": "Ana \"x\""}});
        let secrets = [Secret::generate()];
        let get = prepare(&def("GET"), &ctx, &secrets, 1_700_000_000).unwrap();
        assert_eq!(
            get.request.url,
            "http://api.test/r/a%20b%2Fc?min=10&who=Ana%20%22x%22&n=5"
        );
        assert!(get.request.body.is_none());
        let post = prepare(&def("POST"), &ctx, &secrets, 1_700_000_000).unwrap();
        let body: serde_json::Value =
            serde_json::from_slice(post.request.body.as_ref().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"min": "10", "who": "Ana \"x\"", "n": 5}),
            "no JSON injection"
        );
        let names: Vec<&str> = post
            .request
            .headers
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert!(names.contains(&"webhook-signature") && names.contains(&"x-team"));
        let sig = &post
            .request
            .headers
            .iter()
            .find(|(k, _)| k == "webhook-signature")
            .unwrap()
            .1;
        let ts = 1_700_000_000i64;
        signing::verify(
            &secrets,
            &post.id,
            &ts.to_string(),
            sig,
            post.request.body.as_ref().unwrap(),
            ts,
            300,
        )
        .expect("the request verifies with the bot's secret");
        let mut unsigned = def("POST");
        unsigned.sign = Some(false);
        let p = prepare(&unsigned, &ctx, &secrets, ts).unwrap();
        assert!(
            !p.request
                .headers
                .iter()
                .any(|(k, _)| k.starts_with("webhook-"))
        );
        assert_eq!(p.request.timeout, Some(Duration::from_millis(10_000)));
    }

    #[test]
    fn the_test_bench_shows_replies_as_the_conversation_would() {
        let reply = WebhookReply::from_json(&serde_json::json!({
            "responses": ["Hello Ana, you are gold.", "  "],
            "memory": {"vip": true, "old": null},
            "user_attributes": {"tier": "gold"},
            "quickreplies": ["Yes"]
        }))
        .unwrap();
        let memory = serde_json::json!({"name": "Ana", "old": 1});
        let user = serde_json::json!({"tier": "silver"});
        let got = would_merge(
            &reply,
            memory.as_object().unwrap(),
            user.as_object().unwrap(),
        );
        assert_eq!(
            got["responses"],
            serde_json::json!(["Hello Ana, you are gold."])
        );
        assert_eq!(
            got["memory"],
            serde_json::json!({"name": "Ana", "vip": true})
        );
        assert_eq!(got["user"], serde_json::json!({"tier": "gold"}));
        assert_eq!(got["quickreplies"], serde_json::json!(["Yes"]));
    }

    #[test]
    fn the_test_bench_shows_returned_text_as_text() {
        let echoed = "{{memory.secret}} {{contact.id}} {{user.tier}}";
        let reply = WebhookReply::from_json(&serde_json::json!({
            "responses": [echoed], "quickreplies": [echoed],
        }))
        .unwrap();
        let memory = serde_json::json!({"secret": "s3cr3t"});
        let user = serde_json::json!({"tier": "gold"});
        let got = would_merge(
            &reply,
            memory.as_object().unwrap(),
            user.as_object().unwrap(),
        );
        assert_eq!(got["responses"], serde_json::json!([echoed]));
        assert_eq!(got["quickreplies"], serde_json::json!([echoed]));
    }

    #[test]
    fn secrets_rotate_with_a_grace_period() {
        let first = fresh_secrets();
        assert_eq!(live_secrets(&first, 0).len(), 1);
        let rotated = rotate_secrets(&first, 1_000, 500);
        assert_eq!(
            live_secrets(&rotated, 1_200).len(),
            2,
            "both sign during the grace period"
        );
        assert_eq!(
            live_secrets(&rotated, 1_600).len(),
            1,
            "the old one stops after it"
        );
        let again = rotate_secrets(&rotated, 2_000, 500);
        assert_eq!(
            live_secrets(&again, 2_100).len(),
            2,
            "expired secrets are dropped"
        );
        assert!(!format!("{:?}", live_secrets(&again, 0)[0]).contains("whsec_"));
    }

    #[test]
    fn answers_are_read_or_refused_with_a_reason() {
        let attempt = |status: Option<u16>, body: &str, error| Attempt {
            started_at_ms: 0,
            duration_ms: 1,
            status,
            response_headers: vec![],
            response_body: body.into(),
            error,
            error_message: None,
            retry_after: None,
        };
        let ok = interpret(&attempt(
            Some(200),
            r#"{"responses": ["hi"], "other": 1}"#,
            None,
        ))
        .unwrap();
        assert_eq!(ok.responses, ["hi"]);
        assert!(
            interpret(&attempt(Some(200), "not json", None))
                .unwrap_err()
                .contains("not JSON")
        );
        assert!(
            interpret(&attempt(Some(200), r#"{"memory": []}"#, None))
                .unwrap_err()
                .contains("memory")
        );
        let e = interpret(&attempt(
            Some(500),
            "",
            Some(crate::delivery::http::ErrorKind::Status),
        ))
        .unwrap_err();
        assert!(e.contains("500"), "{e}");
        let e = interpret(&attempt(
            None,
            "",
            Some(crate::delivery::http::ErrorKind::Timeout),
        ))
        .unwrap_err();
        assert!(e.contains("timeout"), "{e}");
    }
}
