//! Faults (issue 12): the real `milkcrate` binary as a separate process, so a test can count
//! its file descriptors, kill it at a chosen moment and start it again on the same data.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::docker_env::*;
use crate::helpers::*;

/// `milkcrate serve` on a free loopback port, as its own install on the test network.
pub struct RealServer {
    pub child: Child,
    pub base: String,
    pub client: reqwest::Client,
    pub instance: String,
    /// Whether dropping it removes what the install made in the engine (the last server of
    /// a test does; one killed to be started again on the same data does not).
    cleanup: bool,
}

impl RealServer {
    pub fn start(data_dir: &Path, instance: &str, extra_env: &[(&str, &str)]) -> Self {
        Self::start_as(data_dir, Some(instance), extra_env)
    }

    /// With `instance` None, MILKCRATE_INSTANCE is unset: the install names itself.
    pub fn start_as(data_dir: &Path, instance: Option<&str>, extra_env: &[(&str, &str)]) -> Self {
        let mut cmd = milkcrate_command();
        cmd.env("MILKCRATE_DATA_DIR", data_dir)
            .env("TRAEFIK_NETWORK", NETWORK)
            .env("MILKCRATE_LISTEN", "127.0.0.1:0");
        if let Some(i) = instance {
            cmd.env("MILKCRATE_INSTANCE", i);
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .arg("serve")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let base = loop {
            assert!(Instant::now() < deadline, "milkcrate did not start");
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(200))
                && let Some(rest) = line.split("listening on ").nth(1)
            {
                break rest.split_whitespace().next().unwrap().to_string();
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("milkcrate exited: {status}");
            }
        };
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        let instance = match instance {
            Some(i) => i.to_string(),
            None => stored_install_id(data_dir),
        };
        Self {
            child,
            base,
            client: new_client(),
            instance,
            cleanup: true,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn login(&self) {
        let html = self
            .client
            .get(self.url("/login"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let resp = self
            .client
            .post(self.url("/login"))
            .form(&[
                ("csrf_token", csrf_token(&html).as_str()),
                ("password", DEFAULT_PASSWORD),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 303, "logged in");
    }

    /// Uploads `zip` as a new app and waits for its deploy; returns the app's id.
    pub async fn deploy(&self, name: &str, route: &str, zip: Vec<u8>) -> i64 {
        let html = self
            .client
            .get(self.url("/upload"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let form = reqwest::multipart::Form::new()
            .text("csrf_token", csrf_token(&html))
            .text("app_name", name.to_string())
            .text("public_route", route.to_string())
            .part(
                "file",
                reqwest::multipart::Part::bytes(zip).file_name("app.zip"),
            );
        let resp = self
            .client
            .post(self.url("/upload"))
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 303);
        let deploy = deploy_id(&location(&resp));
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let page = self
                .client
                .get(self.url(&format!("/admin/deploys/{deploy}")))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if page.contains("data-status=\"succeeded\"") {
                return app_id_from(&page);
            }
            assert!(
                !page.contains("data-status=\"failed\"") && Instant::now() < deadline,
                "deploy of {name} did not succeed:\n{page}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// `kill -9`: no clean-up of any kind runs.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills it and leaves its engine objects for the next server on the same data.
    pub fn kill_and_keep(mut self) {
        self.cleanup = false;
        self.kill();
    }
}

/// The identity an install without MILKCRATE_INSTANCE gave itself at its first start.
pub fn stored_install_id(data_dir: &Path) -> String {
    let store = milkcrate::store::Store::open(&data_dir.join("milkcrate.sqlite")).unwrap();
    let id = store
        .setting_blocking(milkcrate::store::settings::INSTALL_ID)
        .unwrap()
        .expect("an install id is stored at the first start");
    assert!(id.starts_with("mc-"), "{id}");
    id
}

impl Drop for RealServer {
    fn drop(&mut self) {
        self.kill();
        if !self.cleanup {
            return;
        }
        // Everything this install made in the engine carries its instance label.
        let filter = format!("label=milkcrate.instance={}", self.instance);
        let ids = docker(&["ps", "-aq", "--filter", &filter]);
        for id in ids.split_whitespace() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", id])
                .output();
        }
        let images = docker(&["images", "-q", "--filter", &filter]);
        for id in images.split_whitespace() {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", id])
                .output();
        }
        for kind in ["volume", "network"] {
            let names = docker(&[kind, "ls", "-q", "--filter", &filter]);
            for name in names.split_whitespace() {
                let _ = std::process::Command::new("docker")
                    .args([kind, "rm", name])
                    .output();
            }
        }
    }
}

/// 12.9: live log follows of a quiet app end when the browser goes; before, each closed page
/// kept an engine connection (and a file descriptor) for good.
#[tokio::test]
async fn closed_log_follows_release_their_engine_connections() {
    ensure_base_image();
    let dir = tempfile::tempdir().unwrap();
    let server = RealServer::start(
        &dir.path().join("data"),
        &format!("test-{}", rand_suffix()),
        &[],
    );
    server.login().await;
    let id = server
        .deploy("quiet", "/quiet", web_app_zip("quiet app"))
        .await;
    let baseline = server.open_fds();
    let mut follows = Vec::new();
    for _ in 0..30 {
        let resp = server
            .client
            .get(server.url(&format!("/admin/apps/{id}/logs/events")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        follows.push(resp);
    }
    let while_open = server.open_fds();
    assert!(
        while_open >= baseline + 30,
        "each follow holds connections: {baseline} → {while_open}"
    );
    drop(follows);
    // The client's pooled connections to the server go too.
    drop(server.client.clone());
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let now = server.open_fds();
        if now <= baseline + 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "file descriptors stayed: {baseline} before, {while_open} while open, {now} after"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// 12.12: from the moment a stop begins, visitors get the "stopped" page, never a 502 while
/// the container goes down or until the next status refresh.
#[tokio::test]
async fn a_stopping_app_shows_its_stopped_page_without_502s() {
    let app = spawn_engine_app().await;
    let (id, _) = app.deploy("stopping", "/stopping", web_app_zip("up")).await;
    wait_status(&app, "/stopping/", 200).await;
    let page = format!("/admin/apps/{id}");
    let action = format!("/admin/apps/{id}/stop");
    let stop = app.post_action(&page, &action);
    let watch = async {
        let mut seen = Vec::new();
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            let status = app.get("/stopping/").await.status().as_u16();
            seen.push(status);
            if status == 503 && seen.iter().filter(|s| **s == 503).count() > 20 {
                return seen;
            }
            if Instant::now() > until {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (resp, seen) = tokio::join!(stop, watch);
    assert_eq!(resp.status(), 303);
    assert!(
        seen.iter().all(|s| *s == 200 || *s == 503),
        "only the app or its stopped page: {seen:?}"
    );
    let body = app.get("/stopping/").await.text().await.unwrap();
    assert!(body.contains("stopping is stopped"), "{body}");
}

/// 12.12: an image's own `USER` is replaced by 65534, and the deploy log says so.
#[tokio::test]
async fn the_deploy_log_says_when_the_images_user_is_replaced() {
    let app = spawn_engine_app().await;
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nCOPY www /www\nUSER 1000:1000\nEXPOSE 8080\nCMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    );
    let zip = zip_of(&[
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("www/index.html", b"x", 0o644),
    ]);
    let (_, deploy) = app.deploy("ownuser", "/ownuser", zip).await;
    let page = unescape(&app.get_html(&format!("/admin/deploys/{deploy}")).await);
    assert!(
        page.contains(
            "runs as 65534:65534 (nobody), milkcrate's default: the image sets USER 1000:1000"
        ),
        "{page}"
    );
    let c = inspect_app(&app.instance, "ownuser");
    assert_eq!(c["Config"]["User"], "65534:65534");
}

/// 12.1: two installs on one engine, neither with MILKCRATE_INSTANCE, each deploying `shop`:
/// each names itself, labels and filters by that name, and deleting one's `shop` leaves the
/// other's container, image and answers alone.
#[tokio::test]
async fn two_installs_on_one_engine_never_touch_each_other() {
    ensure_base_image();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = RealServer::start_as(&dirs.0.path().join("data"), None, &[]);
    let b = RealServer::start_as(&dirs.1.path().join("data"), None, &[]);
    assert_ne!(a.instance, b.instance, "each install has its own identity");
    a.login().await;
    b.login().await;
    let a_id = a.deploy("shop", "/shop", web_app_zip("shop of a")).await;
    let _b_id = b.deploy("shop", "/shop", web_app_zip("shop of b")).await;
    for server in [&a, &b] {
        let c = inspect_app(&server.instance, "shop");
        assert_eq!(
            c["Config"]["Labels"]["milkcrate.instance"],
            server.instance.as_str()
        );
    }
    // `milkcrate check` names the identity and sees the other install's objects.
    let out = milkcrate_command()
        .env("MILKCRATE_DATA_DIR", dirs.0.path().join("data"))
        .env("TRAEFIK_NETWORK", NETWORK)
        .arg("check")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        report.contains(&format!(
            "instance {} (generated at the first start",
            a.instance
        )),
        "{report}"
    );
    assert!(
        report.contains("of other milkcrate installs share this engine")
            && report.contains(&format!("instance {}", b.instance)),
        "{report}"
    );
    // a deletes its shop.
    let html = a
        .client
        .get(a.url("/admin"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let resp = a
        .client
        .post(a.url(&format!("/admin/apps/{a_id}/delete")))
        .form(&[("csrf_token", csrf_token(&html).as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let (a_left, _) = labelled_leftovers(&a.instance, "shop");
    assert!(a_left.trim().is_empty(), "a's shop is gone: {a_left}");
    let (b_left, b_images) = labelled_leftovers(&b.instance, "shop");
    assert!(
        !b_left.trim().is_empty(),
        "b's shop container is still there"
    );
    assert!(!b_images.trim().is_empty(), "b's shop image is still there");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let resp = b.client.get(b.url("/shop/")).send().await.unwrap();
        if resp.status() == 200 {
            assert_eq!(resp.text().await.unwrap(), "shop of b");
            break;
        }
        assert!(Instant::now() < deadline, "b's shop stopped answering");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // One volume name in both installs: two Docker volumes, each named and labelled for its
    // install. And a volume of this install's name that another install made is refused, never
    // adopted (its files are not this install's to delete).
    let vol = format!("shared{}", rand_suffix());
    let stolen = format!("stolen{}", rand_suffix());
    docker(&[
        "volume",
        "create",
        "--label",
        "milkcrate.managed=true",
        "--label",
        &format!("milkcrate.instance={}", b.instance),
        &format!("milkcrate-{}-vol-{stolen}", a.instance),
    ]);
    for (server, name, expect) in [
        (&a, &vol, "created successfully"),
        (&b, &vol, "created successfully"),
        (&a, &stolen, "belongs to another milkcrate install"),
    ] {
        let html = server
            .client
            .get(server.url("/admin/volumes/create"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let resp = server
            .client
            .post(server.url("/admin/volumes/create"))
            .form(&[
                ("csrf_token", csrf_token(&html).as_str()),
                ("volume_name", name.as_str()),
                ("description", ""),
            ])
            .send()
            .await
            .unwrap();
        let page = if resp.status() == 303 {
            let to = location(&resp);
            server
                .client
                .get(server.url(&to))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        } else {
            resp.text().await.unwrap()
        };
        assert!(unescape(&page).contains(expect), "{expect}: {page}");
    }
    for server in [&a, &b] {
        let owner = docker(&[
            "volume",
            "inspect",
            "-f",
            "{{index .Labels \"milkcrate.instance\"}}",
            &format!("milkcrate-{}-vol-{vol}", server.instance),
        ]);
        assert_eq!(owner.trim(), server.instance);
    }

    // A restart keeps the identity.
    a.kill_and_keep();
    let again = RealServer::start_as(&dirs.0.path().join("data"), None, &[]);
    assert_eq!(
        again.instance,
        stored_install_id(&dirs.0.path().join("data"))
    );
}

/// The containers of app `name` in `instance` that are running.
fn running_containers(instance: &str, name: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=milkcrate.instance={instance}"),
        "--filter",
        &format!("label=milkcrate.app={name}"),
        "--filter",
        "status=running",
    ])
    .split_whitespace()
    .map(String::from)
    .collect()
}

/// Waits until `path` answers 200 with `body`.
async fn wait_body(app: &EngineApp, path: &str, body: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = app.get(path).await;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status == 200 && text == body {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never answered {body:?} (last: {status} {text:?})"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// 12.3: a container that should run and is Exited (as after an engine crash, or a stop
/// behind milkcrate's back) is started again by the status loop, without anyone pressing Start.
#[tokio::test]
async fn an_exited_container_that_should_run_is_started_again() {
    let app = spawn_engine_app().await;
    app.deploy("phoenix", "/phoenix", web_app_zip("alive"))
        .await;
    wait_body(&app, "/phoenix/", "alive").await;
    let c = inspect_app(&app.instance, "phoenix");
    let id = c["Id"].as_str().unwrap().to_string();
    docker(&["stop", "-t", "1", &id]);
    assert!(running_containers(&app.instance, "phoenix").is_empty());
    wait_body(&app, "/phoenix/", "alive").await;
    assert_eq!(
        running_containers(&app.instance, "phoenix"),
        vec![id[..12].to_string()]
    );
}

/// 12.6 / 14: two updates of one app started 50 ms apart run one after the other: exactly one
/// container runs and is routed at the end, `previous_image_tag` is the version before the
/// last, and rollback returns to it.
#[tokio::test]
async fn two_quick_updates_end_with_one_container_and_a_true_rollback() {
    let app = spawn_engine_app().await;
    let (id, _) = app.deploy("twice", "/twice", web_app_zip("v1")).await;
    let first = app.update(id, web_app_zip("v2"));
    let second = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        app.update(id, web_app_zip("v3")).await
    };
    let (r1, r2) = tokio::join!(first, second);
    assert_eq!((r1.status().as_u16(), r2.status().as_u16()), (303, 303));
    let (d1, d2) = (deploy_id(&location(&r1)), deploy_id(&location(&r2)));
    assert!(
        app.wait_deploy(d1)
            .await
            .contains("data-status=\"succeeded\"")
    );
    let page = app.wait_deploy(d2).await;
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    wait_body(&app, "/twice/", "v3").await;
    assert_eq!(
        running_containers(&app.instance, "twice").len(),
        1,
        "one container runs"
    );
    // Rollback goes to v2, the version before v3.
    let resp = app
        .post_action(
            &format!("/admin/apps/{id}"),
            &format!("/admin/apps/{id}/rollback"),
        )
        .await;
    let page = app.wait_deploy(deploy_id(&location(&resp))).await;
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    wait_body(&app, "/twice/", "v2").await;
    assert_eq!(running_containers(&app.instance, "twice").len(), 1);
}

/// 12.7 / 14: a first deploy that exceeds the build timeout ends "failed" and leaves no
/// container, image, build context or app row behind.
#[tokio::test]
async fn a_timed_out_first_deploy_leaves_nothing() {
    let app = spawn_engine_app_with(|s| s.build_timeout = Duration::from_secs(3)).await;
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nRUN sleep 8\nCOPY www /www\nEXPOSE 8080\nCMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    );
    let zip = zip_of(&[
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("www/index.html", b"slow", 0o644),
    ]);
    let page = app.deploy_failing("slow", "/slow", zip).await;
    assert!(page.contains("took longer than 3 s"), "{page}");
    let (containers, images) = labelled_leftovers(&app.instance, "slow");
    assert_eq!((containers.trim(), images.trim()), ("", ""));
    let dashboard = app.get_html("/admin").await;
    assert!(
        !dashboard.contains("data-app=\"slow\""),
        "no app row is left"
    );
    let left: Vec<_> = std::fs::read_dir(app.data_dir.join("uploads"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "no upload or build context is left: {left:?}"
    );
}

/// 12.6: two saves of the variables from forms showing the same version: the second is told
/// they changed meanwhile, and nothing of it is saved.
#[tokio::test]
async fn a_stale_environment_form_is_refused() {
    let app = spawn_engine_app().await;
    let (id, _) = app.deploy("envcas", "/envcas", web_app_zip("e")).await;
    let html = app.get_html(&format!("/admin/apps/{id}")).await;
    let version = html
        .split("name=\"env_version\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the form carries the variables' version")
        .to_string();
    let token = csrf_token(&html);
    let save = |env: &'static str| {
        app.client
            .post(app.url(&format!("/admin/apps/{id}/env")))
            .form(&[
                ("csrf_token", token.as_str()),
                ("env_version", version.as_str()),
                ("env", env),
            ])
            .send()
    };
    let first = save("A=1").await.unwrap();
    assert_eq!(first.status(), 303);
    let second = save("B=2").await.unwrap();
    assert_eq!(second.status(), 409);
    assert!(unescape(&second.text().await.unwrap()).contains("changed meanwhile"));
    let page = app.get_html(&format!("/admin/apps/{id}")).await;
    assert!(
        page.contains("A=(unchanged)") && !page.contains("B=(unchanged)"),
        "{page}"
    );
}

/// 12.2: milkcrate killed after an update switched traffic, while the old container drains:
/// the next start completes the deploy (the new version keeps serving, the old container
/// goes, the deploy reads "succeeded") instead of removing the container the app points at.
#[tokio::test]
async fn a_crash_after_the_switch_is_completed_at_start_up() {
    ensure_base_image();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let instance = format!("test-{}", rand_suffix());
    let first = RealServer::start(&data, &instance, &[]);
    first.login().await;
    let id = first.deploy("switch", "/switch", web_app_zip("v1")).await;
    first.kill_and_keep();

    let paused = RealServer::start(
        &data,
        &instance,
        &[("MILKCRATE_TEST_PAUSE_AT", "deploy-switched")],
    );
    paused.login().await;
    let html = paused
        .client
        .get(paused.url(&format!("/admin/apps/{id}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let form = reqwest::multipart::Form::new()
        .text("csrf_token", csrf_token(&html))
        .part(
            "file",
            reqwest::multipart::Part::bytes(web_app_zip("v2")).file_name("app.zip"),
        );
    let resp = paused
        .client
        .post(paused.url(&format!("/admin/update/{id}")))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let deploy = deploy_id(&location(&resp));
    // Paused just after the switch: v2 answers, v1's container still exists.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let resp = paused
            .client
            .get(paused.url("/switch/"))
            .send()
            .await
            .unwrap();
        if resp.status() == 200 && resp.text().await.unwrap() == "v2" {
            break;
        }
        assert!(Instant::now() < deadline, "the update never switched");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let filter_i = format!("label=milkcrate.instance={instance}");
    let before = docker(&[
        "ps",
        "-aq",
        "--filter",
        &filter_i,
        "--filter",
        "label=milkcrate.app=switch",
    ]);
    assert_eq!(
        before.split_whitespace().count(),
        2,
        "old and new are both there"
    );
    paused.kill_and_keep();

    let again = RealServer::start(&data, &instance, &[]);
    again.login().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = docker(&[
            "ps",
            "-aq",
            "--filter",
            &filter_i,
            "--filter",
            "label=milkcrate.app=switch",
        ]);
        let page = again
            .client
            .get(again.url(&format!("/admin/deploys/{deploy}")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let resp = again
            .client
            .get(again.url("/switch/"))
            .send()
            .await
            .unwrap();
        let serving = resp.status() == 200 && resp.text().await.unwrap() == "v2";
        if left.split_whitespace().count() == 1
            && page.contains("data-status=\"succeeded\"")
            && serving
        {
            assert!(unescape(&page).contains("completed at start-up"), "{page}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not completed: containers {left:?}, serving v2 {serving}, page:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// 12.8: with the disk full, a page whose session is due for its activity write still renders
/// (before, the failed write failed every admin page with a 500 within a minute).
#[tokio::test]
async fn a_full_disk_does_not_fail_the_admin_pages() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("instance");
    let _disk = crate::spool::SmallDisk::mount(data.clone(), "4m");
    let app = spawn_in(data.clone(), |_| {}).await;
    let resp = app.login(DEFAULT_PASSWORD).await;
    let session = set_cookies(&resp)
        .into_iter()
        .find_map(|c| {
            c.strip_prefix("milkcrate_session=")
                .map(|v| v.split(';').next().unwrap_or("").to_string())
        })
        .expect("a session cookie");
    assert_eq!(app.get("/admin").await.status(), 200);
    // The session was last seen two minutes ago: the next page wants to record activity.
    let store = milkcrate::store::Store::open(&data.join("milkcrate.sqlite")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    store
        .touch_session(
            milkcrate::secrets::sha256_hex(session.as_bytes()),
            now - 120,
        )
        .await
        .unwrap();
    // Fill the disk.
    let filler = data.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    let _ = f.sync_all();
    let resp = app.get("/admin").await;
    assert_eq!(resp.status(), 200, "the page renders with the disk full");
    drop(f);
    let _ = std::fs::remove_file(&filler);
}

/// 12.6: deleting an app while its first deploy builds stops that deploy, which undoes
/// itself; nothing of the app is left running or stored.
#[tokio::test]
async fn delete_during_a_deploy_cancels_it_and_leaves_nothing() {
    let app = spawn_engine_app().await;
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nRUN sleep 6\nCOPY www /www\nEXPOSE 8080\nCMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    );
    let zip = zip_of(&[
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("www/index.html", b"doomed", 0o644),
    ]);
    let resp = app
        .upload(
            &[("app_name", "doomed"), ("public_route", "/doomed")],
            zip,
            "app.zip",
        )
        .await;
    assert_eq!(resp.status(), 303);
    let deploy = deploy_id(&location(&resp));
    let page = app.get_html(&format!("/admin/deploys/{deploy}")).await;
    let id = app_id_from(&page);
    let resp = app
        .post_action("/admin", &format!("/admin/apps/{id}/delete"))
        .await;
    assert_eq!(resp.status(), 303);
    let page = unescape(&app.wait_deploy(deploy).await);
    assert!(page.contains("data-status=\"failed\""), "{page}");
    assert!(page.contains("is being deleted"), "{page}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (containers, images) = labelled_leftovers(&app.instance, "doomed");
        if containers.trim().is_empty() && images.trim().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: containers {containers:?}, images {images:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let dashboard = app.get_html("/admin").await;
    assert!(!dashboard.contains("data-app=\"doomed\""));
}

/// 12.3: a hung engine (a socket that accepts and never answers) does not hang an action for
/// minutes: the admin gets the page back within the timeouts, with a message saying why.
#[tokio::test]
async fn an_action_against_a_hung_engine_answers_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    {
        let store = milkcrate::store::Store::open(&data.join("milkcrate.sqlite")).unwrap();
        let new = milkcrate::store::NewApp {
            name: "frozen".into(),
            public_route: "/frozen".into(),
            deployment_type: "dockerfile".into(),
            health_path: None,
            memory_mb: 512,
            cpu_percent: 50,
            port_override: None,
            source_zip: String::new(),
            volume_mounts: None,
            domains: Vec::new(),
        };
        let (id, deploy) = store.insert_app(new, 0).await.unwrap().unwrap();
        store
            .app_deployed(id, "c0".into(), "img".into(), None, 8080)
            .await
            .unwrap();
        store
            .finish_deploy(
                deploy,
                milkcrate::domain::state::DeployStatus::Succeeded,
                Some("img".into()),
                None,
                0,
            )
            .await
            .unwrap();
    }
    // The hung engine: accepts every connection and never says a word.
    let sock = dir.path().join("hung.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let host = format!("unix://{}", sock.display());
    let server = RealServer::start(
        &data,
        &format!("test-{}", rand_suffix()),
        &[("DOCKER_HOST", host.as_str())],
    );
    server.login().await;
    let page = server
        .client
        .get(server.url("/admin/apps/1"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("the app page renders without the engine")
        .text()
        .await
        .unwrap();
    let started = Instant::now();
    let resp = server
        .client
        .post(server.url("/admin/apps/1/stop"))
        .form(&[("csrf_token", csrf_token(&page).as_str())])
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("the action answers well before bollard's 120 s");
    assert_eq!(resp.status(), 303);
    let next = server
        .client
        .get(server.url(&location(&resp)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        unescape(&next).contains("Could not stop frozen") && next.contains("no answer within"),
        "after {:?}: {next}",
        started.elapsed()
    );
}

/// 12.10: the layers a failed build made (untagged, unlabelled) are removed with it; the base
/// image and the layers other images build on stay.
#[tokio::test]
async fn a_failed_build_leaves_no_untagged_layers() {
    let app = spawn_engine_app().await;
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nRUN echo {} > /unique\nRUN false\n",
        rand_suffix()
    );
    let zip = zip_of(&[("Dockerfile", dockerfile.as_bytes(), 0o644)]);
    let page = app.deploy_failing("layers", "/layers", zip).await;
    let ids: Vec<String> = page
        .lines()
        .filter_map(|l| l.trim().strip_prefix("---> "))
        .map(str::trim)
        .filter(|id| id.len() >= 12 && id.chars().all(|c| c.is_ascii_hexdigit()))
        .map(String::from)
        .collect();
    assert!(
        ids.len() >= 2,
        "the log shows the base and the new layer: {page}"
    );
    let exists = |id: &str| {
        std::process::Command::new("docker")
            .args(["image", "inspect", id])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(exists(&ids[0]), "the base image stays");
    let made = ids.last().unwrap();
    assert!(
        !exists(made),
        "the layer the failed build made ({made}) is gone"
    );
}
