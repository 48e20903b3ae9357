//! An app's actions: start, stop, restart (and the original's toggle), delete, update with a
//! new ZIP, rollback, redeploy. Each makes one `service::apps` call (audited there) and says
//! the outcome as a flash message on the page it returns to.

use axum::extract::{Multipart, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::app::AppState;
use crate::domain::route::is_local_redirect;
use crate::service::apps::{self, AppsError};
use crate::service::deploy::Deployer;
use crate::service::lifecycle::{Action, Lifecycle};
use crate::store::AppRow;
use crate::web::client::ClientInfo;
use crate::web::errors::AppError;
use crate::web::form::Form;
use crate::web::pages::flash;
use crate::web::session::Admin;
use crate::web::volumes;

use super::AppById;
use super::upload::{read_upload, uploaded_zip};

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
    match apps::act(&state.lifecycle(), &app, action, &client.actor(true)).await {
        (_, Ok(msg)) => flash(state, session_id, "success", msg).await?,
        (action, Err(e)) => {
            let msg = format!("Could not {} {}: {e}", action.as_str(), app.name);
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
    State(lifecycle): State<Lifecycle>,
    Admin(session): Admin,
    client: ClientInfo,
    AppById(app): AppById,
    Form(form): Form<DeleteForm>,
) -> Result<Response, AppError> {
    let delete_data = !form.delete_volumes.is_empty();
    match apps::delete(&lifecycle, &app, delete_data, &client.actor(true)).await {
        Ok(deleted) => {
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
    State(deployer): State<Deployer>,
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
    match apps::update(&deployer, &app, &zip, mounts, &actor).await {
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

/// A form that could not be read: refused (and audited) by the service, said on the app's page.
async fn refuse(
    state: &AppState,
    session_id: &str,
    actor: &crate::audit::Actor,
    app: &AppRow,
    action: &'static str,
    msg: String,
) -> Result<Response, AppError> {
    let refused = apps::refuse_action(&state.deployer(), actor, app, action, msg).await;
    said(state, session_id, app, action, refused).await
}

/// Where the browser goes once a deploy started: its log.
pub(super) fn to_deploy(deploy_id: i64) -> Response {
    Redirect::to(&format!("/admin/deploys/{deploy_id}")).into_response()
}

pub async fn rollback(
    State(state): State<AppState>,
    State(deployer): State<Deployer>,
    Admin(session): Admin,
    client: ClientInfo,
    AppById(app): AppById,
) -> Result<Response, AppError> {
    match apps::rollback(&deployer, &app, &client.actor(true)).await {
        Ok(id) => Ok(to_deploy(id)),
        Err(e) => said(&state, &session.id_hash, &app, "rollback", e).await,
    }
}

/// Starts the app's current image again in a fresh container (for an app whose container went
/// missing, or to apply settings).
pub async fn redeploy(
    State(state): State<AppState>,
    State(deployer): State<Deployer>,
    Admin(session): Admin,
    client: ClientInfo,
    AppById(app): AppById,
) -> Result<Response, AppError> {
    match apps::redeploy(&deployer, &app, &client.actor(true)).await {
        Ok(id) => Ok(to_deploy(id)),
        Err(e) => said(&state, &session.id_hash, &app, "redeploy", e).await,
    }
}
