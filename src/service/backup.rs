//! Making a backup, for `milkcrate backup` and the scheduled runs of `milkcrate serve`: what
//! goes in (database snapshot, volume data through the engine, secret key, audit log, app
//! sources), the private work folder, and writing the archive once to every destination at
//! the same time — a local folder (a `.part` file, 0600, given its final name only when
//! complete) and S3-compatible stores (a streamed multipart upload, then a `<name>.sha256`
//! object that publishes it). Encryption (age) sits between the archive writer and the
//! destinations; S3 destinations refuse an unencrypted archive. Retention is applied on each
//! destination after a successful run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::archive::backup::{BackupError, write_backup};
use crate::archive::seal::{SealKey, seal};
use crate::docker::Engine;
use crate::domain::backup_plan::{Retention, backup_name, backup_sort_key, backup_time};
use crate::s3::{S3, UploadWriter};
use crate::service::leftovers::{self, Owner, write_error};
use crate::store::Store;

/// Where a volume's data sits in a backup.
pub const VOLUMES_DIR: &str = "volumes";
/// Work folders of running backups, inside the data folder: `<owner>-<random>/`, 0700.
pub const WORK_DIR: &str = leftovers::BACKUP_WORK_DIR;
/// A backup being written: `.milkcrate_backup_<owner>-<random>.part` in the output folder,
/// 0600, renamed to its final name only once complete and on disk.
pub const PART_PREFIX: &str = ".milkcrate_backup_";
/// The object beside each uploaded archive that holds its SHA-256; written last, so an
/// archive without one is not (yet) a backup.
pub const CHECKSUM_SUFFIX: &str = ".sha256";

/// Why a backup (or one of its steps) failed, in the sentence the Backups page, the run's row
/// and `milkcrate backup` show; the disk's, engine's, store's and bucket's errors are kept.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Engine(#[from] crate::docker::EngineError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    S3(#[from] crate::s3::S3Error),
    #[error("{0}")]
    Archive(#[from] BackupError),
    /// A write that failed, said by `leftovers::write_error` (a full disk named as such).
    #[error("{0}")]
    Disk(String),
    #[error("cannot create the work folder {dir}: {source}")]
    WorkDir { dir: String, source: std::io::Error },
    #[error("cannot name the backup {target}: {source}")]
    Name {
        target: String,
        source: std::io::Error,
    },
    #[error("too many backups named {stamp} in {dir}")]
    TooMany { stamp: String, dir: String },
    #[error("reading volume {name}: {source}")]
    ReadVolume {
        name: String,
        source: crate::service::volumes::VolumeError,
    },
    #[error("off-site copies are always encrypted: set a backup passphrase or age recipient first")]
    Unencrypted,
    #[error("{location}: {source}")]
    Bucket {
        location: String,
        source: crate::s3::S3Error,
    },
    #[error("cannot create {dir}: {source}")]
    CreateDir { dir: String, source: std::io::Error },
    #[error("encrypting the backup: {0}")]
    Encrypt(#[source] std::io::Error),
    #[error("writing the backup: {0}")]
    Write(#[source] std::io::Error),
    #[error("writing the backup to disk: {0}")]
    Sync(#[source] std::io::Error),
    #[error("{location}: {uploaded} bytes were uploaded, the archive has {size}")]
    Short {
        location: String,
        uploaded: u64,
        size: u64,
    },
    #[error("cannot delete {name}: {source}")]
    Delete {
        name: String,
        source: std::io::Error,
    },
    #[error("there is no backup target: add a folder or an S3 bucket on the Backups page")]
    NoTarget,
    /// The encryption key or a target's secret cannot be had (said in plain words).
    #[error("{0}")]
    Key(String),
    #[error("the target has no secret key")]
    NoSecret,
    #[error("{0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("database snapshot: {0}")]
    Snapshot(#[source] crate::store::StoreError),
    #[error("{0}; volume data cannot be read (untick volumes to back up without it)")]
    NoEngine(#[source] crate::docker::EngineError),
    #[error("the backup was made, but retention on {place} failed: {source}")]
    Retention {
        place: String,
        source: Box<RunError>,
    },
}

/// A folder (0700, its parents too when created) removed when dropped (on success, failure
/// and panic alike); a `kill -9` leaves it to the next run's sweep, which knows it by its owner.
pub struct WorkDir(pub PathBuf);

impl WorkDir {
    pub fn create(root: &Path) -> Result<Self, RunError> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = root.join(format!(
            "{}-{}",
            Owner::current().as_str(),
            crate::secrets::random_token(9)
        ));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| RunError::WorkDir {
                dir: dir.display().to_string(),
                source,
            })?;
        Ok(Self(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The archive being written: a `.part` file (0600, a name no other run can pick), removed
/// when dropped unless it was published under its final name.
pub struct PartFile(Option<PathBuf>);

impl PartFile {
    pub fn create(dir: &Path) -> Result<(Self, std::fs::File), RunError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(format!(
            "{PART_PREFIX}{}-{}.part",
            Owner::current().as_str(),
            crate::secrets::random_token(9)
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| RunError::Disk(write_error(&e, "The backup", &path)))?;
        Ok((Self(Some(path)), file))
    }

    pub fn path(&self) -> Option<&Path> {
        self.0.as_deref()
    }

    /// Gives the complete archive its final name: `milkcrate_backup_<stamp>.tar.gz[.age]`, or
    /// with `-2`, `-3`… when a backup of the same second has it (a hard link never replaces
    /// a file, so two backups cannot overwrite each other). The folder is synced after.
    pub fn publish(
        mut self,
        dir: &Path,
        stamp: &str,
        encrypted: bool,
    ) -> Result<PathBuf, RunError> {
        let part = self.0.take().unwrap_or_default();
        for n in 1..1000 {
            let target = dir.join(backup_name(stamp, n, encrypted));
            match std::fs::hard_link(&part, &target) {
                Ok(()) => {
                    let _ = std::fs::remove_file(&part);
                    sync_dir(dir);
                    return Ok(target);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(_) if target.exists() => continue,
                // A file system without hard links (FAT, some network shares): a rename
                // onto a name that is free now.
                Err(_) => {
                    std::fs::rename(&part, &target).map_err(|source| {
                        let _ = std::fs::remove_file(&part);
                        RunError::Name {
                            target: target.display().to_string(),
                            source,
                        }
                    })?;
                    sync_dir(dir);
                    return Ok(target);
                }
            }
        }
        let _ = std::fs::remove_file(&part);
        Err(RunError::TooMany {
            stamp: stamp.to_string(),
            dir: dir.display().to_string(),
        })
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The Docker volumes whose data a backup holds: every milkcrate volume and every compose
/// stack volume.
pub async fn volumes_to_back_up(engine: &Engine, store: &Store) -> Result<Vec<String>, RunError> {
    let mut names: Vec<String> = store.volume_docker_names().await?;
    let stack = engine
        .volumes_labelled(&[
            format!("{}=true", crate::domain::labels::MANAGED),
            crate::domain::labels::STACK_VOLUME.to_string(),
        ])
        .await?;
    names.extend(stack);
    names.sort();
    names.dedup();
    Ok(names)
}

/// Reads every volume into `<work>/volumes/<name>.tar` (and its labels beside it) through
/// the engine, with helpers carrying `labels`. `say` is told each volume read.
pub async fn export_volumes(
    engine: &Engine,
    store: &Store,
    labels: std::collections::HashMap<String, String>,
    work: &Path,
    say: &(dyn Fn(String) + Send + Sync),
) -> Result<Vec<(String, PathBuf)>, RunError> {
    let names = volumes_to_back_up(engine, store).await?;
    let dir = work.join(VOLUMES_DIR);
    std::fs::create_dir_all(&dir)?;
    let mut out = Vec::new();
    for name in names {
        let file = dir.join(format!("{name}.tar"));
        let size = crate::service::volumes::export_to(engine, &name, labels.clone(), &file)
            .await
            .map_err(|source| RunError::ReadVolume {
                name: name.clone(),
                source,
            })?;
        say(format!(
            "read volume {name} ({:.1} KiB)",
            size as f64 / 1024.0
        ));
        out.push((format!("{VOLUMES_DIR}/{name}.tar"), file));
        // Its labels too, so a restored volume belongs to the same install.
        let volume_labels = engine.volume_labels(&name).await?.unwrap_or_default();
        let labels_file = dir.join(format!("{name}.labels.json"));
        std::fs::write(&labels_file, serde_json::to_vec(&volume_labels)?)
            .map_err(|e| RunError::Disk(write_error(&e, "Volume labels", &labels_file)))?;
        out.push((format!("{VOLUMES_DIR}/{name}.labels.json"), labels_file));
    }
    Ok(out)
}

/// The files of the data folder a backup holds besides the database and volumes: the secret
/// key, the audit log and its rotations, and (with `sources`) the uploaded app sources.
pub fn data_files(data_dir: &Path, sources: bool) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for name in ["secret_key", "audit.log"] {
        if data_dir.join(name).is_file() {
            files.push((name.to_string(), data_dir.join(name)));
        }
    }
    for i in 1..=20 {
        let rotated = format!("audit.log.{i}");
        if data_dir.join(&rotated).is_file() {
            files.push((rotated.clone(), data_dir.join(rotated)));
        }
    }
    // The ACME account, issued certificates and the admin's uploads: a restore serves them at
    // once and orders nothing new.
    collect(data_dir, &data_dir.join("tls"), &mut files)?;
    if sources {
        collect(data_dir, &data_dir.join("apps"), &mut files)?;
    }
    Ok(files)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries {
        let path = e?.path();
        if path.is_dir() {
            collect(root, &path, out)?;
        } else if path.is_file() {
            let rel = path
                .strip_prefix(root)
                .map_err(std::io::Error::other)?
                .to_string_lossy()
                .to_string();
            out.push((rel, path));
        }
    }
    Ok(())
}

/// Where an archive goes.
#[derive(Clone)]
pub enum Destination {
    Folder(PathBuf),
    S3(S3),
}

impl Destination {
    pub fn describe(&self) -> String {
        match self {
            Destination::Folder(p) => p.display().to_string(),
            Destination::S3(s) => s.location(),
        }
    }
}

/// One finished copy.
#[derive(Debug, Clone)]
pub struct Copy {
    pub place: String,
    pub name: String,
}

/// What a written backup is.
#[derive(Debug, Clone)]
pub struct Written {
    pub size: u64,
    pub files: usize,
    pub copies: Vec<Copy>,
}

enum Sink {
    File(std::fs::File),
    Upload(UploadWriter),
}

/// Every destination at once; counts the bytes (the archive's size).
struct Fanout {
    sinks: Vec<Sink>,
    written: Arc<AtomicU64>,
}

impl Write for Fanout {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        for s in &mut self.sinks {
            match s {
                Sink::File(f) => f.write_all(data)?,
                Sink::Upload(u) => u.write_all(data)?,
            }
        }
        self.written.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes the archive of `files` once to every destination (blocking: call from a blocking
/// thread; `handle` runs the uploads). `written` counts the archive's bytes as they go.
/// S3 destinations need `key`. On any failure nothing is published anywhere.
pub fn write_everywhere(
    files: &[(String, PathBuf)],
    destinations: &[Destination],
    key: Option<&SealKey>,
    handle: &tokio::runtime::Handle,
    written: Arc<AtomicU64>,
    say: &(dyn Fn(String) + Send + Sync),
) -> Result<Written, RunError> {
    if key.is_none() && destinations.iter().any(|d| matches!(d, Destination::S3(_))) {
        return Err(RunError::Unencrypted);
    }
    let bucket = |s3: &S3| {
        let location = s3.location();
        move |source| RunError::Bucket { location, source }
    };
    let encrypted = key.is_some();
    let now = time::OffsetDateTime::now_utc();
    let stamp = crate::clock::utc_stamp('_');
    let created = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    // Object names: the first `-n` of this second no store has yet.
    let mut taken: Vec<String> = Vec::new();
    for d in destinations {
        if let Destination::S3(s3) = d {
            let list = handle.block_on(s3.list()).map_err(bucket(s3))?;
            taken.extend(list.into_iter().map(|o| o.name));
        }
    }
    let object_name = (1..)
        .map(|n| backup_name(&stamp, n, encrypted))
        .find(|n| {
            !taken
                .iter()
                .any(|t| t == n || t.starts_with(&format!("{n}.")))
        })
        .unwrap_or_default();
    let mut parts: Vec<(PartFile, PathBuf)> = Vec::new();
    let mut sinks = Vec::new();
    for d in destinations {
        match d {
            Destination::Folder(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| RunError::CreateDir {
                    dir: dir.display().to_string(),
                    source,
                })?;
                let (part, file) = PartFile::create(dir)?;
                parts.push((part, dir.clone()));
                sinks.push(Sink::File(file));
            }
            Destination::S3(s3) => {
                sinks.push(Sink::Upload(s3.upload(&object_name, handle.clone())))
            }
        }
    }
    let fanout = Fanout {
        sinks,
        written: written.clone(),
    };
    let progress = |name: &str, size: u64| {
        say(format!("added {name} ({:.1} KiB)", size as f64 / 1024.0));
        crate::config::pause_point("backup-writing-archive");
    };
    let describe = |e: BackupError| match e {
        BackupError::Io(io) => match parts.first().and_then(|(p, _)| p.path()) {
            Some(p) => RunError::Disk(write_error(&io, "The backup", p)),
            None => RunError::Write(io),
        },
        other => other.into(),
    };
    let (manifest, fanout) = match key {
        Some(key) => {
            let sealed = seal(fanout, key).map_err(RunError::Encrypt)?;
            let (m, sealed) = write_backup(sealed, &created, files, progress).map_err(describe)?;
            (m, sealed.finish().map_err(RunError::Encrypt)?)
        }
        None => write_backup(fanout, &created, files, progress).map_err(describe)?,
    };
    let size = written.load(Ordering::Relaxed);
    let mut copies = Vec::new();
    let mut uploads = Vec::new();
    let mut local_files = Vec::new();
    for sink in fanout.sinks {
        match sink {
            Sink::File(f) => local_files.push(f),
            Sink::Upload(u) => uploads.push(u),
        }
    }
    for f in &local_files {
        f.sync_all().map_err(RunError::Sync)?;
    }
    // Uploads first: a local copy is published only when every off-site copy is complete.
    let s3s: Vec<&S3> = destinations
        .iter()
        .filter_map(|d| match d {
            Destination::S3(s) => Some(s),
            Destination::Folder(_) => None,
        })
        .collect();
    for (upload, s3) in uploads.into_iter().zip(s3s) {
        let done = upload.finish().map_err(bucket(s3))?;
        if done.size != size {
            return Err(RunError::Short {
                location: s3.location(),
                uploaded: done.size,
                size,
            });
        }
        let sum = format!("{}  {object_name}\n", done.sha256);
        handle
            .block_on(s3.put(
                &format!("{object_name}{CHECKSUM_SUFFIX}"),
                bytes::Bytes::from(sum),
            ))
            .map_err(bucket(s3))?;
        say(format!("uploaded {object_name} to {}", s3.location()));
        copies.push(Copy {
            place: s3.location(),
            name: object_name.clone(),
        });
    }
    drop(local_files);
    for (part, dir) in parts {
        let path = part.publish(&dir, &stamp, encrypted)?;
        copies.push(Copy {
            place: dir.display().to_string(),
            name: path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string(),
        });
    }
    Ok(Written {
        size,
        files: manifest.files.len(),
        copies,
    })
}

/// The complete backups in an S3 location (an archive counts once its checksum object is
/// there), newest first, with sizes.
pub async fn s3_backups(s3: &S3) -> Result<Vec<crate::s3::Object>, RunError> {
    let list = s3.list().await?;
    let mut out: Vec<crate::s3::Object> = list
        .iter()
        .filter(|o| backup_sort_key(&o.name).is_some())
        .filter(|o| {
            let sum = format!("{}{CHECKSUM_SUFFIX}", o.name);
            list.iter().any(|x| x.name == sum)
        })
        .cloned()
        .collect();
    out.sort_by_key(|o| std::cmp::Reverse(backup_sort_key(&o.name)));
    Ok(out)
}

/// The finished backups in a folder, newest first: (path, size).
pub fn folder_backups(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out: Vec<(PathBuf, u64)> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_str().and_then(backup_sort_key).is_some())
                .filter_map(|e| {
                    let m = e.metadata().ok()?;
                    m.is_file().then(|| (e.path(), m.len()))
                })
                .collect()
        })
        .unwrap_or_default();
    let key = |p: &PathBuf| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(backup_sort_key)
    };
    out.sort_by_key(|b| std::cmp::Reverse(key(&b.0)));
    out
}

/// Deletes the backups `retention` does not keep at a destination; returns their names.
pub async fn apply_retention(
    destination: &Destination,
    retention: Retention,
) -> Result<Vec<String>, RunError> {
    if !retention.is_set() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = match destination {
        Destination::Folder(dir) => folder_backups(dir)
            .into_iter()
            .filter_map(|(p, _)| Some(p.file_name()?.to_str()?.to_string()))
            .collect(),
        Destination::S3(s3) => s3_backups(s3).await?.into_iter().map(|o| o.name).collect(),
    };
    let timed: Vec<(String, i64)> = names
        .into_iter()
        .filter_map(|n| backup_time(&n).map(|t| (n, t)))
        .collect();
    let times: Vec<i64> = timed.iter().map(|(_, t)| *t).collect();
    let keep = retention.kept(&times);
    let mut deleted = Vec::new();
    for ((name, _), keep) in timed.into_iter().zip(keep) {
        if keep {
            continue;
        }
        match destination {
            Destination::Folder(dir) => {
                std::fs::remove_file(dir.join(&name)).map_err(|source| RunError::Delete {
                    name: name.clone(),
                    source,
                })?
            }
            Destination::S3(s3) => {
                // The checksum first: without it the archive is no longer offered.
                s3.delete(&format!("{name}{CHECKSUM_SUFFIX}")).await?;
                s3.delete(&name).await?;
            }
        }
        deleted.push(name);
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retention_in_a_folder_deletes_the_oldest_and_leaves_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let names = [
            "milkcrate_backup_20260101_000000.tar.gz",
            "milkcrate_backup_20260102_000000.tar.gz.age",
            "milkcrate_backup_20260102_000000-2.tar.gz.age",
            "milkcrate_backup_20260103_000000.tar.gz",
            ".milkcrate_backup_x-y.part",
            "notes.txt",
        ];
        for n in names {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let keep = Retention {
            keep_last: 2,
            keep_daily: 0,
            keep_weekly: 0,
        };
        let deleted = apply_retention(&Destination::Folder(dir.path().into()), keep)
            .await
            .unwrap();
        assert_eq!(
            deleted,
            vec![
                "milkcrate_backup_20260102_000000.tar.gz.age".to_string(),
                "milkcrate_backup_20260101_000000.tar.gz".to_string()
            ]
        );
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                ".milkcrate_backup_x-y.part",
                "milkcrate_backup_20260102_000000-2.tar.gz.age",
                "milkcrate_backup_20260103_000000.tar.gz",
                "notes.txt"
            ]
        );
    }

    #[test]
    fn run_errors_say_the_sentences_the_backups_page_shows() {
        assert_eq!(
            RunError::NoTarget.to_string(),
            "there is no backup target: add a folder or an S3 bucket on the Backups page"
        );
        let retention = RunError::Retention {
            place: "/srv/backups".into(),
            source: Box::new(RunError::Delete {
                name: "b.tar.gz".into(),
                source: std::io::Error::other("busy"),
            }),
        };
        assert_eq!(
            retention.to_string(),
            "the backup was made, but retention on /srv/backups failed: cannot delete b.tar.gz: busy"
        );
        assert!(std::error::Error::source(&retention).is_some());
    }
}
