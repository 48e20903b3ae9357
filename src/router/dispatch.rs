//! Where a request goes, decided once before any middleware: an app by its host name, an app
//! by its path route, the admin UI, or one of the short answers (421 for a host outside
//! MILKCRATE_ALLOWED_HOSTS, 400 for duplicate Host headers, 404 for a host that is neither an
//! app's nor the admin's, 308 from `/route` to `/route/`).
//!
//! The host is the request target's authority when it has one (HTTP/2's `:authority`, or an
//! absolute-form target in HTTP/1.1, which RFC 9112 §3.2.2 says wins over `Host`), else the one
//! `Host` header; port, case and a trailing dot do not matter.

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Body;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};

use super::{RouteRef, RouterState, TableExt};
use crate::http_common::ConnInfo;

/// What to do with one request.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Forward to the app. `by_host`: matched by host name, so the path goes untouched.
    App { route: RouteRef, by_host: bool },
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

/// The access log's name for the route a request matched: made once per route table, shared.
#[derive(Debug, Clone)]
pub enum RouteLabel {
    Fixed(&'static str),
    Shared(Arc<str>),
}

impl RouteLabel {
    pub fn as_str(&self) -> &str {
        match self {
            RouteLabel::Fixed(s) => s,
            RouteLabel::Shared(s) => s,
        }
    }
}

impl std::fmt::Display for RouteLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Decision {
    /// What the access log names as the matched route (`None`: the admin router says).
    pub fn log_label(&self) -> Option<RouteLabel> {
        Some(match self {
            Decision::App { route, by_host } => RouteLabel::Shared(if *by_host {
                route.prepared().by_host_label.clone()
            } else {
                route.prepared().by_path_label.clone()
            }),
            Decision::AddSlash(_) => RouteLabel::Fixed("app route without slash"),
            Decision::Admin => return None,
            Decision::UnknownHost => RouteLabel::Fixed("unknown host"),
            Decision::PathOnAdminHost => RouteLabel::Fixed("app path on the admin host"),
            Decision::Misdirected => RouteLabel::Fixed("host not allowed"),
            Decision::DuplicateHost => RouteLabel::Fixed("duplicate host"),
        })
    }
}

/// The host this request is for, normalised; `Err` when it carries several `Host` headers.
pub fn target_host(req: &Request<Body>) -> Result<Option<String>, ()> {
    target_host_ref(req).map(|h| h.map(Cow::into_owned))
}

/// [`target_host`], borrowed from the request when it is already in normal form (the common
/// case: a lower-case name), so deciding allocates nothing.
fn target_host_ref(req: &Request<Body>) -> Result<Option<Cow<'_, str>>, ()> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(());
    }
    if let Some(authority) = req.uri().authority() {
        return Ok(host_name(authority.as_str()));
    }
    Ok(first.and_then(|h| h.to_str().ok()).and_then(host_name))
}

/// `domain::host::request_host_name`, borrowing when nothing needs lowering.
fn host_name(authority: &str) -> Option<Cow<'_, str>> {
    let raw = authority.trim();
    if raw.is_empty() || raw.contains('@') || raw.starts_with('[') {
        return crate::domain::host::request_host_name(authority).map(Cow::Owned);
    }
    let host = match raw.rsplit_once(':') {
        Some((h, port))
            if port.is_empty() || (port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())) =>
        {
            h
        }
        Some(_) => return None,
        None => raw,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(host))
    }
}
/// A name MILKCRATE_ALLOWED_HOSTS lists (the admin's, when no admin host is set).
fn is_allowed_name(settings: &crate::config::Settings, host: Option<&str>) -> bool {
    host.is_some_and(|h| settings.allowed_hosts.iter().any(|a| a == h))
}

fn loopback(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

/// Decides where `req` goes (see the module's doc).
pub fn decide(state: &RouterState, req: &Request<Body>) -> Decision {
    let Ok(host) = target_host_ref(req) else {
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
        .and_then(|h| table.as_ref().and_then(|t| t.route_for_host(h)));
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
    if let Some(route) = table.as_ref().and_then(|t| t.route_for_path(path)) {
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
            route,
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
    state: &Arc<RouterState>,
    req: Request<Body>,
    conn: &ConnInfo,
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
        Decision::UnknownHost => state.page(
            StatusCode::NOT_FOUND,
            "Nothing is served at this host name.",
        ),
        Decision::PathOnAdminHost => state.page(
            StatusCode::NOT_FOUND,
            "Apps are not served on the admin's host name: open this path on another name of this server, or the app at its own host name.",
        ),
        Decision::Misdirected => state.page(
            StatusCode::MISDIRECTED_REQUEST,
            crate::http_common::MISDIRECTED_MESSAGE,
        ),
        Decision::DuplicateHost => state.page(
            StatusCode::BAD_REQUEST,
            "The request names its host more than once.",
        ),
        Decision::Admin => state.page(StatusCode::NOT_FOUND, "Not found."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_borrowed_or_not_agree_with_the_domain_rule() {
        for a in [
            "example.org",
            "Example.ORG:8080",
            "shop.example.org.",
            "shop.example.org.:443",
            "[::1]:80",
            "[::1]",
            "a:b",
            "a:123456",
            "user@host",
            "",
            " ",
            ".",
            ":80",
            "host:",
            "127.0.0.1:3000",
        ] {
            assert_eq!(
                host_name(a).map(Cow::into_owned),
                crate::domain::host::request_host_name(a),
                "{a:?}"
            );
        }
        assert!(matches!(
            host_name("shop.example.org:80"),
            Some(Cow::Borrowed(_))
        ));
    }
}
