//! One compose service turned into a [`ServicePlan`]: the gate on the raw keys first, then one
//! function per group of keys (image, environment, labels, ports, dependencies, health check,
//! restart, mounts, networks, user, limits, process, host names). Each refusal names the key
//! through [`Refuse`], so the sentence and its line stay those of the whole file's parse.

use super::*;

/// Says why a key of one service is refused, with the service's name and the key's line.
struct Refuse<'a> {
    text: &'a str,
    service: &'a str,
}

impl Refuse<'_> {
    fn key(&self, key: &str, why: impl std::fmt::Display) -> String {
        at(self.text, Some(self.service), key, why)
    }
}

/// The plan of service `name` (its body is `map`), refusing what may not run here.
#[allow(clippy::too_many_arguments)]
pub(super) fn service_plan(
    text: &str,
    name: &str,
    map: &serde_norway::Mapping,
    files: &dyn AppFiles,
    cx: Context<'_>,
    volumes: &BTreeMap<String, MountSource>,
    networks: &BTreeSet<String>,
) -> Result<ServicePlan, String> {
    let refuse = Refuse {
        text,
        service: name,
    };
    gate_raw_keys(map, &refuse)?;
    let svc = typed_service(name, map)?;
    let (source, pull) = image_source(&svc, name, files, &refuse)?;
    let env = environment(&svc, files, &refuse)?;
    let labels = labels(&svc, &refuse)?;
    let ports = ports(&svc, &refuse)?;
    let depends_on = depends_on(&svc, &refuse)?;
    let health = health(&svc, &refuse)?;
    let restart = restart_policy(&svc, &refuse)?;
    let (mounts, tmpfs) = mounts(&svc, volumes, &refuse)?;
    let aliases = network_aliases(&svc, networks, &refuse)?;
    let user = user_and_working_dir(&svc, &refuse)?;
    let limits = limits(&svc, cx, &refuse)?;
    let (command, entrypoint) = command_and_entrypoint(&svc, &refuse)?;
    let stop_timeout = stopping(&svc, &refuse)?;
    host_names(&svc, &refuse)?;
    Ok(ServicePlan {
        pull,
        init: svc.init,
        hostname: svc.hostname.clone(),
        domainname: svc.domainname.clone(),
        tty: svc.tty,
        stdin_open: svc.stdin_open,
        stop_timeout,
        stop_signal: svc.stop_signal.clone(),
        name: name.to_string(),
        source,
        command,
        entrypoint,
        env,
        depends_on,
        health,
        restart,
        labels,
        mounts,
        working_dir: svc.working_dir.clone(),
        user,
        tmpfs,
        read_only: svc.read_only,
        limits,
        aliases,
        ports,
    })
}

/// The gate, on the raw keys: forbidden and unknown keys, privileged mode, added capabilities,
/// extra hosts. Each refusal names the key.
fn gate_raw_keys(map: &serde_norway::Mapping, refuse: &Refuse<'_>) -> Result<(), String> {
    for (k, v) in map {
        let key = yaml_key(k);
        if let Some((_, why)) = FORBIDDEN.iter().find(|(f, _)| *f == key) {
            return Err(refuse.key(&key, format!("not allowed: it {why}")));
        }
        if !SUPPORTED.contains(&key.as_str()) && !key.starts_with("x-") {
            return Err(refuse.key(&key, "is not a key milkcrate supports"));
        }
        match key.as_str() {
            "privileged" if v.as_bool() != Some(false) => {
                return Err(refuse.key(
                    &key,
                    "not allowed: privileged containers can take over the host",
                ));
            }
            "cap_add" => {
                let caps: Vec<String> = v
                    .as_sequence()
                    .map(|s| s.iter().filter_map(scalar).collect())
                    .unwrap_or_default();
                if let Some(bad) = caps.iter().find(|c| {
                    let c = c.to_ascii_uppercase();
                    c != "NET_BIND_SERVICE" && c != "CAP_NET_BIND_SERVICE"
                }) {
                    return Err(refuse.key(
                        &key,
                        format!("not allowed: {bad} (only NET_BIND_SERVICE may be added)"),
                    ));
                }
            }
            "extra_hosts" => check_extra_hosts(v).map_err(|e| refuse.key(&key, e))?,
            _ => {}
        }
    }
    Ok(())
}

/// The typed service. Labels may be YAML booleans or numbers, `user` and ports plain numbers;
/// the typed parser wants strings, so those become strings first.
fn typed_service(name: &str, map: &serde_norway::Mapping) -> Result<dct::Service, String> {
    let mut map = map.clone();
    if let Some(Value::Mapping(labels)) = map.get_mut("labels") {
        for (_, v) in labels.iter_mut() {
            if let Some(s) = scalar(v) {
                *v = Value::String(s);
            }
        }
    }
    // `user: 1000` is a YAML number (checked in `user_and_working_dir`).
    if let Some(v @ Value::Number(_)) = map.get_mut("user") {
        *v = Value::String(scalar(v).unwrap_or_default());
    }
    for key in ["ports", "expose"] {
        if let Some(Value::Sequence(items)) = map.get_mut(key) {
            for v in items.iter_mut() {
                if let Value::Number(n) = v {
                    *v = Value::String(n.to_string());
                }
            }
        }
    }
    serde_norway::from_value(Value::Mapping(map)).map_err(|e| format!("Service '{name}': {e}"))
}

/// `build` or `image`, and `pull_policy`.
fn image_source(
    svc: &dct::Service,
    name: &str,
    files: &dyn AppFiles,
    refuse: &Refuse<'_>,
) -> Result<(ImageSource, Option<crate::domain::image::PullPolicy>), String> {
    let source = match (&svc.build_, &svc.image) {
        (Some(build), _) => build_source(build, files).map_err(|e| refuse.key("build", e))?,
        (None, Some(image)) => {
            ImageSource::Image(image_reference(image).map_err(|e| refuse.key("image", e))?)
        }
        (None, None) => {
            return Err(format!(
                "Service '{name}' must have either 'build' or 'image' defined"
            ));
        }
    };
    let pull = svc.pull_policy.as_ref().map(|p| {
        use crate::domain::image::PullPolicy as P;
        match p {
            dct::PullPolicy::Always => P::Always,
            dct::PullPolicy::Never => P::Never,
            dct::PullPolicy::Missing | dct::PullPolicy::Build => P::Missing,
        }
    });
    Ok((source, pull))
}

/// `env_file` (read from the ZIP, each file once) then `environment`; later definitions win,
/// as in compose.
fn environment(
    svc: &dct::Service,
    files: &dyn AppFiles,
    refuse: &Refuse<'_>,
) -> Result<Vec<(String, String)>, String> {
    let mut env = Vec::new();
    if let Some(env_file) = &svc.env_file {
        let list = match env_file {
            dct::StringOrList::Simple(s) => vec![s.clone()],
            dct::StringOrList::List(l) => l.clone(),
        };
        let mut read = BTreeSet::new();
        for f in list {
            let path = inner_path(&f).map_err(|e| refuse.key("env_file", e))?;
            // Each file once: a list repeating one file would multiply the work and memory.
            if !read.insert(path.clone()) {
                continue;
            }
            let bytes = files
                .read(&path)
                .ok_or_else(|| refuse.key("env_file", format!("'{f}' is not in the ZIP")))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| refuse.key("env_file", format!("'{f}' is not UTF-8 text")))?;
            env.extend(env_lines(&text));
            if env.len() > MAX_ENV {
                return Err(refuse.key(
                    "env_file",
                    format!("more than {MAX_ENV} variables for one service"),
                ));
            }
        }
    }
    match &svc.environment {
        dct::Environment::List(l) => {
            for item in l {
                let (k, v) = item.split_once('=').unwrap_or((item, ""));
                env.push((k.to_string(), v.to_string()));
            }
        }
        dct::Environment::KvPair(m) => {
            for (k, v) in m {
                env.push((
                    k.clone(),
                    v.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                ));
            }
        }
    }
    let mut seen = BTreeSet::new();
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .rev()
        .filter(|(k, _)| seen.insert(k.clone()))
        .collect();
    env.reverse();
    if let Some((k, _)) = env
        .iter()
        .find(|(k, _)| k.is_empty() || k.contains(char::is_whitespace))
    {
        return Err(refuse.key("environment", format!("'{k}' is not a variable name")));
    }
    Ok(env)
}

/// `labels`, none of them in milkcrate's, Traefik's or compose's namespaces (the main-service
/// label excepted).
fn labels(svc: &dct::Service, refuse: &Refuse<'_>) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    match &svc.labels {
        dct::Labels::List(l) => {
            for item in l {
                let (k, v) = item.split_once('=').unwrap_or((item, ""));
                labels.insert(k.to_string(), v.to_string());
            }
        }
        dct::Labels::Map(m) => {
            for (k, v) in m {
                labels.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(k) = labels.keys().find(|k| {
        (k.starts_with("milkcrate.") && *k != MAIN_LABEL)
            || k.starts_with("traefik.")
            || k.starts_with("com.docker.compose.")
    }) {
        return Err(refuse.key(
            "labels",
            format!("'{k}' is set by milkcrate and cannot be given"),
        ));
    }
    Ok(labels)
}

/// The container ports of `ports` and `expose` (nothing is published on the host).
fn ports(svc: &dct::Service, refuse: &Refuse<'_>) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    match &svc.ports {
        dct::Ports::Short(list) => {
            for p in list {
                ports.push(
                    container_port(p)
                        .ok_or_else(|| refuse.key("ports", format!("'{p}' is not a port")))?,
                );
            }
        }
        dct::Ports::Long(list) => ports.extend(list.iter().map(|p| p.target)),
    }
    for e in &svc.expose {
        ports.push(
            container_port(e)
                .ok_or_else(|| refuse.key("expose", format!("'{e}' is not a port")))?,
        );
    }
    Ok(ports)
}

/// `depends_on`: each service, and whether it must be healthy (rather than started).
fn depends_on(svc: &dct::Service, refuse: &Refuse<'_>) -> Result<Vec<(String, bool)>, String> {
    Ok(match &svc.depends_on {
        dct::DependsOnOptions::Simple(l) => l.iter().map(|d| (d.clone(), false)).collect(),
        dct::DependsOnOptions::Conditional(m) => {
            let mut out = Vec::new();
            for (d, c) in m {
                let healthy = match c.condition.as_str() {
                    "service_healthy" => true,
                    "service_started" | "" => false,
                    other => {
                        return Err(refuse.key(
                            "depends_on",
                            format!(
                                "condition '{other}' is not supported (service_started or service_healthy)"
                            ),
                        ));
                    }
                };
                out.push((d.clone(), healthy));
            }
            out
        }
    })
}

/// `healthcheck`, in the engine's units.
fn health(svc: &dct::Service, refuse: &Refuse<'_>) -> Result<Option<Health>, String> {
    let h = match &svc.healthcheck {
        None => return Ok(None),
        Some(h) if h.disable => {
            return Ok(Some(Health {
                test: vec!["NONE".into()],
                interval_ns: None,
                timeout_ns: None,
                start_period_ns: None,
                retries: None,
            }));
        }
        Some(h) => h,
    };
    let test = match &h.test {
        Some(dct::HealthcheckTest::Single(s)) => vec!["CMD-SHELL".into(), s.clone()],
        Some(dct::HealthcheckTest::Multiple(v)) => v.clone(),
        None => return Err(refuse.key("healthcheck", "needs a test")),
    };
    if !matches!(
        test.first().map(String::as_str),
        Some("CMD" | "CMD-SHELL" | "NONE")
    ) {
        return Err(refuse.key("healthcheck", "test must start with CMD, CMD-SHELL or NONE"));
    }
    // The engine refuses anything under a millisecond.
    let dur = |s: &Option<String>| -> Result<Option<i64>, String> {
        s.as_deref()
            .map(|d| {
                duration_within(d, 1_000_000, MAX_DURATION_NS)
                    .map_err(|e| refuse.key("healthcheck", e))
            })
            .transpose()
    };
    Ok(Some(Health {
        test,
        interval_ns: dur(&h.interval)?,
        timeout_ns: dur(&h.timeout)?,
        start_period_ns: dur(&h.start_period)?,
        retries: (h.retries > 0).then_some(h.retries),
    }))
}

/// `restart` (compose's default here is `unless-stopped`; `on-failure:N` keeps no count).
fn restart_policy(svc: &dct::Service, refuse: &Refuse<'_>) -> Result<String, String> {
    Ok(match svc.restart.as_deref() {
        None => "unless-stopped".to_string(),
        Some(r @ ("no" | "always" | "unless-stopped")) => r.to_string(),
        Some(r) if r == "on-failure" || r.starts_with("on-failure:") => "on-failure".into(),
        Some(r) => {
            return Err(refuse.key("restart", format!("'{r}' is not a restart policy")));
        }
    })
}

/// `volumes` (named volumes of the stack or milkcrate's; never host paths) and `tmpfs`.
fn mounts(
    svc: &dct::Service,
    volumes: &BTreeMap<String, MountSource>,
    refuse: &Refuse<'_>,
) -> Result<(Vec<StackMount>, Vec<String>), String> {
    let mut mounts = Vec::new();
    let mut tmpfs = Vec::new();
    for v in &svc.volumes {
        match v {
            dct::Volumes::Simple(s) => {
                let parts: Vec<&str> = s.split(':').collect();
                let (src, target, mode) = match parts.as_slice() {
                    [t] => (None, *t, ""),
                    [s, t] => (Some(*s), *t, ""),
                    [s, t, m] => (Some(*s), *t, *m),
                    _ => {
                        return Err(refuse.key("volumes", format!("'{s}' is not a volume mount")));
                    }
                };
                let Some(src) = src else {
                    return Err(refuse.key(
                        "volumes",
                        format!(
                            "'{s}': anonymous volumes are not supported; name it under the top-level volumes"
                        ),
                    ));
                };
                mounts.push(
                    volume_mount(src, target, mode.split(',').any(|m| m == "ro"), volumes)
                        .map_err(|e| refuse.key("volumes", e))?,
                );
            }
            dct::Volumes::Advanced(a) => match a._type.as_str() {
                "volume" => {
                    let src = a.source.as_deref().ok_or_else(|| {
                        refuse.key(
                            "volumes",
                            format!("the mount at {} needs a source", a.target),
                        )
                    })?;
                    mounts.push(
                        volume_mount(src, &a.target, a.read_only, volumes)
                            .map_err(|e| refuse.key("volumes", e))?,
                    );
                }
                "tmpfs" => {
                    tmpfs.push(mount_target(&a.target).map_err(|e| refuse.key("volumes", e))?)
                }
                other => {
                    return Err(refuse.key(
                        "volumes",
                        format!("type '{other}' is not allowed: host paths are never mounted"),
                    ));
                }
            },
        }
    }
    let tmpfs_target = |s: &str| {
        mount_target(s.split(':').next().unwrap_or(s)).map_err(|e| refuse.key("tmpfs", e))
    };
    match &svc.tmpfs {
        Some(dct::Tmpfs::Simple(s)) => tmpfs.push(tmpfs_target(s)?),
        Some(dct::Tmpfs::List(l)) => {
            for s in l {
                tmpfs.push(tmpfs_target(s)?);
            }
        }
        None => {}
    }
    Ok((mounts, tmpfs))
}

/// `networks`: only ones declared at the top (all the app's one network), no fixed addresses;
/// their aliases.
fn network_aliases(
    svc: &dct::Service,
    networks: &BTreeSet<String>,
    refuse: &Refuse<'_>,
) -> Result<Vec<String>, String> {
    let undeclared = |n: &str| {
        refuse.key(
            "networks",
            format!("network '{n}' is not declared under the top-level networks"),
        )
    };
    let mut aliases = Vec::new();
    match &svc.networks {
        dct::Networks::Simple(l) => {
            if let Some(n) = l.iter().find(|n| !networks.contains(*n)) {
                return Err(undeclared(n));
            }
        }
        dct::Networks::Advanced(a) => {
            for (n, settings) in &a.0 {
                if !networks.contains(n) {
                    return Err(undeclared(n));
                }
                if let dct::MapOrEmpty::Map(s) = settings {
                    if s.ipv4_address.is_some() || s.ipv6_address.is_some() {
                        return Err(refuse.key("networks", "fixed addresses are not supported"));
                    }
                    aliases.extend(s.aliases.iter().cloned());
                }
            }
        }
    }
    Ok(aliases)
}

/// `user` (numeric, never root) and `working_dir` (absolute).
fn user_and_working_dir(svc: &dct::Service, refuse: &Refuse<'_>) -> Result<Option<RunAs>, String> {
    let user = svc
        .user
        .as_deref()
        .map(RunAs::parse)
        .transpose()
        .map_err(|e| refuse.key("user", e))?;
    if let Some(w) = &svc.working_dir
        && !w.starts_with('/')
    {
        return Err(refuse.key("working_dir", format!("'{w}' must be an absolute path")));
    }
    Ok(user)
}

/// `mem_limit` and `deploy` (one replica, no devices, memory and cpus), within the maximum.
fn limits(svc: &dct::Service, cx: Context<'_>, refuse: &Refuse<'_>) -> Result<Limits, String> {
    let mut memory_mb = cx.defaults.memory_mb;
    let mut cpu_percent = cx.defaults.cpu_percent;
    if let Some(m) = &svc.mem_limit {
        memory_mb = memory_mib(m)
            .ok_or_else(|| refuse.key("mem_limit", format!("'{}' is not a size", excerpt(m))))?;
    }
    if let Some(deploy) = &svc.deploy {
        if deploy.replicas.is_some_and(|r| r != 1) {
            return Err(refuse.key("deploy", "replicas other than 1 are not supported"));
        }
        if let Some(l) = deploy.resources.as_ref().and_then(|r| r.limits.as_ref()) {
            if l.devices.is_some() {
                return Err(refuse.key("deploy", "devices are not allowed"));
            }
            if let Some(m) = &l.memory {
                memory_mb = memory_mib(m).ok_or_else(|| {
                    refuse.key("deploy", format!("memory '{}' is not a size", excerpt(m)))
                })?;
            }
            if let Some(c) = &l.cpus {
                let cpus: f64 = c
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n: &f64| n.is_finite() && *n > 0.0 && *n <= 1024.0)
                    .ok_or_else(|| {
                        refuse.key(
                            "deploy",
                            format!("cpus '{}' is not a number of cores", excerpt(c)),
                        )
                    })?;
                cpu_percent = (cpus * 100.0).round().max(1.0) as u32;
            }
        }
    }
    Limits::within(memory_mb, cpu_percent, cx.max).map_err(|e| refuse.key("deploy", e))
}

/// A command or entrypoint: given as a list, or as one string split like a shell would.
type Args = Option<Vec<String>>;

/// `command` and `entrypoint`.
fn command_and_entrypoint(svc: &dct::Service, refuse: &Refuse<'_>) -> Result<(Args, Args), String> {
    let to_args = |c: &str| split_command(c).map_err(|e| refuse.key("command", e));
    let command = match &svc.command {
        None => None,
        Some(dct::Command::Simple(s)) => Some(to_args(s)?),
        Some(dct::Command::Args(a)) => Some(a.clone()),
    };
    let entrypoint = match &svc.entrypoint {
        None => None,
        Some(dct::Entrypoint::Simple(s)) => Some(to_args(s)?),
        Some(dct::Entrypoint::List(a)) => Some(a.clone()),
    };
    Ok((command, entrypoint))
}

/// `stop_grace_period` (in whole seconds, at least one) and `stop_signal` (a signal's name).
fn stopping(svc: &dct::Service, refuse: &Refuse<'_>) -> Result<Option<i64>, String> {
    let stop_timeout = match &svc.stop_grace_period {
        None => None,
        Some(d) => Some(
            duration_within(d, 1, MAX_STOP_GRACE_S * 1_000_000_000)
                .map(|ns| (ns / 1_000_000_000).max(1))
                .map_err(|e| refuse.key("stop_grace_period", e))?,
        ),
    };
    if let Some(sig) = &svc.stop_signal
        && !(sig.len() <= 12
            && sig.starts_with("SIG")
            && sig[3..]
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()))
    {
        return Err(refuse.key(
            "stop_signal",
            format!("'{sig}' is not a signal name like SIGTERM"),
        ));
    }
    Ok(stop_timeout)
}

/// `hostname` and `domainname`: plain host-name characters, at most 63.
fn host_names(svc: &dct::Service, refuse: &Refuse<'_>) -> Result<(), String> {
    for (key, value) in [("hostname", &svc.hostname), ("domainname", &svc.domainname)] {
        if let Some(v) = value
            && (v.is_empty()
                || v.len() > 63
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
        {
            return Err(refuse.key(key, format!("'{v}' is not a host name")));
        }
    }
    Ok(())
}
