//! HTTPS served by milkcrate itself, with a certificate the test makes.

use crate::helpers::*;
use milkcrate::config::TlsFiles;

fn write_cert(dir: &std::path::Path) -> TlsFiles {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    TlsFiles { cert, key }
}

#[tokio::test]
async fn with_a_certificate_the_server_speaks_https_with_hsts_and_secure_cookies() {
    let certs = tempfile::tempdir().unwrap();
    let files = write_cert(certs.path());
    let app = spawn_app_with(|s| s.tls = Some(files)).await;
    assert!(app.base.starts_with("https://"));
    let resp = app.get("/login").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    assert!(
        set_cookies(&resp).iter().all(|c| c.contains("; Secure")),
        "cookies over HTTPS are Secure"
    );
    let login = app.login(DEFAULT_PASSWORD).await;
    let session = set_cookies(&login)
        .into_iter()
        .find(|c| c.starts_with("milkcrate_session="))
        .unwrap();
    assert!(
        session.contains("; Secure") && session.contains("HttpOnly"),
        "{session}"
    );

    // Plain HTTP to the TLS port gets nowhere.
    let plain = new_client()
        .get(format!("http://{}/login", app.addr))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
}

#[tokio::test]
async fn a_trusted_proxy_saying_https_gets_hsts() {
    let app = spawn_app_with(|s| {
        s.trusted_proxies = vec![milkcrate::config::IpNet::parse("127.0.0.0/8").unwrap()]
    })
    .await;
    let resp = app
        .client
        .get(app.url("/login"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().contains_key("strict-transport-security"));
    let untrusted = spawn_app().await;
    let resp = untrusted
        .client
        .get(untrusted.url("/login"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert!(
        !resp.headers().contains_key("strict-transport-security"),
        "an untrusted client cannot claim HTTPS"
    );
}
