//! API tokens: minting (the secret is shown once and only its SHA-256 stored), checking a
//! presented secret, revoking. A token never mints a token wider than itself. [`Tokens`] holds
//! the only handles these need (the store and the audit log); `app.rs` builds it.

use crate::audit::{Actor, AuditLog, Event};
use crate::clock::now_unix;
use crate::domain::token::{Scope, check_name};
use crate::secrets::{random_token, sha256_hex};
use crate::store::{NewToken, Store, StoreError, TokenRow};

/// Every secret starts with this, so a leaked one is recognisable (secret scanners, logs).
pub const PREFIX: &str = "mct_";

/// A token that passed the check, as the API's handlers see it.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub id: i64,
    pub name: String,
    pub scope: Scope,
    /// When it stops working (its own expiry; a token minted by a token never outlives it).
    pub expires_at: Option<i64>,
    /// The first token of the line that minted it (itself when the admin or the CLI made it):
    /// per-token budgets are spent by the whole line, so minting tokens does not buy more.
    pub root: i64,
}

impl Authenticated {
    /// How the audit log names it.
    pub fn label(&self) -> String {
        format!("{}#{}", self.name, self.id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// A freshly minted token: the secret (shown once) and its row id.
pub struct Minted {
    pub id: i64,
    pub secret: String,
}

fn new_secret() -> (String, String) {
    let secret = format!("{PREFIX}{}", random_token(32));
    let hash = sha256_hex(secret.as_bytes());
    (secret, hash)
}

fn row_for(
    name: &str,
    scope: &Scope,
    lifetime: Option<i64>,
    created_by: String,
    hash: String,
) -> Result<NewToken, TokenError> {
    let now = now_unix();
    Ok(NewToken {
        name: check_name(name).map_err(TokenError::Invalid)?,
        secret_hash: hash,
        scope: scope.level.as_str().into(),
        apps: scope.apps_column(),
        created_by,
        created_at: now,
        expires_at: lifetime.map(|l| now + l),
    })
}

/// The id of the token that minted one (`created_by` is `token:<name>#<id>`).
fn parent_id(created_by: &str) -> Option<i64> {
    created_by
        .strip_prefix("token:")?
        .rsplit_once('#')?
        .1
        .parse()
        .ok()
}

/// The token use cases, with the handles they use.
#[derive(Clone)]
pub struct Tokens {
    store: Store,
    audit: AuditLog,
}

impl Tokens {
    pub fn new(store: Store, audit: AuditLog) -> Self {
        Tokens { store, audit }
    }

    /// Mints a token on behalf of `by` (`None`: the admin signed in to the UI, who may mint any).
    pub async fn create(
        &self,
        name: &str,
        scope: Scope,
        lifetime: Option<i64>,
        by: Option<&Authenticated>,
        actor: &Actor,
    ) -> Result<Minted, TokenError> {
        if let Some(parent) = by
            && !parent.scope.covers(&scope)
        {
            let msg = format!(
                "A {} token cannot create a {} token: a token never creates one wider than itself.",
                parent.scope, scope
            );
            self.audit
                .record_logged(
                    actor,
                    Event::new("token_create", "token", name).failed(&msg),
                )
                .await;
            return Err(TokenError::Invalid(msg));
        }
        let created_by = by.map_or_else(|| "admin".to_string(), |p| format!("token:{}", p.label()));
        let (secret, hash) = new_secret();
        let mut row = row_for(name, &scope, lifetime, created_by, hash)?;
        // A token never outlives the one that minted it.
        if let Some(limit) = by.and_then(|p| p.expires_at) {
            row.expires_at = Some(row.expires_at.map_or(limit, |e| e.min(limit)));
        }
        let id = self.store.insert_token(row.clone()).await?;
        self
        .audit
        .record_logged(
            actor,
            Event::new("token_create", "token", format!("{}#{id}", row.name)).details(
                serde_json::json!({"scope": scope.level.as_str(), "apps": scope.apps, "expires_at": row.expires_at}),
            ),
        )
        .await;
        Ok(Minted { id, secret })
    }
}

/// `milkcrate token create`, at the server's terminal (no server needed).
pub fn create_blocking(
    store: &Store,
    name: &str,
    scope: &Scope,
    lifetime: Option<i64>,
) -> Result<Minted, TokenError> {
    let (secret, hash) = new_secret();
    let row = row_for(name, scope, lifetime, "cli".into(), hash)?;
    let id = store.insert_token_blocking(row)?;
    Ok(Minted { id, secret })
}

/// Why a presented token was not accepted (all answered as 401; the reason is for the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    Revoked,
    Expired,
}

impl Refusal {
    pub fn message(&self) -> &'static str {
        match self {
            Refusal::Unknown => "The token is not valid.",
            Refusal::Revoked => "The token has been revoked.",
            Refusal::Expired => "The token has expired.",
        }
    }
}

impl Tokens {
    /// Checks a presented secret; on success records its use (time, IP).
    pub async fn authenticate(
        &self,
        secret: &str,
        ip: &str,
    ) -> Result<Result<Authenticated, Refusal>, StoreError> {
        if !secret.starts_with(PREFIX) || secret.len() > 200 {
            return Ok(Err(Refusal::Unknown));
        }
        // Looked up by hash: the comparison is on a digest of the secret, so its timing says
        // nothing about the secret.
        let Some(row) = self
            .store
            .token_by_hash(sha256_hex(secret.as_bytes()))
            .await?
        else {
            return Ok(Err(Refusal::Unknown));
        };
        let now = now_unix();
        if row.revoked_at.is_some() {
            return Ok(Err(Refusal::Revoked));
        }
        if row.expires_at.is_some_and(|e| e <= now) {
            return Ok(Err(Refusal::Expired));
        }
        let Ok(scope) = Scope::from_columns(&row.scope, &row.apps) else {
            return Ok(Err(Refusal::Unknown));
        };
        // The line that minted it must still stand: a revoked or expired parent takes its
        // children with it.
        let mut root = row.id;
        let mut parent = parent_id(&row.created_by);
        for _ in 0..32 {
            let Some(id) = parent else { break };
            let Some(p) = self.store.token(id).await? else {
                break;
            };
            if p.revoked_at.is_some() {
                return Ok(Err(Refusal::Revoked));
            }
            if p.expires_at.is_some_and(|e| e <= now) {
                return Ok(Err(Refusal::Expired));
            }
            root = p.id;
            parent = parent_id(&p.created_by);
        }
        self.store.touch_token(row.id, now, ip.to_string()).await?;
        Ok(Ok(Authenticated {
            id: row.id,
            name: row.name,
            scope,
            expires_at: row.expires_at,
            root,
        }))
    }

    /// Revokes a token, and every token it minted (and they minted); takes effect at the next
    /// request that presents one.
    pub async fn revoke(&self, id: i64, actor: &Actor) -> Result<TokenRow, TokenError> {
        let Some(row) = self.store.token(id).await? else {
            return Err(TokenError::Invalid("There is no such token.".into()));
        };
        if !self.store.revoke_token(id, now_unix()).await? {
            return Err(TokenError::Invalid(format!(
                "The token {} was already revoked.",
                row.name
            )));
        }
        let all = self.store.tokens().await?;
        let mut line = vec![id];
        while let Some(parent) = line.pop() {
            for child in all
                .iter()
                .filter(|t| parent_id(&t.created_by) == Some(parent) && t.revoked_at.is_none())
            {
                if self.store.revoke_token(child.id, now_unix()).await? {
                    self.audit
                        .record_logged(
                            actor,
                            Event::new(
                                "token_revoke",
                                "token",
                                format!("{}#{}", child.name, child.id),
                            )
                            .details(serde_json::json!({"minted_by": parent})),
                        )
                        .await;
                    line.push(child.id);
                }
            }
        }
        self.audit
            .record_logged(
                actor,
                Event::new("token_revoke", "token", format!("{}#{id}", row.name)),
            )
            .await;
        Ok(row)
    }
}
