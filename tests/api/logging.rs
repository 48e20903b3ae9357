//! The server's own log (issue 14): the real binary with `MILKCRATE_LOG_FORMAT=json` writes one
//! JSON access line per request, with the status and the request id sent back as `X-Request-Id`,
//! and never the query string.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::docker_env::*;
use crate::helpers::*;

/// `milkcrate serve` on a free loopback port, keeping every line it writes to stderr.
pub(crate) struct LoggedServer {
    child: Child,
    pub(crate) base: String,
    pub(crate) lines: Arc<Mutex<Vec<String>>>,
    instance: String,
}

impl LoggedServer {
    pub(crate) fn start(data_dir: &Path, extra_env: &[(&str, &str)]) -> Self {
        let instance = format!("test-{}", rand_suffix());
        let mut cmd = milkcrate_command();
        cmd.env("MILKCRATE_DATA_DIR", data_dir)
            .env("MILKCRATE_LISTEN", "127.0.0.1:0")
            .env("TRAEFIK_NETWORK", NETWORK)
            .env("MILKCRATE_INSTANCE", &instance);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .arg("serve")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("milkcrate starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log lines").push(line);
            }
        });
        let mut server = Self {
            child,
            base: String::new(),
            lines,
            instance,
        };
        let line = server.wait_for_line("milkcrate listening", |l| l.contains("listening on "));
        server.base = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("an address after `listening on`")
            .to_string();
        server
    }

    /// The first line that satisfies `pred`, waiting up to 30 s for it.
    pub(crate) fn wait_for_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .expect("log lines")
                .iter()
                .find(|l| pred(l))
            {
                return l.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "milkcrate exited ({status}) before writing {what}:\n{}",
                    self.lines.lock().expect("log lines").join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {what} in the log:\n{}",
                self.lines.lock().expect("log lines").join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The JSON access line of the request with this id.
    pub(crate) fn access_line(&mut self, request_id: &str) -> serde_json::Value {
        let id = request_id.to_string();
        let line = self.wait_for_line("the access line", move |l| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|v| v["target"] == "milkcrate::access" && v["request_id"] == id.as_str())
        });
        serde_json::from_str(&line).expect("a JSON line")
    }
}

impl Drop for LoggedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Whatever this install made in the engine carries its instance label.
        let filter = format!("label=milkcrate.instance={}", self.instance);
        let list = |args: &[&str]| {
            std::process::Command::new("docker")
                .args(args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        for id in list(&["ps", "-aq", "--filter", &filter]).split_whitespace() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", id])
                .output();
        }
        for id in list(&["images", "-q", "--filter", &filter]).split_whitespace() {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", id])
                .output();
        }
        for kind in ["volume", "network"] {
            for name in list(&[kind, "ls", "-q", "--filter", &filter]).split_whitespace() {
                let _ = std::process::Command::new("docker")
                    .args([kind, "rm", name])
                    .output();
            }
        }
    }
}

#[tokio::test]
async fn json_access_lines_carry_status_and_request_id_but_no_query() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut server = LoggedServer::start(
        &dir.path().join("data"),
        &[("MILKCRATE_LOG_FORMAT", "json")],
    );
    let client = new_client();
    let resp = client
        .get(format!("{}/login?token=secret-query-value", server.base))
        .send()
        .await
        .expect("GET /login");
    assert_eq!(resp.status(), 200);
    let id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("an X-Request-Id header")
        .to_string();
    assert_eq!(id.len(), 12, "a short random id: {id}");
    let line = server.access_line(&id);
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(line["path"], "/login", "{line}");
    assert_eq!(line["route"], "/login", "{line}");
    assert_eq!(line["level"], "INFO", "{line}");
    assert!(line["latency_ms"].is_u64(), "{line}");

    // A route that does not exist is logged with its status too.
    let missing = client
        .get(format!(
            "{}/admin/no-such-page?key=secret-query-value",
            server.base
        ))
        .header("X-Request-Id", "client-id-42")
        .send()
        .await
        .expect("GET a missing page");
    // A well-formed id from the client is kept, and sent back.
    assert_eq!(
        missing
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("client-id-42")
    );
    let line = server.access_line("client-id-42");
    assert_eq!(line["status"], missing.status().as_u16(), "{line}");

    // A malformed one is replaced.
    let odd = client
        .get(format!("{}/login", server.base))
        .header("X-Request-Id", "has spaces; and more")
        .send()
        .await
        .expect("GET /login");
    let replaced = odd
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("an X-Request-Id header")
        .to_string();
    assert_ne!(replaced, "has spaces; and more");
    server.access_line(&replaced);

    let all = server.lines.lock().expect("log lines").join("\n");
    assert!(
        !all.contains("secret-query-value"),
        "the query string reached the log:\n{all}"
    );
}

#[test]
fn a_bad_log_filter_is_refused_with_its_variable_named() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let out = milkcrate_command()
        .env("MILKCRATE_DATA_DIR", dir.path().join("data"))
        .env("MILKCRATE_LISTEN", "127.0.0.1:0")
        .env("MILKCRATE_LOG", "milkcrate=loud")
        .arg("serve")
        .output()
        .expect("milkcrate runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("MILKCRATE_LOG") && stderr.contains("is not a log filter"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "nothing is created: {stderr}"
    );
}

impl LoggedServer {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) async fn html(&self, client: &reqwest::Client, path: &str) -> String {
        let resp = client.get(self.url(path)).send().await.expect("a page");
        resp.text().await.expect("its body")
    }

    async fn login(&self, client: &reqwest::Client) {
        let html = self.html(client, "/login").await;
        let resp = client
            .post(self.url("/login"))
            .form(&[
                ("csrf_token", csrf_token(&html).as_str()),
                ("password", DEFAULT_PASSWORD),
            ])
            .send()
            .await
            .expect("POST /login");
        assert_eq!(resp.status(), 303, "logged in");
    }

    /// Uploads `zip` as a new app and waits for its deploy to end; returns the deploy id and
    /// whether it succeeded.
    async fn deploy(&self, client: &reqwest::Client, name: &str, zip: Vec<u8>) -> (i64, bool) {
        let html = self.html(client, "/upload").await;
        let form = reqwest::multipart::Form::new()
            .text("csrf_token", csrf_token(&html))
            .text("app_name", name.to_string())
            .text("public_route", format!("/{name}"))
            .part(
                "file",
                reqwest::multipart::Part::bytes(zip).file_name("app.zip"),
            );
        let resp = client
            .post(self.url("/upload"))
            .multipart(form)
            .send()
            .await
            .expect("POST /upload");
        assert_eq!(resp.status(), 303);
        let deploy = deploy_id(&location(&resp));
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let page = self.html(client, &format!("/admin/deploys/{deploy}")).await;
            if page.contains("data-status=\"succeeded\"") {
                return (deploy, true);
            }
            if page.contains("data-status=\"failed\"") {
                return (deploy, false);
            }
            assert!(Instant::now() < deadline, "deploy {deploy} did not end");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The JSON line with this message whose deploy span has this id.
    fn deploy_line(&mut self, message: &'static str, deploy: i64) -> serde_json::Value {
        let line = self.wait_for_line(message, move |l| {
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| {
                v["message"] == message
                    && v["span"]["name"] == "deploy"
                    && v["span"]["deploy_id"] == deploy
            })
        });
        serde_json::from_str(&line).expect("a JSON line")
    }
}

/// Apps get the request id as `X-Request-Id` (the client's when well formed), and a deploy's
/// start and end, failure included with its reason, are in the server log with app and deploy id.
#[tokio::test]
async fn apps_receive_the_request_id_and_deploys_are_logged() {
    ensure_base_image();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut server = LoggedServer::start(
        &dir.path().join("data"),
        &[("MILKCRATE_LOG_FORMAT", "json")],
    );
    let client = new_client();
    server.login(&client).await;
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nCOPY www /www\nEXPOSE 8080\nCMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    );
    let cgi = b"#!/bin/sh\necho 'Content-Type: text/plain'\necho\nenv | sort\n";
    let echo = zip_of(&[
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("www/index.html", b"echo", 0o644),
        ("www/cgi-bin/env", cgi, 0o755),
    ]);
    let (deploy, ok) = server.deploy(&client, "echo", echo).await;
    assert!(ok, "the echo app deploys");
    let started = server.deploy_line("deploy started", deploy);
    assert_eq!(started["app"], "echo", "{started}");
    let done = server.deploy_line("deploy succeeded", deploy);
    assert_eq!(done["app"], "echo", "{done}");

    // The route table follows the deploy; wait until the app answers.
    let deadline = Instant::now() + Duration::from_secs(15);
    let resp = loop {
        let resp = client
            .get(server.url("/echo/cgi-bin/env?token=secret-query-value"))
            .send()
            .await
            .expect("GET the app");
        if resp.status() == 200 {
            break resp;
        }
        assert!(
            Instant::now() < deadline,
            "the app kept answering {}",
            resp.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("an X-Request-Id header")
        .to_string();
    let env = resp.text().await.expect("the app's answer");
    assert!(
        env.lines().any(|l| l == format!("HTTP_X_REQUEST_ID={id}")),
        "the app got {id}:\n{env}"
    );
    let line = server.access_line(&id);
    assert_eq!(line["route"], "app /echo", "{line}");
    assert_eq!(line["path"], "/echo/cgi-bin/env", "{line}");
    assert_eq!(line["status"], 200, "{line}");

    let resp = client
        .get(server.url("/echo/cgi-bin/env"))
        .header("X-Request-Id", "trace-from-the-client")
        .send()
        .await
        .expect("GET the app");
    let env = resp.text().await.expect("the app's answer");
    assert!(
        env.lines()
            .any(|l| l == "HTTP_X_REQUEST_ID=trace-from-the-client"),
        "{env}"
    );

    // A deploy that fails says why in the server log.
    let broken = zip_of(&[(
        "Dockerfile",
        format!("FROM {BASE_IMAGE}\nRUN /bin/busybox false\n").as_bytes(),
        0o644,
    )]);
    let (deploy, ok) = server.deploy(&client, "broken", broken).await;
    assert!(!ok, "a failing build fails the deploy");
    let failed = server.deploy_line("deploy failed", deploy);
    assert_eq!(failed["level"], "WARN", "{failed}");
    assert_eq!(failed["app"], "broken", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("Image build failed")),
        "{failed}"
    );
    let all = server.lines.lock().expect("log lines").join("\n");
    assert!(!all.contains("secret-query-value"), "{all}");
}
