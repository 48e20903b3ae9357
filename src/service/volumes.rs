//! Volumes: create, fill, read, prune and remove them. Files move through the engine's archive
//! API on a helper container that is created for one operation and removed after it (see
//! `docker::volumes`), so nothing is pulled and no name ever passes through a shell.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};

use std::sync::Arc;

use crate::archive::volume::{self as tars, VolumeEntry, VolumeUpload};
use crate::config::Settings;
use crate::docker::{Engine, EngineError};
use crate::domain::labels::MANAGED;
use crate::domain::volume::{InnerPath, Mounts, NAME_LABEL, VolumeName};
use crate::store::Store;
use crate::store::VolumeRow;

/// The volume use cases, with only the handles they use (built by `AppState::volumes`).
#[derive(Clone)]
pub struct Volumes {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub engine: Arc<crate::docker::monitor::EngineMonitor>,
}

/// Why a volume use case failed, in the sentence the Volumes page (and the API) shows; the
/// engine's, store's or disk's error is kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Archive(#[from] crate::archive::ArchiveError),
    /// A write to the data folder failed (a full disk said as such).
    #[error("{0}")]
    Disk(String),
    #[error("Volume {0} already exists")]
    Exists(String),
    #[error(
        "Volume {name} would use the same Docker volume ({docker_name}) as the existing volume {existing}: names that differ only in case, '-' or '_' count as the same"
    )]
    SameDockerVolume {
        name: String,
        docker_name: String,
        existing: String,
    },
    #[error(
        "A Docker volume named {docker_name} already exists and belongs to another milkcrate install ({owner}) on this engine; choose another name"
    )]
    OtherInstall { docker_name: String, owner: String },
    #[error(
        "A Docker volume named {0} already exists and was not made by milkcrate; choose another name"
    )]
    Foreign(String),
    #[error("Failed to create volume: {0}")]
    Create(#[source] EngineError),
    #[error("Failed to prepare volume: {0}")]
    Prepare(#[source] EngineError),
    #[error("Could not read the volume: {0}")]
    Unreadable(#[source] std::io::Error),
    #[error("Upload failed: the files could not be put in place: {0}")]
    NotPlaced(String),
    #[error("Upload failed: {0}")]
    Upload(#[source] EngineError),
    #[error("{0} is not in the volume")]
    NotInVolume(String),
    #[error("The volume's root folder cannot be deleted; delete the volume instead")]
    RootFolder,
    #[error(
        "Deleting files needs an amd64 or arm64 engine (this one is {0}); files can still be replaced by uploading"
    )]
    NoUnlink(String),
    #[error("Could not delete {path}: {source}")]
    NotDeleted { path: String, source: EngineError },
    #[error("Could not delete {0}: permission denied (its folder belongs to another user)")]
    DeleteDenied(String),
    #[error("Could not delete {path}: the system said error {errno}")]
    DeleteErrno { path: String, errno: i64 },
    #[error("Volume {volume} is mounted by {apps}; remove it from {which} first")]
    Mounted {
        volume: String,
        apps: String,
        which: &'static str,
    },
    #[error("Failed to delete volume: {0}")]
    Remove(#[source] EngineError),
}

/// Role label of helper containers, so start-up can remove any a crash left behind.
pub const HELPER_ROLE: &str = "milkcrate.role=volume-helper";

/// A helper container. [`Helper::done`] removes it; dropped without that (an abandoned
/// download), it is removed in the background.
struct Helper {
    engine: Engine,
    id: String,
}

impl Helper {
    async fn done(mut self) {
        let id = std::mem::take(&mut self.id);
        crate::service::removed(
            "remove a helper container",
            self.engine.remove_container(&id).await,
        );
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if self.id.is_empty() {
            return;
        }
        let (engine, id) = (self.engine.clone(), std::mem::take(&mut self.id));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                crate::service::removed(
                    "remove a helper container",
                    engine.remove_container(&id).await,
                );
            });
        }
    }
}

impl Volumes {
    async fn helper(
        &self,
        volume: &str,
        read_only: bool,
        cmd: Vec<String>,
    ) -> Result<Helper, EngineError> {
        let engine = self.engine.client().await?;
        // Mounting a missing volume would make the engine create it, empty and unlabelled.
        if engine.volume_labels(volume).await?.is_none() {
            return Err(EngineError::NotFound(format!(
                "the Docker volume {volume} (removed outside milkcrate?)"
            )));
        }
        let mut labels = self.settings.label_map(MANAGED, "true");
        let (k, v) = HELPER_ROLE.split_once('=').unwrap_or_default();
        labels.insert(k.into(), v.into());
        let id = engine
            .create_volume_helper(volume, read_only, cmd, labels)
            .await?;
        Ok(Helper { engine, id })
    }
}

impl Volumes {
    /// The Docker volume a new milkcrate volume `name` gets: `milkcrate-<install>-vol-<key>`
    /// (the original's `milkcrate-vol-<key>` for an install without an identity), so two installs
    /// on one engine never name the same volume.
    pub fn docker_name_for(&self, name: &VolumeName) -> String {
        self.settings.object_name(&format!("vol-{}", name.key()))
    }
}

impl Volumes {
    /// Creates the Docker volume for `name` and its row. A Docker volume of that name that
    /// milkcrate made (after a restore, say) is adopted; anyone else's is left alone.
    pub async fn create(
        &self,
        name: &VolumeName,
        description: String,
    ) -> Result<(i64, String), VolumeError> {
        let docker_name = self.docker_name_for(name);
        if let Some(existing) = self
            .store
            .volume_by_docker_name(docker_name.clone())
            .await?
        {
            return Err(if existing.volume_name == name.as_str() {
                VolumeError::Exists(name.as_str().to_string())
            } else {
                VolumeError::SameDockerVolume {
                    name: name.as_str().to_string(),
                    docker_name,
                    existing: existing.volume_name,
                }
            });
        }
        let engine = self.engine.client().await?;
        let message = match engine.volume_labels(&docker_name).await? {
            Some(labels)
                if labels.get(MANAGED).map(String::as_str) == Some("true")
                    && labels
                        .get(crate::config::INSTANCE_LABEL)
                        .map(String::as_str)
                        == self.settings.instance() =>
            {
                format!(
                    "Volume {} was already in the engine (made by this install) and is listed again with its data",
                    name.as_str()
                )
            }
            Some(labels) if labels.get(MANAGED).map(String::as_str) == Some("true") => {
                // Another install's volume: adopting it would let this one delete its files.
                return Err(VolumeError::OtherInstall {
                    owner: labels
                        .get(crate::config::INSTANCE_LABEL)
                        .map(String::as_str)
                        .unwrap_or("one without an instance name")
                        .to_string(),
                    docker_name,
                });
            }
            Some(_) => return Err(VolumeError::Foreign(docker_name)),
            None => {
                let mut labels: HashMap<String, String> = self.settings.label_map(MANAGED, "true");
                labels.insert(NAME_LABEL.into(), name.as_str().into());
                engine
                    .create_volume(&docker_name, labels)
                    .await
                    .map_err(VolumeError::Create)?;
                if let Err(e) = self.hand_to_apps(&docker_name).await {
                    crate::service::removed(
                        "remove a volume",
                        engine.remove_volume(&docker_name).await,
                    );
                    return Err(VolumeError::Prepare(e));
                }
                format!("Volume {} created successfully", name.as_str())
            }
        };
        let id = self
            .store
            .insert_volume(name.as_str().into(), docker_name, description)
            .await?;
        Ok((id, message))
    }
}

impl Volumes {
    /// Every file and folder in the volume, read from the engine now; the counts are stored.
    pub async fn listing(&self, vol: &VolumeRow) -> Result<Vec<VolumeEntry>, VolumeError> {
        let entries = self.entries_of(&vol.docker_volume_name).await?;
        let (files, bytes) = totals(&entries);
        crate::service::logged(
            "record a volume's size",
            self.store
                .set_volume_stats(vol.volume_id, files, bytes)
                .await,
        );
        Ok(entries)
    }
}

impl Volumes {
    /// Every file and folder in the Docker volume `docker_name`, read from the engine now.
    pub async fn entries_of(&self, docker_name: &str) -> Result<Vec<VolumeEntry>, VolumeError> {
        let h = self.helper(docker_name, true, vec![]).await?;
        let entries = scan_helper(&h.engine, &h.id).await;
        h.done().await;
        entries
    }
}

/// Whether the (existing) volume holds anything, asked with a helper labelled `labels`.
pub async fn is_empty(
    engine: &Engine,
    docker_name: &str,
    labels: HashMap<String, String>,
) -> Result<bool, VolumeError> {
    let id = engine
        .create_volume_helper(docker_name, true, vec![], labels)
        .await?;
    let entries = scan_helper(engine, &id).await;
    crate::service::removed(
        "remove a helper container",
        engine.remove_container(&id).await,
    );
    Ok(entries?.is_empty())
}

async fn scan_helper(engine: &Engine, id: &str) -> Result<Vec<VolumeEntry>, VolumeError> {
    let stream = engine.get_archive(id, crate::domain::volume::HELPER_MOUNT);
    let reader = sync_reader(stream);
    tokio::task::spawn_blocking(move || tars::scan(reader))
        .await?
        .map_err(VolumeError::Unreadable)
}

pub fn totals(entries: &[VolumeEntry]) -> (u64, u64) {
    entries
        .iter()
        .filter(|e| !e.is_dir)
        .fold((0, 0), |(n, b), e| (n + 1, b + e.size))
}

/// One folder of a listing: its direct children, folders first, each with the size of
/// everything under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    pub name: String,
    pub path: String,
    pub is_dir: bool,
    pub size: u64,
    pub files: u64,
}

pub fn children(entries: &[VolumeEntry], folder: &InnerPath) -> Vec<Child> {
    let prefix = if folder.is_root() {
        String::new()
    } else {
        format!("{}/", folder.as_str())
    };
    let mut by_name: BTreeMap<(bool, String), Child> = BTreeMap::new();
    for e in entries {
        let Some(rest) = e.path.strip_prefix(&prefix) else {
            continue;
        };
        if rest.is_empty() {
            continue;
        }
        let (name, deeper) = match rest.split_once('/') {
            Some((first, _)) => (first, true),
            None => (rest, false),
        };
        let is_dir = deeper || e.is_dir;
        let child = by_name
            .entry((!is_dir, name.to_string()))
            .or_insert_with(|| Child {
                name: name.to_string(),
                path: format!("{prefix}{name}"),
                is_dir,
                size: 0,
                files: 0,
            });
        if !e.is_dir {
            child.size += e.size;
            child.files += 1;
        }
    }
    by_name.into_values().collect()
}

impl Volumes {
    /// Puts `upload` into the volume under `folder`, in one archive call. Everything was checked
    /// before: a refused entry means nothing was written.
    pub async fn upload(
        &self,
        vol: &VolumeRow,
        folder: &InnerPath,
        upload: VolumeUpload,
    ) -> Result<usize, VolumeError> {
        // Files are unpacked under temporary names and renamed into place once the engine has
        // all of them, so a cut request (a crash, a kill) never leaves a truncated file under a
        // real name. Engines of other architectures than amd64/arm64 get direct writes.
        let engine = self.engine.client().await?;
        let arch = engine.arch().await?;
        let stage = crate::docker::rename_program(&arch)
            .map(|_| crate::secrets::random_token(9).replace(['-', '_'], "x"));
        let placed = if upload.zips.is_empty() {
            self.stream_upload(vol, folder, upload, stage.clone())
                .await?
        } else {
            self.spooled_upload(vol, folder, upload, stage.clone())
                .await?
        };
        if stage.is_some() {
            self.put_in_place(vol, &placed).await?;
        }
        Ok(placed.len())
    }
}

impl Volumes {
    /// Renames the files of an upload from their temporary names to their real ones, in order,
    /// with the helper's `rename` program (a few hundred per helper, to keep its arguments short).
    async fn put_in_place(
        &self,
        vol: &VolumeRow,
        placed: &[(String, String)],
    ) -> Result<(), VolumeError> {
        let mount = crate::domain::volume::HELPER_MOUNT;
        for batch in placed.chunks(256) {
            let mut cmd = vec!["/rename".to_string()];
            for (written, target) in batch {
                cmd.push(format!("{mount}/{written}"));
                cmd.push(format!("{mount}/{target}"));
            }
            let h = self.helper(&vol.docker_volume_name, false, cmd).await?;
            let code = h.engine.run_to_exit(&h.id).await;
            h.done().await;
            match code? {
                0 => {}
                errno => {
                    let why = match errno {
                        21 | 39 => "a folder of that name is in the way".to_string(),
                        13 | 1 => {
                            "permission denied (its folder belongs to another user)".to_string()
                        }
                        n => format!("the system said error {n}"),
                    };
                    return Err(VolumeError::NotPlaced(why));
                }
            }
        }
        Ok(())
    }
}

impl Volumes {
    /// Plain files (already whole on disk) are written as a tar straight into the engine's
    /// request: no second copy on disk.
    async fn stream_upload(
        &self,
        vol: &VolumeRow,
        folder: &InnerPath,
        upload: VolumeUpload,
        stage: Option<String>,
    ) -> Result<Vec<(String, String)>, VolumeError> {
        let h = self.helper(&vol.docker_volume_name, false, vec![]).await?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
        let folder2 = folder.clone();
        let writer =
            tokio::task::spawn_blocking(move || -> Result<Vec<(String, String)>, VolumeError> {
                let out = std::io::BufWriter::with_capacity(256 * 1024, ChannelWriter(tx));
                let (w, placed) =
                    tars::write_upload_tar_staged(&upload, &folder2, stage.as_deref(), out)?;
                w.into_inner().map_err(|e| e.into_error())?;
                Ok(placed)
            });
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let put = h
            .engine
            .put_archive_stream(&h.id, crate::domain::volume::HELPER_MOUNT, body)
            .await;
        let written = writer.await;
        crate::config::pause_here("volume-upload-written").await;
        h.done().await;
        put.map_err(VolumeError::Upload)?;
        written?
    }
}

impl Volumes {
    /// ZIPs are unpacked into a tar on disk first, so an entry that lies about its size is caught
    /// before anything reaches the volume.
    async fn spooled_upload(
        &self,
        vol: &VolumeRow,
        folder: &InnerPath,
        upload: VolumeUpload,
        stage: Option<String>,
    ) -> Result<Vec<(String, String)>, VolumeError> {
        let spool = crate::service::deploy::tempfile_in(
            &self.settings.data_dir.join("uploads"),
            "volume",
            ".tar",
        )?;
        let mut guard = crate::service::leftovers::SpoolGuard::new();
        guard.add(spool.clone());
        let (folder2, spool2) = (folder.clone(), spool.clone());
        let written =
            tokio::task::spawn_blocking(move || -> Result<Vec<(String, String)>, VolumeError> {
                let disk = |e: std::io::Error| {
                    VolumeError::Disk(crate::service::leftovers::write_error(
                        &e,
                        "The upload",
                        &spool2,
                    ))
                };
                let out = std::fs::File::create(&spool2).map_err(disk)?;
                // A scratch file read back at once: flushed, not synced to disk.
                let (w, placed) = tars::write_upload_tar_staged(
                    &upload,
                    &folder2,
                    stage.as_deref(),
                    std::io::BufWriter::new(out),
                )
                .map_err(|e| match e {
                    crate::archive::ArchiveError::Io(io) => disk(io),
                    other => other.into(),
                })?;
                w.into_inner().map_err(|e| disk(e.into_error()))?;
                Ok(placed)
            })
            .await?;
        let result = async {
            let placed = written?;
            let h = self.helper(&vol.docker_volume_name, false, vec![]).await?;
            let put = h
                .engine
                .put_archive(&h.id, crate::domain::volume::HELPER_MOUNT, &spool)
                .await;
            h.done().await;
            put.map_err(VolumeError::Upload)?;
            Ok(placed)
        }
        .await;
        drop(guard);
        result
    }
}

/// What a download sends: one file's bytes, or a folder as a tar.
pub struct Download {
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
    pub body: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>,
}

impl Volumes {
    pub async fn download(
        &self,
        vol: &VolumeRow,
        path: &InnerPath,
    ) -> Result<Download, VolumeError> {
        let h = self.helper(&vol.docker_volume_name, true, vec![]).await?;
        let target = path.in_helper();
        let (size, is_dir) = h
            .engine
            .stat_path(&h.id, &target)
            .await
            .map_err(|e| match e {
                EngineError::NotFound(_) => VolumeError::NotInVolume(path.as_str().to_string()),
                other => other.into(),
            })?;
        let stream = h.engine.get_archive(&h.id, &target);
        let name = if path.is_root() {
            vol.volume_name.clone()
        } else {
            path.file_name().to_string()
        };
        if is_dir {
            // The tar as the engine sends it; the helper goes when the stream is done or dropped.
            let body = stream
                .map_err(|e| std::io::Error::other(e.to_string()))
                .map(move |chunk| {
                    let _keep = &h;
                    chunk
                });
            return Ok(Download {
                name: format!("{name}.tar"),
                is_dir,
                size: 0,
                body: Box::pin(body),
            });
        }
        let reader = sync_reader(stream);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
        tokio::task::spawn_blocking(move || {
            let _keep = h;
            let mut out = ChannelWriter(tx.clone());
            match tars::copy_first_file(reader, &mut out) {
                Ok(true) => {}
                Ok(false) => {
                    let _ = tx.blocking_send(Err(std::io::Error::other("not a regular file")));
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                }
            }
        });
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Download {
            name,
            is_dir,
            size,
            body: Box::pin(body),
        })
    }
}

impl Volumes {
    /// Deletes a file or a folder (with everything in it). The engine's archive API cannot
    /// delete, so: unpacking an empty file over the path makes the engine remove what was there,
    /// then the helper's one-syscall program unlinks that file.
    pub async fn delete_path(&self, vol: &VolumeRow, path: &InnerPath) -> Result<(), VolumeError> {
        if path.is_root() {
            return Err(VolumeError::RootFolder);
        }
        let engine = self.engine.client().await?;
        let arch = engine.arch().await?;
        if crate::docker::unlink_program(&arch).is_none() {
            return Err(VolumeError::NoUnlink(arch));
        }
        let h = self
            .helper(
                &vol.docker_volume_name,
                false,
                vec!["/unlink".into(), path.in_helper()],
            )
            .await?;
        let result = async {
            h.engine
                .stat_path(&h.id, &path.in_helper())
                .await
                .map_err(|e| match e {
                    EngineError::NotFound(_) => VolumeError::NotInVolume(path.as_str().to_string()),
                    other => other.into(),
                })?;
            let tar = tars::placeholder_tar(path)?;
            h.engine
                .put_archive_bytes(&h.id, crate::domain::volume::HELPER_MOUNT, tar)
                .await
                .map_err(|source| VolumeError::NotDeleted {
                    path: path.as_str().to_string(),
                    source,
                })?;
            Ok::<_, VolumeError>(h.engine.run_to_exit(&h.id).await?)
        }
        .await;
        h.done().await;
        match result? {
            0 => Ok(()),
            13 => Err(VolumeError::DeleteDenied(path.as_str().to_string())),
            errno => Err(VolumeError::DeleteErrno {
                path: path.as_str().to_string(),
                errno,
            }),
        }
    }
}

impl Volumes {
    /// Names of the apps whose mounts use the volume.
    pub async fn mounted_by(&self, docker_name: &str) -> Result<Vec<String>, VolumeError> {
        Ok(self
            .store
            .apps()
            .await?
            .into_iter()
            .filter(|a| Mounts::from_column(a.volume_mounts.as_deref()).uses(docker_name))
            .map(|a| a.name)
            .collect())
    }
}

impl Volumes {
    /// Removes the volume and its row. Refused while an app mounts it; a volume already gone from
    /// the engine is taken off the list.
    pub async fn remove(&self, vol: &VolumeRow) -> Result<String, VolumeError> {
        let apps = self.mounted_by(&vol.docker_volume_name).await?;
        if !apps.is_empty() {
            return Err(VolumeError::Mounted {
                volume: vol.volume_name.clone(),
                apps: apps.join(", "),
                which: if apps.len() == 1 {
                    "that app"
                } else {
                    "those apps"
                },
            });
        }
        let engine = self.engine.client().await?;
        // A helper a killed backup left would hold the volume in use.
        remove_dead_backup_helpers(&engine, &self.settings.data_dir).await;
        let message = match engine.remove_volume(&vol.docker_volume_name).await {
            Ok(()) => format!("Volume {} deleted successfully", vol.volume_name),
            Err(EngineError::NotFound(_)) => format!(
                "Volume {} was already gone from Docker; it was taken off the list",
                vol.volume_name
            ),
            Err(e) => return Err(VolumeError::Remove(e)),
        };
        self.store.delete_volume(vol.volume_id).await?;
        Ok(message)
    }
}

/// An engine byte stream as a blocking reader, for the tar parser on a blocking thread.
fn sync_reader(
    stream: impl Stream<Item = Result<Bytes, EngineError>> + Send + Unpin + 'static,
) -> impl std::io::Read + Send + 'static {
    let stream = stream.map_err(|e| std::io::Error::other(e.to_string()));
    tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream))
}

/// Sends what is written to a channel, blocking when the reader is slow (backpressure).
struct ChannelWriter(tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "download cancelled")
            })?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes the whole of `docker_name` as a tar to `file` (for backups), streaming. Returns its
/// size. The helper is created with `labels` and removed after.
pub async fn export_to(
    engine: &Engine,
    docker_name: &str,
    labels: HashMap<String, String>,
    file: &std::path::Path,
) -> Result<u64, VolumeError> {
    use tokio::io::AsyncWriteExt;
    let id = engine
        .create_volume_helper(docker_name, true, vec![], labels)
        .await?;
    let result = async {
        let mut out = tokio::fs::File::create(file).await?;
        // `/volume/.`: entries named `./…`, so the tar unpacks into any mount point.
        let path = format!("{}/.", crate::domain::volume::HELPER_MOUNT);
        let mut stream = Box::pin(engine.get_archive(&id, &path));
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            out.write_all(&chunk).await.map_err(|e| {
                VolumeError::Disk(crate::service::leftovers::write_error(
                    &e,
                    "Volume data",
                    file,
                ))
            })?;
            crate::config::pause_here("backup-reading-volume").await;
        }
        out.flush().await.map_err(|e| {
            VolumeError::Disk(crate::service::leftovers::write_error(
                &e,
                "Volume data",
                file,
            ))
        })?;
        out.sync_all().await?;
        Ok::<_, VolumeError>(size)
    }
    .await;
    crate::service::removed(
        "remove a helper container",
        engine.remove_container(&id).await,
    );
    result
}

/// Puts a tar written by [`export_to`] back into `docker_name` (owners and modes kept).
pub async fn import_from(
    engine: &Engine,
    docker_name: &str,
    labels: HashMap<String, String>,
    file: &std::path::Path,
) -> Result<(), VolumeError> {
    let id = engine
        .create_volume_helper(docker_name, false, vec![], labels)
        .await?;
    let result = engine
        .put_archive(&id, crate::domain::volume::HELPER_MOUNT, file)
        .await
        .map_err(VolumeError::from);
    crate::service::removed(
        "remove a helper container",
        engine.remove_container(&id).await,
    );
    result
}

impl Volumes {
    /// Removes helper containers a crash left behind (they hold volumes in use): the server's own,
    /// and those of a `milkcrate backup` or `restore` of this data folder that was killed.
    pub async fn remove_stale_helpers(&self, engine: &Engine) {
        let labels = self.settings.scoped(HELPER_ROLE.to_string());
        if let Ok(list) = engine.list_labelled(&labels, &self.settings.network).await {
            for c in list {
                crate::service::removed(
                    "remove a helper container",
                    engine.remove_container(&c.id).await,
                );
            }
        }
        remove_dead_backup_helpers(engine, &self.settings.data_dir).await;
    }
}

impl Volumes {
    /// Makes a new, empty volume's top folder belong to `nobody` (the user apps run as): the engine
    /// creates volumes owned by root, and a volume that is still empty takes the owner of the
    /// folder it is first mounted over, which in the helper image is `nobody`'s `/volume`. So
    /// creating a helper on it is enough for the engines tested (20.10 copies at create). The
    /// helper is also started once, for engines that copy at start: its program, given no path,
    /// unlinks nothing and exits (an engine without the program for its architecture refuses the
    /// start, which changes nothing either).
    pub async fn hand_to_apps(&self, docker_name: &str) -> Result<(), EngineError> {
        let h = self.helper(docker_name, false, Vec::new()).await?;
        let _ = h.engine.run_to_exit(&h.id).await;
        h.done().await;
        Ok(())
    }
}

impl Volumes {
    /// Makes `user` the owner of the volume's top folder, so a service running as that user can
    /// write it (files already inside keep their owners).
    pub async fn hand_to(
        &self,
        docker_name: &str,
        user: crate::domain::hardening::RunAs,
    ) -> Result<(), EngineError> {
        let engine = self.engine.client().await?;
        if engine.volume_labels(docker_name).await?.is_none() {
            return Err(EngineError::NotFound(format!(
                "the Docker volume {docker_name} (removed outside milkcrate?)"
            )));
        }
        let mut labels = self.settings.label_map(MANAGED, "true");
        let (k, v) = HELPER_ROLE.split_once('=').unwrap_or_default();
        labels.insert(k.into(), v.into());
        engine
            .set_volume_owner(docker_name, user.uid(), user.gid(), labels)
            .await
    }
}

/// Role label of the helpers `milkcrate backup` and `restore` create.
pub const BACKUP_HELPER_ROLE: &str = "milkcrate.role=backup-helper";
/// Label naming the data folder a backup helper works for (a hash of its full path).
pub const DATA_DIR_LABEL: &str = "milkcrate.data-dir";
/// Label naming the process that created a backup helper (see `leftovers::Owner`).
pub const OWNER_LABEL: &str = "milkcrate.owner";

/// A short tag for a data folder: the same folder gives the same tag whatever path led to it.
pub fn data_dir_tag(data_dir: &std::path::Path) -> String {
    use sha2::Digest;
    let full = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    hex::encode(&sha2::Sha256::digest(full.as_os_str().as_encoded_bytes())[..8])
}

/// Labels of a helper made by this `backup`/`restore` process for `data_dir`: managed (and
/// the install's instance when named), its role, its data folder and its owner, so the next
/// backup or server start removes it if this process dies, and never touches another
/// install's or a live process's helpers.
pub fn backup_helper_labels(
    data_dir: &std::path::Path,
    instance: Option<&str>,
) -> HashMap<String, String> {
    let mut labels = HashMap::from([(MANAGED.to_string(), "true".to_string())]);
    if let Some(i) = instance {
        labels.insert(crate::config::INSTANCE_LABEL.into(), i.into());
    }
    let (k, v) = BACKUP_HELPER_ROLE.split_once('=').unwrap_or_default();
    labels.insert(k.into(), v.into());
    labels.insert(DATA_DIR_LABEL.into(), data_dir_tag(data_dir));
    labels.insert(
        OWNER_LABEL.into(),
        crate::service::leftovers::Owner::current().as_str().into(),
    );
    labels
}

/// Removes the helpers that a killed `backup` or `restore` of `data_dir` left (their owner
/// process is gone). Returns how many went.
pub async fn remove_dead_backup_helpers(engine: &Engine, data_dir: &std::path::Path) -> usize {
    let filter = vec![
        BACKUP_HELPER_ROLE.to_string(),
        format!("{DATA_DIR_LABEL}={}", data_dir_tag(data_dir)),
    ];
    let Ok(list) = engine.helpers_labelled(&filter).await else {
        return 0;
    };
    let mut removed = 0;
    for (id, labels) in list {
        let owner = labels.get(OWNER_LABEL).map(String::as_str).unwrap_or("");
        if crate::service::leftovers::Owner::is_alive(owner) {
            continue;
        }
        if engine.remove_container(&id).await.is_ok() {
            tracing::info!(container = %id, "removed a helper an interrupted backup left");
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(path: &str, size: u64, is_dir: bool) -> VolumeEntry {
        VolumeEntry {
            path: path.into(),
            size,
            is_dir,
        }
    }

    #[test]
    fn a_folder_shows_its_children_with_sizes_under_them() {
        let entries = vec![
            e("a.txt", 5, false),
            e("docs", 0, true),
            e("docs/x", 10, false),
            e("docs/deep/y", 20, false),
            e("implicit/z", 1, false),
        ];
        let root = children(&entries, &InnerPath::default());
        let names: Vec<_> = root
            .iter()
            .map(|c| (c.name.as_str(), c.is_dir, c.size))
            .collect();
        assert_eq!(
            names,
            vec![
                ("docs", true, 30),
                ("implicit", true, 1),
                ("a.txt", false, 5)
            ]
        );
        let docs = children(&entries, &InnerPath::parse("docs").unwrap());
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].path, "docs/deep");
        assert_eq!(totals(&entries), (4, 36));
    }

    #[test]
    fn errors_say_the_sentences_the_pages_show() {
        let said = |e: VolumeError| e.to_string();
        assert_eq!(
            said(VolumeError::Exists("data".into())),
            "Volume data already exists"
        );
        assert_eq!(
            said(VolumeError::Mounted {
                volume: "data".into(),
                apps: "shop, blog".into(),
                which: "those apps",
            }),
            "Volume data is mounted by shop, blog; remove it from those apps first"
        );
        assert_eq!(
            said(VolumeError::NotInVolume("docs/a.txt".into())),
            "docs/a.txt is not in the volume"
        );
        assert_eq!(
            said(VolumeError::DeleteErrno {
                path: "a".into(),
                errno: 5,
            }),
            "Could not delete a: the system said error 5"
        );
        let engine = VolumeError::Upload(EngineError::NotFound("x".into()));
        assert!(said(engine).starts_with("Upload failed: "));
        let sourced = VolumeError::Remove(EngineError::NotFound("x".into()));
        assert!(
            std::error::Error::source(&sourced).is_some(),
            "the engine's error is kept"
        );
    }
}
