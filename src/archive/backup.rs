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
}

/// Writes `files` (archive path → file on disk) into a gzip'd tar at `out`, with a manifest.
/// `progress` is told each file as it is added.
pub fn write_backup(
    out: &Path,
    created: &str,
    files: &[(String, std::path::PathBuf)],
    mut progress: impl FnMut(&str, u64),
) -> Result<Manifest, BackupError> {
    let mut tar = tar::Builder::new(GzEncoder::new(File::create(out)?, Compression::default()));
    let mut manifest = Manifest {
        format: 1,
        created: created.to_string(),
        files: Vec::new(),
    };
    for (name, path) in files {
        let mut data = Vec::new();
        File::open(path)?.read_to_end(&mut data)?;
        append(&mut tar, name, &data)?;
        progress(name, data.len() as u64);
        manifest.files.push(ManifestFile {
            path: name.clone(),
            size: data.len() as u64,
            sha256: hex::encode(Sha256::digest(&data)),
        });
    }
    let json = serde_json::to_vec_pretty(&manifest).map_err(io::Error::other)?;
    append(&mut tar, MANIFEST, &json)?;
    tar.into_inner()?.finish()?.sync_all()?;
    Ok(manifest)
}

fn append<W: Write>(tar: &mut tar::Builder<W>, name: &str, data: &[u8]) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, name, data)
}

/// Checks the whole backup and returns its files in memory (path → bytes) with its manifest.
/// Nothing is written: a bad archive is refused before any change.
pub fn read_verified(path: &Path) -> Result<(Manifest, BTreeMap<String, Vec<u8>>), BackupError> {
    let mut archive = tar::Archive::new(GzDecoder::new(File::open(path)?));
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
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
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        files.insert(name, data);
    }
    let manifest: Manifest = files
        .remove(MANIFEST)
        .and_then(|m| serde_json::from_slice(&m).ok())
        .ok_or(BackupError::NoManifest)?;
    for f in &manifest.files {
        let data = files
            .get(&f.path)
            .ok_or_else(|| BackupError::Missing(f.path.clone()))?;
        if data.len() as u64 != f.size || hex::encode(Sha256::digest(data)) != f.sha256 {
            return Err(BackupError::Tampered(f.path.clone()));
        }
    }
    if let Some(extra) = files
        .keys()
        .find(|k| !manifest.files.iter().any(|f| &f.path == *k))
    {
        return Err(BackupError::Unsafe(
            extra.clone(),
            "is not listed in the manifest",
        ));
    }
    Ok((manifest, files))
}
