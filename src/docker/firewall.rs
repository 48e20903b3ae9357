//! The host firewall: keeps app containers from opening connections to the host itself. The
//! only module that runs `iptables` (the host's packet filter is not the Docker Engine, so it is
//! not reached through the Engine API): argv only, never a shell.
//!
//! Packets from a container to one of the host's own addresses (a bridge's gateway, the LAN
//! address) are delivered to the host, not forwarded, so neither inter-container isolation nor
//! an internal network stops them. The chain [`CHAIN`], jumped to from the top of `INPUT`, holds
//! one rule per guarded bridge interface: drop what arrives on it unless it belongs to a
//! connection already established. The router's connections into the apps start on the host,
//! so their replies still flow; a container's DNS goes to the engine's resolver inside its own
//! namespace and is not affected. IPv6 (`ip6tables`) is best effort: many hosts have no IPv6
//! filter table. Which bridges, and what a failure means, is decided by the caller.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The chain milkcrate owns; `INPUT` jumps to it first.
pub const CHAIN: &str = "MILKCRATE-INPUT";

/// How long iptables waits for the lock another writer (the engine, a second deploy) holds.
const LOCK_WAIT_SECS: &str = "10";

/// One writer at a time in this process: check-then-add must not add a rule twice.
static WRITER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The match that follows `-i <bridge>` in each rule: anything not part of a connection
/// already established (new connections, and invalid or untracked packets).
const MATCH: &[&str] = &[
    "-m",
    "conntrack",
    "!",
    "--ctstate",
    "ESTABLISHED,RELATED",
    "-j",
    "DROP",
];

/// Why milkcrate cannot set the host firewall from here, or `None` when it can.
pub fn unavailable() -> Option<String> {
    if !may_admin_network() {
        return Some("milkcrate has no CAP_NET_ADMIN, which changing the host's packet filter takes (run it as root, or give it the capability as deploy/milkcrate.service does)".into());
    }
    if binary("iptables").is_none() {
        return Some("iptables is not installed (on Debian: apt-get install iptables)".into());
    }
    None
}

/// Whether this process looks like it runs inside a container: then the rules land in the
/// container's network namespace, which guards the host only when the engine's bridges live in
/// that same namespace.
pub fn in_container() -> bool {
    Path::new("/.dockerenv").exists() || Path::new("/run/.containerenv").exists()
}

/// Linux capability number of CAP_NET_ADMIN.
const CAP_NET_ADMIN: u32 = 12;

/// Whether this process holds CAP_NET_ADMIN (root has it; so does a service given it as an
/// ambient capability, which `iptables` run from here inherits), read from `/proc/self/status`.
fn may_admin_network() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| effective_caps(&s))
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

/// The `CapEff:` mask of a `/proc/<pid>/status` text.
fn effective_caps(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Where `name` is: the usual system folders first (a service's PATH may lack `/usr/sbin`),
/// then whatever the PATH finds.
fn binary(name: &str) -> Option<PathBuf> {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return Some(p);
        }
    }
    Command::new(name)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| PathBuf::from(name))
}

/// A Linux interface name milkcrate may put on a command line: what the engine makes
/// (`br-<hex>`, or a name given in the network's options), never an option-like word.
fn valid_interface(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Runs `tool` with `args` (and the lock wait): its exit code, and its error words.
fn invoke(tool: &Path, args: &[&str]) -> Result<(Option<i32>, String), String> {
    let out = Command::new(tool)
        .arg("-w")
        .arg(LOCK_WAIT_SECS)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", tool.display()))?;
    Ok((
        out.status.code(),
        format!(
            "`{} {}` failed: {}",
            tool.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    ))
}

/// Ok(true) on exit 0, Ok(false) on exit 1 (what `-C` answers for "no such rule"), Err with
/// iptables' own words otherwise.
fn run(tool: &Path, args: &[&str]) -> Result<bool, String> {
    match invoke(tool, args)? {
        (Some(0), _) => Ok(true),
        (Some(1), _) => Ok(false),
        (_, failed) => Err(failed),
    }
}

/// Like [`run`], but any failure is an error carrying iptables' words.
fn must(tool: &Path, args: &[&str]) -> Result<(), String> {
    match invoke(tool, args)? {
        (Some(0), _) => Ok(()),
        (_, failed) => Err(failed),
    }
}

/// The chain exists and `INPUT` jumps to it (inserted at the top once).
fn ensure_chain(tool: &Path) -> Result<(), String> {
    if !run(tool, &["-n", "-L", CHAIN])? {
        must(tool, &["-N", CHAIN])?;
    }
    if !run(tool, &["-C", "INPUT", "-j", CHAIN])? {
        must(tool, &["-I", "INPUT", "1", "-j", CHAIN])?;
    }
    Ok(())
}

/// The arguments of `verb` (`-A`, `-C`, `-D`) on the rule for `bridge` (public for the tests
/// that check and clean up the rules they cause).
pub fn rule<'a>(verb: &'a str, bridge: &'a str) -> Vec<&'a str> {
    let mut args = vec![verb, CHAIN, "-i", bridge];
    args.extend_from_slice(MATCH);
    args
}

fn add(tool: &Path, bridge: &str) -> Result<(), String> {
    ensure_chain(tool)?;
    if !run(tool, &rule("-C", bridge))? {
        must(tool, &rule("-A", bridge))?;
    }
    Ok(())
}

fn delete(tool: &Path, bridge: &str) -> Result<(), String> {
    // No chain: nothing of ours to remove (and `-C` would say so with exit 1 or 2).
    if !run(tool, &["-n", "-L", CHAIN]).unwrap_or(false) {
        return Ok(());
    }
    // Every copy (a rule added twice by two processes is removed too); bounded all the same.
    for _ in 0..16 {
        if !run(tool, &rule("-C", bridge))? {
            return Ok(());
        }
        must(tool, &rule("-D", bridge))?;
    }
    Ok(())
}

/// Runs `f` with the tool off the async threads, one writer at a time.
async fn with_tool<T: Send + 'static>(
    name: &'static str,
    f: impl FnOnce(&Path) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let _one = WRITER.lock().await;
    let tool = binary(name).ok_or_else(|| format!("{name} is not installed"))?;
    tokio::task::spawn_blocking(move || f(&tool))
        .await
        .map_err(|e| format!("the {name} call stopped: {e}"))?
}

/// Drops connections the containers on `bridge` open to the host. Idempotent. IPv6 is best
/// effort: a host without an IPv6 filter table only loses that half (logged at debug).
pub async fn guard(bridge: &str) -> Result<(), String> {
    on_both(bridge, add).await
}

/// Removes the rule for `bridge` (a network milkcrate is removing). Missing rules are fine.
pub async fn release(bridge: &str) -> Result<(), String> {
    on_both(bridge, delete).await
}

/// Runs `op` for `bridge` with iptables, then (best effort) with ip6tables.
async fn on_both(bridge: &str, op: fn(&Path, &str) -> Result<(), String>) -> Result<(), String> {
    if !valid_interface(bridge) {
        return Err(format!("{bridge:?} is not an interface name"));
    }
    let b = bridge.to_string();
    with_tool("iptables", move |t| op(t, &b)).await?;
    let b = bridge.to_string();
    if let Err(e) = with_tool("ip6tables", move |t| op(t, &b)).await {
        tracing::debug!(bridge, error = %e, "no IPv6 host firewall rule changed");
    }
    Ok(())
}

/// Removes the rules of bridges that no longer exist on this host (a network removed behind
/// milkcrate's back, or by an install that was stopped first): they match nothing, and the
/// engine never gives a new network an old bridge's name. Returns the bridges let go.
pub async fn prune_gone() -> Result<Vec<String>, String> {
    let gone: Vec<String> = guarded()
        .await?
        .into_iter()
        .filter(|b| valid_interface(b) && !Path::new("/sys/class/net").join(b).exists())
        .collect();
    for b in &gone {
        release(b).await?;
    }
    Ok(gone)
}

/// The bridges the chain guards now (IPv4), from `iptables -S`.
pub async fn guarded() -> Result<Vec<String>, String> {
    with_tool("iptables", |t| {
        let out = Command::new(t)
            .arg("-w")
            .arg(LOCK_WAIT_SECS)
            .args(["-S", CHAIN])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", t.display()))?;
        if !out.status.success() {
            // No chain yet: nothing guarded.
            return Ok(Vec::new());
        }
        Ok(parse_guarded(&String::from_utf8_lossy(&out.stdout)))
    })
    .await
}

/// The `-i <bridge>` of each DROP rule in `iptables -S` output of the chain.
fn parse_guarded(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter(|l| l.starts_with(&format!("-A {CHAIN} ")) && l.ends_with("-j DROP"))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "-i")?;
            words.next().map(str::to_string)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_name_the_bridge_and_drop_all_but_established_traffic() {
        assert_eq!(
            rule("-A", "br-0123456789ab").join(" "),
            "-A MILKCRATE-INPUT -i br-0123456789ab -m conntrack ! --ctstate ESTABLISHED,RELATED -j DROP"
        );
    }

    #[test]
    fn only_interface_names_reach_the_command_line() {
        assert!(valid_interface("br-0123456789ab"));
        assert!(valid_interface("docker_gw.1"));
        for bad in ["", "-j", "!", "br 1", "br-0123456789abcdef", "br;x", "a/b"] {
            assert!(!valid_interface(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_effective_capabilities_are_read_from_the_status_text() {
        let status = "Name:\tmilkcrate\nCapInh:\t0000000000000000\nCapEff:\t0000000000001400\n";
        let caps = effective_caps(status).unwrap();
        assert!(caps & (1 << CAP_NET_ADMIN) != 0);
        assert_eq!(effective_caps("Name:\tx\n"), None);
        assert_eq!(
            effective_caps("CapEff:\t0000000000000400\n").map(|c| c & (1 << CAP_NET_ADMIN)),
            Some(0)
        );
    }

    #[test]
    fn the_listing_gives_the_guarded_bridges() {
        let listing = "-N MILKCRATE-INPUT\n-A MILKCRATE-INPUT -i br-aaa -m conntrack ! --ctstate RELATED,ESTABLISHED -j DROP\n-A MILKCRATE-INPUT -i br-bbb -m conntrack ! --ctstate RELATED,ESTABLISHED -j DROP\n";
        assert_eq!(parse_guarded(listing), vec!["br-aaa", "br-bbb"]);
        assert!(parse_guarded("").is_empty());
    }
}
