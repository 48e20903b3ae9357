//! The operator commands through the real binary: setup, check, status, package, package-sample.

use std::io::Write;
use std::process::{Output, Stdio};

use crate::docker_env::*;
use crate::helpers::*;

fn milkcrate(args: &[&str], envs: &[(&str, &str)], stdin: &str) -> Output {
    let mut c = milkcrate_command();
    for (k, v) in envs {
        c.env(k, v);
    }
    let mut child = c
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs the binary and checks it succeeded, showing its stderr when it did not.
fn run_ok(args: &[&str], envs: &[(&str, &str)], stdin: &str) -> Output {
    let out = milkcrate(args, envs, stdin);
    assert!(
        out.status.success(),
        "milkcrate {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[tokio::test]
async fn setup_prepares_an_install_once_and_then_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let first = run_ok(&["setup", "--data-dir", d], &[], "Setup-Pass-1!\n");
    let text = stdout(&first);
    for done in [
        "created the data folder",
        "created the database",
        "wrote a random secret key",
        "set the admin password",
        "milkcrate serve",
    ] {
        assert!(text.contains(done), "{done} in {text}");
    }
    let key = std::fs::read(data.join("secret_key")).unwrap();
    let second = milkcrate(&["setup", "--data-dir", d], &[], "ignored\n");
    assert!(second.status.success());
    assert!(
        stdout(&second).contains("already set up") && stdout(&second).contains("nothing changed")
    );
    assert_eq!(
        std::fs::read(data.join("secret_key")).unwrap(),
        key,
        "the key was not replaced"
    );

    let weak = milkcrate(
        &[
            "setup",
            "--data-dir",
            dir.path().join("other").to_str().unwrap(),
        ],
        &[],
        "weak\n",
    );
    assert!(
        !weak.status.success()
            && String::from_utf8_lossy(&weak.stderr).contains("password refused")
    );

    let app = spawn_in(data, |_| {}).await;
    assert_eq!(
        location(&app.login("Setup-Pass-1!").await),
        "/admin",
        "the password set by setup logs in"
    );
}

#[test]
fn check_reports_each_check_and_fails_when_one_fails() {
    require_engine();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    milkcrate::store::Store::open(&dir.path().join("milkcrate.sqlite")).unwrap();
    let ok = milkcrate(&["check", "--data-dir", d], &[], "");
    assert!(ok.status.success(), "{}", stdout(&ok));
    let text = stdout(&ok);
    for line in [
        "ok   engine       Docker Engine",
        "ok   api version  negotiated 1.",
        "ok   data folder",
        "ok   router       built-in",
        "ok   firewall     off (MILKCRATE_HOST_FIREWALL=off)",
        "production would refuse",
    ] {
        assert!(text.contains(line), "{line} in:\n{text}");
    }
    let json = milkcrate(&["check", "--data-dir", d, "--json"], &[], "");
    let checks: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(checks.as_array().unwrap().iter().all(|c| c["ok"] == true));

    let no_engine = milkcrate(
        &["check", "--data-dir", d],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
        "",
    );
    assert!(!no_engine.status.success());
    assert!(
        stdout(&no_engine).contains("FAIL engine"),
        "{}",
        stdout(&no_engine)
    );

    let prod = milkcrate(
        &["check", "--data-dir", d],
        &[("MILKCRATE_ENV", "production")],
        "",
    );
    assert!(!prod.status.success());
    assert!(
        stdout(&prod).contains("FAIL production") && stdout(&prod).contains("still the default"),
        "{}",
        stdout(&prod)
    );
}

/// Pointed at a folder that holds no install, `check` and `status` say so, naming the path
/// and what to do, and create nothing (no folder, no database).
#[test]
fn check_and_status_without_an_install_say_so_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("instance");
    let m = missing.to_str().unwrap();
    let check = milkcrate(&["check", "--data-dir", m], &[], "");
    let text = stdout(&check);
    assert!(!check.status.success(), "{text}");
    assert!(
        text.contains("FAIL data folder") && text.contains("does not exist"),
        "{text}"
    );
    assert!(text.contains("milkcrate setup"), "{text}");
    assert!(!missing.exists(), "check created {m}");
    let status = milkcrate(&["status", "--data-dir", m], &[], "");
    let err = String::from_utf8_lossy(&status.stderr).to_string();
    assert!(!status.status.success());
    assert!(
        err.contains(&missing.join("milkcrate.sqlite").display().to_string())
            && err.contains("does not exist")
            && err.contains("--data-dir"),
        "{err}"
    );
    assert!(!missing.exists(), "status created {m}");

    // A folder that exists but holds no database.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = empty.to_str().unwrap();
    let check = milkcrate(&["check", "--data-dir", e], &[], "");
    let text = stdout(&check);
    assert!(!check.status.success());
    assert!(
        text.contains("ok   data folder") && text.contains("FAIL database"),
        "{text}"
    );
    let status = milkcrate(&["status", "--data-dir", e], &[], "");
    assert!(!status.status.success());
    assert!(String::from_utf8_lossy(&status.stderr).contains("holds no install"));
    assert_eq!(
        std::fs::read_dir(&empty).unwrap().count(),
        0,
        "nothing was created"
    );
}

#[test]
fn check_reports_the_install_identity() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    milkcrate::store::Store::open(&dir.path().join("milkcrate.sqlite")).unwrap();
    let unnamed = stdout(&milkcrate(&["check", "--data-dir", d], &[], ""));
    assert!(
        unnamed.contains("identity") && unnamed.contains("no instance name set"),
        "{unnamed}"
    );
    let named = stdout(&milkcrate(
        &["check", "--data-dir", d],
        &[("MILKCRATE_INSTANCE", "shop-eu")],
        "",
    ));
    assert!(
        named.contains("instance shop-eu") && named.contains("milkcrate.instance=shop-eu"),
        "{named}"
    );
}

#[tokio::test]
async fn status_lists_the_apps_the_engine_runs() {
    let app = spawn_engine_app().await;
    app.deploy("listed", "/listed", web_app_zip("x")).await;
    let d = app.data_dir.to_str().unwrap().to_string();
    let out = run_ok(
        &["status", "--data-dir", &d, "--json"],
        &[
            ("MILKCRATE_INSTANCE", &app.instance),
            ("TRAEFIK_NETWORK", NETWORK),
        ],
        "",
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["name"], "listed");
    assert_eq!(rows[0]["route"], "/listed");
    assert_eq!(rows[0]["status"], "Running");
    let table = milkcrate(
        &["status", "--data-dir", &d],
        &[
            ("MILKCRATE_INSTANCE", &app.instance),
            ("TRAEFIK_NETWORK", NETWORK),
        ],
        "",
    );
    assert!(stdout(&table).contains("listed") && stdout(&table).contains("Running"));
}

#[tokio::test]
async fn package_and_package_sample_make_zips_that_deploy() {
    let app = spawn_engine_app().await;
    let src = tempfile::tempdir().unwrap();
    let p = src.path();
    let files: &[(&str, &str)] = &[
        (
            "Dockerfile",
            &format!(
                "FROM {BASE_IMAGE}\nCOPY www /www\nEXPOSE 8080\nCMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
            ),
        ),
        ("www/index.html", "packaged"),
        (".git/config", "x"),
        (".github/workflows/ci.yml", "x"),
        ("node_modules/a.js", "x"),
        ("debug.log", "x"),
        (".environment", "kept: .env is matched as a whole name"),
        (".dockerignore", "secret.txt\n"),
        ("secret.txt", "x"),
    ];
    for (name, body) in files {
        std::fs::create_dir_all(p.join(name).parent().unwrap()).unwrap();
        std::fs::write(p.join(name), body).unwrap();
    }
    let out_zip = src.path().join("out.zip");
    run_ok(
        &[
            "package",
            p.to_str().unwrap(),
            "-o",
            out_zip.to_str().unwrap(),
        ],
        &[],
        "",
    );
    let zip = zip::ZipArchive::new(std::fs::File::open(&out_zip).unwrap()).unwrap();
    let mut names: Vec<String> = zip.file_names().map(|n| n.unwrap().to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            ".dockerignore",
            ".environment",
            ".github/workflows/ci.yml",
            "Dockerfile",
            "www/index.html"
        ]
    );
    app.deploy("packed", "/packed", std::fs::read(&out_zip).unwrap())
        .await;
    assert_eq!(app.get("/packed/").await.text().await.unwrap(), "packaged");

    let sample = src.path().join("sample.zip");
    let out = milkcrate(
        &[
            "package-sample",
            "-o",
            sample.to_str().unwrap(),
            "--base-image",
            BASE_IMAGE,
        ],
        &[],
        "",
    );
    assert!(out.status.success());
    app.deploy("sample", "/sample", std::fs::read(&sample).unwrap())
        .await;
    assert!(
        app.get("/sample/")
            .await
            .text()
            .await
            .unwrap()
            .contains("Hello from milkcrate")
    );
    let info = app.get("/sample/cgi-bin/info").await.text().await.unwrap();
    assert!(info.contains("prefix: /sample"), "{info}");

    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("README"), "x").unwrap();
    let warned = milkcrate(
        &[
            "package",
            empty.path().to_str().unwrap(),
            "-o",
            empty.path().join("a.zip").to_str().unwrap(),
        ],
        &[],
        "",
    );
    assert!(String::from_utf8_lossy(&warned.stderr).contains("no Dockerfile or compose file"));
}

#[tokio::test]
async fn a_backup_taken_while_serving_restores_every_app_setting_and_audit_line() {
    let app = spawn_engine_app().await;
    app.deploy("kept", "/kept", web_app_zip("kept")).await;
    app.post_form(
        "/admin/settings",
        "/admin/settings/default-route",
        &[("default_route", "/kept")],
    )
    .await;
    // A volume with a file in it: its data goes into the backup through the engine.
    let vol_name = format!("bk{}", rand_suffix());
    let docker_vol = format!("milkcrate-{}-vol-{vol_name}", app.instance);
    let resp = app
        .post_form(
            "/admin/volumes/create",
            "/admin/volumes/create",
            &[("volume_name", &vol_name), ("description", "")],
        )
        .await;
    assert_eq!(resp.status(), 303);
    docker(&[
        "run",
        "--rm",
        "--label",
        TEST_LABEL,
        "-v",
        &format!("{docker_vol}:/v"),
        BASE_IMAGE,
        "sh",
        "-c",
        "mkdir -p /v/deep && echo 'kept data' > '/v/deep/a file.txt'",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let d = app.data_dir.to_str().unwrap().to_string();

    // Writes keep coming while the backup runs.
    let writer = {
        let b = app.second_browser();
        tokio::spawn(async move {
            b.login_as_admin().await;
            for i in 0..20 {
                b.post_form(
                    "/admin/settings",
                    "/admin/settings/default-route",
                    &[("default_route", &format!("/kept/{i}"))],
                )
                .await;
            }
        })
    };
    let out = tokio::task::spawn_blocking({
        let (d, backups) = (d.clone(), backups.clone());
        move || {
            milkcrate(
                &["backup", "--data-dir", &d, "-o", backups.to_str().unwrap()],
                &[],
                "",
            )
        }
    })
    .await
    .unwrap();
    writer.await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("added milkcrate.sqlite"),
        "progress is shown"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("read volume {docker_vol}")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The volume is lost; the restore brings its data back.
    docker(&["volume", "rm", &docker_vol]);
    let audit_lines_at_backup = app.audit_lines().len();

    let restored = dir.path().join("restored");
    let out = run_ok(
        &[
            "restore",
            "--backup-dir",
            backups.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
            "--yes",
        ],
        &[],
        "",
    );
    assert!(stdout(&out).contains("is intact"));
    assert!(
        stdout(&out).contains(&format!("Restored the data of volume {docker_vol}")),
        "{}",
        stdout(&out)
    );
    let back = docker(&[
        "run",
        "--rm",
        "--label",
        TEST_LABEL,
        "-v",
        &format!("{docker_vol}:/v:ro"),
        BASE_IMAGE,
        "cat",
        "/v/deep/a file.txt",
    ]);
    assert_eq!(back.trim(), "kept data");
    let labels = docker(&["volume", "inspect", "-f", "{{json .Labels}}", &docker_vol]);
    assert!(
        labels.contains(&app.instance),
        "it belongs to the same install: {labels}"
    );
    assert!(
        !restored.join("volumes").exists(),
        "volume data is not left in the data folder"
    );
    assert_eq!(
        std::fs::read(restored.join("secret_key")).unwrap(),
        std::fs::read(app.data_dir.join("secret_key")).unwrap()
    );
    let sources: Vec<_> = std::fs::read_dir(restored.join("apps/kept"))
        .unwrap()
        .collect();
    assert_eq!(sources.len(), 1, "the app's sources came back");
    let restored_audit = std::fs::read_to_string(restored.join("audit.log"))
        .unwrap()
        .lines()
        .count();
    assert!(
        restored_audit >= 3 && restored_audit <= audit_lines_at_backup,
        "{restored_audit} audit lines"
    );

    let again = spawn_in(restored, |_| {}).await;
    again.login_as_admin().await;
    let dashboard = again.get_html("/admin").await;
    assert!(
        dashboard.contains("data-app=\"kept\""),
        "the app row came back"
    );
    let home = location(&again.second_browser().get("/").await);
    assert!(
        home.starts_with("/kept"),
        "the home-route setting came back: {home}"
    );
}

/// Rewrites one member of a backup (or adds one) to make a bad archive.
fn rewrite_backup(
    src: &std::path::Path,
    dst: &std::path::Path,
    change: impl Fn(&str, Vec<u8>) -> Vec<u8>,
    extra: Option<(&str, &[u8])>,
) {
    use std::io::Read;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(src).unwrap(),
    ));
    let mut out = tar::Builder::new(flate2::write::GzEncoder::new(
        std::fs::File::create(dst).unwrap(),
        flate2::Compression::default(),
    ));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        let data = change(&name, data);
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        out.append_data(&mut h, &name, data.as_slice()).unwrap();
    }
    if let Some((name, data)) = extra {
        // Written by hand: the tar crate itself refuses to create a `..` path.
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        out.append(&h, data).unwrap();
    }
    out.into_inner().unwrap().finish().unwrap();
}

#[test]
fn tampered_or_escaping_backups_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    assert!(
        milkcrate(&["setup", "--data-dir", d], &[], "Setup-Pass-1!\n")
            .status
            .success()
    );
    let backups = dir.path().join("b");
    assert!(
        milkcrate(
            &["backup", "--data-dir", d, "-o", backups.to_str().unwrap()],
            &[],
            ""
        )
        .status
        .success()
    );
    let good = std::fs::read_dir(&backups)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let target = dir.path().join("target");
    let t = target.to_str().unwrap();

    let tampered = dir.path().join("tampered.tar.gz");
    rewrite_backup(
        &good,
        &tampered,
        |name, data| {
            if name == "secret_key" {
                b"attacker-key".to_vec()
            } else {
                data
            }
        },
        None,
    );
    let out = milkcrate(
        &[
            "restore",
            tampered.to_str().unwrap(),
            "--data-dir",
            t,
            "--yes",
        ],
        &[],
        "",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("'secret_key' does not match its checksum"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!target.exists(), "nothing was written");

    let escaping = dir.path().join("escaping.tar.gz");
    rewrite_backup(
        &good,
        &escaping,
        |_, data| data,
        Some(("../evil.txt", b"gotcha")),
    );
    let out = milkcrate(
        &[
            "restore",
            escaping.to_str().unwrap(),
            "--data-dir",
            t,
            "--yes",
        ],
        &[],
        "",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("'../evil.txt' would land outside"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dir.path().join("evil.txt").exists() && !target.exists(),
        "nothing was written anywhere"
    );

    // Restoring over existing data asks first; without a terminal and --yes it refuses.
    let out = milkcrate(
        &["restore", good.to_str().unwrap(), "--data-dir", d],
        &[],
        "",
    );
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("pass --yes"));
}

#[test]
fn restore_list_shows_backups_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    assert!(
        milkcrate(&["setup", "--data-dir", d], &[], "Setup-Pass-1!\n")
            .status
            .success()
    );
    let b = dir.path().join("b");
    for _ in 0..2 {
        assert!(
            milkcrate(
                &["backup", "--data-dir", d, "-o", b.to_str().unwrap()],
                &[],
                ""
            )
            .status
            .success()
        );
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let out = stdout(&milkcrate(
        &["restore", "--list", "--backup-dir", b.to_str().unwrap()],
        &[],
        "",
    ));
    let stamps: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(stamps.len(), 2, "{out}");
    assert!(stamps[0] > stamps[1], "newest first: {out}");
}

/// An install of the original: its database (werkzeug password, home route, two apps, a
/// volume), its audit log in its own line format, and extracted sources, including a folder
/// whose name merely starts with another app's name.
#[tokio::test]
async fn migrate_adopts_an_install_of_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old");
    std::fs::create_dir_all(old.join("instance")).unwrap();
    {
        let conn = rusqlite::Connection::open(old.join("instance/milkcrate.sqlite")).unwrap();
        conn.execute_batch(crate::store::ORIGINAL_SCHEMA).unwrap();
        conn.execute_batch(crate::store::ROWS).unwrap();
        conn.execute(
            "INSERT INTO settings (setting_key, setting_value) VALUES ('admin_password', ?1)",
            [crate::store::OLD_HASH],
        )
        .unwrap();
    }
    std::fs::write(
        old.join("instance/audit.log"),
        "2026-02-20 20:30:00 - INFO - {\"timestamp\":\"2026-02-21T02:30:00+00:00\",\"user_id\":\"admin\",\"ip_address\":\"172.18.0.2\",\"user_agent\":\"x\",\"action\":\"deploy\",\"resource_type\":\"application\",\"resource_id\":\"demo\",\"success\":true,\"details\":{}}\n",
    )
    .unwrap();
    for (folder, body) in [
        ("demo_20260101_120000", "old"),
        ("demo_update_20260220_203000", "newest"),
        ("demo2_20270101_000000", "another app"),
    ] {
        let d = old.join("extracted_apps").join(folder);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(d.join("index.html"), body).unwrap();
    }
    let data = dir.path().join("new");
    let out = run_ok(
        &[
            "migrate",
            "--from",
            old.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--json",
        ],
        &[],
        "",
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["apps"].as_array().unwrap().len(), 2);
    assert_eq!(report["volumes"], 1);
    assert_eq!(report["audit_lines"], 1);
    let demo = report["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "demo")
        .unwrap();
    assert_eq!(demo["route"], "/demo");
    let shop = report["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "shop")
        .unwrap();
    assert!(shop["sources"].is_null(), "no sources for shop");
    let hands = report["needs_a_hand"].to_string();
    assert!(
        hands.contains("shop: no extracted sources") && hands.contains("Redeploy"),
        "{hands}"
    );

    let zip = zip::ZipArchive::new(std::fs::File::open(demo["sources"].as_str().unwrap()).unwrap())
        .unwrap();
    let mut zip = zip;
    let mut page = String::new();
    std::io::Read::read_to_string(&mut zip.by_name("index.html").unwrap(), &mut page).unwrap();
    assert_eq!(page, "newest", "the newest folder of demo, never demo2's");

    let again = milkcrate(
        &[
            "migrate",
            "--from",
            old.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
        "",
    );
    assert!(!again.status.success(), "never over an existing database");

    let app = spawn_in(data, |_| {}).await;
    assert_eq!(
        location(&app.get("/").await),
        "/demo",
        "the home route moved"
    );
    assert_eq!(
        location(&app.login("OldAdmin#2024").await),
        "/admin",
        "the old password logs in"
    );
    let dashboard = app.get_html("/admin").await;
    assert!(dashboard.contains("data-app=\"demo\"") && dashboard.contains("data-app=\"shop\""));
    let audit = app.get_html("/admin/audit").await;
    assert!(
        audit.contains("172.18.0.2"),
        "the original's audit lines are listed"
    );
}

#[tokio::test]
async fn restore_redeploy_brings_apps_back_on_an_engine_that_lost_them() {
    let app = spawn_engine_app().await;
    app.deploy("phoenix", "/phoenix", web_app_zip("risen"))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let d = app.data_dir.to_str().unwrap().to_string();
    run_ok(
        &[
            "backup",
            "--data-dir",
            &d,
            "-o",
            backups.to_str().unwrap(),
            "--no-volumes",
        ],
        &[],
        "",
    );
    // The engine loses the app: its container and image go (only this test's, by label).
    let (containers, images) = labelled_leftovers(&app.instance, "phoenix");
    for id in containers.split_whitespace() {
        docker(&["rm", "-f", id]);
    }
    for id in images.split_whitespace() {
        docker(&["rmi", "-f", id]);
    }
    let restored = dir.path().join("restored");
    let out = run_ok(
        &[
            "restore",
            "--backup-dir",
            backups.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
            "--yes",
            "--redeploy",
        ],
        &[
            ("MILKCRATE_INSTANCE", &app.instance),
            ("TRAEFIK_NETWORK", NETWORK),
        ],
        "",
    );
    assert!(
        stdout(&out).contains("phoenix: succeeded"),
        "{}",
        stdout(&out)
    );
    let c = inspect_app(&app.instance, "phoenix");
    assert_eq!(fetch_from_container(&c, "/").await, "risen");
}

#[tokio::test]
async fn migrate_redeploy_recreates_the_originals_apps_hardened_and_stops_the_old_containers() {
    let app = spawn_engine_app().await; // for this test's instance label and its cleanup
    let name = format!("legacy{}", rand_suffix());
    let image = format!("milkcrate-{name}:20260220-203000");
    let instance_label = format!("milkcrate.instance={}", app.instance);
    // The original's image and its running container `app-<name>`, without milkcrate's
    // hardening or labels (only this test's, for cleanup).
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {BASE_IMAGE}\nCOPY index.html /www/index.html\nEXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"),
    )
    .unwrap();
    std::fs::write(ctx.path().join("index.html"), "from the original").unwrap();
    docker(&[
        "build",
        "-q",
        "--label",
        &instance_label,
        "-t",
        &image,
        ctx.path().to_str().unwrap(),
    ]);
    let original = format!("app-{name}");
    docker(&[
        "run",
        "-d",
        "--name",
        &original,
        "--label",
        &instance_label,
        &image,
    ]);

    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old");
    std::fs::create_dir_all(old.join("instance")).unwrap();
    {
        let conn = rusqlite::Connection::open(old.join("instance/milkcrate.sqlite")).unwrap();
        conn.execute_batch(crate::store::ORIGINAL_SCHEMA).unwrap();
        conn.execute(
            "INSERT INTO deployed_apps (app_name, container_id, image_tag, public_route, internal_port, status) VALUES (?1, 'gone', ?2, '/legacy', 8080, 'running')",
            [&name, &image],
        )
        .unwrap();
    }
    let data = dir.path().join("new");
    let out = run_ok(
        &[
            "migrate",
            "--from",
            old.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--redeploy",
        ],
        &[
            ("MILKCRATE_INSTANCE", &app.instance),
            ("TRAEFIK_NETWORK", NETWORK),
        ],
        "",
    );
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{name}: recreating from its image")),
        "{text}"
    );
    assert!(text.contains(&format!("{name}: succeeded")), "{text}");
    assert!(
        text.contains(&format!("stopped the original's container {original}")),
        "{text}"
    );
    let running = docker(&["inspect", "-f", "{{.State.Running}}", &original]);
    assert_eq!(
        running.trim(),
        "false",
        "the original's container is stopped, not removed"
    );
    let c = inspect_app(&app.instance, &name);
    assert_eq!(c["Config"]["User"], "65534:65534", "recreated hardened");
    assert_eq!(c["HostConfig"]["CapDrop"], serde_json::json!(["ALL"]));
    assert_eq!(fetch_from_container(&c, "/").await, "from the original");
}
