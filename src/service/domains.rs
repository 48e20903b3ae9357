//! Host names of apps: adding and removing an app's custom domains (checked, stored, audited,
//! routed at once), and the list of every host name milkcrate answers at, for certificates.
//! No HTTP here; the rules themselves are `domain::host`. [`Domains`] holds only the handles
//! adding and removing use (settings, store, audit log, the route table, the status refresh,
//! the ACME task); `app.rs` builds it.

use std::sync::Arc;

use serde_json::json;

use crate::audit::{Actor, AuditLog, Event};
use crate::config::Settings;
use crate::domain::host::{HostName, HostRules, parse_domain};
use crate::store::{AppRow, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The name itself, or the admin's / apps domain's rules, refuse it.
    #[error("{0}")]
    Refused(String),
    #[error("{host} is already a domain of {owner}.")]
    Taken { host: String, owner: String },
    #[error("{0} is not a domain of this app.")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The rules a new custom domain is checked against, from the settings.
pub fn rules(settings: &Settings) -> HostRules<'_> {
    HostRules {
        admin_host: settings.admin_host.as_deref(),
        apps_domain: settings.apps_domain.as_deref(),
        admin_names: &settings.allowed_hosts,
    }
}

/// Parses and checks a custom domain (everything but "no other app has it", which the store
/// decides in the same transaction that stores it).
pub fn check(settings: &Settings, input: &str) -> Result<HostName, DomainError> {
    let host = parse_domain(input).map_err(DomainError::Refused)?;
    rules(settings).check(&host).map_err(DomainError::Refused)?;
    Ok(host)
}

/// Adding and removing custom domains, with the handles that takes.
#[derive(Clone)]
pub struct Domains {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub audit: AuditLog,
    pub routes: Arc<crate::router::Routes>,
    pub status: Arc<crate::service::status::StatusMonitor>,
    pub acme: Arc<crate::service::acme::Acme>,
}

impl Domains {
    /// Gives `app` the domain `input`, audited; the router serves it at once.
    pub async fn add(
        &self,
        app: &AppRow,
        input: &str,
        actor: &Actor,
    ) -> Result<HostName, DomainError> {
        let outcome = self.add_checked(app, input).await;
        let event = Event::new("domain_add", "application", app.name.clone());
        let event = match &outcome {
            Ok(host) => event.details(json!({"app_id": app.id, "domain": host.as_str()})),
            Err(e) => event
                .details(json!({"app_id": app.id, "domain": input.trim()}))
                .failed(e.to_string()),
        };
        self.audit.record_logged(actor, event).await;
        if outcome.is_ok() {
            // A certificate for the new name is ordered now, not at the next tick.
            self.acme.wake();
        }
        outcome
    }

    async fn add_checked(&self, app: &AppRow, input: &str) -> Result<HostName, DomainError> {
        let host = check(&self.settings, input)?;
        match self
            .store
            .add_domain(app.id, host.as_str().to_string(), crate::clock::now_unix())
            .await?
        {
            Ok(()) => {}
            Err(owner) => {
                return Err(DomainError::Taken {
                    host: host.into_string(),
                    owner,
                });
            }
        }
        self.reroute(app.id).await;
        Ok(host)
    }

    /// Takes the domain `input` from `app`, audited. An app left with no path route and no host
    /// name could not be reached, so its last domain stays in that case.
    pub async fn remove(
        &self,
        app: &AppRow,
        input: &str,
        actor: &Actor,
    ) -> Result<String, DomainError> {
        let outcome = self.remove_checked(app, input).await;
        let event = Event::new("domain_remove", "application", app.name.clone());
        let event = match &outcome {
            Ok(host) => event.details(json!({"app_id": app.id, "domain": host})),
            Err(e) => event
                .details(json!({"app_id": app.id, "domain": input.trim()}))
                .failed(e.to_string()),
        };
        self.audit.record_logged(actor, event).await;
        outcome
    }

    async fn remove_checked(&self, app: &AppRow, input: &str) -> Result<String, DomainError> {
        // Stored names are normalised; what the form sends back is one of them, but a name typed
        // in another case or as Unicode finds its row too.
        let host = parse_domain(input)
            .map(HostName::into_string)
            .unwrap_or_else(|_| input.trim().to_ascii_lowercase());
        if !app.domains.contains(&host) {
            return Err(DomainError::NotFound(host));
        }
        if app.public_route.is_empty()
            && self.settings.apps_domain.is_none()
            && app.domains.len() == 1
        {
            return Err(DomainError::Refused(format!(
                "{host} is the only way to reach {}: it has no path route. Add another domain first.",
                app.name
            )));
        }
        if !self.store.remove_domain(app.id, host.clone()).await? {
            return Err(DomainError::NotFound(host));
        }
        self.reroute(app.id).await;
        Ok(host)
    }

    /// Publishes the app's host names to the router now (under its writer lock), rather than at
    /// the next status refresh.
    async fn reroute(&self, app_id: i64) {
        let _writer = self.routes.write_lock().await;
        match self.store.app(app_id).await {
            Ok(Some(row)) => self.routes.rehost(&row),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not read the app to route its host names"),
        }
        self.status.poke();
    }
}

/// Every host name milkcrate answers at and may need a certificate for: the admin host,
/// `<app>.<apps domain>` of every app, every custom domain. Sorted, without repeats. A store
/// that cannot be read gives the names known without it (and a warning in the log).
pub async fn known_hosts(settings: &Settings, store: &Store) -> Vec<String> {
    let mut hosts: Vec<String> = settings.admin_host.iter().cloned().collect();
    match store.apps().await {
        Ok(apps) => {
            for app in &apps {
                hosts.extend(crate::router::app_hosts(app, settings));
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read the apps' host names"),
    }
    hosts.sort();
    hosts.dedup();
    hosts
}

/// Where an app is served, for logs and messages: its path route, then its host names.
pub fn served_at(app: &AppRow, settings: &crate::config::Settings) -> String {
    let mut places: Vec<String> = Vec::new();
    if !app.public_route.is_empty() {
        places.push(app.public_route.clone());
    }
    places.extend(crate::router::app_hosts(app, settings));
    places.join(", ")
}
