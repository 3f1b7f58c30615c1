//! Rows of the browser-login flow: SSO sessions, authorization codes,
//! grants (what one redeemed code granted, the family of its refresh
//! tokens), refresh tokens and sign-in failures. Secret values are stored
//! only as digests; the caller computes them.

use portcullis_core::UnixTime;

/// An SSO session at the IAM server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginSession {
    /// Public session id (`sid` of ID tokens).
    pub sid: String,
    /// Who logged in.
    pub user_id: String,
    /// When the password was checked.
    pub auth_time: UnixTime,
    /// When the session ends.
    pub expires_at: UnixTime,
}

/// Scopes a user approved for a third-party client.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Consent {
    /// The user.
    pub user_id: String,
    /// The client.
    pub client_id: String,
    /// Approved scopes (space-separated).
    pub scope: String,
    /// When last approved.
    pub granted_at: UnixTime,
}

impl Consent {
    /// Whether every scope of `scope` was approved.
    pub fn covers(&self, scope: &str) -> bool {
        scope
            .split(' ')
            .filter(|v| !v.is_empty())
            .all(|v| self.scope.split(' ').any(|g| g == v))
    }
}

/// An authorization code and what it is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCode {
    /// The client it was issued to.
    pub client_id: String,
    /// The redirect URI of the request, as sent.
    pub redirect_uri: String,
    /// The PKCE S256 challenge, if any.
    pub code_challenge: Option<String>,
    /// The OIDC nonce, if any.
    pub nonce: Option<String>,
    /// Granted scope (space-separated).
    pub scope: String,
    /// Audiences of the access tokens.
    pub audiences: Vec<String>,
    /// The user.
    pub user_id: String,
    /// When the user authenticated.
    pub auth_time: UnixTime,
    /// The SSO session.
    pub sid: String,
    /// Expiry.
    pub expires_at: UnixTime,
    /// Whether it was already redeemed.
    pub used: bool,
}

/// What one redeemed code granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Random id.
    pub id: String,
    /// The client.
    pub client_id: String,
    /// The user.
    pub user_id: String,
    /// The SSO session it came from.
    pub sid: String,
    /// Granted scope.
    pub scope: String,
    /// Audiences of its access tokens.
    pub audiences: Vec<String>,
    /// When the user authenticated.
    pub auth_time: UnixTime,
    /// Absolute end of its refresh tokens.
    pub expires_at: UnixTime,
    /// `x5t#S256` of the client certificate a public client's refresh
    /// tokens are bound to (RFC 8705 §4); refreshing needs the same one.
    pub cnf_x5t: Option<String>,
}

/// Tokens being issued under a grant, recorded in the same transaction as
/// the redemption or rotation that issues them.
#[derive(Debug, Clone)]
pub struct Issuance {
    /// The access token's jti.
    pub access_jti: String,
    /// The access token's expiry.
    pub access_exp: UnixTime,
    /// The new refresh token (digest and idle expiry), if one is issued.
    pub refresh: Option<(Vec<u8>, UnixTime)>,
}

/// What presenting a refresh token led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// Rotated: the old token is spent and the new one recorded.
    Rotated(Grant),
    /// Unknown, expired, revoked, or issued to another client.
    Invalid,
    /// A rotated token presented again after the grace window: the grant
    /// (family) is now revoked with every access token issued under it.
    Replayed {
        /// The revoked grant.
        grant_id: String,
    },
}
