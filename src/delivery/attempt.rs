//! One attempt of one delivery: render, sign, send, and decide what the
//! delivery becomes.
//!
//! [`Delivery`] is the shared, cheap-to-clone handle the engine's workers
//! and the API's "send now" routes (test, manual retry) both use, so every
//! request is built the same way:
//!
//! * the body is the endpoint's format ([`format::render`]) with its extra
//!   params merged in;
//! * `webhook-id` is the event id (the same on every retry),
//!   `webhook-timestamp` the real time of this attempt, `webhook-signature`
//!   one `v1,` signature per live secret (two during a rotation);
//! * the endpoint's custom headers follow; `user-agent` is `botwire/<version>`;
//! * the attempt is logged with every custom header value redacted
//!   (`••••` and its last four characters) unless the endpoint marks it
//!   plain; the engine's own headers are logged as sent.

use super::clock::Clock;
use super::format::{self, EventView};
use super::http::{Attempt, ErrorKind, OutboundClient, OutboundRequest};
use super::schedule::RetrySchedule;
use super::signing::{self, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use super::ssrf::{AllowList, NameTable};
use crate::domain::ids::new_id;
use crate::domain::outbound::{self, CustomHeader};
use crate::store::deliveries::{AttemptRow, DeliveryTicket, NextState, Outcome};
use crate::telemetry::AttemptResult;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How deliveries are made; see `[delivery]` in the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Networks the SSRF guard lets through.
    pub allow: AllowList,
    /// Where hostnames are looked up (`delivery.hosts`,
    /// `delivery.system_dns`). The default has no entries and no system
    /// resolver, so tests built on it never resolve an outside name.
    pub names: NameTable,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Delays between attempts.
    pub schedule: RetrySchedule,
    /// Disable an endpoint failing without success this long.
    pub disable_after: Duration,
    /// How long a rotated-out secret keeps signing.
    pub secret_grace: Duration,
    /// How long a worker's hold on a delivery lasts.
    pub lease: Duration,
    /// Requests in flight to one endpoint at most.
    pub per_endpoint: usize,
    /// Requests in flight in this process at most.
    pub global: usize,
    /// Failed attempts in a row after which an endpoint is sent one
    /// delivery at a time until one succeeds (its circuit opens); 0 never.
    pub break_after: u32,
    /// How often the claim loop looks for due deliveries when nothing
    /// wakes it; `None` makes the engine steppable (tests call
    /// `run_due_once`).
    pub poll: Option<Duration>,
    /// The scheduling clock.
    pub clock: Arc<dyn Clock>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            allow: AllowList::empty(),
            names: NameTable::default(),
            timeout: Duration::from_secs(15),
            schedule: RetrySchedule::default(),
            disable_after: Duration::from_secs(5 * 86_400),
            secret_grace: Duration::from_secs(86_400),
            lease: Duration::from_secs(120),
            per_endpoint: 16,
            global: 256,
            break_after: 10,
            poll: Some(Duration::from_secs(1)),
            clock: Arc::new(super::clock::SystemClock),
        }
    }
}

impl Settings {
    /// Settings from the configuration file's `[delivery]` and `allow_nets`.
    pub fn from_config(config: &crate::config::Config) -> Result<Self, String> {
        let d = &config.delivery;
        let names = NameTable::parse(&d.hosts, d.system_dns).map_err(|e| e.to_string())?;
        Ok(Self {
            allow: config.allow_nets.clone(),
            names,
            timeout: d.timeout,
            schedule: d.retry_schedule.clone(),
            disable_after: d.disable_after,
            secret_grace: d.secret_grace,
            lease: d.lease,
            per_endpoint: d.max_in_flight_per_endpoint,
            global: d.max_in_flight,
            break_after: d.break_after,
            ..Self::default()
        })
    }
}

/// The user agent of every outbound request.
pub fn user_agent() -> String {
    format!("botwire/{}", env!("CARGO_PKG_VERSION"))
}

struct Shared {
    settings: Settings,
    client: OutboundClient,
}

/// Makes attempts: the guarded client plus the settings. Cheap to clone.
#[derive(Clone)]
pub struct Delivery(Arc<Shared>);

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("settings", &self.0.settings)
            .finish()
    }
}

impl Delivery {
    /// Builds the outbound client for these settings.
    pub fn new(settings: Settings) -> Result<Self, super::http::ClientBuildError> {
        let client = OutboundClient::new(
            settings.allow.clone(),
            settings.names.clone(),
            settings.timeout,
            &user_agent(),
        )?;
        Ok(Self(Arc::new(Shared { settings, client })))
    }

    /// The guarded outbound client (shared with story webhooks).
    pub fn client(&self) -> &OutboundClient {
        &self.0.client
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    /// Now, by the scheduling clock.
    pub fn now_ms(&self) -> i64 {
        self.0.settings.clock.now_ms()
    }

    /// The request this ticket makes: method, URL, headers, body.
    pub fn request(&self, ticket: &DeliveryTicket, signed_at_secs: i64) -> OutboundRequest {
        let ep = &ticket.endpoint;
        let ev = &ticket.event;
        let data: serde_json::Value =
            serde_json::from_str(&ev.data).unwrap_or(serde_json::Value::Null);
        let body = format::render(
            ep.format,
            &EventView {
                id: &ev.id,
                event_type: &ev.event_type,
                bot_id: &ev.bot_id,
                occurred_at_ms: ev.created_at,
                data: &data,
            },
            (!ep.body.is_empty()).then_some(&ep.body),
        );
        let secrets = ep.live_secrets(crate::store::now_ms());
        let signature = signing::signature_header(&secrets, &ev.id, signed_at_secs, &body);
        let mut headers = Vec::with_capacity(4 + ep.headers.len());
        headers.push(("content-type".to_owned(), "application/json".to_owned()));
        headers.push((HEADER_ID.to_owned(), ev.id.clone()));
        headers.push((HEADER_TIMESTAMP.to_owned(), signed_at_secs.to_string()));
        headers.push((HEADER_SIGNATURE.to_owned(), signature));
        for (k, h) in &ep.headers {
            headers.push((k.clone(), h.value.clone()));
        }
        if let Some(trace) = ev
            .trace_id
            .as_deref()
            .and_then(crate::trace::TraceId::parse)
        {
            crate::trace::add_traceparent(&mut headers, &trace);
        }
        OutboundRequest {
            method: reqwest::Method::POST,
            url: ep.url.clone(),
            headers,
            body: Some(body),
            timeout: None,
        }
    }

    /// Sends one attempt of `ticket` and decides what the delivery becomes.
    pub async fn attempt(&self, ticket: &DeliveryTicket) -> (Attempt, Outcome) {
        let signed_at = chrono::Utc::now().timestamp();
        let request = self.request(ticket, signed_at);
        let logged_headers = redacted_headers(&request.headers, &ticket.endpoint.headers);
        let sent = std::time::Instant::now();
        let attempt = self.0.client.send(request).await;
        let elapsed = sent.elapsed();
        let outcome = self.outcome(ticket, &attempt, logged_headers);
        crate::telemetry::delivery_attempt(
            &ticket.event.event_type,
            attempt.error.map(ErrorKind::as_str),
            match outcome.next {
                NextState::Succeeded => AttemptResult::Succeeded,
                NextState::Dead => AttemptResult::Dead,
                NextState::RetryAt(_) | NextState::Held => AttemptResult::Retrying,
            },
            elapsed,
        );
        (attempt, outcome)
    }

    /// What the delivery becomes after `attempt`.
    fn outcome(&self, ticket: &DeliveryTicket, attempt: &Attempt, headers: String) -> Outcome {
        let now = self.now_ms();
        let next = if attempt.is_success() {
            NextState::Succeeded
        } else if ticket.final_attempt {
            NextState::Dead
        } else {
            let jitter = rand::random::<f64>() * 2.0 - 1.0;
            match self.0.settings.schedule.next_delay(
                ticket.attempts.saturating_add(1),
                jitter,
                attempt.retry_after,
            ) {
                Some(d) => {
                    NextState::RetryAt(now + i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2))
                }
                None => NextState::Dead,
            }
        };
        Outcome {
            delivery_id: ticket.delivery_id.clone(),
            endpoint_id: ticket.endpoint.id.clone(),
            account_id: ticket.endpoint.account_id.clone(),
            attempt: Some(AttemptRow {
                id: new_id("att"),
                delivery_id: ticket.delivery_id.clone(),
                endpoint_id: ticket.endpoint.id.clone(),
                started_at: attempt.started_at_ms,
                duration_ms: i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX),
                request_headers: headers,
                status: attempt.status.map(i64::from),
                response_body: attempt.response_body.clone(),
                error_kind: attempt.error.map(|k| k.as_str().to_owned()),
                error_message: attempt.error_message.clone(),
                // Filled in by whoever records it (the engine's recorder,
                // or the API for its own sends).
                node: None,
            }),
            next,
            gone: attempt.status == Some(410) && attempt.error == Some(ErrorKind::Status),
        }
    }
}

/// An outcome that records nothing but releases the lease (the endpoint is
/// disabled or gone, so the delivery waits).
pub fn held(ticket: &DeliveryTicket) -> Outcome {
    Outcome {
        delivery_id: ticket.delivery_id.clone(),
        endpoint_id: ticket.endpoint.id.clone(),
        account_id: ticket.endpoint.account_id.clone(),
        attempt: None,
        next: NextState::Held,
        gone: false,
    }
}

/// The headers the engine writes itself (not secrets: the signature is
/// made for this one request).
fn engine_header(name: &str) -> bool {
    [
        "content-type",
        "user-agent",
        HEADER_ID,
        HEADER_TIMESTAMP,
        HEADER_SIGNATURE,
        crate::trace::TRACEPARENT,
    ]
    .iter()
    .any(|h| h.eq_ignore_ascii_case(name))
}

/// How one request header is logged: the engine's own headers and the
/// custom headers `custom` marks plain as they are, any other value
/// redacted. `stored`: the value comes from the log, where one already
/// redacted (`***` or `••••…`) stays as it is.
pub fn logged_header(
    name: &str,
    value: &str,
    custom: &BTreeMap<String, CustomHeader>,
    stored: bool,
) -> String {
    let plain = custom
        .iter()
        .any(|(k, h)| k.eq_ignore_ascii_case(name) && !h.sensitive);
    // A `traceparent` the endpoint configured itself is its own header.
    let own_trace = name.eq_ignore_ascii_case(crate::trace::TRACEPARENT)
        && custom.keys().any(|k| k.eq_ignore_ascii_case(name));
    if (engine_header(name) && !own_trace)
        || plain
        || (stored && (value == "***" || value.starts_with(outbound::REDACTED)))
    {
        value.to_owned()
    } else {
        outbound::redact(value)
    }
}

/// The request headers as a JSON object for the attempt log, with every
/// custom header value redacted unless `custom` (the endpoint's headers)
/// marks it plain.
pub fn redacted_headers(
    headers: &[(String, String)],
    custom: &BTreeMap<String, CustomHeader>,
) -> String {
    let mut map = serde_json::Map::new();
    map.insert("user-agent".into(), user_agent().into());
    for (k, v) in headers {
        map.insert(k.clone(), logged_header(k, v, custom, false).into());
    }
    serde_json::Value::Object(map).to_string()
}

/// A logged request-headers object as shown, redacted again by the
/// endpoint's headers as they are now (`custom`), so attempts logged before
/// custom headers were secrets by default show none in clear either.
pub fn shown_headers(logged: &str, custom: &BTreeMap<String, CustomHeader>) -> serde_json::Value {
    let mut value: serde_json::Value =
        serde_json::from_str(logged).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(map) = &mut value {
        for (k, v) in map.iter_mut() {
            if let serde_json::Value::String(text) = v {
                *text = logged_header(k, text, custom, true);
            }
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_redaction() {
        use crate::config::parse_span;
        assert_eq!(parse_span("15s"), Ok(Duration::from_secs(15)));
        assert!(parse_span("5s,5m").unwrap_err().contains("one span"));
        let custom: BTreeMap<String, CustomHeader> = [
            ("authorization".into(), CustomHeader::secret("Bearer abc")),
            (
                "x-signature".into(),
                CustomHeader::secret("hmac-0123456789abcdef"),
            ),
            ("x-pass".into(), CustomHeader::secret("hunter2")),
            ("x-team".into(), CustomHeader::plain("red")),
        ]
        .into();
        let sent: Vec<(String, String)> = [
            ("content-type", "application/json"),
            ("webhook-id", "evt_1"),
            ("webhook-signature", "v1,abc"),
            ("authorization", "Bearer abc"),
            ("x-signature", "hmac-0123456789abcdef"),
            ("x-pass", "hunter2"),
            ("x-team", "red"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let h: serde_json::Value = serde_json::from_str(&redacted_headers(&sent, &custom)).unwrap();
        assert_eq!(h["authorization"], "••••");
        assert_eq!(h["x-signature"], "••••cdef");
        assert_eq!(h["x-pass"], "••••");
        assert_eq!(h["x-team"], "red", "plain headers are logged as sent");
        assert_eq!(h["webhook-signature"], "v1,abc");
        assert_eq!(h["content-type"], "application/json");
        assert!(h["user-agent"].as_str().unwrap().starts_with("botwire/"));
        // A log line written before: redacted again when shown, by the
        // endpoint's headers as they are now.
        let old = r#"{"x-signature":"hmac-0123456789abcdef","x-team":"red","authorization":"***","webhook-id":"evt_1"}"#;
        let shown = shown_headers(old, &custom);
        assert_eq!(shown["x-signature"], "••••cdef");
        assert_eq!(shown["x-team"], "red");
        assert_eq!(shown["authorization"], "***");
        assert_eq!(shown["webhook-id"], "evt_1");
        assert_eq!(shown_headers(old, &BTreeMap::new())["x-team"], "••••");
    }
}
