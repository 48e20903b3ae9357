//! Labels milkcrate puts on what it creates: ownership (so it finds its own containers with one
//! filtered list call and touches nothing else) and the Traefik routing labels (inventory §3.4,
//! with the original's defects fixed: unique names per app, segment-boundary rules, and
//! priorities below milkcrate's own routers).

use std::collections::BTreeMap;

pub const MANAGED: &str = "milkcrate.managed";
pub const APP: &str = "milkcrate.app";
pub const DEPLOY: &str = "milkcrate.deploy";
/// The compose service a container runs, or the stack volume a volume is.
pub const SERVICE: &str = "milkcrate.service";
pub const STACK_VOLUME: &str = "milkcrate.stack_volume";
/// What `docker compose` itself labels, so its tools recognise our stacks.
pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";
pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";

/// Label namespaces that are milkcrate's alone: an image or a compose file may not bring its
/// own keys there (an image's `traefik.http.routers.x.rule` would otherwise route `/admin` to
/// the app, since a container inherits its image's labels).
pub const RESERVED_PREFIXES: &[&str] = &["traefik.", "milkcrate.", "com.docker.compose."];

/// Whether `key` lies in a namespace milkcrate reserves (compared without case, as Traefik
/// reads its labels).
pub fn is_reserved(key: &str) -> bool {
    let key = key.trim().to_ascii_lowercase();
    RESERVED_PREFIXES.iter().any(|p| key.starts_with(p)) || key == "traefik"
}

/// The first label an image brings into a reserved namespace that the container's own
/// labels (`own`, milkcrate's) do not replace.
pub fn foreign_reserved<'a>(
    image: impl IntoIterator<Item = &'a String>,
    own: &BTreeMap<String, String>,
) -> Option<String> {
    let mut bad: Vec<&String> = image
        .into_iter()
        .filter(|k| is_reserved(k) && !own.contains_key(*k))
        .collect();
    bad.sort();
    bad.first().map(|k| k.to_string())
}

/// Priority of milkcrate's own Traefik routers; every app router stays below it.
pub const PLATFORM_PRIORITY: u32 = 100_000;

pub fn ownership(app: &str, deploy_id: i64) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED.to_string(), "true".to_string()),
        (APP.to_string(), app.to_string()),
        (DEPLOY.to_string(), deploy_id.to_string()),
    ])
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraefikOptions {
    /// `ENABLE_HTTPS`: the websecure entrypoint and the letsencrypt resolver.
    pub https: bool,
    /// `MILKCRATE_DOMAIN`: every rule also requires this host.
    pub domain: Option<String>,
    /// `MILKCRATE_TRAEFIK_CONTAINERS`: containers (Traefik's, milkcrate's own) that join each
    /// app's own network; empty: apps share `TRAEFIK_NETWORK`.
    pub join: Vec<String>,
}

/// Priority of an app's host-name router: above the platform's, whose rules (`/admin`, `/login`
/// …) name no host, so an app owns every path of its own host names. Safe because an app's
/// host names are never the admin's (`domain::host::HostRules`).
pub const HOST_PRIORITY: u32 = PLATFORM_PRIORITY + 1000;

/// Traefik labels for an app `key` (its uniqueness key: `[a-z0-9-]`) served at `route` (empty:
/// none) and at `hosts` (normalised host names; none: no host router). The path router strips
/// its prefix; the host router passes paths untouched.
pub fn traefik(
    key: &str,
    route: &str,
    hosts: &[String],
    port: u16,
    network: &str,
    opts: &TraefikOptions,
) -> BTreeMap<String, String> {
    let n = format!("milkcrate-app-{key}");
    let mut l = BTreeMap::new();
    let mut put = |k: String, v: String| {
        l.insert(k, v);
    };
    put("traefik.enable".into(), "true".into());
    put("traefik.docker.network".into(), network.into());
    put(
        format!("traefik.http.services.{n}.loadbalancer.server.port"),
        port.to_string(),
    );
    let entrypoints = if opts.https { "websecure" } else { "web" };
    let mut router = |name: &str, rule: String, priority: u32| {
        put(format!("traefik.http.routers.{name}.rule"), rule);
        put(
            format!("traefik.http.routers.{name}.entrypoints"),
            entrypoints.into(),
        );
        put(
            format!("traefik.http.routers.{name}.priority"),
            priority.to_string(),
        );
        put(format!("traefik.http.routers.{name}.service"), n.clone());
        if opts.https {
            put(
                format!("traefik.http.routers.{name}.tls.certresolver"),
                "letsencrypt".into(),
            );
        }
    };
    if !hosts.is_empty() {
        let rule = hosts
            .iter()
            .map(|h| format!("Host(`{h}`)"))
            .collect::<Vec<_>>()
            .join(" || ");
        router(&format!("{n}-hosts"), rule, HOST_PRIORITY);
    }
    if !route.is_empty() {
        let path_rule = format!("Path(`{route}`) || PathPrefix(`{route}/`)");
        let rule = match &opts.domain {
            Some(d) => format!("Host(`{d}`) && ({path_rule})"),
            None => path_rule,
        };
        // Longer routes win; every app stays below the platform's routers.
        router(&n, rule, 1000 + route.len() as u32);
        put(
            format!("traefik.http.routers.{n}.middlewares"),
            format!("{n}-strip"),
        );
        put(
            format!("traefik.http.middlewares.{n}-strip.stripprefix.prefixes"),
            route.into(),
        );
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_labels_in_reserved_namespaces_are_found_unless_ours_replace_them() {
        let own = ownership("shop", 3);
        let image: Vec<String> = vec![
            "org.opencontainers.image.title".into(),
            "milkcrate.app".into(),
            "milkcrate.deploy".into(),
        ];
        assert_eq!(foreign_reserved(&image, &own), None, "ours replace these");
        for sneaky in [
            "traefik.http.routers.x.rule",
            "Traefik.HTTP.Routers.x.priority",
            "traefik.enable",
            "milkcrate.instance",
            "com.docker.compose.project",
        ] {
            let mut image = image.clone();
            image.push(sneaky.into());
            assert_eq!(
                foreign_reserved(&image, &own).as_deref(),
                Some(sneaky),
                "{sneaky}"
            );
        }
    }

    #[test]
    fn traefik_labels_are_unique_per_app_and_bounded_by_segments() {
        let l = traefik(
            "my-app",
            "/shop",
            &[],
            8080,
            "milkcrate-traefik",
            &TraefikOptions::default(),
        );
        assert_eq!(
            l["traefik.http.routers.milkcrate-app-my-app.rule"],
            "Path(`/shop`) || PathPrefix(`/shop/`)"
        );
        assert_eq!(
            l["traefik.http.routers.milkcrate-app-my-app.entrypoints"],
            "web"
        );
        assert_eq!(
            l["traefik.http.services.milkcrate-app-my-app.loadbalancer.server.port"],
            "8080"
        );
        assert_eq!(
            l["traefik.http.middlewares.milkcrate-app-my-app-strip.stripprefix.prefixes"],
            "/shop"
        );
        assert!(
            l["traefik.http.routers.milkcrate-app-my-app.priority"]
                .parse::<u32>()
                .unwrap()
                < PLATFORM_PRIORITY
        );
        let https = traefik(
            "x",
            "/x",
            &[],
            80,
            "n",
            &TraefikOptions {
                https: true,
                domain: Some("example.org".into()),
                join: Vec::new(),
            },
        );
        assert_eq!(
            https["traefik.http.routers.milkcrate-app-x.rule"],
            "Host(`example.org`) && (Path(`/x`) || PathPrefix(`/x/`))"
        );
        assert_eq!(
            https["traefik.http.routers.milkcrate-app-x.tls.certresolver"],
            "letsencrypt"
        );
    }
}

/// Golden label sets: what Traefik reads is pinned exactly, so a change shows up in review.
#[cfg(test)]
mod golden {
    use super::*;

    fn pairs(l: &BTreeMap<String, String>) -> Vec<(&str, &str)> {
        l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    #[test]
    fn plain_http() {
        let l = traefik(
            "shop",
            "/shop",
            &[],
            8000,
            "milkcrate-traefik",
            &TraefikOptions::default(),
        );
        assert_eq!(
            pairs(&l),
            [
                ("traefik.docker.network", "milkcrate-traefik"),
                ("traefik.enable", "true"),
                (
                    "traefik.http.middlewares.milkcrate-app-shop-strip.stripprefix.prefixes",
                    "/shop"
                ),
                ("traefik.http.routers.milkcrate-app-shop.entrypoints", "web"),
                (
                    "traefik.http.routers.milkcrate-app-shop.middlewares",
                    "milkcrate-app-shop-strip"
                ),
                ("traefik.http.routers.milkcrate-app-shop.priority", "1005"),
                (
                    "traefik.http.routers.milkcrate-app-shop.rule",
                    "Path(`/shop`) || PathPrefix(`/shop/`)"
                ),
                (
                    "traefik.http.routers.milkcrate-app-shop.service",
                    "milkcrate-app-shop"
                ),
                (
                    "traefik.http.services.milkcrate-app-shop.loadbalancer.server.port",
                    "8000"
                ),
            ]
        );
    }

    #[test]
    fn https_with_a_domain() {
        let opts = TraefikOptions {
            https: true,
            domain: Some("apps.example.org".into()),
            join: Vec::new(),
        };
        let l = traefik("my-app", "/my/app", &[], 3000, "milkcrate-traefik", &opts);
        assert_eq!(
            pairs(&l),
            [
                ("traefik.docker.network", "milkcrate-traefik"),
                ("traefik.enable", "true"),
                (
                    "traefik.http.middlewares.milkcrate-app-my-app-strip.stripprefix.prefixes",
                    "/my/app"
                ),
                (
                    "traefik.http.routers.milkcrate-app-my-app.entrypoints",
                    "websecure"
                ),
                (
                    "traefik.http.routers.milkcrate-app-my-app.middlewares",
                    "milkcrate-app-my-app-strip"
                ),
                ("traefik.http.routers.milkcrate-app-my-app.priority", "1007"),
                (
                    "traefik.http.routers.milkcrate-app-my-app.rule",
                    "Host(`apps.example.org`) && (Path(`/my/app`) || PathPrefix(`/my/app/`))"
                ),
                (
                    "traefik.http.routers.milkcrate-app-my-app.service",
                    "milkcrate-app-my-app"
                ),
                (
                    "traefik.http.routers.milkcrate-app-my-app.tls.certresolver",
                    "letsencrypt"
                ),
                (
                    "traefik.http.services.milkcrate-app-my-app.loadbalancer.server.port",
                    "3000"
                ),
            ]
        );
    }

    #[test]
    fn host_only_passes_paths_untouched_above_the_platform() {
        let hosts = vec![
            "shop.apps.example.org".to_string(),
            "shop.example.com".to_string(),
        ];
        let l = traefik(
            "shop",
            "",
            &hosts,
            8000,
            "milkcrate-traefik",
            &TraefikOptions::default(),
        );
        assert_eq!(
            pairs(&l),
            [
                ("traefik.docker.network", "milkcrate-traefik"),
                ("traefik.enable", "true"),
                (
                    "traefik.http.routers.milkcrate-app-shop-hosts.entrypoints",
                    "web"
                ),
                (
                    "traefik.http.routers.milkcrate-app-shop-hosts.priority",
                    "101000"
                ),
                (
                    "traefik.http.routers.milkcrate-app-shop-hosts.rule",
                    "Host(`shop.apps.example.org`) || Host(`shop.example.com`)"
                ),
                (
                    "traefik.http.routers.milkcrate-app-shop-hosts.service",
                    "milkcrate-app-shop"
                ),
                (
                    "traefik.http.services.milkcrate-app-shop.loadbalancer.server.port",
                    "8000"
                ),
            ]
        );
    }

    #[test]
    fn path_and_hosts_with_https() {
        let opts = TraefikOptions {
            https: true,
            domain: None,
            join: Vec::new(),
        };
        let hosts = vec!["blog.example.org".to_string()];
        let l = traefik("blog", "/blog", &hosts, 80, "milkcrate-traefik", &opts);
        assert_eq!(
            pairs(&l),
            [
                ("traefik.docker.network", "milkcrate-traefik"),
                ("traefik.enable", "true"),
                (
                    "traefik.http.middlewares.milkcrate-app-blog-strip.stripprefix.prefixes",
                    "/blog"
                ),
                (
                    "traefik.http.routers.milkcrate-app-blog-hosts.entrypoints",
                    "websecure"
                ),
                (
                    "traefik.http.routers.milkcrate-app-blog-hosts.priority",
                    "101000"
                ),
                (
                    "traefik.http.routers.milkcrate-app-blog-hosts.rule",
                    "Host(`blog.example.org`)"
                ),
                (
                    "traefik.http.routers.milkcrate-app-blog-hosts.service",
                    "milkcrate-app-blog"
                ),
                (
                    "traefik.http.routers.milkcrate-app-blog-hosts.tls.certresolver",
                    "letsencrypt"
                ),
                (
                    "traefik.http.routers.milkcrate-app-blog.entrypoints",
                    "websecure"
                ),
                (
                    "traefik.http.routers.milkcrate-app-blog.middlewares",
                    "milkcrate-app-blog-strip"
                ),
                ("traefik.http.routers.milkcrate-app-blog.priority", "1005"),
                (
                    "traefik.http.routers.milkcrate-app-blog.rule",
                    "Path(`/blog`) || PathPrefix(`/blog/`)"
                ),
                (
                    "traefik.http.routers.milkcrate-app-blog.service",
                    "milkcrate-app-blog"
                ),
                (
                    "traefik.http.routers.milkcrate-app-blog.tls.certresolver",
                    "letsencrypt"
                ),
                (
                    "traefik.http.services.milkcrate-app-blog.loadbalancer.server.port",
                    "80"
                ),
            ]
        );
    }

    #[test]
    fn longer_routes_outrank_shorter_and_none_outranks_the_platform() {
        let p = |route: &str| {
            traefik("a", route, &[], 80, "n", &TraefikOptions::default())["traefik.http.routers.milkcrate-app-a.priority"].parse::<u32>().unwrap()
        };
        assert!(p("/shop/api") > p("/shop"));
        assert!(p(&format!("/{}", "x".repeat(99))) < PLATFORM_PRIORITY);
    }
}
