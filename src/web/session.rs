//! Admin sessions: a random id in an HttpOnly, SameSite=Lax cookie (Secure over HTTPS), looked
//! up server-side by its hash. Idle and absolute timeouts end a session; a malformed, forged or
//! expired cookie is treated as no session and cleared. Visitors without a session get an
//! anonymous CSRF secret cookie instead, so the login form is protected too.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use crate::app::AppState;
use crate::clock::now_unix;
use crate::secrets::{random_token, sha256_hex};
use crate::store::SessionRow;
use crate::web::client::ClientInfo;
use crate::web::errors::AppError;

pub use crate::http_common::{ANON_CSRF_COOKIE, SESSION_COOKIE};

/// Sessions are touched at most this often, so reads do not each cost a write.
const TOUCH_EVERY_SECS: i64 = 60;

#[derive(Debug, Clone)]
pub struct Session {
    pub id_hash: String,
    pub csrf_secret: String,
}

/// The request's session, if it has a valid one.
#[derive(Debug, Clone)]
pub struct CurrentSession(pub Option<Arc<Session>>);

/// The anonymous CSRF secret (from the cookie, or minted for this response).
#[derive(Debug, Clone)]
pub struct AnonCsrf(pub String);

pub async fn load(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let https = req
        .extensions()
        .get::<ClientInfo>()
        .is_some_and(|c| c.https);
    let (sids, anon) = {
        let cookies = cookies(&req);
        // Every session cookie sent, not only the first: a page on another host under a shared
        // parent domain can plant some (`Domain=`, longer `Path`s) that browsers send first.
        // Malformed ones cost nothing; well-formed ones are looked up in one query, so a flood
        // of them (bounded by the header size) cannot push the real one out.
        let sids: Vec<String> = cookies
            .iter()
            .filter(|(k, _)| k == SESSION_COOKIE)
            .map(|(_, v)| v.clone())
            .take(256)
            .collect();
        (sids, cookie(&cookies, ANON_CSRF_COOKIE).map(str::to_owned))
    };
    let (session, clear_session_cookie) = match lookup(&state, &sids).await {
        Ok(Some(s)) => (Some(Arc::new(s)), false),
        Ok(None) => (None, !sids.is_empty()),
        Err(e) => return e.into_response(),
    };
    let (anon, mint_anon) = match anon.filter(|a| well_formed(a)) {
        Some(a) => (a, false),
        None => (random_token(32), true),
    };
    req.extensions_mut().insert(CurrentSession(session));
    req.extensions_mut().insert(AnonCsrf(anon.clone()));
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    if clear_session_cookie && !headers.contains_key(header::SET_COOKIE) {
        headers.append(header::SET_COOKIE, clear_cookie(SESSION_COOKIE, https));
    }
    if mint_anon {
        headers.append(
            header::SET_COOKIE,
            set_cookie(ANON_CSRF_COOKIE, &anon, https),
        );
    }
    resp
}

/// The first of `sids` (in the order sent) that names a live session; expired ones met on
/// the way are deleted.
async fn lookup(state: &AppState, sids: &[String]) -> Result<Option<Session>, AppError> {
    let mut hashes: Vec<String> = sids
        .iter()
        .filter(|s| well_formed(s))
        .map(|s| sha256_hex(s.as_bytes()))
        .collect();
    hashes.dedup();
    let rows = state.store.sessions_among(hashes.clone()).await?;
    let now = now_unix();
    let idle = state.settings.session_idle.as_secs() as i64;
    let lifetime = state.settings.session_lifetime.as_secs() as i64;
    let mut live = None;
    for hash in &hashes {
        let Some(row) = rows.iter().find(|r| &r.id_hash == hash) else {
            continue;
        };
        if now - row.last_seen > idle || now - row.created_at > lifetime {
            state.store.delete_session(hash.clone()).await?;
            continue;
        }
        live = Some(row.clone());
        break;
    }
    let Some(row) = live else {
        return Ok(None);
    };
    let id_hash = row.id_hash.clone();
    if now - row.last_seen >= TOUCH_EVERY_SECS
        && let Err(e) = state.store.touch_session(id_hash.clone(), now).await
    {
        // A full disk (or a locked database) must not fail every page: the session is valid,
        // it is only its idle clock that does not move this time.
        tracing::warn!(error = %e, "could not record session activity");
    }
    Ok(Some(Session {
        id_hash,
        csrf_secret: row.csrf_secret,
    }))
}

/// Starts a session for a fresh login; returns the cookie to set. A new id every time, so an
/// id planted before login is worthless after it.
pub async fn start(state: &AppState, client: &ClientInfo) -> Result<HeaderValue, AppError> {
    let id = random_token(32);
    let now = now_unix();
    let row = SessionRow {
        id_hash: sha256_hex(id.as_bytes()),
        csrf_secret: random_token(32),
        created_at: now,
        last_seen: now,
    };
    state
        .store
        .create_session(row, client.ip.to_string(), client.user_agent.clone())
        .await?;
    Ok(set_cookie(SESSION_COOKIE, &id, client.https))
}

/// Our ids are 43 URL-safe characters; anything else is not looked up.
fn well_formed(v: &str) -> bool {
    v.len() == 43
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn cookies(req: &Request) -> Vec<(String, String)> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

fn cookie<'a>(cookies: &'a [(String, String)], name: &str) -> Option<&'a str> {
    cookies
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

pub fn set_cookie(name: &str, value: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax{secure}"
    ))
    .expect("cookie value is URL-safe")
}

pub fn clear_cookie(name: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{secure}"
    ))
    .expect("static cookie")
}

/// Extractor for admin-only handlers: without a session it sends the browser to the login
/// page, remembering where it was going.
pub struct Admin(pub Arc<Session>);

impl FromRequestParts<AppState> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<CurrentSession>() {
            Some(CurrentSession(Some(s))) => Ok(Admin(s.clone())),
            _ => {
                let target = if parts.method == axum::http::Method::GET {
                    parts
                        .uri
                        .path_and_query()
                        .map(|p| p.as_str())
                        .unwrap_or("/admin")
                        .to_string()
                } else {
                    "/admin".into()
                };
                Err(
                    Redirect::to(&format!("/login?next={}", encode_component(&target)))
                        .into_response(),
                )
            }
        }
    }
}

/// Percent-encodes everything but unreserved characters and `/`.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
