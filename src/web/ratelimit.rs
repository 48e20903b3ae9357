//! Rate limits per client IP, fixed windows, as the original (Flask-Limiter, fixed-window):
//! every route has the defaults (1000/hour and 100/minute), a route with its own limits has
//! those instead. All limits live in [`ROUTE_LIMITS`], including those of routes later issues
//! add. Failed logins have their own budget on top (10 per 15 minutes by default).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::app::AppState;
use crate::web::client::ClientInfo;
use crate::web::errors::error_response;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub count: u32,
    pub window: Duration,
}

const fn per_hour(count: u32) -> Limit {
    Limit {
        count,
        window: Duration::from_secs(3600),
    }
}

const fn per_minute(count: u32) -> Limit {
    Limit {
        count,
        window: Duration::from_secs(60),
    }
}

pub const DEFAULT_LIMITS: &[Limit] = &[per_hour(1000), per_minute(100)];

/// The window failed logins are counted in.
pub const FAILED_LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Per-route limits, replacing the defaults for that method and path (axum route syntax).
pub const ROUTE_LIMITS: &[(Method, &str, &[Limit])] = &[
    (Method::POST, "/upload", &[per_hour(10)]),
    (Method::GET, "/upload", &[per_hour(50)]),
    (Method::POST, "/admin/update/{app_id}", &[per_hour(5)]),
    (Method::POST, "/admin/volumes/create", &[per_hour(20)]),
    (
        Method::POST,
        "/admin/volumes/{volume_id}/upload",
        &[per_hour(30)],
    ),
];

/// The limits that apply to `method` on the route `path`.
pub fn limits_for(method: &Method, path: &str) -> &'static [Limit] {
    ROUTE_LIMITS
        .iter()
        .find(|(m, p, _)| m == method && *p == path)
        .map(|(_, _, l)| *l)
        .unwrap_or(DEFAULT_LIMITS)
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    hits: u32,
}

type Key = (IpAddr, String, Duration);

pub struct RateLimiter {
    windows: Mutex<HashMap<Key, Window>>,
    failed_login_budget: u32,
}

impl RateLimiter {
    pub fn new(failed_login_budget: u32) -> Self {
        Self {
            windows: Mutex::new(HashMap::new()),
            failed_login_budget,
        }
    }

    /// Counts one request; `Err(retry_after)` when any limit is already used up.
    pub fn hit(
        &self,
        ip: IpAddr,
        bucket: &str,
        limits: &[Limit],
        now: Instant,
    ) -> Result<(), Duration> {
        let mut map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut retry = None::<Duration>;
        for limit in limits {
            let w = current(&mut map, (ip, bucket.to_string(), limit.window), now);
            if w.hits >= limit.count {
                let left = limit.window.saturating_sub(now - w.started);
                retry = Some(retry.map_or(left, |r| r.max(left)));
            }
        }
        if let Some(r) = retry {
            return Err(r.max(Duration::from_secs(1)));
        }
        for limit in limits {
            current(&mut map, (ip, bucket.to_string(), limit.window), now).hits += 1;
        }
        Ok(())
    }

    /// `Err(retry_after)` when `ip` has used up its failed-login budget.
    pub fn check_failed_logins(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let w = current(
            &mut map,
            (ip, "failed-login".into(), FAILED_LOGIN_WINDOW),
            now,
        );
        if w.hits >= self.failed_login_budget {
            return Err(FAILED_LOGIN_WINDOW
                .saturating_sub(now - w.started)
                .max(Duration::from_secs(1)));
        }
        Ok(())
    }

    pub fn record_failed_login(&self, ip: IpAddr, now: Instant) {
        let mut map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        current(
            &mut map,
            (ip, "failed-login".into(), FAILED_LOGIN_WINDOW),
            now,
        )
        .hits += 1;
    }

    /// Forgets windows that have ended, so memory stays bounded by active clients.
    pub fn prune(&self) {
        let now = Instant::now();
        let mut map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|(_, _, window), w| now.duration_since(w.started) < *window);
    }
}

fn current(map: &mut HashMap<Key, Window>, key: Key, now: Instant) -> &mut Window {
    let window = key.2;
    let w = map.entry(key).or_insert(Window {
        started: now,
        hits: 0,
    });
    if now.duration_since(w.started) >= window {
        *w = Window {
            started: now,
            hits: 0,
        };
    }
    w
}

/// Middleware: applies the route's limits to the client IP.
pub async fn enforce(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "<unmatched>".into());
    let ip = req
        .extensions()
        .get::<ClientInfo>()
        .map(|c| c.ip)
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let limits = limits_for(req.method(), &route);
    let bucket = format!("{} {route}", req.method());
    match state.limiter.hit(ip, &bucket, limits, Instant::now()) {
        Ok(()) => next.run(req).await,
        Err(retry) => too_many_requests(retry, "You have sent too many requests."),
    }
}

/// A 429 with `Retry-After`; the error-page layer turns it into a page saying when to retry.
pub fn too_many_requests(retry: Duration, what: &str) -> Response {
    let secs = retry.as_secs().max(1);
    let when = if secs >= 120 {
        format!("{} minutes", secs.div_ceil(60))
    } else {
        format!("{secs} seconds")
    };
    let mut resp = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        format!("{what} Try again in {when}."),
    );
    resp.headers_mut()
        .insert("retry-after", HeaderValue::from(secs));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_window_blocks_then_resets() {
        let rl = RateLimiter::new(3);
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let t0 = Instant::now();
        let limits = &[per_minute(2)];
        assert!(rl.hit(ip, "b", limits, t0).is_ok());
        assert!(rl.hit(ip, "b", limits, t0).is_ok());
        let retry = rl
            .hit(ip, "b", limits, t0 + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(retry, Duration::from_secs(50));
        assert!(
            rl.hit("10.1.2.4".parse().unwrap(), "b", limits, t0).is_ok(),
            "other IPs have their own bucket"
        );
        assert!(
            rl.hit(ip, "b", limits, t0 + Duration::from_secs(61))
                .is_ok(),
            "a new window starts afresh"
        );
    }

    #[test]
    fn route_limits_replace_defaults() {
        assert_eq!(limits_for(&Method::POST, "/upload"), &[per_hour(10)]);
        assert_eq!(limits_for(&Method::GET, "/upload"), &[per_hour(50)]);
        assert_eq!(
            limits_for(&Method::POST, "/admin/update/{app_id}"),
            &[per_hour(5)]
        );
        assert_eq!(limits_for(&Method::GET, "/admin"), DEFAULT_LIMITS);
    }

    #[test]
    fn failed_logins_have_their_own_budget() {
        let rl = RateLimiter::new(2);
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        let t = Instant::now();
        rl.record_failed_login(ip, t);
        assert!(rl.check_failed_logins(ip, t).is_ok());
        rl.record_failed_login(ip, t);
        assert!(rl.check_failed_logins(ip, t).is_err());
        assert!(rl.check_failed_logins(ip, t + FAILED_LOGIN_WINDOW).is_ok());
    }
}
