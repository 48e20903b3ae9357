//! Images from registries in a deploy: stored registry credentials (the password sealed like
//! env vars, bound to its host, never shown again), each app's pull policy, pulling an
//! `image:` with its progress in the deploy log, and which user a container runs as (the
//! image's own, when the admin asked and it is not root) with the reason said in the log.

use std::collections::HashMap;

use super::deploy::Deployer;
use crate::audit::{Actor, Event};
use crate::clock::now_unix;
use crate::docker::{Engine, EngineError, RegistryAuth};
use crate::domain::hardening::{RUN_AS, RunAs};
use crate::domain::image::{ImageRef, PullPolicy, registry_host, resolve_image_user};
use crate::secrets::{decrypt, encrypt};
use crate::store::{ImageOptionsRow, RegistryRow};

use super::deploy::{DeployError, log};

fn aad(host: &str) -> String {
    format!("registry:{host}:password")
}

/// A registry's stored credentials as the Registries page lists them (no password).
#[derive(Debug, Clone)]
pub struct RegistryView {
    pub host: String,
    pub username: String,
    pub updated_at: i64,
}

/// Why registry credentials cannot be listed, saved, removed or used.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// The admin's input, or a host with no credentials: said as it is.
    #[error("{0}")]
    Refused(String),
    #[error(
        "the stored password for {0} cannot be decrypted (was SECRET_KEY changed?); save it again on the Registries page"
    )]
    Undecryptable(String),
}

pub async fn list(state: &Deployer) -> Result<Vec<RegistryView>, RegistryError> {
    Ok(state
        .store
        .registries()
        .await?
        .into_iter()
        .map(|r| RegistryView {
            host: r.host,
            username: r.username,
            updated_at: r.updated_at,
        })
        .collect())
}

/// Stores (or replaces) the credentials of a registry host; audited without the password.
pub async fn save(
    state: &Deployer,
    actor: &Actor,
    host: &str,
    username: &str,
    password: &str,
) -> Result<String, RegistryError> {
    let outcome = async {
        let host = registry_host(host).map_err(RegistryError::Refused)?;
        let username = username.trim();
        if username.is_empty()
            || username.len() > 256
            || username.chars().any(|c| c.is_control() || c == ':')
        {
            return Err(RegistryError::Refused(
                "Give the registry user name (no colon, at most 256 characters).".into(),
            ));
        }
        if password.is_empty() || password.len() > 4096 || password.chars().any(char::is_control) {
            return Err(RegistryError::Refused(
                "Give the password or access token (at most 4096 characters).".into(),
            ));
        }
        let (nonce, ciphertext) =
            encrypt(&state.env_key, aad(&host).as_bytes(), password.as_bytes());
        let replaced = state
            .store
            .save_registry(RegistryRow {
                host: host.clone(),
                username: username.to_string(),
                nonce,
                ciphertext,
                updated_at: now_unix(),
            })
            .await?;
        Ok((host, username.to_string(), replaced))
    }
    .await;
    match outcome {
        Ok((host, username, replaced)) => {
            state
                .audit
                .record_logged(
                    actor,
                    Event::new("registry_credentials", "registry", host.clone())
                        .details(serde_json::json!({"username": username, "replaced": replaced})),
                )
                .await;
            Ok(if replaced {
                format!("The credentials for {host} were replaced.")
            } else {
                format!("The credentials for {host} were saved.")
            })
        }
        Err(e) => {
            let target = registry_host(host).unwrap_or_else(|_| "(invalid host)".into());
            state
                .audit
                .record_logged(
                    actor,
                    Event::new("registry_credentials", "registry", target).failed(e.to_string()),
                )
                .await;
            Err(e)
        }
    }
}

pub async fn delete(state: &Deployer, actor: &Actor, host: &str) -> Result<String, RegistryError> {
    let host = registry_host(host).map_err(RegistryError::Refused)?;
    let removed = state.store.delete_registry(host.clone()).await?;
    if !removed {
        return Err(RegistryError::Refused(format!(
            "No credentials are stored for {host}."
        )));
    }
    state
        .audit
        .record_logged(
            actor,
            Event::new("registry_credentials_delete", "registry", host.clone()),
        )
        .await;
    Ok(format!("The credentials for {host} were removed."))
}

/// Every stored credential, decrypted for one pull or build.
pub async fn auths(state: &Deployer) -> Result<Vec<RegistryAuth>, RegistryError> {
    let rows = state.store.registries().await?;
    rows.into_iter()
        .map(|r| {
            let password = decrypt(
                &state.env_key,
                aad(&r.host).as_bytes(),
                &r.nonce,
                &r.ciphertext,
            )
            .and_then(|p| String::from_utf8(p).ok())
            .ok_or_else(|| RegistryError::Undecryptable(r.host.clone()))?;
            Ok(RegistryAuth {
                host: r.host,
                username: r.username,
                password,
            })
        })
        .collect()
}

/// The app's image options (defaults when none were stored).
pub async fn options(state: &Deployer, app_id: i64) -> ImageOptionsRow {
    state
        .store
        .image_options(app_id)
        .await
        .unwrap_or_else(|_| ImageOptionsRow {
            pull_policy: "missing".into(),
            ..Default::default()
        })
}

pub fn policy_of(options: &ImageOptionsRow) -> PullPolicy {
    PullPolicy::parse(&options.pull_policy).unwrap_or_default()
}

/// Makes sure the engine has `image` (an `image:` of service `service`) as `policy` says:
/// pulled when missing (or always), refused when missing and the policy is `never`.
pub(super) async fn ensure_image(
    state: &Deployer,
    engine: &Engine,
    deploy_id: i64,
    service: &str,
    image: &str,
    policy: PullPolicy,
) -> Result<(), DeployError> {
    let r = ImageRef::parse(image)
        .map_err(|e| DeployError::Other(format!("service {service}: {e}")))?;
    let have = engine.image_exists(image).await;
    match (policy, have) {
        (PullPolicy::Never, false) => {
            return Err(DeployError::Other(format!(
                "service {service}: the image {image} is not in the engine and the app's pull policy is never"
            )));
        }
        (PullPolicy::Never, true) | (PullPolicy::Missing, true) => return Ok(()),
        _ => {}
    }
    super::deploy::set_step(
        state,
        deploy_id,
        crate::domain::state::DeployStatus::Pulling,
    )
    .await;
    let auths = auths(state).await?;
    let auth = auths.iter().find(|a| a.host == r.registry_host());
    log(
        state,
        deploy_id,
        format!(
            "[{service}] Pulling {image} from {}{}\n",
            r.registry_host(),
            if auth.is_some() {
                " with the stored credentials"
            } else {
                ""
            }
        ),
    )
    .await;
    let started = std::time::Instant::now();
    let mut lines = Vec::new();
    // The engine's events are collected, then logged in order (log is async).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let pull = engine.pull(&r, auth, move |l| {
        let _ = tx.send(l);
    });
    tokio::pin!(pull);
    let result = loop {
        tokio::select! {
            r = &mut pull => break r,
            Some(l) = rx.recv() => log(state, deploy_id, format!("[{service}] {l}\n")).await,
        }
    };
    while let Ok(l) = rx.try_recv() {
        lines.push(l);
    }
    for l in lines {
        log(state, deploy_id, format!("[{service}] {l}\n")).await;
    }
    match result {
        Ok(()) => {
            log(
                state,
                deploy_id,
                format!(
                    "[{service}] Pulled {image} in {:.1} s\n",
                    started.elapsed().as_secs_f64()
                ),
            )
            .await;
            Ok(())
        }
        Err(EngineError::Refused(m)) => Err(DeployError::Other(format!("service {service}: {m}"))),
        Err(e) => Err(e.into()),
    }
}

/// The user a container of `image` runs as, and the sentence for the deploy log: the image's
/// own user when the admin opted in and it resolves to a non-root one, else 65534 (nobody).
/// `explicit` is a compose `user:`, which always wins.
pub(super) async fn run_as(
    state: &Deployer,
    engine: &Engine,
    image: &str,
    image_user: Option<&str>,
    opted_in: bool,
    explicit: Option<RunAs>,
) -> (RunAs, String) {
    if let Some(u) = explicit {
        return (u, format!("runs as {u}, the user the compose file gives"));
    }
    let Some(user) = image_user else {
        return (
            RUN_AS,
            format!(
                "runs as {RUN_AS} (nobody): the image sets no USER, and milkcrate never runs apps as root"
            ),
        );
    };
    if !opted_in {
        return (
            RUN_AS,
            format!(
                "runs as {RUN_AS} (nobody), milkcrate's default: the image sets USER {user}, which is used only when \"run as the image's own user\" is on for the app"
            ),
        );
    }
    let labels: HashMap<String, String> = state
        .settings
        .label_map(crate::domain::labels::MANAGED, "true")
        .into_iter()
        .collect();
    let files = engine
        .read_image_files(image, &["/etc/passwd", "/etc/group"], labels)
        .await;
    let resolved = match files {
        Ok(f) => {
            let text = |i: usize| {
                f.get(i)
                    .cloned()
                    .flatten()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
            };
            resolve_image_user(user, text(0).as_deref(), text(1).as_deref())
        }
        Err(e) => Err(format!("the image's /etc/passwd could not be read: {e}")),
    };
    match resolved {
        Ok(u) => (
            u,
            format!(
                "runs as {u}: the image's own user {user}, as asked for this app (it is not root)"
            ),
        ),
        Err(why) => (
            RUN_AS,
            format!("runs as {RUN_AS} (nobody) instead of the image's user: {why}"),
        ),
    }
}
