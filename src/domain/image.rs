//! Images from registries: what an image reference may be (the Distribution grammar, a tag
//! and/or a `sha256` digest, nothing else, so no option or path can ride along), which
//! registry host it names (credentials are kept per host), the per-app pull policy, and the
//! image's own user resolved against the image's `/etc/passwd` and `/etc/group`.

use crate::domain::hardening::RunAs;

/// Docker Hub, as credentials and the Registries page name it.
pub const DOCKER_HUB: &str = "docker.io";

/// A checked image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `None` for Docker Hub.
    registry: Option<String>,
    /// The repository path inside the registry (`library/postgres` is given as `postgres`).
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

fn excerpt(s: &str) -> String {
    let mut out: String = s.chars().take(80).filter(|c| !c.is_control()).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let ch = b[i];
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            i += 1;
            continue;
        }
        // A separator: `.`, `_`, `__` or a run of `-`, always between alphanumerics.
        let start = i;
        match ch {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if b.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start
            || !b
                .get(i)
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return false;
        }
    }
    true
}

/// A host name or IPv4 address, with an optional port.
fn is_registry_host(h: &str) -> bool {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (h, None),
    };
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn is_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// A registry host as the Registries page takes it (`ghcr.io`, `127.0.0.1:5000`,
/// `docker.io`), lower-cased; `index.docker.io` and `registry-1.docker.io` are Docker Hub.
pub fn registry_host(input: &str) -> Result<String, String> {
    let h = input.trim().to_ascii_lowercase();
    let h = h
        .strip_prefix("https://")
        .or_else(|| h.strip_prefix("http://"))
        .unwrap_or(&h)
        .trim_end_matches('/')
        .to_string();
    let h = h.strip_suffix("/v1").unwrap_or(&h).to_string();
    if matches!(h.as_str(), "index.docker.io" | "registry-1.docker.io") {
        return Ok(DOCKER_HUB.into());
    }
    if !is_registry_host(&h) {
        return Err(format!(
            "'{}' is not a registry host: give a host name with an optional port, like ghcr.io or registry.example.com:5000",
            excerpt(input.trim())
        ));
    }
    Ok(h)
}

impl ImageRef {
    /// Parses `[registry/]path[:tag][@sha256:<64 hex>]`.
    pub fn parse(input: &str) -> Result<Self, String> {
        let shown = excerpt(input);
        let bad = || {
            format!(
                "'{shown}' is not an image reference (like postgres:16, ghcr.io/owner/name:1.2 or name@sha256:<digest>)"
            )
        };
        if input.is_empty() || input.len() > 512 || input.starts_with('-') {
            return Err(bad());
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => {
                let hex = d.strip_prefix("sha256:").ok_or_else(|| {
                    format!("'{shown}': a digest must be sha256:<64 hexadecimal digits>")
                })?;
                if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return Err(format!(
                        "'{shown}': a digest must be sha256:<64 lowercase hexadecimal digits>"
                    ));
                }
                (rest, Some(d.to_string()))
            }
            None => (input, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(colon) if rest.rfind('/').is_none_or(|slash| colon > slash) => {
                let tag = &rest[colon + 1..];
                if !is_tag(tag) {
                    return Err(format!("'{shown}': '{}' is not a valid tag", excerpt(tag)));
                }
                (&rest[..colon], Some(tag.to_string()))
            }
            _ => (rest, None),
        };
        let mut parts: Vec<&str> = name.split('/').collect();
        let registry = if parts.len() > 1
            && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost")
        {
            let host = parts.remove(0).to_ascii_lowercase();
            if !is_registry_host(&host) {
                return Err(bad());
            }
            Some(host)
        } else {
            None
        };
        if parts.is_empty() || !parts.iter().all(|p| is_path_component(p)) || name.len() > 255 {
            return Err(bad());
        }
        // The engine reads a 64-digit hex name as an image id, as the reference grammar does.
        if registry.is_none()
            && parts.len() == 1
            && parts[0].len() == 64
            && parts[0].bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(format!(
                "'{shown}' is an image id, not a name; give the image's name and tag"
            ));
        }
        let registry = registry.filter(|r| {
            !matches!(
                r.as_str(),
                "docker.io" | "index.docker.io" | "registry-1.docker.io"
            )
        });
        let mut path = parts.join("/");
        if registry.is_none()
            && let Some(short) = path.strip_prefix("library/")
            && !short.contains('/')
        {
            path = short.to_string();
        }
        Ok(Self {
            registry,
            path,
            tag,
            digest,
        })
    }

    /// The host credentials are looked up by (`docker.io` for Docker Hub).
    pub fn registry_host(&self) -> &str {
        self.registry.as_deref().unwrap_or(DOCKER_HUB)
    }

    /// The repository: `[registry/]path`, without tag or digest.
    pub fn repository(&self) -> String {
        match &self.registry {
            Some(r) => format!("{r}/{}", self.path),
            None => self.path.clone(),
        }
    }

    /// The repository path inside its registry.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// What the pull asks for: the tag (`latest` when none), or the digest when one is given.
    pub fn pull_tag(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.clone(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }

    /// The name as the engine lists it: `repository:tag` (`latest` when none), or
    /// `repository@digest` when pinned (the engine keeps a digest as a repo digest, not a tag).
    pub fn canonical(&self) -> String {
        match &self.digest {
            Some(d) => format!("{}@{d}", self.repository()),
            None => format!(
                "{}:{}",
                self.repository(),
                self.tag.as_deref().unwrap_or("latest")
            ),
        }
    }
}

/// When a deploy pulls an `image:` (or a Dockerfile's base image).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Only when the engine does not have it.
    #[default]
    Missing,
    /// On every deploy and update.
    Always,
    /// Never: the image must be in the engine.
    Never,
}

impl PullPolicy {
    pub fn parse(input: &str) -> Result<Self, String> {
        match input.trim() {
            "" | "missing" => Ok(Self::Missing),
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            other => Err(format!(
                "'{}' is not a pull policy: choose missing, always or never",
                excerpt(other)
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Always => "always",
            Self::Never => "never",
        }
    }
}

/// Looks `name` up in a passwd- or group-format file: the id in field 3, and for passwd the
/// primary group in field 4.
fn lookup(file: &str, name: &str) -> Option<(u64, Option<u64>)> {
    file.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 3 || f[0] != name {
            return None;
        }
        let id = f[2].parse::<u64>().ok()?;
        Some((id, f.get(3).and_then(|g| g.parse::<u64>().ok())))
    })
}

fn numeric(s: &str) -> Option<u64> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse::<u64>().unwrap_or(u64::MAX))
}

/// The image's `USER` (`name`, `uid`, `name:group`, `uid:gid`…) as a numeric non-root user,
/// resolved against the image's own `/etc/passwd` and `/etc/group` (`None` when the image
/// has no such file). Refused when it is root (uid 0, the name `root`, group 0) or cannot be
/// resolved: then the app keeps running as nobody.
pub fn resolve_image_user(
    user: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<RunAs, String> {
    let user = user.trim();
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    if u.is_empty() || u == "root" || g == Some("root") {
        return Err(format!("the image's user '{}' is root", excerpt(user)));
    }
    let (uid, primary) = match numeric(u) {
        Some(id) => (id, passwd.and_then(|p| {
            p.lines().find_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                (f.len() >= 4 && f[2].parse::<u64>().ok() == Some(id))
                    .then(|| f[3].parse::<u64>().ok())
                    .flatten()
            })
        })),
        None => lookup(passwd.ok_or_else(|| {
            format!(
                "the image's user '{}' is a name and the image has no /etc/passwd to look it up in",
                excerpt(user)
            )
        })?, u)
        .ok_or_else(|| {
            format!(
                "the image's user '{}' is not in the image's /etc/passwd",
                excerpt(u)
            )
        })?,
    };
    let gid = match g {
        Some(g) => match numeric(g) {
            Some(id) => id,
            None => {
                lookup(
                    group.ok_or_else(|| {
                        format!(
                            "the image's group '{}' is a name and the image has no /etc/group",
                            excerpt(g)
                        )
                    })?,
                    g,
                )
                .ok_or_else(|| format!("the image's group '{}' is not in /etc/group", excerpt(g)))?
                .0
            }
        },
        None => primary.unwrap_or(uid),
    };
    RunAs::parse(&format!("{uid}:{gid}")).map_err(|_| {
        format!(
            "the image's user '{}' is {uid}:{gid}, which is root or out of range",
            excerpt(user)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_follow_the_distribution_grammar() {
        let ok = [
            ("postgres", "postgres:latest", "docker.io"),
            ("postgres:16", "postgres:16", "docker.io"),
            ("docker.io/library/redis:7", "redis:7", "docker.io"),
            (
                "index.docker.io/bitnami/redis:7",
                "bitnami/redis:7",
                "docker.io",
            ),
            (
                "ghcr.io/owner/app:1.2.3",
                "ghcr.io/owner/app:1.2.3",
                "ghcr.io",
            ),
            (
                "127.0.0.1:5055/library/postgres:16",
                "127.0.0.1:5055/library/postgres:16",
                "127.0.0.1:5055",
            ),
            (
                "localhost/a/b__c/d-e.f",
                "localhost/a/b__c/d-e.f:latest",
                "localhost",
            ),
            (
                "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "docker.io",
            ),
        ];
        for (input, canonical, host) in ok {
            let r = ImageRef::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.canonical(), canonical, "{input}");
            assert_eq!(r.registry_host(), host, "{input}");
        }
        let digest = ImageRef::parse(
            "a:1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        )
        .unwrap();
        assert!(digest.pull_tag().starts_with("sha256:"));
    }

    #[test]
    fn anything_that_could_carry_an_option_or_a_path_is_refused() {
        for bad in [
            "",
            "-q",
            "--build-arg=x",
            "Postgres",
            "post gres",
            "a/../b",
            "a//b",
            "a/-b",
            "a:",
            "a:-x",
            "a:b:c",
            "/abs",
            "a/",
            "a@sha256:abc",
            "a@md5:0123456789abcdef0123456789abcdef",
            "a@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
            "ex ample.com/a",
            "exa_mple.com/a",
            "a\n:1",
            "a\0",
            "é",
            "a;rm",
            "a$(x)",
            "host:99999999/a",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn registry_hosts_are_normalised_and_checked() {
        assert_eq!(registry_host("GHCR.io").unwrap(), "ghcr.io");
        assert_eq!(
            registry_host("https://index.docker.io/v1/").unwrap(),
            "docker.io"
        );
        assert_eq!(registry_host("127.0.0.1:5056").unwrap(), "127.0.0.1:5056");
        for bad in ["", "a b", "a/b", "-a.com", "a.com:x", "a.com:", "a..com"] {
            assert!(registry_host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pull_policies() {
        assert_eq!(PullPolicy::parse("").unwrap(), PullPolicy::Missing);
        assert_eq!(PullPolicy::parse("always").unwrap(), PullPolicy::Always);
        assert_eq!(PullPolicy::parse("never").unwrap(), PullPolicy::Never);
        assert!(PullPolicy::parse("sometimes").is_err());
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\ntoor:x:0:0::/:/bin/sh\npostgres:x:999:999::/var/lib/postgresql:/bin/sh\nweird:x:1000:0::/:/bin/sh\n";
    const GROUP: &str = "root:x:0:\npostgres:x:999:\nstaff:x:50:\n";

    #[test]
    fn image_users_resolve_only_to_non_root() {
        let ok = |u: &str| {
            resolve_image_user(u, Some(PASSWD), Some(GROUP))
                .unwrap_or_else(|e| panic!("{u}: {e}"))
                .to_string()
        };
        assert_eq!(ok("postgres"), "999:999");
        assert_eq!(ok("999"), "999:999");
        assert_eq!(ok("1234"), "1234:1234");
        assert_eq!(ok("postgres:staff"), "999:50");
        assert_eq!(ok("999:50"), "999:50");
        for root in [
            "root",
            "0",
            "toor",
            "0:50",
            "999:0",
            "postgres:root",
            "weird",
            "000",
        ] {
            assert!(
                resolve_image_user(root, Some(PASSWD), Some(GROUP)).is_err(),
                "{root} accepted"
            );
        }
        assert!(resolve_image_user("nobody", Some(PASSWD), Some(GROUP)).is_err());
        assert!(resolve_image_user("postgres", None, None).is_err());
        assert!(resolve_image_user("999:staff", Some(PASSWD), None).is_err());
        assert_eq!(
            resolve_image_user("999", None, None).unwrap().to_string(),
            "999:999"
        );
    }
}
