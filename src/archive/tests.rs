use std::io::{Cursor, Write};

use zip::write::SimpleFileOptions;

use super::*;

/// Writes a ZIP of `(name, contents, mode)`; a name ending in `/` is a folder.
fn make_zip(entries: &[(&str, &[u8], u32)]) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut w = zip::ZipWriter::new(file.reopen().unwrap());
    for (name, data, mode) in entries {
        let opts = SimpleFileOptions::default().unix_permissions(*mode);
        if name.ends_with('/') {
            w.add_directory(*name, opts).unwrap();
        } else {
            w.start_file(*name, opts).unwrap();
            w.write_all(data).unwrap();
        }
    }
    w.finish().unwrap();
    file
}

fn check(entries: &[(&str, &[u8], u32)]) -> Result<CheckedZip, ArchiveError> {
    check_zip(make_zip(entries).path(), &ZipLimits::default())
}

fn refusal(entries: &[(&str, &[u8], u32)]) -> String {
    check(entries).unwrap_err().to_string()
}

#[test]
fn a_plain_app_passes_and_keeps_modes_through_the_tar() {
    let zip = make_zip(&[
        ("Dockerfile", b"FROM scratch\n", 0o644),
        ("www/", b"", 0o755),
        ("www/cgi-bin/run.sh", b"#!/bin/sh\necho hi\n", 0o755),
        ("notes a..b.txt", b"fine name", 0o644),
    ]);
    let checked = check_zip(zip.path(), &ZipLimits::default()).unwrap();
    assert_eq!(
        (checked.kind.clone(), checked.prefix.as_str()),
        (AppKind::Dockerfile, "")
    );
    let tar_bytes =
        write_build_context(zip.path(), &checked, BuildTarget::ROOT, "", Vec::new()).unwrap();
    let mut archive = tar::Archive::new(Cursor::new(tar_bytes));
    let modes: Vec<(String, u32)> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.path().unwrap().display().to_string(),
                e.header().mode().unwrap(),
            )
        })
        .collect();
    assert!(
        modes.contains(&("www/cgi-bin/run.sh".into(), 0o755)),
        "{modes:?}"
    );
    assert!(modes.contains(&("Dockerfile".into(), 0o644)), "{modes:?}");
}

#[test]
fn a_zip_of_one_folder_is_accepted_and_the_folder_stripped() {
    let zip = make_zip(&[
        ("shop/", b"", 0o755),
        ("shop/Dockerfile", b"FROM scratch\n", 0o644),
        ("shop/index.html", b"hi", 0o644),
    ]);
    let checked = check_zip(zip.path(), &ZipLimits::default()).unwrap();
    assert_eq!(checked.prefix, "shop/");
    let tar_bytes =
        write_build_context(zip.path(), &checked, BuildTarget::ROOT, "", Vec::new()).unwrap();
    let mut archive = tar::Archive::new(Cursor::new(tar_bytes));
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["Dockerfile", "index.html"]);
}

#[test]
fn compose_files_are_found_and_win_over_a_dockerfile() {
    let c = check(&[
        ("Dockerfile", b"FROM scratch", 0o644),
        ("compose.yaml", b"services: {}", 0o644),
    ])
    .unwrap();
    assert_eq!(c.kind, AppKind::Compose("compose.yaml".into()));
}

#[test]
fn dockerignore_is_honoured() {
    let zip = make_zip(&[
        ("Dockerfile", b"FROM scratch", 0o644),
        (".dockerignore", b"*.secret\nlogs\n", 0o644),
        ("db.secret", b"x", 0o644),
        ("logs/a.txt", b"x", 0o644),
        ("app.txt", b"x", 0o644),
    ]);
    let checked = check_zip(zip.path(), &ZipLimits::default()).unwrap();
    let tar_bytes =
        write_build_context(zip.path(), &checked, BuildTarget::ROOT, "", Vec::new()).unwrap();
    let mut archive = tar::Archive::new(Cursor::new(tar_bytes));
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["Dockerfile", ".dockerignore", "app.txt"]);
}

#[test]
fn unsafe_entries_are_refused_by_name() {
    let df: (&str, &[u8], u32) = ("Dockerfile", b"FROM scratch", 0o644);
    assert!(refusal(&[df, ("../evil.sh", b"x", 0o644)]).contains("'../evil.sh' climbs out"));
    assert!(refusal(&[df, ("a/../../evil", b"x", 0o644)]).contains("'a/../../evil' climbs out"));
    assert!(
        refusal(&[df, ("/etc/passwd", b"x", 0o644)]).contains("'/etc/passwd' has an absolute path")
    );
    assert!(refusal(&[df, ("a\\b.txt", b"x", 0o644)]).contains("'a\\b.txt' uses backslashes"));
}

#[test]
fn symlinks_are_refused_by_name() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut w = zip::ZipWriter::new(file.reopen().unwrap());
    w.start_file("Dockerfile", SimpleFileOptions::default())
        .unwrap();
    w.write_all(b"FROM scratch").unwrap();
    w.add_symlink("passwd", "/etc/passwd", SimpleFileOptions::default())
        .unwrap();
    w.finish().unwrap();
    let err = check_zip(file.path(), &ZipLimits::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("'passwd' is a symbolic link"), "{err}");
}

#[test]
fn bombs_and_floods_are_refused() {
    let zeros = vec![0u8; 20 * 1024 * 1024];
    let err = refusal(&[
        ("Dockerfile", b"FROM scratch", 0o644),
        ("zeros.bin", &zeros, 0o644),
    ]);
    assert!(
        err.contains("'zeros.bin'") && err.contains("ZIP bomb"),
        "{err}"
    );

    let names: Vec<String> = (0..10_001).map(|i| format!("f{i}")).collect();
    let mut entries: Vec<(&str, &[u8], u32)> = names
        .iter()
        .map(|n| (n.as_str(), &b""[..], 0o644))
        .collect();
    entries.push(("Dockerfile", b"FROM scratch", 0o644));
    assert!(refusal(&entries).contains("10002 entries; at most 10000"));

    let small = ZipLimits {
        max_total_bytes: 1000,
        ..ZipLimits::default()
    };
    let zip = make_zip(&[
        ("Dockerfile", b"FROM scratch", 0o644),
        ("big", &[1u8; 2000], 0o644),
    ]);
    assert!(
        check_zip(zip.path(), &small)
            .unwrap_err()
            .to_string()
            .contains("more than 0 MiB")
    );
}

#[test]
fn not_a_zip_or_no_build_file() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(b"this is not a zip").unwrap();
    assert!(
        check_zip(f.path(), &ZipLimits::default())
            .unwrap_err()
            .to_string()
            .contains("not a valid ZIP")
    );
    assert!(
        refusal(&[("README.md", b"x", 0o644)])
            .contains("Must contain either a Dockerfile or docker-compose.yml")
    );
    assert!(
        refusal(&[("a/Dockerfile", b"x", 0o644), ("b/x", b"x", 0o644)]).contains("Must contain")
    );
}

#[test]
fn files_become_readable_by_the_app_user_and_lose_special_bits() {
    assert_eq!(
        file_mode(0o100600),
        0o644,
        "0600 from Python's zipfile becomes readable"
    );
    assert_eq!(
        file_mode(0o100700),
        0o755,
        "an owner-only script stays executable for all"
    );
    assert_eq!(file_mode(0o104755), 0o755, "setuid dropped");
    assert_eq!(file_mode(0), 0o644, "no mode recorded");
    assert_eq!(dir_mode(0o040700), 0o755);
}

#[test]
fn owner_only_files_from_zip_tools_become_readable() {
    let zip = make_zip(&[
        ("Dockerfile", b"FROM scratch", 0o600),
        ("www/index.html", b"hi", 0o600),
    ]);
    let checked = check_zip(zip.path(), &ZipLimits::default()).unwrap();
    let tar_bytes =
        write_build_context(zip.path(), &checked, BuildTarget::ROOT, "", Vec::new()).unwrap();
    let mut archive = tar::Archive::new(Cursor::new(tar_bytes));
    let modes: Vec<(String, u32)> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.path().unwrap().display().to_string(),
                e.header().mode().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        modes,
        [
            ("Dockerfile".to_string(), 0o644),
            ("www/index.html".to_string(), 0o644)
        ]
    );
}

#[test]
fn labels_are_appended_to_the_dockerfile_in_one_instruction() {
    let zip = make_zip(&[("Dockerfile", b"FROM scratch", 0o644)]);
    let checked = check_zip(zip.path(), &ZipLimits::default()).unwrap();
    let tail = label_instruction(&[
        ("milkcrate.app".into(), "shop".into()),
        ("x".into(), "a \"quoted\" value".into()),
    ]);
    let tar_bytes =
        write_build_context(zip.path(), &checked, BuildTarget::ROOT, &tail, Vec::new()).unwrap();
    let mut archive = tar::Archive::new(Cursor::new(tar_bytes));
    let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
    assert_eq!(
        text,
        "FROM scratch\nLABEL \"milkcrate.app\"=\"shop\" \"x\"=\"a \\\"quoted\\\" value\"\n"
    );
}
