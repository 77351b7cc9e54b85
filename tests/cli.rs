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
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
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
