//! The audit log: `<data>/audit.log`, one JSON object per line, every admin action and every
//! login attempt. Each event is written and flushed to disk before the action's response is
//! sent (no lossy queue); the file rotates by size, keeping a bounded number of old files.
//! Lines of the original's format (`date - LEVEL - {json}`) are read back too.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// One line of the log. Field order is the order written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    pub timestamp: String,
    #[serde(default)]
    pub user_id: String,
    #[serde(default, alias = "ip_address")]
    pub ip: String,
    #[serde(default)]
    pub user_agent: String,
    pub action: String,
    #[serde(default)]
    pub resource_type: String,
    #[serde(default)]
    pub resource_id: String,
    pub success: bool,
    #[serde(default)]
    pub details: serde_json::Value,
    #[serde(
        default,
        alias = "error_message",
        skip_serializing_if = "Option::is_none"
    )]
    pub error: Option<String>,
}

/// Who did it and from where; filled from the request by the web layer.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub admin: bool,
    pub ip: String,
    pub user_agent: String,
    /// The API token that acted (`<name>#<id>`; never its secret).
    pub token: Option<String>,
}

impl Actor {
    /// The admin at this machine's terminal, running `milkcrate <command>`.
    pub fn cli(command: &str) -> Self {
        Actor {
            admin: true,
            ip: "cli".into(),
            user_agent: format!("milkcrate {command}"),
            token: None,
        }
    }
}

/// What happened. Build with [`Event::new`] and the `with_*` helpers.
#[derive(Debug, Clone)]
pub struct Event {
    pub action: &'static str,
    pub resource_type: &'static str,
    pub resource_id: String,
    pub details: serde_json::Value,
    pub error: Option<String>,
}

impl Event {
    pub fn new(
        action: &'static str,
        resource_type: &'static str,
        resource_id: impl Into<String>,
    ) -> Self {
        Self {
            action,
            resource_type,
            resource_id: resource_id.into(),
            details: serde_json::json!({}),
            error: None,
        }
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// Marks the event failed with a reason.
    pub fn failed(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }
}

#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Mutex<Writer>>,
    path: PathBuf,
}

struct Writer {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    keep: u32,
}

impl AuditLog {
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> io::Result<Self> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        let writer = Writer {
            path: path.to_path_buf(),
            file,
            size,
            max_bytes,
            keep,
        };
        Ok(Self {
            inner: Arc::new(Mutex::new(writer)),
            path: path.to_path_buf(),
        })
    }

    /// Writes `event` durably, off the async threads. Errors are returned so the caller can log
    /// them; they are rare (a full disk) and never silently dropped.
    pub async fn record(&self, actor: &Actor, event: Event) -> io::Result<()> {
        let (log, actor) = (self.clone(), actor.clone());
        tokio::task::spawn_blocking(move || log.record_blocking(&actor, event))
            .await
            .map_err(io::Error::other)?
    }

    /// [`Self::record`] where the action the event describes has already happened: a line that
    /// cannot be written (a full disk) is logged as a warning instead of returned.
    pub async fn record_logged(&self, actor: &Actor, event: Event) {
        if let Err(e) = self.record(actor, event).await {
            tracing::warn!(error = %e, "could not write the audit log");
        }
    }

    /// The same, on the calling thread: for the CLI.
    pub fn record_blocking(&self, actor: &Actor, event: Event) -> io::Result<()> {
        let entry = AuditEntry {
            timestamp: OffsetDateTime::now_utc()
                .format(&Rfc3339)
                .unwrap_or_default(),
            user_id: if let Some(token) = &actor.token {
                format!("token:{token}")
            } else if actor.admin {
                "admin".into()
            } else {
                "anonymous".into()
            },
            ip: actor.ip.clone(),
            user_agent: actor.user_agent.clone(),
            action: event.action.into(),
            resource_type: event.resource_type.into(),
            resource_id: event.resource_id,
            success: event.error.is_none(),
            details: event.details,
            error: event.error,
        };
        let mut line = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        line.push(b'\n');
        let result = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_line(&line);
        if let Err(e) = &result {
            tracing::error!(error = %e, action = entry.action, "could not write the audit log");
        }
        result
    }

    /// The newest entries first, optionally only those with `action`; `skip` then `take`.
    /// Returns the page and whether more entries follow. Reads the rotated files as needed.
    pub fn read_latest(
        &self,
        action: Option<&str>,
        skip: usize,
        take: usize,
    ) -> io::Result<(Vec<AuditEntry>, bool)> {
        let keep = self.inner.lock().unwrap_or_else(|p| p.into_inner()).keep;
        let mut files = vec![self.path.clone()];
        files.extend((1..=keep).map(|i| rotated(&self.path, i)));
        let mut page = Vec::new();
        let mut seen = 0usize;
        for file in files {
            let Ok(f) = File::open(&file) else { continue };
            let mut lines: Vec<AuditEntry> = BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| parse_line(&l))
                .collect();
            lines.reverse();
            for entry in lines {
                if action.is_some_and(|a| a != entry.action) {
                    continue;
                }
                if seen >= skip {
                    if page.len() == take {
                        return Ok((page, true));
                    }
                    page.push(entry);
                }
                seen += 1;
            }
        }
        Ok((page, false))
    }
}

impl Writer {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.file.sync_data()?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        for i in (1..self.keep).rev() {
            let from = rotated(&self.path, i);
            if from.exists() {
                std::fs::rename(&from, rotated(&self.path, i + 1))?;
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn rotated(path: &Path, i: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    PathBuf::from(name)
}

fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// A JSON line, or the original's `date - LEVEL - {json}` line.
fn parse_line(line: &str) -> Option<AuditEntry> {
    let start = line.find('{')?;
    serde_json::from_str(&line[start..]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_rotates_and_reads_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path, 600, 2).unwrap();
        let actor = Actor {
            admin: true,
            ip: "127.0.0.1".into(),
            user_agent: "test".into(),
            token: None,
        };
        for i in 0..12 {
            let ev = Event::new(
                if i % 2 == 0 { "login" } else { "logout" },
                "session",
                format!("n{i}"),
            );
            log.record(&actor, ev).await.unwrap();
        }
        assert!(
            rotated(&path, 1).exists() && rotated(&path, 2).exists(),
            "rotated files kept"
        );
        assert!(
            !rotated(&path, 3).exists(),
            "no more than `keep` rotated files"
        );
        let (page, more) = log.read_latest(None, 0, 3).unwrap();
        assert_eq!(
            page.iter()
                .map(|e| e.resource_id.as_str())
                .collect::<Vec<_>>(),
            ["n11", "n10", "n9"]
        );
        assert!(more);
        let (logins, _) = log.read_latest(Some("login"), 0, 2).unwrap();
        assert_eq!(
            logins
                .iter()
                .map(|e| e.resource_id.as_str())
                .collect::<Vec<_>>(),
            ["n10", "n8"]
        );
    }

    #[test]
    fn reads_the_original_format() {
        let line = r#"2026-02-20 20:30:00 - INFO - {"timestamp":"2026-02-21T02:30:00.123456+00:00","user_id":"admin","ip_address":"172.18.0.2","user_agent":"Mozilla/5.0","action":"deploy","resource_type":"application","resource_id":"demo","success":true,"details":{"public_route":"/demo"}}"#;
        let e = parse_line(line).unwrap();
        assert_eq!(
            (e.action.as_str(), e.ip.as_str(), e.success),
            ("deploy", "172.18.0.2", true)
        );
    }
}
