//! Start-up reconciliation and an unreachable engine.

use std::time::{Duration, Instant};

use crate::docker_env::*;
use crate::helpers::*;

/// A crash mid-deploy leaves a `building` deploy, a `deploying` app row and a half-made
/// container. At the next start the deploy is marked failed and its leftovers removed; a
/// labelled container that no app owns is listed and left alone.
#[tokio::test]
async fn an_interrupted_deploy_is_failed_and_cleaned_up_at_start_up() {
    ensure_base_image();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("instance");
    let instance = format!("test-{}", rand_suffix());
    let adjust = |inst: String| {
        move |s: &mut milkcrate::config::Settings| {
            s.set_instance(&inst);
            s.network = NETWORK.into();
            s.status_interval = Duration::from_millis(300);
        }
    };
    // First run: creates the database.
    spawn_in(data.clone(), adjust(instance.clone()))
        .await
        .stop()
        .await;
    {
        let conn = rusqlite::Connection::open(data.join("milkcrate.sqlite")).unwrap();
        conn.execute_batch(
            "INSERT INTO deployed_apps (app_name, name_key, container_id, image_tag, public_route, internal_port, status)
             VALUES ('halfway', 'halfway', '', '', '/halfway', 0, 'deploying');
             INSERT INTO deploys (app_id, app_name, kind, status, created_at) VALUES (1, 'halfway', 'create', 'building', 0);",
        )
        .unwrap();
    }
    let labels = [
        format!("milkcrate.instance={instance}"),
        "milkcrate.managed=true".into(),
        "milkcrate.app=halfway".into(),
        "milkcrate.deploy=1".into(),
    ];
    let mut args = vec!["create".to_string()];
    for l in &labels {
        args.extend(["--label".to_string(), l.clone()]);
    }
    args.extend([BASE_IMAGE.to_string(), "/bin/sleep".into(), "60".into()]);
    let half = docker(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .trim()
        .to_string();
    let orphan = docker(&[
        "create",
        "--label",
        &format!("milkcrate.instance={instance}"),
        "--label",
        "milkcrate.managed=true",
        "--label",
        "milkcrate.app=stray",
        "--name",
        &format!("stray-{instance}"),
        BASE_IMAGE,
        "/bin/sleep",
        "60",
    ])
    .trim()
    .to_string();

    let app = EngineApp {
        app: spawn_in(data.clone(), adjust(instance.clone())).await,
        instance: instance.clone(),
    };
    app.login_as_admin().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let gone = docker(&["ps", "-aq", "--filter", &format!("id={half}")])
            .trim()
            .is_empty();
        let page = app.get_html("/admin").await;
        if gone && page.contains(&format!("stray-{instance}")) {
            assert!(
                !page.contains("data-app=\"halfway\""),
                "the half-made app row is gone"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reconciliation did not happen: {page}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let deploy = app.get_html("/admin/deploys/1").await;
    assert!(
        deploy.contains("data-status=\"failed\"")
            && deploy.contains("milkcrate stopped while this deploy was running"),
        "{deploy}"
    );
    assert!(
        !docker(&["ps", "-aq", "--filter", &format!("id={orphan}")])
            .trim()
            .is_empty(),
        "a container no app owns is never deleted silently"
    );
}

/// With no engine, pages still load and say so; a deploy fails with that message and leaves
/// the database as it was.
#[tokio::test]
async fn without_an_engine_pages_load_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = KillOnDrop(
        milkcrate_command()
            .env("MILKCRATE_DATA_DIR", dir.path())
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let base = read_listen_address(&mut child.0);
    let client = new_client();
    let get = |path: &str| client.get(format!("{base}{path}")).send();
    let token = csrf_token(&get("/login").await.unwrap().text().await.unwrap());
    let resp = client
        .post(format!("{base}/login"))
        .form(&[("csrf_token", token.as_str()), ("password", "admin")])
        .send()
        .await
        .unwrap();
    assert_eq!(location(&resp), "/admin");
    let deadline = Instant::now() + Duration::from_secs(15);
    let page = loop {
        let page = get("/admin").await.unwrap().text().await.unwrap();
        if page.contains("Not reachable") {
            break page;
        }
        assert!(Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(page.contains("Start it"), "says what to do: {page}");
    let health: serde_json::Value = get("/health").await.unwrap().json().await.unwrap();
    assert_eq!(health["engine"], "unreachable");

    let token = csrf_token(&get("/upload").await.unwrap().text().await.unwrap());
    let form = reqwest::multipart::Form::new()
        .text("csrf_token", token)
        .text("app_name", "offline")
        .text("public_route", "/offline")
        .part(
            "file",
            reqwest::multipart::Part::bytes(web_app_zip("x")).file_name("a.zip"),
        );
    let resp = client
        .post(format!("{base}/upload"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let deploy_url = location(&resp);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let page = unescape(&get(&deploy_url).await.unwrap().text().await.unwrap());
        if page.contains("data-status=\"failed\"") {
            assert!(page.contains("not reachable"), "{page}");
            break;
        }
        assert!(Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !get("/admin")
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("data-app="),
        "no app row left"
    );
}

/// Ends the child process however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn read_listen_address(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            let url = rest.split_whitespace().next().unwrap().to_string();
            std::thread::spawn(move || for _ in lines {});
            return url;
        }
    }
    panic!("milkcrate did not start");
}
