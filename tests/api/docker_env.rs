//! What the real-engine tests share: the busybox base image (imported from Debian's static
//! busybox, since no registry can be reached), an app started with its own instance label so
//! everything it creates can be found and removed, ZIP builders, and a docker CLI witness.
//! A test that needs the engine and finds none FAILS with a message saying so.

use std::io::Write;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::helpers::*;

pub const BASE_IMAGE: &str = "milkcrate-test/busybox:2";
/// Outside milkcrate's label namespaces: an image bringing `milkcrate.*` labels is refused.
pub const TEST_LABEL: &str = "milkcrate-test=true";
pub const NETWORK: &str = "milkcrate-test";

static IMAGE_LOCK: Mutex<()> = Mutex::new(());

/// Runs the docker CLI (the tests' independent witness of the engine) and returns stdout.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI is installed (scripts/test installs docker.io)");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn require_engine() {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "these tests need a running Docker Engine and none answers; run them with scripts/test, which starts dockerd"
    );
}

/// Imports `milkcrate-test/busybox:2` from /bin/busybox (Debian's busybox-static) once.
pub fn ensure_base_image() {
    require_engine();
    let _guard = IMAGE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if image_exists(BASE_IMAGE) {
        return;
    }
    let busybox = std::path::Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "/bin/busybox is missing: install Debian's busybox-static (scripts/test does)"
    );
    let root = tempfile::tempdir().unwrap();
    let bin = root.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(root.path().join("tmp")).unwrap();
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    for tool in [
        "sh", "httpd", "wget", "echo", "cat", "sleep", "ls", "env", "id", "touch", "printf",
        "date", "grep", "true", "false", "nc",
    ] {
        std::os::unix::fs::symlink("busybox", bin.join(tool)).unwrap();
    }
    import_folder(root.path(), ".", BASE_IMAGE, &["ENV PATH=/bin"]);
}

fn image_exists(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// `docker import`s `what` of `root` as `image`, with the test label and `changes`.
fn import_folder(root: &std::path::Path, what: &str, image: &str, changes: &[&str]) {
    let tar = Command::new("tar")
        .args(["-C", root.to_str().unwrap(), "-c", what])
        .output()
        .unwrap();
    assert!(tar.status.success());
    let label = format!("LABEL {TEST_LABEL}");
    let mut args = vec!["import", "--change", label.as_str()];
    for c in changes {
        args.extend(["--change", c]);
    }
    args.extend(["-", image]);
    let mut import = Command::new("docker")
        .args(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    import.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
    assert!(
        import.wait().unwrap().success(),
        "docker import of {image} failed"
    );
}

/// `milkcrate-test/keepalive:1`: bench/upstream.rs (a keep-alive HTTP/1.1 server, standard
/// library only) compiled here with rustc into one static file and imported, once. busybox httpd
/// closes every connection, so only this exercises the router's upstream pool.
/// The keep-alive upstream (`bench/upstream.rs`) as a test image, built by rustc and imported
/// once per version of its source (the tag is a hash of it); returns the image's name.
pub fn ensure_keepalive_image() -> String {
    require_engine();
    let source = include_bytes!("../../bench/upstream.rs");
    // FNV-1a: a stable tag for this source, so an image built from an older one is not used.
    let hash = source.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let image = format!("milkcrate-test/keepalive:{hash:016x}");
    let _guard = IMAGE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if image_exists(&image) {
        return image;
    }
    let root = tempfile::tempdir().unwrap();
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/upstream.rs");
    let built = Command::new("rustc")
        .args([
            "--edition",
            "2024",
            "-O",
            "-C",
            "target-feature=+crt-static",
            src,
            "-o",
        ])
        .arg(root.path().join("upstream"))
        .status()
        .expect("rustc (the toolchain that runs these tests)");
    assert!(built.success(), "rustc could not build bench/upstream.rs");
    import_folder(root.path(), "upstream", &image, &[]);
    image
}

/// An app wired to the engine: its own instance label, the shared test network, quick status.
pub struct EngineApp {
    pub app: TestApp,
    pub instance: String,
}

impl std::ops::Deref for EngineApp {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

impl Drop for EngineApp {
    /// Removes everything this test's milkcrate created (found by its instance label).
    fn drop(&mut self) {
        let label = format!("label=milkcrate.instance={}", self.instance);
        let ids = docker(&["ps", "-aq", "--filter", &label]);
        for id in ids.split_whitespace() {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
        let images = docker(&["images", "-q", "--filter", &label]);
        for id in images.split_whitespace() {
            let _ = Command::new("docker").args(["rmi", "-f", id]).output();
        }
        let networks = docker(&["network", "ls", "-q", "--filter", &label]);
        for id in networks.split_whitespace() {
            let _ = Command::new("docker").args(["network", "rm", id]).output();
        }
        let volumes = docker(&["volume", "ls", "-q", "--filter", &label]);
        for name in volumes.split_whitespace() {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", name])
                .output();
        }
        for dir in build_cgroups(&self.instance) {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The parent cgroups of this instance's builds (cgroupfs: one per v1 controller, or one in
/// the v2 tree) that exist.
pub fn build_cgroups(instance: &str) -> Vec<std::path::PathBuf> {
    let name = format!("milkcrate-{}-build", instance.to_ascii_lowercase());
    let root = std::path::Path::new("/sys/fs/cgroup");
    let mut dirs: Vec<std::path::PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join(&name))
        .chain([root.join(&name)])
        .filter(|d| d.is_dir())
        .collect();
    dirs.dedup();
    dirs
}

pub async fn spawn_engine_app() -> EngineApp {
    spawn_engine_app_with(|_| {}).await
}

/// [`spawn_engine_app`] with more settings changed by `adjust`.
pub async fn spawn_engine_app_with(
    adjust: impl FnOnce(&mut milkcrate::config::Settings),
) -> EngineApp {
    ensure_base_image();
    ensure_shared_network();
    let instance = format!("test-{}", rand_suffix());
    let inst = instance.clone();
    let app = spawn_app_with(move |s| {
        s.set_instance(&inst);
        s.network = NETWORK.into();
        s.status_interval = Duration::from_millis(500);
        s.stats_interval = Duration::from_secs(1);
        s.probe_interval = Duration::from_secs(1);
        s.start_timeout = Duration::from_secs(10);
        adjust(s);
        // In Traefik mode the shared network is open (Traefik must reach apps on it): such a
        // test gets a network of its own, so the isolated shared one stays isolated.
        if !s.builtin_router && s.network == NETWORK {
            s.network = format!("{NETWORK}-traefik-{}", rand_suffix());
        }
    })
    .await;
    app.login_as_admin().await;
    EngineApp { app, instance }
}

/// The network the tests' apps share, made by the tests (labelled as theirs, isolated as
/// milkcrate makes it) before any milkcrate can: one made by a test's milkcrate carries that
/// test's instance label, so the test's clean-up removed it under the tests still running,
/// whose checks of it then found no network.
pub fn ensure_shared_network() {
    // Another test may be making it at the same moment: the outcome is not checked.
    let _ = Command::new("docker")
        .args([
            "network",
            "create",
            "--label",
            TEST_LABEL,
            "-o",
            "com.docker.network.bridge.enable_icc=false",
            NETWORK,
        ])
        .output();
}

pub fn rand_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{:x}{:x}", std::process::id(), nanos)
}

/// A ZIP of `(path, contents, mode)` entries.
pub fn zip_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut cursor = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut cursor);
        for (name, data, mode) in entries {
            let opts = zip::write::SimpleFileOptions::default().unix_permissions(*mode);
            w.start_file(*name, opts).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap();
    }
    cursor.into_inner()
}

/// A busybox httpd app answering `body` on `/` (port 8080, EXPOSEd).
pub fn web_app_zip(body: &str) -> Vec<u8> {
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nCOPY www /www\nEXPOSE 8080\nCMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    );
    zip_of(&[
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("www/index.html", body.as_bytes(), 0o644),
    ])
}

impl EngineApp {
    /// Posts the upload form (CSRF token as the first part, as the page's form sends it).
    pub async fn upload(
        &self,
        fields: &[(&str, &str)],
        zip: Vec<u8>,
        file_name: &str,
    ) -> reqwest::Response {
        let token = csrf_token(&self.get_html("/upload").await);
        let mut form = reqwest::multipart::Form::new().text("csrf_token", token);
        for (k, v) in fields {
            form = form.text(k.to_string(), v.to_string());
        }
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(zip).file_name(file_name.to_string()),
        );
        self.client
            .post(self.url("/upload"))
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    /// Uploads an update for app `id` from its page's form.
    pub async fn update(&self, id: i64, zip: Vec<u8>) -> reqwest::Response {
        let token = csrf_token(&self.get_html(&format!("/admin/apps/{id}")).await);
        let form = reqwest::multipart::Form::new()
            .text("csrf_token", token)
            .part(
                "file",
                reqwest::multipart::Part::bytes(zip).file_name("app.zip"),
            );
        self.client
            .post(self.url(&format!("/admin/update/{id}")))
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    /// Deploys `zip` as `name` at `route` and waits for success; returns (app id, deploy id).
    pub async fn deploy(&self, name: &str, route: &str, zip: Vec<u8>) -> (i64, i64) {
        let resp = self
            .upload(
                &[("app_name", name), ("public_route", route)],
                zip,
                "app.zip",
            )
            .await;
        assert_eq!(
            resp.status(),
            303,
            "upload accepted: {}",
            resp.text().await.unwrap_or_default()
        );
        let deploy = deploy_id(&location(&resp));
        let page = self.wait_deploy(deploy).await;
        assert!(
            page.contains("data-status=\"succeeded\""),
            "deploy of {name} failed:\n{page}"
        );
        (app_id_from(&page), deploy)
    }

    /// Uploads `zip` as a new app whose deploy must fail; returns the deploy page (HTML
    /// escapes undone).
    pub async fn deploy_failing(&self, name: &str, route: &str, zip: Vec<u8>) -> String {
        let resp = self
            .upload(
                &[("app_name", name), ("public_route", route)],
                zip,
                "app.zip",
            )
            .await;
        assert_eq!(resp.status(), 303, "upload accepted");
        let page = unescape(&self.wait_deploy(deploy_id(&location(&resp))).await);
        assert!(page.contains("data-status=\"failed\""), "{page}");
        page
    }

    /// Polls a deploy's page until it ends; returns the page.
    pub async fn wait_deploy(&self, deploy: i64) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let page = self.get_html(&format!("/admin/deploys/{deploy}")).await;
            if page.contains("data-status=\"succeeded\"") || page.contains("data-status=\"failed\"")
            {
                return page;
            }
            assert!(
                Instant::now() < deadline,
                "deploy {deploy} did not finish:\n{page}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn post_action(&self, page: &str, action: &str) -> reqwest::Response {
        self.post_form(page, action, &[]).await
    }
}

pub fn deploy_id(location: &str) -> i64 {
    location
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("not a deploy page: {location}"))
}

pub fn app_id_from(deploy_page: &str) -> i64 {
    let marker = "href=\"/admin/apps/";
    let start = deploy_page.find(marker).expect("deploy page links its app") + marker.len();
    deploy_page[start..]
        .split('"')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// `docker inspect` of the one running container of app `name` in this instance.
pub fn inspect_app(instance: &str, name: &str) -> serde_json::Value {
    let ids = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=milkcrate.instance={instance}"),
        "--filter",
        &format!("label=milkcrate.app={name}"),
    ]);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    assert_eq!(ids.len(), 1, "one running container for {name}: {ids:?}");
    let json: serde_json::Value = serde_json::from_str(&docker(&["inspect", ids[0]])).unwrap();
    json[0].clone()
}

/// GET on the container's own address (the bridge network is reachable from the host).
pub async fn fetch_from_container(container: &serde_json::Value, path: &str) -> String {
    let ip = container["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]
        .as_str()
        .expect("container has an address on the test network");
    let url = format!("http://{ip}:8080{path}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.get(&url).send().await {
            Ok(r) => return r.text().await.unwrap(),
            Err(e) => {
                assert!(Instant::now() < deadline, "{url} did not answer: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Everything in the engine labelled with app `name` (containers and images) in this instance.
pub fn labelled_leftovers(instance: &str, name: &str) -> (String, String) {
    let f1 = format!("label=milkcrate.instance={instance}");
    let f2 = format!("label=milkcrate.app={name}");
    (
        docker(&["ps", "-aq", "--filter", &f1, "--filter", &f2]),
        docker(&["images", "-q", "--filter", &f1, "--filter", &f2]),
    )
}

/// Waits until `path` through milkcrate answers with `status` (the route table follows the
/// engine within a status refresh).
pub async fn wait_status(app: &EngineApp, path: &str, status: u16) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let resp = app.get(path).await;
        if resp.status() == status {
            return resp;
        }
        assert!(
            Instant::now() < deadline,
            "{path} kept answering {}",
            resp.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `wget` inside container `id` (bounded by `timeout`): exit code and what it printed.
pub fn container_fetch(id: &str, url: &str) -> (i32, String) {
    let out = std::process::Command::new("docker")
        .args([
            "exec",
            id,
            "/bin/busybox",
            "timeout",
            "5",
            "/bin/busybox",
            "wget",
            "-q",
            "-O-",
            url,
        ])
        .output()
        .expect("docker exec");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A labelled container outside milkcrate's networks (on the engine's default bridge) that
/// answers `reached`, published on a host port; removed on drop.
pub struct OutsideServer {
    id: String,
    pub url: String,
}

impl OutsideServer {
    pub fn start() -> Self {
        let id = docker(&[
            "run",
            "-d",
            "--label",
            TEST_LABEL,
            "-p",
            "8080",
            BASE_IMAGE,
            "sh",
            "-c",
            "mkdir -p /w && echo reached > /w/index.html && exec httpd -f -p 8080 -h /w",
        ])
        .trim()
        .to_string();
        let published = docker(&["port", &id, "8080/tcp"]);
        let port = published
            .lines()
            .next()
            .and_then(|l| l.rsplit(':').next())
            .expect("a published port")
            .trim()
            .to_string();
        // The host's address on the default bridge: a connection to it on the published port
        // is forwarded to the container, so it leaves the app's network.
        Self {
            id,
            url: format!("http://{}:{port}/", default_bridge_gateway()),
        }
    }
}

impl Drop for OutsideServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.id])
            .output();
    }
}

/// The host's address on the engine's default bridge (where build steps run).
pub fn default_bridge_gateway() -> String {
    let gw = docker(&[
        "network",
        "inspect",
        "bridge",
        "-f",
        "{{(index .IPAM.Config 0).Gateway}}",
    ])
    .trim()
    .to_string();
    if !gw.is_empty() {
        return gw;
    }
    // Some engines leave the gateway out of the default bridge's IPAM: it is then the
    // subnet's first address.
    let subnet = docker(&[
        "network",
        "inspect",
        "bridge",
        "-f",
        "{{(index .IPAM.Config 0).Subnet}}",
    ]);
    let net: std::net::Ipv4Addr = subnet
        .trim()
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("the default bridge has a subnet: {subnet:?}"));
    std::net::Ipv4Addr::from(u32::from(net) + 1).to_string()
}
