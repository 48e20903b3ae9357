//! Application state and start-up: opening the store and audit log, the production guard,
//! background tasks, and [`serve`], which both `milkcrate serve` and the tests call.

use std::future::Future;
use std::sync::Arc;
use std::sync::RwLock;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::audit::AuditLog;
use crate::auth::Passwords;
use crate::config::{PLACEHOLDER_SECRET_KEYS, Settings};
use crate::docker::{Engine, EngineInfo};
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
    /// Key for CSRF tokens, derived from SECRET_KEY.
    pub csrf_key: [u8; 32],
}

/// The engine's last known state, refreshed in the background so no page waits on Docker.
#[derive(Default)]
pub struct EngineMonitor {
    state: RwLock<Option<Result<EngineInfo, String>>>,
}

impl EngineMonitor {
    pub fn get(&self) -> Option<Result<EngineInfo, String>> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, v: Result<EngineInfo, String>) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Some(v);
    }
}

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
        create_private_dir(&settings.data_dir).map_err(|source| StartError::DataDir {
            path: settings.data_dir.display().to_string(),
            source,
        })?;
        settings.resolve_secret_key()?;
        let store = Store::open(&settings.database_path())?;
        let passwords = Passwords::load(&store, settings.admin_password_override.clone())?;
        production_guard(&settings, &passwords)?;
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
        Ok(Self {
            csrf_key: crate::secrets::derive_key(&secret, "csrf"),
            limiter: Arc::new(RateLimiter::new(settings.login_attempts)),
            settings: Arc::new(settings),
            store,
            audit,
            passwords: Arc::new(passwords),
            engine: Arc::new(EngineMonitor::default()),
        })
    }
}

/// Creates the data folder (and parents) readable by its owner only; an existing folder is
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
    let tls = match &state.settings.tls {
        Some(files) => Some(crate::server::load_tls(files).map_err(StartError::Tls)?),
        None => None,
    };
    let upkeep = tokio::spawn(upkeep(state.clone()));
    let router = crate::web::router(state.clone());
    crate::server::run(router, listener, tls, shutdown).await;
    upkeep.abort();
    Ok(())
}

/// Periodic work: engine status, expired sessions, old rate-limit windows.
async fn upkeep(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let mut engine: Option<Engine> = None;
    loop {
        tick.tick().await;
        if engine.is_none() {
            match Engine::connect().await {
                Ok(e) => engine = Some(e),
                Err(e) => state.engine.set(Err(e.to_string())),
            }
        }
        if let Some(e) = &engine {
            match e.info().await {
                Ok(info) => state.engine.set(Ok(info)),
                Err(err) => {
                    state.engine.set(Err(err.to_string()));
                    engine = None;
                }
            }
        }
        let now = crate::auth::now_unix();
        let idle = now - state.settings.session_idle.as_secs() as i64;
        let created = now - state.settings.session_lifetime.as_secs() as i64;
        if let Err(e) = state.store.purge_sessions(idle, created).await {
            tracing::warn!(error = %e, "could not purge expired sessions");
        }
        state.limiter.prune();
    }
}
