//! Actions on a deployed app: start, stop, restart, delete, environment variables. Each one
//! works in any state where it makes sense (an app that never answers can still be stopped)
//! and returns a sentence for the admin.

use crate::docker::EngineError;
use crate::domain::state::AppStatus;
use crate::secrets::{decrypt, encrypt};
use crate::service::compose;
use crate::service::deploy::Deployer;
use crate::store::settings::DEFAULT_HOME_ROUTE;
use crate::store::{AppRow, EncryptedVar};

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("{0}")]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Refused(String),
}

/// Starting, stopping, restarting and deleting apps, with only the handles that takes: the
/// deploy pipeline's (the same engine, store, locks and route switch; a delete removes what a
/// deploy made) and the access log (a deleted app's traffic figures go). Built by the
/// composition root (`AppState::lifecycle`, `app.rs`).
#[derive(Clone)]
pub struct Lifecycle {
    pub deployer: Deployer,
    pub access: crate::service::access::AccessLog,
}

/// How long a start, stop or restart may wait on the engine (stops wait for the app's grace
/// period, 10 s by default).
const ACTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
        }
    }
}

pub async fn act(lc: &Lifecycle, app: &AppRow, action: Action) -> Result<String, ActionError> {
    let state = &lc.deployer;
    let _one_at_a_time = state.app_locks.lock(app.id, || {}).await;
    // Read again now that no other action runs: a deploy may have just changed the row.
    let app = &state
        .store
        .app(app.id)
        .await?
        .ok_or_else(|| ActionError::Refused(format!("{} no longer exists.", app.name)))?;
    if app.container_id.is_empty() {
        return Err(ActionError::Refused(format!(
            "{} has no container yet; wait for its deploy to finish.",
            app.name
        )));
    }
    let engine = state.engine.client().await?;
    if action == Action::Stop {
        // Visitors get the "stopped" page from the moment the stop begins, not 502s while
        // the container goes down and until the next status refresh.
        state
            .store
            .set_app_status(app.id, AppStatus::Stopped)
            .await?;
        let _writer = state.routes.write_lock().await;
        state.routes.mark_stopped(&app.name);
    }
    let work = async {
        if crate::service::swarm::enabled(&state.settings) {
            crate::service::swarm::act(state, &engine, app, action).await
        } else if app.deployment_type == compose::DEPLOYMENT_TYPE {
            act_on_stack(state, &engine, app, action).await
        } else {
            match action {
                Action::Start => engine
                    .start(&app.container_id)
                    .await
                    .map(|_| AppStatus::Running),
                Action::Stop => engine
                    .stop(&app.container_id)
                    .await
                    .map(|_| AppStatus::Stopped),
                Action::Restart => engine
                    .restart(&app.container_id)
                    .await
                    .map(|_| AppStatus::Running),
            }
        }
    };
    // A hung engine gets a clear answer in bounded time, not a page that hangs for minutes.
    let result = tokio::time::timeout(ACTION_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            Err(EngineError::Unreachable(format!(
                "no answer within {} s; it may be hung or overloaded",
                ACTION_TIMEOUT.as_secs()
            )))
        });
    if result.is_err() && action == Action::Stop {
        // Not stopped after all: what the admin wanted before stands again.
        let before = if app.status == AppStatus::Stopped {
            AppStatus::Stopped
        } else {
            AppStatus::Running
        };
        state.store.set_app_status(app.id, before).await?;
        state.status.poke();
    }
    let desired = result.map_err(|e| match e {
        EngineError::NotFound(_) => ActionError::Refused(format!(
            "The container of {} is missing; redeploy it.",
            app.name
        )),
        other => ActionError::Engine(other),
    })?;
    state.store.set_app_status(app.id, desired).await?;
    state.status.poke();
    Ok(match action {
        Action::Start => format!("Application {} started", app.name),
        Action::Stop => format!("Application {} stopped", app.name),
        Action::Restart => format!("Application {} restarted", app.name),
    })
}

/// A compose stack acts as one: started dependencies first and the main service last,
/// stopped the other way round.
async fn act_on_stack(
    state: &Deployer,
    engine: &crate::docker::Engine,
    app: &AppRow,
    action: Action,
) -> Result<AppStatus, EngineError> {
    let list = compose::containers(state, engine, app).await?;
    if !list.iter().any(|c| c.id == app.container_id) {
        return Err(EngineError::NotFound(app.container_id.clone()));
    }
    match action {
        Action::Start => {
            for c in &list {
                engine.start(&c.id).await?;
            }
            Ok(AppStatus::Running)
        }
        Action::Stop => {
            for c in list.iter().rev() {
                engine.stop(&c.id).await?;
            }
            Ok(AppStatus::Stopped)
        }
        Action::Restart => {
            for c in list.iter().rev() {
                engine.stop(&c.id).await?;
            }
            for c in &list {
                engine.start(&c.id).await?;
            }
            Ok(AppStatus::Running)
        }
    }
}

/// What a delete removed, for the message and the audit log.
#[derive(Debug, Default, serde::Serialize)]
pub struct Deleted {
    pub containers: usize,
    pub images: usize,
    /// A compose stack's volumes (and with them their data).
    pub volumes: usize,
    pub home_route_reset: bool,
}

/// Removes the app's containers (every one labelled with it), its images, its sources and its
/// row, and resets the home route if it pointed there. Nothing of any other app is touched: all
/// removal goes by this app's label.
pub async fn delete(
    lc: &Lifecycle,
    app: &AppRow,
    delete_data: bool,
) -> Result<Deleted, ActionError> {
    let state = &lc.deployer;
    // A deploy of the app under way stops and undoes itself first; then nothing else runs.
    state.app_locks.cancel(app.id);
    let _one_at_a_time = state.app_locks.lock(app.id, || {}).await;
    let Some(app) = &state.store.app(app.id).await? else {
        // A cancelled first deploy removes its app row itself: nothing is left to delete.
        return Ok(Deleted::default());
    };
    let engine = state.engine.client().await?;
    let label = format!("{}={}", crate::domain::labels::APP, app.name);
    let mut deleted = Deleted::default();
    // A stack's volumes go with it, but data is not thrown away without being asked. (A
    // Dockerfile app has none: no engine call for it.)
    let stack_volumes = if app.deployment_type == compose::DEPLOYMENT_TYPE {
        compose::stack_volumes(state, &engine, app).await?
    } else {
        Vec::new()
    };
    if !delete_data {
        let mut holding = Vec::new();
        for v in &stack_volumes {
            let has_data = state
                .volumes()
                .entries_of(v)
                .await
                .map(|e| !e.is_empty())
                .unwrap_or(true);
            if has_data {
                holding.push(v.as_str());
            }
        }
        if !holding.is_empty() {
            return Err(ActionError::Refused(format!(
                "its stack volumes {} hold data. Tick \"also delete the stack's volumes and their data\" on the app's page to delete them with it",
                holding.join(", ")
            )));
        }
    }
    if crate::service::swarm::enabled(&state.settings) {
        crate::service::swarm::remove_app(state, &engine, app).await?;
    }
    for c in engine
        .list_labelled(
            &state.settings.scoped(label.clone()),
            &state.settings.network,
        )
        .await?
    {
        engine.remove_container(&c.id).await?;
        deleted.containers += 1;
    }
    if !app.container_id.is_empty()
        && engine.remove_container(&app.container_id).await.is_ok()
        && deleted.containers == 0
    {
        deleted.containers += 1;
    }
    let mut images = engine
        .images_labelled(&state.settings.scoped(label.clone()))
        .await?;
    images.extend(
        [Some(app.image_tag.clone()), app.previous_image_tag.clone()]
            .into_iter()
            .flatten()
            .filter(|t| !t.is_empty()),
    );
    images.sort();
    images.dedup();
    for image in images {
        if engine.remove_image(&image).await.is_ok() {
            deleted.images += 1;
        }
    }
    crate::service::remove_edge_networks(&state.settings, &engine, &app.name_key).await?;
    if app.deployment_type == compose::DEPLOYMENT_TYPE {
        compose::remove_stack(state, &engine, app, &stack_volumes).await?;
        deleted.volumes = stack_volumes.len();
    }
    let dir = crate::service::app_dir(&state.settings, &app.name_key);
    if let Err(e) = tokio::fs::remove_dir_all(&dir).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(app = app.name, dir = %dir.display(), error = %e, "could not remove a deleted app's sources");
    }
    let home = state
        .store
        .setting(DEFAULT_HOME_ROUTE)
        .await?
        .unwrap_or_default();
    if !home.is_empty()
        && !app.public_route.is_empty()
        && crate::domain::app::within(&home, &app.public_route)
    {
        state
            .store
            .set_setting(DEFAULT_HOME_ROUTE, String::new())
            .await?;
        deleted.home_route_reset = true;
    }
    state.store.delete_app(app.id).await?;
    state.app_locks.forget(app.id);
    // A new app of the same name starts with no traffic figures (its log file is appended to).
    lc.access.forget(&app.name);
    state.status.poke();
    Ok(deleted)
}

/// Stores the app's variables encrypted, if they are still at `expected` (the version the
/// admin's form was made from): a second save from a stale form gets "changed meanwhile"
/// instead of silently undoing the first.
pub async fn save_env_if(
    state: &Deployer,
    app_id: i64,
    expected: String,
    vars: Vec<(String, String)>,
) -> Result<(), ActionError> {
    let rows = encrypt_env(state, app_id, vars);
    if state.store.set_env_if(app_id, Some(expected), rows).await? {
        Ok(())
    } else {
        Err(ActionError::Refused(
            "The variables were changed meanwhile (in another tab or window). Nothing was saved: the page now shows the current ones; apply your change again.".into(),
        ))
    }
}

/// Stores the app's variables encrypted (key from SECRET_KEY, each bound to its name).
pub async fn save_env(
    state: &Deployer,
    app_id: i64,
    vars: Vec<(String, String)>,
) -> Result<(), ActionError> {
    Ok(state
        .store
        .set_env(app_id, encrypt_env(state, app_id, vars))
        .await?)
}

fn encrypt_env(state: &Deployer, app_id: i64, vars: Vec<(String, String)>) -> Vec<EncryptedVar> {
    vars.into_iter()
        .map(|(key, value)| {
            let (nonce, ciphertext) = encrypt(
                &state.env_key,
                aad(app_id, &key).as_bytes(),
                value.as_bytes(),
            );
            EncryptedVar {
                key,
                nonce,
                ciphertext,
            }
        })
        .collect()
}

/// Why an app's variables cannot be read in plain text.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("the stored value of {0} cannot be decrypted (was SECRET_KEY changed?)")]
    Undecryptable(String),
}

/// The app's variables in plain text, for the container only.
pub async fn decrypted_env(
    state: &Deployer,
    app_id: i64,
) -> Result<Vec<(String, String)>, EnvError> {
    let rows = state.store.env(app_id).await?;
    rows.into_iter()
        .map(|v| {
            decrypt(
                &state.env_key,
                aad(app_id, &v.key).as_bytes(),
                &v.nonce,
                &v.ciphertext,
            )
            .and_then(|p| String::from_utf8(p).ok())
            .map(|value| (v.key.clone(), value))
            .ok_or_else(|| EnvError::Undecryptable(v.key.clone()))
        })
        .collect()
}

fn aad(app_id: i64, key: &str) -> String {
    format!("app:{app_id}:env:{key}")
}
