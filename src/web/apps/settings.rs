//! What an app's page changes besides its version: custom domains, the environment, outbound
//! access. A refused form renders the page again with the reason beside the form.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::app::AppState;
use crate::service::apps::{self, AppsError, RefusalKind};
use crate::service::deploy::Deployer;
use crate::service::domains::{DomainError, Domains};
use crate::service::domains_relabel;
use crate::web::client::ClientInfo;
use crate::web::errors::AppError;
use crate::web::form::Form;
use crate::web::pages::flash;
use crate::web::session::Admin;
use crate::web::views::Page;

use super::AppById;
use super::actions::to_deploy;
use super::page::{render_app_page, render_app_page_with};

#[derive(Deserialize)]
pub struct DomainForm {
    #[serde(default)]
    domain: String,
}

/// Adds a custom domain to the app (checked, unique across apps, audited, routed at once).
pub async fn add_domain(
    State(state): State<AppState>,
    State(domains): State<Domains>,
    Admin(session): Admin,
    client: ClientInfo,
    AppById(app): AppById,
    page: Page,
    Form(form): Form<DomainForm>,
) -> Result<Response, AppError> {
    match domains.add(&app, &form.domain, &client.actor(true)).await {
        Ok(host) => {
            let note = if state.settings.builtin_router {
                format!("{} now answers at {host}.", app.name)
            } else {
                domains_relabel::note(
                    &state.deployer(),
                    &app,
                    &client.actor(true),
                    &format!("{host} added"),
                )
                .await
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
    State(domains): State<Domains>,
    Admin(session): Admin,
    client: ClientInfo,
    AppById(app): AppById,
    page: Page,
    Form(form): Form<DomainForm>,
) -> Result<Response, AppError> {
    match domains
        .remove(&app, &form.domain, &client.actor(true))
        .await
    {
        Ok(host) => {
            let note = format!("{host} removed from {}", app.name);
            let note =
                domains_relabel::note(&state.deployer(), &app, &client.actor(true), &note).await;
            flash(&state, &session.id_hash, "success", note).await?;
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
    State(deployer): State<Deployer>,
    Admin(session): Admin,
    client: ClientInfo,
    AppById(app): AppById,
    page: Page,
    Form(form): Form<EnvForm>,
) -> Result<Response, AppError> {
    let actor = client.actor(true);
    match apps::save_env_lines(&deployer, &app, &form.env, form.env_version, &actor).await {
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
            let status = match r.kind {
                RefusalKind::Invalid => StatusCode::BAD_REQUEST,
                RefusalKind::Conflict => StatusCode::CONFLICT,
            };
            render_app_page(&state, page, &app, status, Some(r.message)).await
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
    State(deployer): State<Deployer>,
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
    match apps::set_outbound(&deployer, &app, outbound, &client.actor(true)).await {
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
