//! The engine as the server sees it: one shared connected client (connected, and its API
//! version negotiated, on first use; dropped after an error so the next use reconnects) and
//! the engine's last known state, refreshed in the background so no page waits on Docker.

use std::sync::RwLock;

use super::{BuildPids, Engine, EngineError, EngineInfo};

/// The engine: a shared connected client, and its last known state, refreshed in the
/// background so no page waits on Docker.
#[derive(Default)]
pub struct EngineMonitor {
    state: RwLock<Option<Result<EngineInfo, String>>>,
    client: tokio::sync::Mutex<Option<Engine>>,
    /// Where builds get their process limit: the cgroupfs parent, the systemd slice, the limit.
    build_cgroup: Option<(String, String, i64)>,
    /// The process limit of builds, once settled (set up once per process).
    build_pids: RwLock<Option<BuildPids>>,
}

impl EngineMonitor {
    /// A monitor whose clients run builds under a process limit of `max`: the parent cgroup
    /// `name` (cgroupfs) or the slice `slice` (systemd); see [`BuildPids`].
    pub fn confining_builds(name: String, slice: String, max: i64) -> Self {
        Self {
            build_cgroup: Some((name, slice, max)),
            ..Self::default()
        }
    }

    /// The process limit of builds, once a client has settled it.
    pub fn build_pids(&self) -> Option<BuildPids> {
        self.build_pids
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

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
        let mut engine = Engine::connect().await?;
        if let Some((name, slice, max)) = &self.build_cgroup {
            let known = self.build_pids();
            let pids = match known {
                Some(p) => Some(p),
                // The engine did not say how it runs cgroups: builds go unconfined this time,
                // and the next connection asks again.
                None => match engine.build_pids(name, slice, *max, true).await {
                    Err(e) => {
                        tracing::warn!("build process limit not set up yet: {e}");
                        None
                    }
                    Ok(p) => {
                        match &p {
                            BuildPids::Unlimited(why) => tracing::warn!(
                                "build steps have no process limit: {why} (`milkcrate check` says the same)"
                            ),
                            limited => {
                                tracing::info!("build process limit: {}", limited.describe())
                            }
                        }
                        *self.build_pids.write().unwrap_or_else(|p| p.into_inner()) =
                            Some(p.clone());
                        Some(p)
                    }
                },
            };
            if let Some(pids) = pids {
                engine = engine.confine_builds(&pids);
            }
        }
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
