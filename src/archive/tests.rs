//! Unit tests of the archive module: ZIP checks, build contexts, normalised names.

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
    let tar_bytes = write_build_context(
        zip.path(),
        &checked,
        BuildTarget::ROOT,
        "",
        &Cancel::default(),
        Vec::new(),
    )
    .unwrap();
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
    let tar_bytes = write_build_context(
        zip.path(),
        &checked,
        BuildTarget::ROOT,
        "",
        &Cancel::default(),
        Vec::new(),
    )
    .unwrap();
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
    let tar_bytes = write_build_context(
        zip.path(),
        &checked,
        BuildTarget::ROOT,
        "",
        &Cancel::default(),
        Vec::new(),
    )
    .unwrap();
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
    let tar_bytes = write_build_context(
        zip.path(),
        &checked,
        BuildTarget::ROOT,
        "",
        &Cancel::default(),
        Vec::new(),
    )
    .unwrap();
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
        ("x".into(), "a \"quoted\" $value".into()),
    ]);
    let tar_bytes = write_build_context(
        zip.path(),
        &checked,
        BuildTarget::ROOT,
        &tail,
        &Cancel::default(),
        Vec::new(),
    )
    .unwrap();
    let mut archive = tar::Archive::new(Cursor::new(tar_bytes));
    let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
    assert_eq!(
        text,
        "FROM scratch\nLABEL \"milkcrate.app\"=\"shop\" \"x\"=\"a \\\"quoted\\\" \\$value\"\n"
    );
}

/// Rewrites the declared uncompressed size of entry `name` in both its local header and its
/// central directory record, as a crafted ZIP would (the CRC stays that of the real bytes).
fn patch_declared_size(zip: &[u8], name: &str, size: u32) -> Vec<u8> {
    let mut out = zip.to_vec();
    let mut patched = 0;
    for (sig, size_at, name_len_at, name_at) in
        [(b"PK\x03\x04", 22, 26, 30), (b"PK\x01\x02", 24, 28, 46)]
    {
        let mut i = 0;
        while i + name_at <= out.len() {
            if &out[i..i + 4] == sig {
                let len = u16::from_le_bytes([out[i + name_len_at], out[i + name_len_at + 1]]);
                let at = i + name_at;
                if out.get(at..at + len as usize) == Some(name.as_bytes()) {
                    out[i + size_at..i + size_at + 4].copy_from_slice(&size.to_le_bytes());
                    patched += 1;
                }
            }
            i += 1;
        }
    }
    assert_eq!(patched, 2, "both headers of {name} patched");
    out
}

fn write_temp(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    f
}

/// The attack of issue 13.4: an entry declares more bytes than it holds, and its real bytes
/// carry a tar header (here a setuid root file and a device node) meant to be read as the
/// next entry. Every size lie is refused naming the entry, in the build context and in a
/// volume upload, and no tar comes out.
#[test]
fn entries_that_lie_about_their_size_are_refused_by_name() {
    let mut smuggled = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o4755);
    h.set_size(0);
    smuggled
        .append_data(&mut h, "bin/su", std::io::empty())
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Char);
    h.set_size(0);
    smuggled
        .append_data(&mut h, "dev/mem", std::io::empty())
        .unwrap();
    let payload = smuggled.into_inner().unwrap();
    for method in [
        zip::CompressionMethod::Stored,
        zip::CompressionMethod::Deflated,
    ] {
        let mut cursor = Cursor::new(Vec::new());
        let mut w = zip::ZipWriter::new(&mut cursor);
        let opts = SimpleFileOptions::default().compression_method(method);
        w.start_file("Dockerfile", opts).unwrap();
        w.write_all(b"FROM scratch\n").unwrap();
        w.start_file("app/lies.bin", opts).unwrap();
        w.write_all(&payload).unwrap();
        w.start_file("app/next.txt", opts).unwrap();
        w.write_all(b"next").unwrap();
        w.finish().unwrap();
        let honest = cursor.into_inner();
        let real = payload.len() as u32;
        for (declared, want) in [
            (
                real + 512,
                format!(
                    "'app/lies.bin' holds only {real} of the {} bytes",
                    real + 512
                ),
            ),
            (real - 700, "'app/lies.bin'".to_string()),
        ] {
            let zip = write_temp(&patch_declared_size(&honest, "app/lies.bin", declared));
            let checked = check_zip(zip.path(), &ZipLimits::default()).unwrap();
            let err = write_build_context(
                zip.path(),
                &checked,
                BuildTarget::ROOT,
                "",
                &Cancel::default(),
                Vec::new(),
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains(&want) && err.contains("damaged or crafted"),
                "{method:?}, declared {declared}: {err}"
            );
            let upload = volume::VolumeUpload {
                files: vec![],
                zips: vec![zip.path().to_path_buf()],
            };
            let folder = crate::domain::volume::InnerPath::default();
            let err = volume::write_upload_tar(&upload, &folder, Vec::new())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&want) && err.contains("damaged or crafted"),
                "volume, {method:?}, declared {declared}: {err}"
            );
        }
    }
}

/// Whatever the ZIP says about its entries' modes, a tar holds only regular files and
/// folders, without setuid, setgid or sticky bits.
#[test]
fn only_plain_files_and_folders_reach_the_tar() {
    let zip = make_zip(&[
        ("Dockerfile", b"FROM scratch", 0o644),
        ("d/", b"", 0o1777),
        ("d/su", b"x", 0o6755),
    ]);
    let checked = check_zip(zip.path(), &ZipLimits::default()).unwrap();
    let bytes = write_build_context(
        zip.path(),
        &checked,
        BuildTarget::ROOT,
        "",
        &Cancel::default(),
        Vec::new(),
    )
    .unwrap();
    let mut archive = tar::Archive::new(Cursor::new(bytes));
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        assert!(
            matches!(
                h.entry_type(),
                tar::EntryType::Regular | tar::EntryType::Directory
            ),
            "{:?}",
            h.entry_type()
        );
        assert_eq!(h.mode().unwrap() & 0o7000, 0, "{:?}", e.path());
    }
}

/// Issue 13.12: two entries that land on one path, however they are spelt, are refused by
/// name at the check, so the check can never see another Dockerfile than the build.
#[test]
fn entries_that_land_on_one_path_are_refused_naming_both() {
    let df: (&str, &[u8], u32) = ("Dockerfile", b"FROM scratch", 0o644);
    for (other, shown) in [
        ("./Dockerfile", "'Dockerfile' and './Dockerfile'"),
        ("./././Dockerfile", "'Dockerfile' and './././Dockerfile'"),
    ] {
        let err = refusal(&[df, (other, b"FROM evil", 0o644)]);
        assert!(
            err.contains(shown) && err.contains("would both be written to 'Dockerfile'"),
            "{err}"
        );
    }
    let err = refusal(&[
        ("app/Dockerfile", b"FROM scratch", 0o644),
        ("app//Dockerfile", b"FROM evil", 0o644),
    ]);
    assert!(
        err.contains("'app/Dockerfile' and 'app//Dockerfile'"),
        "{err}"
    );
    let err = refusal(&[df, ("dockerfile", b"FROM evil", 0o644)]);
    assert!(
        err.contains("'Dockerfile' and 'dockerfile' differ only in case"),
        "{err}"
    );
    let err = refusal(&[df, ("Dockerfile/x", b"y", 0o644)]);
    assert!(
        err.contains("'Dockerfile' is a file, but 'Dockerfile/x'"),
        "{err}"
    );
    let err = refusal(&[df, ("x/", b"", 0o755), ("x", b"y", 0o644)]);
    assert!(err.contains("'x/' and 'x'"), "{err}");
    // Spellings the writers normalise the same way as the check: `./` is the top itself.
    let zip = make_zip(&[
        ("./", b"", 0o755),
        ("./Dockerfile", b"FROM scratch", 0o644),
        ("a//b.txt", b"x", 0o644),
    ]);
    let checked = check_zip(zip.path(), &ZipLimits::default()).unwrap();
    assert_eq!(checked.kind, AppKind::Dockerfile);
    let bytes = write_build_context(
        zip.path(),
        &checked,
        BuildTarget::ROOT,
        "",
        &Cancel::default(),
        Vec::new(),
    )
    .unwrap();
    let mut archive = tar::Archive::new(Cursor::new(bytes));
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["Dockerfile", "a/b.txt"]);
}

#[test]
fn a_top_folder_is_found_through_odd_spellings_and_stripped_once() {
    let zip = make_zip(&[
        ("./shop/Dockerfile", b"FROM scratch", 0o644),
        ("shop//index.html", b"hi", 0o644),
    ]);
    let checked = check_zip(zip.path(), &ZipLimits::default()).unwrap();
    assert_eq!(checked.prefix, "shop/");
    let bytes = write_build_context(
        zip.path(),
        &checked,
        BuildTarget::ROOT,
        "",
        &Cancel::default(),
        Vec::new(),
    )
    .unwrap();
    let mut archive = tar::Archive::new(Cursor::new(bytes));
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["Dockerfile", "index.html"]);
}

/// Issue 13.13: a Dockerfile whose last instruction continues would swallow the LABEL line;
/// it is refused at the check and again when the build context is written.
#[test]
fn a_dockerfile_ending_in_a_continuation_is_refused() {
    let err = refusal(&[("Dockerfile", b"FROM scratch\nRUN true \\\n\n# c\n", 0o644)]);
    assert!(
        err.contains("'Dockerfile' ends with a line continuation"),
        "{err}"
    );
    // A compose service's Dockerfile is checked when its context is written.
    let zip = make_zip(&[
        ("compose.yaml", b"services: {}", 0o644),
        ("web/Dockerfile", b"FROM scratch\nRUN true \\", 0o644),
    ]);
    let checked = check_zip(zip.path(), &ZipLimits::default()).unwrap();
    let target = BuildTarget {
        context: "web",
        dockerfile: "Dockerfile",
    };
    let tail = label_instruction(&[("milkcrate.app".into(), "shop".into())]);
    let err = write_build_context(
        zip.path(),
        &checked,
        target,
        &tail,
        &Cancel::default(),
        Vec::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("'web/Dockerfile' ends with a line continuation"),
        "{err}"
    );
}

#[test]
fn a_cancelled_build_context_stops() {
    let zip = make_zip(&[("Dockerfile", b"FROM scratch", 0o644)]);
    let checked = check_zip(zip.path(), &ZipLimits::default()).unwrap();
    let cancel = Cancel::default();
    drop(cancel.on_drop());
    let err = write_build_context(
        zip.path(),
        &checked,
        BuildTarget::ROOT,
        "",
        &cancel,
        Vec::new(),
    )
    .unwrap_err();
    assert!(matches!(err, ArchiveError::Cancelled), "{err}");
}

#[test]
fn names_longer_than_linux_allows_are_refused() {
    let df: (&str, &[u8], u32) = ("Dockerfile", b"FROM scratch", 0o644);
    let long_part = "a".repeat(256);
    assert!(refusal(&[df, (long_part.as_str(), b"x", 0o644)]).contains("longer than"));
    let long_path = vec!["a"; 2100].join("/");
    assert!(refusal(&[df, (long_path.as_str(), b"x", 0o644)]).contains("longer than"));
}

/// Two central directory records with one name: the ZIP reader keeps one of them, so the
/// check and the build could disagree on which. Refused outright.
#[test]
fn one_name_listed_twice_is_refused() {
    let zip = make_zip(&[
        ("Dockerfile", b"FROM scratch", 0o644),
        ("Dockerfilf", b"FROM evil", 0o644),
    ]);
    let mut bytes = std::fs::read(zip.path()).unwrap();
    let (from, to) = (b"Dockerfilf", b"Dockerfile");
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
        }
        i += 1;
    }
    let patched = write_temp(&bytes);
    let err = check_zip(patched.path(), &ZipLimits::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("lists one entry name twice"), "{err}");
}

/// Runs `work` on its own thread and waits for it with a generous deadline: a liveness
/// check (the work must end), not a timing one.
fn finishes<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(work());
    });
    rx.recv_timeout(std::time::Duration::from_secs(120))
        .expect("the work finishes")
}

/// Deep paths (as deep as Linux allows) cost each entry one pass over its name: checking,
/// writing a volume tar (every folder written once, not once per file inside it) and
/// refusing a ZIP whose paths imply more folders than it may hold entries.
#[test]
fn deep_paths_cost_one_pass_per_entry() {
    let deep = vec!["a"; 1000].join("/");
    let names: Vec<String> = (0..1500).map(|i| format!("{deep}/f{i}")).collect();
    let mut entries: Vec<(&str, &[u8], u32)> = names
        .iter()
        .map(|n| (n.as_str(), &b"x"[..], 0o644))
        .collect();
    entries.push(("Dockerfile", b"FROM scratch", 0o644));
    let zip = make_zip(&entries);
    let path = zip.path().to_path_buf();
    let (count, tar_len) = finishes(move || {
        let checked = check_zip(&path, &ZipLimits::default()).unwrap();
        let upload = volume::VolumeUpload {
            files: vec![],
            zips: vec![path.clone()],
        };
        let folder = crate::domain::volume::InnerPath::default();
        let (bytes, n) = volume::write_upload_tar(&upload, &folder, Vec::new()).unwrap();
        (checked.entries, (n, bytes.len()))
    });
    assert_eq!(count, 1501);
    assert_eq!(tar_len.0, 1501);
    assert!(
        tar_len.1 < 64 * 1024 * 1024,
        "one header per folder: {}",
        tar_len.1
    );

    let tops: Vec<String> = (0..20).map(|i| format!("t{i}/{deep}/f")).collect();
    let mut entries: Vec<(&str, &[u8], u32)> = tops
        .iter()
        .map(|n| (n.as_str(), &b"x"[..], 0o644))
        .collect();
    entries.push(("Dockerfile", b"FROM scratch", 0o644));
    let zip = make_zip(&entries);
    let path = zip.path().to_path_buf();
    let err = finishes(move || check_zip(&path, &ZipLimits::default()).unwrap_err());
    assert!(
        err.to_string().contains("need more than 10000 folders"),
        "{err}"
    );
}
