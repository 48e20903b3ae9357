//! Images from registries, against Debian's docker-registry on 127.0.0.1 (scripts/test starts
//! one open on :5055 and one with basic auth on :5056): a compose `image:` pulled with its
//! progress in the log; credentials stored on the Registries page used for pulls and builds,
//! never shown again and encrypted at rest; a wrong password failing plainly and leaving
//! nothing; a template deployed from the local registry, healthy, its password encrypted; the
//! image's own user on request; stack and milkcrate volumes writable by the service's user.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::docker_env::*;
use crate::helpers::*;

const OPEN_REGISTRY: &str = "127.0.0.1:5055";
const AUTH_REGISTRY: &str = "127.0.0.1:5056";
/// scripts/lib.sh's `ensure_registry` puts this user in the :5056 registry's htpasswd.
const REGISTRY_USER: &str = "milkcrate-test";
const REGISTRY_PASSWORD: &str = "Registry-Pass-16";

fn require_registries() {
    for r in [OPEN_REGISTRY, AUTH_REGISTRY] {
        assert!(
            std::net::TcpStream::connect(r).is_ok(),
            "these tests need Debian's docker-registry on {r}; scripts/test starts it (ensure_registry in scripts/lib.sh)"
        );
    }
}

/// Images the test made or pulled, removed when it ends.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for i in &self.0 {
            let _ = Command::new("docker").args(["rmi", "-f", i]).output();
        }
    }
}

/// `docker` with its own client config folder (so a login touches nothing else).
fn docker_with(config: &std::path::Path, args: &[&str], stdin: Option<&[u8]>) -> String {
    let mut cmd = Command::new("docker");
    cmd.env("DOCKER_CONFIG", config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the docker CLI runs");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds `tag` from a Dockerfile without context, pushes it (logged in to the auth registry
/// when it is there) and removes it locally, so a deploy must pull it.
fn push_image(tag: &str, dockerfile: &str) {
    let config = tempfile::tempdir().unwrap();
    docker_with(
        config.path(),
        &["build", "-q", "-t", tag, "-"],
        Some(dockerfile.as_bytes()),
    );
    if tag.starts_with(AUTH_REGISTRY) {
        docker_with(
            config.path(),
            &[
                "login",
                AUTH_REGISTRY,
                "-u",
                REGISTRY_USER,
                "--password-stdin",
            ],
            Some(REGISTRY_PASSWORD.as_bytes()),
        );
    }
    docker_with(config.path(), &["push", tag], None);
    docker_with(config.path(), &["rmi", tag], None);
}

fn has_image(tag: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", tag])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A busybox web server answering `body` on port 8080.
fn web_dockerfile(body: &str) -> String {
    format!(
        "FROM {BASE_IMAGE}\nRUN mkdir /www && echo '{body}' > /www/index.html\nEXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    )
}

fn compose_zip(yml: &str) -> Vec<u8> {
    zip_of(&[("docker-compose.yml", yml.as_bytes(), 0o644)])
}

/// Text of the database files (main and WAL), to show a secret is not stored in plain text.
fn database_bytes(app: &EngineApp) -> Vec<u8> {
    let mut all = Vec::new();
    for f in ["milkcrate.sqlite", "milkcrate.sqlite-wal"] {
        if let Ok(b) = std::fs::read(app.data_dir.join(f)) {
            all.extend(b);
        }
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_compose_image_is_pulled_from_a_registry_with_its_progress_in_the_log() {
    require_registries();
    let app = spawn_engine_app().await;
    let image = format!("{OPEN_REGISTRY}/mc-{}/web:1", app.instance);
    let _cleanup = Images(vec![image.clone()]);
    push_image(&image, &web_dockerfile("pulled from the registry"));
    assert!(!has_image(&image));

    let yml = format!("services:\n  web:\n    image: \"{image}\"\n    ports: [\"8080\"]\n");
    let started = Instant::now();
    let (_, deploy) = app.deploy("pulled", "/pulled", compose_zip(&yml)).await;
    println!(
        "MEASURE pull+deploy of a 2-layer image from 127.0.0.1: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let page = unescape(&app.get_html(&format!("/admin/deploys/{deploy}")).await);
    assert!(
        page.contains(&format!("[web] Pulling {image} from {OPEN_REGISTRY}")),
        "{page}"
    );
    assert!(page.contains("layers done"), "progress in the log: {page}");
    assert!(page.contains(&format!("[web] Pulled {image} in")), "{page}");
    assert!(page.contains("[web] The container runs as 65534:65534 (nobody)"));
    assert!(has_image(&image), "the engine has the pulled image");
    let body = wait_status(&app, "/pulled/", 200)
        .await
        .text()
        .await
        .unwrap();
    assert!(body.contains("pulled from the registry"), "{body}");

    // `always`, set on the app's image page: the redeploy pulls again though the engine has it.
    let app_id = app_id_from(&page);
    let image_page = format!("/admin/apps/{app_id}/image");
    let resp = app
        .post_form(&image_page, &image_page, &[("pull_policy", "always")])
        .await;
    assert_eq!(resp.status(), 303);
    assert!(
        app.get_html(&image_page)
            .await
            .contains("value=\"always\" selected")
    );
    let resp = app
        .post_form(
            &format!("/admin/apps/{app_id}"),
            &format!("/admin/apps/{app_id}/redeploy"),
            &[],
        )
        .await;
    assert_eq!(resp.status(), 303);
    let page = unescape(&app.wait_deploy(deploy_id(&location(&resp))).await);
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    assert!(page.contains(&format!("[web] Pulling {image}")), "{page}");
    let resp = app
        .post_form(&image_page, &image_page, &[("pull_policy", "sometimes")])
        .await;
    assert_eq!(resp.status(), 400);
    assert!(unescape(&resp.text().await.unwrap()).contains("is not a pull policy"));

    // `never` with an image the engine lacks: a plain refusal, nothing left behind.
    let missing = format!("{OPEN_REGISTRY}/mc-{}/absent:1", app.instance);
    let yml = format!("services:\n  web:\n    image: \"{missing}\"\n    ports: [\"8080\"]\n");
    let resp = app
        .upload(
            &[
                ("app_name", "never"),
                ("public_route", "/never"),
                ("pull_policy", "never"),
            ],
            compose_zip(&yml),
            "app.zip",
        )
        .await;
    assert_eq!(resp.status(), 303);
    let page = unescape(&app.wait_deploy(deploy_id(&location(&resp))).await);
    assert!(
        page.contains("data-status=\"failed\"")
            && page.contains("is not in the engine and the app's pull policy is never"),
        "{page}"
    );
    // A missing tag in the registry: the registry's answer, in words.
    let page = app
        .deploy_failing("absent", "/absent", compose_zip(&yml))
        .await;
    assert!(
        page.contains(&format!(
            "pulling {missing} failed: the registry {OPEN_REGISTRY} answered"
        )),
        "{page}"
    );
    for name in ["never", "absent"] {
        let (containers, images) = labelled_leftovers(&app.instance, name);
        assert_eq!((containers.trim(), images.trim()), ("", ""));
    }
    assert!(!has_image(&missing));

    // A reference that could pass for an option is refused at upload.
    let yml = "services:\n  web:\n    image: \"--privileged\"\n    ports: [\"8080\"]\n";
    let resp = app
        .upload(
            &[("app_name", "opt"), ("public_route", "/opt")],
            compose_zip(yml),
            "app.zip",
        )
        .await;
    assert_eq!(resp.status(), 400);
    assert!(unescape(&resp.text().await.unwrap()).contains("is not an image reference"));
}

#[tokio::test]
async fn registry_credentials_from_the_ui_are_used_for_pulls_and_builds_and_a_wrong_one_fails_plainly()
 {
    require_registries();
    let app = spawn_engine_app().await;
    let image = format!("{AUTH_REGISTRY}/mc-{}/private:1", app.instance);
    let _cleanup = Images(vec![image.clone()]);
    push_image(&image, &web_dockerfile("private image"));
    let yml = format!("services:\n  web:\n    image: \"{image}\"\n    ports: [\"8080\"]\n");

    // No credentials: the registry's answer and where to add them.
    let page = app
        .deploy_failing("private", "/private", compose_zip(&yml))
        .await;
    assert!(
        page.contains(&format!("pulling {image} failed"))
            && page.contains(&format!(
                "add them for {AUTH_REGISTRY} on the Registries page"
            )),
        "{page}"
    );

    // A wrong password stored through the UI: refused in plain words, nothing left behind.
    let resp = app
        .post_form(
            "/admin/registries",
            "/admin/registries",
            &[
                ("host", AUTH_REGISTRY),
                ("username", REGISTRY_USER),
                ("password", "not-the-password"),
            ],
        )
        .await;
    assert_eq!(resp.status(), 303);
    let page = app
        .deploy_failing("private", "/private", compose_zip(&yml))
        .await;
    assert!(
        page.contains("refused the stored credentials")
            && page.contains(&format!("pulling {image} failed")),
        "{page}"
    );
    let (containers, images) = labelled_leftovers(&app.instance, "private");
    assert_eq!((containers.trim(), images.trim()), ("", ""));
    assert!(!has_image(&image));
    assert!(!app.get_html("/admin").await.contains("/private\""));

    // The right one replaces it; the page never shows a password.
    let resp = app
        .post_form(
            "/admin/registries",
            "/admin/registries",
            &[
                ("host", AUTH_REGISTRY),
                ("username", REGISTRY_USER),
                ("password", REGISTRY_PASSWORD),
            ],
        )
        .await;
    assert_eq!(resp.status(), 303);
    let list = app.get_html("/admin/registries").await;
    assert!(list.contains(AUTH_REGISTRY) && list.contains(REGISTRY_USER));
    assert!(!list.contains(REGISTRY_PASSWORD) && !list.contains("not-the-password"));
    assert!(
        !contains(&database_bytes(&app), REGISTRY_PASSWORD),
        "the registry password is stored encrypted"
    );
    let (_, deploy) = app.deploy("private", "/private", compose_zip(&yml)).await;
    let page = unescape(&app.get_html(&format!("/admin/deploys/{deploy}")).await);
    assert!(page.contains("with the stored credentials"), "{page}");
    let body = wait_status(&app, "/private/", 200)
        .await
        .text()
        .await
        .unwrap();
    assert!(body.contains("private image"));

    // A build FROM the private image pulls it with the same credentials.
    docker(&["rmi", "-f", &image]);
    let dockerfile = format!("FROM {image}\nRUN echo built-on-private > /www/index.html\n");
    let zip = zip_of(&[("Dockerfile", dockerfile.as_bytes(), 0o644)]);
    app.deploy("built", "/built", zip).await;
    let body = wait_status(&app, "/built/", 200)
        .await
        .text()
        .await
        .unwrap();
    assert!(body.contains("built-on-private"), "{body}");

    // Bad input on the form: a clear error, nothing stored.
    let resp = app
        .post_form(
            "/admin/registries",
            "/admin/registries",
            &[("host", "not a host"), ("username", "u"), ("password", "p")],
        )
        .await;
    assert_eq!(resp.status(), 400);
    assert!(unescape(&resp.text().await.unwrap()).contains("is not a registry host"));
    let audit = app.audit_lines();
    assert!(
        audit
            .iter()
            .any(|l| l["action"] == "registry_credentials" && l["resource_id"] == AUTH_REGISTRY),
        "{audit:?}"
    );
    assert!(
        !audit
            .iter()
            .any(|l| l.to_string().contains(REGISTRY_PASSWORD))
    );
}

/// A stand-in for postgres:16: answers on 5432, passes `pg_isready` once its data folder
/// (written as the template's user into the stack volume) holds PG_VERSION.
const FAKE_POSTGRES: &str = "RUN printf '#!/bin/sh\\n[ -f \"$PGDATA/PG_VERSION\" ]\\n' > /bin/pg_isready && chmod 755 /bin/pg_isready\nCMD [\"sh\", \"-c\", \"[ -n \\\"$POSTGRES_PASSWORD\\\" ] && mkdir -p \\\"$PGDATA\\\" && echo 16 > \\\"$PGDATA/PG_VERSION\\\" && exec httpd -f -p 5432 -h /tmp\"]\n";

#[tokio::test]
async fn a_template_deploys_from_the_registry_healthy_with_its_password_encrypted() {
    require_registries();
    let suffix = rand_suffix();
    let prefix = format!("{OPEN_REGISTRY}/mc-{suffix}");
    let p2 = prefix.clone();
    let app = spawn_engine_app_with(move |s| s.template_registry = p2).await;
    let image = format!("{prefix}/postgres:16");
    let _cleanup = Images(vec![image.clone()]);
    push_image(&image, &format!("FROM {BASE_IMAGE}\n{FAKE_POSTGRES}"));

    let page = app.get_html("/admin/services/new").await;
    for t in ["PostgreSQL", "MariaDB", "Redis", "Static site"] {
        assert!(page.contains(t), "{t} listed");
    }
    let started = Instant::now();
    let resp = app
        .post_form(
            "/admin/services/new",
            "/admin/services/new",
            &[
                ("template", "postgres"),
                ("app_name", "maindb"),
                ("public_route", ""),
            ],
        )
        .await;
    assert_eq!(
        resp.status(),
        303,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    let page = unescape(&app.wait_deploy(deploy_id(&location(&resp))).await);
    println!(
        "MEASURE template deploy (pull + start + healthy): {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    assert!(page.contains(&format!("[db] Pulling {image}")), "{page}");
    assert!(
        page.contains("[db] The container runs as 999:999, the user the compose file gives"),
        "{page}"
    );
    let app_id = app_id_from(&page);
    let c = inspect_app(&app.instance, "maindb");
    assert_eq!(c["Config"]["User"], "999:999");
    assert_eq!(c["State"]["Health"]["Status"], "healthy");
    assert_eq!(
        c["HostConfig"]["CapAdd"],
        serde_json::json!(["NET_BIND_SERVICE"])
    );

    // Connection details; the password only on request, and never in the database in clear.
    let page = app.get_html(&format!("/admin/apps/{app_id}/image")).await;
    assert!(
        page.contains("id=\"conn-host\">db<") && page.contains(">5432<"),
        "{page}"
    );
    assert!(page.contains("id=\"conn-user\">app<"));
    assert!(!page.contains("id=\"conn-password\""));
    let resp = app
        .post_form(
            &format!("/admin/apps/{app_id}/image"),
            &format!("/admin/apps/{app_id}/connection/password"),
            &[],
        )
        .await;
    assert_eq!(resp.status(), 200);
    let page = unescape(&resp.text().await.unwrap());
    let marker = "id=\"conn-password\">";
    let start = page.find(marker).expect("password shown") + marker.len();
    let password = page[start..].split('<').next().unwrap().to_string();
    assert!(password.len() >= 32, "a strong password: {password}");
    assert!(page.contains(&format!("postgres://app:{password}@db:5432/app")));
    let env = c["Config"]["Env"].to_string();
    assert!(env.contains(&format!("POSTGRES_PASSWORD={password}")));
    assert!(
        !contains(&database_bytes(&app), &password),
        "the template's password is stored encrypted"
    );
    assert!(
        app.audit_lines()
            .iter()
            .any(|l| l["action"] == "reveal_password" && l["resource_id"] == "maindb")
    );
    // A second service of the same name is refused and leaves nothing.
    let resp = app
        .post_form(
            "/admin/services/new",
            "/admin/services/new",
            &[("template", "redis"), ("app_name", "maindb")],
        )
        .await;
    assert_eq!(resp.status(), 400);
    assert!(unescape(&resp.text().await.unwrap()).contains("already exists"));
}

#[tokio::test]
async fn stack_volumes_are_writable_by_the_services_user_and_the_images_user_is_used_on_request() {
    let app = spawn_engine_app().await;
    // The README's example, `notes:/data`, written by a service running as nobody; a stack
    // volume and an assigned milkcrate volume written by a service with its own `user:`.
    let resp = app
        .post_form(
            "/admin/volumes/create",
            "/admin/volumes/create",
            &[("volume_name", "shared_rw"), ("description", "")],
        )
        .await;
    assert_eq!(resp.status(), 303);
    let list: serde_json::Value = app
        .get("/admin/volumes/api/list")
        .await
        .json()
        .await
        .unwrap();
    let vol = &list["volumes"][0];
    let vol_id = vol["volume_id"].as_i64().unwrap().to_string();
    let shared = vol["docker_volume_name"].as_str().unwrap().to_string();
    let yml = format!(
        r#"services:
  web:
    image: "{BASE_IMAGE}"
    command: ["sh", "-c", "echo from-nobody > /data/web.txt && mkdir -p /tmp/www && cat /data/web.txt /own/worker.txt /shared/w.txt > /tmp/www/index.html; exec httpd -f -p 8080 -h /tmp/www"]
    ports: ["8080"]
    volumes: ["notes:/data", "own:/own:ro", "shared:/shared:ro"]
    depends_on:
      worker: {{condition: service_healthy}}
    stop_grace_period: 1s
    labels:
      milkcrate.main_service: true
  worker:
    image: "{BASE_IMAGE}"
    user: "1234:1234"
    command: ["sh", "-c", "echo from-1234 > /own/worker.txt && echo shared-by-1234 > /shared/w.txt && exec sleep 3600"]
    volumes: ["own:/own", "shared:/shared"]
    healthcheck:
      test: ["CMD", "cat", "/shared/w.txt"]
      interval: 1s
      retries: 20
    stop_grace_period: 1s
volumes:
  notes:
  own:
  shared:
    external: true
    name: {shared}
"#
    );
    let path_field = format!("volume_path_{vol_id}");
    let resp = app
        .upload(
            &[
                ("app_name", "writer"),
                ("public_route", "/writer"),
                ("volumes[]", &vol_id),
                (&path_field, "/assigned"),
                (&format!("volume_ro_{vol_id}"), "1"),
            ],
            compose_zip(&yml),
            "app.zip",
        )
        .await;
    assert_eq!(resp.status(), 303, "{}", resp.text().await.unwrap());
    let page = unescape(&app.wait_deploy(deploy_id(&location(&resp))).await);
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    assert!(
        page.contains("[worker] The container runs as 1234:1234, the user the compose file gives")
    );
    assert!(page.contains("is owned by 1234:1234"), "{page}");
    let body = wait_status(&app, "/writer/", 200)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(body, "from-nobody\nfrom-1234\nshared-by-1234\n");

    // The image's own user: used only when asked, and only when it is not root.
    let dockerfile = |user: &str| {
        format!(
            "FROM {BASE_IMAGE}\nRUN mkdir -p /etc && echo 'root:x:0:0::/:/bin/sh' > /etc/passwd && echo 'app:x:2345:2346::/:/bin/sh' >> /etc/passwd && echo 'app:x:2346:' > /etc/group\nUSER {user}\nEXPOSE 8080\nCMD [\"sh\", \"-c\", \"mkdir -p /tmp/www && id -u > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www\"]\n"
        )
    };
    for (name, user, opt_in, runs_as, says) in [
        (
            "named",
            "app",
            "on",
            "2345:2346",
            "the image's own user app, as asked",
        ),
        (
            "numeric",
            "4321:4322",
            "on",
            "4321:4322",
            "the image's own user 4321:4322",
        ),
        (
            "notasked",
            "app",
            "",
            "65534:65534",
            "used only when \"run as the image's own user\" is on",
        ),
        (
            "rooted",
            "root",
            "on",
            "65534:65534",
            "instead of the image's user: the image's user 'root' is root",
        ),
        (
            "zero",
            "0:0",
            "on",
            "65534:65534",
            "instead of the image's user",
        ),
        (
            "unknown",
            "ghost",
            "on",
            "65534:65534",
            "is not in the image's /etc/passwd",
        ),
    ] {
        let zip = zip_of(&[("Dockerfile", dockerfile(user).as_bytes(), 0o644)]);
        let resp = app
            .upload(
                &[
                    ("app_name", name),
                    ("public_route", &format!("/{name}")),
                    ("image_user", opt_in),
                ],
                zip,
                "app.zip",
            )
            .await;
        assert_eq!(resp.status(), 303);
        let page = unescape(&app.wait_deploy(deploy_id(&location(&resp))).await);
        assert!(page.contains("data-status=\"succeeded\""), "{name}: {page}");
        assert!(
            page.contains(&format!("The container runs as {runs_as}")) && page.contains(says),
            "{name}: {page}"
        );
        let c = inspect_app(&app.instance, name);
        assert_eq!(c["Config"]["User"], runs_as, "{name}");
    }
}

#[tokio::test]
async fn the_static_site_template_serves_its_volume_and_a_failed_pull_leaves_nothing() {
    require_registries();
    let prefix = format!("{OPEN_REGISTRY}/mc-{}", rand_suffix());
    let p2 = prefix.clone();
    let app = spawn_engine_app_with(move |s| s.template_registry = p2).await;
    let image = format!("{prefix}/busybox:1.36");
    let _cleanup = Images(vec![image.clone()]);
    let create = || async {
        let resp = app
            .post_form(
                "/admin/services/new",
                "/admin/services/new",
                &[("template", "static-site"), ("app_name", "site")],
            )
            .await;
        assert_eq!(resp.status(), 303);
        unescape(&app.wait_deploy(deploy_id(&location(&resp))).await)
    };
    let volumes = || {
        docker(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=milkcrate.instance={}", app.instance),
        ])
    };

    // The registry has no such image yet: the deploy fails, naming it, and the volume made for
    // the site goes with the app.
    let page = create().await;
    assert!(
        page.contains("data-status=\"failed\"")
            && page.contains(&format!("pulling {image} failed")),
        "{page}"
    );
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while !volumes().trim().is_empty() {
        assert!(Instant::now() < deadline, "left behind: {}", volumes());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let list: serde_json::Value = app
        .get("/admin/volumes/api/list")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["volumes"], serde_json::json!([]));
    let (containers, images) = labelled_leftovers(&app.instance, "site");
    assert_eq!((containers.trim(), images.trim()), ("", ""));

    // With the image in the registry: healthy, serving its volume's placeholder page.
    push_image(
        &image,
        &format!("FROM {BASE_IMAGE}\nRUN ln -s busybox /bin/[\n"),
    );
    let page = create().await;
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    let c = inspect_app(&app.instance, "site");
    assert_eq!(c["Config"]["User"], "65534:65534");
    assert_eq!(c["State"]["Health"]["Status"], "healthy");
    let body = wait_status(&app, "/site/", 200).await.text().await.unwrap();
    assert!(body.contains("It works"), "{body}");
    assert!(volumes().contains("vol-site-site"), "{}", volumes());
}
