//! What an admin types when deploying: the app's name and public route, checked with the
//! original's rules and messages, plus what it lacked (uniqueness up to case and `-`/`_`, and
//! reserved paths matched at segment boundaries so `/a` can never capture `/admin`).

use std::fmt;

/// Names the original refuses; kept so no app shadows a service name.
const RESERVED_NAMES: &[&str] = &[
    "admin",
    "api",
    "www",
    "mail",
    "ftp",
    "localhost",
    "milkcrate",
    "traefik",
    "docker",
    "root",
    "system",
    "service",
    "app",
    "web",
    "server",
    "host",
    "node",
    "cluster",
    "master",
    "slave",
    "backup",
];

/// milkcrate's own paths. A route may not equal one, sit inside one, or contain one.
pub const RESERVED_PATHS: &[&str] = &[
    "/admin",
    "/login",
    "/logout",
    "/upload",
    "/static",
    "/api",
    "/health",
    "/metrics",
    "/favicon.ico",
    "/traefik",
    "/settings",
    "/status",
    "/debug",
    "/robots.txt",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppName(String);

impl AppName {
    /// The original's `validate_app_name`, in its order and with its messages; the name is
    /// stored lowercased as the original does. Longer than 50 is refused, not truncated.
    pub fn parse(input: &str) -> Result<Self, String> {
        let name: String = input.trim().to_lowercase();
        if name.is_empty() {
            return Err("Application name is required".into());
        }
        if name.chars().count() < 2 {
            return Err("Application name must be at least 2 characters long".into());
        }
        if name.chars().count() > 50 {
            return Err("Application name must be 50 characters or less".into());
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(
                "Application name can only contain letters, numbers, hyphens, and underscores"
                    .into(),
            );
        }
        if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err("Application name must start with a letter or number".into());
        }
        if name.ends_with(['-', '_']) {
            return Err("Application name cannot end with a hyphen or underscore".into());
        }
        if RESERVED_NAMES.contains(&name.as_str()) {
            return Err(format!("'{name}' is a reserved application name"));
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Two names with the same key are the same app: `My_App` and `my-app` collide.
    pub fn key(&self) -> String {
        name_key(&self.0)
    }
}

/// The uniqueness key of any stored name (also of rows adopted from the original).
pub fn name_key(name: &str) -> String {
    name.to_lowercase().replace('_', "-")
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicRoute(String);

impl PublicRoute {
    /// The original's `validate_public_route` (the slash is prefixed when missing), then the
    /// reserved-path check at segment boundaries, case-insensitively.
    pub fn parse(input: &str) -> Result<Self, String> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err("Public route is required".into());
        }
        let route = if trimmed.starts_with('/') {
            trimmed.to_string()
        } else {
            format!("/{trimmed}")
        };
        if route.len() > 100 {
            return Err("Public route must be 100 characters or less".into());
        }
        if !route
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '/' | '-'))
        {
            return Err("Public route can only contain letters, numbers, hyphens, underscores, and forward slashes".into());
        }
        if route.len() > 1 && route.ends_with('/') {
            return Err("Public route cannot end with a forward slash".into());
        }
        if route.contains("//") {
            return Err("Public route cannot contain consecutive forward slashes".into());
        }
        if route == "/" {
            return Err(
                "Route '/' would cover milkcrate's own pages; choose a path such as /shop".into(),
            );
        }
        let lower = route.to_ascii_lowercase();
        for reserved in RESERVED_PATHS {
            if within(&lower, reserved) || within(reserved, &lower) {
                return Err(format!(
                    "Route '{route}' conflicts with reserved path '{reserved}'"
                ));
            }
        }
        Ok(Self(route))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `path` is this route or below it (`/shop`, `/shop/x`; never `/shopping`).
    pub fn matches(&self, path: &str) -> bool {
        within(path, &self.0)
    }
}

/// `path` equals `prefix` or continues it after a `/`.
pub fn within(path: &str, prefix: &str) -> bool {
    path == prefix || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

impl fmt::Display for PublicRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The port the app listens on: the form's choice, else the original's rule (8000 if the
/// image exposes it, else its lowest exposed TCP port, else 8000).
pub fn choose_port(requested: Option<u16>, exposed: &[String]) -> u16 {
    if let Some(p) = requested {
        return p;
    }
    let tcp: Vec<u16> = exposed
        .iter()
        .filter_map(|p| {
            p.strip_suffix("/tcp").or(if p.contains('/') {
                None
            } else {
                Some(p.as_str())
            })
        })
        .filter_map(|p| p.parse().ok())
        .collect();
    if tcp.contains(&8000) {
        8000
    } else {
        tcp.into_iter().min().unwrap_or(8000)
    }
}

/// `KEY=value` lines from the form: blank lines and `#` comments skipped, keys checked.
pub fn parse_env_lines(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                "Environment line {} has no '=': write KEY=value",
                i + 1
            ));
        };
        let key = key.trim();
        let valid = !key.is_empty()
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !key.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(format!(
                "Environment line {}: {key:?} is not a valid variable name (letters, digits, _)",
                i + 1
            ));
        }
        out.retain(|(k, _)| k != key);
        out.push((key.to_string(), value.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_original_rules() {
        for ok in [
            "my-app",
            "test123",
            "app_name",
            "MyApp",
            "app-with-numbers123",
        ] {
            assert!(AppName::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(AppName::parse("MyApp").unwrap().as_str(), "myapp");
        for (bad, msg) in [
            ("", "is required"),
            ("a", "at least 2"),
            (&"a".repeat(51), "50 characters or less"),
            ("app with spaces", "can only contain"),
            ("app@name", "can only contain"),
            ("-app", "must start with"),
            ("app-", "cannot end with"),
            ("admin", "reserved application name"),
            ("docker", "reserved application name"),
        ] {
            let err = AppName::parse(bad).unwrap_err();
            assert!(err.contains(msg), "{bad}: {err}");
        }
        assert_eq!(
            AppName::parse("My_App").unwrap().key(),
            AppName::parse("my-app").unwrap().key()
        );
    }

    #[test]
    fn routes_follow_the_original_rules_and_never_capture_our_paths() {
        for ok in [
            "/app",
            "/my-app",
            "/test123",
            "/app/v1",
            "/myapi/v2/users",
            "shop",
            "/adm",
            "/administrator",
            "/a",
        ] {
            assert!(PublicRoute::parse(ok).is_ok(), "{ok}");
        }
        for (bad, msg) in [
            ("", "is required"),
            ("/app/", "cannot end with"),
            ("/app//test", "consecutive"),
            ("/app with spaces", "can only contain"),
            ("/app@test", "can only contain"),
            ("/", "would cover"),
            ("/admin", "reserved path '/admin'"),
            ("/Admin/x", "reserved path '/admin'"),
            ("/static", "reserved path '/static'"),
            ("/login", "reserved path"),
            ("/api/v1", "reserved path '/api'"),
        ] {
            let err = PublicRoute::parse(bad).unwrap_err();
            assert!(err.contains(msg), "{bad}: {err}");
        }
        let a = PublicRoute::parse("/a").unwrap();
        assert!(a.matches("/a") && a.matches("/a/b"));
        assert!(!a.matches("/admin") && !a.matches("/ab"));
    }

    #[test]
    fn port_rule_is_the_originals() {
        assert_eq!(
            choose_port(None, &["80/tcp".into(), "8000/tcp".into()]),
            8000
        );
        assert_eq!(
            choose_port(
                None,
                &["8080/tcp".into(), "3000/tcp".into(), "53/udp".into()]
            ),
            3000
        );
        assert_eq!(choose_port(None, &[]), 8000);
        assert_eq!(choose_port(Some(9000), &["8000/tcp".into()]), 9000);
    }

    #[test]
    fn env_lines() {
        let env = parse_env_lines("# comment\nA=1\n\nB=x=y\nA=2\r\n").unwrap();
        assert_eq!(
            env,
            vec![("B".into(), "x=y".into()), ("A".into(), "2".into())]
        );
        assert!(parse_env_lines("1A=x").is_err());
        assert!(parse_env_lines("novalue").is_err());
    }
}
