//! The upload form (`/upload`): a new app from a ZIP. The multipart body is read here (HTTP),
//! the file spooled under a name the server chose; everything else (checks, reservation,
//! environment, first deploy, the audit of a refusal) is `service::apps::create`.

use std::path::PathBuf;

use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use tokio::io::AsyncWriteExt;

use crate::app::AppState;
use crate::domain::volume::Mounts;
use crate::service::apps::{self, AppsError};
use crate::service::deploy::{Deployer, tempfile_in};
use crate::service::leftovers::write_error;
use crate::web::client::ClientInfo;
use crate::web::errors::{AppError, error_response};
use crate::web::pages::flash;
use crate::web::session::Admin;
use crate::web::views::{self, Page, UploadPage, UploadValues};
use crate::web::volumes;

/// `GET /upload`: the form, with the default limits filled in.
pub async fn upload_page(
    State(state): State<AppState>,
    _admin: Admin,
    page: Page,
) -> Result<Response, AppError> {
    let values = UploadValues {
        memory_mb: "512".into(),
        cpu_percent: "50".into(),
        replicas: "1".into(),
        ..Default::default()
    };
    render_upload(&state, page, values, None, &Mounts::default()).await
}

/// The upload form; shown again with `error` (and a 400) when a submission was refused.
async fn render_upload(
    state: &AppState,
    page: Page,
    values: UploadValues,
    error: Option<String>,
    mounts: &Mounts,
) -> Result<Response, AppError> {
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let upload = UploadPage {
        mount_choices: volumes::mount_choices(state, mounts).await?,
        layout: page.titled("Deploy an app"),
        values,
        error,
        max_mb: state.settings.max_content_length >> 20,
        max_memory_mb: state.settings.max_limits.memory_mb,
        max_cpu_percent: state.settings.max_limits.cpu_percent,
        apps_domain: state.settings.apps_domain.clone(),
        swarm: crate::service::swarm::enabled(&state.settings),
    };
    views::render_with_status(status, &upload)
}

/// What a multipart form brought: text fields and the uploaded file (already on disk).
#[derive(Default)]
pub(crate) struct Upload {
    pub(crate) fields: Vec<(String, String)>,
    pub(crate) file: Option<(String, PathBuf)>,
    /// Removes the spooled file on every path (a refused form, a cut-off request); once it
    /// was moved to the app's folder there is nothing left to remove.
    pub(crate) _spool: crate::service::leftovers::SpoolGuard,
}

impl Upload {
    pub(crate) fn field(&self, name: &str) -> String {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

/// Reads the form, streaming the file to `<data>/uploads/` under a name the server chose.
pub(crate) async fn read_upload(
    state: &AppState,
    mut multipart: Multipart,
) -> Result<Upload, String> {
    let mut upload = Upload::default();
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| format!("The upload was cut short: {e}"))?
    {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            let client_name = field.file_name().unwrap_or_default().to_string();
            if client_name.is_empty() {
                continue;
            }
            let path = tempfile_in(
                &crate::service::upload_dir(&state.settings),
                "upload",
                ".zip",
            )
            .map_err(|e| e.to_string())?;
            upload._spool.add(path.clone());
            let disk = |e: std::io::Error| write_error(&e, "The upload", &path);
            let mut out = tokio::fs::File::create(&path).await.map_err(disk)?;
            upload.file = Some((client_name, path.clone()));
            while let Some(chunk) = field
                .chunk()
                .await
                .map_err(|e| format!("The upload was cut short: {e}"))?
            {
                out.write_all(&chunk).await.map_err(disk)?;
            }
            // tokio writes in the background and keeps a failed last write for the next call:
            // flush reports it (a full disk), which sync_all alone would not.
            out.flush().await.map_err(disk)?;
            out.sync_all().await.map_err(disk)?;
        } else {
            let text = field
                .text()
                .await
                .map_err(|_| "A form field was not valid UTF-8 text.".to_string())?;
            upload.fields.push((name, text));
        }
    }
    Ok(upload)
}

/// The spooled file of a form, once it is there and named like a ZIP.
pub(crate) fn uploaded_zip(upload: &Upload) -> Result<PathBuf, String> {
    let Some((client_name, path)) = &upload.file else {
        return Err("No file selected".into());
    };
    if !client_name.to_ascii_lowercase().ends_with(".zip") {
        return Err(format!(
            "'{client_name}' is not a ZIP file. Only ZIP files are accepted."
        ));
    }
    Ok(path.clone())
}

/// `POST /upload`: a new app and its first deploy; the browser follows the deploy's log.
pub async fn upload(
    State(state): State<AppState>,
    State(deployer): State<Deployer>,
    Admin(session): Admin,
    client: ClientInfo,
    page: Page,
    multipart: Multipart,
) -> Result<Response, AppError> {
    let actor = client.actor(true);
    let upload = match read_upload(&state, multipart).await {
        Ok(u) => u,
        Err(e) => return Ok(error_response(StatusCode::BAD_REQUEST, e)),
    };
    let values = UploadValues {
        app_name: upload.field("app_name"),
        public_route: upload.field("public_route"),
        domains: upload.field("domains"),
        internal_port: upload.field("internal_port"),
        health_path: upload.field("health_path"),
        env: upload.field("env"),
        memory_mb: upload.field("memory_mb"),
        cpu_percent: upload.field("cpu_percent"),
        replicas: upload.field("replicas"),
        constraints: upload.field("constraints"),
    };
    let input = apps::NewAppInput {
        app_name: values.app_name.clone(),
        public_route: values.public_route.clone(),
        internal_port: values.internal_port.clone(),
        health_path: values.health_path.clone(),
        env: values.env.clone(),
        memory_mb: values.memory_mb.clone(),
        cpu_percent: values.cpu_percent.clone(),
        domains: values.domains.clone(),
        pull_policy: upload.field("pull_policy"),
        image_user: upload.field("image_user") == "on",
        replicas: values.replicas.clone(),
        constraints: values.constraints.clone(),
    };
    let form_mounts = volumes::mounts_from_form(&state, &upload.fields).await;
    let checked = form_mounts
        .clone()
        .and_then(|m| Ok((m, uploaded_zip(&upload)?)));
    let outcome = match checked {
        Ok((mounts, zip)) => apps::create(&deployer, &input, mounts, &zip, &actor).await,
        Err(msg) => {
            let refusal = apps::Refused::invalid(None, msg);
            Err(apps::refuse_new(&deployer, &actor, &values.app_name, refusal).await)
        }
    };
    match outcome {
        Ok(created) => {
            flash(
                &state,
                &session.id_hash,
                "info",
                format!("Deploying {}: the build log follows.", created.name),
            )
            .await?;
            Ok(Redirect::to(&format!("/admin/deploys/{}", created.deploy_id)).into_response())
        }
        Err(AppsError::Refused(r)) => {
            let mounts = form_mounts.unwrap_or_default();
            render_upload(&state, page, values, Some(r.message), &mounts).await
        }
        Err(e) => Err(e.into()),
    }
}
