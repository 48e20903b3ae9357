//! `/api/v1/apps`: list, get, create (multipart form, or a raw ZIP or tar body with the
//! settings in the query), update, rollback, redeploy, start, stop, restart, delete, the
//! environment (keys only; values are never returned), the container's log, and (swarm mode)
//! the placement constraints.

use std::convert::Infallible;
use std::path::PathBuf;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Multipart, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use utoipa::{IntoParams, ToSchema};

use super::deploys::{DeployJson, deploy_json, wait_for};
use super::{ApiError, Budget, Token};
use crate::app::AppState;
use crate::audit::Event;
use crate::domain::app::{AppName, name_key};
use crate::domain::token::Level;
use crate::domain::volume::{Mounts, mount_path};
use crate::service::apps::{self, NewAppInput};
use crate::service::deploy::Deployer;
use crate::service::deploy::tempfile_in;
use crate::service::leftovers::{SpoolGuard, write_error};
use crate::service::lifecycle::Lifecycle;
use crate::service::lifecycle::{self, Action};
use crate::service::status::status_of;
use crate::store::AppRow;

/// One app as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AppJson {
    pub id: i64,
    pub name: String,
    /// The path route ("" when the app is reached by host name only).
    pub route: String,
    /// Every path route of the app (today one at most).
    pub routes: Vec<String>,
    /// Every host name the app answers at: `<app>.<apps domain>` when one is set, then its
    /// custom domains.
    pub hosts: Vec<String>,
    /// The custom domains alone.
    pub domains: Vec<String>,
    /// What the admin wants: deploying, running or stopped.
    pub desired: String,
    /// What the engine says: Running, Healthy, Stopped, Missing, Deploying…
    pub status: String,
    pub status_detail: String,
    pub running: bool,
    pub deployment_type: String,
    pub image: String,
    pub previous_image: Option<String>,
    pub deployed_at: String,
    pub internal_port: u16,
    pub health_path: Option<String>,
    pub memory_mb: u32,
    pub cpu_percent: u32,
}

pub fn app_json(state: &AppState, a: &AppRow) -> AppJson {
    let s = status_of(a, &state.status.snapshot());
    AppJson {
        id: a.id,
        name: a.name.clone(),
        route: a.public_route.clone(),
        routes: routes_of(a),
        hosts: crate::router::app_hosts(a, &state.settings),
        domains: a.domains.clone(),
        desired: a.status.to_string(),
        status: crate::web::health::label(&s.health),
        running: s.running(),
        status_detail: s.detail,
        deployment_type: a.deployment_type.to_string(),
        image: a.image_tag.clone(),
        previous_image: a.previous_image_tag.clone(),
        deployed_at: a.deployment_date.clone(),
        internal_port: a.internal_port,
        health_path: a.health_path.clone(),
        memory_mb: a.memory_mb,
        cpu_percent: a.cpu_percent,
    }
}

fn routes_of(a: &AppRow) -> Vec<String> {
    if a.public_route.is_empty() {
        Vec::new()
    } else {
        vec![a.public_route.clone()]
    }
}

/// An app and the deploy an action started.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AppDeploy {
    pub app: AppJson,
    pub deploy: DeployJson,
}

/// The answer to start, stop and restart.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ActionResult {
    pub app: AppJson,
    pub message: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Deleted {
    pub name: String,
    pub containers: usize,
    pub images: usize,
    pub volumes: usize,
    pub home_route_reset: bool,
}

/// Extractor: the app named by `{app}`, its id or its name.
pub struct ApiApp(pub AppRow);

impl FromRequestParts<AppState> for ApiApp {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        #[derive(Deserialize)]
        struct P {
            app: String,
        }
        let Path(P { app }) = Path::<P>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        let found = match app.parse::<i64>() {
            Ok(id) => state.store.app(id).await?,
            Err(_) => {
                let key = name_key(&app);
                state
                    .store
                    .apps()
                    .await?
                    .into_iter()
                    .find(|a| a.name_key == key)
            }
        };
        found
            .map(ApiApp)
            .ok_or_else(|| ApiError::not_found(format!("There is no app {app}.")))
    }
}

#[derive(Debug, Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Answer only when the deploy has ended (succeeded or failed).
    #[serde(default)]
    pub wait: bool,
}

#[utoipa::path(get, path = "/api/v1/apps", tag = "apps",
    responses((status = 200, description = "Every app", body = [AppJson]),
              (status = 401, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    token: Token,
) -> Result<Json<Vec<AppJson>>, ApiError> {
    token.need(Level::Read, None)?;
    let rows = state.store.apps().await?;
    Ok(Json(
        rows.iter()
            .filter(|a| token.token.scope.sees(&a.name_key))
            .map(|a| app_json(&state, a))
            .collect(),
    ))
}

#[utoipa::path(get, path = "/api/v1/apps/{app}", tag = "apps",
    params(("app" = String, Path, description = "The app's id or name")),
    responses((status = 200, body = AppJson), (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    token: Token,
    ApiApp(app): ApiApp,
) -> Result<Json<AppJson>, ApiError> {
    token.need(Level::Read, Some(&app.name_key))?;
    Ok(Json(app_json(&state, &app)))
}

/// The settings of a new app, in the query (with a raw body) or as form fields (multipart).
#[derive(Debug, Deserialize, IntoParams, ToSchema, Default)]
#[into_params(parameter_in = Query)]
pub struct CreateQuery {
    /// The app's name (letters, digits, - and _).
    #[serde(default)]
    pub app_name: String,
    /// Where it answers, e.g. /blog.
    #[serde(default)]
    pub public_route: String,
    #[serde(default)]
    pub internal_port: String,
    #[serde(default)]
    pub health_path: String,
    /// KEY=value lines.
    #[serde(default)]
    pub env: String,
    #[serde(default)]
    pub memory_mb: String,
    #[serde(default)]
    pub cpu_percent: String,
    /// Volume mounts, `volume:/path` or `volume:/path:ro`, separated by commas.
    #[serde(default)]
    pub mounts: String,
    /// Custom domains (host names), separated by commas or spaces.
    #[serde(default)]
    pub domains: String,
    /// One custom domain (what `milkcrate deploy --host` sends); joins `domains`.
    #[serde(default)]
    pub host: String,
    /// `missing` (default), `always` or `never`.
    #[serde(default)]
    pub pull_policy: String,
    /// Run as the image's own user when it is not root.
    #[serde(default)]
    pub image_user: bool,
    /// Swarm mode: how many tasks run the app (1 to 20; 1 when empty).
    #[serde(default)]
    pub replicas: String,
    /// Swarm mode: placement constraints separated by commas, e.g.
    /// `node.labels.zone==eu,node.role==worker`.
    #[serde(default)]
    pub constraints: String,
    #[serde(default)]
    pub wait: bool,
}

/// The sources of a create or update: a ZIP on disk (removed by the guard unless kept).
struct Sources {
    zip: PathBuf,
    fields: Vec<(String, String)>,
    _spool: SpoolGuard,
}

/// Reads the body: multipart (`file` and the form's fields), or a raw ZIP or tar.
async fn read_sources(state: &AppState, req: Request) -> Result<Sources, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    match mime.as_str() {
        "multipart/form-data" => {
            let multipart = Multipart::from_request(req, state)
                .await
                .map_err(|e| ApiError::bad_request(e.body_text()))?;
            let upload = crate::web::apps::read_upload(state, multipart)
                .await
                .map_err(ApiError::bad_request)?;
            let zip = crate::web::apps::uploaded_zip(&upload)
                .map_err(|e| ApiError::invalid(Some("file"), e))?;
            // The form's guard goes with the sources: the file lives until they are dropped.
            Ok(Sources {
                zip,
                fields: upload.fields,
                _spool: upload._spool,
            })
        }
        "application/zip" | "application/x-zip-compressed" => {
            let (zip, spool) = spool_body(state, req.into_body(), ".zip").await?;
            Ok(Sources {
                zip,
                fields: Vec::new(),
                _spool: spool,
            })
        }
        "application/x-tar" => {
            let (tar, mut spool) = spool_body(state, req.into_body(), ".tar").await?;
            let zip = tempfile_in(
                &crate::service::upload_dir(&state.settings),
                "upload",
                ".zip",
            )
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
            spool.add(zip.clone());
            let (t, z) = (tar.clone(), zip.clone());
            tokio::task::spawn_blocking(move || crate::archive::package::tar_to_zip(&t, &z))
                .await
                .map_err(|e| ApiError::bad_request(e.to_string()))?
                .map_err(|e| ApiError::invalid(Some("file"), e.to_string()))?;
            Ok(Sources {
                zip,
                fields: Vec::new(),
                _spool: spool,
            })
        }
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send the sources as multipart/form-data (field `file`), application/zip or application/x-tar.",
        )),
    }
}

/// Streams the body to `<data>/uploads/` under a name the server chose, at most
/// MAX_CONTENT_LENGTH bytes. An empty body is refused.
pub(super) async fn spool_body(
    state: &AppState,
    body: Body,
    suffix: &str,
) -> Result<(PathBuf, SpoolGuard), ApiError> {
    let path = tempfile_in(
        &crate::service::upload_dir(&state.settings),
        "upload",
        suffix,
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut spool = SpoolGuard::new();
    spool.add(path.clone());
    let disk = |e: std::io::Error| {
        ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "disk",
            write_error(&e, "The upload", &path),
        )
    };
    let mut out = tokio::fs::File::create(&path).await.map_err(disk)?;
    let mut stream = body.into_data_stream();
    let max = state.settings.max_content_length;
    let mut written: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk: Bytes =
            chunk.map_err(|e| ApiError::bad_request(format!("The upload was cut short: {e}")))?;
        written += chunk.len() as u64;
        if written > max {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "The upload is larger than this server accepts ({:.1} MiB, MAX_CONTENT_LENGTH). Nothing was changed.",
                    max as f64 / (1024.0 * 1024.0)
                ),
            ));
        }
        out.write_all(&chunk).await.map_err(disk)?;
    }
    out.flush().await.map_err(disk)?;
    out.sync_all().await.map_err(disk)?;
    if written == 0 {
        return Err(ApiError::invalid(Some("file"), "No file selected"));
    }
    Ok((path, spool))
}

/// A token limited to apps may not put its app at a route inside another app's route or
/// around it: the longest prefix wins, so `/shop/checkout` would take that part of `/shop`
/// (and the cookies `/shop` sets). The admin, and unlimited tokens, may nest routes.
async fn refuse_nested_route(state: &AppState, token: &Token, route: &str) -> Result<(), ApiError> {
    let scope = &token.token.scope;
    if scope.level == Level::Admin || scope.apps.is_empty() {
        return Ok(());
    }
    let Ok(route) = crate::domain::app::PublicRoute::parse(route) else {
        return Ok(()); // refused with its reason by the create itself
    };
    let new = route.to_string().to_ascii_lowercase();
    for app in state.store.apps().await? {
        let old = app.public_route.to_ascii_lowercase();
        let nested =
            crate::domain::app::within(&new, &old) || crate::domain::app::within(&old, &new);
        if !old.is_empty() && old != new && nested {
            return Err(ApiError::forbidden(format!(
                "The token {} ({}) may not serve an app at {route}: it overlaps the route {} of app {}; a token limited to apps cannot nest routes (the admin can).",
                token.token.name, token.token.scope, app.public_route, app.name
            )));
        }
    }
    Ok(())
}

/// `volume:/path[:ro]` entries (commas between them) as mounts. A token limited to some apps
/// may mount only volumes that its apps already use and no other app does: a volume is other
/// apps' data, and the admin, not a limited token, decides who shares it.
async fn parse_mounts(state: &AppState, token: &Token, text: &str) -> Result<Mounts, ApiError> {
    let mut mounts = Mounts::default();
    let volumes = state.store.volumes().await?;
    let limited = token.token.scope.level < Level::Admin && !token.token.scope.apps.is_empty();
    let apps = if limited {
        state.store.apps().await?
    } else {
        Vec::new()
    };
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = || {
            ApiError::invalid(
                Some("mounts"),
                format!("'{entry}' is not a mount: write volume:/path or volume:/path:ro"),
            )
        };
        let (name, rest) = entry.split_once(':').ok_or_else(bad)?;
        let (path, ro) = match rest.strip_suffix(":ro") {
            Some(p) => (p, true),
            None => (rest, false),
        };
        let vol = volumes
            .iter()
            .find(|v| v.volume_name == name)
            .ok_or_else(|| {
                ApiError::invalid(Some("mounts"), format!("There is no volume {name}."))
            })?;
        if limited {
            let users: Vec<&str> = apps
                .iter()
                .filter(|a| {
                    Mounts::from_column(a.volume_mounts.as_deref()).uses(&vol.docker_volume_name)
                })
                .map(|a| a.name_key.as_str())
                .collect();
            let own = |k: &str| token.token.scope.apps.iter().any(|a| a == k);
            if users.is_empty() || !users.iter().all(|k| own(k)) {
                return Err(ApiError::forbidden(format!(
                    "The token {} ({}) may not mount volume {name}: a token limited to apps may \
                     mount only volumes its own apps already use, and no other app does.",
                    token.token.name, token.token.scope
                )));
            }
        }
        let path = mount_path(path)
            .map_err(|e| ApiError::invalid(Some("mounts"), format!("Volume {name}: {e}")))?;
        mounts
            .add(&vol.docker_volume_name, &path, ro)
            .map_err(|e| ApiError::invalid(Some("mounts"), e))?;
    }
    Ok(mounts)
}

#[utoipa::path(post, path = "/api/v1/apps", tag = "apps",
    params(CreateQuery),
    request_body(description = "The sources: a ZIP or tar body, or a multipart form with `file` and the same fields as the query",
        content(("application/zip"), ("application/x-tar"), ("multipart/form-data"))),
    responses((status = 202, description = "Created; the first deploy runs", body = AppDeploy),
              (status = 200, description = "Created and deployed (wait=true)", body = AppDeploy),
              (status = 409, body = super::ErrorBody), (status = 413, body = super::ErrorBody),
              (status = 422, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    State(deployer): State<Deployer>,
    token: Token,
    Query(q): Query<CreateQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    token.need(Level::Deploy, None).or_else(|e| {
        // A deploy token limited to apps may create one of them.
        match AppName::parse(&q.app_name) {
            Ok(name) if token.token.scope.allows(Level::Deploy, Some(&name.key())) => Ok(()),
            _ => Err(e),
        }
    })?;
    if let Err(resp) = token.spend(&state, Budget::Upload) {
        return Ok(*resp);
    }
    let sources = read_sources(&state, req).await?;
    let field = |name: &str, from_query: &str| {
        sources
            .fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| from_query.to_string())
    };
    let input = NewAppInput {
        app_name: field("app_name", &q.app_name),
        public_route: field("public_route", &q.public_route),
        internal_port: field("internal_port", &q.internal_port),
        health_path: field("health_path", &q.health_path),
        env: field("env", &q.env),
        memory_mb: field("memory_mb", &q.memory_mb),
        cpu_percent: field("cpu_percent", &q.cpu_percent),
        domains: format!(
            "{} {}",
            field("domains", &q.domains),
            field("host", &q.host)
        ),
        pull_policy: field("pull_policy", &q.pull_policy),
        image_user: field("image_user", if q.image_user { "on" } else { "" }) == "on",
        replicas: field("replicas", &q.replicas),
        constraints: field("constraints", &q.constraints),
    };
    // The name a multipart field gave must be within the token's apps too.
    if !token.token.scope.allows(Level::Deploy, None) {
        let key = AppName::parse(&input.app_name)
            .map(|n| n.key())
            .unwrap_or_default();
        token.need(Level::Deploy, Some(&key))?;
    }
    refuse_nested_route(&state, &token, &input.public_route).await?;
    let mounts = parse_mounts(&state, &token, &field("mounts", &q.mounts)).await?;
    let created = apps::create(&deployer, &input, mounts, &sources.zip, &token.actor).await?;
    answer_deploy(&state, created.app_id, created.deploy_id, q.wait).await
}

/// The app and its deploy: 202 at once, or 200 once the deploy ended when `wait`.
async fn answer_deploy(
    state: &AppState,
    app_id: i64,
    deploy_id: i64,
    wait: bool,
) -> Result<Response, ApiError> {
    if wait {
        wait_for(state, deploy_id).await;
    }
    let deploy = state
        .store
        .deploy(deploy_id)
        .await?
        .ok_or_else(|| ApiError::not_found("The deploy is gone."))?;
    // A failed first deploy removes its app; the deploy row says why.
    let app = match state.store.app(app_id).await? {
        Some(a) => app_json(state, &a),
        None => AppJson {
            id: app_id,
            name: deploy.app_name.clone(),
            route: String::new(),
            routes: Vec::new(),
            hosts: Vec::new(),
            domains: Vec::new(),
            desired: "deleted".into(),
            status: "Deleted".into(),
            status_detail: "The first deploy failed, so the app was removed.".into(),
            running: false,
            deployment_type: String::new(),
            image: String::new(),
            previous_image: None,
            deployed_at: String::new(),
            internal_port: 0,
            health_path: None,
            memory_mb: 0,
            cpu_percent: 0,
        },
    };
    let status = if wait {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut resp = (
        status,
        Json(AppDeploy {
            app,
            deploy: deploy_json(&deploy),
        }),
    )
        .into_response();
    if let Ok(v) = header::HeaderValue::from_str(&format!("/api/v1/deploys/{deploy_id}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

#[derive(Debug, Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct UpdateQuery {
    /// New volume mounts (`volume:/path[:ro]`, commas between); absent keeps the app's.
    pub mounts: Option<String>,
    #[serde(default)]
    pub wait: bool,
}

#[utoipa::path(post, path = "/api/v1/apps/{app}/update", tag = "apps",
    params(("app" = String, Path, description = "The app's id or name"), UpdateQuery),
    request_body(description = "The new sources: a ZIP or tar body, or a multipart form with `file`",
        content(("application/zip"), ("application/x-tar"), ("multipart/form-data"))),
    responses((status = 202, body = AppDeploy), (status = 200, description = "wait=true", body = AppDeploy),
              (status = 409, body = super::ErrorBody), (status = 422, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    State(deployer): State<Deployer>,
    token: Token,
    ApiApp(app): ApiApp,
    Query(q): Query<UpdateQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    token.need(Level::Deploy, Some(&app.name_key))?;
    if let Err(resp) = token.spend(&state, Budget::Update) {
        return Ok(*resp);
    }
    let sources = read_sources(&state, req).await?;
    let mounts_text = sources
        .fields
        .iter()
        .find(|(k, _)| k == "mounts")
        .map(|(_, v)| v.clone())
        .or(q.mounts);
    let mounts = match mounts_text {
        Some(t) => Some(parse_mounts(&state, &token, &t).await?),
        None => None,
    };
    let deploy_id = apps::update(&deployer, &app, &sources.zip, mounts, &token.actor).await?;
    answer_deploy(&state, app.id, deploy_id, q.wait).await
}

macro_rules! deploy_action {
    ($name:ident, $path:literal, $service:path, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "apps",
            params(("app" = String, Path, description = "The app's id or name"), WaitQuery),
            responses((status = 202, body = AppDeploy), (status = 200, description = "wait=true", body = AppDeploy),
                      (status = 409, body = super::ErrorBody)),
            security(("bearer" = [])))]
        pub async fn $name(
            State(state): State<AppState>,
            token: Token,
            ApiApp(app): ApiApp,
            Query(q): Query<WaitQuery>,
        ) -> Result<Response, ApiError> {
            token.need(Level::Deploy, Some(&app.name_key))?;
            let deploy_id = $service(&state.deployer(), &app, &token.actor).await?;
            answer_deploy(&state, app.id, deploy_id, q.wait).await
        }
    };
}

deploy_action!(
    rollback,
    "/api/v1/apps/{app}/rollback",
    apps::rollback,
    "Back to the previous image."
);
deploy_action!(
    redeploy,
    "/api/v1/apps/{app}/redeploy",
    apps::redeploy,
    "The current image again, in a fresh container."
);

async fn act(
    state: &AppState,
    token: &Token,
    app: AppRow,
    action: Action,
) -> Result<Json<ActionResult>, ApiError> {
    token.need(Level::Deploy, Some(&app.name_key))?;
    let event = Event::new(action.as_str(), "application", app.name.clone())
        .details(json!({"app_id": app.id, "container_id": app.container_id}));
    match lifecycle::act(&state.lifecycle(), &app, action).await {
        Ok(message) => {
            state.audit.record_logged(&token.actor, event).await;
            let row = state.store.app(app.id).await?.unwrap_or(app);
            Ok(Json(ActionResult {
                app: app_json(state, &row),
                message,
            }))
        }
        Err(e) => {
            state
                .audit
                .record_logged(&token.actor, event.failed(e.to_string()))
                .await;
            Err(e.into())
        }
    }
}

macro_rules! lifecycle_action {
    ($name:ident, $path:literal, $action:expr) => {
        #[utoipa::path(post, path = $path, tag = "apps",
            params(("app" = String, Path, description = "The app's id or name")),
            responses((status = 200, body = ActionResult), (status = 409, body = super::ErrorBody),
                      (status = 503, body = super::ErrorBody)),
            security(("bearer" = [])))]
        pub async fn $name(
            State(state): State<AppState>,
            token: Token,
            ApiApp(app): ApiApp,
        ) -> Result<Json<ActionResult>, ApiError> {
            act(&state, &token, app, $action).await
        }
    };
}

lifecycle_action!(start, "/api/v1/apps/{app}/start", Action::Start);
lifecycle_action!(stop, "/api/v1/apps/{app}/stop", Action::Stop);
lifecycle_action!(restart, "/api/v1/apps/{app}/restart", Action::Restart);

#[derive(Debug, Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// A compose app's stack volumes that hold data are deleted only with this.
    #[serde(default)]
    pub delete_volumes: bool,
}

#[utoipa::path(delete, path = "/api/v1/apps/{app}", tag = "apps",
    params(("app" = String, Path, description = "The app's id or name"), DeleteQuery),
    responses((status = 200, body = Deleted), (status = 409, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    State(lifecycle): State<Lifecycle>,
    token: Token,
    ApiApp(app): ApiApp,
    Query(q): Query<DeleteQuery>,
) -> Result<Json<Deleted>, ApiError> {
    token.need(Level::Deploy, Some(&app.name_key))?;
    let event = Event::new("delete", "application", app.name.clone());
    match lifecycle::delete(&lifecycle, &app, q.delete_volumes).await {
        Ok(d) => {
            let details = json!({"app_id": app.id, "public_route": app.public_route, "image_tag": app.image_tag, "removed": d});
            state
                .audit
                .record_logged(&token.actor, event.details(details))
                .await;
            Ok(Json(Deleted {
                name: app.name,
                containers: d.containers,
                images: d.images,
                volumes: d.volumes,
                home_route_reset: d.home_route_reset,
            }))
        }
        Err(e) => {
            state
                .audit
                .record_logged(&token.actor, event.failed(e.to_string()))
                .await;
            Err(e.into())
        }
    }
}

/// The app's variables: names only, and the version a change may be made against.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnvKeys {
    pub keys: Vec<String>,
    pub version: String,
}

#[utoipa::path(get, path = "/api/v1/apps/{app}/env", tag = "apps",
    params(("app" = String, Path, description = "The app's id or name")),
    responses((status = 200, body = EnvKeys)),
    security(("bearer" = [])))]
pub async fn env_keys(
    State(state): State<AppState>,
    token: Token,
    ApiApp(app): ApiApp,
) -> Result<Json<EnvKeys>, ApiError> {
    token.need(Level::Read, Some(&app.name_key))?;
    let stored = state.store.env(app.id).await?;
    Ok(Json(EnvKeys {
        version: crate::store::env_version(&stored),
        keys: stored.into_iter().map(|v| v.key).collect(),
    }))
}

/// Keys to set and keys to remove; the others keep their values.
#[derive(Debug, Deserialize, Serialize, ToSchema, Default)]
pub struct EnvChange {
    #[serde(default)]
    pub set: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub unset: Vec<String>,
    /// Apply only if the variables are still at this version (from GET …/env).
    #[serde(default)]
    pub version: Option<String>,
}

/// The result of an environment change: the keys now set, and the redeploy it started.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnvResult {
    pub keys: Vec<String>,
    pub deploy: Option<DeployJson>,
}

#[utoipa::path(post, path = "/api/v1/apps/{app}/env", tag = "apps",
    params(("app" = String, Path, description = "The app's id or name"), WaitQuery),
    request_body = EnvChange,
    responses((status = 200, body = EnvResult), (status = 409, body = super::ErrorBody),
              (status = 422, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_env(
    State(state): State<AppState>,
    State(deployer): State<Deployer>,
    token: Token,
    ApiApp(app): ApiApp,
    Query(q): Query<WaitQuery>,
    body: Result<Json<EnvChange>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<EnvResult>, ApiError> {
    token.need(Level::Deploy, Some(&app.name_key))?;
    let Json(change) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    for (k, v) in &change.set {
        if v.contains(['\n', '\r']) {
            return Err(ApiError::invalid(
                Some("set"),
                format!("The value of {k} holds a line break; values are one line."),
            ));
        }
        let parsed = crate::domain::app::parse_env_lines(&format!("{k}={v}"))
            .map_err(|e| ApiError::invalid(Some("set"), e))?;
        if parsed.len() != 1 || parsed[0].0 != *k {
            return Err(ApiError::invalid(
                Some("set"),
                format!("{k:?} is not a valid variable name (letters, digits, _)"),
            ));
        }
    }
    let mut vars = lifecycle::decrypted_env(&deployer, app.id)
        .await
        .map_err(|e| ApiError::conflict(e.to_string()))?;
    vars.retain(|(k, _)| !change.unset.contains(k) && !change.set.contains_key(k));
    vars.extend(change.set);
    let version = match change.version {
        Some(v) => v,
        None => crate::store::env_version(&state.store.env(app.id).await?),
    };
    let keys: Vec<String> = vars.iter().map(|(k, _)| k.clone()).collect();
    let deploy = apps::save_env(&deployer, &app, vars, Some(version), &token.actor).await?;
    let deploy = match deploy {
        Some(id) => {
            if q.wait {
                wait_for(&state, id).await;
            }
            state.store.deploy(id).await?.map(|d| deploy_json(&d))
        }
        None => None,
    };
    Ok(Json(EnvResult { keys, deploy }))
}

#[derive(Debug, Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// How many of the last lines (default 200, at most 10000).
    pub tail: Option<u32>,
    /// Keep the answer open and send new lines as they come.
    #[serde(default)]
    pub follow: bool,
    /// A compose app's service (its main service when absent).
    #[serde(default)]
    pub service: String,
}

#[utoipa::path(get, path = "/api/v1/apps/{app}/logs", tag = "apps",
    params(("app" = String, Path, description = "The app's id or name"), LogsQuery),
    responses((status = 200, description = "The container's log as plain text lines (chunked)", content_type = "text/plain", body = String),
              (status = 503, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn logs(
    State(state): State<AppState>,
    token: Token,
    ApiApp(app): ApiApp,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    token.need(Level::Read, Some(&app.name_key))?;
    let engine = state.engine.client().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "engine_unavailable",
            e.to_string(),
        )
    })?;
    let container = if q.service.is_empty() {
        app.container_id.clone()
    } else {
        crate::service::status::stack_services(&app, &state.status.snapshot())
            .get(q.service.as_str())
            .map(|c| c.id.clone())
            .ok_or_else(|| {
                ApiError::not_found(format!("{} has no service {}.", app.name, q.service))
            })?
    };
    if container.is_empty() {
        return Err(ApiError::conflict(format!(
            "{} has no container yet; wait for its deploy to finish.",
            app.name
        )));
    }
    let tail = q.tail.unwrap_or(200).min(10_000);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(256);
    let follow = q.follow;
    tokio::spawn(async move {
        let mut stream = Box::pin(engine.logs(&container, tail, follow));
        loop {
            // A quiet app writes nothing for hours: stop when the client goes.
            let line = tokio::select! {
                line = stream.next() => line,
                () = tx.closed() => break,
            };
            match line {
                Some(Ok(line)) => {
                    if tx.send(Ok(Bytes::from(line))).await.is_err() {
                        break;
                    }
                }
                _ => break,
            }
        }
    });
    let body = Body::from_stream(tokio_stream(rx));
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

/// An mpsc receiver as a stream.
pub fn tokio_stream<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

/// An app's placement constraints (swarm mode): the nodes its tasks may run on.
#[derive(Debug, Serialize, Deserialize, ToSchema, Default)]
pub struct Placement {
    /// Each `node.labels.<key>==<value>` (or `!=`), `node.role==manager|worker`,
    /// `node.hostname==<name>`, `node.platform.os==<os>` or `node.platform.arch==<arch>`;
    /// empty: any node.
    #[serde(default)]
    pub constraints: Vec<String>,
}

/// The placement constraints and what the change did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlacementResult {
    pub constraints: Vec<String>,
    pub message: String,
}

#[utoipa::path(get, path = "/api/v1/apps/{app}/placement", tag = "apps",
    params(("app" = String, Path, description = "The app's id or name")),
    responses((status = 200, body = PlacementResult), (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn placement(
    State(state): State<AppState>,
    token: Token,
    ApiApp(app): ApiApp,
) -> Result<Json<PlacementResult>, ApiError> {
    token.need(Level::Read, Some(&app.name_key))?;
    let constraints = state.store.app_constraints(app.id).await?;
    let message = if constraints.is_empty() {
        format!("{} has no placement constraint", app.name)
    } else {
        format!(
            "{} runs on nodes where {}",
            app.name,
            constraints.join(" and ")
        )
    };
    Ok(Json(PlacementResult {
        constraints,
        message,
    }))
}

/// Sets the placement constraints, applied at once with a service update (no rebuild). A
/// constraint no node satisfies is refused (409) and the app keeps running where it ran.
#[utoipa::path(post, path = "/api/v1/apps/{app}/placement", tag = "apps",
    params(("app" = String, Path, description = "The app's id or name")),
    request_body = Placement,
    responses((status = 200, body = PlacementResult), (status = 409, body = super::ErrorBody),
              (status = 422, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_placement(
    State(state): State<AppState>,
    State(deployer): State<Deployer>,
    token: Token,
    ApiApp(app): ApiApp,
    body: Result<Json<Placement>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<PlacementResult>, ApiError> {
    token.need(Level::Deploy, Some(&app.name_key))?;
    let Json(wanted) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let message = apps::set_placement(&deployer, &app, &wanted.constraints, &token.actor).await?;
    Ok(Json(PlacementResult {
        constraints: state.store.app_constraints(app.id).await?,
        message,
    }))
}
