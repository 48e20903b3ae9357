//! Swarm mode: the pure mapping from a hardened [`ContainerSpec`] to the description of a
//! Docker Swarm service ([`ServicePlan`]), and the one list of what the service API (as spoken
//! to Debian's engine, API 1.41) cannot carry over ([`not_expressible`]). `docker/swarm.rs`
//! copies a plan field by field into the engine's types; nothing here does IO.
//!
//! What was checked against Docker 20.10.24 (API 1.41) by creating a service and inspecting its
//! task's container: `Resources.Limits.Pids`, `CapabilityAdd`/`CapabilityDrop`, `ReadOnly`,
//! `Init`, `User`, log options and tmpfs mounts (`noexec,nosuid,nodev` by the engine's default)
//! arrive; `Privileges.NoNewPrivileges` is ignored, swap cannot be limited, and a tmpfs mount
//! takes neither an owner nor (in effect) a mode.

use std::collections::BTreeMap;

use crate::domain::hardening::{
    CAP_ADD, ContainerSpec, LOG_MAX_FILE, LOG_MAX_SIZE, PIDS_LIMIT, VolumeMount,
};

/// The size of `/tmp` and the other tmpfs mounts.
pub const SIZE_BYTES_TMP: i64 = 100 * 1024 * 1024;
/// `1777`: everyone may write, only owners delete (as `/tmp` should be).
pub const TMP_MODE: i64 = 0o1777;
/// How long each updated task is watched for failure before the next one is updated.
pub const UPDATE_MONITOR_NS: i64 = 5_000_000_000;
/// Swarm restarts a failed task after this long (and again, without limit).
pub const RESTART_DELAY_NS: i64 = 1_000_000_000;

/// Per-app options that only swarm mode has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmOptions {
    /// Tasks wished running; 0 is a stopped app.
    pub replicas: u64,
    /// Placement constraints (`node.labels.zone==eu`), as the engine takes them.
    pub constraints: Vec<String>,
}

impl Default for SwarmOptions {
    fn default() -> Self {
        Self {
            replicas: 1,
            constraints: Vec::new(),
        }
    }
}

/// The largest number of replicas an app may ask for.
pub const MAX_REPLICAS: u64 = 20;

/// Parses a replica count from a form (`1`…[`MAX_REPLICAS`]).
pub fn parse_replicas(input: &str) -> Result<u64, String> {
    let n: u64 = input
        .trim()
        .parse()
        .map_err(|_| format!("Replicas must be a whole number, not {:?}", input.trim()))?;
    if !(1..=MAX_REPLICAS).contains(&n) {
        return Err(format!("Replicas must be between 1 and {MAX_REPLICAS}"));
    }
    Ok(n)
}

/// The most placement constraints an app may have.
pub const MAX_CONSTRAINTS: usize = 10;

/// What a placement constraint may say, for the refusals.
const CONSTRAINT_FORMS: &str = "write node.labels.<key>==<value> (or !=), node.role==manager (or worker), node.hostname==<name>, node.platform.os==<os> or node.platform.arch==<arch>";

/// Parses placement constraints as typed (one per line, or separated by commas), each
/// `node.labels.<key>==<value>` or `!=`, `node.role==manager|worker`, `node.hostname==<name>`,
/// `node.platform.os==<os>` or `node.platform.arch==<arch>`. Each comes back normalised
/// (trimmed, no spaces around the operator), duplicates once; anything else is refused with a
/// plain sentence, so no quote, space or control character reaches the service spec.
pub fn parse_constraints(input: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for entry in input.split(['\n', ',']).map(str::trim) {
        if entry.is_empty() {
            continue;
        }
        let c = parse_constraint(entry)?;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    if out.len() > MAX_CONSTRAINTS {
        return Err(format!(
            "An app may have at most {MAX_CONSTRAINTS} placement constraints."
        ));
    }
    Ok(out)
}

fn parse_constraint(entry: &str) -> Result<String, String> {
    let shown = || {
        if entry.len() <= 100 && entry.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
            format!("{entry} is not a placement constraint")
        } else {
            "A placement constraint holds a character that is not allowed".to_string()
        }
    };
    let (field, op, value) = match (entry.find("=="), entry.find("!=")) {
        (Some(i), None) => (&entry[..i], "==", &entry[i + 2..]),
        (None, Some(i)) => (&entry[..i], "!=", &entry[i + 2..]),
        _ => return Err(format!("{}: {CONSTRAINT_FORMS}.", shown())),
    };
    let (field, value) = (field.trim(), value.trim());
    let word = |s: &str, extra: &[char]| {
        !s.is_empty()
            && s.len() <= 100
            && s.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') || extra.contains(&c)
            })
    };
    let ok = match field {
        "node.role" => matches!(value, "manager" | "worker"),
        "node.hostname" => word(value, &[]),
        "node.platform.os" | "node.platform.arch" => word(value, &[]),
        _ => match field.strip_prefix("node.labels.") {
            Some(key) => {
                word(key, &[])
                    && key.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && word(value, &[':', '/'])
            }
            None => false,
        },
    };
    if !ok {
        return Err(format!(
            "{}: {CONSTRAINT_FORMS}; labels and values are letters, digits, '.', '_' and '-'.",
            shown()
        ));
    }
    Ok(format!("{field}{op}{value}"))
}

/// The constraints as one column (one per line; empty: none).
pub fn constraints_column(constraints: &[String]) -> String {
    constraints.join("\n")
}

/// A service's constraints: milkcrate's pins (`node.id==`, for a node-local image or
/// volumes) first, then the app's own.
pub fn merged_constraints(pins: &[String], own: &[String]) -> Vec<String> {
    let mut out = pins.to_vec();
    for c in own {
        if !out.contains(c) {
            out.push(c.clone());
        }
    }
    out
}

/// Whether a constraint is one of milkcrate's pins rather than the app's own.
pub fn is_pin(constraint: &str) -> bool {
    constraint.starts_with("node.id==")
}

/// A tmpfs mount of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmpfsPlan {
    pub target: String,
    pub size_bytes: i64,
    pub mode: i64,
}

/// CPU in billionths of a core, memory in bytes, processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourcePlan {
    pub nano_cpus: i64,
    pub memory_bytes: i64,
    /// `None` for reservations (the engine reserves no processes).
    pub pids: Option<i64>,
}

/// How a service's tasks are replaced (update) or put back (rollback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloutPlan {
    pub parallelism: i64,
    /// `start-first`: the new task runs (and passes its health check) before the old stops.
    pub start_first: bool,
    /// `rollback` for updates, `pause` for rollbacks.
    pub rollback_on_failure: bool,
    pub monitor_ns: i64,
}

/// Everything the engine is told about one service; [`service_plan`] makes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServicePlan {
    pub name: String,
    /// On the service and on each task's container (the container list finds them by these).
    pub labels: BTreeMap<String, String>,
    pub image: String,
    pub env: Vec<String>,
    pub user: String,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// Sent, though API 1.41 ignores it (see [`not_expressible`]).
    pub no_new_privileges: bool,
    pub read_only: bool,
    pub init: bool,
    pub tmpfs: Vec<TmpfsPlan>,
    pub volumes: Vec<VolumeMount>,
    pub limits: ResourcePlan,
    pub reservations: ResourcePlan,
    /// `any`, `on-failure` or `none`.
    pub restart_condition: &'static str,
    pub restart_delay_ns: i64,
    pub log_driver: String,
    pub log_options: BTreeMap<String, String>,
    pub network: String,
    /// Aliases on `network`.
    pub aliases: Vec<String>,
    /// A second network the tasks join (a stack's main service: the app's routed overlay).
    pub also_on: Option<String>,
    /// Names resolve to the tasks' own addresses (DNS round robin) instead of a virtual IP,
    /// which needs IPVS in the nodes' kernels: how a stack's services reach each other.
    pub dns_round_robin: bool,
    pub replicas: u64,
    pub constraints: Vec<String>,
    pub update: RolloutPlan,
    pub rollback: RolloutPlan,
    pub health: Option<crate::domain::compose::Health>,
    pub stop_grace_ns: Option<i64>,
    pub stop_signal: Option<String>,
}

/// The service that runs `spec`'s container `options.replicas` times, under the same policy:
/// the same limits (CPU as a share of cores, memory, processes), a quarter of them reserved on
/// the node so the scheduler does not overcommit, every capability dropped but
/// NET_BIND_SERVICE, the same non-root user, read-only root when set, `/tmp` (and the spec's
/// other tmpfs paths) a 100 MiB tmpfs, logs capped, restarted whenever it exits (a compose
/// `restart: no` or `on-failure` is kept). Updates start the new task first, one at a time,
/// watch it, and roll back by themselves when it fails.
pub fn service_plan(spec: &ContainerSpec, options: &SwarmOptions) -> ServicePlan {
    let limits = spec.limits();
    let process = spec.process_options();
    let nano_cpus = i64::from(limits.cpu_percent) * 10_000_000;
    let mut tmpfs = vec![TmpfsPlan {
        target: "/tmp".into(),
        size_bytes: SIZE_BYTES_TMP,
        mode: TMP_MODE,
    }];
    for path in &process.tmpfs {
        if !tmpfs.iter().any(|t| t.target == *path) {
            tmpfs.push(TmpfsPlan {
                target: path.clone(),
                size_bytes: SIZE_BYTES_TMP,
                mode: TMP_MODE,
            });
        }
    }
    let restart_condition = match process.restart.as_deref() {
        Some("no") => "none",
        Some("on-failure") => "on-failure",
        _ => "any",
    };
    ServicePlan {
        name: spec.name().to_string(),
        labels: spec.label_map().clone(),
        image: spec.image().to_string(),
        env: spec
            .env_vars()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        user: spec.user(),
        command: process.command.clone(),
        entrypoint: process.entrypoint.clone(),
        working_dir: process.working_dir.clone(),
        cap_add: vec![format!("CAP_{CAP_ADD}")],
        cap_drop: vec!["ALL".into()],
        no_new_privileges: true,
        read_only: process.read_only,
        init: process.init,
        tmpfs,
        volumes: spec.volume_mounts().to_vec(),
        limits: ResourcePlan {
            nano_cpus,
            memory_bytes: limits.memory_bytes(),
            pids: Some(PIDS_LIMIT),
        },
        reservations: ResourcePlan {
            nano_cpus: nano_cpus / 4,
            memory_bytes: limits.memory_bytes() / 4,
            pids: None,
        },
        restart_condition,
        restart_delay_ns: RESTART_DELAY_NS,
        log_driver: "json-file".into(),
        log_options: BTreeMap::from([
            ("max-size".to_string(), LOG_MAX_SIZE.to_string()),
            ("max-file".to_string(), LOG_MAX_FILE.to_string()),
        ]),
        network: spec.network().to_string(),
        aliases: process.aliases.clone(),
        also_on: process.also_on.clone(),
        dns_round_robin: false,
        replicas: options.replicas,
        constraints: options.constraints.clone(),
        update: RolloutPlan {
            parallelism: 1,
            start_first: true,
            rollback_on_failure: true,
            monitor_ns: UPDATE_MONITOR_NS,
        },
        rollback: RolloutPlan {
            parallelism: 1,
            start_first: true,
            rollback_on_failure: false,
            monitor_ns: UPDATE_MONITOR_NS,
        },
        health: process.health.clone(),
        stop_grace_ns: process.stop_timeout.map(|s| s * 1_000_000_000),
        stop_signal: process.stop_signal.clone(),
    }
}

/// What the policy asks that a swarm service cannot carry on this engine API, in plain
/// sentences: printed by `milkcrate check` and on every app's page in swarm mode. The plan
/// still sends what a newer engine would honour (`no_new_privileges`).
pub fn not_expressible() -> Vec<&'static str> {
    vec![
        "no-new-privileges: the service API of Docker Engine API 1.41 has no such setting (it ignores Privileges.NoNewPrivileges), so a task's processes may gain privileges through setuid programs; every capability but NET_BIND_SERVICE is still dropped and the user is not root.",
        "swap: a service can limit memory but not swap, so a task may use as much swap as its memory limit on top (engine mode allows none).",
        "/tmp's owner: a service's tmpfs takes only a size; /tmp is still noexec, nosuid and nodev, but keeps the image's own /tmp permissions, so an image whose /tmp is not world-writable (1777) cannot write there.",
        "outbound access off: the app's overlay network is internal, which gives its tasks no address the host can reach; milkcrate then reaches them only when it runs in a container joined to the network (MILKCRATE_SWARM_CONTAINER).",
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::hardening::{Limits, Process, RunAs};

    fn spec() -> ContainerSpec {
        ContainerSpec::new(
            "milkcrate-x-shop-7",
            "milkcrate-x-shop:1-7",
            "milkcrate-x-shop-swarm",
            Limits {
                memory_mb: 256,
                cpu_percent: 50,
            },
        )
        .env(vec![("A".into(), "1".into())])
        .labels(BTreeMap::from([("milkcrate.app".into(), "shop".into())]))
    }

    #[test]
    fn the_hardening_carries_over_to_the_service() {
        let plan = service_plan(&spec(), &SwarmOptions::default());
        assert_eq!(plan.limits.memory_bytes, 256 * 1024 * 1024);
        assert_eq!(plan.limits.nano_cpus, 500_000_000);
        assert_eq!(plan.limits.pids, Some(PIDS_LIMIT));
        assert_eq!(plan.reservations.memory_bytes, 64 * 1024 * 1024);
        assert_eq!(plan.reservations.nano_cpus, 125_000_000);
        assert_eq!(plan.cap_drop, ["ALL"]);
        assert_eq!(plan.cap_add, ["CAP_NET_BIND_SERVICE"]);
        assert_eq!(plan.user, "65534:65534");
        assert!(plan.no_new_privileges);
        assert!(!plan.read_only);
        assert_eq!(
            plan.tmpfs,
            [TmpfsPlan {
                target: "/tmp".into(),
                size_bytes: SIZE_BYTES_TMP,
                mode: 0o1777
            }]
        );
        assert_eq!(plan.log_driver, "json-file");
        assert_eq!(plan.log_options["max-size"], LOG_MAX_SIZE);
        assert_eq!(plan.log_options["max-file"], LOG_MAX_FILE);
        assert_eq!(plan.restart_condition, "any");
        assert_eq!(plan.env, ["A=1"]);
        assert_eq!(plan.labels["milkcrate.app"], "shop");
        assert_eq!(plan.network, "milkcrate-x-shop-swarm");
        assert_eq!(plan.replicas, 1);
        assert_eq!(
            plan.update,
            RolloutPlan {
                parallelism: 1,
                start_first: true,
                rollback_on_failure: true,
                monitor_ns: UPDATE_MONITOR_NS
            }
        );
        assert!(plan.rollback.start_first && !plan.rollback.rollback_on_failure);
    }

    #[test]
    fn process_options_carry_over_and_never_loosen() {
        let process = Process {
            user: Some(RunAs::parse("1000:1000").unwrap()),
            read_only: true,
            tmpfs: vec!["/run".into(), "/tmp".into()],
            restart: Some("on-failure".into()),
            init: true,
            stop_timeout: Some(3),
            ..Default::default()
        };
        let plan = service_plan(
            &spec().process(process),
            &SwarmOptions {
                replicas: 3,
                constraints: vec!["node.labels.zone==eu".into()],
            },
        );
        assert_eq!(plan.user, "1000:1000");
        assert!(plan.read_only && plan.init);
        let targets: Vec<&str> = plan.tmpfs.iter().map(|t| t.target.as_str()).collect();
        assert_eq!(targets, ["/tmp", "/run"], "one /tmp, never two");
        assert_eq!(plan.restart_condition, "on-failure");
        assert_eq!(plan.stop_grace_ns, Some(3_000_000_000));
        assert_eq!(plan.replicas, 3);
        assert_eq!(plan.constraints, ["node.labels.zone==eu"]);
        let no = Process {
            restart: Some("no".into()),
            ..Default::default()
        };
        assert_eq!(
            service_plan(&spec().process(no), &SwarmOptions::default()).restart_condition,
            "none"
        );
    }

    #[test]
    fn what_the_service_api_cannot_carry_is_named() {
        let gaps = not_expressible().join("\n");
        for what in ["no-new-privileges", "swap", "/tmp", "outbound"] {
            assert!(gaps.contains(what), "{what} is listed");
        }
    }

    #[test]
    fn replicas_are_bounded() {
        assert_eq!(parse_replicas(" 3 "), Ok(3));
        assert!(parse_replicas("0").is_err());
        assert!(parse_replicas("21").is_err());
        assert!(parse_replicas("two").is_err());
        assert!(parse_replicas("-1").is_err());
    }

    #[test]
    fn placement_constraints_are_checked_and_normalised() {
        assert_eq!(
            parse_constraints(
                " node.labels.zone == eu ,node.role!=manager\nnode.hostname==web-1\n\n"
            ),
            Ok(vec![
                "node.labels.zone==eu".to_string(),
                "node.role!=manager".to_string(),
                "node.hostname==web-1".to_string(),
            ])
        );
        assert_eq!(
            parse_constraints(
                "node.platform.os==linux, node.platform.arch==x86_64, node.labels.zone==eu, node.labels.zone==eu"
            ),
            Ok(vec![
                "node.platform.os==linux".to_string(),
                "node.platform.arch==x86_64".to_string(),
                "node.labels.zone==eu".to_string(),
            ])
        );
        assert_eq!(parse_constraints(""), Ok(Vec::new()));
        for bad in [
            "node.labels.zone=eu",
            "node.labels.zone==\"eu\"",
            "node.labels.zone==e u",
            "node.labels.==eu",
            "node.labels.zone==",
            "node.role==boss",
            "node.id==abc",
            "engine.labels.x==y",
            "node.labels.a==b==c",
            "node.labels.a==b!=c",
            "node.labels.zone==eu\u{7}",
            "node.labels.zo\tne==eu",
        ] {
            let e = parse_constraints(bad).expect_err(bad);
            assert!(!e.contains('\n') && !e.contains('\u{7}'), "{e}");
            assert!(
                e.contains("node.labels.<key>==<value>") || e.contains("not allowed"),
                "{e}"
            );
        }
        let many = (0..11)
            .map(|i| format!("node.labels.k{i}==v"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(parse_constraints(&many).unwrap_err().contains("at most 10"));
        assert_eq!(
            merged_constraints(&["node.id==n1".into()], &["node.labels.zone==eu".into()]),
            ["node.id==n1", "node.labels.zone==eu"]
        );
        assert!(is_pin("node.id==n1") && !is_pin("node.labels.zone==eu"));
    }
}
