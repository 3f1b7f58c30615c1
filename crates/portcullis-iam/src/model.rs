//! What the IAM server stores: clients, signing keys, revocations.

use portcullis_core::jose::SigningAlgorithm;
use portcullis_core::{Audience, ClientId, ScopeSet, UnixTime};
use serde::Serialize;

/// The grant types a client may be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    /// RFC 6749 §4.4.
    ClientCredentials,
    /// RFC 6749 §4.1, with PKCE (RFC 7636): browser logins.
    AuthorizationCode,
    /// RFC 6749 §6, with rotation.
    RefreshToken,
    /// RFC 8693: a service exchanges a token it received for one to a
    /// downstream audience (delegation, `act`).
    TokenExchange,
}

impl GrantType {
    /// The `grant_type` wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientCredentials => "client_credentials",
            Self::AuthorizationCode => "authorization_code",
            Self::RefreshToken => "refresh_token",
            Self::TokenExchange => crate::exchange::GRANT_TYPE,
        }
    }

    /// Parses a wire value; `None` for grants we do not implement.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "client_credentials" => Some(Self::ClientCredentials),
            "authorization_code" => Some(Self::AuthorizationCode),
            "refresh_token" => Some(Self::RefreshToken),
            crate::exchange::GRANT_TYPE => Some(Self::TokenExchange),
            _ => None,
        }
    }
}

/// How a client proves who it is at the token endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Credential {
    /// `client_secret_basic` / `client_secret_post`: a keyed digest of the secret.
    Secret {
        /// HMAC-SHA256 of the secret under the master-key-derived digest key.
        digest: Vec<u8>,
    },
    /// `private_key_jwt` with keys registered inline (a JWK Set).
    Jwks(serde_json::Value),
    /// `private_key_jwt` with keys fetched from the client's `jwks_uri`.
    JwksUri(url::Url),
    /// A public client (`none`, RFC 7591 §2): a browser or native app that
    /// cannot keep a secret. It may only use the authorization-code flow
    /// with PKCE and refresh its tokens; never client credentials.
    None,
    /// `tls_client_auth` (RFC 8705 §2.1): a client certificate that chains
    /// to the listener's client CA (CRL-checked) and carries this name.
    TlsClientAuth(portcullis_ca::SubjectMatch),
    /// `self_signed_tls_client_auth` (RFC 8705 §2.2): one of the registered
    /// (self-signed) certificates, by `x5t#S256` thumbprint.
    SelfSignedTls(Vec<String>),
}

impl Credential {
    /// The authentication methods this credential allows.
    pub fn auth_methods(&self) -> &'static [&'static str] {
        match self {
            Self::Secret { .. } => &["client_secret_basic", "client_secret_post"],
            Self::Jwks(_) | Self::JwksUri(_) => &["private_key_jwt"],
            Self::None => &["none"],
            Self::TlsClientAuth(_) => &["tls_client_auth"],
            Self::SelfSignedTls(_) => &["self_signed_tls_client_auth"],
        }
    }
}

/// A registered OAuth client.
#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    /// Client identifier.
    pub id: ClientId,
    /// Human-readable name.
    pub name: String,
    /// How it authenticates.
    pub credential: Credential,
    /// Grants it may use.
    pub grant_types: Vec<GrantType>,
    /// Scopes it may request.
    pub allowed_scopes: ScopeSet,
    /// Scopes it gets when it requests none (a subset of `allowed_scopes`).
    pub default_scopes: ScopeSet,
    /// Audiences (resource indicators) it may request.
    pub allowed_audiences: Vec<Audience>,
    /// Audiences it gets when it requests none (a subset of `allowed_audiences`).
    pub default_audiences: Vec<Audience>,
    /// Access-token lifetime override, in seconds.
    pub access_token_ttl: Option<u64>,
    /// How it takes part in browser logins.
    pub login: LoginSettings,
    /// `tls_client_certificate_bound_access_tokens` (RFC 8705 §3.4): its
    /// tokens are always bound to its TLS client certificate, which it must
    /// present (certificate-authenticated clients' tokens are bound anyway).
    pub tls_bound_tokens: bool,
    /// A disabled client cannot authenticate; its tokens are revoked.
    pub enabled: bool,
    /// Creation time.
    pub created_at: UnixTime,
    /// Last change.
    pub updated_at: UnixTime,
}

/// How a client takes part in browser logins (the authorization-code flow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginSettings {
    /// Registered redirect URIs, matched as exact strings (a loopback IP
    /// URI may vary its port; see [`crate::authorize`]).
    pub redirect_uris: Vec<String>,
    /// Where RP-initiated logout may send the browser afterwards.
    pub post_logout_redirect_uris: Vec<String>,
    /// A first-party client skips the consent screen.
    pub first_party: bool,
    /// PKCE (S256) is required; always true for public clients.
    pub require_pkce: bool,
}

impl Default for LoginSettings {
    fn default() -> Self {
        Self {
            redirect_uris: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            first_party: false,
            require_pkce: true,
        }
    }
}

/// A stored signing key.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub alg: SigningAlgorithm,
    /// PKCS#8 private key, sealed with the master key (context: the kid).
    pub sealed_private: Vec<u8>,
    /// Public JWK.
    pub public_jwk: serde_json::Value,
    /// When it was created (and published).
    pub created_at: UnixTime,
    /// When it starts signing.
    pub activate_at: UnixTime,
}

/// What a revocation entry covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationKind {
    /// One token, by `jti`.
    Jti,
    /// Every token of a client issued at or before `issued_before`.
    Client,
}

impl RevocationKind {
    /// Stored/wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jti => "jti",
            Self::Client => "client",
        }
    }
}

/// An entry of the revocation feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Revocation {
    /// Position in the feed (strictly increasing).
    pub seq: i64,
    /// What it covers.
    pub kind: RevocationKind,
    /// The jti or the client id.
    pub subject: String,
    /// For `client`: tokens with `iat` at or before this are revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_before: Option<UnixTime>,
    /// After this no token it covers can still be valid; the entry is dropped.
    pub expires_at: UnixTime,
    /// When it was revoked.
    pub revoked_at: UnixTime,
}

// ---------------------------------------------------------------------------
// Users (people who log in). Validation of the other fields: `crate::users`.
// ---------------------------------------------------------------------------

/// A user's id and OIDC `sub`: `u_` + 128 random bits, base64url. Opaque,
/// never reused, never changes. Usernames cannot start with `u_`, so "id or
/// username" is never ambiguous.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    /// The prefix every user id starts with (and no username does).
    pub const PREFIX: &'static str = "u_";

    /// A new random id.
    pub fn generate() -> Result<Self, crate::crypto::CryptoError> {
        Ok(Self(format!(
            "{}{}",
            Self::PREFIX,
            crate::crypto::random_token(16)?
        )))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for UserId {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix(Self::PREFIX).ok_or("not a user id")?;
        let ok = !rest.is_empty()
            && rest.len() <= 64
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err("not a user id")
        }
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A username: 1–64 characters of `A-Z a-z 0-9 . _ @ -`, not `.` or `..`,
/// not starting with `u_` (the prefix of user ids). Stored and compared
/// lowercased, so `Alice` and `alice` are the same user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String);

impl Username {
    /// Longest username, in characters.
    pub const MAX_LEN: usize = 64;

    /// The username (lowercase).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Username {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(format!("1 to {} characters", Self::MAX_LEN));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
        {
            return Err("only letters, digits, '.', '_', '@' and '-' are allowed".into());
        }
        if s == "." || s == ".." {
            return Err("'.' and '..' are reserved".into());
        }
        let lower = s.to_ascii_lowercase();
        if lower.starts_with(UserId::PREFIX) {
            return Err(format!(
                "must not start with {:?} (reserved for user ids)",
                UserId::PREFIX
            ));
        }
        Ok(Self(lower))
    }
}

impl std::fmt::Display for Username {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who a user is to others and what they may do: the fields that become
/// claims (`email`, `email_verified`, `name`, roles, groups).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserProfile {
    /// Email address, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Whether the email address has been verified.
    pub email_verified: bool,
    /// Name shown to people (OIDC `name`).
    pub display_name: String,
    /// Roles, in the order given, without duplicates.
    pub roles: Vec<String>,
    /// Groups, in the order given, without duplicates.
    pub groups: Vec<String>,
}

/// A person who can log in.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// Id and OIDC `sub`.
    pub id: UserId,
    /// Login name, unique regardless of case.
    pub username: Username,
    /// Email, name, roles, groups.
    pub profile: UserProfile,
    /// argon2id PHC string; `None` means no password login.
    pub password_hash: Option<portcullis_core::Secret>,
    /// A disabled user cannot log in.
    pub enabled: bool,
    /// Creation time.
    pub created_at: UnixTime,
    /// Last change.
    pub updated_at: UnixTime,
}

/// A role (RBAC): the scopes it grants and who holds it besides the users
/// that list it (members of `groups`, and `clients`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Role {
    /// Unique name (also the value in tokens' `roles`).
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Scopes it grants.
    pub scopes: Vec<String>,
    /// Groups whose members hold it.
    pub groups: Vec<String>,
    /// Clients that hold it (for their client-credentials tokens).
    pub clients: Vec<String>,
    /// Created.
    pub created_at: UnixTime,
    /// Last changed.
    pub updated_at: UnixTime,
}
