//! The `settings` key/value table, shared with the original (`default_home_route`,
//! `admin_password`).

use rusqlite::{Connection, OptionalExtension, params};

use super::{Store, StoreError};

pub const DEFAULT_HOME_ROUTE: &str = "default_home_route";
pub const ADMIN_PASSWORD: &str = "admin_password";
/// This install's identity when MILKCRATE_INSTANCE is unset (milkcrate's own key).
pub const INSTALL_ID: &str = "milkcrate_install_id";

impl Store {
    pub async fn setting(&self, key: &'static str) -> Result<Option<String>, StoreError> {
        self.call(move |c| get(c, key)).await
    }

    pub async fn set_setting(&self, key: &'static str, value: String) -> Result<(), StoreError> {
        self.call(move |c| set(c, key, &value)).await
    }

    pub fn setting_blocking(&self, key: &'static str) -> Result<Option<String>, StoreError> {
        self.call_blocking(|c| get(c, key))
    }

    pub fn set_setting_blocking(&self, key: &'static str, value: &str) -> Result<(), StoreError> {
        self.call_blocking(|c| set(c, key, value))
    }

    /// The stored install id; with none stored, `fresh` is stored and returned when the
    /// database holds no app and no volume yet, and `None` when it does (an install from
    /// before identities: its engine objects carry no id, so it keeps its old scope).
    pub fn install_id_blocking(&self, fresh: &str) -> Result<Option<String>, StoreError> {
        let fresh = fresh.to_string();
        self.call_blocking(move |c| {
            let tx = c.unchecked_transaction()?;
            if let Some(id) = get(&tx, INSTALL_ID)?.filter(|v| !v.trim().is_empty()) {
                return Ok(Some(id));
            }
            let used: i64 = tx.query_row(
                "SELECT (SELECT count(*) FROM deployed_apps) + (SELECT count(*) FROM volumes)",
                [],
                |r| r.get(0),
            )?;
            if used > 0 {
                return Ok(None);
            }
            set(&tx, INSTALL_ID, &fresh)?;
            tx.commit()?;
            Ok(Some(fresh))
        })
    }
}

fn get(c: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    c.query_row(
        "SELECT setting_value FROM settings WHERE setting_key = ?1",
        [key],
        |r| r.get::<_, Option<String>>(0),
    )
    .optional()
    .map(Option::flatten)
}

fn set(c: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO settings (setting_key, setting_value, updated_date) VALUES (?1, ?2, datetime('now'))
         ON CONFLICT(setting_key) DO UPDATE SET setting_value = excluded.setting_value, updated_date = excluded.updated_date",
        params![key, value],
    )?;
    Ok(())
}
