//! Compose stacks against the real engine: two services that reach each other by name, each
//! hardened, served at the app's route; the safety gate; an update with a broken service that
//! leaves the old stack serving; stop/start of the whole stack; delete leaving nothing.

use crate::docker_env::*;
use crate::helpers::*;

fn compose_yml(api_command: &str) -> String {
    format!(
        r#"services:
  web:
    build: ./web
    ports: ["8080"]
    depends_on:
      api:
        condition: service_healthy
    labels:
      milkcrate.main_service: true
    stop_grace_period: 1s
  api:
    build:
      context: ./api
    expose: ["9000"]
    command: {api_command}
    volumes: ["notes:/data"]
    stop_grace_period: 1s
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9000/"]
      interval: 1s
      retries: 30
volumes:
  notes:
x-comment: extensions are fine
"#
    )
}

const GOOD_API: &str =
    r#"["sh", "-c", "echo seeded > /data/seed.txt && exec httpd -f -p 9000 -h /www"]"#;

/// A stack whose main service (`web`) answers `/cgi-bin/fetch` with what `api` serves.
fn stack_zip(api_body: &str, api_command: &str) -> Vec<u8> {
    let web_df = format!(
        "FROM {BASE_IMAGE}\nCOPY www /www\nEXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    );
    let api_df = format!("FROM {BASE_IMAGE}\nCOPY www /www\nCOPY --chown=65534:65534 data /data\n");
    let fetch = "#!/bin/sh\necho 'Content-Type: text/plain'\necho\nwget -q -O- http://api:9000/index.html\n";
    let yml = compose_yml(api_command);
    zip_of(&[
        ("docker-compose.yml", yml.as_bytes(), 0o644),
        ("web/Dockerfile", web_df.as_bytes(), 0o644),
        ("web/www/index.html", b"web front", 0o644),
        ("web/www/cgi-bin/fetch", fetch.as_bytes(), 0o755),
        ("api/Dockerfile", api_df.as_bytes(), 0o644),
        ("api/www/index.html", api_body.as_bytes(), 0o644),
        ("api/data/.keep", b"", 0o644),
    ])
}

/// Containers of app `name` in this instance, by compose service.
fn service_containers(instance: &str, name: &str) -> Vec<serde_json::Value> {
    let ids = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=milkcrate.instance={instance}"),
        "--filter",
        &format!("label=milkcrate.app={name}"),
    ]);
    ids.split_whitespace()
        .map(|id| {
            serde_json::from_str::<serde_json::Value>(&docker(&["inspect", id])).unwrap()[0].clone()
        })
        .collect()
}

fn by_service<'a>(list: &'a [serde_json::Value], service: &str) -> &'a serde_json::Value {
    list.iter()
        .find(|c| c["Config"]["Labels"]["com.docker.compose.service"] == service)
        .unwrap_or_else(|| panic!("a container for {service}"))
}

async fn fetch_route(app: &EngineApp, path: &str) -> (u16, String) {
    let resp = app.get(path).await;
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn a_two_service_stack_runs_hardened_and_its_services_reach_each_other() {
    let app = spawn_engine_app().await;
    let (app_id, deploy) = app
        .deploy("stack", "/stack", stack_zip("hello from api v1", GOOD_API))
        .await;
    let log = unescape(&app.get_html(&format!("/admin/deploys/{deploy}")).await);
    assert!(
        log.contains("[api] Building") && log.contains("[web] Building"),
        "{log}"
    );
    assert!(
        log.contains("Stack from docker-compose.yml: api, web (main service web, port 8080)"),
        "{log}"
    );
    assert!(
        log.contains("[api] Waiting for it to be healthy"),
        "web waits for api: {log}"
    );

    // The page of the main service shows what it fetched from the other by service name.
    let (status, body) = fetch_route(&app, "/stack/cgi-bin/fetch").await;
    if status != 200 {
        // Say which container answered: the web service's address on the router's network
        // against every container holding that address.
        let web = by_service(&service_containers(&app.instance, "stack"), "web").clone();
        let ip = web["NetworkSettings"]["Networks"][NETWORK]["IPAddress"].clone();
        let holders = docker(&["network", "inspect", NETWORK, "-f", "{{json .Containers}}"]);
        panic!("{status} {body}\nweb on {NETWORK}: {ip}\nholders: {holders}\nlog: {log}");
    }
    assert_eq!((status, body.trim()), (200, "hello from api v1"));

    // Every service is hardened like a Dockerfile app and labelled like compose would.
    let list = service_containers(&app.instance, "stack");
    assert_eq!(list.len(), 2, "one container per service");
    let key_net = &format!("milkcrate-{}-stack-net", app.instance);
    for c in &list {
        let host = &c["HostConfig"];
        let svc = c["Config"]["Labels"]["com.docker.compose.service"]
            .as_str()
            .unwrap();
        assert_eq!(host["Memory"], 512 * 1024 * 1024, "{svc}");
        assert_eq!(host["PidsLimit"], 100, "{svc}");
        assert_eq!(host["CapDrop"], serde_json::json!(["ALL"]), "{svc}");
        assert_eq!(
            host["CapAdd"],
            serde_json::json!(["NET_BIND_SERVICE"]),
            "{svc}"
        );
        assert_eq!(
            host["SecurityOpt"],
            serde_json::json!(["no-new-privileges:true"]),
            "{svc}"
        );
        assert_eq!(host["Privileged"], false, "{svc}");
        assert_eq!(c["Config"]["User"], "65534:65534", "{svc}");
        assert_eq!(
            host["Tmpfs"]["/tmp"], "rw,noexec,nosuid,nodev,size=100m,mode=1777,uid=65534,gid=65534",
            "{svc}"
        );
        assert_eq!(host["LogConfig"]["Config"]["max-size"], "10m", "{svc}");
        assert!(
            host["PortBindings"]
                .as_object()
                .is_none_or(|p| p.is_empty()),
            "{svc} publishes nothing"
        );
        assert_eq!(
            c["Config"]["Labels"]["com.docker.compose.project"],
            "milkcrate-stack"
        );
        assert!(
            c["NetworkSettings"]["Networks"][key_net].is_object(),
            "{svc} on the app's network"
        );
    }
    let web = by_service(&list, "web");
    let api = by_service(&list, "api");
    assert!(
        web["NetworkSettings"]["Networks"][NETWORK].is_object(),
        "the main service is reachable by the router"
    );
    assert!(
        api["NetworkSettings"]["Networks"][NETWORK].is_null(),
        "the others are not"
    );
    assert_eq!(
        api["Mounts"][0]["Name"],
        format!("milkcrate-{}-stack-notes", app.instance).as_str(),
        "stack volumes are named per app"
    );
    assert_eq!(web["Config"]["Labels"]["traefik.enable"], "true");
    assert!(
        api["Config"]["Labels"]["traefik.enable"].is_null(),
        "only the main service is routed"
    );

    // The dashboard shows each service under its app.
    let dash = unescape(&app.get_html("/admin/apps/rows").await);
    assert!(
        dash.contains("api: <span class=\"state-label\">healthy"),
        "{dash}"
    );
    assert!(
        dash.contains("web: <span class=\"state-label\">running"),
        "{dash}"
    );

    // `milkcrate status` lists the services too.
    let out = milkcrate_command()
        .args([
            "status",
            "--json",
            "--data-dir",
            app.data_dir.to_str().unwrap(),
        ])
        .env("MILKCRATE_INSTANCE", &app.instance)
        .env("TRAEFIK_NETWORK", NETWORK)
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        status[0]["services"],
        serde_json::json!({"api": "running", "web": "running"}),
        "{status}"
    );

    // Per-service logs.
    let logs = app
        .get_html(&format!("/admin/apps/{app_id}/logs?service=api"))
        .await;
    assert!(logs.contains("Logs of stack / api"), "{logs}");

    // A broken service in an update leaves the old stack serving.
    let resp = app
        .update(
            app_id,
            stack_zip(
                "hello from api v2",
                r#"["sh", "-c", "echo broken; exit 3"]"#,
            ),
        )
        .await;
    let page = unescape(&app.wait_deploy(deploy_id(&location(&resp))).await);
    assert!(page.contains("data-status=\"failed\""), "{page}");
    assert!(
        page.contains("service api stopped right after starting (exit code 3)"),
        "{page}"
    );
    let (status, body) = fetch_route(&app, "/stack/cgi-bin/fetch").await;
    assert_eq!(
        (status, body.trim()),
        (200, "hello from api v1"),
        "the old stack still answers"
    );
    assert_eq!(
        service_containers(&app.instance, "stack").len(),
        2,
        "the failed update's containers are gone"
    );

    // A good update replaces both services.
    let resp = app
        .update(app_id, stack_zip("hello from api v2", GOOD_API))
        .await;
    let page = app.wait_deploy(deploy_id(&location(&resp))).await;
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    let (_, body) = fetch_route(&app, "/stack/cgi-bin/fetch").await;
    assert_eq!(body.trim(), "hello from api v2");
    assert_eq!(
        service_containers(&app.instance, "stack").len(),
        2,
        "old containers removed"
    );

    // Rollback rebuilds the previous version's sources (from the build cache).
    let resp = app
        .post_action(
            &format!("/admin/apps/{app_id}"),
            &format!("/admin/apps/{app_id}/rollback"),
        )
        .await;
    let page = app.wait_deploy(deploy_id(&location(&resp))).await;
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    let (_, body) = fetch_route(&app, "/stack/cgi-bin/fetch").await;
    assert_eq!(body.trim(), "hello from api v1", "back to v1");

    // Stop and start act on the whole stack.
    app.post_action(
        &format!("/admin/apps/{app_id}"),
        &format!("/admin/apps/{app_id}/stop"),
    )
    .await;
    let states: Vec<bool> = service_containers(&app.instance, "stack")
        .iter()
        .map(|c| c["State"]["Running"].as_bool().unwrap())
        .collect();
    assert_eq!(states, vec![false, false]);
    app.post_action(
        &format!("/admin/apps/{app_id}"),
        &format!("/admin/apps/{app_id}/start"),
    )
    .await;
    let states: Vec<bool> = service_containers(&app.instance, "stack")
        .iter()
        .map(|c| c["State"]["Running"].as_bool().unwrap())
        .collect();
    assert_eq!(states, vec![true, true]);

    // Delete asks before deleting a stack volume that holds data, then leaves nothing.
    let resp = app
        .post_form(
            &format!("/admin/apps/{app_id}"),
            &format!("/admin/apps/{app_id}/delete"),
            &[],
        )
        .await;
    let page = unescape(&app.get_html(&location(&resp)).await);
    assert!(
        page.contains(&format!("milkcrate-{}-stack-notes hold data", app.instance)),
        "{page}"
    );
    let resp = app
        .post_form(
            &format!("/admin/apps/{app_id}"),
            &format!("/admin/apps/{app_id}/delete"),
            &[("delete_volumes", "1")],
        )
        .await;
    let page = unescape(&app.get_html(&location(&resp)).await);
    assert!(page.contains("1 stack volume(s) deleted"), "{page}");
    let (containers, images) = labelled_leftovers(&app.instance, "stack");
    assert_eq!((containers.trim(), images.trim()), ("", ""));
    let f1 = format!("label=milkcrate.instance={}", app.instance);
    let f2 = "label=milkcrate.app=stack";
    assert_eq!(
        docker(&["network", "ls", "-q", "--filter", &f1, "--filter", f2]).trim(),
        ""
    );
    assert_eq!(
        docker(&["volume", "ls", "-q", "--filter", &f1, "--filter", f2]).trim(),
        ""
    );
}

#[tokio::test]
async fn the_safety_gate_refuses_escapes_and_leaves_nothing_behind() {
    let app = spawn_engine_app().await;
    let cases = [
        ("privileged: true", "key 'privileged'"),
        ("network_mode: host", "key 'network_mode'"),
        (
            "volumes: [\"/var/run/docker.sock:/var/run/docker.sock\"]",
            "Docker socket",
        ),
        (
            "cap_add: [SYS_ADMIN]",
            "SYS_ADMIN (only NET_BIND_SERVICE may be added)",
        ),
        ("user: root", "is not a numeric user"),
        ("user: toor", "names are not accepted"),
        ("user: \"65534:00\"", "is root"),
        ("pid: host", "key 'pid'"),
        ("devices: [\"/dev/kmsg:/dev/kmsg\"]", "key 'devices'"),
    ];
    for (line, expected) in cases {
        let yml = format!(
            "services:\n  web:\n    image: {BASE_IMAGE}\n    ports: [\"8080\"]\n    {line}\n"
        );
        let zip = zip_of(&[("docker-compose.yml", yml.as_bytes(), 0o644)]);
        let resp = app
            .upload(
                &[("app_name", "escape"), ("public_route", "/escape")],
                zip,
                "escape.zip",
            )
            .await;
        assert_eq!(resp.status(), 400, "{line}");
        let page = unescape(&resp.text().await.unwrap());
        assert!(
            page.contains("Service 'web'") && page.contains(expected) && page.contains("(line 5)"),
            "{line}: {page}"
        );
    }
    let dash = app.get_html("/admin").await;
    assert!(!dash.contains("escape"), "no app row: {dash}");
    let (containers, images) = labelled_leftovers(&app.instance, "escape");
    assert_eq!((containers.trim(), images.trim()), ("", ""));
    let uploads = std::fs::read_dir(app.data_dir.join("uploads"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(uploads, 0, "refused ZIPs are deleted");
}

#[tokio::test]
async fn a_stack_volume_and_tmpfs_are_writable_by_the_services_user() {
    // The README's `notes:/data`, with an image that has no /data of its own: the volume used
    // to be created root-owned, so the service (65534) could not write it and never started.
    let app = spawn_engine_app().await;
    let yml = "services:\n  web:\n    build: .\n    ports: [\"8080\"]\n    volumes: [\"notes:/data\"]\n    tmpfs: /cache\n    stop_grace_period: 1s\nvolumes:\n  notes:\n";
    let df = format!(
        "FROM {BASE_IMAGE}\nCMD [\"sh\", \"-c\", \"mkdir -p /data/www && echo saved > /data/www/index.html && echo cached > /cache/c && cp /cache/c /data/www/cache.txt && id -u > /data/www/uid.txt && exec httpd -f -p 8080 -h /data/www\"]\n"
    );
    let zip = zip_of(&[
        ("docker-compose.yml", yml.as_bytes(), 0o644),
        ("Dockerfile", df.as_bytes(), 0o644),
    ]);
    app.deploy("notes", "/notes", zip).await;
    assert_eq!(fetch_route(&app, "/notes/").await, (200, "saved\n".into()));
    assert_eq!(
        fetch_route(&app, "/notes/cache.txt").await,
        (200, "cached\n".into())
    );
    assert_eq!(
        fetch_route(&app, "/notes/uid.txt").await,
        (200, "65534\n".into())
    );
    let list = service_containers(&app.instance, "notes");
    let web = by_service(&list, "web");
    assert_eq!(
        web["HostConfig"]["Tmpfs"]["/cache"],
        "rw,noexec,nosuid,nodev,size=100m,mode=1777,uid=65534,gid=65534"
    );
}

/// The Docker name of milkcrate volume `name` created by this test's install.
fn milkcrate_volume(instance: &str, name: &str) -> String {
    let out = docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("label=milkcrate.instance={instance}"),
        "--filter",
        &format!("label=milkcrate.volume_name={name}"),
    ]);
    out.trim().to_string()
}

#[tokio::test]
async fn a_stack_cannot_take_another_apps_image_or_an_unassigned_volume() {
    let app = spawn_engine_app().await;
    app.deploy("victim", "/victim", web_app_zip("victim's page"))
        .await;
    let victim = inspect_app(&app.instance, "victim");
    let victim_image = victim["Config"]["Image"].as_str().unwrap().to_string();
    let victim_id = victim["Image"].as_str().unwrap().to_string();
    assert!(
        victim_image.starts_with("milkcrate-") && victim_image.contains("victim:"),
        "{victim_image}"
    );
    let short_id = victim_id.trim_start_matches("sha256:")[..12].to_string();

    let try_stack = |yml: String, fields: Vec<(String, String)>| {
        let app = &app;
        async move {
            let zip = zip_of(&[("docker-compose.yml", yml.as_bytes(), 0o644)]);
            let mut all = vec![
                ("app_name".to_string(), "thief".to_string()),
                ("public_route".to_string(), "/thief".to_string()),
            ];
            all.extend(fields);
            let refs: Vec<(&str, &str)> =
                all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let resp = app.upload(&refs, zip, "thief.zip").await;
            let status = resp.status().as_u16();
            (status, unescape(&resp.text().await.unwrap()))
        }
    };
    let image_yml =
        |image: &str| format!("services:\n  web:\n    image: \"{image}\"\n    ports: [\"8080\"]\n");
    // The victim's image under an innocent name (as another install or an operator might have
    // tagged it); it goes with the victim's image when the test ends (same image id).
    let innocent = format!("innocent-{}:1", app.instance);
    docker(&["tag", &victim_image, &innocent]);
    for (image, expected) in [
        (victim_image.as_str(), "one of milkcrate's own images"),
        (
            &format!("docker.io/library/{victim_image}"),
            "one of milkcrate's own images",
        ),
        (victim_id.as_str(), "by id or digest"),
        ("milkcrate/volume-helper:1", "one of milkcrate's own images"),
        // Not milkcrate's name, but milkcrate's labels: refused by what the image is.
        (
            innocent.as_str(),
            "was made by milkcrate (it carries the label milkcrate.",
        ),
    ] {
        let (status, page) = try_stack(image_yml(image), vec![]).await;
        assert_eq!(status, 400, "{image}: {page}");
        assert!(page.contains(expected), "{image}: {page}");
    }

    // A short id is a name to the reference grammar: accepted at upload, then the deploy
    // looks for `<id>:latest` (never the image with that id prefix) in the registry and fails.
    let page = app
        .deploy_failing(
            "thief",
            "/thief",
            zip_of(&[("docker-compose.yml", image_yml(&short_id).as_bytes(), 0o644)]),
        )
        .await;
    assert!(
        page.contains(&format!("pulling {short_id}:latest failed")),
        "{page}"
    );
    let (containers, images) = labelled_leftovers(&app.instance, "thief");
    assert_eq!((containers.trim(), images.trim()), ("", ""));

    // A milkcrate volume the admin did not assign to this app is refused; assigned, it mounts.
    let resp = app
        .post_form(
            "/admin/volumes/create",
            "/admin/volumes/create",
            &[("volume_name", "private_data"), ("description", "")],
        )
        .await;
    assert_eq!(resp.status(), 303);
    let docker_name = milkcrate_volume(&app.instance, "private_data");
    assert!(
        docker_name.starts_with(&format!("milkcrate-{}-vol-", app.instance)),
        "{docker_name}"
    );
    let list: serde_json::Value = app
        .get("/admin/volumes/api/list")
        .await
        .json()
        .await
        .unwrap();
    let vol_id = list["volumes"][0]["volume_id"]
        .as_i64()
        .unwrap()
        .to_string();
    let df = format!(
        "FROM {BASE_IMAGE}\nCMD [\"sh\", \"-c\", \"echo stolen > /loot/x; exec httpd -f -p 8080 -h /loot\"]\n"
    );
    let volume_yml = format!(
        "services:\n  web:\n    build: .\n    ports: [\"8080\"]\n    volumes: [\"loot:/loot\"]\n    stop_grace_period: 1s\nvolumes:\n  loot:\n    external: true\n    name: {docker_name}\n"
    );
    let stack = |yml: &str| {
        zip_of(&[
            ("docker-compose.yml", yml.as_bytes(), 0o644),
            ("Dockerfile", df.as_bytes(), 0o644),
        ])
    };
    let resp = app
        .upload(
            &[("app_name", "thief"), ("public_route", "/thief")],
            stack(&volume_yml),
            "thief.zip",
        )
        .await;
    assert_eq!(resp.status(), 400);
    let page = unescape(&resp.text().await.unwrap());
    assert!(
        page.contains(&format!(
            "'{docker_name}', which the admin has not assigned to this app"
        )) && page.contains("(line 7)"),
        "{page}"
    );
    let dash = app.get_html("/admin").await;
    assert!(!dash.contains("thief"), "no app row: {dash}");
    let path_field = format!("volume_path_{vol_id}");
    let resp = app
        .upload(
            &[
                ("app_name", "sharer"),
                ("public_route", "/sharer"),
                ("volumes[]", &vol_id),
                (&path_field, "/shared"),
            ],
            stack(&volume_yml),
            "sharer.zip",
        )
        .await;
    assert_eq!(resp.status(), 303, "{}", resp.text().await.unwrap());
    let page = app.wait_deploy(deploy_id(&location(&resp))).await;
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    assert_eq!(
        fetch_route(&app, "/sharer/x").await,
        (200, "stolen\n".into()),
        "an assigned volume mounts where the file says, writable by the service"
    );
}

#[tokio::test]
async fn a_numeric_user_never_takes_group_root_from_the_images_files() {
    // The image maps uid 1000 to primary group 0 and puts it in root's group: with `user:
    // "1000"` the engine used to take gid 0 (and supplementary groups) from those files.
    let app = spawn_engine_app().await;
    let yml = "services:\n  web:\n    build: .\n    ports: [\"8080\"]\n    user: \"1000\"\n    stop_grace_period: 1s\n";
    let df = format!(
        "FROM {BASE_IMAGE}\nCOPY etc /etc\nCMD [\"sh\", \"-c\", \"mkdir /tmp/www && id > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www\"]\n"
    );
    let zip = zip_of(&[
        ("docker-compose.yml", yml.as_bytes(), 0o644),
        ("Dockerfile", df.as_bytes(), 0o644),
        (
            "etc/passwd",
            b"root:x:0:0:root:/:/bin/sh\napp:x:1000:0:app:/:/bin/sh\n",
            0o644,
        ),
        ("etc/group", b"root:x:0:app\nwheel:x:10:app\n", 0o644),
    ]);
    app.deploy("ids", "/ids", zip).await;
    let (status, id) = fetch_route(&app, "/ids/").await;
    assert_eq!(status, 200, "{id}");
    assert!(id.starts_with("uid=1000(app) gid=1000"), "{id}");
    assert!(!id.contains("(root)") && !id.contains("(wheel)"), "{id}");
    let list = service_containers(&app.instance, "ids");
    assert_eq!(by_service(&list, "web")["Config"]["User"], "1000:1000");
}

/// 13.7: with outbound access cut, a stack's services still reach each other (the stack's
/// network becomes internal, not absent) but nothing outside.
#[tokio::test]
async fn a_stack_with_outbound_access_cut_still_talks_inside() {
    let network = format!("milkcrate-test-out-{}", rand_suffix());
    let app = spawn_engine_app_with(|s| s.network = network.clone()).await;
    let outside = OutsideServer::start();
    let (id, _) = app
        .deploy("closed", "/closed", stack_zip("api inside", GOOD_API))
        .await;
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
    let list: Vec<serde_json::Value> = service_containers(&app.instance, "closed")
        .into_iter()
        .filter(|c| c["State"]["Running"] == true)
        .collect();
    for service in ["web", "api"] {
        let c = by_service(&list, service);
        let nets = c["NetworkSettings"]["Networks"].as_object().unwrap();
        assert!(
            nets.keys().all(|n| n.ends_with("-internal")),
            "{service} only on internal networks: {:?}",
            nets.keys()
        );
        let (code, body) = container_fetch(c["Id"].as_str().unwrap(), &outside.url);
        assert!(
            code != 0 && body.is_empty(),
            "{service} reached the outside: {body}"
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, body) = fetch_route(&app, "/closed/cgi-bin/fetch").await;
        if status == 200 {
            assert_eq!(body, "api inside");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
