//! Test harness: a real server on a random port over a fresh database,
//! served by the same accept loop as `botwire serve` (`api::serve`).
//!
//! SQLite tests get a new file in a temporary folder. PostgreSQL tests
//! create a uniquely named database on the server named by
//! `BOTWIRE_TEST_POSTGRES_URL` and drop it afterwards; without that variable
//! they are skipped with a notice, unless `BOTWIRE_REQUIRE_POSTGRES=1`
//! (set by CI), in which case they fail.
#![allow(dead_code)]

use botwire::api::{self, AppState, RouterOptions};
use botwire::auth::Pepper;
use botwire::store::Store;
use serde_json::Value;

/// Which backend a test runs on.
#[derive(Clone, Copy, Debug)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A database made for one test and removed after it.
pub struct TestDb {
    pub url: String,
    cleanup: Option<Box<dyn FnOnce() + Send>>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(f) = self.cleanup.take() {
            // The sync PostgreSQL client must not run on a runtime thread.
            let _ = std::thread::spawn(f).join();
        }
    }
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        botwire::domain::ids::new_id("t").to_lowercase()
    )
}

/// A fresh database of the given kind, or `None` (with a notice) when
/// PostgreSQL is not configured.
pub fn test_db(kind: Db) -> Option<TestDb> {
    match kind {
        Db::Sqlite => {
            let dir = std::env::temp_dir().join(unique("botwire_test"));
            std::fs::create_dir_all(&dir).unwrap();
            let url = format!("sqlite://{}", dir.join("test.db").display());
            Some(TestDb {
                url,
                cleanup: Some(Box::new(move || {
                    let _ = std::fs::remove_dir_all(dir);
                })),
            })
        }
        Db::Postgres => {
            let Ok(admin) = std::env::var("BOTWIRE_TEST_POSTGRES_URL") else {
                if std::env::var("BOTWIRE_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                    panic!("BOTWIRE_REQUIRE_POSTGRES=1 but BOTWIRE_TEST_POSTGRES_URL is not set");
                }
                eprintln!(
                    "notice: PostgreSQL test skipped (set BOTWIRE_TEST_POSTGRES_URL to run it)"
                );
                return None;
            };
            let name = unique("botwire_test");
            let admin2 = admin.clone();
            let name2 = name.clone();
            std::thread::spawn(move || {
                let mut c = postgres::Client::connect(&admin2, postgres::NoTls)
                    .expect("connect to BOTWIRE_TEST_POSTGRES_URL");
                c.batch_execute(&format!("CREATE DATABASE {name2}"))
                    .unwrap();
            })
            .join()
            .unwrap();
            let url = replace_db(&admin, &name);
            Some(TestDb {
                url,
                cleanup: Some(Box::new(move || {
                    if let Ok(mut c) = postgres::Client::connect(&admin, postgres::NoTls) {
                        let _ = c
                            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
                    }
                })),
            })
        }
    }
}

fn replace_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{host_part}/{db}{query}")
}

/// A running server and what a test needs to talk to it.
pub struct App {
    pub base: String,
    pub admin_key: String,
    pub account_id: String,
    pub store: Store,
    pub pepper: Pepper,
    pub client: reqwest::Client,
    /// The server's chat runtime (tests fire its timers with a chosen clock).
    pub chat: botwire::runtime::chat::Chat,
    _db: TestDb,
}

/// Starts a server over a fresh database of `kind`; `None` when skipped.
pub async fn spawn_app(kind: Db) -> Option<App> {
    spawn_app_with(
        kind,
        botwire::delivery::Delivery::new(Default::default()).unwrap(),
    )
    .await
}

/// Starts a server whose send-now routes (test ping, manual retry) use
/// `delivery`; `None` when skipped.
pub async fn spawn_app_with(kind: Db, delivery: botwire::delivery::Delivery) -> Option<App> {
    let db = test_db(kind)?;
    let store = Store::open(&db.url).await.expect("open store");
    let pepper = Pepper::new(b"test pepper".to_vec());
    let (account, admin_key) = store.bootstrap(&pepper).await.unwrap().expect("fresh db");
    let state = AppState::new(store.clone(), pepper.clone(), delivery);
    let chat = state.chat.clone();
    let app = api::router(
        state,
        &RouterOptions {
            body_limit: 64 * 1024,
            ..Default::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let options = api::ServerOptions::default();
        api::serve(listener, app, &options, std::future::pending())
            .await
            .unwrap();
    });
    Some(App {
        base,
        admin_key,
        account_id: account.id,
        store,
        pepper,
        client: reqwest::Client::new(),
        chat,
        _db: db,
    })
}

/// A response's status and JSON body (Null when empty or not JSON).
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl App {
    /// Sends a request with an optional key and JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, body }
    }

    /// Sends raw bytes with a given content type.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Reply {
        let mut req = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    /// `call` with the admin key.
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.call(method, path, Some(&self.admin_key.clone()), body)
            .await
    }

    /// Imports a bot file (YAML) with the admin key; answers the import's
    /// reply (`bot_id`, `created`, `flow_version`).
    pub async fn import_yaml(&self, text: String) -> Value {
        let r = self
            .raw(
                "POST",
                "/v1/bots/import",
                Some(&self.admin_key),
                "application/yaml",
                text.into_bytes(),
            )
            .await;
        assert_eq!(r.status, 201, "import: {}", r.body);
        r.body
    }

    /// Imports `examples/{name}.yaml` with the admin key.
    pub async fn import_example(&self, name: &str) -> Value {
        let text = std::fs::read_to_string(format!("examples/{name}.yaml")).unwrap();
        self.import_yaml(text).await
    }

    /// Creates a bot with the admin key.
    pub async fn create_bot(&self, id: &str, bot_type: &str) -> Value {
        let r = self
            .admin(
                "POST",
                "/v1/bots",
                Some(serde_json::json!({"id": id, "name": id, "type": bot_type})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body
    }

    /// The database URL this app runs on.
    pub fn db_url(&self) -> &str {
        &self._db.url
    }

    /// A second server over the same database, as another node would be:
    /// its own store, writer and caches. Returns its base URL.
    pub async fn second_node(&self) -> String {
        let store = Store::open(&self._db.url).await.expect("open store");
        let delivery = botwire::delivery::Delivery::new(Default::default()).unwrap();
        let state = AppState::new(store, self.pepper.clone(), delivery);
        let app = api::router(
            state,
            &RouterOptions {
                body_limit: 64 * 1024,
                ..Default::default()
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let options = api::ServerOptions::default();
            api::serve(listener, app, &options, std::future::pending())
                .await
                .unwrap();
        });
        base
    }

    /// A key of a second account.
    pub async fn other_account_key(&self) -> String {
        self.store
            .create_account("other", &self.pepper)
            .await
            .unwrap()
            .1
    }

    /// A key scoped to `bot`.
    pub async fn bot_key(&self, bot: &str) -> String {
        let r = self
            .admin(
                "POST",
                "/v1/keys",
                Some(serde_json::json!({"bot_id": bot, "name": "scoped"})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["key"].as_str().unwrap().to_owned()
    }
}

pub mod node;
pub mod webdriver;

/// Tests that load the machine (backlogs, crash and scale-out runs, the
/// chaos receiver) and tests that assert how fast something answers share
/// one process and two cores. A heavy test holds this lock alone; a timed
/// test holds it shared with other timed tests, so it never runs beside a
/// heavy one; every other test runs beside anything.
static LOAD: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Held by a test that loads the machine, for as long as it runs.
pub async fn heavy() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    LOAD.write().await
}

/// Held by a test whose assertions are about time, for as long as it runs.
pub async fn timed() -> tokio::sync::RwLockReadGuard<'static, ()> {
    LOAD.read().await
}

/// A free loopback port for a server a test starts (and may restart on the
/// same port after killing it). Taken below the kernel's ephemeral range
/// (32768-60999 by default), where the ports other tests' `bind(":0")`
/// listeners and outgoing connections get are never handed out, so a port
/// released for a restart is not taken by another test in between; each
/// caller in this process gets a different one.
pub fn server_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 1_000) as u16 * 10,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = 20_000 + (port - 20_000) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
