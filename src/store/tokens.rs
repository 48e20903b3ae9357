//! API tokens (`api_tokens`): name, scope, lifetime, last use and revocation. Only the
//! SHA-256 of a token's secret is stored, so a copy of the database yields no usable token.

use rusqlite::{OptionalExtension, Row, params};

use super::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    /// `read`, `deploy` or `admin`.
    pub scope: String,
    /// Comma-separated app name keys a `deploy` token is limited to; empty: all.
    pub apps: String,
    pub created_at: i64,
    /// Who made it: `admin`, `cli`, or `token:<name>#<id>`.
    pub created_by: String,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub last_used_ip: Option<String>,
    pub revoked_at: Option<i64>,
}

/// A token about to be stored (its secret already hashed).
#[derive(Debug, Clone)]
pub struct NewToken {
    pub name: String,
    pub secret_hash: String,
    pub scope: String,
    pub apps: String,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

const COLUMNS: &str = "id, name, scope, apps, created_at, created_by, expires_at, last_used_at, last_used_ip, revoked_at";

fn row(r: &Row) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        id: r.get(0)?,
        name: r.get(1)?,
        scope: r.get(2)?,
        apps: r.get(3)?,
        created_at: r.get(4)?,
        created_by: r.get(5)?,
        expires_at: r.get(6)?,
        last_used_at: r.get(7)?,
        last_used_ip: r.get(8)?,
        revoked_at: r.get(9)?,
    })
}

impl Store {
    pub async fn insert_token(&self, t: NewToken) -> Result<i64, StoreError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO api_tokens (name, secret_hash, scope, apps, created_at, created_by, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![t.name, t.secret_hash, t.scope, t.apps, t.created_at, t.created_by, t.expires_at],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    /// For the CLI (`milkcrate token create`), which runs without a server.
    pub fn insert_token_blocking(&self, t: NewToken) -> Result<i64, StoreError> {
        self.call_blocking(move |c| {
            c.execute(
                "INSERT INTO api_tokens (name, secret_hash, scope, apps, created_at, created_by, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![t.name, t.secret_hash, t.scope, t.apps, t.created_at, t.created_by, t.expires_at],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    pub async fn token_by_hash(&self, secret_hash: String) -> Result<Option<TokenRow>, StoreError> {
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM api_tokens WHERE secret_hash = ?1"),
                [secret_hash],
                row,
            )
            .optional()
        })
        .await
    }

    pub async fn token(&self, id: i64) -> Result<Option<TokenRow>, StoreError> {
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM api_tokens WHERE id = ?1"),
                [id],
                row,
            )
            .optional()
        })
        .await
    }

    /// Newest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM api_tokens ORDER BY id DESC"
            ))?;
            stmt.query_map([], row)?.collect()
        })
        .await
    }

    /// Revokes the token; false when it was already revoked (or does not exist).
    pub async fn revoke_token(&self, id: i64, now: i64) -> Result<bool, StoreError> {
        self.call(move |c| {
            Ok(c.execute(
                "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, now],
            )? == 1)
        })
        .await
    }

    /// Records a use (at most once a minute per token, so reads do not each cost a write).
    pub async fn touch_token(&self, id: i64, now: i64, ip: String) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "UPDATE api_tokens SET last_used_at = ?2, last_used_ip = ?3 \
                 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at <= ?2 - 60 OR last_used_ip IS NOT ?3)",
                params![id, now, ip],
            )?;
            Ok(())
        })
        .await
    }
}
