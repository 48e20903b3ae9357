//! Adopting the original's database: every row stays, its password still logs in, its home
//! route still works, and nothing is dropped.

use crate::helpers::*;

/// The original's `schema.sql` (inventory §1.6), which drops and recreates every table.
pub const ORIGINAL_SCHEMA: &str = "
DROP TABLE IF EXISTS deployed_apps;
CREATE TABLE deployed_apps (
    app_id INTEGER PRIMARY KEY AUTOINCREMENT, app_name TEXT NOT NULL, container_id TEXT NOT NULL,
    image_tag TEXT NOT NULL, public_route TEXT NOT NULL, internal_port INTEGER NOT NULL,
    is_public INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL DEFAULT 'running',
    deployment_date TEXT NOT NULL DEFAULT (datetime('now')), deployment_type TEXT NOT NULL DEFAULT 'dockerfile',
    compose_file TEXT, main_service TEXT, volume_mounts TEXT);
CREATE INDEX idx_container_id ON deployed_apps(container_id);
CREATE INDEX idx_internal_port ON deployed_apps(internal_port);
CREATE INDEX idx_deployment_type ON deployed_apps(deployment_type);
CREATE INDEX idx_public_route ON deployed_apps(public_route);
DROP TABLE IF EXISTS settings;
CREATE TABLE settings (setting_key TEXT PRIMARY KEY, setting_value TEXT, updated_date TEXT NOT NULL DEFAULT (datetime('now')));
INSERT INTO settings (setting_key, setting_value) VALUES ('default_home_route', '');
DROP TABLE IF EXISTS volumes;
CREATE TABLE volumes (volume_id INTEGER PRIMARY KEY AUTOINCREMENT, volume_name TEXT NOT NULL UNIQUE,
    docker_volume_name TEXT NOT NULL UNIQUE, description TEXT, created_date TEXT NOT NULL DEFAULT (datetime('now')),
    file_count INTEGER NOT NULL DEFAULT 0, total_size_bytes INTEGER NOT NULL DEFAULT 0);
CREATE INDEX idx_volume_name ON volumes(volume_name);
DROP TABLE IF EXISTS volume_files;
CREATE TABLE volume_files (file_id INTEGER PRIMARY KEY AUTOINCREMENT,
    volume_id INTEGER NOT NULL REFERENCES volumes(volume_id) ON DELETE CASCADE, file_name TEXT NOT NULL,
    file_path TEXT NOT NULL, file_size_bytes INTEGER NOT NULL, uploaded_date TEXT NOT NULL DEFAULT (datetime('now')));
CREATE INDEX idx_volume_files_volume_id ON volume_files(volume_id);
";

/// werkzeug 3.1.8: generate_password_hash("OldAdmin#2024").
pub const OLD_HASH: &str = "scrypt:32768:8:1$wSMKY5mvFUeWZMhw$89d63e2c4b5c87c36ac655372e5051b3248b2c523830014721f284a2046870bb436f611906516bb35487e71b98ad04353936b77c237f59a8b06dbe5b6f2a34de";

pub const ROWS: &str = "
INSERT INTO deployed_apps (app_name, container_id, image_tag, public_route, internal_port, status, deployment_date, deployment_type, compose_file, main_service, volume_mounts)
VALUES ('demo', 'abc123', 'milkcrate-demo:20260220-203000', '/demo', 8000, 'running', '2026-02-20 20:30:00', 'dockerfile', NULL, NULL, '{\"milkcrate-vol-data\": {\"bind\": \"/data\", \"mode\": \"rw\"}}'),
       ('shop', 'def456', 'milkcrate-shop:20260221-101500', '/shop', 3000, 'stopped', '2026-02-21 10:15:00', 'docker-compose', 'docker-compose.yml', 'web', NULL);
UPDATE settings SET setting_value = '/demo' WHERE setting_key = 'default_home_route';
INSERT INTO volumes (volume_name, docker_volume_name, description, file_count, total_size_bytes) VALUES ('data', 'milkcrate-vol-data', 'app data', 2, 1234);
INSERT INTO volume_files (volume_id, file_name, file_path, file_size_bytes) VALUES (1, 'a.txt', '/a.txt', 1000), (1, 'b.txt', '/b.txt', 234);
";

fn counts(path: &std::path::Path) -> Vec<(String, i64)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    ["deployed_apps", "settings", "volumes", "volume_files"]
        .iter()
        .map(|t| {
            (
                t.to_string(),
                conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
                    .unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn milkcrate_adopts_the_original_database_without_losing_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("instance");
    std::fs::create_dir_all(&data).unwrap();
    let db = data.join("milkcrate.sqlite");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(ORIGINAL_SCHEMA).unwrap();
        conn.execute_batch(ROWS).unwrap();
        conn.execute(
            "INSERT INTO settings (setting_key, setting_value) VALUES ('admin_password', ?1)",
            [OLD_HASH],
        )
        .unwrap();
    }
    let before = counts(&db);
    assert_eq!(
        before,
        [
            ("deployed_apps".into(), 2),
            ("settings".into(), 2),
            ("volumes".into(), 1),
            ("volume_files".into(), 2)
        ]
    );

    let app = spawn_in(data.clone(), |_| {}).await;
    assert_eq!(
        location(&app.get("/").await),
        "/demo",
        "the original's home route still applies"
    );
    assert_eq!(
        app.login("admin").await.status(),
        401,
        "the default does not work once a password was set"
    );
    assert_eq!(
        location(&app.login("OldAdmin#2024").await),
        "/admin",
        "the werkzeug hash logs in"
    );
    app.stop().await;

    let conn = rusqlite::Connection::open(&db).unwrap();
    let stored: String = conn
        .query_row(
            "SELECT setting_value FROM settings WHERE setting_key='admin_password'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        stored.starts_with("$argon2id$"),
        "re-hashed at login: {stored}"
    );
    assert_eq!(counts(&db), before, "every row is still there");
    let (name, mounts, kind): (String, String, String) = conn
        .query_row(
            "SELECT app_name, volume_mounts, deployment_type FROM deployed_apps WHERE app_id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((name.as_str(), kind.as_str()), ("demo", "dockerfile"));
    assert!(mounts.contains("/data"));
    let fk: i64 = conn
        .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        fk, 1,
        "milkcrate's own tables were added beside the original's"
    );

    // The re-hashed password keeps working after a restart.
    let again = spawn_in(data, |_| {}).await;
    assert_eq!(location(&again.login("OldAdmin#2024").await), "/admin");
}

#[tokio::test]
async fn an_older_original_database_gets_its_missing_columns() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("instance");
    std::fs::create_dir_all(&data).unwrap();
    let db = data.join("milkcrate.sqlite");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE deployed_apps (app_id INTEGER PRIMARY KEY AUTOINCREMENT, app_name TEXT NOT NULL, container_id TEXT NOT NULL,
             image_tag TEXT NOT NULL, public_route TEXT NOT NULL, internal_port INTEGER NOT NULL, status TEXT NOT NULL DEFAULT 'running',
             deployment_date TEXT NOT NULL DEFAULT (datetime('now')));
             INSERT INTO deployed_apps (app_name, container_id, image_tag, public_route, internal_port) VALUES ('old', 'c1', 'milkcrate-old:1', '/old', 8000);",
        )
        .unwrap();
    }
    let app = spawn_in(data, |_| {}).await;
    app.stop().await;
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (kind, mounts): (String, Option<String>) = conn
        .query_row(
            "SELECT deployment_type, volume_mounts FROM deployed_apps WHERE app_name='old'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((kind.as_str(), mounts), ("dockerfile", None));
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        version,
        milkcrate::store::SCHEMA_VERSION,
        "every migration applied"
    );
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}
