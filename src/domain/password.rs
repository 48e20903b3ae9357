//! The admin password: strength rules (the original's, which it never enforced) and the stored
//! hash formats. New hashes are argon2id; werkzeug's `scrypt:` and `pbkdf2:` hashes from the
//! original's database still verify, and the caller re-hashes them after a successful login.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use sha2::Sha256;

use crate::secrets::ct_eq;

/// The password of a fresh install, refused in production.
pub const DEFAULT_PASSWORD: &str = "admin";

const COMMON: &[&str] = &[
    "password",
    "12345678",
    "qwerty123",
    "admin123",
    "password123",
    "milkcrate",
    "milkcrate123",
    "admin",
    "administrator",
    "password1",
    "iloveyou",
    "letmein123",
    "welcome123",
    "123456789",
    "qwertyuiop",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeakPassword {
    #[error("Password is required")]
    Empty,
    #[error("Password must be at least 8 characters long")]
    TooShort,
    #[error("Password must be 128 characters or less")]
    TooLong,
    #[error("Password must contain at least one lowercase letter")]
    NoLower,
    #[error("Password must contain at least one uppercase letter")]
    NoUpper,
    #[error("Password must contain at least one digit")]
    NoDigit,
    #[error("Password must contain at least one special character")]
    NoSpecial,
    #[error("Password is too common. Please choose a stronger password")]
    Common,
}

/// The original's `validate_password`, in its order and with its messages. Length counts
/// characters, not bytes, so non-ASCII passwords are measured as people count them.
pub fn check_strength(pw: &str) -> Result<(), WeakPassword> {
    let len = pw.chars().count();
    if pw.is_empty() {
        return Err(WeakPassword::Empty);
    }
    if len < 8 {
        return Err(WeakPassword::TooShort);
    }
    if len > 128 {
        return Err(WeakPassword::TooLong);
    }
    if !pw.chars().any(char::is_lowercase) {
        return Err(WeakPassword::NoLower);
    }
    if !pw.chars().any(char::is_uppercase) {
        return Err(WeakPassword::NoUpper);
    }
    if !pw.chars().any(|c| c.is_ascii_digit()) {
        return Err(WeakPassword::NoDigit);
    }
    if !pw.chars().any(|c| c.is_ascii_punctuation()) {
        return Err(WeakPassword::NoSpecial);
    }
    let lower = pw.to_lowercase();
    if COMMON.contains(&lower.as_str()) {
        return Err(WeakPassword::Common);
    }
    Ok(())
}

/// An argon2id PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) for `pw`, salted with `salt`.
pub fn hash(pw: &str, salt: &[u8; 16]) -> String {
    let salt = SaltString::encode_b64(salt).expect("16 bytes is a valid salt length");
    Argon2::default()
        .hash_password(pw.as_bytes(), &salt)
        .expect("argon2 with default parameters cannot fail on a valid salt")
        .to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Mismatch,
    /// Right password; `rehash` when the stored form is not argon2id and should be replaced.
    Match {
        rehash: bool,
    },
}

/// Checks `candidate` against a stored value in any format the original or we ever wrote.
/// Malformed or absurd stored values never match and never panic.
pub fn verify(stored: &str, candidate: &str) -> Verdict {
    let ok = if stored.starts_with("$argon2") {
        match PasswordHash::new(stored) {
            Ok(parsed) => {
                return verdict(
                    Argon2::default()
                        .verify_password(candidate.as_bytes(), &parsed)
                        .is_ok(),
                    false,
                );
            }
            Err(_) => false,
        }
    } else if let Some(rest) = stored.strip_prefix("scrypt:") {
        verify_werkzeug_scrypt(rest, candidate)
    } else if let Some(rest) = stored.strip_prefix("pbkdf2:") {
        verify_werkzeug_pbkdf2(rest, candidate)
    } else if stored.starts_with("argon2:") {
        false // a prefix werkzeug accepts but cannot verify (the original answers 500)
    } else {
        // The original compares a non-hash stored value as plain text.
        ct_eq(stored.as_bytes(), candidate.as_bytes())
    };
    verdict(ok, true)
}

fn verdict(ok: bool, rehash: bool) -> Verdict {
    if ok {
        Verdict::Match { rehash }
    } else {
        Verdict::Mismatch
    }
}

/// `N:r:p$salt$hex`, where the key is scrypt(pw, salt-as-ASCII, N, r, p) with 64 bytes.
fn verify_werkzeug_scrypt(rest: &str, candidate: &str) -> bool {
    let Some((params, salt, expected)) = split_werkzeug(rest) else {
        return false;
    };
    let nums: Vec<u64> = params.split(':').filter_map(|p| p.parse().ok()).collect();
    let [n, r, p] = nums[..] else { return false };
    // Bounds keep a crafted hash from costing gigabytes: werkzeug writes N=32768, r=8, p=1.
    if !n.is_power_of_two()
        || !(2..=1 << 20).contains(&n)
        || !(1..=32).contains(&r)
        || !(1..=16).contains(&p)
    {
        return false;
    }
    let Ok(params) =
        scrypt::Params::new(n.trailing_zeros() as u8, r as u32, p as u32, expected.len())
    else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    scrypt::scrypt(candidate.as_bytes(), salt.as_bytes(), &params, &mut out).is_ok()
        && ct_eq(&out, &expected)
}

/// `sha256:iterations$salt$hex`, the key being PBKDF2-HMAC-SHA256 with the digest's length.
fn verify_werkzeug_pbkdf2(rest: &str, candidate: &str) -> bool {
    let Some((params, salt, expected)) = split_werkzeug(rest) else {
        return false;
    };
    let Some(("sha256", iterations)) = params.split_once(':') else {
        return false;
    };
    let Ok(iterations) = iterations.parse::<u32>() else {
        return false;
    };
    if !(1..=10_000_000).contains(&iterations) || expected.len() != 32 {
        return false;
    }
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(candidate.as_bytes(), salt.as_bytes(), iterations, &mut out);
    ct_eq(&out, &expected)
}

fn split_werkzeug(rest: &str) -> Option<(&str, &str, Vec<u8>)> {
    let mut it = rest.splitn(3, '$');
    let (params, salt, digest) = (it.next()?, it.next()?, it.next()?);
    let bytes = hex::decode(digest).ok()?;
    (!bytes.is_empty() && bytes.len() <= 128).then_some((params, salt, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Generated with werkzeug 3.1.8's generate_password_hash.
    const SCRYPT: &str = "scrypt:32768:8:1$kQd8AjoEl8EUPShT$d71957164e40e48e3cb25f538acf3cc37a060ba307dc1e5be2912a7371ab1b7dfbabad941d2223e39d0602fda21f45547584249e409be4fef62abf10cfe546a3";
    const PBKDF2: &str = "pbkdf2:sha256:1000$17exSxM4iI1jms2n$2ea698d58a151dca01bd47eda539617307ea857cb07472e7205b33d4239f75c0";
    const SCRYPT_UNICODE: &str = "scrypt:32768:8:1$B86rxRCXlUusJEG2$240eb3d9f2c84e4ebc048d6693fb17400026f4b25f72e378810d6308fd0c2c95381e99fd1fec4aa58a1c1abf8b5f49c2fb7cff4ed69d3534a5dc245e15ffc412";

    #[test]
    fn werkzeug_hashes_verify_and_ask_for_rehash() {
        assert_eq!(
            verify(SCRYPT, "StrongPass123!"),
            Verdict::Match { rehash: true }
        );
        assert_eq!(verify(SCRYPT, "StrongPass123?"), Verdict::Mismatch);
        assert_eq!(
            verify(PBKDF2, "StrongPass123!"),
            Verdict::Match { rehash: true }
        );
        assert_eq!(verify(PBKDF2, "strongpass123!"), Verdict::Mismatch);
        assert_eq!(
            verify(SCRYPT_UNICODE, "Grüße-Ünïcode#9"),
            Verdict::Match { rehash: true }
        );
    }

    #[test]
    fn strength_rules_match_the_original() {
        for ok in [
            "StrongPass123!",
            "MySecure@Password2024",
            "Complex#Pass99",
            "Pässwörd#123Ä",
        ] {
            assert_eq!(check_strength(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_strength(""), Err(WeakPassword::Empty));
        assert_eq!(check_strength("short"), Err(WeakPassword::TooShort));
        assert_eq!(check_strength("password"), Err(WeakPassword::NoUpper));
        assert_eq!(check_strength("PASSWORD"), Err(WeakPassword::NoLower));
        assert_eq!(check_strength("NoSpecial123"), Err(WeakPassword::NoSpecial));
        assert_eq!(check_strength("Password123!"), Ok(()));
        assert_eq!(
            check_strength(&"aA1!".repeat(40)),
            Err(WeakPassword::TooLong)
        );
    }

    #[test]
    fn argon2_round_trip_with_non_ascii() {
        let h = hash("Grüße-123!", &[7; 16]);
        assert!(h.starts_with("$argon2id$"));
        assert_eq!(verify(&h, "Grüße-123!"), Verdict::Match { rehash: false });
        assert_eq!(verify(&h, "Grüsse-123!"), Verdict::Mismatch);
    }

    #[test]
    fn malformed_hashes_never_match_or_panic() {
        for stored in [
            "scrypt:",
            "scrypt:32768:8:1$salt$zz",
            "scrypt:3:8:1$s$00",
            "scrypt:1099511627776:8:1$s$00",
            "pbkdf2:sha256$s$00",
            "pbkdf2:md5:1$s$00",
            "argon2:whatever",
            "$argon2id$garbage",
            SCRYPT,
        ] {
            assert_eq!(verify(stored, "wrong"), Verdict::Mismatch, "{stored}");
        }
    }

    #[test]
    fn legacy_plain_text_matches_and_asks_for_rehash() {
        assert_eq!(
            verify("hunter2", "hunter2"),
            Verdict::Match { rehash: true }
        );
        assert_eq!(verify("hunter2", "hunter3"), Verdict::Mismatch);
    }
}
