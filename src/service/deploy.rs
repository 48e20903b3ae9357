//! One deploy: build (or reuse) an image, start a hardened container beside the old one, wait
//! until it is up, then swap. Runs in the background, queued behind a semaphore (one build at a
//! time by default) with a timeout; every line of it goes to the live log and the store.
//!
//! Failure leaves things as they were: a failed first deploy removes its container, image,
//! sources and app row (the deploy record and its log stay, so the admin can read why); a failed
//! update or rollback removes only what it created, and the old container keeps serving.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use tracing::Instrument;

use crate::archive::{self, BuildTarget, CheckedZip};
use crate::audit::{Actor, Event};
use crate::clock::now_unix;
use crate::docker::{BuildEvent, Engine, EngineError};
use crate::domain::app::choose_port;
use crate::domain::hardening::{ContainerSpec, Limits};
use crate::domain::labels;
use crate::domain::state::DeployStatus;
use crate::domain::volume::Mounts;
use crate::store::AppRow;

/// The deploy pipeline (both kinds of app, swarm mode, images and registries) with only the
/// handles it uses. Built by the composition root (`AppState::deployer`, `app.rs`); handlers
/// extract it as a substate (`web/substates.rs`).
#[derive(Clone)]
pub struct Deployer {
    pub settings: Arc<crate::config::Settings>,
    pub store: crate::store::Store,
    pub engine: Arc<crate::docker::monitor::EngineMonitor>,
    /// The live deploy logs.
    pub logs: Arc<crate::service::loghub::LogHub>,
    pub audit: crate::audit::AuditLog,
    /// Asked to refresh after a deploy changed what runs.
    pub status: Arc<crate::service::status::StatusMonitor>,
    /// Switches an app's traffic to its new container.
    pub routes: RouteSwitch,
    /// One action per app at a time, and one permit per concurrent build.
    pub app_locks: Arc<crate::service::locks::AppLocks>,
    pub build_slots: Arc<tokio::sync::Semaphore>,
    /// Key for app environment variables and registry passwords at rest.
    pub env_key: [u8; 32],
    pub metrics: Arc<crate::service::metrics::Metrics>,
    /// Deploy ends are alerts.
    pub alerts: crate::service::alerts::Notifier,
}

impl Deployer {
    /// The volume use cases (a deploy hands volumes to the app's user).
    pub fn volumes(&self) -> crate::service::volumes::Volumes {
        crate::service::volumes::Volumes {
            settings: self.settings.clone(),
            store: self.store.clone(),
            engine: self.engine.clone(),
        }
    }
}

/// The narrow part of the router a deploy or a stop needs: take the writer's lock, point an
/// app at its new container, or serve its "stopped" page.
#[derive(Clone)]
pub struct RouteSwitch(Arc<crate::router::Routes>);

impl RouteSwitch {
    pub fn new(routes: Arc<crate::router::Routes>) -> Self {
        RouteSwitch(routes)
    }

    /// Held while recording a switch, so no rebuild from older data lands after it.
    pub async fn write_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.0.write_lock().await
    }

    /// Points `app` at `container` at `addr`; returns the in-flight counter of the container
    /// it replaced, to drain.
    pub fn switch(
        &self,
        app: &AppRow,
        container: &str,
        addr: SocketAddr,
    ) -> Option<Arc<std::sync::atomic::AtomicUsize>> {
        self.0.switch(app, container, addr)
    }

    /// Serves `app`'s "stopped" page from now on.
    pub fn mark_stopped(&self, app: &str) {
        self.0.mark_stopped(app)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployKind {
    /// First deploy of a new app, from an uploaded ZIP.
    Create,
    /// A new ZIP for an existing app.
    Update,
    /// Back to the previous image.
    Rollback,
    /// Same image, new settings (environment variables).
    Reconfigure,
}

impl DeployKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeployKind::Create => "create",
            DeployKind::Update => "update",
            DeployKind::Rollback => "rollback",
            DeployKind::Reconfigure => "reconfigure",
        }
    }

    fn audit_action(self) -> &'static str {
        match self {
            DeployKind::Create => "deploy",
            DeployKind::Update => "update",
            DeployKind::Rollback => "rollback",
            DeployKind::Reconfigure => "redeploy",
        }
    }
}

pub struct DeployRequest {
    pub deploy_id: i64,
    pub app_id: i64,
    pub kind: DeployKind,
    /// The checked upload, for Create and Update.
    pub source: Option<(PathBuf, CheckedZip)>,
    /// New volume mounts chosen with an update; `None` keeps the app's.
    pub mounts: Option<Mounts>,
    pub actor: Actor,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum DeployError {
    #[error("{0}")]
    Engine(#[from] EngineError),
    #[error("Image build failed: {0}")]
    Build(String),
    #[error("{0}")]
    Start(String),
    #[error("the deploy took longer than {0} s (MILKCRATE_BUILD_TIMEOUT_SECS) and was stopped")]
    TimedOut(u64),
    #[error("the app is being deleted, so its deploy was stopped")]
    Cancelled,
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// A file of the deploy (its build context) could not be written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A blocking step (writing the context, checking a ZIP) panicked or was cancelled.
    #[error("{0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("{0}")]
    Env(#[from] crate::service::lifecycle::EnvError),
    #[error("{0}")]
    Registry(#[from] crate::service::images::RegistryError),
    #[error("{0}")]
    Plan(#[from] crate::service::compose::PlanError),
    /// The sources could not be made into a build context (the archive's words).
    #[error("{0}")]
    Archive(#[from] crate::archive::ArchiveError),
    #[error("{0}")]
    Other(String),
}

/// Queues the deploy and returns at once; the work runs in the background.
pub fn spawn(state: Deployer, req: DeployRequest) {
    state.logs.open(req.deploy_id);
    tokio::spawn(async move { run(&state, req).await });
}

/// Runs a deploy to its end on the caller's task (the CLI's `restore --redeploy`); returns
/// its final status, `succeeded` or `failed`.
pub async fn run_to_end(state: &Deployer, req: DeployRequest) -> String {
    let id = req.deploy_id;
    state.logs.open(id);
    run(state, req).await;
    state
        .store
        .deploy(id)
        .await
        .ok()
        .flatten()
        .map_or_else(|| "failed".into(), |d| d.status.to_string())
}

#[tracing::instrument(name = "deploy", skip_all, fields(deploy_id = req.deploy_id, app_id = req.app_id, kind = req.kind.audit_action(), app = tracing::field::Empty))]
pub(super) async fn run(state: &Deployer, req: DeployRequest) {
    let deploy_id = req.deploy_id;
    // One action per app: a second deploy waits here, then reads the row the first wrote.
    let mut cancelled = state.app_locks.cancellation(req.app_id);
    let _one_at_a_time = state
        .app_locks
        .lock(req.app_id, || {
            state.logs.line(
                deploy_id,
                "Waiting for another action on this app to finish…\n".into(),
            )
        })
        .await;
    let app = match state.store.app(req.app_id).await {
        Ok(Some(app)) => app,
        found => {
            let why = match found {
                Err(e) => format!("the app could not be read: {e}"),
                _ => "the app no longer exists".to_string(),
            };
            tracing::warn!(error = why, "deploy failed");
            finish(state, deploy_id, DeployStatus::Failed, None, Some(why)).await;
            state.logs.close(deploy_id, "failed");
            return;
        }
    };
    tracing::Span::current().record("app", app.name.as_str());
    tracing::info!(app = %app.name, "deploy started");
    let started = std::time::Instant::now();
    let mut created = Created::default();
    // The timeout and a delete's cancel bound the work up to a ready container, so that
    // whatever stops it, `created` survives and undo removes exactly what it made. The
    // switch and the retiring of the old version are never cut short: a timeout must not
    // undo a deploy that traffic already reaches.
    let timeout = state.settings.build_timeout;
    let prepared = tokio::select! {
        r = tokio::time::timeout(
            timeout,
            prepare_any(state, &req, &app, &mut created).instrument(tracing::info_span!("step", step = "prepare")),
        ) => match r {
            Ok(r) => r,
            Err(_) => Err(DeployError::TimedOut(timeout.as_secs())),
        },
        _ = cancelled.changed() => Err(DeployError::Cancelled),
    };
    let result = match prepared {
        Ok(Prepared::Ready(ready)) => {
            switch_and_retire(state, &req, &app, *ready)
                .instrument(tracing::info_span!("step", step = "switch"))
                .await
        }
        Ok(Prepared::Rolled(image)) => Ok(image),
        Err(e) => Err(e),
    };
    let (status, error) = match &result {
        Ok(_) => (DeployStatus::Succeeded, None),
        Err(e) => (DeployStatus::Failed, Some(e.to_string())),
    };
    match &result {
        Ok(image) => tracing::info!(app = %app.name, image = %image, "deploy succeeded"),
        Err(e) => tracing::warn!(app = %app.name, error = %e, "deploy failed"),
    }
    if let Err(e) = &result {
        log(state, deploy_id, format!("\nDeploy failed: {e}\n")).await;
        undo(state, &req, &app, &created)
            .instrument(tracing::info_span!("step", step = "undo"))
            .await;
    }
    let image = result.as_ref().ok().cloned();
    finish(state, deploy_id, status, image.clone(), error.clone()).await;
    let mut event = Event::new(req.kind.audit_action(), "application", app.name.clone()).details(
        json!({"deploy_id": deploy_id, "public_route": app.public_route, "domains": app.domains, "image_tag": image}),
    );
    if let Some(e) = error {
        event = event.failed(e);
    }
    if let Err(e) = state.audit.record(&req.actor, event).await {
        tracing::warn!(error = %e, "could not write the deploy to the audit log");
    }
    state.logs.close(deploy_id, status.as_str());
    state
        .metrics
        .deploy_finished(status.as_str(), started.elapsed().as_secs_f64());
    let error = result.as_ref().err().map(ToString::to_string);
    state
        .alerts
        .send(crate::service::alerts::deploy_finished(
            &app.name,
            deploy_id,
            error.as_deref(),
        ))
        .await;
}

/// Records the deploy's end; a store that cannot is said in the server log (start-up
/// reconciliation fails a deploy row left unfinished).
async fn finish(
    state: &Deployer,
    deploy_id: i64,
    status: DeployStatus,
    image: Option<String>,
    error: Option<String>,
) {
    if let Err(e) = state
        .store
        .finish_deploy(deploy_id, status, image, error, now_unix())
        .await
    {
        tracing::warn!(deploy_id, %status, error = %e, "could not record the end of a deploy");
    }
}

/// Moves the deploy row to `step`; a store that cannot only costs the page its step name.
pub(super) async fn set_step(state: &Deployer, deploy_id: i64, step: DeployStatus) {
    if let Err(e) = state.store.set_deploy_status(deploy_id, step).await {
        tracing::warn!(deploy_id, %step, error = %e, "could not record a deploy's step");
    }
}

/// What this deploy made (and, for compose stacks, which old containers it stopped), so a
/// failure can undo exactly that.
#[derive(Default)]
pub(super) struct Created {
    pub image: Option<String>,
    pub container: Option<String>,
    /// A compose stack's other new containers and images.
    pub containers: Vec<String>,
    pub images: Vec<String>,
    /// Layers a build under way reported (untagged, unlabelled): a build cut short by the
    /// timeout or a delete leaves them, and only these ids find them.
    pub layers: Vec<String>,
    /// Old containers stopped to make way; started again if the deploy fails.
    pub stopped: Vec<String>,
}

/// A deploy whose new container is up and not yet routed: what [`switch_and_retire`] needs,
/// the same for both kinds of app.
pub(super) struct Ready {
    /// The new main container and its address.
    pub container: String,
    pub addr: SocketAddr,
    /// The image recorded as the app's, and the one kept for rollback.
    pub image: String,
    pub previous: Option<String>,
    pub port: u16,
    /// The containers of the version being replaced (id, name for the log), removed once
    /// traffic has switched and drained.
    pub retire: Vec<(String, String)>,
    pub prune: Prune,
    /// The ZIP that becomes the app's kept sources, if it changes.
    pub source: Option<PathBuf>,
    /// A compose stack's file and main service, recorded with the switch.
    pub compose: Option<(String, String)>,
    /// Said in the last log line (a stack's service count).
    pub services: Option<usize>,
}

/// Which images go once the switch is done.
pub(super) enum Prune {
    /// These (a Dockerfile app's image from before the previous one).
    Images(Vec<String>),
    /// Every image of the app but these (a stack's current and previous ones).
    AllBut(Vec<String>),
}

/// What the timed part of a deploy ends with: a ready container for the switch, or (swarm
/// mode) a service the swarm has already rolled to the new version, and its image.
enum Prepared {
    Ready(Box<Ready>),
    Rolled(String),
}

/// The timed part of a deploy: [`prepare`], or in swarm mode the whole service update.
async fn prepare_any(
    state: &Deployer,
    req: &DeployRequest,
    app: &AppRow,
    created: &mut Created,
) -> Result<Prepared, DeployError> {
    if crate::service::swarm::enabled(&state.settings) {
        return crate::service::swarm::attempt(state, req, app, created)
            .await
            .map(Prepared::Rolled);
    }
    prepare(state, req, app, created)
        .await
        .map(|r| Prepared::Ready(Box::new(r)))
}

/// The image a deploy runs: built from the uploaded sources (recorded in `created`), the
/// previous one for a rollback, or the current one for new settings (`reconfigure` is what
/// the log says then). Shared by both orchestrators.
pub(super) async fn image_for(
    state: &Deployer,
    engine: &Engine,
    req: &DeployRequest,
    app: &AppRow,
    created: &mut Created,
    reconfigure: String,
) -> Result<String, DeployError> {
    let deploy_id = req.deploy_id;
    Ok(match req.kind {
        DeployKind::Create | DeployKind::Update => {
            let (zip, checked) = req
                .source
                .as_ref()
                .ok_or_else(|| DeployError::Other("no sources were uploaded".into()))?;
            let tag = image_tag(&state.settings, &app.name, deploy_id);
            log(state, deploy_id, format!("Building {tag}\n")).await;
            let target = BuildTarget::ROOT;
            // Recorded before the build: a build cut short may still have tagged it.
            created.image = Some(tag.clone());
            build(
                state,
                engine,
                deploy_id,
                app,
                zip,
                checked,
                target,
                &[],
                &tag,
                &mut created.layers,
            )
            .await?;
            tag
        }
        DeployKind::Rollback => {
            let prev = app.previous_image_tag.clone().ok_or_else(|| {
                DeployError::Other("there is no previous version to roll back to".into())
            })?;
            if !engine.image_exists(&prev).await {
                return Err(DeployError::Other(format!(
                    "the previous image {prev} is no longer in the engine"
                )));
            }
            log(state, deploy_id, format!("Rolling back to {prev}\n")).await;
            prev
        }
        DeployKind::Reconfigure => {
            log(state, deploy_id, reconfigure).await;
            app.image_tag.clone()
        }
    })
}

/// Everything up to a ready, unrouted container: build or pull, check mounts, start and wait.
/// Runs under the deploy timeout and a delete's cancel.
async fn prepare(
    state: &Deployer,
    req: &DeployRequest,
    app: &AppRow,
    created: &mut Created,
) -> Result<Ready, DeployError> {
    if app.deployment_type == crate::service::compose::DEPLOYMENT_TYPE {
        return crate::service::compose::prepare(state, req, app, created).await;
    }
    let engine = state.engine.client().await?;
    let deploy_id = req.deploy_id;
    let image = image_for(
        state,
        &engine,
        req,
        app,
        created,
        format!("Restarting {} with new settings\n", app.image_tag),
    )
    .await?;
    let facts = engine.image_facts(&image).await?;
    let port = choose_port(app.port_override, &facts.exposed_ports);
    crate::service::ensure_platform_network(
        &state.settings,
        &engine,
        &app.name,
        &app.name_key,
        app.outbound,
    )
    .await?;
    if !app.outbound {
        log(
            state,
            deploy_id,
            "Outbound access is off: the app joins an internal network and reaches nothing outside it.\n".into(),
        )
        .await;
    }

    set_step(state, deploy_id, DeployStatus::Starting).await;
    let mounts = mounts_of(req, app);
    check_mounts(&engine, &mounts).await?;
    let opted = super::images::options(state, app.id).await.image_user;
    let (user, why) =
        super::images::run_as(state, &engine, &image, facts.user.as_deref(), opted, None).await;
    let spec = container_spec(state, app, &image, port, deploy_id)
        .await?
        .mounts(mounts.mounts())
        .process(crate::domain::hardening::Process {
            user: Some(user),
            ..Default::default()
        });
    log(
        state,
        deploy_id,
        format!(
            "Starting container {} (port {port}, {} MiB, {}% CPU)\n",
            spec.name(),
            app.memory_mb,
            app.cpu_percent
        ),
    )
    .await;
    log(state, deploy_id, format!("The container {why}.\n")).await;
    for m in spec.volume_mounts().iter().filter(|m| !m.read_only) {
        // The app must be able to write its volumes' top folders.
        if user != crate::domain::hardening::RUN_AS {
            state.volumes().hand_to(&m.volume, user).await?;
        }
    }
    for m in spec.volume_mounts() {
        let mode = if m.read_only {
            "read-only"
        } else {
            "read-write"
        };
        log(
            state,
            deploy_id,
            format!("Mounting volume {} at {} ({mode})\n", m.volume, m.target),
        )
        .await;
    }
    let id = engine.create_container(&spec).await?;
    created.container = Some(id.clone());
    engine.start(&id).await?;
    let addr = wait_until_up(state, &engine, deploy_id, &id, facts.has_healthcheck, port).await?;

    let (previous, stale) = versions(
        req.kind,
        &app.image_tag,
        app.previous_image_tag.as_deref(),
        &image,
    );
    let retire = Some(app.container_id.clone())
        .filter(|c| !c.is_empty() && *c != id)
        .map(|c| (c, "the previous container".to_string()));
    Ok(Ready {
        container: id,
        addr,
        image,
        previous,
        port,
        retire: retire.into_iter().collect(),
        prune: Prune::Images(stale.into_iter().collect()),
        source: req.source.as_ref().map(|(zip, _)| zip.clone()),
        compose: None,
        services: None,
    })
}

/// After a deploy of `image` over an app at `current` (and `previous`): the image kept for
/// rollback, and the one no longer kept (only an update drops one: current and previous stay,
/// the one before goes). The row is read under the app's lock, so two quick updates chain:
/// v1 → v2 → v3 keeps v2 for rollback and drops v1.
fn versions(
    kind: DeployKind,
    current: &str,
    previous: Option<&str>,
    image: &str,
) -> (Option<String>, Option<String>) {
    let kept = match kind {
        DeployKind::Create => None,
        DeployKind::Update | DeployKind::Rollback => {
            Some(current.to_string()).filter(|t| !t.is_empty() && t != image)
        }
        DeployKind::Reconfigure => previous.map(String::from),
    };
    let dropped = match kind {
        DeployKind::Update => previous
            .filter(|t| Some(*t) != kept.as_deref() && *t != image)
            .map(String::from),
        _ => None,
    };
    (kept, dropped)
}

/// The volume mounts this deploy uses: those an update chose, else the app's.
pub(super) fn mounts_of(req: &DeployRequest, app: &AppRow) -> Mounts {
    match &req.mounts {
        Some(m) => m.clone(),
        None => Mounts::from_column(app.volume_mounts.as_deref()),
    }
}

/// Refuses a mount of a volume that is gone: the engine would quietly create it, empty.
pub(super) async fn check_mounts(engine: &Engine, mounts: &Mounts) -> Result<(), DeployError> {
    for m in mounts.mounts() {
        if engine.volume_labels(&m.volume).await?.is_none() {
            return Err(DeployError::Other(format!(
                "the volume {} mounted at {} no longer exists in Docker",
                m.volume, m.target
            )));
        }
    }
    Ok(())
}

/// The new container is up: record it, send traffic to it (under the router's write lock, so
/// no rebuild from older data lands after), let the old version finish what it serves, then
/// retire it and prune what is no longer kept. Requests never see a gap. Fails only before
/// the switch (the record could not be written); after it, trouble is a warning in the log.
pub(super) async fn switch_and_retire(
    state: &Deployer,
    req: &DeployRequest,
    app: &AppRow,
    ready: Ready,
) -> Result<String, DeployError> {
    let deploy_id = req.deploy_id;
    let replaced = {
        let _writer = state.routes.write_lock().await;
        record_deployed(state, req, app, &ready).await?;
        state.routes.switch(app, &ready.container, ready.addr)
    };
    tracing::info!(container = %ready.container, "traffic switched");
    crate::config::pause_here("deploy-switched").await;
    if let Some(inflight) = replaced {
        crate::router::drain(&inflight, Duration::from_secs(30)).await;
    }
    let engine = state.engine.client().await;
    if !ready.retire.is_empty() {
        log(
            state,
            deploy_id,
            format!(
                "Traffic switched; removing the previous container{}\n",
                if ready.retire.len() > 1 { "s" } else { "" }
            ),
        )
        .await;
    }
    for (id, name) in &ready.retire {
        let removed = match &engine {
            Ok(engine) => engine.remove_container(id).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = removed {
            log(
                state,
                deploy_id,
                format!("Warning: could not remove {name}: {e}\n"),
            )
            .await;
        }
    }
    if let Ok(engine) = &engine {
        prune_images(state, engine, deploy_id, app, &ready.prune).await;
    }
    if let Some(zip) = &ready.source {
        prune_sources(state, app, zip).await;
    }
    log(
        state,
        deploy_id,
        format!(
            "Deployed {} at {}{}\n",
            app.name,
            crate::service::domains::served_at(app, &state.settings),
            ready
                .services
                .map(|n| format!(" ({n} services)"))
                .unwrap_or_default()
        ),
    )
    .await;
    state.status.poke();
    Ok(ready.image)
}

/// Removes the images a deploy no longer keeps (the current and the previous one stay, for
/// rollback). Failures are warnings: the next deploy tries again.
pub(super) async fn prune_images(
    state: &Deployer,
    engine: &Engine,
    deploy_id: i64,
    app: &AppRow,
    prune: &Prune,
) {
    let doomed: Vec<String> = match prune {
        Prune::Images(list) => list.clone(),
        Prune::AllBut(keep) => {
            let label = format!("{}={}", labels::APP, app.name);
            match engine.images_labelled(&state.settings.scoped(label)).await {
                Ok(all) => all.into_iter().filter(|i| !keep.contains(i)).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "could not list the app's images to prune them");
                    Vec::new()
                }
            }
        }
    };
    for old in doomed {
        if let Err(e) = engine.remove_image(&old).await {
            log(
                state,
                deploy_id,
                format!("Warning: could not remove the old image {old}: {e}\n"),
            )
            .await;
        }
    }
}

/// Records the app's new container and image (and the mounts an update chose, a stack's
/// file and main service). Called under the router's writer lock, just before traffic switches.
async fn record_deployed(
    state: &Deployer,
    req: &DeployRequest,
    app: &AppRow,
    ready: &Ready,
) -> Result<(), DeployError> {
    state
        .store
        .app_deployed(
            app.id,
            ready.container.clone(),
            ready.image.clone(),
            ready.previous.clone(),
            ready.port,
        )
        .await?;
    if let Some(m) = &req.mounts {
        state.store.set_app_mounts(app.id, m.to_column()).await?;
    }
    if let Some((file, main)) = &ready.compose {
        state
            .store
            .set_app_compose(app.id, file.clone(), main.clone())
            .await?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
#[tracing::instrument(name = "step", skip_all, fields(step = "build", tag = %tag))]
pub(super) async fn build(
    state: &Deployer,
    engine: &Engine,
    deploy_id: i64,
    app: &AppRow,
    zip: &std::path::Path,
    checked: &CheckedZip,
    target: BuildTarget<'_>,
    extra_labels: &[(String, String)],
    tag: &str,
    layers: &mut Vec<String>,
) -> Result<(), DeployError> {
    let network = super::compose::vet_build_bases(engine, zip, checked, &target).await?
        && !state.settings.build_network_off;
    let context = tempfile_in(
        &crate::service::upload_dir(&state.settings),
        "context",
        ".tar",
    )?;
    let mut label_list: Vec<(String, String)> = state
        .settings
        .label_map(labels::MANAGED, "true")
        .into_iter()
        .collect();
    label_list.push((labels::APP.into(), app.name.clone()));
    label_list.extend(extra_labels.iter().cloned());
    label_list.sort();
    let tail = archive::label_instruction(&label_list);
    // Dropped with this future (deploy timeout, shutdown): the blocking writer stops at its
    // next entry and the half-written context goes.
    let cancel = archive::Cancel::default();
    let _stop_on_drop = cancel.on_drop();
    let _remove_on_error = RemoveOnDrop(context.clone());
    let (zip, checked2, ctx) = (zip.to_path_buf(), checked.clone(), context.clone());
    let (ctx_dir, dockerfile) = (target.context.to_string(), target.dockerfile.to_string());
    tokio::task::spawn_blocking(move || -> Result<(), DeployError> {
        let out = std::fs::File::create(&ctx)?;
        let target = BuildTarget {
            context: &ctx_dir,
            dockerfile: &dockerfile,
        };
        let out = std::io::BufWriter::new(out);
        archive::write_build_context(&zip, &checked2, target, &tail, &cancel, out)?
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()?;
        Ok(())
    })
    .await??;
    let result = async {
        // Builds queue for a slot (MILKCRATE_BUILD_CONCURRENCY); starting containers does not.
        let _slot = state
            .build_slots
            .acquire()
            .await
            .map_err(|e| DeployError::Other(e.to_string()))?;
        set_step(state, deploy_id, DeployStatus::Building).await;
        if !network {
            let why = if state.settings.build_network_off {
                "MILKCRATE_BUILD_NETWORK=none"
            } else {
                "no step needs it"
            };
            log(state, deploy_id, format!("Build steps run without network ({why}).\n")).await;
        }
        // Base images the engine lacks are pulled by the build, with the stored credentials;
        // the `always` pull policy pulls them anew.
        let registries = super::images::auths(state)
            .await?;
        let policy = super::images::policy_of(&super::images::options(state, app.id).await);
        let mut stream = Box::pin(
            engine
                .build(
                    &context,
                    target.dockerfile,
                    tag,
                    crate::docker::BuildRules {
                        limits: state.settings.build_limits,
                        network,
                        registries: &registries,
                        pull: policy == crate::domain::image::PullPolicy::Always,
                    },
                )
                .await?,
        );
        // The layers this build reported (` ---> <id>`): a failed build leaves those it made
        // untagged and unlabelled, so they are removed here (or, when the build is cut short,
        // by the undo) or by nothing. Only untagged images without dependents go
        // (`remove_untagged_image` never forces): the base image and layers other images
        // build on stay.
        while let Some(event) = stream.next().await {
            match event {
                BuildEvent::Log(line) if !line.is_empty() => {
                    layers.extend(new_layer(&line));
                    log(state, deploy_id, line).await
                }
                BuildEvent::Log(_) => {}
                BuildEvent::Failed(err) => {
                    for id in layers.drain(..).rev() {
                        engine.remove_untagged_image(&id).await;
                    }
                    let mut err = err.trim().to_string();
                    if !network && state.settings.build_network_off {
                        err.push_str(" (build steps have no network on this server: MILKCRATE_BUILD_NETWORK=none)");
                    }
                    return Err(DeployError::Build(err));
                }
            }
        }
        // The layers are the image's now: removing the image removes them.
        layers.clear();
        check_labels(engine, tag, &label_list).await
    }
    .await;
    drop(_remove_on_error);
    result
}

/// Pruning, delete and the status list find images by milkcrate's labels: an image built
/// without them (its Dockerfile swallowed the `LABEL` line) would be lost to milkcrate, so
/// the build is refused, and the undo removes the image.
async fn check_labels(
    engine: &Engine,
    tag: &str,
    expected: &[(String, String)],
) -> Result<(), DeployError> {
    let facts = engine
        .image_facts(tag)
        .await
        .map_err(|_| DeployError::Build("the engine reported no image".into()))?;
    let missing = missing_labels(expected, &facts.labels);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(DeployError::Build(format!(
            "the image came out without milkcrate's labels ({}); the Dockerfile must have swallowed the LABEL line milkcrate adds at its end. Make sure its last instruction is complete.",
            missing.join(", ")
        )))
    }
}

/// The keys of `expected` that `actual` lacks or holds with another value.
fn missing_labels(
    expected: &[(String, String)],
    actual: &std::collections::HashMap<String, String>,
) -> Vec<String> {
    expected
        .iter()
        .filter(|(k, v)| actual.get(k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect()
}

/// The image id a classic-builder line ` ---> 57e33a9da9cf` reports, if it is one.
fn new_layer(line: &str) -> Option<String> {
    let id = line.trim().strip_prefix("---> ")?.trim();
    (id.len() >= 12 && id.chars().all(|c| c.is_ascii_hexdigit())).then(|| id.to_string())
}

/// Removes a scratch file when dropped, whichever way its owner ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(file = %self.0.display(), error = %e, "could not remove a build context");
        }
    }
}

pub(super) async fn container_spec(
    state: &Deployer,
    app: &AppRow,
    image: &str,
    port: u16,
    deploy_id: i64,
) -> Result<ContainerSpec, DeployError> {
    let env = crate::service::lifecycle::decrypted_env(state, app.id).await?;
    let mut all_labels: BTreeMap<String, String> = labels::ownership(&app.name, deploy_id);
    all_labels.extend(crate::service::traefik_labels(&state.settings, app, port));
    all_labels.extend(state.settings.extra_labels.iter().cloned());
    let limits = Limits {
        memory_mb: app.memory_mb,
        cpu_percent: app.cpu_percent,
    };
    Ok(ContainerSpec::new(
        state
            .settings
            .object_name(&format!("{}-{deploy_id}", app.name_key)),
        image,
        crate::service::app_network(&state.settings, &app.name_key, app.outbound),
        limits,
    )
    .env(env)
    .labels(all_labels))
}

/// Waits until the container is ready for traffic: healthy when the image has a HEALTHCHECK,
/// else accepting TCP connections on its port. A container that exits, or never gets there,
/// fails the deploy with its last log lines. Returns its address.
#[tracing::instrument(name = "step", skip_all, fields(step = "wait", container = %id))]
pub(super) async fn wait_until_up(
    state: &Deployer,
    engine: &Engine,
    deploy_id: i64,
    id: &str,
    healthcheck: bool,
    port: u16,
) -> Result<SocketAddr, DeployError> {
    let deadline = Instant::now() + state.settings.start_timeout;
    let mut said_waiting = false;
    loop {
        let s = engine.inspect(id, &state.settings.network).await?;
        if !s.running || s.restarting {
            let tail = last_lines(engine, id).await;
            return Err(DeployError::Start(format!(
                "The container stopped right after starting (exit code {}){}.{}",
                s.exit_code,
                if s.error.is_empty() {
                    String::new()
                } else {
                    format!(": {}", s.error)
                },
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(" Its last output:\n{tail}")
                }
            )));
        }
        let addr =
            s.ip.as_deref()
                .and_then(|ip| ip.parse().ok())
                .map(|ip| SocketAddr::new(ip, port));
        let ready = match (healthcheck, s.health.as_deref(), addr) {
            (_, _, None) => false,
            (true, Some("healthy"), _) => true,
            (true, Some("unhealthy"), _) => {
                return Err(DeployError::Start(
                    "The container's HEALTHCHECK reports it unhealthy.".into(),
                ));
            }
            (true, _, _) => false,
            (false, _, Some(a)) => tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(a),
            )
            .await
            .is_ok_and(|c| c.is_ok()),
        };
        if ready {
            return Ok(addr.expect("ready implies an address"));
        }
        if Instant::now() > deadline {
            let what = if healthcheck {
                "pass its HEALTHCHECK".to_string()
            } else {
                format!("accept connections on port {port}")
            };
            return Err(DeployError::Start(format!(
                "The container did not {what} within {} s.",
                state.settings.start_timeout.as_secs()
            )));
        }
        if !said_waiting {
            said_waiting = true;
            let what = if healthcheck {
                "the HEALTHCHECK to pass".to_string()
            } else {
                format!("port {port} to accept connections")
            };
            log(state, deploy_id, format!("Waiting for {what}…\n")).await;
        }
        tokio::time::sleep(Duration::from_millis(if healthcheck { 500 } else { 100 })).await;
    }
}

pub(super) async fn last_lines(engine: &Engine, id: &str) -> String {
    let mut out = String::new();
    let mut logs = Box::pin(engine.logs(id, 20, false));
    while let Some(Ok(line)) = logs.next().await {
        out.push_str(&line);
    }
    out
}

/// Removes what a failed deploy made; a failed first deploy takes its app row and sources too.
/// What cannot be removed is said in the server log (start-up reconciliation and the next
/// deploy try again).
async fn undo(state: &Deployer, req: &DeployRequest, app: &AppRow, created: &Created) {
    let warn = |what: &str, e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "undo: could not {what}");
    };
    // Engine objects first, when the engine answers; the row and files go regardless.
    match state.engine.client().await {
        Ok(engine) => {
            for c in created.container.iter().chain(&created.containers) {
                if let Err(e) = engine.remove_container(c).await {
                    warn(&format!("remove the container {c}"), &e);
                }
            }
            for image in created.image.iter().chain(&created.images) {
                if *image != app.image_tag
                    && Some(image) != app.previous_image_tag.as_ref()
                    && engine.image_exists(image).await
                    && let Err(e) = engine.remove_image(image).await
                {
                    warn(&format!("remove the image {image}"), &e);
                }
            }
            remove_layers(&engine, &created.layers).await;
            // The old stack serves again.
            for c in &created.stopped {
                if let Err(e) = engine.start(c).await {
                    warn(&format!("start the old container {c} again"), &e);
                }
            }
        }
        Err(e) => warn("reach the engine to remove what the deploy made", &e),
    }
    match req.kind {
        DeployKind::Create => {
            if let Ok(engine) = state.engine.client().await
                && let Err(e) =
                    crate::service::remove_edge_networks(&state.settings, &engine, &app.name_key)
                        .await
            {
                warn("remove the app's own network", &e);
            }
            if app.deployment_type == crate::service::compose::DEPLOYMENT_TYPE
                && let Ok(engine) = state.engine.client().await
            {
                let volumes = crate::service::compose::stack_volumes(state, &engine, app)
                    .await
                    .unwrap_or_default();
                if let Err(e) =
                    crate::service::compose::remove_stack(state, &engine, app, &volumes).await
                {
                    warn("remove the stack's network and volumes", &e);
                }
            }
            if let Err(e) = state.store.delete_app(app.id).await {
                warn("delete the app row of a failed first deploy", &e);
            }
            let dir = crate::service::app_dir(&state.settings, &app.name_key);
            if let Err(e) = tokio::fs::remove_dir_all(&dir).await
                && e.kind() != std::io::ErrorKind::NotFound
            {
                warn(&format!("remove {}", dir.display()), &e);
            }
        }
        _ => {
            if let Some((zip, _)) = &req.source
                && let Err(e) = tokio::fs::remove_file(zip).await
                && e.kind() != std::io::ErrorKind::NotFound
            {
                warn(&format!("remove {}", zip.display()), &e);
            }
        }
    }
    state.status.poke();
}

/// Removes the untagged layers a build cut short reported, newest first. The engine may still
/// be taking down the step's container (it stops the build when the request goes), which
/// holds the layer for a moment: removal is tried again for a few seconds.
async fn remove_layers(engine: &Engine, layers: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left: Vec<&String> = layers.iter().rev().collect();
    while !left.is_empty() {
        let mut still = Vec::new();
        for id in left {
            if !engine.remove_untagged_image(id).await && engine.image_exists(id).await {
                still.push(id);
            }
        }
        left = still;
        if left.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for id in left {
        tracing::warn!(layer = %id, "undo: a layer of the stopped build is still in use; it stays");
    }
}

/// `milkcrate-<instance>-<name>:<UTC timestamp>-<deploy id>`: unique per deploy and per
/// install, so concurrent builds (of one app, or of two installs) never share a tag.
pub(super) fn image_tag(settings: &crate::config::Settings, name: &str, deploy_id: i64) -> String {
    let stamp = crate::clock::utc_stamp('-');
    format!("{}:{stamp}-{deploy_id}", settings.object_name(name))
}

/// Keeps the sources of the current and previous deploys; older ones go.
pub(super) async fn prune_sources(state: &Deployer, app: &AppRow, current: &std::path::Path) {
    let dir = crate::service::app_dir(&state.settings, &app.name_key);
    let keep: Vec<PathBuf> = [
        Some(current.to_path_buf()),
        app.source_zip.as_ref().map(PathBuf::from),
    ]
    .into_iter()
    .flatten()
    .collect();
    if let Err(e) = state
        .store
        .set_app_source(app.id, current.display().to_string())
        .await
    {
        tracing::warn!(error = %e, "could not record the app's current sources");
    }
    // Only sources of older deploys go: a later upload waiting for this app's lock keeps
    // its ZIP (files are named `<deploy id>.zip`).
    let newest_kept = keep.iter().filter_map(|p| deploy_of(p)).max();
    if let Ok(mut entries) = tokio::fs::read_dir(&dir).await {
        while let Ok(Some(e)) = entries.next_entry().await {
            let older = match (deploy_of(&e.path()), newest_kept) {
                (Some(d), Some(n)) => d < n,
                _ => true,
            };
            if !keep.contains(&e.path())
                && older
                && let Err(err) = tokio::fs::remove_file(e.path()).await
            {
                tracing::warn!(file = %e.path().display(), error = %err, "could not remove old sources");
            }
        }
    }
}

/// The deploy id a kept source is named after (`<deploy id>.zip`).
fn deploy_of(path: &std::path::Path) -> Option<i64> {
    path.file_stem()?.to_str()?.parse().ok()
}

pub(super) async fn log(state: &Deployer, deploy_id: i64, line: String) {
    state.logs.line(deploy_id, line.clone());
    if let Err(e) = state.store.append_deploy_log(deploy_id, line).await {
        tracing::warn!(error = %e, deploy_id, "could not store a deploy log line");
    }
}

/// A new file name in `dir` that no client chose: `<prefix>-<owner>-<random><suffix>`; the
/// owner (this process) lets the next start remove what a killed process left.
pub fn tempfile_in(dir: &std::path::Path, prefix: &str, suffix: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    Ok(dir.join(format!(
        "{prefix}-{}-{}{suffix}",
        crate::service::leftovers::Owner::current().as_str(),
        crate::secrets::random_token(12)
    )))
}

#[cfg(test)]
mod tests {
    use super::{DeployKind, missing_labels, versions};

    #[test]
    fn updates_chain_their_versions_and_rollback_swaps_the_last_two() {
        let v = |s: &str| Some(s.to_string());
        // First deploy: nothing to keep or drop.
        assert_eq!(versions(DeployKind::Create, "", None, "v1"), (None, None));
        // v1 → v2: v1 kept for rollback.
        assert_eq!(
            versions(DeployKind::Update, "v1", None, "v2"),
            (v("v1"), None)
        );
        // v2 → v3 (the second of two quick updates, reading the row the first wrote): v2 kept,
        // v1 dropped.
        assert_eq!(
            versions(DeployKind::Update, "v2", Some("v1"), "v3"),
            (v("v2"), v("v1"))
        );
        // Rollback from v3 to v2: v3 kept (a second rollback returns to it), nothing dropped.
        assert_eq!(
            versions(DeployKind::Rollback, "v3", Some("v2"), "v2"),
            (v("v3"), None)
        );
        // New settings on the same image keep the previous version as it was.
        assert_eq!(
            versions(DeployKind::Reconfigure, "v3", Some("v2"), "v3"),
            (v("v2"), None)
        );
    }

    #[test]
    fn an_image_without_milkcrates_labels_is_noticed() {
        let expected = vec![
            ("milkcrate.app".to_string(), "shop".to_string()),
            ("milkcrate.managed".to_string(), "true".to_string()),
        ];
        let mut actual = std::collections::HashMap::from([
            ("milkcrate.app".to_string(), "shop".to_string()),
            ("milkcrate.managed".to_string(), "true".to_string()),
            ("other".to_string(), "x".to_string()),
        ]);
        assert!(missing_labels(&expected, &actual).is_empty());
        actual.insert("milkcrate.app".into(), "elsewhere".into());
        actual.remove("milkcrate.managed");
        assert_eq!(
            missing_labels(&expected, &actual),
            ["milkcrate.app", "milkcrate.managed"]
        );
    }
}
