//! The states an app and a deploy go through, and the kinds of app: one enum each instead of
//! strings compared all over. They are stored as the original's strings (`as_str`), parsed at
//! the store's edge (`FromStr`, with an error naming the value); `Display` and comparison with
//! a `&str` keep the strings readable where they are shown.

use std::fmt;
use std::str::FromStr;

/// A stored value that is none of its enum's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the database holds {value:?} as {what}, which milkcrate does not know")]
pub struct UnknownState {
    pub what: &'static str,
    pub value: String,
}

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal, { $($(#[$vdoc:meta])* $variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// The string stored in the database (the original's spelling).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $s),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl $name {
            fn parse_exact(s: &str) -> Option<Self> {
                match s {
                    $($s => Some($name::$variant),)+
                    _ => None,
                }
            }

            fn unknown(s: &str) -> UnknownState {
                UnknownState { what: $what, value: s.to_string() }
            }
        }
    };
}

string_enum!(
    /// What the admin wants of an app (the engine says what is).
    AppStatus, "an app's status", {
        /// Its first deploy runs; nothing serves yet.
        Deploying = "deploying",
        Running = "running",
        Stopped = "stopped",
    }
);

impl FromStr for AppStatus {
    type Err = UnknownState;

    /// Besides milkcrate's three, the original wrote what it saw live into this column
    /// (`ready`, `healthy`, `starting`, `error`…): an adopted row with one of those is an app
    /// that was meant to run.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(v) = Self::parse_exact(s) {
            return Ok(v);
        }
        match s {
            "ready" | "healthy" | "unhealthy" | "starting" | "not_ready" | "restarting"
            | "error" | "deleting" => Ok(AppStatus::Running),
            "exited" => Ok(AppStatus::Stopped),
            _ => Err(Self::unknown(s)),
        }
    }
}

string_enum!(
    /// Where a deploy is. The first three are under way; a start-up finds any still there
    /// interrupted.
    DeployStatus, "a deploy's status", {
        /// Recorded, waiting for the app's lock or a build slot.
        Queued = "queued",
        /// Pulling an image from a registry.
        Pulling = "pulling",
        Building = "building",
        Starting = "starting",
        Succeeded = "succeeded",
        Failed = "failed",
    }
);

impl DeployStatus {
    /// Whether the deploy has ended.
    pub fn finished(self) -> bool {
        matches!(self, DeployStatus::Succeeded | DeployStatus::Failed)
    }
}

impl FromStr for DeployStatus {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_exact(s).ok_or_else(|| Self::unknown(s))
    }
}

string_enum!(
    /// What an app is built from.
    DeploymentType, "an app's deployment type", {
        Dockerfile = "dockerfile",
        /// A compose stack (the original's spelling).
        Compose = "docker-compose",
    }
);

impl FromStr for DeploymentType {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_exact(s).ok_or_else(|| Self::unknown(s))
    }
}

string_enum!(
    /// The engine's restart policy of a container, as it reports it.
    RestartPolicy, "a restart policy", {
        No = "no",
        Always = "always",
        UnlessStopped = "unless-stopped",
        OnFailure = "on-failure",
    }
);

impl RestartPolicy {
    /// Whether the engine would have kept a container with this policy running (so one found
    /// Exited was stopped by a crash, not by its own choice).
    pub fn keeps_running(self) -> bool {
        matches!(self, RestartPolicy::Always | RestartPolicy::UnlessStopped)
    }
}

impl FromStr for RestartPolicy {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            // The engine reports a container created without one as "".
            "" => Ok(RestartPolicy::No),
            _ => Self::parse_exact(s).ok_or_else(|| Self::unknown(s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_its_stored_string() {
        for s in [AppStatus::Deploying, AppStatus::Running, AppStatus::Stopped] {
            assert_eq!(s.as_str().parse::<AppStatus>(), Ok(s));
        }
        for s in [
            DeployStatus::Queued,
            DeployStatus::Pulling,
            DeployStatus::Building,
            DeployStatus::Starting,
            DeployStatus::Succeeded,
            DeployStatus::Failed,
        ] {
            assert_eq!(s.to_string().parse::<DeployStatus>(), Ok(s));
        }
        assert_eq!(
            "docker-compose".parse::<DeploymentType>(),
            Ok(DeploymentType::Compose)
        );
        assert_eq!(DeploymentType::Dockerfile, "dockerfile");
        assert!(
            "unless-stopped"
                .parse::<RestartPolicy>()
                .unwrap()
                .keeps_running()
        );
        assert!(
            !"on-failure"
                .parse::<RestartPolicy>()
                .unwrap()
                .keeps_running()
        );
    }

    #[test]
    fn the_originals_live_statuses_mean_running_and_unknown_values_are_named() {
        assert_eq!("healthy".parse::<AppStatus>(), Ok(AppStatus::Running));
        assert_eq!("exited".parse::<AppStatus>(), Ok(AppStatus::Stopped));
        let err = "bogus".parse::<DeployStatus>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "the database holds \"bogus\" as a deploy's status, which milkcrate does not know"
        );
        assert!("kubernetes".parse::<DeploymentType>().is_err());
    }
}
