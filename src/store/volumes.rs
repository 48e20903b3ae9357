//! Volumes (the original's `volumes` table). Its `volume_files` table is kept for old installs
//! but no longer written: the volume itself, read through the engine, is the truth.

use rusqlite::{OptionalExtension, Row, params};

use super::{Store, StoreError};

#[derive(Debug, Clone, serde::Serialize)]
pub struct VolumeRow {
    pub volume_id: i64,
    pub volume_name: String,
    pub docker_volume_name: String,
    pub description: String,
    pub created_date: String,
    pub file_count: i64,
    pub total_size_bytes: i64,
}

const COLUMNS: &str = "volume_id, volume_name, docker_volume_name, coalesce(description, ''), created_date, file_count, total_size_bytes";

fn row(r: &Row) -> rusqlite::Result<VolumeRow> {
    Ok(VolumeRow {
        volume_id: r.get(0)?,
        volume_name: r.get(1)?,
        docker_volume_name: r.get(2)?,
        description: r.get(3)?,
        created_date: r.get(4)?,
        file_count: r.get(5)?,
        total_size_bytes: r.get(6)?,
    })
}

impl Store {
    /// Newest first, as the original lists them.
    pub async fn volumes(&self) -> Result<Vec<VolumeRow>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM volumes ORDER BY created_date DESC, volume_id DESC"
            ))?;
            stmt.query_map([], row)?.collect()
        })
        .await
    }

    /// The Docker names of all volumes (what compose files and backups refer to).
    pub async fn volume_docker_names(&self) -> Result<Vec<String>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT docker_volume_name FROM volumes ORDER BY docker_volume_name",
            )?;
            stmt.query_map([], |r| r.get(0))?.collect()
        })
        .await
    }

    pub async fn volume(&self, id: i64) -> Result<Option<VolumeRow>, StoreError> {
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM volumes WHERE volume_id = ?1"),
                [id],
                row,
            )
            .optional()
        })
        .await
    }

    /// The row holding `docker_name`, if any (the name the uniqueness rule is about).
    pub async fn volume_by_docker_name(
        &self,
        docker_name: String,
    ) -> Result<Option<VolumeRow>, StoreError> {
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM volumes WHERE docker_volume_name = ?1"),
                [docker_name],
                row,
            )
            .optional()
        })
        .await
    }

    pub async fn insert_volume(
        &self,
        name: String,
        docker_name: String,
        description: String,
    ) -> Result<i64, StoreError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO volumes (volume_name, docker_volume_name, description) VALUES (?1, ?2, ?3)",
                params![name, docker_name, description],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    pub async fn set_volume_stats(
        &self,
        id: i64,
        files: u64,
        bytes: u64,
    ) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "UPDATE volumes SET file_count = ?2, total_size_bytes = ?3 WHERE volume_id = ?1",
                params![id, files as i64, bytes as i64],
            )
            .map(|_| ())
        })
        .await
    }

    pub async fn delete_volume(&self, id: i64) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute("DELETE FROM volume_files WHERE volume_id = ?1", [id])?;
            c.execute("DELETE FROM volumes WHERE volume_id = ?1", [id])
                .map(|_| ())
        })
        .await
    }
}
