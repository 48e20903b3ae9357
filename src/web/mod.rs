//! The HTTP face of milkcrate: the only place (with `server` and the router to come) that knows
//! HTTP. [`route_table`] lists every route once; [`router`] wires them with the middleware
//! every request passes through, outermost first:
//! client identity → security headers and error pages → HTTPS redirect and body-size guard →
//! rate limits → session → CSRF → handler.

pub mod apps;
pub mod assets;
pub mod certs;
pub mod charts;
pub mod client;
pub mod csrf;
pub mod errors;
pub mod form;
pub mod headers;
pub mod pages;
pub mod ratelimit;
pub mod session;
pub mod views;
pub mod volumes;

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{self, MethodRouter};

use crate::app::AppState;

/// One route: method, axum path, handler. Tests walk this table (every state-changing route
/// must refuse a request without a CSRF token), so a route added here is covered at once.
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    handler: MethodRouter<AppState>,
}

fn get<H: Handler<T, AppState>, T: 'static>(path: &'static str, h: H) -> RouteSpec {
    RouteSpec {
        method: Method::GET,
        path,
        handler: routing::get(h),
    }
}

fn post<H: Handler<T, AppState>, T: 'static>(path: &'static str, h: H) -> RouteSpec {
    RouteSpec {
        method: Method::POST,
        path,
        handler: routing::post(h),
    }
}

pub fn route_table() -> Vec<RouteSpec> {
    use pages::*;
    vec![
        get("/", index),
        get("/login", login_page),
        post("/login", login),
        post("/logout", logout),
        get("/admin", dashboard),
        get("/admin/settings", settings_page),
        post("/admin/settings/default-route", set_default_route),
        post("/admin/settings/password", change_password),
        get("/admin/audit", audit_log),
        get("/admin/certificates", certs::page),
        post("/admin/certificates/upload", certs::upload),
        post("/admin/certificates/remove", certs::remove),
        post("/admin/certificates/retry", certs::retry),
        get("/upload", apps::upload_page),
        post("/upload", apps::upload),
        get("/admin/apps/rows", apps::app_rows),
        get("/admin/apps/{app_id}", apps::app_page),
        post("/admin/apps/{app_id}/start", apps::start),
        post("/admin/apps/{app_id}/stop", apps::stop),
        post("/admin/apps/{app_id}/restart", apps::restart),
        post("/admin/apps/{app_id}/rollback", apps::rollback),
        post("/admin/apps/{app_id}/redeploy", apps::redeploy),
        post("/admin/apps/{app_id}/delete", apps::delete),
        post("/admin/apps/{app_id}/env", apps::set_env),
        get("/admin/apps/{app_id}/logs", apps::logs_page),
        get("/admin/apps/{app_id}/logs/events", apps::logs_events),
        post("/admin/update/{app_id}", apps::update),
        // The original's URLs for these two actions, kept for scripts and bookmarks.
        post("/admin/toggle_status/{app_id}", apps::toggle),
        post("/admin/delete/{app_id}", apps::delete),
        get("/admin/volumes", volumes::list),
        get("/admin/volumes/create", volumes::create_page),
        post("/admin/volumes/create", volumes::create),
        get("/admin/volumes/api/list", volumes::api_list),
        get("/admin/volumes/{volume_id}", volumes::view),
        post("/admin/volumes/{volume_id}/upload", volumes::upload),
        get("/admin/volumes/{volume_id}/download", volumes::download),
        post(
            "/admin/volumes/{volume_id}/files/delete",
            volumes::delete_path,
        ),
        post("/admin/volumes/{volume_id}/delete", volumes::delete),
        get("/admin/deploys/{deploy_id}", apps::deploy_page),
        get("/admin/deploys/{deploy_id}/events", apps::deploy_events),
        get("/health", health),
        get("/static/{file}", assets::serve),
        get("/favicon.ico", assets::favicon),
    ]
}

pub fn router(state: AppState) -> Router {
    let mut by_path: BTreeMap<&'static str, MethodRouter<AppState>> = BTreeMap::new();
    for spec in route_table() {
        let merged = match by_path.remove(spec.path) {
            Some(existing) => existing.merge(spec.handler),
            None => spec.handler,
        };
        by_path.insert(spec.path, merged);
    }
    let mut router = Router::new();
    for (path, handler) in by_path {
        router = router.route(path, handler);
    }
    let limit = usize::try_from(state.settings.max_content_length).unwrap_or(usize::MAX);
    router
        .fallback(pages::not_found)
        .layer(from_fn_with_state(state.clone(), ratelimit::enforce_action))
        .layer(from_fn_with_state(state.clone(), csrf::verify))
        .layer(from_fn_with_state(state.clone(), session::load))
        .layer(from_fn_with_state(state.clone(), ratelimit::enforce))
        .layer(from_fn_with_state(state.clone(), headers::guard))
        .layer(from_fn(headers::secure))
        .layer(from_fn_with_state(state.clone(), client::identify))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}
