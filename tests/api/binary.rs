//! The real `milkcrate` binary: help text, the production guard, start-up errors,
//! `reset-password`. Each run gets a clean environment so the machine's variables do not leak in.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::*;

fn milkcrate(data_dir: &std::path::Path) -> Command {
    let mut c = milkcrate_command();
    c.env("MILKCRATE_DATA_DIR", data_dir);
    c
}

/// Runs `serve` and returns (exit status or None if it started, stderr so far).
fn serve(cmd: &mut Command) -> (Option<std::process::ExitStatus>, String) {
    let mut child = cmd
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            text.push_str(&line);
            text.push('\n');
            if line.contains("listening on") {
                let _ = child.kill();
                let _ = child.wait();
                return (None, text);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                text.push_str(&line);
                text.push('\n');
            }
            return (Some(status), text);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("milkcrate neither started nor exited: {text}");
}

#[test]
fn serve_help_documents_every_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = milkcrate(dir.path())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for var in [
        "SECRET_KEY",
        "MILKCRATE_ENV",
        "MILKCRATE_ADMIN_PASSWORD",
        "DEFAULT_HOME_ROUTE",
        "FORCE_HTTPS",
        "SSL_CERT_FILE",
        "SSL_KEY_FILE",
        "TRAEFIK_NETWORK",
        "MAX_CONTENT_LENGTH",
        "MILKCRATE_DATA_DIR",
        "MILKCRATE_LISTEN",
        "TRUSTED_PROXIES",
    ] {
        assert!(
            help.contains(&format!("[env: {var}")),
            "--help documents {var}"
        );
    }
    let top = milkcrate(dir.path()).arg("--help").output().unwrap();
    let top = String::from_utf8(top.stdout).unwrap();
    assert!(top.contains("serve") && top.contains("reset-password"));
}

#[test]
fn production_refuses_placeholder_secrets_and_the_default_password() {
    let dir = tempfile::tempdir().unwrap();
    let (status, err) = serve(milkcrate(dir.path()).env("MILKCRATE_ENV", "production"));
    assert!(!status.expect("refused to start").success());
    assert!(err.contains("SECRET_KEY is not set"), "{err}");
    assert!(
        err.contains(
            "the admin password is still the default 'admin': set MILKCRATE_ADMIN_PASSWORD"
        ),
        "{err}"
    );

    let (status, err) = serve(
        milkcrate(dir.path())
            .env("MILKCRATE_ENV", "production")
            .env(
                "SECRET_KEY",
                "your-secret-key-change-in-production-using-environment-variable",
            )
            .env("MILKCRATE_ADMIN_PASSWORD", "Prod-Password-1"),
    );
    assert!(!status.expect("refused to start").success());
    assert!(err.contains("SECRET_KEY is a placeholder"), "{err}");
    assert!(
        !err.contains("admin password"),
        "the password is fine this time: {err}"
    );

    let (status, err) = serve(
        milkcrate(dir.path())
            .env("MILKCRATE_ENV", "production")
            .env("SECRET_KEY", "0123456789abcdef0123456789abcdef")
            .env("MILKCRATE_ADMIN_PASSWORD", "Prod-Password-1"),
    );
    assert!(status.is_none(), "starts with real settings: {err}");
}

#[test]
fn development_starts_with_defaults_and_creates_the_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fresh");
    let (status, err) = serve(&mut milkcrate(&data));
    assert!(status.is_none(), "{err}");
    assert!(data.join("milkcrate.sqlite").exists() && data.join("audit.log").exists());
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(data.join("secret_key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600, "the generated secret key is private");
    let dir_mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
}

#[test]
fn a_missing_certificate_stops_start_up_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let (status, err) = serve(
        milkcrate(dir.path())
            .env("SSL_CERT_FILE", "/nonexistent/cert.pem")
            .env("SSL_KEY_FILE", "/nonexistent/key.pem"),
    );
    assert!(!status.expect("refused").success());
    assert!(
        err.contains("cannot read SSL_CERT_FILE /nonexistent/cert.pem"),
        "{err}"
    );

    let (status, err) = serve(milkcrate(dir.path()).env("SSL_KEY_FILE", "/tmp/key.pem"));
    assert!(!status.expect("refused").success());
    assert!(
        err.contains("SSL_KEY_FILE is set but SSL_CERT_FILE is not"),
        "{err}"
    );

    // OpenSSL's CA-bundle variable alone does not turn HTTPS on.
    let (status, err) =
        serve(milkcrate(dir.path()).env("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"));
    assert!(status.is_none(), "{err}");
    assert!(err.contains("serving plain HTTP"), "{err}");
}

#[test]
fn an_open_redirect_home_route_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (status, err) = serve(milkcrate(dir.path()).env("DEFAULT_HOME_ROUTE", "//evil.example"));
    assert!(!status.expect("refused").success());
    assert!(
        err.contains("DEFAULT_HOME_ROUTE=\"//evil.example\" is refused"),
        "{err}"
    );
}

#[tokio::test]
async fn reset_password_from_stdin_sets_the_password_and_ends_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("instance");

    let run = |pw: &str| {
        let mut child = milkcrate(&data)
            .arg("reset-password")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{pw}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let weak = run("weak");
    assert!(!weak.status.success());
    assert!(
        String::from_utf8_lossy(&weak.stderr)
            .contains("password refused: Password must be at least 8 characters long")
    );

    let app = spawn_in(data.clone(), |_| {}).await;
    app.login_as_admin().await;
    let ok = run("Reset-Pass-77");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("1 session(s) signed out"));
    assert_eq!(
        location(&app.get("/admin").await),
        "/login?next=/admin",
        "existing session ended"
    );
    app.stop().await;

    let app = spawn_in(data, |_| {}).await;
    assert_eq!(app.login(DEFAULT_PASSWORD).await.status(), 401);
    assert_eq!(location(&app.login("Reset-Pass-77").await), "/admin");
    assert!(
        app.audit_lines()
            .iter()
            .any(|l| l["action"] == "password_change" && l["details"]["via"] == "cli")
    );
}
