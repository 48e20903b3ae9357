//! Compose stacks, run by milkcrate itself through the Engine API (no compose binary).
//!
//! A deploy builds every service's image while the old stack serves, then replaces the
//! services in dependency order on the app's private network `milkcrate-<key>-net`: each old
//! container is stopped, its replacement started and waited for (healthy when another service
//! waits for that). The main service's new container also joins the platform's network; once
//! it is up, traffic switches to it and the old containers go. If anything fails, the new
//! containers are removed and the stopped old ones started again: the old stack serves.
//!
//! Every container goes through the same hardened `ContainerSpec` as Dockerfile apps; stack
//! volumes are named `milkcrate-<key>-<volume>` so two apps never share one.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::deploy::Deployer;
use crate::archive::{self, BuildTarget, CheckedZip, ZipAppFiles};
use crate::docker::Engine;
use crate::domain::compose::{self, ImageSource, MountSource, ServicePlan, StackPlan};
use crate::domain::hardening::{ContainerSpec, Limits, Process, VolumeMount};
use crate::domain::labels;
use crate::domain::volume::Mounts;
use crate::store::AppRow;

use super::deploy::{
    Created, DeployError, DeployKind, DeployRequest, Prune, Ready, build, check_mounts, image_tag,
    last_lines, log, mounts_of, set_step, wait_until_up,
};

/// The `deployment_type` of compose apps (stored as the original's `docker-compose`).
pub const DEPLOYMENT_TYPE: crate::domain::state::DeploymentType =
    crate::domain::state::DeploymentType::Compose;

/// The app's private network, which every service of its stack joins. With outbound access
/// off it is its internal variant, which reaches nothing outside the stack.
pub fn network_name(settings: &crate::config::Settings, app_key: &str, outbound: bool) -> String {
    let open = settings.object_name(&format!("{app_key}-net"));
    if outbound {
        open
    } else {
        crate::docker::closed_network(&open)
    }
}

/// The Docker volume behind stack volume `name` of app `app_key`: named for this install.
pub fn volume_name(settings: &crate::config::Settings, app_key: &str, name: &str) -> String {
    settings.object_name(&format!("{app_key}-{name}"))
}

/// The name stack volumes had before installs named their objects; a volume of this name
/// that carries this install's and this app's labels is still used, so no data is orphaned
/// by an upgrade.
fn legacy_volume_name(app_key: &str, name: &str) -> String {
    format!("milkcrate-{app_key}-{name}")
}

/// Whether a volume's labels say it is stack volume `name` of `app` in this install.
fn is_our_stack_volume(
    settings: &crate::config::Settings,
    found: &std::collections::HashMap<String, String>,
    app: &str,
    name: &str,
) -> bool {
    let ours = |k: &str, v: &str| found.get(k).map(String::as_str) == Some(v);
    ours(labels::APP, app)
        && ours(labels::STACK_VOLUME, name)
        && match settings.instance() {
            Some(i) => ours(crate::config::INSTANCE_LABEL, i),
            None => ours(labels::MANAGED, "true"),
        }
}

/// The compose project name the usual tools see.
pub fn project_name(app_key: &str) -> String {
    format!("milkcrate-{app_key}")
}

/// Reads and checks the compose file of a checked ZIP; the refusal says why.
/// Why a compose file could not be turned into a plan: the store or a blocking task failed, or
/// the file itself is refused (said as it is).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("{0}")]
    Refused(String),
}

#[allow(clippy::too_many_arguments)]
pub async fn load_plan(
    state: &Deployer,
    zip: &Path,
    checked: &CheckedZip,
    file: &str,
    defaults: Limits,
    port_override: Option<u16>,
    vars: Vec<(String, String)>,
    assigned: &Mounts,
) -> Result<StackPlan, PlanError> {
    let milkcrate_volumes: Vec<String> = state.store.volume_docker_names().await?;
    let assigned_volumes: Vec<String> = assigned.mounts().into_iter().map(|m| m.volume).collect();
    let max = state.settings.max_limits;
    let (zip, checked, file) = (zip.to_path_buf(), checked.clone(), file.to_string());
    let plan = tokio::task::spawn_blocking(move || {
        let text = archive::read_app_file(&zip, &checked, &file, 1024 * 1024)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{file} file not found"))?;
        let text = String::from_utf8(text).map_err(|_| format!("{file} is not UTF-8 text"))?;
        let files = ZipAppFiles::open(&zip, &checked).map_err(|e| e.to_string())?;
        let cx = compose::Context {
            defaults,
            max,
            port_override,
            milkcrate_volumes: &milkcrate_volumes,
            assigned_volumes: &assigned_volumes,
            vars: &vars,
        };
        compose::plan(&text, &files, cx).map_err(|e| format!("Invalid {file}: {e}"))
    })
    .await?
    .map_err(PlanError::Refused)?;
    // The images the engine has are looked at now too, so an upload naming another app's
    // image is refused at once; the deploy looks again (and needs the engine).
    if let Ok(engine) = state.engine.client().await {
        for s in &plan.services {
            if let ImageSource::Image(image) = &s.source {
                // One the engine lacks is pulled by the deploy (or refused there: `never`).
                vet_image(&engine, &s.name, image, true)
                    .await
                    .map_err(PlanError::Refused)?;
            }
        }
    }
    Ok(plan)
}

/// Refuses a build whose Dockerfile starts from (or copies out of) an image that is not its
/// to read: milkcrate's own images by name (another app's build, the helper), ids and image
/// ids reached through a short name (the engine looks a name up as an id prefix too, so
/// `FROM 3f` could reach any image). Bases the engine does not have are left to the build.
/// Also answers whether any step of the build may need the network
/// ([`compose::dockerfile_needs_network`]).
pub(super) async fn vet_build_bases(
    engine: &Engine,
    zip: &Path,
    checked: &CheckedZip,
    target: &BuildTarget<'_>,
) -> Result<bool, DeployError> {
    let path = if target.context.is_empty() {
        target.dockerfile.to_string()
    } else {
        format!("{}/{}", target.context, target.dockerfile)
    };
    let (zip, checked, file) = (zip.to_path_buf(), checked.clone(), path.clone());
    let text = tokio::task::spawn_blocking(move || {
        archive::read_app_file(&zip, &checked, &file, 1024 * 1024)
    })
    .await??
    .ok_or_else(|| DeployError::Build(format!("the ZIP has no {path}")))?;
    let text = String::from_utf8_lossy(&text);
    let refuse = |why: String| DeployError::Build(format!("{path}: {why}"));
    for image in compose::dockerfile_bases(&text).map_err(refuse)? {
        // A digest pins a pulled image exactly; only its name needs checking.
        let name = image.split('@').next().unwrap_or_default();
        let tagged = compose::image_reference(name).map_err(|e| refuse(format!("FROM {e}")))?;
        let Ok(facts) = engine.image_facts(&image).await else {
            continue;
        };
        if !image.contains('@') && !facts.repo_tags.contains(&tagged) {
            return Err(refuse(format!(
                "'{image}' is not the name of an image in the engine (the engine matched it to another image by its id); give the base image's name and tag"
            )));
        }
        // Whatever its name (a registry's copy, a digest), an image milkcrate made is another
        // app's build or milkcrate's own: its files and baked-in settings are not this app's.
        if let Some(label) = facts.labels.keys().find(|k| k.starts_with("milkcrate.")) {
            return Err(refuse(format!(
                "'{image}' was made by milkcrate (it carries the label {label}), so it belongs to another app or to milkcrate itself; build from a base image of your own"
            )));
        }
    }
    Ok(compose::dockerfile_needs_network(&text))
}

/// Refuses an `image:` that is milkcrate's (it carries a `milkcrate.*` label: another app's
/// build, another install's, the volume helper) or that the engine found by id rather than by
/// the name given. The name itself was checked by [`compose::image_reference`].
async fn vet_image(
    engine: &Engine,
    service: &str,
    image: &str,
    missing_ok: bool,
) -> Result<(), String> {
    let facts = match engine.image_facts(image).await {
        Ok(f) => f,
        Err(crate::docker::EngineError::NotFound(_)) if missing_ok => return Ok(()),
        Err(crate::docker::EngineError::NotFound(_)) => {
            return Err(format!(
                "service {service}: the image {image} is not in the engine"
            ));
        }
        Err(e) => return Err(format!("service {service}: {e}")),
    };
    if let Some(label) = facts.labels.keys().find(|k| k.starts_with("milkcrate.")) {
        return Err(format!(
            "service {service}: the image {image} was made by milkcrate (it carries the label {label}), so it belongs to another app or to milkcrate itself; build the service from its Dockerfile instead"
        ));
    }
    if image.contains('@') {
        // Pinned by digest: it must be one of the image's repo digests.
        let digests = engine
            .repo_digests(image)
            .await
            .map_err(|e| e.to_string())?;
        if !digests.iter().any(|d| d == image) {
            return Err(format!(
                "service {service}: no image in the engine has the digest {image}"
            ));
        }
        return Ok(());
    }
    if !facts.repo_tags.iter().any(|t| t == image) {
        return Err(format!(
            "service {service}: no image is named {image} (the engine matched it to another image by its id); give the image's name and tag"
        ));
    }
    Ok(())
}

/// The ZIP a compose deploy runs from: the upload, the previous sources (rollback) or the
/// current ones (redeploy with new settings).
pub(super) async fn source_of(
    state: &Deployer,
    req: &DeployRequest,
    app: &AppRow,
) -> Result<(PathBuf, CheckedZip), DeployError> {
    if let Some((zip, checked)) = &req.source {
        return Ok((zip.clone(), checked.clone()));
    }
    let current = app.source_zip.clone().map(PathBuf::from);
    let zip = match req.kind {
        DeployKind::Rollback => {
            let dir = super::app_dir(&state.settings, &app.name_key);
            let mut found = None;
            if let Ok(mut entries) = tokio::fs::read_dir(&dir).await {
                while let Ok(Some(e)) = entries.next_entry().await {
                    if Some(e.path()) != current && e.path().extension().is_some_and(|x| x == "zip")
                    {
                        found = Some(e.path());
                    }
                }
            }
            found.ok_or_else(|| {
                DeployError::Other("the previous version's sources are no longer kept".into())
            })?
        }
        _ => current.ok_or_else(|| DeployError::Other("the app's sources are missing".into()))?,
    };
    let (z, limits) = (zip.clone(), state.settings.zip_limits);
    let checked = tokio::task::spawn_blocking(move || archive::check_zip(&z, &limits)).await??;
    Ok((zip, checked))
}

/// A stack's part of the pipeline: every image, the networks and volumes, then the services
/// replaced in dependency order (old ones stopped as their replacements start) up to a ready
/// main service. The switch and the retiring of the old stack are the pipeline's.
pub(super) async fn prepare(
    state: &Deployer,
    req: &DeployRequest,
    app: &AppRow,
    created: &mut Created,
) -> Result<Ready, DeployError> {
    let engine = state.engine.client().await?;
    let deploy_id = req.deploy_id;
    let (zip, checked) = source_of(state, req, app).await?;
    let archive::AppKind::Compose(file) = &checked.kind else {
        return Err(DeployError::Other(
            "this app was deployed from a compose file; its new ZIP must hold one too".into(),
        ));
    };
    let defaults = Limits {
        memory_mb: app.memory_mb,
        cpu_percent: app.cpu_percent,
    };
    let env = super::lifecycle::decrypted_env(state, app.id).await?;
    let admin_mounts = mounts_of(req, app);
    let plan = load_plan(
        state,
        &zip,
        &checked,
        file,
        defaults,
        app.port_override,
        env.clone(),
        &admin_mounts,
    )
    .await?;
    let names: Vec<&str> = plan.services.iter().map(|s| s.name.as_str()).collect();
    log(
        state,
        deploy_id,
        format!(
            "Stack from {file}: {} (main service {}, port {})\n",
            names.join(", "),
            plan.main,
            plan.port
        ),
    )
    .await;

    // 1. Images, all of them before anything running is touched: pulled as the service's
    // (else the app's) pull policy says, built from their Dockerfiles.
    let options = super::images::options(state, app.id).await;
    let app_policy = super::images::policy_of(&options);
    let images = resolve_images(
        state, &engine, deploy_id, app, &zip, &checked, &plan, app_policy, created,
    )
    .await?;

    // 2. The private network, the platform's network and the stack's volumes.
    let (net, stack_names) = stack_storage(state, &engine, deploy_id, app, &plan).await?;
    check_mounts(&engine, &admin_mounts).await?;

    // Who each service runs as (said in the log), and its writable volumes' top folders
    // handed to that user so it can write them.
    let users = service_users(
        state,
        &engine,
        deploy_id,
        &plan,
        &images,
        &stack_names,
        &admin_mounts,
        options.image_user,
    )
    .await?;
    // 3. Replace the services in dependency order.
    set_step(
        state,
        deploy_id,
        crate::domain::state::DeployStatus::Starting,
    )
    .await;
    let app_label = format!("{}={}", labels::APP, app.name);
    let old: Vec<crate::docker::ContainerFacts> = engine
        .list_labelled(&state.settings.scoped(app_label), &state.settings.network)
        .await?;
    let mut main: Option<(String, std::net::SocketAddr)> = None;
    // The other services' new containers, by service.
    let mut started: Vec<(String, String)> = Vec::new();
    for s in &plan.services {
        let is_main = s.name == plan.main;
        if !is_main {
            let old_ones = old.iter().filter(|c| c.service.as_deref() == Some(&s.name));
            for id in old_ones.map(|c| c.id.clone()) {
                log(
                    state,
                    deploy_id,
                    format!("[{}] Stopping the old container\n", s.name),
                )
                .await;
                engine.stop(&id).await?;
                created.stopped.push(id);
            }
        }
        let mut s = s.clone();
        s.user = users.get(&s.name).copied();
        let s = &s;
        let spec = service_spec(
            state,
            app,
            &plan,
            s,
            &images[&s.name],
            deploy_id,
            &net,
            &env,
            &admin_mounts,
            &stack_names,
            &crate::service::app_network(&state.settings, &app.name_key, app.outbound),
        );
        let described: Vec<String> = spec
            .volume_mounts()
            .iter()
            .map(|m| format!("{} at {}", m.volume, m.target))
            .collect();
        log(
            state,
            deploy_id,
            format!(
                "[{}] Starting {} ({} MiB, {}% CPU{}{})\n",
                s.name,
                spec.name(),
                s.limits.memory_mb,
                s.limits.cpu_percent,
                if described.is_empty() {
                    ""
                } else {
                    "; volumes "
                },
                described.join(", ")
            ),
        )
        .await;
        let id = engine.create_container(&spec).await?;
        if is_main {
            created.container = Some(id.clone());
        } else {
            created.containers.push(id.clone());
            started.push((s.name.clone(), id.clone()));
        }
        engine.start(&id).await?;
        if is_main {
            let has_health = match &s.health {
                Some(h) => h.test.first().map(String::as_str) != Some("NONE"),
                None => engine.image_facts(&images[&s.name]).await?.has_healthcheck,
            };
            let addr = wait_until_up(state, &engine, deploy_id, &id, has_health, plan.port)
                .await
                .map_err(|e| match e {
                    DeployError::Start(m) => DeployError::Start(format!("service {}: {m}", s.name)),
                    other => other,
                })?;
            main = Some((id, addr));
        } else {
            let awaited = plan.services.iter().any(|o| {
                o.depends_on
                    .iter()
                    .any(|(d, healthy)| *d == s.name && *healthy)
            });
            wait_service(state, &engine, deploy_id, &id, &s.name, awaited).await?;
        }
    }
    let (main_id, addr) = main.expect("the main service is in the plan");
    let main_image = images[&plan.main].clone();
    // Every service must still run once the main one is up: one that died meanwhile fails the
    // deploy before any traffic reaches the new stack.
    for (name, id) in &started {
        let st = engine.inspect(id, &state.settings.network).await?;
        if !st.running || st.restarting {
            return Err(stopped(&engine, id, name, st.exit_code).await);
        }
    }

    // 4. Ready: the pipeline switches traffic, then retires the old stack. Images of this
    // deploy and of the one before stay (for rollback); older ones go.
    let previous = match req.kind {
        DeployKind::Create => None,
        _ => Some(app.image_tag.clone()).filter(|t| !t.is_empty() && *t != main_image),
    };
    let keep_images: Vec<String> = images
        .values()
        .cloned()
        .chain(old.iter().map(|c| c.image.clone()))
        .collect();
    let source = match (&req.source, req.kind) {
        (Some((zip, _)), _) => Some(zip.clone()),
        (None, DeployKind::Rollback) => Some(zip),
        _ => None,
    };
    Ok(Ready {
        container: main_id,
        addr,
        image: main_image,
        previous,
        port: plan.port,
        retire: old
            .iter()
            .map(|c| (c.id.clone(), format!("the old container {}", c.name)))
            .collect(),
        prune: Prune::AllBut(keep_images),
        source,
        compose: Some((file.clone(), plan.main.clone())),
        services: Some(plan.services.len()),
    })
}

/// Every service's image, before anything running is touched: pulled as the service's (else
/// the app's) pull policy says, or built from its Dockerfile. By service name.
#[allow(clippy::too_many_arguments)]
pub(super) async fn resolve_images(
    state: &Deployer,
    engine: &Engine,
    deploy_id: i64,
    app: &AppRow,
    zip: &Path,
    checked: &CheckedZip,
    plan: &StackPlan,
    app_policy: crate::domain::image::PullPolicy,
    created: &mut Created,
) -> Result<BTreeMap<String, String>, DeployError> {
    let mut images: BTreeMap<String, String> = BTreeMap::new();
    for s in &plan.services {
        match &s.source {
            ImageSource::Image(image) => {
                let policy = s.pull.unwrap_or(app_policy);
                super::images::ensure_image(state, engine, deploy_id, &s.name, image, policy)
                    .await?;
                vet_image(engine, &s.name, image, false)
                    .await
                    .map_err(DeployError::Other)?;
                images.insert(s.name.clone(), image.clone());
            }
            ImageSource::Build {
                context,
                dockerfile,
            } => {
                let base = image_tag(
                    &state.settings,
                    &format!("{}-{}", app.name, s.name),
                    deploy_id,
                );
                log(state, deploy_id, format!("[{}] Building {base}\n", s.name)).await;
                let target = BuildTarget {
                    context,
                    dockerfile,
                };
                let extra = [(labels::SERVICE.to_string(), s.name.clone())];
                created.images.push(base.clone());
                build(
                    state,
                    engine,
                    deploy_id,
                    app,
                    zip,
                    checked,
                    target,
                    &extra,
                    &base,
                    &mut created.layers,
                )
                .await
                .map_err(|e| match e {
                    DeployError::Build(m) => DeployError::Build(format!("service {}: {m}", s.name)),
                    other => other,
                })?;
                images.insert(s.name.clone(), base);
            }
        }
    }

    Ok(images)
}

/// The stack's private network, the platform's network and the stack's volumes (created, or
/// an older name of this install's adopted). Returns the network and the Docker volume of
/// each stack volume.
async fn stack_storage(
    state: &Deployer,
    engine: &Engine,
    deploy_id: i64,
    app: &AppRow,
    plan: &StackPlan,
) -> Result<(String, HashMap<String, String>), DeployError> {
    let net = network_name(&state.settings, &app.name_key, app.outbound);
    let mut app_labels = state.settings.label_map(labels::MANAGED, "true");
    app_labels.insert(labels::APP.into(), app.name.clone());
    engine
        .ensure_network(&net, app_labels, !app.outbound)
        .await?;
    crate::service::guard_host(&state.settings, engine, &net).await?;
    crate::service::ensure_platform_network(
        &state.settings,
        engine,
        &app.name,
        &app.name_key,
        app.outbound,
    )
    .await?;
    if !app.outbound {
        log(
            state,
            deploy_id,
            "Outbound access is off: the stack's services join internal networks and reach nothing outside them.\n".into(),
        )
        .await;
    }
    let stack_names = ensure_volumes(state, engine, deploy_id, app, plan).await?;
    Ok((net, stack_names))
}

/// The stack's volumes, created or (an older name of this install's) adopted: the Docker
/// volume of each stack volume.
pub(super) async fn ensure_volumes(
    state: &Deployer,
    engine: &Engine,
    deploy_id: i64,
    app: &AppRow,
    plan: &StackPlan,
) -> Result<HashMap<String, String>, DeployError> {
    let mut app_labels = state.settings.label_map(labels::MANAGED, "true");
    app_labels.insert(labels::APP.into(), app.name.clone());
    let mut stack_names: HashMap<String, String> = HashMap::new();
    for v in &plan.volumes {
        let mut docker_name = volume_name(&state.settings, &app.name_key, v);
        match engine.volume_labels(&docker_name).await? {
            Some(found) if !is_our_stack_volume(&state.settings, &found, &app.name, v) => {
                // Never adopt what another install or app made: its data is not ours.
                return Err(DeployError::Other(format!(
                    "a Docker volume named {docker_name} already exists and does not belong to {}'s stack in this install; remove or rename it, or rename the volume in the compose file",
                    app.name
                )));
            }
            Some(_) => {}
            None => {
                let legacy = legacy_volume_name(&app.name_key, v);
                let adopt = legacy != docker_name
                    && engine.volume_labels(&legacy).await?.is_some_and(|found| {
                        is_our_stack_volume(&state.settings, &found, &app.name, v)
                    });
                if adopt {
                    docker_name = legacy;
                } else {
                    let mut l = app_labels.clone();
                    l.insert(labels::STACK_VOLUME.into(), v.clone());
                    engine.create_volume(&docker_name, l).await?;
                    // The engine makes it root's; services run as 65534 and must write it.
                    state.volumes().hand_to_apps(&docker_name).await?;
                    log(state, deploy_id, format!("Created volume {docker_name}\n")).await;
                }
            }
        }
        stack_names.insert(v.clone(), docker_name);
    }
    Ok(stack_names)
}

/// Who each service runs as (said in the log), with its writable volumes' top folders handed
/// to that user so it can write them.
#[allow(clippy::too_many_arguments)]
pub(super) async fn service_users(
    state: &Deployer,
    engine: &Engine,
    deploy_id: i64,
    plan: &StackPlan,
    images: &BTreeMap<String, String>,
    stack_names: &HashMap<String, String>,
    admin_mounts: &Mounts,
    opted: bool,
) -> Result<HashMap<String, crate::domain::hardening::RunAs>, DeployError> {
    let mut users: HashMap<String, crate::domain::hardening::RunAs> = HashMap::new();
    for s in &plan.services {
        let image = &images[&s.name];
        let image_user = engine.image_facts(image).await?.user;
        let (user, why) =
            super::images::run_as(state, engine, image, image_user.as_deref(), opted, s.user).await;
        log(
            state,
            deploy_id,
            format!("[{}] The container {why}.\n", s.name),
        )
        .await;
        users.insert(s.name.clone(), user);
        let mut writable: Vec<String> = s
            .mounts
            .iter()
            .filter(|m| !m.read_only)
            .filter_map(|m| match &m.source {
                MountSource::Stack(v) => stack_names.get(v).cloned(),
                MountSource::Milkcrate(d) => Some(d.clone()),
            })
            .collect();
        if s.name == plan.main {
            writable.extend(
                admin_mounts
                    .mounts()
                    .into_iter()
                    .filter(|m| !m.read_only)
                    .map(|m| m.volume),
            );
        }
        for v in writable {
            state.volumes().hand_to(&v, user).await?;
            log(
                state,
                deploy_id,
                format!("[{}] Volume {v} is owned by {user}\n", s.name),
            )
            .await;
        }
    }

    Ok(users)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn service_spec(
    state: &Deployer,
    app: &AppRow,
    plan: &StackPlan,
    s: &ServicePlan,
    image: &str,
    deploy_id: i64,
    net: &str,
    admin_env: &[(String, String)],
    admin_mounts: &Mounts,
    stack_names: &HashMap<String, String>,
    routed: &str,
) -> ContainerSpec {
    let is_main = s.name == plan.main;
    let mut all_labels: BTreeMap<String, String> = labels::ownership(&app.name, deploy_id);
    all_labels.insert(labels::SERVICE.into(), s.name.clone());
    all_labels.insert(labels::COMPOSE_PROJECT.into(), project_name(&app.name_key));
    all_labels.insert(labels::COMPOSE_SERVICE.into(), s.name.clone());
    all_labels.extend(s.labels.clone());
    if is_main {
        all_labels.extend(crate::service::traefik_labels(
            &state.settings,
            app,
            plan.port,
        ));
    }
    all_labels.extend(state.settings.extra_labels.iter().cloned());
    let mut env = s.env.clone();
    let mut mounts: Vec<VolumeMount> = s
        .mounts
        .iter()
        .map(|m| VolumeMount {
            volume: match &m.source {
                MountSource::Stack(v) => stack_names
                    .get(v)
                    .cloned()
                    .unwrap_or_else(|| volume_name(&state.settings, &app.name_key, v)),
                MountSource::Milkcrate(d) => d.clone(),
            },
            target: m.target.clone(),
            read_only: m.read_only,
        })
        .collect();
    if is_main {
        // The admin's settings for the app apply to its main service.
        env.retain(|(k, _)| !admin_env.iter().any(|(a, _)| a == k));
        env.extend(admin_env.iter().cloned());
        for m in admin_mounts.mounts() {
            if !mounts.iter().any(|x| x.target == m.target) {
                mounts.push(m);
            }
        }
    }
    let mut aliases = vec![s.name.clone()];
    aliases.extend(s.aliases.iter().cloned());
    let process = Process {
        command: s.command.clone(),
        entrypoint: s.entrypoint.clone(),
        user: s.user,
        working_dir: s.working_dir.clone(),
        tmpfs: s.tmpfs.clone(),
        read_only: s.read_only,
        health: s.health.clone(),
        restart: Some(s.restart.clone()),
        init: s.init,
        hostname: s.hostname.clone(),
        domainname: s.domainname.clone(),
        tty: s.tty,
        stdin_open: s.stdin_open,
        stop_timeout: s.stop_timeout,
        stop_signal: s.stop_signal.clone(),
        aliases,
        also_on: is_main.then(|| routed.to_string()),
    };
    ContainerSpec::new(
        state
            .settings
            .object_name(&format!("{}-{}-{deploy_id}", app.name_key, s.name)),
        image,
        net,
        s.limits,
    )
    .env(env)
    .labels(all_labels)
    .mounts(mounts)
    .process(process)
}

/// The failure of a service whose container stopped, with its last output.
async fn stopped(engine: &Engine, id: &str, name: &str, exit_code: i64) -> DeployError {
    let tail = last_lines(engine, id).await;
    DeployError::Start(format!(
        "service {name} stopped right after starting (exit code {exit_code}).{}",
        if tail.is_empty() {
            String::new()
        } else {
            format!(" Its last output:\n{tail}")
        }
    ))
}

/// Waits until a service other than the main one runs (and is healthy when another service
/// waits for that). A service that exits fails the deploy with its last output.
async fn wait_service(
    state: &Deployer,
    engine: &Engine,
    deploy_id: i64,
    id: &str,
    name: &str,
    healthy: bool,
) -> Result<(), DeployError> {
    let deadline = Instant::now() + state.settings.start_timeout;
    let mut said = false;
    loop {
        let s = engine.inspect(id, &state.settings.network).await?;
        if !s.running || s.restarting {
            return Err(stopped(engine, id, name, s.exit_code).await);
        }
        match (healthy, s.health.as_deref()) {
            // Started is enough; one that dies later is caught before traffic switches.
            (false, _) => return Ok(()),
            (true, Some("healthy")) => return Ok(()),
            (true, Some("unhealthy")) => {
                return Err(DeployError::Start(format!(
                    "service {name} reports itself unhealthy"
                )));
            }
            (true, None) => {
                return Err(DeployError::Start(format!(
                    "another service waits for {name} to be healthy, but {name} has no healthcheck"
                )));
            }
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(DeployError::Start(format!(
                "service {name} was not {} within {} s",
                if healthy { "healthy" } else { "running" },
                state.settings.start_timeout.as_secs()
            )));
        }
        if healthy && !said {
            said = true;
            log(
                state,
                deploy_id,
                format!("[{name}] Waiting for it to be healthy…\n"),
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The stack's containers, main service last (start order) or first (stop order).
pub async fn containers(
    state: &Deployer,
    engine: &Engine,
    app: &AppRow,
) -> Result<Vec<crate::docker::ContainerFacts>, crate::docker::EngineError> {
    let label = format!("{}={}", labels::APP, app.name);
    let mut list = engine
        .list_labelled(&state.settings.scoped(label), &state.settings.network)
        .await?;
    list.sort_by_key(|c| c.id == app.container_id);
    Ok(list)
}

/// The stack's volumes that exist in the engine, by Docker name.
pub async fn stack_volumes(
    state: &Deployer,
    engine: &Engine,
    app: &AppRow,
) -> Result<Vec<String>, crate::docker::EngineError> {
    let mut filters = state
        .settings
        .scoped(format!("{}={}", labels::APP, app.name));
    filters.push(labels::STACK_VOLUME.to_string());
    engine.volumes_labelled(&filters).await
}

/// Removes the app's private network and the stack volumes `volumes` (from [`stack_volumes`]):
/// a deleted app, or a first deploy that failed.
pub async fn remove_stack(
    state: &Deployer,
    engine: &Engine,
    app: &AppRow,
    volumes: &[String],
) -> Result<(), crate::docker::EngineError> {
    for v in volumes {
        engine.remove_volume(v).await.or_else(|e| match e {
            crate::docker::EngineError::NotFound(_) => Ok(()),
            other => Err(other),
        })?;
    }
    let filters = state
        .settings
        .scoped(format!("{}={}", labels::APP, app.name));
    for n in engine.networks_labelled(&filters).await? {
        crate::service::remove_network(&state.settings, engine, &n).await?;
    }
    Ok(())
}
