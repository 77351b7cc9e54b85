//! The `botwire` binary as a user runs it: first start, keys from the shell,
//! clean shutdown on SIGTERM, and plain errors.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_botwire"));
    for (k, _) in std::env::vars() {
        if k.starts_with("BOTWIRE_") {
            c.env_remove(k);
        }
    }
    // No test sends a name to the system resolver.
    c.env("BOTWIRE_DELIVERY_SYSTEM_DNS", "false");
    c
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("botwire-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn last_line(out: &[u8]) -> String {
    String::from_utf8_lossy(out)
        .lines()
        .last()
        .unwrap_or("")
        .to_owned()
}

fn is_key(s: &str) -> bool {
    s.starts_with("bw_") && s.len() == 46
}

#[test]
fn keys_and_accounts_from_the_shell() {
    let dir = temp_dir("keys");
    let db = format!("sqlite://{}", dir.join("b.db").display());

    // A fresh database: `keys create` makes the account first.
    let out = bin()
        .args(["keys", "create", "--name", "ci", "--database", &db])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = last_line(&out.stdout);
    assert!(is_key(&key), "last line of stdout is the key: {key:?}");

    let out = bin()
        .args(["accounts", "create", "Second", "--database", &db])
        .output()
        .unwrap();
    assert!(out.status.success());
    let second = last_line(&out.stdout);
    assert!(is_key(&second) && second != key);

    let out = bin()
        .args(["keys", "list", "--database", &db])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        listing.contains("ci") && listing.contains("admin"),
        "{listing}"
    );
    assert!(!listing.contains(&key), "keys are never listed");
    let id = listing
        .lines()
        .find(|l| l.contains(" ci "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    let out = bin()
        .args(["keys", "revoke", &id, "--database", &db])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bin()
        .args(["keys", "list", "--database", &db])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked"));

    // A key for a bot that does not exist: a plain error, exit code 1.
    let out = bin()
        .args(["keys", "create", "--bot", "ghost", "--database", &db])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ghost"));

    // A publishable key for the widget: needs a bot and good origins.
    let out = bin()
        .args([
            "bots",
            "import",
            "examples/elipackage.yaml",
            "--database",
            &db,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bin()
        .args([
            "keys",
            "create",
            "--bot",
            "elipackage",
            "--origin",
            "shop.example",
            "--database",
            &db,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("https://shop.example.com"));
    let out = bin()
        .args([
            "keys",
            "create",
            "--origin",
            "https://shop.example",
            "--database",
            &db,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "--origin needs --bot");
    let out = bin()
        .args([
            "keys",
            "create",
            "--bot",
            "elipackage",
            "--name",
            "site",
            "--origin",
            "https://shop.example",
            "--origin",
            "http://localhost:8080",
            "--database",
            &db,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("publishable") && said.contains("http://localhost:8080"),
        "{said}"
    );
    let out = bin()
        .args(["keys", "list", "--database", &db])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.contains("site") && l.contains("publishable")),
        "{listing}"
    );

    // A bad database URL says what is expected.
    let out = bin()
        .args(["migrate", "--database", "mysql://x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sqlite://"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn config_prints_commented_defaults() {
    let out = bin().arg("config").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("listen = \"127.0.0.1:8080\""));
    assert!(text.contains("# "));
    assert!(
        text.parse::<toml::Table>().is_ok(),
        "the printed defaults are valid TOML"
    );
}

#[test]
fn serve_prints_the_first_key_once_and_stops_cleanly_on_sigterm() {
    let dir = temp_dir("serve");
    let db = format!("sqlite://{}", dir.join("s.db").display());
    let port = crate::common::server_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = bin()
        .args([
            "serve",
            "--listen",
            &listen,
            "--database",
            &db,
            "--allow-net",
            "127.0.0.0/8",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut key = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if is_key(line.trim()) {
            key = Some(line.trim().to_owned());
            break;
        }
    }
    let key = key.expect("the admin key is printed on first start");
    // Wait until it answers.
    let started = Instant::now();
    loop {
        if std::net::TcpStream::connect(&listen).is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "clean exit on SIGTERM: {exit:?}");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("stopped cleanly"), "{err}");
    assert!(!err.contains(&key), "the key never reaches the logs");

    // Second start: no new key.
    let mut child = bin()
        .args(["serve", "--listen", &listen, "--database", &db])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(started.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(
        !out.contains("bw_"),
        "the key is printed only on first start: {out}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bots_import_and_export_from_the_shell() {
    let dir = temp_dir("bots");
    let db = format!("sqlite://{}", dir.join("b.db").display());
    let out = bin()
        .args(["bots", "import", "examples/quote.yaml", "--database", &db])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("created bot quote (flow version 1)"));

    let out = bin()
        .args(["bots", "export", "quote", "--database", &db])
        .output()
        .unwrap();
    assert!(out.status.success());
    let yaml = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        yaml.contains("currency: EUR") && yaml.contains("start: product"),
        "{yaml}"
    );

    // The export imports again, as version 2.
    let file = dir.join("quote-export.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let out = bin()
        .args(["bots", "import", file.to_str().unwrap(), "--database", &db])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("updated bot quote (flow version 2)"));

    // A broken file names the node and field at fault, and changes nothing.
    let broken = dir.join("broken.yaml");
    std::fs::write(&broken, yaml.replace("next: quantity", "next: nowhere")).unwrap();
    let out = bin()
        .args([
            "bots",
            "import",
            broken.to_str().unwrap(),
            "--database",
            &db,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("product") && err.contains("nowhere"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// One HTTP/1.1 request over a fresh connection; answers status and body.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    key: &str,
    content_type: &str,
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw[9..12].parse().unwrap();
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

fn free_port() -> u16 {
    crate::common::server_port()
}

fn wait_for_port(addr: &str) {
    let started = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{addr} did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `botwire serve`; answers the child and, on a first start, the key.
fn start_server(db: &str, listen: &str, role: &str) -> (std::process::Child, Option<String>) {
    let mut child = bin()
        .args([
            "serve",
            "--listen",
            listen,
            "--database",
            db,
            "--role",
            role,
        ])
        .args(["--allow-net", "127.0.0.0/8"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if is_key(line.trim()) {
                let _ = tx.send(line.trim().to_owned());
            }
        }
    });
    wait_for_port(listen);
    // The port opens before migrations end; the key is printed before the
    // server is ready, so wait for readiness, then briefly for the line.
    let started = Instant::now();
    while http(listen, "GET", "/readyz", "", "text/plain", "").0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "botwire serve on {listen} never became ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, rx.recv_timeout(Duration::from_secs(2)).ok())
}

fn stop(child: &mut std::process::Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
}

#[test]
fn backup_under_write_load_restores_into_a_server_that_delivers_what_was_pending() {
    let dir = temp_dir("backup");
    let live = format!("sqlite://{}", dir.join("live.db").display());
    let copy = dir.join("copy.db");
    let restored = format!("sqlite://{}", dir.join("restored.db").display());

    // An API-only node: deliveries are written and wait for a worker.
    let listen = format!("127.0.0.1:{}", free_port());
    let (mut server, key) = start_server(&live, &listen, "api");
    let key = key.expect("first start prints the admin key");
    let bot = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/elipackage.yaml"
    ))
    .unwrap();
    let (status, body) = http(
        &listen,
        "POST",
        "/v1/bots/import",
        &key,
        "application/yaml",
        &bot,
    );
    assert_eq!(status, 201, "{body}");
    let receiver_port = free_port();
    let (status, body) = http(
        &listen,
        "POST",
        "/v1/bots/elipackage/endpoints",
        &key,
        "application/json",
        &format!(r#"{{"url": "http://127.0.0.1:{receiver_port}/hook"}}"#),
    );
    assert_eq!(status, 201, "{body}");

    // Write load: publish events one after another until told to stop.
    let stop_load = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let load = {
        let (stop_load, acked, listen, key) = (
            stop_load.clone(),
            acked.clone(),
            listen.clone(),
            key.clone(),
        );
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop_load.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let (status, body) = http(
                    &listen,
                    "POST",
                    "/v1/bots/elipackage/events",
                    &key,
                    "application/json",
                    &format!(r#"{{"type": "order.paid", "data": {{"n": {n}}}}}"#),
                );
                assert_eq!(status, 201, "{body}");
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                acked
                    .lock()
                    .unwrap()
                    .push(v["id"].as_str().unwrap().to_owned());
            }
        })
    };
    while acked.lock().unwrap().len() < 50 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let before: Vec<String> = acked.lock().unwrap().clone();
    let out = bin()
        .args(["backup", copy.to_str().unwrap(), "--database", &live])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("backed up"));
    let during = acked.lock().unwrap().len();
    std::thread::sleep(Duration::from_millis(200));
    stop_load.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().unwrap();
    let total = acked.lock().unwrap().len();
    assert!(
        total > during,
        "the load went on during and after the backup ({during} → {total})"
    );

    // A backup never overwrites; a live database is never restored over.
    let again = bin()
        .args(["backup", copy.to_str().unwrap(), "--database", &live])
        .output()
        .unwrap();
    assert!(!again.status.success());
    let refused = bin()
        .args([
            "restore",
            copy.to_str().unwrap(),
            "--force",
            "--database",
            &live,
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("in use by a running botwire"), "{why}");
    stop(&mut server);

    // Restore into a fresh place and serve it, with workers this time.
    let out = bin()
        .args(["restore", copy.to_str().unwrap(), "--database", &restored])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut receiver = bin()
        .args(["listen", "--port", &receiver_port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, arrivals) = std::sync::mpsc::channel();
    let receiver_out = receiver.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(receiver_out).lines().map_while(Result::ok) {
            if let Some(id) = line.trim().strip_prefix("webhook-id: ") {
                let _ = tx.send(id.to_owned());
            }
        }
    });
    wait_for_port(&format!("127.0.0.1:{receiver_port}"));
    let listen2 = format!("127.0.0.1:{}", free_port());
    let (mut server2, new_key) = start_server(&restored, &listen2, "all");
    assert!(
        new_key.is_none(),
        "the restored database has its account and keys"
    );
    let (status, body) = http(
        &listen2,
        "GET",
        "/v1/bots/elipackage",
        &key,
        "application/json",
        "",
    );
    assert_eq!(status, 200, "the same key reads the same bot: {body}");
    let (status, body) = http(
        &listen2,
        "GET",
        "/v1/bots/elipackage/endpoints",
        &key,
        "application/json",
        "",
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("127.0.0.1:{receiver_port}/hook")),
        "{body}"
    );

    // Every event acknowledged before the backup began is delivered.
    let mut missing: std::collections::HashSet<String> = before.iter().cloned().collect();
    let mut received = 0;
    let started = Instant::now();
    while !missing.is_empty() && started.elapsed() < Duration::from_secs(60) {
        if let Ok(id) = arrivals.recv_timeout(Duration::from_millis(200)) {
            received += 1;
            missing.remove(&id);
        }
    }
    stop(&mut server2);
    let _ = receiver.kill();
    let _ = receiver.wait();
    assert!(
        missing.is_empty(),
        "{} of {} events acknowledged before the backup were not delivered after the restore",
        missing.len(),
        before.len()
    );
    assert!(
        received <= total,
        "nothing invented: {received} arrivals for {total} events"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn readiness_turns_503_on_sigterm_and_the_server_closes_after_the_delay() {
    let dir = temp_dir("ready");
    let db = format!("sqlite://{}", dir.join("r.db").display());
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = bin()
        .args(["serve", "--listen", &listen, "--database", &db])
        .env("BOTWIRE_SHUTDOWN_DELAY", "2s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(&listen);
    let started = Instant::now();
    let ready = loop {
        let (status, body) = http(&listen, "GET", "/readyz", "", "application/json", "");
        if status == 200 || started.elapsed() > Duration::from_secs(20) {
            break (status, body);
        }
        // Only while the store opens: 503 with the reason.
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("\"migrating\""), "{body}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(ready.0, 200, "{}", ready.1);
    assert!(ready.1.contains("\"ready\":true"), "{}", ready.1);

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let signalled = Instant::now();
    let mut saw_503 = false;
    while signalled.elapsed() < Duration::from_millis(1500) {
        let (status, body) = http(&listen, "GET", "/readyz", "", "application/json", "");
        if status == 503 {
            assert!(body.contains("\"shutting_down\""), "{body}");
            let (live, _) = http(&listen, "GET", "/healthz", "", "application/json", "");
            assert_eq!(live, 200, "liveness holds while draining");
            saw_503 = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(saw_503, "/readyz turned 503 after SIGTERM");
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(
        signalled.elapsed() >= Duration::from_secs(2),
        "kept serving for the delay: {:?}",
        signalled.elapsed()
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn channels_add_list_and_remove_from_the_shell() {
    let dir = temp_dir("channels");
    let db = format!("sqlite://{}", dir.join("b.db").display());
    let out = bin()
        .args([
            "bots",
            "import",
            "examples/elipackage.yaml",
            "--database",
            &db,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A missing field is named; nothing is added.
    let out = bin()
        .args([
            "channels",
            "add",
            "--kind",
            "telegram",
            "--bot",
            "elipackage",
            "--database",
            &db,
        ])
        .env("BOTWIRE_CHANNEL_BOT_TOKEN", "123:abc")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("secret_token"));

    let out = bin()
        .args([
            "channels",
            "add",
            "--kind",
            "telegram",
            "--bot",
            "elipackage",
            "--name",
            "TG",
            "--secret-token",
            "tg_secret",
            "--database",
            &db,
        ])
        .env("BOTWIRE_CHANNEL_BOT_TOKEN", "123:abc-secret")
        .env("BOTWIRE_PUBLIC_URL", "https://bots.example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = last_line(&out.stdout);
    assert!(
        url.starts_with("https://bots.example.com/channels/ch_") && url.ends_with("/webhook"),
        "{url}"
    );
    let id = url.split('/').nth(4).unwrap().to_owned();

    let out = bin()
        .args(["channels", "list", "--bot", "elipackage", "--database", &db])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        listed.contains(&id) && listed.contains("telegram") && listed.contains("TG"),
        "{listed}"
    );
    assert!(
        !listed.contains("abc-secret") && !listed.contains("tg_secret"),
        "secrets are never printed: {listed}"
    );

    let out = bin()
        .args(["channels", "remove", &id, "--database", &db])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = bin()
        .args(["channels", "list", "--bot", "elipackage", "--database", &db])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty());
    let out = bin()
        .args(["channels", "remove", &id, "--database", &db])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let _ = std::fs::remove_dir_all(dir);
}

/// `bench chat` drives real turns through its own HTTP/1 client: every turn
/// of both runs is answered, and the paced run makes exactly the turns it
/// was asked for.
#[test]
fn bench_chat_runs_the_leads_flow_over_http() {
    let dir = temp_dir("bench-chat");
    check_bench_chat(&["--dir".as_ref(), dir.as_os_str()]);
    // The scratch database is removed afterwards.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `bench deliver` publishes over HTTP and waits for every delivery at its
/// receiver, then runs at a fixed rate: on SQLite and PostgreSQL, every
/// event arrives and none fails.
#[test]
fn bench_deliver_delivers_every_event() {
    let dir = temp_dir("bench-deliver");
    check_bench_deliver(&["--dir".as_ref(), dir.as_os_str()]);
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(db) = crate::common::test_db(crate::common::Db::Postgres) {
        check_bench_deliver(&["--database".as_ref(), db.url.as_ref()]);
    }
}

fn check_bench_deliver(db: &[&std::ffi::OsStr]) {
    let out = bin()
        .args(["bench", "deliver", "--events", "300", "--in-flight", "8"])
        .args(["--rate", "100", "--seconds", "1"])
        .args(db)
        .output()
        .expect("run bench deliver");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench deliver failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("deliveries/s arrived (300 in"),
        "throughput run: {stdout}"
    );
    assert!(
        stdout.contains("fixed rate:") && stdout.contains("(0 failed)"),
        "fixed-rate run: {stdout}"
    );
}

/// The same on PostgreSQL (`--database`).
#[test]
fn bench_chat_runs_on_postgres() {
    let Some(db) = crate::common::test_db(crate::common::Db::Postgres) else {
        return;
    };
    check_bench_chat(&["--database".as_ref(), db.url.as_ref()]);
}

/// Runs `bench chat` on leads with the database flags `db` and checks both
/// runs answered every turn.
fn check_bench_chat(db: &[&std::ffi::OsStr]) {
    let out = bin()
        .args(["bench", "chat", "--example", "leads", "--contacts", "4"])
        .args(["--seconds", "1", "--rate", "40", "--paced-seconds", "1"])
        .args(db)
        .output()
        .expect("run bench chat");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench chat failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let turns: u64 = stdout
        .split_once("turns/s (")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no turn count in {stdout}"));
    assert!(
        turns >= 4,
        "throughput run answered {turns} turns: {stdout}"
    );
    // Four turns of the leads flow write its events: more events than turns.
    let events: u64 = stdout
        .split_once("turns, ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no event count in {stdout}"));
    assert!(
        events > turns,
        "{events} events for {turns} turns: {stdout}"
    );
    assert!(
        stdout.contains("paced at 40 turns/s: 40 turns in"),
        "paced run: {stdout}"
    );
}

/// Rows an old day left: an event delivered long ago, an event still
/// pending, an ended conversation with two messages and an active one.
fn old_rows(db: &str) {
    let db = db.to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = botwire::store::Store::open(&db).await.unwrap();
        store
            .write(|c| {
                let day_ago = botwire::store::now_ms() - 86_400_000;
                for (event, status) in [("evt_done", "succeeded"), ("evt_waiting", "pending")] {
                    c.execute(
                        "INSERT INTO events (id, account_id, bot_id, type, data, created_at)
                         VALUES ($1, 'acc', 'eli', 'custom', '{}', $2)",
                        &[event.into(), day_ago.into()],
                    )?;
                    c.execute(
                        "INSERT INTO deliveries (id, account_id, bot_id, endpoint_id, event_id,
                             status, attempts, created_at, updated_at)
                         VALUES ($1, 'acc', 'eli', 'ep', $2, $3, 1, $4, $4)",
                        &[
                            format!("dlv_{event}").into(),
                            event.into(),
                            status.into(),
                            day_ago.into(),
                        ],
                    )?;
                }
                for (conv, status) in [("cnv_over", "completed"), ("cnv_open", "active")] {
                    c.execute(
                        "INSERT INTO conversations (id, account_id, bot_id, contact_id,
                             flow_version, state, status, revision, created_at, updated_at)
                         VALUES ($1, 'acc', 'eli', 'ct', 1, '{}', $2, 1, $3, $3)",
                        &[conv.into(), status.into(), day_ago.into()],
                    )?;
                    for n in 0..2 {
                        c.execute(
                            "INSERT INTO messages (id, conversation_id, direction, body, created_at)
                             VALUES ($1, $2, 'in', 'hi', $3)",
                            &[format!("msg_{conv}_{n}").into(), conv.into(), day_ago.into()],
                        )?;
                    }
                }
                Ok(())
            })
            .await
            .unwrap();
        store.close().await;
    });
}

#[test]
fn prune_from_the_shell_counts_then_removes_only_what_retention_lets_go() {
    let dir = temp_dir("prune");
    let db = format!("sqlite://{}", dir.join("b.db").display());
    old_rows(&db);
    let prune = |args: &[&str], retention: &str| {
        let out = bin()
            .arg("prune")
            .args(args)
            .args(["--database", &db])
            .env("BOTWIRE_RETENTION_EVENTS", retention)
            .env("BOTWIRE_RETENTION_CONVERSATIONS", retention)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // Within the default 30 days nothing qualifies.
    let out = prune(&["--dry-run"], "30d");
    assert!(out.contains("0 rows would go"), "{out}");
    // With a one-hour retention, the finished event and ended conversation
    // qualify; the pending delivery and active conversation never do.
    let out = prune(&["--dry-run"], "1h");
    for line in [
        "dry run, nothing removed; 5 rows would go",
        "1 events: would go",
        "1 deliveries: would go",
        "1 conversations: would go",
        "2 conversation messages: would go",
        "0 audit log entries: would go",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} in\n{out}");
    }
    let out = prune(&[], "1h");
    assert!(out.starts_with("removed 5 rows in "), "{out}");
    for line in [
        "1 events: removed",
        "1 deliveries: removed",
        "1 conversations: removed",
        "2 conversation messages: removed",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} in\n{out}");
    }
    // What stays stays.
    let out = prune(&["--dry-run"], "1h");
    assert!(out.contains("0 rows would go"), "{out}");
    let conn = rusqlite::Connection::open(dir.join("b.db")).unwrap();
    let ids = |sql: &str| -> Vec<String> {
        let mut s = conn.prepare(sql).unwrap();
        s.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(ids("SELECT id FROM events"), ["evt_waiting"]);
    assert_eq!(ids("SELECT id FROM deliveries"), ["dlv_evt_waiting"]);
    assert_eq!(ids("SELECT id FROM conversations"), ["cnv_open"]);
    assert_eq!(ids("SELECT COUNT(*) || '' FROM messages"), ["2"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn prune_refuses_a_bad_retention_naming_the_key() {
    let out = bin()
        .args(["prune", "--dry-run", "--database", "sqlite://unused.db"])
        .env("BOTWIRE_RETENTION_EVENTS", "a while")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("retention.events:") && err.contains("BOTWIRE_RETENTION_EVENTS"),
        "{err}"
    );
}

#[test]
fn serve_prunes_at_start_on_a_worker_node_and_not_on_an_api_node() {
    let dir = temp_dir("serve-prune");
    let path = dir.join("b.db");
    let db = format!("sqlite://{}", path.display());
    old_rows(&db);
    let events = || -> Vec<String> {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut s = conn.prepare("SELECT id FROM events ORDER BY id").unwrap();
        s.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let serve = |role: &str| {
        let listen = format!("127.0.0.1:{}", free_port());
        let child = bin()
            .args([
                "serve",
                "--listen",
                &listen,
                "--database",
                &db,
                "--role",
                role,
            ])
            .env("BOTWIRE_RETENTION_EVENTS", "1h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        (child, listen)
    };
    // An API-only node leaves retention to the workers.
    let (mut api, listen) = serve("api");
    wait_for_port(&listen);
    let started = Instant::now();
    while http(&listen, "GET", "/readyz", "", "text/plain", "").0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(20), "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A worker node starts its first pass before it turns ready; give this
    // one that long and more.
    std::thread::sleep(Duration::from_millis(500));
    stop(&mut api);
    assert_eq!(events(), ["evt_done", "evt_waiting"]);
    // A node that runs workers prunes at start: the delivered event goes,
    // the pending one stays.
    let (mut all, listen) = serve("all");
    wait_for_port(&listen);
    let started = Instant::now();
    while events() != ["evt_waiting"] {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not pruned: {:?}",
            events()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop(&mut all);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `bench store --database postgres://…` measures on that database: both
/// runs store every write they acknowledged (the bench checks the count)
/// and report their commits; its table is gone afterwards.
#[test]
fn bench_store_measures_on_postgresql() {
    let Some(db) = crate::common::test_db(crate::common::Db::Postgres) else {
        return;
    };
    let out = bin()
        .args(["bench", "store", "--writers", "8", "--seconds", "0.5"])
        .args(["--database", &db.url])
        .output()
        .expect("run bench store");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench store failed: {stdout}\n{stderr}"
    );
    assert!(stderr.contains("PostgreSQL"), "{stderr}");
    for label in ["one commit per write", "group commit"] {
        let line = stderr
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} line in {stderr}"));
        let writes: u64 = line
            .split_once('(')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no write count in {line}"));
        assert!(writes > 0, "{line}");
    }
    assert!(stdout.contains("acknowledged durable writes/s"), "{stdout}");
    let (code, tables) = psql(
        &db.url,
        "SELECT count(*) FROM pg_tables WHERE tablename = 'bench_writes'",
    );
    assert_eq!(
        (code, tables.trim()),
        (0, "0"),
        "the bench's table is dropped"
    );
}

/// `bench cluster` runs one API node with one worker, then with two, each
/// on a database of its own: every event arrives once, both workers of the
/// second configuration deliver some, and its databases are gone after.
#[test]
fn bench_cluster_splits_the_work_over_two_workers() {
    let Some(db) = crate::common::test_db(crate::common::Db::Postgres) else {
        return;
    };
    let out = bin()
        .args(["bench", "cluster", "--database", &db.url])
        .args(["--workers", "2", "--events", "300", "--in-flight", "16"])
        .output()
        .expect("run bench cluster");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench cluster failed: {stdout}\n{stderr}"
    );
    for (label, workers) in [("api + 1 worker:", 1), ("api + 2 workers:", 2)] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} line in {stdout}"));
        assert!(
            line.contains("500 published, 500 arrived once, 0 lost, 0 doubled"),
            "{line}"
        );
        let split: Vec<u64> = line
            .rsplit_once("deliveries per worker: ")
            .map(|(_, s)| s.split(", ").map(|n| n.parse().unwrap()).collect())
            .unwrap_or_else(|| panic!("no split in {line}"));
        assert_eq!(split.len(), workers, "{line}");
        assert!(
            split.iter().all(|&n| n > 0),
            "every worker delivered: {line}"
        );
        assert_eq!(split.iter().sum::<u64>(), 500, "{line}");
    }
    let row = stdout
        .lines()
        .find(|l| l.starts_with("api + 2 workers "))
        .unwrap_or_else(|| panic!("no table row in {stdout}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[cells.len() - 2..], ["0", "0"], "lost, doubled: {row}");
    let name = db.url.rsplit('/').next().unwrap();
    let (code, left) = psql(
        &db.url,
        &format!("SELECT count(*) FROM pg_database WHERE datname LIKE '{name}_c%'"),
    );
    assert_eq!(
        (code, left.trim()),
        (0, "0"),
        "the bench's databases are dropped"
    );
}

fn psql(url: &str, sql: &str) -> (i32, String) {
    let out = Command::new("psql")
        .args([url, "-tAc", sql])
        .output()
        .expect("run psql");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}
