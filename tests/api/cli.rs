//! The operator commands through the real binary: setup, check, status, package, package-sample.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::docker_env::*;
use crate::helpers::*;

fn milkcrate(args: &[&str], envs: &[(&str, &str)], stdin: &str) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_milkcrate"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
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

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[tokio::test]
async fn setup_prepares_an_install_once_and_then_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let first = milkcrate(&["setup", "--data-dir", d], &[], "Setup-Pass-1!\n");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
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
    let ok = milkcrate(&["check", "--data-dir", d], &[], "");
    assert!(ok.status.success(), "{}", stdout(&ok));
    let text = stdout(&ok);
    for line in [
        "ok   engine       Docker Engine",
        "ok   api version  negotiated 1.",
        "ok   data folder",
        "ok   router       built-in",
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

#[tokio::test]
async fn status_lists_the_apps_the_engine_runs() {
    let app = spawn_engine_app().await;
    app.deploy("listed", "/listed", web_app_zip("x")).await;
    let d = app.data_dir.to_str().unwrap().to_string();
    let out = milkcrate(
        &["status", "--data-dir", &d, "--json"],
        &[
            ("MILKCRATE_INSTANCE", &app.instance),
            ("TRAEFIK_NETWORK", NETWORK),
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
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
    let out = milkcrate(
        &[
            "package",
            p.to_str().unwrap(),
            "-o",
            out_zip.to_str().unwrap(),
        ],
        &[],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
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
