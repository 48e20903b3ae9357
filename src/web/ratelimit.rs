//! Rate limits per client IP, fixed windows, as the original (Flask-Limiter, fixed-window):
//! every route has the defaults (1000/hour and 100/minute), a route with its own limits has
//! those instead. All limits live in [`ROUTE_LIMITS`], including those of routes later issues
//! add. Failed logins have their own budget on top (10 per 15 minutes by default).
//!
//! The admin's actions with their own hourly limits (upload, update, volume create and upload)
//! are settings ([`ActionLimits`]). They are counted only once the CSRF check has passed, and
//! per signed-in admin rather than per address: a forged cross-site POST without a token costs
//! the admin nothing, and the admin's budget follows them from one network to another.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::app::AppState;
pub use crate::config::ActionLimits;
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
pub const ROUTE_LIMITS: &[(Method, &str, &[Limit])] = &[(Method::GET, "/upload", &[per_hour(50)])];

/// The admin actions with an hourly limit of their own (the seed's defaults; settings).
/// An action's route, the variable that sets its limit, and where the limit is kept.
pub type ActionRoute = (&'static str, &'static str, fn(&ActionLimits) -> u32);

/// Each with the variable that sets it.
pub const ACTION_ROUTES: &[ActionRoute] = &[
    ("/upload", "MILKCRATE_UPLOAD_LIMIT", |l| l.upload),
    ("/admin/update/{app_id}", "MILKCRATE_UPDATE_LIMIT", |l| {
        l.update
    }),
    (
        "/admin/volumes/create",
        "MILKCRATE_VOLUME_CREATE_LIMIT",
        |l| l.volume_create,
    ),
    (
        "/admin/volumes/{volume_id}/upload",
        "MILKCRATE_VOLUME_UPLOAD_LIMIT",
        |l| l.volume_upload,
    ),
];

/// The limits that apply to `method` on the route `path` for every client, before anything
/// else is checked.
pub fn limits_for(method: &Method, path: &str) -> &'static [Limit] {
    ROUTE_LIMITS
        .iter()
        .find(|(m, p, _)| m == method && *p == path)
        .map(|(_, _, l)| *l)
        .unwrap_or(DEFAULT_LIMITS)
}

/// The hourly limit of an admin action, if `method path` is one.
pub fn action_limit(limits: &ActionLimits, method: &Method, path: &str) -> Option<Limit> {
    action(limits, method, path).map(|(limit, _)| limit)
}

fn action(limits: &ActionLimits, method: &Method, path: &str) -> Option<(Limit, &'static str)> {
    if method != Method::POST {
        return None;
    }
    ACTION_ROUTES
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, env, count)| (per_hour(count(limits)), *env))
}

/// Set on a request by [`enforce`] when its route is an admin action: [`enforce_action`]
/// counts it once the CSRF check has passed.
#[derive(Clone)]
struct PendingAction {
    bucket: String,
    limit: Limit,
    setting: &'static str,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    hits: u32,
}

/// Who is counted: a client address, or the signed-in admin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    Ip(IpAddr),
    Admin,
    /// An API token (by id), counted on top of its client's address.
    Token(i64),
}

type Key = (Subject, String, Duration);

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
        self.hit_subject(Subject::Ip(ip), bucket, limits, now)
    }

    /// The same windows, counted per API token rather than per address.
    pub fn hit_token(
        &self,
        token_id: i64,
        bucket: &str,
        limits: &[Limit],
        now: Instant,
    ) -> Result<(), Duration> {
        self.hit_subject(Subject::Token(token_id), bucket, limits, now)
    }

    fn hit_subject(
        &self,
        who: Subject,
        bucket: &str,
        limits: &[Limit],
        now: Instant,
    ) -> Result<(), Duration> {
        let mut map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut retry = None::<Duration>;
        for limit in limits {
            let w = current(
                &mut map,
                (who.clone(), bucket.to_string(), limit.window),
                now,
            );
            if w.hits >= limit.count {
                let left = limit.window.saturating_sub(now - w.started);
                retry = Some(retry.map_or(left, |r| r.max(left)));
            }
        }
        if let Some(r) = retry {
            return Err(r.max(Duration::from_secs(1)));
        }
        for limit in limits {
            current(
                &mut map,
                (who.clone(), bucket.to_string(), limit.window),
                now,
            )
            .hits += 1;
        }
        Ok(())
    }

    /// Takes one password attempt from `ip`'s budget BEFORE the password is checked, so
    /// parallel guesses cannot all be evaluated against one budget; `Err(retry_after)` when it
    /// is used up. A correct password gives the attempt back ([`Self::password_accepted`]).
    /// Every field that checks the admin password (login, the current password when changing
    /// it) draws on this one budget.
    pub fn take_password_attempt(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let w = current(
            &mut map,
            (Subject::Ip(ip), "failed-login".into(), FAILED_LOGIN_WINDOW),
            now,
        );
        if w.hits >= self.failed_login_budget {
            return Err(FAILED_LOGIN_WINDOW
                .saturating_sub(now - w.started)
                .max(Duration::from_secs(1)));
        }
        w.hits += 1;
        Ok(())
    }

    /// The password was right: the attempt taken for it does not count as a failure.
    pub fn password_accepted(&self, ip: IpAddr, now: Instant) {
        let mut map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let w = current(
            &mut map,
            (Subject::Ip(ip), "failed-login".into(), FAILED_LOGIN_WINDOW),
            now,
        );
        w.hits = w.hits.saturating_sub(1);
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

/// Middleware: applies the route's limits to the client IP. An admin action's own limit is
/// left to [`enforce_action`]; here it gets the defaults, as a flood guard.
pub async fn enforce(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
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
    if let Some((limit, setting)) = action(&state.settings.action_limits, req.method(), &route) {
        req.extensions_mut().insert(PendingAction {
            bucket: bucket.clone(),
            limit,
            setting,
        });
    }
    match state.limiter.hit(ip, &bucket, limits, Instant::now()) {
        Ok(()) => next.run(req).await,
        Err(retry) => too_many_requests(retry, "You have sent too many requests."),
    }
}

/// Middleware, inside the CSRF check: counts an admin action against its hourly limit, per
/// signed-in admin (per address before login).
pub async fn enforce_action(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(pending) = req.extensions().get::<PendingAction>().cloned() else {
        return next.run(req).await;
    };
    let signed_in = matches!(
        req.extensions()
            .get::<crate::web::session::CurrentSession>(),
        Some(crate::web::session::CurrentSession(Some(_)))
    );
    let who = if signed_in {
        Subject::Admin
    } else {
        Subject::Ip(
            req.extensions()
                .get::<ClientInfo>()
                .map(|c| c.ip)
                .unwrap_or(IpAddr::from([127, 0, 0, 1])),
        )
    };
    let bucket = format!("action {}", pending.bucket);
    match state
        .limiter
        .hit_subject(who, &bucket, &[pending.limit], Instant::now())
    {
        Ok(()) => next.run(req).await,
        Err(retry) => too_many_requests(
            retry,
            &format!(
                "This action is limited to {} an hour ({} raises it).",
                pending.limit.count, pending.setting
            ),
        ),
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
        let seed = ActionLimits::default();
        assert_eq!(
            action_limit(&seed, &Method::POST, "/upload"),
            Some(per_hour(10))
        );
        assert_eq!(limits_for(&Method::GET, "/upload"), &[per_hour(50)]);
        assert_eq!(
            action_limit(&seed, &Method::POST, "/admin/update/{app_id}"),
            Some(per_hour(5))
        );
        assert_eq!(
            action_limit(&seed, &Method::POST, "/admin/volumes/create"),
            Some(per_hour(20))
        );
        assert_eq!(
            action_limit(&seed, &Method::POST, "/admin/volumes/{volume_id}/upload"),
            Some(per_hour(30))
        );
        assert_eq!(action_limit(&seed, &Method::GET, "/upload"), None);
        assert_eq!(limits_for(&Method::GET, "/admin"), DEFAULT_LIMITS);
    }

    #[test]
    fn failed_logins_have_their_own_budget() {
        let rl = RateLimiter::new(2);
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        let t = Instant::now();
        assert!(rl.take_password_attempt(ip, t).is_ok());
        assert!(rl.take_password_attempt(ip, t).is_ok());
        assert!(rl.take_password_attempt(ip, t).is_err());
        assert!(
            rl.take_password_attempt(ip, t + FAILED_LOGIN_WINDOW)
                .is_ok()
        );
    }

    #[test]
    fn attempts_are_taken_before_checking_and_given_back_when_right() {
        let rl = RateLimiter::new(3);
        let ip: IpAddr = "10.0.0.10".parse().unwrap();
        let t = Instant::now();
        // Sixty guesses arriving together: only the budget's worth get to be checked.
        let admitted = (0..60)
            .filter(|_| rl.take_password_attempt(ip, t).is_ok())
            .count();
        assert_eq!(admitted, 3);
        let rl = RateLimiter::new(1);
        for _ in 0..5 {
            assert!(rl.take_password_attempt(ip, t).is_ok());
            rl.password_accepted(ip, t);
        }
    }
}
