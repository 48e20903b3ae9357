//! Host names (issue 15): apps at `<app>.<apps domain>` and at custom domains with their paths
//! untouched, MILKCRATE_ADMIN_HOST confining the admin UI and its cookies, Host header tricks
//! (spoken over raw TCP, where a client library would normalise them), `/route` → `/route/`,
//! and the domains an admin adds and removes.
//!
//! The test client resolves every test host name to the server's loopback address, so its
//! cookie jar keeps cookies per host exactly as a browser would.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::docker_env::*;
use crate::helpers::*;

const APPS_DOMAIN: &str = "apps.test";
const ADMIN_HOST: &str = "admin.test";
const HOSTS: &[&str] = &[
    "admin.test",
    "deploy.apps.test",
    "gone.apps.test",
    "one.apps.test",
    "two.apps.test",
    "shop.example.test",
    "xn--caf-dma.example.test",
    "nothing.test",
];

/// A busybox httpd app that says which app it is:
/// - `/` links `/static/app.css` (an absolute path) and `/static/app.css` names the app;
/// - `/cgi-bin/env` prints the request as the app saw it;
/// - `/cgi-bin/login` sets `sid_<name>` with `Path=/` and redirects to `/`.
fn named_app_zip(name: &str) -> Vec<u8> {
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nCOPY www /www\nEXPOSE 8080\nCMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    );
    let index = format!(
        "<!doctype html><link rel=stylesheet href=\"/static/app.css\"><a href=\"/cgi-bin/login\">home of {name}</a>"
    );
    let css = format!("/* css of {name} */");
    let env = b"#!/bin/sh\necho 'Content-Type: text/plain'\necho\nenv | sort\n".to_vec();
    let login = format!(
        "#!/bin/sh\nprintf 'Status: 302 Found\\r\\n'\nprintf 'Location: /\\r\\n'\nprintf 'Set-Cookie: sid_{name}={name}-secret; Path=/\\r\\n'\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho moved\n"
    );
    zip_of(&[
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("www/index.html", index.as_bytes(), 0o644),
        ("www/static/app.css", css.as_bytes(), 0o644),
        ("www/cgi-bin/env", &env, 0o755),
        ("www/cgi-bin/login", login.as_bytes(), 0o755),
    ])
}

/// A client that reaches every test host name at `addr`, keeping cookies per host.
fn host_client(addr: SocketAddr) -> reqwest::Client {
    install_crypto();
    let mut b = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none());
    for h in HOSTS {
        b = b.resolve(h, addr);
    }
    b.build().expect("http client")
}

/// An engine-backed server with MILKCRATE_APPS_DOMAIN=apps.test and, when `admin_host`,
/// MILKCRATE_ADMIN_HOST=admin.test; signed in (at the admin host when set).
async fn spawn_hosts(admin_host: bool) -> EngineApp {
    spawn_hosts_with(admin_host, |_| {}).await
}

/// [`spawn_hosts`] with more settings changed by `adjust`.
async fn spawn_hosts_with(
    admin_host: bool,
    adjust: impl FnOnce(&mut milkcrate::config::Settings) + Send + 'static,
) -> EngineApp {
    ensure_base_image();
    let instance = format!("test-{}", rand_suffix());
    let inst = instance.clone();
    let mut app = spawn_app_with(move |s| {
        s.set_instance(&inst);
        s.network = NETWORK.into();
        s.status_interval = Duration::from_millis(500);
        s.start_timeout = Duration::from_secs(10);
        s.apps_domain = Some(APPS_DOMAIN.into());
        if admin_host {
            s.admin_host = Some(ADMIN_HOST.into());
        }
        adjust(s);
    })
    .await;
    app.client = host_client(app.addr);
    if admin_host {
        app.base = format!("http://{ADMIN_HOST}:{}", app.addr.port());
    }
    app.login_as_admin().await;
    EngineApp { app, instance }
}

fn at(app: &EngineApp, host: &str, path: &str) -> String {
    format!("http://{host}:{}{path}", app.addr.port())
}

async fn get_at(app: &EngineApp, host: &str, path: &str) -> reqwest::Response {
    app.client.get(at(app, host, path)).send().await.unwrap()
}

/// Waits until `host` serves `path` with a body containing `needle` (the route table follows
/// a deploy or a domain change within a status refresh at most).
async fn wait_body(app: &EngineApp, host: &str, path: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let resp = get_at(app, host, path).await;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status == 200 && body.contains(needle) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{host}{path} kept answering {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `request` as raw bytes and returns the whole answer (the request should close).
async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn env_line<'a>(env: &'a str, key: &str) -> Option<&'a str> {
    env.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// Deploys with extra upload fields (a `domains` field, an empty route).
async fn deploy_with(app: &EngineApp, fields: &[(&str, &str)], zip: Vec<u8>) -> i64 {
    let resp = app.upload(fields, zip, "app.zip").await;
    assert_eq!(
        resp.status(),
        303,
        "upload accepted: {}",
        resp.text().await.unwrap_or_default()
    );
    let page = app.wait_deploy(deploy_id(&location(&resp))).await;
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    app_id_from(&page)
}

#[tokio::test]
async fn apps_answer_at_their_hosts_with_paths_cookies_and_redirects_their_own() {
    let app = spawn_hosts(true).await;
    // "one": host names only (its name in the apps domain); "two": a path route and a domain
    // given on the upload form, typed in capitals with a trailing dot.
    deploy_with(
        &app,
        &[("app_name", "one"), ("public_route", "")],
        named_app_zip("one"),
    )
    .await;
    deploy_with(
        &app,
        &[
            ("app_name", "two"),
            ("public_route", "/two"),
            ("domains", "SHOP.example.test."),
        ],
        named_app_zip("two"),
    )
    .await;

    // The path goes untouched: absolute links resolve inside the app.
    let home = wait_body(&app, "one.apps.test", "/", "home of one").await;
    assert!(home.contains("href=\"/static/app.css\""));
    wait_body(&app, "one.apps.test", "/static/app.css", "css of one").await;
    wait_body(&app, "shop.example.test", "/static/app.css", "css of two").await;
    wait_body(&app, "two.apps.test", "/static/app.css", "css of two").await;
    let env = get_at(&app, "one.apps.test", "/cgi-bin/env?a=1")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        env_line(&env, "REQUEST_URI"),
        Some("/cgi-bin/env?a=1"),
        "{env}"
    );
    assert_eq!(
        env_line(&env, "HTTP_HOST"),
        Some(format!("one.apps.test:{}", app.addr.port()).as_str())
    );
    assert_eq!(
        env_line(&env, "HTTP_X_FORWARDED_PREFIX"),
        None,
        "no prefix on a host route: {env}"
    );
    // A client's own X-Forwarded-Prefix is not passed on either.
    let env = app
        .client
        .get(at(&app, "one.apps.test", "/cgi-bin/env"))
        .header("x-forwarded-prefix", "/evil")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(env_line(&env, "HTTP_X_FORWARDED_PREFIX"), None, "{env}");

    // A redirect to `/` and a `Path=/` cookie stay with the app that set them.
    let login = get_at(&app, "one.apps.test", "/cgi-bin/login").await;
    assert_eq!(login.status(), 302);
    assert_eq!(location(&login), "/");
    assert!(
        set_cookies(&login)
            .iter()
            .any(|c| c.starts_with("sid_one=one-secret") && c.contains("Path=/")),
        "{:?}",
        set_cookies(&login)
    );
    let login = get_at(&app, "shop.example.test", "/cgi-bin/login").await;
    assert_eq!(location(&login), "/");
    let one = get_at(&app, "one.apps.test", "/cgi-bin/env")
        .await
        .text()
        .await
        .unwrap();
    let two = get_at(&app, "shop.example.test", "/cgi-bin/env")
        .await
        .text()
        .await
        .unwrap();
    let cookie_one = env_line(&one, "HTTP_COOKIE").unwrap_or("");
    let cookie_two = env_line(&two, "HTTP_COOKIE").unwrap_or("");
    assert!(cookie_one.contains("sid_one=one-secret"), "{one}");
    assert!(
        !cookie_one.contains("sid_two"),
        "one never sees two's cookie: {one}"
    );
    assert!(cookie_two.contains("sid_two=two-secret"), "{two}");
    assert!(
        !cookie_two.contains("sid_one"),
        "two never sees one's cookie: {two}"
    );
    // The admin's cookies were set at admin.test, host-only: the browser never sends them to
    // an app host, and a client that does send them has them stripped.
    for env in [&one, &two] {
        assert!(
            !env.contains("milkcrate_"),
            "no admin cookie at an app: {env}"
        );
    }
    let forged = raw(
        app.addr,
        "GET /cgi-bin/env HTTP/1.1\r\nHost: one.apps.test\r\nCookie: milkcrate_session=abc; keep=1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(forged.contains("HTTP_COOKIE=keep=1"), "{forged}");
    assert!(!forged.contains("milkcrate_session"), "{forged}");

    // The admin UI answers at the admin host only; elsewhere an app or a 404 page.
    assert_eq!(app.get("/admin").await.status(), 200);
    for (host, path) in [
        ("nothing.test", "/admin"),
        ("nothing.test", "/login"),
        ("nothing.test", "/"),
    ] {
        let resp = get_at(&app, host, path).await;
        assert_eq!(resp.status(), 404, "{host}{path}");
        assert!(
            resp.text()
                .await
                .unwrap()
                .contains("Nothing is served at this host name")
        );
    }
    let by_ip = app
        .client
        .get(format!("http://{}/login", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(by_ip.status(), 404, "not at the IP address either");
    let app_admin = get_at(&app, "one.apps.test", "/admin").await;
    assert!(
        app_admin.headers().get("content-security-policy").is_none(),
        "/admin on an app's host is the app's (busybox's 404), not milkcrate's"
    );
    // Path routes work as before on other names, never on the admin host (no app script on
    // the admin's origin).
    wait_body(&app, "127.0.0.1", "/two/static/app.css", "css of two").await;
    let on_admin = get_at(&app, ADMIN_HOST, "/two/static/app.css").await;
    assert_eq!(on_admin.status(), 404);
    assert!(
        on_admin
            .text()
            .await
            .unwrap()
            .contains("Apps are not served on the admin&#39;s host name"),
        "says why"
    );

    // The dashboard links the apps at their host names.
    let dashboard = unescape(&app.get_html("/admin").await);
    for link in [
        "href=\"//one.apps.test/\"",
        "href=\"//two.apps.test/\"",
        "href=\"//shop.example.test/\"",
        "href=\"/two\"",
    ] {
        assert!(dashboard.contains(link), "{link} on the dashboard");
    }
}

#[tokio::test]
async fn host_tricks_are_handled_over_raw_tcp() {
    let app = spawn_hosts(false).await;
    let one = deploy_with(
        &app,
        &[("app_name", "one"), ("public_route", "/one")],
        named_app_zip("one"),
    )
    .await;
    deploy_with(
        &app,
        &[
            ("app_name", "two"),
            ("public_route", ""),
            ("domains", "shop.example.test"),
        ],
        named_app_zip("two"),
    )
    .await;
    wait_body(&app, "one.apps.test", "/static/app.css", "css of one").await;
    wait_body(&app, "shop.example.test", "/static/app.css", "css of two").await;

    // Port, case and a trailing dot do not matter.
    for host in [
        "one.apps.test",
        "ONE.Apps.Test",
        "one.apps.test.",
        "one.apps.test.:8080",
        "One.Apps.Test:1",
    ] {
        let answer = raw(
            app.addr,
            &format!("GET /static/app.css HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
        assert!(answer.contains("css of one"), "{host}: {answer}");
    }
    // An absolute-form target names the host, and wins over a Host header naming another
    // (RFC 9112 §3.2.2); the app is told the host it was routed by.
    let answer = raw(
        app.addr,
        "GET http://one.apps.test/cgi-bin/env HTTP/1.1\r\nHost: shop.example.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("REQUEST_URI=/cgi-bin/env"), "{answer}");
    assert!(answer.contains("HTTP_HOST=one.apps.test\n"), "{answer}");
    let answer = raw(
        app.addr,
        "GET http://shop.example.test/static/app.css HTTP/1.1\r\nHost: one.apps.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.contains("css of two"), "{answer}");
    // Two Host headers are refused, whichever would route where.
    let answer = raw(
        app.addr,
        "GET /static/app.css HTTP/1.1\r\nHost: one.apps.test\r\nHost: shop.example.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(!answer.contains("css of"), "{answer}");
    // CONNECT names a host but no app is offered a tunnel.
    let answer = raw(
        app.addr,
        "CONNECT one.apps.test:80 HTTP/1.1\r\nHost: one.apps.test:80\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    assert!(
        !answer.contains("css of") && !answer.contains("busybox"),
        "{answer}"
    );
    // Without an admin host, an unknown host is the admin UI as before; a host name that is
    // not an app's never reaches one.
    let answer = raw(
        app.addr,
        "GET /static/app.css HTTP/1.1\r\nHost: nothing.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(!answer.contains("css of"), "{answer}");

    // `/one` gets a 308 to `/one/` with its query; `/one/` is served.
    let resp = app
        .client
        .get(format!("{}/one?x=1&y=2", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(location(&resp), "/one/?x=1&y=2");
    let resp = app
        .client
        .get(format!("{}/one", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(location(&resp), "/one/");
    assert!(app.get_html("/one/").await.contains("home of one"));
    let resp = app
        .client
        .post(format!("{}/one", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 308, "a 308 keeps the method");
    // An app on a host name alone has no path route.
    assert_ne!(app.get("/two/static/app.css").await.status(), 200);

    // Domains on the app page: added (IDNA to punycode), refused when taken (any case), the
    // admin's, a wildcard, an address or in the apps domain; removed.
    let page = format!("/admin/apps/{one}");
    let action = format!("/admin/apps/{one}/domains");
    let added = app
        .post_form(&page, &action, &[("domain", "Café.Example.Test")])
        .await;
    assert_eq!(
        added.status(),
        303,
        "{}",
        added.text().await.unwrap_or_default()
    );
    wait_body(
        &app,
        "xn--caf-dma.example.test",
        "/static/app.css",
        "css of one",
    )
    .await;
    assert!(unescape(&app.get_html(&page).await).contains("href=\"//xn--caf-dma.example.test/\""));
    for (bad, status, why) in [
        ("SHOP.example.test", 409, "already a domain of two"),
        ("*.example.test", 400, "wildcard"),
        ("10.1.2.3", 400, "IP address"),
        ("two.apps.test", 400, "MILKCRATE_APPS_DOMAIN"),
        ("shop.example.test:443", 400, "port"),
    ] {
        let resp = app.post_form(&page, &action, &[("domain", bad)]).await;
        assert_eq!(resp.status(), status, "{bad}");
        let body = unescape(&resp.text().await.unwrap());
        assert!(body.contains(why), "{bad}: {body}");
    }
    let removed = app
        .post_form(
            &page,
            &format!("/admin/apps/{one}/domains/remove"),
            &[("domain", "xn--caf-dma.example.test")],
        )
        .await;
    assert_eq!(removed.status(), 303);
    let gone = get_at(&app, "xn--caf-dma.example.test", "/static/app.css").await;
    assert_ne!(gone.status(), 200, "a removed domain is no longer routed");
    let audit: Vec<String> = app.audit_lines().iter().map(|l| l.to_string()).collect();
    assert!(
        audit
            .iter()
            .any(|l| l.contains("\"domain_add\"") && l.contains("xn--caf-dma.example.test")),
        "{audit:?}"
    );
    assert!(audit.iter().any(|l| l.contains("\"domain_remove\"")));
    assert!(
        audit
            .iter()
            .any(|l| l.contains("\"domain_add\"") && l.contains("already a domain of two")),
        "refusals are audited too"
    );
}

/// The admin host is confined to the admin: its cookies carry no Domain attribute (so they are
/// host-only), and it cannot be given to an app.
#[tokio::test]
async fn the_admin_host_keeps_host_only_cookies_and_cannot_be_an_app_domain() {
    let app = spawn_app_with(|s| {
        s.apps_domain = Some(APPS_DOMAIN.into());
        s.admin_host = Some(ADMIN_HOST.into());
    })
    .await;
    let client = host_client(app.addr);
    let base = format!("http://{ADMIN_HOST}:{}", app.addr.port());
    let login_page = client.get(format!("{base}/login")).send().await.unwrap();
    assert_eq!(login_page.status(), 200);
    let token = csrf_token(&login_page.text().await.unwrap());
    let resp = client
        .post(format!("{base}/login"))
        .form(&[
            ("csrf_token", token.as_str()),
            ("password", DEFAULT_PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(location(&resp), "/admin");
    let cookies = set_cookies(&resp);
    assert!(cookies.iter().any(|c| c.starts_with("milkcrate_session=")));
    for c in &cookies {
        assert!(
            !c.to_ascii_lowercase().contains("domain="),
            "host-only: {c}"
        );
    }
    // Uploading with the admin host as a domain is refused before anything is stored.
    let upload = client.get(format!("{base}/upload")).send().await.unwrap();
    let token = csrf_token(&upload.text().await.unwrap());
    let form = reqwest::multipart::Form::new()
        .text("csrf_token", token)
        .text("app_name", "shop")
        .text("public_route", "")
        .text("domains", "Admin.Test")
        .part(
            "file",
            reqwest::multipart::Part::bytes(web_app_zip("x")).file_name("app.zip"),
        );
    let resp = client
        .post(format!("{base}/upload"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(
        unescape(&resp.text().await.unwrap()).contains("admin UI"),
        "the reason is given"
    );
    // `/health` still answers on loopback for monitors.
    assert_eq!(app.get("/health").await.status(), 200);
    app.stop().await;
}

/// Without an apps domain, an app needs a path route or a domain.
#[tokio::test]
async fn an_app_without_route_or_host_is_refused() {
    let app = spawn_app().await;
    app.login_as_admin().await;
    let token = csrf_token(&app.get_html("/upload").await);
    let form = reqwest::multipart::Form::new()
        .text("csrf_token", token)
        .text("app_name", "shop")
        .text("public_route", "")
        .part(
            "file",
            reqwest::multipart::Part::bytes(web_app_zip("x")).file_name("app.zip"),
        );
    let resp = app
        .client
        .post(app.url("/upload"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("Public route is required")
    );
    app.stop().await;
}

/// What engineer B's certificates will be asked for: the admin host, every app's name in the
/// apps domain, every custom domain; nothing else.
#[tokio::test]
async fn known_hosts_lists_the_admin_host_app_names_and_domains() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = milkcrate::config::Settings::new(dir.path().join("data"));
    settings.set_instance(&format!("test-{}", rand_suffix()));
    settings.apps_domain = Some(APPS_DOMAIN.into());
    settings.admin_host = Some(ADMIN_HOST.into());
    let state = milkcrate::app::AppState::open(settings).expect("opens");
    for (name, route, domains) in [
        ("my_shop", "/shop", vec!["shop.example.test".to_string()]),
        ("blog", "", vec![]),
    ] {
        let new = milkcrate::store::NewApp {
            name: name.into(),
            public_route: route.into(),
            deployment_type: "dockerfile".into(),
            health_path: None,
            memory_mb: 512,
            cpu_percent: 50,
            port_override: None,
            source_zip: String::new(),
            volume_mounts: None,
            domains,
        };
        state.store.insert_app(new, 0).await.unwrap().unwrap();
    }
    // A domain is one app's only, whatever its case was when typed (the store keeps it
    // normalised; the form normalises first).
    let taken = milkcrate::store::NewApp {
        name: "other".into(),
        public_route: "/other".into(),
        deployment_type: "dockerfile".into(),
        health_path: None,
        memory_mb: 512,
        cpu_percent: 50,
        port_override: None,
        source_zip: String::new(),
        volume_mounts: None,
        domains: vec!["shop.example.test".into()],
    };
    assert!(matches!(
        state.store.insert_app(taken, 0).await.unwrap(),
        Err(milkcrate::store::Taken::Domain(..))
    ));
    let hosts = milkcrate::service::domains::known_hosts(&state.settings, &state.store).await;
    assert_eq!(
        hosts,
        [
            "admin.test",
            "blog.apps.test",
            "my-shop.apps.test",
            "shop.example.test"
        ]
    );
}

/// MILKCRATE_ALLOWED_HOSTS lets app hosts and the admin host through (they are names this
/// server answers at), and still answers 421 to any other.
#[tokio::test]
async fn the_allow_list_accepts_app_hosts_and_the_admin_host() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let store = milkcrate::store::Store::open(&data.join("milkcrate.sqlite")).unwrap();
    let new = milkcrate::store::NewApp {
        name: "one".into(),
        public_route: String::new(),
        deployment_type: "dockerfile".into(),
        health_path: None,
        memory_mb: 512,
        cpu_percent: 50,
        port_override: None,
        source_zip: String::new(),
        volume_mounts: None,
        domains: vec!["shop.example.test".into()],
    };
    let (id, deploy) = store.insert_app(new, 0).await.unwrap().unwrap();
    store
        .app_deployed(id, "no-such-container".into(), "img".into(), None, 8080)
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
    drop(store);
    let app = spawn_in(data, |s| {
        s.allowed_hosts = vec!["deploy.example.test".into()];
        s.apps_domain = Some(APPS_DOMAIN.into());
        s.admin_host = Some(ADMIN_HOST.into());
        s.status_interval = Duration::from_millis(200);
    })
    .await;
    let ask = |host: &'static str| {
        let addr = app.addr;
        async move {
            raw(
                addr,
                &format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
            )
            .await
        }
    };
    assert!(ask("elsewhere.test").await.starts_with("HTTP/1.1 421"));
    assert!(ask("admin.test:80").await.starts_with("HTTP/1.1 404"));
    // The app's container does not exist: its page says so, not a 421. The table is built at
    // the first status refresh.
    let deadline = Instant::now() + Duration::from_secs(15);
    for host in ["one.apps.test", "Shop.Example.Test."] {
        loop {
            let answer = ask(host).await;
            if answer.starts_with("HTTP/1.1 503") {
                assert!(answer.contains("one"), "{answer}");
                break;
            }
            assert!(Instant::now() < deadline, "{host} answered: {answer}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    app.stop().await;
}

/// Without MILKCRATE_ADMIN_HOST the admin UI lives at the MILKCRATE_ALLOWED_HOSTS names: an
/// app whose name would give it one of them is refused, a name in the apps domain that no app
/// has is a 404 (never the admin UI), and no app installs a service worker, since the admin UI
/// could later be opened under a name an app once had.
#[tokio::test]
async fn without_an_admin_host_apps_never_take_the_admins_names() {
    let app = spawn_hosts_with(false, |s| {
        s.allowed_hosts = vec!["deploy.apps.test".into()];
    })
    .await;
    let resp = app
        .upload(
            &[("app_name", "deploy"), ("public_route", "/deploy")],
            named_app_zip("deploy"),
            "deploy.zip",
        )
        .await;
    let body = unescape(&resp.text().await.unwrap());
    assert!(
        body.contains(
            "The app would be served at deploy.apps.test, where milkcrate's admin UI is served"
        ),
        "{body}"
    );
    app.deploy("one", "/one", named_app_zip("one")).await;
    wait_body(&app, "one.apps.test", "/static/app.css", "css of one").await;
    // Outside the allow-list: a 421. With no list, the 404 page: never the admin UI.
    let gone = get_at(&app, "gone.apps.test", "/login").await;
    assert_eq!(gone.status(), 421);
    let open = spawn_hosts(false).await;
    let gone = get_at(&open, "gone.apps.test", "/login").await;
    assert_eq!(
        gone.status(),
        404,
        "an unused name in the apps domain is nobody's"
    );
    let admin = get_at(&app, "deploy.apps.test", "/login").await;
    assert_eq!(
        admin.status(),
        200,
        "the admin's own name still serves the admin UI"
    );
    let worker = app
        .client
        .get(at(&app, "one.apps.test", "/static/app.css"))
        .header("service-worker", "script")
        .send()
        .await
        .unwrap();
    assert_eq!(worker.status(), 403);
}
