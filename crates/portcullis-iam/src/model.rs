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
}

impl GrantType {
    /// The `grant_type` wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientCredentials => "client_credentials",
        }
    }

    /// Parses a wire value; `None` for grants we do not implement.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "client_credentials" => Some(Self::ClientCredentials),
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
}

impl Credential {
    /// The authentication methods this credential allows.
    pub fn auth_methods(&self) -> &'static [&'static str] {
        match self {
            Self::Secret { .. } => &["client_secret_basic", "client_secret_post"],
            Self::Jwks(_) | Self::JwksUri(_) => &["private_key_jwt"],
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
    /// A disabled client cannot authenticate; its tokens are revoked.
    pub enabled: bool,
    /// Creation time.
    pub created_at: UnixTime,
    /// Last change.
    pub updated_at: UnixTime,
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
