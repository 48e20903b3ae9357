//! The process limit of builds. The Engine API's build endpoint takes memory and CPU limits but
//! no PID limit; it does take a parent cgroup (`cgroupparent`, which bollard's build options
//! lack). milkcrate makes a parent cgroup whose `pids.max` bounds every build step together,
//! and a request modifier adds `cgroupparent=<parent>` to `POST /build` requests only.
//!
//! - cgroupfs driver, cgroup v1: `/sys/fs/cgroup/pids/<name>/pids.max`, made and written here.
//! - cgroupfs driver, cgroup v2: `/sys/fs/cgroup/<name>/pids.max` (`+pids` enabled in the
//!   root's `cgroup.subtree_control` when it is not).
//! - systemd driver: the slice `milkcrate-build-<instance>.slice`, which systemd nests under
//!   `milkcrate-build.slice`; its `TasksMax=` comes from the unit the installer ships
//!   (`deploy/milkcrate-build.slice`) and is read back when the cgroup tree can be read.
//!
//! Where no limit can be set, builds pass no parent and the reason is returned, for
//! `milkcrate check` and a warning: nothing pretends.

use std::path::{Path, PathBuf};

use bollard::BollardRequest;

use super::Engine;

/// Where the cgroup tree is mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The slice the installer ships (`deploy/milkcrate-build.slice`); per-install slices nest in it.
pub const SHIPPED_SLICE: &str = "milkcrate-build.slice";

/// What bounds the processes of build steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildPids {
    /// Builds run under `parent` (as the engine takes it), whose processes are capped at `max`
    /// (`None`: the slice exists but its limit could not be read).
    Limited { parent: String, max: Option<i64> },
    /// No parent cgroup: the sentence says why.
    Unlimited(String),
}

impl BuildPids {
    /// The parent cgroup to pass to builds, if any.
    pub fn parent(&self) -> Option<&str> {
        match self {
            BuildPids::Limited { parent, .. } => Some(parent),
            BuildPids::Unlimited(_) => None,
        }
    }

    /// The `milkcrate check` line. Not a failure without a limit (builds still run with their
    /// memory and CPU limits), but said plainly.
    pub fn describe(&self) -> String {
        match self {
            BuildPids::Limited {
                parent,
                max: Some(max),
            } => format!("at most {max} processes across all build steps (cgroup parent {parent})"),
            BuildPids::Limited { parent, max: None } => format!(
                "builds run under {parent}; its process limit (TasksMax= of {SHIPPED_SLICE}) could not be read from here"
            ),
            BuildPids::Unlimited(why) => {
                format!("WARNING: build steps have no process limit: {why}")
            }
        }
    }
}

/// Sets up the parent cgroup `name` (cgroupfs, e.g. `milkcrate-<instance>-build`) or finds
/// the slice `slice` (systemd) with a limit of `max` processes, as the engine's cgroup driver
/// and version require. An error only when the engine cannot say which it uses.
/// With `make` false nothing is created or written: a cgroupfs parent not made yet is
/// reported as such (what `milkcrate check` does).
pub async fn settle(
    engine: &Engine,
    name: &str,
    slice: &str,
    max: i64,
    make: bool,
) -> Result<BuildPids, super::EngineError> {
    let info = engine.docker.info().await?;
    let driver = info
        .cgroup_driver
        .map(|d| d.to_string())
        .unwrap_or_default();
    let version = info
        .cgroup_version
        .map(|v| v.to_string())
        .unwrap_or_default();
    let root = Path::new(CGROUP_ROOT);
    Ok(match (driver.as_str(), version.as_str()) {
        ("cgroupfs", "1") if !make => existing(&root.join("pids").join(name), name),
        ("cgroupfs", "2") if !make => existing(&root.join(name), name),
        ("cgroupfs", "1") => cgroupfs(&root.join("pids").join(name), None, name, max),
        ("cgroupfs", "2") => cgroupfs(&root.join(name), Some(root), name, max),
        ("systemd", v) => systemd(root, v, slice),
        (d, v) => BuildPids::Unlimited(format!(
            "the engine's cgroup driver ({}) and version ({}) are not ones milkcrate knows",
            if d.is_empty() { "unknown" } else { d },
            if v.is_empty() { "unknown" } else { v },
        )),
    })
}

/// cgroupfs: milkcrate makes `dir` and writes its `pids.max`; the engine takes the parent as
/// an absolute path (`/<name>`), so it lands in the same place whatever cgroup the engine
/// runs in. `enable_in` (v2) is the folder whose `cgroup.subtree_control` must list `pids`.
fn cgroupfs(dir: &Path, enable_in: Option<&Path>, name: &str, max: i64) -> BuildPids {
    let attempt = || -> std::io::Result<()> {
        if let Some(parent) = enable_in {
            let control = parent.join("cgroup.subtree_control");
            if !std::fs::read_to_string(&control)?
                .split_whitespace()
                .any(|c| c == "pids")
            {
                std::fs::write(&control, "+pids")?;
            }
        }
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("pids.max"), max.to_string())
    };
    match attempt() {
        Ok(()) => match read_max(&dir.join("pids.max")) {
            Some(Some(read)) => BuildPids::Limited {
                parent: format!("/{name}"),
                max: Some(read),
            },
            _ => BuildPids::Unlimited(format!(
                "{} did not keep the limit written to it",
                dir.join("pids.max").display()
            )),
        },
        Err(e) => BuildPids::Unlimited(format!(
            "cannot set {} ({e}); run milkcrate as root on the host, or with the engine's systemd cgroup driver and {SHIPPED_SLICE} installed",
            dir.join("pids.max").display()
        )),
    }
}

/// cgroupfs, looked at only: the parent `dir` as `milkcrate serve` left it.
fn existing(dir: &Path, name: &str) -> BuildPids {
    match read_max(&dir.join("pids.max")) {
        Some(Some(max)) => BuildPids::Limited {
            parent: format!("/{name}"),
            max: Some(max),
        },
        _ => BuildPids::Unlimited(format!(
            "{} is not set up yet: `milkcrate serve` makes it at its first connection to the engine when it runs as root on the host",
            dir.join("pids.max").display()
        )),
    }
}

/// systemd: the per-install slice nests under the shipped one (a `-` in a slice name is a
/// level), whose `TasksMax=` is the limit.
fn systemd(root: &Path, version: &str, slice: &str) -> BuildPids {
    let slice = slice.to_string();
    let shipped: PathBuf = if version == "1" {
        root.join("pids/milkcrate.slice").join(SHIPPED_SLICE)
    } else {
        root.join("milkcrate.slice").join(SHIPPED_SLICE)
    };
    match read_max(&shipped.join("pids.max")) {
        Some(Some(max)) => BuildPids::Limited {
            parent: slice,
            max: Some(max),
        },
        Some(None) => BuildPids::Unlimited(format!(
            "{SHIPPED_SLICE} has no TasksMax= (install deploy/{SHIPPED_SLICE})"
        )),
        None if root.join("system.slice").exists() || root.join("pids/system.slice").exists() => {
            BuildPids::Unlimited(format!(
                "{SHIPPED_SLICE} is not installed (copy deploy/{SHIPPED_SLICE} to /etc/systemd/system/ and run `systemctl daemon-reload && systemctl start {SHIPPED_SLICE}`)"
            ))
        }
        // The host's cgroup tree is not visible (milkcrate in a container): the slice is used,
        // its limit unverified.
        None => BuildPids::Limited {
            parent: slice,
            max: None,
        },
    }
}

/// `Some(Some(n))` for a number, `Some(None)` for `max`, `None` when unreadable.
fn read_max(file: &Path) -> Option<Option<i64>> {
    let text = std::fs::read_to_string(file).ok()?;
    Some(text.trim().parse().ok())
}

/// Adds `cgroupparent=<parent>` to the query of `POST …/build` requests; every other request
/// passes unchanged.
pub fn add_cgroup_parent(req: BollardRequest, parent: &str) -> BollardRequest {
    let is_build = req.method() == http::Method::POST
        && req.uri().path().trim_end_matches('/').ends_with("/build");
    if !is_build {
        return req;
    }
    let (mut head, body) = req.into_parts();
    let mut parts = head.uri.clone().into_parts();
    let path = head.uri.path().to_string();
    let mut pairs: Vec<(String, String)> = head
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .filter(|(k, _)| k != "cgroupparent")
                .collect()
        })
        .unwrap_or_default();
    pairs.push(("cgroupparent".into(), parent.into()));
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    // Fails closed: a build that cannot be confined goes nowhere (the engine answers 404).
    let confined = format!("{path}?{query}").parse().ok().and_then(|pq| {
        parts.path_and_query = Some(pq);
        http::Uri::from_parts(parts).ok()
    });
    head.uri = confined.unwrap_or_else(|| {
        tracing::error!("a build request could not be given its parent cgroup; it is not sent");
        http::Uri::from_static("/milkcrate-refused-an-unconfined-build")
    });
    BollardRequest::from_parts(head, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: http::Method, uri: &str) -> BollardRequest {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .body(bollard::body_full(bytes::Bytes::new()))
            .expect("a request")
    }

    #[test]
    fn build_requests_get_the_parent_and_keep_their_query() {
        let req = request(
            http::Method::POST,
            "http://localhost/v1.41/build?t=app%3A1&memory=1024&labels=%7B%22a%22%3A%22b%20c%22%7D",
        );
        let req = add_cgroup_parent(req, "/milkcrate-x-build");
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(req.uri().path(), "/v1.41/build");
        assert_eq!(req.uri().authority().map(|a| a.as_str()), Some("localhost"));
        let pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        assert_eq!(
            pairs,
            vec![
                ("t".into(), "app:1".into()),
                ("memory".into(), "1024".into()),
                ("labels".into(), "{\"a\":\"b c\"}".into()),
                ("cgroupparent".into(), "/milkcrate-x-build".into()),
            ]
        );
    }

    #[test]
    fn a_parent_given_by_the_caller_is_replaced_not_doubled() {
        let req = request(http::Method::POST, "http://h/build?cgroupparent=%2F");
        let req = add_cgroup_parent(req, "milkcrate-build-x.slice");
        assert_eq!(
            req.uri().query(),
            Some("cgroupparent=milkcrate-build-x.slice")
        );
    }

    #[test]
    fn other_requests_pass_unchanged() {
        for (method, uri) in [
            (http::Method::GET, "http://h/v1.41/build?x=1"),
            (http::Method::POST, "http://h/v1.41/build/prune?all=1"),
            (
                http::Method::POST,
                "http://h/v1.41/containers/create?name=build",
            ),
            (
                http::Method::POST,
                "http://h/v1.41/images/create?fromImage=build",
            ),
        ] {
            let req = add_cgroup_parent(request(method.clone(), uri), "/p");
            assert_eq!(req.uri().to_string(), uri, "{method} {uri}");
        }
    }

    #[test]
    fn cgroupfs_parents_are_made_with_their_limit() {
        let tmp = tempfile::tempdir().expect("dir");
        // v1: the pids controller's folder.
        let dir = tmp.path().join("pids/milkcrate-x-build");
        std::fs::create_dir_all(tmp.path().join("pids")).expect("dir");
        assert_eq!(
            cgroupfs(&dir, None, "milkcrate-x-build", 300),
            BuildPids::Limited {
                parent: "/milkcrate-x-build".into(),
                max: Some(300)
            }
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("pids.max")).unwrap(),
            "300"
        );
        // v2: `pids` is enabled for the root's children first.
        let control = tmp.path().join("cgroup.subtree_control");
        std::fs::write(&control, "cpu memory\n").expect("write");
        let pids = cgroupfs(
            &tmp.path().join("v2-build"),
            Some(tmp.path()),
            "v2-build",
            100,
        );
        assert_eq!(pids.parent(), Some("/v2-build"));
        assert_eq!(std::fs::read_to_string(&control).unwrap(), "+pids");
        // Where it cannot write, no parent, and the reason.
        let refused = cgroupfs(
            &tmp.path().join("absent/x"),
            Some(&tmp.path().join("absent")),
            "x",
            100,
        );
        assert_eq!(refused.parent(), None);
        assert!(
            refused
                .describe()
                .starts_with("WARNING: build steps have no process limit: cannot set")
        );
    }

    #[test]
    fn a_parent_only_looked_at_is_reported_as_it_stands() {
        let tmp = tempfile::tempdir().expect("dir");
        let dir = tmp.path().join("milkcrate-x-build");
        let pending = existing(&dir, "milkcrate-x-build");
        assert!(
            pending.describe().contains("is not set up yet"),
            "{pending:?}"
        );
        assert!(!dir.exists(), "looking makes nothing");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("pids.max"), "100\n").expect("write");
        assert_eq!(
            existing(&dir, "milkcrate-x-build").parent(),
            Some("/milkcrate-x-build")
        );
    }

    #[test]
    fn systemd_slices_are_used_with_the_limit_the_shipped_slice_sets() {
        let tmp = tempfile::tempdir().expect("dir");
        let root = tmp.path();
        let slice = "milkcrate-build-x.slice";
        // The host's tree is visible (system.slice) but the shipped slice is not installed.
        std::fs::create_dir_all(root.join("system.slice")).expect("dir");
        let missing = systemd(root, "2", slice);
        assert_eq!(missing.parent(), None);
        assert!(
            missing.describe().contains("is not installed"),
            "{missing:?}"
        );
        // Installed, without TasksMax=.
        let shipped = root.join("milkcrate.slice").join(SHIPPED_SLICE);
        std::fs::create_dir_all(&shipped).expect("dir");
        std::fs::write(shipped.join("pids.max"), "max\n").expect("write");
        assert!(
            systemd(root, "2", slice)
                .describe()
                .contains("has no TasksMax=")
        );
        // Installed with it.
        std::fs::write(shipped.join("pids.max"), "100\n").expect("write");
        assert_eq!(
            systemd(root, "2", slice),
            BuildPids::Limited {
                parent: slice.into(),
                max: Some(100)
            }
        );
        // The host's tree not visible (milkcrate in a container): the slice, unverified.
        let blind = tempfile::tempdir().expect("dir");
        let unverified = systemd(blind.path(), "2", slice);
        assert_eq!(unverified.parent(), Some(slice));
        assert!(unverified.describe().contains("could not be read"));
    }

    #[test]
    fn limits_read_back() {
        let tmp = tempfile::tempdir().expect("dir");
        let dir = tmp.path();
        std::fs::write(dir.join("pids.max"), "max\n").expect("write");
        assert_eq!(read_max(&dir.join("pids.max")), Some(None));
        std::fs::write(dir.join("pids.max"), "300\n").expect("write");
        assert_eq!(read_max(&dir.join("pids.max")), Some(Some(300)));
        assert_eq!(read_max(&dir.join("absent")), None);
    }
}
