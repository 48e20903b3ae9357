//! Application state and start-up: opening the store and audit log, the production guard,
//! background tasks, and [`serve`], which both `milkcrate serve` and the tests call.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::audit::AuditLog;
use crate::auth::Passwords;
use crate::config::{PLACEHOLDER_SECRET_KEYS, Settings};

use crate::service::loghub::LogHub;
use crate::service::status::StatusMonitor;
use crate::store::Store;
use crate::web::ratelimit::RateLimiter;

/// Shared by every request. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub audit: AuditLog,
    pub limiter: Arc<RateLimiter>,
    pub passwords: Arc<Passwords>,
    pub engine: Arc<EngineMonitor>,
    pub status: Arc<StatusMonitor>,
    /// Resource use over the last hour, per app.
    pub stats: crate::service::stats::Stats,
    pub logs: Arc<LogHub>,
    /// The built-in router's table, and its pooled connections to app containers.
    pub routes: Arc<crate::router::Routes>,
    pub upstream: crate::router::Upstream,
    /// The router's own handles (the same table, pool, status and meters as above).
    pub router: Arc<crate::router::RouterState>,
    /// One action per app at a time (deploys, start/stop, delete).
    pub app_locks: Arc<crate::service::locks::AppLocks>,
    /// One permit per concurrent build (MILKCRATE_BUILD_CONCURRENCY).
    pub build_slots: Arc<tokio::sync::Semaphore>,
    /// Key for CSRF tokens, derived from SECRET_KEY.
    pub csrf_key: [u8; 32],
    /// Key for app environment variables at rest, derived from SECRET_KEY.
    pub env_key: [u8; 32],
    /// The access log of app traffic, the Prometheus metrics, and alerting.
    pub access: crate::service::access::AccessLog,
    pub metrics: Arc<crate::service::metrics::Metrics>,
    pub alerts: Arc<crate::service::alerts::Alerts>,
    /// Every certificate the HTTPS listeners serve, chosen by SNI (`tls/`).
    pub certs: Arc<crate::tls::CertStore>,
    /// ACME state per host name (`service/acme.rs`).
    pub acme: Arc<crate::service::acme::Acme>,
}

impl AppState {
    /// The token use cases, with only the handles they use.
    pub fn tokens(&self) -> crate::service::tokens::Tokens {
        crate::service::tokens::Tokens::new(self.store.clone(), self.audit.clone())
    }

    /// The volume use cases, with only the handles they use.
    pub fn volumes(&self) -> crate::service::volumes::Volumes {
        crate::service::volumes::Volumes {
            settings: self.settings.clone(),
            store: self.store.clone(),
            engine: self.engine.clone(),
        }
    }

    /// Adding and removing custom domains, with only the handles that takes.
    pub fn domains(&self) -> crate::service::domains::Domains {
        crate::service::domains::Domains {
            settings: self.settings.clone(),
            store: self.store.clone(),
            audit: self.audit.clone(),
            routes: self.routes.clone(),
            status: self.status.clone(),
            acme: self.acme.clone(),
        }
    }

    /// The deploy pipeline, with only the handles it uses.
    pub fn deployer(&self) -> crate::service::deploy::Deployer {
        let alerting = self.alerting();
        crate::service::deploy::Deployer {
            settings: self.settings.clone(),
            store: self.store.clone(),
            engine: self.engine.clone(),
            logs: self.logs.clone(),
            audit: self.audit.clone(),
            status: self.status.clone(),
            routes: crate::service::deploy::RouteSwitch::new(self.routes.clone()),
            app_locks: self.app_locks.clone(),
            build_slots: self.build_slots.clone(),
            env_key: self.env_key,
            metrics: self.metrics.clone(),
            alerts: crate::service::alerts::Notifier::new(move |alert| {
                let alerting = alerting.clone();
                async move { crate::service::alerts::notify(&alerting, alert).await }
            }),
        }
    }

    /// Sending alerts, with only the handles that takes.
    pub fn alerting(&self) -> crate::service::alerts::Alerting {
        crate::service::alerts::Alerting {
            settings: self.settings.clone(),
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            alerts: self.alerts.clone(),
        }
    }

    /// Watching for alert conditions (exits, engine, health, certificates, disk).
    pub fn alert_watch(&self) -> crate::service::alerts::AlertWatch {
        crate::service::alerts::AlertWatch {
            alerting: self.alerting(),
            engine: self.engine.clone(),
            app_locks: self.app_locks.clone(),
            status: self.status.clone(),
            certs: self.certs.clone(),
            acme: self.acme.clone(),
        }
    }

    /// Issuing and renewing certificates, and the admin's uploads.
    pub fn certificates(&self) -> crate::service::acme::Certificates {
        crate::service::acme::Certificates {
            settings: self.settings.clone(),
            store: self.store.clone(),
            audit: self.audit.clone(),
            certs: self.certs.clone(),
            acme: self.acme.clone(),
            alerting: self.alerting(),
        }
    }

    /// Scheduled and manual backups.
    pub fn backups(&self) -> crate::service::backup_runs::Backups {
        crate::service::backup_runs::Backups {
            settings: self.settings.clone(),
            store: self.store.clone(),
            audit: self.audit.clone(),
            engine: self.engine.clone(),
            env_key: self.env_key,
        }
    }

    /// The status refresh, with only the handles it uses.
    pub fn status_watcher(&self) -> crate::service::status::StatusWatcher {
        crate::service::status::StatusWatcher {
            settings: self.settings.clone(),
            store: self.store.clone(),
            engine: self.engine.clone(),
            status: self.status.clone(),
            routes: self.routes.clone(),
            app_locks: self.app_locks.clone(),
        }
    }

    /// Starting, stopping and deleting apps, with only the handles that takes.
    pub fn lifecycle(&self) -> crate::service::lifecycle::Lifecycle {
        crate::service::lifecycle::Lifecycle {
            deployer: self.deployer(),
            access: self.access.clone(),
        }
    }

    /// Whether `ip` is an app container's address (listed by the last refresh, or routed to
    /// since): such a peer's forwarded headers are never believed.
    pub fn is_app_peer(&self, ip: std::net::IpAddr) -> bool {
        self.router.is_app_peer(ip)
    }
}

pub use crate::docker::monitor::EngineMonitor;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the data folder {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open the database: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("cannot open the audit log {path}: {source}")]
    Audit {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("refusing to start in production:\n{}", .0.join("\n"))]
    Production(Vec<String>),
    #[error("{0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

impl AppState {
    /// Opens everything under the data folder (creating it on first run) and applies the
    /// production guard. Fails with one clear message per problem.
    pub fn open(mut settings: Settings) -> Result<Self, StartError> {
        crate::config::create_private_dir(&settings.data_dir).map_err(|source| {
            StartError::DataDir {
                path: settings.data_dir.display().to_string(),
                source,
            }
        })?;
        settings.resolve_secret_key()?;
        let store = Store::open(&settings.database_path())?;
        settle_identity(&mut settings, &store)?;
        let passwords = Passwords::load(&store, settings.admin_password_override.clone())?;
        production_guard(&settings, &passwords)?;
        if settings.host_firewall == crate::config::HostFirewall::On
            && let Some(why) = crate::docker::firewall::unavailable()
        {
            return Err(StartError::Config(crate::config::ConfigError::Invalid(
                format!(
                    "MILKCRATE_HOST_FIREWALL=on, but {why}. Or set MILKCRATE_HOST_FIREWALL=auto (apply when possible) or off."
                ),
            )));
        }
        let audit = AuditLog::open(
            &settings.audit_path(),
            settings.audit_max_bytes,
            settings.audit_keep,
        )
        .map_err(|source| StartError::Audit {
            path: settings.audit_path().display().to_string(),
            source,
        })?;
        let secret = settings.secret_key.clone().unwrap_or_default();
        std::fs::create_dir_all(settings.data_dir.join("uploads")).map_err(|source| {
            StartError::DataDir {
                path: settings.data_dir.display().to_string(),
                source,
            }
        })?;
        let observe = &settings.observe;
        let access = crate::service::access::AccessLog::start(
            observe
                .access_log
                .then(|| crate::service::access::FileOptions {
                    dir: settings.data_dir.join("access"),
                    max_bytes: observe.access_max_bytes,
                    keep: observe.access_keep,
                }),
            observe.access_queue,
        );
        let settings = Arc::new(settings);
        let engine = Arc::new({
            let (name, slice) = settings.build_cgroup_names();
            EngineMonitor::confining_builds(name, slice, settings.build_pids_max())
        });
        let status = Arc::new(StatusMonitor::default());
        let metrics: Arc<crate::service::metrics::Metrics> = Arc::default();
        let routes = Arc::new(crate::router::Routes::new(&settings));
        let upstream = crate::router::Upstream::default();
        // The router's narrow handles: what it needs, shared with the rest.
        let router = Arc::new(crate::router::RouterState {
            settings: settings.clone(),
            routes: routes.clone(),
            upstream: upstream.clone(),
            status: status.clone(),
            metrics: metrics.clone(),
            access: access.clone(),
            error_page: crate::web::views::error_page,
        });
        Ok(Self {
            access,
            metrics,
            router,
            alerts: Arc::default(),
            csrf_key: crate::secrets::derive_key(&secret, "csrf"),
            env_key: crate::secrets::derive_key(&secret, "app environment"),
            status,
            stats: Arc::default(),
            logs: Arc::new(LogHub::default()),
            routes,
            upstream,
            build_slots: Arc::new(tokio::sync::Semaphore::new(settings.build_concurrency)),
            app_locks: Arc::default(),
            limiter: Arc::new(RateLimiter::new(settings.login_attempts)),
            settings,
            store,
            audit,
            passwords: Arc::new(passwords),
            engine,
            certs: Arc::default(),
            acme: Arc::default(),
        })
    }
}

/// Gives the install its identity: MILKCRATE_INSTANCE when set, else the id stored in its
/// database (generated on the first start). Every object it creates carries it and every
/// filter that lists, adopts or removes is scoped to it, so two installs on one engine never
/// touch each other's containers, images or volumes. A database from before identities keeps
/// the old scope (everything labelled milkcrate.managed) and says so at every start.
pub fn settle_identity(
    settings: &mut Settings,
    store: &Store,
) -> Result<(), crate::store::StoreError> {
    if settings.instance().is_some() {
        return Ok(());
    }
    let fresh = format!("mc-{}", hex::encode(crate::secrets::random_bytes::<5>()));
    match store.install_id_blocking(&fresh)? {
        Some(id) => settings.set_instance(&id),
        None => settings.warnings.push(
            "this install predates install identities: it treats every object labelled milkcrate.managed=true in the engine as its own. If another milkcrate install shares this Docker Engine, give each its own MILKCRATE_INSTANCE (docs/production.md).".into(),
        ),
    }
    Ok(())
}

/// The checks `MILKCRATE_ENV=production` adds; one line per failure, saying what to set.
pub fn production_guard(settings: &Settings, passwords: &Passwords) -> Result<(), StartError> {
    if !settings.production {
        return Ok(());
    }
    let mut problems = Vec::new();
    match settings.secret_key.as_deref() {
        None => problems.push(format!(
            "SECRET_KEY is not set: set it to a long random value (e.g. `openssl rand -hex 32`) or run `milkcrate setup` to write {}.",
            settings.secret_key_path().display()
        )),
        Some(k) if PLACEHOLDER_SECRET_KEYS.contains(&k.trim()) || k.trim().len() < 16 => problems.push(
            "SECRET_KEY is a placeholder or shorter than 16 characters: set it to a long random value (e.g. `openssl rand -hex 32`)."
                .into(),
        ),
        Some(_) => {}
    }
    if let Some(pw) = settings.admin_password_override.as_deref()
        && let Err(weak) = crate::domain::password::check_strength(pw)
    {
        // The same rules as the settings page and `reset-password`: no source of the password
        // gets around them.
        problems.push(format!(
            "MILKCRATE_ADMIN_PASSWORD is too weak ({weak}): set it to a strong password (8+ characters with upper and lower case, a digit and a symbol)."
        ));
    }
    if passwords.default_in_use() {
        problems.push(
            "the admin password is still the default 'admin': set MILKCRATE_ADMIN_PASSWORD or run `milkcrate reset-password`."
                .into(),
        );
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(StartError::Production(problems))
    }
}

/// Serves `state` on `listener` until `shutdown` resolves, with background upkeep running.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let tls = state.settings.tls.is_some();
    serve_on(
        state,
        vec![crate::server::Listener {
            listener,
            kind: crate::server::ListenerKind::Main { tls },
        }],
        shutdown,
    )
    .await
}

/// Serves on every listener given (MILKCRATE_LISTEN and the HTTP and HTTPS ones) until
/// `shutdown` resolves. Stored certificates are loaded first; with MILKCRATE_ACME=on the
/// renewal task runs beside the server.
pub async fn serve_on(
    state: AppState,
    listeners: Vec<crate::server::Listener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    if let Some(files) = &state.settings.tls {
        let served = crate::server::load_tls(files).map_err(StartError::Tls)?;
        state.certs.set_default(served);
    }
    crate::service::acme::load_stored(&state.certificates());
    refuse_trusted_app_network(&state).await?;
    let upkeep = tokio::spawn(upkeep(state.clone()));
    let status = tokio::spawn({
        let state = state.clone();
        async move {
            crate::service::reconcile::at_start_up(&state.deployer()).await;
            // Swarm mode: task containers dying or starting refresh the status at once.
            let events = crate::service::swarm::watch_events(state.deployer());
            tokio::join!(
                events,
                crate::service::status::watch(state.status_watcher())
            );
        }
    });
    let stats = tokio::spawn(crate::service::stats::follow(
        state.settings.stats_interval,
        state.status.clone(),
        state.engine.clone(),
        state.stats.clone(),
    ));
    let backups = tokio::spawn(crate::service::backup_runs::schedule(state.backups()));
    let observe = crate::web::observe::start(&state).await?;
    let acme = tokio::spawn(crate::service::acme::run(state.certificates()));
    let router = crate::web::router(state.clone());
    crate::server::run(state.clone(), router, listeners, shutdown).await;
    // The access writer lets lines gather between batches: the last ones are written now.
    state.access.drain(Duration::from_secs(2)).await;
    upkeep.abort();
    status.abort();
    stats.abort();
    backups.abort();
    for task in observe {
        task.abort();
    }
    acme.abort();
    Ok(())
}

/// Refuses to start when TRUSTED_PROXIES covers addresses app containers get on milkcrate's
/// network: any app could then name its own client address (its own rate-limit bucket, login
/// budget and audit IP). With no engine to ask, start and say so.
async fn refuse_trusted_app_network(state: &AppState) -> Result<(), StartError> {
    if state.settings.trusted_proxies.is_empty() {
        return Ok(());
    }
    let ranges = match tokio::time::timeout(Duration::from_secs(10), async {
        state
            .engine
            .client()
            .await?
            .network_ranges(&state.settings.network)
            .await
    })
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(crate::docker::EngineError::NotFound(_))) => return Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not check TRUSTED_PROXIES against the app network");
            return Ok(());
        }
        Err(_) => {
            tracing::warn!(
                "could not check TRUSTED_PROXIES against the app network: the engine did not answer in 10 s"
            );
            return Ok(());
        }
    };
    match trusted_app_overlap(&state.settings.trusted_proxies, &ranges) {
        Some((proxy, range)) => Err(StartError::Config(crate::config::ConfigError::Invalid(
            format!(
                "TRUSTED_PROXIES contains {proxy}, which overlaps {range}, where app containers on the network {} get their addresses: any app could then forge its client address. Trust only your proxy's own address, outside that range (see deploy/docker-compose.yml).",
                state.settings.network
            ),
        ))),
        None => Ok(()),
    }
}

/// The first trusted block that overlaps an app address range, with that range.
pub fn trusted_app_overlap(
    trusted: &[crate::config::IpNet],
    ranges: &[String],
) -> Option<(String, String)> {
    ranges.iter().find_map(|r| {
        let range = crate::config::IpNet::parse(r).ok()?;
        trusted
            .iter()
            .find(|t| t.overlaps(&range))
            .map(|t| (t.to_string(), r.clone()))
    })
}

/// Periodic work: engine status, expired sessions, old rate-limit windows.
async fn upkeep(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        match state.engine.client().await {
            Ok(e) => match e.info().await {
                Ok(info) => state.engine.set(Ok(info)),
                Err(err) => {
                    state.engine.set(Err(err.to_string()));
                    state.engine.forget();
                }
            },
            Err(e) => state.engine.set(Err(e.to_string())),
        }
        let now = crate::clock::now_unix();
        let idle = now - state.settings.session_idle.as_secs() as i64;
        let created = now - state.settings.session_lifetime.as_secs() as i64;
        if let Err(e) = state.store.purge_sessions(idle, created).await {
            tracing::warn!(error = %e, "could not purge expired sessions");
        }
        state.limiter.prune();
    }
}
