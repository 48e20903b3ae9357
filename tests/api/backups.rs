//! Backups under faults, through the real binary: a backup killed (`kill -9`) at a chosen step
//! — through the test-only pause hook `MILKCRATE_TEST_PAUSE_AT` — leaves nothing `restore`
//! would pick, and the next backup or server start removes what it left (work folder,
//! unfinished archive, helper container); archives are 0600; two backups at once make two.

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::docker_env::*;
use crate::helpers::*;

fn backup(data: &Path, out: &Path, instance: &str) -> std::process::Command {
    let mut c = milkcrate_command();
    c.args([
        "backup",
        "--data-dir",
        data.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ])
    .env("MILKCRATE_INSTANCE", instance)
    .stdin(Stdio::null());
    c
}

fn run(mut c: std::process::Command) -> Output {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Starts a backup that stops at `step`, waits until it says so, then kills it with SIGKILL.
fn kill_backup_at(data: &Path, out: &Path, instance: &str, step: &str) {
    let mut child = backup(data, out, instance)
        .env("MILKCRATE_TEST_PAUSE_AT", step)
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
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(&format!("paused at {step}")) => break,
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("the backup never reached {step}: {seen:?}");
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

fn archives(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .collect();
    v.sort();
    v
}

fn parts(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".part"))
        .collect()
}

fn work_folders(data: &Path) -> usize {
    std::fs::read_dir(data.join("backup-work"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn backup_helpers(instance: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=milkcrate.instance={instance}"),
        "--filter",
        "label=milkcrate.role=backup-helper",
    ])
    .split_whitespace()
    .map(String::from)
    .collect()
}

/// An engine app with a volume holding one file; returns the app and the volume's name.
async fn app_with_named_volume() -> (EngineApp, String) {
    let app = spawn_engine_app().await;
    let vol_name = format!("bk{}", rand_suffix());
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
        &format!("milkcrate-{}-vol-{vol_name}:/v", app.instance),
        BASE_IMAGE,
        "sh",
        "-c",
        "echo 'kept data' > /v/a.txt",
    ]);
    (app, vol_name)
}

async fn app_with_volume() -> EngineApp {
    app_with_named_volume().await.0
}

#[tokio::test]
async fn a_backup_killed_mid_way_leaves_nothing_restore_picks_and_the_next_backup_cleans_up() {
    let app = app_with_volume().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("backups");
    let data = app.data_dir.clone();
    let inst = app.instance.clone();

    let in_blocking = |f: Box<dyn FnOnce() + Send>| tokio::task::spawn_blocking(f);
    let (d, o, i) = (data.clone(), out.clone(), inst.clone());
    in_blocking(Box::new(move || {
        run(backup(&d, &o, &i));
        kill_backup_at(&d, &o, &i, "backup-reading-volume");
    }))
    .await
    .unwrap();
    assert_eq!(
        backup_helpers(&inst).len(),
        1,
        "the run killed while reading a volume left its helper"
    );
    assert!(work_folders(&data) >= 1, "and its work folder");
    let (d, o, i) = (data.clone(), out.clone(), inst.clone());
    in_blocking(Box::new(move || {
        kill_backup_at(&d, &o, &i, "backup-writing-archive");
    }))
    .await
    .unwrap();
    assert!(
        backup_helpers(&inst).is_empty(),
        "the next backup removed the dead one's helper"
    );
    let good = archives(&out);
    assert_eq!(
        good.len(),
        1,
        "only the complete backup has a backup's name"
    );
    assert_eq!(parts(&out).len(), 1, "the unfinished one is a .part");
    assert_eq!(work_folders(&data), 1, "the last killed run's work folder");

    // restore without a path takes the complete one.
    let restored = dir.path().join("restored");
    let mut restore = milkcrate_command();
    restore
        .args([
            "restore",
            "--yes",
            "--data-dir",
            restored.to_str().unwrap(),
            "--backup-dir",
            out.to_str().unwrap(),
        ])
        .env("MILKCRATE_INSTANCE", &inst);
    let done = tokio::task::spawn_blocking(move || run(restore))
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&done.stdout).to_string();
    assert!(
        said.contains(&good[0].display().to_string()) && said.contains("is intact"),
        "{said}"
    );
    assert!(restored.join("milkcrate.sqlite").is_file());

    // The next backup removes what the killed ones left, and adds its own archive.
    let next = tokio::task::spawn_blocking({
        let (data, out, inst) = (data.clone(), out.clone(), inst.clone());
        move || run(backup(&data, &out, &inst))
    })
    .await
    .unwrap();
    assert!(
        String::from_utf8_lossy(&next.stderr).contains("interrupted backup"),
        "{}",
        String::from_utf8_lossy(&next.stderr)
    );
    assert_eq!(archives(&out).len(), 2);
    assert!(parts(&out).is_empty(), "{:?}", parts(&out));
    assert_eq!(work_folders(&data), 0);
    assert!(
        backup_helpers(&inst).is_empty(),
        "{:?}",
        backup_helpers(&inst)
    );
}

#[tokio::test]
async fn a_helper_left_by_a_killed_backup_is_removed_when_the_server_starts() {
    let app = app_with_volume().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("backups");
    let (data, inst) = (app.data_dir.clone(), app.instance.clone());
    tokio::task::spawn_blocking({
        let (data, out, inst) = (data.clone(), out.clone(), inst.clone());
        move || kill_backup_at(&data, &out, &inst, "backup-reading-volume")
    })
    .await
    .unwrap();
    assert_eq!(backup_helpers(&inst).len(), 1);
    assert!(work_folders(&data) >= 1);
    // A helper of another install with a dead owner is not this server's to remove.
    let foreign = docker(&[
        "create",
        "--label",
        TEST_LABEL,
        "--label",
        "milkcrate.role=backup-helper",
        "--label",
        "milkcrate.data-dir=0000000000000000",
        "--label",
        "milkcrate.owner=4194303999-1",
        BASE_IMAGE,
        "true",
    ]);
    let foreign = foreign.trim().to_string();

    // The server starts again on the same data folder.
    let inst2 = inst.clone();
    let again = spawn_in(data.clone(), move |s| {
        s.set_instance(&inst2);
        s.network = NETWORK.into();
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(backup_helpers(&inst).is_empty() && work_folders(&data) == 0) {
        assert!(
            Instant::now() < deadline,
            "start-up did not remove the leftovers: helpers {:?}, work folders {}",
            backup_helpers(&inst),
            work_folders(&data)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let still = docker(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("id={foreign}"),
    ]);
    docker(&["rm", "-f", &foreign]);
    assert!(
        still.contains(&foreign),
        "another install's helper was left alone"
    );
    again.stop().await;
}

#[test]
fn backups_are_private_and_three_at_once_make_three() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("b");
    std::fs::create_dir_all(&data).unwrap();
    milkcrate::store::Store::open(&data.join("milkcrate.sqlite")).unwrap();
    std::fs::write(data.join("secret_key"), "k".repeat(40)).unwrap();
    let start = |_: usize| {
        let mut c = backup(&data, &out, "unused");
        c.arg("--no-volumes")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let children: Vec<_> = (0..3).map(start).collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let made = archives(&out);
    assert_eq!(made.len(), 3, "{made:?}");
    for a in &made {
        let mode = std::fs::metadata(a).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", a.display());
    }
    assert!(parts(&out).is_empty());
}

#[test]
fn a_backup_onto_a_full_disk_says_so_and_leaves_no_partial_archive() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("small");
    let _disk = crate::spool::SmallDisk::mount(out.clone(), "1m");
    std::fs::create_dir_all(data.join("apps/big")).unwrap();
    milkcrate::store::Store::open(&data.join("milkcrate.sqlite")).unwrap();
    // App sources that do not compress: the archive outgrows the 1 MiB disk.
    let mut noise = vec![0u8; 3 << 20];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(data.join("apps/big/1.zip"), &noise).unwrap();
    let o = backup(&data, &out, "unused")
        .arg("--no-volumes")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("The disk is full"), "{err}");
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        0,
        "no partial archive is left"
    );
    assert_eq!(work_folders(&data), 0);
}

#[tokio::test]
async fn a_volume_a_killed_backup_was_reading_can_be_deleted_at_once() {
    let (app, vol) = app_with_named_volume().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("backups");
    let (data, inst) = (app.data_dir.clone(), app.instance.clone());
    tokio::task::spawn_blocking({
        let (data, out, inst) = (data.clone(), out.clone(), inst.clone());
        move || kill_backup_at(&data, &out, &inst, "backup-reading-volume")
    })
    .await
    .unwrap();
    assert_eq!(
        backup_helpers(&inst).len(),
        1,
        "its helper holds the volume"
    );
    let list: serde_json::Value = app
        .get("/admin/volumes/api/list")
        .await
        .json()
        .await
        .unwrap();
    let id = list["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["volume_name"] == vol.as_str())
        .unwrap()["volume_id"]
        .as_i64()
        .unwrap();
    let resp = app
        .post_form(
            &format!("/admin/volumes/{id}"),
            &format!("/admin/volumes/{id}/delete"),
            &[],
        )
        .await;
    assert_eq!(resp.status(), 303);
    let page = unescape(&app.get_html(&location(&resp)).await);
    assert!(page.contains("deleted successfully"), "{page}");
    assert!(backup_helpers(&inst).is_empty());
    let gone = std::process::Command::new("docker")
        .args(["volume", "inspect", &format!("milkcrate-{inst}-vol-{vol}")])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "the Docker volume is gone");
}
