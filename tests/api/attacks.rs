//! Apps are hostile (issue 13): each test plays one attack of the attack run against the real
//! server and engine, and shows it fails.

use std::time::{Duration, Instant};

use milkcrate::docker::firewall::rule;

use crate::docker_env::*;
use crate::helpers::*;

/// A busybox httpd app with CGI scripts that misbehave on request:
/// - `/cgi-bin/sw`: a service-worker script that asks for the whole origin;
/// - `/cgi-bin/cookie`: sets milkcrate's session cookie (with a 0xFF byte in an attribute, which
///   is not UTF-8) and one cookie of its own;
/// - `/index.html`: registers the worker and reports the outcome in its title.
pub fn hostile_app_zip() -> Vec<u8> {
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nCOPY www /www\nEXPOSE 8080\nCMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    );
    let sw = b"#!/bin/sh\necho 'Content-Type: application/javascript'\necho 'Service-Worker-Allowed: /'\necho\necho 'self.addEventListener(\"fetch\", (e) => e.respondWith(new Response(\"owned\")));'\n";
    let cookie = b"#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n'\nprintf 'Set-Cookie: milkcrate_session=stolen; Path=/; Comment=\\377\\r\\n'\nprintf 'Set-Cookie: \\377milkcrate_session=stolen2; Path=/\\r\\n'\nprintf 'Set-Cookie: app_pref=1; Path=/hostile\\r\\n'\nprintf 'Clear-Site-Data: \"cookies\", \"storage\"\\r\\n'\nprintf '\\r\\n'\necho cookies\n";
    let page = br#"<!doctype html><title>loading</title><body>hostile
<script>
fetch('/hostile/cgi-bin/cookie').then(() =>
  navigator.serviceWorker.register('/hostile/cgi-bin/sw', {scope: '/'})
    .then(() => { document.title = 'registered'; })
    .catch((e) => { document.title = 'refused: ' + e; }));
</script>"#;
    zip_of(&[
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("www/index.html", page, 0o644),
        ("www/cgi-bin/sw", sw, 0o755),
        ("www/cgi-bin/cookie", cookie, 0o755),
    ])
}

/// 13.1 and 13.11 over HTTP: a worker script is never served from an app route, the app's
/// `Service-Worker-Allowed` never reaches the browser, and no `Set-Cookie` naming milkcrate's
/// cookies does, whatever bytes it carries.
#[tokio::test]
async fn apps_cannot_serve_workers_or_set_our_cookies() {
    let app = spawn_engine_app().await;
    app.deploy("hostile", "/hostile", hostile_app_zip()).await;
    let plain = wait_status(&app, "/hostile/cgi-bin/sw", 200).await;
    assert_eq!(plain.status(), 200);
    assert!(
        !plain.headers().contains_key("service-worker-allowed"),
        "the app's Service-Worker-Allowed is stripped: {:?}",
        plain.headers()
    );
    let as_worker = app
        .client
        .get(app.url("/hostile/cgi-bin/sw"))
        .header("Service-Worker", "script")
        .send()
        .await
        .unwrap();
    assert_eq!(as_worker.status(), 403, "a worker script fetch is refused");
    assert!(
        as_worker
            .text()
            .await
            .unwrap()
            .contains("cannot install service workers")
    );

    let resp = app.get("/hostile/cgi-bin/cookie").await;
    assert_eq!(resp.status(), 200);
    let cookies: Vec<Vec<u8>> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.as_bytes().to_vec())
        .collect();
    assert!(
        cookies.iter().any(|c| c.starts_with(b"app_pref=1")),
        "the app's own cookie passes: {cookies:?}"
    );
    assert!(
        !cookies
            .iter()
            .any(|c| String::from_utf8_lossy(c).contains("milkcrate_session")),
        "none naming milkcrate's session cookie: {cookies:?}"
    );
    assert!(
        !resp.headers().contains_key("clear-site-data"),
        "an app cannot wipe the admin's cookies: {:?}",
        resp.headers()
    );
    // The admin is still signed in.
    assert_eq!(app.get("/admin").await.status(), 200);
}

/// 13.2: an image's own Traefik label (which a container inherits) is refused at create, in
/// either router mode, and nothing of the app is left running.
#[tokio::test]
async fn an_image_with_its_own_traefik_labels_is_refused() {
    let app = spawn_engine_app().await;
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nLABEL traefik.http.routers.x.rule=\"PathPrefix(`/admin`)\" traefik.http.routers.x.priority=\"2147483647\"\nCOPY www /www\nEXPOSE 8080\nCMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    );
    let zip = zip_of(&[
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("www/index.html", b"x", 0o644),
    ]);
    let page = app.deploy_failing("labelled", "/labelled", zip).await;
    assert!(
        page.contains("traefik.http.routers.x.") && page.contains("milkcrate's alone"),
        "the refusal names the label: {page}"
    );
    let (containers, _) = labelled_leftovers(&app.instance, "labelled");
    assert!(containers.trim().is_empty(), "no container: {containers}");
}

/// 13.3: a TRUSTED_PROXIES that covers the addresses apps get on milkcrate's network stops
/// the start, naming both.
#[tokio::test]
async fn trusting_the_app_network_refuses_to_start() {
    ensure_base_image();
    // The network deploys use; made here when no test has made it yet.
    crate::docker_env::ensure_shared_network();
    let subnet = docker(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
        NETWORK,
    ]);
    let subnet = subnet.trim().to_string();
    assert!(!subnet.is_empty(), "the test network has a subnet");
    let dir = tempfile::tempdir().unwrap();
    let mut settings = milkcrate::config::Settings::new(dir.path().join("data"));
    settings.network = NETWORK.into();
    settings.host_firewall = milkcrate::config::HostFirewall::Off;
    settings.trusted_proxies = vec![milkcrate::config::IpNet::parse(&subnet).unwrap()];
    let state = milkcrate::app::AppState::open(settings).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        milkcrate::app::serve(state, listener, std::future::pending()),
    )
    .await
    .expect("refused at once, not served");
    let err = outcome.expect_err("refuses to start").to_string();
    assert!(
        err.contains("TRUSTED_PROXIES") && err.contains(&subnet),
        "{err}"
    );
}

/// 13.8: sixty wrong passwords sent at once are not all checked: each takes from the budget
/// before its check, so at most the budget's worth are evaluated and the rest wait.
#[tokio::test]
async fn parallel_wrong_passwords_cannot_beat_the_login_limit() {
    let app = spawn_app_with(|s| s.login_attempts = 10).await;
    let token = csrf_token(&app.get_html("/login").await);
    let sends = (0..60).map(|i| {
        let client = app.client.clone();
        let url = app.url("/login");
        let token = token.clone();
        async move {
            client
                .post(url)
                .form(&[
                    ("csrf_token", token.as_str()),
                    ("password", &format!("wrong-{i}")),
                ])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(sends).await;
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(checked, 10, "{statuses:?}");
    assert_eq!(limited, 50, "{statuses:?}");
}

/// 13.8: the current-password field of the password change draws on the same budget.
#[tokio::test]
async fn the_current_password_field_is_limited_too() {
    let app = spawn_app_with(|s| s.login_attempts = 3).await;
    app.login_as_admin().await;
    for _ in 0..2 {
        let resp = app
            .change_password("wrong", STRONG_PASSWORD, STRONG_PASSWORD)
            .await;
        assert_eq!(resp.status(), 400);
    }
    let resp = app
        .change_password("wrong", STRONG_PASSWORD, STRONG_PASSWORD)
        .await;
    assert_eq!(resp.status(), 400, "the third guess is still checked");
    let resp = app
        .change_password(DEFAULT_PASSWORD, STRONG_PASSWORD, STRONG_PASSWORD)
        .await;
    assert_eq!(resp.status(), 429, "then even the right one waits");
}

/// 13.10: production refuses a weak MILKCRATE_ADMIN_PASSWORD as the UI would.
#[test]
fn production_refuses_a_weak_admin_password_from_the_environment() {
    for weak in ["admin", "password", "Short1!"] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = milkcrate::config::Settings::new(dir.path().join("data"));
        s.production = true;
        s.secret_key = Some("0123456789abcdef0123456789abcdef".into());
        s.admin_password_override = Some(weak.into());
        let err = match milkcrate::app::AppState::open(s) {
            Ok(_) => panic!("{weak:?} was accepted in production"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("MILKCRATE_ADMIN_PASSWORD"), "{weak}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut s = milkcrate::config::Settings::new(dir.path().join("data"));
    s.production = true;
    s.secret_key = Some("0123456789abcdef0123456789abcdef".into());
    s.admin_password_override = Some(STRONG_PASSWORD.into());
    assert!(milkcrate::app::AppState::open(s).is_ok());
}

/// 13.14: cross-site POSTs without a token never reach the upload limit; the admin's real
/// uploads still go through. 12.12: the limit is a setting and the page says when it reopens.
#[tokio::test]
async fn forged_posts_do_not_spend_the_admins_upload_limit() {
    let app = spawn_app_with(|s| s.action_limits.upload = 2).await;
    app.login_as_admin().await;
    let forger = new_client();
    for _ in 0..5 {
        let form = reqwest::multipart::Form::new().text("app_name", "x");
        let resp = forger
            .post(app.url("/upload"))
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "no token: refused, not counted");
    }
    // Two real (if invalid) uploads are counted, the third waits and says until when.
    for _ in 0..2 {
        let token = csrf_token(&app.get_html("/upload").await);
        let form = reqwest::multipart::Form::new()
            .text("csrf_token", token)
            .text("app_name", "");
        let resp = app
            .client
            .post(app.url("/upload"))
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_ne!(resp.status(), 429);
    }
    let token = csrf_token(&app.get_html("/upload").await);
    let form = reqwest::multipart::Form::new().text("csrf_token", token);
    let resp = app
        .client
        .post(app.url("/upload"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("MILKCRATE_UPLOAD_LIMIT") && body.contains("Try again in"),
        "{body}"
    );
}

/// 12.12: a script may send `csrf_token` anywhere in a multipart form, or as a header.
#[tokio::test]
async fn the_csrf_token_may_come_last_in_a_multipart_form() {
    let app = spawn_engine_app().await;
    let token = csrf_token(&app.get_html("/upload").await);
    let form = reqwest::multipart::Form::new()
        .text("app_name", "tokenlast")
        .text("public_route", "/tokenlast")
        .part(
            "file",
            reqwest::multipart::Part::bytes(web_app_zip("token last")).file_name("app.zip"),
        )
        .text("csrf_token", token.clone());
    let resp = app
        .client
        .post(app.url("/upload"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303, "{}", resp.text().await.unwrap());
    let page = app.wait_deploy(deploy_id(&location(&resp))).await;
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    // A wrong token placed last is still refused, and nothing is left in uploads/.
    let form = reqwest::multipart::Form::new()
        .text("app_name", "tokenbad")
        .text("public_route", "/tokenbad")
        .part(
            "file",
            reqwest::multipart::Part::bytes(web_app_zip("bad")).file_name("app.zip"),
        )
        .text("csrf_token", "not-the-token");
    let resp = app
        .client
        .post(app.url("/upload"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let left: Vec<_> = std::fs::read_dir(app.data_dir.join("uploads"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "uploads/ is empty: {left:?}");
}

/// 13.17: with an allow-list the server answers only to its names (and loopback), and the
/// HTTPS redirect names a configured host, never the one the request made up.
#[tokio::test]
async fn only_allowed_hosts_are_served_and_redirects_use_them() {
    let app = spawn_app_with(|s| {
        s.allowed_hosts = vec!["deploy.example.org".into()];
        s.force_https = true;
    })
    .await;
    let send = |host: &'static str| {
        app.client
            .get(app.url("/login"))
            .header("host", host)
            .send()
    };
    let resp = send("rebound.attacker.example").await.unwrap();
    assert_eq!(resp.status(), 421);
    let resp = send("deploy.example.org").await.unwrap();
    assert_eq!(resp.status(), 301);
    assert_eq!(
        resp.headers()["location"],
        "https://deploy.example.org/login"
    );
    let resp = send("DEPLOY.example.org.:5001").await.unwrap();
    assert_eq!(
        resp.status(),
        301,
        "names compare without case, port or dot"
    );
    let resp = send("127.0.0.1").await.unwrap();
    assert_eq!(resp.status(), 301, "loopback always answers");
    assert_eq!(
        resp.headers()["location"],
        "https://deploy.example.org/login"
    );
}

/// 13.7 (in part): with the built-in router, app containers cannot reach each other over
/// milkcrate's network; each still answers through the router.
#[tokio::test]
async fn apps_cannot_reach_each_other_directly() {
    let app = spawn_engine_app().await;
    app.deploy("near", "/near", web_app_zip("near")).await;
    app.deploy("far", "/far", web_app_zip("far")).await;
    let near = inspect_app(&app.instance, "near");
    let far = inspect_app(&app.instance, "far");
    let far_ip = far["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let options = docker(&[
        "network",
        "inspect",
        "-f",
        "{{index .Options \"com.docker.network.bridge.enable_icc\"}}",
        NETWORK,
    ]);
    assert_eq!(
        options.trim(),
        "false",
        "the app network isolates its containers"
    );
    let out = std::process::Command::new("docker")
        .args([
            "exec",
            near["Id"].as_str().unwrap(),
            // (busybox's own `wget -T` crashes in this static build: `timeout` bounds it.)
            "/bin/busybox",
            "timeout",
            "5",
            "/bin/busybox",
            "wget",
            "-q",
            "-O-",
            &format!("http://{far_ip}:8080/"),
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("far"),
        "near reached far directly: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The same command does reach what near may reach: far's answer through the router.
    let (code, body) = container_fetch(near["Id"].as_str().unwrap(), "http://127.0.0.1:8080/");
    assert_eq!((code, body.as_str()), (0, "near"), "wget works in the app");
    // Through the router both answer (milkcrate runs on the host, outside the bridge).
    let deadline = Instant::now() + Duration::from_secs(20);
    for (path, body) in [("/near/", "near"), ("/far/", "far")] {
        loop {
            let resp = app.get(path).await;
            if resp.status() == 200 {
                assert_eq!(resp.text().await.unwrap(), body);
                break;
            }
            assert!(Instant::now() < deadline, "{path} never answered");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// 13.7: outbound access is a per-app switch. Cut, the app's new container is on an internal
/// network and reaches nothing outside it (here: a server published on a host port, reached
/// through the engine's forwarding like any outside address), while its route keeps
/// answering through the router.
#[tokio::test]
async fn an_app_with_outbound_access_cut_reaches_nothing_outside() {
    let network = format!("milkcrate-test-out-{}", rand_suffix());
    let app = spawn_engine_app_with(|s| s.network = network.clone()).await;
    let outside = OutsideServer::start();
    let url = outside.url.clone();
    let (id, _) = app.deploy("talker", "/talker", web_app_zip("talker")).await;
    let c = inspect_app(&app.instance, "talker");
    assert_eq!(
        container_fetch(c["Id"].as_str().unwrap(), &url),
        (0, "reached\n".to_string()),
        "outbound access is on by default"
    );

    let page = format!("/admin/apps/{id}");
    let resp = app
        .post_form(&page, &format!("{page}/network"), &[("outbound", "off")])
        .await;
    assert_eq!(resp.status(), 303);
    let deploy_page = unescape(&app.wait_deploy(deploy_id(&location(&resp))).await);
    assert!(
        deploy_page.contains("data-status=\"succeeded\""),
        "{deploy_page}"
    );
    assert!(
        deploy_page.contains("Outbound access is off"),
        "{deploy_page}"
    );
    let c = inspect_app(&app.instance, "talker");
    let closed = format!("{network}-internal");
    assert!(
        c["NetworkSettings"]["Networks"][&closed].is_object(),
        "on the internal network: {}",
        c["NetworkSettings"]["Networks"]
    );
    let internal = docker(&["network", "inspect", "-f", "{{.Internal}}", &closed]);
    assert_eq!(internal.trim(), "true");
    let (code, body) = container_fetch(c["Id"].as_str().unwrap(), &url);
    assert!(
        code != 0 && body.is_empty(),
        "reached the outside: {code} {body}"
    );
    // Its route still answers, and the page says where it stands.
    let resp = wait_status(&app, "/talker/", 200).await;
    assert_eq!(resp.text().await.unwrap(), "talker");
    let html = app.get_html(&page).await;
    assert!(html.contains("Outbound access (to the internet and to addresses outside milkcrate's networks) is <strong>off</strong>"), "{html}");
    assert!(
        app.audit_lines()
            .iter()
            .any(|l| l["action"] == "network_change" && l["details"]["outbound"] == false),
        "audited"
    );

    // Back on: the next container reaches out again.
    let resp = app
        .post_form(&page, &format!("{page}/network"), &[("outbound", "on")])
        .await;
    let deploy_page = app.wait_deploy(deploy_id(&location(&resp))).await;
    assert!(
        deploy_page.contains("data-status=\"succeeded\""),
        "{deploy_page}"
    );
    let c = inspect_app(&app.instance, "talker");
    assert_eq!(
        container_fetch(c["Id"].as_str().unwrap(), &url),
        (0, "reached\n".to_string())
    );
}

/// `iptables` as the tests run it (root's PATH may lack /usr/sbin); fails the test with the
/// fix when it is missing.
pub(crate) fn iptables(args: &[&str]) -> std::process::Output {
    let tool = ["/usr/sbin/iptables", "/sbin/iptables"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .unwrap_or("iptables");
    std::process::Command::new(tool)
        .arg("-w")
        .arg("10")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("iptables is needed by this test and could not run ({e}): install it (apt-get install iptables; scripts/lib.sh does) and run the tests as root")
        })
}

/// The bridges `MILKCRATE-INPUT` drops new connections from, as `iptables -S` lists them.
fn guarded_bridges() -> String {
    let out = iptables(&["-S", "MILKCRATE-INPUT"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The host interface of a bridge network the test's server made (no name option is given).
fn bridge_of(network: &str) -> String {
    let id = docker(&["network", "inspect", "-f", "{{.Id}}", network]);
    format!("br-{}", &id.trim()[..12])
}

/// Removes, on drop, this test's own rules and networks (and nothing else): a failed
/// assertion leaves no rule behind.
pub(crate) struct OwnRules {
    pub(crate) bridges: Vec<String>,
    pub(crate) networks: Vec<String>,
}

impl Drop for OwnRules {
    fn drop(&mut self) {
        for b in &self.bridges {
            while iptables(&rule("-C", b)).status.success() {
                iptables(&rule("-D", b));
            }
        }
        for n in &self.networks {
            let _ = std::process::Command::new("docker")
                .args(["network", "rm", n])
                .output();
        }
    }
}

/// A listener on every address of the host (the test's own network namespace, where the
/// engine's bridges are) answering `host`: what a hostile app wants to reach.
pub(crate) fn host_listener() -> u16 {
    let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("bind on the host");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhost\n",
            );
        }
    });
    port
}

/// The gateway (the host's own address) of each network container `c` is on.
fn gateways(c: &serde_json::Value) -> Vec<(String, String)> {
    c["NetworkSettings"]["Networks"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, n)| (name.clone(), n["Gateway"].as_str().unwrap().to_string()))
        .collect()
}

/// 13.7: an app cannot open a connection to the host itself. Packets to the host's own
/// addresses are not forwarded, so isolation and internal networks do not stop them; with
/// MILKCRATE_HOST_FIREWALL=on milkcrate drops them (MILKCRATE-INPUT), and its router still
/// reaches the app. The positive control (firewall off) shows the attack works without it.
#[tokio::test]
async fn an_app_cannot_reach_a_listener_on_the_host() {
    let version = iptables(&["--version"]);
    assert!(
        version.status.success(),
        "iptables does not work here ({}): this test needs it and root",
        String::from_utf8_lossy(&version.stderr)
    );
    let port = host_listener();
    let suffix = rand_suffix();
    let (open_net, walled_net) = (
        format!("milkcrate-test-fwoff-{suffix}"),
        format!("milkcrate-test-fwon-{suffix}"),
    );
    let mut own = OwnRules {
        bridges: Vec::new(),
        networks: vec![open_net.clone(), walled_net.clone()],
    };

    // Without the firewall (what every other test runs with) the app reaches the host.
    let open = spawn_engine_app_with(|s| s.network = open_net.clone()).await;
    let (open_id, _) = open.deploy("open", "/open", web_app_zip("open")).await;
    let c = inspect_app(&open.instance, "open");
    let gw = c["NetworkSettings"]["Networks"][&open_net]["Gateway"]
        .as_str()
        .expect("a gateway")
        .to_string();
    assert_eq!(
        container_fetch(c["Id"].as_str().unwrap(), &format!("http://{gw}:{port}/")),
        (0, "host\n".to_string()),
        "with MILKCRATE_HOST_FIREWALL=off an app reaches a listener on the host (so the next part shows the firewall, not a broken fetch)"
    );
    assert!(
        !guarded_bridges().contains(&bridge_of(&open_net)),
        "off never touches iptables"
    );
    let page = format!("/admin/apps/{open_id}");
    open.post_form(&page, &format!("{page}/delete"), &[]).await;

    // With it: a compose stack, on its own network and the platform network.
    let walled = spawn_engine_app_with(|s| {
        s.network = walled_net.clone();
        s.host_firewall = milkcrate::config::HostFirewall::On;
    })
    .await;
    let web_df = format!(
        "FROM {BASE_IMAGE}\nCOPY www /www\nEXPOSE 8080\nCMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    );
    let yml =
        "services:\n  web:\n    build: ./web\n    ports: [\"8080\"]\n    stop_grace_period: 1s\n";
    let zip = zip_of(&[
        ("docker-compose.yml", yml.as_bytes(), 0o644),
        ("web/Dockerfile", web_df.as_bytes(), 0o644),
        ("web/www/index.html", b"walled", 0o644),
    ]);
    let (walled_id, _) = walled.deploy("walled", "/walled", zip).await;
    let c = inspect_app(&walled.instance, "walled");
    let nets = gateways(&c);
    assert_eq!(
        nets.len(),
        2,
        "the stack's network and the platform's: {nets:?}"
    );
    let bridges: Vec<String> = nets.iter().map(|(n, _)| bridge_of(n)).collect();
    own.bridges = bridges.clone();
    let listing = guarded_bridges();
    for b in &bridges {
        assert!(
            listing.contains(&format!("-i {b} ")),
            "a rule for {b}:\n{listing}"
        );
    }
    let input = String::from_utf8_lossy(&iptables(&["-S", "INPUT"]).stdout).into_owned();
    assert!(
        input.contains("-A INPUT -j MILKCRATE-INPUT"),
        "INPUT jumps to the chain:\n{input}"
    );
    for (network, gw) in &nets {
        let (code, body) =
            container_fetch(c["Id"].as_str().unwrap(), &format!("http://{gw}:{port}/"));
        assert!(
            code != 0 && body.is_empty(),
            "the app reached the host through {network} ({gw}): {code} {body:?}"
        );
    }
    // The app itself works, and its route answers through the router on the host.
    assert_eq!(
        container_fetch(c["Id"].as_str().unwrap(), "http://127.0.0.1:8080/"),
        (0, "walled".to_string())
    );
    let resp = wait_status(&walled, "/walled/", 200).await;
    assert_eq!(resp.text().await.unwrap(), "walled");

    // The rules do not survive a reboot: a server starting on this install sets them again.
    let platform_bridge = bridge_of(&walled_net);
    let rule_for =
        |verb: &'static str, bridge: &str| iptables(&rule(verb, bridge)).status.success();
    let rule = |verb: &'static str| rule_for(verb, &platform_bridge);
    assert!(rule("-D"), "the platform network's rule is removed by hand");
    // And a rule is left for a bridge that no longer exists: the start tidies it away.
    let gone = format!("br-{}", &suffix[suffix.len().saturating_sub(12)..]);
    own.bridges.push(gone.clone());
    assert!(rule_for("-A", &gone), "a stale rule is added by hand");
    let instance = walled.instance.clone();
    // (Kept to the end: dropping it would remove what this instance made.)
    let _again = spawn_engine_app_with(|s| {
        s.set_instance(&instance);
        s.network = walled_net.clone();
        s.host_firewall = milkcrate::config::HostFirewall::On;
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !rule("-C") {
        assert!(
            Instant::now() < deadline,
            "the restarted server never set the rule for {platform_bridge} again:\n{}",
            guarded_bridges()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    while rule_for("-C", &gone) {
        assert!(
            Instant::now() < deadline,
            "the restarted server left the rule of the missing bridge {gone}:\n{}",
            guarded_bridges()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Deleting the app removes its stack network, and the rule with it; the platform
    // network (shared by every app) keeps its rule.
    let stack_net = nets
        .iter()
        .map(|(n, _)| n.clone())
        .find(|n| *n != walled_net)
        .unwrap();
    let stack_bridge = bridge_of(&stack_net);
    let page = format!("/admin/apps/{walled_id}");
    walled
        .post_form(&page, &format!("{page}/delete"), &[])
        .await;
    let f = format!("name={stack_net}");
    assert_eq!(
        docker(&["network", "ls", "-q", "--filter", &f]).trim(),
        "",
        "the stack network is removed"
    );
    let listing = guarded_bridges();
    assert!(
        !listing.contains(&format!("-i {stack_bridge} ")),
        "the removed network's rule is gone:\n{listing}"
    );
    assert!(
        listing.contains(&format!("-i {platform_bridge} ")),
        "the platform network keeps its rule:\n{listing}"
    );
    drop(own);
    let listing = guarded_bridges();
    assert!(
        !bridges
            .iter()
            .any(|b| listing.contains(&format!("-i {b} "))),
        "the test leaves none of its rules:\n{listing}"
    );
}

/// A labelled container that stands in for Traefik (it only needs to reach apps over their
/// networks); removed on drop.
struct StandIn(String);

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .output();
    }
}

/// The networks a container is on, by name.
fn networks_of(id: &str) -> Vec<String> {
    let json: serde_json::Value = serde_json::from_str(&docker(&["inspect", id])).unwrap();
    let mut names: Vec<String> = json[0]["NetworkSettings"]["Networks"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// 13.7 in Traefik mode: with MILKCRATE_TRAEFIK_CONTAINERS, each app gets a network of its own
/// that only it and Traefik join. Traefik reaches both apps; one app cannot reach the other;
/// the labels point Traefik at the app's own network; deleting an app takes its network away
/// (Traefik leaves it first), and the other app is untouched.
#[tokio::test]
async fn in_traefik_mode_apps_get_a_network_only_traefik_shares() {
    let proxy = format!("milkcrate-test-traefik-{}", rand_suffix());
    let joined = proxy.clone();
    let app = spawn_engine_app_with(move |s| {
        s.builtin_router = false;
        s.traefik.join = vec![joined];
    })
    .await;
    // Made after the server, so it is removed before the server's networks are.
    docker(&[
        "run", "-d", "--name", &proxy, "--label", TEST_LABEL, BASE_IMAGE, "sleep", "600",
    ]);
    let _proxy = StandIn(proxy.clone());
    app.deploy("near", "/near", web_app_zip("near")).await;
    let (far_id, _) = app.deploy("far", "/far", web_app_zip("far")).await;
    let near = inspect_app(&app.instance, "near");
    let far = inspect_app(&app.instance, "far");
    let own = |c: &serde_json::Value| {
        let nets = c["NetworkSettings"]["Networks"].as_object().unwrap();
        assert_eq!(nets.len(), 1, "one network per app container: {nets:?}");
        let (name, n) = nets.iter().next().unwrap();
        (name.clone(), n["IPAddress"].as_str().unwrap().to_string())
    };
    let (near_net, near_ip) = own(&near);
    let (far_net, far_ip) = own(&far);
    assert_ne!(near_net, far_net, "each app has its own network");
    assert_ne!(near_net, NETWORK, "not the shared Traefik network");
    assert_eq!(
        near["Config"]["Labels"]["traefik.docker.network"], near_net,
        "Traefik is told to use the app's own network"
    );
    let proxy_nets = networks_of(&proxy);
    assert!(
        proxy_nets.contains(&near_net) && proxy_nets.contains(&far_net),
        "Traefik joined both: {proxy_nets:?}"
    );

    // Traefik reaches each app; one app cannot reach the other.
    assert_eq!(
        container_fetch(&proxy, &format!("http://{near_ip}:8080/")),
        (0, "near".to_string())
    );
    assert_eq!(
        container_fetch(&proxy, &format!("http://{far_ip}:8080/")),
        (0, "far".to_string())
    );
    let (code, body) = container_fetch(
        near["Id"].as_str().unwrap(),
        &format!("http://{far_ip}:8080/"),
    );
    assert!(
        code != 0 && body.is_empty(),
        "near reached far: {code} {body}"
    );
    let (code, body) = container_fetch(near["Id"].as_str().unwrap(), "http://127.0.0.1:8080/");
    assert_eq!((code, body.as_str()), (0, "near"), "wget works in the app");

    // Deleting far takes its network away, after Traefik left it; near keeps its own.
    let resp = app
        .post_form(
            &format!("/admin/apps/{far_id}"),
            &format!("/admin/apps/{far_id}/delete"),
            &[],
        )
        .await;
    assert_eq!(resp.status(), 303);
    let gone = docker(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("name=^{far_net}$"),
    ]);
    assert_eq!(gone.trim(), "", "far's network was removed");
    let proxy_nets = networks_of(&proxy);
    assert!(
        proxy_nets.contains(&near_net) && !proxy_nets.contains(&far_net),
        "{proxy_nets:?}"
    );
    assert_eq!(
        container_fetch(&proxy, &format!("http://{near_ip}:8080/")),
        (0, "near".to_string())
    );
}

/// 13.1: a login clears what an app may have left on the admin's origin (a service worker,
/// storage) before the admin's pages load; a refused login does not.
#[tokio::test]
async fn a_login_clears_workers_and_storage_an_app_left_on_the_origin() {
    let app = spawn_app().await;
    let refused = app.login("not-the-password").await;
    assert!(refused.headers().get("clear-site-data").is_none());
    let resp = app.login(DEFAULT_PASSWORD).await;
    assert_eq!(location(&resp), "/admin");
    let cleared = resp
        .headers()
        .get("clear-site-data")
        .and_then(|v| v.to_str().ok())
        .expect("a Clear-Site-Data header on the login's answer");
    assert!(cleared.contains("\"storage\""), "{cleared}");
}
