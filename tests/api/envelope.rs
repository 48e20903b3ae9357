//! The security envelope: headers on every response, error pages, body limits, bad encodings.

use crate::helpers::*;

fn assert_security_headers(resp: &reqwest::Response, what: &str) {
    let h = resp.headers();
    let csp = h
        .get("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no CSP"))
        .to_str()
        .unwrap();
    for part in [
        "default-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "script-src 'self'",
    ] {
        assert!(csp.contains(part), "{what}: CSP lacks {part}: {csp}");
    }
    assert!(
        !csp.contains("unsafe-eval") && !csp.contains("unsafe-inline"),
        "{what}: {csp}"
    );
    assert!(
        !csp.contains("http:") && !csp.contains("https:"),
        "{what}: no third-party origins: {csp}"
    );
    assert_eq!(h["x-frame-options"], "DENY", "{what}");
    assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(
        h["referrer-policy"], "strict-origin-when-cross-origin",
        "{what}"
    );
    assert!(h.contains_key("permissions-policy"), "{what}");
    assert!(
        !h.contains_key("strict-transport-security"),
        "{what}: no HSTS over plain HTTP"
    );
}

#[tokio::test]
async fn every_kind_of_response_carries_the_security_headers() {
    let app = spawn_app().await;
    let login = app.get("/login").await;
    let css = csrf_free_asset(&app.get_html("/login").await);
    let asset = app.get(&css).await;
    let missing = app.get("/no/such/page").await;
    let method = app.client.delete(app.url("/login")).send().await.unwrap();
    for (resp, what) in [
        (&login, "page"),
        (&asset, "static"),
        (&missing, "404"),
        (&method, "400/405"),
    ] {
        assert_security_headers(resp, what);
    }
    assert_eq!(
        login.headers()["cache-control"],
        "no-store",
        "pages are not cached"
    );
    assert_eq!(asset.status(), 200);
    assert_eq!(
        asset.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(
        asset.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert_eq!(missing.status(), 404);
    let body = missing.text().await.unwrap();
    assert!(
        body.contains("404") && body.contains("There is nothing at this address."),
        "{body}"
    );
}

fn csrf_free_asset(html: &str) -> String {
    let start = html.find("/static/style.").unwrap();
    html[start..].split('"').next().unwrap().to_string()
}

#[tokio::test]
async fn pages_carry_no_inline_script_or_style() {
    let app = spawn_app().await;
    app.login_as_admin().await;
    for path in ["/admin", "/admin/settings", "/admin/audit", "/no/such/page"] {
        let html = app.get_html(path).await;
        assert!(
            !html.contains("<script>") && !html.contains("style=") && !html.contains("<style"),
            "{path}"
        );
        assert!(
            !html.contains("onclick") && !html.contains("onsubmit"),
            "{path}"
        );
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "{path}: no external assets"
        );
    }
}

#[tokio::test]
async fn oversized_bodies_get_413_before_they_are_read() {
    let app = spawn_app_with(|s| s.max_content_length = 1024).await;
    app.login_as_admin().await;
    let token = csrf_token(&app.get_html("/admin/settings").await);
    let big = format!("csrf_token={token}&default_route=/{}", "a".repeat(2000));
    let resp = app
        .client
        .post(app.url("/admin/settings/default-route"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("larger than this server accepts")
    );

    // Declared small, sent large (chunked): refused while reading, still a 413.
    let stream = futures_util::stream::once(async { Ok::<_, std::io::Error>(vec![b'a'; 3000]) });
    let resp = app
        .client
        .post(app.url("/admin/settings/default-route"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-csrftoken", token.as_str())
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(
        location(&app.second_browser().get("/").await),
        "",
        "nothing was saved"
    );
}

#[tokio::test]
async fn non_utf8_form_data_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    app.login_as_admin().await;
    let token = csrf_token(&app.get_html("/admin/settings").await);
    let resp = app
        .client
        .post(app.url("/admin/settings/default-route"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf_token={token}&default_route=%2Fcaf%E9"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("not valid UTF-8"));
    assert_eq!(
        location(&app.second_browser().get("/").await),
        "",
        "nothing was saved"
    );
}

#[tokio::test]
async fn force_https_redirects_plain_http() {
    let app = spawn_app_with(|s| s.force_https = true).await;
    let resp = app
        .client
        .get(app.url("/login?x=1"))
        .header("host", "example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 301);
    assert_eq!(location(&resp), "https://example.test/login?x=1");
}
