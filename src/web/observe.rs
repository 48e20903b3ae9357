//! What the admin sees of app traffic and alerts: an app's Requests tab (recent access lines,
//! filters, live follow, last-hour totals and percentiles), `GET /metrics` for Prometheus
//! (only to its bearer token on this listener, or on its own `MILKCRATE_METRICS_LISTEN`
//! address; never open by default), and the Notifications page (channels, test sends,
//! every delivery's result). Channel changes are POSTs behind CSRF, and audited.

use std::convert::Infallible;
use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::json;

use crate::app::{AppState, StartError};
use crate::audit::Event;
use crate::service::access::AccessLine;
use crate::service::alerts::{self, AlertKind, Alerting, NewChannel};
use crate::web::apps::AppById;
use crate::web::client::ClientInfo;
use crate::web::errors::AppError;
use crate::web::form::parse_strict;
use crate::web::pages::flash;
use crate::web::session::Admin;
use crate::web::views::{self, Layout, Page};

/// Starts the alert watchers and the separate metrics listener, if configured.
pub async fn start(state: &AppState) -> Result<Vec<tokio::task::JoinHandle<()>>, StartError> {
    let mut tasks = vec![
        tokio::spawn(alerts::watch_exits(state.alert_watch())),
        tokio::spawn(alerts::watch_conditions(state.alert_watch())),
    ];
    if let Some(addr) = state.settings.observe.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Listen {
                addr: addr.to_string(),
                source,
            })?;
        tracing::info!(%addr, "serving /metrics");
        let router = axum::Router::new()
            .route("/metrics", axum::routing::get(metrics_on_own_listener))
            .with_state(state.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        }));
    }
    Ok(tasks)
}

fn bearer_ok(state: &AppState, headers: &HeaderMap) -> Option<bool> {
    let token = state.settings.observe.metrics_token.as_deref()?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    Some(crate::secrets::ct_eq(
        given.trim().as_bytes(),
        token.as_bytes(),
    ))
}

fn metrics_response(state: &AppState) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        state.metrics.encode(&crate::service::metrics::Gauges {
            engine: &state.engine,
            access: &state.access,
            stats: &state.stats,
            certs: &state.certs,
        }),
    )
        .into_response()
}

fn refused() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "A valid bearer token (MILKCRATE_METRICS_TOKEN) is required.\n",
    )
        .into_response()
}

/// `/metrics` on the main listener: only with MILKCRATE_METRICS_TOKEN set and presented.
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match bearer_ok(&state, &headers) {
        None => crate::web::pages::not_found().await,
        Some(false) => refused(),
        Some(true) => metrics_response(&state),
    }
}

/// `/metrics` on MILKCRATE_METRICS_LISTEN: open to whoever reaches that address, unless a
/// token is set too.
async fn metrics_on_own_listener(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match bearer_ok(&state, &headers) {
        Some(false) => refused(),
        _ => metrics_response(&state),
    }
}

#[derive(Deserialize, Default)]
pub struct RequestsQuery {
    /// `2`…`5` for 2xx…5xx; empty for all.
    #[serde(default)]
    class: String,
    /// Lines whose path contains this.
    #[serde(default)]
    path: String,
}

impl RequestsQuery {
    fn keeps(&self, l: &AccessLine) -> bool {
        let class_ok = match self.class.parse::<u16>() {
            Ok(c) => l.class() == c,
            Err(_) => true,
        };
        class_ok && (self.path.is_empty() || l.path.contains(&self.path))
    }
}

pub struct RequestRow {
    pub time: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub tone: &'static str,
    pub bytes: u64,
    pub duration: String,
    pub upstream: String,
    pub client_ip: String,
    pub user_agent: String,
}

fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else {
        format!("{v:.1} ms")
    }
}

fn row_of(l: &AccessLine) -> RequestRow {
    RequestRow {
        time: l.time.clone(),
        method: l.method.to_string(),
        path: l.path.clone(),
        status: l.status,
        tone: match l.class() {
            2 | 3 => "ok",
            4 => "warn",
            _ => "bad",
        },
        bytes: l.bytes,
        duration: ms(l.duration_ms),
        upstream: l.upstream_ms.map(ms).unwrap_or_else(|| "—".into()),
        client_ip: l.client_ip.to_string(),
        user_agent: l.user_agent.clone(),
    }
}

/// One line of the live follow, as text.
pub fn follow_line(l: &AccessLine) -> String {
    format!(
        "{} {} {} {} {} B {} {}\n",
        l.time,
        l.method,
        l.path,
        l.status,
        l.bytes,
        ms(l.duration_ms),
        l.client_ip
    )
}

#[derive(Template)]
#[template(path = "requests.html")]
pub struct RequestsPage {
    pub layout: Layout,
    pub app_id: i64,
    pub app_name: String,
    pub enabled: bool,
    pub rows: Vec<RequestRow>,
    pub class: String,
    pub path: String,
    pub query: String,
    pub total: u64,
    pub by_class: Vec<(String, u64)>,
    pub p50: String,
    pub p95: String,
    pub p99: String,
    pub dropped: u64,
    pub rate_chart: String,
    pub latency_chart: String,
}

/// How many lines the tab lists.
const SHOWN: usize = 200;

pub async fn requests_page(
    State(state): State<AppState>,
    _admin: Admin,
    AppById(app): AppById,
    Query(q): Query<RequestsQuery>,
    page: Page,
) -> Result<Response, AppError> {
    let now = crate::clock::now_unix();
    let rows = state
        .access
        .recent(&app.name, SHOWN, |l| q.keeps(l))
        .iter()
        .map(|l| row_of(l))
        .collect();
    let s = state.access.summary(&app.name, now - 3600);
    let na = || "—".to_string();
    let (rate_chart, latency_chart) = request_charts(&state, &app.name);
    let query =
        serde_urlencoded::to_string([("class", &q.class), ("path", &q.path)]).unwrap_or_default();
    views::render(&RequestsPage {
        layout: page.titled(&format!("Requests of {}", app.name)),
        app_id: app.id,
        app_name: app.name.clone(),
        enabled: state.access.enabled(),
        rows,
        class: q.class.clone(),
        path: q.path.clone(),
        query,
        total: s.requests,
        by_class: (1..=5).map(|c| (format!("{c}xx"), s.by_class[c])).collect(),
        p50: s.p50_ms.map(ms).unwrap_or_else(na),
        p95: s.p95_ms.map(ms).unwrap_or_else(na),
        p99: s.p99_ms.map(ms).unwrap_or_else(na),
        dropped: state.access.dropped(),
        rate_chart,
        latency_chart,
    })
}

/// Request rate and p95 latency per minute over the last hour, as two charts with axes.
pub fn request_charts(state: &AppState, app: &str) -> (String, String) {
    use crate::web::charts::{Chart, svg};
    let now = crate::clock::now_unix();
    let minutes = state.access.minutes(app, now - 3600);
    if minutes.is_empty() {
        return (String::new(), String::new());
    }
    let total: u64 = minutes.iter().map(|m| m.requests).sum();
    let peak = minutes.iter().map(|m| m.requests).max().unwrap_or(0);
    let rate = svg(
        &Chart {
            title: "Requests per minute, last hour",
            summary: format!("{total} requests, at most {peak} in a minute"),
            floor_max: 10.0,
            unit: "/min",
            limit: None,
        },
        &minutes
            .iter()
            .map(|m| (m.at, m.requests as f64))
            .collect::<Vec<_>>(),
        now,
        3600,
    );
    let worst = minutes.iter().filter_map(|m| m.p95_ms).fold(0.0, f64::max);
    let latency = svg(
        &Chart {
            title: "Latency p95 per minute, last hour",
            summary: format!("at most {} in a minute", ms(worst)),
            floor_max: 10.0,
            unit: "ms",
            limit: None,
        },
        &minutes
            .iter()
            .filter_map(|m| m.p95_ms.map(|p| (m.at, p)))
            .collect::<Vec<_>>(),
        now,
        3600,
    );
    (rate, latency)
}

/// New access lines of the app as they are written (server-sent events), filtered like the
/// page; for its follow mode.
pub async fn requests_events(
    State(state): State<AppState>,
    _admin: Admin,
    AppById(app): AppById,
    Query(q): Query<RequestsQuery>,
) -> Response {
    let rx = state.access.subscribe();
    let stream = follow_stream(rx, app.name, q);
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn follow_stream(
    rx: tokio::sync::broadcast::Receiver<Arc<AccessLine>>,
    app: String,
    q: RequestsQuery,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send {
    futures_util::stream::unfold((rx, app, q), |(mut rx, app, q)| async move {
        loop {
            match rx.recv().await {
                Ok(l) if l.app == app && q.keeps(&l) => {
                    let data = serde_json::to_string(&follow_line(&l)).unwrap_or_default();
                    let event = SseEvent::default().event("line").data(data);
                    return Some((Ok(event), (rx, app, q)));
                }
                Ok(_) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    let data = serde_json::to_string(&format!(
                        "… {n} lines skipped (the page fell behind)\n"
                    ))
                    .unwrap_or_default();
                    return Some((
                        Ok(SseEvent::default().event("line").data(data)),
                        (rx, app, q),
                    ));
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

pub struct ChannelView {
    pub id: i64,
    pub name: String,
    pub summary: String,
    pub events: String,
}

pub struct DeliveryView {
    pub time: String,
    pub channel: String,
    pub event: String,
    pub subject: String,
    pub message: String,
    pub result: String,
    pub tone: &'static str,
    pub attempts: i64,
    pub error: String,
}

#[derive(Template)]
#[template(path = "notifications.html")]
pub struct NotificationsPage {
    pub layout: Layout,
    pub channels: Vec<ChannelView>,
    pub deliveries: Vec<DeliveryView>,
    pub kinds: Vec<(&'static str, &'static str, bool)>,
    pub error: Option<String>,
}

pub async fn notifications_page(
    State(state): State<AppState>,
    _admin: Admin,
    page: Page,
) -> Result<Response, AppError> {
    render_notifications(&state, page, StatusCode::OK, None).await
}

async fn render_notifications(
    state: &AppState,
    page: Page,
    status: StatusCode,
    error: Option<String>,
) -> Result<Response, AppError> {
    let channels = state
        .store
        .channels()
        .await?
        .into_iter()
        .map(|c| ChannelView {
            id: c.id,
            name: c.name,
            summary: c.summary,
            events: c.events.replace(',', ", "),
        })
        .collect();
    let deliveries = state
        .store
        .deliveries(100)
        .await?
        .into_iter()
        .map(|d| DeliveryView {
            time: crate::service::access::format_time(d.at * 1000),
            channel: d.channel_name,
            event: d.event,
            subject: d.subject,
            message: d.message,
            tone: match d.result.as_str() {
                "sent" => "ok",
                "failed" => "bad",
                _ => "warn",
            },
            result: d.result,
            attempts: d.attempts,
            error: d.error.unwrap_or_default(),
        })
        .collect();
    views::render_with_status(
        status,
        &NotificationsPage {
            layout: page.titled("Notifications"),
            channels,
            deliveries,
            kinds: AlertKind::ALL
                .iter()
                .map(|k| (k.key(), k.describe(), k.default_on()))
                .collect(),
            error,
        },
    )
}

fn new_channel(pairs: Vec<(String, String)>) -> NewChannel {
    let mut c = NewChannel::default();
    for (k, v) in pairs {
        match k.as_str() {
            "name" => c.name = v,
            "kind" => c.kind = v,
            "format" => c.format = v,
            "url" => c.url = v,
            "smtp_host" => c.smtp_host = v,
            "smtp_port" => c.smtp_port = v,
            "smtp_security" => c.smtp_security = v,
            "smtp_username" => c.smtp_username = v,
            "smtp_password" => c.smtp_password = v,
            "mail_from" => c.mail_from = v,
            "mail_to" => c.mail_to = v,
            "events" => c.events.push(v),
            _ => {}
        }
    }
    c
}

pub async fn add_channel(
    State(state): State<AppState>,
    State(alerting): State<Alerting>,
    Admin(session): Admin,
    client: ClientInfo,
    page: Page,
    body: Bytes,
) -> Result<Response, AppError> {
    let pairs = match parse_strict(&body) {
        Ok(p) => p,
        Err(e) => {
            return render_notifications(
                &state,
                page,
                StatusCode::BAD_REQUEST,
                Some(e.to_string()),
            )
            .await;
        }
    };
    let c = new_channel(pairs);
    let event = Event::new(
        "alert_channel_add",
        "alert_channel",
        c.name.trim().to_string(),
    )
    .details(json!({"kind": c.kind, "events": c.events}));
    match alerts::add_channel(&alerting, &c).await {
        Ok(id) => {
            state
                .audit
                .record_logged(
                    &client.actor(true),
                    event.details(json!({"kind": c.kind, "events": c.events, "channel_id": id})),
                )
                .await;
            flash(
                &state,
                &session.id_hash,
                "success",
                format!("Channel {} added. Send a test to check it.", c.name.trim()),
            )
            .await?;
            Ok(Redirect::to("/admin/notifications").into_response())
        }
        Err(alerts::ChannelError::Store(e)) => Err(AppError::Store(e)),
        Err(e) => {
            state
                .audit
                .record_logged(&client.actor(true), event.failed(e.to_string()))
                .await;
            render_notifications(&state, page, StatusCode::BAD_REQUEST, Some(e.to_string())).await
        }
    }
}

pub async fn delete_channel(
    State(state): State<AppState>,
    Admin(session): Admin,
    client: ClientInfo,
    axum::extract::Path(id): axum::extract::Path<i64>,
) -> Result<Response, AppError> {
    let Some(c) = state.store.channel(id).await? else {
        return Ok(crate::web::errors::error_response(
            StatusCode::NOT_FOUND,
            "Channel not found",
        ));
    };
    state.store.delete_channel(id).await?;
    state
        .audit
        .record_logged(
            &client.actor(true),
            Event::new("alert_channel_delete", "alert_channel", c.name.clone())
                .details(json!({"channel_id": id})),
        )
        .await;
    flash(
        &state,
        &session.id_hash,
        "success",
        format!("Channel {} removed.", c.name),
    )
    .await?;
    Ok(Redirect::to("/admin/notifications").into_response())
}

pub async fn test_channel(
    State(state): State<AppState>,
    State(alerting): State<Alerting>,
    Admin(session): Admin,
    client: ClientInfo,
    axum::extract::Path(id): axum::extract::Path<i64>,
) -> Result<Response, AppError> {
    let Some(c) = state.store.channel(id).await? else {
        return Ok(crate::web::errors::error_response(
            StatusCode::NOT_FOUND,
            "Channel not found",
        ));
    };
    alerts::send_test(&alerting, id).await;
    state
        .audit
        .record_logged(
            &client.actor(true),
            Event::new("alert_test", "alert_channel", c.name.clone())
                .details(json!({"channel_id": id})),
        )
        .await;
    flash(
        &state,
        &session.id_hash,
        "success",
        format!(
            "A test message is on its way to {}; its result shows below.",
            c.name
        ),
    )
    .await?;
    Ok(Redirect::to("/admin/notifications").into_response())
}

/// The dashboard's small figure: requests per minute over the last hour, with the share of
/// server errors when there were any ("" without traffic).
pub fn traffic_figure(state: &AppState, app: &str) -> String {
    let s = state.access.summary(app, crate::clock::now_unix() - 3600);
    if s.requests == 0 {
        return String::new();
    }
    let rate = s.requests as f64 / 60.0;
    let rate = if rate >= 10.0 {
        format!("{rate:.0}/min")
    } else {
        format!("{rate:.1}/min")
    };
    match s.by_class[5] {
        0 => rate,
        errors => format!(
            "{rate}, {:.1}% 5xx",
            errors as f64 * 100.0 / s.requests as f64
        ),
    }
}
