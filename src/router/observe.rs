//! What the router tells the access log and the metrics about each proxied request: taken when
//! the request arrives ([`Seen::start`]) and finished when its response body has been sent or
//! dropped ([`Seen::finish`]), so duration and bytes are the client's. Recording never waits:
//! the access line goes on a bounded queue (`service::access`), the counters are atomics.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::proxy::InFlight;
use super::{RouteRef, RouterState};
use crate::http_common::client::Identity;
use crate::service::access::AccessLine;
use crate::service::metrics::{AppMeters, UpstreamFailure};

/// Marks a response milkcrate wrote itself (the app did not answer it).
#[derive(Debug, Clone, Copy)]
pub struct Generated;

/// A request on its way through the router. What it keeps is cheap to take (shared handles,
/// the method, the user agent's header value); strings are made when the line is recorded.
pub struct Seen {
    state: Arc<RouterState>,
    meters: Counted,
    route: RouteRef,
    started: Instant,
    at_ms: i64,
    method: Method,
    path: String,
    client_ip: IpAddr,
    user_agent: Option<HeaderValue>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// At most this much of a path or user agent is kept.
const FIELD_MAX: usize = 256;

fn clip(s: &str) -> String {
    let mut end = s.len().min(FIELD_MAX);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl Seen {
    pub fn start(
        state: &Arc<RouterState>,
        route: &RouteRef,
        req: &Request<Body>,
        client: &Identity,
    ) -> Self {
        let meters = Counted::start(state.metrics.app_meters(&route.app));
        Self {
            state: state.clone(),
            meters,
            route: route.clone(),
            started: Instant::now(),
            at_ms: now_ms(),
            method: req.method().clone(),
            path: clip(req.uri().path()),
            client_ip: client.ip,
            user_agent: req.headers().get(http::header::USER_AGENT).cloned(),
        }
    }

    /// The record of a response with `status` (`generated`: milkcrate wrote it): told the
    /// body's bytes as they go ([`Done::sent`]), recorded when dropped. The in-flight guard of
    /// its container goes with it.
    pub fn record(self, status: StatusCode, generated: bool, inflight: Option<InFlight>) -> Done {
        let upstream_ms = (!generated).then(|| self.started.elapsed().as_secs_f64() * 1000.0);
        let failure = match status {
            StatusCode::BAD_GATEWAY if generated => Some(UpstreamFailure::Error),
            StatusCode::GATEWAY_TIMEOUT if generated => Some(UpstreamFailure::Timeout),
            _ => None,
        };
        Done {
            seen: Some(self),
            status: status.as_u16(),
            bytes: 0,
            upstream_ms,
            failure,
            _inflight: inflight,
        }
    }

    /// Records the request once `response`'s body is done (or dropped by the client); the
    /// in-flight guard of its container goes with it.
    pub fn finish(self, response: Response<Body>, inflight: Option<InFlight>) -> Response<Body> {
        let generated = response.extensions().get::<Generated>().is_some();
        let status = response.status();
        let mut done = self.record(status, generated, inflight);
        if status == StatusCode::SWITCHING_PROTOCOLS {
            // The connection is the app's from here: recorded now, bytes not counted.
            drop(done);
            return response;
        }
        let (parts, body) = response.into_parts();
        let body = body.map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                // A method call: the closure owns all of `done` (whose drop records), not
                // just its `bytes` field.
                done.sent(data.len());
            }
            frame
        });
        Response::from_parts(parts, Body::new(body))
    }
}

/// The request in its app's in-flight gauge, until dropped: answered, or abandoned before an
/// answer (a client that left while the app was still working).
struct Counted(Arc<AppMeters>);

impl Counted {
    fn start(meters: Arc<AppMeters>) -> Self {
        meters.started();
        Self(meters)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.ended();
    }
}

/// A method's name for the access line: a standard one is not copied.
fn method_name(method: &Method) -> std::borrow::Cow<'static, str> {
    let name = match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => return clip(method.as_str()).into(),
    };
    name.into()
}

/// Records on drop: the body ended, failed or was abandoned.
pub struct Done {
    seen: Option<Seen>,
    status: u16,
    bytes: u64,
    upstream_ms: Option<f64>,
    failure: Option<UpstreamFailure>,
    /// Dropped with the record: the container's request is over.
    _inflight: Option<InFlight>,
}

impl Done {
    pub fn sent(&mut self, n: usize) {
        self.bytes += n as u64;
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        let Some(seen) = self.seen.take() else { return };
        let elapsed = seen.started.elapsed().as_secs_f64();
        seen.meters.0.finished(self.status, elapsed, self.bytes);
        if let Some(f) = self.failure {
            seen.state.metrics.upstream_failure(&seen.route.app, f);
        }
        let user_agent = seen
            .user_agent
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map(clip)
            .unwrap_or_default();
        seen.state.access.record(AccessLine {
            // Formatted by the writer, off the request's path.
            time: String::new(),
            app: seen.route.app.clone(),
            method: method_name(&seen.method),
            path: seen.path,
            status: self.status,
            bytes: self.bytes,
            duration_ms: elapsed * 1000.0,
            upstream_ms: self.upstream_ms,
            client_ip: seen.client_ip,
            user_agent,
            at_ms: seen.at_ms,
        });
    }
}
