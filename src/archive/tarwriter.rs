//! The one tar writer for files that come from an upload (the build context and volume
//! uploads both write through it). It cannot be desynchronised: a tar header promises a
//! size, and the bytes that follow must be exactly that many, or a reader of the tar takes
//! the rest of the stream for headers (a ZIP entry that declared more than it held once put a
//! device node, a link to `/` and a setuid root file into an image). So every entry's
//! contents are counted as they are copied and checked against the declared size, one byte
//! past the end included; a short or long entry is refused by name and the writer is spent
//! (it hands back nothing after a failure). It writes only regular files and folders, with
//! permission bits alone (no setuid, setgid or sticky) and the owner it was made with, and
//! never two entries at one path (nor anything in a folder whose path it wrote as a file).

use std::collections::HashMap;
use std::io::{self, Read, Write};

use super::ArchiveError;

/// What the writer put at a path, and for which entry.
struct Written {
    is_file: bool,
    entry: String,
}

pub(crate) struct SafeTar<W: Write> {
    tar: tar::Builder<W>,
    owner: u64,
    mtime: u64,
    /// Every path written (full paths only, so memory follows the tar's own size).
    written: HashMap<String, Written>,
    /// Set by any failure: a half-written entry must never be finished into a tar.
    spent: bool,
}

impl<W: Write> SafeTar<W> {
    /// Entries will belong to `owner` (user and group) and carry `mtime`.
    pub fn new(out: W, owner: u64, mtime: u64) -> Self {
        Self {
            tar: tar::Builder::new(out),
            owner,
            mtime,
            written: HashMap::new(),
            spent: false,
        }
    }

    fn header(&self, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode & 0o777);
        h.set_uid(self.owner);
        h.set_gid(self.owner);
        h.set_mtime(self.mtime);
        h
    }

    fn usable(&self) -> Result<(), ArchiveError> {
        if self.spent {
            return Err(ArchiveError::Io(io::Error::other(
                "the tar writer was used after a failure",
            )));
        }
        Ok(())
    }

    /// Whether a folder was written at `path`.
    pub fn has_folder(&self, path: &str) -> bool {
        self.written.get(path).is_some_and(|w| !w.is_file)
    }

    /// Records `path` for `entry`; false when it is a folder written before. The parent is
    /// checked, not every ancestor: writers that need every level write each one.
    fn claim(&mut self, path: &str, entry: &str, is_file: bool) -> Result<bool, ArchiveError> {
        if let Some(first) = self.written.get(path) {
            if !first.is_file && !is_file {
                return Ok(false);
            }
            return Err(ArchiveError::Collision {
                first: first.entry.clone(),
                second: entry.to_string(),
                path: path.to_string(),
            });
        }
        if let Some((parent, _)) = path.rsplit_once('/')
            && let Some(w) = self.written.get(parent).filter(|w| w.is_file)
        {
            return Err(ArchiveError::FileAsFolder {
                file: w.entry.clone(),
                inside: entry.to_string(),
            });
        }
        let entry = entry.to_string();
        self.written
            .insert(path.to_string(), Written { is_file, entry });
        Ok(true)
    }

    /// A folder at `path` (relative, `/`-separated, normalised) for `entry`; written once
    /// however often it is asked for.
    pub fn folder(&mut self, path: &str, mode: u32, entry: &str) -> Result<(), ArchiveError> {
        self.usable()?;
        if !self.claim(path, entry, false)? {
            return Ok(());
        }
        let mut h = self.header(tar::EntryType::Directory, 0, mode);
        let result = self
            .tar
            .append_data(&mut h, format!("{path}/"), io::empty());
        self.spent = result.is_err();
        Ok(result?)
    }

    /// A regular file at `path` whose contents are `data`, which must yield exactly
    /// `declared` bytes; `entry` names it in a refusal (the ZIP entry, say).
    pub fn file(
        &mut self,
        path: &str,
        entry: &str,
        declared: u64,
        mode: u32,
        data: impl Read,
    ) -> Result<(), ArchiveError> {
        self.usable()?;
        self.claim(path, entry, true)?;
        let mut exact = Exact::new(data, declared);
        let mut h = self.header(tar::EntryType::Regular, declared, mode);
        let result = self.tar.append_data(&mut h, path, &mut exact);
        let verdict = exact.verdict(entry, declared);
        self.spent = result.is_err() || verdict.is_err();
        verdict?;
        Ok(result?)
    }

    /// A regular file at `path` holding `bytes`, for `entry`.
    pub fn bytes(
        &mut self,
        path: &str,
        entry: &str,
        mode: u32,
        bytes: &[u8],
    ) -> Result<(), ArchiveError> {
        self.file(path, entry, bytes.len() as u64, mode, bytes)
    }

    /// The finished tar's writer; refused when any entry failed.
    pub fn finish(self) -> Result<W, ArchiveError> {
        self.usable()?;
        Ok(self.tar.into_inner()?)
    }
}

/// Reads all of an entry that declares `declared` bytes, at most `max`, checking that it holds
/// exactly what it declares.
pub(crate) fn read_exact_entry(
    data: impl Read,
    entry: &str,
    declared: u64,
    max: u64,
) -> Result<Vec<u8>, ArchiveError> {
    if declared > max {
        return Err(ArchiveError::EntryTooLarge {
            entry: entry.to_string(),
            max_kib: max >> 10,
        });
    }
    let mut exact = Exact::new(data, declared);
    let mut buf = Vec::with_capacity(declared as usize);
    let result = exact.read_to_end(&mut buf);
    exact.verdict(entry, declared)?;
    result?;
    Ok(buf)
}

enum Fault {
    Short(u64),
    Long,
    Unreadable(String),
}

/// Passes through exactly `declared` bytes of `inner`, then makes sure `inner` has ended.
/// Any other outcome is recorded and reported as an error, so a copy stops at once.
struct Exact<R> {
    inner: R,
    left: u64,
    got: u64,
    fault: Option<Fault>,
    ended: bool,
}

impl<R: Read> Exact<R> {
    fn new(inner: R, declared: u64) -> Self {
        Self {
            inner,
            left: declared,
            got: 0,
            fault: None,
            ended: false,
        }
    }

    fn fail(&mut self, fault: Fault) -> io::Error {
        self.fault = Some(fault);
        io::Error::new(io::ErrorKind::InvalidData, "entry size mismatch")
    }

    /// Ok when exactly the declared bytes were read and the source ended there.
    fn verdict(mut self, entry: &str, declared: u64) -> Result<(), ArchiveError> {
        if self.fault.is_none() && !self.ended {
            // The reader stopped early (it should not); look for the end ourselves.
            let mut rest = Vec::new();
            let _ = (&mut self).take(1).read_to_end(&mut rest);
            if self.fault.is_none() && !self.ended {
                self.fault = Some(Fault::Short(self.got));
            }
        }
        let entry = entry.to_string();
        match self.fault {
            None => Ok(()),
            Some(Fault::Short(actual)) => Err(ArchiveError::ShortEntry {
                entry,
                actual,
                declared,
            }),
            Some(Fault::Long) => Err(ArchiveError::LongEntry { entry, declared }),
            Some(Fault::Unreadable(why)) => Err(ArchiveError::Unreadable { entry, why }),
        }
    }
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.fault.is_some() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "entry refused"));
        }
        if self.ended || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            // One more read must find the end (it also makes the ZIP reader check the CRC).
            let mut probe = [0u8; 1];
            return loop {
                match self.inner.read(&mut probe) {
                    Ok(0) => {
                        self.ended = true;
                        break Ok(0);
                    }
                    Ok(_) => break Err(self.fail(Fault::Long)),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => break Err(self.fail(Fault::Unreadable(e.to_string()))),
                }
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        match self.inner.read(&mut buf[..want]) {
            Ok(0) => Err(self.fail(Fault::Short(self.got))),
            Ok(n) => {
                self.left -= n as u64;
                self.got += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => Err(self.fail(Fault::Unreadable(e.to_string()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(tar_bytes: &[u8]) -> Vec<(String, tar::EntryType, u32, u64)> {
        let mut archive = tar::Archive::new(tar_bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                    h.entry_type(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn exact_entries_are_written_with_plain_modes_and_the_owner() {
        let mut tar = SafeTar::new(Vec::new(), 65534, 0);
        tar.folder("d", 0o4777, "d/").unwrap();
        tar.folder("d", 0o755, "./d/").unwrap();
        tar.file("d/f", "d/f", 3, 0o6755, &b"abc"[..]).unwrap();
        let bytes = tar.finish().unwrap();
        assert_eq!(
            entries(&bytes),
            [
                ("d/".to_string(), tar::EntryType::Directory, 0o777, 65534),
                ("d/f".to_string(), tar::EntryType::Regular, 0o755, 65534),
            ]
        );
    }

    #[test]
    fn no_two_entries_share_a_path() {
        let mut tar = SafeTar::new(Vec::new(), 0, 0);
        tar.file("a/b", "a/b", 1, 0o644, &b"x"[..]).unwrap();
        let err = tar.file("a/b", "a//b", 1, 0o644, &b"y"[..]).unwrap_err();
        assert!(err.to_string().contains("'a/b' and 'a//b'"), "{err}");
        let mut tar = SafeTar::new(Vec::new(), 0, 0);
        tar.file("a", "a", 1, 0o644, &b"x"[..]).unwrap();
        let err = tar.file("a/b", "a/b", 1, 0o644, &b"y"[..]).unwrap_err();
        assert!(err.to_string().contains("'a' is a file"), "{err}");
        let mut tar = SafeTar::new(Vec::new(), 0, 0);
        tar.folder("a", 0o755, "a/").unwrap();
        assert!(tar.file("a", "a", 1, 0o644, &b"x"[..]).is_err());
    }

    #[test]
    fn short_and_long_entries_are_refused_by_name_and_spend_the_writer() {
        let mut tar = SafeTar::new(Vec::new(), 0, 0);
        let err = tar.file("a", "app/a", 10, 0o644, &b"abc"[..]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "The ZIP entry 'app/a' holds only 3 of the 10 bytes its header declares; the ZIP is damaged or crafted."
        );
        assert!(tar.file("b", "b", 1, 0o644, &b"x"[..]).is_err());
        assert!(tar.finish().is_err(), "no tar comes out of a failed writer");

        let mut tar = SafeTar::new(Vec::new(), 0, 0);
        let err = tar.file("a", "app/a", 2, 0o644, &b"abc"[..]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "The ZIP entry 'app/a' holds more than the 2 bytes its header declares; the ZIP is damaged or crafted."
        );
        assert!(tar.finish().is_err());

        assert!(read_exact_entry(&b"abc"[..], "x", 4, 100).is_err());
        assert!(read_exact_entry(&b"abc"[..], "x", 2, 100).is_err());
        assert_eq!(read_exact_entry(&b"abc"[..], "x", 3, 100).unwrap(), b"abc");
    }
}
