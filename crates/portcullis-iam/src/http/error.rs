//! The one place errors become HTTP responses (RFC 6749 §5.2).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use portcullis_core::oauth::{ErrorCode, OAuthError};

/// An OAuth error on its way to the wire.
#[derive(Debug)]
pub struct ApiError {
    /// The RFC error.
    pub error: OAuthError,
    /// Status, when it differs from the code's (413, 415).
    pub status: Option<StatusCode>,
}

impl ApiError {
    /// With a specific HTTP status.
    pub fn with_status(error: OAuthError, status: StatusCode) -> Self {
        Self {
            error,
            status: Some(status),
        }
    }

    /// A generic `server_error`; the cause is logged, never sent.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::from(OAuthError::new(ErrorCode::ServerError, "internal error"))
    }

    /// `temporarily_unavailable` for a store outage; the cause is logged.
    pub fn unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "storage unavailable");
        Self::from(OAuthError::new(
            ErrorCode::TemporarilyUnavailable,
            "storage unavailable",
        ))
    }
}

impl From<OAuthError> for ApiError {
    fn from(error: OAuthError) -> Self {
        Self {
            error,
            status: None,
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::unavailable(&e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status.unwrap_or_else(|| {
            StatusCode::from_u16(self.error.error.status()).unwrap_or(StatusCode::BAD_REQUEST)
        });
        let mut resp = (status, Json(&self.error)).into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6749 §5.2 requires the challenge when Basic was attempted;
            // it is sent on every 401 so clients learn which scheme to use.
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"portcullis\", charset=\"UTF-8\""),
            );
        }
        resp
    }
}
