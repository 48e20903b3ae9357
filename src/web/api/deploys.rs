//! `/api/v1/deploys`: a deploy's status, steps and timings (optionally once it has ended),
//! and its log as a stream of JSON lines that ends with the result.

use std::convert::Infallible;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use super::apps::{ApiApp, WaitQuery};
use super::{ApiError, Token};
use crate::app::AppState;
use crate::domain::app::name_key;
use crate::domain::token::Level;
use crate::service::loghub::LogEvent;
use crate::store::DeployRow;

/// A deploy as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeployJson {
    pub id: i64,
    pub app_id: Option<i64>,
    pub app_name: String,
    /// create, update, rollback or reconfigure.
    pub kind: String,
    /// queued, running, succeeded or failed.
    pub status: String,
    /// Whether the deploy has ended.
    pub finished: bool,
    pub image_tag: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    pub finished_at: Option<String>,
    pub duration_seconds: Option<i64>,
    /// The milestones of the log (build steps, waiting, switching, failure).
    pub steps: Vec<String>,
    /// Where its log streams.
    pub log_url: String,
}

fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Whether a deploy status is final.
pub fn is_final(status: &str) -> bool {
    matches!(status, "succeeded" | "failed")
}

/// The log lines worth a progress line: build steps and the deploy's own milestones.
fn steps_of(log: &str) -> Vec<String> {
    log.lines()
        .map(str::trim_end)
        .filter(|l| {
            let step = l
                .strip_prefix("Step ")
                .and_then(|r| r.split_once(' '))
                .is_some_and(|(n, _)| n.contains('/'));
            step || [
                "Building ",
                "Waiting for",
                "Rolling back",
                "Deploy failed",
                "Starting",
                "Switching",
                "Deployed",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .map(String::from)
        .take(500)
        .collect()
}

pub fn deploy_json(d: &DeployRow) -> DeployJson {
    DeployJson {
        id: d.id,
        app_id: d.app_id,
        app_name: d.app_name.clone(),
        kind: d.kind.clone(),
        status: d.status.to_string(),
        finished: is_final(d.status.as_str()),
        image_tag: d.image_tag.clone(),
        error: d.error.clone(),
        created_at: rfc3339(d.created_at),
        finished_at: d.finished_at.map(rfc3339),
        duration_seconds: d.finished_at.map(|f| (f - d.created_at).max(0)),
        steps: steps_of(&d.log),
        log_url: format!("/api/v1/deploys/{}/log", d.id),
    }
}

/// Returns once the deploy has ended (at once when it is not running).
pub async fn wait_for(state: &AppState, deploy_id: i64) {
    let Some((_, mut rx)) = state.logs.watch(deploy_id) else {
        return;
    };
    loop {
        match rx.recv().await {
            Ok(LogEvent::Done(_)) => return,
            Ok(LogEvent::Line(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(_) => return,
        }
    }
}

async fn deploy_row(state: &AppState, token: &Token, id: i64) -> Result<DeployRow, ApiError> {
    let d = state
        .store
        .deploy(id)
        .await?
        .ok_or_else(|| ApiError::not_found("There is no such deploy."))?;
    token.need(Level::Read, Some(&name_key(&d.app_name)))?;
    Ok(d)
}

#[utoipa::path(get, path = "/api/v1/deploys/{deploy_id}", tag = "deploys",
    params(("deploy_id" = i64, Path), WaitQuery),
    responses((status = 200, body = DeployJson), (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    token: Token,
    Path(id): Path<i64>,
    Query(q): Query<WaitQuery>,
) -> Result<Json<DeployJson>, ApiError> {
    deploy_row(&state, &token, id).await?;
    if q.wait {
        wait_for(&state, id).await;
    }
    Ok(Json(deploy_json(&deploy_row(&state, &token, id).await?)))
}

#[utoipa::path(get, path = "/api/v1/apps/{app}/deploys", tag = "deploys",
    params(("app" = String, Path, description = "The app's id or name")),
    responses((status = 200, description = "The app's last 20 deploys, newest first", body = [DeployJson])),
    security(("bearer" = [])))]
pub async fn of_app(
    State(state): State<AppState>,
    token: Token,
    ApiApp(app): ApiApp,
) -> Result<Json<Vec<DeployJson>>, ApiError> {
    token.need(Level::Read, Some(&app.name_key))?;
    let rows = state.store.deploys_of(app.id, 20).await?;
    Ok(Json(rows.iter().map(deploy_json).collect()))
}

/// One line of a deploy's log stream.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    /// A line of the log (with its newline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    /// The last object: the final status, `succeeded` or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<String>,
    /// With `done`: why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn ndjson(l: &LogLine) -> Result<Bytes, Infallible> {
    let mut v = serde_json::to_vec(l).unwrap_or_default();
    v.push(b'\n');
    Ok(Bytes::from(v))
}

fn line(text: String) -> Result<Bytes, Infallible> {
    ndjson(&LogLine {
        line: Some(text),
        done: None,
        error: None,
    })
}

#[utoipa::path(get, path = "/api/v1/deploys/{deploy_id}/log", tag = "deploys",
    params(("deploy_id" = i64, Path)),
    responses((status = 200, description = "The whole log so far, then each new line, as JSON lines (application/x-ndjson); the last one carries `done`",
        content_type = "application/x-ndjson", body = LogLine),
              (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn log(
    State(state): State<AppState>,
    token: Token,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    deploy_row(&state, &token, id).await?;
    let stream: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<Bytes, Infallible>> + Send>,
    > = match state.logs.watch(id) {
        Some((lines, rx)) => {
            let past = futures_util::stream::iter(lines.into_iter().map(line));
            let st = state.clone();
            let live = futures_util::stream::unfold((rx, false), move |(mut rx, finished)| {
                let st = st.clone();
                async move {
                    if finished {
                        return None;
                    }
                    loop {
                        match rx.recv().await {
                            Ok(LogEvent::Line(l)) => return Some((line(l), (rx, false))),
                            Ok(LogEvent::Done(_))
                            | Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                return Some((final_line(&st, id).await, (rx, true)));
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        }
                    }
                }
            });
            Box::pin(past.chain(live))
        }
        None => {
            let d = deploy_row(&state, &token, id).await?;
            let lines: Vec<String> = d.log.split_inclusive('\n').map(String::from).collect();
            let last = if is_final(d.status.as_str()) {
                ndjson(&LogLine {
                    line: None,
                    done: Some(d.status.to_string()),
                    error: d.error.clone(),
                })
            } else {
                // Not running here and not finished: interrupted; the next start fails it.
                ndjson(&LogLine {
                    line: None,
                    done: Some("failed".into()),
                    error: Some("The deploy was interrupted.".into()),
                })
            };
            Box::pin(futures_util::stream::iter(
                lines.into_iter().map(line).chain(std::iter::once(last)),
            ))
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn final_line(state: &AppState, id: i64) -> Result<Bytes, Infallible> {
    let d = state.store.deploy(id).await.ok().flatten();
    ndjson(&LogLine {
        line: None,
        done: Some(
            d.as_ref()
                .map_or_else(|| "failed".into(), |d| d.status.to_string()),
        ),
        error: d.and_then(|d| d.error),
    })
}
