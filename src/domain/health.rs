//! An app's health as one value ([`AppHealth`]): what the admin wants (`state::AppStatus`)
//! set against what the engine reports of its container (or, in swarm mode, its tasks).
//! Computed in `service/status.rs` and read by the dashboard, the app page and the router;
//! how it looks (words, tones, colours) is `web/`'s business.

use crate::domain::state::AppStatus as Desired;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppHealth {
    /// Its first deploy runs; nothing serves yet.
    Deploying,
    /// The engine could not be asked.
    Unknown,
    /// The engine has not been read yet.
    Checking,
    /// Its container is gone from the engine.
    Missing,
    /// Running, and its HEALTHCHECK (or health-path probe) passes.
    Healthy,
    /// Running, and its HEALTHCHECK (or health-path probe) fails.
    Unhealthy,
    /// Running, its HEALTHCHECK not decided yet.
    Starting,
    /// Running, with nothing checking its health.
    Running,
    Restarting,
    /// Exited, as the admin asked.
    Stopped,
    /// Exited (or dead) while it should run.
    Exited,
    Created,
    Paused,
    /// Any other engine state, by its name.
    Other(String),
    /// Swarm mode: tasks running of those the service wishes; `wanted` is false when the admin
    /// stopped the app.
    Replicas {
        running: u64,
        wished: u64,
        wanted: bool,
    },
}

/// What checks a running container's health says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Nothing checks it (no HEALTHCHECK, no probe result).
    None,
    Passing,
    Failing,
    /// A HEALTHCHECK that has not decided yet.
    Pending,
}

impl Check {
    /// The engine's HEALTHCHECK word (`healthy`, `unhealthy`, `starting`…), if any.
    pub fn of_healthcheck(word: Option<&str>) -> Check {
        match word {
            None => Check::None,
            Some("healthy") => Check::Passing,
            Some("unhealthy") => Check::Failing,
            Some(_) => Check::Pending,
        }
    }
}

impl AppHealth {
    /// The health of an app whose container the engine reports in `state` (`running`,
    /// `exited`…), its health checks saying `check`. A first deploy under way wins.
    pub fn of_container(desired: Desired, state: &str, check: Check) -> AppHealth {
        if desired == Desired::Deploying {
            return AppHealth::Deploying;
        }
        match state {
            "running" => match check {
                Check::Passing => AppHealth::Healthy,
                Check::Failing => AppHealth::Unhealthy,
                Check::Pending => AppHealth::Starting,
                Check::None => AppHealth::Running,
            },
            "restarting" => AppHealth::Restarting,
            "exited" if desired == Desired::Stopped => AppHealth::Stopped,
            "exited" | "dead" => AppHealth::Exited,
            "created" => AppHealth::Created,
            "paused" => AppHealth::Paused,
            other => AppHealth::Other(other.to_string()),
        }
    }

    /// Swarm mode: `running` of `wished` tasks.
    pub fn of_replicas(desired: Desired, running: u64, wished: u64) -> AppHealth {
        if desired == Desired::Deploying {
            return AppHealth::Deploying;
        }
        AppHealth::Replicas {
            running,
            wished,
            wanted: desired != Desired::Stopped,
        }
    }

    /// Whether something of the app runs (a container, or at least one task).
    pub fn is_running(&self) -> bool {
        match self {
            AppHealth::Healthy
            | AppHealth::Unhealthy
            | AppHealth::Starting
            | AppHealth::Running => true,
            AppHealth::Replicas { running, .. } => *running > 0,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_container_is_as_healthy_as_its_checks_say() {
        let of = |c| AppHealth::of_container(Desired::Running, "running", c);
        assert_eq!(of(Check::Passing), AppHealth::Healthy);
        assert_eq!(of(Check::Failing), AppHealth::Unhealthy);
        assert_eq!(of(Check::Pending), AppHealth::Starting);
        assert_eq!(of(Check::None), AppHealth::Running);
        assert!(of(Check::Failing).is_running());
        assert_eq!(Check::of_healthcheck(Some("starting")), Check::Pending);
        assert_eq!(Check::of_healthcheck(Some("unhealthy")), Check::Failing);
        assert_eq!(Check::of_healthcheck(None), Check::None);
    }

    #[test]
    fn an_exited_container_is_stopped_only_when_the_admin_stopped_it() {
        assert_eq!(
            AppHealth::of_container(Desired::Stopped, "exited", Check::None),
            AppHealth::Stopped
        );
        assert_eq!(
            AppHealth::of_container(Desired::Running, "exited", Check::None),
            AppHealth::Exited
        );
        assert_eq!(
            AppHealth::of_container(Desired::Running, "dead", Check::None),
            AppHealth::Exited
        );
        assert_eq!(
            AppHealth::of_container(Desired::Running, "restarting", Check::None),
            AppHealth::Restarting
        );
        assert_eq!(
            AppHealth::of_container(Desired::Running, "removing", Check::None),
            AppHealth::Other("removing".into())
        );
        assert!(!AppHealth::Restarting.is_running());
        assert!(!AppHealth::Stopped.is_running());
    }

    #[test]
    fn a_first_deploy_under_way_wins_over_what_the_engine_says() {
        assert_eq!(
            AppHealth::of_container(Desired::Deploying, "running", Check::Passing),
            AppHealth::Deploying
        );
        assert_eq!(
            AppHealth::of_replicas(Desired::Deploying, 1, 1),
            AppHealth::Deploying
        );
    }

    #[test]
    fn replicas_count_tasks_and_remember_a_stop() {
        let h = AppHealth::of_replicas(Desired::Running, 2, 3);
        assert_eq!(
            h,
            AppHealth::Replicas {
                running: 2,
                wished: 3,
                wanted: true
            }
        );
        assert!(h.is_running());
        assert!(!AppHealth::of_replicas(Desired::Running, 0, 3).is_running());
        assert_eq!(
            AppHealth::of_replicas(Desired::Stopped, 0, 0),
            AppHealth::Replicas {
                running: 0,
                wished: 0,
                wanted: false
            }
        );
    }
}
