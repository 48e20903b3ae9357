//! CSRF protection for every state-changing request, applied as middleware to the whole router
//! so a route added later cannot forget it. The token is an HMAC (key from SECRET_KEY) of the
//! session's secret, or of the anonymous cookie's secret before login. It is accepted from the
//! form field `csrf_token` or the `X-CSRFToken` / `X-CSRF-Token` header, as in the original.
//! Tokens live as long as their session: a dashboard left open does not go stale after an hour.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::app::AppState;
use crate::secrets::{ct_eq, sign};
use crate::web::errors::error_response;
use crate::web::form::parse_strict;
use crate::web::session::{AnonCsrf, CurrentSession};

pub const FIELD: &str = "csrf_token";

pub const EXPIRED: &str = "This form has expired or was not sent from milkcrate (missing or invalid CSRF token). Reload the page and try again; nothing was changed.";

/// The token forms on this request's pages must carry.
pub fn token_for(state: &AppState, req_ext: &axum::http::Extensions) -> String {
    match (req_ext.get::<CurrentSession>(), req_ext.get::<AnonCsrf>()) {
        (Some(CurrentSession(Some(s))), _) => {
            sign(&state.csrf_key, &[b"session", s.csrf_secret.as_bytes()])
        }
        (_, Some(AnonCsrf(secret))) => sign(&state.csrf_key, &[b"anonymous", secret.as_bytes()]),
        _ => String::new(),
    }
}

pub async fn verify(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) {
        return next.run(req).await;
    }
    let expected = token_for(&state, req.extensions());
    let header_token = ["x-csrftoken", "x-csrf-token"].iter().find_map(|h| {
        req.headers()
            .get(*h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let (req, provided) = match header_token {
        Some(t) => (req, Some(t)),
        None if is_form => {
            let (parts, body) = req.into_parts();
            let limit = usize::try_from(state.settings.max_content_length).unwrap_or(usize::MAX);
            let Ok(bytes) = to_bytes(body, limit).await else {
                return error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "The request is larger than this server accepts.",
                );
            };
            let pairs = match parse_strict(&bytes) {
                Ok(p) => p,
                Err(e) => return error_response(StatusCode::BAD_REQUEST, e.to_string()),
            };
            let token = pairs.into_iter().find(|(k, _)| k == FIELD).map(|(_, v)| v);
            (Request::from_parts(parts, Body::from(bytes)), token)
        }
        None => (req, None),
    };
    match provided {
        Some(p) if !expected.is_empty() && ct_eq(p.as_bytes(), expected.as_bytes()) => {
            next.run(req).await
        }
        _ => error_response(StatusCode::BAD_REQUEST, EXPIRED),
    }
}
