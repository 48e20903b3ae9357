//! Use cases: deploying, updating, rolling back, starting and stopping apps, watching their
//! status, reconciling with the engine at start-up. Handlers call these; these call `store`,
//! `docker` and `archive`, and never know about HTTP.

pub mod compose;
pub mod deploy;
pub mod leftovers;
pub mod lifecycle;
pub mod locks;
pub mod loghub;
pub mod reconcile;
pub mod stats;
pub mod status;
pub mod volumes;

use std::path::PathBuf;

use crate::app::AppState;

/// Where an app's uploaded sources are kept: `<data>/apps/<name key>/`.
pub fn app_dir(state: &AppState, name_key: &str) -> PathBuf {
    state.settings.data_dir.join("apps").join(name_key)
}

/// Uploads land here first, under server-chosen names, until they pass the checks.
pub fn upload_dir(state: &AppState) -> PathBuf {
    state.settings.data_dir.join("uploads")
}
