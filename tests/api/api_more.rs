//! More of `/api/v1` (issue 17): uploading files into a volume (multipart and raw body, all or
//! nothing, audited), an app's domains (list, add, remove with the UI's rules and audit, the
//! router following at once), host names and routes in the app list, and in Traefik mode a
//! domain change that relabels the app by a redeploy. Real server, real engine, real HTTP.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::api_v1::{bare, call, mint};
use crate::docker_env::*;
use crate::helpers::*;

/// Posts `body` raw to `path` with `content_type`.
async fn post_raw(app: &TestApp, token: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = bare()
        .post(app.url(path))
        .bearer_auth(token)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}")),
    )
}

fn paths(files: &Value) -> Vec<String> {
    let mut p: Vec<String> = files
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["is_dir"] == false)
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    p.sort();
    p
}

#[tokio::test]
async fn volume_files_are_uploaded_listed_and_downloaded_through_the_api() {
    let app = spawn_engine_app().await;
    let admin = mint(&app, "ops", "admin", "").await;
    let reader = mint(&app, "look", "read", "").await;
    let vol = format!("v{}", rand_suffix());
    let (s, v) = call(
        &app,
        &admin,
        Method::POST,
        "/api/v1/volumes",
        Some(json!({"name": vol})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let vid = v["id"].as_i64().unwrap();
    let files_url = format!("/api/v1/volumes/{vid}/files");

    // Multipart: two files and a folder field.
    let form = reqwest::multipart::Form::new()
        .text("folder", "docs")
        .part(
            "files",
            reqwest::multipart::Part::bytes(b"alpha".to_vec()).file_name("a.txt"),
        )
        .part(
            "files",
            reqwest::multipart::Part::bytes(b"beta".to_vec()).file_name("b.txt"),
        );
    let resp = bare()
        .post(app.url(&files_url))
        .bearer_auth(&admin)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let up: Value = resp.json().await.unwrap();
    assert_eq!(status, 201, "{up}");
    assert_eq!(up, json!({"folder": "docs", "files_written": 2}));

    // A raw body named in the query, into a folder made on the way.
    let (s, up) = post_raw(
        &app,
        &admin,
        &format!("{files_url}?folder=docs/deep&name=raw.bin"),
        vec![7u8; 70_000],
    )
    .await;
    assert_eq!(s, 201, "{up}");
    assert_eq!(up["files_written"], 1);

    // A ZIP body is unpacked (checked like app ZIPs); keep_zips stores it as it is.
    let zip = zip_of(&[("z/one.txt", b"one", 0o644), ("two.txt", b"two", 0o644)]);
    let (s, up) = post_raw(
        &app,
        &admin,
        &format!("{files_url}?name=bundle.zip"),
        zip.clone(),
    )
    .await;
    assert_eq!(s, 201, "{up}");
    assert_eq!(up["files_written"], 2);
    let (s, _) = post_raw(
        &app,
        &admin,
        &format!("{files_url}?name=kept.zip&keep_zips=true"),
        zip,
    )
    .await;
    assert_eq!(s, 201);

    let (s, files) = call(&app, &reader, Method::GET, &files_url, None).await;
    assert_eq!(s, 200, "{files}");
    let listed = paths(&files);
    assert_eq!(
        listed,
        [
            "docs/a.txt",
            "docs/b.txt",
            "docs/deep/raw.bin",
            "kept.zip",
            "two.txt",
            "z/one.txt"
        ],
        "{files}"
    );

    // Download what went in.
    let got = bare()
        .get(app.url(&format!(
            "/api/v1/volumes/{vid}/download?path=docs/deep/raw.bin"
        )))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().to_vec(), vec![7u8; 70_000]);

    // Refusals write nothing: a path that climbs out, a folder that does, no name, a
    // ZIP that lies, a read token.
    for (query, field) in [
        ("?name=../escape.txt", "name"),
        ("?name=a/b.txt", "name"),
        ("?folder=../up&name=x.txt", "folder"),
        ("", "name"),
    ] {
        let (s, e) = post_raw(&app, &admin, &format!("{files_url}{query}"), b"x".to_vec()).await;
        assert_eq!(s, 422, "{query}: {e}");
        assert_eq!(e["error"]["field"], field, "{query}: {e}");
    }
    let (s, e) = post_raw(
        &app,
        &admin,
        &format!("{files_url}?name=broken.zip"),
        b"PK\x03\x04 not a zip at all".to_vec(),
    )
    .await;
    assert_eq!(s, 422, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Nothing was written."),
        "{e}"
    );
    let form = reqwest::multipart::Form::new().part(
        "files",
        reqwest::multipart::Part::bytes(b"evil".to_vec()).file_name(".."),
    );
    let resp = bare()
        .post(app.url(&files_url))
        .bearer_auth(&admin)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let (s, e) = post_raw(
        &app,
        &reader,
        &format!("{files_url}?name=r.txt"),
        b"r".to_vec(),
    )
    .await;
    assert_eq!(s, 403, "{e}");
    let (s, files) = call(&app, &admin, Method::GET, &files_url, None).await;
    assert_eq!(s, 200);
    assert_eq!(paths(&files), listed, "the refusals wrote nothing");

    // Audited, naming the token.
    let lines = app.audit_lines();
    let uploads: Vec<&Value> = lines
        .iter()
        .filter(|l| l["action"] == "upload" && l["resource_type"] == "volume_file")
        .collect();
    assert!(
        uploads.iter().any(|l| l["success"] == true
            && l["user_id"]
                .as_str()
                .unwrap_or("")
                .starts_with("token:ops#")
            && l["details"]["folder"] == "docs/deep"),
        "{uploads:?}"
    );
    assert!(uploads.iter().any(|l| l["success"] == false), "{uploads:?}");

    let (s, _) = call(
        &app,
        &admin,
        Method::DELETE,
        &format!("/api/v1/volumes/{vid}"),
        None,
    )
    .await;
    assert_eq!(s, 200);
}

const APPS_DOMAIN: &str = "apps.api.test";

/// GETs `path` at `host` (resolved to the server) without cookies; (status, body).
async fn at_host(app: &TestApp, host: &str, path: &str) -> (u16, String) {
    let client = reqwest::Client::builder()
        .resolve(host, app.addr)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .get(format!("http://{host}:{}{path}", app.addr.port()))
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

/// Waits until `host` answers `path` with `status`.
async fn wait_host(app: &TestApp, host: &str, path: &str, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let (s, body) = at_host(app, host, path).await;
        if s == status {
            return body;
        }
        seen.push(s);
        assert!(
            Instant::now() < deadline,
            "{host}{path} kept answering {seen:?} (waiting for {status}): {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn domains_are_listed_added_and_removed_through_the_api_with_the_uis_rules() {
    let app = spawn_engine_app_with(|s| s.apps_domain = Some(APPS_DOMAIN.into())).await;
    let deploy = mint(&app, "ci", "deploy", "").await;
    let reader = mint(&app, "look", "read", "").await;
    let suffix = rand_suffix();
    let (one, two) = (format!("one{suffix}"), format!("two{suffix}"));
    let other = mint(&app, "other", "deploy", &two).await;
    for name in [&one, &two] {
        let resp = bare()
            .post(app.url(&format!(
                "/api/v1/apps?app_name={name}&public_route=/{name}&wait=true"
            )))
            .bearer_auth(&deploy)
            .header("content-type", "application/zip")
            .body(web_app_zip(&format!("I am {name}")))
            .send()
            .await
            .unwrap();
        let created: Value = resp.json().await.unwrap();
        assert_eq!(created["deploy"]["status"], "succeeded", "{created}");
    }
    let shop = format!("shop-{suffix}.example.test");
    let own_host = format!("{one}.{APPS_DOMAIN}");

    // The app's host names and routes are in the app itself and in the list.
    let (s, a) = call(
        &app,
        &reader,
        Method::GET,
        &format!("/api/v1/apps/{one}"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(a["hosts"], json!([own_host]), "{a}");
    assert_eq!(a["routes"], json!([format!("/{one}")]), "{a}");
    assert_eq!(a["domains"], json!([]));

    // Add: served at once, path untouched.
    let domains = format!("/api/v1/apps/{one}/domains");
    let (s, d) = call(
        &app,
        &deploy,
        Method::POST,
        &domains,
        Some(json!({"domain": format!("  SHOP-{suffix}.Example.Test. ")})),
    )
    .await;
    assert_eq!(s, 201, "{d}");
    assert_eq!(d["domains"], json!([shop]), "normalised: {d}");
    assert_eq!(d["hosts"], json!([own_host, shop]), "{d}");
    assert_eq!(d["applied"], "live");
    let body = wait_host(&app, &shop, "/", 200).await;
    assert!(body.contains(&format!("I am {one}")), "{body}");
    let (s, list) = call(&app, &reader, Method::GET, "/api/v1/apps", None).await;
    assert_eq!(s, 200);
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == one.as_str())
        .unwrap();
    assert_eq!(listed["hosts"], json!([own_host, shop]), "{listed}");
    let (s, d) = call(&app, &reader, Method::GET, &domains, None).await;
    assert_eq!((s, &d["domains"]), (200, &json!([shop])));

    // The UI's rules: unique across apps (any case), no wildcard, no IP literal, not the
    // apps domain's own names, not the admin's.
    let two_domains = format!("/api/v1/apps/{two}/domains");
    for (input, status) in [
        (shop.to_uppercase(), 409),
        (format!("*.{shop}"), 422),
        ("192.0.2.7".to_string(), 422),
        ("[::1]".to_string(), 422),
        (format!("{one}.{APPS_DOMAIN}"), 422),
        ("localhost".to_string(), 422),
        ("".to_string(), 422),
    ] {
        let (s, e) = call(
            &app,
            &deploy,
            Method::POST,
            &two_domains,
            Some(json!({"domain": input})),
        )
        .await;
        assert_eq!(s, status, "{input}: {e}");
        assert_eq!(e["error"]["field"], "domain", "{input}: {e}");
    }
    // Scopes: read cannot add; a token limited to `two` cannot touch `one`.
    let (s, _) = call(
        &app,
        &reader,
        Method::POST,
        &two_domains,
        Some(json!({"domain": "r.example.test"})),
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = call(
        &app,
        &other,
        Method::DELETE,
        &format!("{domains}/{shop}"),
        None,
    )
    .await;
    assert_eq!(s, 403);

    // Remove: no longer served; removing it again is a 404.
    let (s, d) = call(
        &app,
        &deploy,
        Method::DELETE,
        &format!("{domains}/{}", shop.to_uppercase()),
        None,
    )
    .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["domains"], json!([]));
    // (Without an admin host, a name that is no app's falls through to the path routes.)
    let (s, body) = at_host(&app, &shop, "/").await;
    assert!(
        !body.contains(&format!("I am {one}")),
        "{shop} is no longer served by {one}: {s} {body}"
    );
    let (s, e) = call(
        &app,
        &deploy,
        Method::DELETE,
        &format!("{domains}/{shop}"),
        None,
    )
    .await;
    assert_eq!(s, 404, "{e}");

    // Audited like the UI's, naming the token.
    let lines = app.audit_lines();
    for action in ["domain_add", "domain_remove"] {
        assert!(
            lines.iter().any(|l| l["action"] == action
                && l["success"] == true
                && l["details"]["domain"] == shop.as_str()
                && l["user_id"].as_str().unwrap_or("").starts_with("token:ci#")),
            "{action}: {lines:?}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l["action"] == "domain_add" && l["success"] == false),
        "refusals are audited"
    );
}

/// Waits for an API deploy to end; returns its final status.
async fn deploy_ends(app: &TestApp, token: &str, id: i64) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (s, d) = call(
            app,
            token,
            Method::GET,
            &format!("/api/v1/deploys/{id}"),
            None,
        )
        .await;
        assert_eq!(s, 200, "{d}");
        let status = d["status"].as_str().unwrap_or_default().to_string();
        if status == "succeeded" || status == "failed" {
            return status;
        }
        assert!(Instant::now() < deadline, "deploy {id} did not end: {d}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// In Traefik mode host names are container labels: adding or removing a domain redeploys the
/// app, so a removed domain stops routing (its Host rule is gone from the running container).
#[tokio::test]
async fn in_traefik_mode_a_domain_change_relabels_the_app_by_a_redeploy() {
    let app = spawn_engine_app_with(|s| s.builtin_router = false).await;
    let token = mint(&app, "ci", "deploy", "").await;
    let name = format!("tr{}", rand_suffix());
    app.deploy(&name, &format!("/{name}"), web_app_zip("traefik"))
        .await;
    let shop = format!("{name}.example.test");
    let router = format!("traefik.http.routers.milkcrate-app-{name}-hosts.rule");
    let labels = |app: &EngineApp| inspect_app(&app.instance, &name)["Config"]["Labels"].clone();
    assert!(labels(&app)[&router].is_null());

    let domains = format!("/api/v1/apps/{name}/domains");
    let (s, d) = call(
        &app,
        &token,
        Method::POST,
        &domains,
        Some(json!({"domain": shop})),
    )
    .await;
    assert_eq!(s, 201, "{d}");
    assert_eq!(d["applied"], "redeploy");
    let id = d["deploy_id"].as_i64().unwrap_or_else(|| panic!("{d}"));
    assert_eq!(deploy_ends(&app, &token, id).await, "succeeded");
    assert_eq!(labels(&app)[&router], format!("Host(`{shop}`)"));

    let (s, d) = call(
        &app,
        &token,
        Method::DELETE,
        &format!("{domains}/{shop}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{d}");
    let id = d["deploy_id"].as_i64().unwrap_or_else(|| panic!("{d}"));
    assert_eq!(deploy_ends(&app, &token, id).await, "succeeded");
    let after = labels(&app);
    assert!(after[&router].is_null(), "the host rule is gone: {after}");
    assert!(
        !after.to_string().contains(&shop),
        "no label names the removed domain: {after}"
    );
}

/// `milkcrate domains` and `milkcrate volumes` through the real binary.
#[tokio::test]
async fn the_cli_lists_adds_and_removes_domains_and_uploads_into_volumes() {
    use crate::cli_client::{milkcrate, text};
    let app = spawn_engine_app().await;
    let admin = mint(&app, "cli", "admin", "").await;
    let name = format!("cli{}", rand_suffix());
    app.deploy(&name, &format!("/{name}"), web_app_zip("cli"))
        .await;
    let url = app.url("");
    let env = [
        ("MILKCRATE_URL", url.as_str()),
        ("MILKCRATE_TOKEN", admin.as_str()),
    ];
    let shop = format!("{name}.example.test");
    let out = milkcrate(&["domains", "add", &name, &shop], &env, "").await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&shop),
        "{}",
        text(&out)
    );
    let out = milkcrate(&["domains", "list", &name, "--json"], &env, "").await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    assert_eq!(v["domains"], json!([shop]));
    let out = milkcrate(&["domains", "add", &name, "*.example.test"], &env, "").await;
    assert!(
        !out.status.success(),
        "a wildcard is refused: {}",
        text(&out)
    );
    let out = milkcrate(&["domains", "remove", &name, &shop], &env, "").await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&shop),
        "{}",
        text(&out)
    );

    let (s, v) = call(
        &app,
        &admin,
        Method::POST,
        "/api/v1/volumes",
        Some(json!({"name": format!("v{}", rand_suffix())})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let vid = v["id"].to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "from the cli").unwrap();
    let out = milkcrate(
        &[
            "volumes",
            "upload",
            &vid,
            file.to_str().unwrap(),
            "--folder",
            "docs",
        ],
        &env,
        "",
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let out = milkcrate(&["volumes", "files", &vid], &env, "").await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("docs/notes.txt"),
        "{}",
        text(&out)
    );
    let out = milkcrate(&["volumes", "list"], &env, "").await;
    assert!(out.status.success(), "{}", text(&out));
}
