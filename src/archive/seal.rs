//! Encryption of backup archives with the `age` format (the `age` crate): to a passphrase
//! (scrypt) or to an age X25519 recipient (`age1…`; restored with its identity file,
//! `AGE-SECRET-KEY-1…`). An encrypted archive is the age file of the whole `.tar.gz`, named
//! `….tar.gz.age`; it is recognised by its header, so restore never guesses from the name.
//! age's chunks are authenticated: a changed byte fails decryption, and a wrong passphrase or
//! identity fails at the header, before anything is read.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

use age::secrecy::SecretString;

/// The first bytes of every age file.
const AGE_MAGIC: &[u8] = b"age-encryption.org/";

/// What an archive is encrypted to.
#[derive(Clone)]
pub enum SealKey {
    Passphrase(SecretString),
    Recipient(age::x25519::Recipient),
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SealKey::Passphrase(_) => f.write_str("SealKey::Passphrase(…)"),
            SealKey::Recipient(r) => write!(f, "SealKey::Recipient({r})"),
        }
    }
}

impl SealKey {
    pub fn passphrase(p: &str) -> Result<Self, String> {
        if p.chars().count() < 12 {
            return Err("the backup passphrase must have at least 12 characters".into());
        }
        Ok(SealKey::Passphrase(SecretString::from(p.to_string())))
    }

    /// An `age1…` public key.
    pub fn recipient(r: &str) -> Result<Self, String> {
        r.trim()
            .parse::<age::x25519::Recipient>()
            .map(SealKey::Recipient)
            .map_err(|_| {
                format!(
                    "'{}' is not an age recipient (a public key starting with age1)",
                    r.trim()
                )
            })
    }
}

/// What opens an encrypted archive.
pub enum OpenKey {
    Passphrase(SecretString),
    Identities(Vec<Box<dyn age::Identity + Send + Sync>>),
}

impl OpenKey {
    pub fn passphrase(p: &str) -> Self {
        OpenKey::Passphrase(SecretString::from(
            p.trim_end_matches(['\r', '\n']).to_string(),
        ))
    }

    /// The identities in an age identity file (`AGE-SECRET-KEY-1…` lines, `#` comments).
    pub fn identity_file(path: &Path) -> Result<Self, String> {
        let file = std::fs::File::open(path)
            .map_err(|e| format!("cannot read the identity file {}: {e}", path.display()))?;
        let ids = age::IdentityFile::from_buffer(BufReader::new(file))
            .and_then(|f| f.into_identities().map_err(io::Error::other))
            .map_err(|e| format!("{} is not an age identity file: {e}", path.display()))?;
        if ids.is_empty() {
            return Err(format!("{} holds no age identity", path.display()));
        }
        Ok(OpenKey::Identities(ids))
    }
}

/// Wraps `out` so what is written to it is encrypted to `key`. Call
/// `finish()` on the result (it returns `out`), else the file is truncated and refused.
pub fn seal<W: Write>(out: W, key: &SealKey) -> io::Result<age::stream::StreamWriter<W>> {
    let encryptor = match key {
        SealKey::Passphrase(p) => age::Encryptor::with_user_passphrase(p.clone()),
        SealKey::Recipient(r) => {
            age::Encryptor::with_recipients(std::iter::once(r as &dyn age::Recipient))
                .map_err(io::Error::other)?
        }
    };
    encryptor.wrap_output(out)
}

/// Whether the file at `path` is an age file.
pub fn is_sealed(path: &Path) -> io::Result<bool> {
    let mut head = [0u8; 19];
    let mut f = std::fs::File::open(path)?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(&head[..n] == AGE_MAGIC)
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "this backup is encrypted: give its passphrase (--passphrase-file or MILKCRATE_BACKUP_PASSPHRASE) or its identity (--identity); nothing was restored"
    )]
    NeedKey,
    #[error("the passphrase or identity does not open this backup; nothing was restored")]
    WrongKey,
    #[error("the backup is not a valid encrypted archive ({0}); nothing was restored")]
    Damaged(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Opens the archive at `path` for reading its `.tar.gz` bytes: decrypted when it is an age
/// file (refused without a key or with the wrong one, before any payload is read), as it is
/// otherwise.
pub fn open(path: &Path, key: Option<&OpenKey>) -> Result<Box<dyn Read>, OpenError> {
    let file = std::fs::File::open(path)?;
    if !is_sealed(path)? {
        return Ok(Box::new(file));
    }
    let key = key.ok_or(OpenError::NeedKey)?;
    let decryptor =
        age::Decryptor::new(BufReader::new(file)).map_err(|e| OpenError::Damaged(e.to_string()))?;
    let passphrase;
    let ids: Vec<&dyn age::Identity> = match key {
        OpenKey::Passphrase(p) => {
            if !decryptor.is_scrypt() {
                return Err(OpenError::WrongKey);
            }
            passphrase = age::scrypt::Identity::new(p.clone());
            vec![&passphrase as &dyn age::Identity]
        }
        OpenKey::Identities(list) => {
            if decryptor.is_scrypt() {
                return Err(OpenError::WrongKey);
            }
            list.iter()
                .map(|i| i.as_ref() as &dyn age::Identity)
                .collect()
        }
    };
    match decryptor.decrypt(ids.into_iter()) {
        Ok(r) => Ok(Box::new(r)),
        Err(age::DecryptError::NoMatchingKeys | age::DecryptError::DecryptionFailed) => {
            Err(OpenError::WrongKey)
        }
        Err(e) => Err(OpenError::Damaged(e.to_string())),
    }
}

/// Reads a passphrase from a file (its first line), for scripts.
pub fn read_passphrase_file(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot read the passphrase file {}: {e}", path.display()))?;
    let mut line = String::new();
    BufReader::new(file)
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the passphrase file {}: {e}", path.display()))?;
    let line = line.trim_end_matches(['\r', '\n']).to_string();
    if line.is_empty() {
        return Err(format!("the passphrase file {} is empty", path.display()));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed_with(key: &SealKey, data: &[u8]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut w = seal(file.reopen().unwrap(), key).unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap();
        file
    }

    #[test]
    fn a_passphrase_opens_what_it_sealed_and_a_wrong_one_is_refused() {
        let key = SealKey::passphrase("correct horse battery").unwrap();
        let file = sealed_with(&key, b"hello backup");
        assert!(is_sealed(file.path()).unwrap());
        let mut out = Vec::new();
        open(
            file.path(),
            Some(&OpenKey::passphrase("correct horse battery\n")),
        )
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
        assert_eq!(out, b"hello backup");
        assert!(matches!(
            open(
                file.path(),
                Some(&OpenKey::passphrase("wrong horse battery"))
            ),
            Err(OpenError::WrongKey)
        ));
        assert!(matches!(open(file.path(), None), Err(OpenError::NeedKey)));
        assert!(SealKey::passphrase("short").is_err());
    }

    #[test]
    fn a_recipient_is_opened_by_its_identity_file_only() {
        let id = age::x25519::Identity::generate();
        let key = SealKey::recipient(&id.to_public().to_string()).unwrap();
        let file = sealed_with(&key, b"data");
        let dir = tempfile::tempdir().unwrap();
        let id_file = dir.path().join("key.txt");
        use age::secrecy::ExposeSecret;
        std::fs::write(
            &id_file,
            format!("# test\n{}\n", id.to_string().expose_secret()),
        )
        .unwrap();
        let mut out = Vec::new();
        open(
            file.path(),
            Some(&OpenKey::identity_file(&id_file).unwrap()),
        )
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
        assert_eq!(out, b"data");
        let other = age::x25519::Identity::generate();
        std::fs::write(&id_file, other.to_string().expose_secret()).unwrap();
        assert!(matches!(
            open(
                file.path(),
                Some(&OpenKey::identity_file(&id_file).unwrap())
            ),
            Err(OpenError::WrongKey)
        ));
        assert!(SealKey::recipient("age1nope").is_err());
    }

    #[test]
    fn a_changed_byte_fails_decryption() {
        let key = SealKey::passphrase("correct horse battery").unwrap();
        let file = sealed_with(&key, &vec![7u8; 200_000]);
        let mut bytes = std::fs::read(file.path()).unwrap();
        let n = bytes.len();
        bytes[n - 100] ^= 1;
        std::fs::write(file.path(), bytes).unwrap();
        let mut r = open(
            file.path(),
            Some(&OpenKey::passphrase("correct horse battery")),
        )
        .unwrap();
        assert!(io::copy(&mut r, &mut io::sink()).is_err());
    }
}
