//! `milkcrate package`: a folder into a ZIP that deploys. Excludes are globs on whole path
//! components (the original matched substrings, so `.git` also dropped `.github/`), plus the
//! folder's own `.dockerignore`.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use zip::write::SimpleFileOptions;

use super::{ArchiveError, COMPOSE_FILES, DockerIgnore};

/// The original's default excludes.
pub const DEFAULT_EXCLUDES: &[&str] = &[
    ".git",
    ".gitignore",
    "__pycache__",
    "*.pyc",
    "*.pyo",
    "*.pyd",
    ".pytest_cache",
    ".coverage",
    ".mypy_cache",
    ".tox",
    ".venv",
    "venv",
    ".env",
    "node_modules",
    ".DS_Store",
    "Thumbs.db",
    "*.zip",
    "*.tar.gz",
    "*.tar",
    ".idea",
    ".vscode",
    "*.log",
];

#[derive(Debug, Default)]
pub struct PackageReport {
    pub files: usize,
    pub bytes: u64,
    pub has_build_file: bool,
    /// Links are not packaged (uploads refuse them); named here so the user knows.
    pub skipped_links: Vec<String>,
}

/// Writes `dir` into the ZIP `output` (replaced if it exists), keeping file modes.
pub fn package_dir(
    dir: &Path,
    output: &Path,
    excludes: &[String],
    include_git: bool,
) -> Result<PackageReport, ArchiveError> {
    let mut rules: Vec<String> = DEFAULT_EXCLUDES
        .iter()
        .filter(|p| !(include_git && **p == ".git"))
        .map(|p| format!("**/{p}"))
        .collect();
    rules.extend(excludes.iter().map(|p| {
        if p.contains('/') {
            p.clone()
        } else {
            format!("**/{p}")
        }
    }));
    if let Ok(own) = std::fs::read_to_string(dir.join(".dockerignore")) {
        rules.extend(own.lines().map(String::from));
    }
    let ignore = DockerIgnore::parse(&rules.join("\n"));
    let output_abs = std::path::absolute(output)?;
    let mut files = Vec::new();
    let mut report = PackageReport::default();
    walk(dir, dir, &ignore, &output_abs, &mut files, &mut report)?;
    files.sort();
    let _ = std::fs::remove_file(output);
    let mut zip = zip::ZipWriter::new(File::create(output)?);
    for (rel, path) in &files {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)?;
        let opts = SimpleFileOptions::default().unix_permissions(meta.permissions().mode() & 0o777);
        zip.start_file(rel.as_str(), opts)
            .map_err(|e| ArchiveError::Io(io::Error::other(e)))?;
        let mut f = File::open(path)?;
        report.bytes += io::copy(&mut f, &mut zip)?;
        report.files += 1;
    }
    zip.finish()
        .map_err(|e| ArchiveError::Io(io::Error::other(e)))?
        .flush()?;
    report.has_build_file = files
        .iter()
        .any(|(rel, _)| rel == "Dockerfile" || COMPOSE_FILES.contains(&rel.as_str()));
    Ok(report)
}

fn walk(
    root: &Path,
    dir: &Path,
    ignore: &DockerIgnore,
    output: &Path,
    out: &mut Vec<(String, PathBuf)>,
    report: &mut PackageReport,
) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .map_err(io::Error::other)?
            .to_string_lossy()
            .replace('\\', "/");
        if ignore.excluded(&rel) || std::path::absolute(&path)? == output {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            report.skipped_links.push(rel);
        } else if kind.is_dir() {
            walk(root, &path, ignore, output, out, report)?;
        } else if kind.is_file() {
            out.push((rel, path));
        }
    }
    Ok(())
}

/// A small app that deploys: busybox httpd serving a page and a CGI script showing what the
/// router passed on. `base` is the busybox image to build from.
pub fn write_sample(output: &Path, base: &str) -> Result<(), ArchiveError> {
    let dockerfile = format!(
        "# milkcrate sample app: a static page and a CGI script, served by busybox httpd on port 8080.\nFROM {base}\nCOPY www /www\nEXPOSE 8080\nCMD [\"busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    );
    let index = "<!doctype html>\n<title>milkcrate sample</title>\n<h1>Hello from milkcrate</h1>\n<p>This app was deployed from a ZIP. <a href=\"cgi-bin/info\">What did the router pass on?</a></p>\n";
    let info = "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"path:   $REQUEST_URI\"\necho \"prefix: $HTTP_X_FORWARDED_PREFIX\"\necho \"client: $HTTP_X_FORWARDED_FOR\"\necho \"proto:  $HTTP_X_FORWARDED_PROTO\"\n";
    let readme = "Deploy this ZIP from milkcrate's Deploy page (route e.g. /sample).\n";
    let mut zip = zip::ZipWriter::new(File::create(output)?);
    for (name, body, mode) in [
        ("Dockerfile", dockerfile.as_str(), 0o644),
        ("README.txt", readme, 0o644),
        ("www/index.html", index, 0o644),
        ("www/cgi-bin/info", info, 0o755),
    ] {
        zip.start_file(name, SimpleFileOptions::default().unix_permissions(mode))
            .map_err(|e| ArchiveError::Io(io::Error::other(e)))?;
        zip.write_all(body.as_bytes())?;
    }
    zip.finish()
        .map_err(|e| ArchiveError::Io(io::Error::other(e)))?
        .flush()?;
    Ok(())
}
