//! How an app's health looks: the word, the tone (`ok`, `warn`, `bad`, `off`; shape and word
//! carry it too, not colour alone) and the engine's sentence the pages show. The health itself
//! is `domain::health::AppHealth`, computed in `service/status.rs`.

use crate::domain::health::AppHealth;
use crate::service::status::Health;

/// What the dashboard and the app page show for one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusView {
    /// Short word: Deploying, Running, Healthy, Unhealthy, Starting, Stopped, Exited,
    /// Restarting, Missing, Unknown, `2/3 running`…
    pub label: String,
    pub tone: &'static str,
    pub detail: String,
    pub running: bool,
}

impl From<Health> for StatusView {
    fn from(h: Health) -> StatusView {
        StatusView {
            label: label(&h.health),
            tone: tone(&h.health),
            running: h.running(),
            detail: h.detail,
        }
    }
}

/// The word for `health` (also the API's and the CLI's `status`).
pub fn label(health: &AppHealth) -> String {
    match health {
        AppHealth::Deploying => "Deploying".into(),
        AppHealth::Unknown => "Unknown".into(),
        AppHealth::Checking => "Checking".into(),
        AppHealth::Missing => "Missing".into(),
        AppHealth::Healthy => "Healthy".into(),
        AppHealth::Unhealthy => "Unhealthy".into(),
        AppHealth::Starting => "Starting".into(),
        AppHealth::Running => "Running".into(),
        AppHealth::Restarting => "Restarting".into(),
        AppHealth::Stopped => "Stopped".into(),
        AppHealth::Exited => "Exited".into(),
        AppHealth::Created => "Created".into(),
        AppHealth::Paused => "Paused".into(),
        AppHealth::Other(state) => state.clone(),
        AppHealth::Replicas { wished: 0, .. } => "Stopped".into(),
        AppHealth::Replicas {
            running, wished, ..
        } => format!("{running}/{wished} running"),
    }
}

/// The tone for `health`.
pub fn tone(health: &AppHealth) -> &'static str {
    match health {
        AppHealth::Healthy | AppHealth::Running => "ok",
        AppHealth::Deploying | AppHealth::Starting | AppHealth::Restarting | AppHealth::Paused => {
            "warn"
        }
        AppHealth::Missing | AppHealth::Unhealthy | AppHealth::Exited => "bad",
        AppHealth::Unknown
        | AppHealth::Checking
        | AppHealth::Stopped
        | AppHealth::Created
        | AppHealth::Other(_) => "off",
        AppHealth::Replicas {
            running,
            wished,
            wanted,
        } => {
            if !wanted || *wished == 0 {
                "off"
            } else if running >= wished {
                "ok"
            } else if *running > 0 {
                "warn"
            } else {
                "bad"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_health_has_its_word_and_tone() {
        let cases = [
            (AppHealth::Deploying, "Deploying", "warn"),
            (AppHealth::Unknown, "Unknown", "off"),
            (AppHealth::Checking, "Checking", "off"),
            (AppHealth::Missing, "Missing", "bad"),
            (AppHealth::Healthy, "Healthy", "ok"),
            (AppHealth::Unhealthy, "Unhealthy", "bad"),
            (AppHealth::Starting, "Starting", "warn"),
            (AppHealth::Running, "Running", "ok"),
            (AppHealth::Restarting, "Restarting", "warn"),
            (AppHealth::Stopped, "Stopped", "off"),
            (AppHealth::Exited, "Exited", "bad"),
            (AppHealth::Created, "Created", "off"),
            (AppHealth::Paused, "Paused", "warn"),
            (AppHealth::Other("removing".into()), "removing", "off"),
        ];
        for (h, word, t) in cases {
            assert_eq!((label(&h).as_str(), tone(&h)), (word, t), "{h:?}");
        }
    }

    #[test]
    fn replicas_read_as_counts_toned_by_how_many_run() {
        let r = |running, wished, wanted| AppHealth::Replicas {
            running,
            wished,
            wanted,
        };
        assert_eq!(
            (label(&r(3, 3, true)), tone(&r(3, 3, true))),
            ("3/3 running".into(), "ok")
        );
        assert_eq!(tone(&r(1, 3, true)), "warn");
        assert_eq!(tone(&r(0, 3, true)), "bad");
        assert_eq!(tone(&r(2, 3, false)), "off");
        assert_eq!(
            (label(&r(0, 0, true)), tone(&r(0, 0, true))),
            ("Stopped".into(), "off")
        );
    }
}
