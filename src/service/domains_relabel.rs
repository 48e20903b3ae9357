//! Traefik mode reads an app's host names from its container's labels, which are fixed when
//! the container is created: a domain added or removed there reaches (or leaves) the traffic
//! only with a fresh container. This redeploys the app after such a change (the built-in
//! router needs nothing: it switches at once).

use crate::audit::Actor;
use crate::service::apps::{self, AppsError};
use crate::service::deploy::Deployer;
use crate::store::AppRow;

/// After a change of `app`'s host names: in Traefik mode, redeploys it so its labels carry
/// them; returns that deploy. Nothing to do with the built-in router, for an app with no
/// container yet (its first deploy labels it), or for a stopped app (a redeploy would start
/// it against the admin's wish; the change applies from its next deploy). A deploy already
/// running for the app refuses a second one; the change then applies from the next one.
pub async fn after_change(
    state: &Deployer,
    app: &AppRow,
    actor: &Actor,
) -> Result<Option<i64>, AppsError> {
    if state.settings.builtin_router
        || app.container_id.is_empty()
        || app.image_tag.is_empty()
        || app.status == "stopped"
    {
        return Ok(None);
    }
    match apps::redeploy(state, app, actor).await {
        Ok(id) => Ok(Some(id)),
        Err(AppsError::Refused(r)) => {
            tracing::warn!(app = %app.name, reason = %r.message, "host names change: no redeploy now");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The app page's message after a change of host names: `what` and a full stop with the
/// built-in router; in Traefik mode the redeploy [`after_change`] starts is said too (or that
/// the change applies from the app's next deploy, when none can start now).
pub async fn note(state: &Deployer, app: &AppRow, actor: &Actor, what: &str) -> String {
    if state.settings.builtin_router {
        return format!("{what}.");
    }
    let fresh = state.store.app(app.id).await.ok().flatten();
    match after_change(state, fresh.as_ref().unwrap_or(app), actor).await {
        Ok(Some(_)) => format!("{what}; {} is redeploying so Traefik applies it.", app.name),
        _ => format!(
            "{what}; Traefik applies it from the next deploy of {}.",
            app.name
        ),
    }
}
