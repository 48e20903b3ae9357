//! Randomness and keyed hashing: session ids, CSRF tokens, constant-time comparison.
//!
//! Every secret milkcrate mints comes from the OS generator through [`random_bytes`]; every
//! comparison of a secret goes through [`ct_eq`]. Nothing here stores or logs a secret.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// `n` bytes from the operating system's generator. Failing to read it is not recoverable.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the operating system's random generator failed");
    buf
}

/// A URL-safe token carrying `n` random bytes (n ≤ 64).
pub fn random_token(n: usize) -> String {
    let bytes = random_bytes::<64>();
    URL_SAFE_NO_PAD.encode(&bytes[..n.min(64)])
}

/// HMAC-SHA256 of `parts` (joined with a 0 byte) under `key`, URL-safe base64.
pub fn sign(key: &[u8], parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            mac.update(&[0]);
        }
        mac.update(p);
    }
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// Constant-time equality; lengths leak nothing because both sides are hashed first.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let (ha, hb) = (Sha256::digest(a), Sha256::digest(b));
    ha.ct_eq(&hb).into()
}

/// Hex SHA-256, for storing session ids: a stolen database yields no usable cookie.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A key for one purpose derived from SECRET_KEY, so CSRF tokens and encryption never share one.
pub fn derive_key(secret_key: &str, purpose: &str) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret_key.as_bytes()).expect("any key length");
    mac.update(b"milkcrate key derivation\0");
    mac.update(purpose.as_bytes());
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_url_safe() {
        let (a, b) = (random_token(32), random_token(32));
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[test]
    fn comparison_and_signatures() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert_eq!(sign(b"k", &[b"a", b"b"]), sign(b"k", &[b"a", b"b"]));
        assert_ne!(sign(b"k", &[b"a", b"b"]), sign(b"k", &[b"ab"]));
        assert_ne!(derive_key("s", "csrf"), derive_key("s", "env"));
    }
}

/// Encrypts `plaintext` with ChaCha20-Poly1305 under `key`; returns (nonce, ciphertext).
/// `aad` binds the ciphertext to its place (the variable's name), so rows cannot be swapped.
pub fn encrypt(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> (Vec<u8>, Vec<u8>) {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    let cipher = chacha20poly1305::ChaCha20Poly1305::new(key.into());
    let nonce = random_bytes::<12>();
    let ct = cipher
        .encrypt(
            (&nonce).into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("encryption of a bounded message cannot fail");
    (nonce.to_vec(), ct)
}

/// Decrypts what [`encrypt`] produced; `None` when the key is wrong or the data was altered.
pub fn decrypt(key: &[u8; 32], aad: &[u8], nonce: &[u8], ciphertext: &[u8]) -> Option<Vec<u8>> {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    if nonce.len() != 12 {
        return None;
    }
    let cipher = chacha20poly1305::ChaCha20Poly1305::new(key.into());
    cipher
        .decrypt(
            nonce.into(),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
}

#[cfg(test)]
mod encryption_tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let key = derive_key("secret", "env");
        let (nonce, ct) = encrypt(&key, b"API_TOKEN", b"hunter2");
        assert!(
            !ct.windows(7).any(|w| w == b"hunter2"),
            "ciphertext hides the value"
        );
        assert_eq!(
            decrypt(&key, b"API_TOKEN", &nonce, &ct).unwrap(),
            b"hunter2"
        );
        assert!(
            decrypt(&key, b"OTHER", &nonce, &ct).is_none(),
            "bound to its name"
        );
        assert!(decrypt(&derive_key("other", "env"), b"API_TOKEN", &nonce, &ct).is_none());
    }
}
