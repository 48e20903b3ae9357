//! The Host a request names must agree with the TLS SNI of its connection: a request for
//! b.example.test on a connection opened for a.example.test gets 421 Misdirected Request
//! (the client retries on a connection of its own), even when one certificate covers both.

use milkcrate::config::TlsFiles;

use crate::helpers::*;

const NAMES: [&str; 2] = ["a.example.test", "b.example.test"];

/// A client that reaches both names at `addr` and sends SNI `sni`, over HTTP/1.1 or HTTP/2.
fn client(addr: std::net::SocketAddr, h2: bool) -> reqwest::Client {
    install_crypto();
    let mut b = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none());
    for n in NAMES {
        b = b.resolve(n, addr);
    }
    b = if h2 {
        b.http2_prior_knowledge()
    } else {
        b.http1_only()
    };
    b.build().unwrap()
}

#[tokio::test]
async fn a_host_that_disagrees_with_the_sni_gets_421() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(
        NAMES
            .iter()
            .map(|n| n.to_string())
            .chain(["localhost".into(), "127.0.0.1".into()])
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let app = spawn_app_with(|s| s.tls = Some(TlsFiles { cert, key })).await;
    let port = app.addr.port();
    let a = format!("https://a.example.test:{port}/login");
    for h2 in [false, true] {
        let c = client(app.addr, h2);
        // Agreeing: the login page, also with another case, the port and a trailing dot.
        let ok = c.get(&a).send().await.unwrap();
        assert_eq!(ok.status(), 200, "h2={h2}");
        if !h2 {
            let ok = c
                .get(&a)
                .header("host", format!("A.Example.Test.:{port}"))
                .send()
                .await
                .unwrap();
            assert_eq!(
                ok.status(),
                200,
                "case, port and trailing dot do not matter"
            );
            let bad = c
                .get(&a)
                .header("host", format!("b.example.test:{port}"))
                .send()
                .await
                .unwrap();
            assert_eq!(bad.status(), 421, "Host b on a connection for a");
            let body = bad.text().await.unwrap();
            assert!(body.contains("connection of its own"), "{body}");
        }
    }
    // An absolute-form target naming b on a connection for a: 421 too (it wins over Host).
    let raw = raw_tls(app.addr, "a.example.test", &format!(
        "GET https://b.example.test:{port}/login HTTP/1.1\r\nHost: a.example.test\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert!(raw.starts_with("HTTP/1.1 421"), "{raw}");
    // No SNI (connected to the address): nothing to disagree with.
    let ip = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .http1_only()
        .build()
        .unwrap();
    let resp = ip
        .get(format!("https://127.0.0.1:{port}/login"))
        .header("host", "b.example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// Sends `request` over TLS with SNI `sni` and returns the answer's text.
async fn raw_tls(addr: std::net::SocketAddr, sni: &str, request: &str) -> String {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    #[derive(Debug)]
    struct AnyCert;
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    install_crypto();
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tls.read_to_end(&mut out),
    )
    .await;
    String::from_utf8_lossy(&out).into_owned()
}
