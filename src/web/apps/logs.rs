//! An app's container log: the last 500 lines, and new ones as they are written (follow mode,
//! server-sent events that end when the browser goes).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;

use crate::app::AppState;
use crate::store::AppRow;
use crate::web::errors::{AppError, error_response};
use crate::web::session::Admin;
use crate::web::views::{self, LogsPage, Page};

use super::deploys::line_event;
use super::{AppById, app_view};

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
