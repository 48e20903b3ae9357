//! Server-rendered pages (askama templates under `templates/`, compiled into the binary) and
//! the layout data every page shares. Pages carry no inline script or style (the CSP forbids
//! both) and work without JavaScript.

use askama::Template;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::audit::AuditEntry;
use crate::web::assets;
use crate::web::errors::{AppError, Rendered};
use crate::web::session::CurrentSession;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flash {
    pub kind: String,
    pub text: String,
}

/// What the base template needs: navigation, the CSRF token, banners and messages.
pub struct Layout {
    pub title: String,
    pub csrf_token: String,
    pub admin: bool,
    pub default_password_banner: bool,
    pub flashes: Vec<Flash>,
    pub css: &'static str,
    pub js: &'static str,
    pub logo: &'static str,
}

/// Extractor: the layout for this request, pending messages taken from the session.
pub struct Page(pub Layout);

impl FromRequestParts<AppState> for Page {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let session = parts
            .extensions
            .get::<CurrentSession>()
            .and_then(|s| s.0.clone());
        let flashes = match &session {
            Some(s) => serde_json::from_str(&state.store.take_flashes(s.id_hash.clone()).await?)
                .unwrap_or_default(),
            None => Vec::new(),
        };
        Ok(Page(Layout {
            title: String::new(),
            csrf_token: crate::web::csrf::token_for(state, &parts.extensions),
            admin: session.is_some(),
            default_password_banner: session.is_some() && state.passwords.default_in_use(),
            flashes,
            css: assets::url("style.css"),
            js: assets::url("app.js"),
            logo: assets::url("logo.svg"),
        }))
    }
}

impl Page {
    pub fn titled(self, title: &str) -> Layout {
        Layout {
            title: title.into(),
            ..self.0
        }
    }
}

/// Renders a template as a 200 page.
pub fn render<T: Template>(t: &T) -> Result<Response, AppError> {
    Ok(Html(t.render()?).into_response())
}

/// Renders a template as a complete page with an error status (a form shown again with why).
pub fn render_with_status<T: Template>(status: StatusCode, t: &T) -> Result<Response, AppError> {
    Ok((status, Rendered, Html(t.render()?)).into_response())
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub layout: Layout,
    pub error: Option<String>,
    pub next: String,
    pub env_override: bool,
}

#[derive(Template)]
#[template(path = "index.html")]
pub struct IndexPage {
    pub layout: Layout,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
pub struct DashboardPage {
    pub layout: Layout,
    /// `Ok("Docker Engine 20.10 (API 1.41)")`, `Err(why)`, or checking.
    pub engine: Option<Result<String, String>>,
    pub apps: Vec<AppView>,
    /// Containers with our label but no app row: listed, never deleted silently.
    pub orphans: Vec<OrphanView>,
    pub pager: Pager,
    /// How many apps are in each state, over every page.
    pub summary: Vec<(String, &'static str, usize)>,
}

/// Which page of the app table is shown (100 apps a page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pager {
    pub page: usize,
    pub pages: usize,
    pub total: usize,
}

/// One app as the dashboard shows it.
pub struct AppView {
    pub id: i64,
    pub name: String,
    /// The path route; empty for an app served at host names only.
    pub route: String,
    /// Every host name the app answers at (`<app>.<apps domain>` first, then its domains).
    pub hosts: Vec<String>,
    /// Its custom domains (removable on its page).
    pub domains: Vec<String>,
    pub status: crate::web::health::StatusView,
    pub port: u16,
    pub image: String,
    pub deployed_at: String,
    pub has_previous: bool,
    pub is_compose: bool,
    /// Requests in the last hour from the access log ("" without traffic).
    pub traffic: String,
    /// A compose app's services with their state, shown under it.
    pub services: Vec<ServiceView>,
}

pub struct ServiceView {
    pub name: String,
    /// The engine's word: running, exited, restarting…
    pub state: String,
    /// `ok`, `warn`, `bad` (shape and word carry it too).
    pub tone: &'static str,
}

pub struct OrphanView {
    pub name: String,
    pub app: String,
    pub state: String,
}

/// The table body alone, for the dashboard's self-refresh.
#[derive(Template)]
#[template(path = "app_rows.html")]
pub struct AppRows {
    pub layout: Layout,
    pub apps: Vec<AppView>,
}

/// The values of the upload form, kept when it is shown again with an error.
#[derive(Debug, Clone, Default)]
pub struct UploadValues {
    pub app_name: String,
    pub public_route: String,
    /// Custom domains, as typed (spaces, commas or lines between them).
    pub domains: String,
    pub internal_port: String,
    pub health_path: String,
    pub env: String,
    pub memory_mb: String,
    pub cpu_percent: String,
    /// Swarm mode: replicas and placement constraints, as typed.
    pub replicas: String,
    pub constraints: String,
}

#[derive(Template)]
#[template(path = "upload.html")]
pub struct UploadPage {
    pub layout: Layout,
    pub values: UploadValues,
    pub error: Option<String>,
    pub max_mb: u64,
    pub max_memory_mb: u32,
    pub max_cpu_percent: u32,
    /// MILKCRATE_APPS_DOMAIN, for the hints.
    pub apps_domain: Option<String>,
    pub mount_choices: Vec<MountChoice>,
    /// Swarm mode: the form asks for replicas and placement constraints.
    pub swarm: bool,
}

#[derive(Template)]
#[template(path = "deploy.html")]
pub struct DeployPage {
    pub layout: Layout,
    pub deploy: crate::store::DeployRow,
    pub running: bool,
}

#[derive(Template)]
#[template(path = "app.html")]
pub struct AppPage {
    pub layout: Layout,
    pub app: AppView,
    pub env_text: String,
    pub env_version: String,
    pub env_keys: Vec<String>,
    pub env_error: Option<String>,
    /// Why the last domain change was refused.
    pub domain_error: Option<String>,
    pub deploys: Vec<crate::store::DeployRow>,
    pub health_path: String,
    pub memory_mb: u32,
    pub cpu_percent: u32,
    pub previous_image: String,
    pub mount_choices: Vec<MountChoice>,
    /// Inline SVG charts of the last hour (drawn by `charts`), empty before the first sample.
    pub memory_chart: String,
    pub cpu_chart: String,
    /// Request rate and latency from the access log, empty without traffic.
    pub rate_chart: String,
    pub latency_chart: String,
    pub stats_period: u64,
    /// Whether the app may open connections outside milkcrate's networks.
    pub outbound: bool,
    /// False in Traefik mode without MILKCRATE_TRAEFIK_CONTAINERS, where every app shares
    /// Traefik's open network.
    pub outbound_switch: bool,
    /// Swarm mode: replicas, tasks and their nodes (`web/nodes.rs`).
    pub swarm: Option<crate::web::nodes::SwarmPanel>,
}

#[derive(Template)]
#[template(path = "logs.html")]
pub struct LogsPage {
    pub layout: Layout,
    pub app: AppView,
    pub lines: String,
    pub error: Option<String>,
    /// The compose service shown ("" for the app's main container).
    pub service: String,
}

#[derive(Template)]
#[template(path = "settings.html")]
pub struct SettingsPage {
    pub layout: Layout,
    pub home_route: String,
    pub home_error: Option<String>,
    pub password_error: Option<String>,
    pub env_override: bool,
}

pub struct AuditRow {
    pub entry: AuditEntry,
    pub details: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
pub struct AuditPage {
    pub layout: Layout,
    pub rows: Vec<AuditRow>,
    pub action: String,
    pub actions: &'static [&'static str],
    pub newer: Option<String>,
    pub older: Option<String>,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    css: &'static str,
    logo: &'static str,
    status: u16,
    reason: &'a str,
    message: &'a str,
}

/// A self-contained error page (no session needed, so it renders even when the store fails).
pub fn error_page(status: StatusCode, message: &str) -> String {
    let page = ErrorPage {
        css: assets::url("style.css"),
        logo: assets::url("logo.svg"),
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("Error"),
        message,
    };
    page.render()
        .unwrap_or_else(|_| format!("{} {}", status.as_u16(), message))
}

/// One volume offered in the mount fields of the deploy and update forms.
pub struct MountChoice {
    pub id: i64,
    pub name: String,
    pub checked: bool,
    pub path: String,
    pub read_only: bool,
}

/// One volume in the list.
pub struct VolumeItem {
    pub id: i64,
    pub name: String,
    pub docker_name: String,
    pub description: String,
    pub created: String,
    pub files: u64,
    pub size: String,
    /// Why the engine could not be read (the figures are then the last ones counted).
    pub problem: Option<String>,
    pub used_by: Vec<String>,
}

#[derive(Template)]
#[template(path = "volumes.html")]
pub struct VolumeListPage {
    pub layout: Layout,
    pub volumes: Vec<VolumeItem>,
}

#[derive(Template)]
#[template(path = "volume_create.html")]
pub struct VolumeCreatePage {
    pub layout: Layout,
    pub name: String,
    pub description: String,
    pub error: Option<String>,
}

/// A file or folder directly in the folder shown.
pub struct VolumeChild {
    pub name: String,
    pub path: String,
    /// `path`, URL-encoded for links.
    pub link: String,
    pub is_dir: bool,
    pub size: String,
    pub files: u64,
}

#[derive(Template)]
#[template(path = "volume.html")]
pub struct VolumePage {
    pub layout: Layout,
    pub vol: crate::store::VolumeRow,
    pub used_by: Vec<String>,
    pub files: u64,
    pub size: String,
    /// The folder shown, relative to the volume's root ("" for the root).
    pub folder: String,
    /// (URL-encoded path, name) of each folder down to this one.
    pub crumbs: Vec<(String, String)>,
    pub entries: Vec<VolumeChild>,
    pub problem: Option<String>,
    pub max_mb: u64,
}

/// One host name on the Certificates page.
pub struct CertRow {
    pub host: String,
    /// `uploaded`, `ACME`, `SSL_CERT_FILE` or `none yet`.
    pub source: &'static str,
    pub issuer: String,
    pub expires: String,
    pub next_renewal: String,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub dns: String,
    pub uploaded: bool,
    pub can_retry: bool,
}

#[derive(Template)]
#[template(path = "certificates.html")]
pub struct CertificatesPage {
    pub layout: Layout,
    pub rows: Vec<CertRow>,
    pub acme_on: bool,
    pub https_listen: String,
    pub error: Option<String>,
}
