//! Certificates chosen per connection by the name the client asks for (SNI).
//!
//! [`CertStore`] is the rustls `ResolvesServerCert` of every HTTPS listener. It holds, per host
//! name, a certificate the admin uploaded (Certificates page) or one ACME issued, the default
//! certificate (SSL_CERT_FILE/SSL_KEY_FILE) for every other name, and the answers of ACME
//! challenges under way (TLS-ALPN-01 certificates, HTTP-01 key authorizations). A new or
//! renewed certificate replaces the old one in the map: handshakes from then on get it, and
//! open connections keep the one they started with (nothing restarts, nothing is dropped).
//! A name with no certificate and no default gets no certificate: the handshake is refused.
//!
//! Files: `<data>/tls/uploaded/<host>/{cert,key}.pem` and `<data>/tls/acme/<host>/…` (0600).

pub mod x509;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ResolvesServerCertUsingSni};
use rustls::sign::CertifiedKey;

pub use x509::CertInfo;

/// The ALPN protocol of TLS-ALPN-01 challenges (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The name a TLS client asked for (SNI), normalised (lower case, no trailing dot). Shared, not
/// held inline: every connection's `ConnInfo` (and with it every request's state) would
/// otherwise carry 254 bytes that a plain HTTP connection never uses.
#[derive(Clone)]
pub struct Sni(Arc<str>);

impl Sni {
    /// The SNI of a finished handshake, when the client sent one.
    pub fn of(conn: &rustls::ServerConnection) -> Option<Sni> {
        conn.server_name().and_then(Sni::new)
    }

    pub fn new(name: &str) -> Option<Sni> {
        let name = normalise(name);
        if name.is_empty() || name.len() > 253 || !name.is_ascii() {
            return None;
        }
        Some(Sni(Arc::from(name.as_ref())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Sni {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the request names another host than the connection's SNI: the server answers it
/// with 421 Misdirected Request (RFC 9110 §15.5.20: the client retries on a connection of its
/// own for that name). No SNI (a client that connected to an IP address) has nothing to
/// disagree with. The host is the request target's authority when it has one (HTTP/2's
/// `:authority`, absolute form), else `Host`; port, case and a trailing dot do not matter.
pub fn misdirected_by_sni<B>(sni: Option<&Sni>, req: &http::Request<B>) -> bool {
    let Some(sni) = sni else {
        return false;
    };
    let host = match req.uri().authority() {
        Some(a) => crate::domain::host::request_host_name(a.as_str()),
        None => req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(crate::domain::host::request_host_name),
    };
    host.is_some_and(|host| host != sni.as_str())
}

/// Where a host's certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Uploaded,
    Acme,
}

/// A certificate ready to serve, with what the page shows of it.
#[derive(Clone)]
pub struct Served {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served").field("info", &self.info).finish()
    }
}

#[derive(Default)]
struct Inner {
    uploaded: HashMap<String, Served>,
    acme: HashMap<String, Served>,
    default: Option<Served>,
    alpn_challenges: HashMap<String, Arc<CertifiedKey>>,
    http_challenges: HashMap<String, String>,
}

/// Every certificate the HTTPS listeners can serve; cheap to read on each handshake.
#[derive(Default)]
pub struct CertStore {
    inner: RwLock<Inner>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore").finish_non_exhaustive()
    }
}

/// A host name as the store keys it: lower case, no trailing dot.
pub fn normalise(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

impl CertStore {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_default(&self, served: Served) {
        self.write().default = Some(served);
    }

    pub fn set(&self, source: Source, host: &str, served: Served) {
        let host = normalise(host);
        let mut inner = self.write();
        match source {
            Source::Uploaded => inner.uploaded.insert(host, served),
            Source::Acme => inner.acme.insert(host, served),
        };
    }

    pub fn remove(&self, source: Source, host: &str) {
        let host = normalise(host);
        let mut inner = self.write();
        match source {
            Source::Uploaded => inner.uploaded.remove(&host),
            Source::Acme => inner.acme.remove(&host),
        };
    }

    pub fn get(&self, source: Source, host: &str) -> Option<Served> {
        let host = normalise(host);
        let inner = self.read();
        match source {
            Source::Uploaded => inner.uploaded.get(&host).cloned(),
            Source::Acme => inner.acme.get(&host).cloned(),
        }
    }

    /// Every certificate held, as (host name, source, expiry in Unix seconds), sorted; the
    /// default one (`SSL_CERT_FILE`) is named `default` with source `file`.
    pub fn expiries(&self) -> Vec<(String, &'static str, i64)> {
        let inner = self.read();
        let mut out: Vec<(String, &'static str, i64)> = inner
            .uploaded
            .iter()
            .map(|(h, s)| (h.clone(), "uploaded", s.info.not_after))
            .chain(
                inner
                    .acme
                    .iter()
                    .map(|(h, s)| (h.clone(), "acme", s.info.not_after)),
            )
            .chain(
                inner
                    .default
                    .iter()
                    .map(|s| ("default".to_string(), "file", s.info.not_after)),
            )
            .collect();
        out.sort();
        out
    }

    /// Host names with an uploaded certificate, sorted.
    pub fn uploaded_hosts(&self) -> Vec<String> {
        let mut v: Vec<String> = self.read().uploaded.keys().cloned().collect();
        v.sort();
        v
    }

    /// The certificate a handshake naming `host` gets (uploaded, then ACME, then default).
    pub fn for_host(&self, host: Option<&str>) -> Option<Served> {
        let inner = self.read();
        host.map(normalise)
            .and_then(|h| {
                inner
                    .uploaded
                    .get(&h)
                    .or_else(|| inner.acme.get(&h))
                    .cloned()
            })
            .or_else(|| inner.default.clone())
    }

    /// Whether `host` has a certificate of its own, or the default one covers it: then plain
    /// HTTP to it is sent to https.
    pub fn covers(&self, host: &str) -> bool {
        let host = normalise(host);
        let inner = self.read();
        if inner.uploaded.contains_key(&host) || inner.acme.contains_key(&host) {
            return true;
        }
        inner
            .default
            .as_ref()
            .is_some_and(|d| valid_for(&d.key, &host))
    }

    pub fn set_alpn_challenge(&self, host: &str, key: Arc<CertifiedKey>) {
        self.write().alpn_challenges.insert(normalise(host), key);
    }

    pub fn clear_alpn_challenge(&self, host: &str) {
        self.write().alpn_challenges.remove(&normalise(host));
    }

    pub fn set_http_challenge(&self, token: &str, key_authorization: &str) {
        self.write()
            .http_challenges
            .insert(token.to_string(), key_authorization.to_string());
    }

    pub fn clear_http_challenge(&self, token: &str) {
        self.write().http_challenges.remove(token);
    }

    /// The key authorization for an HTTP-01 token under way.
    pub fn http_challenge(&self, token: &str) -> Option<String> {
        self.read().http_challenges.get(token).cloned()
    }

    /// Loads `<dir>/<host>/{cert,key}.pem` for every host folder under `dir` (a bad pair is
    /// skipped with a warning; the page shows it missing).
    pub fn load_dir(&self, source: Source, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let host = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            match load_pair(&path.join("cert.pem"), &path.join("key.pem")) {
                Ok(served) => self.set(source, &host, served),
                Err(e) if path.join("cert.pem").exists() => {
                    tracing::warn!(host = %host, error = %e, "stored certificate not loaded");
                }
                Err(_) => {}
            }
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(normalise);
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme {
            // A validation handshake gets the challenge certificate or nothing.
            return name.and_then(|n| self.read().alpn_challenges.get(&n).cloned());
        }
        self.for_host(name.as_deref()).map(|s| s.key)
    }
}

/// Whether the certificate names `host` (rustls's own check of a server's name).
pub fn valid_for(key: &CertifiedKey, host: &str) -> bool {
    ResolvesServerCertUsingSni::new()
        .add(host, key.clone())
        .is_ok()
}

/// The server config of every TLS listener: certificates from `store`, HTTP/2 and HTTP/1.1,
/// and the TLS-ALPN-01 protocol.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<ServerConfig>, String> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// A certificate chain and its key from PEM text: the key must match the first certificate.
pub fn served_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Served, String> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate is not PEM: {e}"))?;
    let Some(leaf) = certs.first() else {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) was found".into());
    };
    let info = x509::parse(leaf).ok_or("the first certificate cannot be read")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("no PEM private key was found: {e}"))?;
    let provider = rustls::crypto::ring::default_provider();
    let key = CertifiedKey::from_der(certs, key, &provider)
        .map_err(|e| format!("the key does not match the certificate: {e}"))?;
    Ok(Served {
        key: Arc::new(key),
        info,
    })
}

/// [`served_from_pem`] on two files; each failure names the file.
pub fn load_pair(cert: &Path, key: &Path) -> Result<Served, String> {
    let cert_pem =
        std::fs::read(cert).map_err(|e| format!("cannot read {}: {e}", cert.display()))?;
    let key_pem = std::fs::read(key).map_err(|e| format!("cannot read {}: {e}", key.display()))?;
    served_from_pem(&cert_pem, &key_pem)
        .map_err(|e| format!("{} and {}: {e}", cert.display(), key.display()))
}

/// Writes a host's certificate and key (0600) into `<dir>/<host>/`, each file replaced whole
/// (written beside, then renamed), so a crash never leaves half a key.
pub fn store_pair(dir: &Path, host: &str, cert_pem: &[u8], key_pem: &[u8]) -> std::io::Result<()> {
    let folder = dir.join(normalise(host));
    crate::config::create_private_dir(&folder)?;
    for (name, data) in [("key.pem", key_pem), ("cert.pem", cert_pem)] {
        let part = folder.join(format!("{name}.part"));
        let _ = std::fs::remove_file(&part);
        crate::config::write_private_file(&part, data)?;
        std::fs::rename(&part, folder.join(name))?;
    }
    Ok(())
}

/// The self-signed certificate of a TLS-ALPN-01 challenge for `host` (RFC 8737).
pub fn alpn_challenge_cert(host: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let mut params = rcgen::CertificateParams::new(vec![host.to_string()])
        .map_err(|e| format!("cannot make the challenge certificate: {e}"))?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let key = rcgen::KeyPair::generate().map_err(|e| format!("cannot make a key: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("cannot make the challenge certificate: {e}"))?;
    // Not through `CertifiedKey::from_der`: its key check parses the certificate with webpki,
    // which refuses the critical acmeIdentifier extension this certificate must carry.
    let der = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| format!("cannot use the challenge key: {e}"))?;
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("cannot use the challenge key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_host_must_agree_with_the_sni() {
        let req = |host: &str, uri: &str| {
            http::Request::builder()
                .uri(uri)
                .header(http::header::HOST, host)
                .body(())
                .unwrap()
        };
        let sni = Sni::new("A.Example.ORG.");
        assert_eq!(
            sni.as_ref().map(|s| s.as_str().to_string()).as_deref(),
            Some("a.example.org")
        );
        let sni = sni.as_ref();
        assert!(!misdirected_by_sni(sni, &req("a.example.org", "/")));
        assert!(!misdirected_by_sni(sni, &req("A.example.org.:8443", "/")));
        assert!(misdirected_by_sni(sni, &req("b.example.org", "/")));
        // The request target's authority wins over Host.
        assert!(misdirected_by_sni(
            sni,
            &req("a.example.org", "https://b.example.org/x")
        ));
        assert!(
            !misdirected_by_sni(None, &req("b.example.org", "/")),
            "no SNI"
        );
        assert!(Sni::new(&"a".repeat(254)).is_none());
        assert!(Sni::new("").is_none());
    }

    use super::*;

    fn pair(names: &[&str]) -> (String, String) {
        let ck = rcgen::generate_simple_self_signed(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .expect("cert");
        (ck.cert.pem(), ck.signing_key.serialize_pem())
    }

    #[test]
    fn picks_by_name_then_default_and_refuses_the_rest() {
        let store = CertStore::default();
        let (c, k) = pair(&["a.example.org"]);
        let a = served_from_pem(c.as_bytes(), k.as_bytes()).expect("a");
        store.set(Source::Acme, "A.Example.org.", a.clone());
        assert!(store.for_host(Some("a.example.org")).is_some());
        assert!(
            store.for_host(Some("b.example.org")).is_none(),
            "no default"
        );
        assert!(store.covers("a.example.org") && !store.covers("b.example.org"));
        let (c, k) = pair(&["b.example.org"]);
        let b = served_from_pem(c.as_bytes(), k.as_bytes()).expect("b");
        store.set(Source::Uploaded, "a.example.org", b.clone());
        let got = store.for_host(Some("a.example.org")).expect("uploaded");
        assert!(Arc::ptr_eq(&got.key, &b.key), "an upload wins over ACME");
        store.set_default(a.clone());
        let other = store.for_host(Some("c.example.org")).expect("default");
        assert!(Arc::ptr_eq(&other.key, &a.key));
        assert!(store.for_host(None).is_some());
        assert!(
            !store.covers("c.example.org"),
            "the default does not name it"
        );
    }

    #[test]
    fn a_key_that_does_not_match_is_refused() {
        let (c, _) = pair(&["a.example.org"]);
        let (_, k) = pair(&["a.example.org"]);
        let err = served_from_pem(c.as_bytes(), k.as_bytes()).expect_err("mismatch");
        assert!(err.contains("does not match"), "{err}");
        let err = served_from_pem(b"junk", k.as_bytes()).expect_err("no cert");
        assert!(err.contains("no PEM certificate"), "{err}");
    }
}
