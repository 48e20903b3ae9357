//! What an interrupted operation leaves behind, and how the next run recognises it.
//!
//! A process that may be killed (a backup, the server) marks what it creates with an
//! [`Owner`] token: its pid and the kernel's start time of that pid, so a later run can tell a
//! leftover of a dead process from the work of a live one (a backup runs while the server
//! serves; two backups may run at once) even when the pid was reused. Sweeps remove only what a
//! dead owner left, or, for the server's own `uploads/`, what is older than the running process.
//! Also: telling a full disk apart from other write errors, so the user reads "the disk is full"
//! rather than a complaint about the file they sent.

use std::io;
use std::path::Path;
use std::time::SystemTime;

/// The process that made something: `<pid>-<start time in clock ticks since boot>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner(String);

impl Owner {
    /// This process.
    pub fn current() -> Self {
        let pid = std::process::id();
        Self(format!("{pid}-{}", start_time(pid).unwrap_or(0)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the process named by `token` still runs. A token that does not parse counts as
    /// alive: what it marks is left alone rather than risked.
    pub fn is_alive(token: &str) -> bool {
        let Some((pid, start)) = token.split_once('-') else {
            return true;
        };
        let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
            return true;
        };
        if !Path::new("/proc/self/stat").exists() {
            return true; // no /proc: cannot tell, so keep it
        }
        // Gone, or the pid now belongs to another process.
        start_time(pid) == Some(start)
    }
}

/// Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks since boot.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The owner token inside a leftover's file name `<prefix><owner>-<random><suffix>`.
pub fn owner_in_name<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = name.strip_prefix(prefix)?;
    // `<pid>-<start>-<random>…`: the first two dash-separated parts.
    let mut parts = rest.splitn(3, '-');
    let (pid, start) = (parts.next()?, parts.next()?);
    parts.next()?;
    let len = pid.len() + 1 + start.len();
    Some(&rest[..len])
}

/// Removes the entries of `dir` named `<prefix><owner>-…` whose owner is dead (files and
/// folders). Returns how many went.
pub fn sweep_dead(dir: &Path, prefix: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(owner) = owner_in_name(&name, prefix) else {
            continue;
        };
        if Owner::is_alive(owner) {
            continue;
        }
        let path = e.path();
        let gone = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match gone {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed what an interrupted run left");
                removed += 1;
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a leftover")
            }
        }
    }
    removed
}

/// At a server's start: removes the spooled uploads and build contexts a killed server left in
/// `<data>/uploads/` (their owner is gone; files of older versions, without an owner in their
/// name, when older than `started`) and the work folders of killed backups.
pub fn sweep_at_start_up(data_dir: &Path, started: SystemTime) {
    let uploads = data_dir.join("uploads");
    let Ok(entries) = std::fs::read_dir(&uploads) else {
        return;
    };
    let mut removed = 0;
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().to_string();
        // `<kind>-<owner>-<random>…`
        let owned = name
            .split_once('-')
            .and_then(|(kind, _)| owner_in_name(&name, &format!("{kind}-")));
        let stale = match owned {
            Some(owner) => !Owner::is_alive(owner),
            None => e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|m| m < started),
        };
        if stale && e.path().is_file() && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(
            folder = %uploads.display(),
            files = removed,
            "removed files an interrupted upload or build left"
        );
    }
    sweep_dead(&data_dir.join(BACKUP_WORK_DIR), "");
}

/// Work folders of `milkcrate backup`, inside the data folder.
pub const BACKUP_WORK_DIR: &str = "backup-work";

/// A file that is removed when dropped, unless [`SpoolGuard::keep`] was called: spooled
/// uploads go on every path, including a request the client abandoned mid-way.
#[derive(Debug, Default)]
pub struct SpoolGuard(Vec<std::path::PathBuf>);

impl SpoolGuard {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, path: std::path::PathBuf) {
        self.0.push(path);
    }

    /// Hands the files over to the caller: they are no longer removed on drop.
    pub fn keep(mut self) -> Vec<std::path::PathBuf> {
        std::mem::take(&mut self.0)
    }
}

impl Drop for SpoolGuard {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Whether a write failed because the disk (or quota) is full.
pub fn is_disk_full(e: &io::Error) -> bool {
    // 28 is ENOSPC and 122 EDQUOT on Linux.
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(28 | 122))
}

/// A plain sentence for an error writing `what` to `path`'s disk: a full disk says so.
pub fn write_error(e: &io::Error, what: &str, path: &Path) -> String {
    if is_disk_full(e) {
        format!(
            "The disk is full: {what} could not be written to {}. Free some space and try again.",
            path.parent().unwrap_or(path).display()
        )
    } else {
        format!("{what} could not be written to {}: {e}", path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reused_or_missing_pid_is_not() {
        let me = Owner::current();
        assert!(Owner::is_alive(me.as_str()));
        let (pid, start) = me.as_str().split_once('-').unwrap();
        let later: u64 = start.parse::<u64>().unwrap() + 1;
        assert!(!Owner::is_alive(&format!("{pid}-{later}")), "pid reused");
        assert!(!Owner::is_alive("4194303999-1"), "no such pid");
        assert!(Owner::is_alive("garbage"), "unknown tokens are kept");
    }

    #[test]
    fn owners_are_read_back_from_names() {
        assert_eq!(
            owner_in_name(".milkcrate_backup_12-345-abc.part", ".milkcrate_backup_"),
            Some("12-345")
        );
        assert_eq!(owner_in_name("work-12-345-x", "work-"), Some("12-345"));
        assert_eq!(owner_in_name("work-12", "work-"), None);
        assert_eq!(owner_in_name("other-12-3-x", "work-"), None);
    }

    #[test]
    fn sweeps_remove_only_what_dead_owners_left() {
        let dir = tempfile::tempdir().unwrap();
        let me = Owner::current();
        let live = dir.path().join(format!("work-{}-a", me.as_str()));
        let dead = dir.path().join("work-4194303999-1-b");
        let other = dir.path().join("unrelated");
        std::fs::create_dir_all(live.join("x")).unwrap();
        std::fs::create_dir_all(dead.join("x")).unwrap();
        std::fs::write(&other, b"keep").unwrap();
        assert_eq!(sweep_dead(dir.path(), "work-"), 1);
        assert!(live.exists() && other.exists() && !dead.exists());
    }

    #[test]
    fn a_full_disk_is_named_as_such() {
        let full = io::Error::from_raw_os_error(28);
        assert!(is_disk_full(&full));
        assert!(is_disk_full(&io::Error::from(io::ErrorKind::StorageFull)));
        assert!(!is_disk_full(&io::Error::from(io::ErrorKind::NotFound)));
        let msg = write_error(&full, "The upload", Path::new("/data/uploads/x"));
        assert!(msg.starts_with("The disk is full"), "{msg}");
        assert!(msg.contains("/data/uploads"), "{msg}");
    }

    #[test]
    fn a_spool_guard_removes_its_files_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        {
            let mut g = SpoolGuard::new();
            g.add(a.clone());
        }
        assert!(!a.exists());
        let mut g = SpoolGuard::new();
        g.add(b.clone());
        assert_eq!(g.keep(), vec![b.clone()]);
        assert!(b.exists());
    }
}
