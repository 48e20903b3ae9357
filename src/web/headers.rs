//! The security envelope every response passes through: headers (CSP and friends, HSTS on
//! HTTPS only, no-store on pages), error pages, the HTTPS redirect and the body-size guard.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::web::client::ClientInfo;
use crate::web::errors::{ErrorMessage, Rendered, default_message, error_response};
use crate::web::views;

/// No inline script or style, no eval, nothing from another origin: assets are in the binary.
pub use crate::http_common::CSP;

pub const PERMISSIONS_POLICY: &str = "geolocation=(), microphone=(), camera=(), payment=(), usb=(), magnetometer=(), gyroscope=(), interest-cohort=()";

/// Outer layer: renders bare error statuses as pages, then sets the headers on everything.
pub async fn secure(req: Request, next: Next) -> Response {
    let https = req
        .extensions()
        .get::<ClientInfo>()
        .is_some_and(|c| c.https);
    let is_static = req.uri().path().starts_with("/static/");
    let mut resp = next.run(req).await;
    let status = resp.status();
    if (status.is_client_error() || status.is_server_error())
        && resp.extensions().get::<Rendered>().is_none()
    {
        let message = resp.extensions().get::<ErrorMessage>().map(|m| m.0.clone());
        let page = views::error_page(
            status,
            message.as_deref().unwrap_or(default_message(status)),
        );
        let (mut parts, _) = resp.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        resp = Response::from_parts(parts, Body::from(page));
    }
    let h = resp.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "referrer-policy",
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static(PERMISSIONS_POLICY),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if https {
        h.insert(
            "strict-transport-security",
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    if !is_static || status != StatusCode::OK {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// Refuses oversized bodies by their declared length before reading a byte of them, and sends
/// plain-HTTP clients to https when FORCE_HTTPS is on.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let https = req
        .extensions()
        .get::<ClientInfo>()
        .is_some_and(|c| c.https);
    if state.settings.force_https && !https {
        return redirect_to_https(&state.settings.allowed_hosts, req.headers(), req.uri());
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > state.settings.max_content_length) {
        let mb = state.settings.max_content_length as f64 / (1024.0 * 1024.0);
        let msg = format!(
            "The request is larger than this server accepts ({mb:.1} MiB, MAX_CONTENT_LENGTH). Nothing was changed."
        );
        let mut resp = error_response(StatusCode::PAYLOAD_TOO_LARGE, msg);
        // The body is not read; tell the client the connection will not be reused for it.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return resp;
    }
    next.run(req).await
}

pub use crate::http_common::request_host;

/// Whether the server answers to the Host this request names: any Host when
/// MILKCRATE_ALLOWED_HOSTS (or MILKCRATE_DOMAIN) is unset; else those names, and loopback,
/// which a DNS-rebinding page cannot name.
pub fn host_allowed(allowed: &[String], headers: &axum::http::HeaderMap, uri: &Uri) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Some(host) = request_host(headers, uri) else {
        return false;
    };
    allowed.contains(&host) || matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]")
}

/// The answer to a request for a Host this server does not serve (given before any
/// middleware, so it carries its own headers).
pub fn misdirected() -> Response {
    standalone_page(
        StatusCode::MISDIRECTED_REQUEST,
        crate::http_common::MISDIRECTED_MESSAGE,
    )
}

/// An error page with the security headers, for answers given outside the admin middleware.
pub fn standalone_page(status: StatusCode, message: &str) -> Response {
    crate::http_common::standalone_page(status, views::error_page(status, message)).map(Body::from)
}

/// A 301 to the same URL over https. With an allow-list the host is one of its names (the
/// request's own when it is listed, else the first); without one, the Host header is checked
/// character by character, never echoed blindly.
pub fn redirect_to_https(
    allowed: &[String],
    headers: &axum::http::HeaderMap,
    uri: &Uri,
) -> Response {
    match crate::http_common::https_location(allowed, headers, uri) {
        Some(location) => {
            let mut resp = StatusCode::MOVED_PERMANENTLY.into_response();
            resp.headers_mut().insert(header::LOCATION, location);
            resp
        }
        None => error_response(
            StatusCode::BAD_REQUEST,
            "This server only answers over HTTPS.",
        ),
    }
}
