//! The embedded store: one SQLite file at `<data>/milkcrate.sqlite`, WAL mode, foreign keys on.
//!
//! The only module with SQL. One connection behind a mutex, used from blocking threads: SQLite
//! has one writer anyway, and every query here is a primary-key lookup or a small scan.
//! Migrations run at start-up; they adopt the original's database in place and never drop a
//! table that can hold data.

pub mod alerts;
mod apps;
pub mod backups;
mod domains;
mod migrations;
mod registries;
pub use migrations::LATEST as SCHEMA_VERSION;
pub use registries::{ImageOptionsRow, RegistryRow};
mod sessions;
pub mod settings;
mod swarm;
mod tokens;
mod volumes;

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

pub use apps::{AppRow, DeployRow, EncryptedVar, NewApp, Taken, env_version};
pub use sessions::SessionRow;
pub use tokens::{NewToken, TokenRow};
pub use volumes::VolumeRow;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the database worker stopped unexpectedly")]
    Worker,
}

/// Cheap to clone; all clones share the connection.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

impl Store {
    /// Opens (creating when missing) the database and applies pending migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        // The database holds the password hash and session keys: owner-only.
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrations::apply(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on a blocking thread.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|_| StoreError::Worker)?
        .map_err(StoreError::from)
    }

    /// Runs `f` on the calling thread; for the CLI and start-up, never inside a request.
    pub fn call_blocking<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut guard = self
            .conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(f(&mut guard)?)
    }

    /// The schema version the migrations brought the file to.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.call_blocking(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
    }

    /// A consistent copy of the whole database at `path`, taken while others may be writing
    /// (`VACUUM INTO` reads one snapshot; the live file is never copied raw).
    pub fn snapshot_to(&self, path: &Path) -> Result<(), StoreError> {
        let target = path.to_string_lossy().to_string();
        self.call_blocking(|c| c.execute("VACUUM INTO ?1", [target]).map(|_| ()))
    }

    /// Copies the database at `source` to `target` with a consistent snapshot, without running
    /// our migrations on the source (it may belong to another program).
    pub fn open_existing_snapshot(source: &Path, target: &Path) -> Result<(), StoreError> {
        let conn = Connection::open_with_flags(source, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.execute("VACUUM INTO ?1", [target.to_string_lossy().to_string()])?;
        Ok(())
    }

    pub fn count_volumes(&self) -> Result<usize, StoreError> {
        self.call_blocking(|c| {
            c.query_row("SELECT count(*) FROM volumes", [], |r| r.get::<_, i64>(0))
                .map(|n| n as usize)
        })
    }
}
