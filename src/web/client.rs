//! Who is asking: the client IP and whether the request came over HTTPS.
//!
//! The socket peer is the client unless it is a proxy listed in TRUSTED_PROXIES; then the
//! right-most X-Forwarded-For hop that is not itself a trusted proxy is. A header from any
//! other peer is ignored, so nobody picks their own rate-limit bucket or audit IP.

use std::net::{IpAddr, Ipv4Addr};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;

use crate::app::AppState;
use crate::config::canonical;
use crate::http_common::ConnInfo;

pub use crate::http_common::client::{ClientInfo, client_info_with};

pub async fn identify(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let conn = req.extensions().get::<ConnInfo>();
    let info = client_info(&state, conn, req.headers());
    req.extensions_mut().insert(info);
    next.run(req).await
}

/// The client behind a connection: the peer, or what a trusted proxy says it forwarded.
/// In-process calls (no socket) count as loopback over plain HTTP. An app container is never
/// a trusted proxy, whatever TRUSTED_PROXIES says: apps are other people's code.
pub fn client_info(state: &AppState, conn: Option<&ConnInfo>, headers: &HeaderMap) -> ClientInfo {
    let peer = conn
        .map(|c| canonical(c.peer.ip()))
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let trusted = |ip: IpAddr| state.settings.is_trusted_proxy(ip) && !state.is_app_peer(ip);
    client_info_with(peer, conn.is_some_and(|c| c.tls), headers, trusted)
}

impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ClientInfo>()
            .cloned()
            .unwrap_or(ClientInfo {
                ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                https: false,
                via_proxy: false,
                user_agent: String::new(),
            }))
    }
}
