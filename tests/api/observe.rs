//! Request logs, metrics and alerts, end to end: real requests through the built-in router to a
//! real container; `/metrics` scraped and parsed; alerts received by a webhook receiver this
//! test runs and by a real SMTP sink (Python's aiosmtpd, installed by scripts/test).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::docker_env::*;
use crate::helpers::*;

pub const TOKEN: &str = "metrics-token-0123456789abcdef";

/// Polls `check` until it returns `Some`, failing with `what` after `secs`.
pub async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn access_lines(data_dir: &Path, app: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(data_dir.join("access").join(format!("{app}.log")))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every access line is JSON"))
        .collect()
}

/// The samples of a Prometheus text exposition, keyed by `name{labels}`.
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number in {line:?}"));
        out.insert(key.to_string(), value);
    }
    assert!(
        text.trim_end().ends_with("# EOF"),
        "the exposition ends with # EOF"
    );
    out
}

pub async fn scrape(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = new_client().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("scrape")
}

pub async fn metrics_of(app: &TestApp) -> HashMap<String, f64> {
    let resp = scrape(&app.url("/metrics"), Some(TOKEN)).await;
    assert_eq!(resp.status(), 200);
    parse_metrics(&resp.text().await.unwrap())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends `n` GETs through the router, `parallel` at a time: every 5th to a missing file.
async fn send_requests(app: &TestApp, route: &str, n: usize, parallel: usize) -> (usize, usize) {
    let client = reqwest::Client::builder()
        .user_agent("observe-test/1.0")
        .build()
        .unwrap();
    let mut ok = 0;
    let mut missing = 0;
    let mut i = 0;
    while i < n {
        let batch: Vec<_> = (i..(i + parallel).min(n))
            .map(|k| {
                let url = if k % 5 == 0 {
                    app.url(&format!("{route}/missing-{k}?token=secret{k}"))
                } else {
                    app.url(&format!("{route}/?token=secret{k}"))
                };
                let client = client.clone();
                async move {
                    let resp = client.get(url).send().await.expect("request");
                    let status = resp.status().as_u16();
                    resp.bytes().await.expect("body");
                    status
                }
            })
            .collect();
        for status in futures_util::future::join_all(batch).await {
            match status {
                200 => ok += 1,
                404 => missing += 1,
                other => panic!("unexpected status {other}"),
            }
        }
        i += parallel;
    }
    (ok, missing)
}

#[tokio::test]
async fn access_log_has_one_line_per_request_with_its_fields_and_the_requests_tab_shows_them() {
    let app = spawn_engine_app_with(|s| s.observe.metrics_token = Some(TOKEN.into())).await;
    let name = format!("acc{}", rand_suffix());
    let (id, _) = app
        .deploy(&name, "/acc", web_app_zip("<h1>logged</h1>"))
        .await;
    wait_status(&app, "/acc/", 200).await;
    // The readiness probes above are requests too: count from here.
    let before = wait_for(10, "the probes' lines", || async {
        let n = access_lines(&app.data_dir, &name).len();
        (n > 0).then_some(n)
    })
    .await;

    let (ok, missing) = send_requests(&app, "/acc", 1000, 8).await;
    assert_eq!((ok, missing), (800, 200));
    let lines = wait_for(30, "1,000 access lines", || async {
        let lines = access_lines(&app.data_dir, &name);
        (lines.len() >= before + 1000).then_some(lines)
    })
    .await;
    assert_eq!(lines.len(), before + 1000, "one line per request, no more");
    let ours = &lines[before..];
    let count = |s: u64| ours.iter().filter(|l| l["status"] == s).count();
    assert_eq!((count(200), count(404)), (800, 200));
    for l in ours {
        for field in [
            "time",
            "app",
            "method",
            "path",
            "status",
            "bytes",
            "duration_ms",
            "upstream_ms",
            "client_ip",
            "user_agent",
        ] {
            assert!(l.get(field).is_some(), "{field} missing in {l}");
        }
        assert_eq!(l["app"], name.as_str());
        assert_eq!(l["method"], "GET");
        assert_eq!(l["client_ip"], "127.0.0.1");
        assert_eq!(l["user_agent"], "observe-test/1.0");
        let path = l["path"].as_str().unwrap();
        assert!(path.starts_with("/acc/"), "{path}");
        assert!(
            !path.contains("secret"),
            "no query string is logged: {path}"
        );
        assert!(l["duration_ms"].as_f64().unwrap() >= l["upstream_ms"].as_f64().unwrap());
        assert!(
            time::OffsetDateTime::parse(
                l["time"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339
            )
            .is_ok()
        );
    }
    let served = ours.iter().find(|l| l["status"] == 200).unwrap();
    assert_eq!(served["bytes"], "<h1>logged</h1>".len() as u64);
    let log_text =
        std::fs::read_to_string(app.data_dir.join(format!("access/{name}.log"))).unwrap();
    assert!(
        !log_text.contains("secret"),
        "tokens in query strings never reach the log"
    );

    // The metrics saw the same requests.
    let m = metrics_of(&app).await;
    let key =
        |class: &str| format!("milkcrate_http_requests_total{{app=\"{name}\",class=\"{class}\"}}");
    assert!(m[&key("2xx")] >= 800.0 && m[&key("4xx")] >= 200.0, "{m:?}");
    let all: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("milkcrate_http_requests_total{{app=\"{name}\"")))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(all, (before + 1000) as f64, "counters match the lines");
    assert_eq!(
        m[&format!("milkcrate_http_requests_in_flight{{app=\"{name}\"}}")],
        0.0
    );

    // The Requests tab: totals, percentiles, rows, and the status filter.
    let page = app.get_html(&format!("/admin/apps/{id}/requests")).await;
    assert!(
        page.contains(&format!("<dd id=\"total-requests\">{}</dd>", before + 1000)),
        "{page}"
    );
    assert!(page.contains("p95 ") && page.contains(" ms"), "{page}");
    assert!(page.contains("4xx: 200"), "{page}");
    assert!(page.contains("class=\"chart\""), "request charts drawn");
    let only_404 = app
        .get_html(&format!("/admin/apps/{id}/requests?class=4&path=missing"))
        .await;
    assert!(only_404.contains("class=\"status-404\""));
    assert!(
        !only_404.contains("class=\"status-200\""),
        "filtered by class"
    );
    let dashboard = app.get_html("/admin").await;
    assert!(
        dashboard.contains(&format!("href=\"/admin/apps/{id}/requests\">"))
            && dashboard.contains("/min"),
        "the dashboard shows the request rate: {dashboard}"
    );
    let app_page = app.get_html(&format!("/admin/apps/{id}")).await;
    assert!(app_page.contains(&format!("/admin/apps/{id}/requests")));
    assert!(
        app_page.contains("Requests per minute"),
        "the app page charts the rate"
    );
}

#[tokio::test]
async fn a_stalled_access_log_drops_and_counts_lines_but_never_holds_a_request() {
    let app = spawn_engine_app_with(|s| {
        s.observe.metrics_token = Some(TOKEN.into());
        s.observe.access_queue = 16;
    })
    .await;
    let name = format!("drop{}", rand_suffix());
    // The app's log is a FIFO nobody reads yet: the writer blocks opening it, as on a disk
    // that stopped answering.
    let fifo = app.data_dir.join("access").join(format!("{name}.log"));
    std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo");
    app.deploy(&name, "/drop", web_app_zip("ok")).await;
    wait_status(&app, "/drop/", 200).await;
    let (ok, missing) = send_requests(&app, "/drop", 1000, 16).await;
    assert_eq!(
        ok + missing,
        1000,
        "every request answered while the log is stuck"
    );
    let requests_of = |m: &HashMap<String, f64>| -> f64 {
        m.iter()
            .filter(|(k, _)| {
                k.starts_with(&format!("milkcrate_http_requests_total{{app=\"{name}\""))
            })
            .map(|(_, v)| v)
            .sum()
    };
    let m = metrics_of(&app).await;
    let requests = requests_of(&m);
    assert!(requests >= 1000.0, "every request counted: {requests}");
    let dropped = m["milkcrate_access_log_dropped_total"];
    assert!(
        dropped >= requests - 16.0 - 1.0,
        "a queue of 16 behind a stuck writer drops the rest: {dropped} of {requests}"
    );

    // The disk answers again: what was queued is written, nothing else is lost.
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn({
        let fifo = fifo.clone();
        move || {
            use std::io::BufRead;
            let Ok(f) = std::fs::File::open(fifo) else {
                return;
            };
            for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        }
    });
    let m = wait_for(30, "the queued lines written", || async {
        let m = metrics_of(&app).await;
        let handled =
            m["milkcrate_access_log_written_total"] + m["milkcrate_access_log_dropped_total"];
        (handled == requests_of(&m)).then_some(m)
    })
    .await;
    let written = m["milkcrate_access_log_written_total"] as usize;
    assert!(written >= 1);
    let mut read = Vec::new();
    while read.len() < written {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the written lines come out of the FIFO");
        read.push(line);
    }
    for l in &read {
        let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
        assert_eq!(v["app"], name.as_str());
    }
}

#[tokio::test]
async fn metrics_are_refused_without_the_token_and_absent_by_default() {
    // Default: no /metrics anywhere.
    let plain = spawn_app().await;
    assert_eq!(plain.get("/metrics").await.status(), 404);
    assert_eq!(
        scrape(&plain.url("/metrics"), Some(TOKEN)).await.status(),
        404,
        "no token configured: nothing to present one to"
    );

    // A token: refused without it or with another.
    let with_token = spawn_app_with(|s| s.observe.metrics_token = Some(TOKEN.into())).await;
    let url = with_token.url("/metrics");
    assert_eq!(scrape(&url, None).await.status(), 401);
    assert_eq!(
        scrape(&url, Some("metrics-token-0123456789abcdeX"))
            .await
            .status(),
        401
    );
    let ok = scrape(&url, Some(TOKEN)).await;
    assert_eq!(ok.status(), 200);
    let m = parse_metrics(&ok.text().await.unwrap());
    assert!(m.contains_key("milkcrate_engine_up"), "{m:?}");

    // Its own listener: served there, absent on the main one.
    let port = free_port();
    let listen: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let separate = spawn_app_with(move |s| s.observe.metrics_listen = Some(listen)).await;
    assert_eq!(separate.get("/metrics").await.status(), 404);
    let own = scrape(&format!("http://{listen}/metrics"), None).await;
    assert_eq!(own.status(), 200);
    parse_metrics(&own.text().await.unwrap());
}

/// A tiny HTTP server: every POST body it receives goes to the channel; answers `status`.
pub async fn webhook_receiver(status: u16) -> (String, mpsc::UnboundedReceiver<serde_json::Value>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let body_start = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..body_start]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < body_start + length {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = sock.write_all(reply.as_bytes()).await;
                if let Ok(v) = serde_json::from_slice(&buf[body_start..]) {
                    let _ = tx.send(v);
                }
            });
        }
    });
    (url, rx)
}

pub async fn add_channel(app: &TestApp, fields: &[(&str, &str)]) {
    let resp = app
        .post_form(
            "/admin/notifications",
            "/admin/notifications/channels",
            fields,
        )
        .await;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(status, 303, "channel added: {body}");
}

/// The id of the channel named `name`, from its row's buttons.
fn channel_id(page: &str, name: &str) -> String {
    let row = page
        .find(&format!("<td>{name}</td>"))
        .unwrap_or_else(|| panic!("a row for channel {name}: {page}"));
    let page = &page[row..];
    let at = page
        .find("/admin/notifications/channels/")
        .expect("the channel's buttons");
    page[at + "/admin/notifications/channels/".len()..]
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_failing_deploy_sends_one_webhook_alert_with_its_error() {
    let app = spawn_engine_app_with(|s| s.observe.metrics_token = Some(TOKEN.into())).await;
    let (url, mut received) = webhook_receiver(200).await;
    add_channel(
        &app,
        &[
            ("name", "hook"),
            ("kind", "webhook"),
            ("url", &url),
            ("format", "json"),
            ("events", "deploy.failed"),
        ],
    )
    .await;
    let audit = app.audit_lines();
    assert!(
        audit.iter().any(|l| l["action"] == "alert_channel_add"),
        "adding a channel is audited"
    );
    let stored = std::fs::read(app.data_dir.join("milkcrate.sqlite")).unwrap();
    assert!(
        !String::from_utf8_lossy(&stored).contains(&url),
        "the webhook URL is stored encrypted"
    );

    let name = format!("fail{}", rand_suffix());
    let zip = zip_of(&[(
        "Dockerfile",
        format!("FROM {BASE_IMAGE}\nRUN echo observe-broken-step && false\n").as_bytes(),
        0o644,
    )]);
    app.deploy_failing(&name, "/fail", zip).await;
    let alert = tokio::time::timeout(Duration::from_secs(30), received.recv())
        .await
        .expect("the webhook got the alert")
        .unwrap();
    assert_eq!(alert["event"], "deploy.failed");
    assert_eq!(alert["subject"], name.as_str());
    assert!(
        alert["message"].as_str().unwrap().contains("failed"),
        "the error is in the alert: {alert}"
    );
    let m = metrics_of(&app).await;
    assert_eq!(
        m["milkcrate_deploys_total{result=\"failed\"}"], 1.0,
        "{m:?}"
    );
    assert_eq!(
        m["milkcrate_deploy_duration_seconds_count{result=\"failed\"}"],
        1.0
    );
    let page = wait_for(30, "the delivery shown as sent", || async {
        let page = app.get_html("/admin/notifications").await;
        page.contains("delivery-sent").then_some(page)
    })
    .await;
    assert_eq!(
        page.matches("deploy.failed · ").count(),
        1,
        "exactly one alert"
    );

    // The test button sends to the channel at once.
    let id = channel_id(&page, "hook");
    let resp = app
        .post_form(
            "/admin/notifications",
            &format!("/admin/notifications/channels/{id}/test"),
            &[],
        )
        .await;
    assert_eq!(resp.status(), 303);
    let test = tokio::time::timeout(Duration::from_secs(30), received.recv())
        .await
        .expect("the test message arrived")
        .unwrap();
    assert_eq!(test["event"], "test");
    assert!(received.try_recv().is_err(), "nothing else was sent");
}

#[tokio::test]
async fn a_failing_channel_is_retried_then_shown_failed() {
    let app = spawn_app_with(|s| s.observe.alert_retry_base = Duration::from_millis(50)).await;
    app.login_as_admin().await;
    let (url, mut received) = webhook_receiver(500).await;
    add_channel(
        &app,
        &[
            ("name", "broken"),
            ("kind", "webhook"),
            ("url", &url),
            ("format", "slack"),
            ("events", "deploy.failed"),
        ],
    )
    .await;
    let page = app.get_html("/admin/notifications").await;
    let id = channel_id(&page, "broken");
    app.post_form(
        "/admin/notifications",
        &format!("/admin/notifications/channels/{id}/test"),
        &[],
    )
    .await;
    let page = wait_for(30, "the delivery to fail", || async {
        let page = unescape(&app.get_html("/admin/notifications").await);
        page.contains("delivery-failed").then_some(page)
    })
    .await;
    assert!(
        page.contains("after 4 tries: the webhook answered 500"),
        "{page}"
    );
    let mut bodies = 0;
    while let Ok(body) = received.try_recv() {
        assert!(
            body["text"].as_str().unwrap().starts_with("*Test message"),
            "Slack's format"
        );
        bodies += 1;
    }
    assert_eq!(bodies, 4, "one first try and three retries");

    // Bad input is refused with a sentence, and nothing is stored.
    let resp = app
        .post_form(
            "/admin/notifications",
            "/admin/notifications/channels",
            &[
                ("name", "bad"),
                ("kind", "webhook"),
                ("url", "javascript:alert(1)"),
                ("events", "deploy.failed"),
            ],
        )
        .await;
    assert_eq!(resp.status(), 400);
    let body = unescape(&resp.text().await.unwrap());
    assert!(
        body.contains("The webhook URL must start with https://"),
        "{body}"
    );
    assert!(!app.get_html("/admin/notifications").await.contains(">bad<"));
}

/// Python's aiosmtpd writing every message into a Maildir.
struct SmtpSink {
    child: Child,
    port: u16,
    maildir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_smtp_sink() -> SmtpSink {
    let has = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        has,
        "the email alert tests need Python's aiosmtpd as their SMTP sink and it is missing: run scripts/test (ensure_smtp_sink) or `python3 -m pip install aiosmtpd`"
    );
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("mail");
    let port = free_port();
    let child = Command::new("python3")
        .args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
            "-c",
            "aiosmtpd.handlers.Mailbox",
            maildir.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the SMTP sink did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    SmtpSink {
        child,
        port,
        maildir,
        _dir: dir,
    }
}

fn mails(maildir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(maildir.join("new")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .collect()
}

#[tokio::test]
async fn email_alerts_reach_a_real_smtp_sink_and_starttls_is_never_skipped() {
    let sink = start_smtp_sink();
    let app = spawn_app_with(|s| s.observe.alert_retry_base = Duration::from_millis(50)).await;
    app.login_as_admin().await;
    let port = sink.port.to_string();
    let common = [
        ("kind", "email"),
        ("smtp_host", "127.0.0.1"),
        ("smtp_port", port.as_str()),
        ("mail_from", "milkcrate@example.org"),
        ("mail_to", "ops@example.org"),
        ("events", "deploy.failed"),
    ];
    let mut plain = vec![("name", "local relay"), ("smtp_security", "none")];
    plain.extend_from_slice(&common);
    add_channel(&app, &plain).await;
    let page = app.get_html("/admin/notifications").await;
    let id = channel_id(&page, "local relay");
    app.post_form(
        "/admin/notifications",
        &format!("/admin/notifications/channels/{id}/test"),
        &[],
    )
    .await;
    let mail = wait_for(30, "the email in the sink", || async {
        mails(&sink.maildir).into_iter().next()
    })
    .await;
    assert!(
        mail.contains("Subject: [milkcrate] Test message from milkcrate"),
        "{mail}"
    );
    assert!(mail.contains("To: ops@example.org"), "{mail}");
    assert!(mail.contains("This channel works"), "{mail}");

    // STARTTLS (the default) against a server that does not offer it fails; never plain.
    let mut tls = vec![("name", "needs tls")];
    tls.extend_from_slice(&common);
    add_channel(&app, &tls).await;
    let page = app.get_html("/admin/notifications").await;
    let id = channel_id(&page, "needs tls");
    app.post_form(
        "/admin/notifications",
        &format!("/admin/notifications/channels/{id}/test"),
        &[],
    )
    .await;
    let page = wait_for(30, "the STARTTLS delivery to fail", || async {
        let page = unescape(&app.get_html("/admin/notifications").await);
        page.contains("delivery-failed").then_some(page)
    })
    .await;
    assert!(page.to_lowercase().contains("tls"), "{page}");
    assert_eq!(
        mails(&sink.maildir).len(),
        1,
        "nothing was sent in the clear"
    );
}

fn container_pid(id: &str) -> (bool, String) {
    let out = docker(&["inspect", "-f", "{{.State.Running}} {{.State.Pid}}", id]);
    let mut it = out.split_whitespace();
    (
        it.next() == Some("true"),
        it.next().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn a_container_killed_five_times_gives_exactly_one_crash_loop_alert() {
    let app = spawn_engine_app_with(|s| {
        s.observe.metrics_token = Some(TOKEN.into());
        s.observe.alert_check_interval = Duration::from_millis(200);
    })
    .await;
    let (url, mut received) = webhook_receiver(200).await;
    add_channel(
        &app,
        &[
            ("name", "crashes"),
            ("kind", "webhook"),
            ("url", &url),
            ("events", "app.crash_loop"),
            ("events", "app.exited"),
        ],
    )
    .await;
    let name = format!("crash{}", rand_suffix());
    app.deploy(&name, "/crash", web_app_zip("up")).await;
    let container = inspect_app(&app.instance, &name);
    let id = container["Id"].as_str().unwrap().to_string();
    for round in 1..=5 {
        let pid = wait_for(30, "the container running again", || {
            let id = id.clone();
            async move {
                let (running, pid) = container_pid(&id);
                (running && pid != "0").then_some(pid)
            }
        })
        .await;
        // Killed from outside, as the OOM killer would: the engine restarts it.
        let killed = Command::new("kill").args(["-9", &pid]).status().unwrap();
        assert!(killed.success(), "kill -9 {pid} (round {round})");
        wait_for(30, "the container to restart", || {
            let (id, pid) = (id.clone(), pid.clone());
            async move {
                let (running, now) = container_pid(&id);
                (running && now != pid && now != "0").then_some(())
            }
        })
        .await;
    }
    let key = format!("milkcrate_container_unexpected_exits_total{{app=\"{name}\"}}");
    wait_for(30, "five exits counted", || async {
        let m = metrics_of(&app).await;
        (m.get(&key).copied() == Some(5.0)).then_some(())
    })
    .await;
    let mut kinds = Vec::new();
    let first = tokio::time::timeout(Duration::from_secs(30), received.recv())
        .await
        .expect("an alert arrived")
        .unwrap();
    kinds.push(first["event"].as_str().unwrap().to_string());
    let second = tokio::time::timeout(Duration::from_secs(30), received.recv())
        .await
        .expect("a second alert arrived")
        .unwrap();
    kinds.push(second["event"].as_str().unwrap().to_string());
    kinds.sort();
    assert_eq!(kinds, ["app.crash_loop", "app.exited"]);
    let page = app.get_html("/admin/notifications").await;
    assert_eq!(
        page.matches("app.crash_loop · ").count(),
        1,
        "one crash-loop alert for five exits: {page}"
    );
    assert_eq!(
        page.matches("app.exited · ").count(),
        1,
        "one episode, one message"
    );
    assert!(received.try_recv().is_err(), "nothing more was sent");
}

/// Console errors or CSP violations, and how far the page is wider than the window.
async fn browser_problems(b: &crate::webdriver::Browser) -> (Vec<(String, String)>, i64) {
    let console = b
        .console()
        .await
        .into_iter()
        .filter(|(level, msg)| {
            level == "SEVERE"
                || msg.contains("Content Security Policy")
                || msg.contains("Refused to")
        })
        .collect();
    let overflow = b
        .js("return document.documentElement.scrollWidth - window.innerWidth;")
        .await
        .as_i64()
        .unwrap_or(0);
    (console, overflow)
}

#[tokio::test]
async fn charts_have_axes_and_fit_phones_and_desktops_in_chromium() {
    let app = spawn_engine_app().await;
    let name = format!("chart{}", rand_suffix());
    let (id, _) = app.deploy(&name, "/chart", web_app_zip("charted")).await;
    wait_status(&app, "/chart/", 200).await;
    send_requests(&app, "/chart", 40, 4).await;
    // A resource sample (one a second in tests) and the access lines, then the page has four
    // charts: memory, CPU, request rate, latency.
    wait_for(30, "four charts on the app page", || async {
        let page = app.get_html(&format!("/admin/apps/{id}")).await;
        (page.matches("<svg class=\"chart\"").count() == 4).then_some(())
    })
    .await;
    let mut b = crate::webdriver::Browser::start("observe-charts", 1440).await;
    b.goto(&app.url("/login")).await;
    b.type_into("#password", "admin").await;
    b.click("form[action='/login'] button[type=submit]").await;
    b.find("#apps").await;
    for width in [375, 1440] {
        b.set_width(width).await;
        for (what, path) in [
            ("app page", format!("/admin/apps/{id}")),
            ("requests tab", format!("/admin/apps/{id}/requests")),
            ("notifications", "/admin/notifications".to_string()),
        ] {
            b.goto(&app.url(&path)).await;
            b.find("h1").await;
            let (console, overflow) = browser_problems(&b).await;
            assert!(console.is_empty(), "{what} at {width} px: {console:?}");
            assert!(
                overflow <= 1,
                "{what} at {width} px is {overflow} px too wide"
            );
            b.shot(&format!("{what}-{width}").replace(' ', "-")).await;
            if what == "notifications" {
                continue;
            }
            // Every chart: drawn inside the window, with y labels carrying a unit and UTC times.
            let charts = b
                .js(
                    r#"return [...document.querySelectorAll('svg.chart')].map(s => {
                    const r = s.getBoundingClientRect();
                    const texts = [...s.querySelectorAll('text')].map(t => t.textContent);
                    return {w: r.width, h: r.height, right: r.right, texts};
                });"#,
                )
                .await;
            let charts = charts.as_array().unwrap();
            assert!(!charts.is_empty(), "{what}: charts drawn");
            for c in charts {
                let texts: Vec<&str> = c["texts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|t| t.as_str())
                    .collect();
                let times = texts
                    .iter()
                    .filter(|t| t.len() == 5 && t.as_bytes()[2] == b':')
                    .count();
                assert_eq!(times, 5, "{what} at {width}: five time labels in {texts:?}");
                assert!(
                    texts.iter().any(|t| t.ends_with("MiB")
                        || t.ends_with('%')
                        || t.ends_with("/min")
                        || t.ends_with("ms")
                        || t.ends_with(" s")),
                    "{what}: y labels carry their unit: {texts:?}"
                );
                assert!(
                    c["w"].as_f64().unwrap() > 100.0,
                    "{what}: a chart is readable: {c}"
                );
                assert!(
                    c["right"].as_f64().unwrap() <= f64::from(width) + 1.0,
                    "{what} at {width}: a chart leaves the window: {c}"
                );
            }
        }
    }
    b.goto(&app.url(&format!("/admin/apps/{id}"))).await;
    let limit = b
        .js("return document.querySelectorAll('svg.chart line.limit').length;")
        .await;
    assert_eq!(limit, 2, "memory and CPU limits drawn");
}
