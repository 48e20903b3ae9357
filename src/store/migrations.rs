//! Schema migrations, numbered by SQLite's `user_version`.
//!
//! Migration 1 is the original's schema (inventory §1.6). On a fresh file it creates it; on the
//! original's database (user_version 0, tables present) it only adds what is missing, so every
//! row stays. Later migrations add milkcrate's own tables and columns. None drops a table.

use rusqlite::{Connection, Transaction};

type Migration = fn(&Transaction) -> rusqlite::Result<()>;

const MIGRATIONS: &[Migration] = &[
    original_schema,
    sessions,
    apps_and_deploys,
    app_outbound,
    app_domains,
    registries_and_image_options,
    api_tokens,
    super::backups::migrate,
    alerts,
    super::swarm::migrate,
    super::swarm::migrate_constraints,
];

/// The `user_version` of a database every migration has been applied to.
pub const LATEST: i64 = MIGRATIONS.len() as i64;

pub fn apply(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, migrate) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        if version <= current {
            continue;
        }
        let tx = conn.transaction()?;
        migrate(&tx)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!(version, "applied database migration");
    }
    Ok(())
}

/// Alert channels (their target encrypted like app variables) and every delivery's result.
fn alerts(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS alert_channels (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            format TEXT NOT NULL DEFAULT 'json',
            summary TEXT NOT NULL DEFAULT '',
            target_nonce BLOB NOT NULL,
            target_ciphertext BLOB NOT NULL,
            events TEXT NOT NULL,
            created_at INTEGER NOT NULL
        );
        CREATE TABLE IF NOT EXISTS alert_deliveries (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at INTEGER NOT NULL,
            channel_id INTEGER,
            channel_name TEXT NOT NULL,
            event TEXT NOT NULL,
            subject TEXT NOT NULL,
            message TEXT NOT NULL,
            result TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            error TEXT
        );
        CREATE INDEX IF NOT EXISTS alert_deliveries_at ON alert_deliveries(at);",
    )
}

fn original_schema(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS deployed_apps (
            app_id INTEGER PRIMARY KEY AUTOINCREMENT,
            app_name TEXT NOT NULL,
            container_id TEXT NOT NULL,
            image_tag TEXT NOT NULL,
            public_route TEXT NOT NULL,
            internal_port INTEGER NOT NULL,
            is_public INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL DEFAULT 'running',
            deployment_date TEXT NOT NULL DEFAULT (datetime('now')),
            deployment_type TEXT NOT NULL DEFAULT 'dockerfile',
            compose_file TEXT,
            main_service TEXT,
            volume_mounts TEXT
        );
        CREATE TABLE IF NOT EXISTS settings (
            setting_key TEXT PRIMARY KEY,
            setting_value TEXT,
            updated_date TEXT NOT NULL DEFAULT (datetime('now'))
        );
        CREATE TABLE IF NOT EXISTS volumes (
            volume_id INTEGER PRIMARY KEY AUTOINCREMENT,
            volume_name TEXT NOT NULL UNIQUE,
            docker_volume_name TEXT NOT NULL UNIQUE,
            description TEXT,
            created_date TEXT NOT NULL DEFAULT (datetime('now')),
            file_count INTEGER NOT NULL DEFAULT 0,
            total_size_bytes INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE IF NOT EXISTS volume_files (
            file_id INTEGER PRIMARY KEY AUTOINCREMENT,
            volume_id INTEGER NOT NULL REFERENCES volumes(volume_id) ON DELETE CASCADE,
            file_name TEXT NOT NULL,
            file_path TEXT NOT NULL,
            file_size_bytes INTEGER NOT NULL,
            uploaded_date TEXT NOT NULL DEFAULT (datetime('now'))
        );",
    )?;
    // Older installs of the original lack these columns (its own migration adds them the same way).
    for (column, decl) in [
        ("is_public", "INTEGER NOT NULL DEFAULT 0"),
        ("deployment_type", "TEXT NOT NULL DEFAULT 'dockerfile'"),
        ("compose_file", "TEXT"),
        ("main_service", "TEXT"),
        ("volume_mounts", "TEXT"),
    ] {
        if !has_column(tx, "deployed_apps", column)? {
            tx.execute_batch(&format!(
                "ALTER TABLE deployed_apps ADD COLUMN {column} {decl}"
            ))?;
        }
    }
    tx.execute_batch(
        "CREATE INDEX IF NOT EXISTS idx_container_id ON deployed_apps(container_id);
        CREATE INDEX IF NOT EXISTS idx_internal_port ON deployed_apps(internal_port);
        CREATE INDEX IF NOT EXISTS idx_deployment_type ON deployed_apps(deployment_type);
        CREATE INDEX IF NOT EXISTS idx_public_route ON deployed_apps(public_route);
        CREATE INDEX IF NOT EXISTS idx_volume_name ON volumes(volume_name);
        CREATE INDEX IF NOT EXISTS idx_volume_files_volume_id ON volume_files(volume_id);
        INSERT OR IGNORE INTO settings (setting_key, setting_value) VALUES ('default_home_route', '');",
    )
}

fn sessions(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS sessions (
            id_hash TEXT PRIMARY KEY,
            csrf_secret TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            last_seen INTEGER NOT NULL,
            ip TEXT NOT NULL DEFAULT '',
            user_agent TEXT NOT NULL DEFAULT '',
            flash TEXT NOT NULL DEFAULT '[]'
        );
        CREATE INDEX IF NOT EXISTS idx_sessions_last_seen ON sessions(last_seen);",
    )
}

/// Columns for what the original lacked (limits, health path, rollback, sources) and the
/// deploy history with its build logs, and per-app environment variables encrypted at rest.
fn apps_and_deploys(tx: &Transaction) -> rusqlite::Result<()> {
    for (column, decl) in [
        ("name_key", "TEXT"),
        ("health_path", "TEXT"),
        ("memory_mb", "INTEGER NOT NULL DEFAULT 512"),
        ("cpu_percent", "INTEGER NOT NULL DEFAULT 50"),
        ("port_override", "INTEGER"),
        ("previous_image_tag", "TEXT"),
        ("source_zip", "TEXT"),
    ] {
        if !has_column(tx, "deployed_apps", column)? {
            tx.execute_batch(&format!(
                "ALTER TABLE deployed_apps ADD COLUMN {column} {decl}"
            ))?;
        }
    }
    tx.execute_batch(
        "UPDATE deployed_apps SET name_key = lower(replace(app_name, '_', '-')) WHERE name_key IS NULL;
        CREATE INDEX IF NOT EXISTS idx_app_name_key ON deployed_apps(name_key);
        CREATE TABLE IF NOT EXISTS deploys (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            app_id INTEGER REFERENCES deployed_apps(app_id) ON DELETE SET NULL,
            app_name TEXT NOT NULL,
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            image_tag TEXT,
            log TEXT NOT NULL DEFAULT '',
            error TEXT,
            created_at INTEGER NOT NULL,
            finished_at INTEGER
        );
        CREATE INDEX IF NOT EXISTS idx_deploys_app ON deploys(app_id);
        CREATE TABLE IF NOT EXISTS app_env (
            app_id INTEGER NOT NULL REFERENCES deployed_apps(app_id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            nonce BLOB NOT NULL,
            ciphertext BLOB NOT NULL,
            PRIMARY KEY (app_id, key)
        );",
    )
}

/// Custom domains of apps: the normalised name (ASCII, lower case) is the key, so a name
/// belongs to one app at most, whatever case or IDNA form it was typed in.
fn app_domains(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS app_domains (
            host TEXT PRIMARY KEY,
            app_id INTEGER NOT NULL REFERENCES deployed_apps(app_id) ON DELETE CASCADE,
            created_at INTEGER NOT NULL
        );
        CREATE INDEX IF NOT EXISTS idx_app_domains_app ON app_domains(app_id);",
    )
}

/// Registry credentials (the password encrypted like env vars) and per-app image options:
/// pull policy, running as the image's own user, the template a service was made from.
fn registries_and_image_options(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS registry_credentials (
            host TEXT PRIMARY KEY,
            username TEXT NOT NULL,
            nonce BLOB NOT NULL,
            ciphertext BLOB NOT NULL,
            updated_at INTEGER NOT NULL
        );
        CREATE TABLE IF NOT EXISTS app_image_options (
            app_id INTEGER PRIMARY KEY REFERENCES deployed_apps(app_id) ON DELETE CASCADE,
            pull_policy TEXT NOT NULL DEFAULT 'missing',
            image_user INTEGER NOT NULL DEFAULT 0,
            template TEXT
        );",
    )
}

/// API tokens: only the SHA-256 of each secret is kept; revoked tokens stay listed.
fn api_tokens(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS api_tokens (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            secret_hash TEXT NOT NULL UNIQUE,
            scope TEXT NOT NULL,
            apps TEXT NOT NULL DEFAULT '',
            created_at INTEGER NOT NULL,
            created_by TEXT NOT NULL DEFAULT '',
            expires_at INTEGER,
            last_used_at INTEGER,
            last_used_ip TEXT,
            revoked_at INTEGER
        );",
    )
}

pub(super) fn has_column(tx: &Transaction, table: &str, column: &str) -> rusqlite::Result<bool> {
    let mut stmt = tx.prepare(&format!("PRAGMA table_info({table})"))?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(names.iter().any(|n| n == column))
}

/// Per app: may it open connections outside milkcrate's networks (on unless the admin cuts it).
fn app_outbound(tx: &Transaction) -> rusqlite::Result<()> {
    if !has_column(tx, "deployed_apps", "outbound")? {
        tx.execute_batch(
            "ALTER TABLE deployed_apps ADD COLUMN outbound INTEGER NOT NULL DEFAULT 1",
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn no_migration_drops_a_table() {
        let src = include_str!("migrations.rs");
        let needle = ["DROP", "TABLE"].join(" ");
        assert!(
            !src.to_uppercase().contains(&needle),
            "migrations must never drop a table"
        );
    }
}
