//! One-click services: compose stacks built into the binary. Each runs its image as a fixed
//! non-root user (the image's own service account, uid/gid 999 in the Debian-based official
//! images) with no added capabilities; its data lives in a stack volume whose top folder
//! milkcrate hands to that user, so the database can write it without ever starting as root.
//! Passwords are generated at creation and kept as the app's encrypted env vars.

/// A built-in template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template {
    pub id: &'static str,
    pub title: &'static str,
    /// What it runs and how, for the New service page.
    pub description: &'static str,
    /// The image under the template registry (Docker Hub's official images by default).
    pub image: &'static str,
    /// The compose file; `{image}` is replaced with the full image reference.
    compose: &'static str,
    /// The compose service other containers reach (its host name on the app network).
    pub service: &'static str,
    pub port: u16,
    /// The user name clients log in with (`None`: no user names).
    pub user: Option<&'static str>,
    /// The database created, if any.
    pub database: Option<&'static str>,
    /// Env vars set to a new strong password at creation; the first is the client's.
    pub secrets: &'static [&'static str],
    /// The form of a client's connection URL: `{host}`, `{port}`, `{password}`.
    pub url: Option<&'static str>,
    /// A milkcrate volume is made for the app and mounted here (a static site's files).
    pub site_volume: Option<&'static str>,
}

pub const TEMPLATES: &[Template] = &[
    Template {
        id: "postgres",
        title: "PostgreSQL 16",
        description: "The official postgres:16 image run as its postgres user (999:999), not root; data in the stack volume `data` (PGDATA in a subfolder), user and database `app`, health checked with pg_isready.",
        image: "postgres:16",
        compose: r#"services:
  db:
    image: "{image}"
    user: "999:999"
    environment:
      POSTGRES_USER: app
      POSTGRES_DB: app
      PGDATA: /var/lib/postgresql/data/pgdata
    expose: ["5432"]
    volumes: ["data:/var/lib/postgresql/data"]
    stop_grace_period: 30s
    healthcheck:
      test: ["CMD", "pg_isready", "-U", "app", "-d", "app", "-h", "127.0.0.1"]
      interval: 2s
      timeout: 5s
      retries: 60
    labels:
      milkcrate.main_service: true
volumes:
  data:
"#,
        service: "db",
        port: 5432,
        user: Some("app"),
        database: Some("app"),
        secrets: &["POSTGRES_PASSWORD"],
        url: Some("postgres://app:{password}@{host}:{port}/app"),
        site_volume: None,
    },
    Template {
        id: "mariadb",
        title: "MariaDB 11 (MySQL compatible)",
        description: "The official mariadb:11 image run as its mysql user (999:999), not root; data in the stack volume `data`, user and database `app` (the root password is generated too, and kept), health checked with the image's healthcheck.sh.",
        image: "mariadb:11",
        compose: r#"services:
  db:
    image: "{image}"
    user: "999:999"
    environment:
      MARIADB_USER: app
      MARIADB_DATABASE: app
    expose: ["3306"]
    volumes: ["data:/var/lib/mysql"]
    stop_grace_period: 30s
    healthcheck:
      test: ["CMD", "healthcheck.sh", "--connect", "--innodb_initialized"]
      interval: 2s
      timeout: 5s
      retries: 90
    labels:
      milkcrate.main_service: true
volumes:
  data:
"#,
        service: "db",
        port: 3306,
        user: Some("app"),
        database: Some("app"),
        secrets: &["MARIADB_PASSWORD", "MARIADB_ROOT_PASSWORD"],
        url: Some("mysql://app:{password}@{host}:{port}/app"),
        site_volume: None,
    },
    Template {
        id: "redis",
        title: "Redis 7",
        description: "The official redis:7 image run as its redis user (999:999), not root; a password required (requirepass), append-only persistence in the stack volume `data`, health checked with redis-cli ping.",
        image: "redis:7",
        compose: r#"services:
  cache:
    image: "{image}"
    user: "999:999"
    command: ["sh", "-c", "exec redis-server --requirepass \"$$REDIS_PASSWORD\" --appendonly yes --dir /data"]
    expose: ["6379"]
    volumes: ["data:/data"]
    healthcheck:
      test: ["CMD-SHELL", "REDISCLI_AUTH=\"$$REDIS_PASSWORD\" redis-cli -h 127.0.0.1 ping | grep -q PONG"]
      interval: 2s
      timeout: 5s
      retries: 30
    labels:
      milkcrate.main_service: true
volumes:
  data:
"#,
        service: "cache",
        port: 6379,
        user: None,
        database: None,
        secrets: &["REDIS_PASSWORD"],
        url: Some("redis://:{password}@{host}:{port}/0"),
        site_volume: None,
    },
    Template {
        id: "static-site",
        title: "Static site",
        description: "busybox httpd (the official busybox:1.36 image) as nobody (65534), serving the files of a new milkcrate volume `<name>-site` at the app's route; upload the site on that volume's page. Health checked by fetching the home page.",
        image: "busybox:1.36",
        compose: r#"services:
  web:
    image: "{image}"
    command: ["sh", "-c", "[ -e /www/index.html ] || echo '<!doctype html><title>It works</title><p>Upload your site to this app&#39;s volume.' > /www/index.html; exec httpd -f -p 8080 -h /www"]
    ports: ["8080"]
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"]
      interval: 2s
      timeout: 5s
      retries: 30
    labels:
      milkcrate.main_service: true
"#,
        service: "web",
        port: 8080,
        user: None,
        database: None,
        secrets: &[],
        url: None,
        site_volume: Some("/www"),
    },
];

pub fn by_id(id: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.id == id)
}

impl Template {
    /// The image reference under `registry` (`host[/path]`; empty: Docker Hub).
    pub fn image_ref(&self, registry: &str) -> String {
        if registry.is_empty() {
            self.image.to_string()
        } else {
            format!("{registry}/{}", self.image)
        }
    }

    /// The compose file pulling from `registry`.
    pub fn compose_file(&self, registry: &str) -> String {
        self.compose.replace("{image}", &self.image_ref(registry))
    }

    /// A client's connection URL with `password` (shown only on request).
    pub fn url_with(&self, host: &str, password: &str) -> Option<String> {
        self.url.map(|u| {
            u.replace("{host}", host)
                .replace("{port}", &self.port.to_string())
                .replace("{password}", password)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::compose::{Context, ImageSource, plan};
    use crate::domain::hardening::Limits;

    struct NoFiles;
    impl crate::domain::compose::AppFiles for NoFiles {
        fn has_file(&self, _: &str) -> bool {
            false
        }
        fn read(&self, _: &str) -> Option<Vec<u8>> {
            None
        }
    }

    /// Every template passes the same compose safety gate as an uploaded file, runs as a
    /// non-root user and has a health check.
    #[test]
    fn every_template_passes_the_gate() {
        let limits = Limits {
            memory_mb: 512,
            cpu_percent: 50,
        };
        for t in TEMPLATES {
            let text = t.compose_file("127.0.0.1:5055");
            let vars: Vec<(String, String)> = t
                .secrets
                .iter()
                .map(|s| (s.to_string(), "pw".into()))
                .collect();
            let cx = Context {
                defaults: limits,
                max: Limits {
                    memory_mb: 4096,
                    cpu_percent: 400,
                },
                port_override: None,
                milkcrate_volumes: &[],
                assigned_volumes: &[],
                vars: &vars,
            };
            let p = plan(&text, &NoFiles, cx).unwrap_or_else(|e| panic!("{}: {e}", t.id));
            let s = &p.services[0];
            assert_eq!(s.name, t.service, "{}", t.id);
            assert_eq!(p.port, t.port, "{}", t.id);
            assert!(s.health.is_some(), "{}", t.id);
            assert_eq!(
                s.source,
                ImageSource::Image(format!("127.0.0.1:5055/{}", t.image)),
                "{}",
                t.id
            );
            assert!(
                s.user.is_none_or(|u| u.uid() != 0 && u.gid() != 0),
                "{}",
                t.id
            );
        }
        assert_eq!(by_id("postgres").unwrap().image_ref(""), "postgres:16");
        assert!(by_id("nope").is_none());
    }
}
