//! An app's page: its status, charts, deploys, environment (names only), domains and mounts.
//! The action handlers render it again when a form on it was refused.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use crate::app::AppState;
use crate::domain::volume::Mounts;
use crate::service::apps::UNCHANGED;
use crate::store::AppRow;
use crate::web::errors::AppError;
use crate::web::session::Admin;
use crate::web::views::{self, AppPage, Page};
use crate::web::volumes;

use super::{AppById, app_view};

/// `GET /admin/apps/{app_id}`.
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

pub(super) async fn render_app_page(
    state: &AppState,
    page: Page,
    app: &AppRow,
    status: StatusCode,
    env_error: Option<String>,
) -> Result<Response, AppError> {
    render_app_page_with(state, page, app, status, env_error, None).await
}

pub(super) async fn render_app_page_with(
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
        outbound_switch: crate::service::apps_isolated(&state.settings),
        swarm: crate::web::nodes::panel(state, app).await,
        mount_choices: volumes::mount_choices(
            state,
            &Mounts::from_column(app.volume_mounts.as_deref()),
        )
        .await?,
    };
    views::render_with_status(status, &view)
}
