//! Creating an app from a one-click template: the template's compose file is written as the
//! app's sources (a ZIP like any upload, so updates, rollbacks and backups treat it alike),
//! checked by the same gate, its passwords generated and stored encrypted, and the usual
//! deploy started. Also the connection details the app page shows. It works with the deploy
//! pipeline's handles (`Deployer`; the site volume through `Deployer::volumes`).

use crate::archive;
use crate::audit::{Actor, Event};
use crate::clock::now_unix;
use crate::domain::app::{AppName, PublicRoute};
use crate::domain::hardening::Limits;
use crate::domain::templates::{self, Template};
use crate::domain::volume::{Mounts, VolumeName};
use crate::store::{ImageOptionsRow, NewApp, Taken};

use super::deploy::{DeployKind, DeployRequest, Deployer};

/// Why a service was not made from a template (or its password not shown), in the sentence
/// the New service page shows; the sources are kept.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("Choose one of the listed services.")]
    Unknown,
    /// A name, route, limit or mount refused by the domain's rules (said in their words).
    #[error("{0}")]
    Invalid(String),
    /// The site volume could not be made (the volume use case's words).
    #[error("{0}")]
    Volume(#[from] super::volumes::VolumeError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("The service's files could not be written: {0}")]
    Write(#[source] std::io::Error),
    #[error("{0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("{0}")]
    Zip(#[from] archive::ArchiveError),
    #[error("the template is not a compose stack")]
    NotCompose,
    #[error("{0}")]
    Plan(#[from] super::compose::PlanError),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error(
        "An application named '{0}' already exists (names differing only in case, '-' or '_' count as the same)."
    )]
    NameTaken(String),
    #[error("Route '{route}' is already in use by {existing}. Please choose a different route.")]
    RouteTaken { route: String, existing: String },
    #[error("{host} is already served by {existing}.")]
    DomainTaken { host: String, existing: String },
    #[error("{0}")]
    Action(#[from] super::lifecycle::ActionError),
    #[error("{0}")]
    Env(#[from] super::lifecycle::EnvError),
    #[error("the app has no {0} variable any more")]
    NoVariable(String),
}

/// A new strong password: 24 random bytes, URL-safe (no quoting needed in URLs or shells).
fn strong_password() -> String {
    crate::secrets::random_token(24)
}

/// Creates app `name` at `route` from template `id` and starts its deploy; returns the
/// deploy id. Refusals are plain sentences and leave nothing behind.
pub async fn create(
    state: &Deployer,
    actor: &Actor,
    id: &str,
    name: &str,
    route: &str,
) -> Result<i64, TemplateError> {
    let result = create_inner(state, actor, id, name, route).await;
    if let Err(e) = &result {
        state
            .audit
            .record_logged(
                actor,
                Event::new("deploy", "application", name.trim().to_lowercase())
                    .details(serde_json::json!({"template": id}))
                    .failed(e.to_string()),
            )
            .await;
    }
    result
}

async fn create_inner(
    state: &Deployer,
    actor: &Actor,
    id: &str,
    name: &str,
    route: &str,
) -> Result<i64, TemplateError> {
    let template = templates::by_id(id).ok_or(TemplateError::Unknown)?;
    let name = AppName::parse(name).map_err(TemplateError::Invalid)?;
    let route = PublicRoute::parse(route).map_err(TemplateError::Invalid)?;
    let limits =
        Limits::within(512, 100, state.settings.max_limits).map_err(TemplateError::Invalid)?;
    let env: Vec<(String, String)> = template
        .secrets
        .iter()
        .map(|k| (k.to_string(), strong_password()))
        .collect();
    // The site volume is made first so the compose check sees it assigned.
    let mut mounts = Mounts::default();
    let mut made_volume = None;
    if let Some(target) = template.site_volume {
        let vname = VolumeName::parse(&format!("{}-site", name.as_str()))
            .map_err(TemplateError::Invalid)?;
        let (vid, _) = state
            .volumes()
            .create(
                &vname,
                format!("Files of the static site {}", name.as_str()),
            )
            .await?;
        made_volume = Some(vid);
        let docker_name = state.volumes().docker_name_for(&vname);
        mounts
            .add(&docker_name, target, false)
            .map_err(TemplateError::Invalid)?;
    }
    let outcome = create_app(state, actor, template, &name, &route, limits, env, &mounts).await;
    let remove_volume = move |state: Deployer| async move {
        if let Some(vid) = made_volume
            && let Ok(Some(vol)) = state.store.volume(vid).await
        {
            crate::service::logged(
                "remove the volume being undone",
                state.volumes().remove(&vol).await,
            );
        }
    };
    let req = match outcome {
        Ok(req) => req,
        Err(e) => {
            remove_volume(state.clone()).await;
            return Err(e);
        }
    };
    // The deploy runs in the background; if the first deploy fails, the app is gone and so
    // goes the volume made for it: nothing is left behind.
    let deploy_id = req.deploy_id;
    let app_id = req.app_id;
    state.logs.open(deploy_id);
    let st = state.clone();
    tokio::spawn(async move {
        super::deploy::run(&st, req).await;
        if matches!(st.store.app(app_id).await, Ok(None)) {
            remove_volume(st.clone()).await;
        }
    });
    Ok(deploy_id)
}

#[allow(clippy::too_many_arguments)]
async fn create_app(
    state: &Deployer,
    actor: &Actor,
    template: &Template,
    name: &AppName,
    route: &PublicRoute,
    limits: Limits,
    env: Vec<(String, String)>,
    mounts: &Mounts,
) -> Result<DeployRequest, TemplateError> {
    let compose = template.compose_file(&state.settings.template_registry);
    let zip = super::deploy::tempfile_in(&super::upload_dir(&state.settings), "template", ".zip")?;
    let mut spool = super::leftovers::SpoolGuard::default();
    spool.add(zip.clone());
    let (z, text) = (zip.clone(), compose.clone());
    tokio::task::spawn_blocking(move || {
        archive::write_zip(&z, &[("docker-compose.yml", text.as_bytes())])
    })
    .await?
    .map_err(TemplateError::Write)?;
    let (z, zl) = (zip.clone(), state.settings.zip_limits);
    let checked = tokio::task::spawn_blocking(move || archive::check_zip(&z, &zl)).await??;
    let archive::AppKind::Compose(file) = &checked.kind else {
        return Err(TemplateError::NotCompose);
    };
    super::compose::load_plan(
        state,
        &zip,
        &checked,
        file,
        limits,
        None,
        env.clone(),
        mounts,
    )
    .await?;
    let new_app = NewApp {
        name: name.as_str().to_string(),
        public_route: route.as_str().to_string(),
        deployment_type: super::compose::DEPLOYMENT_TYPE.to_string(),
        health_path: None,
        memory_mb: limits.memory_mb,
        cpu_percent: limits.cpu_percent,
        port_override: None,
        source_zip: zip.display().to_string(),
        volume_mounts: mounts.to_column(),
        domains: Vec::new(),
    };
    let (app_id, deploy_id) = match state.store.insert_app(new_app, now_unix()).await? {
        Ok(ids) => ids,
        Err(Taken::Name(existing)) => return Err(TemplateError::NameTaken(existing)),
        Err(Taken::Route(existing)) => {
            return Err(TemplateError::RouteTaken {
                route: route.as_str().to_string(),
                existing,
            });
        }
        Err(Taken::Domain(host, existing)) => {
            return Err(TemplateError::DomainTaken { host, existing });
        }
    };
    let key = crate::domain::app::name_key(name.as_str());
    let dir = super::app_dir(&state.settings, &key);
    let stored = dir.join(format!("{deploy_id}.zip"));
    let undo_app = |e: TemplateError| async {
        super::apps::undo_new_app(state, app_id, &dir).await;
        e
    };
    let moved = async {
        tokio::fs::create_dir_all(&dir).await?;
        tokio::fs::rename(&zip, &stored).await
    }
    .await;
    if let Err(e) = moved {
        return Err(undo_app(e.into()).await);
    }
    let saved = async {
        state
            .store
            .set_app_source(app_id, stored.display().to_string())
            .await?;
        super::lifecycle::save_env(state, app_id, env).await?;
        state
            .store
            .set_image_options(
                app_id,
                ImageOptionsRow {
                    pull_policy: "missing".into(),
                    image_user: false,
                    template: Some(template.id.into()),
                },
            )
            .await?;
        Ok::<(), TemplateError>(())
    }
    .await;
    if let Err(e) = saved {
        return Err(undo_app(e).await);
    }
    Ok(DeployRequest {
        deploy_id,
        app_id,
        kind: DeployKind::Create,
        source: Some((stored, checked)),
        mounts: None,
        actor: actor.clone(),
    })
}

/// What the app page shows about a service made from a template.
#[derive(Debug, Clone)]
pub struct Connection {
    pub template: &'static Template,
    /// The host name on the app's network (the compose service).
    pub host: String,
    pub port: u16,
    pub user: Option<&'static str>,
    pub database: Option<&'static str>,
    /// The env var holding the client's password.
    pub password_var: Option<&'static str>,
    /// The app's network, which the service's containers join.
    pub network: String,
}

pub async fn connection(state: &Deployer, app: &crate::store::AppRow) -> Option<Connection> {
    let options = super::images::options(state, app.id).await;
    let template = templates::by_id(options.template.as_deref()?)?;
    Some(Connection {
        template,
        host: template.service.to_string(),
        port: template.port,
        user: template.user,
        database: template.database,
        password_var: template.secrets.first().copied(),
        network: super::compose::network_name(&state.settings, &app.name_key, app.outbound),
    })
}

/// The client's password, decrypted for one page view (audited by the caller).
pub async fn password(state: &Deployer, app_id: i64, var: &str) -> Result<String, TemplateError> {
    super::lifecycle::decrypted_env(state, app_id)
        .await?
        .into_iter()
        .find(|(k, _)| k == var)
        .map(|(_, v)| v)
        .ok_or_else(|| TemplateError::NoVariable(var.to_string()))
}
