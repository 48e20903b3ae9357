//! Static assets, embedded in the binary and served under fingerprinted names
//! (`/static/style.<hash>.css`) so browsers may cache them forever.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

pub struct Asset {
    pub name: &'static str,
    pub url: String,
    pub bytes: &'static [u8],
    pub content_type: &'static str,
}

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    [
        (
            "style.css",
            &include_bytes!("../../assets/style.css")[..],
            "text/css; charset=utf-8",
        ),
        (
            "app.js",
            &include_bytes!("../../assets/app.js")[..],
            "text/javascript; charset=utf-8",
        ),
        (
            "logo.svg",
            &include_bytes!("../../assets/logo.svg")[..],
            "image/svg+xml",
        ),
    ]
    .into_iter()
    .map(|(name, bytes, content_type)| {
        let hash = hex::encode(&Sha256::digest(bytes)[..5]);
        let (stem, ext) = name
            .rsplit_once('.')
            .expect("asset names have an extension");
        Asset {
            name,
            url: format!("/static/{stem}.{hash}.{ext}"),
            bytes,
            content_type,
        }
    })
    .collect()
});

/// The fingerprinted URL of an embedded asset.
pub fn url(name: &str) -> &'static str {
    ASSETS
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.url.as_str())
        .expect("asset is embedded")
}

pub async fn serve(Path(file): Path<String>) -> Response {
    let wanted = format!("/static/{file}");
    match ASSETS.iter().find(|a| a.url == wanted) {
        Some(a) => respond(a, "public, max-age=31536000, immutable"),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

pub async fn favicon() -> Response {
    let logo = ASSETS
        .iter()
        .find(|a| a.name == "logo.svg")
        .expect("logo is embedded");
    respond(logo, "public, max-age=86400")
}

fn respond(a: &Asset, cache: &'static str) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(a.content_type),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        a.bytes,
    )
        .into_response()
}
