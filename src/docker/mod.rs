//! The Docker Engine, through its API (bollard). The only module that imports bollard.
//!
//! Connection honours `DOCKER_HOST` (bollard's local defaults: the unix socket otherwise) and
//! always negotiates the API version: Debian's engine speaks 1.41, older than bollard's default.
//! Containers are created only from a [`ContainerSpec`], which always carries the hardening.

mod build_pids;
pub use build_pids::BuildPids;
pub mod firewall;
mod registry;
mod swarm;
pub use swarm::{NodeFacts, ServiceFacts, SwarmNode, TaskFacts};
mod volumes;
pub use registry::{PullTracker, RegistryAuth, explain_pull_failure};
pub mod monitor;
pub use volumes::{Errno, HELPER_IMAGE, rename_program, unlink_program};

use std::collections::HashMap;
use std::path::Path;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, HostConfigLogConfig, Mount,
    MountType, NetworkConnectRequest, NetworkCreateRequest, NetworkingConfig, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    BuildImageOptions, CreateContainerOptions, ListContainersOptions, ListImagesOptions,
    LogsOptions, RemoveContainerOptions, RemoveImageOptions, StopContainerOptions,
};
use futures_util::{Stream, StreamExt};

use crate::domain::hardening::{
    CAP_ADD, CPU_PERIOD, ContainerSpec, LOG_MAX_FILE, LOG_MAX_SIZE, Limits, NO_NEW_PRIVILEGES,
    PIDS_LIMIT,
};
use crate::domain::labels::MANAGED;

/// Label every object milkcrate creates in the engine carries.
pub const MANAGED_LABEL: &str = MANAGED;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "the Docker Engine is not reachable ({0}). Start it (e.g. `systemctl start docker`) or set DOCKER_HOST."
    )]
    Unreachable(String),
    #[error("{0} was not found in the Docker Engine")]
    NotFound(String),
    #[error("the Docker Engine refused: {0}")]
    Api(String),
    /// milkcrate refuses the request itself; the sentence says why.
    #[error("{0}")]
    Refused(String),
}

impl From<bollard::errors::Error> for EngineError {
    fn from(e: bollard::errors::Error) -> Self {
        use bollard::errors::Error as E;
        match e {
            E::DockerResponseServerError {
                status_code: 404,
                message,
            } => EngineError::NotFound(message),
            E::DockerResponseServerError { message, .. } => EngineError::Api(message),
            E::DockerStreamError { error } => EngineError::Api(error),
            E::IOError { err } => EngineError::Unreachable(err.to_string()),
            E::HyperResponseError { err } => EngineError::Unreachable(err.to_string()),
            other => EngineError::Api(other.to_string()),
        }
    }
}

/// The engine answers 304 when a container already is in the asked state: that is success.
fn already_done_ok(result: Result<(), bollard::errors::Error>) -> Result<(), EngineError> {
    match result {
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        }) => Ok(()),
        other => other.map_err(EngineError::from),
    }
}

/// A build step killed by SIGKILL (exit 137) almost always went over the build's memory limit;
/// the engine says only "returned a non-zero code: 137".
/// A step that could not fork (`Resource temporarily unavailable`) under a process limit
/// reached it; the engine reports only the step's exit code.
fn explain_build_failure(err: String, memory_mb: u32, pids: Option<(i64, bool)>) -> String {
    if let Some((max, true)) = pids {
        format!(
            "{err}. The step could not start more processes: build steps may run at most {max} processes together (the build process limit, MILKCRATE_BUILD_PIDS; threads count)"
        )
    } else if err.contains("non-zero code: 137") {
        format!(
            "{err}. The step was killed: most likely it needed more than the {memory_mb} MiB of memory a build step may use (MILKCRATE_BUILD_MEMORY_MB)"
        )
    } else {
        err
    }
}

/// The name of the closed variant of network `name`: internal (no route out of it), for apps
/// whose outbound access is off.
pub fn closed_network(name: &str) -> String {
    format!("{name}-internal")
}

/// How a build runs: what each step may use, whether it gets a network, the credentials for
/// pulling its base images, and whether to pull them anew.
#[derive(Debug, Clone, Copy)]
pub struct BuildRules<'a> {
    pub limits: Limits,
    pub network: bool,
    pub registries: &'a [RegistryAuth],
    pub pull: bool,
}

/// How the name of an app's own network in Traefik mode ends (`<instance>-<app>-edge`): only
/// the app's main container and the containers of `MILKCRATE_TRAEFIK_CONTAINERS` join it.
pub const EDGE_SUFFIX: &str = "-edge";

/// A container's address on `network`, on its closed variant ([`closed_network`]), or on its
/// app's own network ([`EDGE_SUFFIX`]), from either kind of engine report. An app's main
/// container is on exactly one of the three.
fn ip_on(networks: Option<HashMap<String, EndpointSettings>>, network: &str) -> Option<String> {
    let mut networks = networks?;
    let edge = networks
        .keys()
        .find(|n| n.ends_with(EDGE_SUFFIX))
        .cloned()
        .unwrap_or_default();
    networks
        .remove(network)
        .or_else(|| networks.remove(&closed_network(network)))
        .or_else(|| networks.remove(&edge))?
        .ip_address
        .filter(|ip| !ip.is_empty())
}

/// One reading of a container's resource use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatsSample {
    /// Memory in use, without the reclaimable page cache (as `docker stats` shows it).
    pub memory_bytes: u64,
    /// Percent of one core since the previous reading.
    pub cpu_percent: f64,
}

fn sample_of(s: &bollard::models::ContainerStatsResponse) -> StatsSample {
    let mem = s.memory_stats.as_ref();
    let usage = mem.and_then(|m| m.usage).unwrap_or(0);
    let cache = mem
        .and_then(|m| m.stats.as_ref())
        .and_then(|st| {
            st.get("inactive_file")
                .or_else(|| st.get("total_inactive_file"))
                .copied()
        })
        .unwrap_or(0);
    let total = |c: &Option<bollard::models::ContainerCpuStats>| {
        c.as_ref()
            .and_then(|c| c.cpu_usage.as_ref())
            .and_then(|u| u.total_usage)
            .unwrap_or(0)
    };
    let system = |c: &Option<bollard::models::ContainerCpuStats>| {
        c.as_ref().and_then(|c| c.system_cpu_usage).unwrap_or(0)
    };
    let cpu_delta = total(&s.cpu_stats).saturating_sub(total(&s.precpu_stats)) as f64;
    let sys_delta = system(&s.cpu_stats).saturating_sub(system(&s.precpu_stats)) as f64;
    let cpus = s
        .cpu_stats
        .as_ref()
        .and_then(|c| c.online_cpus)
        .unwrap_or(1)
        .max(1) as f64;
    StatsSample {
        memory_bytes: usage.saturating_sub(cache),
        cpu_percent: if sys_delta > 0.0 {
            cpu_delta / sys_delta * cpus * 100.0
        } else {
            0.0
        },
    }
}

/// A connected, version-negotiated engine client. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    /// The process limit its builds run under, when one is in force ([`Engine::confine_builds`]).
    build_pids: Option<i64>,
}

/// What `milkcrate check` and the dashboard show about the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    pub version: String,
    pub api_version: String,
}

/// How long connecting to the engine (negotiating its API version) may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The bridge driver's switch for traffic between containers of one network.
const ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";
/// The option naming a bridge network's host interface, when it was given one.
const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

/// What a built image says about itself.
#[derive(Debug, Clone, Default)]
pub struct ImageFacts {
    pub exposed_ports: Vec<String>,
    pub has_healthcheck: bool,
    /// The image's own labels (a container inherits them).
    pub labels: HashMap<String, String>,
    /// Its `name:tag`s; a reference not among them reached the image by id.
    pub repo_tags: Vec<String>,
    /// The image's own `USER`, when it sets one.
    pub user: Option<String>,
}

/// One line of a build, or its end.
#[derive(Debug, Clone)]
pub enum BuildEvent {
    Log(String),
    Failed(String),
}

/// One container exit the engine reported.
#[derive(Debug, Clone)]
pub struct ContainerExit {
    pub container_id: String,
    /// Its `milkcrate.app` label.
    pub app: Option<String>,
    pub exit_code: Option<i64>,
}

/// A container milkcrate manages, as one list call reports it.
#[derive(Debug, Clone)]
pub struct ContainerFacts {
    pub id: String,
    pub name: String,
    pub app: Option<String>,
    /// The compose service it runs, for compose apps.
    pub service: Option<String>,
    pub image: String,
    /// `running`, `exited`, `created`, `restarting`, `paused`, `dead`.
    pub state: String,
    /// Docker's human text, e.g. `Up 5 minutes (healthy)`.
    pub status: String,
    /// `healthy`, `unhealthy` or `starting` when the image has a HEALTHCHECK.
    pub health: Option<String>,
    pub ip: Option<String>,
}

/// What inspecting one container says.
#[derive(Debug, Clone)]
pub struct ContainerState {
    pub running: bool,
    pub restarting: bool,
    pub exit_code: i64,
    pub health: Option<String>,
    pub error: String,
    /// The container's address on `network` (the one asked about).
    pub ip: Option<String>,
}

impl Engine {
    pub async fn connect() -> Result<Self, EngineError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| EngineError::Unreachable(e.to_string()))?;
        // A hung engine must not hang whoever asked (a page, an action) for bollard's 120 s.
        let docker = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| {
                EngineError::Unreachable(format!(
                    "no answer within {} s; it may be hung or overloaded",
                    CONNECT_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| EngineError::Unreachable(e.to_string()))?;
        Ok(Self {
            docker,
            build_pids: None,
        })
    }

    /// Sets up the process limit of builds ([`BuildPids`]): the parent cgroup `name`
    /// (cgroupfs) or slice `slice` (systemd) capped at `max` processes. Does not change this
    /// client: [`Engine::confine_builds`] does. With `make` false nothing is created
    /// (`milkcrate check` only looks).
    pub async fn build_pids(
        &self,
        name: &str,
        slice: &str,
        max: i64,
        make: bool,
    ) -> Result<BuildPids, EngineError> {
        build_pids::settle(self, name, slice, max, make).await
    }

    /// This client with every `POST /build` request run under the parent cgroup `pids` names
    /// (bollard's build options have no `cgroupparent`: a request modifier adds it). Every
    /// other request is sent unchanged.
    pub fn confine_builds(self, pids: &BuildPids) -> Self {
        match pids {
            BuildPids::Limited { parent, max } => {
                let parent = parent.clone();
                Self {
                    docker: self.docker.with_request_modifier(move |req| {
                        build_pids::add_cgroup_parent(req, &parent)
                    }),
                    build_pids: *max,
                }
            }
            BuildPids::Unlimited(_) => self,
        }
    }

    pub async fn info(&self) -> Result<EngineInfo, EngineError> {
        let v = self
            .docker
            .version()
            .await
            .map_err(|e| EngineError::Unreachable(e.to_string()))?;
        let negotiated = self.docker.client_version();
        Ok(EngineInfo {
            version: v.version.unwrap_or_else(|| "unknown".into()),
            api_version: format!("{}.{}", negotiated.major_version, negotiated.minor_version),
        })
    }

    /// The engine's data folder (`DockerRootDir`), for the disk-space alert.
    pub async fn root_dir(&self) -> Option<String> {
        self.docker
            .info()
            .await
            .ok()
            .and_then(|i| i.docker_root_dir)
    }

    /// Creates the bridge network apps join, when it does not exist yet.
    /// With `closed` the network is internal: its containers reach each other and whoever
    /// reaches into it (the host), but nothing outside it.
    pub async fn ensure_network(
        &self,
        name: &str,
        labels: HashMap<String, String>,
        closed: bool,
    ) -> Result<(), EngineError> {
        self.ensure_network_with(name, labels, false, closed).await
    }

    /// The bridge network every app's main container joins. With `isolate`, containers on it
    /// cannot reach each other (inter-container traffic off): only the host, where the
    /// built-in router runs, reaches them. Returns whether the network, as it exists, isolates
    /// (one made before this option keeps its old setting until it is recreated).
    pub async fn ensure_platform_network(
        &self,
        name: &str,
        labels: HashMap<String, String>,
        isolate: bool,
        closed: bool,
    ) -> Result<bool, EngineError> {
        self.ensure_network_with(name, labels, isolate, closed)
            .await?;
        Ok(self
            .network(name)
            .await?
            .options
            .and_then(|o| o.get(ICC_OPTION).cloned())
            .is_some_and(|v| v == "false"))
    }

    async fn ensure_network_with(
        &self,
        name: &str,
        labels: HashMap<String, String>,
        isolate: bool,
        closed: bool,
    ) -> Result<(), EngineError> {
        match self
            .docker
            .inspect_network(
                name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match EngineError::from(e) {
                EngineError::NotFound(_) => {
                    let req = NetworkCreateRequest {
                        name: name.to_string(),
                        driver: Some("bridge".into()),
                        labels: Some(labels),
                        options: isolate.then(|| {
                            HashMap::from([(ICC_OPTION.to_string(), "false".to_string())])
                        }),
                        internal: Some(closed),
                        ..Default::default()
                    };
                    match self.docker.create_network(req).await {
                        Ok(_) => Ok(()),
                        // Created by a concurrent deploy in the meantime.
                        Err(e) if e.to_string().contains("already exists") => Ok(()),
                        Err(e) => Err(e.into()),
                    }
                }
                other => Err(other),
            },
        }
    }

    /// Builds `tag` from the tar build context at `context`, streaming the log, confined by
    /// `rules` ([`BuildRules`]). Base images
    /// are used from the engine when present (no forced pull, so builds work offline) unless
    /// `pull` asks for them anew; missing ones are pulled with the stored `registries`'
    /// credentials, their progress shown a line per layer state (download ticks dropped). Each
    /// step's container gets `limits` (memory without swap, CPU): a `RUN` step cannot take the
    /// host's memory or every core. Their processes are capped by the parent cgroup the
    /// client was confined to ([`Engine::confine_builds`]), when there is one.
    /// Without `network` the steps run with no network at all (`networkmode=none`); with it
    /// they get the engine's default bridge, never an app network.
    pub async fn build(
        &self,
        context: &Path,
        dockerfile: &str,
        tag: &str,
        rules: BuildRules<'_>,
    ) -> Result<impl Stream<Item = BuildEvent> + '_, EngineError> {
        let BuildRules {
            limits,
            network,
            registries,
            pull,
        } = rules;
        let file = tokio::fs::File::open(context)
            .await
            .map_err(|e| EngineError::Api(format!("cannot read the build context: {e}")))?;
        let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(file));
        // The engine takes bytes as a 32-bit number: at most 2047 MiB.
        let memory = i32::try_from(limits.memory_bytes()).unwrap_or(i32::MAX);
        let options = BuildImageOptions {
            dockerfile: dockerfile.into(),
            t: Some(tag.to_string()),
            rm: true,
            forcerm: true,
            memory: Some(memory),
            memswap: Some(memory),
            cpuperiod: i32::try_from(CPU_PERIOD).ok(),
            cpuquota: i32::try_from(limits.cpu_quota()).ok(),
            networkmode: Some(if network { "default" } else { "none" }.into()),
            pull: pull.then(|| "1".to_string()),
            ..Default::default()
        };
        let memory_mb = limits.memory_mb;
        let pids_max = self.build_pids;
        // Whether a step said it could not fork: under a process limit, that is why it failed.
        let mut fork_failed = false;
        let stream = self
            .docker
            .build_image(options, registry::build_credentials(registries), Some(body))
            .map(move |item| {
                let pids = pids_max.map(|max| (max, fork_failed));
                match item {
                    Ok(info) => match (
                        info.error_detail.and_then(|d| d.message),
                        info.stream,
                        info.status,
                    ) {
                        (Some(err), _, _) => {
                            BuildEvent::Failed(explain_build_failure(err, memory_mb, pids))
                        }
                        (None, Some(line), _) => {
                            fork_failed |= line.contains("Resource temporarily unavailable")
                                || line.contains("can't fork")
                                || line.contains("fork: retry");
                            BuildEvent::Log(line)
                        }
                        // A base image's pull: each layer's state, not every tick.
                        (None, None, Some(status))
                            if matches!(status.as_str(), "Downloading" | "Extracting") =>
                        {
                            BuildEvent::Log(String::new())
                        }
                        (None, None, Some(status)) => match info.id {
                            Some(id) => BuildEvent::Log(format!("{id}: {status}\n")),
                            None => BuildEvent::Log(format!("{status}\n")),
                        },
                        _ => BuildEvent::Log(String::new()),
                    },
                    Err(e) => BuildEvent::Failed(explain_build_failure(
                        EngineError::from(e).to_string(),
                        memory_mb,
                        pids,
                    )),
                }
            });
        Ok(stream)
    }

    pub async fn image_facts(&self, tag: &str) -> Result<ImageFacts, EngineError> {
        let image = self.docker.inspect_image(tag).await?;
        let config = image.config.unwrap_or_default();
        let has_healthcheck = config
            .healthcheck
            .and_then(|h| h.test)
            .is_some_and(|t| t.first().is_some_and(|c| c != "NONE"));
        Ok(ImageFacts {
            exposed_ports: config.exposed_ports.unwrap_or_default(),
            has_healthcheck,
            labels: config.labels.unwrap_or_default(),
            repo_tags: image.repo_tags.unwrap_or_default(),
            user: config.user.filter(|u| !u.trim().is_empty()),
        })
    }

    async fn network(&self, name: &str) -> Result<bollard::models::NetworkInspect, EngineError> {
        Ok(self
            .docker
            .inspect_network(
                name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await?)
    }

    /// The host interface of bridge network `name`: the name its options give
    /// (`com.docker.network.bridge.name`), else the engine's `br-<first 12 hex of its id>`.
    /// `None` for a network of another driver (an overlay has no bridge of its own).
    pub async fn bridge_interface(&self, name: &str) -> Result<Option<String>, EngineError> {
        let n = self.network(name).await?;
        if n.driver.as_deref() != Some("bridge") {
            return Ok(None);
        }
        if let Some(given) = n
            .options
            .as_ref()
            .and_then(|o| o.get(BRIDGE_NAME_OPTION))
            .filter(|b| !b.is_empty())
        {
            return Ok(Some(given.clone()));
        }
        Ok(n.id
            .filter(|id| id.len() >= 12)
            .map(|id| format!("br-{}", &id[..12])))
    }

    /// The address blocks containers on network `name` get their addresses from (each IPAM
    /// entry's `ip_range`, else its subnet).
    pub async fn network_ranges(&self, name: &str) -> Result<Vec<String>, EngineError> {
        Ok(self
            .network(name)
            .await?
            .ipam
            .and_then(|i| i.config)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| c.ip_range.filter(|r| !r.is_empty()).or(c.subnet))
            .collect())
    }

    pub async fn image_exists(&self, tag: &str) -> bool {
        self.docker.inspect_image(tag).await.is_ok()
    }

    /// Creates a container from `spec`: the hardening policy is applied here and nowhere else.
    pub async fn create_container(&self, spec: &ContainerSpec) -> Result<String, EngineError> {
        let image_labels = self.image_facts(spec.image()).await?.labels;
        if let Some(key) =
            crate::domain::labels::foreign_reserved(image_labels.keys(), spec.label_map())
        {
            return Err(EngineError::Refused(format!(
                "the image {} carries the label {key:?}: labels under traefik.*, milkcrate.* and com.docker.compose.* are milkcrate's alone (they could route milkcrate's own paths to this app). Remove that LABEL from the Dockerfile.",
                spec.image()
            )));
        }
        let limits = spec.limits();
        let mounts: Vec<Mount> = spec
            .volume_mounts()
            .iter()
            .map(|m| Mount {
                target: Some(m.target.clone()),
                source: Some(m.volume.clone()),
                typ: Some(MountType::VOLUME),
                read_only: Some(m.read_only),
                ..Default::default()
            })
            .collect();
        let process = spec.process_options();
        let tmpfs_options = spec.tmpfs_options();
        let mut tmpfs = HashMap::from([("/tmp".to_string(), tmpfs_options.clone())]);
        for path in &process.tmpfs {
            tmpfs.insert(path.clone(), tmpfs_options.clone());
        }
        let restart = match process.restart.as_deref() {
            Some("no") => RestartPolicyNameEnum::NO,
            Some("always") => RestartPolicyNameEnum::ALWAYS,
            Some("on-failure") => RestartPolicyNameEnum::ON_FAILURE,
            _ => RestartPolicyNameEnum::UNLESS_STOPPED,
        };
        let host = HostConfig {
            memory: Some(limits.memory_bytes()),
            // Equal to memory: no swap on top.
            memory_swap: Some(limits.memory_bytes()),
            cpu_period: Some(CPU_PERIOD),
            cpu_quota: Some(limits.cpu_quota()),
            pids_limit: Some(PIDS_LIMIT),
            cap_drop: Some(vec!["ALL".into()]),
            cap_add: Some(vec![CAP_ADD.into()]),
            security_opt: Some(vec![NO_NEW_PRIVILEGES.into()]),
            tmpfs: Some(tmpfs),
            readonly_rootfs: process.read_only.then_some(true),
            init: process.init.then_some(true),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), LOG_MAX_SIZE.to_string()),
                    ("max-file".to_string(), LOG_MAX_FILE.to_string()),
                ])),
            }),
            restart_policy: Some(RestartPolicy {
                name: Some(restart),
                maximum_retry_count: None,
            }),
            network_mode: Some(spec.network().to_string()),
            mounts: (!mounts.is_empty()).then_some(mounts),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image().to_string()),
            user: Some(spec.user()),
            cmd: process.command.clone(),
            stop_timeout: process.stop_timeout,
            hostname: process.hostname.clone(),
            domainname: process.domainname.clone(),
            tty: process.tty.then_some(true),
            open_stdin: process.stdin_open.then_some(true),
            stop_signal: process.stop_signal.clone(),
            entrypoint: process.entrypoint.clone(),
            working_dir: process.working_dir.clone(),
            healthcheck: process.health.as_ref().map(|h| HealthConfig {
                test: Some(h.test.clone()),
                interval: h.interval_ns,
                timeout: h.timeout_ns,
                start_period: h.start_period_ns,
                retries: h.retries,
                ..Default::default()
            }),
            env: Some(
                spec.env_vars()
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
            ),
            labels: Some(
                spec.label_map()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            host_config: Some(host),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    spec.network().to_string(),
                    EndpointSettings {
                        aliases: (!process.aliases.is_empty()).then(|| process.aliases.clone()),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(spec.name().to_string()),
            ..Default::default()
        };
        let id = self.docker.create_container(Some(options), body).await?.id;
        if let Some(network) = &process.also_on {
            // Engines before API 1.44 take one network at creation; the rest join before start.
            let joined = self
                .docker
                .connect_network(
                    network,
                    NetworkConnectRequest {
                        container: id.clone(),
                        endpoint_config: None,
                    },
                )
                .await;
            if let Err(e) = joined {
                let _ = self.remove_container(&id).await;
                return Err(e.into());
            }
        }
        Ok(id)
    }

    /// The container's restart policy name (`unless-stopped`, `always`, `on-failure`, `no`).
    pub async fn restart_policy(&self, id: &str) -> Result<Option<String>, EngineError> {
        let c = self
            .docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await?;
        Ok(c.host_config
            .and_then(|h| h.restart_policy)
            .and_then(|p| p.name)
            .map(|n| n.to_string()))
    }

    pub async fn start(&self, id: &str) -> Result<(), EngineError> {
        already_done_ok(
            self.docker
                .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
                .await,
        )
    }

    pub async fn stop(&self, id: &str) -> Result<(), EngineError> {
        already_done_ok(
            self.docker
                .stop_container(
                    id,
                    // The container's own stop timeout (10 s unless its spec says).
                    Some(StopContainerOptions {
                        t: None,
                        signal: None,
                    }),
                )
                .await,
        )
    }

    pub async fn restart(&self, id: &str) -> Result<(), EngineError> {
        Ok(self
            .docker
            .restart_container(
                id,
                Some(bollard::query_parameters::RestartContainerOptions {
                    t: None,
                    signal: None,
                }),
            )
            .await?)
    }

    /// Removes a container (stopping it first); one already gone counts as removed.
    pub async fn remove_container(&self, id: &str) -> Result<(), EngineError> {
        match self
            .docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: false,
                    link: false,
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => match EngineError::from(e) {
                EngineError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Removes an image; one already gone counts as removed.
    /// Removes an untagged image (a layer a failed build left), never forcing: an image with
    /// a tag, with images built on it or in use by a container stays. Returns whether it went.
    pub async fn remove_untagged_image(&self, id: &str) -> bool {
        let Ok(image) = self.docker.inspect_image(id).await else {
            return false;
        };
        if image.repo_tags.is_some_and(|t| !t.is_empty()) {
            return false;
        }
        self.docker
            .remove_image(
                id,
                Some(RemoveImageOptions {
                    force: false,
                    noprune: false,
                    ..Default::default()
                }),
                None,
            )
            .await
            .is_ok()
    }

    pub async fn remove_image(&self, tag: &str) -> Result<(), EngineError> {
        match self
            .docker
            .remove_image(
                tag,
                Some(RemoveImageOptions {
                    force: true,
                    noprune: false,
                    ..Default::default()
                }),
                None,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match EngineError::from(e) {
                EngineError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    pub async fn inspect(&self, id: &str, network: &str) -> Result<ContainerState, EngineError> {
        let c = self
            .docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await?;
        let ip = ip_on(c.network_settings.and_then(|n| n.networks), network);
        let s = c.state.unwrap_or_default();
        Ok(ContainerState {
            running: s.running.unwrap_or(false),
            restarting: s.restarting.unwrap_or(false),
            exit_code: s.exit_code.unwrap_or(0),
            health: s.health.and_then(|h| h.status).map(|h| h.to_string()),
            error: s.error.unwrap_or_default(),
            ip,
        })
    }

    /// Every container carrying all `labels` (`key=value`, any state), in ONE list call.
    /// Every container and volume labelled `milkcrate.managed=true`, whoever made it: its kind,
    /// name and `milkcrate.instance` label (for `milkcrate check`, which reports other installs'
    /// objects; nothing here removes anything).
    pub async fn managed_objects(
        &self,
    ) -> Result<Vec<(&'static str, String, Option<String>)>, EngineError> {
        let filters = HashMap::from([("label".to_string(), vec![format!("{MANAGED}=true")])]);
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters.clone()),
                ..Default::default()
            }))
            .await?;
        let volumes = self
            .docker
            .list_volumes(Some(bollard::query_parameters::ListVolumesOptions {
                filters: Some(filters),
            }))
            .await?
            .volumes
            .unwrap_or_default();
        let instance = |l: Option<&HashMap<String, String>>| {
            l.and_then(|l| l.get(crate::config::INSTANCE_LABEL).cloned())
        };
        Ok(containers
            .into_iter()
            .map(|c| {
                let name = c
                    .names
                    .as_ref()
                    .and_then(|n| n.first())
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default();
                ("container", name, instance(c.labels.as_ref()))
            })
            .chain(
                volumes
                    .into_iter()
                    .map(|v| ("volume", v.name, instance(Some(&v.labels)))),
            )
            .collect())
    }

    pub async fn list_labelled(
        &self,
        labels: &[String],
        network: &str,
    ) -> Result<Vec<ContainerFacts>, EngineError> {
        let filters = HashMap::from([("label".to_string(), labels.to_vec())]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let list = self.docker.list_containers(Some(options)).await?;
        Ok(list
            .into_iter()
            .map(|c| {
                let labels = c.labels.unwrap_or_default();
                let status = c.status.unwrap_or_default();
                let health = if status.contains("(healthy)") {
                    Some("healthy".to_string())
                } else if status.contains("(unhealthy)") {
                    Some("unhealthy".to_string())
                } else if status.contains("(health: starting)") {
                    Some("starting".to_string())
                } else {
                    None
                };
                let ip = ip_on(c.network_settings.and_then(|n| n.networks), network);
                ContainerFacts {
                    id: c.id.unwrap_or_default(),
                    name: c
                        .names
                        .and_then(|n| n.into_iter().next())
                        .unwrap_or_default()
                        .trim_start_matches('/')
                        .to_string(),
                    app: labels.get(crate::domain::labels::APP).cloned(),
                    service: labels.get(crate::domain::labels::SERVICE).cloned(),
                    image: c.image.unwrap_or_default(),
                    state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                    status,
                    health,
                    ip,
                }
            })
            .collect())
    }

    /// Image tags carrying all `labels`.
    pub async fn images_labelled(&self, labels: &[String]) -> Result<Vec<String>, EngineError> {
        let filters = HashMap::from([("label".to_string(), labels.to_vec())]);
        let images = self
            .docker
            .list_images(Some(ListImagesOptions {
                all: false,
                filters: Some(filters),
                ..Default::default()
            }))
            .await?;
        Ok(images
            .into_iter()
            .flat_map(|i| {
                // Engines before API 1.43 name an untagged image `<none>:<none>`: by id then.
                let tags: Vec<String> = i
                    .repo_tags
                    .into_iter()
                    .filter(|t| t != "<none>:<none>" && t != "<none>@<none>")
                    .collect();
                if tags.is_empty() { vec![i.id] } else { tags }
            })
            .collect())
    }

    /// The container's last `tail` log lines, then (with `follow`) new ones as they come.
    pub fn logs(
        &self,
        id: &str,
        tail: u32,
        follow: bool,
    ) -> impl Stream<Item = Result<String, EngineError>> + '_ {
        let options = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            tail: tail.to_string(),
            timestamps: false,
            ..Default::default()
        };
        self.docker
            .logs(id, Some(options))
            .map(|item| item.map(|out| out.to_string()).map_err(EngineError::from))
    }

    /// The container's resource use, about once a second while it runs; ends when it stops.
    pub fn stats(
        &self,
        id: &str,
    ) -> impl Stream<Item = Result<StatsSample, EngineError>> + Send + 'static {
        self.docker
            .stats(
                id,
                Some(bollard::query_parameters::StatsOptions {
                    stream: true,
                    one_shot: false,
                }),
            )
            .map(|r| r.map(|s| sample_of(&s)).map_err(EngineError::from))
    }

    /// Containers carrying all `labels` as they exit (the engine's `die` events), from now on.
    /// The stream ends when the engine goes away; the caller subscribes again.
    pub fn container_exits(
        &self,
        labels: &[String],
    ) -> impl Stream<Item = Result<ContainerExit, EngineError>> + Send + 'static {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("event".to_string(), vec!["die".to_string()]),
            ("label".to_string(), labels.to_vec()),
        ]);
        self.docker
            .events(Some(bollard::query_parameters::EventsOptions {
                since: None,
                until: None,
                filters: Some(filters),
            }))
            .map(|r| {
                r.map_err(EngineError::from).map(|e| {
                    let actor = e.actor.unwrap_or_default();
                    let attributes = actor.attributes.unwrap_or_default();
                    ContainerExit {
                        container_id: actor.id.unwrap_or_default(),
                        app: attributes.get(crate::domain::labels::APP).cloned(),
                        exit_code: attributes.get("exitCode").and_then(|c| c.parse().ok()),
                    }
                })
            })
    }

    /// Names of the networks carrying all `labels`.
    pub async fn networks_labelled(&self, labels: &[String]) -> Result<Vec<String>, EngineError> {
        let filters = HashMap::from([("label".to_string(), labels.to_vec())]);
        Ok(self
            .docker
            .list_networks(Some(bollard::query_parameters::ListNetworksOptions {
                filters: Some(filters),
            }))
            .await?
            .into_iter()
            .filter_map(|n| n.name)
            .collect())
    }

    /// Takes container `container` off `network`; not joined, or either gone, is fine.
    pub async fn leave_network(&self, network: &str, container: &str) -> Result<(), EngineError> {
        let req = bollard::models::NetworkDisconnectRequest {
            container: container.to_string(),
            force: Some(true),
        };
        match self.docker.disconnect_network(network, req).await {
            Ok(()) => Ok(()),
            Err(e) if e.to_string().contains("is not connected") => Ok(()),
            Err(e) => match EngineError::from(e) {
                EngineError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Removes a network; one already gone counts as removed.
    pub async fn remove_network(&self, name: &str) -> Result<(), EngineError> {
        match self.docker.remove_network(name).await {
            Ok(()) => Ok(()),
            Err(e) => match EngineError::from(e) {
                EngineError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    pub async fn network_exists(&self, name: &str) -> bool {
        self.docker
            .inspect_network(
                name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .is_ok()
    }
}
