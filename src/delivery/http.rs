//! The outbound HTTP client: one request in, one [`Attempt`] out.
//!
//! Both event webhooks and story webhooks go through [`OutboundClient::send`],
//! which never fails: every outcome, good or bad, is an [`Attempt`] ready to be
//! logged, with an [`ErrorKind`] that the retry logic and the console can act on.
//!
//! Invariants:
//! - no connection is opened to an address the SSRF guard refuses: literal-IP
//!   URLs are checked by [`check_url`] before sending (reqwest would connect to
//!   them without asking the resolver), and hostnames are resolved only through
//!   [`GuardedResolver`], which asks the system resolver only when its
//!   [`NameTable`] allows it;
//! - redirects are never followed and proxies never used (a redirect or a proxy
//!   would lead the request somewhere the guard did not check); a 3xx is a failure;
//! - at most [`MAX_RESPONSE_BODY`] bytes of a response body are read, whatever
//!   its size, and the rest is never pulled off the socket;
//! - the whole exchange (connect, send, headers, body) is bounded by the timeout.
//!
//! Connections are pooled per host by reqwest; bounding concurrency per endpoint
//! is the caller's job.

use std::error::Error as StdError;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use serde::{Deserialize, Serialize};

use crate::delivery::schedule::parse_retry_after;
use crate::delivery::ssrf::{
    AllowList, GuardedResolver, NameTable, ResolveError, UrlError, check_url,
};

/// Most response-body bytes read and kept per attempt (16 KiB).
pub const MAX_RESPONSE_BODY: usize = 16 * 1024;

/// Why an attempt did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No complete answer within the timeout.
    Timeout,
    /// The TCP connection could not be made, or broke before an answer.
    Connect,
    /// The hostname could not be resolved.
    Dns,
    /// The SSRF guard refused the target; nothing was sent.
    Blocked,
    /// The TLS handshake failed (bad certificate, not TLS, …).
    Tls,
    /// An answer came, with a status other than 2xx (3xx included).
    Status,
    /// The request itself is unusable (bad URL syntax or scheme, bad header); nothing was sent.
    Invalid,
}

impl ErrorKind {
    /// The snake_case name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Dns => "dns",
            ErrorKind::Blocked => "blocked",
            ErrorKind::Tls => "tls",
            ErrorKind::Status => "status",
            ErrorKind::Invalid => "invalid",
        }
    }
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    /// HTTP method.
    pub method: reqwest::Method,
    /// Target URL, as the user wrote it (it is checked here).
    pub url: String,
    /// Headers to send, in order; repeated names are all sent.
    pub headers: Vec<(String, String)>,
    /// Body bytes, if any.
    pub body: Option<Vec<u8>>,
    /// A timeout for this request instead of the client's.
    pub timeout: Option<Duration>,
}

/// What happened when one request was tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// When the attempt started, in ms since the Unix epoch.
    pub started_at_ms: i64,
    /// How long it took, in ms.
    pub duration_ms: u64,
    /// The response status, when a response came.
    pub status: Option<u16>,
    /// Response headers, values decoded lossily as UTF-8.
    pub response_headers: Vec<(String, String)>,
    /// The first [`MAX_RESPONSE_BODY`] bytes of the response body, lossy UTF-8.
    pub response_body: String,
    /// Why it failed; `None` means success (a 2xx).
    pub error: Option<ErrorKind>,
    /// A human-readable explanation of `error`.
    pub error_message: Option<String>,
    /// The response's `Retry-After`, when present and readable (uncapped).
    pub retry_after: Option<Duration>,
}

impl Attempt {
    /// True when the receiver answered 2xx.
    pub fn is_success(&self) -> bool {
        self.error.is_none() && matches!(self.status, Some(200..=299))
    }
}

/// The reqwest client could not be built (TLS initialisation failed).
#[derive(Debug, thiserror::Error)]
#[error("could not build the outbound HTTP client")]
pub struct ClientBuildError(#[source] reqwest::Error);

/// The guarded HTTP client shared by every outbound call.
///
/// Cheap to clone: clones share the connection pool.
#[derive(Debug, Clone)]
pub struct OutboundClient {
    client: reqwest::Client,
    allow: Arc<AllowList>,
}

impl OutboundClient {
    /// Builds the client: no redirects, no proxies, the guarded resolver
    /// looking names up through `names`, `timeout` over each whole exchange,
    /// and `user_agent` on every request.
    pub fn new(
        allow: AllowList,
        names: NameTable,
        timeout: Duration,
        user_agent: &str,
    ) -> Result<Self, ClientBuildError> {
        let allow = Arc::new(allow);
        // TLS uses rustls with the ring provider (chosen at build time because
        // it builds much faster than the default); installing it is idempotent.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(GuardedResolver::new(allow.clone(), Arc::new(names)))
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(user_agent)
            .build()
            .map_err(ClientBuildError)?;
        Ok(OutboundClient { client, allow })
    }

    /// The allowlist in force.
    pub fn allow_list(&self) -> &AllowList {
        &self.allow
    }

    /// Sends one request and reports what happened. Never fails, never panics.
    pub async fn send(&self, req: OutboundRequest) -> Attempt {
        let started_at_ms = chrono::Utc::now().timestamp_millis();
        let clock = Instant::now();
        let mut attempt = Attempt {
            started_at_ms,
            duration_ms: 0,
            status: None,
            response_headers: Vec::new(),
            response_body: String::new(),
            error: None,
            error_message: None,
            retry_after: None,
        };
        self.exchange(req, &mut attempt).await;
        attempt.duration_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
        attempt
    }

    async fn exchange(&self, req: OutboundRequest, attempt: &mut Attempt) {
        let fail = |attempt: &mut Attempt, kind: ErrorKind, message: String| {
            attempt.error = Some(kind);
            attempt.error_message = Some(message);
        };

        let url = match check_url(&req.url, &self.allow) {
            Ok(url) => url,
            Err(e @ (UrlError::Blocked(_) | UrlError::InternalHost(_))) => {
                return fail(attempt, ErrorKind::Blocked, e.to_string());
            }
            Err(e) => return fail(attempt, ErrorKind::Invalid, e.to_string()),
        };
        let is_https = url.scheme() == "https";

        let mut headers = HeaderMap::with_capacity(req.headers.len());
        for (name, value) in &req.headers {
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                return fail(
                    attempt,
                    ErrorKind::Invalid,
                    format!("header name {name:?} is not a valid HTTP header name"),
                );
            };
            let Ok(value) = HeaderValue::from_str(value) else {
                return fail(
                    attempt,
                    ErrorKind::Invalid,
                    format!("the value of header {name} is not a valid HTTP header value"),
                );
            };
            headers.append(name, value);
        }

        let mut builder = self.client.request(req.method, url).headers(headers);
        if let Some(t) = req.timeout {
            builder = builder.timeout(t);
        }
        if let Some(body) = req.body {
            builder = builder.body(body);
        }

        let mut response = match builder.send().await {
            Ok(r) => r,
            Err(e) => {
                let (kind, message) = classify(&e, is_https);
                return fail(attempt, kind, message);
            }
        };

        let status = response.status();
        attempt.status = Some(status.as_u16());
        attempt.response_headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        attempt.retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));

        // Read at most MAX_RESPONSE_BODY bytes, then drop the response, which
        // closes the connection instead of draining a body of any size. A body
        // that breaks off after the status line does not change the verdict: the
        // receiver has already answered.
        let mut body = Vec::with_capacity(MAX_RESPONSE_BODY.min(4096));
        while body.len() < MAX_RESPONSE_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_RESPONSE_BODY - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) | Err(_) => break,
            }
        }
        drop(response);
        attempt.response_body = String::from_utf8_lossy(&body).into_owned();

        if !status.is_success() {
            fail(
                attempt,
                ErrorKind::Status,
                format!(
                    "receiver answered HTTP {}{}",
                    status.as_u16(),
                    status
                        .canonical_reason()
                        .map(|r| format!(" {r}"))
                        .unwrap_or_default()
                ),
            );
        }
    }
}

/// Sorts a reqwest failure into an [`ErrorKind`] and a message naming every cause.
fn classify(err: &reqwest::Error, is_https: bool) -> (ErrorKind, String) {
    let message = error_chain(err);
    let mut io_kinds = Vec::new();
    let mut cause: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cause {
        if let Some(resolve) = e.downcast_ref::<ResolveError>() {
            let kind = match resolve {
                ResolveError::Blocked { .. } => ErrorKind::Blocked,
                ResolveError::Lookup { .. }
                | ResolveError::NoAddress { .. }
                | ResolveError::NotListed { .. } => ErrorKind::Dns,
            };
            return (kind, message);
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            io_kinds.push(io.kind());
        }
        cause = e.source();
    }

    if err.is_timeout() || io_kinds.contains(&io::ErrorKind::TimedOut) {
        return (ErrorKind::Timeout, message);
    }
    if err.is_builder() {
        return (ErrorKind::Invalid, message);
    }
    let network_failure = io_kinds.iter().any(|k| {
        matches!(
            k,
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::NotConnected
                | io::ErrorKind::AddrNotAvailable
                | io::ErrorKind::HostUnreachable
                | io::ErrorKind::NetworkUnreachable
                | io::ErrorKind::BrokenPipe
        )
    });
    if is_https && !network_failure && err.is_connect() && looks_like_tls(&message, &io_kinds) {
        return (ErrorKind::Tls, message);
    }
    (ErrorKind::Connect, message)
}

/// TLS failures reach us as io errors of kind `InvalidData` (rustls through
/// tokio-rustls) or as errors whose text names the handshake or certificate.
fn looks_like_tls(message: &str, io_kinds: &[io::ErrorKind]) -> bool {
    let lower = message.to_ascii_lowercase();
    io_kinds.contains(&io::ErrorKind::InvalidData)
        || [
            "tls",
            "certificate",
            "handshake",
            "alert",
            "corrupt message",
        ]
        .iter()
        .any(|needle| lower.contains(needle))
}

/// `outer: inner: innermost`, skipping a cause whose text repeats the one before.
fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cause: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cause {
        let text = e.to_string();
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
        cause = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// What the test receiver does with each request.
    #[derive(Clone)]
    enum Behaviour {
        /// Answer with these raw bytes, then close.
        Respond(String),
        /// Answer every request on the connection with these raw bytes, keeping it open.
        KeepAlive(String),
        /// Answer with these raw bytes as soon as anything arrives, then close
        /// (for clients that wait for the server, like a TLS handshake).
        Eager(String),
        /// Read the request, then never answer.
        Hang,
        /// Promise a 1 GB body and stream it until the client goes away.
        Endless,
    }

    /// A tiny HTTP/1.1 receiver on 127.0.0.1: counts connections, keeps requests.
    struct Receiver {
        addr: SocketAddr,
        connections: Arc<AtomicUsize>,
        requests: Arc<Mutex<Vec<Vec<u8>>>>,
        bytes_streamed: Arc<AtomicUsize>,
    }

    impl Receiver {
        async fn start(behaviour: Behaviour) -> Receiver {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let connections = Arc::new(AtomicUsize::new(0));
            let requests = Arc::new(Mutex::new(Vec::new()));
            let bytes_streamed = Arc::new(AtomicUsize::new(0));
            let (c, r, b) = (
                connections.clone(),
                requests.clone(),
                bytes_streamed.clone(),
            );
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    c.fetch_add(1, Ordering::SeqCst);
                    let (r, b, behaviour) = (r.clone(), b.clone(), behaviour.clone());
                    tokio::spawn(serve(stream, behaviour, r, b));
                }
            });
            Receiver {
                addr,
                connections,
                requests,
                bytes_streamed,
            }
        }

        fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }

        fn connections(&self) -> usize {
            self.connections.load(Ordering::SeqCst)
        }
    }

    async fn read_request(stream: &mut TcpStream) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    return buf;
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return buf,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    async fn serve(
        mut stream: TcpStream,
        behaviour: Behaviour,
        requests: Arc<Mutex<Vec<Vec<u8>>>>,
        streamed: Arc<AtomicUsize>,
    ) {
        if let Behaviour::Eager(raw) = &behaviour {
            let mut first = [0u8; 1024];
            let _ = stream.read(&mut first).await;
            let _ = stream.write_all(raw.as_bytes()).await;
            let _ = stream.shutdown().await;
            return;
        }
        let request = read_request(&mut stream).await;
        requests.lock().unwrap().push(request);
        match behaviour {
            Behaviour::Eager(_) => {}
            Behaviour::Respond(raw) => {
                let _ = stream.write_all(raw.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
            Behaviour::KeepAlive(raw) => loop {
                if stream.write_all(raw.as_bytes()).await.is_err() {
                    return;
                }
                let next = read_request(&mut stream).await;
                if next.is_empty() {
                    return;
                }
                requests.lock().unwrap().push(next);
            },
            Behaviour::Hang => tokio::time::sleep(Duration::from_secs(60)).await,
            Behaviour::Endless => {
                let head = "HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n";
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let block = vec![b'x'; 64 * 1024];
                while stream.write_all(&block).await.is_ok() {
                    streamed.fetch_add(block.len(), Ordering::SeqCst);
                }
            }
        }
    }

    fn respond(status_line: &str, extra_headers: &str, body: &str) -> Behaviour {
        Behaviour::Respond(format!(
            "HTTP/1.1 {status_line}\r\nContent-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n{body}",
            body.len()
        ))
    }

    fn client(allow: &[&str], timeout: Duration) -> OutboundClient {
        OutboundClient::new(
            AllowList::parse(allow).unwrap(),
            NameTable::default(),
            timeout,
            "botwire-test/1",
        )
        .unwrap()
    }

    fn local() -> OutboundClient {
        client(&["127.0.0.0/8"], Duration::from_secs(5))
    }

    fn post(url: String) -> OutboundRequest {
        OutboundRequest {
            method: reqwest::Method::POST,
            url,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("webhook-id".into(), "evt_1".into()),
                ("x-custom".into(), "a".into()),
                ("x-custom".into(), "b".into()),
            ],
            body: Some(br#"{"type":"webhook.test"}"#.to_vec()),
            timeout: None,
        }
    }

    #[tokio::test]
    async fn success_200_sends_everything() {
        let rx = Receiver::start(respond("200 OK", "X-Answer: yes\r\n", "thanks")).await;
        let a = local().send(post(rx.url("/hook?q=1"))).await;
        assert!(a.is_success(), "{a:?}");
        assert_eq!(a.status, Some(200));
        assert_eq!(a.error, None);
        assert_eq!(a.response_body, "thanks");
        assert!(
            a.response_headers
                .contains(&("x-answer".into(), "yes".into()))
        );
        assert!(a.started_at_ms > 1_600_000_000_000);
        let req = String::from_utf8(rx.requests.lock().unwrap()[0].clone()).unwrap();
        let lower = req.to_ascii_lowercase();
        assert!(req.starts_with("POST /hook?q=1 HTTP/1.1\r\n"), "{req}");
        assert!(lower.contains("user-agent: botwire-test/1\r\n"), "{req}");
        assert!(lower.contains("webhook-id: evt_1\r\n"), "{req}");
        assert!(
            lower.contains("x-custom: a\r\n") && lower.contains("x-custom: b\r\n"),
            "{req}"
        );
        assert!(
            req.ends_with("\r\n\r\n{\"type\":\"webhook.test\"}"),
            "{req}"
        );
    }

    #[tokio::test]
    async fn non_2xx_statuses_fail_with_status() {
        for (line, code) in [
            ("500 Internal Server Error", 500u16),
            ("410 Gone", 410),
            ("404 Not Found", 404),
        ] {
            let rx = Receiver::start(respond(line, "", "nope")).await;
            let a = local().send(post(rx.url("/"))).await;
            assert_eq!(a.status, Some(code));
            assert_eq!(a.error, Some(ErrorKind::Status));
            assert_eq!(a.response_body, "nope");
            assert!(
                a.error_message
                    .as_deref()
                    .unwrap()
                    .contains(&code.to_string())
            );
            assert!(!a.is_success());
        }
    }

    #[tokio::test]
    async fn redirects_are_failures_and_not_followed() {
        let rx = Receiver::start(respond(
            "302 Found",
            "Location: http://127.0.0.1:1/elsewhere\r\n",
            "",
        ))
        .await;
        let a = local().send(post(rx.url("/"))).await;
        assert_eq!(a.status, Some(302));
        assert_eq!(a.error, Some(ErrorKind::Status));
        assert_eq!(rx.connections(), 1);
        assert_eq!(rx.requests.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn retry_after_is_parsed() {
        let rx = Receiver::start(respond("429 Too Many Requests", "Retry-After: 7\r\n", "")).await;
        let a = local().send(post(rx.url("/"))).await;
        assert_eq!(a.status, Some(429));
        assert_eq!(a.retry_after, Some(Duration::from_secs(7)));

        let later = (chrono::Utc::now() + chrono::Duration::seconds(120))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let rx = Receiver::start(respond(
            "503 Service Unavailable",
            &format!("Retry-After: {later}\r\n"),
            "",
        ))
        .await;
        let a = local().send(post(rx.url("/"))).await;
        let ra = a.retry_after.unwrap();
        assert!(
            ra > Duration::from_secs(100) && ra <= Duration::from_secs(120),
            "{ra:?}"
        );
    }

    #[tokio::test]
    async fn hang_past_timeout_is_timeout() {
        let rx = Receiver::start(Behaviour::Hang).await;
        let c = client(&["127.0.0.0/8"], Duration::from_millis(300));
        let a = c.send(post(rx.url("/"))).await;
        assert_eq!(a.error, Some(ErrorKind::Timeout), "{a:?}");
        assert_eq!(a.status, None);
        assert!(
            a.duration_ms >= 250 && a.duration_ms < 5_000,
            "{}",
            a.duration_ms
        );
    }

    #[tokio::test]
    async fn closed_port_is_connect() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let a = local().send(post(format!("http://{addr}/"))).await;
        assert_eq!(a.error, Some(ErrorKind::Connect), "{a:?}");
        assert!(a.error_message.is_some());
    }

    #[tokio::test]
    async fn literal_loopback_is_blocked_before_connecting() {
        let rx = Receiver::start(respond("200 OK", "", "")).await;
        let guarded = client(&[], Duration::from_secs(5));
        let port = rx.addr.port();
        for url in [
            format!("http://127.0.0.1:{port}/"),
            format!("http://0x7f000001:{port}/"),
            format!("http://[::ffff:127.0.0.1]:{port}/"),
            format!("http://localhost:{port}/"),
        ] {
            let a = guarded.send(post(url.clone())).await;
            assert_eq!(a.error, Some(ErrorKind::Blocked), "{url}: {a:?}");
            assert_eq!(a.status, None);
        }
        assert_eq!(rx.connections(), 0);
    }

    #[tokio::test]
    async fn localhost_is_blocked_by_the_resolver() {
        let rx = Receiver::start(respond("200 OK", "", "")).await;
        // A non-empty allowlist that does not cover loopback lets `localhost`
        // past the URL check, so the refusal comes from the resolver.
        let c = client(&["198.51.100.0/24"], Duration::from_secs(5));
        let a = c
            .send(post(format!("http://localhost:{}/", rx.addr.port())))
            .await;
        assert_eq!(a.error, Some(ErrorKind::Blocked), "{a:?}");
        let msg = a.error_message.unwrap();
        assert!(msg.contains("resolves only to refused addresses"), "{msg}");
        assert_eq!(rx.connections(), 0);

        // With loopback allowed, the same name connects through the resolver.
        let a = local()
            .send(post(format!("http://localhost:{}/", rx.addr.port())))
            .await;
        assert!(a.is_success(), "{a:?}");
        assert_eq!(rx.connections(), 1);
    }

    #[tokio::test]
    async fn big_body_is_truncated_not_read_whole() {
        let rx = Receiver::start(Behaviour::Endless).await;
        let started = Instant::now();
        let a = local().send(post(rx.url("/"))).await;
        assert!(a.is_success(), "{a:?}");
        assert_eq!(a.response_body.len(), MAX_RESPONSE_BODY);
        assert!(a.response_body.bytes().all(|b| b == b'x'));
        assert!(started.elapsed() < Duration::from_secs(4));
        // The receiver's stream stops once we hang up, far short of the 1 GB it promised.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = rx.bytes_streamed.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = rx.bytes_streamed.load(Ordering::SeqCst);
        assert_eq!(before, after, "receiver still streaming");
        assert!(after < 100 * 1024 * 1024, "{after}");
    }

    #[tokio::test]
    async fn https_to_a_plain_http_server_is_tls() {
        let rx = Receiver::start(Behaviour::Eager(
            "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".into(),
        ))
        .await;
        let a = local()
            .send(post(format!("https://127.0.0.1:{}/", rx.addr.port())))
            .await;
        assert_eq!(a.error, Some(ErrorKind::Tls), "{a:?}");
    }

    #[tokio::test]
    async fn unknown_host_is_dns() {
        let a = client(&[], Duration::from_secs(5))
            .send(post("http://botwire-test.invalid/".into()))
            .await;
        assert_eq!(a.error, Some(ErrorKind::Dns), "{a:?}");
        // Found out without a lookup: the system resolver is off here.
        let msg = a.error_message.unwrap();
        assert!(msg.contains("not in delivery.hosts"), "{msg}");
    }

    #[tokio::test]
    async fn names_in_the_table_are_reached_without_a_resolver() {
        let rx = Receiver::start(respond("200 OK", "", "")).await;
        let mut names = NameTable::default();
        names.insert("hooks.botwire.test", rx.addr.ip()).unwrap();
        let c = OutboundClient::new(
            AllowList::parse(["127.0.0.0/8"]).unwrap(),
            names,
            Duration::from_secs(5),
            "botwire-test/1",
        )
        .unwrap();
        let port = rx.addr.port();
        for url in [
            format!("http://hooks.botwire.test:{port}/a"),
            format!("http://HOOKS.botwire.test.:{port}/b"),
        ] {
            let a = c.send(post(url.clone())).await;
            assert!(a.is_success(), "{url}: {a:?}");
        }
        assert_eq!(rx.connections(), 2);
        let a = c
            .send(post(format!("http://other.botwire.test:{port}/")))
            .await;
        assert_eq!(a.error, Some(ErrorKind::Dns), "{a:?}");
        assert_eq!(rx.connections(), 2);
    }

    #[tokio::test]
    async fn bad_requests_are_invalid_and_not_sent() {
        let rx = Receiver::start(respond("200 OK", "", "")).await;
        let c = local();
        let mut req = post(rx.url("/"));
        req.headers.push(("bad header".into(), "x".into()));
        let a = c.send(req).await;
        assert_eq!(a.error, Some(ErrorKind::Invalid), "{a:?}");
        let mut req = post(rx.url("/"));
        req.headers.push(("x-ok".into(), "line\nbreak".into()));
        assert_eq!(c.send(req).await.error, Some(ErrorKind::Invalid));
        let a = c.send(post("ftp://127.0.0.1/".into())).await;
        assert_eq!(a.error, Some(ErrorKind::Invalid));
        let a = c.send(post("http://user:pw@127.0.0.1/".into())).await;
        assert_eq!(a.error, Some(ErrorKind::Invalid));
        assert_eq!(rx.connections(), 0);
    }

    #[tokio::test]
    async fn connections_are_reused() {
        let rx = Receiver::start(Behaviour::KeepAlive(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".into(),
        ))
        .await;
        let c = local();
        for _ in 0..3 {
            assert!(c.send(post(rx.url("/"))).await.is_success());
        }
        assert_eq!(rx.requests.lock().unwrap().len(), 3);
        assert_eq!(rx.connections(), 1);
    }

    #[test]
    fn error_kind_serde_names() {
        for (k, s) in [
            (ErrorKind::Timeout, "timeout"),
            (ErrorKind::Connect, "connect"),
            (ErrorKind::Dns, "dns"),
            (ErrorKind::Blocked, "blocked"),
            (ErrorKind::Tls, "tls"),
            (ErrorKind::Status, "status"),
            (ErrorKind::Invalid, "invalid"),
        ] {
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{s}\""));
            assert_eq!(k.as_str(), s);
        }
    }
}
