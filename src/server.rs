//! The listener: accepts TCP connections, terminates TLS when configured (rustls, ring) and
//! hands each HTTP/1.1 connection to the router with the peer address attached.
//!
//! Hand-written rather than `axum::serve` because that has no TLS, and because each request is
//! dispatched here: an app's route goes to the built-in router, everything else to the admin UI. Slow clients are cut off by a header-read timeout.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::HeaderValue;
use http::header::HeaderMap;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::Instrument;

use crate::app::AppState;
use crate::config::TlsFiles;

/// Attached to every request: who is on the other end of the socket, and over what.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

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
/// way the request (and so an app behind the router) carries it as `X-Request-Id`.
fn take_request_id(headers: &mut HeaderMap) -> String {
    let given = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| well_formed_request_id(v))
        .map(str::to_string);
    let id = given.unwrap_or_else(new_request_id);
    // `insert` replaces every value the client sent: the app sees exactly one id.
    if let Ok(v) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID, v);
    }
    id
}

fn well_formed_request_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// 12 hex digits of randomness (a process-wide counter if the system's source fails).
fn new_request_id() -> String {
    let mut bytes = [0u8; 6];
    if getrandom::fill(&mut bytes).is_err() {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes.copy_from_slice(&n.to_be_bytes()[2..]);
    }
    hex::encode(bytes)
}

/// The path as logged: at most 256 bytes (cut at a character boundary); never the query.
fn loggable_path(path: &str) -> String {
    let mut end = path.len().min(256);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    path[..end].to_string()
}

/// Reads the certificate chain and key; each failure names the file and what is wrong.
pub fn load_tls(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read SSL_CERT_FILE {}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "SSL_CERT_FILE {} holds no PEM certificate",
            files.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("cannot read SSL_KEY_FILE {}: {e}", files.key.display()))?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                format!("SSL_CERT_FILE and SSL_KEY_FILE do not make a usable pair: {e}")
            })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts connections until `shutdown` resolves, then lets open requests finish (10 s at most).
pub async fn run(
    state: AppState,
    router: Router,
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    // Every connection holds a receiver; shutdown is announced through it, and the sender's
    // `closed()` resolves once the last connection has finished.
    let router = with_matched_route(router);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let acceptor = tls.map(TlsAcceptor::from);
    // At most this many client connections at once: each may hold an upstream connection
    // and a log follow an engine connection, so running out of descriptors would otherwise
    // turn every app's answer into a 502. Past the cap, new clients wait in the backlog.
    let slots = Arc::new(tokio::sync::Semaphore::new(connection_cap()));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let state = state.clone();
        let acceptor = acceptor.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            let _slot = permit;
            let info = ConnInfo {
                peer,
                tls: acceptor.is_some(),
            };
            match acceptor {
                None => serve_connection(stream, info, state, router, stop).await,
                Some(acceptor) => {
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
                    {
                        serve_connection(stream, info, state, router, stop).await;
                    }
                }
            }
        });
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), stop_tx.closed()).await;
}

/// A quarter of the open-file limit (read from /proc/self/limits; 1024 when unknown), at
/// least 64: room for the upstream, engine, database and log files each connection may use.
fn connection_cap() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1024);
    (soft / 4).max(64)
}

async fn serve_connection<IO>(
    io: IO,
    info: ConnInfo,
    state: AppState,
    router: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(info);
        let started = std::time::Instant::now();
        let request_id = take_request_id(req.headers_mut());
        // The path only: a query string may carry tokens.
        let span = tracing::info_span!(
            "request",
            request_id = %request_id,
            method = %req.method(),
            path = %loggable_path(req.uri().path()),
        );
        let method = req.method().clone();
        let path = loggable_path(req.uri().path());
        let req = req.map(Body::new);
        // An app (by host or path) goes to the app, untouched by the admin UI's middleware.
        let decision = crate::router::decide(&state, &req);
        let (state, router) = (state.clone(), router.clone());
        let app_route = decision.log_label();
        async move {
            let mut resp = match decision {
                crate::router::Decision::Admin => match router.oneshot(req).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                },
                other => crate::router::answer(&state, req, info, other).await,
            };
            let matched = match (&app_route, resp.extensions().get::<MatchedRoute>()) {
                (Some(label), _) => label.clone(),
                (None, Some(MatchedRoute(path))) => path.clone(),
                (None, None) => "-".into(),
            };
            tracing::info!(
                target: "milkcrate::access",
                request_id = %request_id,
                method = %method,
                path = %path,
                route = %matched,
                status = resp.status().as_u16(),
                latency_ms = started.elapsed().as_millis() as u64,
                "request"
            );
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                resp.headers_mut().insert(REQUEST_ID, v);
            }
            Ok::<_, std::convert::Infallible>(resp)
        }
        .instrument(span)
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
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
            assert_ne!(id, bad);
            assert_eq!(id.len(), 12, "{id}");
            assert_eq!(
                h.get(REQUEST_ID).and_then(|v| v.to_str().ok()),
                Some(id.as_str())
            );
        }
        let mut none = HeaderMap::new();
        let a = take_request_id(&mut none);
        assert!(well_formed_request_id(&a));
        assert_ne!(a, take_request_id(&mut HeaderMap::new()));
        assert_eq!(loggable_path(&"é".repeat(200)).len(), 256);
    }
}
