//! What issue 18 still lacked: certificate expiry as a metric and an alert (once per
//! episode), upstream errors and timeouts counted per app (an app that drops the connection
//! gets 502, one that never answers 504), and a deleted app's access log going with it.

use std::time::{Duration, Instant};

use reqwest::Method;

use crate::api_v1::{call, mint};
use crate::docker_env::*;
use crate::helpers::*;
use crate::observe::{TOKEN, access_lines, add_channel, metrics_of, wait_for, webhook_receiver};

/// A self-signed certificate for `host` valid for `days` more days: (cert PEM, key PEM).
fn cert_for(host: &str, days: i64) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![host.to_string()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

async fn upload_cert(app: &TestApp, host: &str, days: i64) {
    let (cert, key) = cert_for(host, days);
    let resp = app
        .post_form(
            "/admin/certificates",
            "/admin/certificates/upload",
            &[
                ("host", host),
                ("certificate", &cert),
                ("private_key", &key),
            ],
        )
        .await;
    let status = resp.status();
    assert_eq!(status, 303, "{}", resp.text().await.unwrap_or_default());
}

#[tokio::test]
async fn an_expiring_certificate_is_a_metric_and_one_alert_per_episode() {
    let app = spawn_app_with(|s| {
        s.observe.metrics_token = Some(TOKEN.into());
        s.observe.alert_check_interval = Duration::from_millis(100);
        s.observe.cert_expiry_days = 14;
    })
    .await;
    app.login_as_admin().await;
    let (url, mut received) = webhook_receiver(200).await;
    add_channel(
        &app,
        &[
            ("name", "certs"),
            ("kind", "webhook"),
            ("url", &url),
            ("events", "certificate.expiring"),
        ],
    )
    .await;
    upload_cert(&app, "later.example.test", 60).await;
    upload_cert(&app, "soon.example.test", 3).await;

    // The metric: seconds left per certificate.
    let m = metrics_of(&app).await;
    let soon =
        m["milkcrate_certificate_expiry_seconds{name=\"soon.example.test\",source=\"uploaded\"}"];
    let later =
        m["milkcrate_certificate_expiry_seconds{name=\"later.example.test\",source=\"uploaded\"}"];
    assert!(
        (2.9 * 86_400.0..=3.0 * 86_400.0).contains(&soon),
        "about 3 days left: {soon}"
    );
    assert!(later > 59.0 * 86_400.0, "{later}");

    // One alert, for the one under 14 days.
    let alert = tokio::time::timeout(Duration::from_secs(30), received.recv())
        .await
        .expect("the expiring certificate was alerted")
        .unwrap();
    assert_eq!(alert["event"], "certificate.expiring", "{alert}");
    assert_eq!(alert["subject"], "soon.example.test", "{alert}");
    let title = alert["title"].as_str().unwrap_or_default();
    assert!(
        title.contains("expires in 2 days") || title.contains("expires in 3 days"),
        "{alert}"
    );
    assert!(
        alert["message"]
            .as_str()
            .unwrap()
            .contains("upload a renewed one"),
        "{alert}"
    );

    // A second expiring certificate proves later checks ran: its alert comes, and the first
    // is not repeated.
    upload_cert(&app, "also.example.test", 5).await;
    let second = tokio::time::timeout(Duration::from_secs(30), received.recv())
        .await
        .expect("the second certificate was alerted")
        .unwrap();
    assert_eq!(second["subject"], "also.example.test", "{second}");

    // Renewed (a fresh upload): the episode ends; expiring again opens a new one.
    upload_cert(&app, "soon.example.test", 90).await;
    wait_for(30, "the renewed certificate's metric", || async {
        let m = metrics_of(&app).await;
        let v = m.get(
            "milkcrate_certificate_expiry_seconds{name=\"soon.example.test\",source=\"uploaded\"}",
        )?;
        (*v > 80.0 * 86_400.0).then_some(())
    })
    .await;
    // Several checks after the renewal: the third certificate's alert arrives after them.
    upload_cert(&app, "third.example.test", 2).await;
    let third = tokio::time::timeout(Duration::from_secs(30), received.recv())
        .await
        .expect("the third certificate was alerted")
        .unwrap();
    assert_eq!(third["subject"], "third.example.test", "{third}");
    upload_cert(&app, "soon.example.test", 1).await;
    let again = tokio::time::timeout(Duration::from_secs(30), received.recv())
        .await
        .expect("a new episode for the short certificate")
        .unwrap();
    assert_eq!(again["subject"], "soon.example.test", "{again}");
    assert!(received.try_recv().is_err(), "nothing more was sent");
    let page = app.get_html("/admin/notifications").await;
    assert_eq!(
        page.matches("certificate.expiring · ").count(),
        4,
        "soon, also, third, soon again: {page}"
    );
}

/// A busybox nc app: `/ok` answers 200, `/drop` closes the connection without a word,
/// `/hang` never answers.
fn unreliable_app_zip() -> Vec<u8> {
    let script = b"#!/bin/sh\nread -r line\nwhile read -r h; do case \"$h\" in \"\"|\"$(printf '\\r')\") break;; esac; done\ncase \"$line\" in\n  *' /drop '*) exit 0;;\n  *' /hang '*) sleep 600;;\n  *) printf 'HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nConnection: close\\r\\n\\r\\nok';;\nesac\n";
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nCOPY serve.sh /serve.sh\nEXPOSE 8080\nCMD [\"/bin/busybox\", \"nc\", \"-ll\", \"-p\", \"8080\", \"-e\", \"/serve.sh\"]\n"
    );
    zip_of(&[
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("serve.sh", script, 0o755),
    ])
}

#[tokio::test]
async fn upstream_errors_and_timeouts_are_counted_per_app() {
    let app = spawn_engine_app_with(|s| s.observe.metrics_token = Some(TOKEN.into())).await;
    let name = format!("flaky{}", rand_suffix());
    app.deploy(&name, &format!("/{name}"), unreliable_app_zip())
        .await;
    wait_status(&app, &format!("/{name}/ok"), 200).await;
    let client = new_client();
    for _ in 0..3 {
        let resp = client
            .get(app.url(&format!("/{name}/drop")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 502, "a dropped connection is a 502");
    }
    // The router waits 60 s for an answer.
    let started = Instant::now();
    let resp = client
        .get(app.url(&format!("/{name}/hang")))
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504, "after {:?}", started.elapsed());
    let error = format!("milkcrate_http_upstream_failures_total{{app=\"{name}\",kind=\"error\"}}");
    let timeout =
        format!("milkcrate_http_upstream_failures_total{{app=\"{name}\",kind=\"timeout\"}}");
    let m = wait_for(10, "the failures counted", || async {
        let m = metrics_of(&app).await;
        (m.get(&timeout).copied() == Some(1.0)).then_some(m)
    })
    .await;
    assert_eq!(m.get(&error).copied(), Some(3.0), "{m:?}");
    let gateway = format!("milkcrate_http_requests_total{{app=\"{name}\",class=\"5xx\"}}");
    assert_eq!(m.get(&gateway).copied(), Some(4.0), "{m:?}");
}

#[tokio::test]
async fn a_deleted_apps_access_log_goes_with_it() {
    let app = spawn_engine_app().await;
    let token = mint(&app, "ops", "deploy", "").await;
    let name = format!("logged{}", rand_suffix());
    app.deploy(&name, &format!("/{name}"), web_app_zip("hi"))
        .await;
    wait_status(&app, &format!("/{name}/"), 200).await;
    for _ in 0..5 {
        app.get(&format!("/{name}/")).await;
    }
    let dir = app.data_dir.join("access");
    wait_for(20, "the access lines", || async {
        (access_lines(&app.data_dir, &name).len() >= 5).then_some(())
    })
    .await;
    let (s, d) = call(
        &app,
        &token,
        Method::DELETE,
        &format!("/api/v1/apps/{name}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{d}");
    wait_for(20, "the log removed", || async {
        let left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("{name}.log")))
            .collect();
        left.is_empty().then_some(())
    })
    .await;
    assert!(
        app.audit_lines()
            .iter()
            .any(|l| l["action"] == "delete" && l["resource_id"] == name.as_str()),
        "the deletion itself stays in the audit log"
    );
}
