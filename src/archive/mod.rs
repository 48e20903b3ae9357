//! ZIP and tar: the only module that touches them. An uploaded ZIP is checked entry by entry
//! before anything is unpacked (each refusal names the entry), then written straight into a
//! tar build context for the engine, honouring `.dockerignore` and keeping file modes, so an
//! executable script in the ZIP stays executable in the image. Nothing is extracted to disk.

pub mod backup;
mod dockerignore;
pub mod package;

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::Path;

pub use dockerignore::DockerIgnore;

/// Compose file names, in the order they are looked for (compose wins over a Dockerfile).
pub const COMPOSE_FILES: &[&str] = &[
    "docker-compose.yml",
    "docker-compose.yaml",
    "compose.yml",
    "compose.yaml",
];

#[derive(Debug, Clone, Copy)]
pub struct ZipLimits {
    pub max_entries: usize,
    pub max_total_bytes: u64,
    /// An entry over 1 MiB that expands more than this many times is refused as a bomb.
    pub max_ratio: u64,
}

impl Default for ZipLimits {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_total_bytes: 512 * 1024 * 1024,
            max_ratio: 200,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("The file is not a valid ZIP archive ({0}).")]
    NotZip(String),
    #[error("The ZIP holds {count} entries; at most {max} are accepted.")]
    TooManyEntries { count: usize, max: usize },
    #[error("The ZIP would unpack to more than {max_mib} MiB (MILKCRATE_ZIP_MAX_BYTES).")]
    TooLarge { max_mib: u64 },
    #[error(
        "The ZIP entry '{0}' expands far beyond its compressed size; it looks like a ZIP bomb."
    )]
    Bomb(String),
    #[error("The ZIP entry '{entry}' {why}.")]
    Unsafe { entry: String, why: &'static str },
    #[error("The ZIP entry '{0}' appears twice.")]
    Duplicate(String),
    #[error(
        "Invalid ZIP file. Must contain either a Dockerfile or docker-compose.yml file (at the top, or inside one top folder)."
    )]
    NoBuildFile,
    #[error("could not read the ZIP: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppKind {
    Dockerfile,
    /// The compose file's name inside the app folder.
    Compose(String),
}

/// A ZIP that passed every check.
#[derive(Debug, Clone)]
pub struct CheckedZip {
    pub kind: AppKind,
    /// The single top folder everything sits in (`app/`), stripped when building.
    pub prefix: String,
    pub entries: usize,
    pub total_bytes: u64,
}

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;

/// Checks every entry of the ZIP at `path` without unpacking it.
pub fn check_zip(path: &Path, limits: &ZipLimits) -> Result<CheckedZip, ArchiveError> {
    let (names, total) = check_entries(path, limits)?;
    let prefix = common_top_folder(&names);
    let top_level = |file: &str| {
        names
            .iter()
            .any(|(n, dir)| !dir && *n == format!("{prefix}{file}"))
    };
    let kind = match COMPOSE_FILES.iter().find(|f| top_level(f)) {
        Some(f) => AppKind::Compose((*f).to_string()),
        None if top_level("Dockerfile") => AppKind::Dockerfile,
        None => return Err(ArchiveError::NoBuildFile),
    };
    Ok(CheckedZip {
        kind,
        prefix,
        entries: names.len(),
        total_bytes: total,
    })
}

/// Checks every entry of a ZIP before anything is unpacked: names (no absolute paths, `..`,
/// backslashes), kinds (no links or devices), duplicates, count, total size and ratio. Returns
/// the entry names (without trailing `/`, with whether each is a folder) and the total size.
pub fn check_entries(
    path: &Path,
    limits: &ZipLimits,
) -> Result<(Vec<(String, bool)>, u64), ArchiveError> {
    let mut zip = open(path)?;
    if zip.len() > limits.max_entries {
        return Err(ArchiveError::TooManyEntries {
            count: zip.len(),
            max: limits.max_entries,
        });
    }
    let mut seen = HashSet::new();
    let mut names = Vec::with_capacity(zip.len());
    let mut total: u64 = 0;
    for i in 0..zip.len() {
        let entry = zip
            .by_index_raw(i)
            .map_err(|e| ArchiveError::NotZip(e.to_string()))?;
        let name = entry
            .name()
            .map_err(|e| ArchiveError::NotZip(e.to_string()))?
            .to_string();
        check_name(&name)?;
        let mode = entry.unix_mode().unwrap_or(0);
        match mode & S_IFMT {
            0 | S_IFREG | S_IFDIR => {}
            S_IFLNK => {
                return Err(unsafe_entry(
                    &name,
                    "is a symbolic link; links are not accepted",
                ));
            }
            _ => return Err(unsafe_entry(&name, "is a device or other special file")),
        }
        let key = name.trim_end_matches('/').to_string();
        if !seen.insert(key.clone()) {
            return Err(ArchiveError::Duplicate(name));
        }
        let size = entry.size();
        total = total.saturating_add(size);
        if total > limits.max_total_bytes {
            return Err(ArchiveError::TooLarge {
                max_mib: limits.max_total_bytes >> 20,
            });
        }
        if size > 1024 * 1024 && size / entry.compressed_size().max(1) > limits.max_ratio {
            return Err(ArchiveError::Bomb(name));
        }
        names.push((key, entry.is_dir() || mode & S_IFMT == S_IFDIR));
    }
    Ok((names, total))
}

fn check_name(name: &str) -> Result<(), ArchiveError> {
    if name.is_empty() || name.contains('\0') {
        return Err(unsafe_entry(name, "has an empty or invalid name"));
    }
    if name.contains('\\') {
        return Err(unsafe_entry(name, "uses backslashes in its path"));
    }
    if name.starts_with('/') || name.as_bytes().get(1) == Some(&b':') {
        return Err(unsafe_entry(name, "has an absolute path"));
    }
    if name.split('/').any(|c| c == "..") {
        return Err(unsafe_entry(name, "climbs out of the app folder with '..'"));
    }
    Ok(())
}

fn unsafe_entry(name: &str, why: &'static str) -> ArchiveError {
    ArchiveError::Unsafe {
        entry: name.to_string(),
        why,
    }
}

/// `app/` when every entry sits in one top folder, else empty.
fn common_top_folder(names: &[(String, bool)]) -> String {
    let mut top: Option<&str> = None;
    for (name, is_dir) in names {
        match name.split_once('/') {
            Some((first, _)) => {
                if top.is_some_and(|t| t != first) {
                    return String::new();
                }
                top = Some(first);
            }
            None if *is_dir => {
                if top.is_some_and(|t| t != name) {
                    return String::new();
                }
                top = Some(name);
            }
            None => return String::new(),
        }
    }
    top.map(|t| format!("{t}/")).unwrap_or_default()
}

/// The `i`th entry of a ZIP being read, with its name without a trailing `/`.
pub(crate) fn entry_at(
    zip: &mut zip::ZipArchive<File>,
    i: usize,
) -> Result<(zip::read::ZipFile<'_, File>, String), ArchiveError> {
    let entry = zip
        .by_index(i)
        .map_err(|e| ArchiveError::NotZip(e.to_string()))?;
    let name = entry
        .name()
        .map_err(|e| ArchiveError::NotZip(e.to_string()))?
        .trim_end_matches('/')
        .to_string();
    Ok((entry, name))
}

pub(crate) fn open(path: &Path) -> Result<zip::ZipArchive<File>, ArchiveError> {
    zip::ZipArchive::new(File::open(path)?).map_err(|e| ArchiveError::NotZip(e.to_string()))
}

/// Which folder of the app is the build context, and its Dockerfile (relative to it).
#[derive(Debug, Clone, Copy)]
pub struct BuildTarget<'a> {
    pub context: &'a str,
    pub dockerfile: &'a str,
}

impl BuildTarget<'static> {
    /// The app's top folder with its `Dockerfile`.
    pub const ROOT: Self = Self {
        context: "",
        dockerfile: "Dockerfile",
    };
}

/// Writes a folder of the app in a checked ZIP (the whole app for Dockerfile apps, a
/// service's context for compose apps) as a tar build context to `out`.
pub fn write_build_context<W: Write>(
    path: &Path,
    checked: &CheckedZip,
    target: BuildTarget<'_>,
    dockerfile_tail: &str,
    out: W,
) -> Result<W, ArchiveError> {
    let mut zip = open(path)?;
    let prefix = if target.context.is_empty() {
        checked.prefix.clone()
    } else {
        format!("{}{}/", checked.prefix, target.context)
    };
    let ignore = read_text(&mut zip, &format!("{prefix}.dockerignore"))?
        .map(|t| DockerIgnore::parse(&t))
        .unwrap_or_default();
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    for i in 0..zip.len() {
        let (mut entry, name) = entry_at(&mut zip, i)?;
        let Some(rel) = name
            .strip_prefix(&prefix)
            .or((prefix.is_empty()).then_some(name.as_str()))
        else {
            continue;
        };
        if rel.is_empty() || ignore.excluded(rel) {
            continue;
        }
        let mode = entry.unix_mode().unwrap_or(0);
        let is_dir = entry.is_dir() || mode & S_IFMT == S_IFDIR;
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        if is_dir {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(dir_mode(mode));
            header.set_size(0);
            tar.append_data(&mut header, rel, io::empty())?;
        } else {
            let size = entry.size();
            // The Dockerfile gets `dockerfile_tail` appended (milkcrate's labels, in one step).
            let tail: &[u8] = if rel == target.dockerfile {
                dockerfile_tail.as_bytes()
            } else {
                b""
            };
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(file_mode(mode));
            header.set_size(size + tail.len() as u64);
            // The declared size is what the tar header promises; a ZIP that lies fails here.
            let mut limited = (&mut entry).take(size).chain(tail);
            tar.append_data(&mut header, rel, &mut limited)?;
            if io::copy(&mut entry.take(1), &mut io::sink())? != 0 {
                return Err(ArchiveError::Bomb(name));
            }
        }
    }
    Ok(tar.into_inner()?)
}

/// A `LABEL` line setting all `labels` in one build step (values quoted and escaped), to be
/// appended to a Dockerfile. Passing labels as build options instead costs one step each.
pub fn label_instruction(labels: &[(String, String)]) -> String {
    let quote = |s: &str| {
        format!(
            "\"{}\"",
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', " ")
        )
    };
    let pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{}={}", quote(k), quote(v)))
        .collect();
    format!("\nLABEL {}\n", pairs.join(" "))
}

/// Apps run as 65534, not as the files' owner, so every file must be readable by all: many ZIP
/// tools store 0600. An executable bit for anyone makes it executable for all; setuid, setgid
/// and sticky bits are dropped.
fn file_mode(zip_mode: u32) -> u32 {
    let m = zip_mode & 0o777;
    let m = if m == 0 { 0o644 } else { m | 0o444 };
    if m & 0o111 != 0 { m | 0o111 } else { m }
}

fn dir_mode(zip_mode: u32) -> u32 {
    (zip_mode & 0o777) | 0o755
}

fn read_text<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
) -> Result<Option<String>, ArchiveError> {
    let Ok(entry) = zip.by_name(name) else {
        return Ok(None);
    };
    let mut text = String::new();
    entry.take(1024 * 1024).read_to_string(&mut text)?;
    Ok(Some(text))
}

/// The files of a checked ZIP's app folder, as the compose parser asks about them.
pub struct ZipAppFiles {
    path: std::path::PathBuf,
    checked: CheckedZip,
    names: HashSet<String>,
}

impl ZipAppFiles {
    pub fn open(path: &Path, checked: &CheckedZip) -> Result<Self, ArchiveError> {
        let zip = open(path)?;
        let names = zip
            .file_names()
            .filter_map(|n| n.ok())
            .filter_map(|n| {
                n.strip_prefix(&checked.prefix)
                    .map(|r| r.trim_end_matches('/').to_string())
            })
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            checked: checked.clone(),
            names,
        })
    }
}

impl crate::domain::compose::AppFiles for ZipAppFiles {
    fn has_file(&self, path: &str) -> bool {
        self.names.contains(path)
    }
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        read_app_file(&self.path, &self.checked, path, 1024 * 1024)
            .ok()
            .flatten()
    }
}

/// Reads one file of the app folder (a compose file, say), at most `max` bytes.
pub fn read_app_file(
    path: &Path,
    checked: &CheckedZip,
    file: &str,
    max: u64,
) -> Result<Option<Vec<u8>>, ArchiveError> {
    let mut zip = open(path)?;
    let Ok(entry) = zip.by_name(&format!("{}{file}", checked.prefix)) else {
        return Ok(None);
    };
    let mut buf = Vec::new();
    entry.take(max).read_to_end(&mut buf)?;
    Ok(Some(buf))
}

pub mod volume;

#[cfg(test)]
mod tests;
