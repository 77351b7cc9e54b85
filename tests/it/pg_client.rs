//! The PostgreSQL client: TLS and connections that break.
//!
//! TLS: a throwaway PostgreSQL server of the test's own (never the shared
//! one), on a free loopback port, that accepts TLS connections only, with a
//! certificate signed by a certificate authority made for the test with the
//! `openssl` command. The store opens it with each `sslmode` and reads,
//! writes and listens through it; a wrong root certificate or a certificate
//! for another name is refused, saying why. It needs the server's `initdb`
//! and `pg_ctl` (Debian's /usr/lib/postgresql/N/bin) and `openssl`.
//!
//! Broken connections: the server ends every connection of a store; the
//! next write fails as unavailable instead of waiting, and reads heal.
//!
//! Runs where the PostgreSQL tests run (`BOTWIRE_TEST_POSTGRES_URL`, and
//! never skipped under `BOTWIRE_REQUIRE_POSTGRES=1`).

use crate::common;
use botwire::store::{Conn, Listener, Store, StoreError};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// Runs a command, failing the test with its output if it fails.
fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The folder holding the PostgreSQL server's programs, newest version first.
fn server_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
        .collect();
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
}

/// Whether this process runs as root (PostgreSQL refuses to run as root,
/// so the server then runs as the `postgres` user).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A command run as the user the server runs as.
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Certificates: a certificate authority, a server certificate it signed for
/// `localhost` only, and an unrelated certificate authority.
struct Certs {
    ca: PathBuf,
    other_ca: PathBuf,
    server_crt: PathBuf,
    server_key: PathBuf,
}

fn make_certs(dir: &Path) -> Certs {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca_ext = [
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ];
    for name in ["ca", "other_ca"] {
        run(Command::new("openssl")
            .current_dir(dir)
            .args(["req", "-x509"])
            .args(ec)
            .args([
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
            ])
            .args(["-days", "2", "-subj", &format!("/CN=botwire test {name}")])
            .args(ca_ext));
    }
    run(Command::new("openssl")
        .current_dir(dir)
        .arg("req")
        .args(ec)
        .args([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]));
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(Command::new("openssl").current_dir(dir).args([
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ]));
    Certs {
        ca: dir.join("ca.crt"),
        other_ca: dir.join("other_ca.crt"),
        server_crt: dir.join("server.crt"),
        server_key: dir.join("server.key"),
    }
}

/// A PostgreSQL server of the test's own; stopped and removed on drop.
struct TlsServer {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    certs: Certs,
}

impl TlsServer {
    fn start(bin: PathBuf) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "botwire_pg_tls_{}_{}",
            std::process::id(),
            botwire::domain::ids::new_id("t").to_lowercase()
        ));
        let data = dir.join("data");
        std::fs::create_dir_all(&dir).unwrap();
        let certs = make_certs(&dir);
        let mut server = Self {
            dir,
            bin,
            port: 0,
            certs,
        };
        if is_root() {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&server.dir));
        }
        run(as_server_user(&server.bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data));
        // TLS connections only: a plain one finds no pg_hba.conf entry.
        std::fs::write(
            data.join("pg_hba.conf"),
            "hostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        for (from, to) in [
            (&server.certs.server_crt, "server.crt"),
            (&server.certs.server_key, "server.key"),
        ] {
            std::fs::copy(from, data.join(to)).unwrap();
        }
        if is_root() {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&data));
        }
        run(Command::new("chmod")
            .arg("600")
            .arg(data.join("server.key")));
        // A free port: taken from the kernel, then let go for the server.
        server.port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c ssl=on \
             -c ssl_cert_file=server.crt -c ssl_key_file=server.key -c fsync=off",
            server.port,
            data.display()
        );
        run(as_server_user(&server.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-o", &options, "-l"])
            .arg(server.dir.join("server.log"))
            .args(["-w", "-t", "30", "start"]));
        server
    }

    /// A URL of this server at 127.0.0.1 with `params` after the `?`.
    fn url(&self, params: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?{params}",
            self.port
        )
    }

    /// A URL of this server by the name `localhost`, which its certificate
    /// carries (`hostaddr` connects to 127.0.0.1 without resolving it).
    fn url_by_name(&self, params: &str) -> String {
        format!(
            "postgres://postgres@localhost:{}/postgres?hostaddr=127.0.0.1&{params}",
            self.port
        )
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = as_server_user(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether the connection a read runs on is encrypted, as the server sees it.
async fn encrypted(store: &Store) -> bool {
    store
        .read(|c: &mut dyn Conn| {
            c.query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )?
            .bool(0)
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn store_over_tls_checks_the_server_certificate_as_sslmode_asks() {
    // Skipped where the other PostgreSQL tests are (see `common::test_db`).
    if std::env::var_os("BOTWIRE_TEST_POSTGRES_URL").is_none()
        && std::env::var("BOTWIRE_REQUIRE_POSTGRES").as_deref() != Ok("1")
    {
        eprintln!("notice: PostgreSQL TLS test skipped (set BOTWIRE_TEST_POSTGRES_URL to run it)");
        return;
    }
    let Some(bin) = server_bin() else {
        panic!("PostgreSQL's initdb and pg_ctl are needed (no /usr/lib/postgresql/N/bin)");
    };
    let _load = common::heavy().await;
    let server = tokio::task::spawn_blocking(move || TlsServer::start(bin))
        .await
        .unwrap();
    let ca = server.certs.ca.display().to_string();

    // verify-full: the chain and the name.
    let url = server.url_by_name(&format!("sslmode=verify-full&sslrootcert={ca}"));
    let store = Store::open(&url).await.expect("verify-full store");
    let pepper = botwire::auth::Pepper::new(b"tls pepper".to_vec());
    let (account, _key) = store.bootstrap(&pepper).await.unwrap().expect("fresh db");
    assert_eq!(store.get_account(&account.id).await.unwrap().id, account.id);
    assert!(encrypted(&store).await);
    // A notification sent through the writer reaches a listening connection.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let listening = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let alive = listening.clone();
    assert!(store.listen_for_deliveries(Listener {
        wake: Box::new(move || {
            let _ = tx.send(());
        }),
        alive: Box::new(move || alive.load(std::sync::atomic::Ordering::Relaxed)),
    }));
    // The first wake-up comes once LISTEN is in place.
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("listening")
        .unwrap();
    store.write(|c| c.notify_deliveries()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("notification over TLS")
        .unwrap();
    listening.store(false, std::sync::atomic::Ordering::Relaxed);
    store.close().await;

    // require: encrypted without a root certificate; prefer finds TLS too.
    for mode in ["require", "prefer"] {
        let store = Store::open(&server.url(&format!("sslmode={mode}")))
            .await
            .unwrap_or_else(|e| panic!("sslmode={mode}: {e}"));
        assert_eq!(store.first_account().await.unwrap().unwrap().id, account.id);
        assert!(encrypted(&store).await, "sslmode={mode}");
        store.close().await;
    }

    // verify-ca: the chain only, so the address the name does not match is
    // accepted; verify-full at that address is not.
    let store = Store::open(&server.url(&format!("sslmode=verify-ca&sslrootcert={ca}")))
        .await
        .expect("verify-ca store");
    assert!(encrypted(&store).await);
    store.close().await;
    let e = Store::open(&server.url(&format!("sslmode=verify-full&sslrootcert={ca}")))
        .await
        .expect_err("the certificate does not name 127.0.0.1")
        .to_string();
    assert!(
        e.contains("TLS handshake") && e.contains("certificate"),
        "{e}"
    );
    assert!(e.contains("not valid for name \"127.0.0.1\""), "{e}");

    // verify-full with another authority's root certificate: refused.
    let other = server.certs.other_ca.display().to_string();
    let e = Store::open(&server.url_by_name(&format!("sslmode=verify-full&sslrootcert={other}")))
        .await
        .expect_err("signed by another authority")
        .to_string();
    assert!(
        e.contains("TLS handshake") && e.contains("certificate"),
        "{e}"
    );
    assert!(e.contains("UnknownIssuer"), "{e}");

    // disable: this server takes no plain connection.
    let e = Store::open(&server.url("sslmode=disable"))
        .await
        .expect_err("plain connection refused")
        .to_string();
    assert!(e.contains("no encryption"), "{e}");

    // A bad mode is named before any connection is tried.
    let e = Store::open(&server.url("sslmode=verify_full"))
        .await
        .expect_err("bad sslmode")
        .to_string();
    assert!(e.contains("sslmode=\"verify_full\""), "{e}");

    tokio::task::spawn_blocking(move || drop(server))
        .await
        .unwrap();
}

#[tokio::test]
async fn connections_the_server_ends_fail_writes_promptly_and_both_heal() {
    let Some(db) = common::test_db(common::Db::Postgres) else {
        return;
    };
    let store = Store::open(&db.url).await.unwrap();
    let pepper = botwire::auth::Pepper::new(b"pepper".to_vec());
    store.bootstrap(&pepper).await.unwrap().expect("fresh db");
    // Several read connections in the pool, and the writer's.
    tokio::join!(
        encrypted(&store),
        encrypted(&store),
        encrypted(&store),
        encrypted(&store)
    );
    let ended = store
        .read(|c: &mut dyn Conn| {
            c.query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
        })
        .await
        .unwrap();
    assert!(!ended.is_empty(), "the writer's connection at least");

    let write = tokio::time::timeout(
        Duration::from_secs(10),
        store.create_account("after", &pepper),
    )
    .await
    .expect("a write on an ended connection answers");
    assert!(
        matches!(write, Err(StoreError::Unavailable(_))),
        "{write:?}"
    );

    // A read on a pooled connection whose session the server ended fails
    // as unavailable (not as a database error), and the pool replaces it:
    // at most one failure per connection the pool held, then reads work.
    let (mut failed, mut ok_in_a_row) = (0, 0);
    while ok_in_a_row < 5 {
        match store.first_account().await {
            Ok(a) => {
                assert!(a.is_some());
                ok_in_a_row += 1;
            }
            Err(StoreError::Unavailable(_)) => {
                failed += 1;
                ok_in_a_row = 0;
            }
            Err(e) => panic!("{e:?}"),
        }
        assert!(failed <= 8, "reads keep failing");
    }

    // The writer opens a new connection for the next batch: writes work
    // again without a restart, and what they wrote is there.
    let account = store
        .create_account("healed", &pepper)
        .await
        .expect("the write after the failed one goes through");
    let names = store
        .read(|c: &mut dyn Conn| {
            c.query("SELECT name FROM accounts ORDER BY name", &[])?
                .iter()
                .map(|r| r.text(0))
                .collect::<botwire::store::Result<Vec<_>>>()
        })
        .await
        .unwrap();
    assert!(names.contains(&"healed".to_owned()), "{names:?}");
    assert!(!names.contains(&"after".to_owned()), "{names:?}");
    let _ = account;
    store.close().await;
}
