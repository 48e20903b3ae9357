//! A small HTTP/1.1 client for the API, on hyper's client connection (already in the tree for
//! the proxy) and tokio-rustls for https: one connection per request, which is all a CLI
//! needs. Roots for https are the system's CA bundle, or `--ca-file`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

/// Where Linux distributions and macOS keep the CA bundle.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// A parsed server address: `http(s)://host[:port][/prefix]`.
#[derive(Debug, Clone)]
pub struct Server {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// A path the server is mounted under (usually empty).
    pub prefix: String,
}

impl Server {
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim().trim_end_matches('/');
        let bad =
            || format!("'{url}' is not a server address; write e.g. https://deploy.example.com");
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad());
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, String::new()),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            let port = after
                .strip_prefix(':')
                .map(str::parse::<u16>)
                .transpose()
                .map_err(|_| bad())?;
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p.parse::<u16>().map_err(|_| bad())?)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Server {
            https,
            port: port.unwrap_or(if https { 443 } else { 80 }),
            host,
            prefix,
        })
    }

    pub fn base_url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.https { 443 } else { 80 };
        let port = if self.port == default {
            String::new()
        } else {
            format!(":{}", self.port)
        };
        format!(
            "{}://{host}{port}{}",
            if self.https { "https" } else { "http" },
            self.prefix
        )
    }

    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

pub struct Client {
    server: Server,
    token: String,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Client {
    pub fn new(server: Server, token: String, ca_file: Option<&Path>) -> Result<Self, String> {
        let tls = if server.https {
            Some(tls_connector(ca_file)?)
        } else {
            None
        };
        Ok(Client { server, token, tls })
    }

    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Sends one request; `path` starts with `/api/v1`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Response<Incoming>, String> {
        let uri = format!("{}{path}", self.server.prefix);
        let mut req = Request::builder()
            .method(method)
            .uri(&uri)
            .header(header::HOST, self.server.host_header())
            .header(
                header::USER_AGENT,
                concat!("milkcrate-cli/", env!("CARGO_PKG_VERSION")),
            )
            .header(header::ACCEPT, "application/json")
            .body(Full::new(body))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let auth = HeaderValue::from_str(&format!("Bearer {}", self.token))
            .map_err(|_| "the token holds characters a header cannot carry".to_string())?;
        req.headers_mut().insert(header::AUTHORIZATION, auth);
        if let Some(ct) = content_type
            && let Ok(v) = HeaderValue::from_str(ct)
        {
            req.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        let unreachable =
            |e: std::io::Error| format!("cannot reach {}: {e}", self.server.base_url());
        let tcp = TcpStream::connect((self.server.host.as_str(), self.server.port))
            .await
            .map_err(unreachable)?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => send_on(TokioIo::new(tcp), req).await,
            Some(connector) => {
                let name = ServerName::try_from(self.server.host.clone())
                    .map_err(|_| format!("'{}' is not a valid server name", self.server.host))?;
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {} failed: {e}", self.server.base_url()))?;
                send_on(TokioIo::new(stream), req).await
            }
        }
    }

    /// A request whose answer is JSON: the value, or the API's error as a sentence.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(StatusCode, serde_json::Value), String> {
        let (ct, bytes) = match body {
            Some(b) => (Some("application/json"), Bytes::from(b.to_string())),
            None => (None, Bytes::new()),
        };
        let resp = self.send(method, path, ct, bytes).await?;
        read_json(resp).await
    }
}

async fn send_on<S>(io: TokioIo<S>, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("the server did not speak HTTP: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| format!("the request failed: {e}"))
}

/// Reads a JSON answer; an error status becomes the API's message.
pub async fn read_json(
    resp: Response<Incoming>,
) -> Result<(StatusCode, serde_json::Value), String> {
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("the answer was cut short: {e}"))?
        .to_bytes();
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
        serde_json::json!({"error": {"code": "not_json", "message": format!("the server answered {status} with something that is not the API's JSON (is this a milkcrate server?)")}})
    });
    if status.is_success() {
        Ok((status, value))
    } else {
        Err(error_message(status, &value))
    }
}

/// The sentence of an API error, with its field when it names one.
pub fn error_message(status: StatusCode, value: &serde_json::Value) -> String {
    let e = &value["error"];
    let message = e["message"]
        .as_str()
        .unwrap_or("the server refused the request");
    match e["field"].as_str() {
        Some(f) => format!("{message} (field {f}; HTTP {})", status.as_u16()),
        None => format!("{message} (HTTP {})", status.as_u16()),
    }
}

fn tls_connector(ca_file: Option<&Path>) -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    let files: Vec<PathBuf> = match ca_file {
        Some(f) => vec![f.to_path_buf()],
        None => SYSTEM_BUNDLES
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.is_file())
            .take(1)
            .collect(),
    };
    for f in &files {
        let certs = CertificateDer::pem_file_iter(f)
            .map_err(|e| format!("cannot read the CA file {}: {e}", f.display()))?;
        for c in certs.flatten() {
            let _ = roots.add(c);
        }
    }
    if roots.is_empty() {
        return Err("no CA certificates found for https: pass --ca-file (or MILKCRATE_CA_FILE) with the server's CA".into());
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_parse() {
        let s = Server::parse("https://deploy.example.com/").expect("valid");
        assert!(s.https);
        assert_eq!((s.host.as_str(), s.port), ("deploy.example.com", 443));
        let s = Server::parse("http://127.0.0.1:5001").expect("valid");
        assert_eq!(
            (s.host.as_str(), s.port, s.https),
            ("127.0.0.1", 5001, false)
        );
        assert_eq!(s.base_url(), "http://127.0.0.1:5001");
        let s = Server::parse("http://[::1]:8080/mc").expect("valid");
        assert_eq!(
            (s.host.as_str(), s.port, s.prefix.as_str()),
            ("::1", 8080, "/mc")
        );
        assert_eq!(s.host_header(), "[::1]:8080");
        for bad in ["deploy.example.com", "ftp://x", "http://", "http://h:port"] {
            assert!(Server::parse(bad).is_err(), "{bad}");
        }
    }
}
