//! Swarm mode on the test engine, put in a single-node swarm (initialised through the API with
//! its advertise address on loopback, and left again at the end only when these tests
//! initialised it: the swarm carries a label naming the test process that did). Apps built
//! here answer their task's hostname through busybox httpd's CGI, so the tests see which
//! replica answered. Everything is found by the test's instance label; the services go before
//! the instance's containers, images and networks (`SwarmCleanup`).

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{SwarmInitRequest, SwarmSpec};

use crate::docker_env::*;
use crate::helpers::*;

/// The swarm's label saying which test process initialised it.
const MARKER: &str = "milkcrate-test.inited-by";

/// Swarm tests of this process now running; the last one out leaves a swarm it made.
static USERS: Mutex<usize> = Mutex::new(0);

/// Holds the engine in a swarm while a test runs.
struct SwarmGuard;

impl SwarmGuard {
    async fn take() -> Self {
        require_engine();
        {
            let mut users = USERS.lock().unwrap_or_else(|p| p.into_inner());
            *users += 1;
        }
        let docker = Docker::connect_with_local_defaults()
            .expect("the docker socket")
            .negotiate_version()
            .await
            .expect("the engine answers");
        let state = docker
            .info()
            .await
            .expect("engine info")
            .swarm
            .and_then(|s| s.local_node_state)
            .map(|s| format!("{s:?}").to_lowercase())
            .unwrap_or_default();
        if state != "active" {
            let _init = INIT.lock().await;
            let request = SwarmInitRequest {
                listen_addr: Some("127.0.0.1:2377".into()),
                advertise_addr: Some("127.0.0.1".into()),
                spec: Some(SwarmSpec {
                    labels: Some(HashMap::from([(
                        MARKER.to_string(),
                        std::process::id().to_string(),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            };
            match docker.init_swarm(request).await {
                Ok(_) => {}
                // Another test of this process got there first.
                Err(e) if e.to_string().contains("already part of a swarm") => {}
                Err(e) => {
                    panic!("these tests need the engine in a swarm and `swarm init` failed: {e}")
                }
            }
        }
        SwarmGuard
    }
}

/// One `swarm init` at a time within this process.
static INIT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Drop for SwarmGuard {
    fn drop(&mut self) {
        let mut users = USERS.lock().unwrap_or_else(|p| p.into_inner());
        *users -= 1;
        if *users > 0 {
            return;
        }
        let labels = Command::new("docker")
            .args(["info", "--format", "{{json .Swarm.Cluster.Spec.Labels}}"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .map(|v| v[MARKER].clone());
        // Only a swarm this process made is left; anyone else's stays.
        if labels.and_then(|l| l.as_str().map(str::to_string))
            == Some(std::process::id().to_string())
        {
            let _ = Command::new("docker")
                .args(["swarm", "leave", "--force"])
                .output();
        }
    }
}

/// Removes the instance's services (their tasks' containers go with them) before the
/// `EngineApp` removes the rest: declared after it, so dropped first.
struct SwarmCleanup(String);

impl Drop for SwarmCleanup {
    fn drop(&mut self) {
        // Not a manager (no swarm, or a test that never took one): no service to remove.
        let ids = Command::new("docker")
            .args([
                "service",
                "ls",
                "-q",
                "--filter",
                &format!("label=milkcrate.instance={}", self.0),
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for id in ids.split_whitespace() {
            let _ = Command::new("docker").args(["service", "rm", id]).output();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline
            && !docker(&[
                "ps",
                "-aq",
                "--filter",
                &format!("label=milkcrate.instance={}", self.0),
            ])
            .trim()
            .is_empty()
        {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

async fn swarm_app(registry: Option<&str>) -> (EngineApp, SwarmCleanup) {
    let registry = registry.map(str::to_string);
    let app = spawn_engine_app_with(move |s| {
        s.orchestrator = milkcrate::config::Orchestrator::Swarm;
        s.swarm.registry = registry;
        s.start_timeout = Duration::from_secs(30);
    })
    .await;
    let cleanup = SwarmCleanup(app.instance.clone());
    (app, cleanup)
}

/// A busybox httpd app whose `/cgi-bin/who` answers `<version> <hostname>` (the task's
/// container), with a HEALTHCHECK so Swarm counts a task as running once it answers.
fn replica_zip(version: &str) -> Vec<u8> {
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nCOPY www /www\nEXPOSE 8080\nHEALTHCHECK --interval=1s --timeout=2s --retries=3 CMD [\"/bin/busybox\", \"wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:8080/\"]\nCMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    );
    let cgi = format!(
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nprintf '%s ' {version}\ncat /etc/hostname\n"
    );
    zip_of(&[
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("www/index.html", version.as_bytes(), 0o644),
        ("www/cgi-bin/who", cgi.as_bytes(), 0o755),
    ])
}

/// An app whose process exits at once: every new task fails.
fn failing_zip() -> Vec<u8> {
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nEXPOSE 8080\nCMD [\"/bin/sh\", \"-c\", \"echo broken; exit 3\"]\n"
    );
    zip_of(&[("Dockerfile", dockerfile.as_bytes(), 0o644)])
}

/// The answer of `/cgi-bin/who` through the router: `(version, hostname)`; `None` for any
/// other answer. [`who_or_why`] says what came instead.
async fn who(app: &EngineApp, route: &str) -> Option<(String, String)> {
    who_or_why(app, route).await.ok()
}

/// The answer of `/cgi-bin/who` through the router, or what came instead (the status and
/// body, or the client's error): a failed assertion names it.
async fn who_or_why(app: &EngineApp, route: &str) -> Result<(String, String), String> {
    let resp = app
        .client
        .get(app.url(&format!("{route}/cgi-bin/who")))
        .send()
        .await
        .map_err(|e| format!("no answer: {e:?}"))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| format!("{status}, body cut: {e:?}"))?;
    let mut parts = text.split_whitespace();
    match (status.as_u16(), parts.next(), parts.next()) {
        (200, Some(version), Some(host)) => Ok((version.to_string(), host.to_string())),
        _ => Err(format!(
            "{status}: {}",
            text.chars().take(600).collect::<String>()
        )),
    }
}

/// Polls until `check` holds, at most `secs`.
async fn wait_for<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn service_of(instance: &str) -> Vec<String> {
    docker(&[
        "service",
        "ls",
        "-q",
        "--filter",
        &format!("label=milkcrate.instance={instance}"),
    ])
    .split_whitespace()
    .map(str::to_string)
    .collect()
}

/// The running task containers of the instance's one service.
fn task_containers(instance: &str) -> Vec<serde_json::Value> {
    let ids = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=milkcrate.instance={instance}"),
        "--filter",
        "label=com.docker.swarm.service.name",
    ]);
    ids.split_whitespace()
        .map(|id| {
            let v: serde_json::Value =
                serde_json::from_str(&docker(&["inspect", id])).expect("inspect is JSON");
            v[0].clone()
        })
        .collect()
}

/// Uploads `zip` with the form's `fields` and waits for the deploy: its page, unescaped.
async fn deploy_page(app: &EngineApp, fields: &[(&str, &str)], zip: Vec<u8>) -> String {
    let resp = app.upload(fields, zip, "app.zip").await;
    assert_eq!(resp.status(), 303, "upload accepted");
    unescape(&app.wait_deploy(deploy_id(&location(&resp))).await)
}

/// The open registry scripts/test starts (Debian's docker-registry); the test fails without it.
const REGISTRY: &str = "127.0.0.1:5055";

fn require_registry() {
    assert!(
        std::net::TcpStream::connect_timeout(
            &REGISTRY.parse().expect("an address"),
            Duration::from_secs(2),
        )
        .is_ok(),
        "this test needs the registry on {REGISTRY} (Debian's docker-registry): run it through scripts/test, whose ensure_registry starts it"
    );
}

/// The image reference a service's tasks run.
fn service_image(service: &str) -> String {
    docker(&[
        "service",
        "inspect",
        service,
        "--format",
        "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
    ])
    .trim()
    .to_string()
}

async fn post_update(app: &EngineApp, id: i64, zip: Vec<u8>) -> i64 {
    let resp = app.update(id, zip).await;
    assert_eq!(resp.status(), 303, "update accepted");
    deploy_id(&location(&resp))
}

#[tokio::test]
async fn swarm_app_runs_replicas_rolls_updates_without_errors_scales_and_leaves_nothing() {
    let _swarm = SwarmGuard::take().await;
    let (app, _cleanup) = swarm_app(None).await;
    let name = format!("sw{}", &rand_suffix()[..6]);
    let route = format!("/{name}");

    // Three replicas, set at upload.
    let page = deploy_page(
        &app,
        &[
            ("app_name", name.as_str()),
            ("public_route", route.as_str()),
            ("replicas", "3"),
        ],
        replica_zip("v1"),
    )
    .await;
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    let id = app_id_from(&page);
    assert_eq!(service_of(&app.instance).len(), 1, "one service");

    // Requests spread over the three replicas.
    wait_for(20, "the dashboard to show 3/3 running", || async {
        app.get_html("/admin").await.contains("3/3 running")
    })
    .await;
    let mut hosts = HashSet::new();
    for _ in 0..30 {
        let (version, host) = who_or_why(&app, &route)
            .await
            .unwrap_or_else(|why| panic!("the router answers: {why}"));
        assert_eq!(version, "v1");
        hosts.insert(host);
    }
    assert_eq!(hosts.len(), 3, "every replica answered: {hosts:?}");

    // Hardening, read from the tasks' containers.
    let tasks = task_containers(&app.instance);
    assert_eq!(tasks.len(), 3);
    for c in &tasks {
        let h = &c["HostConfig"];
        assert_eq!(h["CapDrop"], serde_json::json!(["ALL"]));
        assert_eq!(h["CapAdd"], serde_json::json!(["CAP_NET_BIND_SERVICE"]));
        assert_eq!(c["Config"]["User"], "65534:65534");
        assert_eq!(h["PidsLimit"], 100);
        assert_eq!(h["Memory"], 512 * 1024 * 1024);
        assert_eq!(h["NanoCpus"], 500_000_000);
        assert_eq!(h["LogConfig"]["Config"]["max-size"], "10m");
        assert_eq!(h["LogConfig"]["Config"]["max-file"], "3");
        assert!(
            h["PortBindings"].as_object().is_none_or(|p| p.is_empty()),
            "no published port"
        );
        let tmp = h["Mounts"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["Target"] == "/tmp"))
            .expect("/tmp is a mount");
        assert_eq!(tmp["Type"], "tmpfs");
        let pid = c["State"]["Pid"]
            .as_i64()
            .expect("a running task has a pid");
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mounts"))
            .expect("the test runs as root, as scripts/test does");
        let line = mounts
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some("/tmp"))
            .expect("/tmp mounted");
        for flag in ["noexec", "nosuid", "nodev"] {
            assert!(line.contains(flag), "/tmp is {flag}: {line}");
        }
    }
    // What the service API cannot carry is said on the app page, never silently dropped.
    let page = unescape(&app.get_html(&format!("/admin/apps/{id}")).await);
    assert!(page.contains("no-new-privileges"), "{page}");
    assert!(page.contains("3/3 running"));
    // The logs page shows a task's log (busybox httpd logs nothing; the page must not fail).
    let logs = app
        .client
        .get(app.url(&format!("/admin/apps/{id}/logs")))
        .send()
        .await
        .expect("logs page");
    assert_eq!(logs.status(), 200);
    let logs = logs.text().await.unwrap_or_default();
    assert!(!logs.contains("No such container"), "{logs}");
    let nodes = app.get_html("/admin/nodes").await;
    assert!(nodes.contains("ready"), "{nodes}");

    // An update, start-first, while requests keep coming: none fails.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (client, url) = (app.client.clone(), app.url(&format!("{route}/cgi-bin/who")));
        let (stop, failures, served) = (stop.clone(), failures.clone(), served.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let deploy = post_update(&app, id, replica_zip("v2")).await;
    let page = app.wait_deploy(deploy).await;
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    stop.store(true, Ordering::Relaxed);
    for l in load {
        let _ = l.await;
    }
    assert!(served.load(Ordering::Relaxed) > 50, "the load ran");
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no request failed during the rolling update ({} served)",
        served.load(Ordering::Relaxed)
    );
    wait_for(20, "every replica to answer v2", || async {
        let mut all = true;
        for _ in 0..6 {
            all &= who(&app, &route).await.is_some_and(|(v, _)| v == "v2");
        }
        all
    })
    .await;

    // A failing update is rolled back by Swarm itself; v2 keeps serving.
    let deploy = post_update(&app, id, failing_zip()).await;
    let page = unescape(&app.wait_deploy(deploy).await);
    assert!(page.contains("data-status=\"failed\""), "{page}");
    assert!(page.contains("rolled the service back"), "{page}");
    for _ in 0..6 {
        assert_eq!(
            who(&app, &route).await.map(|(v, _)| v).as_deref(),
            Some("v2")
        );
    }

    // milkcrate's own rollback: back to the previous image (v1).
    let resp = app
        .post_action(
            &format!("/admin/apps/{id}"),
            &format!("/admin/apps/{id}/rollback"),
        )
        .await;
    assert_eq!(resp.status(), 303);
    let page = app.wait_deploy(deploy_id(&location(&resp))).await;
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    wait_for(20, "every replica to answer v1 again", || async {
        let mut all = true;
        for _ in 0..6 {
            all &= who(&app, &route).await.is_some_and(|(v, _)| v == "v1");
        }
        all
    })
    .await;

    // Scale 3 -> 1.
    let resp = app
        .post_form(
            &format!("/admin/apps/{id}"),
            &format!("/admin/apps/{id}/replicas"),
            &[("replicas", "1")],
        )
        .await;
    assert_eq!(resp.status(), 303);
    wait_for(30, "one task left", || async {
        task_containers(&app.instance).len() == 1
            && app.get_html("/admin").await.contains("1/1 running")
    })
    .await;
    let mut hosts = HashSet::new();
    for _ in 0..6 {
        hosts.insert(
            who_or_why(&app, &route)
                .await
                .unwrap_or_else(|why| panic!("answers: {why}"))
                .1,
        );
    }
    assert_eq!(hosts.len(), 1);

    // Stop scales the service to 0 (the route says so), start brings the replicas back.
    let page = format!("/admin/apps/{id}");
    let resp = app
        .post_action(&page, &format!("/admin/apps/{id}/stop"))
        .await;
    assert_eq!(resp.status(), 303);
    wait_for(30, "no task left after stop", || async {
        task_containers(&app.instance).is_empty()
    })
    .await;
    let stopped = app.get(&format!("{route}/cgi-bin/who")).await;
    assert_eq!(stopped.status(), 503);
    let resp = app
        .post_action(&page, &format!("/admin/apps/{id}/start"))
        .await;
    assert_eq!(resp.status(), 303);
    wait_for(30, "the app to answer after start", || async {
        who(&app, &route).await.is_some()
    })
    .await;

    // Outbound access cannot be cut while milkcrate runs on the host: said, nothing changes.
    let resp = app
        .post_form(
            &page,
            &format!("/admin/apps/{id}/network"),
            &[("outbound", "off")],
        )
        .await;
    assert_eq!(resp.status(), 409);
    let text = unescape(&resp.text().await.unwrap_or_default());
    assert!(
        text.contains("no address a process on the host can reach"),
        "{text}"
    );
    assert!(who(&app, &route).await.is_some(), "still served");

    // A replica count out of range is refused with a sentence.
    let resp = app
        .post_form(
            &format!("/admin/apps/{id}"),
            &format!("/admin/apps/{id}/replicas"),
            &[("replicas", "99")],
        )
        .await;
    assert_eq!(resp.status(), 303);
    let page = app.get_html(&format!("/admin/apps/{id}")).await;
    assert!(page.contains("Replicas must be between 1 and 20"), "{page}");

    // Delete leaves no service, network or image behind.
    let resp = app
        .post_action("/admin", &format!("/admin/apps/{id}/delete"))
        .await;
    assert_eq!(resp.status(), 303);
    assert!(service_of(&app.instance).is_empty(), "the service is gone");
    let label = format!("label=milkcrate.instance={}", app.instance);
    assert_eq!(
        docker(&["network", "ls", "-q", "--filter", &label]).trim(),
        ""
    );
    assert_eq!(
        docker(&[
            "ps",
            "-a",
            "--filter",
            &label,
            "--format",
            "{{.Names}} {{.Status}}"
        ])
        .trim(),
        ""
    );
    assert_eq!(
        docker(&[
            "images",
            "--filter",
            &label,
            "--format",
            "{{.Repository}}:{{.Tag}} {{.ID}}"
        ])
        .trim(),
        ""
    );
}

#[tokio::test]
async fn swarm_mode_deploys_by_digest_from_the_registry() {
    require_registry();
    let _swarm = SwarmGuard::take().await;
    let (app, _cleanup) = swarm_app(Some(REGISTRY)).await;
    let name = format!("rg{}", &rand_suffix()[..6]);
    let route = format!("/{name}");
    let (id, _) = app.deploy(&name, &route, replica_zip("r1")).await;
    let services = service_of(&app.instance);
    assert_eq!(services.len(), 1);
    let image = service_image(&services[0]);
    assert!(
        image.trim().starts_with("127.0.0.1:5055/") && image.contains("@sha256:"),
        "deployed by digest from the registry: {image}"
    );
    wait_for(20, "the app to answer", || async {
        who(&app, &route).await.is_some_and(|(v, _)| v == "r1")
    })
    .await;
    let resp = app
        .post_action("/admin", &format!("/admin/apps/{id}/delete"))
        .await;
    assert_eq!(resp.status(), 303);
    let label = format!("label=milkcrate.instance={}", app.instance);
    assert_eq!(docker(&["images", "-q", "--filter", &label]).trim(), "");
}

/// A stack with a registry: its built service goes to the registry and runs by digest (what
/// other nodes need to pull it), its `image:` service by its own reference; the web service
/// still reaches the backend by name, and delete leaves no image behind.
#[tokio::test]
async fn a_stack_in_swarm_mode_runs_its_built_service_by_digest_from_the_registry() {
    require_registry();
    let _swarm = SwarmGuard::take().await;
    let (app, _cleanup) = swarm_app(Some(REGISTRY)).await;
    let name = format!("sr{}", &rand_suffix()[..6]);
    let route = format!("/{name}");
    let page = deploy_page(
        &app,
        &[
            ("app_name", name.as_str()),
            ("public_route", route.as_str()),
        ],
        stack_zip("r1", BACKEND),
    )
    .await;
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    let id = app_id_from(&page);
    let images: Vec<String> = service_of(&app.instance)
        .iter()
        .map(|s| service_image(s))
        .collect();
    assert_eq!(images.len(), 2, "{images:?}");
    assert!(
        images
            .iter()
            .any(|i| i.starts_with("127.0.0.1:5055/") && i.contains("@sha256:")),
        "the built service runs by digest from the registry: {images:?}"
    );
    assert!(
        images.iter().any(|i| i.starts_with(BASE_IMAGE)),
        "the image: service runs by its own reference: {images:?}"
    );
    wait_fetch(&app, &route, "r1").await;
    let resp = app
        .post_action("/admin", &format!("/admin/apps/{id}/delete"))
        .await;
    assert_eq!(resp.status(), 303);
    assert!(
        service_of(&app.instance).is_empty(),
        "the services are gone"
    );
    let label = format!("label=milkcrate.instance={}", app.instance);
    assert_eq!(docker(&["images", "-q", "--filter", &label]).trim(), "");
}

/// A stack of two services: `web` (built, routed) answers `/cgi-bin/fetch` with `version`
/// and what it fetches from `backend` (an `image:` service running `backend_command`) by that
/// name: the backend task's hostname.
fn stack_zip(version: &str, backend_command: &str) -> Vec<u8> {
    let yml = format!(
        r#"services:
  web:
    build: ./web
    ports: ["8080"]
    depends_on: [backend]
    labels:
      milkcrate.main_service: true
  backend:
    image: {BASE_IMAGE}
    command: {backend_command}
"#
    );
    let web_df = format!(
        "FROM {BASE_IMAGE}\nCOPY www /www\nEXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    );
    let fetch = format!(
        "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho {version}\nbusybox timeout 5 wget -q -O- http://backend:8080/hostname\n"
    );
    zip_of(&[
        ("docker-compose.yml", yml.as_bytes(), 0o644),
        ("web/Dockerfile", web_df.as_bytes(), 0o644),
        ("web/www/index.html", b"web front", 0o644),
        ("web/www/cgi-bin/fetch", fetch.as_bytes(), 0o755),
    ])
}

const BACKEND: &str = r#"["httpd", "-f", "-p", "8080", "-h", "/etc"]"#;

/// The hostname of the running task container of the stack's service `service`.
fn task_hostname(instance: &str, service: &str) -> String {
    task_containers(instance)
        .iter()
        .find(|c| {
            c["Config"]["Labels"]["com.docker.swarm.service.name"]
                .as_str()
                .is_some_and(|n| n.ends_with(&format!("_{service}")))
        })
        .and_then(|c| c["Config"]["Hostname"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Waits until the stack's route answers `version` and the hostname of the backend's running
/// task: the web service reached the backend by its name.
async fn wait_fetch(app: &EngineApp, route: &str, version: &str) {
    let url = app.url(&format!("{route}/cgi-bin/fetch"));
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let host = task_hostname(&app.instance, "backend");
        if let Ok(resp) = app.client.get(&url).send().await
            && resp.status() == 200
        {
            last = resp.text().await.unwrap_or_default();
            let lines: Vec<&str> = last.lines().map(str::trim).collect();
            if !host.is_empty() && lines == [version, host.as_str()] {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the route never answered {version} and the backend's hostname {host}: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_compose_stack_runs_as_swarm_services_that_reach_each_other_by_name() {
    let _swarm = SwarmGuard::take().await;
    let (app, _cleanup) = swarm_app(None).await;
    let name = format!("st{}", &rand_suffix()[..6]);
    let route = format!("/{name}");
    let page = deploy_page(
        &app,
        &[
            ("app_name", name.as_str()),
            ("public_route", route.as_str()),
        ],
        stack_zip("v1", BACKEND),
    )
    .await;
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    assert!(page.contains("Swarm has no depends_on"), "{page}");
    let id = app_id_from(&page);
    assert_eq!(
        service_of(&app.instance).len(),
        2,
        "one service per compose service"
    );

    // The web service fetched the backend by its compose name: the answer is the hostname of
    // the backend's task container.
    let tasks = task_containers(&app.instance);
    assert_eq!(tasks.len(), 2, "one task each");
    wait_fetch(&app, &route, "v1").await;

    // Hardening, read from both tasks' containers.
    for c in &tasks {
        let h = &c["HostConfig"];
        assert_eq!(h["CapDrop"], serde_json::json!(["ALL"]));
        assert_eq!(h["CapAdd"], serde_json::json!(["CAP_NET_BIND_SERVICE"]));
        assert_eq!(c["Config"]["User"], "65534:65534");
        assert_eq!(h["PidsLimit"], 100);
        assert_eq!(h["Memory"], 512 * 1024 * 1024);
        assert_eq!(h["LogConfig"]["Config"]["max-size"], "10m");
        let tmp = h["Mounts"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["Target"] == "/tmp"))
            .expect("/tmp is a mount");
        assert_eq!(tmp["Type"], "tmpfs");
    }
    let page = app.get_html("/admin").await;
    assert!(page.contains("1/1 running"), "{page}");

    // An update whose backend exits at once fails; Swarm rolls the backend back, the web
    // service is never touched, and the stack answers as before.
    let failed = post_update(&app, id, stack_zip("v2", r#"["sh", "-c", "exit 3"]"#)).await;
    let page = unescape(&app.wait_deploy(failed).await);
    assert!(page.contains("data-status=\"failed\""), "{page}");
    assert!(page.contains("rolled the service back"), "{page}");
    wait_fetch(&app, &route, "v1").await;

    // A good update replaces both services.
    let good = post_update(&app, id, stack_zip("v3", BACKEND)).await;
    let page = unescape(&app.wait_deploy(good).await);
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    wait_fetch(&app, &route, "v3").await;
    assert_eq!(service_of(&app.instance).len(), 2);

    // Delete leaves no service, network, container or image behind.
    let resp = app
        .post_action("/admin", &format!("/admin/apps/{id}/delete"))
        .await;
    assert_eq!(resp.status(), 303);
    assert!(
        service_of(&app.instance).is_empty(),
        "the services are gone"
    );
    let label = format!("label=milkcrate.instance={}", app.instance);
    assert_eq!(
        docker(&["network", "ls", "-q", "--filter", &label]).trim(),
        ""
    );
    assert_eq!(docker(&["ps", "-aq", "--filter", &label]).trim(), "");
    assert_eq!(
        docker(&[
            "images",
            "--filter",
            &label,
            "--format",
            "{{.Repository}}:{{.Tag}} {{.ID}}"
        ])
        .trim(),
        ""
    );
}

#[tokio::test]
async fn a_stack_with_a_volume_is_pinned_and_a_failed_first_deploy_leaves_nothing() {
    let _swarm = SwarmGuard::take().await;
    let (app, _cleanup) = swarm_app(None).await;
    let name = format!("sf{}", &rand_suffix()[..6]);
    let route = format!("/{name}");
    let yml = format!(
        r#"services:
  web:
    image: {BASE_IMAGE}
    command: ["httpd", "-f", "-p", "8080", "-h", "/etc"]
    ports: ["8080"]
    labels:
      milkcrate.main_service: true
  worker:
    image: {BASE_IMAGE}
    command: ["sh", "-c", "echo no luck; exit 3"]
    volumes: ["notes:/data"]
volumes:
  notes:
"#
    );
    let zip = zip_of(&[("docker-compose.yml", yml.as_bytes(), 0o644)]);
    let page = deploy_page(
        &app,
        &[
            ("app_name", name.as_str()),
            ("public_route", route.as_str()),
        ],
        zip,
    )
    .await;
    assert!(page.contains("data-status=\"failed\""), "{page}");
    assert!(
        page.contains("service worker"),
        "the failure names the service: {page}"
    );
    assert!(
        page.contains("its services are pinned there"),
        "the pin is said: {page}"
    );
    assert!(service_of(&app.instance).is_empty(), "no service is left");
    let label = format!("label=milkcrate.instance={}", app.instance);
    assert_eq!(
        docker(&["network", "ls", "-q", "--filter", &label]).trim(),
        ""
    );
    assert_eq!(
        docker(&["volume", "ls", "-q", "--filter", &label]).trim(),
        ""
    );
    assert_eq!(docker(&["ps", "-aq", "--filter", &label]).trim(), "");
    assert!(!app.get_html("/admin").await.contains(&route));
}

/// A first deploy of a Dockerfile app is watched as a stack's is: a task that runs a moment
/// and exits fails it with the task's exit, and nothing of it is left.
#[tokio::test]
async fn a_first_deploy_whose_task_exits_after_a_moment_fails_and_leaves_nothing() {
    let _swarm = SwarmGuard::take().await;
    let (app, _cleanup) = swarm_app(None).await;
    let name = format!("sx{}", &rand_suffix()[..6]);
    let route = format!("/{name}");
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nCOPY www /www\nEXPOSE 8080\nCMD [\"/bin/sh\", \"-c\", \"timeout 2 httpd -f -p 8080 -h /www; exit 4\"]\n"
    );
    let zip = zip_of(&[
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("www/index.html", b"briefly", 0o644),
    ]);
    let started = Instant::now();
    let page = deploy_page(
        &app,
        &[
            ("app_name", name.as_str()),
            ("public_route", route.as_str()),
        ],
        zip,
    )
    .await;
    assert!(page.contains("data-status=\"failed\""), "{page}");
    assert!(
        page.contains("Watching the new service(s) for 5 s"),
        "{page}"
    );
    assert!(
        page.contains("its task stopped right after starting (task: non-zero exit (4))"),
        "{page}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "failed at once, not at the timeout"
    );
    assert!(service_of(&app.instance).is_empty(), "no service is left");
    let label = format!("label=milkcrate.instance={}", app.instance);
    assert_eq!(
        docker(&["network", "ls", "-q", "--filter", &label]).trim(),
        ""
    );
    assert!(!app.get_html("/admin").await.contains(&route));
}

/// Requests per second through the router to `route` with 4 clients for 5 s.
async fn throughput(app: &EngineApp, route: &str) -> f64 {
    let served = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + Duration::from_secs(5);
    let mut load = Vec::new();
    for _ in 0..4 {
        let (client, url, served) = (
            app.client.clone(),
            app.url(&format!("{route}/")),
            served.clone(),
        );
        load.push(tokio::spawn(async move {
            while Instant::now() < until {
                if client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
                {
                    served.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for l in load {
        let _ = l.await;
    }
    served.load(Ordering::Relaxed) as f64 / 5.0
}

/// Figures for the issue's note, run by hand:
/// `cargo test --test api swarm::bench -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn bench_deploy_time_and_router_throughput() {
    let engine = spawn_engine_app().await;
    let started = Instant::now();
    engine
        .deploy("benchengine", "/benchengine", replica_zip("e1"))
        .await;
    let engine_deploy = started.elapsed();
    let engine_rps = throughput(&engine, "/benchengine").await;
    drop(engine);

    let _swarm = SwarmGuard::take().await;
    let (app, _cleanup) = swarm_app(None).await;
    let started = Instant::now();
    let (id, _) = app
        .deploy("benchswarm", "/benchswarm", replica_zip("s1"))
        .await;
    let swarm_deploy = started.elapsed();
    let one = throughput(&app, "/benchswarm").await;
    let page = format!("/admin/apps/{id}");
    app.post_form(
        &page,
        &format!("/admin/apps/{id}/replicas"),
        &[("replicas", "3")],
    )
    .await;
    wait_for(60, "3/3 running", || async {
        app.get_html("/admin").await.contains("3/3 running")
    })
    .await;
    let three = throughput(&app, "/benchswarm").await;
    println!(
        "deploy: engine {:.1} s, swarm (1 replica) {:.1} s; router, 4 clients, static page: engine {engine_rps:.0} req/s, swarm 1 replica {one:.0} req/s, 3 replicas {three:.0} req/s",
        engine_deploy.as_secs_f64(),
        swarm_deploy.as_secs_f64()
    );
}

#[tokio::test]
async fn check_says_what_swarm_mode_cannot_carry() {
    let _swarm = SwarmGuard::take().await;
    let dir = tempfile::tempdir().expect("a temporary folder");
    milkcrate::store::Store::open(&dir.path().join("milkcrate.sqlite")).expect("a database");
    let out = milkcrate_command()
        .args(["check", "--data-dir", dir.path().to_str().expect("UTF-8")])
        .env("MILKCRATE_ORCHESTRATOR", "swarm")
        .output()
        .expect("milkcrate runs");
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "ok   swarm        this engine is a swarm manager",
        "ok   registry     no MILKCRATE_REGISTRY: images exist on the manager only",
        "ok   swarm limits no-new-privileges",
        "ok   swarm limits swap",
    ] {
        assert!(text.contains(line), "{line} in:\n{text}");
    }
}

/// A label on the test engine's swarm node, set and removed through the Engine API (as
/// `docker node update --label-add/--label-rm`); removed again when dropped, whatever happened.
struct NodeLabel {
    docker: Docker,
    node: String,
    key: String,
}

impl NodeLabel {
    async fn add(key: &str) -> Self {
        let docker = Docker::connect_with_local_defaults()
            .expect("the docker socket")
            .negotiate_version()
            .await
            .expect("the engine answers");
        let node = docker
            .info()
            .await
            .expect("engine info")
            .swarm
            .and_then(|s| s.node_id)
            .expect("the engine is a swarm node");
        let label = NodeLabel {
            docker,
            node,
            key: key.to_string(),
        };
        label.set(Some("yes")).await;
        label
    }

    async fn set(&self, value: Option<&str>) {
        let n = self
            .docker
            .inspect_node(&self.node)
            .await
            .expect("the node");
        let version = n.version.and_then(|v| v.index).expect("a node version");
        let mut spec = n.spec.expect("a node spec");
        let labels = spec.labels.get_or_insert_with(HashMap::new);
        match value {
            Some(v) => labels.insert(self.key.clone(), v.to_string()),
            None => labels.remove(&self.key),
        };
        self.docker
            .update_node(
                &self.node,
                spec,
                bollard::query_parameters::UpdateNodeOptions {
                    version: version as i64,
                },
            )
            .await
            .expect("the node's labels change");
    }
}

impl Drop for NodeLabel {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["node", "update", "--label-rm", &self.key, &self.node])
            .output();
    }
}

/// The placement constraints of the instance's one service.
fn service_constraints(instance: &str) -> String {
    let services = service_of(instance);
    assert_eq!(services.len(), 1, "one service");
    docker(&[
        "service",
        "inspect",
        &services[0],
        "--format",
        "{{json .Spec.TaskTemplate.Placement.Constraints}}",
    ])
}

#[tokio::test]
async fn placement_constraints_follow_node_labels_and_a_misfit_keeps_the_old_tasks() {
    let _swarm = SwarmGuard::take().await;
    let (app, _cleanup) = swarm_app(None).await;
    let suffix = &rand_suffix()[..6];
    let key = format!("milkcrate-test.pl{suffix}");
    let absent = format!("milkcrate-test.none{suffix}");
    let label = NodeLabel::add(&key).await;
    let name = format!("pl{suffix}");
    let route = format!("/{name}");
    let wanted = format!("node.labels.{key}==yes");

    // The upload form asks for replicas and constraints in swarm mode.
    let form = app.get_html("/upload").await;
    assert!(
        form.contains("name=\"replicas\"") && form.contains("name=\"constraints\""),
        "{form}"
    );

    // Deployed with a constraint the node satisfies (typed with spaces: normalised).
    let typed = format!("node.labels.{key} == yes");
    let page = deploy_page(
        &app,
        &[
            ("app_name", name.as_str()),
            ("public_route", route.as_str()),
            ("constraints", typed.as_str()),
        ],
        replica_zip("v1"),
    )
    .await;
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    assert!(
        page.contains(&format!("Placement constraints: {wanted}")),
        "{page}"
    );
    let id = app_id_from(&page);
    let constraints = service_constraints(&app.instance);
    assert!(constraints.contains(&wanted), "{constraints}");
    assert!(
        constraints.contains("node.id=="),
        "the node pin stays: {constraints}"
    );
    wait_for(20, "the app to answer", || async {
        who(&app, &route).await.is_some()
    })
    .await;
    let (_, host) = who_or_why(&app, &route)
        .await
        .unwrap_or_else(|why| panic!("an answer: {why}"));
    let page = unescape(&app.get_html(&format!("/admin/apps/{id}")).await);
    assert!(page.contains(&wanted), "the app page shows it: {page}");

    // The API shows it; a constraint no node satisfies is refused with a sentence, and the
    // same task keeps serving.
    let token = crate::api_v1::mint(&app, "place", "deploy", "").await;
    let path = format!("/api/v1/apps/{name}/placement");
    let (s, body) = crate::api_v1::call(&app, &token, reqwest::Method::GET, &path, None).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["constraints"], serde_json::json!([wanted]));
    let misfit = format!("node.labels.{absent}==yes");
    let (s, body) = crate::api_v1::call(
        &app,
        &token,
        reqwest::Method::POST,
        &path,
        Some(serde_json::json!({ "constraints": [misfit] })),
    )
    .await;
    assert_eq!(s, 409, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("no node matches {misfit}")),
        "{message}"
    );
    assert_eq!(
        who(&app, &route).await,
        Some(("v1".to_string(), host.clone())),
        "the old task keeps serving"
    );
    let (_, body) = crate::api_v1::call(&app, &token, reqwest::Method::GET, &path, None).await;
    assert_eq!(
        body["constraints"],
        serde_json::json!([wanted]),
        "unchanged"
    );
    assert!(service_constraints(&app.instance).contains(&wanted));
    // What is not a constraint never reaches the spec.
    let (s, body) = crate::api_v1::call(
        &app,
        &token,
        reqwest::Method::POST,
        &path,
        Some(serde_json::json!({ "constraints": [format!("node.labels.{key}==\"yes\"")] })),
    )
    .await;
    assert_eq!(s, 422, "{body}");

    // The label goes from the node: Swarm stops the task there (its node no longer meets the
    // constraint) and the replacement waits for a node; the app's status names the constraint.
    label.set(None).await;
    let app_path = format!("/api/v1/apps/{name}");
    wait_for(60, "the status to name the unmet constraint", || async {
        let (_, body) =
            crate::api_v1::call(&app, &token, reqwest::Method::GET, &app_path, None).await;
        body["status_detail"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("no node matches {wanted}")))
    })
    .await;
    // The label back: the task runs again.
    label.set(Some("yes")).await;
    wait_for(60, "the app to answer again", || async {
        who(&app, &route).await.is_some_and(|(v, _)| v == "v1")
    })
    .await;

    // A new app whose constraint no node satisfies: its tasks wait Pending, and the first
    // deploy fails after a short wait with the sentence (and leaves no service).
    let other = format!("pm{suffix}");
    let other_route = format!("/{other}");
    let page = deploy_page(
        &app,
        &[
            ("app_name", other.as_str()),
            ("public_route", other_route.as_str()),
            ("constraints", misfit.as_str()),
        ],
        replica_zip("m1"),
    )
    .await;
    assert!(page.contains("data-status=\"failed\""), "{page}");
    assert!(
        page.contains(&format!("no node matches {misfit}")),
        "{page}"
    );
    assert_eq!(
        service_of(&app.instance).len(),
        1,
        "only the first app's service"
    );

    // An update whose new task no node can take while the old one still runs (the stored
    // constraint edited behind milkcrate's back, as after nodes were relabelled): the deploy
    // fails after a short wait with the sentence, Swarm rolls the service back, and v1
    // keeps serving.
    assert!(who(&app, &route).await.is_some(), "v1 answers");
    {
        let conn = rusqlite::Connection::open(app.data_dir.join("milkcrate.sqlite"))
            .expect("the database");
        conn.busy_timeout(Duration::from_secs(5))
            .expect("a timeout");
        let changed = conn
            .execute(
                "UPDATE app_swarm SET constraints = ?1 WHERE app_id = ?2",
                rusqlite::params![misfit, id],
            )
            .expect("the row changes");
        assert_eq!(changed, 1);
    }
    let deploy = post_update(&app, id, replica_zip("v2")).await;
    let page = unescape(&app.wait_deploy(deploy).await);
    assert!(page.contains("data-status=\"failed\""), "{page}");
    assert!(
        page.contains(&format!("no node matches {misfit}")),
        "{page}"
    );
    assert!(page.contains("previous version keeps serving"), "{page}");
    wait_for(30, "the rollback to end", || async {
        docker(&[
            "service",
            "inspect",
            &service_of(&app.instance)[0],
            "--format",
            "{{.UpdateStatus.State}}",
        ])
        .contains("rollback_completed")
    })
    .await;
    // v1 keeps serving. (Which task answers is Swarm's choice: under load its rollback may
    // start a fresh v1 task in place of the old one, so only the version is asserted.)
    for _ in 0..4 {
        assert_eq!(
            who(&app, &route).await.map(|(v, _)| v),
            Some("v1".to_string()),
            "the old version keeps serving"
        );
    }

    // The app page's form clears the constraints (a service update, no deploy); audited.
    let resp = app
        .post_form(
            &format!("/admin/apps/{id}"),
            &format!("/admin/apps/{id}/placement"),
            &[("constraints", "")],
        )
        .await;
    assert_eq!(resp.status(), 303);
    let page = unescape(&app.get_html(&format!("/admin/apps/{id}")).await);
    assert!(page.contains("has no placement constraint"), "{page}");
    assert!(page.contains("Any node"), "{page}");
    let constraints = service_constraints(&app.instance);
    assert!(
        !constraints.contains("node.labels") && constraints.contains("node.id=="),
        "{constraints}"
    );
    wait_for(30, "the app to answer after the change", || async {
        who(&app, &route).await.is_some_and(|(v, _)| v == "v1")
    })
    .await;
    let audit = serde_json::to_string(&app.audit_lines()).expect("JSON");
    assert!(audit.contains("placement_change"), "{audit}");

    let resp = app
        .post_action("/admin", &format!("/admin/apps/{id}/delete"))
        .await;
    assert_eq!(resp.status(), 303);
    assert!(service_of(&app.instance).is_empty(), "the service is gone");
}

/// A labelled container that stands in for Traefik; removed on drop.
struct ProxyStandIn(String);

impl Drop for ProxyStandIn {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

/// In Traefik mode a swarm service carries the swarm provider's labels (its router, and
/// `traefik.swarm.network` naming the app's overlay); the containers of
/// MILKCRATE_TRAEFIK_CONTAINERS join that overlay and reach the tasks on it; delete takes them
/// off it, so the overlay goes too.
#[tokio::test]
async fn in_traefik_mode_services_are_labelled_and_traefik_joins_their_overlay() {
    let _swarm = SwarmGuard::take().await;
    let proxy = format!("milkcrate-test-traefik-{}", rand_suffix());
    let joined = proxy.clone();
    let app = spawn_engine_app_with(move |s| {
        s.orchestrator = milkcrate::config::Orchestrator::Swarm;
        s.start_timeout = Duration::from_secs(30);
        s.builtin_router = false;
        s.traefik.join = vec![joined];
    })
    .await;
    let _cleanup = SwarmCleanup(app.instance.clone());
    docker(&[
        "run", "-d", "--name", &proxy, "--label", TEST_LABEL, BASE_IMAGE, "sleep", "600",
    ]);
    let _proxy = ProxyStandIn(proxy.clone());
    let name = format!("tr{}", &rand_suffix()[..6]);
    let (id, _) = app
        .deploy(&name, &format!("/{name}"), replica_zip("t1"))
        .await;

    let services = service_of(&app.instance);
    assert_eq!(services.len(), 1);
    let labels: HashMap<String, String> = serde_json::from_str(&docker(&[
        "service",
        "inspect",
        &services[0],
        "--format",
        "{{json .Spec.Labels}}",
    ]))
    .unwrap();
    let overlay = format!("milkcrate-{}-{name}-swarm", app.instance);
    assert_eq!(
        labels.get("traefik.swarm.network"),
        Some(&overlay),
        "{labels:?}"
    );
    assert!(
        labels
            .iter()
            .any(|(k, v)| k.ends_with(".rule") && v.contains(&format!("/{name}"))),
        "a router for the app's route: {labels:?}"
    );

    // Traefik's stand-in is on the overlay and reaches the task there.
    let tasks = task_containers(&app.instance);
    assert_eq!(tasks.len(), 1);
    let ip = tasks[0]["NetworkSettings"]["Networks"][&overlay]["IPAddress"]
        .as_str()
        .unwrap_or_else(|| panic!("the task is on {overlay}: {}", tasks[0]["NetworkSettings"]))
        .to_string();
    let (code, body) = container_fetch(&proxy, &format!("http://{ip}:8080/cgi-bin/who"));
    assert_eq!(code, 0, "Traefik reaches the task: {body}");
    assert!(body.starts_with("t1 "), "{body}");

    // Delete: the stand-in leaves the overlay, and the overlay goes.
    let resp = app
        .post_action("/admin", &format!("/admin/apps/{id}/delete"))
        .await;
    assert_eq!(resp.status(), 303);
    let page = app.get_html(&location(&resp)).await;
    assert!(!page.contains("could not"), "{page}");
    wait_for(20, "the overlay to go", || async {
        docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("name=^{overlay}$"),
        ])
        .trim()
        .is_empty()
    })
    .await;
}

/// 13.7 in swarm mode: a task reaches the host through the node's `docker_gwbridge`, not a
/// bridge of milkcrate's. Without the firewall a task reaches a listener on the host (the
/// control); with MILKCRATE_HOST_FIREWALL=on that interface is guarded from the first deploy,
/// so the task cannot, while its route keeps answering through the router.
#[tokio::test]
async fn in_swarm_mode_a_task_cannot_reach_a_listener_on_the_host() {
    use crate::attacks::{OwnRules, host_listener, iptables};
    let version = iptables(&["--version"]);
    assert!(
        version.status.success(),
        "iptables does not work here ({}): this test needs it and root",
        String::from_utf8_lossy(&version.stderr)
    );
    let _swarm = SwarmGuard::take().await;
    let gateway_bridge = milkcrate::service::SWARM_GATEWAY_BRIDGE;
    let _own = OwnRules {
        bridges: vec![gateway_bridge.to_string()],
        networks: Vec::new(),
    };
    let port = host_listener();
    let fetch_host = |instance: &str| {
        let gw = docker(&[
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Gateway}}",
            gateway_bridge,
        ]);
        let task = task_containers(instance)
            .into_iter()
            .next()
            .expect("a task container on this node");
        container_fetch(
            task["Id"].as_str().expect("an id"),
            &format!("http://{}:{port}/", gw.trim()),
        )
    };

    // Without the firewall (what the other tests run with) the task reaches the host.
    let (open, _open_cleanup) = swarm_app(None).await;
    let open_name = format!("so{}", &rand_suffix()[..6]);
    open.deploy(&open_name, &format!("/{open_name}"), replica_zip("v1"))
        .await;
    assert_eq!(
        fetch_host(&open.instance),
        (0, "host\n".to_string()),
        "with the firewall off a task reaches a listener on the host (so what follows shows the firewall, not a broken fetch)"
    );

    // With it: the gateway bridge is guarded and the task cannot open a connection to the host.
    let walled = spawn_engine_app_with(|s| {
        s.orchestrator = milkcrate::config::Orchestrator::Swarm;
        s.start_timeout = Duration::from_secs(30);
        s.host_firewall = milkcrate::config::HostFirewall::On;
    })
    .await;
    let _walled_cleanup = SwarmCleanup(walled.instance.clone());
    let name = format!("sw{}", &rand_suffix()[..6]);
    let route = format!("/{name}");
    walled.deploy(&name, &route, replica_zip("walled")).await;
    let listing =
        String::from_utf8_lossy(&iptables(&["-S", "MILKCRATE-INPUT"]).stdout).into_owned();
    assert!(
        listing.contains(&format!("-i {gateway_bridge} ")),
        "a rule for {gateway_bridge}:\n{listing}"
    );
    let (code, body) = fetch_host(&walled.instance);
    assert!(
        code != 0 && body.is_empty(),
        "the task reached the host through {gateway_bridge}: {code} {body:?}"
    );
    wait_for(30, "the route answers through the router", || async {
        who(&walled, &route)
            .await
            .is_some_and(|(version, _)| version == "walled")
    })
    .await;
}
