//! Scheduled backups: the one configuration row (schedule, what to include, retention,
//! encryption key, its passphrase encrypted), the targets (a local folder or an S3 bucket,
//! secret key encrypted), and the runs with their progress and outcome.

use rusqlite::{OptionalExtension, Row, params};

use super::{Store, StoreError};

#[derive(Debug, Clone, Default)]
pub struct BackupConfig {
    pub schedule: String,
    pub include_volumes: bool,
    pub include_sources: bool,
    pub keep_last: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    /// An age recipient (`age1…`); empty for none.
    pub recipient: String,
    /// The passphrase, encrypted with the install's key: (nonce, ciphertext).
    pub passphrase: Option<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug, Clone)]
pub struct BackupTarget {
    pub target_id: i64,
    /// `folder` or `s3`.
    pub kind: String,
    pub folder: String,
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub prefix: String,
    pub access_key: String,
    /// The secret key, encrypted: (nonce, ciphertext).
    pub secret: Option<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug, Clone)]
pub struct BackupRun {
    pub run_id: i64,
    pub trigger: String,
    pub status: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub bytes: i64,
    pub archive: String,
    pub error: String,
}

fn run_row(r: &Row) -> rusqlite::Result<BackupRun> {
    Ok(BackupRun {
        run_id: r.get(0)?,
        trigger: r.get(1)?,
        status: r.get(2)?,
        started_at: r.get(3)?,
        finished_at: r.get(4)?,
        bytes: r.get(5)?,
        archive: r.get(6)?,
        error: r.get(7)?,
    })
}

fn target_row(r: &Row) -> rusqlite::Result<BackupTarget> {
    let nonce: Option<Vec<u8>> = r.get(8)?;
    let ct: Option<Vec<u8>> = r.get(9)?;
    Ok(BackupTarget {
        target_id: r.get(0)?,
        kind: r.get(1)?,
        folder: r.get(2)?,
        endpoint: r.get(3)?,
        region: r.get(4)?,
        bucket: r.get(5)?,
        prefix: r.get(6)?,
        access_key: r.get(7)?,
        secret: nonce.zip(ct),
    })
}

impl Store {
    pub async fn backup_config(&self) -> Result<BackupConfig, StoreError> {
        self.call(|c| {
            c.query_row(
                "SELECT schedule, include_volumes, include_sources, keep_last, keep_daily, keep_weekly, recipient, passphrase_nonce, passphrase_ciphertext FROM backup_config WHERE id = 1",
                [],
                |r| {
                    let nonce: Option<Vec<u8>> = r.get(7)?;
                    let ct: Option<Vec<u8>> = r.get(8)?;
                    Ok(BackupConfig {
                        schedule: r.get(0)?,
                        include_volumes: r.get(1)?,
                        include_sources: r.get(2)?,
                        keep_last: r.get(3)?,
                        keep_daily: r.get(4)?,
                        keep_weekly: r.get(5)?,
                        recipient: r.get(6)?,
                        passphrase: nonce.zip(ct),
                    })
                },
            )
            .optional()
            .map(|c| {
                c.unwrap_or(BackupConfig {
                    include_volumes: true,
                    include_sources: true,
                    keep_last: 7,
                    keep_daily: 7,
                    keep_weekly: 4,
                    ..Default::default()
                })
            })
        })
        .await
    }

    pub async fn set_backup_config(&self, cfg: BackupConfig) -> Result<(), StoreError> {
        self.call(move |c| {
            let (nonce, ct) = cfg.passphrase.clone().unzip();
            c.execute(
                "INSERT INTO backup_config (id, schedule, include_volumes, include_sources, keep_last, keep_daily, keep_weekly, recipient, passphrase_nonce, passphrase_ciphertext)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(id) DO UPDATE SET schedule = ?1, include_volumes = ?2, include_sources = ?3, keep_last = ?4, keep_daily = ?5, keep_weekly = ?6, recipient = ?7, passphrase_nonce = ?8, passphrase_ciphertext = ?9",
                params![
                    cfg.schedule,
                    cfg.include_volumes,
                    cfg.include_sources,
                    cfg.keep_last,
                    cfg.keep_daily,
                    cfg.keep_weekly,
                    cfg.recipient,
                    nonce,
                    ct
                ],
            )
            .map(|_| ())
        })
        .await
    }

    pub async fn backup_targets(&self) -> Result<Vec<BackupTarget>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT target_id, kind, folder, endpoint, region, bucket, prefix, access_key, secret_nonce, secret_ciphertext FROM backup_targets ORDER BY target_id",
            )?;
            stmt.query_map([], target_row)?.collect()
        })
        .await
    }

    pub async fn add_backup_target(&self, t: BackupTarget) -> Result<i64, StoreError> {
        self.call(move |c| {
            let (nonce, ct) = t.secret.clone().unzip();
            c.execute(
                "INSERT INTO backup_targets (kind, folder, endpoint, region, bucket, prefix, access_key, secret_nonce, secret_ciphertext, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    t.kind,
                    t.folder,
                    t.endpoint,
                    t.region,
                    t.bucket,
                    t.prefix,
                    t.access_key,
                    nonce,
                    ct,
                    crate::clock::now_unix()
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    pub async fn delete_backup_target(&self, id: i64) -> Result<bool, StoreError> {
        self.call(move |c| {
            c.execute("DELETE FROM backup_targets WHERE target_id = ?1", [id])
                .map(|n| n > 0)
        })
        .await
    }

    /// Starts a run unless one is running (a run left "running" by a crash more than a day
    /// ago does not count); `None` when one is.
    pub async fn start_backup_run(&self, trigger: &str) -> Result<Option<i64>, StoreError> {
        let trigger = trigger.to_string();
        self.call(move |c| {
            let tx = c.transaction()?;
            let now = crate::clock::now_unix();
            let busy: i64 = tx.query_row(
                "SELECT count(*) FROM backup_runs WHERE status = 'running' AND started_at > ?1",
                [now - 86_400],
                |r| r.get(0),
            )?;
            if busy > 0 {
                return Ok(None);
            }
            tx.execute(
                "INSERT INTO backup_runs (trigger, status, started_at) VALUES (?1, 'running', ?2)",
                params![trigger, now],
            )?;
            let id = tx.last_insert_rowid();
            tx.commit()?;
            Ok(Some(id))
        })
        .await
    }

    pub async fn backup_run_progress(&self, id: i64, bytes: u64) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "UPDATE backup_runs SET bytes = ?2 WHERE run_id = ?1",
                params![id, bytes as i64],
            )
            .map(|_| ())
        })
        .await
    }

    pub async fn finish_backup_run(
        &self,
        id: i64,
        outcome: Result<(u64, String), String>,
    ) -> Result<(), StoreError> {
        self.call(move |c| {
            let now = crate::clock::now_unix();
            match outcome {
                Ok((bytes, archive)) => c.execute(
                    "UPDATE backup_runs SET status = 'succeeded', finished_at = ?2, bytes = ?3, archive = ?4 WHERE run_id = ?1",
                    params![id, now, bytes as i64, archive],
                ),
                Err(e) => c.execute(
                    "UPDATE backup_runs SET status = 'failed', finished_at = ?2, error = ?3 WHERE run_id = ?1",
                    params![id, now, e],
                ),
            }
            .map(|_| ())
        })
        .await
    }

    /// Runs a crash left "running" are marked failed (at start-up).
    pub async fn fail_interrupted_backup_runs(&self) -> Result<usize, StoreError> {
        self.call(|c| {
            c.execute(
                "UPDATE backup_runs SET status = 'failed', finished_at = ?1, error = 'interrupted: milkcrate stopped during the run' WHERE status = 'running'",
                [crate::clock::now_unix()],
            )
        })
        .await
    }

    /// The latest runs, newest first.
    pub async fn backup_runs(&self, limit: u32) -> Result<Vec<BackupRun>, StoreError> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT run_id, trigger, status, started_at, finished_at, bytes, coalesce(archive, ''), coalesce(error, '') FROM backup_runs ORDER BY run_id DESC LIMIT ?1",
            )?;
            stmt.query_map([limit], run_row)?.collect()
        })
        .await
    }
}

/// Migration: the three tables of scheduled backups.
pub(super) fn migrate(tx: &rusqlite::Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS backup_config (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            schedule TEXT NOT NULL DEFAULT '',
            include_volumes INTEGER NOT NULL DEFAULT 1,
            include_sources INTEGER NOT NULL DEFAULT 1,
            keep_last INTEGER NOT NULL DEFAULT 7,
            keep_daily INTEGER NOT NULL DEFAULT 7,
            keep_weekly INTEGER NOT NULL DEFAULT 4,
            recipient TEXT NOT NULL DEFAULT '',
            passphrase_nonce BLOB,
            passphrase_ciphertext BLOB
        );
        CREATE TABLE IF NOT EXISTS backup_targets (
            target_id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            folder TEXT NOT NULL DEFAULT '',
            endpoint TEXT NOT NULL DEFAULT '',
            region TEXT NOT NULL DEFAULT '',
            bucket TEXT NOT NULL DEFAULT '',
            prefix TEXT NOT NULL DEFAULT '',
            access_key TEXT NOT NULL DEFAULT '',
            secret_nonce BLOB,
            secret_ciphertext BLOB,
            created_at INTEGER NOT NULL
        );
        CREATE TABLE IF NOT EXISTS backup_runs (
            run_id INTEGER PRIMARY KEY,
            trigger TEXT NOT NULL,
            status TEXT NOT NULL,
            started_at INTEGER NOT NULL,
            finished_at INTEGER,
            bytes INTEGER NOT NULL DEFAULT 0,
            archive TEXT,
            error TEXT
        );",
    )
}
