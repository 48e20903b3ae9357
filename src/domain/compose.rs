//! Compose files: parsed with `docker-compose-types`, checked against what may run here, and
//! turned into a [`StackPlan`] that the deploy runs through the Engine API with the same
//! hardening as Dockerfile apps. Pure: the caller hands in the file's text and a view of the
//! ZIP (which files exist, what an `env_file` holds).
//!
//! The safety gate refuses, naming the service, the key and its line, anything that would
//! leave the sandbox: privileged mode, host namespaces, added capabilities, devices, security
//! options, sysctls, host bind mounts, foreign networks or volumes, root users. Keys outside the
//! supported subset are refused too (extensions `x-*` excepted), so nothing is silently ignored.

use std::collections::{BTreeMap, BTreeSet};

use docker_compose_types as dct;
use serde_norway::Value;

use crate::domain::hardening::{Limits, RunAs};

/// Compose file names, in the order they are looked for.
pub const FILES: &[&str] = &[
    "docker-compose.yml",
    "docker-compose.yaml",
    "compose.yml",
    "compose.yaml",
];

/// The most services one stack may have (ordering them is quadratic, and each is a container).
pub const MAX_SERVICES: usize = 100;

/// The most environment variables one service may get from its env files.
const MAX_ENV: usize = 10_000;

/// The label that picks the main service (true as a string or a YAML boolean).
pub const MAIN_LABEL: &str = "milkcrate.main_service";

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// Built from `context` (a folder of the app, "" for its top) with `dockerfile` in it.
    Build { context: String, dockerfile: String },
    /// An image the engine has (nothing is pulled).
    Image(String),
}

/// What a service mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A volume of the stack (top-level `volumes`), named per app when created.
    Stack(String),
    /// A milkcrate volume (declared `external`), by its Docker name.
    Milkcrate(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackMount {
    pub source: MountSource,
    pub target: String,
    pub read_only: bool,
}

/// A health check, in the engine's units (nanoseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub test: Vec<String>,
    pub interval_ns: Option<i64>,
    pub timeout_ns: Option<i64>,
    pub start_period_ns: Option<i64>,
    pub retries: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePlan {
    pub name: String,
    pub source: ImageSource,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// `env_file` contents first, then `environment` (which wins).
    pub env: Vec<(String, String)>,
    /// Services this one waits for, and whether it waits for them to be healthy.
    pub depends_on: Vec<(String, bool)>,
    pub health: Option<Health>,
    /// `no`, `always`, `on-failure`, `unless-stopped`.
    pub restart: String,
    pub labels: BTreeMap<String, String>,
    pub mounts: Vec<StackMount>,
    pub working_dir: Option<String>,
    /// A numeric non-root user and group, or `None` for milkcrate's default (65534).
    pub user: Option<RunAs>,
    pub tmpfs: Vec<String>,
    pub read_only: bool,
    pub limits: Limits,
    /// Other names the service answers to on the stack's network.
    pub aliases: Vec<String>,
    /// Container ports from `ports` (container side only) and `expose`.
    pub ports: Vec<u16>,
    /// `stop_grace_period` in seconds and `stop_signal`.
    pub stop_timeout: Option<i64>,
    pub stop_signal: Option<String>,
    pub init: bool,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub tty: bool,
    pub stdin_open: bool,
    /// The service's own `pull_policy` (`build` counts as `missing`); `None` follows the app's.
    pub pull: Option<crate::domain::image::PullPolicy>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackPlan {
    /// In start order: every service after the ones it depends on.
    pub services: Vec<ServicePlan>,
    pub main: String,
    pub port: u16,
    /// Stack volumes (their names in the file).
    pub volumes: Vec<String>,
}

impl StackPlan {
    pub fn service(&self, name: &str) -> Option<&ServicePlan> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// What the parser may ask about the ZIP's app folder.
pub trait AppFiles {
    fn has_file(&self, path: &str) -> bool;
    fn read(&self, path: &str) -> Option<Vec<u8>>;
}

/// Bounds and defaults from the upload form and the admin's settings.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Limits for services that set none.
    pub defaults: Limits,
    pub max: Limits,
    /// The form's internal port, which wins over the file's.
    pub port_override: Option<u16>,
    /// Docker names of every milkcrate volume (to say which names are milkcrate's).
    pub milkcrate_volumes: &'a [String],
    /// Docker names of the milkcrate volumes the admin assigned to this app on the deploy or
    /// update form: the only ones an `external` volume may name. Another app's data is not
    /// the file's to take.
    pub assigned_volumes: &'a [String],
    /// The app's environment variables (set by the admin), for `${VAR}` in the file; they
    /// win over the ZIP's `.env`.
    pub vars: &'a [(String, String)],
}

const SUPPORTED: &[&str] = &[
    "image",
    "build",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "expose",
    "ports",
    "depends_on",
    "healthcheck",
    "restart",
    "labels",
    "volumes",
    "working_dir",
    "user",
    "tmpfs",
    "deploy",
    "networks",
    "read_only",
    "init",
    "stop_signal",
    "stop_grace_period",
    "tty",
    "stdin_open",
    "hostname",
    "domainname",
    "mem_limit",
    "cap_drop",
    "privileged",
    "cap_add",
    "extra_hosts",
    "pull_policy",
];

/// Keys that would leave the sandbox, and why they are refused.
const FORBIDDEN: &[(&str, &str)] = &[
    (
        "network_mode",
        "would take the service off its private network",
    ),
    ("pid", "would share a process namespace"),
    ("ipc", "would share an IPC namespace"),
    ("uts", "would share the host's UTS namespace"),
    ("devices", "would give the container host devices"),
    ("security_opt", "would change the security options"),
    ("sysctls", "would change kernel settings"),
    ("userns_mode", "would change the user namespace"),
    ("cgroup_parent", "would move the container's cgroup"),
    ("volumes_from", "would share another container's mounts"),
    ("ulimits", "would change the resource limits"),
    ("runtime", "would change the container runtime"),
    ("group_add", "would add groups to the user"),
    ("logging", "would change the rotated logs"),
    ("container_name", "names containers itself (milkcrate does)"),
    ("links", "is legacy; services reach each other by name"),
    ("dns", "would change name resolution"),
    ("shm_size", "would change the shared memory size"),
    ("secrets", "is not supported (use environment variables)"),
    ("configs", "is not supported (put files in the image)"),
    ("extends", "is not supported"),
    ("profiles", "is not supported"),
    ("scale", "is not supported (one container per service)"),
    (
        "mem_reservation",
        "is not supported (use deploy.resources.limits)",
    ),
    ("mem_swappiness", "is not supported"),
];

/// A refusal, naming where.
fn at(text: &str, service: Option<&str>, key: &str, why: impl std::fmt::Display) -> String {
    let line = line_of(text, service, key)
        .map(|l| format!(" (line {l})"))
        .unwrap_or_default();
    match service {
        Some(s) => format!("Service '{s}', key '{key}'{line}: {why}"),
        None => format!("Key '{key}'{line}: {why}"),
    }
}

/// The 1-based line of `key` inside `service`'s block (or at the top level), found by
/// indentation. Good enough to point at, without a position-keeping parser.
fn line_of(text: &str, service: Option<&str>, key: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let is_key = |l: &str, k: &str| {
        let t = l.trim_start().trim_start_matches("- ");
        let t = t.trim_start_matches(['"', '\'']);
        t.strip_prefix(k).is_some_and(|r| {
            r.trim_start_matches(['"', '\''])
                .trim_start()
                .starts_with(':')
        })
    };
    let Some(service) = service else {
        return lines
            .iter()
            .position(|l| indent(l) == 0 && is_key(l, key))
            .map(|i| i + 1);
    };
    let services = lines
        .iter()
        .position(|l| indent(l) == 0 && is_key(l, "services"))?;
    let (start, svc_indent) = lines
        .iter()
        .enumerate()
        .skip(services + 1)
        .find(|(_, l)| !l.trim().is_empty() && is_key(l, service))
        .map(|(i, l)| (i, indent(l)))?;
    for (i, l) in lines.iter().enumerate().skip(start + 1) {
        if l.trim().is_empty() || l.trim_start().starts_with('#') {
            continue;
        }
        if indent(l) <= svc_indent {
            break;
        }
        if is_key(l, key) {
            return Some(i + 1);
        }
    }
    Some(start + 1)
}

fn yaml_key(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

/// Parses and checks a compose file. Errors keep the original's messages where it had one.
pub fn plan(text: &str, files: &dyn AppFiles, cx: Context<'_>) -> Result<StackPlan, String> {
    flow_nesting_within(text, MAX_FLOW_NESTING)?;
    let mut doc: Value =
        serde_norway::from_str(text).map_err(|e| format!("Invalid YAML format: {e}"))?;
    // `${VAR}` in values, as compose does: from the ZIP's `.env`, then the app's variables.
    let mut vars: Vec<(String, String)> = files
        .read(".env")
        .and_then(|b| String::from_utf8(b).ok())
        .map(|t| env_lines(&t))
        .unwrap_or_default();
    vars.extend(cx.vars.iter().cloned());
    // One map (later definitions win): a lookup per `$VAR` must not walk a long `.env`.
    let vars: std::collections::HashMap<String, String> = vars.into_iter().collect();
    let lookup = |name: &str| vars.get(name).cloned();
    interpolate_value(&mut doc, &lookup)?;
    let Value::Mapping(top) = &doc else {
        return Err("docker-compose.yml must contain a dictionary".into());
    };
    for (k, _) in top {
        let key = yaml_key(k);
        if !matches!(
            key.as_str(),
            "version" | "name" | "services" | "volumes" | "networks"
        ) && !key.starts_with("x-")
        {
            return Err(at(text, None, &key, "is not supported by milkcrate"));
        }
    }
    let Some(services) = top.get("services") else {
        return Err("docker-compose.yml must contain a 'services' section".into());
    };
    let Value::Mapping(services) = services else {
        return Err("docker-compose.yml must contain at least one service".into());
    };
    if services.is_empty() {
        return Err("docker-compose.yml must contain at least one service".into());
    }
    if services.len() > MAX_SERVICES {
        return Err(format!(
            "docker-compose.yml has {} services; milkcrate runs at most {MAX_SERVICES} per app",
            services.len()
        ));
    }
    let top_volumes = top_volumes(text, top.get("volumes"), cx)?;
    let networks = top_networks(text, top.get("networks"))?;

    let mut plans = Vec::new();
    for (name, body) in services {
        let name = yaml_key(name);
        if !valid_service_name(&name) {
            return Err(format!(
                "Service name '{name}' must be lowercase letters, digits, '-' or '_' (at most 50)"
            ));
        }
        let Value::Mapping(map) = body else {
            return Err(format!("Service '{name}' must be a dictionary"));
        };
        plans.push(service::service_plan(
            text,
            &name,
            map,
            files,
            cx,
            &top_volumes,
            &networks,
        )?);
    }
    let names: BTreeSet<String> = plans.iter().map(|p| p.name.clone()).collect();
    for p in &plans {
        for (dep, _) in &p.depends_on {
            if !names.contains(dep) {
                return Err(at(
                    text,
                    Some(&p.name),
                    "depends_on",
                    format!("there is no service '{dep}'"),
                ));
            }
        }
    }
    let main = plans
        .iter()
        .find(|p| {
            p.labels
                .get(MAIN_LABEL)
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        })
        .or_else(|| plans.iter().find(|p| !p.ports.is_empty()))
        .unwrap_or(&plans[0])
        .name
        .clone();
    let main_plan = plans
        .iter()
        .find(|p| p.name == main)
        .expect("main is a service");
    let port = match (cx.port_override, main_plan.ports.first()) {
        (Some(p), _) => p,
        (None, Some(p)) => *p,
        (None, None) => {
            return Err(format!(
                "docker-compose.yml validation failed: Main service '{main}' must expose at least one port (ports or expose), or give the internal port on the form"
            ));
        }
    };
    let services = start_order(plans)?;
    Ok(StackPlan {
        services,
        main,
        port,
        volumes: top_volumes
            .iter()
            .filter(|(_, v)| matches!(v, MountSource::Stack(_)))
            .map(|(k, _)| k.clone())
            .collect(),
    })
}

/// How deep `[` and `{` may nest. The YAML parser's time grows with the square of the nesting
/// (20,000 levels took 10 s in a debug build; a 1 MiB file holds 500,000) before its own
/// recursion limit refuses the file, so the text is measured first.
const MAX_FLOW_NESTING: usize = 64;

/// The most `[` and `{` a file may hold at all, quoted or not. A backstop for the depth count,
/// which skips quoted text and so depends on telling quotes apart like the parser does: with
/// this many at most, even a file that fooled it parses in well under a second.
const MAX_FLOW_OPENERS: usize = 5_000;

/// Refuses text whose flow collections nest deeper than `max`. Brackets inside quoted
/// scalars and comments do not count; a quote starts a quoted scalar only where a YAML token
/// can start (so `it's` or `a:'b` in a plain value cannot hide brackets), and ends at the
/// line's end at the latest (so a quote the parser reads differently hides one line at most).
fn flow_nesting_within(text: &str, max: usize) -> Result<(), String> {
    let openers = text.chars().filter(|c| matches!(c, '[' | '{')).count();
    if openers > MAX_FLOW_OPENERS {
        return Err(format!(
            "Invalid YAML format: the file holds {openers} '[' and '{{' (at most {MAX_FLOW_OPENERS})"
        ));
    }
    let mut depth = 0usize;
    // The last character that was not a space, on this line; `None` at a line's start.
    let mut prev: Option<char> = None;
    // Whether a space (or a line's start) came right before: `#` starts a comment there.
    let mut after_space = true;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        let token_start = match prev {
            None | Some('[' | '{' | ',') => true,
            Some(':' | '-' | '?') => after_space,
            _ => false,
        };
        match c {
            '\n' => {
                prev = None;
                after_space = true;
                continue;
            }
            ' ' | '\t' | '\r' => {
                after_space = true;
                continue;
            }
            '#' if after_space => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
                prev = None;
                after_space = true;
                continue;
            }
            '"' | '\'' if token_start => {
                // `''` inside a single-quoted scalar is an escaped quote: the same as closing
                // and opening again.
                let mut ended_line = false;
                while let Some(n) = chars.next() {
                    match n {
                        '\n' => {
                            ended_line = true;
                            break;
                        }
                        // The guard consumes the escaped character, whatever it is.
                        '\\' if c == '"' && chars.next() == Some('\n') => {
                            ended_line = true;
                            break;
                        }
                        n if n == c => break,
                        _ => {}
                    }
                }
                if ended_line {
                    prev = None;
                    after_space = true;
                    continue;
                }
            }
            '[' | '{' => {
                depth += 1;
                if depth > max {
                    return Err(format!(
                        "Invalid YAML format: lists and maps nest more than {max} levels deep"
                    ));
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        prev = Some(c);
        after_space = false;
    }
    Ok(())
}

fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 50
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
}

/// Top-level volumes: the stack's own (named per app when created), or `external` ones that
/// must be milkcrate volumes.
fn top_volumes(
    text: &str,
    v: Option<&Value>,
    cx: Context<'_>,
) -> Result<BTreeMap<String, MountSource>, String> {
    let mut out = BTreeMap::new();
    let Some(v) = v else { return Ok(out) };
    let parsed: dct::TopLevelVolumes =
        serde_norway::from_value(v.clone()).map_err(|e| at(text, None, "volumes", e))?;
    for (name, decl) in parsed.0 {
        let source = match decl {
            dct::MapOrEmpty::Empty => MountSource::Stack(name.clone()),
            dct::MapOrEmpty::Map(c) => {
                if c.driver.as_deref().is_some_and(|d| d != "local") || !c.driver_opts.is_empty() {
                    return Err(at(
                        text,
                        None,
                        "volumes",
                        format!(
                            "volume '{name}': drivers and driver_opts are not allowed (they can mount host paths)"
                        ),
                    ));
                }
                let external = match &c.external {
                    Some(dct::ExternalVolume::Bool(true)) => {
                        Some(c.name.clone().unwrap_or(name.clone()))
                    }
                    Some(dct::ExternalVolume::Name { name: n }) => Some(n.clone()),
                    _ => None,
                };
                match external {
                    Some(docker_name) => {
                        if !cx.milkcrate_volumes.contains(&docker_name) {
                            return Err(at(
                                text,
                                None,
                                "volumes",
                                format!(
                                    "volume '{name}' is external but '{docker_name}' is not a milkcrate volume (create it under Volumes and use the Docker name its page shows)"
                                ),
                            ));
                        }
                        if !cx.assigned_volumes.contains(&docker_name) {
                            return Err(at(
                                text,
                                None,
                                "volumes",
                                format!(
                                    "volume '{name}' is the milkcrate volume '{docker_name}', which the admin has not assigned to this app; choose it in the Volumes fields of the deploy or update form to allow it"
                                ),
                            ));
                        }
                        MountSource::Milkcrate(docker_name)
                    }
                    None => MountSource::Stack(name.clone()),
                }
            }
        };
        if !valid_service_name(&name) {
            return Err(format!(
                "Volume name '{name}' must be lowercase letters, digits, '-' or '_'"
            ));
        }
        out.insert(name, source);
    }
    Ok(out)
}

/// Top-level networks all map onto the app's one private network; only plain bridge networks
/// declared in the file are accepted.
fn top_networks(text: &str, v: Option<&Value>) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::from(["default".to_string()]);
    let Some(v) = v else { return Ok(out) };
    let parsed: dct::ComposeNetworks =
        serde_norway::from_value(v.clone()).map_err(|e| at(text, None, "networks", e))?;
    for (name, decl) in parsed.0 {
        if let dct::MapOrEmpty::Map(n) = decl {
            if n.external.is_some() {
                return Err(at(
                    text,
                    None,
                    "networks",
                    format!(
                        "network '{name}' is external: apps only join their own private network"
                    ),
                ));
            }
            if n.driver.as_deref().is_some_and(|d| d != "bridge")
                || !n.driver_opts.is_empty()
                || n.ipam.is_some()
            {
                return Err(at(
                    text,
                    None,
                    "networks",
                    format!(
                        "network '{name}': drivers, driver_opts and ipam are not allowed; every service joins the app's private network"
                    ),
                ));
            }
        }
        out.insert(name);
    }
    Ok(out)
}

/// `KEY=value` lines of an env file (`#` comments, `export `, quotes around values).
fn env_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (k, v) = line.split_once('=').unwrap_or((line, ""));
            let v = v.trim().trim_matches('"').trim_matches('\'');
            (
                k.trim().trim_start_matches("export ").trim().to_string(),
                v.to_string(),
            )
        })
        .collect()
}

/// Interpolates every string value (not keys) of the document.
fn interpolate_value(v: &mut Value, lookup: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
    match v {
        Value::String(s) if s.contains('$') => *s = interpolate(s, lookup)?,
        Value::Sequence(items) => {
            for i in items {
                interpolate_value(i, lookup)?;
            }
        }
        Value::Mapping(m) => {
            for (_, i) in m.iter_mut() {
                interpolate_value(i, lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Compose's interpolation: `$$` is a `$`; `$VAR` and `${VAR}`; `${VAR:-default}` and
/// `${VAR-default}`; `${VAR:?message}` and `${VAR?message}` refuse the file; `${VAR:+alt}` and
/// `${VAR+alt}`. An unset variable without a default is empty, as in compose.
pub fn interpolate(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    interpolate_nested(s, lookup, 0)
}

/// How deep `${A:-${B:-…}}` may nest. Each level is one call, so the bound keeps a hostile
/// value from exhausting the stack (which aborts the whole server, not just the deploy).
pub const MAX_NESTING: usize = 32;

/// The start of `s` for a message: a hostile value may be a megabyte long.
fn excerpt(s: &str) -> String {
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn interpolate_nested(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    level: usize,
) -> Result<String, String> {
    let nested_too_deep = || {
        format!(
            "'{}' nests ${{...}} more than {MAX_NESTING} levels deep",
            excerpt(s)
        )
    };
    if level > MAX_NESTING {
        return Err(nested_too_deep());
    }
    let chars: Vec<char> = s.chars().collect();
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '$' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => {
                out.push('$');
                i += 2;
            }
            Some('{') => {
                // The matching brace, counting the nested ones of defaults.
                let mut depth = 1;
                let mut j = i + 2;
                while j < chars.len() && depth > 0 {
                    match chars[j] {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    // Refused whether or not the default would be used.
                    if level + depth > MAX_NESTING {
                        return Err(nested_too_deep());
                    }
                    j += 1;
                }
                if depth != 0 {
                    return Err(format!("'{}' has an unclosed ${{", excerpt(s)));
                }
                let inner: String = chars[i + 2..j - 1].iter().collect();
                out.push_str(&substitute(&inner, lookup, level + 1)?);
                i = j;
            }
            Some(c) if is_name(*c) && !c.is_ascii_digit() => {
                let j = (i + 1..chars.len())
                    .find(|&k| !is_name(chars[k]))
                    .unwrap_or(chars.len());
                let name: String = chars[i + 1..j].iter().collect();
                out.push_str(&lookup(&name).unwrap_or_default());
                i = j;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    Ok(out)
}

/// One `${...}`, without its braces.
fn substitute(
    inner: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    level: usize,
) -> Result<String, String> {
    let interpolate =
        |s: &str, lookup: &dyn Fn(&str) -> Option<String>| interpolate_nested(s, lookup, level);
    let name_len = inner
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .count();
    let (name, rest) = inner.split_at(name_len);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("'${{{}}}' is not a variable", excerpt(inner)));
    }
    let value = lookup(name);
    let set = value.as_ref().is_some_and(|v| !v.is_empty());
    let own = || value.clone().unwrap_or_default();
    if rest.is_empty() {
        return Ok(own());
    }
    let required = |m: &str| format!("variable {name} is required: {}", excerpt(m));
    Ok(if let Some(d) = rest.strip_prefix(":-") {
        if set { own() } else { interpolate(d, lookup)? }
    } else if let Some(d) = rest.strip_prefix('-') {
        if value.is_some() {
            own()
        } else {
            interpolate(d, lookup)?
        }
    } else if let Some(m) = rest.strip_prefix(":?") {
        if !set {
            return Err(required(m));
        }
        own()
    } else if let Some(m) = rest.strip_prefix('?') {
        if value.is_none() {
            return Err(required(m));
        }
        own()
    } else if let Some(a) = rest.strip_prefix(":+") {
        if set {
            interpolate(a, lookup)?
        } else {
            String::new()
        }
    } else if let Some(a) = rest.strip_prefix('+') {
        if value.is_some() {
            interpolate(a, lookup)?
        } else {
            String::new()
        }
    } else {
        return Err(format!(
            "'${{{}}}' is not a valid substitution",
            excerpt(inner)
        ));
    })
}

pub use crate::domain::dockerfile::base_images as dockerfile_bases;
pub use crate::domain::dockerfile::needs_network as dockerfile_needs_network;

/// An `image:` reference as the engine lists it (`name:tag`, Docker Hub's prefixes dropped,
/// `latest` when no tag is given; `name@sha256:…` when pinned by digest), checked against the
/// reference grammar ([`ImageRef`]: nothing that could pass for an option or a path), or why
/// it is refused: milkcrate's own images (every app's build is `milkcrate-<app>:…`, the volume
/// helper `milkcrate/…`) belong to other apps, and a bare image id would reach them without a
/// name. The deploy also checks the image the engine has (its labels and that the name really
/// is one of its tags or digests).
pub fn image_reference(image: &str) -> Result<String, String> {
    let shown = excerpt(image);
    let lower = image.to_ascii_lowercase();
    if lower.starts_with("sha256:") {
        return Err(format!(
            "'{shown}' names an image by id or digest alone; give its name and tag, like busybox:1.36 (a digest may follow the name: busybox@sha256:…)"
        ));
    }
    let r = crate::domain::image::ImageRef::parse(image)?;
    let repository = r.repository();
    if repository == "milkcrate"
        || repository.starts_with("milkcrate/")
        || (repository.starts_with("milkcrate-") && !repository.contains('/'))
    {
        return Err(format!(
            "'{shown}' is one of milkcrate's own images (another app's build, or milkcrate's helper); build the service from its Dockerfile instead"
        ));
    }
    Ok(r.canonical())
}

fn check_extra_hosts(v: &Value) -> Result<(), String> {
    let entries: Vec<String> = match v {
        Value::Sequence(s) => s.iter().filter_map(scalar).collect(),
        Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| format!("{}={}", yaml_key(k), scalar(v).unwrap_or_default()))
            .collect(),
        _ => return Err("must be a list of host:address".into()),
    };
    for e in entries {
        let addr = e
            .split_once('=')
            .map(|(_, a)| a)
            .or_else(|| e.split_once(':').map(|(_, a)| a))
            .unwrap_or_default()
            .trim()
            .trim_matches(['[', ']']);
        let ok = addr
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
        if !ok {
            return Err(format!(
                "'{e}' points off this container (only loopback addresses are allowed)"
            ));
        }
    }
    Ok(())
}

fn build_source(build: &dct::BuildStep, files: &dyn AppFiles) -> Result<ImageSource, String> {
    let (context, dockerfile) = match build {
        dct::BuildStep::Simple(c) => (c.clone(), None),
        dct::BuildStep::Advanced(a) => {
            if a.dockerfile_inline.is_some() || a.network.is_some() {
                return Err("dockerfile_inline and network are not supported".into());
            }
            (a.context.clone(), a.dockerfile.clone())
        }
    };
    let context = inner_path(&context)?;
    let dockerfile = inner_path(dockerfile.as_deref().unwrap_or("Dockerfile"))?;
    let full = if context.is_empty() {
        dockerfile.clone()
    } else {
        format!("{context}/{dockerfile}")
    };
    if !files.has_file(&full) {
        return Err(format!("the ZIP has no {full}"));
    }
    Ok(ImageSource::Build {
        context,
        dockerfile,
    })
}

/// A relative path inside the app folder: `./api/` → `api`, `.` → ``.
fn inner_path(p: &str) -> Result<String, String> {
    if p.starts_with('/') || p.starts_with('~') || p.contains('\\') || p.contains("://") {
        return Err(format!("'{p}' must be a folder inside the ZIP"));
    }
    let parts: Vec<&str> = p
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(format!("'{p}' leaves the ZIP's folder"));
    }
    Ok(parts.join("/"))
}

fn volume_mount(
    src: &str,
    target: &str,
    read_only: bool,
    volumes: &BTreeMap<String, MountSource>,
) -> Result<StackMount, String> {
    if src.starts_with('/') || src.starts_with('.') || src.starts_with('~') {
        let socket = if src.contains("docker.sock") {
            " (least of all the Docker socket, which is the keys to the host)"
        } else {
            ""
        };
        return Err(format!(
            "'{src}' is a host path: bind mounts are not allowed{socket}"
        ));
    }
    let source = volumes
        .get(src)
        .cloned()
        .ok_or_else(|| format!("volume '{src}' is not declared under the top-level volumes"))?;
    Ok(StackMount {
        source,
        target: mount_target(target)?,
        read_only,
    })
}

fn mount_target(t: &str) -> Result<String, String> {
    crate::domain::volume::mount_path(t)
}

/// The container side of a `ports` or `expose` entry: `8000`, `"8080:80"`,
/// `"127.0.0.1:8080:80/tcp"`, `"3000-3001"` (the first).
fn container_port(p: &str) -> Option<u16> {
    let p = p.trim();
    let no_proto = p.split('/').next()?;
    let last = no_proto.rsplit(':').next()?;
    let first = last.split('-').next()?;
    first.parse::<u16>().ok().filter(|p| *p > 0)
}

/// The longest duration any key takes: a day. Longer ones are mistakes (or tricks that make
/// a stop or a health check wait forever), and the engine's nanoseconds overflow at 292 years.
const MAX_DURATION_NS: i64 = 24 * 3_600 * 1_000_000_000;
/// The longest `stop_grace_period`: an hour (a stop waits that long before killing).
const MAX_STOP_GRACE_S: i64 = 3_600;

/// `"1m30s"`, `"10s"`, `"500ms"`, `"2h"`, a bare number of seconds, in nanoseconds: positive
/// and at most [`MAX_DURATION_NS`]. Sums are checked, so no value can overflow.
fn duration_ns(s: &str) -> Option<i64> {
    let mut total: f64 = 0.0;
    let mut num = String::new();
    let mut chars = s.trim().chars().peekable();
    let add = |total: &mut f64, num: &str, scale: f64| -> Option<()> {
        // Digits and at most one '.', so "inf", "NaN", "1e9" and signs never parse.
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return None;
        }
        let n: f64 = num.parse().ok()?;
        *total += n * scale;
        (total.is_finite() && *total <= MAX_DURATION_NS as f64).then_some(())
    };
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(n) = chars.peek().copied().filter(|n| n.is_ascii_alphabetic()) {
            unit.push(n);
            chars.next();
        }
        let scale = match unit.as_str() {
            "h" => 3_600e9,
            "m" => 60e9,
            "s" => 1e9,
            "ms" => 1e6,
            "us" => 1e3,
            "ns" => 1.0,
            _ => return None,
        };
        add(&mut total, &num, scale)?;
        num.clear();
    }
    if !num.is_empty() {
        add(&mut total, &num, 1e9)?;
    }
    // Within bounds, so the cast cannot saturate.
    let ns = total.round() as i64;
    (ns > 0).then_some(ns)
}

/// A duration key's value, or a refusal that says what is accepted.
fn duration_within(s: &str, min_ns: i64, max_ns: i64) -> Result<i64, String> {
    let human = |ns: i64| {
        if ns >= 3_600_000_000_000 && ns % 3_600_000_000_000 == 0 {
            format!("{}h", ns / 3_600_000_000_000)
        } else if ns >= 1_000_000_000 {
            format!("{}s", ns / 1_000_000_000)
        } else {
            format!("{}ms", ns / 1_000_000)
        }
    };
    duration_ns(s)
        .filter(|ns| (min_ns..=max_ns).contains(ns))
        .ok_or_else(|| {
            format!(
                "'{}' is not a duration from {} to {} (like 30s, 1m30s or 500ms)",
                excerpt(s),
                human(min_ns),
                human(max_ns)
            )
        })
}

/// `"512m"`, `"1g"`, `"256M"`, `"1073741824"` in MiB.
fn memory_mib(s: &str) -> Option<u32> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.trim_end_matches('b');
    let (num, mult): (&str, f64) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1.0 / 1024.0),
        'm' => (&s[..s.len() - 1], 1.0),
        'g' => (&s[..s.len() - 1], 1024.0),
        _ => (s, 1.0 / (1024.0 * 1024.0)),
    };
    let num = num.trim();
    // Digits and at most one '.': no "inf", "NaN", exponents or signs.
    if num.is_empty()
        || num.matches('.').count() > 1
        || !num.chars().all(|c| c.is_ascii_digit() || c == '.')
    {
        return None;
    }
    let mib = num.parse::<f64>().ok()? * mult;
    // The float-to-int cast saturates; the bound makes that irrelevant.
    (mib.is_finite() && (1.0..=f64::from(u32::MAX)).contains(&mib)).then_some(mib.round() as u32)
}

/// Splits a command string the way compose does (shell-like words, quotes, no expansion).
fn split_command(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => cur.push(chars.next().unwrap_or('\\')),
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                cur.push(chars.next().unwrap_or('\\'));
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(format!("'{s}' has an unclosed quote"));
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// Dependencies first; a cycle is refused with its path.
fn start_order(plans: Vec<ServicePlan>) -> Result<Vec<ServicePlan>, String> {
    let mut done: Vec<ServicePlan> = Vec::new();
    let mut pending = plans;
    while !pending.is_empty() {
        let ready = pending.iter().position(|p| {
            p.depends_on
                .iter()
                .all(|(d, _)| done.iter().any(|x| &x.name == d))
        });
        match ready {
            Some(i) => done.push(pending.remove(i)),
            None => {
                let names: Vec<&str> = pending.iter().map(|p| p.name.as_str()).collect();
                return Err(format!(
                    "depends_on forms a cycle between the services {}",
                    names.join(", ")
                ));
            }
        }
    }
    Ok(done)
}

mod service;
#[cfg(test)]
mod tests;
