//! The engine as the server sees it: one shared connected client (connected, and its API
//! version negotiated, on first use; dropped after an error so the next use reconnects) and
//! the engine's last known state, refreshed in the background so no page waits on Docker.

use std::sync::RwLock;

use super::{Engine, EngineError, EngineInfo};

/// The engine: a shared connected client, and its last known state, refreshed in the
/// background so no page waits on Docker.
#[derive(Default)]
pub struct EngineMonitor {
    state: RwLock<Option<Result<EngineInfo, String>>>,
    client: tokio::sync::Mutex<Option<Engine>>,
}

impl EngineMonitor {
    pub fn get(&self) -> Option<Result<EngineInfo, String>> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, v: Result<EngineInfo, String>) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Some(v);
    }

    /// The connected client, connecting (and negotiating the API version) on first use.
    pub async fn client(&self) -> Result<Engine, EngineError> {
        let mut guard = self.client.lock().await;
        if let Some(e) = guard.as_ref() {
            return Ok(e.clone());
        }
        let engine = Engine::connect().await?;
        *guard = Some(engine.clone());
        Ok(engine)
    }

    /// Drops the client after an error, so the next use reconnects.
    pub fn forget(&self) {
        if let Ok(mut guard) = self.client.try_lock() {
            *guard = None;
        }
    }
}
