//! The CLI client through the real binary against a real server and engine: `login` keeps a
//! 0600 config, `deploy DIR` packages the folder (honouring .dockerignore), creates then
//! updates the app and follows its log; a failing build exits non-zero with the build's error;
//! `token create` mints a token at the server's terminal.

use std::process::{Output, Stdio};

use crate::api_v1::mint;
use crate::docker_env::*;
use crate::helpers::*;

/// Runs the binary off the test's runtime (the server runs on it) with `envs` and stdin.
pub async fn milkcrate(args: &[&str], envs: &[(&str, &str)], stdin: &str) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let envs: Vec<(String, String)> = envs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let stdin = stdin.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut c = milkcrate_command();
        c.envs(envs);
        let mut child = c
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write_app(dir: &std::path::Path, body: &str, run: &str) {
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM {BASE_IMAGE}\n{run}COPY www /www\nEXPOSE 8080\nCMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("www/index.html"), body).unwrap();
    std::fs::write(dir.join("www/secret.txt"), "left out by .dockerignore").unwrap();
    std::fs::write(dir.join(".dockerignore"), "www/secret.txt\n").unwrap();
}

#[tokio::test]
async fn milkcrate_deploy_of_a_folder_answers_at_its_route() {
    let app = spawn_engine_app().await;
    let token = mint(&app, "laptop", "deploy", "").await;
    let home = tempfile::tempdir().unwrap();
    let home_s = home.path().to_str().unwrap().to_string();
    let envs = [("HOME", home_s.as_str())];

    // login stores server and token, readable by the owner only.
    let out = milkcrate(&["login", &app.base], &envs, &format!("{token}\n")).await;
    assert!(out.status.success(), "{}", text(&out));
    let config = home.path().join(".config/milkcrate/config.toml");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(std::fs::read_to_string(&config).unwrap().contains(&token));

    let name = format!("cli{}", rand_suffix());
    let dir = home.path().join(&name);
    write_app(&dir, "first from the cli", "");
    let dir_s = dir.to_str().unwrap().to_string();
    let out = milkcrate(
        &["deploy", &dir_s, "--route", &format!("/{name}")],
        &envs,
        "",
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Building"),
        "the build log streamed: {}",
        text(&out)
    );
    assert!(
        stdout.contains(&format!("Deployed {name}")),
        "{}",
        text(&out)
    );
    let page = wait_status(&app, &format!("/{name}/"), 200)
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("first from the cli"));
    assert_eq!(
        app.get(&format!("/{name}/secret.txt")).await.status(),
        404,
        ".dockerignore kept the file out"
    );

    // A second deploy of the same folder updates the app.
    std::fs::write(dir.join("www/index.html"), "second from the cli").unwrap();
    let out = milkcrate(&["deploy", &dir_s, "--json"], &envs, "").await;
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    assert_eq!(v["deploy"]["kind"], "update", "{v}");
    assert_eq!(v["deploy"]["status"], "succeeded", "{v}");
    let page = app.get(&format!("/{name}/")).await.text().await.unwrap();
    assert!(page.contains("second from the cli"));

    // apps, env, rollback and delete, with the saved login.
    let out = milkcrate(&["apps", "--json"], &envs, "").await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&name));
    let out = milkcrate(&["env", "set", &name, "MODE=production"], &envs, "").await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("MODE"));
    let out = milkcrate(&["rollback", &name], &envs, "").await;
    assert!(out.status.success(), "{}", text(&out));
    let out = milkcrate(&["delete", &name], &envs, "").await;
    assert!(!out.status.success(), "delete asks for --yes");
    let out = milkcrate(&["delete", &name, "--yes"], &envs, "").await;
    assert!(out.status.success(), "{}", text(&out));
    wait_status(&app, &format!("/{name}/"), 404).await;
}

#[tokio::test]
async fn a_failing_build_exits_non_zero_with_the_build_error() {
    let app = spawn_engine_app().await;
    let token = mint(&app, "ci", "deploy", "").await;
    let work = tempfile::tempdir().unwrap();
    let name = format!("bad{}", rand_suffix());
    let dir = work.path().join(&name);
    write_app(
        &dir,
        "never served",
        "RUN echo build-went-wrong-marker && exit 3\n",
    );
    let out = milkcrate(
        &["deploy", dir.to_str().unwrap()],
        &[
            ("MILKCRATE_URL", app.base.as_str()),
            ("MILKCRATE_TOKEN", token.as_str()),
            ("HOME", work.path().to_str().unwrap()),
        ],
        "",
    )
    .await;
    assert!(!out.status.success(), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("build-went-wrong-marker"),
        "the build log is printed: {all}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("failed"), "the reason is on stderr: {all}");
    // A wrong token is a clear one-line refusal.
    let out = milkcrate(
        &["apps"],
        &[
            ("MILKCRATE_URL", app.base.as_str()),
            ("MILKCRATE_TOKEN", "mct_wrong"),
            ("HOME", work.path().to_str().unwrap()),
        ],
        "",
    )
    .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("The token is not valid."),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn token_create_mints_a_token_at_the_terminal() {
    let app = spawn_app().await;
    let data = app.data_dir.to_str().unwrap().to_string();
    let out = milkcrate(
        &[
            "token",
            "create",
            "from-cli",
            "--scope",
            "read",
            "--expires",
            "7d",
            "--data-dir",
            &data,
        ],
        &[],
        "",
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let secret = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(secret.starts_with("mct_"), "{secret}");
    let resp = reqwest::Client::new()
        .get(app.url("/api/v1/whoami"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let me: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(me["scope"], "read");
    let mut stored = std::fs::read(app.data_dir.join("milkcrate.sqlite")).unwrap();
    stored.extend(std::fs::read(app.data_dir.join("milkcrate.sqlite-wal")).unwrap_or_default());
    assert!(
        !stored.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "only a hash of the secret is stored"
    );
    let out = milkcrate(
        &[
            "token",
            "create",
            "x",
            "--scope",
            "read",
            "--app",
            "a1",
            "--data-dir",
            &data,
        ],
        &[],
        "",
    )
    .await;
    assert!(
        !out.status.success(),
        "a read token cannot be limited to apps"
    );
}
