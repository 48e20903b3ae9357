//! Apps (the original's `deployed_apps` table, extended), their deploys with build logs, and
//! their environment variables (stored encrypted; this module never sees plaintext).

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{Store, StoreError};
use crate::domain::app::name_key;
use crate::domain::state::{AppStatus, DeployStatus, DeploymentType, UnknownState};

#[derive(Debug, Clone)]
pub struct AppRow {
    pub id: i64,
    pub name: String,
    pub name_key: String,
    pub container_id: String,
    pub image_tag: String,
    pub public_route: String,
    pub internal_port: u16,
    /// What the admin wants: deploying, running or stopped (the engine says what is).
    pub status: AppStatus,
    pub deployment_date: String,
    pub deployment_type: DeploymentType,
    pub health_path: Option<String>,
    pub memory_mb: u32,
    pub cpu_percent: u32,
    pub port_override: Option<u16>,
    pub previous_image_tag: Option<String>,
    pub source_zip: Option<String>,
    pub volume_mounts: Option<String>,
    /// Whether the app may open connections outside milkcrate's networks (default true).
    pub outbound: bool,
    /// Custom domains (normalised), sorted.
    pub domains: Vec<String>,
}

const APP_COLUMNS: &str = "app_id, app_name, coalesce(name_key, lower(replace(app_name, '_', '-'))), container_id, image_tag, \
    public_route, internal_port, status, deployment_date, deployment_type, health_path, memory_mb, cpu_percent, port_override, \
    previous_image_tag, source_zip, volume_mounts, outbound, \
    (SELECT group_concat(host, ' ') FROM app_domains d WHERE d.app_id = deployed_apps.app_id)";

/// Column `i` read as one of the state enums: a value it does not know is an error naming it,
/// never a silent default.
fn parsed<T: std::str::FromStr<Err = UnknownState>>(r: &Row, i: usize) -> rusqlite::Result<T> {
    let text: String = r.get(i)?;
    text.parse().map_err(|e: UnknownState| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn app_row(r: &Row) -> rusqlite::Result<AppRow> {
    Ok(AppRow {
        id: r.get(0)?,
        name: r.get(1)?,
        name_key: r.get(2)?,
        container_id: r.get(3)?,
        image_tag: r.get(4)?,
        public_route: r.get(5)?,
        internal_port: r.get::<_, i64>(6)?.clamp(0, 65535) as u16,
        status: parsed(r, 7)?,
        deployment_date: r.get(8)?,
        deployment_type: parsed(r, 9)?,
        health_path: r.get(10)?,
        memory_mb: r.get::<_, i64>(11)?.max(0) as u32,
        cpu_percent: r.get::<_, i64>(12)?.max(0) as u32,
        port_override: r
            .get::<_, Option<i64>>(13)?
            .map(|p| p.clamp(0, 65535) as u16),
        previous_image_tag: r.get(14)?,
        source_zip: r.get(15)?,
        volume_mounts: r.get(16)?,
        outbound: r.get::<_, i64>(17)? != 0,
        domains: {
            let joined: Option<String> = r.get(18)?;
            let mut d: Vec<String> = joined
                .unwrap_or_default()
                .split(' ')
                .filter(|h| !h.is_empty())
                .map(String::from)
                .collect();
            d.sort();
            d
        },
    })
}

/// What the upload form decided, before anything is built.
#[derive(Debug, Clone)]
pub struct NewApp {
    pub name: String,
    pub public_route: String,
    pub deployment_type: String,
    pub health_path: Option<String>,
    pub memory_mb: u32,
    pub cpu_percent: u32,
    pub port_override: Option<u16>,
    pub source_zip: String,
    /// The original's `volume_mounts` JSON, or NULL.
    pub volume_mounts: Option<String>,
    /// Custom domains, normalised (`domain::host::parse_domain`); reserved with the name.
    pub domains: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct DeployRow {
    pub id: i64,
    pub app_id: Option<i64>,
    pub app_name: String,
    pub kind: String,
    pub status: DeployStatus,
    pub image_tag: Option<String>,
    pub log: String,
    pub error: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct EncryptedVar {
    pub key: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// Why a new app cannot take its name or route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    Name(String),
    Route(String),
    /// The domain, and the app that has it.
    Domain(String, String),
}

impl Store {
    /// Reserves the name and route and records the first deploy, atomically: two uploads of the
    /// same name cannot both pass. Returns (app id, deploy id), or what is taken.
    pub async fn insert_app(
        &self,
        app: NewApp,
        now: i64,
    ) -> Result<Result<(i64, i64), Taken>, StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let key = name_key(&app.name);
            let by_name: Option<String> = tx
                .query_row("SELECT app_name FROM deployed_apps WHERE coalesce(name_key, lower(replace(app_name, '_', '-'))) = ?1", [&key], |r| r.get(0))
                .optional()?;
            if let Some(existing) = by_name {
                return Ok(Err(Taken::Name(existing)));
            }
            // An app without a path route (host names only) has an empty one; those never collide.
            let by_route: Option<String> = if app.public_route.is_empty() {
                None
            } else {
                tx.query_row("SELECT app_name FROM deployed_apps WHERE lower(public_route) = lower(?1)", [&app.public_route], |r| r.get(0)).optional()?
            };
            if let Some(existing) = by_route {
                return Ok(Err(Taken::Route(existing)));
            }
            for host in &app.domains {
                if let Some(owner) = super::domains::owner_of(&tx, host)? {
                    return Ok(Err(Taken::Domain(host.clone(), owner)));
                }
            }
            tx.execute(
                "INSERT INTO deployed_apps (app_name, name_key, container_id, image_tag, public_route, internal_port, status,
                    deployment_type, health_path, memory_mb, cpu_percent, port_override, source_zip, volume_mounts)
                 VALUES (?1, ?2, '', '', ?3, 0, 'deploying', ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![app.name, key, app.public_route, app.deployment_type, app.health_path, app.memory_mb, app.cpu_percent, app.port_override, app.source_zip, app.volume_mounts],
            )?;
            let app_id = tx.last_insert_rowid();
            for host in &app.domains {
                super::domains::insert(&tx, app_id, host, now)?;
            }
            let deploy_id = new_deploy(&tx, Some(app_id), &app.name, "create", now)?;
            tx.commit()?;
            Ok(Ok((app_id, deploy_id)))
        })
        .await
    }

    pub async fn apps(&self) -> Result<Vec<AppRow>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {APP_COLUMNS} FROM deployed_apps ORDER BY deployment_date DESC, app_id DESC"
            ))?;
            stmt.query_map([], app_row)?.collect()
        })
        .await
    }

    pub async fn app(&self, id: i64) -> Result<Option<AppRow>, StoreError> {
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {APP_COLUMNS} FROM deployed_apps WHERE app_id = ?1"),
                [id],
                app_row,
            )
            .optional()
        })
        .await
    }

    /// Records a finished deploy: the new container and image, the previous image kept for
    /// rollback, the port in use.
    pub async fn app_deployed(
        &self,
        id: i64,
        container_id: String,
        image_tag: String,
        previous: Option<String>,
        port: u16,
    ) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "UPDATE deployed_apps SET container_id = ?2, image_tag = ?3, previous_image_tag = ?4, internal_port = ?5,
                    status = 'running', deployment_date = datetime('now') WHERE app_id = ?1",
                params![id, container_id, image_tag, previous, port],
            )
            .map(|_| ())
        })
        .await
    }

    /// A compose app's file and main service (the original's columns).
    pub async fn set_app_compose(
        &self,
        id: i64,
        compose_file: String,
        main_service: String,
    ) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "UPDATE deployed_apps SET deployment_type = 'docker-compose', compose_file = ?2, main_service = ?3 WHERE app_id = ?1",
                params![id, compose_file, main_service],
            )
            .map(|_| ())
        })
        .await
    }

    /// The app's volume mounts (the original's JSON), set when a deploy using them succeeded.
    pub async fn set_app_mounts(&self, id: i64, mounts: Option<String>) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "UPDATE deployed_apps SET volume_mounts = ?2 WHERE app_id = ?1",
                params![id, mounts],
            )
            .map(|_| ())
        })
        .await
    }

    pub async fn set_app_outbound(&self, id: i64, outbound: bool) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "UPDATE deployed_apps SET outbound = ?1 WHERE app_id = ?2",
                rusqlite::params![outbound as i64, id],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn set_app_status(&self, id: i64, status: AppStatus) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "UPDATE deployed_apps SET status = ?2 WHERE app_id = ?1",
                params![id, status.as_str()],
            )
            .map(|_| ())
        })
        .await
    }

    pub async fn set_app_source(&self, id: i64, source_zip: String) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "UPDATE deployed_apps SET source_zip = ?2 WHERE app_id = ?1",
                params![id, source_zip],
            )
            .map(|_| ())
        })
        .await
    }

    pub async fn delete_app(&self, id: i64) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute("DELETE FROM deployed_apps WHERE app_id = ?1", [id])
                .map(|_| ())
        })
        .await
    }

    pub async fn create_deploy(
        &self,
        app_id: i64,
        app_name: String,
        kind: &'static str,
        now: i64,
    ) -> Result<i64, StoreError> {
        self.call(move |c| new_deploy(c, Some(app_id), &app_name, kind, now))
            .await
    }

    pub async fn deploy(&self, id: i64) -> Result<Option<DeployRow>, StoreError> {
        self.call(move |c| {
            c.query_row(
                "SELECT id, app_id, app_name, kind, status, image_tag, log, error, created_at, finished_at FROM deploys WHERE id = ?1",
                [id],
                deploy_row,
            )
            .optional()
        })
        .await
    }

    pub async fn deploys_of(&self, app_id: i64, limit: u32) -> Result<Vec<DeployRow>, StoreError> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, app_id, app_name, kind, status, image_tag, '', error, created_at, finished_at FROM deploys
                 WHERE app_id = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            stmt.query_map(params![app_id, limit], deploy_row)?.collect()
        })
        .await
    }

    pub async fn set_deploy_status(&self, id: i64, status: DeployStatus) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "UPDATE deploys SET status = ?2 WHERE id = ?1",
                params![id, status.as_str()],
            )
            .map(|_| ())
        })
        .await
    }

    pub async fn append_deploy_log(&self, id: i64, text: String) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "UPDATE deploys SET log = log || ?2 WHERE id = ?1",
                params![id, text],
            )
            .map(|_| ())
        })
        .await
    }

    pub async fn finish_deploy(
        &self,
        id: i64,
        status: DeployStatus,
        image_tag: Option<String>,
        error: Option<String>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "UPDATE deploys SET status = ?2, image_tag = coalesce(?3, image_tag), error = ?4, finished_at = ?5 WHERE id = ?1",
                params![id, status.as_str(), image_tag, error, now],
            )
            .map(|_| ())
        })
        .await
    }

    /// Deploys that were running when milkcrate stopped: marked failed, returned for clean-up.
    pub fn fail_interrupted_deploys(&self, now: i64) -> Result<Vec<DeployRow>, StoreError> {
        self.call_blocking(|c| {
            let tx = c.transaction()?;
            let rows: Vec<DeployRow> = {
                let mut stmt = tx.prepare(
                    "SELECT id, app_id, app_name, kind, status, image_tag, '', error, created_at, finished_at FROM deploys
                     WHERE status NOT IN ('succeeded', 'failed')",
                )?;
                stmt.query_map([], deploy_row)?.collect::<Result<_, _>>()?
            };
            tx.execute(
                "UPDATE deploys SET status = 'failed', error = 'milkcrate stopped while this deploy was running', finished_at = ?1,
                    log = log || '\nmilkcrate stopped while this deploy was running; it was marked failed at start-up.\n'
                 WHERE status NOT IN ('succeeded', 'failed')",
                [now],
            )?;
            tx.commit()?;
            Ok(rows)
        })
    }

    /// Replaces the app's variables, if they are still at `expected` (an [`env_version`]);
    /// `Ok(false)` when another save came first (nothing is written then).
    pub async fn set_env_if(
        &self,
        app_id: i64,
        expected: Option<String>,
        vars: Vec<EncryptedVar>,
    ) -> Result<bool, StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            if let Some(expected) = expected {
                let now = env_version(&read_env(&tx, app_id)?);
                if now != expected {
                    return Ok(false);
                }
            }
            tx.execute("DELETE FROM app_env WHERE app_id = ?1", [app_id])?;
            for v in vars {
                tx.execute(
                    "INSERT INTO app_env (app_id, key, nonce, ciphertext) VALUES (?1, ?2, ?3, ?4)",
                    params![app_id, v.key, v.nonce, v.ciphertext],
                )?;
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    pub async fn set_env(&self, app_id: i64, vars: Vec<EncryptedVar>) -> Result<(), StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM app_env WHERE app_id = ?1", [app_id])?;
            for v in vars {
                tx.execute(
                    "INSERT INTO app_env (app_id, key, nonce, ciphertext) VALUES (?1, ?2, ?3, ?4)",
                    params![app_id, v.key, v.nonce, v.ciphertext],
                )?;
            }
            tx.commit()
        })
        .await
    }

    pub async fn env(&self, app_id: i64) -> Result<Vec<EncryptedVar>, StoreError> {
        self.call(move |c| read_env(c, app_id)).await
    }
}

fn read_env(c: &Connection, app_id: i64) -> rusqlite::Result<Vec<EncryptedVar>> {
    let mut stmt = c.prepare_cached(
        "SELECT key, nonce, ciphertext FROM app_env WHERE app_id = ?1 ORDER BY key",
    )?;
    stmt.query_map([app_id], |r| {
        Ok(EncryptedVar {
            key: r.get(0)?,
            nonce: r.get(1)?,
            ciphertext: r.get(2)?,
        })
    })?
    .collect()
}

/// A short fingerprint of an app's stored variables: every save changes it (each value is
/// encrypted with a fresh nonce), so a form can say which version it edited.
pub fn env_version(vars: &[EncryptedVar]) -> String {
    let mut bytes = Vec::new();
    for v in vars {
        for part in [v.key.as_bytes(), &v.nonce, &v.ciphertext] {
            bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
            bytes.extend_from_slice(part);
        }
    }
    crate::secrets::sha256_hex(&bytes)[..16].to_string()
}

fn new_deploy(
    c: &Connection,
    app_id: Option<i64>,
    app_name: &str,
    kind: &str,
    now: i64,
) -> rusqlite::Result<i64> {
    c.execute(
        "INSERT INTO deploys (app_id, app_name, kind, status, created_at) VALUES (?1, ?2, ?3, 'queued', ?4)",
        params![app_id, app_name, kind, now],
    )?;
    Ok(c.last_insert_rowid())
}

fn deploy_row(r: &Row) -> rusqlite::Result<DeployRow> {
    Ok(DeployRow {
        id: r.get(0)?,
        app_id: r.get(1)?,
        app_name: r.get(2)?,
        kind: r.get(3)?,
        status: parsed(r, 4)?,
        image_tag: r.get(5)?,
        log: r.get(6)?,
        error: r.get(7)?,
        created_at: r.get(8)?,
        finished_at: r.get(9)?,
    })
}
