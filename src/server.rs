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

use crate::app::AppState;
use crate::config::TlsFiles;

/// Attached to every request: who is on the other end of the socket, and over what.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
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
        let req = req.map(Body::new);
        let host_ok = crate::web::headers::host_allowed(
            &state.settings.allowed_hosts,
            req.headers(),
            req.uri(),
        );
        // An app's route goes to the app, untouched by the admin UI's middleware.
        let route = if state.settings.builtin_router {
            state.routes.current().lookup(req.uri().path()).cloned()
        } else {
            None
        };
        let (state, router) = (state.clone(), router.clone());
        async move {
            Ok::<_, std::convert::Infallible>(match route {
                _ if !host_ok => crate::web::headers::misdirected(),
                Some(route) => crate::router::forward(&state, req, info, route).await,
                None => match router.oneshot(req).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                },
            })
        }
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
