//! The app use cases that start a deploy: create (a checked ZIP becomes a new app and its first
//! deploy), update (a new ZIP for an app), rollback, redeploy, and saving the environment; and
//! swarm mode's placement change (a service update, no deploy). The
//! admin UI's handlers and the JSON API both call these, so the same input is refused with the
//! same sentence and audited the same way. Nothing here knows HTTP: callers hand in the fields
//! as text and the upload as a file on disk. Each takes the deploy pipeline's handles (the
//! `Deployer`: settings, store, audit log, status...); start, stop and delete the `Lifecycle`.

use std::path::Path;

use serde_json::json;

use crate::archive::{self, AppKind, CheckedZip};
use crate::audit::{Actor, Event};
use crate::clock::now_unix;
use crate::domain::app::{AppName, PublicRoute, parse_env_lines};
use crate::domain::hardening::Limits;
use crate::domain::volume::Mounts;
use crate::service::compose;
use crate::service::deploy::{self, DeployKind, DeployRequest, Deployer};
use crate::service::lifecycle::{self, Action, ActionError, Lifecycle};
use crate::store::{AppRow, NewApp, StoreError, Taken};

/// What kind of refusal: the input is wrong, or it clashes with what exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    Invalid,
    Conflict,
}

/// A refused request: a plain sentence, and the field it is about when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub kind: RefusalKind,
    pub message: String,
    pub field: Option<&'static str>,
}

impl Refused {
    pub fn invalid(field: Option<&'static str>, message: impl Into<String>) -> Self {
        Refused {
            kind: RefusalKind::Invalid,
            message: message.into(),
            field,
        }
    }

    fn conflict(field: Option<&'static str>, message: impl Into<String>) -> Self {
        Refused {
            kind: RefusalKind::Conflict,
            message: message.into(),
            field,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppsError {
    #[error("{}", .0.message)]
    Refused(Refused),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("file error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Failed(String),
}

impl From<Refused> for AppsError {
    fn from(r: Refused) -> Self {
        AppsError::Refused(r)
    }
}

/// A new app's settings as the form (or the API) gives them: text, parsed here.
#[derive(Debug, Clone, Default)]
pub struct NewAppInput {
    pub app_name: String,
    pub public_route: String,
    pub internal_port: String,
    pub health_path: String,
    pub env: String,
    pub memory_mb: String,
    pub cpu_percent: String,
    /// Custom domains, separated by spaces, commas or lines.
    pub domains: String,
    /// `missing` (default when empty), `always` or `never`.
    pub pull_policy: String,
    /// Run as the image's own user when it is not root.
    pub image_user: bool,
    /// Swarm mode: how many tasks run the app (empty: 1).
    pub replicas: String,
    /// Swarm mode: placement constraints, one per line or separated by commas.
    pub constraints: String,
}

/// A new app and its first deploy, started.
#[derive(Debug, Clone)]
pub struct Created {
    pub app_id: i64,
    pub deploy_id: i64,
    pub name: String,
}

/// Records a refused new app (named as the form gave it) as a failed deploy, and returns the
/// refusal. `create` refuses through it; so does a caller that could not even read the form.
pub async fn refuse_new(state: &Deployer, actor: &Actor, app_name: &str, r: Refused) -> AppsError {
    let name = app_name.trim().to_lowercase();
    let event = Event::new("deploy", "application", name).failed(&r.message);
    if let Err(e) = state.audit.record(actor, event).await {
        tracing::warn!(error = %e, "could not audit a refused deploy");
    }
    AppsError::Refused(r)
}

/// Checks the settings and the ZIP at `zip` (already on disk, removed by the caller's spool
/// guard if this fails), reserves name and route, keeps the ZIP, saves the environment and
/// starts the first deploy. A refusal is audited as a failed deploy.
pub async fn create(
    state: &Deployer,
    input: &NewAppInput,
    mounts: Mounts,
    zip: &Path,
    actor: &Actor,
) -> Result<Created, AppsError> {
    let refused = |r: Refused| refuse_new(state, actor, &input.app_name, r);
    let image_options = match crate::domain::image::PullPolicy::parse(&input.pull_policy) {
        Ok(p) => crate::store::ImageOptionsRow {
            pull_policy: p.as_str().into(),
            image_user: input.image_user,
            template: None,
        },
        Err(e) => return Err(refused(Refused::invalid(Some("pull_policy"), e)).await),
    };
    let replicas = match input.replicas.trim() {
        "" => 1,
        n => match crate::domain::service_spec::parse_replicas(n) {
            Ok(n) => n,
            Err(e) => return Err(refused(Refused::invalid(Some("replicas"), e)).await),
        },
    };
    let constraints = match crate::domain::service_spec::parse_constraints(&input.constraints) {
        Ok(c) if !c.is_empty() && !crate::service::swarm::enabled(&state.settings) => {
            return Err(refused(Refused::invalid(Some("constraints"), NOT_SWARM)).await);
        }
        Ok(c) => c,
        Err(e) => return Err(refused(Refused::invalid(Some("constraints"), e)).await),
    };
    let (new_app, env, checked) = match validate_new_app(state, input, mounts, zip).await {
        Ok(v) => v,
        Err(r) => return Err(refused(r).await),
    };
    let name = new_app.name.clone();
    let key = crate::domain::app::name_key(&name);
    let (app_id, deploy_id) = match state.store.insert_app(new_app, now_unix()).await? {
        Ok(ids) => ids,
        Err(taken) => {
            let r = match taken {
                Taken::Name(existing) => Refused::conflict(
                    Some("app_name"),
                    format!(
                        "An application named '{existing}' already exists (names differing only in case, '-' or '_' count as the same)."
                    ),
                ),
                Taken::Route(existing) => Refused::conflict(
                    Some("public_route"),
                    format!(
                        "Route '{}' is already in use by {existing}. Please choose a different route.",
                        input.public_route.trim()
                    ),
                ),
                Taken::Domain(host, existing) => Refused::conflict(
                    Some("domains"),
                    format!("{host} is already a domain of {existing}."),
                ),
            };
            return Err(refused(r).await);
        }
    };
    let dir = crate::service::app_dir(&state.settings, &key);
    let stored = dir.join(format!("{deploy_id}.zip"));
    let moved = async {
        tokio::fs::create_dir_all(&dir).await?;
        tokio::fs::rename(zip, &stored).await
    }
    .await;
    if let Err(e) = moved {
        crate::service::logged(
            "delete the app row being undone",
            state.store.delete_app(app_id).await,
        );
        return Err(AppsError::Io(e));
    }
    state
        .store
        .set_app_source(app_id, stored.display().to_string())
        .await?;
    if replicas != 1 {
        state.store.set_app_replicas(app_id, replicas).await?;
    }
    if !constraints.is_empty() {
        state
            .store
            .set_app_constraints(app_id, &constraints)
            .await?;
    }
    if (image_options.pull_policy != "missing" || image_options.image_user)
        && let Err(e) = state.store.set_image_options(app_id, image_options).await
    {
        undo_new_app(state, app_id, &dir).await;
        return Err(AppsError::Failed(e.to_string()));
    }
    if let Err(e) = lifecycle::save_env(state, app_id, env).await {
        undo_new_app(state, app_id, &dir).await;
        return Err(AppsError::Failed(e.to_string()));
    }
    deploy::spawn(
        state.clone(),
        DeployRequest {
            deploy_id,
            app_id,
            kind: DeployKind::Create,
            source: Some((stored, checked)),
            mounts: None,
            actor: actor.clone(),
        },
    );
    Ok(Created {
        app_id,
        deploy_id,
        name,
    })
}

/// Takes back a new app that could not be set up: its row, then its stored sources (each
/// failure logged; the caller reports the cause).
pub(crate) async fn undo_new_app(state: &Deployer, app_id: i64, dir: &Path) {
    crate::service::logged(
        "delete the app row being undone",
        state.store.delete_app(app_id).await,
    );
    crate::service::logged(
        "remove the app's sources being undone",
        tokio::fs::remove_dir_all(dir).await,
    );
}

async fn validate_new_app(
    state: &Deployer,
    v: &NewAppInput,
    mounts: Mounts,
    zip: &Path,
) -> Result<(NewApp, Vec<(String, String)>, CheckedZip), Refused> {
    let name = AppName::parse(&v.app_name).map_err(|e| Refused::invalid(Some("app_name"), e))?;
    let domains = crate::domain::host::parse_domain_list(&v.domains)
        .map_err(|e| Refused::invalid(Some("domains"), e))?;
    for d in &domains {
        crate::service::domains::rules(&state.settings)
            .check(d)
            .map_err(|e| Refused::invalid(Some("domains"), e))?;
    }
    let apps_domain = state.settings.apps_domain.as_deref();
    if let Some(apps) = apps_domain {
        let own = crate::domain::host::app_host(&name.key(), apps);
        if crate::router::admin_names(&state.settings).contains(&own) {
            return Err(Refused::invalid(
                Some("app_name"),
                format!(
                    "The app would be served at {own}, where milkcrate's admin UI is served; choose another name."
                ),
            ));
        }
    }
    // An app is reachable at a path route, at host names, or both: the route may stay empty
    // when it has a host name.
    let route =
        if v.public_route.trim().is_empty() && (!domains.is_empty() || apps_domain.is_some()) {
            String::new()
        } else {
            PublicRoute::parse(&v.public_route)
                .map_err(|e| Refused::invalid(Some("public_route"), e))?
                .as_str()
                .to_string()
        };
    let port = match v.internal_port.trim() {
        "" => None,
        p => Some(p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
            Refused::invalid(
                Some("internal_port"),
                "The internal port must be a number from 1 to 65535",
            )
        })?),
    };
    let health_path = match v.health_path.trim() {
        "" => None,
        p if p.starts_with('/') && p.len() <= 200 && p.chars().all(|c| c.is_ascii_graphic()) => {
            Some(p.to_string())
        }
        _ => {
            return Err(Refused::invalid(
                Some("health_path"),
                "The health-check path must start with / and hold no spaces, e.g. /health",
            ));
        }
    };
    let memory = v.memory_mb.trim().parse::<u32>().unwrap_or(512);
    let cpu = v.cpu_percent.trim().parse::<u32>().unwrap_or(50);
    let limits = Limits::within(memory, cpu, state.settings.max_limits).map_err(|e| {
        let field = if e.to_lowercase().contains("cpu") {
            "cpu_percent"
        } else {
            "memory_mb"
        };
        Refused::invalid(Some(field), e)
    })?;
    let env = parse_env_lines(&v.env).map_err(|e| Refused::invalid(Some("env"), e))?;
    let checked = check_zip(state, zip).await?;
    let deployment_type = match &checked.kind {
        AppKind::Compose(file) => {
            compose::load_plan(
                state,
                zip,
                &checked,
                file,
                limits,
                port,
                env.clone(),
                &mounts,
            )
            .await
            .map_err(|e| Refused::invalid(Some("file"), e.to_string()))?;
            compose::DEPLOYMENT_TYPE
        }
        AppKind::Dockerfile => crate::domain::state::DeploymentType::Dockerfile,
    };
    let new_app = NewApp {
        name: name.as_str().to_string(),
        public_route: route,
        domains: domains.into_iter().map(|d| d.into_string()).collect(),
        deployment_type: deployment_type.to_string(),
        health_path,
        memory_mb: limits.memory_mb,
        cpu_percent: limits.cpu_percent,
        port_override: port,
        source_zip: zip.display().to_string(),
        volume_mounts: mounts.to_column(),
    };
    Ok((new_app, env, checked))
}

/// The ZIP checks (entry by entry, without unpacking), off the async threads.
async fn check_zip(state: &Deployer, zip: &Path) -> Result<CheckedZip, Refused> {
    let (path, limits) = (zip.to_path_buf(), state.settings.zip_limits);
    tokio::task::spawn_blocking(move || archive::check_zip(&path, &limits))
        .await
        .map_err(|e| Refused::invalid(Some("file"), e.to_string()))?
        .map_err(|e| Refused::invalid(Some("file"), e.to_string()))
}

/// Records a refused action on an app in the audit log and returns it.
async fn refuse(
    state: &Deployer,
    actor: &Actor,
    app: &AppRow,
    action: &'static str,
    r: Refused,
) -> AppsError {
    state
        .audit
        .record_logged(
            actor,
            Event::new(action, "application", app.name.clone()).failed(&r.message),
        )
        .await;
    AppsError::Refused(r)
}

/// An action on `app` refused before it reached the service (its form could not be read):
/// audited as failed like every other refusal, and returned.
pub async fn refuse_action(
    state: &Deployer,
    actor: &Actor,
    app: &AppRow,
    action: &'static str,
    message: String,
) -> AppsError {
    refuse(state, actor, app, action, Refused::invalid(None, message)).await
}

/// A new ZIP for `app`, built while the old version keeps serving. `mounts` replaces the app's
/// volume mounts when given. Returns the deploy's id.
pub async fn update(
    state: &Deployer,
    app: &AppRow,
    zip: &Path,
    mounts: Option<Mounts>,
    actor: &Actor,
) -> Result<i64, AppsError> {
    if app.status == "deploying" || app.container_id.is_empty() {
        let r = Refused::conflict(None, "its first deploy has not finished");
        return Err(refuse(state, actor, app, "update", r).await);
    }
    let checked = match check_update(state, app, zip, mounts.as_ref()).await {
        Ok(c) => c,
        Err(r) => return Err(refuse(state, actor, app, "update", r).await),
    };
    let deploy_id = state
        .store
        .create_deploy(
            app.id,
            app.name.clone(),
            DeployKind::Update.as_str(),
            now_unix(),
        )
        .await?;
    let dir = crate::service::app_dir(&state.settings, &app.name_key);
    let stored = dir.join(format!("{deploy_id}.zip"));
    tokio::fs::create_dir_all(&dir).await?;
    tokio::fs::rename(zip, &stored).await?;
    deploy::spawn(
        state.clone(),
        DeployRequest {
            deploy_id,
            app_id: app.id,
            kind: DeployKind::Update,
            source: Some((stored, checked)),
            mounts,
            actor: actor.clone(),
        },
    );
    Ok(deploy_id)
}

async fn check_update(
    state: &Deployer,
    app: &AppRow,
    zip: &Path,
    mounts: Option<&Mounts>,
) -> Result<CheckedZip, Refused> {
    let checked = check_zip(state, zip).await?;
    let is_compose = app.deployment_type == compose::DEPLOYMENT_TYPE;
    match (&checked.kind, is_compose) {
        (AppKind::Compose(file), true) => {
            let defaults = Limits {
                memory_mb: app.memory_mb,
                cpu_percent: app.cpu_percent,
            };
            let vars = lifecycle::decrypted_env(state, app.id)
                .await
                .map_err(|e| Refused::invalid(None, e.to_string()))?;
            // The volumes this update assigns (or, without new ones, the app's).
            let assigned = mounts
                .cloned()
                .unwrap_or_else(|| Mounts::from_column(app.volume_mounts.as_deref()));
            compose::load_plan(
                state,
                zip,
                &checked,
                file,
                defaults,
                app.port_override,
                vars,
                &assigned,
            )
            .await
            .map_err(|e| Refused::invalid(Some("file"), e.to_string()))?;
        }
        (AppKind::Dockerfile, false) => {}
        (AppKind::Compose(file), false) => {
            return Err(Refused::invalid(
                Some("file"),
                format!(
                    "the app was deployed from a Dockerfile and this ZIP holds {file}; delete the app and deploy it again to switch"
                ),
            ));
        }
        (AppKind::Dockerfile, true) => {
            return Err(Refused::invalid(
                Some("file"),
                "the app is a compose stack and this ZIP holds only a Dockerfile; delete the app and deploy it again to switch",
            ));
        }
    }
    Ok(checked)
}

/// Records a deploy of `app` without a new source and starts it in the background.
pub async fn start_deploy(
    state: &Deployer,
    app: &AppRow,
    kind: DeployKind,
    actor: &Actor,
) -> Result<i64, StoreError> {
    let deploy_id = state
        .store
        .create_deploy(app.id, app.name.clone(), kind.as_str(), now_unix())
        .await?;
    deploy::spawn(
        state.clone(),
        DeployRequest {
            deploy_id,
            app_id: app.id,
            kind,
            source: None,
            mounts: None,
            actor: actor.clone(),
        },
    );
    Ok(deploy_id)
}

/// Back to the previous image.
pub async fn rollback(state: &Deployer, app: &AppRow, actor: &Actor) -> Result<i64, AppsError> {
    if app.previous_image_tag.is_none() {
        let r = Refused::conflict(None, "there is no previous version to roll back to");
        return Err(refuse(state, actor, app, "rollback", r).await);
    }
    Ok(start_deploy(state, app, DeployKind::Rollback, actor).await?)
}

/// The current image again in a fresh container (a missing container, new settings).
pub async fn redeploy(state: &Deployer, app: &AppRow, actor: &Actor) -> Result<i64, AppsError> {
    if app.image_tag.is_empty() {
        let r = Refused::conflict(None, "it has no image yet; wait for its deploy to finish");
        return Err(refuse(state, actor, app, "redeploy", r).await);
    }
    Ok(start_deploy(state, app, DeployKind::Reconfigure, actor).await?)
}

/// Turns the app's outbound access on or off (audited) and, when the app has a container,
/// redeploys it onto the matching network: returns that deploy's id.
pub async fn set_outbound(
    state: &Deployer,
    app: &AppRow,
    outbound: bool,
    actor: &Actor,
) -> Result<Option<i64>, AppsError> {
    if !outbound && !crate::service::apps_isolated(&state.settings) {
        let r = Refused::conflict(
            Some("outbound"),
            "In Traefik mode without MILKCRATE_TRAEFIK_CONTAINERS every app shares Traefik's network, so outbound access cannot be cut per app (set it, or use the built-in router).",
        );
        return Err(refuse(state, actor, app, "network_change", r).await);
    }
    if !outbound
        && crate::service::swarm::enabled(&state.settings)
        && state.settings.swarm.container.is_none()
    {
        let r = Refused::conflict(Some("outbound"), crate::service::swarm::INTERNAL_REFUSED);
        return Err(refuse(state, actor, app, "network_change", r).await);
    }
    state.store.set_app_outbound(app.id, outbound).await?;
    let event = Event::new("network_change", "application", app.name.clone())
        .details(json!({"outbound": outbound}));
    state.audit.record_logged(actor, event).await;
    if app.container_id.is_empty() || app.image_tag.is_empty() {
        return Ok(None);
    }
    let app = AppRow {
        outbound,
        ..app.clone()
    };
    Ok(Some(
        start_deploy(state, &app, DeployKind::Reconfigure, actor).await?,
    ))
}

/// Replaces the app's variables with `vars` (saved only if they are still at `version`, when
/// given) and, when the app has a container, redeploys it with them: returns that deploy's id.
pub async fn save_env(
    state: &Deployer,
    app: &AppRow,
    vars: Vec<(String, String)>,
    version: Option<String>,
    actor: &Actor,
) -> Result<Option<i64>, AppsError> {
    let keys: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
    let event =
        Event::new("env_change", "application", app.name.clone()).details(json!({"keys": keys}));
    let saved = match version.filter(|v| !v.is_empty()) {
        Some(version) => lifecycle::save_env_if(state, app.id, version, vars.clone()).await,
        None => lifecycle::save_env(state, app.id, vars.clone()).await,
    };
    if let Err(e) = saved {
        state
            .audit
            .record_logged(actor, event.failed(e.to_string()))
            .await;
        return Err(match e {
            ActionError::Refused(msg) => AppsError::Refused(Refused::conflict(Some("env"), msg)),
            other => AppsError::Failed(other.to_string()),
        });
    }
    state.audit.record_logged(actor, event).await;
    if app.container_id.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        start_deploy(state, app, DeployKind::Reconfigure, actor).await?,
    ))
}

/// Why placement constraints are refused in engine mode.
pub const NOT_SWARM: &str =
    "Placement constraints apply only in swarm mode (MILKCRATE_ORCHESTRATOR=swarm).";

/// Sets the app's placement constraints (swarm mode): checked, applied to its service at once
/// with a service update (no rebuild, no deploy), and audited as `placement_change`. A
/// constraint no node satisfies is refused, and the app keeps running where it ran.
pub async fn set_placement(
    state: &Deployer,
    app: &AppRow,
    constraints: &[String],
    actor: &Actor,
) -> Result<String, AppsError> {
    if !crate::service::swarm::enabled(&state.settings) {
        return Err(Refused::conflict(Some("constraints"), NOT_SWARM).into());
    }
    let text = constraints.join("\n");
    let parsed = crate::domain::service_spec::parse_constraints(&text)
        .map_err(|e| Refused::invalid(Some("constraints"), e))?;
    let event = Event::new("placement_change", "application", app.name.clone())
        .details(json!({"app_id": app.id, "constraints": parsed}));
    match crate::service::swarm::place(state, app, parsed).await {
        Ok(message) => {
            state.audit.record_logged(actor, event).await;
            Ok(message)
        }
        Err(e) => {
            let e = e.to_string();
            state.audit.record_logged(actor, event.failed(&e)).await;
            Err(Refused::conflict(Some("constraints"), e).into())
        }
    }
}

/// Marks an environment line whose stored value is kept as it is (the app page shows every
/// stored variable so; values are never sent back to the browser).
pub const UNCHANGED: &str = "(unchanged)";

/// Saves the environment as the app page's form gives it: `KEY=value` lines, where a value of
/// [`UNCHANGED`] keeps the stored one; then as [`save_env`]. Lines that do not parse are
/// refused (not audited: nothing was attempted); a stored value that cannot be read is never
/// silently replaced by an empty one.
pub async fn save_env_lines(
    state: &Deployer,
    app: &AppRow,
    text: &str,
    version: Option<String>,
    actor: &Actor,
) -> Result<Option<i64>, AppsError> {
    let parsed = parse_env_lines(text).map_err(|e| Refused::invalid(Some("env"), e))?;
    let old = if parsed.iter().any(|(_, v)| v == UNCHANGED) {
        lifecycle::decrypted_env(state, app.id).await.map_err(|e| {
            Refused::conflict(
                Some("env"),
                format!("The stored variables could not be read ({e}); give every value again."),
            )
        })?
    } else {
        Vec::new()
    };
    let merged: Vec<(String, String)> = parsed
        .into_iter()
        .map(|(k, v)| {
            if v == UNCHANGED {
                let kept = old
                    .iter()
                    .find(|(ok, _)| *ok == k)
                    .map(|(_, ov)| ov.clone())
                    .unwrap_or_default();
                (k, kept)
            } else {
                (k, v)
            }
        })
        .collect();
    save_env(state, app, merged, version, actor).await
}

/// Start, stop or restart `app`, audited; `None` is the original's toggle (stop what runs,
/// start what does not, whatever its health says). Returns the action taken and its outcome.
pub async fn act(
    lc: &Lifecycle,
    app: &AppRow,
    action: Option<Action>,
    actor: &Actor,
) -> (Action, Result<String, ActionError>) {
    let action = action.unwrap_or_else(|| {
        if crate::service::status::status_of(app, &lc.deployer.status.snapshot()).running() {
            Action::Stop
        } else {
            Action::Start
        }
    });
    let event = Event::new(action.as_str(), "application", app.name.clone())
        .details(json!({"app_id": app.id, "container_id": app.container_id}));
    let outcome = lifecycle::act(lc, app, action).await;
    let event = match &outcome {
        Ok(_) => event,
        Err(e) => event.failed(e.to_string()),
    };
    if let Err(e) = lc.deployer.audit.record(actor, event).await {
        tracing::warn!(app = %app.name, error = %e, "could not audit an app action");
    }
    (action, outcome)
}

/// Deletes `app` (its stack volumes with their data only when `delete_data`), audited.
pub async fn delete(
    lc: &Lifecycle,
    app: &AppRow,
    delete_data: bool,
    actor: &Actor,
) -> Result<lifecycle::Deleted, ActionError> {
    let event = Event::new("delete", "application", app.name.clone());
    let outcome = lifecycle::delete(lc, app, delete_data).await;
    let event = match &outcome {
        Ok(deleted) => event.details(json!({
            "app_id": app.id,
            "public_route": app.public_route,
            "domains": app.domains,
            "image_tag": app.image_tag,
            "removed": deleted,
        })),
        Err(e) => event.failed(e.to_string()),
    };
    if let Err(e) = lc.deployer.audit.record(actor, event).await {
        tracing::warn!(app = %app.name, error = %e, "could not audit a delete");
    }
    outcome
}
