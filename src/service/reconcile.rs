//! Start-up reconciliation: what the database says against what the engine has. Deploys that
//! a crash interrupted are marked failed and their leftovers removed; apps whose container
//! vanished show as "Missing" (worked out live by `status`); containers carrying our label but
//! no row are listed on the dashboard, never deleted silently. Volume helpers a crash left
//! behind are removed (they would hold their volume in use). The host firewall's rules are set
//! again for every app network (they do not survive a reboot). It works with the deploy
//! pipeline's handles (`Deployer`: settings, store, engine), since what it finishes or undoes
//! are deploys.

use crate::clock::now_unix;
use crate::domain::state::{AppStatus, DeployStatus};
use crate::service::deploy::Deployer;

pub async fn at_start_up(state: &Deployer) {
    // Files a killed server or backup left (spooled uploads, build contexts, work folders).
    let (dir, started) = (
        state.settings.data_dir.clone(),
        std::time::SystemTime::now(),
    );
    if let Err(e) = tokio::task::spawn_blocking(move || {
        crate::service::leftovers::sweep_at_start_up(&dir, started)
    })
    .await
    {
        tracing::warn!(error = %e, "the sweep of leftover files stopped");
    }
    // First, before any request can start a deploy: which deploys did a crash interrupt?
    interrupted_deploys(state).await;
    // Then apps left "deploying" with no deploy running: none runs yet, and every deploy row
    // is finished now (a crash between the two writes, or an interrupted deploy above).
    stuck_apps(state).await;
    if let Ok(engine) = state.engine.client().await {
        state.volumes().remove_stale_helpers(&engine).await;
        // The host firewall's rules do not survive a reboot of the host.
        crate::service::guard_existing_networks(&state.settings, &engine).await;
    }
}

async fn interrupted_deploys(state: &Deployer) {
    let interrupted = match state.store.fail_interrupted_deploys(now_unix()) {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(error = %e, "could not read interrupted deploys");
            return;
        }
    };
    if interrupted.is_empty() {
        return;
    }
    let engine = state.engine.client().await.ok();
    for d in interrupted {
        let app = match d.app_id {
            Some(id) => state.store.app(id).await.ok().flatten(),
            None => None,
        };
        let Some(engine) = &engine else {
            forget_unfinished_create(state, &d, app.as_ref()).await;
            continue;
        };
        let label = format!("{}={}", crate::domain::labels::DEPLOY, d.id);
        let made = engine
            .list_labelled(&state.settings.scoped(label), &state.settings.network)
            .await
            .unwrap_or_default();
        // The app row already names one of this deploy's containers: traffic was switched
        // before the crash (it was draining the old one). Completing it is right; undoing it
        // would take the app down.
        if let Some(app) = app
            .as_ref()
            .filter(|a| !a.container_id.is_empty() && made.iter().any(|c| c.id == a.container_id))
        {
            tracing::warn!(
                deploy = d.id,
                app = d.app_name,
                "a deploy was interrupted after its switch; completing it"
            );
            complete_switched(state, engine, &d, app, &made).await;
            continue;
        }
        tracing::warn!(
            deploy = d.id,
            app = d.app_name,
            "a deploy was interrupted; cleaning up after it"
        );
        for c in &made {
            if let Err(e) = engine.remove_container(&c.id).await {
                tracing::warn!(container = c.id, error = %e, "could not remove an interrupted deploy's container");
            }
        }
        if let Some(app) = &app {
            remove_unused_images(state, engine, app).await;
        }
        forget_unfinished_create(state, &d, app.as_ref()).await;
    }
}

/// Finishes a deploy that switched traffic before the crash: marks it succeeded and retires
/// the app's other containers (the old version it was draining).
async fn complete_switched(
    state: &Deployer,
    engine: &crate::docker::Engine,
    d: &crate::store::DeployRow,
    app: &crate::store::AppRow,
    made: &[crate::docker::ContainerFacts],
) {
    let label = format!("{}={}", crate::domain::labels::APP, app.name);
    if let Ok(all) = engine
        .list_labelled(&state.settings.scoped(label), &state.settings.network)
        .await
    {
        for old in all.iter().filter(|c| !made.iter().any(|m| m.id == c.id)) {
            // Stopped first, so it ends as gracefully as a deploy would have ended it.
            if let Err(e) = engine.stop(&old.id).await {
                tracing::warn!(container = old.id, error = %e, "could not stop the old container of a completed deploy");
            }
            if let Err(e) = engine.remove_container(&old.id).await {
                tracing::warn!(container = old.id, error = %e, "could not retire the old container of a completed deploy");
            }
        }
    }
    if let Err(e) = state
        .store
        .finish_deploy(
            d.id,
            DeployStatus::Succeeded,
            Some(app.image_tag.clone()),
            None,
            now_unix(),
        )
        .await
    {
        tracing::error!(deploy = d.id, error = %e, "could not record the completed deploy");
    }
    if let Err(e) = state
        .store
        .append_deploy_log(
            d.id,
            "milkcrate stopped after this deploy had switched traffic; it was completed at start-up (the old version was removed).\n".into(),
        )
        .await
    {
        tracing::warn!(deploy = d.id, error = %e, "could not add to a deploy's log");
    }
    if let Err(e) = state.store.set_app_status(app.id, AppStatus::Running).await {
        tracing::error!(app = app.name, error = %e, "could not record the app as running");
    }
}

/// Images of the app that are neither its current nor its previous version: what an
/// interrupted build or update left (the engine keeps any still in use).
async fn remove_unused_images(
    state: &Deployer,
    engine: &crate::docker::Engine,
    app: &crate::store::AppRow,
) {
    let label = format!("{}={}", crate::domain::labels::APP, app.name);
    let Ok(images) = engine.images_labelled(&state.settings.scoped(label)).await else {
        return;
    };
    let keep = [Some(&app.image_tag), app.previous_image_tag.as_ref()];
    for image in images.iter().filter(|i| !keep.contains(&Some(*i))) {
        if app.deployment_type != crate::service::compose::DEPLOYMENT_TYPE
            && let Err(e) = engine.remove_image(image).await
        {
            tracing::warn!(image, error = %e, "could not remove an image an interrupted deploy left");
        }
    }
}

/// A first deploy that never finished: its app row and sources go (its deploy record stays).
async fn forget_unfinished_create(
    state: &Deployer,
    d: &crate::store::DeployRow,
    app: Option<&crate::store::AppRow>,
) {
    if d.kind == "create"
        && let Some(app) = app
        && app.status == AppStatus::Deploying
    {
        forget_app(state, app).await;
    }
}

/// Drops the row and sources of an app whose first deploy never finished.
async fn forget_app(state: &Deployer, app: &crate::store::AppRow) {
    if let Ok(engine) = state.engine.client().await
        && let Err(e) =
            crate::service::remove_edge_networks(&state.settings, &engine, &app.name_key).await
    {
        tracing::warn!(app = app.name, error = %e, "could not remove the network of an unfinished first deploy");
    }
    if let Err(e) = state.store.delete_app(app.id).await {
        tracing::error!(app = app.name, error = %e, "could not remove the row of an unfinished first deploy");
    }
    let dir = crate::service::app_dir(&state.settings, &app.name_key);
    if let Err(e) = tokio::fs::remove_dir_all(&dir).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove the sources of an unfinished first deploy");
    }
}

/// Apps left "deploying" with no deploy running (every deploy row is finished by now): one
/// with a container serves again as "running"; one without any is a first deploy that never
/// finished and goes.
async fn stuck_apps(state: &Deployer) {
    let apps = match state.store.apps().await {
        Ok(apps) => apps,
        Err(e) => {
            tracing::error!(error = %e, "could not read the apps to repair those stuck deploying");
            return;
        }
    };
    for app in apps
        .into_iter()
        .filter(|a| a.status == AppStatus::Deploying)
    {
        if app.container_id.is_empty() {
            tracing::warn!(
                app = app.name,
                "removing an app whose first deploy never finished"
            );
            forget_app(state, &app).await;
        } else if let Err(e) = state.store.set_app_status(app.id, AppStatus::Running).await {
            tracing::error!(app = app.name, error = %e, "could not repair an app stuck deploying");
        }
    }
}

/// Containers with our label whose app has no row: shown, never deleted by milkcrate itself.
pub fn orphans(
    apps: &[crate::store::AppRow],
    snap: &crate::service::status::Snapshot,
) -> Vec<crate::docker::ContainerFacts> {
    snap.containers
        .iter()
        // Volume helpers carry no app label; they live for one operation.
        .filter(|c| c.app.is_some())
        .filter(|c| {
            !apps
                .iter()
                .any(|a| a.container_id == c.id || c.app.as_deref() == Some(a.name.as_str()))
        })
        .cloned()
        .collect()
}
