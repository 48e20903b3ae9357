//! `/api/v1/apps/{app}/domains`: an app's host names (its name under the apps domain and its
//! custom domains), and adding and removing custom domains. The same service calls as the app
//! page's forms, so the same checks (unique across apps, no wildcard, no IP literal, never the
//! admin's names) and the same audit entries.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::apps::ApiApp;
use super::{ApiError, Token};
use crate::app::AppState;
use crate::domain::token::Level;
use crate::service::domains::DomainError;
use crate::store::AppRow;

/// Where an app answers by host name.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DomainsJson {
    /// The custom domains (normalised: lower case, punycode).
    pub domains: Vec<String>,
    /// Every host name the app answers at: `<app>.<apps domain>` when one is set, then the
    /// custom domains.
    pub hosts: Vec<String>,
    /// How a change of host names reaches the traffic: `live` (the built-in router switches at
    /// once) or `redeploy` (Traefik reads them from the container's labels, so a change
    /// redeploys the app).
    pub applied: String,
    /// The redeploy a change started (Traefik mode).
    pub deploy_id: Option<i64>,
}

/// The body of an add.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NewDomain {
    /// A host name such as shop.example.org (Unicode names are stored as punycode).
    pub domain: String,
}

fn domains_json(state: &AppState, app: &AppRow, deploy_id: Option<i64>) -> DomainsJson {
    DomainsJson {
        domains: app.domains.clone(),
        hosts: crate::router::app_hosts(app, &state.settings),
        applied: if state.settings.builtin_router {
            "live"
        } else {
            "redeploy"
        }
        .into(),
        deploy_id,
    }
}

async fn reread(state: &AppState, app: AppRow) -> Result<AppRow, ApiError> {
    Ok(state.store.app(app.id).await?.unwrap_or(app))
}

#[utoipa::path(get, path = "/api/v1/apps/{app}/domains", tag = "domains",
    params(("app" = String, Path, description = "The app's id or name")),
    responses((status = 200, body = DomainsJson), (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    token: Token,
    ApiApp(app): ApiApp,
) -> Result<Json<DomainsJson>, ApiError> {
    token.need(Level::Read, Some(&app.name_key))?;
    Ok(Json(domains_json(&state, &app, None)))
}

fn refused(e: DomainError) -> ApiError {
    match e {
        DomainError::Taken { .. } => ApiError {
            field: Some("domain"),
            ..ApiError::conflict(e.to_string())
        },
        DomainError::NotFound(_) => ApiError::not_found(e.to_string()),
        DomainError::Refused(m) => ApiError::invalid(Some("domain"), m),
        DomainError::Store(e) => e.into(),
    }
}

#[utoipa::path(post, path = "/api/v1/apps/{app}/domains", tag = "domains",
    params(("app" = String, Path, description = "The app's id or name")),
    request_body = NewDomain,
    responses((status = 201, description = "Added; served at once (built-in router) or from the redeploy it started (Traefik)", body = DomainsJson),
              (status = 409, description = "Another app has it", body = super::ErrorBody),
              (status = 422, description = "Not a host name milkcrate accepts", body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn add(
    State(state): State<AppState>,
    token: Token,
    ApiApp(app): ApiApp,
    body: Result<Json<NewDomain>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    token.need(Level::Deploy, Some(&app.name_key))?;
    let Json(req) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    state
        .domains()
        .add(&app, &req.domain, &token.actor)
        .await
        .map_err(refused)?;
    let app = reread(&state, app).await?;
    let deploy_id = relabel(&state, &app, &token).await?;
    Ok((
        StatusCode::CREATED,
        Json(domains_json(&state, &app, deploy_id)),
    )
        .into_response())
}

#[utoipa::path(delete, path = "/api/v1/apps/{app}/domains/{domain}", tag = "domains",
    params(("app" = String, Path, description = "The app's id or name"),
           ("domain" = String, Path, description = "One of the app's custom domains")),
    responses((status = 200, description = "Removed; no longer served", body = DomainsJson),
              (status = 404, body = super::ErrorBody),
              (status = 422, description = "The app's only way in", body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    token: Token,
    ApiApp(app): ApiApp,
    Path((_, domain)): Path<(String, String)>,
) -> Result<Json<DomainsJson>, ApiError> {
    token.need(Level::Deploy, Some(&app.name_key))?;
    state
        .domains()
        .remove(&app, &domain, &token.actor)
        .await
        .map_err(refused)?;
    let app = reread(&state, app).await?;
    let deploy_id = relabel(&state, &app, &token).await?;
    Ok(Json(domains_json(&state, &app, deploy_id)))
}

/// In Traefik mode the host names are the container's labels: a redeploy applies them.
async fn relabel(state: &AppState, app: &AppRow, token: &Token) -> Result<Option<i64>, ApiError> {
    if state.settings.builtin_router {
        return Ok(None);
    }
    Ok(crate::service::domains_relabel::after_change(&state.deployer(), app, &token.actor).await?)
}
