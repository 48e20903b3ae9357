//! A deploy's page and its live log (server-sent events from `service::loghub`, or the stored
//! log once the deploy ended).

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};

use crate::app::AppState;
use crate::service::loghub::LogEvent;
use crate::web::errors::{AppError, error_response};
use crate::web::session::Admin;
use crate::web::views::{self, DeployPage, Page};

/// `GET /admin/deploys/{deploy_id}`.
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
                        .chain(std::iter::once(done_event(d.status.as_str()))),
                ))
            }
        };
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

pub(super) fn line_event(line: String) -> Result<SseEvent, Infallible> {
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
