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

/// A state change whose failure cannot be handed on (a compensation while another error is
/// returned, an audit line after the action happened, a clean-up): said in the server log
/// instead of dropped.
pub(crate) fn logged<T, E: std::fmt::Display>(what: &str, result: Result<T, E>) {
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not {what}");
    }
}

/// [`logged`] for an engine removal: something already gone is what was wanted, not news.
pub(crate) fn removed<T>(what: &str, result: Result<T, crate::docker::EngineError>) {
    match result {
        Err(crate::docker::EngineError::NotFound(_)) => {}
        other => logged(what, other),
    }
}

/// Where an app's uploaded sources are kept: `<data>/apps/<name key>/`.
pub fn app_dir(settings: &crate::config::Settings, name_key: &str) -> PathBuf {
    settings.data_dir.join("apps").join(name_key)
}

/// Uploads land here first, under server-chosen names, until they pass the checks.
pub fn upload_dir(settings: &crate::config::Settings) -> PathBuf {
    settings.data_dir.join("uploads")
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

/// Traefik's labels for `app` listening on `port`: its routers and service, and the network
/// Traefik reaches it over (the app's own network, or in swarm mode its routed overlay, named
/// for the swarm provider too: `traefik.swarm.network`).
pub fn traefik_labels(
    settings: &crate::config::Settings,
    app: &crate::store::AppRow,
    port: u16,
) -> std::collections::BTreeMap<String, String> {
    let swarm = swarm::enabled(settings);
    let network = if swarm {
        swarm::overlay_for(settings, &app.name_key, app.outbound)
    } else {
        app_network(settings, &app.name_key, app.outbound)
    };
    let mut labels = crate::domain::labels::traefik(
        &app.name_key,
        &app.public_route,
        &crate::router::app_hosts(app, settings),
        port,
        &network,
        &settings.traefik,
    );
    if swarm {
        labels.insert("traefik.swarm.network".into(), network);
    }
    labels
}

/// Makes sure the network the app `key` joins exists ([`app_network`]), and returns its name.
/// With the built-in router (which runs on the host) apps on it cannot reach each other.
/// In Traefik mode, Traefik (a container) must reach them: the app's own network is joined by
/// the containers of `MILKCRATE_TRAEFIK_CONTAINERS`; without it the shared network stays open.
/// Says once when an existing network lets apps reach each other.
pub async fn ensure_platform_network(
    settings: &crate::config::Settings,
    engine: &crate::docker::Engine,
    app_name: &str,
    key: &str,
    outbound: bool,
) -> Result<String, crate::docker::EngineError> {
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
        guard_host(settings, engine, &name).await?;
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
    guard_host(settings, engine, &name).await?;
    Ok(name)
}

/// Removes the app's own networks in Traefik mode (see [`app_network`]): the containers of
/// `MILKCRATE_TRAEFIK_CONTAINERS` leave them first. A deleted app, or a failed first deploy.
pub async fn remove_edge_networks(
    settings: &crate::config::Settings,
    engine: &crate::docker::Engine,
    key: &str,
) -> Result<(), crate::docker::EngineError> {
    if settings.builtin_router || settings.traefik.join.is_empty() {
        return Ok(());
    }
    for outbound in [true, false] {
        let name = app_network(settings, key, outbound);
        for c in &settings.traefik.join {
            engine.leave_network(&name, c).await?;
        }
        remove_network(settings, engine, &name).await?;
    }
    Ok(())
}

/// Says once (per process) why the host firewall is not applied in `auto` mode.
fn firewall_skipped(why: &str) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        tracing::warn!(
            "the host firewall is not applied ({why}): apps can open connections to services on this host. Bind host services to 127.0.0.1, or run milkcrate as root (or with CAP_NET_ADMIN) with iptables installed (MILKCRATE_HOST_FIREWALL)"
        )
    });
}

/// Whether to set the host firewall here, per MILKCRATE_HOST_FIREWALL: `Ok(true)` apply,
/// `Ok(false)` leave it (off, or `auto` where it cannot: said once), `Err` with the reason when
/// `on` cannot.
fn firewall_wanted(settings: &crate::config::Settings) -> Result<bool, String> {
    use crate::config::HostFirewall;
    use crate::docker::firewall;
    match settings.host_firewall {
        HostFirewall::Off => Ok(false),
        HostFirewall::Auto => {
            if let Some(why) = firewall::unavailable() {
                firewall_skipped(&why);
                Ok(false)
            } else if firewall::in_container() {
                firewall_skipped("milkcrate runs inside a container");
                Ok(false)
            } else {
                Ok(true)
            }
        }
        HostFirewall::On => {
            if let Some(why) = firewall::unavailable() {
                return Err(why);
            }
            if firewall::in_container() {
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    tracing::warn!(
                        "milkcrate seems to run inside a container (/.dockerenv): the host firewall rules go into this container's network namespace, which guards the host only when the engine's bridges are in it too"
                    )
                });
            }
            Ok(true)
        }
    }
}

/// Keeps the containers on `network` from opening connections to the host
/// ([`crate::docker::firewall`]), as MILKCRATE_HOST_FIREWALL says. With `on` a failure is an
/// error naming the network; with `auto` it is logged once and the deploy goes on.
pub async fn guard_host(
    settings: &crate::config::Settings,
    engine: &crate::docker::Engine,
    network: &str,
) -> Result<(), crate::docker::EngineError> {
    let strict = settings.host_firewall == crate::config::HostFirewall::On;
    let refused = |why: String| {
        crate::docker::EngineError::Refused(format!(
            "The host firewall could not be set for network {network}: {why}. MILKCRATE_HOST_FIREWALL=on requires it (set it to auto or off to deploy without it)."
        ))
    };
    let wanted = match firewall_wanted(settings) {
        Ok(w) => w,
        Err(why) if strict => return Err(refused(why)),
        Err(_) => false,
    };
    if !wanted {
        return Ok(());
    }
    let Some(bridge) = engine.bridge_interface(network).await? else {
        return Ok(());
    };
    match crate::docker::firewall::guard(&bridge).await {
        Ok(()) => Ok(()),
        Err(e) if strict => Err(refused(e)),
        Err(e) => {
            firewall_skipped(&e);
            Ok(())
        }
    }
}

/// The bridge through which Swarm tasks on a node reach outside their overlays (and the node
/// itself): Swarm makes it, always under this interface name, with the node's first task.
pub const SWARM_GATEWAY_BRIDGE: &str = "docker_gwbridge";

/// Swarm mode: tasks reach the host through the node's `docker_gwbridge`, not through a
/// bridge of milkcrate's, so that interface gets the same rule, by name (a rule may name an
/// interface before Swarm makes it: the first task is then guarded from its start). It guards
/// every swarm task on this node, other installs' too, as docs/production.md says.
pub async fn guard_swarm_gateway(
    settings: &crate::config::Settings,
) -> Result<(), crate::docker::EngineError> {
    if settings.orchestrator != crate::config::Orchestrator::Swarm {
        return Ok(());
    }
    let strict = settings.host_firewall == crate::config::HostFirewall::On;
    let refused = |why: String| {
        crate::docker::EngineError::Refused(format!(
            "The host firewall could not be set for Swarm's {SWARM_GATEWAY_BRIDGE}: {why}. MILKCRATE_HOST_FIREWALL=on requires it (set it to auto or off to deploy without it)."
        ))
    };
    match firewall_wanted(settings) {
        Ok(false) => Ok(()),
        Err(why) if strict => Err(refused(why)),
        Err(_) => Ok(()),
        Ok(true) => match crate::docker::firewall::guard(SWARM_GATEWAY_BRIDGE).await {
            Ok(()) => Ok(()),
            Err(e) if strict => Err(refused(e)),
            Err(e) => {
                firewall_skipped(&e);
                Ok(())
            }
        },
    }
}

/// Removes network `network`, then its host firewall rule (named before, while the network
/// still exists; kept when the removal fails, as the network then still is). Never touches
/// iptables with `off`; a failure to remove the rule is logged: a rule left for a bridge that no
/// longer exists matches nothing, and the next start drops it.
pub async fn remove_network(
    settings: &crate::config::Settings,
    engine: &crate::docker::Engine,
    network: &str,
) -> Result<(), crate::docker::EngineError> {
    use crate::config::HostFirewall;
    use crate::docker::firewall;
    let never_set = match settings.host_firewall {
        HostFirewall::Off => true,
        HostFirewall::Auto => firewall::in_container(),
        HostFirewall::On => false,
    };
    let bridge = if never_set || firewall::unavailable().is_some() {
        None
    } else {
        engine.bridge_interface(network).await.ok().flatten()
    };
    engine.remove_network(network).await?;
    if let Some(bridge) = bridge
        && let Err(e) = firewall::release(&bridge).await
    {
        tracing::warn!(network, bridge, error = %e, "could not remove the host firewall rule");
    }
    Ok(())
}

/// At start-up: the rules do not survive a reboot of the host, so every bridge network of this
/// install gets its rule again; rules of bridges that are gone are removed.
pub async fn guard_existing_networks(
    settings: &crate::config::Settings,
    engine: &crate::docker::Engine,
) {
    if settings.host_firewall == crate::config::HostFirewall::Off {
        return;
    }
    let label = format!("{}=true", crate::domain::labels::MANAGED);
    let networks = match engine.networks_labelled(&settings.scoped(label)).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "could not list the networks to guard the host from");
            return;
        }
    };
    for network in networks {
        if let Err(e) = guard_host(settings, engine, &network).await {
            tracing::error!(network, error = %e, "the host firewall is not set for this network");
        }
    }
    if firewall_wanted(settings) == Ok(true) {
        match crate::docker::firewall::prune_gone().await {
            Ok(gone) if !gone.is_empty() => tracing::info!(
                bridges = gone.join(", "),
                "removed the host firewall rules of bridges that no longer exist"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not tidy the host firewall rules"),
        }
    }
    // After the tidy, which drops the rule while Swarm has not made the bridge yet.
    if let Err(e) = guard_swarm_gateway(settings).await {
        tracing::error!(error = %e, "the host firewall is not set for Swarm's tasks");
    }
}
