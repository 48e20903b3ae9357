//! The hardening policy and [`ContainerSpec`], the one description every container milkcrate
//! creates goes through. Its fields are private: the only way to get one is [`ContainerSpec::new`],
//! which always carries the policy, so no code path can start a container without it.

use std::collections::BTreeMap;

/// User and group `nobody:nogroup`, numeric so images without /etc/passwd work.
pub const RUN_AS: RunAs = RunAs {
    uid: 65534,
    gid: 65534,
};
/// `/tmp` and every other tmpfs: nothing on it can be executed, gain privileges or be a
/// device. [`ContainerSpec::tmpfs_options`] adds its owner: the user the container runs as
/// (a root-owned `/tmp` is useless to an app that never runs as root). `mode=1777` alone is
/// not enough: the runtime gives the tmpfs the mode of the image's own `/tmp` (often 0755).
pub const TMPFS_OPTIONS: &str = "rw,noexec,nosuid,nodev,size=100m,mode=1777";
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

/// The numeric user and group a container runs as: never root, never group root. Names are
/// refused rather than trusted, because the image's own `/etc/passwd` decides what a name
/// means (`toor` may well be uid 0 there). The group is always given explicitly, so the engine
/// takes neither a primary group nor supplementary groups from the image's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    uid: u32,
    gid: u32,
}

/// The highest id accepted: ids from 2^31 on are unusual enough to mean a mistake or a trick
/// (`4294967295` is `(uid_t)-1`, "no change", to the kernel).
const MAX_ID: u32 = i32::MAX as u32;

impl RunAs {
    /// `uid` or `uid:gid`, in decimal digits only (no sign, no spaces, no names); both
    /// non-zero. A lone `uid` runs with the group of the same number.
    pub fn parse(input: &str) -> Result<Self, String> {
        let id = |part: &str, what: &str| -> Result<u32, String> {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "'{input}' is not a numeric user: give a {what} as digits, like \"1000:1000\" (names are not accepted, since the image decides what a name means and it may be root)"
                ));
            }
            // Digits only, so the one way to fail parsing is overflow: too big, not zero.
            let digits = part.trim_start_matches('0');
            let n = if digits.is_empty() {
                0
            } else {
                digits.parse::<u64>().unwrap_or(u64::MAX)
            };
            if n == 0 {
                return Err(format!(
                    "'{input}' is root: the {what} must not be 0 (services run as a non-root user and group)"
                ));
            }
            u32::try_from(n)
                .ok()
                .filter(|n| *n <= MAX_ID)
                .ok_or_else(|| format!("'{input}': the {what} must be at most {MAX_ID}"))
        };
        let (uid, gid) = match input.split_once(':') {
            Some((u, g)) => (id(u, "user id")?, id(g, "group id")?),
            None => {
                let u = id(input, "user id")?;
                (u, u)
            }
        };
        Ok(Self { uid, gid })
    }

    pub fn uid(&self) -> u32 {
        self.uid
    }

    pub fn gid(&self) -> u32 {
        self.gid
    }
}

impl std::fmt::Display for RunAs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
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
    /// A non-root user and group; `None` runs as [`RUN_AS`].
    pub user: Option<RunAs>,
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
    /// The user the container runs as: never root, never group root.
    pub fn run_as(&self) -> RunAs {
        self.process.user.unwrap_or(RUN_AS)
    }
    /// The user the container runs as, `uid:gid`, as the engine takes it.
    pub fn user(&self) -> String {
        self.run_as().to_string()
    }
    /// The options of `/tmp` and the other tmpfs mounts: [`TMPFS_OPTIONS`], owned by the
    /// container's user.
    pub fn tmpfs_options(&self) -> String {
        let user = self.run_as();
        format!("{TMPFS_OPTIONS},uid={},gid={}", user.uid, user.gid)
    }
}

#[cfg(test)]
mod tests {
    use super::RunAs;

    #[test]
    fn only_numeric_non_root_users_and_groups_are_accepted() {
        for ok in [
            "1000",
            "1000:1000",
            "65534:65534",
            "065534:0100",
            "1:1",
            "2147483647",
        ] {
            let u = RunAs::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert!(u.uid() > 0 && u.gid() > 0, "{ok}");
        }
        assert_eq!(RunAs::parse("1000").unwrap().to_string(), "1000:1000");
        assert_eq!(
            RunAs::parse("065534:0100").unwrap().to_string(),
            "65534:100"
        );
        for root in [
            "0",
            "00",
            "0000",
            "0:0",
            "65534:0",
            "65534:00",
            "65534:0000",
            "00000000000000000000",
            "1000:000000000000000000000000000",
        ] {
            let e = RunAs::parse(root).unwrap_err();
            assert!(e.contains("is root"), "{root}: {e}");
        }
        for bad in [
            "root",
            "toor",
            "nobody",
            "65534:wheel",
            "65534:root",
            "+0",
            "-0",
            "+1000",
            "-1",
            " 0",
            "0 ",
            "1000 :1000",
            "1000: 1000",
            "1000:",
            ":1000",
            "",
            "1000:1000:1000",
            "0x0",
            "1e3",
            "１０００",
            "1000\n",
            "\t1000",
        ] {
            let e = RunAs::parse(bad).unwrap_err();
            assert!(e.contains("numeric user"), "{bad:?}: {e}");
        }
        for huge in [
            "4294967295",
            "4294967296",
            "2147483648",
            "99999999999999999999999",
        ] {
            let e = RunAs::parse(huge).unwrap_err();
            assert!(e.contains("at most"), "{huge}: {e}");
        }
    }
}
