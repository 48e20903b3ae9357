//! The narrow service handles a handler can extract instead of the whole `AppState` (axum's
//! `FromRef`): `State(tokens): State<Tokens>` gets exactly what the token use cases need. Each
//! is built by `AppState` (the composition root, `app.rs`); this file only lets axum find it.

use axum::extract::FromRef;

use crate::app::AppState;
use crate::service::acme::Certificates;
use crate::service::alerts::Alerting;
use crate::service::backup_runs::Backups;
use crate::service::deploy::Deployer;
use crate::service::domains::Domains;
use crate::service::lifecycle::Lifecycle;
use crate::service::tokens::Tokens;

impl FromRef<AppState> for Domains {
    fn from_ref(state: &AppState) -> Domains {
        state.domains()
    }
}

impl FromRef<AppState> for Tokens {
    fn from_ref(state: &AppState) -> Tokens {
        state.tokens()
    }
}

impl FromRef<AppState> for Deployer {
    fn from_ref(state: &AppState) -> Deployer {
        state.deployer()
    }
}

impl FromRef<AppState> for Lifecycle {
    fn from_ref(state: &AppState) -> Lifecycle {
        state.lifecycle()
    }
}

impl FromRef<AppState> for Certificates {
    fn from_ref(state: &AppState) -> Certificates {
        state.certificates()
    }
}

impl FromRef<AppState> for Backups {
    fn from_ref(state: &AppState) -> Backups {
        state.backups()
    }
}

impl FromRef<AppState> for Alerting {
    fn from_ref(state: &AppState) -> Alerting {
        state.alerting()
    }
}
