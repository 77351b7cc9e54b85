//! Configuration from one schema: every key of the built-in defaults file
//! is honoured from its `BOTWIRE_*` variable and from `botwire serve --set`,
//! is parsed into its type while loading, and a bad value is refused with
//! the key and its source named. The key table of docs/CONFIGURATION.md
//! lists every key.

use botwire::config::{Config, ConfigError, LogFormat, Overrides, Role, env_name, keys};
use std::collections::BTreeMap;
use std::time::Duration;

/// A non-default value given as text, and a check that it arrived.
type Sample = (&'static str, fn(&Config) -> bool);

/// One sample for every key. A key added to the defaults file without a
/// sample here fails `every_key_has_a_variable_that_is_honoured`.
fn samples() -> BTreeMap<&'static str, Sample> {
    let s: [(&'static str, Sample); 31] = [
        ("listen", ("0.0.0.0:9999", |c| c.listen == "0.0.0.0:9999")),
        (
            "public_url",
            ("https://bots.example.com/", |c| {
                c.public_url() == "https://bots.example.com"
            }),
        ),
        (
            "database",
            ("sqlite://other.db", |c| c.database == "sqlite://other.db"),
        ),
        (
            "allow_nets",
            ("10.0.0.0/8,fd00::/8", |c| {
                format!("{:?}", c.allow_nets).contains("10.0.0.0/8")
            }),
        ),
        ("log_format", ("json", |c| c.log_format == LogFormat::Json)),
        ("role", ("worker", |c| c.role == Role::Worker)),
        (
            "secret_key",
            ("pepper", |c| c.secret_key.expose() == "pepper"),
        ),
        ("body_limit_bytes", ("2048", |c| c.body_limit_bytes == 2048)),
        (
            "shutdown_delay",
            ("5s", |c| c.shutdown_delay == Duration::from_secs(5)),
        ),
        (
            "limits.max_endpoints_per_bot",
            ("7", |c| c.limits.max_endpoints_per_bot == 7),
        ),
        (
            "http.header_read_timeout",
            ("500ms", |c| {
                c.http.header_read_timeout == Duration::from_millis(500)
            }),
        ),
        (
            "http.max_connections",
            ("50", |c| c.http.max_connections == 50),
        ),
        (
            "delivery.timeout",
            ("3s", |c| c.delivery.timeout == Duration::from_secs(3)),
        ),
        (
            "delivery.retry_schedule",
            ("1ms,2ms", |c| {
                c.delivery.retry_schedule.delays()
                    == [Duration::from_millis(1), Duration::from_millis(2)]
            }),
        ),
        (
            "delivery.disable_after",
            ("1h", |c| {
                c.delivery.disable_after == Duration::from_secs(3600)
            }),
        ),
        (
            "delivery.secret_grace",
            ("2h", |c| {
                c.delivery.secret_grace == Duration::from_secs(7200)
            }),
        ),
        (
            "delivery.lease",
            ("30s", |c| c.delivery.lease == Duration::from_secs(30)),
        ),
        (
            "delivery.max_in_flight_per_endpoint",
            ("3", |c| c.delivery.max_in_flight_per_endpoint == 3),
        ),
        (
            "delivery.max_in_flight",
            ("9", |c| c.delivery.max_in_flight == 9),
        ),
        (
            "delivery.break_after",
            ("4", |c| c.delivery.break_after == 4),
        ),
        ("delivery.system_dns", ("false", |c| !c.delivery.system_dns)),
        (
            "delivery.hosts",
            ("a.test=10.0.0.5,a.test=fd00::5,b.test=127.0.0.2", |c| {
                c.delivery.hosts.get("a.test").map(String::as_str) == Some("10.0.0.5,fd00::5")
                    && c.delivery.hosts.len() == 2
            }),
        ),
        (
            "retention.events",
            ("1m", |c| c.retention.events == Duration::from_secs(60)),
        ),
        (
            "retention.attempts",
            ("0", |c| c.retention.attempts.is_zero()),
        ),
        (
            "retention.conversations",
            ("7d", |c| {
                c.retention.conversations == Duration::from_secs(7 * 86_400)
            }),
        ),
        (
            "retention.audit",
            ("30d", |c| {
                c.retention.audit == Duration::from_secs(30 * 86_400)
            }),
        ),
        ("broadcasts.rate", ("50", |c| c.broadcasts.rate == 50)),
        (
            "channels.rate_whatsapp",
            ("0", |c| c.channels.rate_whatsapp == 0),
        ),
        (
            "channels.rate_telegram",
            ("25", |c| c.channels.rate_telegram == 25),
        ),
        (
            "channels.rate_twilio",
            ("3", |c| c.channels.rate_twilio == 3),
        ),
        (
            "channels.rate_messenger",
            ("10", |c| c.channels.rate_messenger == 10),
        ),
    ];
    s.into_iter().collect()
}

fn load_env(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let vars: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load(None, |k| vars.get(k).cloned(), &Overrides::default())
}

#[test]
fn every_key_has_a_variable_that_is_honoured() {
    let defaults = load_env(&[]).unwrap();
    let samples = samples();
    let keys = keys();
    assert!(keys.len() >= 20, "the defaults file lists every key");
    for key in &keys {
        let (value, arrived) = samples
            .get(key.path.as_str())
            .unwrap_or_else(|| panic!("{}: add a sample value to tests/config.rs", key.path));
        assert!(
            !arrived(&defaults),
            "{}: the sample is the default",
            key.path
        );
        let var = key.env();
        assert_eq!(var, env_name(&key.path));
        let c = load_env(&[(&var, value)]).unwrap_or_else(|e| panic!("{var}={value}: {e}"));
        assert!(arrived(&c), "{var}={value} did not reach the configuration");

        let flags = Overrides {
            set: vec![format!("{}={value}", key.path)],
            ..Default::default()
        };
        let c = Config::load(None, |_| None, &flags).unwrap();
        assert!(arrived(&c), "--set {}={value} did not arrive", key.path);
    }
    for path in samples.keys() {
        assert!(
            keys.iter().any(|k| k.path == *path),
            "{path} has a sample but is not in the defaults file"
        );
    }
    assert_eq!(
        env_name("delivery.max_in_flight_per_endpoint"),
        "BOTWIRE_DELIVERY_MAX_IN_FLIGHT_PER_ENDPOINT"
    );
}

#[test]
fn a_bad_value_is_refused_naming_the_key_and_its_source() {
    let err = load_env(&[("BOTWIRE_DELIVERY_BREAK_AFTER", "x")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "delivery.break_after: expected an integer, got \"x\" (from BOTWIRE_DELIVERY_BREAK_AFTER)"
    );
    // Every key but the free-text secret has a value it refuses.
    let bad: [(&str, &str, &str); 31] = [
        ("listen", "8080", "host:port"),
        ("public_url", "ftp://x", "http(s) URL"),
        ("database", "mysql://db", "sqlite://FILE"),
        ("allow_nets", "10.0.0.0/33", "10.0.0.0/33"),
        ("log_format", "xml", "\"text\" or \"json\""),
        ("role", "boss", "\"all\", \"api\" or \"worker\""),
        ("body_limit_bytes", "10", "at least 1024"),
        ("shutdown_delay", "soon", "one span"),
        ("limits.max_endpoints_per_bot", "0", "at least 1"),
        ("http.header_read_timeout", "0s", "longer than 0"),
        ("http.max_connections", "many", "expected an integer"),
        ("delivery.timeout", "15", "one span"),
        ("delivery.retry_schedule", "5s,,5m", "retry delay"),
        ("delivery.disable_after", "5s,5m", "one span"),
        ("delivery.secret_grace", "a day", "one span"),
        ("delivery.lease", "-1s", "one span"),
        ("delivery.max_in_flight_per_endpoint", "0", "at least 1"),
        ("delivery.max_in_flight", "-5", "-5"),
        ("delivery.break_after", "-1", "-1"),
        ("delivery.system_dns", "maybe", "true or false"),
        ("delivery.hosts", "a..b=10.0.0.1", "not a hostname"),
        ("delivery.hosts", "h.test=10.0.0.300", "not an IP address"),
        ("retention.events", "30", "one span"),
        ("retention.attempts", "a month", "one span"),
        ("retention.conversations", "1d,2d", "one span"),
        ("retention.audit", "forever", "one span"),
        ("broadcasts.rate", "0", "1 to 1000"),
        ("channels.rate_whatsapp", "-1", "-1"),
        ("channels.rate_telegram", "many", "expected an integer"),
        (
            "channels.rate_twilio",
            "100001",
            "0 (unthrottled) to 100000",
        ),
        ("channels.rate_messenger", "1.5", "1.5"),
    ];
    for key in keys() {
        assert!(
            key.path == "secret_key" || bad.iter().any(|(k, _, _)| *k == key.path),
            "{}: add a value it refuses",
            key.path
        );
    }
    for (path, value, says) in bad {
        let var = env_name(path);
        let err = load_env(&[(&var, value)]).expect_err(&format!("{var}={value} is refused"));
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("{path}:")),
            "{var}={value}: {text}"
        );
        assert!(text.contains(says), "{var}={value}: {text}");
        assert!(
            text.ends_with(&format!("(from {var})")),
            "{var}={value}: {text}"
        );
    }
}

#[test]
fn layers_override_in_order_and_name_their_source() {
    let dir = std::env::temp_dir().join(format!("botwire-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.toml");
    std::fs::write(
        &file,
        "listen = \"0.0.0.0:1\"\ndatabase = \"sqlite://file.db\"\n[delivery]\ntimeout = \"3s\"\nbreak_after = 3\n[http]\nmax_connections = 7\n",
    )
    .unwrap();
    let env = |k: &str| (k == "BOTWIRE_DATABASE").then(|| "sqlite://env.db".to_owned());
    let flags = Overrides {
        listen: Some("127.0.0.1:9".into()),
        set: vec!["delivery.break_after=5".into(), "listen=127.0.0.1:8".into()],
        ..Default::default()
    };
    let c = Config::load(Some(&file), env, &flags).unwrap();
    assert_eq!(
        c.listen, "127.0.0.1:9",
        "a named flag beats --set and the file"
    );
    assert_eq!(c.database, "sqlite://env.db", "env beats file");
    assert_eq!(
        c.delivery.timeout,
        Duration::from_secs(3),
        "file beats defaults"
    );
    assert_eq!(c.delivery.break_after, 5, "--set beats the file");
    assert_eq!(c.http.max_connections, 7);
    assert_eq!(
        c.http.header_read_timeout,
        Duration::from_secs(10),
        "the rest stays default"
    );

    std::fs::write(&file, "[delivery]\nlease = \"long\"\n").unwrap();
    let err = Config::load(Some(&file), |_| None, &Overrides::default()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("delivery.lease: expected one span"),
        "{text}"
    );
    assert!(
        text.ends_with(&format!("(from {})", file.display())),
        "{text}"
    );

    std::fs::write(&file, "listne = \"x\"\n").unwrap();
    let err = Config::load(Some(&file), |_| None, &Overrides::default()).unwrap_err();
    assert!(err.to_string().contains("listne"), "{err}");

    let flags = Overrides {
        role: Some("boss".into()),
        ..Default::default()
    };
    let err = Config::load(None, |_| None, &flags).unwrap_err();
    assert!(err.to_string().ends_with("(from --role)"), "{err}");
    for set in ["delivery.nope=1", "delivery.timeout"] {
        let flags = Overrides {
            set: vec![set.into()],
            ..Default::default()
        };
        let err = Config::load(None, |_| None, &flags).unwrap_err();
        assert!(err.to_string().contains("--set"), "{set}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let c = load_env(&[("BOTWIRE_SECRET_KEY", "hunter2")]).unwrap();
    assert_eq!(c.secret_key.expose(), "hunter2");
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn the_key_table_of_the_docs_lists_every_key() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/CONFIGURATION.md"
    ))
    .unwrap();
    let listed: Vec<&str> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(k, _)| k))
        .collect();
    let keys = keys();
    for key in &keys {
        assert!(
            listed.contains(&key.path.as_str()),
            "docs/CONFIGURATION.md does not list {}",
            key.path
        );
        assert!(
            doc.contains(&key.env()),
            "docs/CONFIGURATION.md does not name {}",
            key.env()
        );
    }
    for listed in listed {
        assert!(
            keys.iter().any(|k| k.path == listed),
            "docs/CONFIGURATION.md lists {listed}, which is not a key"
        );
    }
}

#[test]
fn botwire_config_prints_the_commented_defaults() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_botwire"))
        .arg("config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text, botwire::config::DEFAULTS);
    assert!(text.lines().filter(|l| l.starts_with('#')).count() > 40);
}

/// Sends `GET path` to `addr` and answers the status code, if any.
fn get_status(addr: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A fresh `botwire serve` on an empty SQLite database keeps little
/// anonymous memory once idle. The bound is loose (this is a debug build,
/// and other tests run beside it) but real: with mimalloc's arena on
/// transparent huge pages the same server held 18 MiB anonymous, 14 MiB of
/// it huge pages; without, about 6 MiB. Code pages (file-backed) are left
/// out: their size depends on the build, not on what the server keeps.
#[test]
fn a_fresh_idle_server_keeps_little_anonymous_memory() {
    if !std::path::Path::new("/proc/self/status").exists() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("botwire-idle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = crate::common::server_port();
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_botwire"));
    for (k, _) in std::env::vars() {
        if k.starts_with("BOTWIRE_") || k.starts_with("MIMALLOC_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .env("BOTWIRE_DELIVERY_SYSTEM_DNS", "false")
        .args(["serve", "--listen", &addr, "--database"])
        .arg(format!("sqlite://{}", dir.join("b.db").display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while get_status(&addr, "/readyz") != Some(200) {
        assert!(started.elapsed() < Duration::from_secs(60), "not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let kib = |field: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in {status}"))
    };
    let anon = kib("RssAnon:");
    assert!(
        anon <= 12 * 1024,
        "an idle server holds {anon} KiB of anonymous memory (at most 12 MiB expected)"
    );
}
