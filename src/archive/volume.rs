//! Tar streams for volumes: what milkcrate sends the engine to put files into a volume, and how
//! it reads the tar the engine sends back when it lists or downloads. Names travel inside tar
//! headers, never through a shell or a `path|size` text format, so any file name works.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::tarwriter::SafeTar;
use super::{ArchiveError, ZipLimits, check_entries, entry_at, open};
use crate::domain::volume::{FILE_OWNER, InnerPath};

/// Files land owned by `nobody` (the user apps run as) so apps can write them; files are
/// 0644 and folders 0755: no setuid and no executable surprises in data.
fn header(kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_uid(FILE_OWNER);
    h.set_gid(FILE_OWNER);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_mtime(now());
    h
}

fn now() -> u64 {
    crate::clock::now_unix().max(0) as u64
}

fn add_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str) -> io::Result<()> {
    let mut h = header(tar::EntryType::Directory, 0);
    tar.append_data(&mut h, format!("{path}/"), io::empty())
}

/// What one upload puts into a volume.
#[derive(Debug, Default)]
pub struct VolumeUpload {
    /// Plain files: the name to give them and where they were spooled.
    pub files: Vec<(String, PathBuf)>,
    /// ZIPs to unpack, already checked with [`check_volume_zip`].
    pub zips: Vec<PathBuf>,
}

/// Checks a ZIP for a volume with the same rules as app ZIPs; returns how many files it holds.
pub fn check_volume_zip(path: &Path, limits: &ZipLimits) -> Result<usize, ArchiveError> {
    let (names, _) = check_entries(path, limits)?;
    Ok(names.iter().filter(|(_, dir)| !dir).count())
}

/// Writes `upload` as one tar to be unpacked at the volume's root: everything under `folder`,
/// with the folder's parents included (so they exist and belong to `nobody`). Returns the
/// writer and the number of files written. Written through the one [`SafeTar`]: an entry
/// that does not hold what it declares, or two entries on one path, fail the whole upload.
pub fn write_upload_tar<W: Write>(
    upload: &VolumeUpload,
    folder: &InnerPath,
    out: W,
) -> Result<(W, usize), ArchiveError> {
    let (w, placed) = write_upload_tar_staged(upload, folder, None, out)?;
    Ok((w, placed.len()))
}

/// Prefix of the names files are unpacked under before they are renamed into place.
pub const STAGED_PREFIX: &str = ".milkcrate-upload-";

/// As [`write_upload_tar`], but with `stage` each file is written beside its target under a
/// temporary name `.milkcrate-upload-<stage>-<n>` (folders under their real names). Returns
/// the writer and, per file in order, (name written, final name), both relative to the
/// volume root: renaming them in that order puts the upload in place.
pub fn write_upload_tar_staged<W: Write>(
    upload: &VolumeUpload,
    folder: &InnerPath,
    stage: Option<&str>,
    out: W,
) -> Result<(W, Vec<(String, String)>), ArchiveError> {
    let mut placed: Vec<(String, String)> = Vec::new();
    let mut staged = |target: &InnerPath| -> String {
        let target = target.as_str().to_string();
        let written = match stage {
            None => target.clone(),
            Some(tag) => {
                let name = format!("{STAGED_PREFIX}{tag}-{}", placed.len());
                match target.rsplit_once('/') {
                    Some((parent, _)) => format!("{parent}/{name}"),
                    None => name,
                }
            }
        };
        placed.push((written.clone(), target));
        written
    };
    let mut tar = SafeTar::new(out, FILE_OWNER, now());
    let within = |rel: &str| -> Result<InnerPath, ArchiveError> {
        folder.join(rel).map_err(|why| ArchiveError::Unsafe {
            entry: rel.to_string(),
            why: if why.contains("NUL") {
                "has an invalid name"
            } else {
                "is not a path inside the volume"
            },
        })
    };
    folders(&mut tar, folder.as_str(), folder.as_str())?;
    for (name, path) in &upload.files {
        let target = within(name)?;
        folders(&mut tar, target.parent().as_str(), name)?;
        let file = std::fs::File::open(path)?;
        let size = file.metadata()?.len();
        let written = staged(&target);
        tar.file(&written, name, size, 0o644, file)?;
    }
    for zip_path in &upload.zips {
        let mut zip = open(zip_path)?;
        for i in 0..zip.len() {
            let entry = entry_at(&mut zip, i)?;
            if entry.path.is_empty() {
                continue;
            }
            let target = within(&entry.path)?;
            if entry.is_dir {
                folders(&mut tar, target.as_str(), &entry.raw)?;
                continue;
            }
            folders(&mut tar, target.parent().as_str(), &entry.raw)?;
            let declared = entry.file.size();
            let written = staged(&target);
            tar.file(&written, &entry.raw, declared, 0o644, entry.file)?;
        }
    }
    Ok((tar.finish()?, placed))
}

/// Writes `dir` and every folder above it that is not written yet (owned by nobody, not left
/// to the engine). Walks up only as far as the first folder already there, so each folder
/// costs one look-up however deep it is.
fn folders<W: Write>(tar: &mut SafeTar<W>, dir: &str, entry: &str) -> Result<(), ArchiveError> {
    let mut missing = Vec::new();
    let mut d = dir;
    while !d.is_empty() && !tar.has_folder(d) {
        missing.push(d);
        d = d.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
    }
    missing
        .into_iter()
        .rev()
        .try_for_each(|m| tar.folder(m, 0o755, entry))
}

/// A tar holding one empty regular file at `path` (relative to the volume root). Unpacked
/// over a file or a folder, the engine first removes what was there (recursively).
pub fn placeholder_tar(path: &InnerPath) -> io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::Regular, 0);
    tar.append_data(&mut h, path.as_str(), io::empty())?;
    tar.into_inner()
}

/// The volume helper image's root file system: an empty `/volume` owned by `nobody` (a new
/// volume mounted there takes that owner) and each `(name, program)` at `/<name>`.
pub fn helper_rootfs(programs: &[(&str, &[u8])]) -> io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    add_dir(&mut tar, "volume")?;
    for (name, program) in programs {
        let mut file = tar::Header::new_gnu();
        file.set_size(program.len() as u64);
        file.set_mode(0o755);
        tar.append_data(&mut file, name, *program)?;
    }
    tar.into_inner()
}

/// One entry of a volume, as the engine's archive of it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeEntry {
    /// Relative to the folder that was archived (the archive's own top folder stripped).
    pub path: String,
    pub size: u64,
    pub is_dir: bool,
}

/// Reads the headers of a tar the engine sent for a folder (its entries are named
/// `<folder>/...`), skipping the file contents.
pub fn scan<R: Read>(reader: R) -> io::Result<Vec<VolumeEntry>> {
    let mut archive = tar::Archive::new(reader);
    let mut out = Vec::new();
    for entry in archive.entries()? {
        let entry = entry?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = match raw.trim_end_matches('/').split_once('/') {
            Some((_, rest)) => rest.to_string(),
            None => continue,
        };
        let kind = entry.header().entry_type();
        out.push(VolumeEntry {
            path,
            size: if kind.is_file() { entry.size() } else { 0 },
            is_dir: kind.is_dir(),
        });
    }
    Ok(out)
}

/// Copies the contents of the first regular file in a tar to `out`; false when there is none.
pub fn copy_first_file<R: Read, W: Write>(reader: R, out: &mut W) -> io::Result<bool> {
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type().is_file() {
            io::copy(&mut entry, out)?;
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_land_under_the_folder_owned_by_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("spool");
        std::fs::write(&f, b"hello").unwrap();
        let upload = VolumeUpload {
            files: vec![("we|ird\nname ü.txt".into(), f)],
            zips: vec![],
        };
        let folder = InnerPath::parse("docs/2026").unwrap();
        let (bytes, n) = write_upload_tar(&upload, &folder, Vec::new()).unwrap();
        assert_eq!(n, 1);
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            assert_eq!(e.header().uid().unwrap(), 65534);
            assert_eq!(e.header().gid().unwrap(), 65534);
            let mode = e.header().mode().unwrap();
            assert!(mode == 0o644 || mode == 0o755);
            seen.push(String::from_utf8_lossy(&e.path_bytes()).into_owned());
        }
        assert_eq!(
            seen,
            vec!["docs/", "docs/2026/", "docs/2026/we|ird\nname ü.txt"]
        );
    }

    #[test]
    fn a_file_name_cannot_climb_out() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("spool");
        std::fs::write(&f, b"x").unwrap();
        for bad in ["../x", "a/../../x", ""] {
            let upload = VolumeUpload {
                files: vec![(bad.into(), f.clone())],
                zips: vec![],
            };
            assert!(
                write_upload_tar(&upload, &InnerPath::default(), Vec::new()).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_staged_upload_writes_temporary_names_beside_the_targets() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("spool");
        std::fs::write(&f, b"hello").unwrap();
        let upload = VolumeUpload {
            files: vec![("a.txt".into(), f.clone()), ("b.txt".into(), f)],
            zips: vec![],
        };
        let folder = InnerPath::parse("docs").unwrap();
        let (bytes, placed) =
            write_upload_tar_staged(&upload, &folder, Some("T"), Vec::new()).unwrap();
        assert_eq!(
            placed,
            vec![
                ("docs/.milkcrate-upload-T-0".into(), "docs/a.txt".into()),
                ("docs/.milkcrate-upload-T-1".into(), "docs/b.txt".into()),
            ]
        );
        let names: Vec<String> = tar::Archive::new(&bytes[..])
            .entries()
            .unwrap()
            .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
            .collect();
        assert_eq!(
            names,
            vec![
                "docs/",
                "docs/.milkcrate-upload-T-0",
                "docs/.milkcrate-upload-T-1"
            ]
        );
    }

    #[test]
    fn scan_reads_names_and_sizes_only() {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        tar.append_data(&mut h, "volume/", io::empty()).unwrap();
        let long = format!("volume/{}/x|y\nz.txt", "d".repeat(150));
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        tar.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        let bytes = tar.into_inner().unwrap();
        let entries = scan(&bytes[..]).unwrap();
        assert_eq!(
            entries,
            vec![VolumeEntry {
                path: format!("{}/x|y\nz.txt", "d".repeat(150)),
                size: 3,
                is_dir: false
            }]
        );
        let mut out = Vec::new();
        assert!(copy_first_file(&bytes[..], &mut out).unwrap());
        assert_eq!(out, b"abc");
    }
}
