//! `spawn_app()` starts milkcrate in-process on 127.0.0.1:0 with a fresh data folder, built
//! from `Settings` in code (the test process's environment never leaks in). `TestApp` wraps a
//! cookie-keeping HTTP client with helpers named after what a user does.

use std::net::SocketAddr;
use std::path::PathBuf;

use milkcrate::app::{self, AppState};
use milkcrate::config::Settings;
use reqwest::redirect::Policy;
use reqwest::{Client, Response};

pub const DEFAULT_PASSWORD: &str = "admin";
pub const STRONG_PASSWORD: &str = "Correct-Horse-42";

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub client: Client,
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn new_client() -> Client {
    install_crypto();
    Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .danger_accept_invalid_certs(true)
        .build()
        .expect("http client")
}

/// Starts an app with default development settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts an app after `adjust` has changed its settings.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("instance");
    let mut app = spawn_in(data_dir, adjust).await;
    app._dir = Some(dir);
    app
}

/// Starts an app on an existing data folder (kept by the caller).
pub async fn spawn_in(data_dir: PathBuf, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = Settings::new(&data_dir);
    // Every test server is its own install in the shared engine: what it finds and removes
    // there (start-up clean-up included) is scoped to this label. `adjust` may set another.
    settings.set_instance(&format!("test-{}", crate::docker_env::rand_suffix()));
    // Tests never touch the host's packet filter unless they ask to (attacks.rs does).
    settings.host_firewall = milkcrate::config::HostFirewall::Off;
    adjust(&mut settings);
    let tls = settings.tls.is_some();
    let state = AppState::open(settings).expect("app starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        app::serve(state, listener, async move {
            let _ = rx.await;
        })
        .await
        .expect("server runs");
    });
    let scheme = if tls { "https" } else { "http" };
    TestApp {
        addr,
        base: format!("{scheme}://{addr}"),
        client: new_client(),
        data_dir,
        _dir: None,
        shutdown: Some(tx),
        done: Some(done),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn get_html(&self, path: &str) -> String {
        self.get(path).await.text().await.unwrap()
    }

    /// Fetches `form_page`, takes its CSRF token, and posts `fields` with it to `action`.
    pub async fn post_form(
        &self,
        form_page: &str,
        action: &str,
        fields: &[(&str, &str)],
    ) -> Response {
        let token = csrf_token(&self.get_html(form_page).await);
        let mut all: Vec<(&str, &str)> = vec![("csrf_token", token.as_str())];
        all.extend_from_slice(fields);
        self.client
            .post(self.url(action))
            .form(&all)
            .send()
            .await
            .expect("POST")
    }

    pub async fn login(&self, password: &str) -> Response {
        self.post_form("/login", "/login", &[("password", password)])
            .await
    }

    /// Logs in with the default password and checks it worked.
    pub async fn login_as_admin(&self) {
        let resp = self.login(DEFAULT_PASSWORD).await;
        assert_eq!(
            location(&resp),
            "/admin",
            "login should land on the dashboard"
        );
    }

    pub async fn logout(&self) -> Response {
        self.post_form("/admin", "/logout", &[]).await
    }

    pub async fn change_password(&self, current: &str, new: &str, confirm: &str) -> Response {
        self.post_form(
            "/admin/settings",
            "/admin/settings/password",
            &[
                ("current_password", current),
                ("new_password", new),
                ("confirm_password", confirm),
            ],
        )
        .await
    }

    /// A second browser on the same app (its own cookies).
    pub fn second_browser(&self) -> TestApp {
        TestApp {
            addr: self.addr,
            base: self.base.clone(),
            client: new_client(),
            data_dir: self.data_dir.clone(),
            _dir: None,
            shutdown: None,
            done: None,
        }
    }

    /// Lines of the audit log, parsed.
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.data_dir.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
            .collect()
    }

    /// Stops the server and waits until it has let go of its files.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn csrf_token(html: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = html.find(marker).expect("page has a CSRF token") + marker.len();
    html[start..].split('"').next().unwrap().to_string()
}

pub fn location(resp: &Response) -> String {
    resp.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

pub fn set_cookies(resp: &Response) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// Page text with askama's HTML escapes undone, for asserting on sentences.
pub fn unescape(html: &str) -> String {
    html.replace("&#39;", "'")
        .replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#60;", "<")
        .replace("&lt;", "<")
        .replace("&#62;", ">")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The real `milkcrate` binary with an empty environment but PATH, so the machine's variables
/// (this one sets SSL_CERT_FILE, for one) never leak into what a test checks.
pub fn milkcrate_command() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_milkcrate"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // Never the host's packet filter (a test that wants it sets it again).
        .env("MILKCRATE_HOST_FIREWALL", "off");
    c
}

/// A server whose database already holds `n` apps (`app-000`…), written before it opened the
/// file. Their containers do not exist, so each shows "Missing": pages still do all their work.
pub async fn spawn_with_apps(n: usize) -> TestApp {
    let dir = tempfile::tempdir().unwrap().keep();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let store = milkcrate::store::Store::open(&data.join("milkcrate.sqlite")).unwrap();
    for i in 0..n {
        let new = milkcrate::store::NewApp {
            name: format!("app-{i:03}"),
            public_route: format!("/app-{i:03}"),
            deployment_type: "dockerfile".into(),
            health_path: None,
            memory_mb: 512,
            cpu_percent: 50,
            port_override: None,
            source_zip: String::new(),
            volume_mounts: None,
            domains: Vec::new(),
        };
        let (id, deploy) = store.insert_app(new, 0).await.unwrap().unwrap();
        let image = format!("milkcrate-app-{i:03}:20261128");
        store
            .app_deployed(id, format!("c{i}"), image.clone(), None, 8080)
            .await
            .unwrap();
        // A finished deploy: one left `queued` would count as interrupted at start-up, and
        // reconciliation would remove whatever containers carry its deploy id.
        store
            .finish_deploy(
                deploy,
                milkcrate::domain::state::DeployStatus::Succeeded,
                Some(image),
                None,
                0,
            )
            .await
            .unwrap();
    }
    drop(store);
    spawn_in(data, |_| {}).await
}
