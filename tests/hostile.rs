//! Hostile input at the HTTP level: deeply nested JSON, huge headers, an
//! oversize body, and a body dripped one byte at a time. Each gets a 4xx or
//! a closed connection, and the server keeps answering everyone else.

use botwire::api::{self, AppState, RouterOptions};
use botwire::auth::Pepper;
use botwire::store::Store;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Server {
    addr: String,
    key: String,
    _dir: std::path::PathBuf,
}

async fn server() -> Server {
    let dir = std::env::temp_dir().join(format!(
        "botwire-hostile-{}",
        botwire::domain::ids::new_id("t")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.join("h.db").display()))
        .await
        .unwrap();
    let pepper = Pepper::new(b"p".to_vec());
    let (_, key) = store.bootstrap(&pepper).await.unwrap().unwrap();
    let delivery = botwire::delivery::Delivery::new(Default::default()).unwrap();
    let app = api::router(
        AppState::new(store, pepper, delivery),
        &RouterOptions {
            body_limit: 64 * 1024,
            body_deadline: Duration::from_secs(1),
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server {
        addr,
        key,
        _dir: dir,
    }
}

/// Sends raw bytes and returns the status line (empty when the server
/// closed the connection without answering).
async fn raw(addr: &str, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("the server answers or closes, it does not hang")
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

async fn healthz_fast(addr: &str) {
    let t = Instant::now();
    let line = raw(
        addr,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(line.contains("200"), "{line}");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "healthz took {:?}",
        t.elapsed()
    );
}

fn post(key: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST /v1/bots HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_json_huge_headers_and_oversize_bodies_get_4xx() {
    let s = server().await;
    let nested = "[".repeat(60_000);
    let line = raw(&s.addr, &post(&s.key, nested.as_bytes())).await;
    assert!(
        line.contains(" 400 ") || line.contains(" 422 "),
        "nested JSON: {line}"
    );
    let deep_object = format!(
        "{{\"name\":{}1{}, \"type\":\"support\"}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let line = raw(&s.addr, &post(&s.key, deep_object.as_bytes())).await;
    assert!(
        line.contains(" 400 ") || line.contains(" 422 "),
        "deep value: {line}"
    );

    let line = raw(&s.addr, &post(&s.key, &vec![b' '; 200 * 1024])).await;
    assert!(
        line.contains(" 413 ") || line.is_empty(),
        "oversize body: {line}"
    );

    let huge = format!(
        "GET /v1/bots HTTP/1.1\r\nhost: x\r\nx-big: {}\r\nconnection: close\r\n\r\n",
        "a".repeat(512 * 1024)
    );
    let line = raw(&s.addr, huge.as_bytes()).await;
    assert!(
        line.contains(" 431 ") || line.contains(" 400 ") || line.is_empty(),
        "huge header: {line}"
    );
    healthz_fast(&s.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dripped_body_is_cut_off_and_others_are_still_served() {
    let s = server().await;
    let mut drip = TcpStream::connect(&s.addr).await.unwrap();
    let head = format!(
        "POST /v1/bots HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n",
        s.key
    );
    drip.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let dripper = tokio::spawn(async move {
        let mut buf = vec![0u8; 1024];
        for _ in 0..100 {
            if drip.write_all(b" ").await.is_err() {
                break;
            }
            // A read that returns means the server answered or closed.
            if let Ok(r) =
                tokio::time::timeout(Duration::from_millis(200), drip.read(&mut buf)).await
            {
                let n = r.unwrap_or(0);
                return String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned();
            }
        }
        String::new()
    });
    // Meanwhile everyone else is served.
    for _ in 0..5 {
        healthz_fast(&s.addr).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let line = dripper.await.unwrap();
    let took = started.elapsed();
    eprintln!("dripped body: {line:?} after {took:?}");
    assert!(
        line.contains(" 408 ") || line.is_empty(),
        "dripped body: {line:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "cut off after {took:?}, not waited for"
    );
    healthz_fast(&s.addr).await;
}

// Connections: idle clients, request ids, CORS.

/// A server over a fresh database, served by `api::serve` with `options`
/// (the accept loop `botwire serve` uses). Returns its address.
async fn served(options: api::ServerOptions) -> (String, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "botwire-hostile-{}",
        botwire::domain::ids::new_id("t")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.join("h.db").display()))
        .await
        .unwrap();
    let pepper = Pepper::new(b"p".to_vec());
    store.bootstrap(&pepper).await.unwrap();
    let delivery = botwire::delivery::Delivery::new(Default::default()).unwrap();
    let app = api::router(
        AppState::new(store, pepper, delivery),
        &RouterOptions::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        api::serve(listener, app, &options, std::future::pending())
            .await
            .unwrap()
    });
    (addr, dir)
}

/// Opens `n` connections that each send part of a request (a cut request
/// line, or a request line and some headers) and then nothing.
async fn half_open(addr: &str, n: usize) -> Vec<(TcpStream, Instant)> {
    let mut idle = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(PARTIAL[i % 2]).await.unwrap();
        idle.push((s, Instant::now()));
    }
    idle
}

/// What idle clients send before they stop: a cut request line; a request
/// line and part of the headers.
const PARTIAL: [&[u8]; 2] = [
    b"GET /heal",
    b"POST /v1/bots HTTP/1.1\r\nhost: x\r\ncontent-type: appl",
];

/// Times one `/healthz` on a new connection, start to last byte.
async fn healthz_time(addr: &str) -> Duration {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("healthz answers")
        .unwrap();
    let took = t.elapsed();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    took
}

/// The connections this test may open: 2,000 idle ones (twice over, as
/// client and server sockets live in this process) fit the usual limit
/// here; a smaller limit gets fewer, said aloud.
fn idle_count() -> usize {
    let limit = botwire::api::server::open_file_limit().unwrap_or(u64::MAX);
    if limit >= 5_000 {
        2_000
    } else {
        let n = usize::try_from(limit / 3).unwrap_or(100);
        eprintln!("notice: ulimit -n is {limit}; using {n} idle connections instead of 2,000");
        n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_half_open_connections_neither_slow_healthz_nor_stay_open() {
    let n = idle_count();

    // 2,000 clients that send part of a request and wait: /healthz, probed
    // 200 times one after the other, stays fast.
    let (addr, _dir) = served(api::ServerOptions {
        header_read_timeout: Duration::from_secs(30),
        ..Default::default()
    })
    .await;
    let idle = half_open(&addr, n).await;
    let mut times = Vec::with_capacity(200);
    for _ in 0..200 {
        times.push(healthz_time(&addr).await);
    }
    times.sort();
    let (p50, p99, max) = (times[99], times[197], times[199]);
    eprintln!(
        "/healthz beside {n} idle connections, 200 probes: p50 {p50:?}, p99 {p99:?}, max {max:?}"
    );
    assert!(
        p99 < Duration::from_millis(50),
        "p99 {p99:?} with {n} idle connections open"
    );
    drop(idle);

    // With a 1 s header deadline, every one of them is closed 1 s after it
    // opened, without an answer.
    let deadline = Duration::from_secs(1);
    let (addr, _dir2) = served(api::ServerOptions {
        header_read_timeout: deadline,
        ..Default::default()
    })
    .await;
    let mut waits = tokio::task::JoinSet::new();
    for i in 0..n {
        // Taken before connecting, so the server's clock starts after it.
        let opened = Instant::now();
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(PARTIAL[i % 2]).await.unwrap();
        waits.spawn(async move {
            let mut buf = [0u8; 256];
            let got = tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf))
                .await
                .expect("closed by the header deadline")
                .unwrap_or(0);
            (opened.elapsed(), got)
        });
    }
    let mut closed_after = Vec::with_capacity(n);
    while let Some(r) = waits.join_next().await {
        let (after, got) = r.unwrap();
        assert_eq!(got, 0, "closed without an answer");
        closed_after.push(after);
    }
    closed_after.sort();
    let (first, last) = (closed_after[0], closed_after[n - 1]);
    eprintln!(
        "{n} idle connections with a {deadline:?} header deadline: closed after {first:?} to {last:?}"
    );
    assert!(first >= deadline, "closed early: {first:?}");
    assert!(last < deadline * 3, "closed late: {last:?}");
    healthz_time(&addr).await;
}

/// A `botwire serve` process on a fresh database, its stderr in a file.
struct Botwire {
    child: std::process::Child,
    addr: String,
    log: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl Botwire {
    /// Starts `botwire serve` on a random port with `env` set, the system
    /// resolver off, and waits until it listens.
    async fn start(env: &[(&str, &str)]) -> Botwire {
        let dir = std::env::temp_dir().join(format!(
            "botwire-hostile-bin-{}",
            botwire::domain::ids::new_id("t")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("stderr.log");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_botwire"));
        for (k, _) in std::env::vars() {
            if k.starts_with("BOTWIRE_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--database"])
            .arg(format!("sqlite://{}", dir.join("b.db").display()))
            .env("BOTWIRE_DELIVERY_SYSTEM_DNS", "false")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().expect("spawn botwire");
        let mut b = Botwire {
            child,
            addr: String::new(),
            log,
            dir,
        };
        let line = b.wait_for_log("listening on http://").await;
        b.addr = line
            .split("listening on http://")
            .nth(1)
            .unwrap()
            .trim()
            .to_owned();
        b
    }

    /// The log so far, without the terminal colour codes of the text format.
    fn log_text(&self) -> String {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut text = String::with_capacity(raw.len());
        let mut rest = raw.as_str();
        while let Some(i) = rest.find('\x1b') {
            text.push_str(&rest[..i]);
            rest = &rest[i..];
            rest = rest.find('m').map_or("", |m| &rest[m + 1..]);
        }
        text.push_str(rest);
        text
    }

    /// Waits (up to 20 s) for a line of the log containing `needle`.
    async fn wait_for_log(&mut self, needle: &str) -> String {
        let started = Instant::now();
        loop {
            if let Some(line) = self.log_text().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("botwire exited ({status}):\n{}", self.log_text());
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no log line with {needle:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Botwire {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_bound_the_oldest_idle_clients_make_room_for_healthz() {
    let mut server = Botwire::start(&[("BOTWIRE_HTTP_MAX_CONNECTIONS", "50")]).await;
    // More idle clients than the bound, then health checks: each answers.
    let idle = half_open(&server.addr, 120).await;
    for _ in 0..20 {
        let took = healthz_time(&server.addr).await;
        assert!(took < Duration::from_millis(500), "healthz took {took:?}");
    }
    let line = server
        .wait_for_log("connection limit reached (http.max_connections = 50)")
        .await;
    eprintln!("{line}");
    // The connections closed to make room were the oldest ones.
    let mut checks = tokio::task::JoinSet::new();
    for (i, (mut s, _)) in idle.into_iter().enumerate() {
        checks.spawn(async move {
            let mut buf = [0u8; 64];
            let r = tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await;
            (i, matches!(r, Ok(Ok(0)) | Ok(Err(_))), s)
        });
    }
    let (mut closed, mut still_open) = (Vec::new(), Vec::new());
    while let Some(r) = checks.join_next().await {
        match r.unwrap() {
            (i, true, _) => closed.push(i),
            (_, false, s) => still_open.push(s),
        }
    }
    closed.sort();
    eprintln!(
        "{} of 120 idle connections closed to make room",
        closed.len()
    );
    assert!(closed.len() >= 70, "only {} closed", closed.len());
    assert_eq!(
        closed,
        (0..closed.len()).collect::<Vec<_>>(),
        "the oldest go first"
    );

    // Stopping does not wait for the half-sent requests still open.
    assert!(!still_open.is_empty());
    let stopping = Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    server.wait_for_log("stopped cleanly").await;
    eprintln!(
        "stopped {:?} after SIGTERM with {} idle connections open",
        stopping.elapsed(),
        still_open.len()
    );
    assert!(stopping.elapsed() < Duration::from_secs(5));
}

/// The value of `name` in the head of a raw HTTP answer.
fn header_of(answer: &str, name: &str) -> Option<String> {
    answer.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_is_echoed_and_logged_only_when_it_is_a_plain_token() {
    let mut server = Botwire::start(&[("BOTWIRE_LOG", "info,tower_http=debug")]).await;
    let addr = server.addr.clone();
    let ask = |headers: Vec<u8>| {
        let addr = addr.clone();
        async move {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            let mut req = b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n".to_vec();
            req.extend_from_slice(&headers);
            req.extend_from_slice(b"\r\n");
            s.write_all(&req).await.unwrap();
            let mut answer = Vec::new();
            s.read_to_end(&mut answer).await.unwrap();
            let answer = String::from_utf8_lossy(&answer).into_owned();
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            header_of(&answer, "x-request-id").expect("every answer has an id")
        }
    };

    // Kept: 1 to 64 of A-Z a-z 0-9 . _ -
    for id in ["abc.DEF_123-x", "7", &"a".repeat(64)] {
        let echoed = ask(format!("x-request-id: {id}\r\n").into_bytes()).await;
        assert_eq!(echoed, id);
        server.wait_for_log(&format!("request_id={id}}}")).await;
    }

    // Replaced: anything that could pass for log syntax, too long, empty,
    // not ASCII, or given twice.
    let forged = "x} level=ERROR message=\"forged\" {y";
    let mut hostile: Vec<Vec<u8>> = vec![
        format!("x-request-id: {forged}\r\n").into_bytes(),
        format!("x-request-id: {}\r\n", "a".repeat(65)).into_bytes(),
        b"x-request-id: \r\n".to_vec(),
        b"x-request-id: caf\xc3\xa9\r\n".to_vec(),
        b"x-request-id: one\r\nx-request-id: two\r\n".to_vec(),
        b"x-request-id: a b\r\n".to_vec(),
    ];
    for (i, headers) in hostile.drain(..).enumerate() {
        let echoed = ask(headers).await;
        assert!(
            echoed.starts_with("req_") && botwire::api::is_valid_request_id(echoed.as_bytes()),
            "case {i}: {echoed:?}"
        );
        server.wait_for_log(&format!("request_id={echoed}}}")).await;
    }
    let log = server.log_text();
    assert!(!log.contains("forged"), "{log}");
    assert!(!log.contains(&"a".repeat(65)), "{log}");
}
