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

/// Whether apps are kept from reaching each other: always with the built-in router, in Traefik
/// mode only when each app has its own network (`MILKCRATE_TRAEFIK_CONTAINERS`).
pub fn apps_isolated(settings: &crate::config::Settings) -> bool {
    settings.builtin_router || !settings.traefik.join.is_empty()
}

/// The network an app's main container joins: milkcrate's network, or its internal variant
/// ([`crate::docker::closed_network`]) when the app's outbound access is off. In Traefik mode
/// with `MILKCRATE_TRAEFIK_CONTAINERS` set, the app's own network (`<app>-edge`, or the internal
/// `<app>-closed-edge` when its outbound access is off), which only it and those containers join; without that
/// setting, Traefik's one open network, shared by every app.
pub fn app_network(settings: &crate::config::Settings, key: &str, outbound: bool) -> String {
    if !settings.builtin_router {
        if settings.traefik.join.is_empty() {
            return settings.network.clone();
        }
        let closed = if outbound { "" } else { "-closed" };
        return settings.object_name(&format!("{key}{closed}{}", crate::docker::EDGE_SUFFIX));
    }
    if outbound {
        settings.network.clone()
    } else {
        crate::docker::closed_network(&settings.network)
    }
}

/// Makes sure the network the app `key` joins exists ([`app_network`]), and returns its name.
/// With the built-in router (which runs on the host) apps on it cannot reach each other.
/// In Traefik mode, Traefik (a container) must reach them: the app's own network is joined by
/// the containers of `MILKCRATE_TRAEFIK_CONTAINERS`; without it the shared network stays open.
/// Says once when an existing network lets apps reach each other.
pub async fn ensure_platform_network(
    state: &AppState,
    engine: &crate::docker::Engine,
    app_name: &str,
    key: &str,
    outbound: bool,
) -> Result<String, crate::docker::EngineError> {
    let settings = &state.settings;
    let name = app_network(settings, key, outbound);
    if !settings.builtin_router && !settings.traefik.join.is_empty() {
        let mut labels = settings.label_map(crate::domain::labels::MANAGED, "true");
        labels.insert(crate::domain::labels::APP.into(), app_name.to_string());
        engine.ensure_network(&name, labels, !outbound).await?;
        for c in &settings.traefik.join {
            engine.join_network(&name, c).await.map_err(|e| {
                crate::docker::EngineError::Refused(format!(
                    "the container {c} (MILKCRATE_TRAEFIK_CONTAINERS) could not join the app's network {name}: {e}"
                ))
            })?;
        }
        return Ok(name);
    }
    let isolate = settings.builtin_router;
    let closed = name != settings.network;
    let isolated = engine
        .ensure_platform_network(
            &name,
            settings.label_map(crate::domain::labels::MANAGED, "true"),
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

/// Removes the app's own networks in Traefik mode (see [`app_network`]): the containers of
/// `MILKCRATE_TRAEFIK_CONTAINERS` leave them first. A deleted app, or a failed first deploy.
pub async fn remove_edge_networks(
    state: &AppState,
    engine: &crate::docker::Engine,
    key: &str,
) -> Result<(), crate::docker::EngineError> {
    let settings = &state.settings;
    if settings.builtin_router || settings.traefik.join.is_empty() {
        return Ok(());
    }
    for outbound in [true, false] {
        let name = app_network(settings, key, outbound);
        for c in &settings.traefik.join {
            engine.leave_network(&name, c).await?;
        }
        engine.remove_network(&name).await?;
    }
    Ok(())
}
