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
    /// `.env` was packaged although it is left out by default: this compose file interpolates
    /// variables, and milkcrate reads them from the ZIP's `.env`.
    pub kept_env_for: Option<String>,
    /// `.env` was left out (by `--exclude`) although this compose file interpolates variables.
    pub left_out_env_for: Option<String>,
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
    // Compose reads `${VAR}`s from the ZIP's `.env`, which the default excludes leave out: keep
    // it then, unless the user excluded it themselves (a `.dockerignore` still keeps it out of
    // the image, as the build honours that file).
    let env = dir.join(".env");
    let needs_env = COMPOSE_FILES.iter().find(|name| {
        files.iter().any(|(rel, _)| rel == *name)
            && std::fs::read_to_string(dir.join(name)).is_ok_and(|t| interpolates(&t))
    });
    if let Some(compose) = needs_env
        && env.is_file()
        && !files.iter().any(|(rel, _)| rel == ".env")
    {
        let user_rules: Vec<String> = excludes
            .iter()
            .map(|p| {
                if p.contains('/') {
                    p.clone()
                } else {
                    format!("**/{p}")
                }
            })
            .collect();
        if DockerIgnore::parse(&user_rules.join("\n")).excluded(".env") {
            report.left_out_env_for = Some((*compose).to_string());
        } else {
            files.push((".env".to_string(), env));
            report.kept_env_for = Some((*compose).to_string());
        }
    }
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

/// Whether a compose file uses `$VAR` or `${VAR}` interpolation (`$$` is a literal dollar).
fn interpolates(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            match b.get(i + 1) {
                Some(b'$') => {
                    i += 2;
                    continue;
                }
                Some(c) if *c == b'{' || *c == b'_' || c.is_ascii_alphabetic() => return true,
                _ => {}
            }
        }
        i += 1;
    }
    false
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

/// Rewrites an uploaded tar (the API accepts `application/x-tar`) as a ZIP, so it goes through
/// the very same checks and build as a ZIP upload. Only regular files are carried (folders are
/// implied by their paths); a link, device or sparse entry is refused.
pub fn tar_to_zip(tar_path: &Path, output: &Path) -> Result<usize, ArchiveError> {
    let mut archive = tar::Archive::new(io::BufReader::new(File::open(tar_path)?));
    let mut zip = zip::ZipWriter::new(File::create(output)?);
    let mut files = 0;
    let entries = archive
        .entries()
        .map_err(|e| ArchiveError::NotZip(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ArchiveError::NotZip(format!("a damaged tar: {e}")))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = name.trim_start_matches("./").to_string();
        match entry.header().entry_type() {
            tar::EntryType::Directory => continue,
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            t if t.is_pax_global_extensions() || t.is_pax_local_extensions() => continue,
            _ => {
                return Err(ArchiveError::Unsafe {
                    entry: name,
                    why: "is a link or special file; only files and folders are accepted",
                });
            }
        }
        if name.is_empty() {
            continue;
        }
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        zip.start_file(
            name.as_str(),
            SimpleFileOptions::default().unix_permissions(mode),
        )
        .map_err(|e| ArchiveError::Io(io::Error::other(e)))?;
        io::copy(&mut entry, &mut zip)?;
        files += 1;
    }
    zip.finish()
        .map_err(|e| ArchiveError::Io(io::Error::other(e)))?
        .flush()?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(files: &[(&str, &str)], excludes: &[&str]) -> (PackageReport, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in files {
            std::fs::write(dir.path().join(name), body).unwrap();
        }
        let out = dir.path().join("out.zip");
        let excludes: Vec<String> = excludes.iter().map(|e| e.to_string()).collect();
        let report = package_dir(dir.path(), &out, &excludes, false).unwrap();
        let zip = zip::ZipArchive::new(File::open(&out).unwrap()).unwrap();
        let mut names: Vec<String> = zip.file_names().map(|n| n.unwrap().to_string()).collect();
        names.sort();
        (report, names)
    }

    #[test]
    fn env_is_kept_when_compose_interpolates_from_it() {
        let compose = "services:\n  web:\n    image: \"shop:${TAG}\"\n";
        let (report, names) = package(&[("compose.yaml", compose), (".env", "TAG=1\n")], &[]);
        assert_eq!(names, [".env", "compose.yaml"]);
        assert_eq!(report.kept_env_for.as_deref(), Some("compose.yaml"));

        let (report, names) = package(&[("compose.yaml", compose), (".env", "TAG=1\n")], &[".env"]);
        assert_eq!(names, ["compose.yaml"], "an explicit exclude wins");
        assert_eq!(report.left_out_env_for.as_deref(), Some("compose.yaml"));

        let plain = "services:\n  web:\n    image: shop\n    command: echo $$HOME\n";
        let (report, names) = package(&[("compose.yaml", plain), (".env", "A=1\n")], &[]);
        assert_eq!(
            names,
            ["compose.yaml"],
            "no interpolation, the default stands"
        );
        assert_eq!(report.kept_env_for, None);
        let (_, names) = package(
            &[
                ("Dockerfile", "FROM x\nRUN echo $HOME\n"),
                (".env", "A=1\n"),
            ],
            &[],
        );
        assert_eq!(names, ["Dockerfile"]);
    }
}
