//! The admin password: where it comes from and how it is checked.
//!
//! Precedence, as in the original: `MILKCRATE_ADMIN_PASSWORD` > the stored hash > the default
//! `admin`. Hash checks run on a blocking thread (argon2 and scrypt take tens of milliseconds).
//! Whether the default is still in use is worked out once and kept, so pages can show a banner
//! without hashing anything.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::domain::password::{self, DEFAULT_PASSWORD, Verdict};
use crate::secrets::{ct_eq, random_bytes};
use crate::store::{Store, StoreError, settings::ADMIN_PASSWORD};

pub struct Passwords {
    env_override: Option<String>,
    default_in_use: AtomicBool,
}

impl Passwords {
    pub fn load(store: &Store, env_override: Option<String>) -> Result<Self, StoreError> {
        let default_in_use = match env_override.as_deref() {
            Some(pw) => pw == DEFAULT_PASSWORD,
            None => match store
                .setting_blocking(ADMIN_PASSWORD)?
                .filter(|s| !s.trim().is_empty())
            {
                None => true,
                Some(stored) => matches!(
                    password::verify(&stored, DEFAULT_PASSWORD),
                    Verdict::Match { .. }
                ),
            },
        };
        Ok(Self {
            env_override,
            default_in_use: AtomicBool::new(default_in_use),
        })
    }

    /// True while logging in with `admin` works: pages show a banner, production refuses.
    pub fn default_in_use(&self) -> bool {
        self.default_in_use.load(Ordering::Relaxed)
    }

    pub fn env_override_active(&self) -> bool {
        self.env_override.is_some()
    }

    /// Checks a login attempt. A werkzeug or plain stored value that matches is replaced by an
    /// argon2id hash on the spot.
    pub async fn verify(&self, store: &Store, candidate: String) -> Result<bool, StoreError> {
        if let Some(expected) = &self.env_override {
            return Ok(ct_eq(expected.as_bytes(), candidate.as_bytes()));
        }
        let stored = store
            .setting(ADMIN_PASSWORD)
            .await?
            .filter(|s| !s.trim().is_empty());
        let Some(stored) = stored else {
            return Ok(ct_eq(DEFAULT_PASSWORD.as_bytes(), candidate.as_bytes()));
        };
        let (verdict, candidate) =
            blocking(move || (password::verify(&stored, &candidate), candidate)).await;
        match verdict {
            Verdict::Mismatch => Ok(false),
            Verdict::Match { rehash: false } => Ok(true),
            Verdict::Match { rehash: true } => {
                let new_hash = blocking(move || password::hash(&candidate, &random_bytes())).await;
                store.set_setting(ADMIN_PASSWORD, new_hash).await?;
                tracing::info!("re-hashed the stored admin password with argon2id");
                Ok(true)
            }
        }
    }

    /// Stores a new password (already checked for strength) as argon2id.
    pub async fn set(&self, store: &Store, new_password: String) -> Result<(), StoreError> {
        let is_default = new_password == DEFAULT_PASSWORD;
        let hash = blocking(move || password::hash(&new_password, &random_bytes())).await;
        store.set_setting(ADMIN_PASSWORD, hash).await?;
        self.default_in_use
            .store(is_default && self.env_override.is_none(), Ordering::Relaxed);
        Ok(())
    }
}

/// For the CLI: stores a new password hash without a running server.
pub fn set_password_blocking(store: &Store, new_password: &str) -> Result<(), StoreError> {
    store.set_setting_blocking(
        ADMIN_PASSWORD,
        &password::hash(new_password, &random_bytes()),
    )
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
