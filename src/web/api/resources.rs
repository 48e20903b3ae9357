//! The rest of `/api/v1`: who the token is, volumes (list, create, delete, files, upload,
//! download), the audit log, and tokens (list, create within the caller's scope, revoke).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, Token};
use crate::app::AppState;
use crate::audit::Event;
use crate::domain::token::{Level, Scope, parse_lifetime};
use crate::domain::volume::{InnerPath, VolumeName};
use crate::service::tokens::TokenError;
use crate::store::{TokenRow, VolumeRow};

/// The token making the request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    pub token_id: i64,
    pub name: String,
    /// read, deploy or admin.
    pub scope: String,
    /// The apps a deploy token is limited to (empty: all).
    pub apps: Vec<String>,
}

#[utoipa::path(get, path = "/api/v1/whoami", tag = "tokens",
    responses((status = 200, body = WhoAmI), (status = 401, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn whoami(token: Token) -> Json<WhoAmI> {
    Json(WhoAmI {
        token_id: token.token.id,
        name: token.token.name.clone(),
        scope: token.token.scope.level.as_str().into(),
        apps: token.token.scope.apps.clone(),
    })
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VolumeJson {
    pub id: i64,
    pub name: String,
    pub docker_volume_name: String,
    pub description: String,
    pub created: String,
    pub file_count: i64,
    pub total_size_bytes: i64,
}

fn volume_json(v: &VolumeRow) -> VolumeJson {
    VolumeJson {
        id: v.volume_id,
        name: v.volume_name.clone(),
        docker_volume_name: v.docker_volume_name.clone(),
        description: v.description.clone(),
        created: v.created_date.clone(),
        file_count: v.file_count,
        total_size_bytes: v.total_size_bytes,
    }
}

async fn volume_by_id(state: &AppState, id: i64) -> Result<VolumeRow, ApiError> {
    state
        .store
        .volume(id)
        .await?
        .ok_or_else(|| ApiError::not_found("Volume not found"))
}

#[utoipa::path(get, path = "/api/v1/volumes", tag = "volumes",
    responses((status = 200, body = [VolumeJson])),
    security(("bearer" = [])))]
pub async fn volumes(
    State(state): State<AppState>,
    token: Token,
) -> Result<Json<Vec<VolumeJson>>, ApiError> {
    token.need(Level::Read, None)?;
    let seen = seen_volumes(&state, &token).await?;
    Ok(Json(
        state
            .store
            .volumes()
            .await?
            .iter()
            .filter(|v| {
                seen.as_ref()
                    .is_none_or(|s| s.contains(&v.docker_volume_name))
            })
            .map(volume_json)
            .collect(),
    ))
}

/// For a token limited to apps, the Docker names of the volumes its apps mount (it sees no
/// other); `None` for a token that sees every volume.
async fn seen_volumes(state: &AppState, token: &Token) -> Result<Option<Vec<String>>, ApiError> {
    let scope = &token.token.scope;
    if scope.level == Level::Admin || scope.apps.is_empty() {
        return Ok(None);
    }
    let mut names = Vec::new();
    for app in state.store.apps().await? {
        if scope.sees(&app.name_key) {
            let mounts = crate::domain::volume::Mounts::from_column(app.volume_mounts.as_deref());
            names.extend(mounts.mounts().into_iter().map(|m| m.volume));
        }
    }
    Ok(Some(names))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NewVolume {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

#[utoipa::path(post, path = "/api/v1/volumes", tag = "volumes",
    request_body = NewVolume,
    responses((status = 201, body = VolumeJson), (status = 409, body = super::ErrorBody),
              (status = 422, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_volume(
    State(state): State<AppState>,
    token: Token,
    body: Result<Json<NewVolume>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    token.need(Level::Admin, None)?;
    if let Err(resp) = token.spend(&state, super::Budget::VolumeCreate) {
        return Ok(*resp);
    }
    let Json(v) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let description = v.description.trim().to_string();
    let name = VolumeName::parse(&v.name).map_err(|e| ApiError::invalid(Some("name"), e))?;
    match state.volumes().create(&name, description.clone()).await {
        Ok((id, _)) => {
            let event = Event::new("create", "volume", name.as_str()).details(json!({
                "docker_volume_name": state.volumes().docker_name_for(&name),
                "description": description,
            }));
            state.audit.record_logged(&token.actor, event).await;
            let row = volume_by_id(&state, id).await?;
            Ok((StatusCode::CREATED, Json(volume_json(&row))).into_response())
        }
        Err(e) => {
            let msg = e.to_string();
            let event = Event::new("create", "volume", v.name.trim()).failed(&msg);
            state.audit.record_logged(&token.actor, event).await;
            Err(ApiError::conflict(msg))
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Message {
    pub message: String,
}

#[utoipa::path(delete, path = "/api/v1/volumes/{volume_id}", tag = "volumes",
    params(("volume_id" = i64, Path)),
    responses((status = 200, body = Message), (status = 409, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_volume(
    State(state): State<AppState>,
    token: Token,
    Path(id): Path<i64>,
) -> Result<Json<Message>, ApiError> {
    token.need(Level::Admin, None)?;
    let vol = volume_by_id(&state, id).await?;
    let result = state.volumes().remove(&vol).await;
    let mut event = Event::new("delete", "volume", vol.volume_name.clone())
        .details(json!({"docker_volume_name": vol.docker_volume_name}));
    if let Err(e) = &result {
        event = event.failed(e.to_string());
    }
    state.audit.record_logged(&token.actor, event).await;
    result
        .map(|message| Json(Message { message }))
        .map_err(|e| ApiError::conflict(e.to_string()))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FileJson {
    pub path: String,
    pub size: u64,
    pub is_dir: bool,
}

#[utoipa::path(get, path = "/api/v1/volumes/{volume_id}/files", tag = "volumes",
    params(("volume_id" = i64, Path)),
    responses((status = 200, description = "Every file and folder in the volume", body = [FileJson]),
              (status = 503, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn volume_files(
    State(state): State<AppState>,
    token: Token,
    Path(id): Path<i64>,
) -> Result<Json<Vec<FileJson>>, ApiError> {
    token.need(Level::Read, None)?;
    let vol = volume_by_id(&state, id).await?;
    if seen_volumes(&state, &token)
        .await?
        .is_some_and(|s| !s.contains(&vol.docker_volume_name))
    {
        return Err(ApiError::forbidden(format!(
            "The token {} ({}) may not read volume {}: no app of the token mounts it.",
            token.token.name, token.token.scope, vol.volume_name
        )));
    }
    let entries = state.volumes().listing(&vol).await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "engine_unavailable",
            e.to_string(),
        )
    })?;
    Ok(Json(
        entries
            .into_iter()
            .map(|e| FileJson {
                path: e.path,
                size: e.size,
                is_dir: e.is_dir,
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// The folder inside the volume the files go into (made when missing); the root when empty.
    #[serde(default)]
    pub folder: String,
    /// With a raw body: the file's name in `folder` (required).
    #[serde(default)]
    pub name: String,
    /// Store `.zip` files as they are instead of unpacking them.
    #[serde(default)]
    pub keep_zips: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Uploaded {
    /// The folder the files went into ("" for the root).
    pub folder: String,
    pub files_written: usize,
}

#[utoipa::path(post, path = "/api/v1/volumes/{volume_id}/files", tag = "volumes",
    params(("volume_id" = i64, Path), UploadQuery),
    request_body(description = "A multipart form (`files` or `file` fields, and optionally `folder` and `keep_zips`), or one file as the raw body named by `name`. ZIPs are unpacked (checked like app ZIPs) unless keep_zips. All or nothing: a refused file means nothing was written.",
        content(("multipart/form-data"), ("application/octet-stream"))),
    responses((status = 201, body = Uploaded), (status = 413, body = super::ErrorBody),
              (status = 422, body = super::ErrorBody), (status = 503, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn upload(
    State(state): State<AppState>,
    token: Token,
    Path(id): Path<i64>,
    Query(q): Query<UploadQuery>,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    use crate::web::volumes::{UploadRefused, read_files, store_upload};
    use axum::extract::FromRequest;
    token.need(Level::Admin, None)?;
    let vol = volume_by_id(&state, id).await?;
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    let (folder, keep_zips, files, spool) = if multipart {
        let form = axum::extract::Multipart::from_request(req, &state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        let (folder, keep, files, spool) = read_files(&state, form)
            .await
            .map_err(ApiError::bad_request)?;
        // A folder given in the query counts when the form has none.
        let folder = if folder.is_empty() { q.folder } else { folder };
        (folder, keep || q.keep_zips, files, spool)
    } else {
        let name = q.name.trim().to_string();
        if name.is_empty() {
            return Err(ApiError::invalid(
                Some("name"),
                "Name the file with ?name=… (or send a multipart form).",
            ));
        }
        InnerPath::parse(&name).map_err(|e| ApiError::invalid(Some("name"), e))?;
        if name.contains('/') {
            return Err(ApiError::invalid(
                Some("name"),
                "The name is a file name; put folders in ?folder=….",
            ));
        }
        InnerPath::parse(&q.folder).map_err(|e| ApiError::invalid(Some("folder"), e))?;
        let (path, spool) = super::apps::spool_body(&state, req.into_body(), "").await?;
        (q.folder, q.keep_zips, vec![(name, path)], spool)
    };
    match store_upload(&state, &vol, &token.actor, &folder, keep_zips, files, spool).await {
        Ok((folder, n)) => Ok((
            StatusCode::CREATED,
            Json(Uploaded {
                folder: folder.as_str().to_string(),
                files_written: n,
            }),
        )
            .into_response()),
        Err(UploadRefused::Input(m)) => {
            Err(ApiError::invalid(None, format!("Nothing was written. {m}")))
        }
        Err(UploadRefused::Failed(m)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "upload_failed",
            format!("Nothing was written. {m}"),
        )),
    }
}

#[derive(Debug, Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct PathQuery {
    /// A path inside the volume (a folder comes as a tar); the whole volume when empty.
    #[serde(default)]
    pub path: String,
}

#[utoipa::path(get, path = "/api/v1/volumes/{volume_id}/download", tag = "volumes",
    params(("volume_id" = i64, Path), PathQuery),
    responses((status = 200, description = "The file's bytes, or a folder as a tar", content_type = "application/octet-stream", body = Vec<u8>),
              (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn download(
    State(state): State<AppState>,
    token: Token,
    Path(id): Path<i64>,
    Query(q): Query<PathQuery>,
) -> Result<Response, ApiError> {
    token.need(Level::Admin, None)?;
    let vol = volume_by_id(&state, id).await?;
    let path = InnerPath::parse(&q.path).map_err(|e| ApiError::invalid(Some("path"), e))?;
    let target = format!("{}/{}", vol.volume_name, path.as_str());
    let d = state
        .volumes()
        .download(&vol, &path)
        .await
        .map_err(|e| ApiError::not_found(e.to_string()))?;
    let event =
        Event::new("download", "volume_file", target).details(json!({"volume_id": vol.volume_id}));
    state.audit.record_logged(&token.actor, event).await;
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
    Ok(resp)
}

#[derive(Debug, Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only entries of this action (login, deploy, delete, …).
    pub action: Option<String>,
    /// 1-based page of 100 entries, newest first.
    pub page: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<serde_json::Value>,
    pub more: bool,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    params(AuditQuery),
    responses((status = 200, body = AuditPage)),
    security(("bearer" = [])))]
pub async fn audit(
    State(state): State<AppState>,
    token: Token,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    token.need(Level::Admin, None)?;
    let page = q.page.unwrap_or(1).max(1);
    let log = state.audit.clone();
    let action = q.action.filter(|a| !a.is_empty());
    let (entries, more) = tokio::task::spawn_blocking(move || {
        log.read_latest(action.as_deref(), (page - 1) * 100, 100)
    })
    .await
    .map_err(|e| ApiError::bad_request(e.to_string()))?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(Json(AuditPage {
        entries: entries
            .into_iter()
            .filter_map(|e| serde_json::to_value(e).ok())
            .collect(),
        more,
    }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenJson {
    pub id: i64,
    pub name: String,
    pub scope: String,
    pub apps: Vec<String>,
    pub created_at: String,
    pub created_by: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub last_used_ip: Option<String>,
    pub revoked_at: Option<String>,
}

fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

pub fn token_json(t: &TokenRow) -> TokenJson {
    TokenJson {
        id: t.id,
        name: t.name.clone(),
        scope: t.scope.clone(),
        apps: t
            .apps
            .split(',')
            .filter(|a| !a.is_empty())
            .map(String::from)
            .collect(),
        created_at: rfc3339(t.created_at),
        created_by: t.created_by.clone(),
        expires_at: t.expires_at.map(rfc3339),
        last_used_at: t.last_used_at.map(rfc3339),
        last_used_ip: t.last_used_ip.clone(),
        revoked_at: t.revoked_at.map(rfc3339),
    }
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    responses((status = 200, body = [TokenJson])),
    security(("bearer" = [])))]
pub async fn tokens(
    State(state): State<AppState>,
    token: Token,
) -> Result<Json<Vec<TokenJson>>, ApiError> {
    token.need(Level::Admin, None)?;
    Ok(Json(
        state.store.tokens().await?.iter().map(token_json).collect(),
    ))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NewTokenRequest {
    pub name: String,
    /// read, deploy or admin.
    pub scope: String,
    /// For a deploy token: the apps it is limited to.
    #[serde(default)]
    pub apps: Vec<String>,
    /// e.g. 90d, 12h, never (default 90d).
    #[serde(default)]
    pub expires: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NewTokenResponse {
    /// The secret: shown this once, never again.
    pub token: String,
    pub info: TokenJson,
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens",
    request_body = NewTokenRequest,
    responses((status = 201, body = NewTokenResponse), (status = 403, body = super::ErrorBody),
              (status = 422, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_token(
    State(state): State<AppState>,
    token: Token,
    body: Result<Json<NewTokenRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let level = Level::parse(&req.scope).map_err(|e| ApiError::invalid(Some("scope"), e))?;
    let scope = Scope::new(level, &req.apps).map_err(|e| ApiError::invalid(Some("apps"), e))?;
    let lifetime = parse_lifetime(req.expires.as_deref().unwrap_or("90d"))
        .map_err(|e| ApiError::invalid(Some("expires"), e))?;
    let minted = state
        .tokens()
        .create(&req.name, scope, lifetime, Some(&token.token), &token.actor)
        .await
        .map_err(|e| match e {
            TokenError::Invalid(m) if m.contains("wider") => ApiError::forbidden(m),
            TokenError::Invalid(m) => ApiError::invalid(Some("name"), m),
            TokenError::Store(e) => e.into(),
        })?;
    let row = state
        .store
        .token(minted.id)
        .await?
        .ok_or_else(|| ApiError::not_found("The token is gone."))?;
    Ok((
        StatusCode::CREATED,
        Json(NewTokenResponse {
            token: minted.secret,
            info: token_json(&row),
        }),
    )
        .into_response())
}

#[utoipa::path(post, path = "/api/v1/tokens/{token_id}/revoke", tag = "tokens",
    params(("token_id" = i64, Path)),
    responses((status = 200, body = TokenJson), (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke_token(
    State(state): State<AppState>,
    token: Token,
    Path(id): Path<i64>,
) -> Result<Json<TokenJson>, ApiError> {
    // A token may always revoke itself; others need admin.
    if id != token.token.id {
        token.need(Level::Admin, None)?;
    }
    state
        .tokens()
        .revoke(id, &token.actor)
        .await
        .map_err(|e| match e {
            TokenError::Invalid(m) => ApiError::not_found(m),
            TokenError::Store(e) => e.into(),
        })?;
    let row = state
        .store
        .token(id)
        .await?
        .ok_or_else(|| ApiError::not_found("The token is gone."))?;
    Ok(Json(token_json(&row)))
}
