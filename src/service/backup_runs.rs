//! Scheduled backups inside `milkcrate serve`: the scheduler task (checks the schedule every
//! few seconds; a run missed while the server was down is not made up), "run now", and one
//! run: database snapshot (a moment under the store's lock), volume data through helpers,
//! files, one archive written to every target at once on a blocking thread (deploys and
//! pages go on), retention on each target, the run row updated with its progress, and the
//! outcome audited. One run at a time per install.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::archive::seal::SealKey;
use crate::audit::{Actor, Event};
use crate::domain::backup_plan::{Retention, Schedule};
use crate::s3::{S3, S3Settings};
use crate::service::backup::{Destination, RunError, WORK_DIR, WorkDir, write_everywhere};
use crate::store::backups::{BackupConfig, BackupTarget};

/// How often the scheduler looks at the clock.
const TICK: Duration = Duration::from_secs(5);

/// Additional data bound to an encrypted secret, so it cannot be moved to another row.
pub fn passphrase_aad() -> &'static [u8] {
    b"backup-passphrase"
}

pub fn target_aad(t: &BackupTarget) -> String {
    format!("backup-target:{}/{}/{}", t.endpoint, t.bucket, t.prefix)
}

/// The actor of scheduled runs in the audit log.
fn scheduler_actor() -> Actor {
    Actor {
        admin: true,
        ip: "scheduler".into(),
        user_agent: "milkcrate backup schedule".into(),
        token: None,
    }
}

/// What scheduled and manual backups take: the settings (the data folder, the install's
/// identity), the store (configuration, targets, runs, the snapshot), the audit log, the
/// engine (volume data) and the key secrets are encrypted with at rest. Built by the
/// composition root (`AppState::backups`, `app.rs`).
#[derive(Clone)]
pub struct Backups {
    pub settings: std::sync::Arc<crate::config::Settings>,
    pub store: crate::store::Store,
    pub audit: crate::audit::AuditLog,
    pub engine: std::sync::Arc<crate::docker::monitor::EngineMonitor>,
    /// Key for the backup passphrase and S3 secrets at rest (the app environment's key).
    pub env_key: [u8; 32],
}

/// Runs the schedule until the server stops.
pub async fn schedule(state: Backups) {
    crate::service::logged(
        "fail the backup runs a stop interrupted",
        state.store.fail_interrupted_backup_runs().await,
    );
    let mut last = crate::clock::now_unix();
    loop {
        tokio::time::sleep(TICK).await;
        let now = crate::clock::now_unix();
        let due = match state.store.backup_config().await {
            Ok(cfg) => Schedule::parse(&cfg.schedule)
                .ok()
                .and_then(|s| s.next_after(last))
                .is_some_and(|next| next <= now),
            Err(_) => false,
        };
        last = now;
        if due && let Err(e) = start(&state, "schedule", scheduler_actor()).await {
            tracing::warn!(error = %e, "scheduled backup not started");
        }
    }
}

/// Why a run did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("a backup is already running")]
    Running,
}

/// Starts a run in the background; its id, or why not (one is already running).
pub async fn start(state: &Backups, trigger: &str, actor: Actor) -> Result<i64, StartError> {
    let id = state
        .store
        .start_backup_run(trigger)
        .await?
        .ok_or(StartError::Running)?;
    let state = state.clone();
    let trigger = trigger.to_string();
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let written = Arc::new(AtomicU64::new(0));
        let ticker = tokio::spawn({
            let (state, written) = (state.clone(), written.clone());
            async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    crate::service::logged(
                        "record a backup run's progress",
                        state
                            .store
                            .backup_run_progress(id, written.load(Ordering::Relaxed))
                            .await,
                    );
                }
            }
        });
        let outcome = run(&state, written).await;
        ticker.abort();
        let seconds = started.elapsed().as_secs_f64();
        let event = Event::new("backup", "backup", id.to_string());
        match &outcome {
            Ok((size, copies, deleted)) => {
                crate::service::logged(
                    "record the end of a backup run",
                    state
                        .store
                        .finish_backup_run(id, Ok((*size, copies.join(", "))))
                        .await,
                );
                state
                    .audit
                    .record_logged(
                        &actor,
                        event.details(json!({
                            "trigger": trigger, "bytes": size, "seconds": seconds,
                            "copies": copies, "retention_deleted": deleted,
                        })),
                    )
                    .await;
            }
            Err(e) => {
                let e = e.to_string();
                crate::service::logged(
                    "record the end of a backup run",
                    state.store.finish_backup_run(id, Err(e.clone())).await,
                );
                state
                    .audit
                    .record_logged(
                        &actor,
                        event
                            .details(json!({"trigger": trigger, "seconds": seconds}))
                            .failed(&e),
                    )
                    .await;
                tracing::error!(run = id, error = %e, "backup failed");
                alert_failed(&state, id, &e).await;
            }
        }
    });
    Ok(id)
}

/// ALERT HOOK: a failed backup run. When notification channels exist (engineer E's work),
/// send `message` through them here; until then the failure is in the audit log, the
/// server's log (error level) and on the Backups page.
async fn alert_failed(_state: &Backups, run: i64, error: &str) {
    let _message = format!("milkcrate: backup run {run} failed: {error}");
}

/// The encryption key the configuration names, if any.
pub fn seal_key(state: &Backups, cfg: &BackupConfig) -> Result<Option<SealKey>, RunError> {
    if !cfg.recipient.is_empty() {
        return SealKey::recipient(&cfg.recipient)
            .map(Some)
            .map_err(RunError::Key);
    }
    match &cfg.passphrase {
        Some((nonce, ct)) => {
            let plain = crate::secrets::decrypt(&state.env_key, passphrase_aad(), nonce, ct)
                .and_then(|p| String::from_utf8(p).ok())
                .ok_or_else(|| RunError::Key("the stored backup passphrase cannot be decrypted (was SECRET_KEY changed?): set it again".into()))?;
            SealKey::passphrase(&plain).map(Some).map_err(RunError::Key)
        }
        None => Ok(None),
    }
}

/// A target as a destination (its secret decrypted).
pub fn destination(state: &Backups, t: &BackupTarget) -> Result<Destination, RunError> {
    match t.kind.as_str() {
        "folder" => Ok(Destination::Folder(t.folder.clone().into())),
        _ => {
            let (nonce, ct) = t.secret.as_ref().ok_or(RunError::NoSecret)?;
            let secret = crate::secrets::decrypt(&state.env_key, target_aad(t).as_bytes(), nonce, ct)
                .and_then(|p| String::from_utf8(p).ok())
                .ok_or_else(|| RunError::Key("the stored S3 secret key cannot be decrypted (was SECRET_KEY changed?): add the target again".into()))?;
            let settings = S3Settings {
                endpoint: t.endpoint.clone(),
                region: t.region.clone(),
                bucket: t.bucket.clone(),
                prefix: t.prefix.clone(),
                access_key: t.access_key.clone(),
                secret_key: secret,
            };
            Ok(Destination::S3(S3::new(&settings)?))
        }
    }
}

/// One run: (archive size, copies made, names deleted by retention).
async fn run(
    state: &Backups,
    written: Arc<AtomicU64>,
) -> Result<(u64, Vec<String>, Vec<String>), RunError> {
    let cfg = state.store.backup_config().await?;
    let targets = state.store.backup_targets().await?;
    if targets.is_empty() {
        return Err(RunError::NoTarget);
    }
    let key = seal_key(state, &cfg)?;
    let destinations = targets
        .iter()
        .map(|t| destination(state, t))
        .collect::<Result<Vec<_>, _>>()?;
    let data_dir = state.settings.data_dir.clone();
    let root = data_dir.join(WORK_DIR);
    crate::service::leftovers::sweep_dead(&root, "");
    let work = WorkDir::create(&root)?;
    let snapshot = work.0.join("milkcrate.sqlite");
    {
        let (store, snapshot) = (state.store.clone(), snapshot.clone());
        tokio::task::spawn_blocking(move || store.snapshot_to(&snapshot))
            .await?
            .map_err(RunError::Snapshot)?;
    }
    let mut files = vec![("milkcrate.sqlite".to_string(), snapshot)];
    if cfg.include_volumes {
        let engine = state.engine.client().await.map_err(RunError::NoEngine)?;
        let labels =
            crate::service::volumes::backup_helper_labels(&data_dir, state.settings.instance());
        files.extend(
            crate::service::backup::export_volumes(&engine, &state.store, labels, &work.0, &|m| {
                tracing::info!("backup: {m}")
            })
            .await?,
        );
    }
    files.extend(crate::service::backup::data_files(
        &data_dir,
        cfg.include_sources,
    )?);
    let handle = tokio::runtime::Handle::current();
    let dests = destinations.clone();
    let result = tokio::task::spawn_blocking(move || {
        let r = write_everywhere(&files, &dests, key.as_ref(), &handle, written, &|m| {
            tracing::info!("backup: {m}")
        });
        drop(work);
        r
    })
    .await??;
    let retention = Retention {
        keep_last: cfg.keep_last,
        keep_daily: cfg.keep_daily,
        keep_weekly: cfg.keep_weekly,
    };
    let mut deleted = Vec::new();
    for d in &destinations {
        match crate::service::backup::apply_retention(d, retention).await {
            Ok(names) => {
                deleted.extend(names.into_iter().map(|n| format!("{}: {n}", d.describe())))
            }
            Err(e) => {
                return Err(RunError::Retention {
                    place: d.describe(),
                    source: Box::new(e),
                });
            }
        }
    }
    let copies = result
        .copies
        .iter()
        .map(|c| format!("{}/{}", c.place.trim_end_matches('/'), c.name))
        .collect();
    Ok((result.size, copies, deleted))
}
