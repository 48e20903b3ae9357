//! Start-up reconciliation: what the database says against what the engine has. Deploys that
//! a crash interrupted are marked failed and their leftovers removed; apps whose container
//! vanished show as "Missing" (worked out live by `status`); containers carrying our label but
//! no row are listed on the dashboard, never deleted silently. Volume helpers a crash left
//! behind are removed (they would hold their volume in use).

use crate::app::AppState;
use crate::clock::now_unix;

pub async fn at_start_up(state: &AppState) {
    // Files a killed server or backup left (spooled uploads, build contexts, work folders).
    let (dir, started) = (
        state.settings.data_dir.clone(),
        std::time::SystemTime::now(),
    );
    let _ = tokio::task::spawn_blocking(move || {
        crate::service::leftovers::sweep_at_start_up(&dir, started)
    })
    .await;
    // First, before any request can start a deploy: which deploys did a crash interrupt?
    interrupted_deploys(state).await;
    if let Ok(engine) = state.engine.client().await {
        crate::service::volumes::remove_stale_helpers(state, &engine).await;
    }
}

async fn interrupted_deploys(state: &AppState) {
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
        tracing::warn!(
            deploy = d.id,
            app = d.app_name,
            "a deploy was interrupted; cleaning up after it"
        );
        if let Some(engine) = &engine {
            let label = format!("{}={}", crate::domain::labels::DEPLOY, d.id);
            if let Ok(list) = engine
                .list_labelled(&state.settings.scoped(label), &state.settings.network)
                .await
            {
                for c in list {
                    let _ = engine.remove_container(&c.id).await;
                }
            }
        }
        if d.kind == "create"
            && let Some(app_id) = d.app_id
            && let Ok(Some(app)) = state.store.app(app_id).await
            && app.status == "deploying"
        {
            let _ = state.store.delete_app(app_id).await;
            let _ = tokio::fs::remove_dir_all(crate::service::app_dir(state, &app.name_key)).await;
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
