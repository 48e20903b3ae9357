//! The one module that speaks to S3-compatible stores (AWS S3, MinIO, R2, B2, moto…). Requests
//! are signed by `rusty-s3` (sans-IO: it only builds presigned URLs) and sent with hyper's
//! client, one connection per request (a backup makes a few dozen), over rustls with the
//! system's CA bundle for `https` endpoints. Path-style URLs, so any endpoint works.
//!
//! Uploads are multipart and streamed: [`UploadWriter`] is a plain `Write` that the archive
//! writer (gzip, age) writes into; each full part is handed to an async task that uploads it
//! with its `Content-MD5` (the store checks every part), retrying, while the next part fills.
//! Nothing is spooled to disk. After completion, the object's size and (for stores that
//! follow S3's convention) multipart ETag are checked against what was sent. An upload that
//! stops (error, dropped writer) is aborted, so no object appears; a killed process leaves
//! only an incomplete multipart upload, which is never listed as an object.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use md5::Digest as _;
use rusty_s3::actions::{ListObjectsV2, S3Action};
use rusty_s3::{Bucket, Credentials, UrlStyle};
use sha2::Sha256;

/// How long a presigned request stays valid.
const SIGN_FOR: Duration = Duration::from_secs(3600);
/// The first part size; doubled every 1000 parts (S3 allows 10 000 parts of at least 5 MiB).
const PART_SIZE: usize = 8 << 20;
/// Attempts per request before giving up.
const ATTEMPTS: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("{0}")]
    Config(String),
    #[error("cannot reach the S3 endpoint {0}: {1}")]
    Connect(String, String),
    #[error("the S3 store answered {status} to {what}: {body}")]
    Status {
        what: String,
        status: StatusCode,
        body: String,
    },
    #[error("the S3 store's answer to {0} could not be read: {1}")]
    Answer(String, String),
    #[error("the upload of {0} was interrupted; no object was made")]
    Interrupted(String),
    #[error("{0}")]
    Checksum(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl S3Error {
    /// Worth another try: the network, a timeout, or the store's 5xx / 429.
    fn transient(&self) -> bool {
        match self {
            S3Error::Connect(..) | S3Error::Answer(..) => true,
            S3Error::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            _ => false,
        }
    }
}

/// Where and how to reach a bucket.
#[derive(Clone, Debug, Default)]
pub struct S3Settings {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub prefix: String,
    pub access_key: String,
    pub secret_key: String,
}

impl S3Settings {
    /// `s3://bucket/prefix` into bucket and prefix.
    pub fn parse_location(location: &str) -> Result<(String, String), String> {
        let rest = location.strip_prefix("s3://").ok_or_else(|| {
            format!("'{location}' is not an S3 location: write s3://bucket/prefix")
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        check_bucket(bucket)?;
        Ok((bucket.to_string(), clean_prefix(prefix)?))
    }

    /// Checks every field; the message names the one that is wrong.
    pub fn check(&self) -> Result<(), String> {
        let url = url::Url::parse(self.endpoint.trim())
            .map_err(|_| format!("'{}' is not an endpoint URL (https://…)", self.endpoint))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "'{}' is not an endpoint URL (https://…)",
                self.endpoint
            ));
        }
        check_bucket(&self.bucket)?;
        clean_prefix(&self.prefix)?;
        if self.region.trim().is_empty()
            || !self
                .region
                .trim()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("the region must be a name like us-east-1".into());
        }
        if self.access_key.trim().is_empty() || self.secret_key.is_empty() {
            return Err("the access key and secret key are both needed".into());
        }
        Ok(())
    }
}

fn check_bucket(bucket: &str) -> Result<(), String> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{bucket}' is not a bucket name (3 to 63 lowercase letters, digits, dots and dashes)"
        ))
    }
}

fn clean_prefix(prefix: &str) -> Result<String, String> {
    let p = prefix.trim().trim_matches('/');
    if p.split('/')
        .any(|s| s == ".." || s == "." || (s.is_empty() && !p.is_empty()))
        || p.chars().any(|c| c.is_control())
    {
        return Err(format!("'{prefix}' is not a usable prefix"));
    }
    Ok(p.to_string())
}

/// An object under the prefix (its name without the prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub name: String,
    pub size: u64,
}

/// What an upload made.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub size: u64,
    pub sha256: String,
}

/// A bucket and prefix with credentials. Cheap to clone.
#[derive(Clone)]
pub struct S3 {
    inner: Arc<Inner>,
}

struct Inner {
    bucket: Bucket,
    creds: Credentials,
    prefix: String,
}

impl S3 {
    pub fn new(s: &S3Settings) -> Result<Self, S3Error> {
        s.check().map_err(S3Error::Config)?;
        let url = url::Url::parse(s.endpoint.trim()).map_err(|e| S3Error::Config(e.to_string()))?;
        let bucket = Bucket::new(
            url,
            UrlStyle::Path,
            s.bucket.clone(),
            s.region.trim().to_string(),
        )
        .map_err(|e| S3Error::Config(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                bucket,
                creds: Credentials::new(s.access_key.trim(), s.secret_key.clone()),
                prefix: clean_prefix(&s.prefix).map_err(S3Error::Config)?,
            }),
        })
    }

    /// `s3://bucket/prefix`, for messages.
    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.inner.bucket.name(), self.inner.prefix)
    }

    fn key(&self, name: &str) -> String {
        if self.inner.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.inner.prefix)
        }
    }

    /// Every object directly under the prefix.
    pub async fn list(&self) -> Result<Vec<Object>, S3Error> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let prefix = if self.inner.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.inner.prefix)
        };
        loop {
            let url = {
                let mut action = self.inner.bucket.list_objects_v2(Some(&self.inner.creds));
                action.with_prefix(prefix.as_str());
                action.with_delimiter("/");
                if let Some(t) = &token {
                    action.with_continuation_token(t.as_str());
                }
                action.sign(SIGN_FOR)
            };
            let body = retry("listing objects", || {
                small(
                    Method::GET,
                    url.clone(),
                    vec![],
                    Bytes::new(),
                    "listing objects",
                )
            })
            .await?;
            let text = String::from_utf8_lossy(&body);
            let parsed = ListObjectsV2::parse_response(&text)
                .map_err(|e| S3Error::Answer("listing objects".into(), e.to_string()))?;
            for c in parsed.contents {
                if let Some(name) = c.key.strip_prefix(&prefix)
                    && !name.is_empty()
                    && !name.contains('/')
                {
                    out.push(Object {
                        name: name.to_string(),
                        size: c.size,
                    });
                }
            }
            match parsed.next_continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        Ok(out)
    }

    /// A small object in one request (a checksum file).
    pub async fn put(&self, name: &str, data: Bytes) -> Result<(), S3Error> {
        let key = self.key(name);
        let url = self
            .inner
            .bucket
            .put_object(Some(&self.inner.creds), &key)
            .sign(SIGN_FOR);
        let md5 = base64_md5(&data);
        retry(&format!("storing {name}"), || {
            small(
                Method::PUT,
                url.clone(),
                vec![("content-md5", md5.clone())],
                data.clone(),
                "storing an object",
            )
        })
        .await
        .map(|_| ())
    }

    pub async fn delete(&self, name: &str) -> Result<(), S3Error> {
        let key = self.key(name);
        let url = self
            .inner
            .bucket
            .delete_object(Some(&self.inner.creds), &key)
            .sign(SIGN_FOR);
        retry(&format!("deleting {name}"), || {
            small(
                Method::DELETE,
                url.clone(),
                vec![],
                Bytes::new(),
                "deleting an object",
            )
        })
        .await
        .map(|_| ())
    }

    /// A small object's bytes (at most `limit`).
    pub async fn get_small(&self, name: &str, limit: usize) -> Result<Vec<u8>, S3Error> {
        let key = self.key(name);
        let url = self
            .inner
            .bucket
            .get_object(Some(&self.inner.creds), &key)
            .sign(SIGN_FOR);
        let body = retry(&format!("reading {name}"), || {
            small(
                Method::GET,
                url.clone(),
                vec![],
                Bytes::new(),
                "reading an object",
            )
        })
        .await?;
        if body.len() > limit {
            return Err(S3Error::Answer(name.into(), "larger than expected".into()));
        }
        Ok(body.to_vec())
    }

    /// Size and ETag of an object.
    async fn head(&self, name: &str) -> Result<(u64, String), S3Error> {
        let key = self.key(name);
        let url = self
            .inner
            .bucket
            .head_object(Some(&self.inner.creds), &key)
            .sign(SIGN_FOR);
        retry(&format!("checking {name}"), || async {
            let resp = send(Method::HEAD, url.clone(), vec![], Bytes::new()).await?;
            let status = resp.status();
            if !status.is_success() {
                return Err(S3Error::Status {
                    what: format!("checking {name}"),
                    status,
                    body: String::new(),
                });
            }
            let header = |h: &str| {
                resp.headers()
                    .get(h)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            Ok((
                header("content-length").parse().unwrap_or(0),
                header("etag").trim_matches('"').to_string(),
            ))
        })
        .await
    }

    /// Streams an object into `out` (a file the caller opened), returning its size and
    /// SHA-256. Retried from the start when the connection drops.
    pub async fn download(&self, name: &str, out: &Path) -> Result<Uploaded, S3Error> {
        use tokio::io::AsyncWriteExt;
        let key = self.key(name);
        let url = self
            .inner
            .bucket
            .get_object(Some(&self.inner.creds), &key)
            .sign(SIGN_FOR);
        retry(&format!("downloading {name}"), || async {
            let resp = send(Method::GET, url.clone(), vec![], Bytes::new()).await?;
            let status = resp.status();
            let mut body = resp.into_body();
            if !status.is_success() {
                return Err(status_error(&format!("downloading {name}"), status, body).await);
            }
            let mut file = tokio::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(out)
                .await?;
            let mut hasher = <Sha256 as sha2::Digest>::new();
            let mut size = 0u64;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| S3Error::Answer(name.into(), e.to_string()))?;
                if let Ok(data) = frame.into_data() {
                    sha2::Digest::update(&mut hasher, &data);
                    size += data.len() as u64;
                    file.write_all(&data).await?;
                }
            }
            file.sync_all().await?;
            Ok(Uploaded {
                size,
                sha256: hex::encode(sha2::Digest::finalize(hasher)),
            })
        })
        .await
    }

    /// A writer that uploads what it is given as the object `name`. Must be used from a
    /// blocking thread (not an async task); call [`UploadWriter::finish`] to complete it.
    pub fn upload(&self, name: &str, handle: tokio::runtime::Handle) -> UploadWriter {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let task = handle.spawn(run_upload(self.clone(), name.to_string(), rx));
        UploadWriter {
            buf: Vec::with_capacity(PART_SIZE),
            part_size: PART_SIZE,
            parts: 0,
            tx: Some(tx),
            task: Some(task),
            handle,
        }
    }
}

enum Chunk {
    Part(Bytes),
    Done,
}

/// See [`S3::upload`].
pub struct UploadWriter {
    buf: Vec<u8>,
    part_size: usize,
    parts: u32,
    tx: Option<tokio::sync::mpsc::Sender<Chunk>>,
    task: Option<tokio::task::JoinHandle<Result<Uploaded, S3Error>>>,
    handle: tokio::runtime::Handle,
}

impl UploadWriter {
    fn send(&mut self, chunk: Chunk) -> std::io::Result<()> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| std::io::Error::other("the upload is finished"))?;
        tx.blocking_send(chunk)
            .map_err(|_| std::io::Error::other("the upload stopped (see the error that follows)"))
    }

    fn flush_part(&mut self) -> std::io::Result<()> {
        let part = std::mem::replace(&mut self.buf, Vec::with_capacity(self.part_size));
        self.parts += 1;
        if self.parts.is_multiple_of(1000) {
            self.part_size *= 2;
        }
        self.send(Chunk::Part(Bytes::from(part)))
    }

    /// Sends the last part and completes the upload; returns once the object is checked.
    pub fn finish(mut self) -> Result<Uploaded, S3Error> {
        let sent = if !self.buf.is_empty() || self.parts == 0 {
            self.flush_part()
        } else {
            Ok(())
        };
        let done = sent.and_then(|_| self.send(Chunk::Done));
        self.tx = None;
        let task = self.task.take();
        let result = match task {
            Some(t) => self
                .handle
                .block_on(t)
                .unwrap_or_else(|e| Err(S3Error::Io(std::io::Error::other(e.to_string())))),
            None => Err(S3Error::Interrupted(String::new())),
        };
        match (done, result) {
            (_, Err(e)) => Err(e),
            (Err(e), _) => Err(e.into()),
            (Ok(()), ok) => ok,
        }
    }
}

impl std::io::Write for UploadWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = self.part_size - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= self.part_size {
            self.flush_part()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn run_upload(
    s3: S3,
    name: String,
    mut rx: tokio::sync::mpsc::Receiver<Chunk>,
) -> Result<Uploaded, S3Error> {
    let key = s3.key(&name);
    let creds = &s3.inner.creds;
    let bucket = &s3.inner.bucket;
    let url = bucket
        .create_multipart_upload(Some(creds), &key)
        .sign(SIGN_FOR);
    let body = retry(&format!("starting the upload of {name}"), || {
        small(
            Method::POST,
            url.clone(),
            vec![],
            Bytes::new(),
            "starting an upload",
        )
    })
    .await?;
    let upload_id =
        rusty_s3::actions::CreateMultipartUpload::parse_response(&String::from_utf8_lossy(&body))
            .map_err(|e| S3Error::Answer("starting an upload".into(), e.to_string()))?
            .upload_id()
            .to_string();
    let result = async {
        let mut etags: Vec<String> = Vec::new();
        let mut md5s: Vec<u8> = Vec::new();
        let mut sha = <Sha256 as sha2::Digest>::new();
        let mut size = 0u64;
        loop {
            match rx.recv().await {
                Some(Chunk::Part(data)) => {
                    let number = u16::try_from(etags.len() + 1)
                        .map_err(|_| S3Error::Checksum("the backup is too large for one object".into()))?;
                    let digest = md5::Md5::digest(&data);
                    md5s.extend_from_slice(&digest);
                    sha2::Digest::update(&mut sha, &data);
                    size += data.len() as u64;
                    let url = bucket
                        .upload_part(Some(creds), &key, number, &upload_id)
                        .sign(SIGN_FOR);
                    let md5_b64 = base64_encode(&digest);
                    let etag = retry(&format!("uploading part {number} of {name}"), || async {
                        let resp = send(
                            Method::PUT,
                            url.clone(),
                            vec![("content-md5", md5_b64.clone())],
                            data.clone(),
                        )
                        .await?;
                        let status = resp.status();
                        let etag = resp
                            .headers()
                            .get("etag")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        if !status.is_success() {
                            return Err(status_error("uploading a part", status, resp.into_body()).await);
                        }
                        Ok(etag)
                    })
                    .await?;
                    if !etag.trim_matches('"').eq_ignore_ascii_case(&hex::encode(digest))
                        && etag.trim_matches('"').len() == 32
                    {
                        return Err(S3Error::Checksum(format!(
                            "part {number} of {name} arrived altered (its ETag is not its MD5)"
                        )));
                    }
                    etags.push(etag);
                }
                Some(Chunk::Done) => break,
                None => return Err(S3Error::Interrupted(name.clone())),
            }
        }
        crate::config::pause_here("backup-upload-completing").await;
        let url = bucket
            .complete_multipart_upload(Some(creds), &key, &upload_id, etags.iter().map(String::as_str))
            .sign(SIGN_FOR);
        let xml = bucket
            .complete_multipart_upload(Some(creds), &key, &upload_id, etags.iter().map(String::as_str))
            .body();
        let answer = retry(&format!("completing the upload of {name}"), || {
            small(Method::POST, url.clone(), vec![], Bytes::from(xml.clone()), "completing an upload")
        })
        .await?;
        // A 200 can still carry an error for CompleteMultipartUpload.
        if String::from_utf8_lossy(&answer).contains("<Error>") {
            return Err(S3Error::Answer(
                "completing an upload".into(),
                String::from_utf8_lossy(&answer).chars().take(300).collect(),
            ));
        }
        let (stored, etag) = s3.head(&name).await?;
        let expected = format!("{}-{}", hex::encode(md5::Md5::digest(&md5s)), etags.len());
        if stored != size {
            return Err(S3Error::Checksum(format!(
                "{name} holds {stored} bytes on the store, {size} were sent"
            )));
        }
        // Stores that follow S3's multipart ETag (MD5 of the parts' MD5s) are checked on it too.
        let looks_like_s3 = etag
            .split_once('-')
            .is_some_and(|(h, n)| h.len() == 32 && n.parse::<u32>().is_ok());
        if looks_like_s3 && !etag.eq_ignore_ascii_case(&expected) {
            return Err(S3Error::Checksum(format!(
                "{name} on the store does not match what was sent (ETag {etag}, expected {expected})"
            )));
        }
        Ok(Uploaded {
            size,
            sha256: hex::encode(sha2::Digest::finalize(sha)),
        })
    }
    .await;
    if result.is_err() {
        let url = bucket
            .abort_multipart_upload(Some(creds), &key, &upload_id)
            .sign(SIGN_FOR);
        let _ = small(
            Method::DELETE,
            url,
            vec![],
            Bytes::new(),
            "aborting an upload",
        )
        .await;
    }
    result
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn base64_md5(data: &[u8]) -> String {
    base64_encode(&md5::Md5::digest(data))
}

/// Runs `f` up to [`ATTEMPTS`] times while it fails with a transient error, waiting a little
/// longer each time.
async fn retry<T, F, Fut>(what: &str, mut f: F) -> Result<T, S3Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, S3Error>>,
{
    let mut attempt = 1;
    loop {
        match f().await {
            Err(e) if e.transient() && attempt < ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "{what}: trying again");
                tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// One request whose whole answer body is read (bounded), refused unless 2xx.
async fn small(
    method: Method,
    url: url::Url,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    what: &str,
) -> Result<Bytes, S3Error> {
    let resp = send(method, url, headers, body).await?;
    let status = resp.status();
    let body = resp.into_body();
    if !status.is_success() {
        return Err(status_error(what, status, body).await);
    }
    let collected = tokio::time::timeout(
        Duration::from_secs(120),
        http_body_util::Limited::new(body, 64 << 20).collect(),
    )
    .await
    .map_err(|_| S3Error::Answer(what.into(), "timed out".into()))?
    .map_err(|e| S3Error::Answer(what.into(), e.to_string()))?;
    Ok(collected.to_bytes())
}

async fn status_error(what: &str, status: StatusCode, body: hyper::body::Incoming) -> S3Error {
    let text = tokio::time::timeout(
        Duration::from_secs(10),
        http_body_util::Limited::new(body, 64 << 10).collect(),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .map(|b| String::from_utf8_lossy(&b.to_bytes()).to_string())
    .unwrap_or_default();
    // The store's <Code> and <Message> say it best.
    let pick = |tag: &str| {
        let open = format!("<{tag}>");
        let close = format!("</{tag}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&close)? + start;
        Some(text[start..end].to_string())
    };
    let body = match (pick("Code"), pick("Message")) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c,
        _ => text.chars().take(200).collect(),
    };
    S3Error::Status {
        what: what.into(),
        status,
        body,
    }
}

/// Sends one request on a new connection (TLS for https) and returns the response head.
async fn send(
    method: Method,
    url: url::Url,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
) -> Result<http::Response<hyper::body::Incoming>, S3Error> {
    let host = url
        .host_str()
        .ok_or_else(|| S3Error::Config("the endpoint has no host".into()))?
        .to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let endpoint = format!("{}://{authority}", url.scheme());
    let connect_err = |e: String| S3Error::Connect(endpoint.clone(), e);
    let tcp = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port)),
    )
    .await
    .map_err(|_| connect_err("no answer within 30 s".into()))?
    .map_err(|e| connect_err(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, authority.as_str())
        .header(http::header::CONTENT_LENGTH, body.len());
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| S3Error::Config(e.to_string()))?;
    let respond = async {
        if url.scheme() == "https" {
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| connect_err(e.to_string()))?;
            let tls = tokio_rustls::TlsConnector::from(tls_config()?)
                .connect(name, tcp)
                .await
                .map_err(|e| connect_err(e.to_string()))?;
            exchange(hyper_util::rt::TokioIo::new(tls), req).await
        } else {
            exchange(hyper_util::rt::TokioIo::new(tcp), req).await
        }
    };
    tokio::time::timeout(Duration::from_secs(300), respond)
        .await
        .map_err(|_| connect_err("no answer within 300 s".into()))?
        .map_err(|e| match e {
            S3Error::Connect(..) | S3Error::Config(_) => e,
            other => connect_err(other.to_string()),
        })
}

async fn exchange<T>(
    io: T,
    req: Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, S3Error>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| S3Error::Answer("the connection".into(), e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| S3Error::Answer("a request".into(), e.to_string()))
}

/// rustls with the system's CA bundle, loaded once.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, S3Error> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            for bundle in [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ssl/cert.pem",
            ] {
                if let Ok(iter) = CertificateDer::pem_file_iter(bundle) {
                    for cert in iter.flatten() {
                        let _ = roots.add(cert);
                    }
                }
            }
            if roots.is_empty() {
                return Err(
                    "no CA certificates found (install ca-certificates) for the https endpoint"
                        .into(),
                );
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(S3Error::Config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_and_settings_are_checked() {
        assert_eq!(
            S3Settings::parse_location("s3://my-bucket/a/b/").unwrap(),
            ("my-bucket".into(), "a/b".into())
        );
        assert_eq!(
            S3Settings::parse_location("s3://my-bucket").unwrap(),
            ("my-bucket".into(), "".into())
        );
        assert!(S3Settings::parse_location("my-bucket/x").is_err());
        assert!(S3Settings::parse_location("s3://My_Bucket/x").is_err());
        assert!(S3Settings::parse_location("s3://bucket/../x").is_err());
        let ok = S3Settings {
            endpoint: "https://s3.example.com".into(),
            region: "eu-west-1".into(),
            bucket: "backups".into(),
            prefix: "milkcrate".into(),
            access_key: "AK".into(),
            secret_key: "SK".into(),
        };
        assert!(ok.check().is_ok());
        for bad in [
            S3Settings {
                endpoint: "ftp://x".into(),
                ..ok.clone()
            },
            S3Settings {
                region: "eu west".into(),
                ..ok.clone()
            },
            S3Settings {
                secret_key: String::new(),
                ..ok.clone()
            },
        ] {
            assert!(bad.check().is_err());
        }
    }
}
