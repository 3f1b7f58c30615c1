//! A strict `application/x-www-form-urlencoded` extractor.
//!
//! Refuses: other content types (415), bodies over the limit (413), bytes
//! that are not UTF-8 after percent-decoding (400), and repeated parameters
//! (400, RFC 6749 §3.1/§3.2) except those a spec lets repeat (`resource`,
//! RFC 8707 §2).

use super::SharedState;
use super::error::ApiError;
use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use portcullis_core::oauth::OAuthError;

/// Parameters that may appear more than once.
const MULTI: &[&str] = &["resource"];

/// Parsed form parameters.
#[derive(Debug, Default)]
pub struct FormParams {
    pairs: Vec<(String, String)>,
}

impl FormParams {
    /// Parses a body. `limit` is the byte limit already enforced by the caller.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in form_urlencoded::parse(body) {
            // form_urlencoded replaces invalid UTF-8 with U+FFFD; refuse it
            // rather than act on a silently altered value.
            if k.contains('\u{FFFD}') || v.contains('\u{FFFD}') {
                return Err(OAuthError::invalid_request("request body is not valid UTF-8").into());
            }
            if !MULTI.contains(&k.as_ref()) && pairs.iter().any(|(pk, _)| *pk == k) {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {} is repeated",
                    truncate(&k)
                ))
                .into());
            }
            pairs.push((k.into_owned(), v.into_owned()));
        }
        Ok(Self { pairs })
    }

    /// The value of a single-valued parameter; an empty value counts as absent
    /// (RFC 6749 §3.1).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// All values of a multi-valued parameter.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

/// Names in error messages are cut short and stripped of control characters.
pub fn truncate(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(40).collect()
}

/// The parsed form and the request headers (moved out of the request, so a
/// handler needs no separate `HeaderMap` extractor, which would clone them).
pub struct Form(pub FormParams, pub HeaderMap);

impl FromRequest<SharedState> for Form {
    type Rejection = ApiError;

    async fn from_request(req: Request<Body>, state: &SharedState) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let is_form = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !is_form {
            return Err(ApiError::with_status(
                OAuthError::invalid_request(
                    "content type must be application/x-www-form-urlencoded",
                ),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ));
        }
        let limit = state.body_limit;
        let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
            ApiError::with_status(
                OAuthError::invalid_request(format!("request body exceeds {limit} bytes")),
                StatusCode::PAYLOAD_TOO_LARGE,
            )
        })?;
        Ok(Form(FormParams::parse(&bytes)?, parts.headers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_refused_except_resource() {
        assert!(FormParams::parse(b"a=1&a=2").is_err());
        let f = FormParams::parse(b"resource=x&resource=y&a=").unwrap();
        assert_eq!(f.get_all("resource").collect::<Vec<_>>(), ["x", "y"]);
        assert_eq!(f.get("a"), None, "empty is absent");
    }

    #[test]
    fn invalid_utf8_is_refused() {
        assert!(FormParams::parse(b"a=%FF%FE").is_err());
        assert!(FormParams::parse(b"a=\xff").is_err());
        assert_eq!(FormParams::parse(b"a=%C3%A9").unwrap().get("a"), Some("é"));
    }
}
