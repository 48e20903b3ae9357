//! Uploads under faults: a client that leaves while its volume upload is being written, a
//! server killed with files in `uploads/`, and a full disk (a small tmpfs as data folder).
//! A volume file lands whole or not at all, spooled files never outlive their request or a
//! restart, and a full disk is reported as such, not blamed on the file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::docker_env::*;
use crate::helpers::*;

async fn engine_app_with(adjust: impl FnOnce(&mut milkcrate::config::Settings)) -> EngineApp {
    ensure_base_image();
    let instance = format!("test-{}", rand_suffix());
    let inst = instance.clone();
    let app = spawn_app_with(move |s| {
        s.set_instance(&inst);
        s.network = NETWORK.into();
        adjust(s);
    })
    .await;
    app.login_as_admin().await;
    EngineApp { app, instance }
}

/// Creates volume `name` through the UI and returns its id.
async fn create_volume(app: &EngineApp, name: &str) -> i64 {
    let resp = app
        .post_form(
            "/admin/volumes/create",
            "/admin/volumes/create",
            &[("volume_name", name), ("description", "")],
        )
        .await;
    assert_eq!(resp.status(), 303);
    let list: serde_json::Value = app
        .get("/admin/volumes/api/list")
        .await
        .json()
        .await
        .unwrap();
    list["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["volume_name"] == name)
        .unwrap()["volume_id"]
        .as_i64()
        .unwrap()
}

/// Signs in with a client that keeps no cookie jar, and returns the `Cookie` header value.
async fn raw_session(app: &TestApp) -> String {
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookies_of = |resp: &reqwest::Response, into: &mut Vec<String>| {
        for c in set_cookies(resp) {
            let pair = c.split(';').next().unwrap_or_default().to_string();
            let name = pair.split('=').next().unwrap_or_default().to_string();
            into.retain(|p| !p.starts_with(&format!("{name}=")));
            into.push(pair);
        }
    };
    let mut jar = Vec::new();
    let page = plain.get(app.url("/login")).send().await.unwrap();
    cookies_of(&page, &mut jar);
    let token = csrf_token(&page.text().await.unwrap());
    let resp = plain
        .post(app.url("/login"))
        .header("cookie", jar.join("; "))
        .form(&[("csrf_token", token.as_str()), ("password", "admin")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303, "signed in");
    cookies_of(&resp, &mut jar);
    jar.join("; ")
}

fn uploads_in(data: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(data.join("uploads"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

/// The size of `/v/<name>` in the Docker volume, or `None` when it is not there.
fn size_in_volume(docker_name: &str, name: &str) -> Option<u64> {
    let out = std::process::Command::new("docker")
        .args([
            "run",
            "--rm",
            "--label",
            TEST_LABEL,
            "-v",
            &format!("{docker_name}:/v:ro"),
            BASE_IMAGE,
            "ls",
            "-ln",
            &format!("/v/{name}"),
        ])
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(4)
        .and_then(|s| s.parse().ok())
}

#[tokio::test]
async fn a_volume_upload_whose_client_leaves_while_it_is_written_lands_whole_and_leaves_no_spool() {
    let app = engine_app_with(|s| s.max_content_length = 512 << 20).await;
    let vol = format!("cut{}", rand_suffix());
    let id = create_volume(&app, &vol).await;
    let cookie = raw_session(&app).await;
    let page = reqwest::Client::new()
        .get(app.url(&format!("/admin/volumes/{id}")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = csrf_token(&page);

    // 160 MiB: writing it into the volume takes the engine a while after the body is in.
    let size: usize = 160 << 20;
    let boundary = "----milkcrate-cut";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{token}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let length = head.len() + size + tail.len();
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let request = format!(
        "POST /admin/volumes/{id}/upload HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {length}\r\n\r\n{head}"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..(size >> 20) {
        s.write_all(&chunk).await.unwrap();
    }
    s.write_all(tail.as_bytes()).await.unwrap();
    // The client goes away without reading the answer, once the server writes into the
    // volume (its helper container exists).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let helpers = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=milkcrate.instance={}", app.instance),
            "--filter",
            "label=milkcrate.role=volume-helper",
        ]);
        if !helpers.trim().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the upload never reached the engine"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(s);

    // When the spooled file is gone, the request's work is over: the file is then in the
    // volume whole, or not at all.
    let deadline = Instant::now() + Duration::from_secs(90);
    while !uploads_in(&app.data_dir).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the spooled upload stayed in uploads/: {:?}",
            uploads_in(&app.data_dir)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let landed = size_in_volume(&format!("milkcrate-{}-vol-{vol}", app.instance), "big.bin");
    assert_eq!(
        landed,
        Some(size as u64),
        "the upload was cut when its client left"
    );
}

#[tokio::test]
async fn the_server_start_removes_spooled_files_a_killed_server_left() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("instance");
    let uploads = data.join("uploads");
    std::fs::create_dir_all(&uploads).unwrap();
    // A killed server's spool (its owner, pid and start time, is gone), a build context of an
    // older version (no owner in its name), and a live process's file.
    let dead = uploads.join("volfile-4194303999-1-abcdef");
    let old = uploads.join("context-abcdef.tar");
    let live = uploads.join(format!(
        "upload-{}-{}-abc.zip",
        std::process::id(),
        std::fs::read_to_string("/proc/self/stat")
            .unwrap()
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .nth(19)
            .unwrap()
    ));
    for f in [&dead, &old, &live] {
        std::fs::write(f, b"left").unwrap();
    }
    // Written before this start.
    std::thread::sleep(Duration::from_millis(20));
    let app = spawn_in(data.clone(), |_| {}).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while dead.exists() || old.exists() {
        assert!(Instant::now() < deadline, "{:?}", uploads_in(&data));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(live.exists(), "a live process's file is kept");
    app.stop().await;
}

/// Mounts a `size` tmpfs at `dir` (the tests run as root); unmounted when dropped.
pub struct SmallDisk(PathBuf);

impl SmallDisk {
    pub fn mount(dir: PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .output();
    }
}

#[tokio::test]
async fn a_full_disk_is_reported_as_a_full_disk_and_the_spool_goes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("instance");
    let _disk = SmallDisk::mount(data.clone(), "3m");
    let instance = format!("test-{}", rand_suffix());
    let inst = instance.clone();
    let app = spawn_in(data.clone(), move |s| {
        s.set_instance(&inst);
        s.network = NETWORK.into();
        s.max_content_length = 64 << 20;
    })
    .await;
    app.login_as_admin().await;
    let app = EngineApp { app, instance };

    // An app upload larger than the disk: incompressible bytes in a stored ZIP entry.
    let mut noise = vec![0u8; 6 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let zip = zip_of(&[
        ("Dockerfile", b"FROM scratch\n".as_slice(), 0o644),
        ("blob.bin", noise.as_slice(), 0o644),
    ]);
    let resp = app
        .upload(
            &[
                ("app_name", "full"),
                ("public_route", "/full"),
                ("internal_port", "8080"),
            ],
            zip,
            "full.zip",
        )
        .await;
    let text = unescape(&resp.text().await.unwrap());
    assert!(text.contains("The disk is full"), "{text}");
    assert!(!text.contains("not a valid ZIP"), "{text}");
    assert!(uploads_in(&data).is_empty(), "{:?}", uploads_in(&data));

    // A volume upload larger than the disk.
    let vol = format!("full{}", rand_suffix());
    let id = create_volume(&app, &vol).await;
    let token = csrf_token(&app.get_html(&format!("/admin/volumes/{id}")).await);
    let form = reqwest::multipart::Form::new()
        .text("csrf_token", token)
        .part(
            "files",
            reqwest::multipart::Part::bytes(noise).file_name("big.bin"),
        );
    let resp = app
        .client
        .post(app.url(&format!("/admin/volumes/{id}/upload")))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let page = unescape(&app.get_html(&location(&resp)).await);
    assert!(page.contains("The disk is full"), "{page}");
    assert!(uploads_in(&data).is_empty(), "{:?}", uploads_in(&data));
}

/// The real server, killed (`kill -9`) after the engine has unpacked an upload and before it
/// was put in place: nothing is under the real name — the files wait under temporary names.
#[tokio::test]
async fn a_server_killed_during_a_volume_upload_leaves_no_file_under_the_real_name() {
    use std::io::BufRead;
    ensure_base_image();
    let dir = tempfile::tempdir().unwrap();
    let instance = format!("test-{}", rand_suffix());
    let mut child = milkcrate_command()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("MILKCRATE_DATA_DIR", dir.path().join("instance"))
        .env("MILKCRATE_INSTANCE", &instance)
        .env("TRAEFIK_NETWORK", NETWORK)
        .env("MILKCRATE_TEST_PAUSE_AT", "volume-upload-written")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut child = KillOnDrop(child);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let line = wait_line(&rx, "listening on");
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .unwrap_or_else(|| panic!("an address in {line:?}"))
        .to_string();
    let base = format!("http://{addr}");
    let client = new_client();
    let token_of = |html: String| csrf_token(&html);
    let page = |path: &str| {
        let (client, url) = (client.clone(), format!("{base}{path}"));
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let token = token_of(page("/login").await);
    let resp = client
        .post(format!("{base}/login"))
        .form(&[("csrf_token", token.as_str()), ("password", "admin")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let vol = format!("kill{}", rand_suffix());
    let token = token_of(page("/admin/volumes/create").await);
    let resp = client
        .post(format!("{base}/admin/volumes/create"))
        .form(&[
            ("csrf_token", token.as_str()),
            ("volume_name", vol.as_str()),
            ("description", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let list: serde_json::Value = client
        .get(format!("{base}/admin/volumes/api/list"))
        .send()
        .await
        .unwrap()
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
    let volume_page = format!("/admin/volumes/{id}");
    let token = token_of(page(&volume_page).await);
    let form = reqwest::multipart::Form::new()
        .text("csrf_token", token)
        .part(
            "files",
            reqwest::multipart::Part::bytes(vec![b'k'; 100_000]).file_name("whole.bin"),
        );
    let upload = tokio::spawn(
        client
            .post(format!("{base}{volume_page}/upload"))
            .multipart(form)
            .send(),
    );
    let paused =
        tokio::task::spawn_blocking(move || wait_line(&rx, "paused at volume-upload-written"))
            .await;
    if paused.is_err() {
        let answer = upload.await.unwrap().unwrap();
        panic!(
            "the upload did not pause: {} {}",
            answer.status(),
            answer
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap_or(""))
                .unwrap_or("")
        );
    }
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    let _ = upload.await;

    let docker_vol = format!("milkcrate-{instance}-vol-{vol}");
    let listing = docker(&[
        "run",
        "--rm",
        "--label",
        TEST_LABEL,
        "-v",
        &format!("{docker_vol}:/v:ro"),
        BASE_IMAGE,
        "ls",
        "-a",
        "/v",
    ]);
    // Clean up what this server made before asserting.
    let label = format!("label=milkcrate.instance={instance}");
    for id in docker(&["ps", "-aq", "--filter", &label]).split_whitespace() {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", id])
            .output();
    }
    let _ = std::process::Command::new("docker")
        .args(["volume", "rm", "-f", &docker_vol])
        .output();
    assert!(!listing.contains("whole.bin"), "{listing}");
    assert!(listing.contains(".milkcrate-upload-"), "{listing}");
}

/// The first line from `rx` that contains `what` (within a minute).
fn wait_line(rx: &std::sync::mpsc::Receiver<String>, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(what) => return line,
            Ok(_) => {}
            Err(_) => panic!("the server never said {what:?}"),
        }
    }
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
