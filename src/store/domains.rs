//! Custom domains of apps (`app_domains`): one row per host name, keyed by the normalised name
//! so no two apps can hold one, even when two admins add it at once.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Store, StoreError};

/// The app holding `host`, if any.
pub(super) fn owner_of(c: &Connection, host: &str) -> rusqlite::Result<Option<String>> {
    c.query_row(
        "SELECT a.app_name FROM app_domains d JOIN deployed_apps a ON a.app_id = d.app_id WHERE d.host = ?1",
        [host],
        |r| r.get(0),
    )
    .optional()
}

pub(super) fn insert(c: &Connection, app_id: i64, host: &str, now: i64) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO app_domains (host, app_id, created_at) VALUES (?1, ?2, ?3)",
        params![host, app_id, now],
    )
    .map(|_| ())
}

impl Store {
    /// Gives `host` to the app; `Ok(Err(owner))` when an app (this one or another) has it.
    pub async fn add_domain(
        &self,
        app_id: i64,
        host: String,
        now: i64,
    ) -> Result<Result<(), String>, StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            if let Some(owner) = owner_of(&tx, &host)? {
                return Ok(Err(owner));
            }
            insert(&tx, app_id, &host, now)?;
            tx.commit()?;
            Ok(Ok(()))
        })
        .await
    }

    /// Takes `host` from the app; whether it had it.
    pub async fn remove_domain(&self, app_id: i64, host: String) -> Result<bool, StoreError> {
        self.call(move |c| {
            c.execute(
                "DELETE FROM app_domains WHERE app_id = ?1 AND host = ?2",
                params![app_id, host],
            )
            .map(|n| n > 0)
        })
        .await
    }
}
