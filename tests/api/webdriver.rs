//! A small W3C WebDriver client for Debian's chromium through chromedriver: the handful of
//! commands the browser suite uses, over the reqwest client the tests already have.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session; quits the browser and stops chromedriver when dropped.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
    pub shots: PathBuf,
    shot_count: usize,
}

/// An element handle.
#[derive(Clone)]
pub struct El(String);

fn require(bin: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{bin} is not installed: the browser tests need Debian's chromium and chromium-driver (scripts/test installs them)"
    );
}

impl Browser {
    /// Starts chromedriver and a headless Chromium `width` pixels wide. Screenshots go to
    /// `target/e2e/<suite>/`.
    pub async fn start(suite: &str, width: u32) -> Browser {
        let chromium = require("chromium");
        let chromedriver = require("chromedriver");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && r.json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({
            "capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                        "--disable-dev-shm-usage", "--proxy-server=direct://", "--proxy-bypass-list=*",
                        format!("--user-data-dir={}", profile.path().display()),
                        format!("--window-size={width},900"),
                    ]
                },
                "goog:loggingPrefs": {"browser": "ALL"},
                "unhandledPromptBehavior": "ignore"
            }}
        });
        let resp: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .unwrap();
        let session = resp["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromium did not start: {resp}"))
            .to_string();
        let shots = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/e2e")
            .join(suite);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            http,
            base,
            session,
            driver,
            _profile: profile,
            shots,
            shot_count: 0,
        }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp: Value = req.send().await.expect("webdriver").json().await.unwrap();
        resp["value"].clone()
    }

    async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let v = self.cmd(method, path, body).await;
        if let Some(err) = v.get("error") {
            panic!("webdriver {path}: {err} {}", v["message"]);
        }
        v
    }

    pub async fn goto(&self, url: &str) {
        self.ok(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    pub async fn url(&self) -> String {
        self.ok(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn try_find(&self, css: &str) -> Option<El> {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.get(ELEMENT)
            .and_then(|e| e.as_str())
            .map(|e| El(e.into()))
    }

    /// Waits up to 15 s for `css` to match.
    pub async fn find(&self, css: &str) -> El {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(e) = self.try_find(css).await {
                return e;
            }
            if Instant::now() > deadline {
                panic!(
                    "no element matches {css} on {}:\n{}",
                    self.url().await,
                    self.text("body").await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.ok(
            reqwest::Method::POST,
            &format!("/element/{}/click", e.0),
            Some(json!({})),
        )
        .await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.ok(
            reqwest::Method::POST,
            &format!("/element/{}/clear", e.0),
            Some(json!({})),
        )
        .await;
        self.ok(
            reqwest::Method::POST,
            &format!("/element/{}/value", e.0),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Picks files in a file input (several paths for `multiple`).
    pub async fn choose_files(&self, css: &str, files: &[&Path]) {
        let e = self.find(css).await;
        let text: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        self.ok(
            reqwest::Method::POST,
            &format!("/element/{}/value", e.0),
            Some(json!({"text": text.join("\n")})),
        )
        .await;
    }

    pub async fn text(&self, css: &str) -> String {
        let Some(e) = self.try_find(css).await else {
            return String::new();
        };
        self.cmd(
            reqwest::Method::GET,
            &format!("/element/{}/text", e.0),
            None,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Waits up to `secs` for the text of `css` to contain `needle`.
    pub async fn wait_text(&self, css: &str, needle: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let t = self.text(css).await;
            if t.contains(needle) {
                return t;
            }
            if Instant::now() > deadline {
                panic!(
                    "{css} never said {needle:?} on {}; it says:\n{t}",
                    self.url().await
                );
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    pub async fn js(&self, script: &str) -> Value {
        self.ok(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Accepts the confirmation dialog a destructive action opens; returns its question.
    pub async fn accept_dialog(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let v = self.cmd(reqwest::Method::GET, "/alert/text", None).await;
            if let Some(q) = v.as_str() {
                self.ok(reqwest::Method::POST, "/alert/accept", Some(json!({})))
                    .await;
                return q.to_string();
            }
            assert!(Instant::now() < deadline, "no confirmation dialog opened");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Presses Tab in the page (to see where focus goes and how it shows).
    pub async fn press_tab(&self) {
        self.ok(
            reqwest::Method::POST,
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "kbd", "actions": [
                {"type": "keyDown", "value": "\u{E004}"}, {"type": "keyUp", "value": "\u{E004}"}
            ]}]})),
        )
        .await;
    }

    pub async fn set_width(&self, width: u32) {
        self.ok(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": 900})),
        )
        .await;
    }

    /// Saves a PNG of the viewport as `NN-name.png`.
    pub async fn shot(&mut self, name: &str) {
        use base64::Engine as _;
        let b64 = self.ok(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .unwrap();
        self.shot_count += 1;
        std::fs::write(
            self.shots
                .join(format!("{:02}-{name}.png", self.shot_count)),
            png,
        )
        .unwrap();
    }

    /// The browser's console since the last call: (level, message).
    pub async fn console(&self) -> Vec<(String, String)> {
        for path in ["/se/log", "/log"] {
            let v = self
                .cmd(
                    reqwest::Method::POST,
                    path,
                    Some(json!({"type": "browser"})),
                )
                .await;
            if let Some(entries) = v.as_array() {
                return entries
                    .iter()
                    .map(|e| {
                        (
                            e["level"].as_str().unwrap_or_default().to_string(),
                            e["message"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
            }
        }
        panic!("chromedriver gave no browser log");
    }
}

impl Drop for Browser {
    /// Ends the session (chromedriver then quits Chromium) with a plain blocking request, so it
    /// also runs when a test panics, then stops chromedriver.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let addr = self.base.trim_start_matches("http://").to_string();
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                self.session
            );
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
