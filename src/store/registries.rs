//! Registry credentials (one row per host; the password only as ciphertext) and per-app image
//! options (pull policy, run as the image's own user, the template the app came from).

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};

/// A stored credential: the password is sealed, bound to its host.
#[derive(Debug, Clone)]
pub struct RegistryRow {
    pub host: String,
    pub username: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub updated_at: i64,
}

/// An app's image options; an app without a row has the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageOptionsRow {
    pub pull_policy: String,
    pub image_user: bool,
    pub template: Option<String>,
}

impl Store {
    pub async fn registries(&self) -> Result<Vec<RegistryRow>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT host, username, nonce, ciphertext, updated_at FROM registry_credentials ORDER BY host",
            )?;
            stmt.query_map([], |r| {
                Ok(RegistryRow {
                    host: r.get(0)?,
                    username: r.get(1)?,
                    nonce: r.get(2)?,
                    ciphertext: r.get(3)?,
                    updated_at: r.get(4)?,
                })
            })?
            .collect()
        })
        .await
    }

    /// Adds or replaces the credentials of `row.host`; true when it replaced some.
    pub async fn save_registry(&self, row: RegistryRow) -> Result<bool, StoreError> {
        self.call(move |c| {
            let existed: Option<i64> = c
                .query_row(
                    "SELECT 1 FROM registry_credentials WHERE host = ?1",
                    [&row.host],
                    |r| r.get(0),
                )
                .optional()?;
            c.execute(
                "INSERT INTO registry_credentials (host, username, nonce, ciphertext, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(host) DO UPDATE SET username = excluded.username, nonce = excluded.nonce,
                     ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
                params![row.host, row.username, row.nonce, row.ciphertext, row.updated_at],
            )?;
            Ok(existed.is_some())
        })
        .await
    }

    /// Removes the credentials of `host`; false when there were none.
    pub async fn delete_registry(&self, host: String) -> Result<bool, StoreError> {
        self.call(move |c| {
            Ok(c.execute("DELETE FROM registry_credentials WHERE host = ?1", [host])? > 0)
        })
        .await
    }

    pub async fn image_options(&self, app_id: i64) -> Result<ImageOptionsRow, StoreError> {
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT pull_policy, image_user, template FROM app_image_options WHERE app_id = ?1",
                [app_id],
                |r| {
                    Ok(ImageOptionsRow {
                        pull_policy: r.get(0)?,
                        image_user: r.get::<_, i64>(1)? != 0,
                        template: r.get(2)?,
                    })
                },
            )
            .optional()?
            .unwrap_or_else(|| ImageOptionsRow {
                pull_policy: "missing".into(),
                ..Default::default()
            }))
        })
        .await
    }

    pub async fn set_image_options(
        &self,
        app_id: i64,
        options: ImageOptionsRow,
    ) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO app_image_options (app_id, pull_policy, image_user, template) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(app_id) DO UPDATE SET pull_policy = excluded.pull_policy,
                     image_user = excluded.image_user, template = excluded.template",
                params![app_id, options.pull_policy, i64::from(options.image_user), options.template],
            )?;
            Ok(())
        })
        .await
    }
}
