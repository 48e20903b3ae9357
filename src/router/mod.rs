//! The built-in router: serves every app at its host names and its public route. A request whose
//! host is one of an app's (`<app>.<apps domain>` or a custom domain; one hash lookup) goes to
//! that app with its path untouched; else a request whose path is an app's route (at a segment
//! boundary, longest prefix first) is forwarded with the prefix stripped; every other request
//! goes to the admin UI (`dispatch.rs` decides). App traffic never passes the admin middleware
//! (its CSP, CSRF checks and rate limits are the admin UI's, not the apps').
//!
//! The route table is an immutable snapshot swapped atomically: rebuilt after every status
//! refresh, and switched by a deploy the moment its new container is ready, before the old one
//! is retired. Bodies stream both ways; upstream connections are pooled; WebSocket upgrades pass.

mod dispatch;
pub mod h1;
mod observe;
mod proxy;
pub mod replicas;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

pub use dispatch::{Decision, RouteLabel, answer, decide};
pub use proxy::{Upstream, forward};

#[cfg(test)]
use crate::domain::app::within;
use crate::domain::health::{AppHealth, Check};
use crate::service::status::Snapshot;
use crate::store::AppRow;

/// What the router knows of one app.
#[derive(Debug, Clone)]
pub struct Route {
    /// The path route; empty for an app served at host names only.
    pub prefix: String,
    pub app: String,
    /// Every host name the app answers at (normalised): `<key>.<apps domain>` and its domains.
    /// Shared, so the clone each request takes of its route stays cheap.
    pub hosts: Arc<[String]>,
    pub target: Target,
}

#[derive(Debug, Clone)]
pub enum Target {
    /// Running at this address; `inflight` counts requests being served, for draining.
    Serving {
        container_id: String,
        addr: SocketAddr,
        inflight: Arc<AtomicUsize>,
    },
    /// Swarm mode: the running tasks of the app's service, taken in turn.
    Replicas(Arc<replicas::ReplicaSet>),
    Stopped,
    Deploying,
    /// Its container is missing, exited or restarting.
    Failing(String),
}

#[derive(Debug, Default)]
pub struct RouteTable {
    /// Longest prefix first.
    routes: Vec<Route>,
    /// Host name → index in `routes`, built once per table.
    by_host: HashMap<String, usize>,
    /// Path route → index in `routes`, built once per table: a path is looked up by its own
    /// prefixes at segment boundaries, longest first, so the cost grows with the path's
    /// segments, not with the number of routes.
    by_prefix: HashMap<String, usize>,
    /// `prefix_lens[n]`: some route is `n` bytes long (prefixes of other lengths are not
    /// hashed at all).
    prefix_lens: Vec<bool>,
    /// Per route, what each request would otherwise format again.
    prepared: Vec<Prepared>,
}

/// What a request to a route needs that depends only on the route: made once per table.
#[derive(Debug)]
struct Prepared {
    /// The access line's matched route, by path and by host.
    by_path_label: Arc<str>,
    by_host_label: Arc<str>,
    /// `X-Forwarded-Prefix`.
    prefix_header: Option<http::HeaderValue>,
    /// The upstream's `host:port`, when serving.
    authority: Option<http::uri::Authority>,
}

impl Prepared {
    fn new(r: &Route) -> Self {
        Self {
            by_path_label: format!("app {}", r.prefix).into(),
            by_host_label: format!("app {} (host)", r.app).into(),
            prefix_header: http::HeaderValue::from_str(&r.prefix).ok(),
            authority: match &r.target {
                Target::Serving { addr, .. } => addr.to_string().parse().ok(),
                _ => None,
            },
        }
    }
}

impl RouteTable {
    fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by(|a, b| {
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                .then_with(|| a.app.cmp(&b.app))
        });
        let mut by_host = HashMap::new();
        let mut by_prefix = HashMap::new();
        let mut prefix_lens = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            for h in r.hosts.iter() {
                // Names are unique by construction (the store's key, the apps domain refused
                // for custom domains); should two ever meet, the first app in name order keeps it.
                by_host.entry(h.clone()).or_insert(i);
            }
            if !r.prefix.is_empty() {
                // Routes are unique too; were two equal, the first in name order keeps it, as
                // the scan this replaced did.
                by_prefix.entry(r.prefix.clone()).or_insert(i);
                if prefix_lens.len() <= r.prefix.len() {
                    prefix_lens.resize(r.prefix.len() + 1, false);
                }
                prefix_lens[r.prefix.len()] = true;
            }
        }
        let prepared = routes.iter().map(Prepared::new).collect();
        Self {
            routes,
            by_host,
            by_prefix,
            prefix_lens,
            prepared,
        }
    }

    /// The app whose path route `path` is in (never an app without a path route): the longest
    /// route that `path` equals or continues after a `/` ([`within`]).
    pub fn lookup(&self, path: &str) -> Option<&Route> {
        self.lookup_index(path).map(|i| &self.routes[i])
    }

    fn lookup_index(&self, path: &str) -> Option<usize> {
        let has_len = |n: usize| self.prefix_lens.get(n).copied().unwrap_or(false);
        if has_len(path.len())
            && let Some(&i) = self.by_prefix.get(path)
        {
            return Some(i);
        }
        // Every shorter candidate ends just before a `/` of the path.
        let bytes = path.as_bytes();
        let mut end = path.len().min(self.prefix_lens.len());
        while end > 0 {
            end -= 1;
            if bytes[end] == b'/' && end > 0 && has_len(end) {
                // `end` is at a `/`, an ASCII byte, so a character boundary.
                if let Some(&i) = self.by_prefix.get(&path[..end]) {
                    return Some(i);
                }
            }
        }
        None
    }

    /// The app answering at `host` (normalised: lower case, no port, no trailing dot).
    pub fn lookup_host(&self, host: &str) -> Option<&Route> {
        self.by_host.get(host).map(|&i| &self.routes[i])
    }

    /// Whether `ip` is the address of a container this table routes to.
    pub fn serves_from(&self, ip: std::net::IpAddr) -> bool {
        self.routes.iter().any(|r| {
            matches!(&r.target, Target::Serving { addr, .. } if crate::config::canonical(addr.ip()) == ip)
                || matches!(&r.target, Target::Replicas(set) if set.backends.iter().any(|b| crate::config::canonical(b.addr.ip()) == ip))
        })
    }
}

/// One route of a table, held by a request: the table stays alive (and unchanged) while the
/// request uses it, so nothing of the route is copied.
#[derive(Debug, Clone)]
pub struct RouteRef {
    table: Arc<RouteTable>,
    index: usize,
}

impl RouteRef {
    fn prepared(&self) -> &Prepared {
        &self.table.prepared[self.index]
    }
}

impl std::ops::Deref for RouteRef {
    type Target = Route;

    fn deref(&self) -> &Route {
        &self.table.routes[self.index]
    }
}

/// The route lookups a request makes, on a table snapshot.
pub trait TableExt {
    /// [`RouteTable::lookup`], holding the table.
    fn route_for_path(&self, path: &str) -> Option<RouteRef>;
    /// [`RouteTable::lookup_host`], holding the table.
    fn route_for_host(&self, host: &str) -> Option<RouteRef>;
}

impl TableExt for Arc<RouteTable> {
    fn route_for_path(&self, path: &str) -> Option<RouteRef> {
        self.lookup_index(path).map(|index| RouteRef {
            table: self.clone(),
            index,
        })
    }

    fn route_for_host(&self, host: &str) -> Option<RouteRef> {
        self.by_host.get(host).map(|&index| RouteRef {
            table: self.clone(),
            index,
        })
    }
}

/// What the router needs of the rest of milkcrate, and nothing more (built in `app.rs`, the
/// composition root): settings, the route table, the upstream pool, the status monitor (to
/// know app containers' addresses), the metrics and access log, and the admin UI's error page.
pub struct RouterState {
    pub settings: Arc<crate::config::Settings>,
    pub routes: Arc<Routes>,
    pub upstream: Upstream,
    pub status: Arc<crate::service::status::StatusMonitor>,
    pub metrics: Arc<crate::service::metrics::Metrics>,
    pub access: crate::service::access::AccessLog,
    pub error_page: crate::http_common::ErrorPageFn,
}

impl RouterState {
    /// Whether `ip` is an app container's address (listed by the last refresh, or routed to
    /// since): such a peer's forwarded headers are never believed.
    pub fn is_app_peer(&self, ip: std::net::IpAddr) -> bool {
        let ip = crate::config::canonical(ip);
        self.status.is_app_address(ip) || self.routes.current().serves_from(ip)
    }

    /// Whether a peer's forwarded headers are believed: a trusted proxy that is no app.
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        self.settings.is_trusted_proxy(ip) && !self.is_app_peer(ip)
    }

    /// milkcrate's error page with its security headers.
    pub fn page(
        &self,
        status: http::StatusCode,
        message: &str,
    ) -> http::Response<axum::body::Body> {
        crate::http_common::standalone_page(status, (self.error_page)(status, message))
            .map(axum::body::Body::from)
    }
}

/// The current table; readers take a snapshot and never block a swap. Writers (a rebuild from
/// the store, a deploy's switch) take `writer` first, so a rebuild that read the apps before a
/// deploy's switch can never publish its stale table after it.
#[derive(Default)]
pub struct Routes {
    table: RwLock<Arc<RouteTable>>,
    writer: tokio::sync::Mutex<()>,
    /// MILKCRATE_APPS_DOMAIN: every app also answers at `<key>.<apps_domain>`.
    apps_domain: Option<String>,
    /// Names that stay the admin's ([`admin_names`]).
    admin_names: Vec<String>,
}

impl Routes {
    pub fn new(settings: &crate::config::Settings) -> Self {
        Self {
            apps_domain: settings.apps_domain.clone(),
            admin_names: admin_names(settings),
            ..Self::default()
        }
    }

    /// The host names `app` answers at.
    pub fn hosts_of(&self, app: &AppRow) -> Arc<[String]> {
        hosts_for(app, self.apps_domain.as_deref(), &self.admin_names).into()
    }

    /// Held while reading the apps for a rebuild and swapping, or while switching.
    pub async fn write_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writer.lock().await
    }

    pub fn current(&self) -> Arc<RouteTable> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn swap(&self, table: RouteTable) {
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
    }

    /// Serves `app`'s "stopped" page from now on (a stop begins: the container may still
    /// answer for its grace period, then would give 502s until the next refresh).
    pub fn mark_stopped(&self, app: &str) {
        let old = self.current();
        let routes = old
            .routes
            .iter()
            .map(|r| Route {
                target: if r.app == app {
                    Target::Stopped
                } else {
                    r.target.clone()
                },
                ..r.clone()
            })
            .collect();
        self.swap(RouteTable::new(routes));
    }

    /// Gives `app`'s route its current host names (a domain added or removed). Call under
    /// [`Routes::write_lock`].
    pub fn rehost(&self, app: &AppRow) {
        let old = self.current();
        let hosts = self.hosts_of(app);
        let routes = old
            .routes
            .iter()
            .map(|r| Route {
                hosts: if r.app == app.name {
                    hosts.clone()
                } else {
                    r.hosts.clone()
                },
                ..r.clone()
            })
            .collect();
        self.swap(RouteTable::new(routes));
    }

    /// Rebuilds the table after a status refresh, or keeps the last good one when either
    /// source failed: a store read error would otherwise publish an empty table (every app's
    /// traffic falling through to the admin UI), and an engine that cannot list (hung, or
    /// restarting) says nothing about containers that may well be serving. Returns whether
    /// the table was rebuilt.
    pub fn refresh<E: std::fmt::Display>(
        &self,
        apps: Result<&[&AppRow], E>,
        snap: &Snapshot,
        network_port: impl Fn(&AppRow) -> u16,
    ) -> bool {
        match (apps, &snap.engine_error) {
            (Err(e), _) => {
                tracing::warn!(error = %e, "could not read the apps: the route table keeps its last version");
                false
            }
            (Ok(_), Some(e)) => {
                tracing::warn!(error = %e, "the engine could not list containers: the route table keeps its last version");
                false
            }
            (Ok(apps), None) => {
                self.rebuild(apps, snap, network_port);
                true
            }
        }
    }

    /// Rebuilds the table from the apps and the engine's latest report. An app whose new
    /// container is not in the report yet keeps the address a deploy switched it to.
    pub fn rebuild(
        &self,
        apps: &[&AppRow],
        snap: &Snapshot,
        network_port: impl Fn(&AppRow) -> u16,
    ) {
        let old = self.current();
        let previous: HashMap<&str, &Route> =
            old.routes.iter().map(|r| (r.app.as_str(), r)).collect();
        let routes: Vec<Route> = apps
            .iter()
            .map(|app| {
                let target = target_for(
                    app,
                    snap,
                    previous.get(app.name.as_str()).copied(),
                    network_port(app),
                );
                Route {
                    prefix: app.public_route.clone(),
                    app: app.name.clone(),
                    hosts: self.hosts_of(app),
                    target,
                }
            })
            .collect();
        self.swap(RouteTable::new(routes));
    }

    /// Points `app` at a new container at once (a deploy whose container is ready). Returns
    /// the in-flight counter of the container it replaced, to drain it.
    pub fn switch(
        &self,
        app: &AppRow,
        container_id: &str,
        addr: SocketAddr,
    ) -> Option<Arc<AtomicUsize>> {
        let old = self.current();
        let mut replaced = None;
        let mut routes: Vec<Route> = old
            .routes
            .iter()
            .filter(|r| {
                if r.app == app.name {
                    if let Target::Serving { inflight, .. } = &r.target {
                        replaced = Some(inflight.clone());
                    }
                    false
                } else {
                    true
                }
            })
            .cloned()
            .collect();
        let target = Target::Serving {
            container_id: container_id.to_string(),
            addr,
            inflight: Arc::new(AtomicUsize::new(0)),
        };
        routes.push(Route {
            prefix: app.public_route.clone(),
            app: app.name.clone(),
            hosts: self.hosts_of(app),
            target,
        });
        self.swap(RouteTable::new(routes));
        replaced
    }
}

/// The names the admin UI is served at, which no app ever gets: MILKCRATE_ADMIN_HOST, or with
/// none set, MILKCRATE_ALLOWED_HOSTS' names and `localhost`.
pub fn admin_names(settings: &crate::config::Settings) -> Vec<String> {
    match &settings.admin_host {
        Some(h) => vec![h.clone()],
        None => {
            let mut names = settings.allowed_hosts.clone();
            names.push("localhost".into());
            names
        }
    }
}

/// `<key>.<apps domain>` (when set) and the app's custom domains, less any admin name
/// ([`admin_names`]): a name given before the settings changed never takes the admin's place.
pub fn app_hosts(app: &AppRow, settings: &crate::config::Settings) -> Vec<String> {
    hosts_for(app, settings.apps_domain.as_deref(), &admin_names(settings))
}

fn hosts_for(app: &AppRow, apps_domain: Option<&str>, admin_names: &[String]) -> Vec<String> {
    let mut hosts: Vec<String> = apps_domain
        .map(|d| crate::domain::host::app_host(&app.name_key, d))
        .into_iter()
        .collect();
    hosts.extend(app.domains.iter().cloned());
    hosts.retain(|h| !admin_names.contains(h));
    hosts
}

fn target_for(app: &AppRow, snap: &Snapshot, previous: Option<&Route>, port: u16) -> Target {
    if app.status == "deploying" {
        return Target::Deploying;
    }
    if app.status == "stopped" {
        // The admin's wish: a container still in its stop grace period is not served.
        return Target::Stopped;
    }
    if let Some(t) = snap
        .swarm
        .as_ref()
        .and_then(|view| replicas::target(app, view, previous, port))
    {
        return t;
    }
    let kept = previous.and_then(|r| match &r.target {
        Target::Serving { container_id, .. } if *container_id == app.container_id => {
            Some(r.target.clone())
        }
        _ => None,
    });
    let Some(c) = snap.containers.iter().find(|c| c.id == app.container_id) else {
        // Not in the report: a container a deploy just switched to, or an engine not read yet.
        return kept.unwrap_or_else(|| {
            if snap.taken.is_none() {
                Target::Deploying
            } else {
                Target::Failing("its container is missing".into())
            }
        });
    };
    // The one mapping of what the engine reports to an app's health (`domain/health.rs`, the
    // same the dashboard and the app page show) decides whether it is served.
    let health = AppHealth::of_container(
        app.status,
        &c.state,
        Check::of_healthcheck(c.health.as_deref()),
    );
    match (health, &c.ip) {
        (h, Some(ip)) if h.is_running() => match ip.parse() {
            Ok(ip) => {
                let addr = SocketAddr::new(ip, port);
                match kept {
                    Some(t @ Target::Serving { addr: a, .. }) if a == addr => t,
                    _ => Target::Serving {
                        container_id: c.id.clone(),
                        addr,
                        inflight: Arc::new(AtomicUsize::new(0)),
                    },
                }
            }
            Err(_) => Target::Failing("its container has no usable address".into()),
        },
        (h, None) if h.is_running() => {
            Target::Failing("its container is not on the apps' network".into())
        }
        (AppHealth::Stopped, _) => Target::Stopped,
        (AppHealth::Restarting, _) => Target::Failing("it keeps restarting".into()),
        _ => Target::Failing(format!("its container is {}", c.state)),
    }
}

/// Waits until `inflight` reaches zero (requests to a replaced container finish), at most `max`.
pub async fn drain(inflight: &AtomicUsize, max: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + max;
    while inflight.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::ContainerFacts;

    fn app(name: &str, container: &str) -> AppRow {
        AppRow {
            id: 1,
            name: name.into(),
            name_key: name.into(),
            container_id: container.into(),
            image_tag: "img".into(),
            public_route: format!("/{name}"),
            internal_port: 8080,
            status: crate::domain::state::AppStatus::Running,
            deployment_date: String::new(),
            deployment_type: crate::domain::state::DeploymentType::Dockerfile,
            health_path: None,
            memory_mb: 512,
            cpu_percent: 50,
            port_override: None,
            previous_image_tag: None,
            source_zip: None,
            volume_mounts: None,
            outbound: true,
            domains: Vec::new(),
        }
    }

    fn serving(routes: &Routes, path: &str) -> bool {
        matches!(
            routes.current().lookup(path).map(|r| &r.target),
            Some(Target::Serving { .. })
        )
    }

    #[test]
    fn hosts_are_found_in_one_lookup_and_host_only_apps_have_no_path() {
        let mut settings = crate::config::Settings::new("/nonexistent");
        settings.apps_domain = Some("apps.example.org".into());
        let routes = Routes::new(&settings);
        let mut shop = app("my_shop", "c1");
        shop.name_key = "my-shop".into();
        shop.domains = vec!["shop.example.com".into()];
        let mut blog = app("blog", "c2");
        blog.public_route = String::new();
        routes.rebuild(&[&shop, &blog], &Snapshot::default(), |a| a.internal_port);
        let table = routes.current();
        let name = |h: &str| table.lookup_host(h).map(|r| r.app.clone());
        assert_eq!(name("my-shop.apps.example.org").as_deref(), Some("my_shop"));
        assert_eq!(name("shop.example.com").as_deref(), Some("my_shop"));
        assert_eq!(name("blog.apps.example.org").as_deref(), Some("blog"));
        assert_eq!(name("apps.example.org"), None);
        assert_eq!(
            table.lookup("/my_shop/x").map(|r| r.app.as_str()),
            Some("my_shop")
        );
        assert!(
            table.lookup("/").is_none(),
            "an empty route matches no path"
        );
        assert!(table.lookup("/blog").is_none());

        blog.domains = vec!["blog.example.net".into()];
        routes.rehost(&blog);
        let table = routes.current();
        assert_eq!(
            table
                .lookup_host("blog.example.net")
                .map(|r| r.app.as_str()),
            Some("blog")
        );
        assert!(
            table.lookup_host("shop.example.com").is_some(),
            "others keep theirs"
        );
    }

    fn route(app: &str, prefix: &str) -> Route {
        Route {
            prefix: prefix.into(),
            app: app.into(),
            hosts: Arc::from(Vec::<String>::new()),
            target: Target::Stopped,
        }
    }

    /// The rule the table's lookup must keep: the longest route the path equals or continues
    /// after a `/`, ties by app name (the linear scan it replaced).
    fn reference<'a>(routes: &'a [Route], path: &str) -> Option<&'a str> {
        let mut sorted: Vec<&Route> = routes.iter().collect();
        sorted.sort_by(|a, b| {
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                .then_with(|| a.app.cmp(&b.app))
        });
        sorted
            .into_iter()
            .find(|r| !r.prefix.is_empty() && within(path, &r.prefix))
            .map(|r| r.app.as_str())
    }

    #[test]
    fn path_lookup_is_the_longest_route_at_a_segment_boundary() {
        let routes = vec![
            route("a", "/a"),
            route("ab", "/a/b"),
            route("abc", "/a/b/c"),
            route("shop", "/shop"),
            route("shopping", "/shopping"),
            route("slash", "/s/"),
            route("root", "/"),
            route("none", ""),
            route("deep", "/x/y/z/w"),
            route("é", "/é"),
        ];
        let table = RouteTable::new(routes.clone());
        let paths = [
            "",
            "/",
            "//",
            "/a",
            "/a/",
            "/a/b",
            "/a/bc",
            "/a/b/",
            "/a/b/c",
            "/a/b/c/d",
            "/ab",
            "/shop",
            "/shop/",
            "/shopp",
            "/shopping/x",
            "/s",
            "/s/",
            "/s//",
            "/s/x",
            "/x/y/z",
            "/x/y/z/w/v",
            "/é",
            "/é/ü",
            "/éé",
            "/A",
            "a",
            "/a?b",
        ];
        for p in paths {
            assert_eq!(
                table.lookup(p).map(|r| r.app.as_str()),
                reference(&routes, p),
                "{p:?}"
            );
        }
        assert_eq!(
            table.lookup("/a/b/c/d").map(|r| r.app.as_str()),
            Some("abc")
        );
        assert_eq!(
            table.lookup("/shopping").map(|r| r.app.as_str()),
            Some("shopping")
        );
        assert!(table.lookup("/shopp").is_none());
    }

    #[test]
    fn path_lookup_with_a_thousand_routes_matches_the_scan() {
        let mut routes: Vec<Route> = (0..1000)
            .map(|i| {
                let prefix = match i % 4 {
                    0 => format!("/r{i}"),
                    1 => format!("/group{}/r{i}", i % 7),
                    2 => format!("/group{}", i % 13),
                    _ => format!("/long/route/number/{i}"),
                };
                route(&format!("app{i:04}"), &prefix)
            })
            .collect();
        // Two apps with one route: the first in name order keeps it, as before.
        routes.push(route("app0000-twin", "/r0"));
        let table = RouteTable::new(routes.clone());
        let mut paths = vec![
            "/r0".to_string(),
            "/r0/x".into(),
            "/nothing".into(),
            "/group3/r999/x".into(),
            "/long/route/number".into(),
        ];
        for i in (0..1000).step_by(7) {
            paths.push(format!("/r{i}/page"));
            paths.push(format!("/group{}/r{i}", i % 7));
            paths.push(format!("/group{}/other", i % 13));
            paths.push(format!("/long/route/number/{i}/a/b"));
            paths.push(format!("/long/route/number/{i}0"));
        }
        for p in &paths {
            assert_eq!(
                table.lookup(p).map(|r| r.app.as_str()),
                reference(&routes, p),
                "{p:?}"
            );
        }
        assert_eq!(
            table.lookup("/r0/x").map(|r| r.app.as_str()),
            Some("app0000")
        );
    }

    #[test]
    fn a_failed_store_read_or_engine_list_keeps_the_last_good_table() {
        let routes = Routes::default();
        let shop = app("shop", "c1");
        let snap = Snapshot {
            taken: Some(std::time::Instant::now()),
            containers: vec![ContainerFacts {
                id: "c1".into(),
                name: "milkcrate-shop-1".into(),
                app: Some("shop".into()),
                service: None,
                image: "img".into(),
                state: "running".into(),
                status: "Up".into(),
                health: None,
                ip: Some("172.30.1.5".into()),
            }],
            ..Snapshot::default()
        };
        assert!(routes.refresh(Ok::<_, String>(&[&shop][..]), &snap, |a| a.internal_port));
        assert!(serving(&routes, "/shop/x"));

        assert!(!routes.refresh(Err("database is locked"), &snap, |a| a.internal_port));
        assert!(
            serving(&routes, "/shop/x"),
            "a store error keeps the apps routed"
        );

        let engine_down = Snapshot {
            taken: Some(std::time::Instant::now()),
            engine_error: Some("engine hung".into()),
            ..Snapshot::default()
        };
        assert!(
            !routes.refresh(Ok::<_, String>(&[&shop][..]), &engine_down, |a| a
                .internal_port)
        );
        assert!(
            serving(&routes, "/shop/x"),
            "an engine that cannot list keeps them too"
        );

        // A good read with the app gone does drop it.
        let none: [&AppRow; 0] = [];
        assert!(routes.refresh(Ok::<_, String>(&none[..]), &snap, |a| a.internal_port));
        assert!(routes.current().lookup("/shop/x").is_none());
    }
}
