//! The deploy pipeline's edges: what its timeout may and may not undo, what a cancelled build
//! leaves in the engine, and apps a crash left "deploying" with no deploy running.

use std::time::{Duration, Instant};

use crate::docker_env::*;
use crate::helpers::*;

/// A busybox httpd app answering `body` on `/` whose `/cgi-bin/slow` answers after `secs` s.
fn slow_app_zip(body: &str, secs: u32) -> Vec<u8> {
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nCOPY www /www\nEXPOSE 8080\nCMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    );
    let cgi =
        format!("#!/bin/sh\nsleep {secs}\necho 'Content-Type: text/plain'\necho\necho slow done\n");
    zip_of(&[
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("www/index.html", body.as_bytes(), 0o644),
        ("www/cgi-bin/slow", cgi.as_bytes(), 0o755),
    ])
}

fn running(instance: &str, name: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=milkcrate.instance={instance}"),
        "--filter",
        &format!("label=milkcrate.app={name}"),
    ])
    .split_whitespace()
    .map(String::from)
    .collect()
}

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

/// The deploy timeout bounds the work before traffic switches, never the switch's aftermath:
/// an update whose old container drains a slow request past the timeout still succeeds, the
/// new container keeps serving, the old one goes once its request is answered. (Before, the
/// timeout fired mid-drain and the undo removed the container traffic had just switched to.)
#[tokio::test]
async fn a_timeout_during_the_drain_never_undoes_a_switched_update() {
    let app = spawn_engine_app_with(|s| s.build_timeout = Duration::from_secs(10)).await;
    let (id, _) = app.deploy("drain", "/drain", slow_app_zip("v1", 20)).await;
    wait_body(&app, "/drain/", "v1").await;
    let old = running(&app.instance, "drain");
    assert_eq!(old.len(), 1);
    // A request the old container takes 20 s to answer, in flight while the update switches.
    let slow = tokio::spawn({
        let url = app.url("/drain/cgi-bin/slow");
        async move {
            let resp = new_client().get(url).send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    while !docker(&["top", &old[0]]).contains("sleep 20") {
        assert!(Instant::now() < deadline, "the slow request never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resp = app.update(id, slow_app_zip("v2", 20)).await;
    assert_eq!(resp.status(), 303);
    let page = unescape(&app.wait_deploy(deploy_id(&location(&resp))).await);
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    assert_eq!(slow.await.unwrap(), (200, "slow done\n".to_string()));
    wait_body(&app, "/drain/", "v2").await;
    let now = running(&app.instance, "drain");
    assert_eq!(now.len(), 1, "one container runs: {now:?}");
    assert_ne!(now, old, "the new one");
}

/// The image ids a classic build log reports (` ---> <id>`), in order.
fn layers_in(page: &str) -> Vec<String> {
    page.lines()
        .filter_map(|l| l.trim().strip_prefix("---> "))
        .map(str::trim)
        .filter(|id| id.len() >= 12 && id.chars().all(|c| c.is_ascii_hexdigit()))
        .map(String::from)
        .collect()
}

fn image_exists(id: &str) -> bool {
    std::process::Command::new("docker")
        .args(["image", "inspect", id])
        .output()
        .unwrap()
        .status
        .success()
}

/// A first deploy stopped by the build timeout ends "failed" and leaves nothing: no container,
/// no image (not even the layers its earlier steps made, which carry no label), no build
/// context, no app row in "deploying".
#[tokio::test]
async fn a_build_stopped_by_the_timeout_leaves_no_layers() {
    // Long enough for the first step to end on a busy machine; the second never does.
    let app = spawn_engine_app_with(|s| s.build_timeout = Duration::from_secs(15)).await;
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nRUN echo {} > /unique\nRUN sleep 120\nCOPY www /www\nEXPOSE 8080\nCMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
        rand_suffix()
    );
    let zip = zip_of(&[
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("www/index.html", b"late", 0o644),
    ]);
    let page = app.deploy_failing("late", "/late", zip).await;
    assert!(page.contains("took longer than 15 s"), "{page}");
    let ids = layers_in(&page);
    assert!(
        ids.len() >= 2,
        "the log shows the base and the first step's layer: {page}"
    );
    assert!(image_exists(&ids[0]), "the base image stays");
    let made = ids.last().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while image_exists(made) {
        assert!(
            Instant::now() < deadline,
            "the layer the stopped build made ({made}) is still there"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (containers, images) = labelled_leftovers(&app.instance, "late");
    assert_eq!((containers.trim(), images.trim()), ("", ""));
    let left: Vec<_> = std::fs::read_dir(app.data_dir.join("uploads"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "no build context is left: {left:?}");
    let conn = rusqlite::Connection::open(app.data_dir.join("milkcrate.sqlite")).unwrap();
    let rows: i64 = conn
        .query_row(
            "SELECT count(*) FROM deployed_apps WHERE app_name = 'late'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 0, "no app row is left");
}

/// An app row left "deploying" while no deploy runs (every deploy row finished: a crash between
/// the two writes, or an older milkcrate) is repaired at start-up even when no deploy was
/// interrupted: one with a container serves again, one without any (a first deploy that never
/// finished) goes.
#[tokio::test]
async fn apps_stuck_deploying_are_repaired_at_start_up() {
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
    let mut first = EngineApp {
        app: spawn_in(data.clone(), adjust(instance.clone())).await,
        instance: instance.clone(),
    };
    first.login_as_admin().await;
    first
        .deploy("stale", "/stale", web_app_zip("still here"))
        .await;
    wait_body(&first, "/stale/", "still here").await;
    // Stop the server; `first` (and its clean-up of the engine objects) lives on until the
    // end, for the next server is the same install.
    let placeholder = first.app.second_browser();
    let server = std::mem::replace(&mut first.app, placeholder);
    server.stop().await;
    {
        let conn = rusqlite::Connection::open(data.join("milkcrate.sqlite")).unwrap();
        conn.execute_batch(
            "UPDATE deployed_apps SET status = 'deploying' WHERE app_name = 'stale';
             INSERT INTO deployed_apps (app_name, name_key, container_id, image_tag, public_route, internal_port, status)
             VALUES ('ghost', 'ghost', '', '', '/ghost', 0, 'deploying');",
        )
        .unwrap();
        let unfinished: i64 = conn
            .query_row(
                "SELECT count(*) FROM deploys WHERE status NOT IN ('succeeded', 'failed')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(unfinished, 0, "no deploy was interrupted");
    }
    let again = EngineApp {
        app: spawn_in(data.clone(), adjust(instance.clone())).await,
        instance: instance.clone(),
    };
    again.login_as_admin().await;
    wait_body(&again, "/stale/", "still here").await;
    let conn = rusqlite::Connection::open(data.join("milkcrate.sqlite")).unwrap();
    let status: String = conn
        .query_row(
            "SELECT status FROM deployed_apps WHERE app_name = 'stale'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(status, "running");
    let ghosts: i64 = conn
        .query_row(
            "SELECT count(*) FROM deployed_apps WHERE app_name = 'ghost'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ghosts, 0, "the first deploy that never finished is gone");
}
