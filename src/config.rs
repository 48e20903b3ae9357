//! Configuration: flags and environment, parsed once into one [`Settings`].
//!
//! This is the only module that reads the process environment (through clap's `env` fallbacks).
//! Everything else receives a `Settings` value, so tests build one in code and never depend on
//! the variables of the shell that runs them. Variable names are the original's where it had one.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::archive::ZipLimits;
use crate::domain::hardening::Limits;
use crate::domain::labels::TraefikOptions;
use crate::domain::route::HomeRoute;

/// Label naming the install that created an object (MILKCRATE_INSTANCE).
pub const INSTANCE_LABEL: &str = "milkcrate.instance";

/// Secret keys that ship in the original's docs and compose file; refused in production.
pub const PLACEHOLDER_SECRET_KEYS: &[&str] = &[
    "dev-key-change-in-production",
    "your-secret-key-change-in-production-using-environment-variable",
    "change-me",
    "changeme",
    "secret",
];

/// `milkcrate serve` flags. Each one falls back to the environment variable named beside it.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address and port the web server listens on.
    #[arg(long, env = "MILKCRATE_LISTEN", default_value = "127.0.0.1:5001")]
    pub listen: SocketAddr,

    /// Folder holding the database, audit log, secret key file and uploads (created on first run).
    #[arg(long, env = "MILKCRATE_DATA_DIR", default_value = "./instance")]
    pub data_dir: PathBuf,

    /// `production` turns on the start-up guard (no placeholder SECRET_KEY, no default password).
    #[arg(long = "env", env = "MILKCRATE_ENV", default_value = "development")]
    pub environment: String,

    /// Key for CSRF tokens and encryption at rest. Unset: read `<data>/secret_key`, created on
    /// first run in development only.
    #[arg(long, env = "SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,

    /// Admin password; overrides the stored one while set.
    #[arg(long, env = "MILKCRATE_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,

    /// Where `/` sends visitors when no home route is set in the UI (a local path such as /shop).
    #[arg(long, env = "DEFAULT_HOME_ROUTE", default_value = "")]
    pub default_home_route: String,

    /// Answer plain-HTTP requests with a 301 to https.
    #[arg(long, env = "FORCE_HTTPS", default_value = "false", value_parser = parse_bool)]
    pub force_https: bool,

    /// PEM certificate chain; with SSL_KEY_FILE the server speaks HTTPS itself.
    #[arg(long, env = "SSL_CERT_FILE")]
    pub ssl_cert_file: Option<PathBuf>,

    /// PEM private key matching SSL_CERT_FILE.
    #[arg(long, env = "SSL_KEY_FILE")]
    pub ssl_key_file: Option<PathBuf>,

    /// Docker network every app container joins (created when missing).
    #[arg(long, env = "TRAEFIK_NETWORK", default_value = "milkcrate-traefik")]
    pub network: String,

    /// Largest request body in bytes (uploads included); larger requests get a 413.
    #[arg(long, env = "MAX_CONTENT_LENGTH", default_value_t = 16 * 1024 * 1024)]
    pub max_content_length: u64,

    /// Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed: comma-separated IPs or
    /// CIDRs (e.g. `127.0.0.1,172.18.0.0/16`). Empty: the socket peer is the client.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,

    /// Seconds a session may sit idle before it ends.
    #[arg(long, env = "MILKCRATE_SESSION_IDLE_SECS", default_value_t = 12 * 3600)]
    pub session_idle_secs: u64,

    /// Seconds a session may live at most, however active.
    #[arg(long, env = "MILKCRATE_SESSION_LIFETIME_SECS", default_value_t = 24 * 3600)]
    pub session_lifetime_secs: u64,

    /// Failed logins allowed per client IP in 15 minutes.
    #[arg(long, env = "MILKCRATE_LOGIN_ATTEMPTS", default_value_t = 10)]
    pub login_attempts: u32,

    /// App uploads the admin may make per hour.
    #[arg(long, env = "MILKCRATE_UPLOAD_LIMIT", default_value_t = 10)]
    pub upload_limit: u32,

    /// App updates the admin may make per hour.
    #[arg(long, env = "MILKCRATE_UPDATE_LIMIT", default_value_t = 5)]
    pub update_limit: u32,

    /// Volumes the admin may create per hour.
    #[arg(long, env = "MILKCRATE_VOLUME_CREATE_LIMIT", default_value_t = 20)]
    pub volume_create_limit: u32,

    /// Volume uploads the admin may make per hour.
    #[arg(long, env = "MILKCRATE_VOLUME_UPLOAD_LIMIT", default_value_t = 30)]
    pub volume_upload_limit: u32,

    /// Host names the server answers to (comma-separated, e.g. `deploy.example.org`); requests
    /// naming another Host get a 421. Loopback addresses always work. Empty: any Host.
    #[arg(long, env = "MILKCRATE_ALLOWED_HOSTS", default_value = "")]
    pub allowed_hosts: String,

    /// A plain-HTTP listener beside MILKCRATE_LISTEN (e.g. `0.0.0.0:80`): answers ACME HTTP-01
    /// challenges and sends hosts that have a certificate to https (308).
    #[arg(long, env = "MILKCRATE_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,

    /// An HTTPS listener (e.g. `0.0.0.0:443`): certificates chosen per host name (SNI) from
    /// SSL_CERT_FILE, the Certificates page and ACME; HTTP/2 and HTTP/1.1.
    #[arg(long, env = "MILKCRATE_HTTPS_LISTEN")]
    pub https_listen: Option<SocketAddr>,

    /// `on`: milkcrate gets and renews certificates for the host names it knows, by ACME.
    #[arg(long, env = "MILKCRATE_ACME", default_value = "off", value_parser = parse_bool)]
    pub acme: bool,

    /// Contact address given to the ACME CA (expiry notices).
    #[arg(long, env = "MILKCRATE_ACME_EMAIL")]
    pub acme_email: Option<String>,

    /// ACME directory: `letsencrypt` (production), `letsencrypt-staging`, or an https URL.
    #[arg(long, env = "MILKCRATE_ACME_DIRECTORY", default_value = "letsencrypt")]
    pub acme_directory: String,

    /// PEM file of CA certificates trusted for the ACME directory's HTTPS (a test CA, or a
    /// private ACME server); default: the system's bundle.
    #[arg(long, env = "MILKCRATE_ACME_CA_FILE")]
    pub acme_ca_file: Option<PathBuf>,

    /// Challenge to answer: `http-01` (on MILKCRATE_HTTP_LISTEN) or `tls-alpn-01` (on
    /// MILKCRATE_HTTPS_LISTEN). Default: http-01 when there is an HTTP listener.
    #[arg(long, env = "MILKCRATE_ACME_CHALLENGE")]
    pub acme_challenge: Option<String>,

    /// Every app is also served at `<app-name>.<this domain>` (wildcard DNS record needed).
    #[arg(long, env = "MILKCRATE_APPS_DOMAIN")]
    pub apps_domain: Option<String>,

    /// When set, the admin UI and `/login` answer only on this host name.
    #[arg(long, env = "MILKCRATE_ADMIN_HOST")]
    pub admin_host: Option<String>,

    /// Where one-click service templates pull their images from: a registry host with an
    /// optional path (e.g. `registry.example.org/mirror`); empty: Docker Hub.
    #[arg(long, env = "MILKCRATE_TEMPLATE_REGISTRY", default_value = "")]
    pub template_registry: String,

    /// Audit log size in bytes at which it is rotated.
    #[arg(long, env = "MILKCRATE_AUDIT_MAX_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub audit_max_bytes: u64,

    /// Rotated audit files kept (audit.log.1 … audit.log.N).
    #[arg(long, env = "MILKCRATE_AUDIT_KEEP", default_value_t = 5)]
    pub audit_keep: u32,

    /// Builds run at the same time; more wait in a queue.
    #[arg(long, env = "MILKCRATE_BUILD_CONCURRENCY", default_value_t = 1)]
    pub build_concurrency: u32,

    /// Processes (threads count) all build steps together may run, where milkcrate can set a
    /// limit (at least 64).
    #[arg(long, env = "MILKCRATE_BUILD_PIDS", default_value_t = 1024)]
    pub build_pids: u32,

    /// Seconds a whole deploy (build and start) may take.
    #[arg(long, env = "MILKCRATE_BUILD_TIMEOUT_SECS", default_value_t = 1800)]
    pub build_timeout_secs: u64,

    /// Seconds a new container may take to run (and pass its HEALTHCHECK) before the deploy fails.
    #[arg(long, env = "MILKCRATE_START_TIMEOUT_SECS", default_value_t = 60)]
    pub start_timeout_secs: u64,

    /// Most entries an uploaded ZIP may hold.
    #[arg(long, env = "MILKCRATE_ZIP_MAX_ENTRIES", default_value_t = 10_000)]
    pub zip_max_entries: usize,

    /// Most bytes an uploaded ZIP may unpack to.
    #[arg(long, env = "MILKCRATE_ZIP_MAX_BYTES", default_value_t = 512 * 1024 * 1024)]
    pub zip_max_bytes: u64,

    /// Most memory (MiB) the upload form may give one app (default per app: 512).
    #[arg(long, env = "MILKCRATE_MAX_MEMORY_MB", default_value_t = 4096)]
    pub max_memory_mb: u32,

    /// Most CPU (percent of one core) the upload form may give one app (default per app: 50).
    #[arg(long, env = "MILKCRATE_MAX_CPU_PERCENT", default_value_t = 200)]
    pub max_cpu_percent: u32,

    /// Most memory (MiB) one build step may use (at most 2047: the engine's option is 32-bit).
    #[arg(long, env = "MILKCRATE_BUILD_MEMORY_MB", default_value_t = 2000)]
    pub build_memory_mb: u32,

    /// Most CPU (percent of one core) one build step may use.
    #[arg(long, env = "MILKCRATE_BUILD_CPU_PERCENT", default_value_t = 100)]
    pub build_cpu_percent: u32,

    /// `auto`: build steps get the network only when the Dockerfile has a step that may need it
    /// (RUN, ADD of a URL, ONBUILD); `none`: never (RUN steps cannot download anything).
    #[arg(long, env = "MILKCRATE_BUILD_NETWORK", default_value = "auto")]
    pub build_network: String,

    /// Traefik mode: label apps for the websecure entrypoint and the letsencrypt resolver.
    #[arg(long, env = "ENABLE_HTTPS", default_value = "false", value_parser = parse_bool)]
    pub enable_https: bool,

    /// Traefik mode: every app rule also requires this Host.
    #[arg(long, env = "MILKCRATE_DOMAIN")]
    pub domain: Option<String>,

    /// Traefik mode: the containers that join each app's own network, comma-separated:
    /// Traefik's, and milkcrate's own when it runs in a container. Set, each app gets a network
    /// only it and these join (apps cannot reach each other); empty, every app shares
    /// TRAEFIK_NETWORK with Traefik and can reach the others.
    #[arg(long, env = "MILKCRATE_TRAEFIK_CONTAINERS", default_value = "")]
    pub traefik_containers: String,

    /// Name of this install when several share one engine: everything it creates carries
    /// the label milkcrate.instance=<name>, and it only sees what carries it.
    #[arg(long, env = "MILKCRATE_INSTANCE")]
    pub instance: Option<String>,

    /// Who routes app traffic: `builtin` (milkcrate serves every app at its route) or `traefik`
    /// (milkcrate only writes Traefik labels; Traefik routes, as in deploy/docker-compose.yml).
    #[arg(long, env = "MILKCRATE_ROUTER", default_value = "builtin", value_parser = ["builtin", "traefik"])]
    pub router: String,

    /// Who runs apps: `engine` (one container per app on the engine milkcrate talks to) or
    /// `swarm` (each app a Docker Swarm service; the engine must be a swarm manager).
    #[arg(long, env = "MILKCRATE_ORCHESTRATOR", default_value = "engine", value_parser = ["engine", "swarm"])]
    pub orchestrator: String,

    /// Swarm mode: the registry (`host[:port]`) images are pushed to so other nodes can pull
    /// them; without one, apps run on the manager node only.
    #[arg(long, env = "MILKCRATE_REGISTRY")]
    pub registry: Option<String>,

    /// Swarm mode: the name of the container milkcrate itself runs in, if it does; it joins
    /// each app's overlay network and reaches tasks on every node.
    #[arg(long, env = "MILKCRATE_SWARM_CONTAINER")]
    pub swarm_container: Option<String>,

    /// Keep app containers from opening connections to the host itself (an iptables chain,
    /// MILKCRATE-INPUT): `auto` when milkcrate may (root or CAP_NET_ADMIN, iptables installed)
    /// and is not in a container, `on` always (a deploy fails when it cannot), `off` never
    /// touches iptables.
    #[arg(long, env = "MILKCRATE_HOST_FIREWALL", default_value = "auto", value_parser = ["auto", "on", "off"])]
    pub host_firewall: String,

    #[command(flatten)]
    pub observe: ObserveArgs,
}

/// Who runs apps (MILKCRATE_ORCHESTRATOR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Orchestrator {
    /// One container per app on the engine milkcrate talks to.
    #[default]
    Engine,
    /// Each app a Docker Swarm service on its own attachable overlay network.
    Swarm,
}

/// MILKCRATE_HOST_FIREWALL: whether milkcrate drops connections apps open to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostFirewall {
    /// Apply when milkcrate may (root or CAP_NET_ADMIN, iptables installed) and is not inside
    /// a container; otherwise warn once and go on.
    #[default]
    Auto,
    /// Always apply: failing to is a deploy (and start-up) error.
    On,
    /// Never touch iptables.
    Off,
}

/// What swarm mode needs besides the orchestrator switch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwarmSettings {
    /// MILKCRATE_REGISTRY: where images are pushed for the other nodes; `None`: one node only.
    pub registry: Option<String>,
    /// MILKCRATE_SWARM_CONTAINER: milkcrate's own container, joined to each app's network.
    pub container: Option<String>,
}

/// A host-name setting: trimmed, lower case, without a trailing dot; `None` when empty.
fn host_setting(name: &str, value: Option<&str>) -> Result<Option<String>, ConfigError> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let v = v.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if v.len() > 253 || !v.contains('.') || !v.split('.').all(label_ok) {
        return Err(ConfigError::Invalid(format!(
            "{name}: {v:?} is not a host name (give a name such as apps.example.com, without scheme or port)."
        )));
    }
    Ok(Some(v))
}

/// MILKCRATE_ACME_* checked: a directory URL, a challenge the listeners can answer.
fn acme_settings(args: &ServeArgs) -> Result<AcmeSettings, ConfigError> {
    let mut a = AcmeSettings {
        enabled: args.acme,
        email: args
            .acme_email
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string),
        ca_file: args.acme_ca_file.clone(),
        ..AcmeSettings::default()
    };
    a.directory = match args.acme_directory.trim() {
        "" | "letsencrypt" | "production" => LETSENCRYPT.into(),
        "letsencrypt-staging" | "staging" => LETSENCRYPT_STAGING.into(),
        url if url.starts_with("https://") => url.into(),
        other => {
            return Err(ConfigError::Invalid(format!(
                "MILKCRATE_ACME_DIRECTORY={other:?}: give `letsencrypt`, `letsencrypt-staging` or an https:// URL."
            )));
        }
    };
    if let Some(email) = &a.email
        && (!email.contains('@') || email.contains(char::is_whitespace))
    {
        return Err(ConfigError::Invalid(format!(
            "MILKCRATE_ACME_EMAIL={email:?} is not an email address."
        )));
    }
    a.challenge = match args.acme_challenge.as_deref().map(str::trim) {
        None | Some("") if args.http_listen.is_some() => AcmeChallenge::Http01,
        None | Some("") => AcmeChallenge::TlsAlpn01,
        Some("http-01") => AcmeChallenge::Http01,
        Some("tls-alpn-01") => AcmeChallenge::TlsAlpn01,
        Some(other) => {
            return Err(ConfigError::Invalid(format!(
                "MILKCRATE_ACME_CHALLENGE={other:?}: give `http-01` or `tls-alpn-01`."
            )));
        }
    };
    if a.enabled {
        let (listener, name) = match a.challenge {
            AcmeChallenge::Http01 => (args.http_listen, "MILKCRATE_HTTP_LISTEN"),
            AcmeChallenge::TlsAlpn01 => (args.https_listen, "MILKCRATE_HTTPS_LISTEN"),
        };
        if listener.is_none() {
            return Err(ConfigError::Invalid(format!(
                "MILKCRATE_ACME=on needs {name} (e.g. 0.0.0.0:{}): the CA checks the challenge there.",
                if name.contains("HTTPS") { 443 } else { 80 }
            )));
        }
        if args.https_listen.is_none() {
            return Err(ConfigError::Invalid(
                "MILKCRATE_ACME=on needs MILKCRATE_HTTPS_LISTEN (e.g. 0.0.0.0:443) to serve the certificates it gets.".into(),
            ));
        }
    }
    Ok(a)
}

/// An instance as it stands in engine names: lower case, and `-` for anything image names do
/// not allow.
pub fn name_part(instance: &str) -> String {
    instance
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Parses the original's booleans: `1/true/yes/on` (any case) are true.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "" | "0" | "false" | "no" | "off" => Ok(false),
        other => Err(format!("expected true or false, got {other:?}")),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
}

/// A trusted proxy: one address or a CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} has a bad prefix length"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }

    /// Whether the two blocks share an address.
    pub fn overlaps(&self, other: &IpNet) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask_eq(&net.octets(), &ip.octets(), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask_eq(&net.octets(), &ip.octets(), self.prefix),
            _ => false,
        }
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) count as the IPv4 address they carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn mask_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[full] & mask) == (b[full] & mask)
}

/// Hourly limits of the admin's heavier actions (the seed's: 10 uploads, 5 updates, 20 volume
/// creates, 30 volume uploads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionLimits {
    pub upload: u32,
    pub update: u32,
    pub volume_create: u32,
    pub volume_upload: u32,
}

impl Default for ActionLimits {
    fn default() -> Self {
        Self {
            upload: 10,
            update: 5,
            volume_create: 20,
            volume_upload: 30,
        }
    }
}

/// Everything the server needs to know, parsed and checked once.
#[derive(Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub production: bool,
    /// `None` until [`Settings::resolve_secret_key`] reads or creates the key file.
    pub secret_key: Option<String>,
    pub admin_password_override: Option<String>,
    pub default_home_route: Option<HomeRoute>,
    pub force_https: bool,
    pub tls: Option<TlsFiles>,
    pub network: String,
    pub max_content_length: u64,
    pub trusted_proxies: Vec<IpNet>,
    pub session_idle: Duration,
    pub session_lifetime: Duration,
    pub login_attempts: u32,
    pub action_limits: ActionLimits,
    /// Host names (lower case, without port) the server answers to; empty: any.
    pub allowed_hosts: Vec<String>,
    /// MILKCRATE_APPS_DOMAIN, normalised: apps are also served at `<name>.<apps_domain>`.
    pub apps_domain: Option<String>,
    /// MILKCRATE_ADMIN_HOST, normalised: the only host the admin UI answers on.
    pub admin_host: Option<String>,
    /// MILKCRATE_TEMPLATE_REGISTRY: the prefix of template images (`host[/path]`), or empty.
    pub template_registry: String,
    /// MILKCRATE_HTTP_LISTEN: a plain-HTTP listener beside `listen`.
    pub http_listen: Option<SocketAddr>,
    /// MILKCRATE_HTTPS_LISTEN: an HTTPS listener (SNI-chosen certificates, HTTP/2).
    pub https_listen: Option<SocketAddr>,
    pub acme: AcmeSettings,
    pub audit_max_bytes: u64,
    pub audit_keep: u32,
    /// Things worth a line at start-up that do not stop it.
    pub warnings: Vec<String>,
    pub build_concurrency: usize,
    /// MILKCRATE_BUILD_PIDS: processes and threads of all build steps together.
    pub build_pids: i64,
    pub build_timeout: Duration,
    pub start_timeout: Duration,
    pub status_interval: Duration,
    /// How often a point of each app's resource use is kept (an hour of them is shown).
    pub stats_interval: Duration,
    pub probe_interval: Duration,
    pub zip_limits: ZipLimits,
    pub max_limits: Limits,
    /// What each step of a build may use (memory without swap, CPU).
    pub build_limits: Limits,
    /// MILKCRATE_BUILD_NETWORK=none: no build step ever gets a network.
    pub build_network_off: bool,
    pub traefik: TraefikOptions,
    /// `milkcrate.instance=<name>` when set; added to everything created, used to filter.
    pub extra_labels: Vec<(String, String)>,
    /// True with MILKCRATE_ROUTER=builtin (the default): milkcrate proxies app routes itself.
    pub builtin_router: bool,
    /// Access log, metrics and alerts.
    pub observe: ObserveSettings,
    /// MILKCRATE_ORCHESTRATOR and the swarm mode's settings.
    pub orchestrator: Orchestrator,
    pub swarm: SwarmSettings,
    /// MILKCRATE_HOST_FIREWALL.
    pub host_firewall: HostFirewall,
}

impl std::fmt::Debug for Settings {
    // Secrets never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("production", &self.production)
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "admin_password_override",
                &self.admin_password_override.as_ref().map(|_| "<redacted>"),
            )
            .field("tls", &self.tls)
            .field("network", &self.network)
            .finish_non_exhaustive()
    }
}

/// The ACME challenge milkcrate answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    Http01,
    TlsAlpn01,
}

/// Let's Encrypt's production directory (the default).
pub const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, generous limits).
pub const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// MILKCRATE_ACME_*: automatic certificates.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    pub enabled: bool,
    pub email: Option<String>,
    pub directory: String,
    pub ca_file: Option<PathBuf>,
    pub challenge: AcmeChallenge,
    /// First wait after a failed order; doubled after each further failure (capped at a day).
    pub retry_base: Duration,
    /// How often the renewal task looks at every host name (it is also woken on changes).
    pub tick: Duration,
}

impl Default for AcmeSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            email: None,
            directory: LETSENCRYPT.into(),
            ca_file: None,
            // What `serve` picks without `MILKCRATE_HTTP_LISTEN` (`acme_settings`); a test
            // keeps the two in step.
            challenge: AcmeChallenge::TlsAlpn01,
            retry_base: Duration::from_secs(60),
            tick: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Settings {
    /// Development defaults rooted at `data_dir`; what tests start from.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: "127.0.0.1:5001".parse().expect("valid literal"),
            data_dir: data_dir.into(),
            production: false,
            secret_key: None,
            admin_password_override: None,
            default_home_route: None,
            force_https: false,
            tls: None,
            network: "milkcrate-traefik".into(),
            max_content_length: 16 * 1024 * 1024,
            trusted_proxies: Vec::new(),
            session_idle: Duration::from_secs(12 * 3600),
            session_lifetime: Duration::from_secs(24 * 3600),
            login_attempts: 10,
            action_limits: ActionLimits::default(),
            allowed_hosts: Vec::new(),
            apps_domain: None,
            admin_host: None,
            template_registry: String::new(),
            http_listen: None,
            https_listen: None,
            acme: AcmeSettings::default(),
            audit_max_bytes: 10 * 1024 * 1024,
            audit_keep: 5,
            warnings: Vec::new(),
            build_concurrency: 1,
            build_pids: 1024,
            build_timeout: Duration::from_secs(1800),
            start_timeout: Duration::from_secs(60),
            status_interval: Duration::from_secs(3),
            stats_interval: Duration::from_secs(10),
            probe_interval: Duration::from_secs(15),
            zip_limits: ZipLimits::default(),
            max_limits: Limits {
                memory_mb: 4096,
                cpu_percent: 200,
            },
            build_network_off: false,
            build_limits: Limits {
                memory_mb: 2000,
                cpu_percent: 100,
            },
            traefik: TraefikOptions::default(),
            extra_labels: Vec::new(),
            builtin_router: true,
            observe: ObserveSettings::default(),
            orchestrator: Orchestrator::Engine,
            swarm: SwarmSettings::default(),
            host_firewall: HostFirewall::Auto,
        }
    }

    pub fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        let mut s = Self::new(&args.data_dir);
        s.listen = args.listen;
        s.production = args
            .environment
            .trim()
            .to_ascii_lowercase()
            .starts_with("prod");
        s.secret_key = args.secret_key.clone().filter(|k| !k.trim().is_empty());
        s.admin_password_override = args.admin_password.clone().filter(|p| !p.trim().is_empty());
        let home = args.default_home_route.trim();
        if !home.is_empty() {
            s.default_home_route = Some(HomeRoute::parse(home).map_err(|e| {
                ConfigError::Invalid(format!("DEFAULT_HOME_ROUTE={home:?} is refused: {e}. Set it to a local path such as /shop."))
            })?);
        }
        s.force_https = args.force_https;
        s.tls = match (&args.ssl_cert_file, &args.ssl_key_file) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            // OpenSSL reads SSL_CERT_FILE as its CA bundle, so many machines set it for that:
            // alone it does not mean "serve HTTPS".
            (Some(cert), None) => {
                s.warnings.push(format!(
                    "SSL_CERT_FILE is set ({}) but SSL_KEY_FILE is not: serving plain HTTP. Set both to serve HTTPS.",
                    cert.display()
                ));
                None
            }
            (None, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "SSL_KEY_FILE is set but SSL_CERT_FILE is not: set both to serve HTTPS, or neither.".into(),
                ));
            }
        };
        s.network = args.network.clone();
        if args.max_content_length == 0 {
            return Err(ConfigError::Invalid(
                "MAX_CONTENT_LENGTH must be a positive number of bytes.".into(),
            ));
        }
        s.max_content_length = args.max_content_length;
        s.trusted_proxies = args
            .trusted_proxies
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(IpNet::parse)
            .collect::<Result<_, _>>()
            .map_err(|e| ConfigError::Invalid(format!("TRUSTED_PROXIES: {e}")))?;
        s.session_idle = Duration::from_secs(args.session_idle_secs.max(60));
        s.session_lifetime = Duration::from_secs(args.session_lifetime_secs.max(60));
        s.login_attempts = args.login_attempts.max(1);
        s.action_limits = ActionLimits {
            upload: args.upload_limit.max(1),
            update: args.update_limit.max(1),
            volume_create: args.volume_create_limit.max(1),
            volume_upload: args.volume_upload_limit.max(1),
        };
        s.allowed_hosts = args
            .allowed_hosts
            .split(',')
            .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        // A configured domain is a host the server answers to (and turns the list on).
        if let Some(domain) = args
            .domain
            .as_deref()
            .map(str::trim)
            .filter(|d| !d.is_empty())
        {
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            if !s.allowed_hosts.contains(&domain) {
                s.allowed_hosts.push(domain);
            }
        }
        if let Some(bad) = s.allowed_hosts.iter().find(|h| {
            !h.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        }) {
            return Err(ConfigError::Invalid(format!(
                "MILKCRATE_ALLOWED_HOSTS: {bad:?} is not a host name (give names such as deploy.example.org, without scheme or port)."
            )));
        }
        s.apps_domain = host_setting("MILKCRATE_APPS_DOMAIN", args.apps_domain.as_deref())?;
        s.admin_host = host_setting("MILKCRATE_ADMIN_HOST", args.admin_host.as_deref())?;
        // The admin host is a name the server answers to: with an allow-list, it is on it (so
        // the HTTPS redirect keeps it).
        if let Some(admin) = &s.admin_host
            && !s.allowed_hosts.is_empty()
            && !s.allowed_hosts.contains(admin)
        {
            s.allowed_hosts.push(admin.clone());
        }
        s.template_registry = args
            .template_registry
            .trim()
            .trim_end_matches('/')
            .to_string();
        if !s.template_registry.is_empty()
            && crate::domain::image::ImageRef::parse(&format!("{}/x:1", s.template_registry))
                .is_err()
        {
            return Err(ConfigError::Invalid(format!(
                "MILKCRATE_TEMPLATE_REGISTRY: {:?} is not a registry host with an optional path (like registry.example.org:5000/mirror).",
                s.template_registry
            )));
        }
        s.http_listen = args.http_listen;
        s.https_listen = args.https_listen;
        s.acme = acme_settings(args)?;
        s.audit_max_bytes = args.audit_max_bytes.max(4096);
        s.audit_keep = args.audit_keep.max(1);
        s.build_concurrency = args.build_concurrency.max(1) as usize;
        s.build_pids = i64::from(args.build_pids.max(64));
        s.build_timeout = Duration::from_secs(args.build_timeout_secs.max(10));
        s.start_timeout = Duration::from_secs(args.start_timeout_secs.max(1));
        s.zip_limits = ZipLimits {
            max_entries: args.zip_max_entries.max(1),
            max_total_bytes: args.zip_max_bytes.max(1024),
            ..ZipLimits::default()
        };
        s.max_limits = Limits {
            memory_mb: args.max_memory_mb.max(16),
            cpu_percent: args.max_cpu_percent.max(5),
        };
        s.build_network_off = match args.build_network.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => false,
            "none" => true,
            other => {
                return Err(ConfigError::Invalid(format!(
                    "MILKCRATE_BUILD_NETWORK: {other:?} is neither auto nor none."
                )));
            }
        };
        s.build_limits = Limits {
            memory_mb: args.build_memory_mb.clamp(64, 2047),
            cpu_percent: args.build_cpu_percent.max(5),
        };
        s.traefik = TraefikOptions {
            https: args.enable_https,
            domain: args.domain.clone().filter(|d| !d.trim().is_empty()),
            join: args
                .traefik_containers
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect(),
        };
        s.builtin_router = args.router == "builtin";
        s.orchestrator = if args.orchestrator == "swarm" {
            Orchestrator::Swarm
        } else {
            Orchestrator::Engine
        };
        s.host_firewall = match args.host_firewall.as_str() {
            "on" => HostFirewall::On,
            "off" => HostFirewall::Off,
            _ => HostFirewall::Auto,
        };
        let some = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(String::from)
        };
        s.swarm = SwarmSettings {
            registry: some(&args.registry),
            container: some(&args.swarm_container),
        };
        if let Some(r) = &s.swarm.registry
            && (r.contains('/') || r.contains(char::is_whitespace) || r.starts_with('-'))
        {
            return Err(ConfigError::Invalid(format!(
                "MILKCRATE_REGISTRY={r:?} is refused: give the registry as host[:port], like 127.0.0.1:5000."
            )));
        }
        s.observe = ObserveSettings::from_args(&args.observe)?;
        if let Some(instance) = args
            .instance
            .as_deref()
            .map(str::trim)
            .filter(|i| !i.is_empty())
        {
            s.set_instance(instance);
        }
        Ok(s)
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("milkcrate.sqlite")
    }

    pub fn audit_path(&self) -> PathBuf {
        self.data_dir.join("audit.log")
    }

    /// `<data>/tls`: the ACME account, certificates milkcrate got and the admin's uploads.
    pub fn tls_dir(&self) -> PathBuf {
        self.data_dir.join("tls")
    }

    pub fn secret_key_path(&self) -> PathBuf {
        self.data_dir.join("secret_key")
    }

    /// Names this install: everything it creates is labelled with it, and it sees only that.
    pub fn set_instance(&mut self, name: &str) {
        self.extra_labels.retain(|(k, _)| k != INSTANCE_LABEL);
        self.extra_labels
            .push((INSTANCE_LABEL.to_string(), name.to_string()));
    }

    /// This install's name in the engine's labels, if it has one.
    pub fn instance(&self) -> Option<&str> {
        self.extra_labels
            .iter()
            .find(|(k, _)| k == INSTANCE_LABEL)
            .map(|(_, v)| v.as_str())
    }

    /// The engine name of an object of this install: `milkcrate-<instance>-<rest>` (the
    /// instance lower-cased, to the characters image names allow), or `milkcrate-<rest>` for
    /// an install without one. Two installs never make objects of the same name.
    pub fn object_name(&self, rest: &str) -> String {
        match self.instance() {
            Some(i) => format!("milkcrate-{}-{rest}", name_part(i)),
            None => format!("milkcrate-{rest}"),
        }
    }

    /// The parent cgroup of this install's builds under the cgroupfs driver
    /// (`milkcrate-<instance>-build`) and the systemd slice under the systemd driver
    /// (`milkcrate-build-<instance>.slice`, nested in the shipped `milkcrate-build.slice`).
    pub fn build_cgroup_names(&self) -> (String, String) {
        // systemd refuses a slice name with an empty part (`--`, or a `-` at either end).
        let slice_part = name_part(self.instance().unwrap_or_default())
            .split('-')
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("-");
        let slice = if slice_part.is_empty() {
            "milkcrate-build.slice".to_string()
        } else {
            format!("milkcrate-build-{slice_part}.slice")
        };
        (self.object_name("build"), slice)
    }

    /// How many processes (threads count, as the kernel counts them) all build steps
    /// together may run: MILKCRATE_BUILD_PIDS. Compilers and JVMs run many threads, so it is
    /// far above an app container's limit; a fork bomb still stops there.
    pub fn build_pids_max(&self) -> i64 {
        self.build_pids
    }

    /// `key=value` plus the instance label, as the engine takes labels.
    pub fn label_map(&self, key: &str, value: &str) -> std::collections::HashMap<String, String> {
        let mut m: std::collections::HashMap<String, String> =
            self.extra_labels.iter().cloned().collect();
        m.insert(key.to_string(), value.to_string());
        m
    }

    /// Filters for this install's objects that also carry `label` (`key=value`).
    pub fn scoped(&self, label: String) -> Vec<String> {
        vec![self.managed_filter(), label]
    }

    /// The label filter that finds this install's containers in one list call.
    pub fn managed_filter(&self) -> String {
        match self.extra_labels.iter().find(|(k, _)| k == INSTANCE_LABEL) {
            Some((k, v)) => format!("{k}={v}"),
            None => format!("{}=true", crate::domain::labels::MANAGED),
        }
    }

    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(ip))
    }

    /// Settles the secret key: the SECRET_KEY variable, else the key file. In development a
    /// missing key file is created (mode 600); in production it must already exist.
    pub fn resolve_secret_key(&mut self) -> Result<(), ConfigError> {
        if self.secret_key.is_some() {
            return Ok(());
        }
        let path = self.secret_key_path();
        match std::fs::read_to_string(&path) {
            Ok(k) if !k.trim().is_empty() => {
                self.secret_key = Some(k.trim().to_string());
                Ok(())
            }
            _ if self.production => Ok(()), // the production guard reports it
            _ => {
                let key = crate::secrets::random_token(32);
                write_private_file(&path, key.as_bytes()).map_err(|e| {
                    ConfigError::Invalid(format!(
                        "cannot write the secret key file {}: {e}",
                        path.display()
                    ))
                })?;
                self.secret_key = Some(key);
                Ok(())
            }
        }
    }
}

/// How the server's own log is written: read from the environment once, before any subcommand
/// runs (every subcommand logs, and logging starts before its arguments are used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// A `target=level,...` filter (`info`, `milkcrate=debug,hyper=warn`) and the variable it
    /// came from (`MILKCRATE_LOG`, else `RUST_LOG`); `None` when neither is set (or both empty).
    pub filter: Option<(&'static str, String)>,
    /// `MILKCRATE_LOG_FORMAT=json`: one JSON object per line, for log shippers.
    pub json: bool,
}

impl LogSettings {
    /// Reads `MILKCRATE_LOG` (falling back to `RUST_LOG`) and `MILKCRATE_LOG_FORMAT`.
    pub fn from_env() -> Result<LogSettings, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        LogSettings::from_values(
            var("MILKCRATE_LOG"),
            var("RUST_LOG"),
            var("MILKCRATE_LOG_FORMAT"),
        )
    }

    /// The rules of [`LogSettings::from_env`] on given values (for tests).
    pub fn from_values(
        milkcrate_log: Option<String>,
        rust_log: Option<String>,
        format: Option<String>,
    ) -> Result<LogSettings, String> {
        let filter = match (milkcrate_log, rust_log) {
            (Some(f), _) => Some(("MILKCRATE_LOG", f)),
            (None, Some(f)) => Some(("RUST_LOG", f)),
            (None, None) => None,
        };
        let json = match format.as_deref().map(str::trim) {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(format!(
                    "MILKCRATE_LOG_FORMAT must be `text` or `json`, not `{other}`"
                ));
            }
        };
        Ok(LogSettings { filter, json })
    }
}

/// Test-only fault injection: with `MILKCRATE_TEST_PAUSE_AT=<step>` in the environment, the
/// process prints `milkcrate: paused at <step>` to stderr when it reaches `step` and then waits
/// forever, so a test can `kill -9` it at exactly that point. Unset (always, outside tests),
/// this does nothing.
pub fn pause_point(step: &str) {
    if std::env::var("MILKCRATE_TEST_PAUSE_AT").is_ok_and(|s| s == step) {
        eprintln!("milkcrate: paused at {step}");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// [`pause_point`] for async code: the task waits forever instead of its thread, so the rest
/// of the server (tasks that would otherwise sit behind a blocked worker) keeps running.
pub async fn pause_here(step: &str) {
    if std::env::var("MILKCRATE_TEST_PAUSE_AT").is_ok_and(|s| s == step) {
        eprintln!("milkcrate: paused at {step}");
        std::future::pending::<()>().await;
    }
}

/// Where `milkcrate login` keeps the server and token: `$XDG_CONFIG_HOME/milkcrate/config.toml`,
/// else `~/.config/milkcrate/config.toml`.
pub fn client_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("milkcrate").join("config.toml"))
}

/// The system's folder for temporary files (`TMPDIR`, else /tmp), for the CLI client.
pub fn temp_dir() -> PathBuf {
    std::env::temp_dir()
}

/// Writes a file readable by its owner only.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

/// Creates a folder of the data folder (and parents) readable by its owner only; an existing folder is
/// left as the operator set it.
pub fn create_private_dir(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if path.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

#[cfg(test)]
mod tests {
    use super::LogSettings;

    /// `milkcrate serve` with no flag and no environment: clap's defaults.
    fn flag_defaults(data_dir: &str) -> super::ServeArgs {
        use clap::{Args, FromArgMatches};
        let cmd = super::ServeArgs::augment_args(clap::Command::new("serve"))
            .mut_args(|a| a.env(None::<&'static str>));
        let matches = cmd
            .try_get_matches_from(["serve", "--data-dir", data_dir])
            .expect("the defaults parse");
        super::ServeArgs::from_arg_matches(&matches).expect("the defaults are ServeArgs")
    }

    /// `Settings::new` (what tests and the CLI's helpers start from) and the flags' defaults
    /// (what `milkcrate serve` starts from) are two spellings of each default: this walks every
    /// field, so a default changed in one place only fails here. The patterns name every field
    /// (no `..`), so a new setting does not compile until it is compared too.
    #[test]
    fn settings_new_and_the_flag_defaults_agree_on_every_field() {
        let from_flags =
            super::Settings::from_args(&flag_defaults("/data")).expect("the defaults are valid");
        let new = super::Settings::new("/data");
        macro_rules! same {
            ($($field:ident),* $(,)?) => {$(
                assert_eq!(
                    format!("{:?}", $field.0),
                    format!("{:?}", $field.1),
                    "the default of `{}` differs between Settings::new and the flags (ServeArgs)",
                    stringify!($field),
                );
            )*};
        }
        let super::Settings {
            listen,
            data_dir,
            production,
            secret_key,
            admin_password_override,
            default_home_route,
            force_https,
            tls,
            network,
            max_content_length,
            trusted_proxies,
            session_idle,
            session_lifetime,
            login_attempts,
            action_limits,
            allowed_hosts,
            apps_domain,
            admin_host,
            template_registry,
            http_listen,
            https_listen,
            acme,
            audit_max_bytes,
            audit_keep,
            warnings,
            build_concurrency,
            build_pids,
            build_timeout,
            start_timeout,
            status_interval,
            stats_interval,
            probe_interval,
            zip_limits,
            max_limits,
            build_limits,
            build_network_off,
            traefik,
            extra_labels,
            builtin_router,
            observe,
            orchestrator,
            swarm,
            host_firewall,
        } = &new;
        let f = &from_flags;
        let (listen, data_dir, production, secret_key, admin_password_override) = (
            (listen, &f.listen),
            (data_dir, &f.data_dir),
            (production, &f.production),
            (secret_key, &f.secret_key),
            (admin_password_override, &f.admin_password_override),
        );
        same!(
            listen,
            data_dir,
            production,
            secret_key,
            admin_password_override
        );
        let (default_home_route, force_https, tls, network, max_content_length) = (
            (default_home_route, &f.default_home_route),
            (force_https, &f.force_https),
            (tls, &f.tls),
            (network, &f.network),
            (max_content_length, &f.max_content_length),
        );
        same!(
            default_home_route,
            force_https,
            tls,
            network,
            max_content_length
        );
        let (trusted_proxies, session_idle, session_lifetime, login_attempts, action_limits) = (
            (trusted_proxies, &f.trusted_proxies),
            (session_idle, &f.session_idle),
            (session_lifetime, &f.session_lifetime),
            (login_attempts, &f.login_attempts),
            (action_limits, &f.action_limits),
        );
        same!(
            trusted_proxies,
            session_idle,
            session_lifetime,
            login_attempts,
            action_limits
        );
        let (allowed_hosts, apps_domain, admin_host, template_registry, http_listen) = (
            (allowed_hosts, &f.allowed_hosts),
            (apps_domain, &f.apps_domain),
            (admin_host, &f.admin_host),
            (template_registry, &f.template_registry),
            (http_listen, &f.http_listen),
        );
        same!(
            allowed_hosts,
            apps_domain,
            admin_host,
            template_registry,
            http_listen
        );
        let (https_listen, audit_max_bytes, audit_keep, warnings, build_concurrency) = (
            (https_listen, &f.https_listen),
            (audit_max_bytes, &f.audit_max_bytes),
            (audit_keep, &f.audit_keep),
            (warnings, &f.warnings),
            (build_concurrency, &f.build_concurrency),
        );
        same!(
            https_listen,
            audit_max_bytes,
            audit_keep,
            warnings,
            build_concurrency
        );
        let build_pids = (build_pids, &f.build_pids);
        same!(build_pids);
        let (build_timeout, start_timeout, status_interval, stats_interval, probe_interval) = (
            (build_timeout, &f.build_timeout),
            (start_timeout, &f.start_timeout),
            (status_interval, &f.status_interval),
            (stats_interval, &f.stats_interval),
            (probe_interval, &f.probe_interval),
        );
        same!(
            build_timeout,
            start_timeout,
            status_interval,
            stats_interval,
            probe_interval
        );
        let (zip_limits, max_limits, build_limits, build_network_off, traefik) = (
            (zip_limits, &f.zip_limits),
            (max_limits, &f.max_limits),
            (build_limits, &f.build_limits),
            (build_network_off, &f.build_network_off),
            (traefik, &f.traefik),
        );
        same!(
            zip_limits,
            max_limits,
            build_limits,
            build_network_off,
            traefik
        );
        let (extra_labels, builtin_router, orchestrator, swarm, host_firewall) = (
            (extra_labels, &f.extra_labels),
            (builtin_router, &f.builtin_router),
            (orchestrator, &f.orchestrator),
            (swarm, &f.swarm),
            (host_firewall, &f.host_firewall),
        );
        same!(
            extra_labels,
            builtin_router,
            orchestrator,
            swarm,
            host_firewall
        );

        let super::AcmeSettings {
            enabled,
            email,
            directory,
            ca_file,
            challenge,
            retry_base,
            tick,
        } = acme;
        let a = &f.acme;
        let (enabled, email, directory, ca_file, challenge, retry_base, tick) = (
            (enabled, &a.enabled),
            (email, &a.email),
            (directory, &a.directory),
            (ca_file, &a.ca_file),
            (challenge, &a.challenge),
            (retry_base, &a.retry_base),
            (tick, &a.tick),
        );
        same!(
            enabled, email, directory, ca_file, challenge, retry_base, tick
        );

        let super::ObserveSettings {
            access_log,
            access_max_bytes,
            access_keep,
            access_queue,
            metrics_listen,
            metrics_token,
            crash_restarts,
            crash_window,
            unhealthy_after,
            engine_down_after,
            disk_low_percent,
            alert_check_interval,
            alert_retry_base,
            cert_expiry_days,
        } = observe;
        let o = &f.observe;
        let (access_log, access_max_bytes, access_keep, access_queue, metrics_listen) = (
            (access_log, &o.access_log),
            (access_max_bytes, &o.access_max_bytes),
            (access_keep, &o.access_keep),
            (access_queue, &o.access_queue),
            (metrics_listen, &o.metrics_listen),
        );
        same!(
            access_log,
            access_max_bytes,
            access_keep,
            access_queue,
            metrics_listen
        );
        let (metrics_token, crash_restarts, crash_window, unhealthy_after, engine_down_after) = (
            (metrics_token, &o.metrics_token),
            (crash_restarts, &o.crash_restarts),
            (crash_window, &o.crash_window),
            (unhealthy_after, &o.unhealthy_after),
            (engine_down_after, &o.engine_down_after),
        );
        same!(
            metrics_token,
            crash_restarts,
            crash_window,
            unhealthy_after,
            engine_down_after
        );
        let (disk_low_percent, alert_check_interval, alert_retry_base, cert_expiry_days) = (
            (disk_low_percent, &o.disk_low_percent),
            (alert_check_interval, &o.alert_check_interval),
            (alert_retry_base, &o.alert_retry_base),
            (cert_expiry_days, &o.cert_expiry_days),
        );
        same!(
            disk_low_percent,
            alert_check_interval,
            alert_retry_base,
            cert_expiry_days
        );
    }

    #[test]
    fn host_settings_are_normalised_and_checked() {
        let h = |v: &str| super::host_setting("X", Some(v));
        assert_eq!(
            h(" Apps.Example.COM. ").expect("valid"),
            Some("apps.example.com".into())
        );
        assert_eq!(h("  ").expect("empty"), None);
        for bad in [
            "apps.example.com:443",
            "https://a.example",
            "*.example.com",
            "localhost",
            "a..b",
            "-a.b",
        ] {
            assert!(h(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn the_admin_host_joins_an_allow_list() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            serve: super::ServeArgs,
        }
        let cli = Cli::try_parse_from([
            "serve",
            "--allowed-hosts",
            "deploy.example.org",
            "--admin-host",
            "Admin.Example.org",
        ])
        .expect("parses");
        let s = super::Settings::from_args(&cli.serve).expect("valid");
        assert_eq!(s.admin_host.as_deref(), Some("admin.example.org"));
        assert_eq!(s.allowed_hosts, ["deploy.example.org", "admin.example.org"]);
    }

    #[test]
    fn acme_settings_need_the_listener_their_challenge_uses() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let parse = |args: &[&str]| {
            let mut all = vec!["milkcrate"];
            all.extend_from_slice(args);
            let cli = Cli::try_parse_from(all).expect("flags parse");
            Settings::from_args(&cli.serve)
        };
        let s = parse(&[]).expect("defaults");
        assert!(!s.acme.enabled);
        assert_eq!(s.acme.directory, LETSENCRYPT);
        let err = parse(&[
            "--acme",
            "--https-listen",
            "127.0.0.1:8443",
            "--acme-challenge",
            "http-01",
        ])
        .expect_err("http-01 needs the HTTP listener");
        assert!(err.to_string().contains("MILKCRATE_HTTP_LISTEN"), "{err}");
        let s = parse(&[
            "--acme",
            "--https-listen",
            "127.0.0.1:8443",
            "--acme-challenge",
            "tls-alpn-01",
            "--acme-directory",
            "letsencrypt-staging",
        ])
        .expect("tls-alpn-01 on the HTTPS listener");
        assert_eq!(s.acme.challenge, AcmeChallenge::TlsAlpn01);
        assert_eq!(s.acme.directory, LETSENCRYPT_STAGING);
        let s = parse(&[
            "--acme",
            "--http-listen",
            "127.0.0.1:8080",
            "--https-listen",
            "127.0.0.1:8443",
        ])
        .expect("both listeners");
        assert_eq!(s.acme.challenge, AcmeChallenge::Http01);
        for bad in [
            vec!["--acme-directory", "http://ca.example/dir"],
            vec!["--acme-challenge", "dns-01"],
            vec!["--acme-email", "not an address"],
            vec!["--acme"],
        ] {
            assert!(parse(&bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn log_settings_prefer_milkcrate_log_and_know_two_formats() {
        let s = |a: Option<&str>, b: Option<&str>, f: Option<&str>| {
            LogSettings::from_values(
                a.map(String::from),
                b.map(String::from),
                f.map(String::from),
            )
        };
        let both = s(Some("milkcrate=debug"), Some("info"), None).expect("valid");
        assert_eq!(
            both.filter,
            Some(("MILKCRATE_LOG", "milkcrate=debug".to_string()))
        );
        assert!(!both.json);
        let rust = s(None, Some("info"), Some("json")).expect("valid");
        assert_eq!(rust.filter, Some(("RUST_LOG", "info".to_string())));
        assert!(rust.json);
        assert_eq!(s(None, None, Some("text")).expect("valid").filter, None);
        let err = s(None, None, Some("yaml")).expect_err("unknown format");
        assert!(err.contains("MILKCRATE_LOG_FORMAT"), "{err}");
    }

    use super::*;

    #[test]
    fn cidr_matching() {
        let net = IpNet::parse("172.18.0.0/16").unwrap();
        assert!(net.contains("172.18.3.4".parse().unwrap()));
        assert!(!net.contains("172.19.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:172.18.0.9".parse().unwrap()));
        let one = IpNet::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(IpNet::parse("10.0.0.0/33").is_err());
        assert!(IpNet::parse("nonsense").is_err());
    }

    #[test]
    fn booleans_like_the_original() {
        for t in ["1", "TRUE", "yes", "On"] {
            assert_eq!(parse_bool(t), Ok(true));
        }
        for f in ["0", "false", "", "off"] {
            assert_eq!(parse_bool(f), Ok(false));
        }
        assert!(parse_bool("maybe").is_err());
    }
}

/// Access log, metrics and alert flags (`milkcrate serve`).
#[derive(Debug, Clone, Args)]
pub struct ObserveArgs {
    /// Write one JSON line per proxied request to `<data>/access/<app>.log`.
    #[arg(long, env = "MILKCRATE_ACCESS_LOG", default_value = "true", value_parser = parse_bool)]
    pub access_log: bool,

    /// Access log size in bytes at which an app's file is rotated.
    #[arg(long, env = "MILKCRATE_ACCESS_LOG_MAX_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub access_log_max_bytes: u64,

    /// Rotated access log files kept per app.
    #[arg(long, env = "MILKCRATE_ACCESS_LOG_KEEP", default_value_t = 3)]
    pub access_log_keep: u32,

    /// Lines waiting to be written before new ones are dropped (and counted).
    #[arg(long, env = "MILKCRATE_ACCESS_LOG_QUEUE", default_value_t = 8192)]
    pub access_log_queue: usize,

    /// Serve `GET /metrics` (Prometheus) on this separate address, e.g. 127.0.0.1:9464.
    #[arg(long, env = "MILKCRATE_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,

    /// Serve `GET /metrics` on the main listener to `Authorization: Bearer <this token>`.
    #[arg(long, env = "MILKCRATE_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// Crash-loop alert: this many unexpected exits …
    #[arg(long, env = "MILKCRATE_ALERT_CRASH_RESTARTS", default_value_t = 3)]
    pub alert_crash_restarts: u32,

    /// … within this many seconds.
    #[arg(long, env = "MILKCRATE_ALERT_CRASH_WINDOW_SECS", default_value_t = 600)]
    pub alert_crash_window_secs: u64,

    /// Unhealthy alert: an app unhealthy for this many seconds.
    #[arg(long, env = "MILKCRATE_ALERT_UNHEALTHY_SECS", default_value_t = 300)]
    pub alert_unhealthy_secs: u64,

    /// Engine alert: the Docker Engine unreachable for this many seconds.
    #[arg(long, env = "MILKCRATE_ALERT_ENGINE_SECS", default_value_t = 60)]
    pub alert_engine_secs: u64,

    /// Disk alert: free space of the data folder (or the engine's root) below this percentage.
    #[arg(long, env = "MILKCRATE_ALERT_DISK_PERCENT", default_value_t = 10)]
    pub alert_disk_percent: u8,

    /// Certificate alert: a served certificate expiring within this many days (0: off).
    #[arg(long, env = "MILKCRATE_ALERT_CERT_DAYS", default_value_t = 14)]
    pub alert_cert_days: u32,
}

/// What [`ObserveArgs`] says, checked.
#[derive(Clone)]
pub struct ObserveSettings {
    pub access_log: bool,
    pub access_max_bytes: u64,
    pub access_keep: u32,
    pub access_queue: usize,
    pub metrics_listen: Option<SocketAddr>,
    pub metrics_token: Option<String>,
    pub crash_restarts: u32,
    pub crash_window: Duration,
    pub unhealthy_after: Duration,
    pub engine_down_after: Duration,
    pub disk_low_percent: u8,
    /// Days before a certificate's expiry its alert is sent (0: never).
    pub cert_expiry_days: u32,
    /// How often the alert conditions are checked (tests shorten it).
    pub alert_check_interval: Duration,
    /// First retry of a failed delivery; doubled for each later try (tests shorten it).
    pub alert_retry_base: Duration,
}

impl std::fmt::Debug for ObserveSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObserveSettings")
            .field("access_log", &self.access_log)
            .field("metrics_listen", &self.metrics_listen)
            .field(
                "metrics_token",
                &self.metrics_token.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl Default for ObserveSettings {
    fn default() -> Self {
        Self {
            access_log: true,
            access_max_bytes: 10 * 1024 * 1024,
            access_keep: 3,
            access_queue: 8192,
            metrics_listen: None,
            metrics_token: None,
            crash_restarts: 3,
            crash_window: Duration::from_secs(600),
            unhealthy_after: Duration::from_secs(300),
            engine_down_after: Duration::from_secs(60),
            disk_low_percent: 10,
            cert_expiry_days: 14,
            alert_check_interval: Duration::from_secs(5),
            alert_retry_base: Duration::from_secs(5),
        }
    }
}

impl ObserveSettings {
    pub fn from_args(a: &ObserveArgs) -> Result<Self, ConfigError> {
        let metrics_listen = match a.metrics_listen.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(v) => Some(v.parse::<SocketAddr>().map_err(|_| {
                ConfigError::Invalid(format!(
                    "MILKCRATE_METRICS_LISTEN={v:?} is not an address: give an IP and a port, such as 127.0.0.1:9464."
                ))
            })?),
        };
        let metrics_token = match a.metrics_token.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(t) if t.len() < 16 => {
                return Err(ConfigError::Invalid(
                    "MILKCRATE_METRICS_TOKEN is shorter than 16 characters: set a long random value (e.g. `openssl rand -hex 32`).".into(),
                ));
            }
            Some(t) => Some(t.to_string()),
        };
        if a.alert_disk_percent > 99 {
            return Err(ConfigError::Invalid(
                "MILKCRATE_ALERT_DISK_PERCENT must be between 0 and 99.".into(),
            ));
        }
        Ok(Self {
            access_log: a.access_log,
            access_max_bytes: a.access_log_max_bytes.max(4096),
            access_keep: a.access_log_keep.max(1),
            access_queue: a.access_log_queue.clamp(16, 1_000_000),
            metrics_listen,
            metrics_token,
            crash_restarts: a.alert_crash_restarts.max(1),
            crash_window: Duration::from_secs(a.alert_crash_window_secs.max(10)),
            unhealthy_after: Duration::from_secs(a.alert_unhealthy_secs.max(5)),
            engine_down_after: Duration::from_secs(a.alert_engine_secs.max(5)),
            disk_low_percent: a.alert_disk_percent,
            cert_expiry_days: a.alert_cert_days,
            ..Self::default()
        })
    }
}
