//! Alerts: what happened (a deploy failed, an app crash-loops, the engine went away…) sent to
//! the channels the admin configured — webhooks (plain JSON, Slack or Discord bodies) and
//! email over SMTP (`lettre`, STARTTLS by default). Each condition is sent once per episode:
//! an episode opens when the condition starts and closes when it has cleared, so a storm of
//! restarts is one message. Every delivery is recorded (Notifications page) with its result;
//! a failed send is retried with doubling delays, then logged and counted.
//!
//! Channel targets (webhook URLs carry tokens, SMTP settings a password) are encrypted at rest
//! like app variables (ChaCha20-Poly1305, a key derived from SECRET_KEY, bound to the name).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::clock::now_unix;
use crate::store::alerts::ChannelRow;

/// What an alert is about. The key is what channels subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertKind {
    DeployFailed,
    DeploySucceeded,
    CrashLoop,
    Exited,
    Unhealthy,
    EngineUnreachable,
    DiskLow,
    CertExpiring,
    CertRenewalFailed,
    Test,
}

impl AlertKind {
    /// Every kind a channel may subscribe to, in the form's order.
    pub const ALL: [AlertKind; 9] = [
        AlertKind::DeployFailed,
        AlertKind::DeploySucceeded,
        AlertKind::CrashLoop,
        AlertKind::Exited,
        AlertKind::Unhealthy,
        AlertKind::EngineUnreachable,
        AlertKind::DiskLow,
        AlertKind::CertExpiring,
        AlertKind::CertRenewalFailed,
    ];

    pub fn key(self) -> &'static str {
        match self {
            AlertKind::DeployFailed => "deploy.failed",
            AlertKind::DeploySucceeded => "deploy.succeeded",
            AlertKind::CrashLoop => "app.crash_loop",
            AlertKind::Exited => "app.exited",
            AlertKind::Unhealthy => "app.unhealthy",
            AlertKind::EngineUnreachable => "engine.unreachable",
            AlertKind::DiskLow => "disk.low",
            AlertKind::CertExpiring => "certificate.expiring",
            AlertKind::CertRenewalFailed => "certificate.renewal_failed",
            AlertKind::Test => "test",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            AlertKind::DeployFailed => "A deploy failed",
            AlertKind::DeploySucceeded => "A deploy succeeded",
            AlertKind::CrashLoop => "An app is crash-looping",
            AlertKind::Exited => "An app exited unexpectedly",
            AlertKind::Unhealthy => "An app stays unhealthy",
            AlertKind::EngineUnreachable => "The Docker Engine is unreachable",
            AlertKind::DiskLow => "Disk space is low",
            AlertKind::CertExpiring => "A certificate expires soon",
            AlertKind::CertRenewalFailed => "A certificate's renewal failed",
            AlertKind::Test => "A test message",
        }
    }

    /// Subscribed by a new channel unless unticked (successes are opt-in).
    pub fn default_on(self) -> bool {
        !matches!(self, AlertKind::DeploySucceeded | AlertKind::Test)
    }

    pub fn parse(key: &str) -> Option<AlertKind> {
        Self::ALL.into_iter().find(|k| k.key() == key)
    }
}

/// One alert.
#[derive(Debug, Clone)]
pub struct Alert {
    pub kind: AlertKind,
    /// The app, `engine`, or the folder it is about.
    pub subject: String,
    pub title: String,
    pub message: String,
}

/// Where a channel sends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Target {
    Webhook {
        url: String,
    },
    Email {
        host: String,
        port: u16,
        /// `starttls` (required), `tls` (implicit, port 465) or `none` (plain: only for a relay
        /// on this machine).
        security: String,
        username: String,
        password: String,
        from: String,
        to: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("{0}")]
    Invalid(String),
    #[error("a channel named {0:?} already exists: choose another name")]
    Taken(String),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

/// The alert state: open episodes, recent exits, and the HTTP client for webhooks.
pub struct Alerts {
    episodes: Mutex<HashMap<(AlertKind, String), Instant>>,
    exits: Mutex<HashMap<String, VecDeque<Instant>>>,
    unhealthy_since: Mutex<HashMap<String, Instant>>,
    engine_down_since: Mutex<Option<Instant>>,
    http: Option<reqwest::Client>,
}

impl Default for Alerts {
    fn default() -> Self {
        // Webhooks are mostly HTTPS (Slack, Discord): reqwest on rustls with the ring
        // provider, the one the server uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("milkcrate/", env!("CARGO_PKG_VERSION")))
            .build();
        if let Err(e) = &http {
            tracing::error!(error = %e, "cannot build the webhook client; webhook alerts will fail");
        }
        Self {
            episodes: Mutex::default(),
            exits: Mutex::default(),
            unhealthy_since: Mutex::default(),
            engine_down_since: Mutex::default(),
            http: http.ok(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Alerts {
    /// Opens the episode of `kind` for `subject`; false when it is already open (no repeat).
    fn open(&self, kind: AlertKind, subject: &str) -> bool {
        let mut e = lock(&self.episodes);
        if e.contains_key(&(kind, subject.to_string())) {
            return false;
        }
        e.insert((kind, subject.to_string()), Instant::now());
        true
    }

    fn close(&self, kind: AlertKind, subject: &str) {
        lock(&self.episodes).remove(&(kind, subject.to_string()));
    }

    /// Records an unexpected exit of `app`; returns the exits within `window`, this one
    /// included.
    fn exit_seen(&self, app: &str, window: Duration) -> usize {
        let mut exits = lock(&self.exits);
        let list = exits.entry(app.to_string()).or_default();
        let now = Instant::now();
        list.push_back(now);
        while list
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            list.pop_front();
        }
        list.len()
    }

    /// Apps whose last exit is older than `window`: their exit episodes are over.
    fn quiet_apps(&self, window: Duration) -> Vec<String> {
        let mut exits = lock(&self.exits);
        let quiet: Vec<String> = exits
            .iter()
            .filter(|(_, l)| l.back().is_none_or(|t| t.elapsed() > window))
            .map(|(a, _)| a.clone())
            .collect();
        for a in &quiet {
            exits.remove(a);
        }
        quiet
    }
}

/// What sending alerts takes: the settings (instance, retry delays, the key channel targets
/// are encrypted with), the store (channels and deliveries), the failure meter and the open
/// episodes. Built by the composition root (`app.rs`); the deploy pipeline's [`Notifier`] is
/// a closure around [`notify`] with one of these.
#[derive(Clone)]
pub struct Alerting {
    pub settings: Arc<crate::config::Settings>,
    pub store: crate::store::Store,
    pub metrics: Arc<crate::service::metrics::Metrics>,
    pub alerts: Arc<Alerts>,
}

/// What watching for alert conditions takes besides [`Alerting`]: the engine (exits, its
/// status, its disk), the per-app locks (an exit during an action is expected), the status
/// snapshot (health), and the served certificates with their ACME state (expiry).
#[derive(Clone)]
pub struct AlertWatch {
    pub alerting: Alerting,
    pub engine: Arc<crate::docker::monitor::EngineMonitor>,
    pub app_locks: Arc<crate::service::locks::AppLocks>,
    pub status: Arc<crate::service::status::StatusMonitor>,
    pub certs: Arc<crate::tls::CertStore>,
    pub acme: Arc<crate::service::acme::Acme>,
}

/// The key channel targets are encrypted with.
fn channel_key(state: &Alerting) -> [u8; 32] {
    crate::secrets::derive_key(
        state.settings.secret_key.as_deref().unwrap_or_default(),
        "alert channels",
    )
}

fn aad(name: &str) -> Vec<u8> {
    format!("alert-channel:{name}").into_bytes()
}

/// What the admin typed for a new channel.
#[derive(Debug, Clone, Default)]
pub struct NewChannel {
    pub name: String,
    pub kind: String,
    pub format: String,
    pub url: String,
    pub smtp_host: String,
    pub smtp_port: String,
    pub smtp_security: String,
    pub smtp_username: String,
    pub smtp_password: String,
    pub mail_from: String,
    pub mail_to: String,
    pub events: Vec<String>,
}

/// Checks a new channel; returns its target, the summary shown, its format and events.
pub fn check_channel(
    c: &NewChannel,
) -> Result<(Target, String, String, Vec<AlertKind>), ChannelError> {
    let bad = |m: &str| Err(ChannelError::Invalid(m.to_string()));
    let name = c.name.trim();
    if name.is_empty() || name.chars().count() > 60 || name.chars().any(char::is_control) {
        return bad("Give the channel a name of 1 to 60 characters.");
    }
    let mut events = Vec::new();
    for e in &c.events {
        match AlertKind::parse(e) {
            Some(k) if !events.contains(&k) => events.push(k),
            Some(_) => {}
            None => {
                return Err(ChannelError::Invalid(format!(
                    "{e:?} is not an alert event."
                )));
            }
        }
    }
    if events.is_empty() {
        return bad("Choose at least one event to send.");
    }
    match c.kind.as_str() {
        "webhook" => {
            let url = c.url.trim();
            let parsed = reqwest::Url::parse(url).map_err(|_| {
                ChannelError::Invalid(
                    "The webhook URL is not a URL: give one such as https://hooks.example.org/…."
                        .into(),
                )
            })?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return bad(
                    "The webhook URL must start with https:// (or http://) and name a host.",
                );
            }
            if url.len() > 2000 {
                return bad("The webhook URL is longer than 2,000 characters.");
            }
            let format = match c.format.as_str() {
                "" | "json" => "json",
                "slack" => "slack",
                "discord" => "discord",
                _ => return bad("Choose a webhook format: JSON, Slack or Discord."),
            };
            let summary = format!(
                "{} webhook to {}",
                format,
                parsed.host_str().unwrap_or_default()
            );
            Ok((
                Target::Webhook { url: url.into() },
                summary,
                format.into(),
                events,
            ))
        }
        "email" => {
            let host = c.smtp_host.trim();
            if host.is_empty()
                || host.len() > 253
                || !host
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '-' | ':'))
            {
                return bad("Give the SMTP server's host name, such as smtp.example.org.");
            }
            let security = match c.smtp_security.as_str() {
                "" | "starttls" => "starttls",
                "tls" => "tls",
                "none" => "none",
                _ => {
                    return bad("Choose how to secure the SMTP connection: STARTTLS, TLS or none.");
                }
            };
            let port = match c.smtp_port.trim() {
                "" if security == "tls" => 465,
                "" => 587,
                p => match p.parse::<u16>() {
                    Ok(p) if p > 0 => p,
                    _ => return bad("The SMTP port must be a number from 1 to 65535."),
                },
            };
            let from = c.mail_from.trim();
            let to = c.mail_to.trim();
            for (what, addr) in [("sender", from), ("recipient", to)] {
                if addr.parse::<lettre::Address>().is_err() {
                    return Err(ChannelError::Invalid(format!(
                        "The {what} address {addr:?} is not an email address."
                    )));
                }
            }
            let username = c.smtp_username.trim();
            if !username.is_empty() && c.smtp_password.is_empty() {
                return bad("Give the SMTP password for that user name (or leave both empty).");
            }
            let summary = format!("email to {to} via {host}:{port} ({security})");
            Ok((
                Target::Email {
                    host: host.into(),
                    port,
                    security: security.into(),
                    username: username.into(),
                    password: c.smtp_password.clone(),
                    from: from.into(),
                    to: to.into(),
                },
                summary,
                String::new(),
                events,
            ))
        }
        _ => bad("Choose a channel kind: webhook or email."),
    }
}

/// Stores a new channel, its target encrypted; its id.
pub async fn add_channel(state: &Alerting, c: &NewChannel) -> Result<i64, ChannelError> {
    let (target, summary, format, events) = check_channel(c)?;
    let name = c.name.trim().to_string();
    let plain = serde_json::to_vec(&target).map_err(|e| ChannelError::Invalid(e.to_string()))?;
    let (nonce, ciphertext) = crate::secrets::encrypt(&channel_key(state), &aad(&name), &plain);
    let row = ChannelRow {
        id: 0,
        name: name.clone(),
        kind: c.kind.clone(),
        format,
        summary,
        target_nonce: nonce,
        target_ciphertext: ciphertext,
        events: events.iter().map(|k| k.key()).collect::<Vec<_>>().join(","),
        created_at: now_unix(),
    };
    state
        .store
        .insert_channel(row)
        .await?
        .ok_or(ChannelError::Taken(name))
}

/// Why one delivery attempt failed, in the words the Notifications page shows (the sources,
/// reqwest's and lettre's, are kept; their chain is part of the sentence).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("its settings cannot be decrypted (was SECRET_KEY changed?); add it again")]
    Undecryptable,
    #[error("its settings cannot be read: {0}")]
    Unreadable(#[source] serde_json::Error),
    #[error("the webhook client could not be built")]
    NoClient,
    #[error("the webhook could not be reached: {}", error_chain(.0))]
    Unreachable(#[source] reqwest::Error),
    #[error("the webhook answered {0}")]
    Answered(reqwest::StatusCode),
    #[error("{address:?} is not an email address: {source}")]
    Address {
        address: String,
        source: lettre::address::AddressError,
    },
    #[error("the message could not be built: {0}")]
    Message(#[source] lettre::error::Error),
    #[error("cannot set up TLS for {host}: {source}")]
    Tls {
        host: String,
        source: lettre::transport::smtp::Error,
    },
    #[error("the SMTP server {host}:{port} refused or failed: {}", error_chain(.source))]
    Smtp {
        host: String,
        port: u16,
        source: lettre::transport::smtp::Error,
    },
}

fn target_of(state: &Alerting, c: &ChannelRow) -> Result<Target, DeliveryError> {
    let plain = crate::secrets::decrypt(
        &channel_key(state),
        &aad(&c.name),
        &c.target_nonce,
        &c.target_ciphertext,
    )
    .ok_or(DeliveryError::Undecryptable)?;
    serde_json::from_slice(&plain).map_err(DeliveryError::Unreadable)
}

/// Sends `alert` to every channel subscribed to its kind (a test goes to `only`).
pub async fn notify(state: &Alerting, alert: Alert) {
    notify_channels(state, alert, None).await;
}

/// Sends a test message to one channel; the delivery shows on the Notifications page.
pub async fn send_test(state: &Alerting, channel_id: i64) {
    let alert = Alert {
        kind: AlertKind::Test,
        subject: "milkcrate".into(),
        title: "Test message from milkcrate".into(),
        message: "This channel works: milkcrate will send its alerts here.".into(),
    };
    notify_channels(state, alert, Some(channel_id)).await;
}

async fn notify_channels(state: &Alerting, alert: Alert, only: Option<i64>) {
    tracing::info!(event = alert.kind.key(), subject = %alert.subject, "alert: {}", alert.title);
    let channels = match state.store.channels().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the alert channels");
            return;
        }
    };
    for c in channels {
        let wanted = match only {
            Some(id) => c.id == id,
            None => c.events.split(',').any(|e| e == alert.kind.key()),
        };
        if !wanted {
            continue;
        }
        let id = match state
            .store
            .insert_delivery(
                now_unix(),
                &c,
                alert.kind.key(),
                &alert.subject,
                &format!("{}: {}", alert.title, alert.message),
            )
            .await
        {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(error = %e, "cannot record an alert delivery");
                continue;
            }
        };
        let (state, alert) = (state.clone(), alert.clone());
        tokio::spawn(async move { deliver(&state, id, &c, &alert).await });
    }
}

/// Tries at most this many times.
const ATTEMPTS: u32 = 4;

async fn deliver(state: &Alerting, delivery: i64, channel: &ChannelRow, alert: &Alert) {
    let mut delay = state.settings.observe.alert_retry_base;
    let mut last_error = String::new();
    for attempt in 1..=ATTEMPTS {
        let result = match target_of(state, channel) {
            Ok(target) => send(state, &target, &channel.format, alert).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                crate::service::logged(
                    "record an alert delivery",
                    state
                        .store
                        .update_delivery(delivery, "sent", attempt, None)
                        .await,
                );
                return;
            }
            Err(e) => {
                last_error = e.to_string();
                crate::service::logged(
                    "record an alert delivery",
                    state
                        .store
                        .update_delivery(delivery, "sending", attempt, Some(last_error.clone()))
                        .await,
                );
            }
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
    tracing::warn!(channel = %channel.name, event = alert.kind.key(), error = %last_error, "alert not delivered");
    state.metrics.alert_failed();
    crate::service::logged(
        "record an alert delivery",
        state
            .store
            .update_delivery(delivery, "failed", ATTEMPTS, Some(last_error))
            .await,
    );
}

/// The JSON body of a webhook in `format`.
pub fn webhook_body(format: &str, alert: &Alert, instance: &str) -> serde_json::Value {
    let time = crate::service::access::format_time(now_unix() * 1000);
    match format {
        "slack" => serde_json::json!({
            "text": format!("*{}*\n{}", alert.title, alert.message),
        }),
        "discord" => {
            let mut content = format!("**{}**\n{}", alert.title, alert.message);
            if content.chars().count() > 1900 {
                content = content.chars().take(1900).collect::<String>() + "…";
            }
            serde_json::json!({ "content": content })
        }
        _ => serde_json::json!({
            "event": alert.kind.key(),
            "subject": alert.subject,
            "title": alert.title,
            "message": alert.message,
            "time": time,
            "instance": instance,
        }),
    }
}

async fn send(
    state: &Alerting,
    target: &Target,
    format: &str,
    alert: &Alert,
) -> Result<(), DeliveryError> {
    match target {
        Target::Webhook { url } => {
            let http = state.alerts.http.as_ref().ok_or(DeliveryError::NoClient)?;
            let body = webhook_body(
                format,
                alert,
                state.settings.instance().unwrap_or("milkcrate"),
            );
            let resp = http
                .post(url)
                .json(&body)
                .send()
                .await
                .map_err(DeliveryError::Unreachable)?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(DeliveryError::Answered(resp.status()))
            }
        }
        Target::Email {
            host,
            port,
            security,
            username,
            password,
            from,
            to,
        } => send_email(host, *port, security, username, password, from, to, alert).await,
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[allow(clippy::too_many_arguments)]
async fn send_email(
    host: &str,
    port: u16,
    security: &str,
    username: &str,
    password: &str,
    from: &str,
    to: &str,
    alert: &Alert,
) -> Result<(), DeliveryError> {
    use lettre::message::header::ContentType;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let parse = |a: &str| {
        a.parse::<lettre::message::Mailbox>()
            .map_err(|source| DeliveryError::Address {
                address: a.to_string(),
                source,
            })
    };
    let email = Message::builder()
        .from(parse(from)?)
        .to(parse(to)?)
        .subject(format!("[milkcrate] {}", alert.title))
        .header(ContentType::TEXT_PLAIN)
        .body(format!(
            "{}\n\n{}\n\nEvent: {}\n",
            alert.title,
            alert.message,
            alert.kind.key()
        ))
        .map_err(DeliveryError::Message)?;
    let builder = match security {
        "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
        "none" => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
            host,
        )),
        // STARTTLS is required, never skipped when the server does not offer it.
        _ => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
    }
    .map_err(|source| DeliveryError::Tls {
        host: host.to_string(),
        source,
    })?;
    let mut builder = builder.port(port).timeout(Some(Duration::from_secs(20)));
    if !username.is_empty() {
        builder = builder.credentials(Credentials::new(username.into(), password.into()));
    }
    builder
        .build()
        .send(email)
        .await
        .map(|_| ())
        .map_err(|source| DeliveryError::Smtp {
            host: host.to_string(),
            port,
            source,
        })
}

/// A deploy ended: a failure is always an alert (each deploy its own episode); a success only
/// for channels that chose it.
pub fn deploy_finished(app: &str, deploy_id: i64, error: Option<&str>) -> Alert {
    match error {
        Some(e) => Alert {
            kind: AlertKind::DeployFailed,
            subject: app.into(),
            title: format!("Deploy {deploy_id} of {app} failed"),
            message: e.to_string(),
        },
        None => Alert {
            kind: AlertKind::DeploySucceeded,
            subject: app.into(),
            title: format!("Deploy {deploy_id} of {app} succeeded"),
            message: format!("{app} now runs deploy {deploy_id}."),
        },
    }
}

/// The narrow handle a service that raises alerts holds: it sends one alert to every channel
/// that wants it (built by the composition root, `app.rs`, around [`notify`]).
#[derive(Clone)]
pub struct Notifier(std::sync::Arc<dyn Fn(Alert) -> Sending + Send + Sync>);

/// One alert on its way to the channels.
type Sending = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

impl Notifier {
    pub fn new<F, Fut>(send: F) -> Self
    where
        F: Fn(Alert) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        Notifier(std::sync::Arc::new(move |a| Box::pin(send(a))))
    }

    /// Sends `alert` and returns when every channel has had it (or failed, which is logged).
    pub async fn send(&self, alert: Alert) {
        (self.0)(alert).await
    }
}

/// Follows the engine's container exits for the life of the server; subscribes again after
/// the engine went away.
pub async fn watch_exits(watch: AlertWatch) {
    loop {
        if let Ok(engine) = watch.engine.client().await {
            let labels = vec![watch.alerting.settings.managed_filter()];
            let mut exits = Box::pin(engine.container_exits(&labels));
            while let Some(Ok(exit)) = exits.next().await {
                on_exit(&watch, exit).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// An exit is unexpected when the app should run, the container is its current one (or one
/// of its stack) and no action (deploy, stop, restart, delete) holds the app.
async fn on_exit(watch: &AlertWatch, exit: crate::docker::ContainerExit) {
    let Some(name) = exit.app else { return };
    let Ok(apps) = watch.alerting.store.apps().await else {
        return;
    };
    let Some(app) = apps.into_iter().find(|a| a.name == name) else {
        return;
    };
    let current = app.container_id == exit.container_id
        || app.deployment_type == crate::service::compose::DEPLOYMENT_TYPE;
    if app.status != "running" || !current {
        return;
    }
    if watch.app_locks.try_lock(app.id).is_none() {
        return;
    }
    let o = &watch.alerting.settings.observe;
    watch.alerting.metrics.unexpected_exit(&name);
    let n = watch.alerting.alerts.exit_seen(&name, o.crash_window);
    let code = exit
        .exit_code
        .map(|c| format!(" with code {c}"))
        .unwrap_or_default();
    tracing::warn!(app = %name, exits = n, "app container exited unexpectedly{code}");
    if watch.alerting.alerts.open(AlertKind::Exited, &name) {
        notify(
            &watch.alerting,
            Alert {
                kind: AlertKind::Exited,
                subject: name.clone(),
                title: format!("{name} exited unexpectedly"),
                message: format!("Its container exited{code}; the engine restarts it."),
            },
        )
        .await;
    }
    if n >= o.crash_restarts as usize && watch.alerting.alerts.open(AlertKind::CrashLoop, &name) {
        notify(
            &watch.alerting,
            Alert {
                kind: AlertKind::CrashLoop,
                subject: name.clone(),
                title: format!("{name} is crash-looping"),
                message: format!(
                    "It exited {n} times in the last {} minutes (last{code}). Read its logs on its page.",
                    o.crash_window.as_secs().div_ceil(60)
                ),
            },
        )
        .await;
    }
}

/// Checks the standing conditions (engine, health, disk) for the life of the server, and
/// closes the episodes that are over.
pub async fn watch_conditions(watch: AlertWatch) {
    let mut last_disk: Option<Instant> = None;
    loop {
        tokio::time::sleep(watch.alerting.settings.observe.alert_check_interval).await;
        check_engine(&watch).await;
        check_health(&watch).await;
        check_certificates(&watch).await;
        if last_disk.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
            last_disk = Some(Instant::now());
            check_disk(&watch).await;
        }
        for app in watch
            .alerting
            .alerts
            .quiet_apps(watch.alerting.settings.observe.crash_window)
        {
            watch.alerting.alerts.close(AlertKind::Exited, &app);
            watch.alerting.alerts.close(AlertKind::CrashLoop, &app);
        }
    }
}

async fn check_engine(watch: &AlertWatch) {
    let down = match watch.engine.get() {
        Some(Err(e)) => Some(e),
        _ => None,
    };
    let since = {
        let mut s = lock(&watch.alerting.alerts.engine_down_since);
        match &down {
            Some(_) => *s.get_or_insert_with(Instant::now),
            None => {
                *s = None;
                watch
                    .alerting
                    .alerts
                    .close(AlertKind::EngineUnreachable, "engine");
                return;
            }
        }
    };
    let after = watch.alerting.settings.observe.engine_down_after;
    if since.elapsed() >= after
        && watch
            .alerting
            .alerts
            .open(AlertKind::EngineUnreachable, "engine")
    {
        notify(
            &watch.alerting,
            Alert {
                kind: AlertKind::EngineUnreachable,
                subject: "engine".into(),
                title: "The Docker Engine is unreachable".into(),
                message: format!(
                    "milkcrate has not reached it for {} s: {}. Apps cannot be deployed, started or watched.",
                    since.elapsed().as_secs(),
                    down.unwrap_or_default()
                ),
            },
        )
        .await;
    }
}

async fn check_health(watch: &AlertWatch) {
    let Ok(apps) = watch.alerting.store.apps().await else {
        return;
    };
    let snap = watch.status.snapshot();
    let after = watch.alerting.settings.observe.unhealthy_after;
    for app in apps {
        let status = crate::service::status::status_of(&app, &snap);
        let unhealthy =
            status.health == crate::domain::health::AppHealth::Unhealthy && app.status == "running";
        let since = {
            let mut map = lock(&watch.alerting.alerts.unhealthy_since);
            if unhealthy {
                Some(*map.entry(app.name.clone()).or_insert_with(Instant::now))
            } else {
                map.remove(&app.name);
                None
            }
        };
        match since {
            None => watch.alerting.alerts.close(AlertKind::Unhealthy, &app.name),
            Some(t) if t.elapsed() >= after => {
                if watch.alerting.alerts.open(AlertKind::Unhealthy, &app.name) {
                    notify(
                        &watch.alerting,
                        Alert {
                            kind: AlertKind::Unhealthy,
                            subject: app.name.clone(),
                            title: format!("{} is unhealthy", app.name),
                            message: format!(
                                "Unhealthy for {} s: {}",
                                t.elapsed().as_secs(),
                                status.detail
                            ),
                        },
                    )
                    .await;
                }
            }
            Some(_) => {}
        }
    }
}

/// Every served certificate expiring within `cert_expiry_days`: one alert per certificate
/// until it is replaced by one that is not (a renewal, an upload).
async fn check_certificates(watch: &AlertWatch) {
    let days = i64::from(watch.alerting.settings.observe.cert_expiry_days);
    if days == 0 {
        return;
    }
    let now = crate::clock::now_unix();
    for (name, source, not_after) in watch.certs.expiries() {
        let left = not_after - now;
        if left >= days * 86_400 {
            watch.alerting.alerts.close(AlertKind::CertExpiring, &name);
            continue;
        }
        if !watch.alerting.alerts.open(AlertKind::CertExpiring, &name) {
            continue;
        }
        let when = crate::clock::format_unix(not_after);
        let title = if left <= 0 {
            format!("The certificate of {name} has expired")
        } else {
            format!(
                "The certificate of {name} expires in {} day{}",
                left / 86_400,
                if left / 86_400 == 1 { "" } else { "s" }
            )
        };
        let mut message = format!("It is valid until {when}. ");
        message.push_str(match source {
            "acme" => "milkcrate renews it by ACME",
            "uploaded" => "It was uploaded on the Certificates page: upload a renewed one",
            _ => "It is SSL_CERT_FILE: replace the file and restart milkcrate",
        });
        if source == "acme" {
            match watch.acme.host(&name).last_error {
                Some(e) => message.push_str(&format!("; its last renewal failed: {e}")),
                None => message.push_str("; no renewal has failed yet"),
            }
        }
        message.push('.');
        notify(
            &watch.alerting,
            Alert {
                kind: AlertKind::CertExpiring,
                subject: name.clone(),
                title,
                message,
            },
        )
        .await;
    }
}

/// A renewal of `host`'s certificate failed: one alert until a renewal succeeds.
pub async fn renewal_failed(state: &Alerting, host: &str, error: &str, retry_at: i64) {
    if !state.alerts.open(AlertKind::CertRenewalFailed, host) {
        return;
    }
    notify(
        state,
        Alert {
            kind: AlertKind::CertRenewalFailed,
            subject: host.to_string(),
            title: format!("Renewing the certificate of {host} failed"),
            message: format!(
                "{error}. milkcrate retries at {}; the current certificate is served until it expires.",
                crate::clock::format_unix(retry_at)
            ),
        },
    )
    .await;
}

/// A renewal of `host`'s certificate succeeded: its failure episode is over.
pub fn renewal_succeeded(state: &Alerting, host: &str) {
    state.alerts.close(AlertKind::CertRenewalFailed, host);
}

/// Free space of the folder holding `path`, as a percentage of its size.
pub fn free_percent(path: &std::path::Path) -> Option<f64> {
    let s = rustix::fs::statvfs(path).ok()?;
    if s.f_blocks == 0 {
        return None;
    }
    Some(s.f_bavail as f64 * 100.0 / s.f_blocks as f64)
}

async fn check_disk(watch: &AlertWatch) {
    let threshold = f64::from(watch.alerting.settings.observe.disk_low_percent);
    if threshold <= 0.0 {
        return;
    }
    let mut places = vec![(
        "the data folder".to_string(),
        watch.alerting.settings.data_dir.clone(),
    )];
    if let Ok(engine) = watch.engine.client().await
        && let Some(root) = engine.root_dir().await
    {
        places.push(("the Docker Engine's folder".to_string(), root.into()));
    }
    for (what, path) in places {
        let subject = path.display().to_string();
        let Some(free) = tokio::task::spawn_blocking({
            let path = path.clone();
            move || free_percent(&path)
        })
        .await
        .ok()
        .flatten() else {
            continue;
        };
        // Cleared only a little above the threshold, so a disk hovering at it is one episode.
        if free >= threshold + 1.0 {
            watch.alerting.alerts.close(AlertKind::DiskLow, &subject);
        } else if free < threshold && watch.alerting.alerts.open(AlertKind::DiskLow, &subject) {
            notify(
                &watch.alerting,
                Alert {
                    kind: AlertKind::DiskLow,
                    subject: subject.clone(),
                    title: format!("Disk space is low on {what}"),
                    message: format!(
                        "{subject} has {free:.1}% free (alert below {threshold}%). Remove old images or backups, or grow the disk."
                    ),
                },
            )
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_episode_is_sent_once_until_it_closes() {
        let a = Alerts::default();
        assert!(a.open(AlertKind::CrashLoop, "shop"));
        assert!(!a.open(AlertKind::CrashLoop, "shop"));
        assert!(a.open(AlertKind::CrashLoop, "blog"), "per app");
        assert!(a.open(AlertKind::Exited, "shop"), "per kind");
        a.close(AlertKind::CrashLoop, "shop");
        assert!(a.open(AlertKind::CrashLoop, "shop"));
    }

    #[test]
    fn exits_are_counted_in_their_window() {
        let a = Alerts::default();
        let w = Duration::from_secs(60);
        assert_eq!(a.exit_seen("shop", w), 1);
        assert_eq!(a.exit_seen("shop", w), 2);
        assert_eq!(a.exit_seen("blog", w), 1);
        assert!(a.quiet_apps(w).is_empty());
        assert_eq!(
            a.exit_seen("shop", Duration::ZERO),
            1,
            "older exits fall out"
        );
    }

    #[test]
    fn channels_are_checked() {
        let mut c = NewChannel {
            name: "ops".into(),
            kind: "webhook".into(),
            format: "slack".into(),
            url: "https://hooks.example.org/T/B/secret".into(),
            events: vec!["deploy.failed".into()],
            ..NewChannel::default()
        };
        let (target, summary, format, events) = check_channel(&c).unwrap();
        assert!(matches!(target, Target::Webhook { .. }));
        assert!(!summary.contains("secret"), "the summary shows no secret");
        assert_eq!(
            (format.as_str(), events),
            ("slack", vec![AlertKind::DeployFailed])
        );
        c.url = "ftp://x".into();
        assert!(check_channel(&c).is_err());
        c.url = "https://ok.example.org".into();
        c.events = vec!["nope".into()];
        assert!(check_channel(&c).is_err());
        c.events = vec![];
        assert!(check_channel(&c).is_err());
        let mail = NewChannel {
            name: "mail".into(),
            kind: "email".into(),
            smtp_host: "smtp.example.org".into(),
            mail_from: "milkcrate@example.org".into(),
            mail_to: "ops@example.org".into(),
            events: vec!["app.crash_loop".into()],
            ..NewChannel::default()
        };
        let (target, ..) = check_channel(&mail).unwrap();
        assert!(
            matches!(target, Target::Email { port: 587, ref security, .. } if security == "starttls"),
            "STARTTLS on 587 by default"
        );
        let bad_to = NewChannel {
            mail_to: "not an address".into(),
            ..mail.clone()
        };
        assert!(check_channel(&bad_to).is_err());
        let header_injection = NewChannel {
            mail_to: "ops@example.org\r\nBcc: x@evil.example".into(),
            ..mail
        };
        assert!(check_channel(&header_injection).is_err());
    }

    #[test]
    fn webhook_bodies_fit_their_service() {
        let alert = Alert {
            kind: AlertKind::DeployFailed,
            subject: "shop".into(),
            title: "Deploy 3 of shop failed".into(),
            message: "x".repeat(5000),
        };
        let slack = webhook_body("slack", &alert, "i");
        assert!(slack["text"].as_str().unwrap().starts_with("*Deploy 3"));
        let discord = webhook_body("discord", &alert, "i");
        assert!(discord["content"].as_str().unwrap().chars().count() <= 2000);
        let json = webhook_body("json", &alert, "i");
        assert_eq!(json["event"], "deploy.failed");
        assert_eq!(json["subject"], "shop");
    }
}
