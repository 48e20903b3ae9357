//! Error responses. Handlers and middleware return a bare status (plus an optional
//! [`ErrorMessage`]); the outer layer in `headers` renders the page, so every error, axum's own
//! rejections included, looks the same and carries the security headers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, IntoResponseParts, Response, ResponseParts};

use crate::store::StoreError;

/// A sentence for the error page, carried in the response's extensions.
#[derive(Debug, Clone)]
pub struct ErrorMessage(pub String);

impl IntoResponseParts for ErrorMessage {
    type Error = std::convert::Infallible;

    fn into_response_parts(self, mut res: ResponseParts) -> Result<ResponseParts, Self::Error> {
        res.extensions_mut().insert(self);
        Ok(res)
    }
}

/// A bare error status with a sentence for its page.
pub fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    (status, ErrorMessage(message.into()), ()).into_response()
}

/// The row a route's `{..._id}` names, for the `…ById` extractors: the id from the path, then
/// `lookup`; a missing row is a 404 page saying `missing`.
pub async fn row_by_path_id<T, F>(
    parts: &mut axum::http::request::Parts,
    state: &crate::app::AppState,
    missing: &'static str,
    lookup: impl FnOnce(i64) -> F,
) -> Result<T, Response>
where
    F: std::future::Future<Output = Result<Option<T>, crate::store::StoreError>>,
{
    use axum::extract::{FromRequestParts, Path};
    let Path(id) = Path::<i64>::from_request_parts(parts, state)
        .await
        .map_err(IntoResponse::into_response)?;
    match lookup(id).await {
        Ok(Some(row)) => Ok(row),
        Ok(None) => Err(error_response(StatusCode::NOT_FOUND, missing)),
        Err(e) => Err(AppError::from(e).into_response()),
    }
}

/// Marks a response that is already a complete page (a form re-rendered with its error).
#[derive(Debug, Clone, Copy)]
pub struct Rendered;

impl IntoResponseParts for Rendered {
    type Error = std::convert::Infallible;

    fn into_response_parts(self, mut res: ResponseParts) -> Result<ResponseParts, Self::Error> {
        res.extensions_mut().insert(self);
        Ok(res)
    }
}

/// Failures a handler cannot turn into a form message. Logged once, shown as a 500 page.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("template error: {0}")]
    Template(#[from] askama::Error),
    #[error("file error: {0}")]
    Io(std::io::Error),
    #[error("{0}")]
    Action(String),
}

impl From<crate::service::apps::AppsError> for AppError {
    fn from(e: crate::service::apps::AppsError) -> Self {
        use crate::service::apps::AppsError;
        match e {
            AppsError::Store(e) => AppError::Store(e),
            AppsError::Io(e) => AppError::Io(e),
            other => AppError::Action(other.to_string()),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        tracing::error!(error = %self, "request failed");
        error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong on our side; the details are in the server log.",
        )
    }
}

/// The default sentence for a status when the response brought none.
pub fn default_message(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "The request could not be understood.",
        401 => "You need to log in first.",
        403 => "You may not do that.",
        404 => "There is nothing at this address.",
        405 => "This address does not accept that kind of request.",
        413 => "The upload is larger than this server accepts (MAX_CONTENT_LENGTH).",
        429 => "Too many requests. Wait a little and try again.",
        _ => "Something went wrong on our side; the details are in the server log.",
    }
}
