//! Handlers for apps, one file per page: `upload` (the deploy form), `deploys` (a deploy's page
//! and live log), `page` (an app's page), `actions` (start, stop, restart, update, rollback,
//! redeploy, delete), `settings` (environment, outbound network, custom domains) and `logs`.
//! This file keeps what several pages share: the dashboard's table rows, an app's view and the
//! `AppById` extractor. Handlers are thin: parse the request, make one call to
//! `service::apps` (which audits and refuses), render. Every action is a POST (CSRF is checked
//! router-wide).

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::Response;
use serde::Deserialize;

use crate::app::AppState;
use crate::service::compose;
use crate::service::status::status_of;
use crate::store::AppRow;
use crate::web::errors::{AppError, row_by_path_id};
use crate::web::health::{label, tone};
use crate::web::session::Admin;
use crate::web::views::{self, AppRows, AppView, Page};

mod actions;
mod deploys;
mod logs;
mod page;
mod settings;
mod upload;

pub use actions::{delete, redeploy, restart, rollback, start, stop, toggle, update};
pub use deploys::{deploy_events, deploy_page};
pub use logs::{logs_events, logs_page};
pub use page::app_page;
pub use settings::{add_domain, remove_domain, set_env, set_network};
pub(crate) use upload::{read_upload, uploaded_zip};
pub use upload::{upload, upload_page};

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
        *counts
            .entry((label(&s.health), tone(&s.health)))
            .or_default() += 1;
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
        status: status_of(a, snap).into(),
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
