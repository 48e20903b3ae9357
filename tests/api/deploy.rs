//! Deploying Dockerfile apps through HTTP against the real engine: hardening as the engine
//! reports it, the app answering on its own address, update/rollback, delete, refusals.

use crate::docker_env::*;
use crate::helpers::*;

#[tokio::test]
async fn a_zip_deploys_hardened_and_answers_on_its_container_address() {
    let app = spawn_engine_app().await;
    let resp = app
        .upload(
            &[("app_name", "Hello_App"), ("public_route", "hello")],
            web_app_zip("hello from v1"),
            "site.zip",
        )
        .await;
    assert_eq!(resp.status(), 303);
    let deploy = deploy_id(&location(&resp));
    let page = app.wait_deploy(deploy).await;
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    assert!(
        page.contains(&format!("Building milkcrate-{}-hello_app:", app.instance)),
        "the build log is kept with the deploy: {page}"
    );
    assert!(
        page.contains(": FROM milkcrate-test/busybox:2") && page.contains("Step 1/"),
        "the engine's own build output is shown: {page}"
    );

    let c = inspect_app(&app.instance, "hello_app");
    let host = &c["HostConfig"];
    assert_eq!(host["Memory"], 512 * 1024 * 1024, "512 MiB");
    assert_eq!(host["MemorySwap"], 512 * 1024 * 1024, "no extra swap");
    assert_eq!(
        (host["CpuQuota"].as_i64(), host["CpuPeriod"].as_i64()),
        (Some(50_000), Some(100_000)),
        "half a core"
    );
    assert_eq!(host["PidsLimit"], 100);
    assert_eq!(host["CapDrop"], serde_json::json!(["ALL"]));
    assert_eq!(host["CapAdd"], serde_json::json!(["NET_BIND_SERVICE"]));
    assert_eq!(
        host["SecurityOpt"],
        serde_json::json!(["no-new-privileges:true"]),
        "and no apparmor:unconfined"
    );
    assert_eq!(c["Config"]["User"], "65534:65534");
    assert_eq!(
        host["Tmpfs"]["/tmp"],
        "rw,noexec,nosuid,nodev,size=100m,mode=1777,uid=65534,gid=65534"
    );
    assert_eq!(host["LogConfig"]["Type"], "json-file");
    assert_eq!(
        host["LogConfig"]["Config"],
        serde_json::json!({"max-size": "10m", "max-file": "3"})
    );
    assert_eq!(host["RestartPolicy"]["Name"], "unless-stopped");
    assert_eq!(host["NetworkMode"], NETWORK);
    assert!(
        host["PortBindings"]
            .as_object()
            .is_none_or(|p| p.is_empty()),
        "no published ports: {}",
        host["PortBindings"]
    );
    assert_eq!(
        c["NetworkSettings"]["Networks"].as_object().unwrap().len(),
        1,
        "only the milkcrate network"
    );
    let labels = &c["Config"]["Labels"];
    assert_eq!(labels["milkcrate.managed"], "true");
    assert_eq!(labels["milkcrate.app"], "hello_app");
    assert_eq!(
        labels["traefik.http.routers.milkcrate-app-hello-app.rule"],
        "Path(`/hello`) || PathPrefix(`/hello/`)"
    );
    assert_eq!(
        labels["traefik.http.services.milkcrate-app-hello-app.loadbalancer.server.port"], "8080",
        "port from EXPOSE"
    );
    assert!(
        c["Config"]["Image"]
            .as_str()
            .unwrap()
            .starts_with(&format!("milkcrate-{}-hello_app:", app.instance))
    );

    assert_eq!(fetch_from_container(&c, "/").await, "hello from v1");

    // The dashboard lists it with its route and a running state, from the engine's own report.
    let dashboard = app.get_html("/admin").await;
    assert!(
        dashboard.contains("hello_app") && dashboard.contains("href=\"/hello\""),
        "{dashboard}"
    );
    let rows = wait_for(&app, "/admin/apps/rows", "Running").await;
    assert!(rows.contains("8080"));
    let audit = app.audit_lines();
    assert!(audit.iter().any(|l| l["action"] == "deploy"
        && l["resource_id"] == "hello_app"
        && l["success"] == true));
}

async fn wait_for(app: &EngineApp, path: &str, text: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let page = app.get_html(path).await;
        if page.contains(text) {
            return page;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path} never showed {text:?}:\n{page}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_broken_update_leaves_the_old_version_serving_and_rollback_returns_to_it() {
    let app = spawn_engine_app().await;
    let (id, _) = app.deploy("shop", "/shop", web_app_zip("shop v1")).await;
    let v1 = inspect_app(&app.instance, "shop");

    // A Dockerfile that cannot build.
    let broken = zip_of(&[(
        "Dockerfile",
        format!("FROM {BASE_IMAGE}\nRUN /bin/false\n").as_bytes(),
        0o644,
    )]);
    let resp = app.update(id, broken).await;
    let page = app.wait_deploy(deploy_id(&location(&resp))).await;
    assert!(
        page.contains("data-status=\"failed\"") && page.contains("Image build failed"),
        "{page}"
    );
    let still = inspect_app(&app.instance, "shop");
    assert_eq!(still["Id"], v1["Id"], "the old container was not touched");
    assert_eq!(fetch_from_container(&still, "/").await, "shop v1");

    // An image that builds but whose container dies at once.
    let crashing = zip_of(&[(
        "Dockerfile",
        format!("FROM {BASE_IMAGE}\nCMD [\"/bin/false\"]\n").as_bytes(),
        0o644,
    )]);
    let resp = app.update(id, crashing).await;
    let page = app.wait_deploy(deploy_id(&location(&resp))).await;
    assert!(
        page.contains("data-status=\"failed\"") && page.contains("stopped right after starting"),
        "{page}"
    );
    assert_eq!(
        fetch_from_container(&inspect_app(&app.instance, "shop"), "/").await,
        "shop v1"
    );

    // A good update replaces it; rollback returns to v1.
    let resp = app.update(id, web_app_zip("shop v2")).await;
    let page = app.wait_deploy(deploy_id(&location(&resp))).await;
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    let v2 = inspect_app(&app.instance, "shop");
    assert_ne!(v2["Id"], v1["Id"]);
    assert_eq!(fetch_from_container(&v2, "/").await, "shop v2");
    assert!(
        app.get_html(&format!("/admin/apps/{id}"))
            .await
            .contains("Roll back")
    );

    let resp = app
        .post_action(
            &format!("/admin/apps/{id}"),
            &format!("/admin/apps/{id}/rollback"),
        )
        .await;
    let page = app.wait_deploy(deploy_id(&location(&resp))).await;
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    let back = inspect_app(&app.instance, "shop");
    assert_eq!(
        back["Config"]["Image"], v1["Config"]["Image"],
        "the previous image runs again"
    );
    assert_eq!(fetch_from_container(&back, "/").await, "shop v1");
    let actions: Vec<String> = app
        .audit_lines()
        .iter()
        .map(|l| format!("{}:{}", l["action"], l["success"]))
        .collect();
    assert!(
        actions.contains(&"\"update\":false".to_string())
            && actions.contains(&"\"rollback\":true".to_string()),
        "{actions:?}"
    );
}

#[tokio::test]
async fn delete_removes_everything_of_that_app_and_nothing_else() {
    let app = spawn_engine_app().await;
    let (keep_id, _) = app
        .deploy("keeper", "/keeper", web_app_zip("keep me"))
        .await;
    let (id, _) = app.deploy("doomed", "/doomed", web_app_zip("bye")).await;
    let (_, _) = (keep_id, id);
    app.post_form(
        "/admin/settings",
        "/admin/settings/default-route",
        &[("default_route", "/doomed")],
    )
    .await;

    let resp = app
        .post_action("/admin", &format!("/admin/apps/{id}/delete"))
        .await;
    assert_eq!(location(&resp), "/admin");
    let page = app.get_html("/admin").await;
    assert!(
        page.contains("Application doomed deleted") && page.contains("home route pointed to it"),
        "{page}"
    );
    assert_eq!(
        labelled_leftovers(&app.instance, "doomed"),
        (String::new(), String::new()),
        "no container or image left"
    );
    assert!(
        !app.data_dir.join("apps/doomed").exists(),
        "sources removed"
    );
    assert_eq!(
        location(&app.second_browser().get("/").await),
        "",
        "home route reset"
    );
    assert_eq!(
        fetch_from_container(&inspect_app(&app.instance, "keeper"), "/").await,
        "keep me",
        "the other app untouched"
    );
    assert_eq!(app.get(&format!("/admin/apps/{id}")).await.status(), 404);
}

#[tokio::test]
async fn stop_and_start_change_what_the_engine_runs() {
    let app = spawn_engine_app().await;
    let (id, _) = app.deploy("switch", "/switch", web_app_zip("on")).await;
    let c = inspect_app(&app.instance, "switch");
    app.post_action("/admin", &format!("/admin/apps/{id}/stop"))
        .await;
    let state = docker(&[
        "inspect",
        "-f",
        "{{.State.Running}}",
        c["Id"].as_str().unwrap(),
    ]);
    assert_eq!(state.trim(), "false");
    assert!(
        app.get_html("/admin")
            .await
            .contains("Application switch stopped")
    );
    wait_for(&app, "/admin/apps/rows", "Stopped").await;
    // The original's toggle URL starts it again.
    app.post_action("/admin", &format!("/admin/toggle_status/{id}"))
        .await;
    let state = docker(&[
        "inspect",
        "-f",
        "{{.State.Running}}",
        c["Id"].as_str().unwrap(),
    ]);
    assert_eq!(state.trim(), "true");
    wait_for(&app, "/admin/apps/rows", "Running").await;
    let logs = app.get_html(&format!("/admin/apps/{id}/logs")).await;
    assert!(logs.contains("Logs of switch"), "{logs}");
}

#[tokio::test]
async fn environment_variables_reach_the_container_and_are_encrypted_at_rest() {
    let app = spawn_engine_app().await;
    let cgi =
        b"#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"token=$API_TOKEN mode=$MODE\"\n";
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nCOPY www /www\nEXPOSE 8080\nCMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    );
    let zip = zip_of(&[
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("www/index.html", b"x", 0o644),
        ("www/cgi-bin/env", cgi, 0o755),
    ]);
    let resp = app
        .upload(
            &[
                ("app_name", "envy"),
                ("public_route", "/envy"),
                ("env", "API_TOKEN=s3cr3t-value\nMODE=prod"),
            ],
            zip,
            "envy.zip",
        )
        .await;
    let page = app.wait_deploy(deploy_id(&location(&resp))).await;
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    let id = app_id_from(&page);
    let c = inspect_app(&app.instance, "envy");
    assert_eq!(
        fetch_from_container(&c, "/cgi-bin/env").await.trim(),
        "token=s3cr3t-value mode=prod",
        "the CGI script kept its mode and sees the variables"
    );
    let db = std::fs::read(app.data_dir.join("milkcrate.sqlite")).unwrap();
    let wal = std::fs::read(app.data_dir.join("milkcrate.sqlite-wal")).unwrap_or_default();
    assert!(
        !db.windows(12).any(|w| w == b"s3cr3t-value")
            && !wal.windows(12).any(|w| w == b"s3cr3t-value"),
        "no plaintext in the database"
    );
    let app_page = app.get_html(&format!("/admin/apps/{id}")).await;
    assert!(
        app_page.contains("API_TOKEN=(unchanged)") && !app_page.contains("s3cr3t"),
        "values are masked"
    );

    // Edit one, keep the other: the app is redeployed with both.
    let resp = app
        .post_form(
            &format!("/admin/apps/{id}"),
            &format!("/admin/apps/{id}/env"),
            &[("env", "API_TOKEN=(unchanged)\nMODE=test")],
        )
        .await;
    let page = app.wait_deploy(deploy_id(&location(&resp))).await;
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    let c = inspect_app(&app.instance, "envy");
    assert_eq!(
        fetch_from_container(&c, "/cgi-bin/env").await.trim(),
        "token=s3cr3t-value mode=test"
    );
}

#[tokio::test]
async fn a_first_deploy_that_fails_leaves_nothing_behind() {
    let app = spawn_engine_app().await;
    let zip = zip_of(&[(
        "Dockerfile",
        format!("FROM {BASE_IMAGE}\nRUN exit 3\n").as_bytes(),
        0o644,
    )]);
    let resp = app
        .upload(
            &[("app_name", "fails"), ("public_route", "/fails")],
            zip,
            "f.zip",
        )
        .await;
    let page = app.wait_deploy(deploy_id(&location(&resp))).await;
    assert!(
        page.contains("data-status=\"failed\"") && page.contains("Image build failed"),
        "{page}"
    );
    assert!(
        page.contains("returned a non-zero code: 3"),
        "the failed step is shown: {page}"
    );
    assert_eq!(
        labelled_leftovers(&app.instance, "fails"),
        (String::new(), String::new())
    );
    assert!(
        !app.get_html("/admin").await.contains("/admin/apps/"),
        "no app row"
    );
    assert!(!app.data_dir.join("apps/fails").exists());
    assert_eq!(
        std::fs::read_dir(app.data_dir.join("uploads"))
            .unwrap()
            .count(),
        0,
        "no upload left"
    );
    // The name is free again.
    app.deploy("fails", "/fails", web_app_zip("now fine")).await;
}

/// Each refusal re-renders the form with the reason and the user's input, and leaves no file,
/// row, image or container.
async fn assert_refusals(app: &EngineApp, cases: Vec<(&str, &str, Vec<u8>, &str, &str)>) {
    let count = cases.len();
    let before = app
        .audit_lines()
        .iter()
        .filter(|l| l["action"] == "deploy" && l["success"] == false)
        .count();
    for (name, route, zip, file, reason) in cases {
        let resp = app
            .upload(&[("app_name", name), ("public_route", route)], zip, file)
            .await;
        assert_eq!(resp.status(), 400, "{name}");
        let body = unescape(&resp.text().await.unwrap());
        let shown = body
            .find("upload-error")
            .map(|i| &body[i..(i + 300).min(body.len())])
            .unwrap_or("no error shown");
        assert!(
            body.contains(reason),
            "{name}: expected {reason:?} in the page: {shown}"
        );
        assert!(
            body.contains(&format!("value=\"{name}\"")),
            "{name}: the form keeps the input"
        );
        assert_eq!(
            std::fs::read_dir(app.data_dir.join("uploads"))
                .unwrap()
                .count(),
            0,
            "{name}: no upload file left"
        );
    }
    let after = app
        .audit_lines()
        .iter()
        .filter(|l| l["action"] == "deploy" && l["success"] == false)
        .count();
    assert_eq!(after - before, count, "every refusal is audited");
}

fn only_one_app_left(app: &EngineApp, expected_apps: usize) {
    let containers = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=milkcrate.instance={}", app.instance),
    ]);
    let images = docker(&[
        "images",
        "-q",
        "--filter",
        &format!("label=milkcrate.instance={}", app.instance),
    ]);
    assert_eq!(
        containers.split_whitespace().count(),
        expected_apps,
        "no other container: {containers:?}"
    );
    assert_eq!(
        images.split_whitespace().count(),
        expected_apps,
        "no other image: {images:?}"
    );
}

#[tokio::test]
async fn zip_attacks_are_refused_by_entry_and_leave_nothing() {
    let app = spawn_engine_app().await;
    let zeros = vec![0u8; 30 * 1024 * 1024];
    let many: Vec<(String, Vec<u8>)> = (0..20_000)
        .map(|i| (format!("f/{i}"), Vec::new()))
        .collect();
    let mut many_entries: Vec<(&str, &[u8], u32)> = many
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice(), 0o644))
        .collect();
    many_entries.push(("Dockerfile", b"FROM scratch", 0o644));
    let symlink_zip = {
        let mut cursor = std::io::Cursor::new(Vec::new());
        let mut w = zip::ZipWriter::new(&mut cursor);
        w.start_file("Dockerfile", zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut w, b"FROM scratch").unwrap();
        w.add_symlink(
            "etc-passwd",
            "/etc/passwd",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        w.finish().unwrap();
        cursor.into_inner()
    };
    assert_refusals(
        &app,
        vec![
            (
                "slip",
                "/slip",
                zip_of(&[
                    ("Dockerfile", b"FROM scratch", 0o644),
                    ("../../evil.sh", b"x", 0o755),
                ]),
                "a.zip",
                "'../../evil.sh' climbs out",
            ),
            (
                "symlink",
                "/link",
                symlink_zip,
                "a.zip",
                "'etc-passwd' is a symbolic link",
            ),
            (
                "bomb",
                "/bomb",
                zip_of(&[
                    ("Dockerfile", b"FROM scratch", 0o644),
                    ("zeros", &zeros, 0o644),
                ]),
                "a.zip",
                "'zeros' expands far beyond",
            ),
            (
                "flood",
                "/flood",
                zip_of(&many_entries),
                "a.zip",
                "20001 entries; at most 10000",
            ),
            (
                "nobuild",
                "/nobuild",
                zip_of(&[("README", b"x", 0o644)]),
                "a.zip",
                "Must contain either a Dockerfile",
            ),
            (
                "notzip",
                "/notzip",
                b"plain text".to_vec(),
                "a.zip",
                "not a valid ZIP",
            ),
            (
                "wrongext",
                "/wrongext",
                web_app_zip("x"),
                "a.tar",
                "is not a ZIP file",
            ),
        ],
    )
    .await;
    only_one_app_left(&app, 0);
    assert!(
        !app.get_html("/admin").await.contains("data-app="),
        "no app row"
    );
}

#[tokio::test]
async fn names_and_routes_are_checked_like_the_original_and_more() {
    let app = spawn_engine_app().await;
    app.deploy("taken-app", "/taken", web_app_zip("first"))
        .await;
    let good = || web_app_zip("x");
    assert_refusals(
        &app,
        vec![
            (
                "reserved",
                "/admin",
                good(),
                "a.zip",
                "conflicts with reserved path '/admin'",
            ),
            (
                "inside",
                "/static/x",
                good(),
                "a.zip",
                "conflicts with reserved path '/static'",
            ),
            (
                "slash",
                "/",
                good(),
                "a.zip",
                "would cover milkcrate's own pages",
            ),
            (
                "TAKEN_APP",
                "/other",
                good(),
                "a.zip",
                "An application named 'taken-app' already exists",
            ),
            (
                "Taken-App",
                "/other",
                good(),
                "a.zip",
                "An application named 'taken-app' already exists",
            ),
            (
                "other",
                "/taken",
                good(),
                "a.zip",
                "Route '/taken' is already in use by taken-app",
            ),
            (
                "bad name!",
                "/x",
                good(),
                "a.zip",
                "can only contain letters",
            ),
            (
                "admin",
                "/y",
                good(),
                "a.zip",
                "'admin' is a reserved application name",
            ),
        ],
    )
    .await;
    only_one_app_left(&app, 1);
    assert_eq!(
        app.get_html("/admin").await.matches("data-app=").count(),
        1,
        "only the first app exists"
    );
}

#[tokio::test]
async fn a_vanished_container_shows_missing_and_can_be_redeployed() {
    let app = spawn_engine_app().await;
    let (id, _) = app
        .deploy("ghosted", "/ghosted", web_app_zip("back again"))
        .await;
    let c = inspect_app(&app.instance, "ghosted");
    docker(&["rm", "-f", c["Id"].as_str().unwrap()]);
    let rows = wait_for(&app, "/admin/apps/rows", "Missing").await;
    assert!(
        rows.contains("/admin/apps/") && rows.contains("redeploy"),
        "{rows}"
    );
    let resp = app
        .post_action("/admin", &format!("/admin/apps/{id}/redeploy"))
        .await;
    let page = app.wait_deploy(deploy_id(&location(&resp))).await;
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    assert_eq!(
        fetch_from_container(&inspect_app(&app.instance, "ghosted"), "/").await,
        "back again"
    );
}

#[tokio::test]
async fn health_comes_from_the_image_healthcheck_or_a_probe_of_the_health_path() {
    let app = spawn_engine_app().await;
    let with_check = format!(
        "FROM {BASE_IMAGE}\nCOPY www /www\nEXPOSE 8080\nHEALTHCHECK --interval=1s --timeout=2s CMD wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1\nCMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    );
    let zip = zip_of(&[
        ("Dockerfile", with_check.as_bytes(), 0o644),
        ("www/index.html", b"ok", 0o644),
    ]);
    let resp = app
        .upload(
            &[("app_name", "checked"), ("public_route", "/checked")],
            zip,
            "c.zip",
        )
        .await;
    let page = app.wait_deploy(deploy_id(&location(&resp))).await;
    assert!(
        page.contains("data-status=\"succeeded\"")
            && page.contains("Waiting for the HEALTHCHECK to pass"),
        "the deploy waited for health: {page}"
    );

    let resp = app
        .upload(
            &[
                ("app_name", "probed"),
                ("public_route", "/probed"),
                ("health_path", "/nope"),
            ],
            web_app_zip("x"),
            "p.zip",
        )
        .await;
    let page = app.wait_deploy(deploy_id(&location(&resp))).await;
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let rows = unescape(&app.get_html("/admin/apps/rows").await);
        let checked = rows
            .split("<tr")
            .find(|r| r.contains("data-app=\"checked\""))
            .unwrap_or("")
            .to_string();
        let probed = rows
            .split("<tr")
            .find(|r| r.contains("data-app=\"probed\""))
            .unwrap_or("")
            .to_string();
        if checked.contains("Healthy")
            && probed.contains("Unhealthy")
            && probed.contains("health check answered 404")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "checked: {checked}\nprobed: {probed}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

/// Runs `sh -c script` inside container `id` as the container's own user (65534) and returns
/// (exit code, output).
fn exec_in(id: &str, script: &str) -> (i32, String) {
    let out = std::process::Command::new("docker")
        .args(["exec", id, "sh", "-c", script])
        .output()
        .expect("the docker CLI runs");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn the_app_user_can_write_tmp_but_cannot_run_programs_from_it() {
    let app = spawn_engine_app().await;
    app.deploy("tmpwriter", "/tmpwriter", web_app_zip("hi"))
        .await;
    let c = inspect_app(&app.instance, "tmpwriter");
    let id = c["Id"].as_str().unwrap();
    // /tmp used to be a root-owned 0755 tmpfs: the promised scratch space was read-only to
    // the app's user.
    let (code, out) = exec_in(
        id,
        "id -u; echo scratch > /tmp/note && cat /tmp/note && ls -ld /tmp",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("65534\nscratch\n"), "{out}");
    assert!(
        out.contains(" 65534    65534 "),
        "owned by the app's user: {out}"
    );
    // Still noexec: a copied program cannot run from there.
    let (code, out) = exec_in(
        id,
        "cp /bin/busybox /tmp/bb && chmod 755 /tmp/bb && /tmp/bb true",
    );
    assert_ne!(code, 0, "a program on /tmp must not run: {out}");
    assert!(out.contains("ermission denied"), "{out}");
}

#[tokio::test]
async fn a_build_step_over_the_build_memory_limit_fails_with_a_clear_message() {
    let app = spawn_engine_app_with(|s| {
        s.build_limits = milkcrate::domain::hardening::Limits {
            memory_mb: 64,
            cpu_percent: 100,
        };
    })
    .await;
    // The shell keeps the whole 200 MB of output in memory: far over 64 MiB (no swap either).
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nRUN x=$(/bin/busybox yes | /bin/busybox head -c 200000000); echo ${{#x}}\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\"]\n"
    );
    let zip = zip_of(&[("Dockerfile", dockerfile.as_bytes(), 0o644)]);
    let resp = app
        .upload(
            &[("app_name", "hog"), ("public_route", "/hog")],
            zip,
            "hog.zip",
        )
        .await;
    assert_eq!(resp.status(), 303);
    let page = unescape(&app.wait_deploy(deploy_id(&location(&resp))).await);
    assert!(page.contains("data-status=\"failed\""), "{page}");
    assert!(
        page.contains("returned a non-zero code: 137")
            && page.contains("more than the 64 MiB of memory a build step may use"),
        "{page}"
    );
    let (containers, images) = labelled_leftovers(&app.instance, "hog");
    assert_eq!((containers.trim(), images.trim()), ("", ""));
}

#[tokio::test]
async fn a_fork_bomb_in_a_build_step_is_stopped_by_the_build_limits() {
    let app = spawn_engine_app().await;
    // Tens of thousands of processes: the build process limit (MILKCRATE_BUILD_PIDS, 1024 by
    // default) ends the step long before memory or the host's process table.
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nRUN i=0; while [ $i -lt 50000 ]; do sleep 300 & i=$((i+1)); done; echo spawned $i\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\"]\n"
    );
    let zip = zip_of(&[("Dockerfile", dockerfile.as_bytes(), 0o644)]);
    let page = app.deploy_failing("forks", "/forks", zip).await;
    assert!(
        page.contains("The step could not start more processes: build steps may run at most 1024 processes together"),
        "{page}"
    );
    assert!(!page.contains("spawned 50000"), "{page}");
    let (containers, images) = labelled_leftovers(&app.instance, "forks");
    assert_eq!((containers.trim(), images.trim()), ("", ""));
}

#[tokio::test]
async fn a_build_step_that_forks_past_the_process_limit_fails_and_the_old_version_keeps_serving() {
    // A limit of 100 (MILKCRATE_BUILD_PIDS) for all builds together.
    let limit = 100;
    let app = spawn_engine_app_with(|s| s.build_pids = limit).await;
    // The positive control: a step with a few processes builds.
    let v1 = format!(
        "FROM {BASE_IMAGE}\nRUN sleep 1 & sleep 1 & sleep 1 & wait; echo a few processes ran\nCOPY www /www\nEXPOSE 8080\nCMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    );
    let (id, deploy) = app
        .deploy(
            "pids",
            "/pids",
            zip_of(&[
                ("Dockerfile", v1.as_bytes(), 0o644),
                ("www/index.html", b"pids v1", 0o644),
            ]),
        )
        .await;
    let page = unescape(&app.get_html(&format!("/admin/deploys/{deploy}")).await);
    assert!(page.contains("a few processes ran"), "{page}");
    assert_eq!(
        wait_status(&app, "/pids/", 200).await.text().await.unwrap(),
        "pids v1"
    );
    let old = inspect_app(&app.instance, "pids");

    // An update whose step starts 50 more processes than the limit.
    let bomb = format!(
        "FROM {BASE_IMAGE}\nRUN i=0; while [ $i -lt {} ]; do sleep 30 & i=$((i+1)); done; echo spawned $i\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\"]\n",
        limit + 50
    );
    let resp = app
        .update(id, zip_of(&[("Dockerfile", bomb.as_bytes(), 0o644)]))
        .await;
    let page = unescape(&app.wait_deploy(deploy_id(&location(&resp))).await);
    assert!(page.contains("data-status=\"failed\""), "{page}");
    assert!(
        page.contains(&format!(
            "The step could not start more processes: build steps may run at most {limit} processes together"
        )),
        "{page}"
    );
    assert!(!page.contains(&format!("spawned {}", limit + 50)), "{page}");
    // The old version keeps serving, untouched.
    assert_eq!(inspect_app(&app.instance, "pids")["Id"], old["Id"]);
    assert_eq!(app.get("/pids/").await.text().await.unwrap(), "pids v1");
    // Nothing is left behind: no build container, no image but v1's, no process.
    let (containers, images) = labelled_leftovers(&app.instance, "pids");
    assert_eq!(containers.split_whitespace().count(), 1, "{containers}");
    assert_eq!(images.split_whitespace().count(), 1, "{images}");
    let pids = build_cgroups(&app.instance)
        .into_iter()
        .map(|d| d.join("pids.current"))
        .find(|f| f.exists())
        .expect("the build's parent cgroup carries a pids limit");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while std::fs::read_to_string(&pids).unwrap().trim() != "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "processes of the failed build still run"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        std::fs::read_to_string(pids.with_file_name("pids.max"))
            .unwrap()
            .trim(),
        limit.to_string()
    );
}

/// A TCP server on every host address that answers any request with `reached`.
fn host_listener() -> u16 {
    let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            use std::io::{Read, Write};
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 7\r\n\r\nreached");
        }
    });
    port
}

#[tokio::test]
async fn build_steps_get_the_network_only_when_they_may_need_it() {
    let port = host_listener();
    let gw = default_bridge_gateway();
    let fetch = format!(
        "FROM {BASE_IMAGE}\nRUN wget -q -O /reached http://{gw}:{port}/ && cat /reached\nCMD [\"httpd\", \"-f\", \"-p\", \"8000\"]\n"
    );
    // auto (the default): a RUN step may download, so it gets the network.
    let app = spawn_engine_app().await;
    let (_, deploy) = app
        .deploy(
            "fetches",
            "/fetches",
            zip_of(&[("Dockerfile", fetch.as_bytes(), 0o644)]),
        )
        .await;
    let page = app.wait_deploy(deploy).await;
    assert!(
        page.contains("reached"),
        "the RUN step reached the server: {page}"
    );
    // A Dockerfile that only copies files builds with no network at all.
    let copy_only = format!(
        "FROM {BASE_IMAGE}\nCOPY index.html /www/index.html\nCMD [\"httpd\", \"-f\", \"-p\", \"8000\", \"-h\", \"/www\"]\n"
    );
    let (_, deploy) = app
        .deploy(
            "copies",
            "/copies",
            zip_of(&[
                ("Dockerfile", copy_only.as_bytes(), 0o644),
                ("index.html", b"hi", 0o644),
            ]),
        )
        .await;
    let page = unescape(&app.wait_deploy(deploy).await);
    assert!(
        page.contains("Build steps run without network (no step needs it)"),
        "{page}"
    );

    // MILKCRATE_BUILD_NETWORK=none: the same RUN step cannot reach it, and the error says why.
    // (Another command than above: the engine's build cache would reuse that step's layer.)
    let fetch = fetch.replace("cat /reached", "cat /reached /reached");
    let closed = spawn_engine_app_with(|s| s.build_network_off = true).await;
    let page = closed
        .deploy_failing(
            "fetches",
            "/fetches",
            zip_of(&[("Dockerfile", fetch.as_bytes(), 0o644)]),
        )
        .await;
    assert!(
        page.contains("build steps have no network on this server: MILKCRATE_BUILD_NETWORK=none"),
        "{page}"
    );
    assert!(!page.contains("\nreached"), "{page}");
    let (containers, images) = labelled_leftovers(&closed.instance, "fetches");
    assert_eq!((containers.trim(), images.trim()), ("", ""));
}

#[tokio::test]
async fn a_build_cannot_start_from_or_copy_out_of_another_apps_image() {
    let app = spawn_engine_app().await;
    app.deploy("victim", "/victim", web_app_zip("victim's secret"))
        .await;
    let victim = inspect_app(&app.instance, "victim");
    let image = victim["Config"]["Image"].as_str().unwrap().to_string();
    let id = victim["Image"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let copy = format!("127.0.0.1:5999/copy-{}:1", rand_suffix());
    docker(&["tag", &image, &copy]);
    for (n, (dockerfile, expected)) in [
        (
            format!("FROM {image}\n"),
            "is one of milkcrate's own images",
        ),
        (
            format!("ARG B={image}\nFROM $B\n"),
            "is one of milkcrate's own images",
        ),
        (
            format!("FROM {BASE_IMAGE}\nCOPY --from={image} /www /loot\n"),
            "is one of milkcrate's own images",
        ),
        // The engine also looks a name up as an id prefix.
        (
            format!("FROM {}\n", &id[..6]),
            "matched it to another image by its id",
        ),
        (format!("FROM sha256:{id}\n"), "by id or digest"),
        // An escape directive in capitals: the engine continues lines with `, so the line
        // after `RUN true \` is a real FROM (the check reads every way an engine may).
        (
            format!("# ESCAPE=`\nFROM {BASE_IMAGE}\nRUN true \\\nFROM {image}\n"),
            "is one of milkcrate's own images",
        ),
        // Behind a byte-order mark.
        (
            format!("\u{feff}FROM {image}\n"),
            "is one of milkcrate's own images",
        ),
        // Under another name (a registry's copy, as swarm mode pushes): its labels tell.
        (
            format!("FROM {copy}\n"),
            "was made by milkcrate (it carries the label milkcrate.",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("thief{n}");
        let zip = zip_of(&[("Dockerfile", dockerfile.as_bytes(), 0o644)]);
        let resp = app
            .upload(
                &[("app_name", &name), ("public_route", &format!("/{name}"))],
                zip,
                "thief.zip",
            )
            .await;
        assert_eq!(resp.status(), 303);
        let page = unescape(&app.wait_deploy(deploy_id(&location(&resp))).await);
        assert!(
            page.contains("data-status=\"failed\"") && page.contains(expected),
            "{dockerfile}: {page}"
        );
        let (containers, images) = labelled_leftovers(&app.instance, &name);
        assert_eq!((containers.trim(), images.trim()), ("", ""), "{dockerfile}");
    }
    docker(&["rmi", &copy]);
}
