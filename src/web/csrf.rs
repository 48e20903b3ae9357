//! CSRF protection for every state-changing request, applied as middleware to the whole router
//! so a route added later cannot forget it. The token is an HMAC (key from SECRET_KEY) of the
//! session's secret, or of the anonymous cookie's secret before login. It is accepted from the
//! form field `csrf_token` or the `X-CSRFToken` / `X-CSRF-Token` header, as in the original.
//! In a multipart form the field may come anywhere: the first field is read as the body
//! streams (the browser's forms put it first); otherwise the body is spooled to an unlinked
//! file in `uploads/`, searched, and replayed from there, so scripts need no field order.
//! Tokens live as long as their session: a dashboard left open does not go stale after an hour.

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use futures_util::StreamExt;

use crate::app::AppState;
use crate::secrets::{ct_eq, sign};
use crate::web::errors::error_response;
use crate::web::form::parse_strict;
use crate::web::session::{AnonCsrf, CurrentSession};

pub const FIELD: &str = "csrf_token";

pub const EXPIRED: &str = "This form has expired or was not sent from milkcrate (missing or invalid CSRF token). Reload the page and try again; nothing was changed.";

/// The token forms on this request's pages must carry.
pub fn token_for(state: &AppState, req_ext: &axum::http::Extensions) -> String {
    match (req_ext.get::<CurrentSession>(), req_ext.get::<AnonCsrf>()) {
        (Some(CurrentSession(Some(s))), _) => {
            sign(&state.csrf_key, &[b"session", s.csrf_secret.as_bytes()])
        }
        (_, Some(AnonCsrf(secret))) => sign(&state.csrf_key, &[b"anonymous", secret.as_bytes()]),
        _ => String::new(),
    }
}

pub async fn verify(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) {
        return next.run(req).await;
    }
    let expected = token_for(&state, req.extensions());
    let header_token = ["x-csrftoken", "x-csrf-token"].iter().find_map(|h| {
        req.headers()
            .get(*h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let boundary = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|ct| ct.starts_with("multipart/form-data"))
        .and_then(|ct| {
            ct.split(';')
                .find_map(|p| p.trim().strip_prefix("boundary="))
        })
        .map(|b| b.trim_matches('"').to_string());
    let (req, provided) = match header_token {
        Some(t) => (req, Some(t)),
        None if boundary.is_some() => {
            let (parts, body) = req.into_parts();
            let (body, first) =
                first_multipart_field(body, boundary.as_deref().unwrap_or_default()).await;
            match first {
                Some((name, value)) if name == FIELD => {
                    (Request::from_parts(parts, body), Some(value))
                }
                _ => match spool_and_find(&state, body, boundary.as_deref().unwrap_or_default())
                    .await
                {
                    Ok((body, token)) => (Request::from_parts(parts, body), token),
                    Err(resp) => return resp,
                },
            }
        }
        None if is_form => {
            let (parts, body) = req.into_parts();
            let limit = usize::try_from(state.settings.max_content_length).unwrap_or(usize::MAX);
            let Ok(bytes) = to_bytes(body, limit).await else {
                return error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "The request is larger than this server accepts.",
                );
            };
            let pairs = match parse_strict(&bytes) {
                Ok(p) => p,
                Err(e) => return error_response(StatusCode::BAD_REQUEST, e.to_string()),
            };
            let token = pairs.into_iter().find(|(k, _)| k == FIELD).map(|(_, v)| v);
            (Request::from_parts(parts, Body::from(bytes)), token)
        }
        None => (req, None),
    };
    match provided {
        Some(p) if !expected.is_empty() && ct_eq(p.as_bytes(), expected.as_bytes()) => {
            next.run(req).await
        }
        _ => error_response(StatusCode::BAD_REQUEST, EXPIRED),
    }
}

/// Reads just enough of a multipart body to see its first field (forms put `csrf_token`
/// first), then hands back a body that replays those bytes followed by the rest, unread. The
/// upload itself is never buffered here.
async fn first_multipart_field(body: Body, boundary: &str) -> (Body, Option<(String, String)>) {
    let mut stream = body.into_data_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut found = None;
    while buf.len() < 64 * 1024 {
        if let Some(f) = parse_first_field(&buf, boundary) {
            found = Some(f);
            break;
        }
        match stream.next().await {
            Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let head =
        futures_util::stream::once(async move { Ok::<Bytes, axum::Error>(Bytes::from(buf)) });
    (Body::from_stream(head.chain(stream)), found)
}

/// For a multipart form whose first field is not the token: spools the whole body (bounded by
/// MAX_CONTENT_LENGTH) to a file that is unlinked at once, finds the token field in it, and
/// returns a body replaying the file.
async fn spool_and_find(
    state: &AppState,
    body: Body,
    boundary: &str,
) -> Result<(Body, Option<String>), Response> {
    use tokio::io::AsyncWriteExt;
    let path = state
        .settings
        .data_dir
        .join("uploads")
        .join(format!("csrf-{}.part", crate::secrets::random_token(12)));
    let written = async {
        let mut file = tokio::fs::File::create(&path).await?;
        let mut stream = body.into_data_stream();
        let mut total: u64 = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(std::io::Error::other)?;
            total += chunk.len() as u64;
            if total > state.settings.max_content_length {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::FileTooLarge,
                    "body too large",
                ));
            }
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        let scan = tokio::fs::File::open(&path).await?;
        let replay = tokio::fs::File::open(&path).await?;
        Ok::<_, std::io::Error>((scan, replay))
    }
    .await;
    // The open handles keep the bytes readable; the name goes now, whatever happens next.
    let _ = tokio::fs::remove_file(&path).await;
    let (scan, replay) = written.map_err(|e| match e.kind() {
        std::io::ErrorKind::FileTooLarge => error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The request is larger than this server accepts.",
        ),
        std::io::ErrorKind::StorageFull => error_response(
            StatusCode::INSUFFICIENT_STORAGE,
            "The server's disk is full: the form could not be received. Nothing was changed.",
        ),
        _ => error_response(
            StatusCode::BAD_REQUEST,
            "The form could not be read completely. Nothing was changed.",
        ),
    })?;
    let mut multipart = multer::Multipart::new(tokio_util::io::ReaderStream::new(scan), boundary);
    let mut token = None;
    while let Ok(Some(field)) = multipart.next_field().await {
        if field.name() == Some(FIELD) {
            token = field.text().await.ok();
            break;
        }
    }
    Ok((
        Body::from_stream(tokio_util::io::ReaderStream::new(replay)),
        token,
    ))
}

/// The first field's name and text value, once the whole field is in `buf`.
fn parse_first_field(buf: &[u8], boundary: &str) -> Option<(String, String)> {
    let delim = format!("--{boundary}");
    let start = find(buf, delim.as_bytes())? + delim.len();
    let rest = &buf[start..];
    let rest = rest.strip_prefix(b"\r\n")?;
    let header_end = find(rest, b"\r\n\r\n")?;
    let headers = std::str::from_utf8(&rest[..header_end]).ok()?;
    let name = headers
        .split("\r\n")
        .find(|h| h.to_ascii_lowercase().starts_with("content-disposition:"))?
        .split(';')
        .find_map(|p| p.trim().strip_prefix("name="))?
        .trim_matches('"')
        .to_string();
    let value_start = header_end + 4;
    let end = find(&rest[value_start..], format!("\r\n{delim}").as_bytes())?;
    let value = std::str::from_utf8(&rest[value_start..value_start + end])
        .ok()?
        .to_string();
    Some((name, value))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_multipart_field() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\nabc123\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.zip\"\r\n\r\nPK...";
        assert_eq!(
            parse_first_field(body, "XyZ"),
            Some(("csrf_token".into(), "abc123".into()))
        );
        assert_eq!(
            parse_first_field(&body[..40], "XyZ"),
            None,
            "incomplete: read more"
        );
    }
}
