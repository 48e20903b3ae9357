//! The JSON API under /api/v1 with bearer tokens: the whole life of an app through it (real
//! server, real engine), scope refusals, expired and revoked tokens, tokens outside the
//! Authorization header, one error shape, and the OpenAPI document covering the route table.

use std::time::Duration;

use serde_json::{Value, json};

use crate::docker_env::*;
use crate::helpers::*;

/// Mints a token on the Tokens page (as the signed-in admin); returns its secret.
pub async fn mint(app: &TestApp, name: &str, scope: &str, apps: &str) -> String {
    let token = csrf_token(&app.get_html("/admin/tokens").await);
    let resp = app
        .client
        .post(app.url("/admin/tokens"))
        .form(&[
            ("csrf_token", token.as_str()),
            ("name", name),
            ("scope", scope),
            ("apps", apps),
            ("expires", "30d"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    let start = html
        .find("id=\"new-token\">")
        .unwrap_or_else(|| panic!("the page shows the new token: {html}"))
        + "id=\"new-token\">".len();
    let secret = html[start..].split('<').next().unwrap().to_string();
    assert!(secret.starts_with("mct_"), "{secret}");
    secret
}

/// A client without cookies: the API's clients are scripts.
pub fn bare() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub async fn call(
    app: &TestApp,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = bare().request(method, app.url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}"));
    (status, value)
}

/// Reads a deploy's log stream to its end; returns (lines, final status).
async fn follow(app: &TestApp, token: &str, deploy: i64) -> (String, String) {
    let resp = bare()
        .get(app.url(&format!("/api/v1/deploys/{deploy}/log")))
        .bearer_auth(token)
        .timeout(Duration::from_secs(180))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/x-ndjson"
    );
    let text = resp.text().await.unwrap();
    let mut log = String::new();
    let mut done = String::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if let Some(l) = v["line"].as_str() {
            log.push_str(l);
        }
        if let Some(d) = v["done"].as_str() {
            done = d.to_string();
        }
    }
    (log, done)
}

#[tokio::test]
async fn an_app_lives_its_whole_life_through_the_api() {
    let app = spawn_engine_app().await;
    let deploy = mint(&app, "ci", "deploy", "").await;
    let admin = mint(&app, "ops", "admin", "").await;
    let name = format!("api{}", rand_suffix());
    let route = format!("/{name}");

    // Create from a raw ZIP body, settings in the query; follow the log to its end.
    let resp = bare()
        .post(app.url(&format!(
            "/api/v1/apps?app_name={name}&public_route={route}&env=GREETING%3Dhi"
        )))
        .bearer_auth(&deploy)
        .header("content-type", "application/zip")
        .body(web_app_zip("version one"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let created: Value = resp.json().await.unwrap();
    let deploy_id = created["deploy"]["id"].as_i64().unwrap();
    assert_eq!(created["app"]["name"], name.as_str());
    let (log, done) = follow(&app, &deploy, deploy_id).await;
    assert_eq!(done, "succeeded", "{log}");
    assert!(log.contains("Building"), "{log}");
    let body = wait_status(&app, &format!("{route}/"), 200)
        .await
        .text()
        .await
        .unwrap();
    assert!(body.contains("version one"));
    let (s, d) = call(
        &app,
        &deploy,
        reqwest::Method::GET,
        &format!("/api/v1/deploys/{deploy_id}"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(d["status"], "succeeded");
    assert!(d["duration_seconds"].as_i64().is_some());
    assert!(!d["steps"].as_array().unwrap().is_empty(), "{d}");

    // Update through a multipart form, waiting for the end.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(web_app_zip("version two")).file_name("app.zip"),
    );
    let resp = bare()
        .post(app.url(&format!("/api/v1/apps/{name}/update?wait=true")))
        .bearer_auth(&deploy)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let updated: Value = resp.json().await.unwrap();
    assert_eq!(updated["deploy"]["status"], "succeeded", "{updated}");
    let body = app.get(&format!("{route}/")).await.text().await.unwrap();
    assert!(body.contains("version two"));

    // Environment: keys only ever come back, never values.
    let (s, env) = call(
        &app,
        &deploy,
        reqwest::Method::POST,
        &format!("/api/v1/apps/{name}/env?wait=true"),
        Some(json!({"set": {"COLOUR": "blue-secret"}, "unset": ["GREETING"]})),
    )
    .await;
    assert_eq!(s, 200, "{env}");
    assert_eq!(env["keys"], json!(["COLOUR"]));
    assert_eq!(env["deploy"]["status"], "succeeded", "{env}");
    let (_, keys) = call(
        &app,
        &deploy,
        reqwest::Method::GET,
        &format!("/api/v1/apps/{name}/env"),
        None,
    )
    .await;
    assert_eq!(keys["keys"], json!(["COLOUR"]));
    assert!(!keys.to_string().contains("blue-secret"));
    let (s, bad) = call(
        &app,
        &deploy,
        reqwest::Method::POST,
        &format!("/api/v1/apps/{name}/env"),
        Some(json!({"set": {"1BAD": "x"}})),
    )
    .await;
    assert_eq!(s, 422);
    assert_eq!(bad["error"]["field"], "set");

    // Rollback to version one's image.
    let (s, rb) = call(
        &app,
        &deploy,
        reqwest::Method::POST,
        &format!("/api/v1/apps/{name}/rollback?wait=true"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{rb}");
    assert_eq!(rb["deploy"]["status"], "succeeded", "{rb}");
    let body = app.get(&format!("{route}/")).await.text().await.unwrap();
    assert!(body.contains("version one"), "{body}");
    let (s, r) = call(
        &app,
        &deploy,
        reqwest::Method::POST,
        &format!("/api/v1/apps/{name}/restart"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{r}");
    let (s, list) = call(&app, &deploy, reqwest::Method::GET, "/api/v1/apps", None).await;
    assert_eq!(s, 200);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == name.as_str())
    );

    // Volumes (admin scope): create, list its files, delete.
    let vol = format!("v{}", rand_suffix());
    let (s, v) = call(
        &app,
        &deploy,
        reqwest::Method::POST,
        "/api/v1/volumes",
        Some(json!({"name": vol})),
    )
    .await;
    assert_eq!(s, 403, "a deploy token cannot create volumes: {v}");
    let (s, v) = call(
        &app,
        &admin,
        reqwest::Method::POST,
        "/api/v1/volumes",
        Some(json!({"name": vol, "description": "api"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let vid = v["id"].as_i64().unwrap();
    let (s, files) = call(
        &app,
        &admin,
        reqwest::Method::GET,
        &format!("/api/v1/volumes/{vid}/files"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{files}");
    assert_eq!(files, json!([]));
    let (s, again) = call(
        &app,
        &admin,
        reqwest::Method::POST,
        "/api/v1/volumes",
        Some(json!({"name": vol})),
    )
    .await;
    assert_eq!(s, 409, "{again}");
    let (s, _) = call(
        &app,
        &admin,
        reqwest::Method::DELETE,
        &format!("/api/v1/volumes/{vid}"),
        None,
    )
    .await;
    assert_eq!(s, 200);

    // Delete; the app is gone.
    let (s, del) = call(
        &app,
        &deploy,
        reqwest::Method::DELETE,
        &format!("/api/v1/apps/{name}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{del}");
    assert!(del["containers"].as_u64().unwrap() >= 1);
    let (s, gone) = call(
        &app,
        &deploy,
        reqwest::Method::GET,
        &format!("/api/v1/apps/{name}"),
        None,
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(gone["error"]["code"], "not_found");

    // The audit log names the token, never its secret.
    let lines = app.audit_lines();
    assert!(
        lines.iter().any(|l| l["action"] == "rollback"
            && l["user_id"].as_str().unwrap_or("").starts_with("token:ci#")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l["action"] == "delete"
        && l["resource_id"] == name.as_str()
        && l["user_id"].as_str().unwrap_or("").starts_with("token:ci#")));
    let raw = std::fs::read_to_string(app.data_dir.join("audit.log")).unwrap();
    assert!(
        !raw.contains(&deploy) && !raw.contains(&admin),
        "no secret in the audit log"
    );
}

#[tokio::test]
async fn scopes_refuse_what_they_do_not_cover() {
    let app = spawn_with_apps(2).await;
    app.login_as_admin().await;
    let read = mint(&app, "reader", "read", "").await;
    let only_a = mint(&app, "a-only", "deploy", "app-000").await;
    let zip = zip_of(&[("Dockerfile", b"FROM scratch\n", 0o644)]);

    // A read token reads, but cannot deploy, act or mint a wider token.
    assert_eq!(
        call(&app, &read, reqwest::Method::GET, "/api/v1/apps", None)
            .await
            .0,
        200
    );
    let resp = bare()
        .post(app.url("/api/v1/apps?app_name=newapp&public_route=/newapp"))
        .bearer_auth(&read)
        .header("content-type", "application/zip")
        .body(zip.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "forbidden");
    for action in ["restart", "rollback", "redeploy", "stop"] {
        let (s, _) = call(
            &app,
            &read,
            reqwest::Method::POST,
            &format!("/api/v1/apps/app-000/{action}"),
            None,
        )
        .await;
        assert_eq!(s, 403, "{action}");
    }
    assert_eq!(
        call(
            &app,
            &read,
            reqwest::Method::DELETE,
            "/api/v1/apps/app-000",
            None
        )
        .await
        .0,
        403
    );
    let (s, _) = call(
        &app,
        &read,
        reqwest::Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "x", "scope": "deploy"})),
    )
    .await;
    assert_eq!(s, 403);

    // A deploy token limited to app-000 cannot touch app-001, create another app, or go wider.
    for action in ["restart", "rollback", "redeploy"] {
        let (s, e) = call(
            &app,
            &only_a,
            reqwest::Method::POST,
            &format!("/api/v1/apps/app-001/{action}"),
            None,
        )
        .await;
        assert_eq!(s, 403, "{action}: {e}");
    }
    assert_eq!(
        call(
            &app,
            &only_a,
            reqwest::Method::DELETE,
            "/api/v1/apps/app-001",
            None
        )
        .await
        .0,
        403
    );
    let (s, _) = call(
        &app,
        &only_a,
        reqwest::Method::POST,
        "/api/v1/apps/app-001/env",
        Some(json!({"set": {"A": "b"}})),
    )
    .await;
    assert_eq!(s, 403);
    let resp = bare()
        .post(app.url("/api/v1/apps?app_name=other&public_route=/other"))
        .bearer_auth(&only_a)
        .header("content-type", "application/zip")
        .body(zip)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let (s, e) = call(
        &app,
        &only_a,
        reqwest::Method::POST,
        "/api/v1/apps/app-000/redeploy",
        None,
    )
    .await;
    assert_ne!(s, 403, "its own app is allowed: {e}");
    for wider in [
        json!({"name": "w", "scope": "deploy"}),
        json!({"name": "w", "scope": "admin"}),
        json!({"name": "w", "scope": "deploy", "apps": ["app-000", "app-001"]}),
    ] {
        let (s, e) = call(
            &app,
            &only_a,
            reqwest::Method::POST,
            "/api/v1/tokens",
            Some(wider.clone()),
        )
        .await;
        assert_eq!(s, 403, "{wider}: {e}");
    }
    // Nor can it take part of another app's route (the longest prefix would win).
    let resp = bare()
        .post(app.url("/api/v1/apps?app_name=app-000&public_route=/app-001/checkout"))
        .bearer_auth(&only_a)
        .header("content-type", "application/zip")
        .body(zip_of(&[("Dockerfile", b"FROM scratch\n", 0o644)]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let err: Value = resp.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot nest routes"),
        "{err}"
    );
    // Not even a read token: it would read every other app.
    let (s, e) = call(
        &app,
        &only_a,
        reqwest::Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "n", "scope": "read", "expires": "1d"})),
    )
    .await;
    assert_eq!(s, 403, "{e}");
    // It reads nothing of app-001 (its logs, deploys, env keys, the app itself), and the
    // app list shows only its own.
    for path in [
        "/api/v1/apps/app-001",
        "/api/v1/apps/app-001/logs",
        "/api/v1/apps/app-001/deploys",
        "/api/v1/apps/app-001/env",
        "/api/v1/apps/app-001/domains",
    ] {
        let (s, e) = call(&app, &only_a, reqwest::Method::GET, path, None).await;
        assert_eq!(s, 403, "{path}: {e}");
    }
    let (s, list) = call(&app, &only_a, reqwest::Method::GET, "/api/v1/apps", None).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app-000"]);
    let (s, narrow) = call(
        &app,
        &only_a,
        reqwest::Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "n", "scope": "deploy", "apps": ["app-000"], "expires": "1d"})),
    )
    .await;
    assert_eq!(s, 201, "{narrow}");
    assert!(narrow["token"].as_str().unwrap().starts_with("mct_"));
    assert_eq!(
        call(&app, &only_a, reqwest::Method::GET, "/api/v1/tokens", None)
            .await
            .0,
        403
    );
    assert_eq!(
        call(&app, &only_a, reqwest::Method::GET, "/api/v1/audit", None)
            .await
            .0,
        403
    );
    let refused = app.audit_lines();
    assert!(
        refused
            .iter()
            .any(|l| l["action"] == "token_create" && l["success"] == false)
    );
}

#[tokio::test]
async fn expired_and_revoked_tokens_get_401_at_once() {
    let app = spawn_app().await;
    app.login_as_admin().await;
    let token = mint(&app, "short", "read", "").await;
    assert_eq!(
        call(&app, &token, reqwest::Method::GET, "/api/v1/whoami", None)
            .await
            .0,
        200
    );
    let (_, me) = call(&app, &token, reqwest::Method::GET, "/api/v1/whoami", None).await;
    let id = me["token_id"].as_i64().unwrap();

    // Revoked on the Tokens page: the very next request is refused.
    let resp = app
        .post_form("/admin/tokens", &format!("/admin/tokens/{id}/revoke"), &[])
        .await;
    assert_eq!(resp.status(), 303);
    let (s, e) = call(&app, &token, reqwest::Method::GET, "/api/v1/whoami", None).await;
    assert_eq!(s, 401);
    assert_eq!(e["error"]["message"], "The token has been revoked.");
    assert!(app.get_html("/admin/tokens").await.contains("revoked"));

    // Expired: written straight into the database with an expiry in the past.
    let secret = "mct_expired-token-for-the-test-0123456789ab";
    let store = milkcrate::store::Store::open(&app.data_dir.join("milkcrate.sqlite")).unwrap();
    store
        .insert_token(milkcrate::store::NewToken {
            name: "old".into(),
            secret_hash: milkcrate::secrets::sha256_hex(secret.as_bytes()),
            scope: "admin".into(),
            apps: String::new(),
            created_by: "test".into(),
            created_at: 1,
            expires_at: Some(2),
        })
        .await
        .unwrap();
    let (s, e) = call(&app, secret, reqwest::Method::GET, "/api/v1/apps", None).await;
    assert_eq!(s, 401);
    assert_eq!(e["error"]["message"], "The token has expired.");
    let (s, e) = call(
        &app,
        "mct_made-up",
        reqwest::Method::GET,
        "/api/v1/apps",
        None,
    )
    .await;
    assert_eq!(s, 401);
    assert_eq!(e["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn tokens_outside_the_authorization_header_are_refused() {
    let app = spawn_app().await;
    app.login_as_admin().await;
    let token = mint(&app, "leaky", "admin", "").await;
    for param in ["token", "access_token", "api_key"] {
        let resp = bare()
            .get(app.url(&format!("/api/v1/apps?{param}={token}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{param}");
        let e: Value = resp.json().await.unwrap();
        assert_eq!(e["error"]["code"], "token_in_query");
    }
    // Even with a valid header, a token in the query is refused (it may be in a log now).
    let resp = bare()
        .get(app.url(&format!("/api/v1/apps?x={token}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // A token as a cookie is not read.
    let resp = bare()
        .get(app.url("/api/v1/apps"))
        .header("cookie", format!("token={token}; milkcrate_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(
        resp.headers().get("set-cookie").is_none(),
        "the API sets no cookies"
    );
    // The admin's session cookie is no API credential either (so no CSRF exposure here).
    let resp = app
        .client
        .get(app.url("/api/v1/apps"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let csrf = csrf_token(&app.get_html("/admin").await);
    let resp = app
        .client
        .post(app.url("/api/v1/volumes"))
        .header("x-csrftoken", csrf)
        .json(&json!({"name": "viacookie"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // Basic or other schemes are not tokens.
    let resp = bare()
        .get(app.url("/api/v1/apps"))
        .header("authorization", format!("Basic {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn failed_token_attempts_spend_the_login_budget() {
    let app = spawn_app_with(|s| s.login_attempts = 3).await;
    for _ in 0..3 {
        let (s, _) = call(
            &app,
            "mct_guess",
            reqwest::Method::GET,
            "/api/v1/apps",
            None,
        )
        .await;
        assert_eq!(s, 401);
    }
    let (s, e) = call(
        &app,
        "mct_guess",
        reqwest::Method::GET,
        "/api/v1/apps",
        None,
    )
    .await;
    assert_eq!(s, 429, "{e}");
    assert_eq!(e["error"]["code"], "too_many_requests");
    // The same budget as the login form's.
    let resp = app.login("wrong-password").await;
    assert_eq!(resp.status(), 429);
}

#[tokio::test]
async fn errors_have_one_json_shape() {
    let app = spawn_app_with(|s| s.max_content_length = 64 * 1024).await;
    app.login_as_admin().await;
    let token = mint(&app, "shape", "admin", "").await;
    let (s, e) = call(
        &app,
        &token,
        reqwest::Method::GET,
        "/api/v1/nothing-here",
        None,
    )
    .await;
    assert_eq!((s, e["error"]["code"].as_str()), (404, Some("not_found")));
    let (s, e) = call(
        &app,
        &token,
        reqwest::Method::GET,
        "/api/v1/apps/nope",
        None,
    )
    .await;
    assert_eq!((s, e["error"]["code"].as_str()), (404, Some("not_found")));
    let resp = bare()
        .post(app.url("/api/v1/apps?app_name=x1&public_route=/x1"))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    let resp = bare()
        .post(app.url("/api/v1/apps?app_name=big&public_route=/big"))
        .bearer_auth(&token)
        .header("content-type", "application/zip")
        .body(vec![0u8; 200 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["error"]["code"], "payload_too_large");
    let resp = bare()
        .post(app.url("/api/v1/apps?app_name=a&public_route=/ok"))
        .bearer_auth(&token)
        .header("content-type", "application/zip")
        .body(zip_of(&[("Dockerfile", b"FROM scratch\n", 0o644)]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["error"]["field"], "app_name", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at least 2 characters")
    );
    let resp = bare()
        .post(app.url("/api/v1/apps?app_name=notzip&public_route=/nz"))
        .bearer_auth(&token)
        .header("content-type", "application/zip")
        .body("not a zip at all")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["error"]["field"], "file");
    let (s, e) = call(&app, &token, reqwest::Method::PUT, "/api/v1/apps", None).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    // Nothing was left behind by the refusals.
    let uploads = std::fs::read_dir(app.data_dir.join("uploads"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(uploads, 0, "refused uploads are removed");
    assert_eq!(
        call(&app, &token, reqwest::Method::GET, "/api/v1/apps", None)
            .await
            .1,
        json!([])
    );
}

#[tokio::test]
async fn a_tar_body_deploys_like_a_zip() {
    let app = spawn_engine_app().await;
    let token = mint(&app, "tar", "deploy", "").await;
    let name = format!("tar{}", rand_suffix());
    let mut tar = tar::Builder::new(Vec::new());
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nCOPY www /www\nEXPOSE 8080\nCMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    );
    for (path, data) in [
        ("Dockerfile", dockerfile.as_bytes()),
        ("www/index.html", b"from a tar".as_slice()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, path, data).unwrap();
    }
    let body = tar.into_inner().unwrap();
    let resp = bare()
        .post(app.url(&format!(
            "/api/v1/apps?app_name={name}&public_route=/{name}&wait=true"
        )))
        .bearer_auth(&token)
        .header("content-type", "application/x-tar")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["deploy"]["status"], "succeeded", "{v}");
    let page = wait_status(&app, &format!("/{name}/"), 200)
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("from a tar"));
    let (s, _) = call(
        &app,
        &token,
        reqwest::Method::DELETE,
        &format!("/api/v1/apps/{name}"),
        None,
    )
    .await;
    assert_eq!(s, 200);
}

/// Every /api/v1 route of the route table is in the OpenAPI document, with its responses, and
/// every schema it refers to is defined.
#[tokio::test]
async fn openapi_covers_every_api_route_with_its_schemas() {
    let app = spawn_app().await;
    let resp = bare()
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the document needs no token");
    let doc: Value = resp.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let mut checked = 0;
    for route in milkcrate::web::route_table() {
        if !milkcrate::web::api::is_api_path(route.path) {
            continue;
        }
        let method = route.method.as_str().to_lowercase();
        let op = &doc["paths"][route.path][&method];
        assert!(
            op.is_object(),
            "{} {} is missing from openapi.json",
            route.method,
            route.path
        );
        let responses = op["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{} {} has no responses", route.method, route.path));
        assert!(
            responses
                .iter()
                .any(|(code, r)| code.starts_with('2') && r["content"].is_object()),
            "{} {} documents no success body",
            route.method,
            route.path
        );
        checked += 1;
    }
    assert!(checked >= 20, "{checked} API routes checked");
    // Every $ref resolves.
    let text = doc.to_string();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = piece.split('"').next().unwrap();
        assert!(
            schemas.contains_key(name),
            "schema {name} is referred to but not defined"
        );
    }
}

/// The hourly upload limit counts API creates per token, as the UI counts them per admin.
#[tokio::test]
async fn api_uploads_count_against_the_upload_limit() {
    let app = spawn_app_with(|s| s.action_limits.upload = 2).await;
    app.login_as_admin().await;
    let token = mint(&app, "busy", "deploy", "").await;
    let mut statuses = Vec::new();
    for i in 0..3 {
        let resp = bare()
            .post(app.url(&format!(
                "/api/v1/apps?app_name=app{i}&public_route=/app{i}"
            )))
            .bearer_auth(&token)
            .header("content-type", "application/zip")
            .body("not a zip")
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, vec![422, 422, 429]);
}

/// The API's state-changing routes are exempt from CSRF because no cookie authenticates them:
/// each refuses a signed-in browser (session cookie and a valid CSRF token) with 401.
#[tokio::test]
async fn every_api_route_ignores_the_admin_session() {
    let app = spawn_with_apps(1).await;
    app.login_as_admin().await;
    let csrf = csrf_token(&app.get_html("/admin").await);
    let mut checked = 0;
    for route in milkcrate::web::route_table() {
        if !milkcrate::web::api::is_api_path(route.path) || route.path.ends_with("openapi.json") {
            continue;
        }
        let path = route
            .path
            .replace("{app}", "app-000")
            .replace("{deploy_id}", "1")
            .replace("{volume_id}", "1")
            .replace("{token_id}", "1");
        let resp = app
            .client
            .request(route.method.clone(), app.url(&path))
            .header("x-csrftoken", &csrf)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{} {path}", route.method);
        checked += 1;
    }
    assert!(checked >= 20);
}

/// A deploy token limited to one app cannot hand that app another app's volume (or one the
/// admin has not given to any of its apps): a volume is other apps' data. Its own app's volume
/// stays allowed, and an admin token may mount any volume.
#[tokio::test]
async fn a_limited_token_cannot_mount_another_apps_volume() {
    let dir = tempfile::tempdir().unwrap().keep();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let store = milkcrate::store::Store::open(&data.join("milkcrate.sqlite")).unwrap();
    for (i, vol) in ["vol-a", "vol-b"].iter().enumerate() {
        let docker = format!("milkcrate-test-{vol}-{}", rand_suffix());
        store
            .insert_volume(vol.to_string(), docker.clone(), String::new())
            .await
            .unwrap();
        let new = milkcrate::store::NewApp {
            name: format!("app-{i:03}"),
            public_route: format!("/app-{i:03}"),
            deployment_type: "dockerfile".into(),
            health_path: None,
            memory_mb: 128,
            cpu_percent: 50,
            port_override: None,
            source_zip: String::new(),
            volume_mounts: Some(format!(r#"{{"{docker}":{{"bind":"/data","mode":"rw"}}}}"#)),
            domains: Vec::new(),
        };
        let (id, deploy) = store.insert_app(new, 0).await.unwrap().unwrap();
        store
            .app_deployed(id, format!("c{i}"), format!("img-{i}:1"), None, 8080)
            .await
            .unwrap();
        store
            .finish_deploy(
                deploy,
                milkcrate::domain::state::DeployStatus::Succeeded,
                None,
                None,
                0,
            )
            .await
            .unwrap();
    }
    store
        .insert_volume(
            "vol-free".into(),
            format!("milkcrate-test-free-{}", rand_suffix()),
            String::new(),
        )
        .await
        .unwrap();
    drop(store);
    let app = spawn_in(data, |_| {}).await;
    app.login_as_admin().await;
    let only_a = mint(&app, "a-only", "deploy", "app-000").await;
    let zip = zip_of(&[("Dockerfile", b"FROM scratch\n", 0o644)]);
    let update = |token: String, mounts: &'static str| {
        let zip = zip.clone();
        let url = app.url(&format!("/api/v1/apps/app-000/update?mounts={mounts}"));
        async move {
            let resp = bare()
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/zip")
                .body(zip)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };

    for (mounts, why) in [
        ("vol-b:/data", "another app's volume"),
        ("vol-free:/data", "a volume no app of the token uses"),
        ("vol-a:/data,vol-b:/other", "its own plus another's"),
    ] {
        let (s, e) = update(only_a.clone(), mounts).await;
        assert_eq!(s, 403, "{why}: {e}");
        assert_eq!(e["error"]["code"], "forbidden", "{why}: {e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("may not mount volume"),
            "{why}: the refusal says why: {e}"
        );
    }
    // Nothing was queued by the refusals: the app's only deploy is the first one.
    let (_, deploys) = call(
        &app,
        &only_a,
        reqwest::Method::GET,
        "/api/v1/apps/app-000/deploys",
        None,
    )
    .await;
    assert_eq!(deploys.as_array().map(Vec::len), Some(1), "{deploys}");

    // Its own app's volume is fine.
    let (s, e) = update(only_a, "vol-a:/data").await;
    assert!(s == 202 || s == 200, "its own volume is allowed: {s} {e}");
}

/// A token a token minted never outlives it, goes when it is revoked, and spends its budget:
/// minting tokens buys neither time nor uploads.
#[tokio::test]
async fn a_minted_token_lives_and_spends_within_its_parent() {
    let app = spawn_app_with(|s| s.action_limits.upload = 2).await;
    app.login_as_admin().await;
    let admin = mint(&app, "adm", "admin", "").await;
    let (s, parent) = call(
        &app,
        &admin,
        reqwest::Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "ci", "scope": "deploy", "expires": "1h"})),
    )
    .await;
    assert_eq!(s, 201, "{parent}");
    let parent_secret = parent["token"].as_str().unwrap().to_string();
    let (s, child) = call(
        &app,
        &parent_secret,
        reqwest::Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "forever", "scope": "deploy", "expires": "never"})),
    )
    .await;
    assert_eq!(s, 201, "{child}");
    assert_eq!(
        child["info"]["expires_at"], parent["info"]["expires_at"],
        "capped at the parent's expiry"
    );
    let child_secret = child["token"].as_str().unwrap().to_string();

    // Uploads: the parent spends one, the child the other; the third is refused to either.
    let zip = zip_of(&[("Dockerfile", b"FROM scratch\n", 0o644)]);
    let upload = |token: String, n: u32| {
        let req = bare()
            .post(app.url(&format!("/api/v1/apps?app_name=b{n}&public_route=/b{n}")))
            .bearer_auth(token)
            .header("content-type", "application/zip")
            .body(zip.clone());
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_ne!(upload(parent_secret.clone(), 1).await, 429);
    assert_ne!(upload(child_secret.clone(), 2).await, 429);
    assert_eq!(
        upload(child_secret.clone(), 3).await,
        429,
        "the line's budget is spent"
    );

    // Revoking the parent takes the child with it.
    let id = parent["info"]["id"].as_i64().unwrap();
    let (s, e) = call(
        &app,
        &admin,
        reqwest::Method::POST,
        &format!("/api/v1/tokens/{id}/revoke"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{e}");
    let (s, e) = call(
        &app,
        &child_secret,
        reqwest::Method::GET,
        "/api/v1/apps",
        None,
    )
    .await;
    assert_eq!(s, 401, "{e}");
    assert!(e.to_string().contains("revoked"), "{e}");
    let (_, tokens) = call(&app, &admin, reqwest::Method::GET, "/api/v1/tokens", None).await;
    let forever = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "forever")
        .unwrap();
    assert!(
        !forever["revoked_at"].is_null(),
        "listed as revoked: {forever}"
    );
}
