//! The hardening policy and [`ContainerSpec`], the one description every container milkcrate
//! creates goes through. Its fields are private: the only way to get one is [`ContainerSpec::new`],
//! which always carries the policy, so no code path can start a container without it.

use std::collections::BTreeMap;

/// User and group `nobody:nogroup`, numeric so images without /etc/passwd work.
pub const RUN_AS: &str = "65534:65534";
pub const TMPFS_OPTIONS: &str = "rw,noexec,nosuid,size=100m";
pub const CAP_ADD: &str = "NET_BIND_SERVICE";
pub const NO_NEW_PRIVILEGES: &str = "no-new-privileges:true";
pub const CPU_PERIOD: i64 = 100_000;
pub const PIDS_LIMIT: i64 = 100;
pub const LOG_MAX_SIZE: &str = "10m";
pub const LOG_MAX_FILE: &str = "3";

/// Per-app resource limits; the seed's values by default, adjustable within the admin's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_mb: u32,
    /// Percent of one core.
    pub cpu_percent: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mb: 512,
            cpu_percent: 50,
        }
    }
}

impl Limits {
    /// Checks the form's values against the admin's maxima.
    pub fn within(memory_mb: u32, cpu_percent: u32, max: Limits) -> Result<Self, String> {
        if !(16..=max.memory_mb).contains(&memory_mb) {
            return Err(format!(
                "Memory must be between 16 and {} MiB",
                max.memory_mb
            ));
        }
        if !(5..=max.cpu_percent).contains(&cpu_percent) {
            return Err(format!(
                "CPU must be between 5 and {} percent of one core",
                max.cpu_percent
            ));
        }
        Ok(Self {
            memory_mb,
            cpu_percent,
        })
    }

    pub fn memory_bytes(&self) -> i64 {
        i64::from(self.memory_mb) * 1024 * 1024
    }

    pub fn cpu_quota(&self) -> i64 {
        CPU_PERIOD * i64::from(self.cpu_percent) / 100
    }
}

/// A mount of a named Docker volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    pub volume: String,
    pub target: String,
    pub read_only: bool,
}

/// Everything needed to create one hardened container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    name: String,
    image: String,
    network: String,
    limits: Limits,
    env: Vec<(String, String)>,
    labels: BTreeMap<String, String>,
    mounts: Vec<VolumeMount>,
    process: Process,
}

/// What a compose service may say about its process; none of it loosens the policy (the user
/// is checked non-root before it gets here, tmpfs mounts are `noexec` like `/tmp`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Process {
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// A non-root user; `None` runs as [`RUN_AS`].
    pub user: Option<String>,
    pub working_dir: Option<String>,
    /// More `noexec` tmpfs mounts besides `/tmp`.
    pub tmpfs: Vec<String>,
    pub read_only: bool,
    pub health: Option<crate::domain::compose::Health>,
    /// `no`, `always`, `on-failure`; `None` is `unless-stopped`.
    pub restart: Option<String>,
    /// Names on the spec's network besides the container's own.
    pub aliases: Vec<String>,
    /// `init`: a tiny init as PID 1 that reaps zombies and forwards signals.
    pub init: bool,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub tty: bool,
    pub stdin_open: bool,
    /// Seconds a stop waits before killing, and the signal it sends first.
    pub stop_timeout: Option<i64>,
    pub stop_signal: Option<String>,
    /// Another network to join after creation (a compose app's main service joins the
    /// platform's network this way, where the router reaches it).
    pub also_on: Option<String>,
}

impl ContainerSpec {
    pub fn new(
        name: impl Into<String>,
        image: impl Into<String>,
        network: impl Into<String>,
        limits: Limits,
    ) -> Self {
        Self {
            name: name.into(),
            image: image.into(),
            network: network.into(),
            limits,
            env: Vec::new(),
            labels: BTreeMap::new(),
            mounts: Vec::new(),
            process: Process::default(),
        }
    }

    pub fn env(mut self, env: Vec<(String, String)>) -> Self {
        self.env = env;
        self
    }

    pub fn labels(mut self, labels: BTreeMap<String, String>) -> Self {
        self.labels.extend(labels);
        self
    }

    pub fn process(mut self, process: Process) -> Self {
        self.process = process;
        self
    }

    pub fn mounts(mut self, mounts: Vec<VolumeMount>) -> Self {
        self.mounts = mounts;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn image(&self) -> &str {
        &self.image
    }
    pub fn network(&self) -> &str {
        &self.network
    }
    pub fn limits(&self) -> Limits {
        self.limits
    }
    pub fn env_vars(&self) -> &[(String, String)] {
        &self.env
    }
    pub fn label_map(&self) -> &BTreeMap<String, String> {
        &self.labels
    }
    pub fn volume_mounts(&self) -> &[VolumeMount] {
        &self.mounts
    }
    pub fn process_options(&self) -> &Process {
        &self.process
    }
    /// The user the container runs as: never root.
    pub fn user(&self) -> &str {
        self.process.user.as_deref().unwrap_or(RUN_AS)
    }
}
