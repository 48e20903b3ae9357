//! Certificates issued and renewed by ACME (RFC 8555) for the host names milkcrate knows.
//!
//! One background task ([`run`]) looks at every known name (the admin host and each app's
//! `<name>.<apps domain>`; never a name a client merely sent) at start-up, every tick and when
//! woken. A name without a certificate, or whose certificate is past two thirds of its
//! lifetime (less a random jitter of up to a twentieth), gets one order of its own. The
//! challenge is answered by the listeners through [`crate::tls::CertStore`]: HTTP-01 on the
//! HTTP listener, TLS-ALPN-01 on the HTTPS one. The new certificate is written to
//! `<data>/tls/acme/<host>/` (0600) and swapped into the store live. A failure is kept with
//! the host (`state.json`) in plain words, and retried after an exponential backoff (or the
//! CA's Retry-After, if later). Issues, renewals and failures go to the audit log.
//!
//! The client is `instant-acme` on ring; its HTTP goes through [`AcmeHttp`], a small client on
//! the hyper and tokio-rustls already in the tree, trusting the system's CA bundle (or
//! MILKCRATE_ACME_CA_FILE).

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, Problem, RetryPolicy,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{Actor, Event};
use crate::config::AcmeChallenge;
use crate::tls::{CertStore, Source};

/// What is known of one host name's ACME certificate; kept in `<host>/state.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostState {
    /// Unix seconds at which the certificate is renewed (set when one is issued or loaded).
    #[serde(default)]
    pub renew_at: Option<i64>,
    /// The last failure, in plain words; cleared by a success.
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub last_error_at: Option<i64>,
    /// Failures since the last success (the backoff's exponent).
    #[serde(default)]
    pub failures: u32,
    /// Unix seconds before which no new order is placed (backoff, Retry-After).
    #[serde(default)]
    pub next_attempt: i64,
    /// Orders placed for this name, ever.
    #[serde(default)]
    pub orders: u64,
}

/// The ACME side of the server: per-host state, the account, the wake-up bell.
#[derive(Default)]
pub struct Acme {
    hosts: Mutex<HashMap<String, HostState>>,
    account: tokio::sync::Mutex<Option<Account>>,
    wake: tokio::sync::Notify,
    retry_after: Arc<Mutex<Option<i64>>>,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme").finish_non_exhaustive()
    }
}

impl Acme {
    /// What the page shows for `host` (a default state when nothing happened yet).
    pub fn host(&self, host: &str) -> HostState {
        self.lock().get(host).cloned().unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HostState>> {
        self.hosts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the task to look at every name now (a name was added, an upload removed...).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// What the certificate use cases take (issuing, renewing, the admin's uploads): the
/// settings (the TLS folder, the ACME options), the store (the names milkcrate knows), the
/// audit log, the served certificates, the ACME state, and alerting (a failed renewal).
/// Built by the composition root (`AppState::certificates`, `app.rs`).
#[derive(Clone)]
pub struct Certificates {
    pub settings: Arc<crate::config::Settings>,
    pub store: crate::store::Store,
    pub audit: crate::audit::AuditLog,
    pub certs: Arc<CertStore>,
    pub acme: Arc<Acme>,
    pub alerting: crate::service::alerts::Alerting,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// `<data>/tls/acme`: one folder per host name.
pub fn acme_dir(state: &Certificates) -> PathBuf {
    state.settings.tls_dir().join("acme")
}

/// `<data>/tls/uploaded`: the admin's certificates, one folder per host name.
pub fn uploaded_dir(state: &Certificates) -> PathBuf {
    state.settings.tls_dir().join("uploaded")
}

fn account_path(state: &Certificates) -> PathBuf {
    state.settings.tls_dir().join("acme-account.json")
}

/// The names the Certificates page lists and ACME serves: every name milkcrate knows
/// ([`crate::service::domains::known_hosts`]: the admin host, every `<app>.<apps domain>`,
/// every custom domain), never a stranger's SNI.
pub async fn names(state: &Certificates) -> Vec<String> {
    crate::service::domains::known_hosts(&state.settings, &state.store).await
}

/// Loads what earlier runs stored: uploaded and ACME certificates and each host's state, so
/// a restart serves them at once and orders nothing new for them.
pub fn load_stored(state: &Certificates) {
    state.certs.load_dir(Source::Uploaded, &uploaded_dir(state));
    state.certs.load_dir(Source::Acme, &acme_dir(state));
    let Ok(entries) = std::fs::read_dir(acme_dir(state)) else {
        return;
    };
    let mut hosts = state.acme.lock();
    for entry in entries.flatten() {
        let host = entry.file_name().to_string_lossy().into_owned();
        let mut st: HostState = std::fs::read(entry.path().join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if st.renew_at.is_none()
            && let Some(served) = state.certs.get(Source::Acme, &host)
        {
            st.renew_at = Some(renewal_time(&served.info));
        }
        hosts.insert(host, st);
    }
}

/// Two thirds into the certificate's lifetime, less a random jitter of up to a twentieth of
/// it, so many certificates issued together are not all renewed in the same minute.
pub fn renewal_time(info: &crate::tls::CertInfo) -> i64 {
    let life = (info.not_after - info.not_before).max(0);
    let jitter_span = (life / 20).max(1);
    let r = u64::from_le_bytes(crate::secrets::random_bytes::<8>());
    let jitter = (r % jitter_span as u64) as i64;
    info.not_before + life * 2 / 3 - jitter
}

/// The wait after the `failures`-th failure in a row: base × 2^(n-1), at most a day.
pub fn backoff(base: Duration, failures: u32) -> Duration {
    let factor = 1u64 << failures.saturating_sub(1).min(20);
    Duration::from_secs(base.as_secs().max(1).saturating_mul(factor))
        .min(Duration::from_secs(86_400))
}

fn save_state(state: &Certificates, host: &str, st: &HostState) {
    state.acme.lock().insert(host.to_string(), st.clone());
    let folder = acme_dir(state).join(host);
    let write = || -> std::io::Result<()> {
        crate::config::create_private_dir(&folder)?;
        let part = folder.join("state.json.part");
        let _ = std::fs::remove_file(&part);
        let body = serde_json::to_vec_pretty(st).map_err(std::io::Error::other)?;
        crate::config::write_private_file(&part, &body)?;
        std::fs::rename(&part, folder.join("state.json"))
    };
    if let Err(e) = write() {
        tracing::warn!(host, error = %e, "cannot save the certificate state");
    }
}

/// Runs for the life of the server when MILKCRATE_ACME=on.
pub async fn run(state: Certificates) {
    if !state.settings.acme.enabled {
        return;
    }
    loop {
        let hosts = names(&state).await;
        let mut next_wake = now() + state.settings.acme.tick.as_secs() as i64;
        for host in &hosts {
            if state.certs.get(Source::Uploaded, host).is_some() {
                continue; // the admin's own certificate is served; ACME leaves it alone
            }
            let st = state.acme.host(host);
            let due = match (state.certs.get(Source::Acme, host), st.renew_at) {
                (None, _) => now(),
                (Some(_), Some(at)) => at,
                (Some(_), None) => now(),
            }
            .max(st.next_attempt);
            if due <= now() {
                issue(&state, host).await;
                let st = state.acme.host(host);
                next_wake = next_wake.min(st.next_attempt.max(st.renew_at.unwrap_or(0)));
            } else {
                next_wake = next_wake.min(due);
            }
        }
        let wait = Duration::from_secs((next_wake - now()).clamp(1, 86_400) as u64);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = state.acme.wake.notified() => {}
        }
    }
}

fn system_actor() -> Actor {
    Actor {
        admin: false,
        ip: "milkcrate".into(),
        user_agent: "milkcrate acme".into(),
        token: None,
    }
}

/// One order for `host`; the outcome is stored, audited and (on success) served.
pub async fn issue(state: &Certificates, host: &str) {
    let renewing = state.certs.get(Source::Acme, host).is_some();
    let mut st = state.acme.host(host);
    st.orders += 1;
    save_state(state, host, &st);
    *state
        .acme
        .retry_after
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = None;
    let outcome = tokio::time::timeout(Duration::from_secs(300), order(state, host))
        .await
        .unwrap_or(Err(OrderError::Timeout));
    let action = if renewing {
        "certificate_renew"
    } else {
        "certificate_issue"
    };
    match outcome {
        Ok((chain, key)) => match crate::tls::served_from_pem(chain.as_bytes(), key.as_bytes()) {
            Ok(served) => {
                if let Err(e) =
                    crate::tls::store_pair(&acme_dir(state), host, chain.as_bytes(), key.as_bytes())
                {
                    tracing::warn!(host, error = %e, "cannot store the new certificate");
                }
                st.renew_at = Some(renewal_time(&served.info));
                st.last_error = None;
                st.last_error_at = None;
                st.failures = 0;
                st.next_attempt = 0;
                let details = json!({
                    "host": host,
                    "issuer": served.info.issuer,
                    "expires": crate::clock::format_unix(served.info.not_after),
                });
                state.certs.set(Source::Acme, host, served);
                save_state(state, host, &st);
                crate::service::alerts::renewal_succeeded(&state.alerting, host);
                state
                    .audit
                    .record_logged(
                        &system_actor(),
                        Event::new(action, "certificate", host).details(details),
                    )
                    .await;
                tracing::info!(host, action, "certificate installed");
            }
            Err(e) => {
                fail(
                    state,
                    host,
                    &mut st,
                    action,
                    format!("the CA sent a certificate milkcrate cannot use: {e}"),
                )
                .await
            }
        },
        Err(e) => fail(state, host, &mut st, action, e.to_string()).await,
    }
}

async fn fail(
    state: &Certificates,
    host: &str,
    st: &mut HostState,
    action: &'static str,
    error: String,
) {
    st.failures = st.failures.saturating_add(1);
    let mut next = now() + backoff(state.settings.acme.retry_base, st.failures).as_secs() as i64;
    if let Some(after) = *state
        .acme
        .retry_after
        .lock()
        .unwrap_or_else(|p| p.into_inner())
    {
        next = next.max(after);
    }
    st.next_attempt = next;
    st.last_error = Some(error.clone());
    st.last_error_at = Some(now());
    save_state(state, host, st);
    tracing::warn!(host, error = %error, "certificate order failed");
    if action == "certificate_renew" {
        crate::service::alerts::renewal_failed(&state.alerting, host, &error, next).await;
    }
    state
        .audit
        .record_logged(
            &system_actor(),
            Event::new(action, "certificate", host)
                .details(json!({"host": host, "retry_at": crate::clock::format_unix(next)}))
                .failed(error),
        )
        .await;
}

/// Why an order failed, in the plain words kept with the host (`state.json`), shown on the
/// Certificates page and written to the audit log; instant-acme's error is kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// The CA (or the way to it) said no: `describe` puts it in plain words, naming the
    /// challenge's URL when the CA could not reach it.
    #[error("{}", describe(.source, .url.as_deref(), .host))]
    Ca {
        source: Box<instant_acme::Error>,
        url: Option<String>,
        host: String,
    },
    /// The challenge's own error, said by `describe_problem`.
    #[error("{0}")]
    Challenge(String),
    #[error("the CA says the authorization is {0}")]
    Authorization(String),
    #[error(
        "the CA does not offer the {wanted} challenge for {host}; set MILKCRATE_ACME_CHALLENGE to the other one"
    )]
    NoChallenge { wanted: String, host: String },
    #[error("the CA marked the order {0} without saying why")]
    NotReady(String),
    #[error("the CA did not finish the order within 5 minutes")]
    Timeout,
    /// The HTTP client could not be set up (no CA bundle, an unreadable one...).
    #[error("{0}")]
    Client(String),
    /// The TLS-ALPN-01 answer could not be made.
    #[error("{0}")]
    AlpnCertificate(String),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("cannot store the ACME account in {path}: {source}")]
    StoreAccount {
        path: String,
        source: std::io::Error,
    },
}

impl OrderError {
    /// instant-acme's error while ordering for `host` (no challenge URL to name).
    fn ca(host: &str) -> impl Fn(instant_acme::Error) -> OrderError + '_ {
        move |source| OrderError::Ca {
            source: Box::new(source),
            url: None,
            host: host.to_string(),
        }
    }
}

/// The account: the stored one for this directory, else a new one (stored, 0600).
async fn account(state: &Certificates) -> Result<Account, OrderError> {
    let mut guard = state.acme.account.lock().await;
    if let Some(a) = guard.as_ref() {
        return Ok(a.clone());
    }
    let settings = &state.settings.acme;
    let http = || -> Result<Box<dyn HttpClient>, OrderError> {
        Ok(Box::new(
            AcmeHttp::new(settings.ca_file.as_deref(), state.acme.retry_after.clone())
                .map_err(OrderError::Client)?,
        ))
    };
    let path = account_path(state);
    #[derive(Serialize, Deserialize)]
    struct Stored {
        directory: String,
        credentials: AccountCredentials,
    }
    let stored: Option<Stored> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|s: &Stored| s.directory == settings.directory);
    let account = match stored {
        Some(s) => Account::builder_with_http(http()?)
            .from_credentials(s.credentials)
            .await
            .map_err(OrderError::ca(""))?,
        None => {
            let contact = settings.email.as_ref().map(|e| format!("mailto:{e}"));
            let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
            let (account, credentials) = Account::builder_with_http(http()?)
                .create(
                    &NewAccount {
                        contact: &contacts,
                        terms_of_service_agreed: true,
                        only_return_existing: false,
                    },
                    settings.directory.clone(),
                    None,
                )
                .await
                .map_err(OrderError::ca(""))?;
            let body = serde_json::to_vec(&Stored {
                directory: settings.directory.clone(),
                credentials,
            })?;
            crate::config::create_private_dir(&state.settings.tls_dir())?;
            let part = path.with_extension("json.part");
            let _ = std::fs::remove_file(&part);
            crate::config::write_private_file(&part, &body)
                .and_then(|()| std::fs::rename(&part, &path))
                .map_err(|source| OrderError::StoreAccount {
                    path: path.display().to_string(),
                    source,
                })?;
            account
        }
    };
    *guard = Some(account.clone());
    Ok(account)
}

/// Removes the challenge answers of one order whatever way it ends.
struct ChallengeGuard<'a> {
    certs: &'a CertStore,
    host: String,
    tokens: Vec<String>,
}

impl Drop for ChallengeGuard<'_> {
    fn drop(&mut self) {
        self.certs.clear_alpn_challenge(&self.host);
        for t in &self.tokens {
            self.certs.clear_http_challenge(t);
        }
    }
}

/// Places one order for `host` and answers its challenge; the PEM chain and key on success,
/// the reason in plain words otherwise.
async fn order(state: &Certificates, host: &str) -> Result<(String, String), OrderError> {
    let account = account(state).await?;
    let kind = state.settings.acme.challenge;
    let identifiers = [Identifier::Dns(host.to_string())];
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(OrderError::ca(host))?;
    let mut guard = ChallengeGuard {
        certs: &state.certs,
        host: host.to_string(),
        tokens: Vec::new(),
    };
    let mut challenge_url = None;
    {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(OrderError::ca(host))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(OrderError::Authorization(format!("{other:?}"))),
            }
            let wanted = match kind {
                AcmeChallenge::Http01 => ChallengeType::Http01,
                AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            };
            let mut challenge =
                authz
                    .challenge(wanted.clone())
                    .ok_or_else(|| OrderError::NoChallenge {
                        wanted: format!("{wanted:?}"),
                        host: host.to_string(),
                    })?;
            let key_authorization = challenge.key_authorization();
            match kind {
                AcmeChallenge::Http01 => {
                    state
                        .certs
                        .set_http_challenge(&challenge.token, key_authorization.as_str());
                    guard.tokens.push(challenge.token.clone());
                    challenge_url = Some(format!(
                        "http://{host}/.well-known/acme-challenge/{}",
                        challenge.token
                    ));
                }
                AcmeChallenge::TlsAlpn01 => {
                    let cert =
                        crate::tls::alpn_challenge_cert(host, key_authorization.digest().as_ref())
                            .map_err(OrderError::AlpnCertificate)?;
                    state.certs.set_alpn_challenge(host, cert);
                    challenge_url = Some(format!("https://{host}/ (TLS-ALPN-01)"));
                }
            }
            challenge.set_ready().await.map_err(OrderError::ca(host))?;
        }
    }
    let retries = RetryPolicy::new().timeout(Duration::from_secs(120));
    let status = order
        .poll_ready(&retries)
        .await
        .map_err(|source| OrderError::Ca {
            source: Box::new(source),
            url: challenge_url.clone(),
            host: host.to_string(),
        })?;
    if status != OrderStatus::Ready {
        // The challenge's own error says why.
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(OrderError::ca(host))?;
            let fresh = authz.refresh().await.map_err(OrderError::ca(host))?;
            if let Some(problem) = fresh.challenges.iter().find_map(|c| c.error.as_ref()) {
                return Err(OrderError::Challenge(describe_problem(
                    problem,
                    challenge_url.as_deref(),
                    host,
                )));
            }
        }
        return Err(OrderError::NotReady(format!("{status:?}")));
    }
    drop(guard);
    let key = order.finalize().await.map_err(OrderError::ca(host))?;
    let chain = order
        .poll_certificate(&retries)
        .await
        .map_err(OrderError::ca(host))?;
    Ok((chain, key))
}

/// An ACME error in plain words.
fn describe(e: &instant_acme::Error, url: Option<&str>, host: &str) -> String {
    match e {
        instant_acme::Error::Api(p) => describe_problem(p, url, host),
        instant_acme::Error::Timeout(_) => {
            "the CA did not finish checking the challenge in time; milkcrate will try again".into()
        }
        other => format!("could not talk to the ACME CA: {other}"),
    }
}

fn describe_problem(p: &Problem, url: Option<&str>, host: &str) -> String {
    let kind = p
        .r#type
        .as_deref()
        .and_then(|t| t.rsplit(':').next())
        .unwrap_or("");
    let detail = p.detail.clone().unwrap_or_default();
    let what = url.unwrap_or("the challenge");
    match kind {
        "connection" | "incorrectResponse" | "unauthorized" | "tls" => format!(
            "the CA could not reach {what}: check that the DNS A record of {host} points at this server and that ports 80 and 443 are open ({detail})"
        ),
        "dns" => format!(
            "the CA could not look up {host} in DNS: add an A (or AAAA) record for it pointing at this server ({detail})"
        ),
        "rateLimited" => {
            format!("the CA's rate limit was hit; milkcrate waits as long as it asks ({detail})")
        }
        "rejectedIdentifier" => format!("the CA will not issue for {host} ({detail})"),
        _ => format!("the CA refused the order: {detail}"),
    }
}

/// The HTTP client instant-acme talks through: HTTPS only, one connection per request (the
/// protocol makes few), the CA's roots from MILKCRATE_ACME_CA_FILE or the system bundle.
/// It notes the CA's Retry-After on error answers.
struct AcmeHttp {
    tls: tokio_rustls::TlsConnector,
    retry_after: Arc<Mutex<Option<i64>>>,
}

/// Where Debian/Ubuntu/Alpine and Fedora/RHEL keep the system's CA bundle.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

impl AcmeHttp {
    fn new(ca_file: Option<&Path>, retry_after: Arc<Mutex<Option<i64>>>) -> Result<Self, String> {
        let file = match ca_file {
            Some(f) => f.to_path_buf(),
            None => SYSTEM_BUNDLES
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
                .ok_or(
                    "no CA bundle found (install ca-certificates, or set MILKCRATE_ACME_CA_FILE)",
                )?,
        };
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(&file)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read the CA file {}: {e}", file.display()))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!(
                "the CA file {} holds no usable certificate",
                file.display()
            ));
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            retry_after,
        })
    }
}

fn other(e: impl std::fmt::Display) -> instant_acme::Error {
    instant_acme::Error::Other(e.to_string().into())
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let tls = self.tls.clone();
        let retry_after = self.retry_after.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            if parts.uri.scheme_str() != Some("https") {
                return Err(other(format!(
                    "refusing a non-https ACME URL {}",
                    parts.uri
                )));
            }
            let host = parts
                .uri
                .host()
                .ok_or_else(|| other("an ACME URL without a host"))?
                .to_string();
            let port = parts.uri.port_u16().unwrap_or(443);
            let authority = parts
                .uri
                .authority()
                .map(|a| a.as_str().to_string())
                .unwrap_or_else(|| host.clone());
            let exchange = async {
                let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
                    .await
                    .map_err(|e| other(format!("cannot connect to {authority}: {e}")))?;
                let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                    .map_err(other)?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| other(format!("TLS with {authority} failed: {e}")))?;
                let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(other)?;
                tokio::spawn(conn);
                let path = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_else(|| "/".into());
                parts.uri = path.parse().map_err(other)?;
                parts.headers.insert(
                    http::header::HOST,
                    http::HeaderValue::from_str(&authority).map_err(other)?,
                );
                let resp = send
                    .send_request(http::Request::from_parts(parts, body))
                    .await
                    .map_err(other)?;
                let (rparts, rbody) = resp.into_parts();
                let bytes = rbody.collect().await.map_err(other)?.to_bytes();
                Ok::<_, instant_acme::Error>((rparts, bytes))
            };
            let (rparts, bytes) = tokio::time::timeout(Duration::from_secs(30), exchange)
                .await
                .map_err(|_| other(format!("{authority} did not answer within 30 s")))??;
            if !rparts.status.is_success()
                && let Some(secs) = rparts
                    .headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<i64>().ok())
            {
                *retry_after.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(now() + secs.clamp(0, 7 * 86_400));
            }
            Ok(BytesResponse::from(http::Response::from_parts(
                rparts,
                Full::new(bytes),
            )))
        })
    }
}

/// Why the admin's certificate was not taken (or not removed), in the sentence the
/// Certificates page shows.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(
        "{0:?} is not a host name: give a name such as shop.example.org (no scheme, port or wildcard)."
    )]
    NotAHostName(String),
    #[error("The certificate and key must each be under 64 KiB of PEM text.")]
    TooLarge,
    /// The PEM text does not hold a usable certificate and key (the TLS layer's words).
    #[error("The certificate was refused: {0}.")]
    Unusable(String),
    #[error("The certificate does not name {0}.")]
    OtherName(String),
    #[error("The certificate expired on {}.", crate::clock::format_unix(*.0))]
    Expired(i64),
    #[error("The certificate could not be stored: {0}.")]
    Store(#[source] std::io::Error),
    #[error("No uploaded certificate for {0}.")]
    NoUpload(String),
    #[error("The certificate files could not be removed: {0}.")]
    Remove(#[source] std::io::Error),
}

/// Checks and stores the admin's certificate for `host`, then serves it at once.
pub fn save_upload(
    state: &Certificates,
    host: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<crate::tls::Served, CertError> {
    let host = crate::tls::normalise(host);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if host.len() > 253
        || !host.contains('.')
        || !host.split('.').all(label_ok)
        || host.parse::<std::net::IpAddr>().is_ok()
    {
        return Err(CertError::NotAHostName(host));
    }
    if cert_pem.len() > 64 * 1024 || key_pem.len() > 64 * 1024 {
        return Err(CertError::TooLarge);
    }
    let served = crate::tls::served_from_pem(cert_pem.as_bytes(), key_pem.as_bytes())
        .map_err(CertError::Unusable)?;
    if !crate::tls::valid_for(&served.key, &host) {
        return Err(CertError::OtherName(host));
    }
    if served.info.not_after <= now() {
        return Err(CertError::Expired(served.info.not_after));
    }
    crate::tls::store_pair(
        &uploaded_dir(state),
        &host,
        cert_pem.as_bytes(),
        key_pem.as_bytes(),
    )
    .map_err(CertError::Store)?;
    state.certs.set(Source::Uploaded, &host, served.clone());
    Ok(served)
}

/// Removes the admin's certificate for `host`; ACME (when on) takes the name over.
pub fn remove_upload(state: &Certificates, host: &str) -> Result<(), CertError> {
    let host = crate::tls::normalise(host);
    if state.certs.get(Source::Uploaded, &host).is_none() {
        return Err(CertError::NoUpload(host));
    }
    let folder = uploaded_dir(state).join(&host);
    if folder.starts_with(uploaded_dir(state)) && folder.is_dir() {
        std::fs::remove_dir_all(&folder).map_err(CertError::Remove)?;
    }
    state.certs.remove(Source::Uploaded, &host);
    state.acme.wake();
    Ok(())
}

/// Clears a host's backoff so the task tries it now (the admin fixed DNS, say).
pub fn retry_now(state: &Certificates, host: &str) {
    let host = crate::tls::normalise(host);
    let mut st = state.acme.host(&host);
    st.next_attempt = 0;
    save_state(state, &host, &st);
    state.acme.wake();
}

/// What `host` resolves to here, for the page's DNS hint (2 s at most).
pub async fn resolve(host: &str) -> Result<Vec<std::net::IpAddr>, String> {
    match tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::lookup_host((host.to_string(), 443)),
    )
    .await
    {
        Ok(Ok(addrs)) => {
            let mut ips: Vec<_> = addrs.map(|a| a.ip()).collect();
            ips.sort();
            ips.dedup();
            Ok(ips)
        }
        Ok(Err(e)) => Err(format!("does not resolve ({e})")),
        Err(_) => Err("no answer from DNS within 2 s".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_two_thirds_in_less_a_small_jitter() {
        let info = crate::tls::CertInfo {
            issuer: "x".into(),
            not_before: 0,
            not_after: 90 * 86_400,
        };
        for _ in 0..50 {
            let at = renewal_time(&info);
            assert!(
                at <= 60 * 86_400 && at > 60 * 86_400 - 90 * 86_400 / 20,
                "{at}"
            );
        }
    }

    #[test]
    fn backoff_doubles_up_to_a_day() {
        let base = Duration::from_secs(60);
        assert_eq!(backoff(base, 1), Duration::from_secs(60));
        assert_eq!(backoff(base, 2), Duration::from_secs(120));
        assert_eq!(backoff(base, 4), Duration::from_secs(480));
        assert_eq!(backoff(base, 40), Duration::from_secs(86_400));
    }

    #[test]
    fn problems_are_told_in_plain_words() {
        let p: Problem = serde_json::from_value(json!({
            "type": "urn:ietf:params:acme:error:connection",
            "detail": "connection refused",
        }))
        .expect("problem");
        let text = describe_problem(
            &p,
            Some("http://shop.example.org/.well-known/acme-challenge/abc"),
            "shop.example.org",
        );
        assert!(
            text.starts_with("the CA could not reach http://shop.example.org/.well-known/acme-challenge/abc: check that the DNS A record of shop.example.org points at this server"),
            "{text}"
        );
    }

    #[test]
    fn upload_refusals_say_the_sentences_the_page_shows() {
        assert_eq!(
            CertError::NotAHostName("x".into()).to_string(),
            "\"x\" is not a host name: give a name such as shop.example.org (no scheme, port or wildcard)."
        );
        assert_eq!(
            CertError::Expired(0).to_string(),
            format!(
                "The certificate expired on {}.",
                crate::clock::format_unix(0)
            )
        );
        assert_eq!(
            CertError::NoUpload("shop.example.org".into()).to_string(),
            "No uploaded certificate for shop.example.org."
        );
        assert_eq!(
            OrderError::Timeout.to_string(),
            "the CA did not finish the order within 5 minutes"
        );
        let io = CertError::Store(std::io::Error::other("disk full"));
        assert_eq!(
            io.to_string(),
            "The certificate could not be stored: disk full."
        );
        assert!(
            std::error::Error::source(&io).is_some(),
            "the io error is kept"
        );
    }
}
