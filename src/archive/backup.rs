//! Backups: a `.tar.gz` holding files of the data folder and a `manifest.json` with each file's
//! size and SHA-256. Restores verify the whole archive before writing anything: every entry is
//! a plain file at a relative path without `..`, listed in the manifest with a matching checksum.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Component, Path};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::seal::OpenKey;

pub const MANIFEST: &str = "manifest.json";

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub created: String,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the backup entry '{0}' {1}; nothing was restored")]
    Unsafe(String, &'static str),
    #[error(
        "the backup entry '{0}' does not match its checksum: the file was altered or damaged; nothing was restored"
    )]
    Tampered(String),
    #[error("the backup has no valid manifest.json; nothing was restored")]
    NoManifest,
    #[error("the backup lacks '{0}', which its manifest lists; nothing was restored")]
    Missing(String),
    #[error("{0}")]
    Sealed(#[from] super::seal::OpenError),
}

fn open_tar(
    path: &Path,
    key: Option<&OpenKey>,
) -> Result<tar::Archive<GzDecoder<Box<dyn Read>>>, BackupError> {
    Ok(tar::Archive::new(GzDecoder::new(super::seal::open(
        path, key,
    )?)))
}

/// Writes `files` (archive path → file on disk) into a gzip'd tar in `out` (a file, an
/// encrypting writer, an upload: the caller chooses, and finishes what it returns), with a
/// manifest. Files are streamed (volume data can be large) and hashed on the way. `progress`
/// is told each file as it is added.
pub fn write_backup<W: Write>(
    out: W,
    created: &str,
    files: &[(String, std::path::PathBuf)],
    mut progress: impl FnMut(&str, u64),
) -> Result<(Manifest, W), BackupError> {
    let mut tar = tar::Builder::new(GzEncoder::new(out, Compression::default()));
    let mut manifest = Manifest {
        format: 1,
        created: created.to_string(),
        files: Vec::new(),
    };
    for (name, path) in files {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        let mut header = header(size);
        let mut hashing = Hashing::new(file.take(size));
        tar.append_data(&mut header, name, &mut hashing)?;
        if hashing.read != size {
            return Err(BackupError::Io(io::Error::other(format!(
                "{name} changed while it was being backed up"
            ))));
        }
        progress(name, size);
        manifest.files.push(ManifestFile {
            path: name.clone(),
            size,
            sha256: hex::encode(hashing.hasher.finalize()),
        });
    }
    let json = serde_json::to_vec_pretty(&manifest).map_err(io::Error::other)?;
    append(&mut tar, MANIFEST, &json)?;
    let out = tar.into_inner()?.finish()?;
    Ok((manifest, out))
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            read: 0,
        }
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

fn header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o600);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

fn append<W: Write>(tar: &mut tar::Builder<W>, name: &str, data: &[u8]) -> io::Result<()> {
    tar.append_data(&mut header(data.len() as u64), name, data)
}

/// Checks the whole backup without writing anything: every entry is a plain file at a
/// relative path without `..`, listed in the manifest with a matching size and checksum, and
/// every listed file is there. Streams (volume data can be large).
pub fn verify(path: &Path, key: Option<&OpenKey>) -> Result<Manifest, BackupError> {
    let mut archive = open_tar(path, key)?;
    let mut seen: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut manifest: Option<Manifest> = None;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = checked_name(&entry)?;
        if name == MANIFEST {
            let mut data = Vec::new();
            (&mut entry).take(16 << 20).read_to_end(&mut data)?;
            manifest = Some(serde_json::from_slice(&data).map_err(|_| BackupError::NoManifest)?);
            continue;
        }
        let mut hashing = Hashing::new(&mut entry);
        io::copy(&mut hashing, &mut io::sink())?;
        let (read, hash) = (hashing.read, hex::encode(hashing.hasher.finalize()));
        seen.insert(name, (read, hash));
    }
    let manifest = manifest.ok_or(BackupError::NoManifest)?;
    for f in &manifest.files {
        let (size, hash) = seen
            .get(&f.path)
            .ok_or_else(|| BackupError::Missing(f.path.clone()))?;
        if *size != f.size || *hash != f.sha256 {
            return Err(BackupError::Tampered(f.path.clone()));
        }
    }
    if let Some(extra) = seen
        .keys()
        .find(|k| !manifest.files.iter().any(|f| &f.path == *k))
    {
        return Err(BackupError::Unsafe(
            extra.clone(),
            "is not listed in the manifest",
        ));
    }
    Ok(manifest)
}

fn checked_name<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, BackupError> {
    let name = entry.path()?.to_string_lossy().to_string();
    if !entry.header().entry_type().is_file() {
        return Err(BackupError::Unsafe(
            name,
            "is not a plain file (links and devices are refused)",
        ));
    }
    let p = Path::new(&name);
    if p.is_absolute() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(BackupError::Unsafe(
            name,
            "would land outside the data folder",
        ));
    }
    Ok(name)
}

/// Writes the files of a backup that [`verify`] accepted into `dir` (0600 each), checking
/// every file against the manifest again as it goes (the archive could have changed since).
pub fn extract_verified(
    path: &Path,
    manifest: &Manifest,
    dir: &Path,
    key: Option<&OpenKey>,
) -> Result<(), BackupError> {
    use std::os::unix::fs::PermissionsExt;
    let mut archive = open_tar(path, key)?;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = checked_name(&entry)?;
        if name == MANIFEST {
            continue;
        }
        let expected = manifest
            .files
            .iter()
            .find(|f| f.path == name)
            .ok_or_else(|| BackupError::Unsafe(name.clone(), "is not listed in the manifest"))?;
        let target = dir.join(&name);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut out = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&target)?
        };
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600))?;
        let mut hashing = Hashing::new(&mut entry);
        io::copy(&mut hashing, &mut out)?;
        out.sync_all()?;
        if hashing.read != expected.size
            || hex::encode(hashing.hasher.finalize()) != expected.sha256
        {
            return Err(BackupError::Tampered(name));
        }
    }
    Ok(())
}
