//! Swarm mode (MILKCRATE_ORCHESTRATOR=swarm): each Dockerfile app is a Docker Swarm service
//! named `milkcrate-<id>-<key>` on its own attachable overlay network `milkcrate-<id>-<key>-swarm`
//! (internal when the app's outbound access is off), built from the same [`ContainerSpec`] as
//! in engine mode through `domain::service_spec`. A deploy creates or updates the service
//! (start-first, one task at a time, rolled back by Swarm when a new task fails) and waits
//! until every task runs the new version or Swarm gave up on it. Status reads the services
//! (one call), their tasks (one call), the nodes (one call) and the addresses the router
//! reaches tasks at (one call on the host; one per app network in a container) per refresh.
//!
//! A compose stack runs as one service per compose service: the main one is the app's service
//! (on the app's overlay too, where the router reaches it); the others are
//! `milkcrate-<key>_<service>`. All of them join the stack's own attachable overlay
//! `milkcrate-<key>_stack` under their compose names, so they reach each other as in compose.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::deploy::Deployer;
use super::deploy::{Created, DeployError, DeployKind, DeployRequest, log};
use crate::config::{Orchestrator, Settings, SwarmSettings};
use crate::docker::{Engine, EngineError, NodeFacts, ServiceFacts, TaskFacts};
use crate::domain::app::choose_port;
use crate::domain::hardening::{ContainerSpec, Limits};
use crate::domain::service_spec::{
    SwarmOptions, is_pin, merged_constraints, not_expressible, service_plan,
};
use crate::domain::volume::Mounts;
use crate::store::AppRow;

/// Why outbound access cannot be cut while milkcrate runs on the host in swarm mode.
pub const INTERNAL_REFUSED: &str = "Cutting outbound access puts the app on an internal overlay network, whose tasks have no address a process on the host can reach, and milkcrate runs on the host here (MILKCRATE_SWARM_CONTAINER is not set). Run milkcrate in a container joined to the swarm to cut outbound access in swarm mode.";

/// Whether this install runs apps as swarm services.
pub fn enabled(settings: &Settings) -> bool {
    settings.orchestrator == Orchestrator::Swarm
}

/// The app's service: `milkcrate-<id>-<key>`, the same across deploys.
pub fn service_name(settings: &Settings, app: &AppRow) -> String {
    settings.object_name(&app.name_key)
}

/// The app's overlay network: `…-swarm`, or `…-swarm-internal` while its outbound access is
/// off (an overlay cannot change that after creation, so the switch moves the service).
pub fn network_name(settings: &Settings, app: &AppRow) -> String {
    network_variant(settings, app, app.outbound)
}

fn network_variant(settings: &Settings, app: &AppRow, outbound: bool) -> String {
    overlay_for(settings, &app.name_key, outbound)
}

/// The routed overlay of the app with name key `key` ([`network_name`]).
pub fn overlay_for(settings: &Settings, key: &str, outbound: bool) -> String {
    let open = settings.object_name(&format!("{key}-swarm"));
    if outbound {
        open
    } else {
        crate::docker::closed_network(&open)
    }
}

/// The containers that join each app's routed overlay: milkcrate's own
/// (`MILKCRATE_SWARM_CONTAINER`), so it reaches tasks on every node, and in Traefik mode
/// `MILKCRATE_TRAEFIK_CONTAINERS` (Traefik reaches the tasks over it, as its swarm provider's
/// `traefik.swarm.network` label says).
fn joiners(settings: &Settings) -> Vec<String> {
    let mut out: Vec<String> = settings.swarm.container.iter().cloned().collect();
    if !settings.builtin_router {
        out.extend(settings.traefik.join.iter().cloned());
    }
    out
}

/// Joins [`joiners`] to the routed overlay `network`.
async fn join_routed(
    settings: &Settings,
    engine: &Engine,
    network: &str,
) -> Result<(), EngineError> {
    for c in joiners(settings) {
        engine.join_network(network, &c).await.map_err(|e| {
            EngineError::Refused(format!(
                "the container {c} could not join the app's network {network}: {e}"
            ))
        })?;
    }
    Ok(())
}

/// Takes [`joiners`] off `network` before it is removed (an endpoint left keeps it "in use").
async fn leave_routed(settings: &Settings, engine: &Engine, network: &str) {
    for c in joiners(settings) {
        if let Err(e) = engine.leave_network(network, &c).await {
            tracing::warn!(network, container = c, error = %e, "could not leave the app's network");
        }
    }
}

/// What `milkcrate check` says about swarm mode: the node's role, the registry, and every
/// part of the policy the service API cannot carry.
pub async fn check_lines(
    engine: &Engine,
    swarm: &SwarmSettings,
) -> Vec<(&'static str, bool, String)> {
    let mut out = Vec::new();
    match engine.swarm_node().await {
        Ok(n) if n.manager => out.push((
            "swarm",
            true,
            format!(
                "this engine is a swarm manager ({} node(s)); apps run as services",
                n.nodes
            ),
        )),
        Ok(n) => out.push(("swarm", false, not_manager(&n.state))),
        Err(e) => out.push(("swarm", false, e.to_string())),
    }
    out.push(("registry", true, registry_line(swarm)));
    for gap in not_expressible() {
        out.push(("swarm limits", true, gap.to_string()));
    }
    out
}

fn not_manager(state: &str) -> String {
    let state = if state.is_empty() { "inactive" } else { state };
    format!(
        "MILKCRATE_ORCHESTRATOR=swarm, but this engine is not a swarm manager (its swarm state is {state}). Run `docker swarm init` on it (or point DOCKER_HOST at a manager), or set MILKCRATE_ORCHESTRATOR=engine."
    )
}

/// What the registry setting means for where apps may run.
pub fn registry_line(swarm: &SwarmSettings) -> String {
    match &swarm.registry {
        Some(r) => format!(
            "images are pushed to {r} and services deploy them by digest, so every node can run them"
        ),
        None => "no MILKCRATE_REGISTRY: images exist on the manager only, so apps are placed on the manager node only (set MILKCRATE_REGISTRY to use more than one server)".into(),
    }
}

/// The swarm part of a status snapshot.
#[derive(Debug, Default)]
pub struct SwarmView {
    pub services: Vec<ServiceFacts>,
    pub tasks: Vec<TaskFacts>,
    pub nodes: Vec<NodeFacts>,
    /// Task id → the address milkcrate reaches it at.
    pub addresses: HashMap<String, String>,
}

impl SwarmView {
    pub fn service(&self, id: &str) -> Option<&ServiceFacts> {
        self.services.iter().find(|s| s.id == id && !id.is_empty())
    }

    /// Tasks of service `id` that should run, newest slot order.
    pub fn live_tasks<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a TaskFacts> + 'a {
        self.tasks
            .iter()
            .filter(move |t| t.service_id == id && t.desired_state == "running")
    }

    /// The addresses of service `id`'s running tasks (on `port`), by task id: what the
    /// router balances over. A task that stopped, or is being replaced, is not among them.
    pub fn backends(&self, id: &str, port: u16) -> Vec<(String, SocketAddr)> {
        let mut out: Vec<(String, SocketAddr)> = self
            .live_tasks(id)
            .filter(|t| t.state == "running")
            .filter_map(|t| {
                let ip = self.addresses.get(&t.id)?.parse().ok()?;
                Some((t.id.clone(), SocketAddr::new(ip, port)))
            })
            .collect();
        out.sort();
        out
    }

    /// `(running, wished)` for the dashboard's `2/3 running`.
    pub fn counts(&self, id: &str) -> Option<(u64, u64)> {
        let s = self.service(id)?;
        let running = self.live_tasks(id).filter(|t| t.state == "running").count() as u64;
        Some((running, s.replicas))
    }

    pub fn node_name(&self, node_id: &str) -> String {
        self.nodes
            .iter()
            .find(|n| n.id == node_id)
            .map(|n| n.hostname.clone())
            .unwrap_or_else(|| node_id.chars().take(12).collect())
    }
}

/// One refresh of the swarm: services, tasks and nodes in one call each, and the task
/// addresses (docker_gwbridge on this node when milkcrate runs on the host; each app
/// network's view when milkcrate runs in a container joined to them).
pub async fn view(
    settings: &crate::config::Settings,
    engine: &Engine,
) -> Result<SwarmView, EngineError> {
    let services = engine
        .services_labelled(&[settings.managed_filter()])
        .await?;
    let names: Vec<String> = services.iter().map(|s| s.name.clone()).collect();
    let tasks = engine.tasks_of(&names).await?;
    let nodes = engine.nodes().await?;
    let mut addresses = HashMap::new();
    if settings.swarm.container.is_some() {
        for net in services.iter().filter_map(|s| s.network.as_deref()) {
            if let Ok(found) = engine.overlay_addresses(net).await {
                addresses.extend(found);
            }
        }
    } else {
        let by_container = engine.gateway_addresses().await?;
        for t in &tasks {
            if let Some(ip) = t.container_id.as_ref().and_then(|c| by_container.get(c)) {
                addresses.insert(t.id.clone(), ip.clone());
            }
        }
    }
    Ok(SwarmView {
        services,
        tasks,
        nodes,
        addresses,
    })
}

/// Refreshes the status at once when a task's container of this install (on this node) dies
/// or starts, so the router drops a dead task (and takes a new one) without waiting for the
/// next tick; and when a node changes (goes down, comes back), then again over the next
/// seconds ([`NODE_FOLLOW_UP`]): Swarm moves the lost node's tasks a moment after, and the
/// starts of tasks on other nodes make no event here.
pub async fn watch_events(state: Deployer) {
    if !enabled(&state.settings) {
        return;
    }
    loop {
        if let Ok(engine) = state.engine.client().await {
            let containers = engine
                .container_events(
                    &[state.settings.managed_filter()],
                    &["die", "start", "kill", "stop", "health_status"],
                )
                .map(|e| e.map(|()| false));
            let nodes = engine.node_events().map(|e| e.map(|()| true));
            let mut events = Box::pin(futures_util::stream::select(containers, nodes));
            while let Some(Ok(node)) = events.next().await {
                state.status.poke();
                if node {
                    let status = state.status.clone();
                    tokio::spawn(async move {
                        for wait in NODE_FOLLOW_UP {
                            tokio::time::sleep(Duration::from_secs(wait)).await;
                            status.poke();
                        }
                    });
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// After a node event, the status is refreshed again after these many seconds, one after
/// the other (1, 2, 4 and 8 s after the event).
const NODE_FOLLOW_UP: [u64; 4] = [1, 1, 2, 4];

/// The swarm branch of a deploy: build (or reuse) the image, push it when a registry is set,
/// create or update the service, wait until it runs the new version everywhere. A failed first
/// deploy removes the service and its network; a failed update was rolled back by Swarm.
pub(super) async fn attempt(
    state: &Deployer,
    req: &DeployRequest,
    app: &AppRow,
    created: &mut Created,
) -> Result<String, DeployError> {
    let engine = state.engine.client().await?;
    let node = engine.swarm_node().await?;
    if !node.manager {
        return Err(DeployError::Other(not_manager(&node.state)));
    }
    if app.deployment_type == crate::service::compose::DEPLOYMENT_TYPE {
        return attempt_stack(state, &engine, &node.node_id, req, app, created).await;
    }
    let deploy_id = req.deploy_id;
    let image = super::deploy::image_for(
        state,
        &engine,
        req,
        app,
        created,
        format!("Updating the service of {} with new settings\n", app.name),
    )
    .await?;
    let facts = engine.image_facts(&image).await?;
    let port = choose_port(app.port_override, &facts.exposed_ports);
    // What the nodes run: the pushed image by digest, or the local tag (manager only).
    let mut constraints = Vec::new();
    let reference = match &state.settings.swarm.registry {
        Some(registry) => {
            let target = format!("{registry}/{image}");
            log(state, deploy_id, format!("Pushing {target}\n")).await;
            let by_digest = engine.push_image(&image, &target).await?;
            log(state, deploy_id, format!("Deploying {by_digest}\n")).await;
            by_digest
        }
        None => {
            log(
                state,
                deploy_id,
                "No MILKCRATE_REGISTRY: the image exists on this node only, so the service is placed on it.\n".into(),
            )
            .await;
            constraints.push(format!("node.id=={}", node.node_id));
            image.clone()
        }
    };
    let network = network_name(&state.settings, app);
    let mut net_labels: HashMap<String, String> =
        crate::domain::labels::ownership(&app.name, deploy_id)
            .into_iter()
            .collect();
    net_labels.extend(state.settings.extra_labels.iter().cloned());
    if state.settings.swarm.container.is_none() && !app.outbound {
        return Err(DeployError::Other(INTERNAL_REFUSED.into()));
    }
    engine
        .ensure_overlay(&network, net_labels, !app.outbound)
        .await?;
    crate::service::guard_swarm_gateway(&state.settings).await?;
    join_routed(&state.settings, &engine, &network).await?;
    super::deploy::set_step(
        state,
        deploy_id,
        crate::domain::state::DeployStatus::Starting,
    )
    .await;
    let mounts = match &req.mounts {
        Some(m) => m.clone(),
        None => Mounts::from_column(app.volume_mounts.as_deref()),
    };
    for m in mounts.mounts() {
        if engine.volume_labels(&m.volume).await?.is_none() {
            return Err(DeployError::Other(format!(
                "the volume {} mounted at {} no longer exists in Docker",
                m.volume, m.target
            )));
        }
    }
    if !mounts.mounts().is_empty() && constraints.is_empty() {
        // Volumes are node-local: the app stays on the node that holds them.
        constraints.push(format!("node.id=={}", node.node_id));
        log(
            state,
            deploy_id,
            format!(
                "The app mounts volumes, which live on node {}: its tasks are pinned there.\n",
                node.node_id
            ),
        )
        .await;
    }
    let opted = super::images::options(state, app.id).await.image_user;
    let (user, why) =
        super::images::run_as(state, &engine, &image, facts.user.as_deref(), opted, None).await;
    let base = super::deploy::container_spec(state, app, &reference, port, deploy_id).await?;
    let spec = ContainerSpec::new(
        base.name(),
        reference.clone(),
        network.clone(),
        Limits {
            memory_mb: app.memory_mb,
            cpu_percent: app.cpu_percent,
        },
    )
    .env(base.env_vars().to_vec())
    .labels(base.label_map().clone())
    .mounts(mounts.mounts())
    .process(crate::domain::hardening::Process {
        user: Some(user),
        ..Default::default()
    });
    let replicas = state.store.app_replicas(app.id).await.unwrap_or(1).max(1);
    let own = own_constraints(state, deploy_id, app).await?;
    let constraints = merged_constraints(&constraints, &own);
    let mut plan = service_plan(
        &spec,
        &SwarmOptions {
            replicas,
            constraints,
        },
    );
    let name = service_name(&state.settings, app);
    plan.name = name.clone();
    log(state, deploy_id, format!("The tasks {why}.\n")).await;
    for gap in not_expressible() {
        log(state, deploy_id, format!("Note: {gap}\n")).await;
    }
    let existing = engine.service(&name).await?;
    let before: HashSet<String> = match &existing {
        Some(s) => engine
            .tasks_of(std::slice::from_ref(&s.name))
            .await?
            .into_iter()
            .filter(|t| t.desired_state == "running")
            .map(|t| t.id)
            .collect(),
        None => HashSet::new(),
    };
    let first = existing.is_none();
    log(
        state,
        deploy_id,
        format!(
            "{} service {name} ({replicas} replica(s), port {port}, {} MiB, {}% CPU each)\n",
            if first { "Creating" } else { "Updating" },
            app.memory_mb,
            app.cpu_percent
        ),
    )
    .await;
    let id = if first {
        engine.create_service(&plan).await?
    } else {
        engine.update_service(&name, &plan).await?;
        existing.map(|s| s.id).unwrap_or_default()
    };
    let mut waited = wait_converged(
        state, &engine, deploy_id, &name, replicas, &before, first, &own,
    )
    .await;
    // A first deploy has no update monitor: a task that runs a moment and exits (even with
    // status 0) fails it, as it fails a compose stack's.
    if first && waited.is_ok() {
        waited = match watch_new_services(
            state,
            &engine,
            deploy_id,
            std::slice::from_ref(&name),
            &["failed", "rejected", "complete"],
        )
        .await
        {
            Ok(Some(t)) => Err(DeployError::Start(format!(
                "its task stopped right after starting ({})",
                task_error(&t)
            ))),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
    }
    if let Err(e) = waited {
        if first {
            crate::service::removed(
                "remove a service",
                remove_service_and_wait(&engine, &name).await,
            );
            leave_routed(&state.settings, &engine, &network).await;
            crate::service::removed("remove a network", engine.remove_network(&network).await);
        }
        return Err(e);
    }
    let previous = match req.kind {
        DeployKind::Create => None,
        DeployKind::Update | DeployKind::Rollback => {
            Some(app.image_tag.clone()).filter(|t| !t.is_empty() && *t != image)
        }
        DeployKind::Reconfigure => app.previous_image_tag.clone(),
    };
    if req.kind == DeployKind::Update
        && let Some(old) = app
            .previous_image_tag
            .as_ref()
            .filter(|t| Some(*t) != previous.as_ref() && **t != image)
    {
        crate::service::removed("remove an image", engine.remove_image(old).await);
        if let Some(r) = &state.settings.swarm.registry {
            crate::service::removed(
                "remove an image",
                engine.remove_image(&format!("{r}/{old}")).await,
            );
        }
    }
    {
        let _writer = state.routes.write_lock().await;
        state
            .store
            .app_deployed(app.id, id.clone(), image.clone(), previous.clone(), port)
            .await?;
        if let Some(m) = &req.mounts {
            state.store.set_app_mounts(app.id, m.to_column()).await?;
        }
    }
    // After an outbound switch the other variant of the network is left empty.
    let other = network_variant(&state.settings, app, !app.outbound);
    if engine.network_exists(&other).await {
        leave_routed(&state.settings, &engine, &other).await;
        crate::service::removed("remove a network", engine.remove_network(&other).await);
    }
    if let Some((zip, _)) = &req.source {
        super::deploy::prune_sources(state, app, zip).await;
    }
    log(
        state,
        deploy_id,
        format!(
            "Deployed {} ({replicas} replica(s)) at {}\n",
            app.name,
            crate::service::domains::served_at(app, &state.settings)
        ),
    )
    .await;
    state.status.poke();
    Ok(image)
}

/// A stack's own overlay network, which every service of it joins under its compose name:
/// `…_stack`, or its internal variant while outbound access is off.
pub fn stack_network(settings: &Settings, app: &AppRow, outbound: bool) -> String {
    let open = settings.object_name(&format!("{}_stack", app.name_key));
    if outbound {
        open
    } else {
        crate::docker::closed_network(&open)
    }
}

/// The Swarm service of a stack's service other than the main one: `…-<key>_<service>` (a
/// name key never holds `_`, so no app's own service has this name), each character a
/// service name cannot hold made `-`.
pub fn stack_service_name(settings: &Settings, app: &AppRow, service: &str) -> String {
    let clean: String = service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    settings.object_name(&format!("{}_{clean}", app.name_key))
}

/// The services of the app in the swarm (a stack's several, a Dockerfile app's one).
async fn services_of(
    state: &Deployer,
    engine: &Engine,
    app: &AppRow,
) -> Result<Vec<ServiceFacts>, EngineError> {
    engine
        .services_labelled(&state.settings.scoped(format!(
            "{}={}",
            crate::domain::labels::APP,
            app.name
        )))
        .await
}

/// What the swarm branch of a stack's deploy changed so far, for the undo.
#[derive(Default)]
struct StackRollout {
    /// Services created by this deploy.
    made: Vec<String>,
    /// Services this deploy updated (the last one maybe rolled back by Swarm already).
    updated: Vec<String>,
    /// Images pushed to the registry (`registry/tag`).
    pushed: Vec<String>,
}

/// A compose stack in swarm mode: every image built (and pushed, with a registry) or pulled
/// first, then one service per compose service created or updated in dependency order, each
/// waited for (healthy when it has a health check) before the next. The main service starts
/// its new tasks first; the others stop theirs first, as in engine mode. A failure removes
/// the services this deploy created and rolls back those it updated (a first deploy leaves
/// nothing).
async fn attempt_stack(
    state: &Deployer,
    engine: &Engine,
    node_id: &str,
    req: &DeployRequest,
    app: &AppRow,
    created: &mut Created,
) -> Result<String, DeployError> {
    let mut rollout = StackRollout::default();
    let first = services_of(state, engine, app).await?.is_empty();
    let result = roll_stack(state, engine, node_id, req, app, created, &mut rollout).await;
    if result.is_err() {
        for name in rollout.made.iter().rev() {
            crate::service::removed(
                "remove a service",
                remove_service_and_wait(engine, name).await,
            );
        }
        for name in rollout.updated.iter().rev() {
            match engine.service(name).await {
                Ok(Some(s)) if !s.update_state.starts_with("rollback") => {
                    roll_back(engine, name).await;
                }
                _ => {}
            }
        }
        for image in &rollout.pushed {
            crate::service::removed("remove an image", engine.remove_image(image).await);
        }
        if first {
            for outbound in [true, false] {
                for net in [
                    network_variant(&state.settings, app, outbound),
                    stack_network(&state.settings, app, outbound),
                ] {
                    crate::service::removed(
                        "remove a network",
                        remove_network_when_free(engine, &net).await,
                    );
                }
            }
        }
    }
    result
}

#[allow(clippy::too_many_lines)]
async fn roll_stack(
    state: &Deployer,
    engine: &Engine,
    node_id: &str,
    req: &DeployRequest,
    app: &AppRow,
    created: &mut Created,
    rollout: &mut StackRollout,
) -> Result<String, DeployError> {
    use crate::domain::compose::ImageSource;
    use crate::service::compose;
    let deploy_id = req.deploy_id;
    if state.settings.swarm.container.is_none() && !app.outbound {
        return Err(DeployError::Other(INTERNAL_REFUSED.into()));
    }
    let (zip, checked) = compose::source_of(state, req, app).await?;
    let crate::archive::AppKind::Compose(file) = &checked.kind else {
        return Err(DeployError::Other(
            "this app was deployed from a compose file; its new ZIP must hold one too".into(),
        ));
    };
    let env = super::lifecycle::decrypted_env(state, app.id).await?;
    let admin_mounts = super::deploy::mounts_of(req, app);
    let plan = compose::load_plan(
        state,
        &zip,
        &checked,
        file,
        Limits {
            memory_mb: app.memory_mb,
            cpu_percent: app.cpu_percent,
        },
        app.port_override,
        env.clone(),
        &admin_mounts,
    )
    .await?;
    // Compose service → Swarm service.
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for s in &plan.services {
        let name = if s.name == plan.main {
            service_name(&state.settings, app)
        } else {
            stack_service_name(&state.settings, app, &s.name)
        };
        let clash = names.values().any(|n| *n == name);
        if name.len() > 63 || clash {
            return Err(DeployError::Other(format!(
                "service {}: its Swarm service would be named {name}, {}; rename the service in the compose file",
                s.name,
                if clash {
                    "as another service of the stack"
                } else {
                    "longer than the 63 characters Swarm allows"
                }
            )));
        }
        names.insert(s.name.clone(), name);
    }
    let listed: Vec<&str> = plan.services.iter().map(|s| s.name.as_str()).collect();
    log(
        state,
        deploy_id,
        format!(
            "Stack from {file}: {} (main service {}, port {}), each a Swarm service\n",
            listed.join(", "),
            plan.main,
            plan.port
        ),
    )
    .await;
    for s in &plan.services {
        if !s.depends_on.is_empty() {
            log(state, deploy_id, format!("[{}] Note: Swarm has no depends_on; the services are created in dependency order and each waited for, but a task Swarm restarts later does not wait for the ones it depends on.\n", s.name)).await;
        }
        let mut dropped = Vec::new();
        if s.hostname.is_some() || s.domainname.is_some() {
            dropped.push("hostname/domainname");
        }
        if s.tty || s.stdin_open {
            dropped.push("tty/stdin_open");
        }
        if !dropped.is_empty() {
            log(
                state,
                deploy_id,
                format!(
                    "[{}] Note: a Swarm service here does not carry {}; they are left out.\n",
                    s.name,
                    dropped.join(" and ")
                ),
            )
            .await;
        }
    }

    // Images first, before anything running is touched.
    let options = super::images::options(state, app.id).await;
    let app_policy = super::images::policy_of(&options);
    let images = compose::resolve_images(
        state, engine, deploy_id, app, &zip, &checked, &plan, app_policy, created,
    )
    .await?;
    let mut refs: BTreeMap<String, String> = BTreeMap::new();
    for s in &plan.services {
        let local = &images[&s.name];
        let reference = match (&s.source, &state.settings.swarm.registry) {
            (ImageSource::Build { .. }, Some(registry)) => {
                let target = format!("{registry}/{local}");
                log(state, deploy_id, format!("[{}] Pushing {target}\n", s.name)).await;
                rollout.pushed.push(target.clone());
                let by_digest = engine.push_image(local, &target).await?;
                log(
                    state,
                    deploy_id,
                    format!("[{}] Deploying {by_digest}\n", s.name),
                )
                .await;
                by_digest
            }
            // `image:` services are pulled by the nodes by reference.
            _ => local.clone(),
        };
        refs.insert(s.name.clone(), reference);
    }
    let mut pins = Vec::new();
    if state.settings.swarm.registry.is_none() {
        log(
            state,
            deploy_id,
            "No MILKCRATE_REGISTRY: the stack's images exist on this node only, so its services are placed on it.\n".into(),
        )
        .await;
        pins.push(format!("node.id=={node_id}"));
    }

    // Volumes (node-local) and networks.
    let stack_names = compose::ensure_volumes(state, engine, deploy_id, app, &plan).await?;
    super::deploy::check_mounts(engine, &admin_mounts).await?;
    let has_volumes =
        !admin_mounts.mounts().is_empty() || plan.services.iter().any(|s| !s.mounts.is_empty());
    if has_volumes {
        if pins.is_empty() {
            pins.push(format!("node.id=={node_id}"));
        }
        log(
            state,
            deploy_id,
            format!("The stack mounts volumes, which live on node {node_id}: its services are pinned there.\n"),
        )
        .await;
    }
    let mut net_labels: HashMap<String, String> =
        crate::domain::labels::ownership(&app.name, deploy_id)
            .into_iter()
            .collect();
    net_labels.extend(state.settings.extra_labels.iter().cloned());
    let routed = network_name(&state.settings, app);
    let stack_net = stack_network(&state.settings, app, app.outbound);
    engine
        .ensure_overlay(&routed, net_labels.clone(), !app.outbound)
        .await?;
    engine
        .ensure_overlay(&stack_net, net_labels, !app.outbound)
        .await?;
    crate::service::guard_swarm_gateway(&state.settings).await?;
    join_routed(&state.settings, engine, &routed).await?;
    if !app.outbound {
        log(
            state,
            deploy_id,
            "Outbound access is off: the stack's services join internal overlay networks and reach nothing outside them.\n".into(),
        )
        .await;
    }
    super::deploy::set_step(
        state,
        deploy_id,
        crate::domain::state::DeployStatus::Starting,
    )
    .await;
    let users = compose::service_users(
        state,
        engine,
        deploy_id,
        &plan,
        &images,
        &stack_names,
        &admin_mounts,
        options.image_user,
    )
    .await?;

    // One service per compose service, in dependency order.
    let own = own_constraints(state, deploy_id, app).await?;
    for gap in not_expressible() {
        log(state, deploy_id, format!("Note: {gap}\n")).await;
    }
    let constraints = merged_constraints(&pins, &own);
    let main_replicas = state.store.app_replicas(app.id).await.unwrap_or(1).max(1);
    let existing = services_of(state, engine, app).await?;
    let mut main_id = String::new();
    // Compose service → id of the Swarm service this deploy created for it.
    let mut made_ids: Vec<(String, String)> = Vec::new();
    for s in &plan.services {
        let is_main = s.name == plan.main;
        let name = names[&s.name].clone();
        let mut with_user = s.clone();
        with_user.user = users.get(&s.name).copied();
        let spec = compose::service_spec(
            state,
            app,
            &plan,
            &with_user,
            &refs[&s.name],
            deploy_id,
            &stack_net,
            &env,
            &admin_mounts,
            &stack_names,
            &routed,
        );
        let replicas = if is_main { main_replicas } else { 1 };
        let mut service = service_plan(
            &spec,
            &SwarmOptions {
                replicas,
                constraints: constraints.clone(),
            },
        );
        service.name = name.clone();
        // Only the main service is routed; the others stop their old task before the new one
        // starts, so no volume is ever written by two versions at once.
        service.dns_round_robin = true;
        service.update.start_first = is_main;
        service.rollback.start_first = is_main;
        let current = existing.iter().find(|e| e.name == name);
        let before: HashSet<String> = match current {
            Some(c) => engine
                .tasks_of(std::slice::from_ref(&c.name))
                .await?
                .into_iter()
                .filter(|t| t.desired_state == "running")
                .map(|t| t.id)
                .collect(),
            None => HashSet::new(),
        };
        log(
            state,
            deploy_id,
            format!(
                "[{}] {} service {name} ({replicas} replica(s), {} MiB, {}% CPU each)\n",
                s.name,
                if current.is_none() {
                    "Creating"
                } else {
                    "Updating"
                },
                s.limits.memory_mb,
                s.limits.cpu_percent
            ),
        )
        .await;
        let id = match current {
            None => {
                let id = engine.create_service(&service).await?;
                rollout.made.push(name.clone());
                made_ids.push((s.name.clone(), id.clone()));
                id
            }
            Some(c) => {
                rollout.updated.push(name.clone());
                engine.update_service(&name, &service).await?;
                c.id.clone()
            }
        };
        wait_converged(
            state,
            engine,
            deploy_id,
            &name,
            replicas,
            &before,
            current.is_none(),
            &own,
        )
        .await
        .map_err(|e| match e {
            DeployError::Start(m) => DeployError::Start(format!("service {}: {m}", s.name)),
            other => other,
        })?;
        if is_main {
            main_id = id;
        }
    }

    // A service created here has no update monitor: its task may run a moment and exit. Each
    // is watched as long as Swarm watches an updated one, and one whose task failed meanwhile
    // fails the deploy.
    if !made_ids.is_empty()
        && let Some(t) = watch_new_services(
            state,
            engine,
            deploy_id,
            &rollout.made,
            &["failed", "rejected"],
        )
        .await?
    {
        let service = made_ids
            .iter()
            .find(|(_, id)| *id == t.service_id)
            .map(|(s, _)| s.as_str())
            .unwrap_or("?");
        return Err(DeployError::Start(format!(
            "service {service}: its task stopped right after starting ({})",
            task_error(&t)
        )));
    }

    // Done: services the compose file no longer has go, and the networks of the other
    // outbound setting.
    for gone in existing
        .iter()
        .filter(|e| !names.values().any(|n| *n == e.name))
    {
        log(
            state,
            deploy_id,
            format!("Removing service {}, no longer in {file}\n", gone.name),
        )
        .await;
        remove_service_and_wait(engine, &gone.name).await?;
    }
    for other in [
        network_variant(&state.settings, app, !app.outbound),
        stack_network(&state.settings, app, !app.outbound),
    ] {
        if engine.network_exists(&other).await {
            leave_routed(&state.settings, engine, &other).await;
            crate::service::removed("remove a network", engine.remove_network(&other).await);
        }
    }
    let main_image = images[&plan.main].clone();
    let previous = match req.kind {
        DeployKind::Create => None,
        _ => Some(app.image_tag.clone()).filter(|t| !t.is_empty() && *t != main_image),
    };
    {
        let _writer = state.routes.write_lock().await;
        state
            .store
            .app_deployed(app.id, main_id, main_image.clone(), previous, plan.port)
            .await?;
        if let Some(m) = &req.mounts {
            state.store.set_app_mounts(app.id, m.to_column()).await?;
        }
        state
            .store
            .set_app_compose(app.id, file.clone(), plan.main.clone())
            .await?;
    }
    // Images of this deploy and of the one before stay (for rollback); older ones go.
    let mut keep: Vec<String> = images.values().chain(refs.values()).cloned().collect();
    keep.extend(existing.iter().map(|e| e.image.clone()));
    let registry = state.settings.swarm.registry.clone().unwrap_or_default();
    for k in keep.clone() {
        let tag = k.split('@').next().unwrap_or_default().to_string();
        let local = tag
            .strip_prefix(&format!("{registry}/"))
            .unwrap_or(&tag)
            .to_string();
        keep.push(format!("{registry}/{local}"));
        keep.push(tag);
        keep.push(local);
    }
    super::deploy::prune_images(
        state,
        engine,
        deploy_id,
        app,
        &super::deploy::Prune::AllBut(keep),
    )
    .await;
    match (&req.source, req.kind) {
        (Some((zip, _)), _) => super::deploy::prune_sources(state, app, zip).await,
        (None, DeployKind::Rollback) => super::deploy::prune_sources(state, app, &zip).await,
        _ => {}
    }
    log(
        state,
        deploy_id,
        format!(
            "Deployed {} at {} ({} services)\n",
            app.name,
            crate::service::domains::served_at(app, &state.settings),
            plan.services.len()
        ),
    )
    .await;
    state.status.poke();
    Ok(main_image)
}

/// Removes network `name`, trying again for 15 s while the endpoints of tasks that just went
/// are still on it.
async fn remove_network_when_free(engine: &Engine, name: &str) -> Result<(), EngineError> {
    if !engine.network_exists(name).await {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match engine.remove_network(name).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

/// The app's own placement constraints, said in the deploy log when it has any.
async fn own_constraints(
    state: &Deployer,
    deploy_id: i64,
    app: &AppRow,
) -> Result<Vec<String>, DeployError> {
    let own = state.store.app_constraints(app.id).await?;
    if !own.is_empty() {
        log(
            state,
            deploy_id,
            format!("Placement constraints: {}\n", own.join(", ")),
        )
        .await;
    }
    Ok(own)
}

/// How long every new task may wait for a node that matches its constraints before the
/// deploy (or placement change) fails.
pub const UNPLACEABLE_WAIT: Duration = Duration::from_secs(5);

/// The sentence for tasks that no node can take (`why`: what said so).
pub fn unplaceable(own: &[String], why: &str) -> String {
    if own.is_empty() {
        format!("no node can take the app's tasks ({why})")
    } else {
        format!("no node matches {} ({why})", own.join(" and "))
    }
}

/// The sentence for a task Swarm keeps pending (`swarm_says`: its error): the app's
/// constraints are named only when Swarm says constraints are what no node satisfies (not,
/// say, free memory or a paused node).
pub fn pending_sentence(own: &[String], swarm_says: &str) -> String {
    let why = format!("Swarm says: {swarm_says}");
    if swarm_says.contains("constraints") {
        unplaceable(own, &why)
    } else {
        unplaceable(&[], &why)
    }
}

/// Whether Swarm keeps task `t` pending because no node satisfies its constraints.
fn waits_for_a_node(t: &TaskFacts) -> bool {
    t.desired_state == "running"
        && t.state == "pending"
        && (t.error.contains("no suitable node") || t.message.contains("no suitable node"))
}

/// Waits until service `name` runs `replicas` new tasks (none of `before`) and Swarm reports
/// its update complete; fails when Swarm rolled the update back, or new tasks keep failing,
/// or every new task waited [`UNPLACEABLE_WAIT`] for a node matching the constraints (`own`,
/// the app's; an update is then rolled back, so the old tasks keep serving), or the start
/// timeout (per replica) passes.
#[allow(clippy::too_many_arguments)]
async fn wait_converged(
    state: &Deployer,
    engine: &Engine,
    deploy_id: i64,
    name: &str,
    replicas: u64,
    before: &HashSet<String>,
    first: bool,
    own: &[String],
) -> Result<(), DeployError> {
    let mut stuck_since: Option<Instant> = None;
    let budget = state.settings.start_timeout * (replicas as u32 + 1)
        + Duration::from_nanos(crate::domain::service_spec::UPDATE_MONITOR_NS as u64)
            * (replicas as u32 + 1);
    let deadline = Instant::now() + budget;
    let mut said = 0usize;
    loop {
        let service = engine
            .service(name)
            .await?
            .ok_or_else(|| DeployError::Other(format!("the service {name} disappeared")))?;
        let tasks = engine.tasks_of(&[name.to_string()]).await?;
        let new: Vec<&TaskFacts> = tasks.iter().filter(|t| !before.contains(&t.id)).collect();
        let running = new
            .iter()
            .filter(|t| t.desired_state == "running" && t.state == "running")
            .count() as u64;
        let old_left = tasks
            .iter()
            .any(|t| before.contains(&t.id) && t.desired_state == "running");
        let failed: Vec<&&TaskFacts> = new
            .iter()
            .filter(|t| matches!(t.state.as_str(), "failed" | "rejected"))
            .collect();
        if running as usize != said {
            said = running as usize;
            log(
                state,
                deploy_id,
                format!("{running}/{replicas} new task(s) running\n"),
            )
            .await;
        }
        let live_new: Vec<&&TaskFacts> = new
            .iter()
            .filter(|t| t.desired_state == "running")
            .collect();
        let stuck: Vec<&&&TaskFacts> = live_new.iter().filter(|t| waits_for_a_node(t)).collect();
        if !stuck.is_empty() && stuck.len() == live_new.len() {
            let since = *stuck_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= UNPLACEABLE_WAIT {
                let sentence = pending_sentence(own, &task_error(stuck[0]));
                log(state, deploy_id, format!("{sentence}\n")).await;
                if first {
                    return Err(DeployError::Start(sentence));
                }
                roll_back(engine, name).await;
                return Err(DeployError::Start(format!(
                    "{sentence}; the service was rolled back, and the previous version keeps serving"
                )));
            }
        } else {
            stuck_since = None;
        }
        match service.update_state.as_str() {
            "rollback_started" | "rollback_completed" | "rollback_paused" | "paused" => {
                return Err(DeployError::Start(format!(
                    "the new version failed ({}); Swarm rolled the service back, and the previous version keeps serving",
                    if service.update_message.is_empty() {
                        failed
                            .first()
                            .map(|t| task_error(t))
                            .unwrap_or_else(|| "a new task did not stay up".into())
                    } else {
                        service.update_message.clone()
                    }
                )));
            }
            _ => {}
        }
        let complete = first || service.update_state == "completed";
        if running >= replicas && !old_left && complete {
            return Ok(());
        }
        if first && failed.len() >= 2 {
            return Err(DeployError::Start(format!(
                "the service's tasks keep failing: {}",
                task_error(failed[0])
            )));
        }
        if Instant::now() > deadline {
            return Err(DeployError::Start(format!(
                "the service did not run {replicas} new task(s) within {} s{}",
                budget.as_secs(),
                failed
                    .first()
                    .map(|t| format!(" (last failure: {})", task_error(t)))
                    .unwrap_or_default()
            )));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Watches services just created (`names`) for as long as Swarm watches an updated one (a
/// created service has no update monitor: its task may run a moment and exit); returns the
/// first task that reached one of the states `ends` meanwhile.
async fn watch_new_services(
    state: &Deployer,
    engine: &Engine,
    deploy_id: i64,
    names: &[String],
    ends: &[&str],
) -> Result<Option<TaskFacts>, DeployError> {
    let watched = Duration::from_nanos(crate::domain::service_spec::UPDATE_MONITOR_NS as u64);
    let until = Instant::now() + watched;
    log(
        state,
        deploy_id,
        format!("Watching the new service(s) for {} s\n", watched.as_secs()),
    )
    .await;
    // Tasks that had already ended when the watch began are history: Swarm replaced them
    // (its restart policy), and the deploy already waited for the replacements to run.
    let ended_before: HashSet<String> = engine
        .tasks_of(names)
        .await?
        .into_iter()
        .filter(|t| ends.contains(&t.state.as_str()))
        .map(|t| t.id)
        .collect();
    loop {
        let tasks = engine.tasks_of(names).await?;
        if let Some(t) = tasks
            .into_iter()
            .find(|t| ends.contains(&t.state.as_str()) && !ended_before.contains(&t.id))
        {
            return Ok(Some(t));
        }
        if Instant::now() >= until {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Puts service `name` back to its previous spec and waits (up to 30 s) until Swarm says the
/// rollback is done.
async fn roll_back(engine: &Engine, name: &str) {
    if let Err(e) = engine.rollback_service(name).await {
        tracing::warn!(service = name, error = %e, "could not roll the service back");
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match engine.service(name).await {
            Ok(Some(s)) if s.update_state != "rollback_started" => break,
            Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(300)).await,
            _ => break,
        }
    }
}

fn task_error(t: &TaskFacts) -> String {
    match (t.error.is_empty(), t.message.is_empty()) {
        (false, _) => t.error.clone(),
        (true, false) => t.message.clone(),
        _ => format!("task {} is {}", t.id, t.state),
    }
}

/// Removes service `name` and waits (up to 30 s) until its tasks' containers on this node are
/// gone, so its images can be removed after.
async fn remove_service_and_wait(engine: &Engine, name: &str) -> Result<(), EngineError> {
    engine.remove_service(name).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let label = format!("com.docker.swarm.service.name={name}");
    while Instant::now() < deadline {
        if engine
            .list_labelled(std::slice::from_ref(&label), "")
            .await?
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Start, stop and restart of a swarm app: scale to its replicas, to 0, or replace its tasks.
pub async fn act(
    state: &Deployer,
    engine: &Engine,
    app: &AppRow,
    action: super::lifecycle::Action,
) -> Result<crate::domain::state::AppStatus, EngineError> {
    use super::lifecycle::Action;
    use crate::domain::state::AppStatus;
    let name = service_name(&state.settings, app);
    let replicas = state.store.app_replicas(app.id).await.unwrap_or(1).max(1);
    // A stack's other services (one task each) start before its main one and stop after it.
    let others: Vec<String> = if app.deployment_type == crate::service::compose::DEPLOYMENT_TYPE {
        services_of(state, engine, app)
            .await?
            .into_iter()
            .map(|s| s.name)
            .filter(|n| *n != name)
            .collect()
    } else {
        Vec::new()
    };
    match action {
        Action::Start => {
            for other in &others {
                engine.scale_service(other, 1).await?;
            }
            engine
                .scale_service(&name, replicas)
                .await
                .map(|_| AppStatus::Running)
        }
        Action::Stop => {
            engine.scale_service(&name, 0).await?;
            for other in &others {
                engine.scale_service(other, 0).await?;
            }
            Ok(AppStatus::Stopped)
        }
        Action::Restart => {
            for other in &others {
                engine.restart_service(other).await?;
            }
            engine
                .restart_service(&name)
                .await
                .map(|_| AppStatus::Running)
        }
    }
}

/// Why an app's replicas could not be set.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Engine(#[from] EngineError),
}

/// Sets the app's replicas (1…20) and scales its service at once when it runs.
pub async fn scale(state: &Deployer, app: &AppRow, replicas: u64) -> Result<String, ScaleError> {
    let _one_at_a_time = state.app_locks.lock(app.id, || {}).await;
    state.store.set_app_replicas(app.id, replicas).await?;
    if app.status == "running" && !app.container_id.is_empty() {
        let engine = state.engine.client().await?;
        engine
            .scale_service(&service_name(&state.settings, app), replicas)
            .await?;
    }
    state.status.poke();
    Ok(format!("{} now runs {replicas} replica(s)", app.name))
}

/// Whether `node` satisfies every constraint (as Swarm reads them: a label the node lacks
/// fails `==` and passes `!=`; values compare without regard to case).
pub fn node_matches(node: &NodeFacts, constraints: &[String]) -> bool {
    constraints.iter().all(|c| {
        let (field, value, equal) = match (c.split_once("=="), c.split_once("!=")) {
            (Some((f, v)), _) => (f, v, true),
            (None, Some((f, v))) => (f, v, false),
            _ => return true,
        };
        let actual: Option<&str> = match field {
            "node.id" => Some(&node.id),
            "node.hostname" => Some(&node.hostname),
            "node.role" => Some(&node.role),
            "node.platform.os" => Some(&node.os),
            "node.platform.arch" => Some(&node.arch),
            _ => match field.strip_prefix("node.labels.") {
                Some(key) => node
                    .labels
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str()),
                // Not a node attribute this code knows: left to Swarm.
                None => return true,
            },
        };
        actual.is_some_and(|a| a.eq_ignore_ascii_case(value)) == equal
    })
}

/// Why a placement change did not happen (or was rolled back), in the sentence the app page
/// and the API show.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("{0}")]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// No ready, active node has the constraints (`unplaceable`'s words).
    #[error("{0}; nothing was changed, and the app keeps running where it ran")]
    NoNode(String),
    #[error("the service {0} disappeared")]
    Gone(String),
    /// Tasks waited too long for a node (`pending_sentence`'s words).
    #[error("{0}; the change was rolled back, and the app keeps running where it ran")]
    RolledBack(String),
    #[error("Swarm rolled the change back ({0})")]
    SwarmRolledBack(String),
    #[error("the service did not settle within {0} s")]
    Unsettled(u64),
}

/// Sets the app's placement constraints (checked by `parse_constraints`). When its service
/// exists they are applied at once with a service update (milkcrate's pins kept): refused
/// when no ready, active node matches them, and rolled back (the old tasks keep serving) when
/// Swarm still finds no node for the new tasks. Stored only when applied.
pub async fn place(state: &Deployer, app: &AppRow, own: Vec<String>) -> Result<String, PlaceError> {
    let _one_at_a_time = state.app_locks.lock(app.id, || {}).await;
    let name = service_name(&state.settings, app);
    let said = if own.is_empty() {
        format!("{} has no placement constraint", app.name)
    } else {
        format!("{} runs on nodes where {}", app.name, own.join(" and "))
    };
    if !app.container_id.is_empty() {
        let engine = state.engine.client().await?;
        if let Some(service) = engine.service(&name).await? {
            let pins: Vec<String> = service
                .constraints
                .iter()
                .filter(|c| is_pin(c))
                .cloned()
                .collect();
            let wanted = merged_constraints(&pins, &own);
            let nodes = engine.nodes().await?;
            let fits = nodes
                .iter()
                .filter(|n| n.state == "ready" && n.availability == "active")
                .any(|n| node_matches(n, &wanted));
            if !fits {
                return Err(PlaceError::NoNode(unplaceable(
                    &own,
                    "no ready, active node of the swarm has them",
                )));
            }
            if wanted != service.constraints {
                engine.set_service_constraints(&name, &wanted).await?;
                if service.replicas > 0 {
                    wait_placed(state, &engine, &name, service.replicas, &own).await?;
                }
            }
        }
    }
    state.store.set_app_constraints(app.id, &own).await?;
    state.status.poke();
    Ok(said)
}

/// After a placement change: Swarm replaces the tasks whose node no longer matches (as an
/// update) and keeps the others where they are. Done when every task runs and no update is
/// under way, read once Swarm had a moment (2 s) to start one; failed (and rolled back) when
/// a task waits [`UNPLACEABLE_WAIT`] for a node, or Swarm rolled the change back itself.
async fn wait_placed(
    state: &Deployer,
    engine: &Engine,
    name: &str,
    replicas: u64,
    own: &[String],
) -> Result<(), PlaceError> {
    let started = Instant::now();
    let budget = state.settings.start_timeout * (replicas as u32 + 1);
    let mut stuck_since: Option<Instant> = None;
    loop {
        let service = engine
            .service(name)
            .await?
            .ok_or_else(|| PlaceError::Gone(name.to_string()))?;
        let tasks = engine.tasks_of(&[name.to_string()]).await?;
        let live: Vec<&TaskFacts> = tasks
            .iter()
            .filter(|t| t.desired_state == "running")
            .collect();
        match live.iter().find(|t| waits_for_a_node(t)) {
            Some(t) => {
                let since = *stuck_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= UNPLACEABLE_WAIT {
                    let sentence = pending_sentence(own, &task_error(t));
                    roll_back(engine, name).await;
                    return Err(PlaceError::RolledBack(sentence));
                }
            }
            None => stuck_since = None,
        }
        if matches!(
            service.update_state.as_str(),
            "rollback_started" | "rollback_completed" | "rollback_paused" | "paused"
        ) {
            return Err(PlaceError::SwarmRolledBack(service.update_message));
        }
        let settled = service.update_state != "updating"
            && live.len() as u64 >= replicas
            && live.iter().all(|t| t.state == "running");
        if settled && started.elapsed() >= Duration::from_secs(2) {
            return Ok(());
        }
        if started.elapsed() > budget {
            return Err(PlaceError::Unsettled(budget.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Removes the app's services (a stack's several; waiting for their containers to go) and its
/// overlay networks; the caller then removes what is left by label (images).
pub async fn remove_app(
    state: &Deployer,
    engine: &Engine,
    app: &AppRow,
) -> Result<(), EngineError> {
    remove_service_and_wait(engine, &service_name(&state.settings, app)).await?;
    for s in services_of(state, engine, app).await? {
        remove_service_and_wait(engine, &s.name).await?;
    }
    for outbound in [true, false] {
        // The network's endpoints on the nodes go a moment after the tasks.
        let routed = network_variant(&state.settings, app, outbound);
        leave_routed(&state.settings, engine, &routed).await;
        remove_network_when_free(engine, &routed).await?;
        remove_network_when_free(engine, &stack_network(&state.settings, app, outbound)).await?;
    }
    Ok(())
}

/// What the app page shows of a swarm app: its tasks, each with its node, state and address.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskLine {
    pub slot: i64,
    pub id: String,
    pub node: String,
    pub state: String,
    pub reachable: bool,
    pub note: String,
}

pub fn task_lines(view: &SwarmView, service_id: &str) -> Vec<TaskLine> {
    let mut lines: Vec<TaskLine> = view
        .live_tasks(service_id)
        .map(|t| TaskLine {
            slot: t.slot,
            id: t.id.chars().take(12).collect(),
            node: view.node_name(&t.node_id),
            state: t.state.clone(),
            reachable: view.addresses.contains_key(&t.id),
            note: task_error(t),
        })
        .collect();
    lines.sort_by_key(|l| l.slot);
    lines
}

/// `2/3 running` for the dashboard, when `app` is a swarm service in `view`.
pub fn replicas_text(view: &SwarmView, app: &AppRow) -> Option<String> {
    view.counts(&app.container_id)
        .map(|(running, wished)| format!("{running}/{wished} running"))
}

/// Swarm mode: the container whose logs the logs page shows, the running task of the lowest
/// slot on this node (the engine serves logs of its own containers only); `None` in engine
/// mode.
pub fn log_container(app: &AppRow, snap: &super::status::Snapshot) -> Option<String> {
    let view = snap.swarm.as_ref()?;
    let service = view.service(&app.container_id)?;
    let mut local: Vec<&TaskFacts> = view
        .live_tasks(&service.id)
        .filter(|t| t.state == "running")
        .filter(|t| {
            t.container_id
                .as_ref()
                .is_some_and(|c| snap.containers.iter().any(|k| k.id == *c))
        })
        .collect();
    local.sort_by_key(|t| t.slot);
    local.first().and_then(|t| t.container_id.clone())
}

/// What the dashboard shows for a swarm app: `2/3 running`, or `None` when `app` is not a
/// service in `view` (engine mode, or its service vanished).
pub fn status_of(app: &AppRow, view: &SwarmView) -> Option<super::status::Health> {
    let service = view.service(&app.container_id)?;
    let (running, wished) = view.counts(&service.id)?;
    let detail = if app.status == "stopped" || wished == 0 {
        "Stopped: the service runs no task.".to_string()
    } else if running >= wished {
        format!("{running} of {wished} task(s) running")
    } else if running > 0 {
        format!("only {running} of {wished} task(s) running")
    } else {
        "no task is running".to_string()
    };
    let detail = match service.update_state.as_str() {
        "" | "completed" => detail,
        state => format!("{detail}; update {state}: {}", service.update_message),
    };
    let own: Vec<String> = service
        .constraints
        .iter()
        .filter(|c| !is_pin(c))
        .cloned()
        .collect();
    let detail = match view.live_tasks(&service.id).find(|t| waits_for_a_node(t)) {
        Some(t) => format!("{detail}; {}", pending_sentence(&own, &task_error(t))),
        None => detail,
    };
    Some(super::status::Health {
        health: crate::domain::health::AppHealth::of_replicas(app.status, running, wished),
        detail,
    })
}

/// Labels for a node line on the Nodes page.
pub fn node_labels(n: &NodeFacts) -> String {
    let map: BTreeMap<&str, &str> = n
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeFacts {
        NodeFacts {
            id: "n1".into(),
            hostname: "web-1".into(),
            role: "manager".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            labels: vec![("zone".into(), "eu".into())],
            ..Default::default()
        }
    }

    fn cs(list: &[&str]) -> Vec<String> {
        list.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn a_node_matches_constraints_as_swarm_reads_them() {
        let n = node();
        assert!(node_matches(&n, &[]));
        assert!(node_matches(
            &n,
            &cs(&[
                "node.id==n1",
                "node.labels.zone==EU",
                "node.role==manager",
                "node.hostname==web-1",
                "node.platform.os==linux",
                "node.platform.arch==x86_64",
            ])
        ));
        assert!(node_matches(
            &n,
            &cs(&["node.labels.disk!=ssd", "node.role!=worker"])
        ));
        assert!(!node_matches(&n, &cs(&["node.labels.disk==ssd"])));
        assert!(!node_matches(&n, &cs(&["node.labels.zone!=eu"])));
        assert!(!node_matches(
            &n,
            &cs(&["node.id==n2", "node.labels.zone==eu"])
        ));
    }

    #[test]
    fn a_pending_task_names_the_constraints_only_when_they_are_the_reason() {
        let own = cs(&["node.labels.zone==eu"]);
        let s = pending_sentence(
            &own,
            "no suitable node (scheduling constraints not satisfied on 1 node)",
        );
        assert!(
            s.starts_with("no node matches node.labels.zone==eu (Swarm says: no suitable node"),
            "{s}"
        );
        let s = pending_sentence(&own, "no suitable node (insufficient resources on 1 node)");
        assert!(s.starts_with("no node can take the app's tasks"), "{s}");
    }
}
