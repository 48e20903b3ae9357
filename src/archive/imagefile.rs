//! Small archives milkcrate writes or reads itself: a file read out of an image (the engine's
//! answer is a tar holding it), the one-folder tar that sets a volume's top folder owner, and
//! the ZIP a one-click service is deployed from.

use std::io::Read;

/// The contents of the first regular file in `tar`, at most `max` bytes; `None` when the tar
/// holds no regular file (the path was a folder or a link).
pub fn first_file_of_tar(tar: &[u8], max: u64) -> Result<Option<Vec<u8>>, String> {
    let mut archive = tar::Archive::new(tar);
    let entries = archive.entries().map_err(|e| e.to_string())?;
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        if entry.size() > max {
            return Err(format!("larger than {max} bytes"));
        }
        let mut out = Vec::new();
        entry
            .take(max)
            .read_to_end(&mut out)
            .map_err(|e| e.to_string())?;
        return Ok(Some(out));
    }
    Ok(None)
}

/// A tar of one folder entry `name/` owned by `uid:gid`, mode 0755, dated now.
pub fn owner_tar(name: &str, uid: u32, gid: u32) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    h.set_mode(0o755);
    h.set_uid(u64::from(uid));
    h.set_gid(u64::from(gid));
    h.set_mtime(crate::clock::now_unix().max(0) as u64);
    h.set_cksum();
    b.append_data(&mut h, format!("{name}/"), std::io::empty())?;
    b.into_inner()
}

/// Writes a ZIP of `(name, contents)` files (mode 0644) to `path`.
pub fn write_zip(path: &std::path::Path, files: &[(&str, &[u8])]) -> std::io::Result<()> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path)?);
    for (name, data) in files {
        zip.start_file(
            *name,
            zip::write::SimpleFileOptions::default().unix_permissions(0o644),
        )
        .map_err(std::io::Error::other)?;
        zip.write_all(data)?;
    }
    zip.finish().map_err(std::io::Error::other)?.sync_all()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_first_regular_file() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "passwd", &b"a:x:1"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        assert_eq!(
            super::first_file_of_tar(&tar, 100).unwrap().unwrap(),
            b"a:x:1"
        );
        assert!(super::first_file_of_tar(&tar, 2).is_err());
    }
}
