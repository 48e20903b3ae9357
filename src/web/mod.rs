//! The HTTP face of milkcrate: the only place (with `server` and the router to come) that knows
//! HTTP. [`route_table`] lists every route once; [`router`] wires them with the middleware
//! every request passes through, outermost first:
//! client identity → security headers and error pages → HTTPS redirect and body-size guard →
//! rate limits → session → CSRF → handler.

pub mod api;
pub mod apps;
pub mod assets;
pub mod backups;
pub mod certs;
pub mod charts;
pub mod client;
pub mod csrf;
pub mod errors;
pub mod form;
pub mod headers;
pub mod health;
pub mod nodes;
pub mod observe;
pub mod pages;
pub mod ratelimit;
pub mod services;
pub mod session;
mod substates;
pub mod tokens;
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

fn delete<H: Handler<T, AppState>, T: 'static>(path: &'static str, h: H) -> RouteSpec {
    RouteSpec {
        method: Method::DELETE,
        path,
        handler: routing::delete(h),
    }
}

pub fn route_table() -> Vec<RouteSpec> {
    use pages::*;
    let mut routes = vec![
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
        post("/admin/apps/{app_id}/network", apps::set_network),
        post("/admin/apps/{app_id}/domains", apps::add_domain),
        post("/admin/apps/{app_id}/domains/remove", apps::remove_domain),
        get("/admin/apps/{app_id}/logs", apps::logs_page),
        get("/admin/apps/{app_id}/logs/events", apps::logs_events),
        post("/admin/update/{app_id}", apps::update),
        // The original's URLs for these two actions, kept for scripts and bookmarks.
        post("/admin/toggle_status/{app_id}", apps::toggle),
        post("/admin/delete/{app_id}", apps::delete),
        get("/admin/registries", services::registries_page),
        post("/admin/registries", services::save_registry),
        post("/admin/registries/delete", services::delete_registry),
        get("/admin/services/new", services::new_service_page),
        post("/admin/services/new", services::create_service),
        get("/admin/apps/{app_id}/image", services::app_image_page),
        post("/admin/apps/{app_id}/image", services::set_image_options),
        post(
            "/admin/apps/{app_id}/connection/password",
            services::reveal_password,
        ),
        get("/admin/nodes", nodes::nodes),
        post("/admin/apps/{app_id}/replicas", nodes::set_replicas),
        post("/admin/apps/{app_id}/placement", nodes::set_placement),
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
        get("/admin/backups", backups::page),
        post("/admin/backups/settings", backups::save_settings),
        post("/admin/backups/targets", backups::add_target),
        post(
            "/admin/backups/targets/{target_id}/delete",
            backups::delete_target,
        ),
        post("/admin/backups/run", backups::run_now),
        get("/admin/deploys/{deploy_id}", apps::deploy_page),
        get("/admin/deploys/{deploy_id}/events", apps::deploy_events),
        get("/admin/apps/{app_id}/requests", observe::requests_page),
        get(
            "/admin/apps/{app_id}/requests/events",
            observe::requests_events,
        ),
        get("/admin/notifications", observe::notifications_page),
        post("/admin/notifications/channels", observe::add_channel),
        post(
            "/admin/notifications/channels/{channel_id}/delete",
            observe::delete_channel,
        ),
        post(
            "/admin/notifications/channels/{channel_id}/test",
            observe::test_channel,
        ),
        get("/metrics", observe::metrics),
        get("/health", health),
        get("/static/{file}", assets::serve),
        get("/favicon.ico", assets::favicon),
        get("/admin/tokens", tokens::page),
        post("/admin/tokens", tokens::create),
        post("/admin/tokens/{token_id}/revoke", tokens::revoke),
    ];
    routes.extend(api::routes());
    routes
}

pub fn router(state: AppState) -> Router {
    let (api_routes, admin_routes): (Vec<RouteSpec>, Vec<RouteSpec>) = route_table()
        .into_iter()
        .partition(|r| api::is_api_path(r.path));
    admin_router(state.clone(), admin_routes).merge(api_router(state, api_routes))
}

/// Routes by path, each path's methods merged.
fn routes_of(specs: Vec<RouteSpec>) -> Router<AppState> {
    let mut by_path: BTreeMap<&'static str, MethodRouter<AppState>> = BTreeMap::new();
    for spec in specs {
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
    router
}

/// The JSON API: bearer tokens instead of sessions, so no CSRF; errors as JSON.
fn api_router(state: AppState, specs: Vec<RouteSpec>) -> Router {
    let limit = usize::try_from(state.settings.max_content_length).unwrap_or(usize::MAX);
    routes_of(specs)
        .route("/api/{*rest}", routing::any(api::unknown))
        .layer(from_fn_with_state(state.clone(), api::authenticate))
        .layer(from_fn_with_state(state.clone(), ratelimit::enforce))
        .layer(from_fn_with_state(state.clone(), headers::guard))
        .layer(from_fn(api::json_errors))
        .layer(from_fn(headers::secure))
        .layer(from_fn_with_state(state.clone(), client::identify))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

fn admin_router(state: AppState, specs: Vec<RouteSpec>) -> Router {
    let limit = usize::try_from(state.settings.max_content_length).unwrap_or(usize::MAX);
    routes_of(specs)
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
