//! The HTTP pieces the router (`router/`) and the admin UI (`web/`) both need, below both so
//! neither imports the other: the connection a request came on ([`ConnInfo`]), who the client
//! is ([`client`]), the names of milkcrate's own cookies, the host a request names, the HTTPS
//! redirect's location, and the standalone error page's envelope. No axum here: plain `http`
//! types, so this stays usable by the accept loop, the router and the admin UI alike.

pub mod client;

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode, Uri};

pub use client::{ClientInfo, client_info_with};

/// Attached to every request: who is on the other end of the socket, and over what.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The name the TLS client asked for (`None` over plain HTTP, or without SNI).
    pub sni: Option<crate::tls::Sni>,
}

/// The soft limit of open files of this process (from /proc/self/limits; 1024 when unknown):
/// what client connections and the upstream pool are sized by.
pub fn open_file_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1024)
}

/// The admin's session cookie.
pub const SESSION_COOKIE: &str = "milkcrate_session";
/// The CSRF cookie of a visitor without a session (the login form).
pub const ANON_CSRF_COOKIE: &str = "milkcrate_csrf";

/// Whether a cookie name is one of milkcrate's (ASCII case ignored, as browsers compare names
/// byte for byte but a proxy in front may not).
pub fn is_our_cookie_name(name: &[u8]) -> bool {
    [SESSION_COOKIE, ANON_CSRF_COOKIE]
        .iter()
        .any(|ours| name.eq_ignore_ascii_case(ours.as_bytes()))
}

/// The prefix every one of milkcrate's cookie names starts with: a `Cookie` header without it
/// (ASCII case ignored) names none of them.
pub const OUR_COOKIE_PREFIX: &str = "milkcrate_";

/// The security headers of a page milkcrate writes outside the admin middleware.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
font-src 'self'; connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'";

/// Renders milkcrate's error page (a status and a plain sentence) as HTML. The admin UI owns the
/// template (`web::views::error_page`); the composition root hands it to the router.
pub type ErrorPageFn = fn(StatusCode, &str) -> String;

/// An error page (already rendered) with the security headers, for answers given outside the
/// admin middleware.
pub fn standalone_page(status: StatusCode, html: String) -> Response<String> {
    let mut resp = Response::new(html);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

/// What a request for a host this server does not serve is told (421).
pub const MISDIRECTED_MESSAGE: &str =
    "This server does not answer to that host name (MILKCRATE_ALLOWED_HOSTS).";

/// The host a request names (the request target's authority when it has one, as HTTP/2's
/// `:authority` and HTTP/1.1's absolute form do, else the Host header), lower case, without
/// port or trailing dot.
pub fn request_host(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    match uri.authority() {
        Some(a) => crate::domain::host::request_host_name(a.as_str()),
        None => headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(crate::domain::host::request_host_name),
    }
}

/// Where FORCE_HTTPS sends a plain-HTTP request: the same URL over https. With an allow-list
/// the host is one of its names (the request's own when it is listed, else the first); without
/// one, the Host header is checked character by character, never echoed blindly. `None`: no
/// host that could be named (the caller answers 400).
pub fn https_location(allowed: &[String], headers: &HeaderMap, uri: &Uri) -> Option<HeaderValue> {
    let named = request_host(headers, uri).unwrap_or_default();
    let configured = match allowed.first() {
        None => None,
        Some(_) if allowed.contains(&named) => Some(named),
        Some(first) => Some(first.clone()),
    };
    let host_header = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let host = configured.as_deref().unwrap_or(host_header);
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if !valid_host {
        return None;
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let uri = format!("https://{host}{path}").parse::<Uri>().ok()?;
    HeaderValue::from_str(&uri.to_string()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_cookie_names_share_the_prefix() {
        for name in [SESSION_COOKIE, ANON_CSRF_COOKIE] {
            assert!(name.starts_with(OUR_COOKIE_PREFIX));
            assert!(is_our_cookie_name(name.to_uppercase().as_bytes()));
        }
        assert!(!is_our_cookie_name(b"milkcrate_other"));
    }

    #[test]
    fn https_location_names_only_a_checked_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("Example.org:80"));
        let uri: Uri = "/a?b=1".parse().unwrap();
        assert_eq!(
            https_location(&[], &h, &uri).unwrap(),
            "https://Example.org:80/a?b=1"
        );
        let allowed = vec!["admin.example.org".to_string()];
        assert_eq!(
            https_location(&allowed, &h, &uri).unwrap(),
            "https://admin.example.org/a?b=1"
        );
        h.insert(header::HOST, HeaderValue::from_static("evil/x"));
        assert!(https_location(&[], &h, &uri).is_none());
    }
}
