//! Handlers for images and one-click services: the Registries page (credentials per registry
//! host, stored encrypted, never shown again), the New service page (built-in templates), and
//! an app's image page (pull policy, running as the image's own user, and for a service made
//! from a template its connection details, the password shown only on request). Every action
//! is a POST (CSRF is checked router-wide) and is audited.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::app::AppState;
use crate::audit::Event;
use crate::domain::image::PullPolicy;
use crate::domain::templates::{TEMPLATES, Template as ServiceTemplate};
use crate::service::deploy::Deployer;
use crate::service::{images, templates};
use crate::store::ImageOptionsRow;
use crate::web::apps::AppById;
use crate::web::client::ClientInfo;
use crate::web::errors::AppError;
use crate::web::form::Form;
use crate::web::pages::flash;
use crate::web::session::Admin;
use crate::web::views::{self, Layout, Page};

/// A stored registry as the page lists it.
pub struct RegistryItem {
    pub host: String,
    pub username: String,
}

#[derive(Template)]
#[template(path = "registries.html")]
pub struct RegistriesPage {
    pub layout: Layout,
    pub registries: Vec<RegistryItem>,
    pub host: String,
    pub username: String,
    pub error: Option<String>,
}

async fn render_registries(
    state: &AppState,
    page: Page,
    status: StatusCode,
    host: String,
    username: String,
    error: Option<String>,
) -> Result<Response, AppError> {
    let registries = images::list(&state.deployer())
        .await
        .map_err(|e| AppError::Action(e.to_string()))?
        .into_iter()
        .map(|r| RegistryItem {
            host: r.host,
            username: r.username,
        })
        .collect();
    views::render_with_status(
        status,
        &RegistriesPage {
            layout: page.titled("Registries"),
            registries,
            host,
            username,
            error,
        },
    )
}

pub async fn registries_page(
    State(state): State<AppState>,
    _admin: Admin,
    page: Page,
) -> Result<Response, AppError> {
    render_registries(
        &state,
        page,
        StatusCode::OK,
        String::new(),
        String::new(),
        None,
    )
    .await
}

#[derive(Deserialize)]
pub struct RegistryForm {
    #[serde(default)]
    host: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

pub async fn save_registry(
    State(state): State<AppState>,
    State(deployer): State<Deployer>,
    Admin(session): Admin,
    client: ClientInfo,
    page: Page,
    Form(form): Form<RegistryForm>,
) -> Result<Response, AppError> {
    match images::save(
        &deployer,
        &client.actor(true),
        &form.host,
        &form.username,
        &form.password,
    )
    .await
    {
        Ok(msg) => {
            flash(&state, &session.id_hash, "success", msg).await?;
            Ok(Redirect::to("/admin/registries").into_response())
        }
        // The password is never sent back, not even to the form.
        Err(e) => {
            render_registries(
                &state,
                page,
                StatusCode::BAD_REQUEST,
                form.host,
                form.username,
                Some(e.to_string()),
            )
            .await
        }
    }
}

#[derive(Deserialize)]
pub struct HostForm {
    #[serde(default)]
    host: String,
}

pub async fn delete_registry(
    State(state): State<AppState>,
    State(deployer): State<Deployer>,
    Admin(session): Admin,
    client: ClientInfo,
    Form(form): Form<HostForm>,
) -> Result<Response, AppError> {
    match images::delete(&deployer, &client.actor(true), &form.host).await {
        Ok(msg) => flash(&state, &session.id_hash, "success", msg).await?,
        Err(e) => flash(&state, &session.id_hash, "error", e.to_string()).await?,
    }
    Ok(Redirect::to("/admin/registries").into_response())
}

#[derive(Template)]
#[template(path = "services_new.html")]
pub struct NewServicePage {
    pub layout: Layout,
    pub templates: &'static [ServiceTemplate],
    pub registry: String,
    pub chosen: String,
    pub app_name: String,
    pub public_route: String,
    pub error: Option<String>,
}

pub async fn new_service_page(
    State(state): State<AppState>,
    _admin: Admin,
    page: Page,
) -> Result<Response, AppError> {
    views::render(&NewServicePage {
        layout: page.titled("New service"),
        templates: TEMPLATES,
        registry: registry_shown(&state),
        chosen: String::new(),
        app_name: String::new(),
        public_route: String::new(),
        error: None,
    })
}

fn registry_shown(state: &AppState) -> String {
    if state.settings.template_registry.is_empty() {
        "Docker Hub".into()
    } else {
        state.settings.template_registry.clone()
    }
}

#[derive(Deserialize)]
pub struct NewServiceForm {
    #[serde(default)]
    template: String,
    #[serde(default)]
    app_name: String,
    #[serde(default)]
    public_route: String,
}

pub async fn create_service(
    State(state): State<AppState>,
    State(deployer): State<Deployer>,
    Admin(session): Admin,
    client: ClientInfo,
    page: Page,
    Form(form): Form<NewServiceForm>,
) -> Result<Response, AppError> {
    let route = if form.public_route.trim().is_empty() {
        format!("/{}", form.app_name.trim().to_lowercase())
    } else {
        form.public_route.clone()
    };
    match templates::create(
        &deployer,
        &client.actor(true),
        &form.template,
        &form.app_name,
        &route,
    )
    .await
    {
        Ok(deploy_id) => {
            flash(
                &state,
                &session.id_hash,
                "info",
                format!("Creating {}: the deploy log follows.", form.app_name.trim()),
            )
            .await?;
            Ok(Redirect::to(&format!("/admin/deploys/{deploy_id}")).into_response())
        }
        Err(e) => views::render_with_status(
            StatusCode::BAD_REQUEST,
            &NewServicePage {
                layout: page.titled("New service"),
                templates: TEMPLATES,
                registry: registry_shown(&state),
                chosen: form.template,
                app_name: form.app_name,
                public_route: form.public_route,
                error: Some(e.to_string()),
            },
        ),
    }
}

#[derive(Template)]
#[template(path = "app_image.html")]
pub struct AppImagePage {
    pub layout: Layout,
    pub app_id: i64,
    pub app_name: String,
    pub pull_policy: String,
    pub image_user: bool,
    pub connection: Option<ConnectionView>,
    pub error: Option<String>,
}

/// Connection details, the password only when asked for.
pub struct ConnectionView {
    pub title: String,
    pub description: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
    pub password_var: String,
    pub network: String,
    pub password: Option<String>,
    pub url: Option<String>,
}

async fn render_image_page(
    state: &AppState,
    page: Page,
    app: &crate::store::AppRow,
    password: Option<String>,
    error: Option<String>,
) -> Result<Response, AppError> {
    let options = images::options(&state.deployer(), app.id).await;
    let connection = templates::connection(&state.deployer(), app)
        .await
        .map(|c| {
            let url = password
                .as_deref()
                .and_then(|p| c.template.url_with(&c.host, p));
            ConnectionView {
                title: c.template.title.into(),
                description: c.template.description.into(),
                host: c.host,
                port: c.port,
                user: c.user.unwrap_or("").into(),
                database: c.database.unwrap_or("").into(),
                password_var: c.password_var.unwrap_or("").into(),
                network: c.network,
                password,
                url,
            }
        });
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    views::render_with_status(
        status,
        &AppImagePage {
            layout: page.titled(&format!("{} · image and connection", app.name)),
            app_id: app.id,
            app_name: app.name.clone(),
            pull_policy: options.pull_policy,
            image_user: options.image_user,
            connection,
            error,
        },
    )
}

pub async fn app_image_page(
    State(state): State<AppState>,
    _admin: Admin,
    AppById(app): AppById,
    page: Page,
) -> Result<Response, AppError> {
    render_image_page(&state, page, &app, None, None).await
}

#[derive(Deserialize)]
pub struct ImageOptionsForm {
    #[serde(default)]
    pull_policy: String,
    #[serde(default)]
    image_user: String,
}

pub async fn set_image_options(
    State(state): State<AppState>,
    State(deployer): State<Deployer>,
    Admin(session): Admin,
    client: ClientInfo,
    AppById(app): AppById,
    page: Page,
    Form(form): Form<ImageOptionsForm>,
) -> Result<Response, AppError> {
    let policy = match PullPolicy::parse(&form.pull_policy) {
        Ok(p) => p,
        Err(e) => return render_image_page(&state, page, &app, None, Some(e)).await,
    };
    let image_user = matches!(form.image_user.as_str(), "on" | "true" | "1");
    let mut options = images::options(&deployer, app.id).await;
    options = ImageOptionsRow {
        pull_policy: policy.as_str().into(),
        image_user,
        template: options.template.take(),
    };
    state.store.set_image_options(app.id, options).await?;
    state
        .audit
        .record_logged(
            &client.actor(true),
            Event::new("image_options", "application", app.name.clone()).details(
                serde_json::json!({"pull_policy": policy.as_str(), "run_as_image_user": image_user}),
            ),
        )
        .await;
    flash(
        &state,
        &session.id_hash,
        "success",
        format!(
            "Saved: pull policy {}, {}. They apply from the next deploy (Redeploy on the app page).",
            policy.as_str(),
            if image_user {
                "run as the image's own user when it is not root"
            } else {
                "run as nobody (65534)"
            }
        ),
    )
    .await?;
    Ok(Redirect::to(&format!("/admin/apps/{}/image", app.id)).into_response())
}

/// Shows the service's password on this one page (a POST, so it is never in a URL or the
/// history), audited.
pub async fn reveal_password(
    State(state): State<AppState>,
    State(deployer): State<Deployer>,
    _admin: Admin,
    client: ClientInfo,
    AppById(app): AppById,
    page: Page,
) -> Result<Response, AppError> {
    let Some(c) = templates::connection(&deployer, &app).await else {
        return render_image_page(
            &state,
            page,
            &app,
            None,
            Some("This app was not made from a template.".into()),
        )
        .await;
    };
    let Some(var) = c.password_var else {
        return render_image_page(
            &state,
            page,
            &app,
            None,
            Some("This service has no password.".into()),
        )
        .await;
    };
    let result = templates::password(&deployer, app.id, var).await;
    let mut event = Event::new("reveal_password", "application", app.name.clone())
        .details(serde_json::json!({"variable": var}));
    if let Err(e) = &result {
        event = event.failed(e.to_string());
    }
    state.audit.record_logged(&client.actor(true), event).await;
    match result {
        Ok(p) => render_image_page(&state, page, &app, Some(p), None).await,
        Err(e) => render_image_page(&state, page, &app, None, Some(e.to_string())).await,
    }
}
