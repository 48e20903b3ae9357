//! Server-side admin sessions. Rows are keyed by the SHA-256 of the cookie's id, so the
//! database alone never yields a working cookie.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id_hash: String,
    pub csrf_secret: String,
    pub created_at: i64,
    pub last_seen: i64,
}

impl Store {
    pub async fn create_session(
        &self,
        row: SessionRow,
        ip: String,
        user_agent: String,
    ) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO sessions (id_hash, csrf_secret, created_at, last_seen, ip, user_agent) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![row.id_hash, row.csrf_secret, row.created_at, row.last_seen, ip, user_agent],
            )
            .map(|_| ())
        })
        .await
    }

    pub async fn session(&self, id_hash: String) -> Result<Option<SessionRow>, StoreError> {
        self.call(move |c| {
            c.query_row(
                "SELECT id_hash, csrf_secret, created_at, last_seen FROM sessions WHERE id_hash = ?1",
                [&id_hash],
                |r| Ok(SessionRow { id_hash: r.get(0)?, csrf_secret: r.get(1)?, created_at: r.get(2)?, last_seen: r.get(3)? }),
            )
            .optional()
        })
        .await
    }

    /// The sessions among `id_hashes` (in no particular order): one query however many
    /// cookies a request carries.
    pub async fn sessions_among(
        &self,
        id_hashes: Vec<String>,
    ) -> Result<Vec<SessionRow>, StoreError> {
        if id_hashes.is_empty() {
            return Ok(Vec::new());
        }
        self.call(move |c| {
            let marks = vec!["?"; id_hashes.len()].join(",");
            let mut stmt = c.prepare(&format!(
                "SELECT id_hash, csrf_secret, created_at, last_seen FROM sessions WHERE id_hash IN ({marks})"
            ))?;
            let rows = stmt.query_map(rusqlite::params_from_iter(id_hashes.iter()), |r| {
                Ok(SessionRow { id_hash: r.get(0)?, csrf_secret: r.get(1)?, created_at: r.get(2)?, last_seen: r.get(3)? })
            })?;
            rows.collect()
        })
        .await
    }

    pub async fn touch_session(&self, id_hash: String, now: i64) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "UPDATE sessions SET last_seen = ?2 WHERE id_hash = ?1",
                params![id_hash, now],
            )
            .map(|_| ())
        })
        .await
    }

    pub async fn delete_session(&self, id_hash: String) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute("DELETE FROM sessions WHERE id_hash = ?1", [id_hash])
                .map(|_| ())
        })
        .await
    }

    /// Ends every session but `keep` (after a password change). Returns how many ended.
    pub async fn delete_other_sessions(&self, keep: Option<String>) -> Result<usize, StoreError> {
        self.call(move |c| c.execute("DELETE FROM sessions WHERE id_hash IS NOT ?1", [keep]))
            .await
    }

    pub fn delete_all_sessions_blocking(&self) -> Result<usize, StoreError> {
        self.call_blocking(|c| c.execute("DELETE FROM sessions", []))
    }

    /// Removes sessions idle since before `idle_cutoff` or created before `created_cutoff`.
    pub async fn purge_sessions(
        &self,
        idle_cutoff: i64,
        created_cutoff: i64,
    ) -> Result<usize, StoreError> {
        self.call(move |c| {
            c.execute(
                "DELETE FROM sessions WHERE last_seen < ?1 OR created_at < ?2",
                params![idle_cutoff, created_cutoff],
            )
        })
        .await
    }

    /// Appends a message shown on the session's next page.
    pub async fn push_flash(&self, id_hash: String, flash_json: String) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "UPDATE sessions SET flash = json_insert(flash, '$[#]', json(?2)) WHERE id_hash = ?1",
                params![id_hash, flash_json],
            )
            .map(|_| ())
        })
        .await
    }

    /// Takes (and clears) the session's pending messages, as a JSON array.
    pub async fn take_flashes(&self, id_hash: String) -> Result<String, StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let flashes: String = tx
                .query_row(
                    "SELECT flash FROM sessions WHERE id_hash = ?1",
                    [&id_hash],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or_else(|| "[]".into());
            if flashes != "[]" {
                tx.execute(
                    "UPDATE sessions SET flash = '[]' WHERE id_hash = ?1",
                    [&id_hash],
                )?;
            }
            tx.commit()?;
            Ok(flashes)
        })
        .await
    }
}
