//! The Docker Engine, through its API (bollard). The only module that imports bollard.
//!
//! Connection honours `DOCKER_HOST` (bollard's local defaults: the unix socket otherwise) and
//! always negotiates the API version: Debian's engine speaks 1.41, older than bollard's default.

use bollard::Docker;

/// Label every object milkcrate creates in the engine carries.
pub const MANAGED_LABEL: &str = "milkcrate.managed";

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "the Docker Engine is not reachable ({0}). Start it (e.g. `systemctl start docker`) or set DOCKER_HOST."
    )]
    Unreachable(String),
}

/// A connected, version-negotiated engine client. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
}

/// What `milkcrate check` and the dashboard show about the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    pub version: String,
    pub api_version: String,
}

impl Engine {
    pub async fn connect() -> Result<Self, EngineError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| EngineError::Unreachable(e.to_string()))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| EngineError::Unreachable(e.to_string()))?;
        Ok(Self { docker })
    }

    pub async fn info(&self) -> Result<EngineInfo, EngineError> {
        let v = self
            .docker
            .version()
            .await
            .map_err(|e| EngineError::Unreachable(e.to_string()))?;
        let negotiated = self.docker.client_version();
        Ok(EngineInfo {
            version: v.version.unwrap_or_else(|| "unknown".into()),
            api_version: format!("{}.{}", negotiated.major_version, negotiated.minor_version),
        })
    }
}
