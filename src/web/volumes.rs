//! Handlers for volumes (the original's `/admin/volumes` routes and fields): the list, create,
//! a volume's page with folder browsing, uploads of files and ZIPs into a folder, download,
//! deleting a file or folder, deleting the volume, and the JSON list. Also the volume-mount
//! fields of the deploy and update forms. Every action is audited.

use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequestParts, Multipart, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::app::AppState;
use crate::archive::volume::{VolumeUpload, check_volume_zip};
use crate::audit::Event;
use crate::domain::volume::{InnerPath, Mounts, VolumeName, human_size, mount_path};
use crate::service::leftovers::{SpoolGuard, write_error};
use crate::service::volumes as svc;
use crate::store::VolumeRow;
use crate::web::client::ClientInfo;
use crate::web::errors::{AppError, error_response, row_by_path_id};
use crate::web::form::Form;
use crate::web::pages::flash;
use crate::web::session::Admin;
use crate::web::views::{
    self, MountChoice, Page, VolumeCreatePage, VolumeItem, VolumeListPage, VolumePage,
};

/// Extractor: the volume named by the route's `{volume_id}`, or a 404 page.
pub struct VolumeById(pub VolumeRow);

impl FromRequestParts<AppState> for VolumeById {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        row_by_path_id(parts, state, "Volume not found", |id| {
            state.store.volume(id)
        })
        .await
        .map(VolumeById)
    }
}

fn to_list() -> Response {
    Redirect::to("/admin/volumes").into_response()
}

fn to_volume(id: i64, folder: &InnerPath) -> Response {
    if folder.is_root() {
        Redirect::to(&format!("/admin/volumes/{id}")).into_response()
    } else {
        Redirect::to(&format!(
            "/admin/volumes/{id}?path={}",
            urlencode(folder.as_str())
        ))
        .into_response()
    }
}

pub fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .unwrap_or_default()
        .trim_start_matches('=')
        .to_string()
}

/// Which apps mount each volume, from one read of the apps.
async fn mounts_index(state: &AppState) -> Result<Vec<(String, Mounts)>, AppError> {
    Ok(state
        .store
        .apps()
        .await?
        .into_iter()
        .map(|a| {
            let m = Mounts::from_column(a.volume_mounts.as_deref());
            (a.name, m)
        })
        .collect())
}

fn users_of(index: &[(String, Mounts)], docker_name: &str) -> Vec<String> {
    index
        .iter()
        .filter(|(_, m)| m.uses(docker_name))
        .map(|(n, _)| n.clone())
        .collect()
}

pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    page: Page,
) -> Result<Response, AppError> {
    let rows = state.store.volumes().await?;
    let index = mounts_index(&state).await?;
    // Counted now, all volumes at once; a volume the engine cannot read (or not within 3 s, a
    // very large one) shows its last count and why.
    let counts = futures_util::future::join_all(rows.iter().map(|v| async {
        match tokio::time::timeout(Duration::from_secs(3), state.volumes().listing(v)).await {
            Ok(listing) => listing.map_err(|e| e.to_string()),
            Err(_) => Err("still counting after 3 s; open the volume for its files".to_string()),
        }
    }))
    .await;
    let volumes = rows
        .iter()
        .zip(counts)
        .map(|(v, listing)| {
            let (files, size, problem) = match listing {
                Ok(entries) => {
                    let (n, b) = svc::totals(&entries);
                    (n, b, None)
                }
                Err(e) => (
                    v.file_count.max(0) as u64,
                    v.total_size_bytes.max(0) as u64,
                    Some(e),
                ),
            };
            VolumeItem {
                id: v.volume_id,
                name: v.volume_name.clone(),
                docker_name: v.docker_volume_name.clone(),
                description: v.description.clone(),
                created: v.created_date.clone(),
                files,
                size: human_size(size),
                problem,
                used_by: users_of(&index, &v.docker_volume_name),
            }
        })
        .collect();
    views::render(&VolumeListPage {
        layout: page.titled("Volumes"),
        volumes,
    })
}

pub async fn create_page(
    State(_state): State<AppState>,
    _admin: Admin,
    page: Page,
) -> Result<Response, AppError> {
    views::render(&VolumeCreatePage {
        layout: page.titled("Create a volume"),
        name: String::new(),
        description: String::new(),
        error: None,
    })
}

#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    volume_name: String,
    #[serde(default)]
    description: String,
}

pub async fn create(
    State(state): State<AppState>,
    Admin(session): Admin,
    client: ClientInfo,
    page: Page,
    Form(form): Form<CreateForm>,
) -> Result<Response, AppError> {
    let actor = client.actor(true);
    let description = form.description.trim().to_string();
    let outcome = match VolumeName::parse(&form.volume_name) {
        Ok(name) => state
            .volumes()
            .create(&name, description.clone())
            .await
            .map(|ok| (name, ok))
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match outcome {
        Ok((name, (_, message))) => {
            let event = Event::new("create", "volume", name.as_str()).details(json!({
                "docker_volume_name": state.volumes().docker_name_for(&name),
                "description": description,
            }));
            state.audit.record_logged(&actor, event).await;
            flash(&state, &session.id_hash, "success", message).await?;
            Ok(to_list())
        }
        Err(msg) => {
            let event = Event::new("create", "volume", form.volume_name.trim())
                .details(json!({"description": description}))
                .failed(&msg);
            state.audit.record_logged(&actor, event).await;
            views::render_with_status(
                StatusCode::BAD_REQUEST,
                &VolumeCreatePage {
                    layout: page.titled("Create a volume"),
                    name: form.volume_name,
                    description: form.description,
                    error: Some(msg),
                },
            )
        }
    }
}

#[derive(Deserialize, Default)]
pub struct PathQuery {
    #[serde(default)]
    path: String,
}

pub async fn view(
    State(state): State<AppState>,
    _admin: Admin,
    VolumeById(vol): VolumeById,
    Query(q): Query<PathQuery>,
    page: Page,
) -> Result<Response, AppError> {
    let folder = match InnerPath::parse(&q.path) {
        Ok(f) => f,
        Err(e) => return Ok(error_response(StatusCode::BAD_REQUEST, e)),
    };
    let index = mounts_index(&state).await?;
    let (children, totals, problem) = match state.volumes().listing(&vol).await {
        Ok(entries) => (
            svc::children(&entries, &folder),
            svc::totals(&entries),
            None,
        ),
        Err(e) => (
            Vec::new(),
            (
                vol.file_count.max(0) as u64,
                vol.total_size_bytes.max(0) as u64,
            ),
            Some(format!("Could not list files: {e}")),
        ),
    };
    let entries = children
        .into_iter()
        .map(|c| views::VolumeChild {
            link: urlencode(&c.path),
            name: c.name,
            path: c.path,
            is_dir: c.is_dir,
            size: human_size(c.size),
            files: c.files,
        })
        .collect();
    let crumbs = folder
        .ancestors_and_self()
        .into_iter()
        .map(|p| {
            let name = p.rsplit('/').next().unwrap_or_default().to_string();
            (urlencode(&p), name)
        })
        .collect();
    let title = format!("Volume {}", vol.volume_name);
    views::render(&VolumePage {
        layout: page.titled(&title),
        used_by: users_of(&index, &vol.docker_volume_name),
        files: totals.0,
        size: human_size(totals.1),
        folder: folder.as_str().to_string(),
        crumbs,
        entries,
        problem,
        max_mb: state.settings.max_content_length >> 20,
        vol,
    })
}

/// Reads the upload form (the UI's, and the API's multipart): the target folder and every file, each spooled to disk (never held
/// in memory) under a server-chosen name. The spooled files are removed when the returned
/// guard goes, on every path (a failed read drops it here).
pub async fn read_files(
    state: &AppState,
    mut multipart: Multipart,
) -> Result<(String, bool, Vec<(String, PathBuf)>, SpoolGuard), String> {
    let mut folder = String::new();
    let mut keep_zips = false;
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let mut guard = SpoolGuard::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(format!("The upload was cut short: {e}")),
        };
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "file" | "files" => {
                let mut field = field;
                let client_name = field.file_name().unwrap_or_default().to_string();
                // Browsers may send a path; only the last part names the file.
                let base = client_name
                    .rsplit(['/', '\\'])
                    .next()
                    .unwrap_or_default()
                    .to_string();
                if base.is_empty() {
                    continue;
                }
                let path = crate::service::deploy::tempfile_in(
                    &crate::service::upload_dir(&state.settings),
                    "volfile",
                    "",
                )
                .map_err(|e| e.to_string())?;
                guard.add(path.clone());
                files.push((base, path.clone()));
                let disk = |e: std::io::Error| write_error(&e, "The upload", &path);
                let mut out = tokio::fs::File::create(&path).await.map_err(disk)?;
                loop {
                    match field.chunk().await {
                        Ok(Some(chunk)) => out.write_all(&chunk).await.map_err(disk)?,
                        Ok(None) => {
                            // tokio writes in the background: finish (and hear of a full
                            // disk) before anyone reads it.
                            out.flush().await.map_err(disk)?;
                            break;
                        }
                        Err(e) => return Err(format!("The upload was cut short: {e}")),
                    }
                }
            }
            "folder" => folder = field.text().await.unwrap_or_default(),
            "keep_zips" => keep_zips = !field.text().await.unwrap_or_default().is_empty(),
            _ => {}
        }
    }
    Ok((folder, keep_zips, files, guard))
}

/// A volume upload that wrote nothing, and whose fault that was.
#[derive(Debug)]
pub enum UploadRefused {
    /// The request: a bad folder or file name, no file, a ZIP that breaks the rules.
    Input(String),
    /// The engine or the disk.
    Failed(String),
}

impl UploadRefused {
    pub fn message(&self) -> &str {
        match self {
            UploadRefused::Input(m) | UploadRefused::Failed(m) => m,
        }
    }
}

/// Writes spooled files into the volume under `folder_text` (ZIPs unpacked unless
/// `keep_zips`), audited as `upload volume_file`. The UI and the API both come here. Once the
/// files are whole on disk the writing runs on its own task: a client that goes away mid-way
/// must not cut the engine's request (the engine would keep a truncated file). The spooled
/// files go when that task ends.
pub async fn store_upload(
    state: &AppState,
    vol: &VolumeRow,
    actor: &crate::audit::Actor,
    folder_text: &str,
    keep_zips: bool,
    files: Vec<(String, PathBuf)>,
    spool: SpoolGuard,
) -> Result<(InnerPath, usize), UploadRefused> {
    let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    let outcome = tokio::spawn({
        let (state, vol, folder_text) = (state.clone(), vol.clone(), folder_text.to_string());
        async move {
            let _spool = spool;
            let folder = InnerPath::parse(&folder_text).map_err(UploadRefused::Input)?;
            if files.is_empty() {
                return Err(UploadRefused::Input("No file selected".to_string()));
            }
            let mut upload = VolumeUpload::default();
            for (name, path) in files {
                InnerPath::parse(&name)
                    .map_err(|e| UploadRefused::Input(format!("'{name}': {e}")))?;
                if !keep_zips && name.to_ascii_lowercase().ends_with(".zip") {
                    let (p, limits) = (path.clone(), state.settings.zip_limits);
                    tokio::task::spawn_blocking(move || check_volume_zip(&p, &limits))
                        .await
                        .map_err(|e| UploadRefused::Failed(e.to_string()))?
                        .map_err(|e| {
                            UploadRefused::Input(format!("Invalid ZIP file {name}: {e}"))
                        })?;
                    upload.zips.push(path);
                } else {
                    upload.files.push((name, path));
                }
            }
            let n = state
                .volumes()
                .upload(&vol, &folder, upload)
                .await
                .map_err(|e| UploadRefused::Failed(e.to_string()))?;
            Ok((folder, n))
        }
    })
    .await
    .unwrap_or_else(|e| Err(UploadRefused::Failed(format!("The upload stopped: {e}"))));
    let target = format!("{}/{}", vol.volume_name, names.join(", "));
    let event = match &outcome {
        // The volume's page counts the files anew.
        Ok((folder, n)) => Event::new("upload", "volume_file", target).details(json!({
            "volume_id": vol.volume_id,
            "folder": folder.as_str(),
            "files_written": n,
        })),
        Err(e) => Event::new("upload", "volume_file", target)
            .details(json!({"volume_id": vol.volume_id}))
            .failed(e.message()),
    };
    state.audit.record_logged(actor, event).await;
    outcome
}

pub async fn upload(
    State(state): State<AppState>,
    Admin(session): Admin,
    client: ClientInfo,
    VolumeById(vol): VolumeById,
    multipart: Multipart,
) -> Result<Response, AppError> {
    let actor = client.actor(true);
    let (folder_text, keep_zips, files, spool) = match read_files(&state, multipart).await {
        Ok(v) => v,
        Err(msg) => {
            flash(
                &state,
                &session.id_hash,
                "error",
                format!("Upload failed: {msg}"),
            )
            .await?;
            return Ok(to_volume(vol.volume_id, &InnerPath::default()));
        }
    };
    match store_upload(&state, &vol, &actor, &folder_text, keep_zips, files, spool).await {
        Ok((folder, n)) => {
            let where_ = if folder.is_root() {
                String::new()
            } else {
                format!(" into {}", folder.as_str())
            };
            flash(
                &state,
                &session.id_hash,
                "success",
                format!("Uploaded {n} file{}{where_}", if n == 1 { "" } else { "s" }),
            )
            .await?;
            Ok(to_volume(vol.volume_id, &folder))
        }
        Err(e) => {
            flash(
                &state,
                &session.id_hash,
                "error",
                format!("Nothing was written. {}", e.message()),
            )
            .await?;
            let folder = InnerPath::parse(&folder_text).unwrap_or_default();
            Ok(to_volume(vol.volume_id, &folder))
        }
    }
}

pub async fn download(
    State(state): State<AppState>,
    Admin(session): Admin,
    client: ClientInfo,
    VolumeById(vol): VolumeById,
    Query(q): Query<PathQuery>,
) -> Result<Response, AppError> {
    let path = match InnerPath::parse(&q.path) {
        Ok(p) => p,
        Err(e) => return Ok(error_response(StatusCode::BAD_REQUEST, e)),
    };
    let target = format!("{}/{}", vol.volume_name, path.as_str());
    match state.volumes().download(&vol, &path).await {
        Ok(d) => {
            let event = Event::new("download", "volume_file", target)
                .details(json!({"volume_id": vol.volume_id}));
            state.audit.record_logged(&client.actor(true), event).await;
            let mut resp = Response::new(Body::from_stream(d.body));
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(if d.is_dir {
                    "application/x-tar"
                } else {
                    "application/octet-stream"
                }),
            );
            if !d.is_dir
                && let Ok(v) = HeaderValue::from_str(&d.size.to_string())
            {
                h.insert(header::CONTENT_LENGTH, v);
            }
            if let Ok(v) = HeaderValue::from_str(&content_disposition(&d.name)) {
                h.insert(header::CONTENT_DISPOSITION, v);
            }
            Ok(resp)
        }
        Err(e) => {
            flash(&state, &session.id_hash, "error", e.to_string()).await?;
            Ok(to_volume(vol.volume_id, &path.parent()))
        }
    }
}

/// `attachment` with an ASCII fallback name and the exact name per RFC 6266 / 5987.
fn content_disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[derive(Deserialize)]
pub struct DeletePathForm {
    #[serde(default)]
    path: String,
}

pub async fn delete_path(
    State(state): State<AppState>,
    Admin(session): Admin,
    client: ClientInfo,
    VolumeById(vol): VolumeById,
    Form(form): Form<DeletePathForm>,
) -> Result<Response, AppError> {
    let path = match InnerPath::parse(&form.path) {
        Ok(p) => p,
        Err(e) => return Ok(error_response(StatusCode::BAD_REQUEST, e)),
    };
    let target = format!("{}/{}", vol.volume_name, path.as_str());
    let result = state.volumes().delete_path(&vol, &path).await;
    let mut event =
        Event::new("delete", "volume_file", target).details(json!({"volume_id": vol.volume_id}));
    if let Err(e) = &result {
        event = event.failed(e.to_string());
    }
    state.audit.record_logged(&client.actor(true), event).await;
    match result {
        Ok(()) => {
            flash(
                &state,
                &session.id_hash,
                "success",
                format!("Deleted {}", path.as_str()),
            )
            .await?
        }
        Err(e) => flash(&state, &session.id_hash, "error", e.to_string()).await?,
    }
    Ok(to_volume(vol.volume_id, &path.parent()))
}

pub async fn delete(
    State(state): State<AppState>,
    Admin(session): Admin,
    client: ClientInfo,
    VolumeById(vol): VolumeById,
) -> Result<Response, AppError> {
    let result = state.volumes().remove(&vol).await;
    let mut event = Event::new("delete", "volume", vol.volume_name.clone()).details(json!({
        "docker_volume_name": vol.docker_volume_name,
        "file_count": vol.file_count,
    }));
    if let Err(e) = &result {
        event = event.failed(e.to_string());
    }
    state.audit.record_logged(&client.actor(true), event).await;
    match result {
        Ok(msg) => {
            flash(&state, &session.id_hash, "success", msg).await?;
            Ok(to_list())
        }
        Err(e) => {
            flash(&state, &session.id_hash, "error", e.to_string()).await?;
            Ok(to_volume(vol.volume_id, &InnerPath::default()))
        }
    }
}

/// `GET /admin/volumes/api/list`: the original's JSON shape.
pub async fn api_list(State(state): State<AppState>, _admin: Admin) -> Result<Response, AppError> {
    let volumes = state.store.volumes().await?;
    Ok(axum::Json(json!({ "volumes": volumes })).into_response())
}

/// The mount fields of the deploy and update forms: `volumes[]` (volume ids),
/// `volume_path_<id>` and `volume_ro_<id>`. Unknown ids are refused, not skipped.
pub async fn mounts_from_form(
    state: &AppState,
    fields: &[(String, String)],
) -> Result<Mounts, String> {
    let mut mounts = Mounts::default();
    let field = |name: String| {
        fields
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    for (_, raw) in fields.iter().filter(|(k, _)| k == "volumes[]") {
        let id: i64 = raw
            .trim()
            .parse()
            .map_err(|_| format!("'{raw}' is not a volume"))?;
        let vol = state
            .store
            .volume(id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("Volume #{id} does not exist (deleted meanwhile?)"))?;
        let path = mount_path(&field(format!("volume_path_{id}")))
            .map_err(|e| format!("Volume {}: {e}", vol.volume_name))?;
        let ro = !field(format!("volume_ro_{id}")).is_empty();
        mounts.add(&vol.docker_volume_name, &path, ro)?;
    }
    Ok(mounts)
}

/// Every volume as a choice for the mount fields, with `current` pre-selected.
pub async fn mount_choices(
    state: &AppState,
    current: &Mounts,
) -> Result<Vec<MountChoice>, AppError> {
    Ok(state
        .store
        .volumes()
        .await?
        .into_iter()
        .map(|v| {
            let chosen = current.0.get(&v.docker_volume_name);
            MountChoice {
                id: v.volume_id,
                name: v.volume_name,
                checked: chosen.is_some(),
                path: chosen.map(|m| m.bind.clone()).unwrap_or_default(),
                read_only: chosen.is_some_and(|m| m.mode == "ro"),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn download_names_survive_any_characters() {
        assert_eq!(
            super::content_disposition("a \"b\" ü.txt"),
            "attachment; filename=\"a _b_ _.txt\"; filename*=UTF-8''a%20%22b%22%20%C3%BC.txt"
        );
        assert_eq!(super::urlencode("a b/ü|x"), "a+b%2F%C3%BC%7Cx");
    }
}
