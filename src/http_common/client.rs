//! Who is asking: the client IP and whether the request came over HTTPS.
//!
//! The socket peer is the client unless it is a proxy listed in TRUSTED_PROXIES (and not an app
//! container); then the right-most X-Forwarded-For hop that is not itself a trusted proxy is. A
//! header from any other peer is ignored, so nobody picks their own rate-limit bucket or audit IP.
//! The caller decides trust (`trusted`); the admin UI and the router decide it the same way.

use std::net::IpAddr;

use http::HeaderMap;

use crate::config::canonical;

#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub ip: IpAddr,
    pub https: bool,
    /// The peer is a trusted proxy (not an app container): its `X-Forwarded-For` was believed.
    pub via_proxy: bool,
    pub user_agent: String,
}

impl ClientInfo {
    pub fn actor(&self, admin: bool) -> crate::audit::Actor {
        crate::audit::Actor {
            admin,
            ip: self.ip.to_string(),
            user_agent: self.user_agent.clone(),
            token: None,
        }
    }
}

/// The client's address and scheme, without the user agent: what the router needs per request.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    pub ip: IpAddr,
    pub https: bool,
    /// The peer is a trusted proxy: its `X-Forwarded-For` was believed.
    pub via_proxy: bool,
}

/// The client behind a socket peer, `trusted` saying whether a peer's forwarded headers are
/// believed. Only a trusted peer costs more than a copy.
pub fn identify(
    peer: IpAddr,
    tls: bool,
    headers: &HeaderMap,
    trusted: impl Fn(IpAddr) -> bool,
) -> Identity {
    let mut id = Identity {
        ip: peer,
        https: tls,
        via_proxy: false,
    };
    if trusted(peer) {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        id.via_proxy = true;
        if let Some(xff) = header("x-forwarded-for") {
            let hops: Vec<IpAddr> = xff
                .split(',')
                .filter_map(|h| h.trim().parse::<IpAddr>().ok())
                .map(canonical)
                .collect();
            if let Some(client) = hops.iter().rev().find(|ip| !trusted(**ip)).or(hops.first()) {
                id.ip = *client;
            }
        }
        if let Some(proto) = header("x-forwarded-proto") {
            id.https |= proto
                .rsplit(',')
                .next()
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
        }
    }
    id
}

/// [`identify`] plus the user agent (its first 300 characters).
pub fn client_info_with(
    peer: IpAddr,
    tls: bool,
    headers: &HeaderMap,
    trusted: impl Fn(IpAddr) -> bool,
) -> ClientInfo {
    let Identity {
        ip,
        https,
        via_proxy,
    } = identify(peer, tls, headers, trusted);
    ClientInfo {
        ip,
        https,
        via_proxy,
        user_agent: headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(300).collect())
            .unwrap_or_default(),
    }
}
