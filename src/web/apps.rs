//! Handlers for apps: the upload form, deploy pages with their live log, the dashboard table,
//! an app's page, its actions (start, stop, restart, update, rollback, delete, environment) and
//! its logs. Every action is a POST (CSRF is checked router-wide) and is audited.

use std::convert::Infallible;
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::{FromRequestParts, Multipart, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::app::AppState;
use crate::audit::Event;
use crate::domain::app::parse_env_lines;
use crate::domain::route::is_local_redirect;
use crate::domain::volume::Mounts;
use crate::service::apps::{self, AppsError};
use crate::service::compose;
use crate::service::deploy::tempfile_in;
use crate::service::leftovers::write_error;
use crate::service::lifecycle::{self, Action};
use crate::service::loghub::LogEvent;
use crate::service::status::status_of;
use crate::store::AppRow;
use crate::web::client::ClientInfo;
use crate::web::errors::{AppError, error_response, row_by_path_id};
use crate::web::form::Form;
use crate::web::pages::flash;
use crate::web::session::Admin;
use crate::web::views::{
    self, AppPage, AppRows, AppView, DeployPage, LogsPage, Page, UploadPage, UploadValues,
};
use crate::web::volumes;

/// Marks an env line whose stored value is kept as it is.
const UNCHANGED: &str = "(unchanged)";

pub async fn upload_page(
    State(state): State<AppState>,
    _admin: Admin,
    page: Page,
) -> Result<Response, AppError> {
    let values = UploadValues {
        memory_mb: "512".into(),
        cpu_percent: "50".into(),
        ..Default::default()
    };
    render_upload(&state, page, values, None, &Mounts::default()).await
}

/// The upload form; shown again with `error` (and a 400) when a submission was refused.
async fn render_upload(
    state: &AppState,
    page: Page,
    values: UploadValues,
    error: Option<String>,
    mounts: &Mounts,
) -> Result<Response, AppError> {
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let upload = UploadPage {
        mount_choices: volumes::mount_choices(state, mounts).await?,
        layout: page.titled("Deploy an app"),
        values,
        error,
        max_mb: state.settings.max_content_length >> 20,
        max_memory_mb: state.settings.max_limits.memory_mb,
        max_cpu_percent: state.settings.max_limits.cpu_percent,
        apps_domain: state.settings.apps_domain.clone(),
    };
    views::render_with_status(status, &upload)
}

/// What a multipart form brought: text fields and the uploaded file (already on disk).
#[derive(Default)]
pub(crate) struct Upload {
    pub(crate) fields: Vec<(String, String)>,
    pub(crate) file: Option<(String, PathBuf)>,
    /// Removes the spooled file on every path (a refused form, a cut-off request); once it
    /// was moved to the app's folder there is nothing left to remove.
    pub(crate) _spool: crate::service::leftovers::SpoolGuard,
}

impl Upload {
    pub(crate) fn field(&self, name: &str) -> String {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

/// Reads the form, streaming the file to `<data>/uploads/` under a name the server chose.
pub(crate) async fn read_upload(
    state: &AppState,
    mut multipart: Multipart,
) -> Result<Upload, String> {
    let mut upload = Upload::default();
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| format!("The upload was cut short: {e}"))?
    {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            let client_name = field.file_name().unwrap_or_default().to_string();
            if client_name.is_empty() {
                continue;
            }
            let path = tempfile_in(&crate::service::upload_dir(state), "upload", ".zip")
                .map_err(|e| e.to_string())?;
            upload._spool.add(path.clone());
            let disk = |e: std::io::Error| write_error(&e, "The upload", &path);
            let mut out = tokio::fs::File::create(&path).await.map_err(disk)?;
            upload.file = Some((client_name, path.clone()));
            while let Some(chunk) = field
                .chunk()
                .await
                .map_err(|e| format!("The upload was cut short: {e}"))?
            {
                out.write_all(&chunk).await.map_err(disk)?;
            }
            // tokio writes in the background and keeps a failed last write for the next call:
            // flush reports it (a full disk), which sync_all alone would not.
            out.flush().await.map_err(disk)?;
            out.sync_all().await.map_err(disk)?;
        } else {
            let text = field
                .text()
                .await
                .map_err(|_| "A form field was not valid UTF-8 text.".to_string())?;
            upload.fields.push((name, text));
        }
    }
    Ok(upload)
}

/// The spooled file of a form, once it is there and named like a ZIP.
pub(crate) fn uploaded_zip(upload: &Upload) -> Result<PathBuf, String> {
    let Some((client_name, path)) = &upload.file else {
        return Err("No file selected".into());
    };
    if !client_name.to_ascii_lowercase().ends_with(".zip") {
        return Err(format!(
            "'{client_name}' is not a ZIP file. Only ZIP files are accepted."
        ));
    }
    Ok(path.clone())
}

pub async fn upload(
    State(state): State<AppState>,
    Admin(session): Admin,
    client: ClientInfo,
    page: Page,
    multipart: Multipart,
) -> Result<Response, AppError> {
    let actor = client.actor(true);
    let upload = match read_upload(&state, multipart).await {
        Ok(u) => u,
        Err(e) => return Ok(error_response(StatusCode::BAD_REQUEST, e)),
    };
    let values = UploadValues {
        app_name: upload.field("app_name"),
        public_route: upload.field("public_route"),
        domains: upload.field("domains"),
        internal_port: upload.field("internal_port"),
        health_path: upload.field("health_path"),
        env: upload.field("env"),
        memory_mb: upload.field("memory_mb"),
        cpu_percent: upload.field("cpu_percent"),
    };
    let input = apps::NewAppInput {
        app_name: values.app_name.clone(),
        public_route: values.public_route.clone(),
        internal_port: values.internal_port.clone(),
        health_path: values.health_path.clone(),
        env: values.env.clone(),
        memory_mb: values.memory_mb.clone(),
        cpu_percent: values.cpu_percent.clone(),
        domains: values.domains.clone(),
        pull_policy: upload.field("pull_policy"),
        image_user: upload.field("image_user") == "on",
        replicas: upload.field("replicas"),
    };
    let form_mounts = volumes::mounts_from_form(&state, &upload.fields).await;
    let checked = form_mounts
        .clone()
        .and_then(|m| Ok((m, uploaded_zip(&upload)?)));
    let outcome = match checked {
        Ok((mounts, zip)) => apps::create(&state, &input, mounts, &zip, &actor).await,
        Err(msg) => {
            let event = Event::new(
                "deploy",
                "application",
                values.app_name.trim().to_lowercase(),
            )
            .failed(&msg);
            let _ = state.audit.record(&actor, event).await;
            Err(AppsError::Refused(apps::Refused::invalid(None, msg)))
        }
    };
    match outcome {
        Ok(created) => {
            flash(
                &state,
                &session.id_hash,
                "info",
                format!("Deploying {}: the build log follows.", created.name),
            )
            .await?;
            Ok(Redirect::to(&format!("/admin/deploys/{}", created.deploy_id)).into_response())
        }
        Err(AppsError::Refused(r)) => {
            let mounts = form_mounts.unwrap_or_default();
            render_upload(&state, page, values, Some(r.message), &mounts).await
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn deploy_page(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<i64>,
    page: Page,
) -> Result<Response, AppError> {
    let Some(deploy) = state.store.deploy(id).await? else {
        return Ok(error_response(
            StatusCode::NOT_FOUND,
            "There is no such deploy.",
        ));
    };
    let running = state.logs.watch(id).is_some();
    let title = format!("Deploy #{id}: {}", deploy.app_name);
    views::render(&DeployPage {
        layout: page.titled(&title),
        deploy,
        running,
    })
}

/// Server-sent events: the whole log so far, then each new line, then `done` with the result.
pub async fn deploy_events(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<i64>,
) -> Result<Response, AppError> {
    let stream: std::pin::Pin<Box<dyn Stream<Item = Result<SseEvent, Infallible>> + Send>> =
        match state.logs.watch(id) {
            Some((lines, rx)) => {
                let past = futures_util::stream::iter(lines.into_iter().map(line_event));
                let live = tokio_stream_from(rx).map(|e| match e {
                    LogEvent::Line(l) => line_event(l),
                    LogEvent::Done(status) => done_event(&status),
                });
                Box::pin(past.chain(live))
            }
            None => {
                let Some(d) = state.store.deploy(id).await? else {
                    return Ok(error_response(
                        StatusCode::NOT_FOUND,
                        "There is no such deploy.",
                    ));
                };
                let lines: Vec<String> = d.log.split_inclusive('\n').map(String::from).collect();
                Box::pin(futures_util::stream::iter(
                    lines
                        .into_iter()
                        .map(line_event)
                        .chain(std::iter::once(done_event(&d.status))),
                ))
            }
        };
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn line_event(line: String) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default()
        .event("line")
        .data(serde_json::to_string(&line).unwrap_or_default()))
}

fn done_event(status: &str) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default().event("done").data(status))
}

/// A broadcast receiver as a stream that ends after `Done` (or when the sender goes).
fn tokio_stream_from(
    rx: tokio::sync::broadcast::Receiver<LogEvent>,
) -> impl Stream<Item = LogEvent> + Send {
    futures_util::stream::unfold((rx, false), |(mut rx, finished)| async move {
        if finished {
            return None;
        }
        loop {
            match rx.recv().await {
                Ok(e @ LogEvent::Done(_)) => return Some((e, (rx, true))),
                Ok(e) => return Some((e, (rx, false))),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    })
}

/// Apps per page of the dashboard: the page stays light (about 0.9 KiB an app).
pub const PAGE_SIZE: usize = 100;

#[derive(Deserialize, Default)]
pub struct PageQuery {
    #[serde(default)]
    pub page: usize,
}

/// The apps of page `page` (1-based; 0 or past the end clamps).
pub fn page_of(rows: &[AppRow], page: usize) -> (&[AppRow], views::Pager) {
    let pages = rows.len().div_ceil(PAGE_SIZE).max(1);
    let page = page.clamp(1, pages);
    let start = (page - 1) * PAGE_SIZE;
    let end = (start + PAGE_SIZE).min(rows.len());
    (
        &rows[start.min(rows.len())..end],
        views::Pager {
            page,
            pages,
            total: rows.len(),
        },
    )
}

/// How many apps are in each state (label, tone, count), most first: the dashboard's summary
/// line, so trouble on another page is not missed.
pub fn summary(
    rows: &[AppRow],
    snap: &crate::service::status::Snapshot,
) -> Vec<(String, &'static str, usize)> {
    let mut counts: std::collections::BTreeMap<(String, &'static str), usize> = Default::default();
    for a in rows {
        let s = status_of(a, snap);
        *counts.entry((s.label, s.tone)).or_default() += 1;
    }
    let mut out: Vec<(String, &'static str, usize)> =
        counts.into_iter().map(|((l, t), n)| (l, t, n)).collect();
    out.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    out
}

/// The dashboard's app table rows, for its self-refresh.
pub async fn app_rows(
    State(state): State<AppState>,
    _admin: Admin,
    axum::extract::Query(at): axum::extract::Query<PageQuery>,
    page: Page,
) -> Result<Response, AppError> {
    let rows = state.store.apps().await?;
    let (shown, _) = page_of(&rows, at.page);
    let apps = app_views(&state, shown, &state.status.snapshot());
    views::render(&AppRows {
        layout: page.titled(""),
        apps,
    })
}

pub fn app_views(
    state: &AppState,
    rows: &[AppRow],
    snap: &crate::service::status::Snapshot,
) -> Vec<AppView> {
    rows.iter()
        .map(|a| {
            let mut view = app_view(a, snap, &state.settings);
            view.traffic = crate::web::observe::traffic_figure(state, &a.name);
            view
        })
        .collect()
}

fn app_view(
    a: &AppRow,
    snap: &crate::service::status::Snapshot,
    settings: &crate::config::Settings,
) -> AppView {
    AppView {
        id: a.id,
        name: a.name.clone(),
        route: a.public_route.clone(),
        hosts: crate::router::app_hosts(a, settings),
        domains: a.domains.clone(),
        status: status_of(a, snap),
        port: a.internal_port,
        image: a.image_tag.clone(),
        deployed_at: a.deployment_date.clone(),
        has_previous: a.previous_image_tag.is_some(),
        is_compose: a.deployment_type == compose::DEPLOYMENT_TYPE,
        traffic: String::new(),
        services: if a.deployment_type == compose::DEPLOYMENT_TYPE {
            service_views(a, snap)
        } else {
            Vec::new()
        },
    }
}

/// Each service of a compose app once (a running container wins over an old stopped one).
fn service_views(a: &AppRow, snap: &crate::service::status::Snapshot) -> Vec<views::ServiceView> {
    let by_name = crate::service::status::stack_services(a, snap);
    by_name
        .into_iter()
        .map(|(name, c)| views::ServiceView {
            name: name.to_string(),
            state: c.health.clone().unwrap_or_else(|| c.state.clone()),
            tone: match (c.state.as_str(), c.health.as_deref()) {
                ("running", Some("unhealthy")) => "bad",
                ("running", Some("starting")) => "warn",
                ("running", _) => "ok",
                ("restarting", _) | ("created", _) => "warn",
                _ => "bad",
            },
        })
        .collect()
}

/// Extractor: the app named by the route's `{app_id}`, or a 404 page. Put it after `Admin`, so
/// a visitor who is not logged in is sent to the login page rather than told what exists.
pub struct AppById(pub AppRow);

impl FromRequestParts<AppState> for AppById {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        row_by_path_id(parts, state, "Application not found", |id| {
            state.store.app(id)
        })
        .await
        .map(AppById)
    }
}

pub async fn app_page(
    State(state): State<AppState>,
    _admin: Admin,
    AppById(app): AppById,
    page: Page,
) -> Result<Response, AppError> {
    render_app_page(&state, page, &app, StatusCode::OK, None).await
}

/// The app's memory and CPU over the last hour, as two inline SVG charts.
fn resource_charts(state: &AppState, app: &AppRow) -> (String, String) {
    use crate::web::charts::{Chart, mib, svg};
    let history = state.stats.app_history(&app.name);
    let Some(last) = history.last() else {
        return (String::new(), String::new());
    };
    let now = crate::clock::now_unix();
    let peak_mem = history.iter().map(|p| p.memory_bytes).max().unwrap_or(0) as f64;
    let peak_cpu = history.iter().map(|p| p.cpu_percent).fold(0.0, f64::max);
    let memory = svg(
        &Chart {
            title: "Memory, last hour",
            summary: format!(
                "{} now, {} at most, limit {} MiB",
                mib(last.memory_bytes as f64),
                mib(peak_mem),
                app.memory_mb
            ),
            floor_max: 16.0 * 1024.0 * 1024.0,
            unit: "bytes",
            limit: Some(f64::from(app.memory_mb) * 1024.0 * 1024.0),
        },
        &history
            .iter()
            .map(|p| (p.at, p.memory_bytes as f64))
            .collect::<Vec<_>>(),
        now,
        3600,
    );
    let cpu = svg(
        &Chart {
            title: "CPU, last hour",
            summary: format!(
                "{:.1}% of one core now, {:.1}% at most, limit {}%",
                last.cpu_percent, peak_cpu, app.cpu_percent
            ),
            floor_max: 5.0,
            unit: "%",
            limit: Some(f64::from(app.cpu_percent)),
        },
        &history
            .iter()
            .map(|p| (p.at, p.cpu_percent))
            .collect::<Vec<_>>(),
        now,
        3600,
    );
    (memory, cpu)
}

async fn render_app_page(
    state: &AppState,
    page: Page,
    app: &AppRow,
    status: StatusCode,
    env_error: Option<String>,
) -> Result<Response, AppError> {
    render_app_page_with(state, page, app, status, env_error, None).await
}

async fn render_app_page_with(
    state: &AppState,
    page: Page,
    app: &AppRow,
    status: StatusCode,
    env_error: Option<String>,
    domain_error: Option<String>,
) -> Result<Response, AppError> {
    let (memory_chart, cpu_chart) = resource_charts(state, app);
    let (rate_chart, latency_chart) = crate::web::observe::request_charts(state, &app.name);
    let stored_env = state.store.env(app.id).await?;
    let env_version = crate::store::env_version(&stored_env);
    let env_keys: Vec<String> = stored_env.into_iter().map(|v| v.key).collect();
    let env_text = env_keys
        .iter()
        .map(|k| format!("{k}={UNCHANGED}\n"))
        .collect();
    let deploys = state.store.deploys_of(app.id, 10).await?;
    let snap = state.status.snapshot();
    let view = AppPage {
        layout: page.titled(&app.name),
        app: app_view(app, &snap, &state.settings),
        env_text,
        env_version,
        env_keys,
        env_error,
        domain_error,
        deploys,
        health_path: app.health_path.clone().unwrap_or_default(),
        memory_mb: app.memory_mb,
        cpu_percent: app.cpu_percent,
        previous_image: app.previous_image_tag.clone().unwrap_or_default(),
        memory_chart,
        cpu_chart,
        rate_chart,
        latency_chart,
        stats_period: state.settings.stats_interval.as_secs(),
        outbound: app.outbound,
        outbound_switch: state.settings.builtin_router,
        swarm: crate::web::nodes::panel(state, app).await,
        mount_choices: volumes::mount_choices(
            state,
            &Mounts::from_column(app.volume_mounts.as_deref()),
        )
        .await?,
    };
    views::render_with_status(status, &view)
}

#[derive(Deserialize, Default)]
pub struct BackForm {
    #[serde(default)]
    back: String,
}

fn back_to(back: &str) -> String {
    if is_local_redirect(back) {
        back.to_string()
    } else {
        "/admin".into()
    }
}

async fn do_action(
    state: &AppState,
    session_id: &str,
    client: &ClientInfo,
    app: AppRow,
    action: Option<Action>,
    back: &str,
) -> Result<Response, AppError> {
    // The original's toggle: stop what runs, start what does not, whatever its health says.
    let action = action.unwrap_or_else(|| {
        if status_of(&app, &state.status.snapshot()).running {
            Action::Stop
        } else {
            Action::Start
        }
    });
    let event = Event::new(action.as_str(), "application", app.name.clone())
        .details(json!({"app_id": app.id, "container_id": app.container_id}));
    match lifecycle::act(state, &app, action).await {
        Ok(msg) => {
            let _ = state.audit.record(&client.actor(true), event).await;
            flash(state, session_id, "success", msg).await?;
        }
        Err(e) => {
            let msg = format!("Could not {} {}: {e}", action.as_str(), app.name);
            let _ = state
                .audit
                .record(&client.actor(true), event.failed(e.to_string()))
                .await;
            flash(state, session_id, "error", msg).await?;
        }
    }
    Ok(Redirect::to(&back_to(back)).into_response())
}

macro_rules! action_handler {
    ($name:ident, $action:expr) => {
        pub async fn $name(
            State(state): State<AppState>,
            Admin(session): Admin,
            client: ClientInfo,
            AppById(app): AppById,
            Form(form): Form<BackForm>,
        ) -> Result<Response, AppError> {
            do_action(&state, &session.id_hash, &client, app, $action, &form.back).await
        }
    };
}

action_handler!(start, Some(Action::Start));
action_handler!(stop, Some(Action::Stop));
action_handler!(restart, Some(Action::Restart));
action_handler!(toggle, None);

pub async fn delete(
    State(state): State<AppState>,
    Admin(session): Admin,
    client: ClientInfo,
    AppById(app): AppById,
    Form(form): Form<DeleteForm>,
) -> Result<Response, AppError> {
    let event = Event::new("delete", "application", app.name.clone());
    match lifecycle::delete(&state, &app, !form.delete_volumes.is_empty()).await {
        Ok(deleted) => {
            let details = json!({"app_id": app.id, "public_route": app.public_route, "domains": app.domains, "image_tag": app.image_tag, "removed": deleted});
            let _ = state
                .audit
                .record(&client.actor(true), event.details(details))
                .await;
            let mut msg = format!(
                "Application {} deleted: {} container(s) and {} image(s) removed.",
                app.name, deleted.containers, deleted.images
            );
            if deleted.volumes > 0 {
                msg.push_str(&format!(" {} stack volume(s) deleted.", deleted.volumes));
            }
            if deleted.home_route_reset {
                msg.push_str(" The home route pointed to it and was cleared.");
            }
            flash(&state, &session.id_hash, "success", msg).await?;
        }
        Err(e) => {
            let _ = state
                .audit
                .record(&client.actor(true), event.failed(e.to_string()))
                .await;
            flash(
                &state,
                &session.id_hash,
                "error",
                format!(
                    "Error deleting application {}: {e}. Nothing was removed from the list.",
                    app.name
                ),
            )
            .await?;
            return Ok(Redirect::to(&format!("/admin/apps/{}", app.id)).into_response());
        }
    }
    Ok(Redirect::to("/admin").into_response())
}

#[derive(Deserialize)]
pub struct DeleteForm {
    /// A compose app's stack volumes that hold data go only when this is ticked.
    #[serde(default)]
    delete_volumes: String,
}

/// `POST /admin/update/{app_id}` (the original's URL): a new ZIP, built while the old version
/// keeps serving.
pub async fn update(
    State(state): State<AppState>,
    Admin(session): Admin,
    client: ClientInfo,
    AppById(app): AppById,
    multipart: Multipart,
) -> Result<Response, AppError> {
    let actor = client.actor(true);
    let upload = match read_upload(&state, multipart).await {
        Ok(u) => u,
        Err(e) => {
            return refuse(&state, &session.id_hash, &actor, &app, "update", e).await;
        }
    };
    // The form's volume fields replace the mounts; a client that sends none keeps them.
    let mounts = if upload.field("volume_form").is_empty() {
        Ok(None)
    } else {
        volumes::mounts_from_form(&state, &upload.fields)
            .await
            .map(Some)
    };
    let zip = mounts.and_then(|m| Ok((m, uploaded_zip(&upload)?)));
    let (mounts, zip) = match zip {
        Ok(v) => v,
        Err(e) => return refuse(&state, &session.id_hash, &actor, &app, "update", e).await,
    };
    match apps::update(&state, &app, &zip, mounts, &actor).await {
        Ok(deploy_id) => Ok(Redirect::to(&format!("/admin/deploys/{deploy_id}")).into_response()),
        Err(e) => said(&state, &session.id_hash, &app, "update", e).await,
    }
}

/// A refusal from the service (already audited there), said on the app's page.
async fn said(
    state: &AppState,
    session_id: &str,
    app: &AppRow,
    action: &'static str,
    e: AppsError,
) -> Result<Response, AppError> {
    let AppsError::Refused(r) = e else {
        return Err(e.into());
    };
    flash(
        state,
        session_id,
        "error",
        format!("Could not {action} {}: {}", app.name, r.message),
    )
    .await?;
    Ok(Redirect::to(&format!("/admin/apps/{}", app.id)).into_response())
}

/// A refused action on an app: audited as failed, said on the app's page.
async fn refuse(
    state: &AppState,
    session_id: &str,
    actor: &crate::audit::Actor,
    app: &AppRow,
    action: &'static str,
    msg: String,
) -> Result<Response, AppError> {
    let _ = state
        .audit
        .record(
            actor,
            Event::new(action, "application", app.name.clone()).failed(&msg),
        )
        .await;
    flash(
        state,
        session_id,
        "error",
        format!("Could not {action} {}: {msg}", app.name),
    )
    .await?;
    Ok(Redirect::to(&format!("/admin/apps/{}", app.id)).into_response())
}

/// Where the browser goes once a deploy started: its log.
fn to_deploy(deploy_id: i64) -> Response {
    Redirect::to(&format!("/admin/deploys/{deploy_id}")).into_response()
}

pub async fn rollback(
    State(state): State<AppState>,
    Admin(session): Admin,
    client: ClientInfo,
    AppById(app): AppById,
) -> Result<Response, AppError> {
    match apps::rollback(&state, &app, &client.actor(true)).await {
        Ok(id) => Ok(to_deploy(id)),
        Err(e) => said(&state, &session.id_hash, &app, "rollback", e).await,
    }
}

/// Starts the app's current image again in a fresh container (for an app whose container went
/// missing, or to apply settings).
pub async fn redeploy(
    State(state): State<AppState>,
    Admin(session): Admin,
    client: ClientInfo,
    AppById(app): AppById,
) -> Result<Response, AppError> {
    match apps::redeploy(&state, &app, &client.actor(true)).await {
        Ok(id) => Ok(to_deploy(id)),
        Err(e) => said(&state, &session.id_hash, &app, "redeploy", e).await,
    }
}

#[derive(Deserialize)]
pub struct DomainForm {
    #[serde(default)]
    domain: String,
}

/// Adds a custom domain to the app (checked, unique across apps, audited, routed at once).
pub async fn add_domain(
    State(state): State<AppState>,
    Admin(session): Admin,
    client: ClientInfo,
    AppById(app): AppById,
    page: Page,
    Form(form): Form<DomainForm>,
) -> Result<Response, AppError> {
    use crate::service::domains::{self, DomainError};
    match domains::add(&state, &app, &form.domain, &client.actor(true)).await {
        Ok(host) => {
            let note = if state.settings.builtin_router {
                format!("{} now answers at {host}.", app.name)
            } else {
                format!(
                    "{host} added; Traefik serves it from the next deploy of {}.",
                    app.name
                )
            };
            flash(&state, &session.id_hash, "success", note).await?;
            Ok(Redirect::to(&format!("/admin/apps/{}", app.id)).into_response())
        }
        Err(DomainError::Store(e)) => Err(e.into()),
        Err(e) => {
            let status = match e {
                DomainError::Taken { .. } => StatusCode::CONFLICT,
                _ => StatusCode::BAD_REQUEST,
            };
            render_app_page_with(&state, page, &app, status, None, Some(e.to_string())).await
        }
    }
}

/// Removes one of the app's custom domains (audited; routed at once).
pub async fn remove_domain(
    State(state): State<AppState>,
    Admin(session): Admin,
    client: ClientInfo,
    AppById(app): AppById,
    page: Page,
    Form(form): Form<DomainForm>,
) -> Result<Response, AppError> {
    use crate::service::domains::{self, DomainError};
    match domains::remove(&state, &app, &form.domain, &client.actor(true)).await {
        Ok(host) => {
            flash(
                &state,
                &session.id_hash,
                "success",
                format!("{host} removed from {}.", app.name),
            )
            .await?;
            Ok(Redirect::to(&format!("/admin/apps/{}", app.id)).into_response())
        }
        Err(DomainError::Store(e)) => Err(e.into()),
        Err(e) => {
            let status = match e {
                DomainError::NotFound(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::BAD_REQUEST,
            };
            render_app_page_with(&state, page, &app, status, None, Some(e.to_string())).await
        }
    }
}

#[derive(Deserialize)]
pub struct EnvForm {
    #[serde(default)]
    env: String,
    /// The version of the variables the form was made from (absent: a script that does not
    /// care, and the save is unconditional).
    #[serde(default)]
    env_version: Option<String>,
}

/// Replaces the app's variables (lines reading `(unchanged)` keep their value) and redeploys it
/// with them.
pub async fn set_env(
    State(state): State<AppState>,
    Admin(session): Admin,
    client: ClientInfo,
    AppById(app): AppById,
    page: Page,
    Form(form): Form<EnvForm>,
) -> Result<Response, AppError> {
    let parsed = match parse_env_lines(&form.env) {
        Ok(p) => p,
        Err(e) => {
            return render_app_page(&state, page, &app, StatusCode::BAD_REQUEST, Some(e)).await;
        }
    };
    let old = lifecycle::decrypted_env(&state, app.id)
        .await
        .unwrap_or_default();
    let merged: Vec<(String, String)> = parsed
        .into_iter()
        .map(|(k, v)| {
            if v == UNCHANGED {
                let kept = old
                    .iter()
                    .find(|(ok, _)| *ok == k)
                    .map(|(_, ov)| ov.clone())
                    .unwrap_or_default();
                (k, kept)
            } else {
                (k, v)
            }
        })
        .collect();
    match apps::save_env(&state, &app, merged, form.env_version, &client.actor(true)).await {
        Ok(Some(deploy_id)) => Ok(to_deploy(deploy_id)),
        Ok(None) => {
            flash(
                &state,
                &session.id_hash,
                "success",
                "Environment saved; it applies at the next deploy.".into(),
            )
            .await?;
            Ok(Redirect::to(&format!("/admin/apps/{}", app.id)).into_response())
        }
        Err(AppsError::Refused(r)) => {
            render_app_page(&state, page, &app, StatusCode::CONFLICT, Some(r.message)).await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct NetworkForm {
    /// `on` or `off`.
    outbound: String,
}

/// Turns the app's outbound access on or off and redeploys it onto the matching network.
pub async fn set_network(
    State(state): State<AppState>,
    Admin(session): Admin,
    client: ClientInfo,
    AppById(app): AppById,
    page: Page,
    Form(form): Form<NetworkForm>,
) -> Result<Response, AppError> {
    let outbound = match form.outbound.as_str() {
        "on" => true,
        "off" => false,
        _ => {
            return render_app_page(
                &state,
                page,
                &app,
                StatusCode::BAD_REQUEST,
                Some("Outbound access is either on or off.".into()),
            )
            .await;
        }
    };
    match apps::set_outbound(&state, &app, outbound, &client.actor(true)).await {
        Ok(Some(deploy_id)) => Ok(to_deploy(deploy_id)),
        Ok(None) => {
            flash(
                &state,
                &session.id_hash,
                "success",
                "Saved; it applies at the next deploy.".into(),
            )
            .await?;
            Ok(Redirect::to(&format!("/admin/apps/{}", app.id)).into_response())
        }
        Err(AppsError::Refused(r)) => {
            render_app_page(&state, page, &app, StatusCode::CONFLICT, Some(r.message)).await
        }
        Err(e) => Err(e.into()),
    }
}

/// The container's last 500 log lines.
#[derive(Deserialize, Default)]
pub struct LogsQuery {
    /// A compose app's service; its main service when absent.
    #[serde(default)]
    service: String,
}

/// The container whose logs are shown: the app's (its main service), or one service's.
fn service_container(
    app: &AppRow,
    snap: &crate::service::status::Snapshot,
    service: &str,
) -> String {
    if let Some(task) = crate::service::swarm::log_container(app, snap) {
        return task;
    }
    if service.is_empty() {
        return app.container_id.clone();
    }
    crate::service::status::stack_services(app, snap)
        .get(service)
        .map(|c| c.id.clone())
        .unwrap_or_default()
}

pub async fn logs_page(
    State(state): State<AppState>,
    _admin: Admin,
    AppById(app): AppById,
    axum::extract::Query(q): axum::extract::Query<LogsQuery>,
    page: Page,
) -> Result<Response, AppError> {
    let snap = state.status.snapshot();
    let container = service_container(&app, &snap, &q.service);
    let (lines, error) = match state.engine.client().await {
        Err(e) => (String::new(), Some(e.to_string())),
        Ok(engine) => {
            let mut out = String::new();
            let mut err = None;
            let collect = async {
                let mut stream = Box::pin(engine.logs(&container, 500, false));
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(l) => out.push_str(&l),
                        Err(e) => {
                            err = Some(e.to_string());
                            break;
                        }
                    }
                }
            };
            if tokio::time::timeout(Duration::from_secs(5), collect)
                .await
                .is_err()
            {
                err = Some("the engine took too long to send the logs".into());
            }
            (out, err)
        }
    };
    let title = if q.service.is_empty() {
        format!("Logs of {}", app.name)
    } else {
        format!("Logs of {} / {}", app.name, q.service)
    };
    views::render(&LogsPage {
        layout: page.titled(&title),
        app: app_view(&app, &snap, &state.settings),
        lines,
        error,
        service: q.service,
    })
}

/// New log lines as they are written (server-sent events), for the logs page's follow mode.
pub async fn logs_events(
    State(state): State<AppState>,
    _admin: Admin,
    AppById(app): AppById,
    axum::extract::Query(q): axum::extract::Query<LogsQuery>,
) -> Result<Response, AppError> {
    let engine = match state.engine.client().await {
        Ok(e) => e,
        Err(e) => {
            return Ok(error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                e.to_string(),
            ));
        }
    };
    let container = service_container(&app, &state.status.snapshot(), &q.service);
    let stream = async_stream_logs(engine, container);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn async_stream_logs(
    engine: crate::docker::Engine,
    container: String,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(256);
    tokio::spawn(async move {
        let mut stream = Box::pin(engine.logs(&container, 0, true));
        loop {
            // A quiet app writes nothing for hours: the follow ends when the browser goes (the
            // keep-alive write fails, the receiver is dropped), not at the next line, so no
            // engine connection outlives its page.
            let line = tokio::select! {
                line = stream.next() => line,
                () = tx.closed() => break,
            };
            match line {
                Some(Ok(line)) => {
                    if tx.send(line).await.is_err() {
                        break;
                    }
                }
                _ => break,
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|l| (line_event(l), rx))
    })
}
