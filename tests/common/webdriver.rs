//! A small W3C WebDriver client over `reqwest`, enough to drive Debian's
//! headless `chromium` through `chromedriver` in the browser tests.
//!
//! [`Driver::start`] runs `chromedriver` on a free port as a child process
//! (killed on drop); [`Driver::session`] opens a headless browser window.
//! Every lookup waits (polling, with a deadline) instead of sleeping a fixed
//! time, and a timeout panics with what was awaited, the page's URL and the
//! start of its text, so a failure says what the user would have seen.
#![allow(dead_code)]

use base64::Engine as _;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key W3C WebDriver puts element references under.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

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
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
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
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = driver
                .http
                .get(format!("{}/status", driver.base))
                .send()
                .await
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
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", format!("--window-size={width},{height}"),
                         "--lang=en-GB"],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let r: Value = self
            .http
            .post(format!("{}/session", self.base))
            .json(&caps)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("a JSON answer");
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {r}"))
            .to_owned();
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&shots).expect("create target/screenshots");
        Session {
            http: self.http.clone(),
            url: format!("{}/session/{id}", self.base),
            shots,
        }
    }
}

/// One browser window.
pub struct Session {
    http: reqwest::Client,
    url: String,
    shots: PathBuf,
}

impl Session {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.json(&b);
        } else if method == "POST" {
            req = req.json(&json!({}));
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let ok = resp.status().is_success();
        let v: Value = resp.json().await.map_err(|e| e.to_string())?;
        if ok {
            Ok(v["value"].clone())
        } else {
            Err(format!(
                "{}: {}",
                v["value"]["error"].as_str().unwrap_or("error"),
                v["value"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or("")
            ))
        }
    }

    async fn must(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        match self.call(method, path, body).await {
            Ok(v) => v,
            Err(e) => panic!("WebDriver {method} {path} failed: {e}"),
        }
    }

    /// Loads a URL.
    pub async fn goto(&self, url: &str) {
        self.must("POST", "/url", Some(json!({"url": url}))).await;
    }

    /// The page's URL.
    pub async fn current_url(&self) -> String {
        self.must("GET", "/url", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// Runs a script (`return …` answers a value).
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.must(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    async fn find(&self, css: &str) -> Option<String> {
        let v = self
            .call(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .ok()?;
        v[ELEMENT].as_str().map(str::to_owned)
    }

    /// What the user sees, for failure messages.
    async fn where_am_i(&self) -> String {
        let url = self.current_url().await;
        let text = self
            .call(
                "POST",
                "/execute/sync",
                Some(json!({"script": "return document.body.innerText", "args": []})),
            )
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

    /// Waits for an element matching `css` that is displayed; answers its reference.
    pub async fn wait_for(&self, css: &str) -> String {
        self.wait_until(&format!("a visible element {css:?}"), WAIT, || async {
            let id = self.find(css).await?;
            let shown = self
                .call("GET", &format!("/element/{id}/displayed"), None)
                .await
                .ok()?;
            (shown == true).then_some(id)
        })
        .await
    }

    /// Waits until the text of the element matching `css` contains `want`;
    /// answers the whole text.
    pub async fn wait_text(&self, css: &str, want: &str) -> String {
        self.wait_until(&format!("{css:?} to contain {want:?}"), WAIT, || async {
            let id = self.find(css).await?;
            let t = self
                .call("GET", &format!("/element/{id}/text"), None)
                .await
                .ok()?;
            let t = t.as_str()?.to_owned();
            t.contains(want).then_some(t)
        })
        .await
    }

    /// The text of the element matching `css` (waiting for it; a page that
    /// re-renders meanwhile is read again rather than failing as stale).
    pub async fn text(&self, css: &str) -> String {
        self.wait_until(&format!("the text of {css:?}"), WAIT, || async {
            let id = self.find(css).await?;
            let t = self
                .call("GET", &format!("/element/{id}/text"), None)
                .await
                .ok()?;
            t.as_str().map(str::to_owned)
        })
        .await
    }

    /// Clicks the element matching `css` (waiting until it is shown and
    /// takes the click; a stale or covered element is looked up again).
    pub async fn click(&self, css: &str) {
        self.wait_until(&format!("{css:?} to be clickable"), WAIT, || async {
            let id = self.find(css).await?;
            self.call("POST", &format!("/element/{id}/click"), None)
                .await
                .ok()
                .map(|_| ())
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
                    .call(
                        "POST",
                        "/execute/sync",
                        Some(json!({"script": script, "args": [css, text]})),
                    )
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
            let id = self.find(css).await?;
            self.call("POST", &format!("/element/{id}/clear"), None)
                .await
                .ok()?;
            self.call(
                "POST",
                &format!("/element/{id}/value"),
                Some(json!({"text": text})),
            )
            .await
            .ok()
            .map(|_| ())
        })
        .await;
    }

    /// Sends keys to the element matching `css` without clearing it
    /// (`\u{E007}` is Enter).
    pub async fn keys(&self, css: &str, text: &str) {
        let id = self.wait_for(css).await;
        self.must(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Picks the option with `value` in the `<select>` matching `css`.
    pub async fn select(&self, css: &str, value: &str) {
        self.click(&format!("{css} option[value=\"{value}\"]"))
            .await;
    }

    /// Resizes the window.
    pub async fn resize(&self, width: u32, height: u32) {
        self.must(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// Saves a PNG of the whole page as `target/screenshots/{name}.png`
    /// (the window is stretched to the page's height for the shot).
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let rect = self.must("GET", "/window/rect", None).await;
        let (w, h) = (
            rect["width"].as_u64().unwrap_or(1280) as u32,
            rect["height"].as_u64().unwrap_or(900) as u32,
        );
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
        let png = self.must("GET", "/screenshot", None).await;
        if full > h {
            self.resize(w, h).await;
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64 PNG"))
            .expect("valid base64");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, bytes).expect("write screenshot");
        path
    }

    /// The browser console's SEVERE entries since the last call (reading
    /// the log empties it).
    pub async fn severe_logs(&self) -> Vec<String> {
        let v = self
            .must("POST", "/se/log", Some(json!({"type": "browser"})))
            .await;
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
                self.call("GET", "/alert/text", None)
                    .await
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
            })
            .await;
        self.must("POST", "/alert/accept", Some(json!({}))).await;
        text
    }

    /// Types `text` on the keyboard into whatever has the focus (W3C
    /// actions): `\u{E007}` is Enter, `\u{E00C}` Escape, `\u{E004}` Tab.
    pub async fn type_keys(&self, text: &str) {
        let mut actions = Vec::new();
        for c in text.chars() {
            actions.push(json!({"type": "keyDown", "value": c.to_string()}));
            actions.push(json!({"type": "keyUp", "value": c.to_string()}));
        }
        self.must(
            "POST",
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})),
        )
        .await;
    }

    /// Closes the window.
    pub async fn quit(&self) {
        let _ = self.call("DELETE", "", None).await;
    }
}
