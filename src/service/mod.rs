//! Use cases: deploying, updating, rolling back, starting and stopping apps, watching their
//! status, reconciling with the engine at start-up. Handlers call these; these call `store`,
//! `docker` and `archive`, and never know about HTTP.

pub mod access;
pub mod acme;
pub mod alerts;
pub mod apps;
pub mod backup;
pub mod backup_runs;
pub mod compose;
pub mod deploy;
pub mod domains;
pub mod domains_relabel;
pub mod images;
pub mod leftovers;
pub mod lifecycle;
pub mod locks;
pub mod loghub;
pub mod metrics;
pub mod reconcile;
pub mod stats;
pub mod status;
pub mod swarm;
pub mod templates;
pub mod tokens;
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

/// The platform network an app's main container joins: milkcrate's network, or its internal
/// variant ([`crate::docker::closed_network`]) when the app's outbound access is off. Traefik,
/// a container, is only on the open one, so in Traefik mode every app uses that.
pub fn app_network(settings: &crate::config::Settings, outbound: bool) -> String {
    if outbound || !settings.builtin_router {
        settings.network.clone()
    } else {
        crate::docker::closed_network(&settings.network)
    }
}

/// Makes sure the platform network `app` joins exists ([`app_network`]), and returns its name.
/// With the built-in router (which runs on the host) apps on it cannot reach each other;
/// Traefik, a container on that network, needs to reach them, so in Traefik mode the network
/// stays open. Says once when an existing network lets apps reach each other.
pub async fn ensure_platform_network(
    state: &AppState,
    engine: &crate::docker::Engine,
    outbound: bool,
) -> Result<String, crate::docker::EngineError> {
    let isolate = state.settings.builtin_router;
    let name = app_network(&state.settings, outbound);
    let closed = name != state.settings.network;
    let isolated = engine
        .ensure_platform_network(
            &name,
            state
                .settings
                .label_map(crate::domain::labels::MANAGED, "true"),
            isolate,
            closed,
        )
        .await?;
    if isolate && !isolated {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            tracing::warn!(
                network = name,
                "the app network was made without isolation, so apps on it can reach each other; remove it while no app runs (docker network rm) and milkcrate recreates it isolated"
            )
        });
    }
    Ok(name)
}
