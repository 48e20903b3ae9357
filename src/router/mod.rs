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
mod observe;
mod proxy;
pub mod replicas;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

pub use dispatch::{Decision, answer, decide};
pub use proxy::{Upstream, forward};

use crate::domain::app::within;
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
        for (i, r) in routes.iter().enumerate() {
            for h in r.hosts.iter() {
                // Names are unique by construction (the store's key, the apps domain refused
                // for custom domains); should two ever meet, the first app in name order keeps it.
                by_host.entry(h.clone()).or_insert(i);
            }
        }
        Self { routes, by_host }
    }

    /// The app whose path route `path` is in (never an app without a path route).
    pub fn lookup(&self, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| !r.prefix.is_empty() && within(path, &r.prefix))
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
    match (c.state.as_str(), &c.ip) {
        ("running", Some(ip)) => match ip.parse() {
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
        ("running", None) => Target::Failing("its container is not on the apps' network".into()),
        ("exited", _) if app.status == "stopped" => Target::Stopped,
        ("restarting", _) => Target::Failing("it keeps restarting".into()),
        (state, _) => Target::Failing(format!("its container is {state}")),
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
            status: "running".into(),
            deployment_date: String::new(),
            deployment_type: "dockerfile".into(),
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
