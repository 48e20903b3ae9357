//! Rate limits: per client IP, a page that says when to retry, and no trust in headers from
//! clients that are not listed proxies.

use crate::helpers::*;

#[tokio::test]
async fn the_default_limit_answers_429_with_retry_after_and_a_page() {
    let app = spawn_app().await;
    for i in 0..100 {
        assert_eq!(
            app.get("/health").await.status(),
            200,
            "request {i} is within 100/minute"
        );
    }
    let resp = app.get("/health").await;
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("Too Many Requests") && body.contains("Try again in"),
        "{body}"
    );
    assert_eq!(
        app.get("/login").await.status(),
        200,
        "limits are per route, as in the original"
    );
}

#[tokio::test]
async fn failed_logins_are_limited_separately_and_audited() {
    let app = spawn_app_with(|s| s.login_attempts = 3).await;
    for _ in 0..3 {
        assert_eq!(app.login("wrong").await.status(), 401);
    }
    let resp = app.login(DEFAULT_PASSWORD).await;
    assert_eq!(
        resp.status(),
        429,
        "even the right password waits once the budget is spent"
    );
    assert!(resp.headers().contains_key("retry-after"));
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("Too many failed logins")
    );
    let failures = app
        .audit_lines()
        .into_iter()
        .filter(|l| l["action"] == "login" && l["success"] == false)
        .count();
    assert_eq!(failures, 4);
}

#[tokio::test]
async fn x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let app = spawn_app_with(|s| s.login_attempts = 2).await;
    for i in 0..2 {
        let b = app.second_browser();
        let token = csrf_token(&b.get_html("/login").await);
        let resp = b
            .client
            .post(b.url("/login"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .form(&[("csrf_token", token.as_str()), ("password", "wrong")])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
    }
    // A new forged address does not buy a fresh budget.
    let b = app.second_browser();
    let token = csrf_token(&b.get_html("/login").await);
    let resp = b
        .client
        .post(b.url("/login"))
        .header("x-forwarded-for", "203.0.113.99")
        .form(&[("csrf_token", token.as_str()), ("password", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(
        app.audit_lines().iter().all(|l| l["ip"] == "127.0.0.1"),
        "the audit log records the real peer"
    );
}

#[tokio::test]
async fn a_trusted_proxy_passes_the_real_client_address() {
    let app = spawn_app_with(|s| {
        s.trusted_proxies = vec![milkcrate::config::IpNet::parse("127.0.0.1").unwrap()];
        s.login_attempts = 1;
    })
    .await;
    let attempt = |ip: &'static str| {
        let b = app.second_browser();
        async move {
            let token = csrf_token(&b.get_html("/login").await);
            b.client
                .post(b.url("/login"))
                .header("x-forwarded-for", format!("198.51.100.7, {ip}"))
                .form(&[("csrf_token", token.as_str()), ("password", "wrong")])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(attempt("192.0.2.1").await, 401);
    assert_eq!(
        attempt("192.0.2.1").await,
        429,
        "same client behind the proxy: its budget is spent"
    );
    assert_eq!(
        attempt("192.0.2.2").await,
        401,
        "another client behind the same proxy has its own budget"
    );
    let ips: Vec<String> = app
        .audit_lines()
        .iter()
        .map(|l| l["ip"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ips,
        ["192.0.2.1", "192.0.2.1", "192.0.2.2"],
        "the appended hop, not the spoofable first one"
    );
}

/// The seed's limits on volume routes (security reference: create 20/hour, upload 30/hour),
/// counted per client before anything else runs.
#[tokio::test]
async fn volume_create_and_upload_have_their_own_hourly_limits() {
    let app = spawn_app().await;
    app.login_as_admin().await;
    for i in 0..20 {
        // An invalid name: refused before the engine is asked, but the request counts.
        let resp = app
            .post_form(
                "/admin/volumes/create",
                "/admin/volumes/create",
                &[("volume_name", "not valid!"), ("description", "")],
            )
            .await;
        assert_eq!(resp.status(), 400, "create {i} is within 20/hour");
    }
    let resp = app
        .post_form(
            "/admin/volumes/create",
            "/admin/volumes/create",
            &[("volume_name", "not valid!"), ("description", "")],
        )
        .await;
    assert_eq!(resp.status(), 429, "the 21st create in an hour waits");
    assert!(resp.headers().contains_key("retry-after"));

    let token = csrf_token(&app.get_html("/admin").await);
    let upload = || async {
        let form = reqwest::multipart::Form::new().text("csrf_token", token.clone());
        app.client
            .post(app.url("/admin/volumes/999/upload"))
            .multipart(form)
            .send()
            .await
            .unwrap()
    };
    for i in 0..30 {
        assert_eq!(upload().await.status(), 404, "upload {i} is within 30/hour");
    }
    assert_eq!(
        upload().await.status(),
        429,
        "the 31st upload in an hour waits"
    );
}
