//! Forwarding one request to an app's container.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::{Route, Target};
use crate::app::AppState;
use crate::server::ConnInfo;
use crate::web::client::client_info;

/// How long an app may take to start answering a request.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Connections to app containers: pooled and kept alive, except for upstreams that close every
/// connection (`Connection: close`), which are sent through an unpooled client so no request
/// waits on a connection the app already closed (measured: about 6 ms each with busybox httpd).
#[derive(Clone)]
pub struct Upstream {
    pooled: Client<HttpConnector, Body>,
    unpooled: Client<HttpConnector, Body>,
    closing: Arc<RwLock<HashSet<SocketAddr>>>,
}

impl Default for Upstream {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        let client = |idle: usize| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(idle)
                .build(connector.clone())
        };
        Self {
            pooled: client(64),
            unpooled: client(0),
            closing: Arc::default(),
        }
    }
}

impl Upstream {
    fn client_for(&self, addr: SocketAddr) -> &Client<HttpConnector, Body> {
        if self
            .closing
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&addr)
        {
            &self.unpooled
        } else {
            &self.pooled
        }
    }

    /// Remembers whether `addr` closes its connections after each response.
    fn observe(&self, addr: SocketAddr, closes: bool) {
        let known = self
            .closing
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&addr);
        if known != closes {
            let mut set = self.closing.write().unwrap_or_else(|p| p.into_inner());
            if closes {
                set.insert(addr);
            } else {
                set.remove(&addr);
            }
        }
    }
}

/// Headers that describe one connection, not the request: never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Forwards `req` to the app of `route`. `by_host`: the request came by one of the app's host
/// names, so the path goes as it is (no prefix to strip, no `X-Forwarded-Prefix`), and the app
/// has an origin of its own (its service workers are allowed).
pub async fn forward(
    state: &AppState,
    mut req: Request<Body>,
    conn: ConnInfo,
    route: Route,
    by_host: bool,
) -> Response<Body> {
    // HTTP/2's `:authority` and an absolute-form target name the host in the URI, and win over
    // a `Host` header (RFC 9112 §3.2.2): the app is told the host it was routed by.
    if let Some(authority) = req.uri().authority().cloned()
        && let Ok(v) = HeaderValue::from_str(authority.as_str())
    {
        req.headers_mut().insert(header::HOST, v);
    }
    let client = client_info(state, Some(conn), req.headers());
    // The access log and metrics: recorded when the response body ends, never waited on.
    let seen = super::observe::Seen::start(state, &route.app, &req, &client);
    seen.finish(forward_as(state, req, conn, route, client, by_host).await)
}

async fn forward_as(
    state: &AppState,
    mut req: Request<Body>,
    conn: ConnInfo,
    route: Route,
    client: crate::web::client::ClientInfo,
    by_host: bool,
) -> Response<Body> {
    if state.settings.force_https && !client.https {
        if by_host {
            // The host is one of the app's (from the route table), so it is safe to name.
            let host = super::dispatch::target_host(&req)
                .ok()
                .flatten()
                .unwrap_or_default();
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
            if let Ok(v) = HeaderValue::from_str(&format!("https://{host}{path}")) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            return resp;
        }
        return crate::web::headers::redirect_to_https(
            &state.settings.allowed_hosts,
            req.headers(),
            req.uri(),
        );
    }
    // By host name an app has its own origin, but without MILKCRATE_ADMIN_HOST the admin UI may
    // later be opened under a name an app once had: workers only with an admin host.
    let own_origin = by_host && state.settings.admin_host.is_some();
    if !own_origin && is_service_worker_script(req.headers()) {
        // A worker registered from an app route would share the admin's origin and could
        // intercept the admin pages (and the password typed into them): never let one install.
        return unavailable(
            StatusCode::FORBIDDEN,
            "Apps served under a path share milkcrate's origin, so they cannot install service workers.",
            None,
        );
    }
    let (addr, inflight) = match &route.target {
        Target::Serving { addr, inflight, .. } => (*addr, inflight.clone()),
        Target::Replicas(set) => match set.pick() {
            Some(b) => (b.addr, b.inflight.clone()),
            None => {
                return unavailable(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("{} has no replica running.", route.app),
                    Some(5),
                );
            }
        },
        Target::Stopped => {
            return unavailable(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{} is stopped.", route.app),
                None,
            );
        }
        Target::Deploying => {
            return unavailable(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{} is being deployed. Try again in a moment.", route.app),
                Some(5),
            );
        }
        Target::Failing(why) => {
            return unavailable(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{} cannot answer right now: {why}.", route.app),
                Some(10),
            );
        }
    };
    let guard = InFlight::new(inflight);
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path();
    let rest = if by_host {
        path
    } else {
        &path[route.prefix.len()..]
    };
    let target = match parts.uri.query() {
        Some(q) => format!(
            "http://{addr}{}?{q}",
            if rest.is_empty() { "/" } else { rest }
        ),
        None => format!("http://{addr}{}", if rest.is_empty() { "/" } else { rest }),
    };
    let Ok(uri) = target.parse::<Uri>() else {
        return unavailable(
            StatusCode::BAD_REQUEST,
            "The request path could not be forwarded.",
            None,
        );
    };
    let original_host = parts.headers.get(header::HOST).cloned();
    strip_hop_by_hop(&mut parts.headers);
    strip_our_cookies(&mut parts.headers);
    if upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts
            .headers
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    let forwarded_for = match parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        // The trust `client_info` decided on above, not decided a second time.
        Some(chain) if client.via_proxy => {
            format!("{chain}, {}", conn.peer.ip())
        }
        _ => conn.peer.ip().to_string(),
    };
    set(&mut parts.headers, "x-forwarded-for", &forwarded_for);
    set(
        &mut parts.headers,
        "x-forwarded-proto",
        if client.https { "https" } else { "http" },
    );
    if let Some(host) = original_host.as_ref().and_then(|h| h.to_str().ok()) {
        set(&mut parts.headers, "x-forwarded-host", host);
    }
    if by_host {
        // A client's own value would tell the app a prefix it is not served under.
        parts.headers.remove("x-forwarded-prefix");
    } else {
        set(&mut parts.headers, "x-forwarded-prefix", &route.prefix);
    }
    set(&mut parts.headers, "x-real-ip", &client.ip.to_string());
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    // Swarm mode: a bodyless idempotent request may go once more to another task when the
    // first one fails (a task that died before the table changed).
    let second_try = match &route.target {
        Target::Replicas(set) if !upgrade && replayable(&parts) => set.pick_other(addr).map(|b| {
            (
                b.addr,
                parts.method.clone(),
                parts.uri.clone(),
                parts.headers.clone(),
            )
        }),
        _ => None,
    };
    let outgoing = Request::from_parts(parts, body);

    let response = match tokio::time::timeout(
        RESPONSE_TIMEOUT,
        state.upstream.client_for(addr).request(outgoing),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) if second_try.is_some() => {
            tracing::debug!(app = route.app, error = %e, "upstream request failed; trying another task");
            match retry(state, second_try).await {
                Some(r) => r,
                None => {
                    return unavailable(
                        StatusCode::BAD_GATEWAY,
                        &format!("{} is not answering. Try again in a moment.", route.app),
                        Some(5),
                    );
                }
            }
        }
        Ok(Err(e)) => {
            tracing::debug!(app = route.app, error = %e, "upstream request failed");
            return unavailable(
                StatusCode::BAD_GATEWAY,
                &format!("{} is not answering. Try again in a moment.", route.app),
                Some(5),
            );
        }
        Err(_) => {
            return unavailable(
                StatusCode::GATEWAY_TIMEOUT,
                &format!(
                    "{} did not answer within {} s.",
                    route.app,
                    RESPONSE_TIMEOUT.as_secs()
                ),
                None,
            );
        }
    };
    let (mut parts, body) = response.into_parts();
    let closes = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("close"))
        || parts.version == http::Version::HTTP_10;
    state.upstream.observe(addr, closes);
    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let mut upstream_response = Response::from_parts(parts.clone(), ());
            let upstream_upgrade = hyper::upgrade::on(&mut upstream_response);
            tokio::spawn(async move {
                let _guard = guard;
                if let (Ok(a), Ok(b)) = tokio::join!(client_upgrade, upstream_upgrade) {
                    let _ =
                        tokio::io::copy_bidirectional(&mut TokioIo::new(a), &mut TokioIo::new(b))
                            .await;
                }
            });
        }
        return Response::from_parts(parts, Body::empty());
    }
    strip_hop_by_hop(&mut parts.headers);
    refuse_our_cookies(&mut parts.headers);
    parts.headers.remove("service-worker-allowed");
    // The body streams through; the in-flight count drops when it is done (or dropped).
    let body = body.map_frame(move |frame| {
        let _keep = &guard;
        frame
    });
    Response::from_parts(parts, Body::new(body))
}

/// The second try of a replayable request at another task.
async fn retry(
    state: &AppState,
    second_try: Option<(SocketAddr, http::Method, Uri, HeaderMap)>,
) -> Option<Response<hyper::body::Incoming>> {
    let (other, method, uri, headers) = second_try?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut again = Request::new(Body::empty());
    *again.method_mut() = method;
    *again.headers_mut() = headers;
    *again.uri_mut() = format!("http://{other}{path}").parse::<Uri>().ok()?;
    tokio::time::timeout(
        RESPONSE_TIMEOUT,
        state.upstream.client_for(other).request(again),
    )
    .await
    .ok()?
    .ok()
}

/// A request that can be sent twice: GET, HEAD or OPTIONS without a body.
fn replayable(parts: &http::request::Parts) -> bool {
    let bodyless = parts.headers.get(header::TRANSFER_ENCODING).is_none()
        && parts
            .headers
            .get(header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0");
    bodyless
        && matches!(
            parts.method,
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        )
}

fn is_upgrade(h: &HeaderMap) -> bool {
    let connection_upgrade = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    connection_upgrade
        && h.get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        h.remove(name);
    }
    for name in HOP_BY_HOP {
        h.remove(*name);
    }
}

/// The admin's session and CSRF cookies are milkcrate's: an app on the same host never sees them
/// (its code could otherwise read the admin session from its request headers).
fn strip_our_cookies(h: &mut HeaderMap) {
    let kept: Vec<String> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty() && !is_ours(c))
        .map(String::from)
        .collect();
    h.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
    {
        h.insert(header::COOKIE, v);
    }
}

/// Nor may an app set (or clear) them. The name is read from the raw bytes: a value that is not
/// valid UTF-8 (a 0xFF byte in an attribute) is judged by its name like any other, and a cookie
/// whose name is not a plain token (which a browser may read differently) is dropped.
fn refuse_our_cookies(h: &mut HeaderMap) {
    let kept: Vec<HeaderValue> = h
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| app_may_set(v.as_bytes()))
        .cloned()
        .collect();
    h.remove(header::SET_COOKIE);
    for v in kept {
        h.append(header::SET_COOKIE, v);
    }
}

fn is_ours(cookie: &str) -> bool {
    is_our_name(cookie.split('=').next().unwrap_or("").trim().as_bytes())
}

fn is_our_name(name: &[u8]) -> bool {
    [
        crate::web::session::SESSION_COOKIE,
        crate::web::session::ANON_CSRF_COOKIE,
    ]
    .iter()
    .any(|ours| name.eq_ignore_ascii_case(ours.as_bytes()))
}

/// Whether an app's `Set-Cookie` may reach the browser: it names a cookie with a plain token
/// (RFC 6265 §4.1.1) that is not one of milkcrate's.
fn app_may_set(set_cookie: &[u8]) -> bool {
    let Some(eq) = set_cookie.iter().position(|&b| b == b'=') else {
        return false;
    };
    let name = set_cookie[..eq].trim_ascii();
    let token = |b: &u8| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(b);
    !name.is_empty() && name.iter().all(token) && !is_our_name(name)
}

fn is_service_worker_script(h: &HeaderMap) -> bool {
    h.get_all("service-worker")
        .iter()
        .any(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"script"))
}

fn set(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// Our page for an app that cannot answer; never a hang.
fn unavailable(status: StatusCode, message: &str, retry_after: Option<u64>) -> Response<Body> {
    let mut resp = crate::web::headers::standalone_page(status, message);
    resp.extensions_mut().insert(super::observe::Generated);
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// Counts a request against its container until dropped.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Self(counter)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
