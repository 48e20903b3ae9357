//! Pulling images from registries (with stored credentials), the pull's progress in a few
//! readable lines (per layer: a line when its state changes; all layers: bytes so far every
//! couple of seconds), the registry's refusals said in plain words, and reading a file out of
//! an image (its `/etc/passwd`) through a container that is created, never started, read with
//! the archive API and removed.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bollard::auth::DockerCredentials;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, RemoveContainerOptions,
};
use futures_util::StreamExt;

use super::{Engine, EngineError};
use crate::domain::image::{DOCKER_HUB, ImageRef};

/// Credentials for one registry host, decrypted for one pull or build.
#[derive(Clone)]
pub struct RegistryAuth {
    pub host: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegistryAuth({}, {}, ***)", self.host, self.username)
    }
}

/// The address the engine files Docker Hub's credentials under.
const DOCKER_HUB_ADDRESS: &str = "https://index.docker.io/v1/";

fn credentials(a: &RegistryAuth) -> DockerCredentials {
    DockerCredentials {
        username: Some(a.username.clone()),
        password: Some(a.password.clone()),
        serveraddress: Some(if a.host == DOCKER_HUB {
            DOCKER_HUB_ADDRESS.into()
        } else {
            a.host.clone()
        }),
        ..Default::default()
    }
}

/// The registry config a build sends (`X-Registry-Config`): every stored host, so each `FROM`
/// is pulled with its registry's credentials.
pub(super) fn build_credentials(
    all: &[RegistryAuth],
) -> Option<HashMap<String, DockerCredentials>> {
    (!all.is_empty()).then(|| {
        all.iter()
            .map(|a| {
                let c = credentials(a);
                (c.serveraddress.clone().unwrap_or_default(), c)
            })
            .collect()
    })
}

/// Turns the engine's pull events into a few lines: a layer's line when its state changes
/// (downloading and extracting ticks are counted, not printed) and a total every `every`.
#[derive(Debug)]
pub struct PullTracker {
    layers: BTreeMap<String, (String, u64, u64)>,
    last_total: Option<Instant>,
    every: Duration,
}

impl PullTracker {
    pub fn new(every: Duration) -> Self {
        Self {
            layers: BTreeMap::new(),
            last_total: None,
            every,
        }
    }

    /// One engine event; returns the lines worth logging.
    pub fn feed(
        &mut self,
        id: Option<&str>,
        status: &str,
        current: Option<i64>,
        total: Option<i64>,
        now: Instant,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let Some(id) = id.filter(|i| i.len() == 12 && i.bytes().all(|b| b.is_ascii_hexdigit()))
        else {
            // Not a layer: "Pulling from …", "Digest: …", "Status: …".
            if !status.is_empty() {
                out.push(status.to_string());
            }
            return out;
        };
        let ticking = matches!(status, "Downloading" | "Extracting");
        let entry = self
            .layers
            .entry(id.to_string())
            .or_insert_with(|| (String::new(), 0, 0));
        if let Some(t) = total.and_then(|t| u64::try_from(t).ok()) {
            entry.2 = entry.2.max(t);
        }
        if status == "Downloading"
            && let Some(c) = current.and_then(|c| u64::try_from(c).ok())
        {
            entry.1 = c;
        }
        if matches!(status, "Download complete" | "Pull complete") {
            entry.1 = entry.2.max(entry.1);
        }
        if entry.0 != status {
            entry.0 = status.to_string();
            if !ticking || entry.1 == 0 {
                out.push(format!("layer {id}: {status}"));
            }
        }
        if ticking
            && self
                .last_total
                .is_none_or(|t| now.duration_since(t) >= self.every)
        {
            self.last_total = Some(now);
            out.push(self.summary());
        }
        out
    }

    /// `3 of 5 layers done, 12.3 MB of 45.6 MB downloaded`.
    pub fn summary(&self) -> String {
        let done = self
            .layers
            .values()
            .filter(|(s, _, _)| matches!(s.as_str(), "Pull complete" | "Already exists"))
            .count();
        let current: u64 = self.layers.values().map(|l| l.1).sum();
        let total: u64 = self.layers.values().map(|l| l.2).sum();
        format!(
            "{done} of {} layers done, {} of {} downloaded",
            self.layers.len(),
            mb(current),
            mb(total)
        )
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

/// The engine's pull error, said plainly with the image and what the registry answered.
pub fn explain_pull_failure(
    image: &str,
    host: &str,
    answer: &str,
    had_credentials: bool,
) -> String {
    let lower = answer.to_ascii_lowercase();
    let hint = if lower.contains("unauthorized")
        || lower.contains("no basic auth credentials")
        || lower.contains("authentication required")
        || lower.contains("access denied")
        || lower.contains("denied")
    {
        if had_credentials {
            format!(
                " The registry refused the stored credentials for {host}: check the user name and password on the Registries page."
            )
        } else {
            format!(
                " The registry wants credentials (or has no such image): add them for {host} on the Registries page."
            )
        }
    } else if lower.contains("manifest unknown") || lower.contains("not found") {
        " The registry has no such image or tag: check the name.".to_string()
    } else if lower.contains("connection refused")
        || lower.contains("no such host")
        || lower.contains("timeout")
        || lower.contains("dial tcp")
    {
        format!(" The registry {host} could not be reached from the Docker Engine.")
    } else {
        String::new()
    };
    format!("pulling {image} failed: the registry {host} answered: {answer}.{hint}")
}

impl Engine {
    /// Pulls `image`, with `auth` when the admin stored credentials for its registry; `line`
    /// gets the progress lines. The error names the image and the registry's answer.
    pub async fn pull(
        &self,
        image: &ImageRef,
        auth: Option<&RegistryAuth>,
        mut line: impl FnMut(String),
    ) -> Result<(), EngineError> {
        let shown = image.canonical();
        let host = image.registry_host().to_string();
        let fail = |answer: String| {
            EngineError::Refused(explain_pull_failure(&shown, &host, &answer, auth.is_some()))
        };
        let options = CreateImageOptions {
            from_image: Some(image.repository()),
            tag: Some(image.pull_tag()),
            ..Default::default()
        };
        let mut stream = self
            .docker
            .create_image(Some(options), None, auth.map(credentials));
        let mut tracker = PullTracker::new(Duration::from_secs(2));
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(i) => i,
                Err(e) => {
                    return Err(match EngineError::from(e) {
                        EngineError::Unreachable(m) => EngineError::Unreachable(m),
                        EngineError::NotFound(m)
                        | EngineError::Api(m)
                        | EngineError::Refused(m) => fail(m),
                    });
                }
            };
            if let Some(err) = info.error_detail.and_then(|d| d.message) {
                return Err(fail(err));
            }
            let (current, total) = info
                .progress_detail
                .map(|p| (p.current, p.total))
                .unwrap_or((None, None));
            for l in tracker.feed(
                info.id.as_deref(),
                info.status.as_deref().unwrap_or_default(),
                current,
                total,
                Instant::now(),
            ) {
                line(l);
            }
        }
        if !tracker.layers.is_empty() {
            line(tracker.summary());
        }
        Ok(())
    }

    /// The repo digests of an image (`name@sha256:…`), to check a digest-pinned reference.
    pub async fn repo_digests(&self, image: &str) -> Result<Vec<String>, EngineError> {
        Ok(self
            .docker
            .inspect_image(image)
            .await?
            .repo_digests
            .unwrap_or_default())
    }

    /// Reads small files (at most 1 MiB each) out of `image`: a container is created from it
    /// (never started: no process runs, no network), each file is fetched with the archive
    /// API, and the container is removed. A file the image lacks is `None`.
    pub async fn read_image_files(
        &self,
        image: &str,
        paths: &[&str],
        labels: HashMap<String, String>,
    ) -> Result<Vec<Option<Vec<u8>>>, EngineError> {
        let body = ContainerCreateBody {
            image: Some(image.into()),
            // Never started; an entrypoint is still required of an image without CMD.
            cmd: Some(vec!["/nonexistent".into()]),
            entrypoint: Some(vec![]),
            labels: Some(labels),
            network_disabled: Some(true),
            host_config: Some(bollard::models::HostConfig {
                network_mode: Some("none".into()),
                cap_drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = format!(
            "milkcrate-image-reader-{}",
            hex::encode(super::volumes::rand_bytes())
        );
        let id = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name),
                    ..Default::default()
                }),
                body,
            )
            .await?
            .id;
        let mut out = Vec::new();
        let mut failure = None;
        for p in paths {
            match self.read_one(&id, p).await {
                Ok(v) => out.push(v),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let _ = self
            .docker
            .remove_container(
                &id,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await;
        match failure {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    async fn read_one(&self, id: &str, path: &str) -> Result<Option<Vec<u8>>, EngineError> {
        let mut tar = Vec::new();
        let mut stream = self.get_archive(id, path);
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    tar.extend_from_slice(&bytes);
                    if tar.len() > 2 * 1024 * 1024 {
                        return Err(EngineError::Refused(format!(
                            "{path} in the image is larger than 1 MiB"
                        )));
                    }
                }
                Err(EngineError::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        crate::archive::first_file_of_tar(&tar, 1024 * 1024)
            .map_err(|e| EngineError::Refused(format!("{path} in the image: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_a_few_lines_not_every_tick() {
        let mut t = PullTracker::new(Duration::from_secs(2));
        let t0 = Instant::now();
        let a = Some("0123456789ab");
        let b = Some("ba9876543210");
        assert_eq!(
            t.feed(None, "Pulling from library/x", None, None, t0),
            ["Pulling from library/x"]
        );
        assert_eq!(
            t.feed(a, "Pulling fs layer", None, None, t0),
            ["layer 0123456789ab: Pulling fs layer"]
        );
        t.feed(b, "Pulling fs layer", None, None, t0);
        let first = t.feed(a, "Downloading", Some(1_000_000), Some(4_000_000), t0);
        assert!(
            first
                .iter()
                .any(|l| l.contains("0 of 2 layers done, 1.0 MB of 4.0 MB")),
            "{first:?}"
        );
        // Ticks within the interval say nothing.
        for i in 2..4 {
            let now = t0 + Duration::from_millis(100 * i);
            assert!(
                t.feed(
                    a,
                    "Downloading",
                    Some(i as i64 * 1_000_000),
                    Some(4_000_000),
                    now
                )
                .is_empty()
            );
        }
        let later = t.feed(
            a,
            "Downloading",
            Some(3_500_000),
            Some(4_000_000),
            t0 + Duration::from_secs(3),
        );
        assert_eq!(later, ["0 of 2 layers done, 3.5 MB of 4.0 MB downloaded"]);
        assert_eq!(
            t.feed(a, "Pull complete", None, None, t0),
            ["layer 0123456789ab: Pull complete"]
        );
        t.feed(b, "Already exists", None, None, t0);
        assert_eq!(
            t.summary(),
            "2 of 2 layers done, 4.0 MB of 4.0 MB downloaded"
        );
    }

    #[test]
    fn pull_failures_say_what_to_do() {
        let e = explain_pull_failure(
            "x:1",
            "127.0.0.1:5056",
            "unauthorized: authentication required",
            true,
        );
        assert!(
            e.contains("pulling x:1 failed") && e.contains("refused the stored credentials"),
            "{e}"
        );
        let e = explain_pull_failure("x:1", "ghcr.io", "no basic auth credentials", false);
        assert!(
            e.contains("add them for ghcr.io on the Registries page"),
            "{e}"
        );
        let e = explain_pull_failure("x:1", "docker.io", "manifest unknown", false);
        assert!(e.contains("no such image or tag"), "{e}");
    }
}
