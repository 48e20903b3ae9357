//! Live status of every app, kept fresh in the background: ONE filtered list call to the engine
//! per refresh (never one per app), plus HTTP health probes of apps whose image has no
//! HEALTHCHECK. Pages read the last snapshot and never wait on Docker or on an app.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::docker::ContainerFacts;
use crate::domain::health::{AppHealth, Check};
use crate::domain::state::{AppStatus as Desired, RestartPolicy};

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub taken: Option<Instant>,
    pub containers: Vec<ContainerFacts>,
    /// Why the engine could not be asked, if it could not.
    pub engine_error: Option<String>,
    /// Health-probe results by container id: Ok(HTTP status) or Err(why).
    pub probes: HashMap<String, Result<u16, String>>,
    /// Swarm mode: services, tasks, nodes and task addresses (`service/swarm.rs`).
    pub swarm: Option<Arc<crate::service::swarm::SwarmView>>,
}

/// The latest snapshot, shared: pages take an `Arc` and never copy the container list.
#[derive(Default)]
pub struct StatusMonitor {
    snapshot: RwLock<Arc<Snapshot>>,
    wake: Notify,
    /// Containers started again lately, and when.
    restarted: std::sync::Mutex<HashMap<String, Instant>>,
}

impl StatusMonitor {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether `ip` belongs to one of this install's app containers (as last listed).
    pub fn is_app_address(&self, ip: std::net::IpAddr) -> bool {
        self.snapshot().containers.iter().any(|c| {
            c.ip.as_deref()
                .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                .is_some_and(|a| crate::config::canonical(a) == ip)
        })
    }

    /// Whether container `id` may be started again now (at most once a minute each).
    fn may_restart(&self, id: &str) -> bool {
        let mut tried = self.restarted.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        tried.retain(|_, at| now.duration_since(*at) < RESTART_EVERY);
        if tried.contains_key(id) {
            return false;
        }
        tried.insert(id.to_string(), now);
        true
    }

    /// Asks for a refresh now (after an action), instead of at the next tick.
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    fn store(&self, s: Snapshot) {
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(s);
    }
}

/// The status refresh with only the handles it uses: it lists the engine, reads the apps,
/// rebuilds the route table and starts again what should run. Built by the composition root
/// (`AppState::status_watcher`, `app.rs`).
#[derive(Clone)]
pub struct StatusWatcher {
    pub settings: Arc<crate::config::Settings>,
    pub store: crate::store::Store,
    pub engine: Arc<crate::docker::monitor::EngineMonitor>,
    pub status: Arc<StatusMonitor>,
    /// The route table, rebuilt after each refresh.
    pub routes: Arc<crate::router::Routes>,
    /// An app with an action under way is not started again behind it.
    pub app_locks: Arc<crate::service::locks::AppLocks>,
}

/// The refresh loop; runs for the life of the server.
pub async fn watch(state: StatusWatcher) {
    let mut last_probe = Instant::now() - Duration::from_secs(3600);
    loop {
        refresh(&state, &mut last_probe).await;
        tokio::select! {
            () = tokio::time::sleep(state.settings.status_interval) => {}
            () = state.status.wake.notified() => {}
        }
    }
}

async fn refresh(state: &StatusWatcher, last_probe: &mut Instant) {
    // The next snapshot starts from the last (probe results live longer than one refresh).
    let mut snap = Snapshot::clone(&state.status.snapshot());
    let engine = match state.engine.client().await {
        Ok(e) => e,
        Err(e) => {
            snap.engine_error = Some(e.to_string());
            state.status.store(snap);
            return;
        }
    };
    let label = state.settings.managed_filter();
    // A hung engine must not hang the status (and with it the route table) for minutes.
    let listed = tokio::time::timeout(
        LIST_TIMEOUT,
        engine.list_labelled(&[label], &state.settings.network),
    )
    .await
    .unwrap_or_else(|_| {
        Err(crate::docker::EngineError::Unreachable(format!(
            "no answer within {} s",
            LIST_TIMEOUT.as_secs()
        )))
    });
    match listed {
        Ok(containers) => {
            snap.containers = containers;
            snap.engine_error = None;
        }
        Err(e) => {
            snap.engine_error = Some(e.to_string());
            state.engine.forget();
        }
    }
    if crate::service::swarm::enabled(&state.settings) && snap.engine_error.is_none() {
        match crate::service::swarm::view(&state.settings, &engine).await {
            Ok(view) => snap.swarm = Some(Arc::new(view)),
            Err(e) => snap.engine_error = Some(e.to_string()),
        }
    }
    snap.taken = Some(Instant::now());
    // One read of the apps serves the route table and the probes.
    let apps = {
        let _writer = state.routes.write_lock().await;
        let apps = state.store.apps().await;
        let rows = apps.as_ref().map(|a| routable(a));
        state
            .routes
            .refresh(rows.as_deref(), &snap, |a| a.internal_port);
        apps
    };
    // Without the apps (the store failed; `refresh` said why) the table, the probes and the
    // repairs all keep what they had: an empty list would read as "no app should run".
    let Ok(apps) = apps else {
        state.status.store(snap);
        return;
    };
    if snap.engine_error.is_none() {
        restart_lost(state, &engine, &apps, &snap);
    }
    if last_probe.elapsed() >= state.settings.probe_interval {
        *last_probe = Instant::now();
        snap.probes = probe_all(&apps, &snap.containers).await;
    }
    state.status.store(snap);
}

/// How long one listing of the engine may take before the refresh gives up on it.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// How often one container is started again at most, should it keep exiting.
const RESTART_EVERY: Duration = Duration::from_secs(60);

/// Starts again the containers of apps that should run but whose container is Exited with a
/// restart policy that would have kept it running (the engine crashed or restarted, or it was
/// stopped behind milkcrate's back): desired state wins, at start-up and whenever the engine
/// comes back. Apps with an action under way are left to it; each container is tried at most
/// once a minute.
fn restart_lost(
    state: &StatusWatcher,
    engine: &crate::docker::Engine,
    apps: &[crate::store::AppRow],
    snap: &Snapshot,
) {
    for app in apps.iter().filter(|a| a.status == Desired::Running) {
        let lost: Vec<String> = snap
            .containers
            .iter()
            .filter(|c| c.state == "exited")
            .filter(|c| {
                c.id == app.container_id
                    || (app.deployment_type == crate::service::compose::DEPLOYMENT_TYPE
                        && c.app.as_deref() == Some(app.name.as_str()))
            })
            .map(|c| c.id.clone())
            .filter(|id| state.status.may_restart(id))
            .collect();
        if lost.is_empty() {
            continue;
        }
        let Some(guard) = state.app_locks.try_lock(app.id) else {
            continue;
        };
        let (engine, state, name) = (engine.clone(), state.clone(), app.name.clone());
        tokio::spawn(async move {
            let _guard = guard;
            for id in lost {
                match engine.restart_policy(&id).await {
                    Ok(Some(p))
                        if p.parse::<RestartPolicy>()
                            .is_ok_and(RestartPolicy::keeps_running) => {}
                    _ => continue,
                }
                match engine.start(&id).await {
                    Ok(()) => tracing::warn!(
                        app = name,
                        container = id,
                        "started again a container that should run and had exited"
                    ),
                    Err(e) => {
                        tracing::warn!(app = name, container = id, error = %e, "could not start again a container that should run")
                    }
                }
            }
            state.status.poke();
        });
    }
}

/// Apps whose route is valid (or empty: served at host names only): a row adopted from the
/// original with a route on one of milkcrate's own paths (it reserved fewer) is never served,
/// so our pages always win.
fn routable(apps: &[crate::store::AppRow]) -> Vec<&crate::store::AppRow> {
    apps.iter()
        .filter(
            |a| match crate::domain::app::PublicRoute::parse(&a.public_route) {
                _ if a.public_route.is_empty() => true,
                Ok(r) if r.as_str() == a.public_route => true,
                _ => {
                    tracing::warn!(
                        app = a.name,
                        route = a.public_route,
                        "not routing an app whose route overlaps milkcrate's own paths"
                    );
                    false
                }
            },
        )
        .collect()
}

/// Probes the health path of every running app without a HEALTHCHECK, all at once, each with a
/// short timeout, on the container's own address.
async fn probe_all(
    apps: &[crate::store::AppRow],
    containers: &[ContainerFacts],
) -> HashMap<String, Result<u16, String>> {
    let mut tasks = Vec::new();
    for app in apps {
        let Some(path) = app.health_path.clone() else {
            continue;
        };
        let Some(c) = containers.iter().find(|c| c.id == app.container_id) else {
            continue;
        };
        if c.state != "running" || c.health.is_some() {
            continue;
        }
        let Some(ip) = c.ip.clone() else { continue };
        let id = c.id.clone();
        let port = app.internal_port;
        tasks.push(tokio::spawn(
            async move { (id, probe(&ip, port, &path).await) },
        ));
    }
    let mut out = HashMap::new();
    for t in tasks {
        if let Ok((id, r)) = t.await {
            out.insert(id, r);
        }
    }
    out
}

/// One `GET path` over plain HTTP/1.0; the status code, or why there was none.
pub async fn probe(ip: &str, port: u16, path: &str) -> Result<u16, String> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect((ip, port))
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(
            format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\nUser-Agent: milkcrate-health\r\n\r\n")
                .as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
        let head = String::from_utf8_lossy(&buf[..n]);
        head.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| "not an HTTP answer".to_string())
    };
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .map_err(|_| "no answer within 2 s".to_string())?
}

/// One app's health, computed from the last snapshot, and the engine's sentence about it.
/// How it is shown (words, tones) is `web/`'s business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub health: AppHealth,
    pub detail: String,
}

impl Health {
    /// Whether something of the app runs (a container, or at least one task).
    pub fn running(&self) -> bool {
        self.health.is_running()
    }
}

/// A compose app's container of each service, by service name; where an update left two, the
/// running one.
pub fn stack_services<'a>(
    app: &crate::store::AppRow,
    snap: &'a Snapshot,
) -> std::collections::BTreeMap<&'a str, &'a ContainerFacts> {
    let mut by_name = std::collections::BTreeMap::new();
    for c in snap
        .containers
        .iter()
        .filter(|c| c.app.as_deref() == Some(app.name.as_str()))
    {
        if let Some(s) = c.service.as_deref() {
            let keep = by_name
                .get(s)
                .is_some_and(|old: &&ContainerFacts| old.state == "running");
            if !keep {
                by_name.insert(s, c);
            }
        }
    }
    by_name
}

pub fn status_of(app: &crate::store::AppRow, snap: &Snapshot) -> Health {
    let make = |health, detail: String| Health { health, detail };
    if app.status == Desired::Deploying {
        return make(AppHealth::Deploying, "The first deploy is running.".into());
    }
    if let Some(e) = &snap.engine_error {
        return make(
            AppHealth::Unknown,
            format!("The Docker Engine is not reachable: {e}"),
        );
    }
    if snap.taken.is_none() {
        return make(AppHealth::Checking, "Status not read yet.".into());
    }
    if let Some(s) = snap
        .swarm
        .as_ref()
        .and_then(|view| crate::service::swarm::status_of(app, view))
    {
        return s;
    }
    let Some(c) = snap.containers.iter().find(|c| c.id == app.container_id) else {
        return make(
            AppHealth::Missing,
            "Its container is gone from the engine; redeploy it.".into(),
        );
    };
    // Without a HEALTHCHECK, the probe of the health path (if any) decides.
    let (check, detail) = match (c.health.as_deref(), snap.probes.get(&c.id)) {
        (Some(word), _) => (Check::of_healthcheck(Some(word)), c.status.clone()),
        (None, Some(Ok(code))) => (
            if *code < 400 {
                Check::Passing
            } else {
                Check::Failing
            },
            format!("{} · health check answered {code}", c.status),
        ),
        (None, Some(Err(e))) => (Check::Failing, format!("{} · health check: {e}", c.status)),
        (None, None) => (Check::None, c.status.clone()),
    };
    let health = AppHealth::of_container(app.status, &c.state, check);
    let detail = if c.state == "running" {
        detail
    } else {
        c.status.clone()
    };
    make(health, detail)
}
