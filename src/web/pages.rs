//! Handlers for the foundation's pages: home, login/logout, dashboard, settings, audit log.
//! Thin: parse the form, call the store or auth, audit, render or redirect.

use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

use crate::app::AppState;
use crate::audit::Event;
use crate::domain::password::check_strength;
use crate::domain::route::{HomeRoute, is_local_redirect};
use crate::store::settings::DEFAULT_HOME_ROUTE;
use crate::web::client::ClientInfo;
use crate::web::errors::AppError;
use crate::web::form::Form;
use crate::web::ratelimit::too_many_requests;
use crate::web::session::{self, Admin, CurrentSession, SESSION_COOKIE};
use crate::web::views::{
    self, AuditPage, AuditRow, DashboardPage, Flash, IndexPage, LoginPage, OrphanView, Page,
    SettingsPage,
};

/// Actions the audit page can filter by.
pub const AUDIT_ACTIONS: &[&str] = &[
    "login",
    "logout",
    "password_change",
    "settings_change",
    "deploy",
    "update",
    "rollback",
    "redeploy",
    "start",
    "stop",
    "restart",
    "delete",
    "env_change",
    "scale",
    "placement_change",
];

const AUDIT_PAGE_SIZE: usize = 50;

/// `/`: the dashboard for the admin, else the home route when one is set, else the landing page.
pub async fn index(
    State(state): State<AppState>,
    session: axum::Extension<CurrentSession>,
    page: Page,
) -> Result<Response, AppError> {
    if session.0.0.is_some() {
        return Ok(Redirect::to("/admin").into_response());
    }
    let stored = state
        .store
        .setting(DEFAULT_HOME_ROUTE)
        .await?
        .unwrap_or_default();
    // A stored value that is not a local path (the original accepted `//evil.example`) is ignored.
    let home = HomeRoute::parse_optional(&stored)
        .ok()
        .flatten()
        .or_else(|| state.settings.default_home_route.clone());
    if let Some(home) = home {
        return Ok(Redirect::to(home.as_str()).into_response());
    }
    views::render(&IndexPage {
        layout: page.titled("Welcome"),
    })
}

#[derive(Deserialize)]
pub struct NextQuery {
    #[serde(default)]
    next: String,
}

pub async fn login_page(
    State(state): State<AppState>,
    session: axum::Extension<CurrentSession>,
    Query(q): Query<NextQuery>,
    page: Page,
) -> Result<Response, AppError> {
    if session.0.0.is_some() {
        return Ok(Redirect::to(safe_next(&q.next)).into_response());
    }
    let env_override = state.passwords.env_override_active();
    views::render(&LoginPage {
        layout: page.titled("Log in"),
        error: None,
        next: q.next,
        env_override,
    })
}

#[derive(Deserialize)]
pub struct LoginForm {
    password: String,
    #[serde(default)]
    next: String,
}

pub async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    session: axum::Extension<CurrentSession>,
    page: Page,
    Form(form): Form<LoginForm>,
) -> Result<Response, AppError> {
    let actor = client.actor(false);
    if let Err(retry) = state
        .limiter
        .take_password_attempt(client.ip, Instant::now())
    {
        tracing::warn!(client = %client.ip, "login refused: too many failed logins");
        state
            .audit
            .record_logged(
                &actor,
                Event::new("login", "session", "admin").failed("too many failed logins"),
            )
            .await;
        return Ok(too_many_requests(
            retry,
            "Too many failed logins from your address.",
        ));
    }
    let ok =
        !form.password.is_empty() && state.passwords.verify(&state.store, form.password).await?;
    if !ok {
        // In the server log too (inside the request's span, so with its id), for whatever
        // watches it for password guessing.
        tracing::warn!(client = %client.ip, "login refused: invalid password");
        state
            .audit
            .record_logged(
                &actor,
                Event::new("login", "session", "admin").failed("invalid password"),
            )
            .await;
        let env_override = state.passwords.env_override_active();
        let login = LoginPage {
            layout: page.titled("Log in"),
            error: Some("Invalid password".into()),
            next: form.next,
            env_override,
        };
        return views::render_with_status(StatusCode::UNAUTHORIZED, &login);
    }
    state.limiter.password_accepted(client.ip, Instant::now());
    // Whatever session the browser had before is ended: the id changes at login.
    if let Some(old) = &session.0.0 {
        state.store.delete_session(old.id_hash.clone()).await?;
    }
    let cookie = session::start(&state, &client).await?;
    state
        .audit
        .record_logged(&client.actor(true), Event::new("login", "session", "admin"))
        .await;
    let mut resp = Redirect::to(safe_next(&form.next)).into_response();
    resp.headers_mut().append(header::SET_COOKIE, cookie);
    // Removes any service worker (and storage) an app left on this origin before the admin's
    // pages load: a worker there could read every page and the next password typed.
    resp.headers_mut().insert(
        "clear-site-data",
        axum::http::HeaderValue::from_static("\"storage\""),
    );
    Ok(resp)
}

fn safe_next(next: &str) -> &str {
    if is_local_redirect(next) {
        next
    } else {
        "/admin"
    }
}

pub async fn logout(
    State(state): State<AppState>,
    client: ClientInfo,
    session: axum::Extension<CurrentSession>,
) -> Result<Response, AppError> {
    if let Some(s) = &session.0.0 {
        state.store.delete_session(s.id_hash.clone()).await?;
        state
            .audit
            .record_logged(
                &client.actor(true),
                Event::new("logout", "session", "admin"),
            )
            .await;
    }
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        session::clear_cookie(SESSION_COOKIE, client.https),
    );
    Ok(resp)
}

pub async fn dashboard(
    State(state): State<AppState>,
    _admin: Admin,
    axum::extract::Query(at): axum::extract::Query<crate::web::apps::PageQuery>,
    page: Page,
) -> Result<Response, AppError> {
    let engine = state
        .engine
        .get()
        .map(|r| r.map(|i| format!("Docker Engine {} (API {})", i.version, i.api_version)));
    // One read of the apps and one look at the status snapshot serve the whole page.
    let rows = state.store.apps().await?;
    let snap = state.status.snapshot();
    let (shown, pager) = crate::web::apps::page_of(&rows, at.page);
    let apps = crate::web::apps::app_views(&state, shown, &snap);
    let summary = crate::web::apps::summary(&rows, &snap);
    let orphans = crate::service::reconcile::orphans(&rows, &snap)
        .into_iter()
        .map(|c| OrphanView {
            name: c.name,
            app: c.app.unwrap_or_default(),
            state: c.status,
        })
        .collect();
    views::render(&DashboardPage {
        layout: page.titled("Dashboard"),
        engine,
        apps,
        orphans,
        pager,
        summary,
    })
}

pub async fn settings_page(
    State(state): State<AppState>,
    _admin: Admin,
    page: Page,
) -> Result<Response, AppError> {
    let home_route = state
        .store
        .setting(DEFAULT_HOME_ROUTE)
        .await?
        .unwrap_or_default();
    render_settings(&state, page, StatusCode::OK, home_route, None, None)
}

/// The settings page; with an error status when a form on it was refused.
fn render_settings(
    state: &AppState,
    page: Page,
    status: StatusCode,
    home_route: String,
    home_error: Option<String>,
    password_error: Option<String>,
) -> Result<Response, AppError> {
    let settings = SettingsPage {
        layout: page.titled("Settings"),
        home_route,
        home_error,
        password_error,
        env_override: state.passwords.env_override_active(),
    };
    views::render_with_status(status, &settings)
}

#[derive(Deserialize)]
pub struct HomeRouteForm {
    #[serde(default)]
    default_route: String,
}

pub async fn set_default_route(
    State(state): State<AppState>,
    Admin(session): Admin,
    client: ClientInfo,
    page: Page,
    Form(form): Form<HomeRouteForm>,
) -> Result<Response, AppError> {
    let actor = client.actor(true);
    match HomeRoute::parse_optional(&form.default_route) {
        Err(e) => {
            let msg = format!(
                "The home route {:?} was not saved: {e}.",
                form.default_route.trim()
            );
            let event = Event::new("settings_change", "setting", DEFAULT_HOME_ROUTE)
                .details(json!({"value": form.default_route}))
                .failed(&msg);
            state.audit.record_logged(&actor, event).await;
            render_settings(
                &state,
                page,
                StatusCode::BAD_REQUEST,
                form.default_route,
                Some(msg),
                None,
            )
        }
        Ok(route) => {
            let value = route.as_ref().map(|r| r.to_string()).unwrap_or_default();
            state
                .store
                .set_setting(DEFAULT_HOME_ROUTE, value.clone())
                .await?;
            state
                .audit
                .record_logged(
                    &actor,
                    Event::new("settings_change", "setting", DEFAULT_HOME_ROUTE)
                        .details(json!({"value": value})),
                )
                .await;
            let text = match route {
                Some(r) => format!("Default route updated to: {r}"),
                None => "Default route cleared - will show app listing".into(),
            };
            flash(&state, &session.id_hash, "success", text).await?;
            Ok(Redirect::to("/admin/settings").into_response())
        }
    }
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm_password: String,
}

pub async fn change_password(
    State(state): State<AppState>,
    Admin(session): Admin,
    client: ClientInfo,
    page: Page,
    Form(form): Form<PasswordForm>,
) -> Result<Response, AppError> {
    let actor = client.actor(true);
    // The current password is a password check like the login's: it draws on the same budget,
    // so a stolen session cannot guess it at full speed.
    if let Err(retry) = state
        .limiter
        .take_password_attempt(client.ip, Instant::now())
    {
        state
            .audit
            .record_logged(
                &actor,
                Event::new("password_change", "setting", "admin_password")
                    .failed("too many wrong passwords"),
            )
            .await;
        return Ok(too_many_requests(
            retry,
            "Too many wrong passwords from your address.",
        ));
    }
    let current_ok = state
        .passwords
        .verify(&state.store, form.current_password)
        .await?;
    if current_ok {
        state.limiter.password_accepted(client.ip, Instant::now());
    }
    let refusal = if !current_ok {
        Some("The current password is not correct.".to_string())
    } else if form.new_password != form.confirm_password {
        Some("Passwords do not match".into())
    } else {
        check_strength(&form.new_password)
            .err()
            .map(|e| e.to_string())
    };
    if let Some(msg) = refusal {
        state
            .audit
            .record_logged(
                &actor,
                Event::new("password_change", "setting", "admin_password").failed(&msg),
            )
            .await;
        let home_route = state
            .store
            .setting(DEFAULT_HOME_ROUTE)
            .await?
            .unwrap_or_default();
        return render_settings(
            &state,
            page,
            StatusCode::BAD_REQUEST,
            home_route,
            None,
            Some(msg),
        );
    }
    state.passwords.set(&state.store, form.new_password).await?;
    let ended = state
        .store
        .delete_other_sessions(Some(session.id_hash.clone()))
        .await?;
    state
        .audit
        .record_logged(
            &actor,
            Event::new("password_change", "setting", "admin_password")
                .details(json!({"other_sessions_ended": ended})),
        )
        .await;
    let mut text =
        format!("Admin password updated successfully. {ended} other session(s) were signed out.");
    if state.passwords.env_override_active() {
        text = "Password saved, but MILKCRATE_ADMIN_PASSWORD is set and is the one used for login while it is.".into();
    }
    flash(&state, &session.id_hash, "success", text).await?;
    Ok(Redirect::to("/admin/settings").into_response())
}

#[derive(Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    action: String,
    #[serde(default)]
    page: usize,
}

pub async fn audit_log(
    State(state): State<AppState>,
    _admin: Admin,
    Query(q): Query<AuditQuery>,
    page: Page,
) -> Result<Response, AppError> {
    let action = AUDIT_ACTIONS.iter().find(|a| **a == q.action).copied();
    let log = state.audit.clone();
    let skip = q.page * AUDIT_PAGE_SIZE;
    let (entries, more) =
        tokio::task::spawn_blocking(move || log.read_latest(action, skip, AUDIT_PAGE_SIZE))
            .await
            .map_err(|_| AppError::Store(crate::store::StoreError::Worker))?
            .unwrap_or_default();
    let link = |p: usize| format!("/admin/audit?action={}&page={p}", action.unwrap_or(""));
    let rows = entries
        .into_iter()
        .map(|entry| {
            let details = match &entry.details {
                serde_json::Value::Object(m) if m.is_empty() => String::new(),
                d => d.to_string(),
            };
            AuditRow { entry, details }
        })
        .collect();
    views::render(&AuditPage {
        layout: page.titled("Audit log"),
        rows,
        action: action.unwrap_or("").into(),
        actions: AUDIT_ACTIONS,
        newer: (q.page > 0).then(|| link(q.page - 1)),
        older: more.then(|| link(q.page + 1)),
    })
}

/// Machine-readable liveness for probes and benchmarks; no secrets, no auth.
pub async fn health(State(state): State<AppState>) -> Response {
    let engine = match state.engine.get() {
        Some(Ok(_)) => "ok",
        Some(Err(_)) => "unreachable",
        None => "checking",
    };
    axum::Json(json!({"status": "ok", "engine": engine})).into_response()
}

pub async fn not_found() -> Response {
    StatusCode::NOT_FOUND.into_response()
}

/// Queues a message for the session's next page.
pub async fn flash(
    state: &AppState,
    id_hash: &str,
    kind: &str,
    text: String,
) -> Result<(), AppError> {
    let json = serde_json::to_string(&Flash {
        kind: kind.into(),
        text,
    })
    .unwrap_or_default();
    state.store.push_flash(id_hash.into(), json).await?;
    Ok(())
}
