//! Browser tests' driver: Debian's headless `chromium` through
//! `chromedriver`, spoken to with the `fantoccini` WebDriver client.
//!
//! [`Driver::start`] runs `chromedriver` on a free port as a child process
//! (killed on drop); [`Driver::session`] opens a headless browser window.
//! Every lookup waits (polling, with a deadline) instead of sleeping a fixed
//! time, and a timeout panics with what was awaited, the page's URL and the
//! start of its text, so a failure says what the user would have seen.
#![allow(dead_code)]

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::elements::Element;
use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian installs the browser and its driver.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's `chromium-driver`.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long a `wait_*` call waits by default.
pub const WAIT: Duration = Duration::from_secs(10);

/// Whether the browser and driver are installed; when they are not, prints
/// a notice and answers false, unless `BOTWIRE_REQUIRE_BROWSER=1`, which
/// makes it panic.
pub fn browser_available() -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("BOTWIRE_REQUIRE_BROWSER").as_deref() == Ok("1") {
        panic!(
            "BOTWIRE_REQUIRE_BROWSER=1 but {missing:?} is missing (apt-get install chromium chromium-driver)"
        );
    }
    eprintln!(
        "notice: browser test skipped: {missing:?} missing (apt-get install chromium chromium-driver)"
    );
    false
}

/// A running `chromedriver`.
pub struct Driver {
    child: Child,
    base: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver runs in a process group of its own, with the browser
        // it started: end them all, or a session the test did not quit
        // leaves its browser running once chromedriver is gone.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    /// Starts `chromedriver` on a free port and waits until it is ready.
    pub async fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(CHROMEDRIVER)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        // `/status` needs no session, which a fantoccini client always opens.
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{}/status", driver.base)).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                return driver;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens a headless browser window of the given size whose console is
    /// logged (for [`Session::severe_logs`]).
    pub async fn session(&self, width: u32, height: u32) -> Session {
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", format!("--window-size={width},{height}"),
                         "--lang=en-GB"],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let Value::Object(caps) = caps else {
            unreachable!("capabilities are an object")
        };
        let caps: Capabilities = caps;
        // Plain HTTP: chromedriver listens on loopback only.
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&self.base)
            .await
            .unwrap_or_else(|e| panic!("no browser session: {e}"));
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&shots).expect("create target/screenshots");
        Session { client, shots }
    }
}

/// chromedriver's console log (`POST /session/{id}/se/log`), which is not
/// part of W3C WebDriver and so not among fantoccini's own commands.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

/// One browser window.
pub struct Session {
    client: Client,
    shots: PathBuf,
}

/// Panics naming the WebDriver command that failed and why.
fn must<T>(what: &str, r: Result<T, fantoccini::error::CmdError>) -> T {
    r.unwrap_or_else(|e| panic!("WebDriver {what} failed: {e}"))
}

impl Session {
    /// Loads a URL.
    pub async fn goto(&self, url: &str) {
        must(&format!("goto {url}"), self.client.goto(url).await);
    }

    /// The page's URL.
    pub async fn current_url(&self) -> String {
        must("current_url", self.client.current_url().await).to_string()
    }

    /// Runs a script (`return …` answers a value).
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        must("execute", self.client.execute(script, args).await)
    }

    async fn find(&self, css: &str) -> Option<Element> {
        self.client.find(Locator::Css(css)).await.ok()
    }

    /// What the user sees, for failure messages.
    async fn where_am_i(&self) -> String {
        let url = self
            .client
            .current_url()
            .await
            .map_or_else(|e| format!("(no URL: {e})"), |u| u.to_string());
        let text = self
            .client
            .execute("return document.body.innerText", vec![])
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let text: String = text.chars().take(800).collect();
        format!("at {url}; the page says:\n{text}")
    }

    /// Polls `check` until it answers `Some`, or panics after `timeout`
    /// naming `what`.
    pub async fn wait_until<T, F, Fut>(&self, what: &str, timeout: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}, {}",
                    self.where_am_i().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for a displayed element matching `css`.
    async fn wait_for_element(&self, css: &str) -> Element {
        self.wait_until(&format!("a visible element {css:?}"), WAIT, || async {
            let el = self.find(css).await?;
            el.is_displayed().await.ok()?.then_some(el)
        })
        .await
    }

    /// Waits for an element matching `css` that is displayed; answers its reference.
    pub async fn wait_for(&self, css: &str) -> String {
        self.wait_for_element(css).await.element_id().to_string()
    }

    /// Waits until the text of the element matching `css` contains `want`;
    /// answers the whole text.
    pub async fn wait_text(&self, css: &str, want: &str) -> String {
        self.wait_until(&format!("{css:?} to contain {want:?}"), WAIT, || async {
            let t = self.find(css).await?.text().await.ok()?;
            t.contains(want).then_some(t)
        })
        .await
    }

    /// The text of the element matching `css` (waiting for it; a page that
    /// re-renders meanwhile is read again rather than failing as stale).
    pub async fn text(&self, css: &str) -> String {
        self.wait_until(&format!("the text of {css:?}"), WAIT, || async {
            self.find(css).await?.text().await.ok()
        })
        .await
    }

    /// Clicks the element matching `css` (waiting until it is shown and
    /// takes the click; a stale or covered element is looked up again).
    pub async fn click(&self, css: &str) {
        self.wait_until(&format!("{css:?} to be clickable"), WAIT, || async {
            self.find(css).await?.click().await.ok()
        })
        .await;
    }

    /// Clicks the first `css` element whose text contains `text`.
    pub async fn click_text(&self, css: &str, text: &str) {
        let script = "const [css, text] = arguments; \
            const el = [...document.querySelectorAll(css)].find(e => e.offsetParent !== null && e.textContent.includes(text)); \
            if (!el) return false; el.click(); return true;";
        self.wait_until(
            &format!("a {css:?} saying {text:?} to click"),
            WAIT,
            || async {
                let v = self
                    .client
                    .execute(script, vec![json!(css), json!(text)])
                    .await
                    .ok()?;
                (v == true).then_some(())
            },
        )
        .await;
    }

    /// Types `text` into the element matching `css` (after clearing it;
    /// a stale element is looked up again).
    pub async fn fill(&self, css: &str, text: &str) {
        self.wait_until(&format!("{css:?} to take text"), WAIT, || async {
            let el = self.find(css).await?;
            el.clear().await.ok()?;
            el.send_keys(text).await.ok()
        })
        .await;
    }

    /// Sends keys to the element matching `css` without clearing it
    /// (`\u{E007}` is Enter).
    pub async fn keys(&self, css: &str, text: &str) {
        let el = self.wait_for_element(css).await;
        must(&format!("send keys to {css:?}"), el.send_keys(text).await);
    }

    /// Picks the option with `value` in the `<select>` matching `css`.
    pub async fn select(&self, css: &str, value: &str) {
        self.click(&format!("{css} option[value=\"{value}\"]"))
            .await;
    }

    /// Resizes the window.
    pub async fn resize(&self, width: u32, height: u32) {
        must("resize", self.client.set_window_size(width, height).await);
    }

    /// Saves a PNG of the whole page as `target/screenshots/{name}.png`
    /// (the window is stretched to the page's height for the shot).
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let (w, h) = must("window size", self.client.get_window_size().await);
        let (w, h) = (w as u32, h as u32);
        let full = self
            .execute(
                "return Math.ceil(document.documentElement.scrollHeight + (window.outerHeight - window.innerHeight))",
                vec![],
            )
            .await
            .as_u64()
            .unwrap_or(h as u64)
            .clamp(h as u64, 6000) as u32;
        if full > h {
            self.resize(w, full).await;
        }
        let png = must("screenshot", self.client.screenshot().await);
        if full > h {
            self.resize(w, h).await;
        }
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// The browser console's SEVERE entries since the last call (reading
    /// the log empties it).
    pub async fn severe_logs(&self) -> Vec<String> {
        let v = must("browser log", self.client.issue_cmd(BrowserLog).await);
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter(|e| e["level"] == "SEVERE")
                    .map(|e| e["message"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits for a `confirm()` or `alert()` dialog, accepts it, and answers
    /// its text.
    pub async fn accept_dialog(&self) -> String {
        let text = self
            .wait_until("a dialog to open", WAIT, || async {
                self.client.get_alert_text().await.ok()
            })
            .await;
        must("accept dialog", self.client.accept_alert().await);
        text
    }

    /// Types `text` on the keyboard into whatever has the focus (W3C
    /// actions): `\u{E007}` is Enter, `\u{E00C}` Escape, `\u{E004}` Tab.
    pub async fn type_keys(&self, text: &str) {
        let keys = text
            .chars()
            .fold(KeyActions::new("keyboard".into()), |k, c| {
                k.then(KeyAction::Down { value: c })
                    .then(KeyAction::Up { value: c })
            });
        must("type keys", self.client.perform_actions(keys).await);
    }

    /// Closes the window.
    pub async fn quit(&self) {
        let _ = self.client.clone().close().await;
    }
}
