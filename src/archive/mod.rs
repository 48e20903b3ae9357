//! ZIP and tar: the only module that touches them. An uploaded ZIP is checked entry by entry
//! before anything is unpacked (each refusal names the entry), then written straight into a
//! tar build context for the engine, honouring `.dockerignore` and keeping file modes, so an
//! executable script in the ZIP stays executable in the image. Nothing is extracted to disk.
//!
//! Every entry name is normalised once (`./a//b` is `a/b`) and the check and the writers use
//! that same name, so no two entries can land on one path and the check never sees another
//! file than the build uses. Tars are written only through [`tarwriter::SafeTar`].

pub mod backup;
mod dockerfile;
mod dockerignore;
mod imagefile;
pub use imagefile::{first_file_of_tar, owner_tar, write_zip};
pub mod package;
pub mod seal;
mod tarwriter;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use dockerfile::ends_in_continuation;
pub use dockerignore::DockerIgnore;
use tarwriter::{SafeTar, read_exact_entry};

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
    #[error(
        "The ZIP entries '{first}' and '{second}' would both be written to '{path}'; keep one."
    )]
    Collision {
        first: String,
        second: String,
        path: String,
    },
    #[error("The ZIP entries '{first}' and '{second}' differ only in case; keep one.")]
    CaseCollision { first: String, second: String },
    #[error("The ZIP entry '{file}' is a file, but '{inside}' would go inside it.")]
    FileAsFolder { file: String, inside: String },
    #[error(
        "The ZIP's paths need more than {max} folders, the most accepted (MILKCRATE_ZIP_MAX_ENTRIES)."
    )]
    TooManyFolders { max: usize },
    #[error("The ZIP lists one entry name twice; it is damaged or crafted.")]
    DuplicateNames,
    #[error(
        "The ZIP entry '{entry}' holds only {actual} of the {declared} bytes its header declares; the ZIP is damaged or crafted."
    )]
    ShortEntry {
        entry: String,
        actual: u64,
        declared: u64,
    },
    #[error(
        "The ZIP entry '{entry}' holds more than the {declared} bytes its header declares; the ZIP is damaged or crafted."
    )]
    LongEntry { entry: String, declared: u64 },
    #[error("The ZIP entry '{entry}' cannot be read ({why}); the ZIP is damaged or crafted.")]
    Unreadable { entry: String, why: String },
    #[error("The ZIP entry '{entry}' is larger than {max_kib} KiB, the most accepted for it.")]
    EntryTooLarge { entry: String, max_kib: u64 },
    #[error(
        "The Dockerfile '{0}' ends with a line continuation ('\\' or the escape character) on its last instruction, so the line milkcrate adds after it would be swallowed; remove the trailing continuation."
    )]
    DockerfileContinues(String),
    #[error("The work was stopped: the deploy was given up (time limit or shutdown).")]
    Cancelled,
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
    if kind == AppKind::Dockerfile {
        // Said at upload rather than after a queue and a build (the build refuses it too).
        let name = format!("{prefix}Dockerfile");
        let mut zip = open(path)?;
        let index = entry_index(&mut zip)?;
        if let Some(text) = read_entry(&mut zip, &index, &name, DOCKERFILE_MAX)?
            && ends_in_continuation(&text)
        {
            return Err(ArchiveError::DockerfileContinues(name));
        }
    }
    Ok(CheckedZip {
        kind,
        prefix,
        entries: names.len(),
        total_bytes: total,
    })
}

/// Checks every entry of a ZIP before anything is unpacked: names (no absolute paths, `..`,
/// backslashes, no more than Linux can hold), kinds (no links or devices), collisions (two
/// entries on one path after normalising, a file that another entry would go inside), count,
/// total size and ratio. Returns the normalised entry names (with whether each is a folder)
/// and the total size.
pub fn check_entries(
    path: &Path,
    limits: &ZipLimits,
) -> Result<(Vec<(String, bool)>, u64), ArchiveError> {
    let mut zip = open(path)?;
    if zip.has_duplicate_names() {
        return Err(ArchiveError::DuplicateNames);
    }
    if zip.len() > limits.max_entries {
        return Err(ArchiveError::TooManyEntries {
            count: zip.len(),
            max: limits.max_entries,
        });
    }
    let mut paths: Vec<ClaimedPath> = Vec::with_capacity(zip.len());
    let mut build_files: Vec<(String, String, String)> = Vec::new();
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
        let is_dir = entry.is_dir() || mode & S_IFMT == S_IFDIR;
        let key = normalise(&name);
        if key.is_empty() {
            if is_dir {
                continue; // `./`: the top itself.
            }
            return Err(unsafe_entry(&name, "has an empty or invalid name"));
        }
        paths.push(ClaimedPath {
            path: key.clone(),
            entry: name.clone(),
            is_dir,
        });
        let lower = key.to_ascii_lowercase();
        let base = lower.rsplit('/').next().unwrap_or_default();
        if base == "dockerfile" || base == ".dockerignore" || COMPOSE_FILES.contains(&base) {
            build_files.push((lower, key.clone(), name.clone()));
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
        names.push((key, is_dir));
    }
    check_paths(paths, limits.max_entries)?;
    // The engine falls back from `Dockerfile` to `dockerfile`: build files it could confuse
    // must not differ in case alone.
    let mut seen: HashMap<String, (String, String)> = HashMap::new();
    for (lower, key, name) in build_files {
        match seen.get(&lower) {
            Some((first_key, first)) if *first_key != key => {
                return Err(ArchiveError::CaseCollision {
                    first: first.clone(),
                    second: name,
                });
            }
            Some(_) => {}
            None => {
                seen.insert(lower, (key, name));
            }
        }
    }
    Ok((names, total))
}

/// The path an entry name stands for: empty and `.` components dropped (`./a//b/` is `a/b`),
/// as a tar reader or the engine would read it. Names are checked first ([`check_name`]).
pub(crate) fn normalise(name: &str) -> String {
    name.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// One entry's normalised path, for [`check_paths`].
struct ClaimedPath {
    path: String,
    entry: String,
    is_dir: bool,
}

/// Refuses two entries on one path (two folders may name the same folder), an entry inside
/// a file, and more implied folders than `max_folders`. Paths are sorted component by
/// component (`/` ordered before every other byte), which puts everything inside a path
/// right after it: each check then compares neighbours only, so a crafted ZIP of deep paths
/// costs (entries × log entries × path length), never (entries × depth × path length), and
/// no parent folder is ever stored.
fn check_paths(mut paths: Vec<ClaimedPath>, max_folders: usize) -> Result<(), ArchiveError> {
    let order = |p: &str| {
        p.bytes()
            .map(|b| if b == b'/' { 0 } else { b })
            .collect::<Vec<_>>()
    };
    // A stable sort keeps the ZIP's order among equal paths, so messages name them in order.
    paths.sort_by_cached_key(|p| order(&p.path));
    let mut folders = 0usize;
    let mut previous_folder = "";
    for (i, p) in paths.iter().enumerate() {
        if let Some(prev) = i.checked_sub(1).map(|j| &paths[j]) {
            if prev.path == p.path && !(prev.is_dir && p.is_dir) {
                return Err(ArchiveError::Collision {
                    first: prev.entry.clone(),
                    second: p.entry.clone(),
                    path: p.path.clone(),
                });
            }
            if !prev.is_dir
                && p.path.len() > prev.path.len()
                && p.path.starts_with(&prev.path)
                && p.path.as_bytes()[prev.path.len()] == b'/'
            {
                return Err(ArchiveError::FileAsFolder {
                    file: prev.entry.clone(),
                    inside: p.entry.clone(),
                });
            }
        }
        // Folders this path needs that the previous one did not (in this order, a folder
        // shared by two paths is shared by all paths between them).
        let folder = if p.is_dir {
            p.path.as_str()
        } else {
            p.path.rsplit_once('/').map(|(f, _)| f).unwrap_or("")
        };
        let shared = shared_folders(previous_folder, folder);
        folders += folder.split('/').filter(|c| !c.is_empty()).count() - shared;
        if folders > max_folders {
            return Err(ArchiveError::TooManyFolders { max: max_folders });
        }
        previous_folder = folder;
    }
    Ok(())
}

/// How many leading components two folder paths share.
fn shared_folders(a: &str, b: &str) -> usize {
    if a.is_empty() || b.is_empty() {
        return 0;
    }
    a.split('/')
        .zip(b.split('/'))
        .take_while(|(x, y)| x == y)
        .count()
}

/// Longest path and path component Linux accepts; a longer name cannot be created anyway.
const PATH_MAX: usize = 4096;
const NAME_MAX: usize = 255;

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
    if name.len() > PATH_MAX || name.split('/').any(|c| c.len() > NAME_MAX) {
        return Err(unsafe_entry(
            name,
            "has a path longer than 4096 bytes or a part longer than 255",
        ));
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

/// The `i`th entry of a ZIP being read, its contents and what the writers need to know.
pub(crate) struct ZipEntry<'a> {
    pub file: zip::read::ZipFile<'a, File>,
    /// The name as the ZIP spells it, for messages.
    pub raw: String,
    /// The normalised path ([`normalise`]); empty for the top folder itself.
    pub path: String,
    pub is_dir: bool,
    pub mode: u32,
}

/// Opens the `i`th entry for reading. The writers call this rather than trusting an earlier
/// check: names and kinds are checked again here, so a link or a path outside never gets
/// through even if the ZIP changed since.
pub(crate) fn entry_at(
    zip: &mut zip::ZipArchive<File>,
    i: usize,
) -> Result<ZipEntry<'_>, ArchiveError> {
    let file = zip
        .by_index(i)
        .map_err(|e| ArchiveError::NotZip(e.to_string()))?;
    let raw = file
        .name()
        .map_err(|e| ArchiveError::NotZip(e.to_string()))?
        .to_string();
    check_name(&raw)?;
    let mode = file.unix_mode().unwrap_or(0);
    if !matches!(mode & S_IFMT, 0 | S_IFREG | S_IFDIR) {
        return Err(unsafe_entry(
            &raw,
            "is a link, a device or other special file",
        ));
    }
    let is_dir = file.is_dir() || mode & S_IFMT == S_IFDIR;
    let path = normalise(&raw);
    if path.is_empty() && !is_dir {
        return Err(unsafe_entry(&raw, "has an empty or invalid name"));
    }
    Ok(ZipEntry {
        file,
        raw,
        path,
        is_dir,
        mode,
    })
}

pub(crate) fn open(path: &Path) -> Result<zip::ZipArchive<File>, ArchiveError> {
    let zip =
        zip::ZipArchive::new(File::open(path)?).map_err(|e| ArchiveError::NotZip(e.to_string()))?;
    if zip.has_duplicate_names() {
        return Err(ArchiveError::DuplicateNames);
    }
    Ok(zip)
}

/// Each entry's normalised path and its index (the top folder itself, `./`, left out).
fn entry_index(zip: &mut zip::ZipArchive<File>) -> Result<HashMap<String, usize>, ArchiveError> {
    let mut index: HashMap<String, usize> = HashMap::with_capacity(zip.len());
    let mut raw_names: Vec<String> = Vec::with_capacity(zip.len());
    for i in 0..zip.len() {
        let entry = zip
            .by_index_raw(i)
            .map_err(|e| ArchiveError::NotZip(e.to_string()))?;
        let name = entry
            .name()
            .map_err(|e| ArchiveError::NotZip(e.to_string()))?
            .to_string();
        let key = normalise(&name);
        if !key.is_empty() {
            if let Some(&first) = index.get(&key) {
                return Err(ArchiveError::Collision {
                    first: raw_names[first].clone(),
                    second: name,
                    path: key,
                });
            }
            index.insert(key, i);
        }
        raw_names.push(name);
    }
    Ok(index)
}

/// The contents of the file at normalised path `name`, checked against its declared size
/// and refused past `max` bytes; `None` when there is no such file.
fn read_entry(
    zip: &mut zip::ZipArchive<File>,
    index: &HashMap<String, usize>,
    name: &str,
    max: u64,
) -> Result<Option<Vec<u8>>, ArchiveError> {
    let Some(&i) = index.get(name) else {
        return Ok(None);
    };
    let entry = entry_at(zip, i)?;
    if entry.is_dir {
        return Ok(None);
    }
    let declared = entry.file.size();
    read_exact_entry(entry.file, &entry.raw, declared, max).map(Some)
}

/// The most a Dockerfile or `.dockerignore` may hold (they are read whole into memory).
const DOCKERFILE_MAX: u64 = 1024 * 1024;

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

/// Lets async code stop blocking archive work it no longer waits for: the work checks it
/// between entries (and between `.dockerignore` rules) and gives up with
/// [`ArchiveError::Cancelled`].
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn check(&self) -> Result<(), ArchiveError> {
        if self.is_cancelled() {
            Err(ArchiveError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// A guard that cancels when dropped: hold it in the future that awaits the work, so a
    /// timeout or shutdown that drops the future also stops the thread.
    pub fn on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(self.clone())
    }
}

pub struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Writes a folder of the app in a checked ZIP (the whole app for Dockerfile apps, a
/// service's context for compose apps) as a tar build context to `out`. The Dockerfile gets
/// `dockerfile_tail` appended (milkcrate's labels, one instruction); a Dockerfile that would
/// swallow it is refused. Stops with [`ArchiveError::Cancelled`] once `cancel` is set.
pub fn write_build_context<W: Write>(
    path: &Path,
    checked: &CheckedZip,
    target: BuildTarget<'_>,
    dockerfile_tail: &str,
    cancel: &Cancel,
    out: W,
) -> Result<W, ArchiveError> {
    let mut zip = open(path)?;
    let prefix = normalise(&format!("{}{}", checked.prefix, target.context));
    let inside = |p: &str| -> Option<String> {
        if prefix.is_empty() {
            Some(p.to_string())
        } else {
            p.strip_prefix(&prefix)
                .and_then(|r| r.strip_prefix('/'))
                .map(String::from)
        }
    };
    let at = |rel: &str| {
        if prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{prefix}/{rel}")
        }
    };
    let index = entry_index(&mut zip)?;
    let ignore = read_entry(&mut zip, &index, &at(".dockerignore"), DOCKERFILE_MAX)?
        .map(|t| DockerIgnore::parse(&String::from_utf8_lossy(&t)))
        .unwrap_or_default();
    let dockerfile = normalise(target.dockerfile);
    let mut tar = SafeTar::new(out, 0, 0);
    for i in 0..zip.len() {
        cancel.check()?;
        let entry = entry_at(&mut zip, i)?;
        let Some(rel) = inside(&entry.path) else {
            continue;
        };
        if rel.is_empty() {
            continue;
        }
        // The Dockerfile always goes, as the docker CLI sends it whatever the ignore file says.
        let keep = rel == dockerfile
            || !ignore
                .excluded_unless(&rel, &|| cancel.is_cancelled())
                .map_err(|_| ArchiveError::Cancelled)?;
        if !keep {
            continue;
        }
        if entry.is_dir {
            tar.folder(&rel, dir_mode(entry.mode), &entry.raw)?;
        } else if rel == dockerfile {
            let declared = entry.file.size();
            let mut text = read_exact_entry(entry.file, &entry.raw, declared, DOCKERFILE_MAX)?;
            if !dockerfile_tail.is_empty() && ends_in_continuation(&text) {
                return Err(ArchiveError::DockerfileContinues(entry.raw));
            }
            text.extend_from_slice(dockerfile_tail.as_bytes());
            tar.bytes(&rel, &entry.raw, file_mode(entry.mode), &text)?;
        } else {
            let declared = entry.file.size();
            let mode = file_mode(entry.mode);
            tar.file(&rel, &entry.raw, declared, mode, entry.file)?;
        }
    }
    tar.finish()
}

/// A `LABEL` line setting all `labels` in one build step (values quoted and escaped, `$`
/// too, so no `ENV` or `ARG` of the Dockerfile can change them), to be appended to a
/// Dockerfile. Passing labels as build options instead costs one step each.
pub fn label_instruction(labels: &[(String, String)]) -> String {
    let quote = |s: &str| {
        format!(
            "\"{}\"",
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('$', "\\$")
                .replace(['\n', '\r'], " ")
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

/// The files of a checked ZIP's app folder, as the compose parser asks about them.
pub struct ZipAppFiles {
    path: std::path::PathBuf,
    checked: CheckedZip,
    names: HashSet<String>,
}

impl ZipAppFiles {
    pub fn open(path: &Path, checked: &CheckedZip) -> Result<Self, ArchiveError> {
        let mut zip = open(path)?;
        let names = entry_index(&mut zip)?
            .into_keys()
            .filter_map(|n| n.strip_prefix(&checked.prefix).map(String::from))
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

/// Reads one file of the app folder (a compose file, say), at most `max` bytes; a larger
/// file, or one that does not hold what it declares, is an error.
pub fn read_app_file(
    path: &Path,
    checked: &CheckedZip,
    file: &str,
    max: u64,
) -> Result<Option<Vec<u8>>, ArchiveError> {
    let mut zip = open(path)?;
    let index = entry_index(&mut zip)?;
    read_entry(
        &mut zip,
        &index,
        &normalise(&format!("{}{file}", checked.prefix)),
        max,
    )
}

pub mod volume;

#[cfg(test)]
mod tests;
