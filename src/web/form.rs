//! Strict `application/x-www-form-urlencoded` parsing. Browsers send UTF-8; bytes that do not
//! decode as UTF-8 are refused with a 400 instead of being silently replaced.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::web::errors::error_response;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("The form contained text that is not valid UTF-8. Nothing was changed.")]
    NotUtf8,
    #[error("The form was malformed (a broken %-escape). Nothing was changed.")]
    BadEscape,
}

/// Decodes every pair, refusing bad escapes and non-UTF-8 bytes.
pub fn parse_strict(body: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    body.split(|b| *b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let mut it = pair.splitn(2, |b| *b == b'=');
            let key = decode(it.next().unwrap_or_default())?;
            let value = decode(it.next().unwrap_or_default())?;
            Ok((key, value))
        })
        .collect()
}

fn decode(raw: &[u8]) -> Result<String, FormError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = raw.get(i + 1..i + 3).ok_or(FormError::BadEscape)?;
                let s = std::str::from_utf8(hex).map_err(|_| FormError::BadEscape)?;
                out.push(u8::from_str_radix(s, 16).map_err(|_| FormError::BadEscape)?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| FormError::NotUtf8)
}

/// Like axum's `Form`, but strict about encoding; its rejections render as 400 pages.
pub struct Form<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Form<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        parse_strict(&bytes).map_err(|e| bad_request(e.to_string()))?;
        serde_urlencoded::from_bytes(&bytes).map(Form).map_err(|_| {
            bad_request(
                "The form was incomplete; reload the page and try again. Nothing was changed."
                    .into(),
            )
        })
    }
}

fn bad_request(msg: String) -> Response {
    error_response(StatusCode::BAD_REQUEST, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_utf8_and_refuses_the_rest() {
        assert_eq!(
            parse_strict(b"a=1&b=caf%C3%A9+au+lait&c").unwrap(),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "café au lait".into()),
                ("c".into(), "".into())
            ]
        );
        assert_eq!(parse_strict(b"a=%FF%FE"), Err(FormError::NotUtf8));
        assert_eq!(parse_strict(b"a=\xff"), Err(FormError::NotUtf8));
        assert_eq!(parse_strict(b"a=%G1"), Err(FormError::BadEscape));
        assert_eq!(parse_strict(b"a=%4"), Err(FormError::BadEscape));
    }
}
