//! `milkcrate check`: is this machine ready to run milkcrate? One line per check; the exit code
//! is non-zero when any fails. Production readiness only fails with MILKCRATE_ENV=production.

use std::process::ExitCode;

use serde::Serialize;

use crate::config::{INSTANCE_LABEL, ServeArgs, Settings};
use crate::docker::Engine;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    serve: ServeArgs,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Check {
    check: &'static str,
    ok: bool,
    detail: String,
}

pub fn run(args: Args) -> ExitCode {
    let mut checks = Vec::new();
    let mut push = |check, ok, detail: String| checks.push(Check { check, ok, detail });
    let settings = match Settings::from_args(&args.serve) {
        Ok(s) => {
            push(
                "settings",
                true,
                format!("parsed; data folder {}", s.data_dir.display()),
            );
            Some(s)
        }
        Err(e) => {
            push("settings", false, e.to_string());
            None
        }
    };
    if let Some(mut s) = settings {
        // Nothing is created here: a check that made the folder or the database would
        // answer "ok" about an install that is not there.
        let db = s.database_path();
        let has_db = if !s.data_dir.is_dir() {
            push(
                "data folder",
                false,
                format!(
                    "{} does not exist: run `milkcrate setup` to create an install there, or point --data-dir (MILKCRATE_DATA_DIR) at the existing one",
                    s.data_dir.display()
                ),
            );
            false
        } else {
            match write_probe(&s.data_dir) {
                Ok(()) => push(
                    "data folder",
                    true,
                    format!("{} is writable", s.data_dir.display()),
                ),
                Err(e) => push(
                    "data folder",
                    false,
                    format!("{}: {e}", s.data_dir.display()),
                ),
            }
            if db.is_file() {
                push("database", true, format!("{} exists", db.display()));
                true
            } else {
                push(
                    "database",
                    false,
                    format!(
                        "{} does not exist: this folder holds no install. Run `milkcrate setup` to create one, or point --data-dir (MILKCRATE_DATA_DIR) at the existing one",
                        db.display()
                    ),
                );
                false
            }
        };
        // The identity an install without MILKCRATE_INSTANCE gave itself (read, never made).
        let stored_id = if has_db && s.instance().is_none() {
            crate::store::Store::open(&db)
                .ok()
                .and_then(|store| {
                    store
                        .setting_blocking(crate::store::settings::INSTALL_ID)
                        .ok()
                        .flatten()
                })
                .filter(|id| !id.trim().is_empty())
        } else {
            None
        };
        let generated = stored_id.is_some();
        if let Some(id) = &stored_id {
            s.set_instance(id);
        }
        push(
            "identity",
            true,
            match s.extra_labels.iter().find(|(k, _)| k == INSTANCE_LABEL) {
                Some((k, v)) if generated => format!("instance {v} (generated at the first start, kept in the database): this install creates and sees only objects labelled {k}={v}"),
                Some((k, v)) => format!("instance {v}: this install creates and sees only objects labelled {k}={v}"),
                None => "no instance name set and none stored yet: the first `milkcrate serve` gives this install one (an install that already held apps before identities keeps seeing every object labelled milkcrate.managed=true: set MILKCRATE_INSTANCE before another install shares this engine)".into(),
            },
        );
        if has_db {
            let production = s.production;
            s.production = true;
            let _ = s.resolve_secret_key();
            let guard = crate::store::Store::open(&db)
                .map_err(|e| e.to_string())
                .and_then(|store| {
                    crate::auth::Passwords::load(&store, s.admin_password_override.clone())
                        .map_err(|e| e.to_string())
                })
                .and_then(|pw| crate::app::production_guard(&s, &pw).map_err(|e| e.to_string()));
            match (guard, production) {
                (Ok(()), _) => push(
                    "production",
                    true,
                    "ready: secret key and admin password are set".into(),
                ),
                (Err(e), true) => push("production", false, e),
                (Err(e), false) => push(
                    "production",
                    true,
                    format!(
                        "development mode; production would refuse: {}",
                        e.replace('\n', " ")
                    ),
                ),
            }
        }
        push(
            "router",
            true,
            if s.builtin_router {
                "built-in (milkcrate serves apps at their routes)".into()
            } else {
                "traefik (Traefik routes apps from labels)".into()
            },
        );
        if !s.builtin_router {
            // Not a failure (the server runs), but said plainly: apps are not kept apart.
            push(
                "isolation",
                true,
                if s.traefik.join.is_empty() {
                    format!(
                        "WARNING: apps share {} and can reach each other directly; set MILKCRATE_TRAEFIK_CONTAINERS to Traefik's container (and milkcrate's own) to give each app its own network",
                        s.network
                    )
                } else {
                    format!(
                        "each app has its own network, joined by {}",
                        s.traefik.join.join(", ")
                    )
                },
            );
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            match Engine::connect().await {
                Err(e) => push("engine", false, e.to_string()),
                Ok(engine) => {
                    match engine.info().await {
                        Ok(info) => {
                            push(
                                "engine",
                                true,
                                format!("Docker Engine {} reachable", info.version),
                            );
                            push(
                                "api version",
                                true,
                                format!("negotiated {}", info.api_version),
                            );
                        }
                        Err(e) => push("engine", false, e.to_string()),
                    }
                    if let Ok(objects) = engine.managed_objects().await {
                        let ours = s.instance().map(str::to_owned);
                        let foreign: Vec<String> = objects
                            .iter()
                            .filter(|(_, _, inst)| ours.is_some() && *inst != ours)
                            .map(|(kind, name, inst)| {
                                format!(
                                    "{kind} {name} ({})",
                                    inst.as_deref().map_or("no instance".into(), |i| format!("instance {i}"))
                                )
                            })
                            .collect();
                        push(
                            "other installs",
                            true,
                            if foreign.is_empty() {
                                "none: no milkcrate object in this engine belongs to another install".into()
                            } else {
                                format!(
                                    "{} object(s) of other milkcrate installs share this engine (left alone): {}",
                                    foreign.len(),
                                    foreign.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
                                )
                            },
                        );
                    }
                    if engine.network_exists(&s.network).await {
                        push("network", true, format!("{} exists", s.network));
                    } else {
                        push(
                            "network",
                            true,
                            format!(
                                "{} does not exist yet; the first deploy creates it",
                                s.network
                            ),
                        );
                    }
                    let (ok, detail) = host_firewall_line(&s, &engine).await;
                    push("firewall", ok, detail);
                    // Looked at, never made: `serve` sets the parent up at its first
                    // connection (named after the install's identity, when it has one).
                    let (name, slice) = s.build_cgroup_names();
                    match engine.build_pids(&name, &slice, s.build_pids_max(), false).await {
                        Ok(pids) => push("build pids", true, pids.describe()),
                        Err(e) => push("build pids", false, e.to_string()),
                    }
                    if s.orchestrator == crate::config::Orchestrator::Swarm {
                        for (check, ok, detail) in
                            crate::service::swarm::check_lines(&engine, &s.swarm).await
                        {
                            push(check, ok, detail);
                        }
                    }
                }
            }
        });
    }
    let failed = checks.iter().any(|c| !c.ok);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&checks).unwrap_or_default()
        );
    } else {
        for c in &checks {
            println!(
                "{:4} {:12} {}",
                if c.ok { "ok" } else { "FAIL" },
                c.check,
                c.detail
            );
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Whether the host firewall (MILKCRATE_HOST_FIREWALL) is active, on which bridges, or why not.
/// Fails only when it is `on` and cannot be.
async fn host_firewall_line(s: &Settings, engine: &Engine) -> (bool, String) {
    use crate::config::HostFirewall;
    use crate::docker::firewall;
    const OPEN: &str = "apps can open connections to services on this host: bind them to 127.0.0.1";
    if s.host_firewall == HostFirewall::Off {
        return (true, format!("off (MILKCRATE_HOST_FIREWALL=off): {OPEN}"));
    }
    if let Some(why) = firewall::unavailable() {
        return match s.host_firewall {
            HostFirewall::On => (
                false,
                format!("MILKCRATE_HOST_FIREWALL=on, but {why}: serve refuses to start"),
            ),
            _ => (true, format!("not applied: {why}; {OPEN}")),
        };
    }
    if s.host_firewall == HostFirewall::Auto && firewall::in_container() {
        return (
            true,
            format!(
                "not applied: milkcrate runs inside a container (set MILKCRATE_HOST_FIREWALL=on if this container shares the engine's network namespace); {OPEN}"
            ),
        );
    }
    let label = format!("{}=true", crate::domain::labels::MANAGED);
    let mut bridges = Vec::new();
    for n in engine
        .networks_labelled(&s.scoped(label))
        .await
        .unwrap_or_default()
    {
        if let Ok(Some(b)) = engine.bridge_interface(&n).await {
            bridges.push((n, b));
        }
    }
    if bridges.is_empty() {
        return (
            true,
            "ready: no app network yet; each one gets its rule when milkcrate makes it".into(),
        );
    }
    let guarded = match firewall::guarded().await {
        Ok(g) => g,
        Err(e) => {
            return (
                s.host_firewall != HostFirewall::On,
                format!("cannot read the rules: {e}"),
            );
        }
    };
    let (on, off): (Vec<_>, Vec<_>) = bridges.iter().partition(|(_, b)| guarded.contains(b));
    let name = |v: &[&(String, String)]| {
        v.iter()
            .map(|(n, b)| format!("{b} ({n})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut detail = if on.is_empty() {
        String::from("not active yet")
    } else {
        format!(
            "active ({} drops new connections to the host from {})",
            firewall::CHAIN,
            name(&on)
        )
    };
    if !off.is_empty() {
        detail.push_str(&format!(
            "; not yet set for {} (the next start or deploy sets it)",
            name(&off)
        ));
    }
    (true, detail)
}

/// Whether `dir` takes a new file: one is created under a unique name and removed at once.
fn write_probe(dir: &std::path::Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".write-check-{}", crate::secrets::random_token(9)));
    std::fs::write(&probe, b"ok")?;
    std::fs::remove_file(&probe)
}
