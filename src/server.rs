//! The listeners: accept TCP connections, terminate TLS where configured (rustls, ring; the
//! certificate chosen per connection by SNI from `tls::CertStore`) and hand each HTTP/1.1 or
//! HTTP/2 connection to the router with the peer address attached. The plain-HTTP listener
//! answers ACME HTTP-01 challenges and sends hosts that have a certificate to https.
//!
//! Hand-written rather than `axum::serve` because that has no TLS, and because each request is
//! dispatched here: an app's route goes to the built-in router, everything else to the admin UI.
//! Slow clients are cut off by a header-read timeout. On a plain connection, bodyless HTTP/1.1
//! requests for apps are read here and answered by `router::h1` without hyper; the first other
//! request hands the connection to hyper (`serve_plain`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::HeaderValue;
use http::header::HeaderMap;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::Instrument;

use crate::app::AppState;
use crate::config::TlsFiles;

pub use crate::http_common::ConnInfo;

/// The request id header: sent back on every response and passed to apps.
const REQUEST_ID: &str = "x-request-id";

/// The admin route a request matched (`/admin/apps/{id}`), copied from axum's `MatchedPath` into
/// the response so the access line can name it.
#[derive(Debug, Clone)]
struct MatchedRoute(String);

/// Wraps the admin router so each response carries the route its request matched.
fn with_matched_route(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(
        |req: axum::extract::Request, next: axum::middleware::Next| async move {
            let matched = req
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map(|m| m.as_str().to_string());
            let mut resp = next.run(req).await;
            if let Some(m) = matched {
                resp.extensions_mut().insert(MatchedRoute(m));
            }
            resp
        },
    ))
}

/// The request's id: the client's `X-Request-Id` when it is well formed (1 to 64 of
/// `A-Z a-z 0-9 - _ . :`), else a new random one, which replaces whatever the client sent. Either
/// way the request (and so an app behind the router) carries it as `X-Request-Id`; the value is
/// returned for the response and the log.
fn take_request_id(headers: &mut HeaderMap) -> HeaderValue {
    let given = headers
        .get(REQUEST_ID)
        .filter(|v| v.to_str().is_ok_and(well_formed_request_id))
        .cloned();
    let id = given.unwrap_or_else(new_request_id);
    // `insert` replaces every value the client sent: the app sees exactly one id.
    headers.insert(REQUEST_ID, id.clone());
    id
}

fn well_formed_request_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// 12 hex digits, unpredictable without a system call per request: a per-thread key from the
/// system's source (a clock-derived one if it fails), and a counter mixed through SplitMix64.
fn new_request_id() -> HeaderValue {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<(u64, u64)> = Cell::new({
            let mut seed = [0u8; 8];
            if getrandom::fill(&mut seed).is_err() {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0);
                seed = t.to_le_bytes();
            }
            (u64::from_le_bytes(seed), 0)
        });
    }
    let n = STATE.with(|s| {
        let (key, count) = s.get();
        s.set((key, count.wrapping_add(1)));
        let mut z = key.wrapping_add(count.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    });
    // Shared from the start (one allocation): the id is cloned into the request, the access
    // line and the response, and a clone of a `Bytes` made from a `String` allocates again.
    let mut hex = [0u8; 12];
    hex::encode_to_slice(&n.to_be_bytes()[2..], &mut hex)
        .ok()
        .and_then(|()| HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(hex)).ok())
        .unwrap_or_else(|| HeaderValue::from_static("000000000000"))
}

/// The path as logged: at most 256 bytes (cut at a character boundary); never the query.
fn loggable_path(path: &str) -> String {
    let mut end = path.len().min(256);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    path[..end].to_string()
}

/// Reads the certificate chain and key of SSL_CERT_FILE/SSL_KEY_FILE; each failure names the
/// file and what is wrong.
pub fn load_tls(files: &TlsFiles) -> Result<crate::tls::Served, String> {
    let cert = std::fs::read(&files.cert)
        .map_err(|e| format!("cannot read SSL_CERT_FILE {}: {e}", files.cert.display()))?;
    let key = std::fs::read(&files.key)
        .map_err(|e| format!("cannot read SSL_KEY_FILE {}: {e}", files.key.display()))?;
    crate::tls::served_from_pem(&cert, &key).map_err(|e| {
        format!(
            "SSL_CERT_FILE {} and SSL_KEY_FILE {} do not make a usable pair: {e}",
            files.cert.display(),
            files.key.display()
        )
    })
}

/// One socket the server accepts on, and what it speaks there.
pub struct Listener {
    pub listener: TcpListener,
    pub kind: ListenerKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// MILKCRATE_LISTEN: HTTPS when SSL_CERT_FILE/SSL_KEY_FILE are set, else plain HTTP.
    Main { tls: bool },
    /// MILKCRATE_HTTP_LISTEN: plain HTTP; ACME HTTP-01 answers; hosts with a certificate are
    /// sent to https (308).
    Http,
    /// MILKCRATE_HTTPS_LISTEN: TLS with certificates chosen by SNI; TLS-ALPN-01 answers.
    Https,
}

impl ListenerKind {
    fn tls(self) -> bool {
        matches!(self, ListenerKind::Https | ListenerKind::Main { tls: true })
    }
}

/// What every connection's dispatch needs: shared by all connections (one `Arc` each, so an
/// idle connection holds a pointer, not a copy of the state).
struct Shared {
    state: AppState,
    router: Router,
    /// The port of the HTTPS listener, when there is one: plain HTTP to a host with a
    /// certificate is redirected there.
    https_port: Option<u16>,
}

/// Accepts connections on every listener until `shutdown` resolves, then lets open requests
/// finish (10 s at most).
pub async fn run(
    state: AppState,
    router: Router,
    listeners: Vec<Listener>,
    shutdown: impl Future<Output = ()>,
) {
    // Every connection holds a receiver; shutdown is announced through it, and the sender's
    // `closed()` resolves once the last connection has finished.
    let router = with_matched_route(router);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tls_config = crate::tls::server_config(state.certs.clone());
    let acceptor = match tls_config {
        Ok(c) => Some(TlsAcceptor::from(c)),
        Err(e) => {
            tracing::error!(error = %e, "TLS cannot be set up: the HTTPS listeners refuse every handshake");
            None
        }
    };
    let https_port = listeners
        .iter()
        .find(|l| l.kind == ListenerKind::Https)
        .and_then(|l| l.listener.local_addr().ok())
        .map(|a| a.port());
    let shared = Arc::new(Shared {
        state,
        router,
        https_port,
    });
    // At most this many client connections at once: each may hold an upstream connection
    // and a log follow an engine connection, so running out of descriptors would otherwise
    // turn every app's answer into a 502. Past the cap, new clients wait in the backlog.
    let slots = Arc::new(tokio::sync::Semaphore::new(connection_cap()));
    let main = tokio::runtime::Handle::current();
    let (plain, tls): (Vec<Listener>, Vec<Listener>) =
        listeners.into_iter().partition(|l| !l.kind.tls());
    if !plain.is_empty() {
        serve_plain_per_core(plain, &shared, &slots, &stop_rx, &main);
    }
    let any_tls = !tls.is_empty();
    let loops = tls.into_iter().map(|l| {
        accept_loop(
            l,
            shared.clone(),
            acceptor.clone(),
            slots.clone(),
            stop_rx.clone(),
        )
    });
    let all = futures_util::future::join_all(loops);
    tokio::select! {
        _ = all, if any_tls => {}
        () = shutdown => {}
    }
    drop(stop_rx);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), stop_tx.closed()).await;
}

/// Accepts on one TLS listener until the server stops (its future is dropped).
async fn accept_loop(
    l: Listener,
    shared: Arc<Shared>,
    acceptor: Option<TlsAcceptor>,
    slots: Arc<tokio::sync::Semaphore>,
    stop_rx: tokio::sync::watch::Receiver<bool>,
) {
    let Listener { listener, kind } = l;
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let stop = stop_rx.clone();
        let mut info = ConnInfo {
            peer,
            tls: true,
            sni: None,
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = permit;
            let Some(acceptor) = acceptor else { return };
            let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
            else {
                return;
            };
            // A TLS-ALPN-01 validation ends with the handshake: nothing is served on it.
            if stream.get_ref().1.alpn_protocol() == Some(crate::tls::ACME_TLS_ALPN) {
                let mut stream = stream;
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
                return;
            }
            info.sni = crate::tls::Sni::of(stream.get_ref().1);
            serve_connection(stream, info, kind, shared, stop).await;
        });
    }
}

/// Serves the plain-HTTP listeners on one single-threaded runtime per core, each accepting on its
/// own registration of each listening socket (nginx's model): a connection, its upstream socket
/// and every wakeup between them stay on one thread, with no work stealing between workers.
/// What `router::h1` does not take goes to hyper on the main runtime (`main`), as does
/// everything the admin UI starts. Each thread ends once the server stops and its connections
/// have finished (10 s at most).
fn serve_plain_per_core(
    listeners: Vec<Listener>,
    shared: &Arc<Shared>,
    slots: &Arc<tokio::sync::Semaphore>,
    stop: &tokio::sync::watch::Receiver<bool>,
    main: &tokio::runtime::Handle,
) {
    // Every plain listener is served by the same threads: one runtime and one pool shard each.
    let mut sockets = Vec::new();
    for l in listeners {
        match l.listener.into_std() {
            Ok(s) => sockets.push((s, l.kind)),
            Err(e) => {
                tracing::error!(error = %e, "an HTTP listener cannot be handed to its threads");
            }
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for core in 0..cores {
        let Ok(mine) = sockets
            .iter()
            .map(|(s, kind)| s.try_clone().map(|s| (s, *kind)))
            .collect::<std::io::Result<Vec<_>>>()
        else {
            tracing::error!("an HTTP listener cannot be shared between threads");
            return;
        };
        let (shared, slots, stop, main) =
            (shared.clone(), slots.clone(), stop.clone(), main.clone());
        let started = std::thread::Builder::new()
            .name(format!("http-{core}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "an HTTP thread cannot start its runtime");
                        return;
                    }
                };
                crate::router::h1::set_shard(core + 1);
                let loops = mine.into_iter().map(|(socket, kind)| {
                    accept_plain(
                        socket,
                        kind,
                        shared.clone(),
                        slots.clone(),
                        stop.clone(),
                        main.clone(),
                    )
                });
                runtime.block_on(futures_util::future::join_all(loops));
            });
        if let Err(e) = started {
            tracing::error!(error = %e, "an HTTP thread cannot start");
        }
    }
}

/// One per-core thread's accept loop, then its wait for its connections to finish.
async fn accept_plain(
    socket: std::net::TcpListener,
    kind: ListenerKind,
    shared: Arc<Shared>,
    slots: Arc<tokio::sync::Semaphore>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    main: tokio::runtime::Handle,
) {
    let listener = match TcpListener::from_std(socket) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "an HTTP thread cannot listen");
            return;
        }
    };
    // Each connection of this thread gives back one permit as it ends.
    let ended = Arc::new(tokio::sync::Semaphore::new(0));
    let mut count = 0u32;
    loop {
        let permit = tokio::select! {
            _ = stop.wait_for(|stopping| *stopping) => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = stop.wait_for(|stopping| *stopping) => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let info = ConnInfo {
            peer,
            tls: false,
            sni: None,
        };
        let (shared, stop, main, ended) =
            (shared.clone(), stop.clone(), main.clone(), ended.clone());
        count = count.saturating_add(1);
        tokio::spawn(async move {
            serve_plain(stream, info, kind, shared, stop, permit, main).await;
            ended.add_permits(1);
        });
    }
    drop(listener);
    drop(stop);
    // Connections finish what they are doing (each sees the stop); at most 10 s.
    let _ = tokio::time::timeout(Duration::from_secs(10), ended.acquire_many(count)).await;
}

/// The answer to an ACME HTTP-01 request, when `path` is one: the key authorization of a
/// token under way, else a 404.
fn acme_http_challenge(state: &AppState, path: &str) -> Option<http::Response<Body>> {
    let token = path.strip_prefix(ACME_CHALLENGE_PREFIX)?;
    let resp = match state.certs.http_challenge(token) {
        Some(ka) => http::Response::builder()
            .status(http::StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(Body::from(ka)),
        None => http::Response::builder()
            .status(http::StatusCode::NOT_FOUND)
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Body::from("No such ACME challenge.\n")),
    };
    resp.ok()
}

const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// A 308 to the same host and path over https, for a plain-HTTP request to a host that has a
/// certificate (the Host is one the certificate store knows, so nothing is echoed blindly).
fn redirect_to_https(
    state: &AppState,
    https_port: Option<u16>,
    headers: &HeaderMap,
    uri: &http::Uri,
) -> Option<http::Response<Body>> {
    let port = https_port?;
    let host = crate::http_common::request_host(headers, uri)?;
    if host.starts_with('[')
        || host.parse::<std::net::IpAddr>().is_ok()
        || !state.certs.covers(&host)
    {
        return None;
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let target = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    http::Response::builder()
        .status(http::StatusCode::PERMANENT_REDIRECT)
        .header(http::header::LOCATION, HeaderValue::from_str(&target).ok()?)
        .body(Body::empty())
        .ok()
}

/// A quarter of the open-file limit (read from /proc/self/limits; 1024 when unknown), at
/// least 64: room for the upstream, engine, database and log files each connection may use.
fn connection_cap() -> usize {
    (crate::http_common::open_file_limit() / 4).max(64)
}

/// What every request is given and logged under, whichever path answers it.
struct Meta {
    started: std::time::Instant,
    /// Served inside the "request" span (milkcrate's own answers; not a request for an app).
    spanned: bool,
    request_id: HeaderValue,
    method: http::Method,
    /// The path as logged.
    path: String,
}

/// The front of every request: its id (set on the request for the app), where it goes, and
/// milkcrate's own early answer when there is one (ACME HTTP-01, a redirect to https, a 421
/// for another SNI's host).
fn front(
    shared: &Shared,
    info: &ConnInfo,
    kind: ListenerKind,
    req: &mut http::Request<Body>,
) -> (Meta, crate::router::Decision, Option<http::Response<Body>>) {
    let started = std::time::Instant::now();
    let request_id = take_request_id(req.headers_mut());
    // The path only: a query string may carry tokens.
    let method = req.method().clone();
    let path = loggable_path(req.uri().path());
    // An app (by host or path) goes to the app, untouched by the admin UI's middleware.
    let decision = crate::router::decide(&shared.state.router, req);
    // ACME HTTP-01 answers come first (any Host: the CA names the host being validated),
    // then plain HTTP to a host with a certificate goes to https.
    let early = if info.tls {
        crate::tls::misdirected_by_sni(info.sni.as_ref(), req).then(|| {
            crate::web::headers::standalone_page(
                http::StatusCode::MISDIRECTED_REQUEST,
                "This connection was opened for another host name (TLS SNI); send the request on a connection of its own.",
            )
        })
    } else {
        acme_http_challenge(&shared.state, req.uri().path()).or_else(|| {
            (kind == ListenerKind::Http)
                .then(|| {
                    redirect_to_https(&shared.state, shared.https_port, req.headers(), req.uri())
                })
                .flatten()
        })
    };
    let meta = Meta {
        started,
        spanned: !matches!(decision, crate::router::Decision::App { .. }),
        request_id,
        method,
        path,
    };
    (meta, decision, early)
}

/// What every response gets before it is written, and its line in the server log: the request
/// id, and HSTS only on HTTPS answers. `app`: an app answered (or milkcrate for an app).
fn seal(
    shared: &Shared,
    info: &ConnInfo,
    meta: &Meta,
    matched: &str,
    app: bool,
    status: http::StatusCode,
    headers: &mut HeaderMap,
) {
    // A request for an app is logged outside any span; every other carries the "request" span.
    crate::cli::log_writer::access(
        &crate::cli::log_writer::Access {
            request_id: meta.request_id.to_str().unwrap_or("-"),
            method: meta.method.as_str(),
            path: &meta.path,
            route: matched,
            status: status.as_u16(),
            latency_ms: meta.started.elapsed().as_millis() as u64,
        },
        meta.spanned,
    );
    headers.insert(REQUEST_ID, meta.request_id.clone());
    // An app's own HSTS over plain HTTP (not from a trusted proxy, which may have spoken HTTPS
    // to the client) is dropped, and an app answering over HTTPS gets one when it sent none.
    // The admin UI's own headers already follow the client's scheme.
    let hsts = http::header::STRICT_TRANSPORT_SECURITY;
    let via_proxy = shared.state.settings.is_trusted_proxy(info.peer.ip());
    match (app, info.tls) {
        (true, false) if !via_proxy => {
            headers.remove(&hsts);
        }
        (true, true) if !headers.contains_key(&hsts) => {
            headers.insert(hsts, HeaderValue::from_static("max-age=31536000"));
        }
        _ => {}
    }
}

/// How long a client may take to send a request head, idle time before it included (hyper's
/// header-read timeout, which also ends idle keep-alive connections).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A request head larger than this goes to hyper, which answers it as before (431).
const REQUEST_HEAD_MAX: usize = 16 * 1024;
/// At most this many request headers on milkcrate's own path (hyper's default limit).
const REQUEST_HEADERS_MAX: usize = 100;

/// A plain-HTTP connection. Bodyless HTTP/1.1 requests for apps (`router::h1::takes`) are
/// read here and forwarded by `router::h1`, and between them the connection holds no buffer,
/// only its socket. At the first request that path does not take, the connection, with the
/// bytes read of it, goes to hyper ([`serve_connection`]) for the rest of its life.
///
/// A function returning a block rather than an `async fn`: an `async fn` keeps its arguments
/// twice in its state (as given, and as the body's locals), and this state is what every open
/// connection costs while it waits.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice in its state"
)]
fn serve_plain(
    mut stream: tokio::net::TcpStream,
    info: ConnInfo,
    kind: ListenerKind,
    shared: Arc<Shared>,
    stop: tokio::sync::watch::Receiver<bool>,
    slot: tokio::sync::OwnedSemaphorePermit,
    main: tokio::runtime::Handle,
) -> impl std::future::Future<Output = ()> {
    async move {
        use crate::router::h1::{give_back, head_buffer};
        // What was read and not yet answered: empty (no allocation) between requests.
        let mut buf: Vec<u8> = Vec::new();
        // One timer and one wait for the shutdown for the connection's life, not one per
        // request: the timer is moved only once it is a second or more behind the request's
        // deadline.
        let idle = tokio::time::sleep(HEADER_READ_TIMEOUT);
        tokio::pin!(idle);
        let mut stopping = stop.clone();
        let stopped = async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        };
        tokio::pin!(stopped);
        loop {
            if *stop.borrow() {
                return;
            }
            let deadline = tokio::time::Instant::now() + HEADER_READ_TIMEOUT;
            if deadline.duration_since(idle.deadline()) >= Duration::from_secs(1) {
                idle.as_mut().reset(deadline);
            }
            if buf.is_empty() {
                give_back(std::mem::take(&mut buf));
                tokio::select! {
                    ready = stream.readable() => {
                        if ready.is_err() {
                            return;
                        }
                    }
                    () = &mut idle => return,
                    () = &mut stopped => return,
                }
                buf = head_buffer();
            }
            let (mut req, len) = match read_request(&mut stream, &mut buf, idle.deadline()).await {
                ReadHead::Parsed(req, len) => (req, len),
                ReadHead::Closed => return,
                ReadHead::Other => break,
            };
            if !crate::router::h1::takes(req.method(), req.headers()) {
                break;
            }
            // No `ConnInfo` in the request's extensions (three allocations): nothing on this
            // path reads them; the connection's facts are passed along instead.
            let close = crate::router::h1::asks_to_close(req.headers());
            let (meta, decision, early) = front(&shared, &info, kind, &mut req);
            let label = decision.log_label();
            let (route, by_host, label) = match (early, decision, label) {
                (None, crate::router::Decision::App { route, by_host }, Some(label)) => {
                    (route, by_host, label)
                }
                _ => break,
            };
            buf.drain(..len);
            if buf.is_empty() {
                give_back(std::mem::take(&mut buf));
            }
            let mut sealer = |status: http::StatusCode, headers: &mut HeaderMap| {
                seal(&shared, &info, &meta, label.as_str(), true, status, headers);
            };
            let router = shared.state.router.clone();
            let client = crate::router::h1::ToClient {
                io: &mut stream,
                close,
                seal: &mut sealer,
            };
            // Boxed: while the client is idle its task holds none of this request's state.
            let more = Box::pin(crate::router::h1::serve(
                &router,
                req,
                &info,
                (route, by_host),
                client,
            ))
            .await;
            if !more {
                // Boxed: a closing connection's state is no part of every idle one's.
                Box::pin(linger(stream)).await;
                return;
            }
        }
        // hyper serves it on the main runtime, where the admin UI's work runs: the socket is
        // registered there instead.
        let Ok(socket) = stream.into_std() else {
            return;
        };
        main.spawn(async move {
            let _slot = slot;
            let Ok(stream) = tokio::net::TcpStream::from_std(socket) else {
                return;
            };
            let io = Rewind {
                pre: buf,
                pos: 0,
                io: stream,
            };
            serve_connection(io, info, kind, shared, stop).await;
        });
    }
}

/// How long a closing connection's unread bytes are read and dropped, at most.
const LINGER: Duration = Duration::from_secs(2);

/// Closes a connection whose last response has been written: the write side first, then what
/// the client still sends (requests pipelined after its `Connection: close`) is read and
/// dropped until it closes too, for at most [`LINGER`]. Closing a socket with unread bytes makes
/// the kernel send a reset, which can destroy the response before the client reads it.
async fn linger(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 512];
    let deadline = tokio::time::Instant::now() + LINGER;
    let mut left = 64 * 1024usize;
    while left > 0 {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            _ => return,
        }
    }
}

enum ReadHead {
    /// A request head, and how many bytes of the buffer it took.
    Parsed(Box<http::Request<Body>>, usize),
    /// The client closed, went silent past the timeout, or the socket failed.
    Closed,
    /// Something hyper should read: not HTTP/1.1, too large, malformed.
    Other,
}

/// Reads until `buf` holds a whole request head.
async fn read_request(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    deadline: tokio::time::Instant,
) -> ReadHead {
    use tokio::io::AsyncReadExt;
    loop {
        if !buf.is_empty() {
            match parse_request(buf) {
                Ok(Some((req, len))) => return ReadHead::Parsed(Box::new(req), len),
                Ok(None) => {}
                Err(()) => return ReadHead::Other,
            }
            if buf.len() >= REQUEST_HEAD_MAX {
                return ReadHead::Other;
            }
        }
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(buf.len().max(2048));
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return ReadHead::Closed,
            Ok(Ok(_)) => {}
        }
    }
}

/// An HTTP/1.1 request head at the start of `buf` (`None`: not all of it yet). `Err`: one that
/// milkcrate's own path leaves to hyper.
fn parse_request(buf: &[u8]) -> Result<Option<(http::Request<Body>, usize)>, ()> {
    let mut raw = [httparse::EMPTY_HEADER; REQUEST_HEADERS_MAX];
    let mut parsed = httparse::Request::new(&mut raw);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    if parsed.version != Some(1) {
        return Err(());
    }
    let method = http::Method::from_bytes(parsed.method.ok_or(())?.as_bytes()).map_err(|_| ())?;
    let uri: http::Uri = parsed.path.ok_or(())?.parse().map_err(|_| ())?;
    // Room for the request id without growing the map again (the forwarded headers are not
    // put in the map on this path: `router::proxy::Forwarded`). A small request's map stays
    // small enough for the allocator's per-thread cache.
    let mut headers = HeaderMap::with_capacity(parsed.headers.len() + 1);
    for h in parsed.headers.iter() {
        let name = http::HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| ())?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| ())?;
        headers.append(name, value);
    }
    let mut req = http::Request::new(Body::empty());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Ok(Some((req, len)))
}

/// A connection whose first bytes were already read: they are read again first.
struct Rewind {
    pre: Vec<u8>,
    pos: usize,
    io: tokio::net::TcpStream,
}

impl tokio::io::AsyncRead for Rewind {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        out: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.pre.len() {
            let n = (this.pre.len() - this.pos).min(out.remaining());
            out.put_slice(&this.pre[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.pre.len() {
                this.pre = Vec::new();
                this.pos = 0;
            }
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut this.io).poll_read(cx, out)
    }
}

impl tokio::io::AsyncWrite for Rewind {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

async fn serve_connection<IO>(
    io: IO,
    info: ConnInfo,
    kind: ListenerKind,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(info.clone());
        // HTTP/2 names the host in `:authority`; everything after (the allow-list, routing,
        // the forwarded headers) reads `Host`, so it is set from it.
        if req.version() == http::Version::HTTP_2
            && !req.headers().contains_key(http::header::HOST)
            && let Some(v) = req
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(http::header::HOST, v);
        }
        let mut req = req.map(Body::new);
        let (meta, decision, early) = front(&shared, &info, kind, &mut req);
        // A span for milkcrate's own pages, whose handlers log; the proxy logs nothing above
        // debug, so a request to an app costs no span (its access line names the id). At WARN,
        // so a filter that keeps only warnings still keeps the request id on them.
        let span = if !meta.spanned {
            tracing::Span::none()
        } else {
            tracing::warn_span!("request", request_id = %meta.request_id.to_str().unwrap_or("-"), method = %meta.method, path = %meta.path)
        };
        let shared = shared.clone();
        let info = info.clone();
        let app_route = decision.log_label();
        async move {
            let mut resp = match (early, decision) {
                (Some(early), _) => early,
                (None, crate::router::Decision::Admin) => {
                    match shared.router.clone().oneshot(req).await {
                        Ok(resp) => resp,
                        Err(never) => match never {},
                    }
                }
                (None, other) => {
                    crate::router::answer(&shared.state.router, req, &info, other).await
                }
            };
            let matched = match (&app_route, resp.extensions().get::<MatchedRoute>()) {
                (Some(label), _) => label.as_str().to_owned(),
                (None, Some(MatchedRoute(path))) => path.clone(),
                (None, None) => "-".into(),
            };
            let status = resp.status();
            seal(
                &shared,
                &info,
                &meta,
                &matched,
                app_route.is_some(),
                status,
                resp.headers_mut(),
            );
            Ok::<_, std::convert::Infallible>(resp)
        }
        .instrument(span)
    });
    // HTTP/1.1 with upgrades (WebSockets), and HTTP/2 when the client speaks it (ALPN h2 over
    // TLS, or prior knowledge): the auto builder reads the connection preface.
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = async { let _ = stop.wait_for(|stopping| *stopping).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_keep_a_well_formed_one_and_replace_the_rest() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123_X.y:z"));
        h.append(REQUEST_ID, HeaderValue::from_static("second"));
        assert_eq!(take_request_id(&mut h), "abc-123_X.y:z");
        assert_eq!(h.get_all(REQUEST_ID).iter().count(), 1, "one id goes on");
        for bad in ["", "has space", "semi;colon", &"x".repeat(65)] {
            let mut h = HeaderMap::new();
            h.insert(
                REQUEST_ID,
                HeaderValue::from_str(bad).expect("a header value"),
            );
            let id = take_request_id(&mut h);
            let id = id.to_str().expect("text");
            assert_ne!(id, bad);
            assert_eq!(id.len(), 12, "{id}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
            assert_eq!(h.get(REQUEST_ID).and_then(|v| v.to_str().ok()), Some(id));
        }
        let mut none = HeaderMap::new();
        let a = take_request_id(&mut none);
        assert!(well_formed_request_id(a.to_str().expect("text")));
        assert_ne!(a, take_request_id(&mut HeaderMap::new()));
        assert_eq!(loggable_path(&"é".repeat(200)).len(), 256);
    }
}
