//! Swarm mode's pages: the Nodes page (every node's state, availability and resources), the
//! swarm panel of an app's page (its tasks, each with its node; the replicas and placement
//! forms; what the service API cannot carry), and the two forms' actions. The pages read the
//! status snapshot: no page waits on the engine.

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::app::AppState;
use crate::audit::Event;
use crate::domain::service_spec::{not_expressible, parse_replicas};
use crate::service::deploy::Deployer;
use crate::service::swarm::{self, TaskLine};
use crate::store::AppRow;
use crate::web::apps::AppById;
use crate::web::client::ClientInfo;
use crate::web::errors::AppError;
use crate::web::form::Form;
use crate::web::pages::flash;
use crate::web::session::Admin;
use crate::web::views::{Layout, Page, render};

pub struct NodeLine {
    pub hostname: String,
    pub role: String,
    pub leader: bool,
    pub state: String,
    pub availability: String,
    pub addr: String,
    pub cpus: String,
    pub memory: String,
    pub engine: String,
    pub labels: String,
    pub tasks: usize,
}

#[derive(Template)]
#[template(path = "nodes.html")]
pub struct NodesPage {
    pub layout: Layout,
    pub enabled: bool,
    pub nodes: Vec<NodeLine>,
    pub error: Option<String>,
    pub registry: String,
    pub gaps: Vec<&'static str>,
}

/// The Nodes page.
pub async fn nodes(
    State(state): State<AppState>,
    _admin: Admin,
    page: Page,
) -> Result<Response, AppError> {
    let snap = state.status.snapshot();
    let enabled = swarm::enabled(&state.settings);
    let nodes = snap
        .swarm
        .as_ref()
        .map(|view| {
            view.nodes
                .iter()
                .map(|n| NodeLine {
                    hostname: n.hostname.clone(),
                    role: n.role.clone(),
                    leader: n.leader,
                    state: n.state.clone(),
                    availability: n.availability.clone(),
                    addr: n.addr.clone(),
                    cpus: format!("{:.1}", n.cpus),
                    memory: format!("{} MiB", n.memory_bytes / (1024 * 1024)),
                    engine: n.engine_version.clone(),
                    labels: swarm::node_labels(n),
                    tasks: view
                        .tasks
                        .iter()
                        .filter(|t| t.node_id == n.id && t.state == "running")
                        .count(),
                })
                .collect()
        })
        .unwrap_or_default();
    render(&NodesPage {
        layout: page.titled("Nodes"),
        enabled,
        nodes,
        error: snap.engine_error.clone(),
        registry: swarm::registry_line(&state.settings.swarm),
        gaps: not_expressible(),
    })
}

/// What an app's page shows in swarm mode.
pub struct SwarmPanel {
    pub replicas: u64,
    /// The app's placement constraints (milkcrate's own node pins aside).
    pub constraints: Vec<String>,
    pub running: String,
    pub tasks: Vec<TaskLine>,
    pub gaps: Vec<&'static str>,
    pub registry: String,
}

/// The panel for `app`, or `None` in engine mode.
pub async fn panel(state: &AppState, app: &AppRow) -> Option<SwarmPanel> {
    if !swarm::enabled(&state.settings) {
        return None;
    }
    let snap = state.status.snapshot();
    let view = snap.swarm.as_deref();
    Some(SwarmPanel {
        replicas: state.store.app_replicas(app.id).await.unwrap_or(1),
        constraints: state
            .store
            .app_constraints(app.id)
            .await
            .unwrap_or_default(),
        running: view
            .and_then(|v| swarm::replicas_text(v, app))
            .unwrap_or_else(|| "no service yet".into()),
        tasks: view
            .map(|v| swarm::task_lines(v, &app.container_id))
            .unwrap_or_default(),
        gaps: not_expressible(),
        registry: swarm::registry_line(&state.settings.swarm),
    })
}

#[derive(Deserialize)]
pub struct ReplicasForm {
    replicas: String,
}

/// Sets how many tasks run the app (scaled at once when it runs).
pub async fn set_replicas(
    State(state): State<AppState>,
    State(deployer): State<Deployer>,
    Admin(session): Admin,
    client: ClientInfo,
    AppById(app): AppById,
    Form(form): Form<ReplicasForm>,
) -> Result<Response, AppError> {
    let back = Redirect::to(&format!("/admin/apps/{}", app.id)).into_response();
    if !swarm::enabled(&state.settings) {
        flash(
            &state,
            &session.id_hash,
            "error",
            "Replicas apply only in swarm mode (MILKCRATE_ORCHESTRATOR=swarm).".into(),
        )
        .await?;
        return Ok(back);
    }
    let replicas = match parse_replicas(&form.replicas) {
        Ok(n) => n,
        Err(e) => {
            flash(&state, &session.id_hash, "error", e).await?;
            return Ok(back);
        }
    };
    let outcome = swarm::scale(&deployer, &app, replicas).await;
    let mut event = Event::new("scale", "application", app.name.clone())
        .details(serde_json::json!({ "replicas": replicas }));
    if let Err(e) = &outcome {
        event = event.failed(e.to_string());
    }
    state.audit.record_logged(&client.actor(true), event).await;
    match outcome {
        Ok(text) => flash(&state, &session.id_hash, "success", text).await?,
        Err(e) => {
            flash(
                &state,
                &session.id_hash,
                "error",
                format!("Could not scale {}: {e}", app.name),
            )
            .await?
        }
    }
    Ok(back)
}

#[derive(Deserialize)]
pub struct PlacementForm {
    #[serde(default)]
    constraints: String,
}

/// Sets the app's placement constraints (one per line), applied at once with a service
/// update; a constraint no node satisfies is refused with a sentence.
pub async fn set_placement(
    State(state): State<AppState>,
    State(deployer): State<Deployer>,
    Admin(session): Admin,
    client: ClientInfo,
    AppById(app): AppById,
    Form(form): Form<PlacementForm>,
) -> Result<Response, AppError> {
    let back = Redirect::to(&format!("/admin/apps/{}", app.id)).into_response();
    let lines: Vec<String> = form.constraints.lines().map(str::to_string).collect();
    match crate::service::apps::set_placement(&deployer, &app, &lines, &client.actor(true)).await {
        Ok(text) => flash(&state, &session.id_hash, "success", text).await?,
        Err(e) => {
            flash(
                &state,
                &session.id_hash,
                "error",
                format!("Could not change where {} runs: {e}", app.name),
            )
            .await?
        }
    }
    Ok(back)
}
