//! The Backups page: the schedule, what a backup includes, retention and encryption; the
//! targets (a local folder or an S3-compatible bucket; secret keys encrypted at rest and never
//! shown again); "run now"; and the latest runs with progress, duration, size and errors.
//! Every change is audited; every form carries the CSRF token (the router checks it).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

use crate::app::AppState;
use crate::archive::seal::SealKey;
use crate::audit::Event;
use crate::domain::backup_plan::Schedule;
use crate::domain::volume::human_size;
use crate::s3::S3Settings;
use crate::service::backup_runs::{self, Backups};
use crate::store::backups::BackupTarget;
use crate::web::client::ClientInfo;
use crate::web::errors::AppError;
use crate::web::form::Form;
use crate::web::pages::flash;
use crate::web::session::Admin;
use crate::web::views::{self, Layout, Page};

#[derive(askama::Template)]
#[template(path = "backups.html")]
pub struct BackupsPage {
    pub layout: Layout,
    pub schedule: String,
    pub next_run: String,
    pub include_volumes: bool,
    pub include_sources: bool,
    pub keep_last: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub recipient: String,
    pub has_passphrase: bool,
    pub targets: Vec<TargetItem>,
    pub runs: Vec<RunItem>,
    pub running: bool,
}

pub struct TargetItem {
    pub id: i64,
    pub kind: &'static str,
    pub place: String,
}

pub struct RunItem {
    pub id: i64,
    pub trigger: String,
    pub status: String,
    pub started: String,
    pub duration: String,
    pub size: String,
    pub archive: String,
    pub error: String,
}

fn utc(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]"
            ))
            .ok()
        })
        .unwrap_or_default()
}

fn to_page() -> Response {
    Redirect::to("/admin/backups").into_response()
}

pub async fn page(
    State(state): State<AppState>,
    _admin: Admin,
    page: Page,
) -> Result<Response, AppError> {
    let cfg = state.store.backup_config().await?;
    let targets = state.store.backup_targets().await?;
    let runs = state.store.backup_runs(20).await?;
    let now = crate::clock::now_unix();
    let next_run = match Schedule::parse(&cfg.schedule) {
        _ if cfg.schedule.trim().is_empty() => {
            "no schedule: backups run only when started here".into()
        }
        Ok(s) => s
            .next_after(now)
            .map(|t| format!("next run {} UTC", utc(t)))
            .unwrap_or_else(|| "this schedule never fires".into()),
        Err(e) => e,
    };
    let running = runs.iter().any(|r| r.status == "running");
    views::render(&BackupsPage {
        layout: page.titled("Backups"),
        schedule: cfg.schedule,
        next_run,
        include_volumes: cfg.include_volumes,
        include_sources: cfg.include_sources,
        keep_last: cfg.keep_last,
        keep_daily: cfg.keep_daily,
        keep_weekly: cfg.keep_weekly,
        recipient: cfg.recipient,
        has_passphrase: cfg.passphrase.is_some(),
        targets: targets
            .iter()
            .map(|t| TargetItem {
                id: t.target_id,
                kind: if t.kind == "folder" { "Folder" } else { "S3" },
                place: if t.kind == "folder" {
                    t.folder.clone()
                } else {
                    format!(
                        "s3://{}/{} at {} ({})",
                        t.bucket, t.prefix, t.endpoint, t.region
                    )
                },
            })
            .collect(),
        runs: runs
            .into_iter()
            .map(|r| RunItem {
                id: r.run_id,
                trigger: r.trigger,
                duration: format!("{} s", r.finished_at.unwrap_or(now) - r.started_at),
                size: human_size(r.bytes.max(0) as u64),
                status: r.status,
                started: utc(r.started_at),
                archive: r.archive,
                error: r.error,
            })
            .collect(),
        running,
    })
}

#[derive(Deserialize, Default)]
pub struct SettingsForm {
    #[serde(default)]
    schedule: String,
    #[serde(default)]
    include_volumes: Option<String>,
    #[serde(default)]
    include_sources: Option<String>,
    #[serde(default)]
    keep_last: String,
    #[serde(default)]
    keep_daily: String,
    #[serde(default)]
    keep_weekly: String,
    #[serde(default)]
    recipient: String,
    #[serde(default)]
    passphrase: String,
}

fn count(field: &str, value: &str) -> Result<u32, String> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(0);
    }
    v.parse::<u32>()
        .ok()
        .filter(|n| *n <= 10_000)
        .ok_or_else(|| format!("{field} must be a number from 0 to 10000"))
}

pub async fn save_settings(
    State(state): State<AppState>,
    Admin(session): Admin,
    client: ClientInfo,
    Form(form): Form<SettingsForm>,
) -> Result<Response, AppError> {
    let actor = client.actor(true);
    let mut cfg = state.store.backup_config().await?;
    let checked = (|| -> Result<(), String> {
        let schedule = form.schedule.trim().to_string();
        if !schedule.is_empty() {
            Schedule::parse(&schedule)?;
        }
        cfg.schedule = schedule;
        cfg.include_volumes = form.include_volumes.is_some();
        cfg.include_sources = form.include_sources.is_some();
        cfg.keep_last = count("Keep last", &form.keep_last)?;
        cfg.keep_daily = count("Daily", &form.keep_daily)?;
        cfg.keep_weekly = count("Weekly", &form.keep_weekly)?;
        let recipient = form.recipient.trim().to_string();
        if !recipient.is_empty() {
            SealKey::recipient(&recipient)?;
        }
        cfg.recipient = recipient;
        if !form.passphrase.is_empty() {
            SealKey::passphrase(&form.passphrase)?;
            let (nonce, ct) = crate::secrets::encrypt(
                &state.env_key,
                backup_runs::passphrase_aad(),
                form.passphrase.as_bytes(),
            );
            cfg.passphrase = Some((nonce, ct));
        }
        Ok(())
    })();
    let details = json!({
        "schedule": cfg.schedule, "include_volumes": cfg.include_volumes,
        "include_sources": cfg.include_sources, "keep_last": cfg.keep_last,
        "keep_daily": cfg.keep_daily, "keep_weekly": cfg.keep_weekly,
        "recipient": cfg.recipient, "passphrase_changed": !form.passphrase.is_empty(),
    });
    match checked {
        Ok(()) => {
            state.store.set_backup_config(cfg).await?;
            state
                .audit
                .record_logged(
                    &actor,
                    Event::new("update", "backup_settings", "schedule").details(details),
                )
                .await;
            flash(
                &state,
                &session.id_hash,
                "success",
                "Backup settings saved.".into(),
            )
            .await?;
        }
        Err(e) => {
            state
                .audit
                .record_logged(
                    &actor,
                    Event::new("update", "backup_settings", "schedule")
                        .details(details)
                        .failed(&e),
                )
                .await;
            flash(&state, &session.id_hash, "error", e).await?;
        }
    }
    Ok(to_page())
}

#[derive(Deserialize, Default)]
pub struct TargetForm {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    folder: String,
    #[serde(default)]
    endpoint: String,
    #[serde(default)]
    region: String,
    #[serde(default)]
    bucket: String,
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    access_key: String,
    #[serde(default)]
    secret_key: String,
}

fn parse_target(state: &AppState, form: &TargetForm) -> Result<BackupTarget, String> {
    let mut t = BackupTarget {
        target_id: 0,
        kind: String::new(),
        folder: String::new(),
        endpoint: String::new(),
        region: String::new(),
        bucket: String::new(),
        prefix: String::new(),
        access_key: String::new(),
        secret: None,
    };
    match form.kind.as_str() {
        "folder" => {
            let folder = form.folder.trim();
            let path = std::path::Path::new(folder);
            if !path.is_absolute()
                || path
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(
                    "the folder must be an absolute path such as /var/backups/milkcrate".into(),
                );
            }
            if path.starts_with(&state.settings.data_dir) {
                return Err(
                    "the folder must be outside the data folder (a restore replaces it)".into(),
                );
            }
            t.kind = "folder".into();
            t.folder = folder.to_string();
        }
        "s3" => {
            let settings = S3Settings {
                endpoint: form.endpoint.trim().to_string(),
                region: form.region.trim().to_string(),
                bucket: form.bucket.trim().to_string(),
                prefix: form.prefix.trim().trim_matches('/').to_string(),
                access_key: form.access_key.trim().to_string(),
                secret_key: form.secret_key.clone(),
            };
            settings.check()?;
            t.kind = "s3".into();
            t.endpoint = settings.endpoint;
            t.region = settings.region;
            t.bucket = settings.bucket;
            t.prefix = settings.prefix;
            t.access_key = settings.access_key;
            let (nonce, ct) = crate::secrets::encrypt(
                &state.env_key,
                backup_runs::target_aad(&t).as_bytes(),
                form.secret_key.as_bytes(),
            );
            t.secret = Some((nonce, ct));
        }
        _ => return Err("choose a folder or an S3 bucket".into()),
    }
    Ok(t)
}

pub async fn add_target(
    State(state): State<AppState>,
    Admin(session): Admin,
    client: ClientInfo,
    Form(form): Form<TargetForm>,
) -> Result<Response, AppError> {
    let actor = client.actor(true);
    let details = json!({
        "kind": form.kind, "folder": form.folder, "endpoint": form.endpoint,
        "region": form.region, "bucket": form.bucket, "prefix": form.prefix,
        "access_key": form.access_key,
    });
    match parse_target(&state, &form) {
        Ok(t) => {
            let id = state.store.add_backup_target(t).await?;
            state
                .audit
                .record_logged(
                    &actor,
                    Event::new("create", "backup_target", id.to_string()).details(details),
                )
                .await;
            flash(
                &state,
                &session.id_hash,
                "success",
                "Backup target added.".into(),
            )
            .await?;
        }
        Err(e) => {
            state
                .audit
                .record_logged(
                    &actor,
                    Event::new("create", "backup_target", "")
                        .details(details)
                        .failed(&e),
                )
                .await;
            flash(&state, &session.id_hash, "error", e).await?;
        }
    }
    Ok(to_page())
}

pub async fn delete_target(
    State(state): State<AppState>,
    Admin(session): Admin,
    client: ClientInfo,
    Path(target_id): Path<String>,
) -> Result<Response, AppError> {
    let actor = client.actor(true);
    let id = target_id.parse::<i64>().unwrap_or(0);
    if state.store.delete_backup_target(id).await? {
        state
            .audit
            .record_logged(
                &actor,
                Event::new("delete", "backup_target", id.to_string()),
            )
            .await;
        flash(
            &state,
            &session.id_hash,
            "success",
            "Backup target removed (the backups already there are kept).".into(),
        )
        .await?;
    } else {
        flash(
            &state,
            &session.id_hash,
            "error",
            "There is no such backup target.".into(),
        )
        .await?;
    }
    Ok(to_page())
}

pub async fn run_now(
    State(state): State<AppState>,
    State(backups): State<Backups>,
    Admin(session): Admin,
    client: ClientInfo,
) -> Result<Response, AppError> {
    let actor = client.actor(true);
    match backup_runs::start(&backups, "manual", actor.clone()).await {
        Ok(id) => {
            flash(
                &state,
                &session.id_hash,
                "success",
                format!("Backup run {id} started."),
            )
            .await?
        }
        Err(e) => {
            state
                .audit
                .record_logged(
                    &actor,
                    Event::new("backup", "backup", "").failed(e.to_string()),
                )
                .await;
            flash(&state, &session.id_hash, "error", e.to_string()).await?
        }
    }
    Ok(to_page())
}
