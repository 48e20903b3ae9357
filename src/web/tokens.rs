//! The Tokens page: create API tokens (the secret is shown once, in the answer to the POST,
//! never stored or flashed), list them with their last use, revoke them.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use time::OffsetDateTime;
use time::macros::format_description;

use crate::app::AppState;
use crate::clock::now_unix;
use crate::domain::token::{Level, Scope, parse_lifetime};
use crate::service::tokens::{TokenError, Tokens};
use crate::store::TokenRow;
use crate::web::client::ClientInfo;
use crate::web::errors::AppError;
use crate::web::form::Form;
use crate::web::pages::flash;
use crate::web::session::Admin;
use crate::web::views::{self, Layout, Page};

pub struct TokenView {
    pub id: i64,
    pub name: String,
    pub scope: String,
    pub created: String,
    pub expires: String,
    pub last_used: String,
    pub state: String,
    pub active: bool,
}

#[derive(Template)]
#[template(path = "tokens.html")]
pub struct TokensPage {
    pub layout: Layout,
    pub tokens: Vec<TokenView>,
    pub error: Option<String>,
    pub new_secret: Option<String>,
    pub new_name: String,
    pub server: String,
}

fn when(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(format_description!("[year]-[month]-[day] [hour]:[minute]"))
                .ok()
        })
        .unwrap_or_default()
}

fn view(t: &TokenRow, now: i64) -> TokenView {
    let scope = Scope::from_columns(&t.scope, &t.apps)
        .map(|s| s.to_string())
        .unwrap_or_else(|_| t.scope.clone());
    let expired = t.expires_at.is_some_and(|e| e <= now);
    TokenView {
        id: t.id,
        name: t.name.clone(),
        scope,
        created: when(t.created_at),
        expires: t.expires_at.map_or_else(|| "never".into(), when),
        last_used: match (&t.last_used_at, &t.last_used_ip) {
            (Some(at), Some(ip)) => format!("{} from {ip}", when(*at)),
            (Some(at), None) => when(*at),
            _ => "never".into(),
        },
        state: if t.revoked_at.is_some() {
            "revoked".into()
        } else if expired {
            "expired".into()
        } else {
            "active".into()
        },
        active: t.revoked_at.is_none() && !expired,
    }
}

async fn render(
    state: &AppState,
    page: Page,
    status: StatusCode,
    error: Option<String>,
    new: Option<(String, String)>,
    server: String,
) -> Result<Response, AppError> {
    let now = now_unix();
    let tokens = state
        .store
        .tokens()
        .await?
        .iter()
        .map(|t| view(t, now))
        .collect();
    let (new_name, new_secret) = match new {
        Some((n, s)) => (n, Some(s)),
        None => (String::new(), None),
    };
    views::render_with_status(
        status,
        &TokensPage {
            layout: page.titled("API tokens"),
            tokens,
            error,
            new_secret,
            new_name,
            server,
        },
    )
}

/// This server's address as the browser reached it, for the `milkcrate login` hint.
fn server_of(client: &ClientInfo, headers: &axum::http::HeaderMap) -> String {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .unwrap_or("localhost");
    format!("{}://{host}", if client.https { "https" } else { "http" })
}

pub async fn page(
    State(state): State<AppState>,
    _admin: Admin,
    client: ClientInfo,
    headers: axum::http::HeaderMap,
    page: Page,
) -> Result<Response, AppError> {
    let server = server_of(&client, &headers);
    render(&state, page, StatusCode::OK, None, None, server).await
}

#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    apps: String,
    #[serde(default)]
    expires: String,
}

pub async fn create(
    State(state): State<AppState>,
    State(tokens): State<Tokens>,
    _admin: Admin,
    client: ClientInfo,
    headers: axum::http::HeaderMap,
    page: Page,
    Form(form): Form<CreateForm>,
) -> Result<Response, AppError> {
    let server = server_of(&client, &headers);
    let parsed = Level::parse(&form.scope).and_then(|level| {
        let scope = Scope::new(level, std::slice::from_ref(&form.apps))?;
        Ok((scope, parse_lifetime(&form.expires)?))
    });
    let (scope, lifetime) = match parsed {
        Ok(v) => v,
        Err(e) => {
            return render(&state, page, StatusCode::BAD_REQUEST, Some(e), None, server).await;
        }
    };
    match tokens
        .create(&form.name, scope, lifetime, None, &client.actor(true))
        .await
    {
        Ok(minted) => {
            let name = form.name.trim().to_string();
            render(
                &state,
                page,
                StatusCode::OK,
                None,
                Some((name, minted.secret)),
                server,
            )
            .await
        }
        Err(TokenError::Invalid(e)) => {
            render(&state, page, StatusCode::BAD_REQUEST, Some(e), None, server).await
        }
        Err(TokenError::Store(e)) => Err(e.into()),
    }
}

pub async fn revoke(
    State(state): State<AppState>,
    State(tokens): State<Tokens>,
    Admin(session): Admin,
    client: ClientInfo,
    Path(id): Path<i64>,
) -> Result<Response, AppError> {
    let (tone, msg) = match tokens.revoke(id, &client.actor(true)).await {
        Ok(row) => ("success", format!("Token {} revoked.", row.name)),
        Err(TokenError::Invalid(e)) => ("error", e),
        Err(TokenError::Store(e)) => return Err(e.into()),
    };
    flash(&state, &session.id_hash, tone, msg).await?;
    Ok(Redirect::to("/admin/tokens").into_response())
}
