//! Forwarding one request to an app's container.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::{RouteRef, RouterState, Target};
use crate::http_common::client::Identity;
use crate::http_common::{ConnInfo, OUR_COOKIE_PREFIX, is_our_cookie_name};

/// How long an app may take to start answering a request.
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Idle upstream connections kept per container address, at most: an eighth of the open-file
/// limit below that (a quarter goes to client connections), so idle ones never starve accepts.
const POOL_IDLE_PER_APP: usize = 512;

/// Connections to app containers: pooled and kept alive, except for upstreams that close every
/// connection (`Connection: close`), which are sent through an unpooled client so no request
/// waits on a connection the app already closed (measured: about 6 ms each with busybox httpd).
#[derive(Clone)]
pub struct Upstream {
    /// Plain sockets for [`super::h1`], milkcrate's own HTTP/1.1 path.
    pub raw: Arc<super::h1::Pool>,
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
                .pool_idle_timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(idle)
                .build(connector.clone())
        };
        let idle = (crate::http_common::open_file_limit() / 8).clamp(16, POOL_IDLE_PER_APP);
        Self {
            raw: Arc::new(super::h1::Pool::new(idle)),
            // Enough idle connections that a busy app's keep-alive clients do not churn them
            // (64 made a new connection for every 30th request at 100 concurrent clients).
            pooled: client(idle),
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

    /// Remembers whether `addr` closes its connections after each response (a read lock in
    /// the common case: nothing changed).
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
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static SERVICE_WORKER: HeaderName = HeaderName::from_static("service-worker");
static SERVICE_WORKER_ALLOWED: HeaderName = HeaderName::from_static("service-worker-allowed");
/// Browsers apply its `"cookies"` to the whole registrable domain: an app could log the admin
/// out (or wipe another app's storage on a sibling host). Never passed on.
static CLEAR_SITE_DATA: HeaderName = HeaderName::from_static("clear-site-data");

/// Forwards `req` to the app of `route`. `by_host`: the request came by one of the app's host
/// names, so the path goes as it is (no prefix to strip, no `X-Forwarded-Prefix`), and the app
/// has an origin of its own (its service workers are allowed).
pub async fn forward(
    state: &Arc<RouterState>,
    req: Request<Body>,
    conn: &ConnInfo,
    route: RouteRef,
    by_host: bool,
) -> Response<Body> {
    let (req, client, seen) = begin(state, req, conn, &route);
    let (response, inflight) = forward_as(state, req, conn, &route, client, by_host).await;
    seen.finish(response, inflight)
}

/// What every forwarded request starts with, whichever path sends it: the host the app is told,
/// the client's identity, and the access log's record of it.
pub(super) fn begin(
    state: &Arc<RouterState>,
    mut req: Request<Body>,
    conn: &ConnInfo,
    route: &RouteRef,
) -> (Request<Body>, Identity, super::observe::Seen) {
    // HTTP/2's `:authority` and an absolute-form target name the host in the URI, and win over
    // a `Host` header (RFC 9112 §3.2.2): the app is told the host it was routed by.
    if let Some(authority) = req.uri().authority()
        && let Ok(v) = HeaderValue::from_str(authority.as_str())
    {
        req.headers_mut().insert(header::HOST, v);
    }
    let peer = crate::config::canonical(conn.peer.ip());
    let client =
        crate::http_common::client::identify(peer, conn.tls, req.headers(), |ip| state.trusts(ip));
    // The access log and metrics: recorded when the response body ends, never waited on.
    let seen = super::observe::Seen::start(state, route, &req, &client);
    (req, client, seen)
}

/// A request ready to go to one container: headers rewritten, the target chosen.
pub(super) struct Outgoing {
    pub req: Request<Body>,
    /// The forwarded headers, not yet in `req` (each path writes them).
    pub forwarded: Forwarded,
    pub addr: SocketAddr,
    /// Counts the request against its container until the response is done.
    pub guard: InFlight,
    /// A WebSocket upgrade (only the hyper path carries those).
    pub upgrade: bool,
    /// Swarm mode: another task a bodyless idempotent request may go to once when the first
    /// one fails (a task that died before the table changed).
    pub second_try: Option<SocketAddr>,
}

/// The request side of forwarding, shared by both ways of sending: milkcrate's own answer when
/// the request goes nowhere (HTTPS only, a service worker, an app that is not running), else the
/// request to send, with its headers rewritten for the app (the forwarded ones apart, in
/// [`Outgoing::forwarded`]).
pub(super) fn prepare(
    state: &RouterState,
    req: Request<Body>,
    conn: &ConnInfo,
    route: &RouteRef,
    client: &Identity,
    by_host: bool,
) -> Result<Outgoing, Box<Response<Body>>> {
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
            return Err(Box::new(resp));
        }
        return Err(Box::new(
            match crate::http_common::https_location(
                &state.settings.allowed_hosts,
                req.headers(),
                req.uri(),
            ) {
                Some(location) => {
                    let mut resp = Response::new(Body::empty());
                    *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
                    resp.headers_mut().insert(header::LOCATION, location);
                    resp
                }
                None => state.page(
                    StatusCode::BAD_REQUEST,
                    "This server only answers over HTTPS.",
                ),
            },
        ));
    }
    // By host name an app has its own origin, but without MILKCRATE_ADMIN_HOST the admin UI may
    // later be opened under a name an app once had: workers only with an admin host.
    let own_origin = by_host && state.settings.admin_host.is_some();
    if !own_origin && is_service_worker_script(req.headers()) {
        // A worker registered from an app route would share the admin's origin and could
        // intercept the admin pages (and the password typed into them): never let one install.
        return Err(Box::new(unavailable(
            state,
            StatusCode::FORBIDDEN,
            "Apps served under a path share milkcrate's origin, so they cannot install service workers.",
            None,
        )));
    }
    let (addr, inflight) = match &route.target {
        Target::Serving { addr, inflight, .. } => (*addr, inflight),
        Target::Replicas(set) => match set.pick() {
            Some(b) => (b.addr, &b.inflight),
            None => {
                return Err(Box::new(unavailable(
                    state,
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("{} has no replica running.", route.app),
                    Some(5),
                )));
            }
        },
        Target::Stopped => {
            return Err(Box::new(unavailable(
                state,
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{} is stopped.", route.app),
                None,
            )));
        }
        Target::Deploying => {
            return Err(Box::new(unavailable(
                state,
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{} is being deployed. Try again in a moment.", route.app),
                Some(5),
            )));
        }
        Target::Failing(why) => {
            return Err(Box::new(unavailable(
                state,
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{} cannot answer right now: {why}.", route.app),
                Some(10),
            )));
        }
    };
    let guard = InFlight::new(inflight.clone());
    let upgrade = is_upgrade(req.headers());

    let (mut parts, body) = req.into_parts();
    let Some(uri) = upstream_uri(&parts.uri, route, addr, by_host) else {
        return Err(Box::new(unavailable(
            state,
            StatusCode::BAD_REQUEST,
            "The request path could not be forwarded.",
            None,
        )));
    };
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
    let peer_ip = ip_value(conn.peer.ip());
    let forwarded_for = match parts
        .headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
    {
        // The trust `identify` decided on above, not decided a second time.
        Some(chain) if client.via_proxy => {
            HeaderValue::from_str(&format!("{chain}, {}", conn.peer.ip())).ok()
        }
        _ => peer_ip.clone(),
    };
    let real_ip = if client.ip == conn.peer.ip() {
        peer_ip
    } else {
        ip_value(client.ip)
    };
    let forwarded = Forwarded {
        for_: forwarded_for,
        proto: HeaderValue::from_static(if client.https { "https" } else { "http" }),
        host: parts
            .headers
            .get(header::HOST)
            .is_some_and(|h| h.to_str().is_ok()),
        // By host name an app has its own origin: a client's own value would tell it a
        // prefix it is not served under.
        prefix: if by_host {
            None
        } else {
            route.prepared().prefix_header.clone()
        },
        real_ip,
    };
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    let second_try = match &route.target {
        Target::Replicas(set) if !upgrade && replayable(&parts) => {
            set.pick_other(addr).map(|b| b.addr)
        }
        _ => None,
    };
    Ok(Outgoing {
        req: Request::from_parts(parts, body),
        forwarded,
        addr,
        guard,
        upgrade,
        second_try,
    })
}

/// The headers the router sets on every request it forwards, each replacing whatever the
/// client sent under that name (`None`: the client's is removed and none is set). Kept apart
/// from the request's headers so each way of sending writes them its own way: hyper's path puts
/// them in the header map ([`Forwarded::apply`]), the plain HTTP/1.1 path writes them after the
/// others ([`Forwarded::write`]) without growing the map.
pub(super) struct Forwarded {
    /// `X-Forwarded-For`: the peer, after the chain a trusted proxy sent.
    pub(super) for_: Option<HeaderValue>,
    /// `X-Forwarded-Proto`.
    pub(super) proto: HeaderValue,
    /// `X-Forwarded-Host`: the request's `Host`, when it has one in plain text.
    pub(super) host: bool,
    /// `X-Forwarded-Prefix`: the route's path, for an app served under one.
    pub(super) prefix: Option<HeaderValue>,
    /// `X-Real-IP`: the client, as `identify` decided.
    pub(super) real_ip: Option<HeaderValue>,
}

impl Forwarded {
    const NAMES: [&'static HeaderName; 5] = [
        &X_FORWARDED_FOR,
        &X_FORWARDED_PROTO,
        &X_FORWARDED_HOST,
        &X_FORWARDED_PREFIX,
        &X_REAL_IP,
    ];

    /// Whether `name` is one of these (the client's own value of it is not sent).
    pub(super) fn sets(name: &HeaderName) -> bool {
        name.as_str().starts_with("x-") && Self::NAMES.contains(&name)
    }

    /// Puts these into `headers` (hyper's path).
    pub(super) fn apply(self, headers: &mut HeaderMap) {
        let host = self
            .host
            .then(|| headers.get(header::HOST).cloned())
            .flatten();
        let values = [self.for_, Some(self.proto), host, self.prefix, self.real_ip];
        for (name, value) in Self::NAMES.into_iter().zip(values) {
            match value {
                Some(v) => {
                    headers.insert(name.clone(), v);
                }
                None => {
                    headers.remove(name);
                }
            }
        }
    }

    /// These as the plain HTTP/1.1 path writes them, after the request's own `headers`
    /// (whose values of these names it leaves out).
    pub(super) fn lines<'a>(
        &'a self,
        headers: &'a HeaderMap,
    ) -> impl Iterator<Item = (&'static HeaderName, &'a HeaderValue)> {
        let host = self.host.then(|| headers.get(header::HOST)).flatten();
        let values = [
            self.for_.as_ref(),
            Some(&self.proto),
            host,
            self.prefix.as_ref(),
            self.real_ip.as_ref(),
        ];
        Self::NAMES
            .into_iter()
            .zip(values)
            .filter_map(|(name, value)| Some((name, value?)))
    }
}

/// The page for an app that did not answer: 502, or 504 after [`RESPONSE_TIMEOUT`].
pub(super) fn not_answering(
    state: &RouterState,
    route: &RouteRef,
    timed_out: bool,
) -> Response<Body> {
    if timed_out {
        unavailable(
            state,
            StatusCode::GATEWAY_TIMEOUT,
            &format!(
                "{} did not answer within {} s.",
                route.app,
                RESPONSE_TIMEOUT.as_secs()
            ),
            None,
        )
    } else {
        unavailable(
            state,
            StatusCode::BAD_GATEWAY,
            &format!("{} is not answering. Try again in a moment.", route.app),
            Some(5),
        )
    }
}

/// Sends the request through hyper's pooled client (bodies, WebSocket upgrades, HTTP/2 and TLS
/// clients; [`super::h1`] sends the rest).
async fn forward_as(
    state: &RouterState,
    req: Request<Body>,
    conn: &ConnInfo,
    route: &RouteRef,
    client: Identity,
    by_host: bool,
) -> (Response<Body>, Option<InFlight>) {
    let Outgoing {
        mut req,
        forwarded,
        addr,
        guard,
        upgrade,
        second_try,
    } = match prepare(state, req, conn, route, &client, by_host) {
        Ok(out) => out,
        Err(answer) => return (*answer, None),
    };
    forwarded.apply(req.headers_mut());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let again = second_try.map(|other| {
        (
            other,
            req.method().clone(),
            req.uri().clone(),
            req.headers().clone(),
        )
    });
    let response = match tokio::time::timeout(
        RESPONSE_TIMEOUT,
        state.upstream.client_for(addr).request(req),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::debug!(app = route.app, error = %e, "upstream request failed");
            refused(route, addr, e.is_connect());
            match retry(state, again).await {
                Some(r) => r,
                None => return (not_answering(state, route, false), None),
            }
        }
        Err(_) => return (not_answering(state, route, true), None),
    };
    let (mut parts, body) = response.into_parts();
    let closes = parts.version == http::Version::HTTP_10
        || parts
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| contains_ignore_case(v.as_bytes(), b"close"));
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
        return (Response::from_parts(parts, Body::empty()), None);
    }
    clean_response(&mut parts.headers);
    // The body streams through; the in-flight count drops when it is done (or dropped): the
    // guard goes with the observer that wraps the body.
    (Response::from_parts(parts, Body::new(body)), Some(guard))
}

/// What an app's response may not pass on: headers of its connection, milkcrate's cookies,
/// service-worker scope and `Clear-Site-Data`.
pub(super) fn clean_response(h: &mut HeaderMap) {
    strip_hop_by_hop(h);
    refuse_our_cookies(h);
    h.remove(&SERVICE_WORKER_ALLOWED);
    h.remove(&CLEAR_SITE_DATA);
}

/// The upstream URI: the container's address (made once per route table), and the path with
/// the route's prefix stripped (or untouched for a request by host name) and the query.
fn upstream_uri(uri: &Uri, route: &RouteRef, addr: SocketAddr, by_host: bool) -> Option<Uri> {
    let authority = match &route.prepared().authority {
        Some(a) => a.clone(),
        None => addr.to_string().parse().ok()?,
    };
    let path_and_query = match uri.path_and_query() {
        // By host name the path goes as it came (shared, not copied).
        Some(pq) if by_host && pq.path().starts_with('/') => pq.clone(),
        _ => {
            let rest = if by_host {
                uri.path()
            } else {
                &uri.path()[route.prefix.len()..]
            };
            let rest = if rest.is_empty() { "/" } else { rest };
            let pq = match uri.query() {
                Some(q) => format!("{rest}?{q}"),
                None => rest.to_string(),
            };
            PathAndQuery::from_maybe_shared(bytes::Bytes::from(pq)).ok()?
        }
    };
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts).ok()
}

/// A task that takes no connection (its node is gone) is passed over for a while, so the
/// next requests do not wait out the connect timeout on it too.
pub(super) fn refused(route: &RouteRef, addr: SocketAddr, connect_failed: bool) {
    if connect_failed && let Target::Replicas(set) = &route.target {
        set.mark_down(addr);
    }
}

/// An IP address as a header value. The last one made on this thread is kept: a connection's
/// requests come from one address (often one proxy's), and formatting an address is a
/// measurable part of a small request.
pub(super) fn ip_value(ip: std::net::IpAddr) -> Option<HeaderValue> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(std::net::IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| {
        if let Some((at, value)) = last.as_ref()
            && *at == ip
        {
            return Some(value.clone());
        }
        let value = HeaderValue::from_maybe_shared(bytes::Bytes::from(ip.to_string())).ok()?;
        *last = Some((ip, value.clone()));
        Some(value)
    })
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// The second try of a replayable request at another task.
async fn retry(
    state: &RouterState,
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
    // One pass over the few headers a request or answer has (names compare as enums), not a
    // hash lookup per hop-by-hop name: most carry none.
    if !h.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    if h.contains_key(header::CONNECTION) {
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
    }
    for name in &HOP_BY_HOP {
        h.remove(name);
    }
}

/// The admin's session and CSRF cookies are milkcrate's: an app on the same host never sees them
/// (its code could otherwise read the admin session from its request headers). One `Cookie`
/// header in plain text that cannot name one of them (none has milkcrate's prefix) goes as it
/// is; anything else is rebuilt from its kept pairs, several headers joined into one.
fn strip_our_cookies(h: &mut HeaderMap) {
    let mut values = h.get_all(header::COOKIE).iter();
    let Some(first) = values.next() else { return };
    if values.next().is_none()
        && first.to_str().is_ok()
        && !contains_ignore_case(first.as_bytes(), OUR_COOKIE_PREFIX.as_bytes())
    {
        return;
    }
    let kept: Vec<&str> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty() && !is_ours(c))
        .collect();
    let joined = (!kept.is_empty()).then(|| kept.join("; "));
    h.remove(header::COOKIE);
    if let Some(v) = joined.and_then(|j| HeaderValue::from_str(&j).ok()) {
        h.insert(header::COOKIE, v);
    }
}

/// Nor may an app set (or clear) them. The name is read from the raw bytes: a value that is not
/// valid UTF-8 (a 0xFF byte in an attribute) is judged by its name like any other, and a cookie
/// whose name is not a plain token (which a browser may read differently) is dropped.
fn refuse_our_cookies(h: &mut HeaderMap) {
    if h.get_all(header::SET_COOKIE)
        .iter()
        .all(|v| app_may_set(v.as_bytes()))
    {
        return;
    }
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
    is_our_cookie_name(cookie.split('=').next().unwrap_or("").trim().as_bytes())
}

/// Whether an app's `Set-Cookie` may reach the browser: it names a cookie with a plain token
/// (RFC 6265 §4.1.1) that is not one of milkcrate's.
fn app_may_set(set_cookie: &[u8]) -> bool {
    let Some(eq) = set_cookie.iter().position(|&b| b == b'=') else {
        return false;
    };
    let name = set_cookie[..eq].trim_ascii();
    let token = |b: &u8| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(b);
    !name.is_empty() && name.iter().all(token) && !is_our_cookie_name(name)
}

fn is_service_worker_script(h: &HeaderMap) -> bool {
    h.get_all(&SERVICE_WORKER)
        .iter()
        .any(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"script"))
}

/// Our page for an app that cannot answer; never a hang.
fn unavailable(
    state: &RouterState,
    status: StatusCode,
    message: &str,
    retry_after: Option<u64>,
) -> Response<Body> {
    let mut resp = state.page(status, message);
    resp.extensions_mut().insert(super::observe::Generated);
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// Counts a request against its container until dropped.
pub struct InFlight(Arc<AtomicUsize>);

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

#[cfg(test)]
mod tests {
    use super::*;

    fn cookies(h: &HeaderMap) -> Vec<String> {
        h.get_all(header::COOKIE)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    #[test]
    fn our_cookies_are_stripped_and_others_pass_untouched() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1;  b=2"));
        strip_our_cookies(&mut h);
        assert_eq!(cookies(&h), ["a=1;  b=2"], "nothing of ours: untouched");

        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; MilkCrate_Session=x; milkcrate_csrf=y; b=2"),
        );
        strip_our_cookies(&mut h);
        assert_eq!(cookies(&h), ["a=1; b=2"]);

        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        strip_our_cookies(&mut h);
        assert_eq!(cookies(&h), ["a=1; b=2"], "several headers become one");

        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static(" milkcrate_session =x"),
        );
        strip_our_cookies(&mut h);
        assert!(cookies(&h).is_empty());

        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_bytes(b"a=\xff; milkcrate_session=x").unwrap(),
        );
        strip_our_cookies(&mut h);
        assert!(
            cookies(&h).is_empty(),
            "a header that is not text is dropped"
        );
    }

    #[test]
    fn upstream_uris_strip_the_prefix_and_keep_the_query() {
        use super::super::{Route, RouteTable, TableExt};
        let addr: SocketAddr = "10.0.0.5:8080".parse().unwrap();
        let table = Arc::new(RouteTable::new(vec![Route {
            prefix: "/app".into(),
            app: "app".into(),
            hosts: Arc::from(vec!["app.example.org".to_string()]),
            target: Target::Serving {
                container_id: "c".into(),
                addr,
                inflight: Arc::default(),
            },
        }]));
        let by_path = table.route_for_path("/app/x").unwrap();
        let by_host = table.route_for_host("app.example.org").unwrap();
        let up = |uri: &str, route: &RouteRef, host: bool| {
            upstream_uri(&uri.parse().unwrap(), route, addr, host)
                .unwrap()
                .to_string()
        };
        assert_eq!(
            up("/app/x?y=1", &by_path, false),
            "http://10.0.0.5:8080/x?y=1"
        );
        assert_eq!(up("/app", &by_path, false), "http://10.0.0.5:8080/");
        assert_eq!(up("/app?q", &by_path, false), "http://10.0.0.5:8080/?q");
        assert_eq!(
            up("/app/x?y=1", &by_host, true),
            "http://10.0.0.5:8080/app/x?y=1"
        );
        assert_eq!(
            up("http://app.example.org", &by_host, true),
            "http://10.0.0.5:8080/"
        );
        assert_eq!(
            up("http://app.example.org?a=b", &by_host, true),
            "http://10.0.0.5:8080/?a=b"
        );
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_go() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a"));
        h.insert("x-custom", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "nothing hop-by-hop: untouched");
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Custom"),
        );
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["host"]);
    }

    #[test]
    fn set_cookie_naming_ours_is_refused_and_others_kept_in_order() {
        let mut h = HeaderMap::new();
        h.append(header::SET_COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::SET_COOKIE, HeaderValue::from_static("b=2; Path=/"));
        refuse_our_cookies(&mut h);
        assert_eq!(h.get_all(header::SET_COOKIE).iter().count(), 2);
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("milkcrate_session=evil"),
        );
        h.append(header::SET_COOKIE, HeaderValue::from_static("c=3"));
        refuse_our_cookies(&mut h);
        let kept: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(kept, ["a=1", "b=2; Path=/", "c=3"]);
    }
}
