//! Swarm mode's per-app options: the number of replicas wished and the placement constraints
//! (table `app_swarm`, one row per app that changed either; no row is 1 replica, no constraint).

use rusqlite::{OptionalExtension, Transaction, params};

use super::{Store, StoreError};

/// Migration: the `app_swarm` table.
pub(super) fn migrate(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS app_swarm (
            app_id INTEGER PRIMARY KEY REFERENCES deployed_apps(app_id) ON DELETE CASCADE,
            replicas INTEGER NOT NULL DEFAULT 1
        );",
    )
}

/// Migration: the placement constraints (one per line, already checked), '' for none.
pub(super) fn migrate_constraints(tx: &Transaction) -> rusqlite::Result<()> {
    if !super::migrations::has_column(tx, "app_swarm", "constraints")? {
        tx.execute_batch("ALTER TABLE app_swarm ADD COLUMN constraints TEXT NOT NULL DEFAULT ''")?;
    }
    Ok(())
}

impl Store {
    /// The placement constraints of `app_id` (none unless set).
    pub async fn app_constraints(&self, app_id: i64) -> Result<Vec<String>, StoreError> {
        self.call(move |c| {
            c.query_row(
                "SELECT constraints FROM app_swarm WHERE app_id = ?1",
                [app_id],
                |r| r.get::<_, String>(0),
            )
            .optional()
        })
        .await
        .map(|text| {
            text.unwrap_or_default()
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        })
    }

    /// Stores constraints checked by `domain::service_spec::parse_constraints`.
    pub async fn set_app_constraints(
        &self,
        app_id: i64,
        constraints: &[String],
    ) -> Result<(), StoreError> {
        let text = crate::domain::service_spec::constraints_column(constraints);
        self.call(move |c| {
            c.execute(
                "INSERT INTO app_swarm (app_id, constraints) VALUES (?1, ?2)
                 ON CONFLICT(app_id) DO UPDATE SET constraints = excluded.constraints",
                params![app_id, text],
            )
            .map(|_| ())
        })
        .await
    }

    /// The replicas `app_id` should run in swarm mode (1 unless set).
    pub async fn app_replicas(&self, app_id: i64) -> Result<u64, StoreError> {
        self.call(move |c| {
            c.query_row(
                "SELECT replicas FROM app_swarm WHERE app_id = ?1",
                [app_id],
                |r| r.get::<_, i64>(0),
            )
            .optional()
        })
        .await
        .map(|n| n.map_or(1, |n| n.max(0) as u64))
    }

    pub async fn set_app_replicas(&self, app_id: i64, replicas: u64) -> Result<(), StoreError> {
        let n = i64::try_from(replicas).unwrap_or(i64::MAX);
        self.call(move |c| {
            c.execute(
                "INSERT INTO app_swarm (app_id, replicas) VALUES (?1, ?2)
                 ON CONFLICT(app_id) DO UPDATE SET replicas = excluded.replicas",
                params![app_id, n],
            )
            .map(|_| ())
        })
        .await
    }
}
