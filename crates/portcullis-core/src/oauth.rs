//! The OAuth 2.0 error vocabulary (RFC 6749 §5.2, RFC 7009, RFC 8707).

use serde::Serialize;
use std::borrow::Cow;

/// An error code with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// Malformed request: missing/repeated parameter, bad encoding, two auth methods.
    InvalidRequest,
    /// Client authentication failed.
    InvalidClient,
    /// The grant is invalid, expired or revoked.
    InvalidGrant,
    /// The client may not use this grant type.
    UnauthorizedClient,
    /// The grant type is not supported.
    UnsupportedGrantType,
    /// A requested scope is not allowed.
    InvalidScope,
    /// A requested resource is not allowed (RFC 8707).
    InvalidTarget,
    /// The token type cannot be revoked (RFC 7009).
    UnsupportedTokenType,
    /// Something failed on our side.
    ServerError,
    /// The server cannot serve right now.
    TemporarilyUnavailable,
}

impl ErrorCode {
    /// The wire name of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidTarget => "invalid_target",
            Self::UnsupportedTokenType => "unsupported_token_type",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }

    /// The HTTP status RFC 6749 §5.2 prescribes for the code.
    pub fn status(self) -> u16 {
        match self {
            Self::InvalidClient => 401,
            Self::ServerError => 500,
            Self::TemporarilyUnavailable => 503,
            _ => 400,
        }
    }
}

/// An OAuth error response: a code and a human-readable description.
///
/// The description is for developers; it never contains a secret or a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OAuthError {
    /// The RFC error code.
    pub error: ErrorCode,
    /// What exactly was wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_description: Option<Cow<'static, str>>,
}

impl OAuthError {
    /// An error with a description.
    pub fn new(error: ErrorCode, description: impl Into<Cow<'static, str>>) -> Self {
        Self {
            error,
            error_description: Some(description.into()),
        }
    }

    /// `invalid_request` with a description.
    pub fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidRequest, description)
    }

    /// `invalid_client` with a description.
    pub fn invalid_client(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidClient, description)
    }
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.error.as_str())?;
        if let Some(d) = &self.error_description {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for OAuthError {}
