//! Off-site backups against a real S3-compatible server: moto in server mode, started by
//! `scripts/test` (`ensure_moto`, 127.0.0.1:39517 or MILKCRATE_TEST_S3_PORT). A scheduled run
//! uploads an encrypted archive; retention deletes the oldest on the store; `restore --from
//! s3 --latest` brings data and volume contents back into a fresh data folder; a wrong
//! passphrase and a corrupted object are refused before anything is written; an upload
//! killed before completion leaves nothing listed; work folder and archive are 0700/0600.

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::docker_env::*;
use crate::helpers::*;

const PASSPHRASE: &str = "a long backup passphrase";

/// moto's address; fails the test clearly when nothing answers there.
fn moto() -> String {
    let port = std::env::var("MILKCRATE_TEST_S3_PORT").unwrap_or_else(|_| "39517".into());
    let addr = format!("127.0.0.1:{port}");
    assert!(
        std::net::TcpStream::connect(&addr).is_ok(),
        "no S3-compatible server on {addr}: these tests need moto (run scripts/test, whose ensure_moto installs and starts it, or `pip install 'moto[server]' && moto_server -H 127.0.0.1 -p {port}`)"
    );
    format!("http://{addr}")
}

/// A new bucket on moto.
async fn bucket() -> (String, String) {
    let endpoint = moto();
    let name = format!("mc-{}", rand_suffix());
    let resp = new_client()
        .put(format!("{endpoint}/{name}"))
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "{endpoint} did not create a bucket ({}): is it moto?",
        resp.status()
    );
    (endpoint, name)
}

/// The keys under `prefix/` in the bucket.
async fn keys(endpoint: &str, bucket: &str, prefix: &str) -> Vec<String> {
    let xml = new_client()
        .get(format!("{endpoint}/{bucket}?list-type=2&prefix={prefix}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut out: Vec<String> = xml
        .split("<Key>")
        .skip(1)
        .filter_map(|s| s.split("</Key>").next())
        .map(|k| k.trim_start_matches(&format!("{prefix}/")).to_string())
        .collect();
    out.sort();
    out
}

fn archives(keys: &[String]) -> Vec<String> {
    keys.iter()
        .filter(|k| k.ends_with(".tar.gz.age"))
        .cloned()
        .collect()
}

async fn wait_for<T>(what: &str, secs: u64, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Configures the server's backups: S3 target on `bucket/prefix`, passphrase, `schedule`.
async fn configure(
    app: &TestApp,
    endpoint: &str,
    bucket: &str,
    prefix: &str,
    schedule: &str,
    keep_last: &str,
    volumes: bool,
) {
    let mut fields = vec![
        ("schedule", schedule),
        ("include_sources", "1"),
        ("keep_last", keep_last),
        ("keep_daily", "0"),
        ("keep_weekly", "0"),
        ("passphrase", PASSPHRASE),
        ("recipient", ""),
    ];
    if volumes {
        fields.push(("include_volumes", "1"));
    }
    let resp = app
        .post_form("/admin/backups", "/admin/backups/settings", &fields)
        .await;
    assert_eq!(resp.status(), 303);
    let page = app.get_html("/admin/backups").await;
    assert!(page.contains("Backup settings saved"), "{page}");
    let resp = app
        .post_form(
            "/admin/backups",
            "/admin/backups/targets",
            &[
                ("kind", "s3"),
                ("endpoint", endpoint),
                ("region", "us-east-1"),
                ("bucket", bucket),
                ("prefix", prefix),
                ("access_key", "testing"),
                ("secret_key", "testing-secret"),
            ],
        )
        .await;
    assert_eq!(resp.status(), 303);
    let page = app.get_html("/admin/backups").await;
    assert!(page.contains("Backup target added"), "{page}");
}

fn restore_cmd(
    data: &Path,
    endpoint: &str,
    location: &str,
    passphrase: &str,
) -> std::process::Command {
    let mut c = milkcrate_command();
    c.args([
        "restore",
        "--from",
        location,
        "--data-dir",
        data.to_str().unwrap(),
        "--yes",
    ])
    .env("MILKCRATE_S3_ENDPOINT", endpoint)
    .env("MILKCRATE_S3_ACCESS_KEY", "testing")
    .env("MILKCRATE_S3_SECRET_KEY", "testing-secret")
    .env("MILKCRATE_BACKUP_PASSPHRASE", passphrase)
    .stdin(Stdio::null());
    c
}

fn output(c: impl std::borrow::BorrowMut<std::process::Command>) -> Output {
    let mut c = c;
    c.borrow_mut().output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Names in `dir` (none when it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_scheduled_backup_uploads_encrypted_and_restore_from_s3_brings_the_data_back() {
    let (endpoint, bucket) = bucket().await;
    let app = spawn_engine_app().await;
    // A volume holding a file.
    let vol = format!("off{}", rand_suffix());
    let resp = app
        .post_form(
            "/admin/volumes/create",
            "/admin/volumes/create",
            &[("volume_name", &vol), ("description", "")],
        )
        .await;
    assert_eq!(resp.status(), 303);
    let docker_vol = format!("milkcrate-{}-vol-{vol}", app.instance);
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
        "echo 'kept off-site' > /v/a.txt",
    ]);
    configure(&app, &endpoint, &bucket, "site", "* * * * *", "5", true).await;

    // The schedule fires within a minute; the run uploads an archive and its checksum.
    let found = wait_for("the scheduled backup on the store", 150, async || {
        let k = keys(&endpoint, &bucket, "site").await;
        let a = archives(&k);
        (a.len() == 1 && k.contains(&format!("{}.sha256", a[0]))).then(|| a[0].clone())
    })
    .await;
    let object = new_client()
        .get(format!("{endpoint}/{bucket}/site/{found}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        object.starts_with(b"age-encryption.org/"),
        "the object is not encrypted"
    );
    let page = wait_for("the run shown as succeeded", 30, async || {
        let p = app.get_html("/admin/backups").await;
        p.contains("succeeded").then_some(p)
    })
    .await;
    assert!(page.contains("schedule") && page.contains(&found), "{page}");
    let audit = std::fs::read_to_string(app.data_dir.join("audit.log")).unwrap();
    assert!(audit.contains("\"backup\""), "the run is audited");

    // A fresh machine: the volume is gone, and so is the data folder.
    docker(&["volume", "rm", &docker_vol]);
    let fresh = tempfile::tempdir().unwrap();
    let data = fresh.path().join("data");
    let location = format!("s3://{bucket}/site");

    // A wrong passphrase is refused before anything is written.
    let wrong = output(restore_cmd(
        &data,
        &endpoint,
        &location,
        "not the passphrase at all",
    ));
    assert!(!wrong.status.success());
    assert!(
        text(&wrong).contains("does not open this backup"),
        "{}",
        text(&wrong)
    );
    assert_eq!(
        entries(fresh.path()),
        Vec::<String>::new(),
        "nothing may be left behind"
    );

    // The list, then the newest.
    let list = output(restore_cmd(&data, &endpoint, &location, PASSPHRASE).arg("--list"));
    assert!(
        list.status.success() && text(&list).contains(&found),
        "{}",
        text(&list)
    );
    let mut cmd = restore_cmd(&data, &endpoint, &location, PASSPHRASE);
    cmd.arg("--latest").env("MILKCRATE_INSTANCE", &app.instance);
    let done = output(cmd);
    assert!(done.status.success(), "{}", text(&done));
    assert!(data.join("milkcrate.sqlite").is_file());
    assert!(data.join("secret_key").is_file());
    let store = milkcrate::store::Store::open(&data.join("milkcrate.sqlite")).unwrap();
    assert_eq!(store.count_volumes().unwrap(), 1);
    let content = docker(&[
        "run",
        "--rm",
        "--label",
        TEST_LABEL,
        "-v",
        &format!("{docker_vol}:/v"),
        BASE_IMAGE,
        "cat",
        "/v/a.txt",
    ]);
    assert_eq!(content.trim(), "kept off-site");
    assert!(
        entries(fresh.path()).iter().all(|e| e == "data"),
        "the download is removed: {:?}",
        entries(fresh.path())
    );
}

async fn run_now_and_wait(app: &TestApp, n: usize) {
    let resp = app
        .post_form("/admin/backups", "/admin/backups/run", &[])
        .await;
    assert_eq!(resp.status(), 303);
    wait_for("the manual run to finish", 60, async || {
        let p = app.get_html("/admin/backups").await;
        let done = p.matches("state state-ok").count() + p.matches("state state-bad").count();
        assert!(!p.contains("state state-bad"), "a run failed: {p}");
        (done >= n && !p.contains("state state-warn")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn retention_deletes_the_oldest_on_the_store_and_a_corrupted_object_is_refused() {
    let (endpoint, bucket) = bucket().await;
    let app = spawn_app().await;
    app.login_as_admin().await;
    configure(&app, &endpoint, &bucket, "keep", "", "2", false).await;
    let mut made = Vec::new();
    for n in 1..=3 {
        run_now_and_wait(&app, n).await;
        let now = archives(&keys(&endpoint, &bucket, "keep").await);
        made.extend(
            now.into_iter()
                .filter(|a| !made.contains(a))
                .collect::<Vec<_>>(),
        );
    }
    let names = archives(&keys(&endpoint, &bucket, "keep").await);
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(made.len(), 3, "{made:?}");
    assert!(
        !names.contains(&made[0]),
        "the oldest goes: {made:?} {names:?}"
    );
    assert!(names.contains(&made[1]) && names.contains(&made[2]));
    // The two newest stay: names sort by time, then by their counter.
    let key = |n: &String| milkcrate::domain::backup_plan::backup_sort_key(n).unwrap();
    let mut sorted = names.clone();
    sorted.sort_by_key(key);
    let all_keys = keys(&endpoint, &bucket, "keep").await;
    assert_eq!(
        all_keys.len(),
        4,
        "each kept archive has its checksum: {all_keys:?}"
    );
    let page = app.get_html("/admin/backups").await;
    assert_eq!(page.matches("state state-ok").count(), 3);

    // Corrupt the newest object: the restore refuses it by its checksum, writing nothing.
    let newest = sorted.last().unwrap();
    let url = format!("{endpoint}/{bucket}/keep/{newest}");
    let mut bytes = new_client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    new_client().put(&url).body(bytes).send().await.unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let data = fresh.path().join("data");
    let out = output(restore_cmd(
        &data,
        &endpoint,
        &format!("s3://{bucket}/keep"),
        PASSPHRASE,
    ));
    assert!(!out.status.success());
    assert!(
        text(&out).contains("does not match its checksum"),
        "{}",
        text(&out)
    );
    assert_eq!(entries(fresh.path()), Vec::<String>::new());
}

/// `milkcrate backup --to s3://…` of `data`, stopped at `step`, then killed with SIGKILL.
fn kill_upload_at(data: &Path, endpoint: &str, location: &str, step: &str) {
    let mut child = milkcrate_command()
        .args([
            "backup",
            "--no-volumes",
            "--to",
            location,
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .env("MILKCRATE_S3_ENDPOINT", endpoint)
        .env("MILKCRATE_S3_ACCESS_KEY", "testing")
        .env("MILKCRATE_S3_SECRET_KEY", "testing-secret")
        .env("MILKCRATE_BACKUP_PASSPHRASE", PASSPHRASE)
        .env("MILKCRATE_TEST_PAUSE_AT", step)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains(&format!("paused at {step}")) => break,
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("the backup never reached {step}: {seen:?}");
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn an_upload_killed_before_it_completes_leaves_no_backup_on_the_store() {
    let (endpoint, bucket) = bucket().await;
    let app = spawn_app().await;
    let data = app.data_dir.clone();
    let location = format!("s3://{bucket}/cut");
    let (e, l, d) = (endpoint.clone(), location.clone(), data.clone());
    tokio::task::spawn_blocking(move || kill_upload_at(&d, &e, &l, "backup-upload-completing"))
        .await
        .unwrap();
    assert_eq!(keys(&endpoint, &bucket, "cut").await, Vec::<String>::new());
    let fresh = tempfile::tempdir().unwrap();
    let list = output(
        restore_cmd(&fresh.path().join("data"), &endpoint, &location, PASSPHRASE).arg("--list"),
    );
    assert!(text(&list).contains("No backups"), "{}", text(&list));

    // The next backup completes, and is the one backup there.
    let ok = output({
        let mut c = milkcrate_command();
        c.args([
            "backup",
            "--no-volumes",
            "--to",
            &location,
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .env("MILKCRATE_S3_ENDPOINT", &endpoint)
        .env("MILKCRATE_S3_ACCESS_KEY", "testing")
        .env("MILKCRATE_S3_SECRET_KEY", "testing-secret")
        .env("MILKCRATE_BACKUP_PASSPHRASE", PASSPHRASE)
        .stdin(Stdio::null());
        c
    });
    assert!(ok.status.success(), "{}", text(&ok));
    assert_eq!(archives(&keys(&endpoint, &bucket, "cut").await).len(), 1);
    // Off-site copies are always encrypted.
    let plain = output({
        let mut c = milkcrate_command();
        c.args([
            "backup",
            "--no-volumes",
            "--to",
            &location,
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .env("MILKCRATE_S3_ENDPOINT", &endpoint)
        .env("MILKCRATE_S3_ACCESS_KEY", "testing")
        .env("MILKCRATE_S3_SECRET_KEY", "testing-secret")
        .stdin(Stdio::null());
        c
    });
    assert!(!plain.status.success());
    assert!(
        text(&plain).contains("always encrypted"),
        "{}",
        text(&plain)
    );
}

#[tokio::test]
async fn the_work_folder_is_0700_and_the_archive_0600_under_umask_022() {
    let app = spawn_app().await;
    let data = app.data_dir.clone();
    let out = tempfile::tempdir().unwrap();
    let backups = out.path().join("backups");
    // A shell sets the umask, then becomes the real binary.
    let mut child = std::process::Command::new("sh")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args([
            "-c",
            &format!(
                "umask 022; exec '{}' backup --no-volumes --data-dir '{}' -o '{}'",
                env!("CARGO_BIN_EXE_milkcrate"),
                data.display(),
                backups.display()
            ),
        ])
        .env("MILKCRATE_TEST_PAUSE_AT", "backup-writing-archive")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let paused = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("paused at backup-writing-archive"))
    });
    let reached = tokio::time::timeout(Duration::from_secs(60), paused).await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let work_root = data.join("backup-work");
    let work: Vec<_> = entries(&work_root);
    let parts: Vec<_> = entries(&backups);
    let modes = (
        mode(&work_root),
        work.first().map(|w| mode(&work_root.join(w))),
        parts.first().map(|p| mode(&backups.join(p))),
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(matches!(reached, Ok(Ok(true))), "the backup never paused");
    assert_eq!(work.len(), 1, "{work:?}");
    assert!(parts.len() == 1 && parts[0].ends_with(".part"), "{parts:?}");
    assert_eq!(modes, (0o700, Some(0o700), Some(0o600)));
}

#[tokio::test]
async fn bad_backup_settings_are_refused_plainly_and_a_failed_run_is_shown() {
    let app = spawn_app().await;
    app.login_as_admin().await;
    for (field, value, says) in [
        ("schedule", "daily at 25:00", "the hour must be 0 to 23"),
        ("schedule", "every tuesday", "is not a schedule"),
        ("keep_last", "-1", "Keep last must be a number"),
        ("recipient", "age1nope", "is not an age recipient"),
        ("passphrase", "short", "at least 12 characters"),
    ] {
        let resp = app
            .post_form(
                "/admin/backups",
                "/admin/backups/settings",
                &[(field, value)],
            )
            .await;
        assert_eq!(resp.status(), 303);
        let page = app.get_html("/admin/backups").await;
        assert!(page.contains(says), "{field}={value}: {page}");
    }
    // Nothing of it was saved: the defaults are still there.
    let page = app.get_html("/admin/backups").await;
    assert!(
        page.contains("no schedule") && page.contains("Archives are not encrypted"),
        "{page}"
    );
    for (fields, says) in [
        (
            vec![("kind", "folder"), ("folder", "relative/path")],
            "absolute path",
        ),
        (
            vec![
                ("kind", "s3"),
                ("endpoint", "http://127.0.0.1:1"),
                ("region", "us-east-1"),
                ("bucket", "Bad_Bucket"),
                ("access_key", "a"),
                ("secret_key", "b"),
            ],
            "is not a bucket name",
        ),
    ] {
        app.post_form("/admin/backups", "/admin/backups/targets", &fields)
            .await;
        let page = app.get_html("/admin/backups").await;
        assert!(page.contains(says), "{page}");
    }
    // A target nobody answers at: the run fails, and the page says why.
    app.post_form(
        "/admin/backups",
        "/admin/backups/settings",
        &[("passphrase", PASSPHRASE), ("keep_last", "3")],
    )
    .await;
    app.post_form(
        "/admin/backups",
        "/admin/backups/targets",
        &[
            ("kind", "s3"),
            ("endpoint", "http://127.0.0.1:1"),
            ("region", "us-east-1"),
            ("bucket", "nobody-home"),
            ("prefix", "x"),
            ("access_key", "a"),
            ("secret_key", "never-shown-secret"),
        ],
    )
    .await;
    let page = app.get_html("/admin/backups").await;
    assert!(
        !page.contains("never-shown-secret"),
        "the secret key is never shown"
    );
    app.post_form("/admin/backups", "/admin/backups/run", &[])
        .await;
    let page = wait_for("the run to fail", 60, async || {
        let p = app.get_html("/admin/backups").await;
        p.contains("state state-bad").then_some(p)
    })
    .await;
    assert!(page.contains("cannot reach the S3 endpoint"), "{page}");
    let audit = std::fs::read_to_string(app.data_dir.join("audit.log")).unwrap();
    assert!(!audit.contains("never-shown-secret") && !audit.contains(PASSPHRASE));
    assert!(audit.contains("backup_target") && audit.contains("cannot reach the S3 endpoint"));
}
