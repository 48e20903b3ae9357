//! Where a request goes, decided once before any middleware: an app by its host name, an app
//! by its path route, the admin UI, or one of the short answers (421 for a host outside
//! MILKCRATE_ALLOWED_HOSTS, 400 for duplicate Host headers, 404 for a host that is neither an
//! app's nor the admin's, 308 from `/route` to `/route/`).
//!
//! The host is the request target's authority when it has one (HTTP/2's `:authority`, or an
//! absolute-form target in HTTP/1.1, which RFC 9112 §3.2.2 says wins over `Host`), else the one
//! `Host` header; port, case and a trailing dot do not matter.

use axum::body::Body;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};

use super::Route;
use crate::app::AppState;
use crate::domain::host::request_host_name;
use crate::server::ConnInfo;
use crate::web::headers::{misdirected, standalone_page};

/// What to do with one request.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Forward to the app. `by_host`: matched by host name, so the path goes untouched.
    App { route: Route, by_host: bool },
    /// Exactly an app's path route without its slash: 308 to this location.
    AddSlash(String),
    /// milkcrate's own pages.
    Admin,
    /// With MILKCRATE_ADMIN_HOST set, a host that is neither the admin's nor an app's; or a
    /// name in the apps domain that no app has.
    UnknownHost,
    /// An app's path route asked for on MILKCRATE_ADMIN_HOST, where no app is served.
    PathOnAdminHost,
    /// A host outside MILKCRATE_ALLOWED_HOSTS.
    Misdirected,
    /// More than one `Host` header (RFC 9112 §3.2: a 400).
    DuplicateHost,
}

impl Decision {
    /// What the access log names as the matched route (`None`: the admin router says).
    pub fn log_label(&self) -> Option<String> {
        match self {
            Decision::App { route, by_host } => Some(if *by_host {
                format!("app {} (host)", route.app)
            } else {
                format!("app {}", route.prefix)
            }),
            Decision::AddSlash(_) => Some("app route without slash".into()),
            Decision::Admin => None,
            Decision::UnknownHost => Some("unknown host".into()),
            Decision::PathOnAdminHost => Some("app path on the admin host".into()),
            Decision::Misdirected => Some("host not allowed".into()),
            Decision::DuplicateHost => Some("duplicate host".into()),
        }
    }
}

/// The host this request is for, normalised; `Err` when it carries several `Host` headers.
pub fn target_host(req: &Request<Body>) -> Result<Option<String>, ()> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(());
    }
    if let Some(authority) = req.uri().authority() {
        return Ok(request_host_name(authority.as_str()));
    }
    Ok(first
        .and_then(|h| h.to_str().ok())
        .and_then(request_host_name))
}

/// A name MILKCRATE_ALLOWED_HOSTS lists (the admin's, when no admin host is set).
fn is_allowed_name(settings: &crate::config::Settings, host: Option<&str>) -> bool {
    host.is_some_and(|h| settings.allowed_hosts.iter().any(|a| a == h))
}

fn loopback(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

/// Decides where `req` goes (see the module's doc).
pub fn decide(state: &AppState, req: &Request<Body>) -> Decision {
    let Ok(host) = target_host(req) else {
        return Decision::DuplicateHost;
    };
    let settings = &state.settings;
    let table = if settings.builtin_router {
        Some(state.routes.current())
    } else {
        None
    };
    // CONNECT names a host but asks for a tunnel, which no app is offered: it goes where it
    // went before host names (the admin router's 404/405).
    let host_route = host
        .as_deref()
        .filter(|_| req.method() != http::Method::CONNECT)
        .and_then(|h| table.as_ref().and_then(|t| t.lookup_host(h).cloned()));
    let admin_host = settings.admin_host.as_deref();
    let is_admin_host = host.is_some() && host.as_deref() == admin_host;
    let allowed = &settings.allowed_hosts;
    let host_ok = allowed.is_empty()
        || host_route.is_some()
        || is_admin_host
        || host
            .as_deref()
            .is_some_and(|h| loopback(h) || allowed.iter().any(|a| a == h));
    if !host_ok {
        return Decision::Misdirected;
    }
    // The admin host is the admin's even if an app's name in the apps domain matches it.
    if let Some(route) = host_route.filter(|_| !is_admin_host) {
        return Decision::App {
            route,
            by_host: true,
        };
    }
    let path = req.uri().path();
    // With an admin host, no app runs script on the admin's origin: path routes are served on
    // every other host, not there.
    let on_admin_host = is_admin_host && admin_host.is_some();
    if let Some(route) = table.as_ref().and_then(|t| t.lookup(path)) {
        if on_admin_host {
            return Decision::PathOnAdminHost;
        }
        if path == route.prefix {
            let location = match req.uri().query() {
                Some(q) => format!("{path}/?{q}"),
                None => format!("{path}/"),
            };
            return Decision::AddSlash(location);
        }
        return Decision::App {
            route: route.clone(),
            by_host: false,
        };
    }
    // A name in the apps domain that no app has (any longer) is nobody's: never the admin UI,
    // which a worker an app left behind under that name could otherwise take over.
    let in_apps_domain = match (host.as_deref(), settings.apps_domain.as_deref()) {
        (Some(h), Some(d)) => h == d || crate::domain::host::under(h, d),
        _ => false,
    };
    match admin_host {
        Some(_) if !is_admin_host && path != "/health" => Decision::UnknownHost,
        None if in_apps_domain && !is_allowed_name(settings, host.as_deref()) => {
            Decision::UnknownHost
        }
        _ => Decision::Admin,
    }
}

/// The answer to every decision but `Admin` (which the caller sends to the admin router).
pub async fn answer(
    state: &AppState,
    req: Request<Body>,
    conn: ConnInfo,
    decision: Decision,
) -> Response<Body> {
    match decision {
        Decision::App { route, by_host } => super::forward(state, req, conn, route, by_host).await,
        Decision::AddSlash(location) => {
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        Decision::UnknownHost => standalone_page(
            StatusCode::NOT_FOUND,
            "Nothing is served at this host name.",
        ),
        Decision::PathOnAdminHost => standalone_page(
            StatusCode::NOT_FOUND,
            "Apps are not served on the admin's host name: open this path on another name of this server, or the app at its own host name.",
        ),
        Decision::Misdirected => misdirected(),
        Decision::DuplicateHost => standalone_page(
            StatusCode::BAD_REQUEST,
            "The request names its host more than once.",
        ),
        Decision::Admin => standalone_page(StatusCode::NOT_FOUND, "Not found."),
    }
}
