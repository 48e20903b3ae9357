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
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;

use crate::app::AppState;
use crate::archive::{self, BuildTarget, CheckedZip};
use crate::audit::{Actor, Event};
use crate::clock::now_unix;
use crate::docker::{BuildEvent, Engine, EngineError};
use crate::domain::app::choose_port;
use crate::domain::hardening::{ContainerSpec, Limits};
use crate::domain::labels;
use crate::domain::volume::Mounts;
use crate::store::AppRow;

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
    #[error("{0}")]
    Other(String),
}

/// Queues the deploy and returns at once; the work runs in the background.
pub fn spawn(state: AppState, req: DeployRequest) {
    state.logs.open(req.deploy_id);
    tokio::spawn(async move { run(&state, req).await });
}

/// Runs a deploy to its end on the caller's task (the CLI's `restore --redeploy`); returns
/// its final status, `succeeded` or `failed`.
pub async fn run_to_end(state: &AppState, req: DeployRequest) -> String {
    let id = req.deploy_id;
    state.logs.open(id);
    run(state, req).await;
    state
        .store
        .deploy(id)
        .await
        .ok()
        .flatten()
        .map(|d| d.status)
        .unwrap_or_else(|| "failed".into())
}

#[tracing::instrument(name = "deploy", skip_all, fields(deploy_id = req.deploy_id, app_id = req.app_id, kind = req.kind.audit_action()))]
pub(super) async fn run(state: &AppState, req: DeployRequest) {
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
    let Ok(Some(app)) = state.store.app(req.app_id).await else {
        tracing::warn!("deploy failed: the app no longer exists");
        let _ = state
            .store
            .finish_deploy(
                deploy_id,
                "failed",
                None,
                Some("the app no longer exists".into()),
                now_unix(),
            )
            .await;
        state.logs.close(deploy_id, "failed");
        return;
    };
    tracing::info!(app = %app.name, "deploy started");
    let started = std::time::Instant::now();
    let mut created = Created::default();
    // The timeout and a delete's cancel live here, around the attempt, so that whatever
    // stops it, `created` survives and undo removes exactly what it made.
    let timeout = state.settings.build_timeout;
    let result = tokio::select! {
        r = tokio::time::timeout(timeout, attempt(state, &req, &app, &mut created)) => match r {
            Ok(r) => r,
            Err(_) => Err(DeployError::Other(format!(
                "the deploy took longer than {} s (MILKCRATE_BUILD_TIMEOUT_SECS) and was stopped",
                timeout.as_secs()
            ))),
        },
        _ = cancelled.changed() => Err(DeployError::Other(
            "the app is being deleted, so its deploy was stopped".into(),
        )),
    };
    let (status, error) = match &result {
        Ok(_) => ("succeeded", None),
        Err(e) => ("failed", Some(e.to_string())),
    };
    match &result {
        Ok(image) => tracing::info!(app = %app.name, image = %image, "deploy succeeded"),
        Err(e) => tracing::warn!(app = %app.name, error = %e, "deploy failed"),
    }
    if let Err(e) = &result {
        log(state, deploy_id, format!("\nDeploy failed: {e}\n")).await;
        undo(state, &req, &app, &created).await;
    }
    let image = result.as_ref().ok().cloned();
    let _ = state
        .store
        .finish_deploy(deploy_id, status, image.clone(), error.clone(), now_unix())
        .await;
    let mut event = Event::new(req.kind.audit_action(), "application", app.name.clone()).details(
        json!({"deploy_id": deploy_id, "public_route": app.public_route, "domains": app.domains, "image_tag": image}),
    );
    if let Some(e) = error {
        event = event.failed(e);
    }
    let _ = state.audit.record(&req.actor, event).await;
    state.logs.close(deploy_id, status);
    state
        .metrics
        .deploy_finished(status, started.elapsed().as_secs_f64());
    let error = result.as_ref().err().map(ToString::to_string);
    crate::service::alerts::deploy_finished(state, &app.name, deploy_id, error.as_deref()).await;
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
    /// Old containers stopped to make way; started again if the deploy fails.
    pub stopped: Vec<String>,
}

async fn attempt(
    state: &AppState,
    req: &DeployRequest,
    app: &AppRow,
    created: &mut Created,
) -> Result<String, DeployError> {
    if crate::service::swarm::enabled(&state.settings) {
        return crate::service::swarm::attempt(state, req, app, created).await;
    }
    if app.deployment_type == crate::service::compose::DEPLOYMENT_TYPE {
        return crate::service::compose::attempt(state, req, app, created).await;
    }
    let engine = state.engine.client().await?;
    let deploy_id = req.deploy_id;
    let image = match req.kind {
        DeployKind::Create | DeployKind::Update => {
            let (zip, checked) = req
                .source
                .as_ref()
                .ok_or_else(|| DeployError::Other("no sources were uploaded".into()))?;
            let tag = image_tag(&state.settings, &app.name, deploy_id);
            log(state, deploy_id, format!("Building {tag}\n")).await;
            let target = BuildTarget::ROOT;
            build(
                state,
                &engine,
                deploy_id,
                app,
                zip,
                checked,
                target,
                &[],
                &tag,
            )
            .await
            .inspect_err(|_| created.image = Some(tag.clone()))?;
            created.image = Some(tag.clone());
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
            log(
                state,
                deploy_id,
                format!("Restarting {} with new settings\n", app.image_tag),
            )
            .await;
            app.image_tag.clone()
        }
    };
    let facts = engine.image_facts(&image).await?;
    let port = choose_port(app.port_override, &facts.exposed_ports);
    let network = crate::service::ensure_platform_network(state, &engine, app.outbound).await?;
    if network != state.settings.network {
        log(
            state,
            deploy_id,
            "Outbound access is off: the app joins an internal network and reaches nothing outside it.\n".into(),
        )
        .await;
    }

    let _ = state.store.set_deploy_status(deploy_id, "starting").await;
    let mounts = match &req.mounts {
        Some(m) => m.clone(),
        None => Mounts::from_column(app.volume_mounts.as_deref()),
    };
    for m in mounts.mounts() {
        // The engine would quietly create a missing volume, empty: refuse instead.
        if engine.volume_labels(&m.volume).await?.is_none() {
            return Err(DeployError::Other(format!(
                "the volume {} mounted at {} no longer exists in Docker",
                m.volume, m.target
            )));
        }
    }
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
            super::volumes::hand_to(state, &m.volume, user).await?;
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

    let previous = match req.kind {
        DeployKind::Create => None,
        DeployKind::Update | DeployKind::Rollback => {
            Some(app.image_tag.clone()).filter(|t| !t.is_empty() && *t != image)
        }
        DeployKind::Reconfigure => app.previous_image_tag.clone(),
    };
    // Keep the current and the previous image; the one before that goes.
    if req.kind == DeployKind::Update
        && let Some(old) = app
            .previous_image_tag
            .as_ref()
            .filter(|t| Some(*t) != previous.as_ref() && **t != image)
        && let Err(e) = engine.remove_image(old).await
    {
        log(
            state,
            deploy_id,
            format!("Warning: could not remove the old image {old}: {e}\n"),
        )
        .await;
    }
    // The new container is up: record it, send traffic to it (under the router's write lock, so
    // no rebuild from older data lands after), let the old one finish what it serves, then
    // retire it. Requests never see a gap.
    let replaced = {
        let _writer = state.routes.write_lock().await;
        record_deployed(state, req, app, &id, &image, previous, port).await?;
        state.routes.switch(app, &id, addr)
    };
    crate::config::pause_here("deploy-switched").await;
    if !app.container_id.is_empty() && app.container_id != id {
        if let Some(inflight) = replaced {
            crate::router::drain(&inflight, std::time::Duration::from_secs(30)).await;
        }
        log(
            state,
            deploy_id,
            "Traffic switched; removing the previous container\n".into(),
        )
        .await;
        if let Err(e) = engine.remove_container(&app.container_id).await {
            log(
                state,
                deploy_id,
                format!("Warning: could not remove the previous container: {e}\n"),
            )
            .await;
        }
    }
    if let Some((zip, _)) = &req.source {
        prune_sources(state, app, zip).await;
    }
    log(
        state,
        deploy_id,
        format!(
            "Deployed {} at {}\n",
            app.name,
            crate::service::domains::served_at(app, &state.settings)
        ),
    )
    .await;
    state.status.poke();
    Ok(image)
}

/// Records the app's new container and image (and the mounts an update chose). Called under
/// the router's writer lock, just before traffic switches.
pub(super) async fn record_deployed(
    state: &AppState,
    req: &DeployRequest,
    app: &AppRow,
    container: &str,
    image: &str,
    previous: Option<String>,
    port: u16,
) -> Result<(), DeployError> {
    let other = |e: crate::store::StoreError| DeployError::Other(e.to_string());
    state
        .store
        .app_deployed(
            app.id,
            container.to_string(),
            image.to_string(),
            previous,
            port,
        )
        .await
        .map_err(other)?;
    if let Some(m) = &req.mounts {
        state
            .store
            .set_app_mounts(app.id, m.to_column())
            .await
            .map_err(other)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn build(
    state: &AppState,
    engine: &Engine,
    deploy_id: i64,
    app: &AppRow,
    zip: &std::path::Path,
    checked: &CheckedZip,
    target: BuildTarget<'_>,
    extra_labels: &[(String, String)],
    tag: &str,
) -> Result<(), DeployError> {
    let network = super::compose::vet_build_bases(engine, zip, checked, &target).await?
        && !state.settings.build_network_off;
    let context = tempfile_in(&crate::service::upload_dir(state), "context", ".tar")
        .map_err(|e| DeployError::Other(e.to_string()))?;
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
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        let out = std::fs::File::create(&ctx).map_err(|e| e.to_string())?;
        let target = BuildTarget {
            context: &ctx_dir,
            dockerfile: &dockerfile,
        };
        let out = std::io::BufWriter::new(out);
        archive::write_build_context(&zip, &checked2, target, &tail, &cancel, out)
            .map_err(|e| e.to_string())?
            .into_inner()
            .map_err(|e| e.to_string())?
            .sync_all()
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| DeployError::Other(e.to_string()))?
    .map_err(DeployError::Other)?;
    let result = async {
        // Builds queue for a slot (MILKCRATE_BUILD_CONCURRENCY); starting containers does not.
        let _slot = state
            .build_slots
            .acquire()
            .await
            .map_err(|e| DeployError::Other(e.to_string()))?;
        let _ = state.store.set_deploy_status(deploy_id, "building").await;
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
            .await
            .map_err(DeployError::Other)?;
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
        // untagged and unlabelled, so they are removed here or by nothing. Only untagged images
        // without dependents go (`remove_untagged_image` never forces): the base image and
        // layers other images build on stay.
        let mut layers: Vec<String> = Vec::new();
        while let Some(event) = stream.next().await {
            match event {
                BuildEvent::Log(line) if !line.is_empty() => {
                    layers.extend(new_layer(&line));
                    log(state, deploy_id, line).await
                }
                BuildEvent::Log(_) => {}
                BuildEvent::Failed(err) => {
                    for id in layers.iter().rev() {
                        engine.remove_untagged_image(id).await;
                    }
                    let mut err = err.trim().to_string();
                    if !network && state.settings.build_network_off {
                        err.push_str(" (build steps have no network on this server: MILKCRATE_BUILD_NETWORK=none)");
                    }
                    return Err(DeployError::Build(err));
                }
            }
        }
        check_labels(engine, tag, &label_list).await
    }
    .await;
    let _ = tokio::fs::remove_file(&context).await;
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
        let _ = std::fs::remove_file(&self.0);
    }
}

pub(super) async fn container_spec(
    state: &AppState,
    app: &AppRow,
    image: &str,
    port: u16,
    deploy_id: i64,
) -> Result<ContainerSpec, DeployError> {
    let env = crate::service::lifecycle::decrypted_env(state, app.id)
        .await
        .map_err(DeployError::Other)?;
    let mut all_labels: BTreeMap<String, String> = labels::ownership(&app.name, deploy_id);
    all_labels.extend(labels::traefik(
        &app.name_key,
        &app.public_route,
        &crate::router::app_hosts(app, &state.settings),
        port,
        &state.settings.network,
        &state.settings.traefik,
    ));
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
        crate::service::app_network(&state.settings, app.outbound),
        limits,
    )
    .env(env)
    .labels(all_labels))
}

/// Waits until the container is ready for traffic: healthy when the image has a HEALTHCHECK,
/// else accepting TCP connections on its port. A container that exits, or never gets there,
/// fails the deploy with its last log lines. Returns its address.
pub(super) async fn wait_until_up(
    state: &AppState,
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
async fn undo(state: &AppState, req: &DeployRequest, app: &AppRow, created: &Created) {
    // Engine objects first, when the engine answers; the row and files go regardless.
    if let Ok(engine) = state.engine.client().await {
        if let Some(c) = &created.container {
            let _ = engine.remove_container(c).await;
        }
        for c in &created.containers {
            let _ = engine.remove_container(c).await;
        }
        for image in created.image.iter().chain(&created.images) {
            if *image != app.image_tag && Some(image) != app.previous_image_tag.as_ref() {
                let _ = engine.remove_image(image).await;
            }
        }
        // The old stack serves again.
        for c in &created.stopped {
            let _ = engine.start(c).await;
        }
    }
    match req.kind {
        DeployKind::Create => {
            if app.deployment_type == crate::service::compose::DEPLOYMENT_TYPE
                && let Ok(engine) = state.engine.client().await
            {
                let volumes = crate::service::compose::stack_volumes(state, &engine, app)
                    .await
                    .unwrap_or_default();
                let _ = crate::service::compose::remove_stack(state, &engine, app, &volumes).await;
            }
            let _ = state.store.delete_app(app.id).await;
            let _ = tokio::fs::remove_dir_all(crate::service::app_dir(state, &app.name_key)).await;
        }
        _ => {
            if let Some((zip, _)) = &req.source {
                let _ = tokio::fs::remove_file(zip).await;
            }
        }
    }
    state.status.poke();
}

/// `milkcrate-<instance>-<name>:<UTC timestamp>-<deploy id>`: unique per deploy and per
/// install, so concurrent builds (of one app, or of two installs) never share a tag.
pub(super) fn image_tag(settings: &crate::config::Settings, name: &str, deploy_id: i64) -> String {
    let stamp = crate::clock::utc_stamp('-');
    format!("{}:{stamp}-{deploy_id}", settings.object_name(name))
}

/// Keeps the sources of the current and previous deploys; older ones go.
pub(super) async fn prune_sources(state: &AppState, app: &AppRow, current: &std::path::Path) {
    let dir = crate::service::app_dir(state, &app.name_key);
    let keep: Vec<PathBuf> = [
        Some(current.to_path_buf()),
        app.source_zip.as_ref().map(PathBuf::from),
    ]
    .into_iter()
    .flatten()
    .collect();
    let _ = state
        .store
        .set_app_source(app.id, current.display().to_string())
        .await;
    // Only sources of older deploys go: a later upload waiting for this app's lock keeps
    // its ZIP (files are named `<deploy id>.zip`).
    let newest_kept = keep.iter().filter_map(|p| deploy_of(p)).max();
    if let Ok(mut entries) = tokio::fs::read_dir(&dir).await {
        while let Ok(Some(e)) = entries.next_entry().await {
            let older = match (deploy_of(&e.path()), newest_kept) {
                (Some(d), Some(n)) => d < n,
                _ => true,
            };
            if !keep.contains(&e.path()) && older {
                let _ = tokio::fs::remove_file(e.path()).await;
            }
        }
    }
}

/// The deploy id a kept source is named after (`<deploy id>.zip`).
fn deploy_of(path: &std::path::Path) -> Option<i64> {
    path.file_stem()?.to_str()?.parse().ok()
}

pub(super) async fn log(state: &AppState, deploy_id: i64, line: String) {
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
    use super::missing_labels;

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
