//! CSRF protection for every state-changing request, applied as middleware to the whole router
//! so a route added later cannot forget it. The token is an HMAC (key from SECRET_KEY) of the
//! session's secret, or of the anonymous cookie's secret before login. It is accepted from the
//! form field `csrf_token` or the `X-CSRFToken` / `X-CSRF-Token` header, as in the original.
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
            let token = first.filter(|(name, _)| name == FIELD).map(|(_, v)| v);
            (Request::from_parts(parts, body), token)
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
