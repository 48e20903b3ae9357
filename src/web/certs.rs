//! The Certificates page: every host name milkcrate serves over HTTPS, where its certificate
//! comes from, its issuer, expiry, next renewal, the last ACME error in plain words and what
//! the name resolves to; the admin's own certificates are uploaded and removed here.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

use crate::app::AppState;
use crate::audit::Event;
use crate::service::acme::{self, Certificates};
use crate::tls::Source;
use crate::web::client::ClientInfo;
use crate::web::errors::AppError;
use crate::web::form::Form;
use crate::web::pages::flash;
use crate::web::session::Admin;
use crate::web::views::{self, CertRow, CertificatesPage, Page};

pub async fn page(
    State(state): State<AppState>,
    _admin: Admin,
    page: Page,
) -> Result<Response, AppError> {
    render(&state, page, None, StatusCode::OK).await
}

async fn render(
    state: &AppState,
    page: Page,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, AppError> {
    let mut hosts = acme::names(&state.certificates()).await;
    hosts.extend(state.certs.uploaded_hosts());
    hosts.sort();
    hosts.dedup();
    let lookups = futures_util::future::join_all(hosts.iter().map(|h| acme::resolve(h))).await;
    let rows = hosts
        .into_iter()
        .zip(lookups)
        .map(|(host, dns)| {
            let uploaded = state.certs.get(Source::Uploaded, &host);
            let issued = state.certs.get(Source::Acme, &host);
            let st = state.acme.host(&host);
            let (source, served) = match (&uploaded, &issued) {
                (Some(u), _) => ("uploaded", Some(u)),
                (None, Some(a)) => ("ACME", Some(a)),
                (None, None) if state.certs.covers(&host) => ("SSL_CERT_FILE", None),
                (None, None) => ("none yet", None),
            };
            let next_renewal = match (&uploaded, state.settings.acme.enabled) {
                (Some(_), _) => "renew it yourself".to_string(),
                (None, false) => "ACME is off".to_string(),
                (None, true) => {
                    let at = st.renew_at.unwrap_or(0).max(st.next_attempt);
                    if issued.is_none() && at <= crate::clock::now_unix() {
                        "being issued".to_string()
                    } else {
                        crate::clock::format_unix(at)
                    }
                }
            };
            CertRow {
                dns: match dns {
                    Ok(ips) if ips.is_empty() => "resolves to nothing".into(),
                    Ok(ips) => format!(
                        "resolves to {}",
                        ips.iter()
                            .map(|ip| ip.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Err(e) => e,
                },
                issuer: served.map(|s| s.info.issuer.clone()).unwrap_or_default(),
                expires: served
                    .map(|s| crate::clock::format_unix(s.info.not_after))
                    .unwrap_or_default(),
                source,
                next_renewal,
                can_retry: state.settings.acme.enabled && uploaded.is_none(),
                uploaded: uploaded.is_some(),
                last_error: st.last_error.clone(),
                last_error_at: st.last_error_at.map(crate::clock::format_unix),
                host,
            }
        })
        .collect();
    views::render_with_status(
        status,
        &CertificatesPage {
            layout: page.titled("Certificates"),
            rows,
            acme_on: state.settings.acme.enabled,
            https_listen: state
                .settings
                .https_listen
                .map(|a| a.to_string())
                .unwrap_or_default(),
            error,
        },
    )
}

#[derive(Deserialize, Default)]
pub struct UploadForm {
    #[serde(default)]
    host: String,
    #[serde(default)]
    certificate: String,
    #[serde(default)]
    private_key: String,
}

pub async fn upload(
    State(state): State<AppState>,
    State(certificates): State<Certificates>,
    Admin(session): Admin,
    client: ClientInfo,
    page: Page,
    Form(form): Form<UploadForm>,
) -> Result<Response, AppError> {
    let actor = client.actor(true);
    let host = crate::tls::normalise(&form.host);
    match acme::save_upload(&certificates, &host, &form.certificate, &form.private_key) {
        Ok(served) => {
            let event = Event::new("certificate_upload", "certificate", &host).details(json!({
                "issuer": served.info.issuer,
                "expires": crate::clock::format_unix(served.info.not_after),
            }));
            state.audit.record_logged(&actor, event).await;
            flash(
                &state,
                &session.id_hash,
                "success",
                format!("{host} now serves the uploaded certificate."),
            )
            .await?;
            Ok(Redirect::to("/admin/certificates").into_response())
        }
        Err(e) => {
            let msg = e.to_string();
            let event = Event::new("certificate_upload", "certificate", &host).failed(&msg);
            state.audit.record_logged(&actor, event).await;
            render(&state, page, Some(msg), StatusCode::BAD_REQUEST).await
        }
    }
}

#[derive(Deserialize, Default)]
pub struct HostForm {
    #[serde(default)]
    host: String,
}

pub async fn remove(
    State(state): State<AppState>,
    State(certificates): State<Certificates>,
    Admin(session): Admin,
    client: ClientInfo,
    Form(form): Form<HostForm>,
) -> Result<Response, AppError> {
    let host = crate::tls::normalise(&form.host);
    let outcome = acme::remove_upload(&certificates, &host);
    let mut event = Event::new("certificate_remove", "certificate", &host);
    if let Err(e) = &outcome {
        event = event.failed(e.to_string());
    }
    state.audit.record_logged(&client.actor(true), event).await;
    let (kind, text) = match outcome {
        Ok(()) => (
            "success",
            format!("The uploaded certificate of {host} was removed."),
        ),
        Err(e) => ("error", e.to_string()),
    };
    flash(&state, &session.id_hash, kind, text).await?;
    Ok(Redirect::to("/admin/certificates").into_response())
}

pub async fn retry(
    State(state): State<AppState>,
    State(certificates): State<Certificates>,
    Admin(session): Admin,
    client: ClientInfo,
    Form(form): Form<HostForm>,
) -> Result<Response, AppError> {
    let host = crate::tls::normalise(&form.host);
    let known = acme::names(&certificates).await.contains(&host);
    let (kind, text) = if !state.settings.acme.enabled {
        ("error", "ACME is off (MILKCRATE_ACME=off).".to_string())
    } else if !known {
        (
            "error",
            format!("{host} is not a host name milkcrate serves."),
        )
    } else {
        acme::retry_now(&certificates, &host);
        let event = Event::new("certificate_retry", "certificate", &host);
        state.audit.record_logged(&client.actor(true), event).await;
        (
            "success",
            format!("A certificate for {host} is being requested now."),
        )
    };
    flash(&state, &session.id_hash, kind, text).await?;
    Ok(Redirect::to("/admin/certificates").into_response())
}
