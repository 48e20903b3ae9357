//! The JSON API under `/api/v1`: the same use cases as the admin UI (each handler makes one
//! service call), for scripts, CI and `milkcrate deploy`. Requests authenticate with
//! `Authorization: Bearer <token>` only: no cookies, so there is no CSRF check here, and a
//! token in the query string or a cookie is refused. Every error has one shape,
//! `{"error": {"code", "message", "field"}}`. The OpenAPI document (`GET /api/v1/openapi.json`)
//! is generated from the handlers' annotations (`openapi.rs`).
//!
//! Middleware of the API, outermost first: client identity → security headers → JSON errors →
//! HTTPS redirect and body-size guard → per-IP rate limits → token check (failed attempts
//! spend the failed-login budget; then per-token rate limits) → handler.

pub mod apps;
pub mod deploys;
pub mod domains;
pub mod openapi;
pub mod resources;

use std::time::Instant;

use axum::Json;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::audit::{Actor, Event};
use crate::domain::token::Level;
use crate::service::apps::{AppsError, RefusalKind};
use crate::service::lifecycle::ActionError;
use crate::service::tokens::{self, Authenticated};
use crate::store::StoreError;
use crate::web::RouteSpec;
use crate::web::client::ClientInfo;
use crate::web::errors::{ErrorMessage, Rendered, default_message};
use crate::web::ratelimit::{DEFAULT_LIMITS, too_many_requests};

pub const PREFIX: &str = "/api/v1";

/// Every API route; the admin route table lists them with one line.
pub fn routes() -> Vec<RouteSpec> {
    use super::{delete, get, post};
    vec![
        get("/api/v1/openapi.json", openapi::document),
        get("/api/v1/whoami", resources::whoami),
        get("/api/v1/apps", apps::list),
        post("/api/v1/apps", apps::create),
        get("/api/v1/apps/{app}", apps::get),
        delete("/api/v1/apps/{app}", apps::delete),
        post("/api/v1/apps/{app}/update", apps::update),
        post("/api/v1/apps/{app}/rollback", apps::rollback),
        post("/api/v1/apps/{app}/redeploy", apps::redeploy),
        post("/api/v1/apps/{app}/start", apps::start),
        post("/api/v1/apps/{app}/stop", apps::stop),
        post("/api/v1/apps/{app}/restart", apps::restart),
        get("/api/v1/apps/{app}/env", apps::env_keys),
        post("/api/v1/apps/{app}/env", apps::set_env),
        get("/api/v1/apps/{app}/logs", apps::logs),
        get("/api/v1/apps/{app}/placement", apps::placement),
        post("/api/v1/apps/{app}/placement", apps::set_placement),
        get("/api/v1/apps/{app}/domains", domains::list),
        post("/api/v1/apps/{app}/domains", domains::add),
        delete("/api/v1/apps/{app}/domains/{domain}", domains::remove),
        get("/api/v1/apps/{app}/deploys", deploys::of_app),
        get("/api/v1/deploys/{deploy_id}", deploys::get),
        get("/api/v1/deploys/{deploy_id}/log", deploys::log),
        get("/api/v1/volumes", resources::volumes),
        post("/api/v1/volumes", resources::create_volume),
        delete("/api/v1/volumes/{volume_id}", resources::delete_volume),
        get("/api/v1/volumes/{volume_id}/files", resources::volume_files),
        post("/api/v1/volumes/{volume_id}/files", resources::upload),
        get("/api/v1/volumes/{volume_id}/download", resources::download),
        get("/api/v1/audit", resources::audit),
        get("/api/v1/tokens", resources::tokens),
        post("/api/v1/tokens", resources::create_token),
        post("/api/v1/tokens/{token_id}/revoke", resources::revoke_token),
    ]
}

/// Whether a path is the API's (it gets the API's middleware, not the admin UI's).
pub fn is_api_path(path: &str) -> bool {
    path == PREFIX || path.starts_with("/api/")
}

/// The one error shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code, e.g. `invalid`, `conflict`, `not_found`, `forbidden`.
    pub code: String,
    /// A plain sentence (the same the UI shows).
    pub message: String,
    /// The input field the error is about, when there is one.
    pub field: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn invalid(field: Option<&'static str>, message: impl Into<String>) -> Self {
        ApiError {
            field,
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }
}

/// The JSON body of an error (also for errors middleware and axum itself produce).
fn error_json(status: StatusCode, code: &str, message: &str, field: Option<&str>) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message, "field": field}});
    let mut resp = (status, Rendered, Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"milkcrate\""),
        );
    }
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_json(self.status, self.code, &self.message, self.field)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "API request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Something went wrong on our side; the details are in the server log.",
        )
    }
}

impl From<AppsError> for ApiError {
    fn from(e: AppsError) -> Self {
        match e {
            AppsError::Refused(r) => match r.kind {
                RefusalKind::Invalid => ApiError::invalid(r.field, r.message),
                RefusalKind::Conflict => ApiError {
                    field: r.field,
                    ..ApiError::conflict(r.message)
                },
            },
            AppsError::Store(e) => e.into(),
            other => {
                tracing::error!(error = %other, "API request failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    other.to_string(),
                )
            }
        }
    }
}

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> Self {
        match e {
            ActionError::Refused(m) => ApiError::conflict(m),
            ActionError::Store(e) => e.into(),
            ActionError::Engine(e) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "engine_unavailable",
                e.to_string(),
            ),
        }
    }
}

fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "invalid",
        429 => "too_many_requests",
        503 => "unavailable",
        _ => "internal",
    }
}

/// Turns every error response that is not already JSON (axum's rejections, the size guard,
/// rate limits, unknown routes) into the API's error shape.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error())
        || resp.extensions().get::<Rendered>().is_some()
    {
        return resp;
    }
    let message = resp
        .extensions()
        .get::<ErrorMessage>()
        .map(|m| m.0.clone())
        .unwrap_or_else(|| default_message(status).to_string());
    let mut out = error_json(status, code_for(status), &message, None);
    for name in [header::RETRY_AFTER, header::CONNECTION] {
        if let Some(v) = resp.headers().get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}

/// Query parameters that would carry a token: refused outright, so a token never lands in
/// access logs or browser history by accident.
const TOKEN_PARAMS: &[&str] = &[
    "token",
    "access_token",
    "api_key",
    "apikey",
    "bearer",
    "auth",
];

/// Checks the bearer token of every API request except the OpenAPI document.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if req.uri().path() == "/api/v1/openapi.json" {
        return next.run(req).await;
    }
    let client = req.extensions().get::<ClientInfo>().cloned();
    let ip = client
        .as_ref()
        .map(|c| c.ip)
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    let query = req.uri().query().unwrap_or_default();
    let in_query = crate::web::form::parse_strict(query.as_bytes())
        .unwrap_or_default()
        .iter()
        .any(|(k, v)| {
            TOKEN_PARAMS.contains(&k.to_ascii_lowercase().as_str()) || v.starts_with(tokens::PREFIX)
        });
    if in_query {
        return ApiError::unauthorized(
            "token_in_query",
            "A token in the query string is refused: send it in an Authorization: Bearer header (and revoke it, since it may now be in a log).",
        )
        .into_response();
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim().to_string())
        });
    let Some(secret) = bearer else {
        return ApiError::unauthorized(
            "unauthorized",
            "Send an API token in an Authorization: Bearer header (tokens in the query string or in cookies are refused).",
        )
        .into_response();
    };
    // A guess costs what a wrong password costs: taken before the check, given back when
    // the token was good.
    let now = Instant::now();
    if let Err(retry) = state.limiter.take_password_attempt(ip, now) {
        return too_many_requests(retry, "Too many failed attempts from your address.");
    }
    let actor = client.as_ref().map(|c| c.actor(false)).unwrap_or_default();
    let token = match state.tokens().authenticate(&secret, &ip.to_string()).await {
        Ok(Ok(t)) => t,
        Ok(Err(refusal)) => {
            state
                .audit
                .record_logged(
                    &actor,
                    Event::new("api_auth", "token", "").failed(refusal.message()),
                )
                .await;
            return ApiError::unauthorized("unauthorized", refusal.message()).into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    state.limiter.password_accepted(ip, now);
    if let Err(retry) = state
        .limiter
        .hit_token(token.id, "api", DEFAULT_LIMITS, Instant::now())
    {
        return too_many_requests(retry, "This token has sent too many requests.");
    }
    req.extensions_mut().insert(token);
    next.run(req).await
}

/// The admin actions with hourly limits of their own (uploads, updates, volume creation):
/// counted per token, like the UI counts them per admin, under the same settings.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    Upload,
    Update,
    VolumeCreate,
}

impl Token {
    pub fn spend(&self, state: &AppState, budget: Budget) -> Result<(), Box<Response>> {
        let l = &state.settings.action_limits;
        let (count, bucket, setting) = match budget {
            Budget::Upload => (l.upload, "action upload", "MILKCRATE_UPLOAD_LIMIT"),
            Budget::Update => (l.update, "action update", "MILKCRATE_UPDATE_LIMIT"),
            Budget::VolumeCreate => (
                l.volume_create,
                "action volume create",
                "MILKCRATE_VOLUME_CREATE_LIMIT",
            ),
        };
        let limit = crate::web::ratelimit::Limit {
            count,
            window: std::time::Duration::from_secs(3600),
        };
        state
            .limiter
            .hit_token(self.token.root, bucket, &[limit], Instant::now())
            .map_err(|retry| {
                Box::new(too_many_requests(
                    retry,
                    &format!("This action is limited to {count} an hour ({setting} raises it)."),
                ))
            })
    }
}

/// Extractor: the request's token, with the actor the audit log names.
pub struct Token {
    pub token: Authenticated,
    pub actor: Actor,
}

impl Token {
    /// Refuses (403) unless the token's scope allows `need` on the app with name key `app`.
    pub fn need(&self, need: Level, app: Option<&str>) -> Result<(), ApiError> {
        if self.token.scope.allows(need, app) {
            return Ok(());
        }
        let what = match (need, app) {
            (Level::Admin, _) => "this (admin scope needed)".to_string(),
            (_, Some(key)) => format!("{} {key}", need.as_str()),
            (_, None) => format!("{} (scope {} needed)", "this", need.as_str()),
        };
        Err(ApiError::forbidden(format!(
            "The token {} ({}) may not do {what}.",
            self.token.name, self.token.scope
        )))
    }
}

impl FromRequestParts<AppState> for Token {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        let Some(token) = parts.extensions.get::<Authenticated>().cloned() else {
            return Err(ApiError::unauthorized(
                "unauthorized",
                "Send an API token in an Authorization: Bearer header.",
            ));
        };
        let mut actor = parts
            .extensions
            .get::<ClientInfo>()
            .map(|c| c.actor(token.scope.level == Level::Admin))
            .unwrap_or_default();
        actor.token = Some(token.label());
        Ok(Token { token, actor })
    }
}

/// Any other path under `/api/`: a JSON 404 rather than the admin UI's page.
pub async fn unknown() -> ApiError {
    ApiError::not_found("There is no API route at this address; see /api/v1/openapi.json.")
}
