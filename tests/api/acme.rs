//! Certificates by ACME against Debian's `pebble` (a test CA) and `pebble-challtestsrv` (its
//! DNS, which answers 127.0.0.1 for every name): HTTP-01 and TLS-ALPN-01 orders for two app
//! hosts and the admin host, certificates chosen by SNI and verified against pebble's root
//! (trusted only by these clients), a live renewal under an open connection, a restart that
//! orders nothing, a failing challenge explained on the Certificates page and retried, the
//! 308 to https (challenge path excepted) and HSTS only over HTTPS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use milkcrate::app::{self, AppState};
use milkcrate::config::{AcmeChallenge, AcmeSettings, Settings};
use milkcrate::server::{Listener, ListenerKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::helpers::*;

const APPS_DOMAIN: &str = "apps.example.com";
const ADMIN_HOST: &str = "admin.example.com";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn require_pebble() {
    for bin in ["pebble", "pebble-challtestsrv"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            found,
            "{bin} is not installed: the ACME tests need Debian's `pebble` package (scripts/test installs it: ensure_pebble)"
        );
    }
}

/// A pebble CA and its DNS server, killed when dropped.
struct Pebble {
    children: Vec<Child>,
    _dir: tempfile::TempDir,
    directory: String,
    ca_file: PathBuf,
    mgmt: u16,
    dns_mgmt: u16,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Pebble {
    /// Starts both; pebble validates HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`
    /// (milkcrate's listeners) and issues certificates valid for `validity` seconds.
    async fn start(http_port: u16, tls_port: u16, validity: Option<u64>) -> Pebble {
        require_pebble();
        install_crypto();
        let dir = tempfile::tempdir().expect("temp dir");
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("pebble's certificate");
        let ca_file = dir.path().join("pebble-cert.pem");
        let key_file = dir.path().join("pebble-key.pem");
        std::fs::write(&ca_file, ck.cert.pem()).expect("write");
        std::fs::write(&key_file, ck.signing_key.serialize_pem()).expect("write");
        let (listen, mgmt, dns, dns_mgmt) = (free_port(), free_port(), free_port(), free_port());
        let mut config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{listen}"),
                "managementListenAddress": format!("127.0.0.1:{mgmt}"),
                "certificate": ca_file,
                "privateKey": key_file,
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        if let Some(v) = validity {
            config["pebble"]["certificateValidityPeriod"] = v.into();
        }
        let config_file = dir.path().join("pebble.json");
        std::fs::write(&config_file, config.to_string()).expect("write");
        let log = |name: &str| {
            std::fs::File::create(dir.path().join(name))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null())
        };
        let challtest = Command::new("pebble-challtestsrv")
            .args([
                "-dns01",
                &format!("127.0.0.1:{dns}"),
                "-management",
                &format!("127.0.0.1:{dns_mgmt}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
            ])
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .expect("pebble-challtestsrv starts");
        let pebble = Command::new("pebble")
            .args([
                "-config",
                &config_file.to_string_lossy(),
                "-dnsserver",
                &format!("127.0.0.1:{dns}"),
            ])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("pebble starts");
        let p = Pebble {
            children: vec![challtest, pebble],
            directory: format!("https://127.0.0.1:{listen}/dir"),
            ca_file,
            mgmt,
            dns_mgmt,
            _dir: dir,
        };
        let client = p.api_client();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = client.get(&p.directory).send().await.is_ok()
                && reqwest::Client::new()
                    .get(format!("http://127.0.0.1:{dns_mgmt}/"))
                    .send()
                    .await
                    .is_ok();
            if up {
                break;
            }
            assert!(Instant::now() < deadline, "pebble did not start in 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        p
    }

    /// A client trusting pebble's own HTTPS certificate (its API, not what it issues).
    fn api_client(&self) -> reqwest::Client {
        let pem = std::fs::read(&self.ca_file).expect("ca file");
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("pem")])
            .build()
            .expect("client")
    }

    /// The root pebble issues under (new at each start).
    async fn issuing_root(&self) -> reqwest::Certificate {
        let pem = self
            .api_client()
            .get(format!("https://127.0.0.1:{}/roots/0", self.mgmt))
            .send()
            .await
            .expect("roots")
            .bytes()
            .await
            .expect("roots body");
        reqwest::Certificate::from_pem(&pem).expect("root pem")
    }

    /// Makes `host` resolve to `ip` for the CA (a name pointing elsewhere).
    async fn point(&self, host: &str, ip: &str) {
        let resp = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/add-a", self.dns_mgmt))
            .json(&serde_json::json!({"host": format!("{host}."), "addresses": [ip]}))
            .send()
            .await
            .expect("add-a");
        assert!(resp.status().is_success());
    }

    async fn unpoint(&self, host: &str) {
        let resp = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/clear-a", self.dns_mgmt))
            .json(&serde_json::json!({"host": format!("{host}.")}))
            .send()
            .await
            .expect("clear-a");
        assert!(resp.status().is_success());
    }
}

/// milkcrate with an HTTP and an HTTPS listener, ACME on against `pebble`.
struct Server {
    http: SocketAddr,
    https: SocketAddr,
    data_dir: PathBuf,
    client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    async fn start(
        data_dir: &Path,
        pebble: &Pebble,
        http: TcpListener,
        https: TcpListener,
        challenge: AcmeChallenge,
    ) -> Server {
        let acme = AcmeSettings {
            enabled: true,
            email: Some("ops@example.com".into()),
            directory: pebble.directory.clone(),
            ca_file: Some(pebble.ca_file.clone()),
            challenge,
            retry_base: Duration::from_secs(1),
            tick: Duration::from_secs(1),
        };
        Server::start_with(data_dir, acme, http, https).await
    }

    async fn start_with(
        data_dir: &Path,
        acme: AcmeSettings,
        http: TcpListener,
        https: TcpListener,
    ) -> Server {
        let (http_addr, https_addr) = (
            http.local_addr().expect("addr"),
            https.local_addr().expect("addr"),
        );
        let mut settings = Settings::new(data_dir);
        settings.host_firewall = milkcrate::config::HostFirewall::Off;
        settings.set_instance(&format!("test-{}", crate::docker_env::rand_suffix()));
        settings.apps_domain = Some(APPS_DOMAIN.into());
        settings.admin_host = Some(ADMIN_HOST.into());
        settings.http_listen = Some(http_addr);
        settings.https_listen = Some(https_addr);
        settings.acme = acme;
        let state = AppState::open(settings).expect("app starts");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let listeners = vec![
            Listener {
                listener: http,
                kind: ListenerKind::Http,
            },
            Listener {
                listener: https,
                kind: ListenerKind::Https,
            },
        ];
        let done = tokio::spawn(async move {
            app::serve_on(state, listeners, async move {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
        });
        Server {
            http: http_addr,
            https: https_addr,
            data_dir: data_dir.to_path_buf(),
            // The admin UI answers only at ADMIN_HOST: this client reaches it on the listeners.
            client: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .danger_accept_invalid_certs(true)
                .resolve(ADMIN_HOST, http_addr)
                .build()
                .expect("http client"),
            shutdown: Some(tx),
            done: Some(done),
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }

    /// Where the admin UI is reached: ADMIN_HOST over plain HTTP until it has a certificate
    /// (then plain HTTP is redirected), over HTTPS after.
    fn admin_base(&self) -> String {
        let issued = self
            .data_dir
            .join(format!("tls/acme/{ADMIN_HOST}/cert.pem"))
            .exists();
        if issued {
            format!("https://{ADMIN_HOST}:{}", self.https.port())
        } else {
            format!("http://{ADMIN_HOST}:{}", self.http.port())
        }
    }

    /// Signs in at the admin host.
    async fn login(&self) {
        let base = self.admin_base();
        let html = self
            .client
            .get(format!("{base}/login"))
            .send()
            .await
            .expect("login page")
            .text()
            .await
            .expect("text");
        let token = csrf_token(&html);
        let resp = self
            .client
            .post(format!("{base}/login"))
            .form(&[
                ("csrf_token", token.as_str()),
                ("password", DEFAULT_PASSWORD),
            ])
            .send()
            .await
            .expect("login");
        assert_eq!(location(&resp), "/admin", "signed in");
    }

    async fn certificates_page(&self) -> String {
        let resp = self
            .client
            .get(format!("{}/admin/certificates", self.admin_base()))
            .send()
            .await
            .expect("page");
        assert_eq!(resp.status(), 200);
        unescape(&resp.text().await.expect("text"))
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.data_dir.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn audit_count(&self, action: &str, host: &str, success: bool) -> usize {
        self.audit()
            .iter()
            .filter(|e| {
                e["action"] == action && e["resource_id"] == host && e["success"] == success
            })
            .count()
    }

    /// A client that trusts only pebble's issuing root and reaches `hosts` at the HTTPS
    /// listener (so SNI names them).
    fn sni_client(&self, root: &reqwest::Certificate, hosts: &[&str]) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .tls_certs_only([root.clone()])
            .tls_info(true)
            .redirect(reqwest::redirect::Policy::none());
        for h in hosts {
            b = b.resolve(h, self.https);
        }
        b.build().expect("client")
    }
}

/// Puts apps `shop` and `blog` in the database before the server opens it (no containers:
/// only their names matter here).
async fn seed_apps(data_dir: &Path) {
    std::fs::create_dir_all(data_dir).expect("data dir");
    let store = milkcrate::store::Store::open(&data_dir.join("milkcrate.sqlite")).expect("store");
    for (i, name) in ["shop", "blog"].iter().enumerate() {
        let new = milkcrate::store::NewApp {
            name: name.to_string(),
            public_route: format!("/{name}"),
            deployment_type: "dockerfile".into(),
            health_path: None,
            memory_mb: 512,
            cpu_percent: 50,
            port_override: None,
            source_zip: String::new(),
            volume_mounts: None,
            domains: Vec::new(),
        };
        let (id, deploy) = store
            .insert_app(new, 0)
            .await
            .expect("insert")
            .expect("new app");
        store
            .app_deployed(
                id,
                format!("c{i}"),
                format!("milkcrate-{name}:1"),
                None,
                8080,
            )
            .await
            .expect("deployed");
        store
            .finish_deploy(
                deploy,
                milkcrate::domain::state::DeployStatus::Succeeded,
                Some(format!("milkcrate-{name}:1")),
                None,
                0,
            )
            .await
            .expect("finished");
    }
}

fn hosts() -> Vec<String> {
    vec![
        format!("shop.{APPS_DOMAIN}"),
        format!("blog.{APPS_DOMAIN}"),
        ADMIN_HOST.to_string(),
    ]
}

/// Whether `cond` came to hold within 60 s.
async fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    true
}

/// Waits until `cond` holds (60 s at most), saying what was awaited on failure.
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The leaf certificate a handshake naming `host` gets, verified against `root`.
async fn served_leaf(server: &Server, root: &reqwest::Certificate, host: &str) -> Vec<u8> {
    let resp = server
        .sni_client(root, &[host])
        .get(format!("https://{host}:{}/health", server.https.port()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("HTTPS to {host} with pebble's root: {e:?}"));
    // (An app host's /health is the app's: a seeded app without a container answers 503.
    // What matters here is the certificate the handshake got.)
    assert!(
        resp.status() == 200 || resp.status() == 503,
        "{}",
        resp.status()
    );
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("peer certificate")
        .to_vec()
}

#[tokio::test]
async fn http01_issues_for_app_hosts_and_admin_host_serves_by_sni_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    seed_apps(&data).await;
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let https = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (http_port, https_port) = (
        http.local_addr().expect("a").port(),
        https.local_addr().expect("a").port(),
    );
    let pebble = Pebble::start(http_port, https_port, None).await;
    // shop's name points elsewhere for the CA at first: its challenge fails.
    let shop = format!("shop.{APPS_DOMAIN}");
    pebble.point(&shop, "127.0.0.2").await;
    let server = Server::start(&data, &pebble, http, https, AcmeChallenge::Http01).await;
    let root = pebble.issuing_root().await;

    for host in [format!("blog.{APPS_DOMAIN}"), ADMIN_HOST.to_string()] {
        wait_for(&format!("a certificate for {host}"), || {
            server.audit_count("certificate_issue", &host, true) == 1
        })
        .await;
    }
    wait_for("shop's failure", || {
        server.audit_count("certificate_issue", &shop, false) >= 1
    })
    .await;
    server.login().await;
    let page = server.certificates_page().await;
    assert!(
        page.contains(&format!(
            "the CA could not reach http://{shop}/.well-known/acme-challenge/"
        )) && page.contains(&format!(
            "check that the DNS A record of {shop} points at this server"
        )),
        "the page says why shop has no certificate: {page}"
    );
    assert!(page.contains("Pebble Intermediate CA"), "issuer shown");
    // What the name resolves to here (nothing, on a machine without that record).
    assert!(
        page.contains("resolves to") || page.contains("does not resolve"),
        "DNS hint shown"
    );
    // Once DNS is right, the retry (backoff of a second or two) succeeds.
    pebble.unpoint(&shop).await;
    wait_for("shop's certificate after the retry", || {
        server.audit_count("certificate_issue", &shop, true) == 1
    })
    .await;

    // Each name gets its own certificate, chained to pebble's root.
    let mut leaves = Vec::new();
    for host in hosts() {
        leaves.push(served_leaf(&server, &root, &host).await);
    }
    leaves.dedup();
    assert_eq!(leaves.len(), 3, "one certificate per host name");
    // A name milkcrate does not know gets no certificate (no default): the handshake fails,
    // and nothing was ordered for it.
    let stranger = server
        .sni_client(&root, &["stranger.example.net"])
        .get(format!("https://stranger.example.net:{https_port}/health"))
        .send()
        .await;
    assert!(stranger.is_err(), "an unknown SNI is refused");
    assert!(
        !server
            .audit()
            .iter()
            .any(|e| e["resource_id"] == "stranger.example.net")
    );

    // HTTP/2 to the admin UI over TLS.
    let resp = server
        .sni_client(&root, &[ADMIN_HOST])
        .get(format!("https://{ADMIN_HOST}:{https_port}/login"))
        .send()
        .await
        .expect("h2");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains",
        "HSTS over HTTPS"
    );

    // Plain HTTP to a host with a certificate: 308 to https, query kept; the challenge path
    // is answered (404 for an unknown token), not redirected; no HSTS over HTTP.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(ADMIN_HOST, server.http)
        .build()
        .expect("client");
    let resp = plain
        .get(format!("http://{ADMIN_HOST}:{http_port}/admin?x=1"))
        .send()
        .await
        .expect("http");
    assert_eq!(resp.status(), 308);
    assert_eq!(
        location(&resp),
        format!("https://{ADMIN_HOST}:{https_port}/admin?x=1")
    );
    assert!(!resp.headers().contains_key("strict-transport-security"));
    let resp = plain
        .get(format!(
            "http://{ADMIN_HOST}:{http_port}/.well-known/acme-challenge/unknown"
        ))
        .send()
        .await
        .expect("http");
    assert_eq!(resp.status(), 404);
    let resp = server
        .client
        .get(format!("http://{}/health", server.http))
        .send()
        .await
        .expect("http");
    assert_eq!(resp.status(), 200, "an IP literal is not redirected");
    assert!(!resp.headers().contains_key("strict-transport-security"));

    // Files are private; the account and certificates are reused after a restart.
    use std::os::unix::fs::PermissionsExt;
    for f in [
        data.join("tls/acme-account.json"),
        data.join(format!("tls/acme/{ADMIN_HOST}/key.pem")),
        data.join(format!("tls/acme/{ADMIN_HOST}/cert.pem")),
    ] {
        let mode = std::fs::metadata(&f).expect("stored").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", f.display());
    }
    let orders_before = server.audit().len();
    server.stop().await;
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let https = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = Server::start(&data, &pebble, http, https, AcmeChallenge::Http01).await;
    for (host, before) in hosts().iter().zip(&leaves) {
        assert_eq!(
            &served_leaf(&server, &root, host).await,
            before,
            "{host} serves its stored certificate after a restart"
        );
    }
    // Give the renewal task a few ticks: it must order nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let new_events: Vec<_> = server.audit()[orders_before..]
        .iter()
        .filter(|e| {
            e["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("certificate_"))
        })
        .cloned()
        .collect();
    assert!(new_events.is_empty(), "no new order: {new_events:?}");
    server.stop().await;
}

/// Reads one HTTP/1.1 response (headers and a Content-Length body) from `stream`.
async fn read_response<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return text;
            }
        }
    }
}

#[tokio::test]
async fn tls_alpn01_issues_and_a_renewal_replaces_the_certificate_under_an_open_connection() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    seed_apps(&data).await;
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let https = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (http_port, https_port) = (
        http.local_addr().expect("a").port(),
        https.local_addr().expect("a").port(),
    );
    // Certificates valid 30 s: renewed about 20 s after issue.
    let pebble = Pebble::start(http_port, https_port, Some(30)).await;
    let server = Server::start(&data, &pebble, http, https, AcmeChallenge::TlsAlpn01).await;
    let root = pebble.issuing_root().await;
    for host in hosts() {
        let ok = wait_until(|| server.audit_count("certificate_issue", &host, true) == 1).await;
        assert!(ok, "no certificate for {host}: {:?}", server.audit());
        served_leaf(&server, &root, &host).await;
    }

    // A client opens a connection to the admin host and keeps it.
    let mut roots = rustls::RootCertStore::empty();
    let root_pem = pebble_root_pem(&pebble).await;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&root_pem) {
        roots.add(c.expect("pem")).expect("root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.https)
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from(ADMIN_HOST).expect("name");
    let mut open = connector.connect(name, tcp).await.expect("handshake");
    let first = open
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("peer cert")
        .to_vec();
    let request = format!("GET /health HTTP/1.1\r\nHost: {ADMIN_HOST}\r\n\r\n");
    open.write_all(request.as_bytes()).await.expect("write");
    assert!(read_response(&mut open).await.starts_with("HTTP/1.1 200"));

    wait_for("the admin host's renewal", || {
        server.audit_count("certificate_renew", ADMIN_HOST, true) >= 1
    })
    .await;
    let renewed = served_leaf(&server, &root, ADMIN_HOST).await;
    assert_ne!(renewed, first, "new handshakes get the renewed certificate");
    // The connection opened before the renewal still answers.
    open.write_all(request.as_bytes()).await.expect("write");
    assert!(read_response(&mut open).await.starts_with("HTTP/1.1 200"));
    server.stop().await;
}

use rustls::pki_types::pem::PemObject;

async fn pebble_root_pem(pebble: &Pebble) -> Vec<u8> {
    pebble
        .api_client()
        .get(format!("https://127.0.0.1:{}/roots/0", pebble.mgmt))
        .send()
        .await
        .expect("roots")
        .bytes()
        .await
        .expect("body")
        .to_vec()
}

/// An HTTP/2 client (ALPN h2) gets the admin UI and an app through the router over TLS; the
/// app's answer over HTTPS carries HSTS; an HTTP/1.1-only client still works.
#[tokio::test]
async fn over_tls_an_h2_client_gets_the_admin_ui_and_an_app() {
    let certs = tempfile::tempdir().expect("dir");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("cert");
    let files = milkcrate::config::TlsFiles {
        cert: certs.path().join("cert.pem"),
        key: certs.path().join("key.pem"),
    };
    std::fs::write(&files.cert, ck.cert.pem()).expect("write");
    std::fs::write(&files.key, ck.signing_key.serialize_pem()).expect("write");
    let app = crate::docker_env::spawn_engine_app_with(move |s| s.tls = Some(files)).await;
    assert!(app.base.starts_with("https://"));
    app.deploy(
        "h2app",
        "/h2app",
        crate::docker_env::web_app_zip("hello over h2"),
    )
    .await;
    let resp = crate::docker_env::wait_status(&app, "/h2app/", 200).await;
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "the app over h2");
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    assert!(resp.text().await.expect("body").contains("hello over h2"));
    let admin = app.get("/admin").await;
    assert_eq!(
        admin.version(),
        reqwest::Version::HTTP_2,
        "the admin UI over h2"
    );
    assert_eq!(admin.status(), 200);
    let http1 = reqwest::Client::builder()
        .http1_only()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("client");
    let resp = http1.get(app.url("/h2app/")).send().await.expect("h1");
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), 200);
}

/// The admin's own certificate for a name: checked (key, name, PEM), served by SNI at once,
/// audited, and removed again (then that name's handshake is refused: no default).
#[tokio::test]
async fn an_uploaded_certificate_is_checked_served_by_sni_and_removed() {
    install_crypto();
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let https = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = Server::start_with(&data, AcmeSettings::default(), http, https).await;
    server.login().await;
    let host = "shop.example.org";
    let good = rcgen::generate_simple_self_signed(vec![host.to_string()]).expect("cert");
    let other =
        rcgen::generate_simple_self_signed(vec!["else.example.org".to_string()]).expect("cert");
    let upload = |cert: String, key: String| {
        let server = &server;
        let base = server.admin_base();
        async move {
            let page = server.certificates_page().await;
            let token = csrf_token(&page);
            server
                .client
                .post(format!("{base}/admin/certificates/upload"))
                .form(&[
                    ("csrf_token", token.as_str()),
                    ("host", host),
                    ("certificate", cert.as_str()),
                    ("private_key", key.as_str()),
                ])
                .send()
                .await
                .expect("upload")
        }
    };
    // A key of another certificate, and a certificate for another name, are refused.
    let resp = upload(good.cert.pem(), other.signing_key.serialize_pem()).await;
    assert_eq!(resp.status(), 400);
    assert!(unescape(&resp.text().await.expect("t")).contains("does not match"));
    let resp = upload(other.cert.pem(), other.signing_key.serialize_pem()).await;
    assert_eq!(resp.status(), 400);
    assert!(unescape(&resp.text().await.expect("t")).contains("does not name shop.example.org"));
    // Without the CSRF token nothing is stored.
    let resp = server
        .client
        .post(format!("{}/admin/certificates/upload", server.admin_base()))
        .form(&[("host", host), ("certificate", "x"), ("private_key", "y")])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 400, "refused by the CSRF check");
    assert!(!data.join("tls/uploaded").join(host).exists());

    let resp = upload(good.cert.pem(), good.signing_key.serialize_pem()).await;
    assert_eq!(resp.status(), 303);
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .resolve(host, server.https)
        .build()
        .expect("client");
    let url = format!("https://{host}:{}/health", server.https.port());
    let resp = client.get(&url).send().await.expect("served");
    let leaf = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("peer")
        .to_vec();
    assert_eq!(leaf, good.cert.der().to_vec(), "the uploaded certificate");
    let page = server.certificates_page().await;
    assert!(page.contains(host) && page.contains("uploaded"), "{page}");
    assert_eq!(server.audit_count("certificate_upload", host, true), 1);
    assert_eq!(server.audit_count("certificate_upload", host, false), 2);

    // `milkcrate backup` takes the certificate and its key along.
    let out = dir.path().join("backups");
    let backup = milkcrate_command()
        .args(["backup", "--no-volumes", "--data-dir"])
        .arg(&data)
        .arg("-o")
        .arg(&out)
        .stdin(Stdio::null())
        .output()
        .expect("backup runs");
    assert!(
        backup.status.success(),
        "{}",
        String::from_utf8_lossy(&backup.stderr)
    );
    let archive = std::fs::read_dir(&out)
        .expect("backups")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .expect("a backup");
    let listing = Command::new("tar")
        .arg("-tzf")
        .arg(&archive)
        .output()
        .expect("tar");
    let listing = String::from_utf8_lossy(&listing.stdout);
    for f in ["cert.pem", "key.pem"] {
        assert!(
            listing.contains(&format!("tls/uploaded/{host}/{f}")),
            "{listing}"
        );
    }

    let token = csrf_token(&page);
    let resp = server
        .client
        .post(format!("{}/admin/certificates/remove", server.admin_base()))
        .form(&[("csrf_token", token.as_str()), ("host", host)])
        .send()
        .await
        .expect("remove");
    assert_eq!(resp.status(), 303);
    assert!(!data.join("tls/uploaded").join(host).exists());
    let fresh = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .resolve(host, server.https)
        .build()
        .expect("client");
    assert!(
        fresh.get(&url).send().await.is_err(),
        "no certificate: refused"
    );
    assert_eq!(server.audit_count("certificate_remove", host, true), 1);
    server.stop().await;
}
