//! Use cases: deploying, updating, rolling back, starting and stopping apps, watching their
//! status, reconciling with the engine at start-up. Handlers call these; these call `store`,
//! `docker` and `archive`, and never know about HTTP.

pub mod acme;
pub mod compose;
pub mod deploy;
pub mod leftovers;
pub mod lifecycle;
pub mod locks;
pub mod loghub;
pub mod reconcile;
pub mod stats;
pub mod status;
pub mod volumes;

use std::path::PathBuf;

use crate::app::AppState;

/// Where an app's uploaded sources are kept: `<data>/apps/<name key>/`.
pub fn app_dir(state: &AppState, name_key: &str) -> PathBuf {
    state.settings.data_dir.join("apps").join(name_key)
}

/// Uploads land here first, under server-chosen names, until they pass the checks.
pub fn upload_dir(state: &AppState) -> PathBuf {
    state.settings.data_dir.join("uploads")
}

/// Makes sure milkcrate's network exists. With the built-in router (which runs on the host)
/// apps on it cannot reach each other; Traefik, a container on that network, needs to reach
/// them, so in Traefik mode the network stays open. Says once when an existing network lets
/// apps reach each other.
pub async fn ensure_platform_network(
    state: &AppState,
    engine: &crate::docker::Engine,
) -> Result<(), crate::docker::EngineError> {
    let isolate = state.settings.builtin_router;
    let isolated = engine
        .ensure_platform_network(
            &state.settings.network,
            state
                .settings
                .label_map(crate::domain::labels::MANAGED, "true"),
            isolate,
        )
        .await?;
    if isolate && !isolated {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            tracing::warn!(
                network = state.settings.network,
                "the app network was made without isolation, so apps on it can reach each other; remove it while no app runs (docker network rm) and milkcrate recreates it isolated"
            )
        });
    }
    Ok(())
}
