//! Configuration: a serde [`RawConfig`] (file, then flags/env layered on top
//! by the binary) validated once into a [`Config`] the server can trust.

use crate::crypto::MasterKey;
use portcullis_core::jose::SigningAlgorithm;
use portcullis_core::{Audience, ClientId, Issuer, ScopeSet, Secret};
use serde::Deserialize;
use std::net::SocketAddr;
use std::str::FromStr;

/// Whether the server runs for real or for a developer's laptop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Refuses to start without a master key and an admin token.
    Production,
    /// Generates what is missing; says so loudly.
    Development,
}

/// Configuration as written in `portcullis.toml` (all keys optional).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `production` (default) or `development`.
    pub mode: Option<String>,
    /// Public listener (token, discovery, JWKS), `host:port`.
    pub listen: Option<String>,
    /// Admin API listener, `host:port`.
    pub admin_listen: Option<String>,
    /// Issuer URL; defaults to `http://` + `listen`.
    pub issuer: Option<String>,
    /// `sqlite://PATH`.
    pub database_url: Option<String>,
    /// 32 bytes, base64. Encrypts signing keys, keys client-secret digests.
    pub master_key: Option<String>,
    /// Bearer token for the admin API.
    pub admin_token: Option<String>,
    /// ES256 (default), EdDSA, RS256 or PS256.
    pub signing_alg: Option<String>,
    /// Default access-token lifetime.
    pub access_token_ttl_secs: Option<u64>,
    /// Upper bound of any access-token lifetime (client overrides included).
    pub max_access_token_ttl_secs: Option<u64>,
    /// How long a new key is published before it signs.
    pub key_publish_delay_secs: Option<u64>,
    /// `Cache-Control: max-age` of the JWKS (must be below the publish delay).
    pub jwks_max_age_secs: Option<u64>,
    /// How often a replica re-reads keys from the database.
    pub key_refresh_secs: Option<u64>,
    /// Longest accepted `private_key_jwt` assertion lifetime.
    pub client_assertion_max_lifetime_secs: Option<u64>,
    /// How long client records are cached before re-reading.
    pub client_cache_ttl_secs: Option<u64>,
    /// Largest accepted request body.
    pub max_body_bytes: Option<usize>,
    /// How long SIGTERM waits for in-flight requests.
    pub shutdown_grace_secs: Option<u64>,
    /// Clients applied idempotently at start-up.
    #[serde(default)]
    pub clients: Vec<RawClient>,
    /// argon2id cost of people's passwords (`[passwords]`).
    #[serde(default)]
    pub passwords: RawPasswords,
    /// Users applied idempotently at start-up (`[[users]]`), for development.
    #[serde(default)]
    pub users: Vec<RawUser>,
    /// Browser login: sessions, ID and refresh tokens, sign-in throttling.
    #[serde(default)]
    pub login: RawLogin,
    /// Token exchange (RFC 8693): who may exchange which tokens for what.
    #[serde(default)]
    pub token_exchange: RawTokenExchange,
    /// Redis (`[redis]`): revocation events are published there.
    pub redis: Option<portcullis_redis::RawRedis>,
    /// TLS on the public listener (`[tls]`); plain HTTP without it.
    pub tls: Option<RawTls>,
    /// TLS on the admin listener (`[admin_tls]`); plain HTTP without it.
    pub admin_tls: Option<RawTls>,
}

/// `[tls]` / `[admin_tls]`: TLS on a listener, and client certificates.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM: the server certificate, then intermediates.
    pub cert: Option<String>,
    /// PEM: the server's private key.
    pub key: Option<String>,
    /// `none`, `optional` (default when `client_ca` is set) or `required`.
    pub client_auth: Option<String>,
    /// PEM bundle of CAs client certificates are verified against.
    pub client_ca: Option<String>,
    /// PEM CRL files checked for client certificates.
    #[serde(default)]
    pub crls: Vec<String>,
    /// Admit self-signed client certificates without a chain (RFC 8705
    /// §2.2 `self_signed_tls_client_auth`); default true when client
    /// certificates are asked for.
    pub allow_self_signed: Option<bool>,
    /// Refuse client certificates while a CRL is past its `nextUpdate`
    /// (fail closed when the CA stops publishing); default false.
    #[serde(default)]
    pub enforce_crl_expiry: bool,
    /// How often certificate, key, CA and CRL files are checked for changes
    /// (default 5 s).
    pub reload_interval_secs: Option<u64>,
    /// How long a client has to finish the handshake (default 10 s).
    pub handshake_timeout_secs: Option<u64>,
}

/// Validated TLS settings of a listener.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// The files, for [`portcullis_ca::Reloading`].
    pub files: portcullis_ca::tls::ServerTlsFiles,
    /// Poll interval of the files.
    pub reload_interval: std::time::Duration,
    /// Handshake timeout.
    pub handshake_timeout: std::time::Duration,
}

impl TlsConfig {
    /// Whether client certificates are asked for.
    pub fn client_certs(&self) -> bool {
        !matches!(self.files.client_auth, portcullis_ca::tls::ClientAuth::None)
    }
}

impl RawTls {
    fn validate(self, table: &str) -> Result<TlsConfig, ConfigError> {
        use portcullis_ca::tls::{ClientAuth, ClientTrust, ServerTlsFiles};
        let key = |k: &str| format!("{table}.{k}");
        let file = |k: &str, v: Option<String>| -> Result<std::path::PathBuf, ConfigError> {
            let v = v.ok_or_else(|| err(key(k), "required (a PEM file)"))?;
            let p = std::path::PathBuf::from(v);
            if !p.is_file() {
                return Err(err(
                    key(k),
                    format!("{} is not a readable file", p.display()),
                ));
            }
            Ok(p)
        };
        let cert_chain = file("cert", self.cert)?;
        let tls_key = file("key", self.key)?;
        let mode = match self.client_auth.as_deref() {
            None if self.client_ca.is_some() => "optional",
            None => "none",
            Some(m @ ("none" | "optional" | "required")) => m,
            Some(other) => {
                return Err(err(
                    key("client_auth"),
                    format!("expected none, optional or required, got {other:?}"),
                ));
            }
        };
        let client_auth = if mode == "none" {
            if self.client_ca.is_some() || !self.crls.is_empty() || self.enforce_crl_expiry {
                return Err(err(
                    key("client_auth"),
                    "is none, but client_ca, crls or enforce_crl_expiry are set",
                ));
            }
            ClientAuth::None
        } else {
            if self.enforce_crl_expiry && self.crls.is_empty() {
                return Err(err(
                    key("enforce_crl_expiry"),
                    "needs at least one file in crls",
                ));
            }
            let roots = file("client_ca", self.client_ca)?;
            let mut crls = Vec::with_capacity(self.crls.len());
            for (n, c) in self.crls.into_iter().enumerate() {
                crls.push(file(&format!("crls[{n}]"), Some(c))?);
            }
            let trust = ClientTrust {
                allow_self_signed: self.allow_self_signed.unwrap_or(true),
                enforce_crl_expiry: self.enforce_crl_expiry,
                ..ClientTrust::new(roots, crls)
            };
            if mode == "required" {
                ClientAuth::Required(trust)
            } else {
                ClientAuth::Optional(trust)
            }
        };
        let secs = |k: &str, v: Option<u64>, default: u64| match v.unwrap_or(default) {
            0 => Err(err(key(k), "must be at least 1")),
            v => Ok(std::time::Duration::from_secs(v)),
        };
        Ok(TlsConfig {
            files: ServerTlsFiles {
                cert_chain,
                key: tls_key,
                client_auth,
                alpn_protocols: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            },
            reload_interval: secs("reload_interval_secs", self.reload_interval_secs, 5)?,
            handshake_timeout: secs("handshake_timeout_secs", self.handshake_timeout_secs, 10)?,
        })
    }
}

/// `[token_exchange]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokenExchange {
    /// Longest delegation chain (`act` nesting) of an issued token (default 3).
    pub max_depth: Option<usize>,
    /// `[[token_exchange.rules]]`.
    #[serde(default)]
    pub rules: Vec<RawExchangeRule>,
}

/// `[[token_exchange.rules]]`: `client` may exchange subject tokens whose
/// `aud` holds one of `subject_audiences` for tokens to `audiences`, with at
/// most `scopes` (and never more than the subject token has).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExchangeRule {
    /// The exchanging client (it needs the token-exchange grant type too).
    pub client: String,
    /// Audiences the subject token must be for.
    pub subject_audiences: Vec<String>,
    /// Audiences it may get tokens for.
    pub audiences: Vec<String>,
    /// The widest scope of the issued tokens.
    #[serde(default)]
    pub scopes: Vec<String>,
}

impl RawTokenExchange {
    fn validate(self) -> Result<crate::exchange::ExchangePolicy, ConfigError> {
        let max_depth = self.max_depth.unwrap_or(3);
        if !(1..=10).contains(&max_depth) {
            return Err(err("token_exchange.max_depth", "expected 1 to 10"));
        }
        let mut rules = Vec::with_capacity(self.rules.len());
        for (n, r) in self.rules.into_iter().enumerate() {
            let at = |k: &str| format!("token_exchange.rules[{n}].{k}");
            if r.client.parse::<ClientId>().is_err() {
                return Err(err(at("client"), "not a valid client id"));
            }
            if r.subject_audiences.is_empty() {
                return Err(err(at("subject_audiences"), "list at least one audience"));
            }
            if r.audiences.is_empty() {
                return Err(err(at("audiences"), "list at least one audience"));
            }
            for (k, list) in [
                ("subject_audiences", &r.subject_audiences),
                ("audiences", &r.audiences),
            ] {
                if let Some(bad) = list
                    .iter()
                    .find(|a| a.parse::<portcullis_core::Audience>().is_err())
                {
                    return Err(err(at(k), format!("{bad:?} is not a valid audience")));
                }
            }
            if let Some(bad) = r
                .scopes
                .iter()
                .find(|s| s.parse::<portcullis_core::Scope>().is_err())
            {
                return Err(err(at("scopes"), format!("{bad:?} is not a valid scope")));
            }
            rules.push(crate::exchange::ExchangeRule {
                client: r.client,
                subject_audiences: r.subject_audiences,
                audiences: r.audiences,
                scopes: r.scopes,
            });
        }
        Ok(crate::exchange::ExchangePolicy { max_depth, rules })
    }
}

/// A client declared in the config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    /// Client id.
    pub id: String,
    /// Display name (defaults to the id).
    pub name: Option<String>,
    /// Plain-text secret (prefer `secret_env`).
    pub secret: Option<String>,
    /// Name of an environment variable holding the secret.
    pub secret_env: Option<String>,
    /// Inline JWK Set for `private_key_jwt`.
    pub jwks: Option<serde_json::Value>,
    /// JWK Set URL for `private_key_jwt`.
    pub jwks_uri: Option<String>,
    /// Allowed grants (default `["client_credentials"]`).
    pub grant_types: Option<Vec<String>>,
    /// Allowed scopes.
    #[serde(default)]
    pub allowed_scopes: Vec<String>,
    /// Default scopes (default: none).
    #[serde(default)]
    pub default_scopes: Vec<String>,
    /// Allowed audiences.
    #[serde(default)]
    pub allowed_audiences: Vec<String>,
    /// Default audiences.
    #[serde(default)]
    pub default_audiences: Vec<String>,
    /// Token lifetime override.
    pub access_token_ttl_secs: Option<u64>,
    /// A public client (`token_endpoint_auth_method = none`): no credential.
    #[serde(default)]
    pub public: bool,
    /// Redirect URIs for the authorization-code flow.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Where RP-initiated logout may return to.
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// Skip the consent screen (default false).
    #[serde(default)]
    pub first_party: bool,
    /// Require PKCE (default true; always true for public clients).
    pub require_pkce: Option<bool>,
    /// Enabled (default true).
    pub enabled: Option<bool>,
    /// `tls_client_auth` or `self_signed_tls_client_auth` (RFC 8705 §2);
    /// other methods follow from secret, jwks or public.
    pub token_endpoint_auth_method: Option<String>,
    /// `tls_client_auth`: the certificate's subject DN (RFC 4514).
    pub tls_client_auth_subject_dn: Option<String>,
    /// `tls_client_auth`: a DNS SAN.
    pub tls_client_auth_san_dns: Option<String>,
    /// `tls_client_auth`: a URI SAN (e.g. a SPIFFE ID).
    pub tls_client_auth_san_uri: Option<String>,
    /// `tls_client_auth`: an IP address SAN.
    pub tls_client_auth_san_ip: Option<String>,
    /// `tls_client_auth`: an email SAN.
    pub tls_client_auth_san_email: Option<String>,
    /// `self_signed_tls_client_auth`: the client's certificates, PEM.
    pub tls_client_certificates: Option<Vec<String>>,
    /// `self_signed_tls_client_auth`: `x5t#S256` of the client's certificates.
    pub tls_client_certificate_thumbprints: Option<Vec<String>>,
    /// Bind every access token to the client certificate (RFC 8705 §3.4).
    #[serde(default)]
    pub tls_client_certificate_bound_access_tokens: bool,
}

/// `[passwords]`: argon2id parameters for hashing people's passwords.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPasswords {
    /// Memory per hash, KiB (default 19456, OWASP's minimum).
    pub memory_kib: Option<u32>,
    /// Passes over the memory (default 2).
    pub iterations: Option<u32>,
    /// Lanes (default 1).
    pub parallelism: Option<u32>,
}

/// A user declared in the config file (`[[users]]`), for development.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    /// Login name.
    pub username: String,
    /// Plain-text password: development mode only.
    pub password: Option<String>,
    /// argon2id PHC string (`portcullis gateway hash-password`).
    pub password_hash: Option<String>,
    /// Email address.
    pub email: Option<String>,
    /// Whether the email address counts as verified (default false).
    pub email_verified: Option<bool>,
    /// Display name (defaults to the username).
    pub display_name: Option<String>,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Enabled (default true).
    pub enabled: Option<bool>,
}

pub use portcullis_core::config::ConfigError;

fn err(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::new(key, problem)
}

/// The credential of a declared client, before hashing.
#[derive(Debug, Clone)]
pub enum ClientCredentialSpec {
    /// A secret to digest.
    Secret(Secret),
    /// Inline JWK Set.
    Jwks(serde_json::Value),
    /// JWK Set URL.
    JwksUri(url::Url),
    /// A public client: no credential.
    None,
    /// A TLS client certificate (RFC 8705 §2), as registered.
    Tls(crate::model::Credential),
}

/// A validated declared client.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    /// Client id.
    pub id: ClientId,
    /// Display name.
    pub name: String,
    /// Credential.
    pub credential: ClientCredentialSpec,
    /// Grants.
    pub grant_types: Vec<crate::model::GrantType>,
    /// Allowed scopes.
    pub allowed_scopes: ScopeSet,
    /// Default scopes.
    pub default_scopes: ScopeSet,
    /// Allowed audiences.
    pub allowed_audiences: Vec<Audience>,
    /// Default audiences.
    pub default_audiences: Vec<Audience>,
    /// Lifetime override.
    pub access_token_ttl: Option<u64>,
    /// Browser-login settings.
    pub login: crate::model::LoginSettings,
    /// Tokens always bound to the client certificate.
    pub tls_bound_tokens: bool,
    /// Enabled.
    pub enabled: bool,
}

/// argon2id cost parameters, checked: every hash the server makes uses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordParams(argon2::Params);

impl PasswordParams {
    /// Memory per hash, KiB.
    pub fn memory_kib(&self) -> u32 {
        self.0.m_cost()
    }

    /// Passes over the memory.
    pub fn iterations(&self) -> u32 {
        self.0.t_cost()
    }

    /// Lanes.
    pub fn parallelism(&self) -> u32 {
        self.0.p_cost()
    }

    /// Whether they are below OWASP's recommended minimum (e.g. 19 MiB × 2).
    pub fn below_recommended(&self) -> bool {
        u64::from(self.memory_kib()) * u64::from(self.iterations()) < 7 * 1024 * 5
    }

    /// The argon2 parameters.
    pub fn argon2(&self) -> &argon2::Params {
        &self.0
    }
}

impl Default for PasswordParams {
    fn default() -> Self {
        Self(argon2::Params::DEFAULT)
    }
}

impl RawPasswords {
    fn validate(self) -> Result<PasswordParams, ConfigError> {
        let d = argon2::Params::DEFAULT;
        let (m, t, p) = (
            self.memory_kib.unwrap_or(d.m_cost()),
            self.iterations.unwrap_or(d.t_cost()),
            self.parallelism.unwrap_or(d.p_cost()),
        );
        if !(1..=64).contains(&p) {
            return Err(err("passwords.parallelism", "expected 1 to 64"));
        }
        if !(1..=100).contains(&t) {
            return Err(err("passwords.iterations", "expected 1 to 100"));
        }
        if m < 8 * p || m > 4 * 1024 * 1024 {
            return Err(err(
                "passwords.memory_kib",
                format!("expected 8 × parallelism ({}) to 4194304 (4 GiB)", 8 * p),
            ));
        }
        argon2::Params::new(m, t, p, None)
            .map(PasswordParams)
            .map_err(|e| err("passwords", e.to_string()))
    }
}

/// The password of a declared user.
#[derive(Debug, Clone)]
pub enum UserPasswordSpec {
    /// Plain text, to hash (development mode only).
    Plain(Secret),
    /// An argon2id PHC string, stored as given.
    Hash(Secret),
}

/// A validated declared user.
#[derive(Debug, Clone)]
pub struct UserSpec {
    /// Login name.
    pub username: crate::model::Username,
    /// Password; `None` keeps the stored one (a new user gets none).
    pub password: Option<UserPasswordSpec>,
    /// Email, name, roles, groups.
    pub profile: crate::model::UserProfile,
    /// Enabled.
    pub enabled: bool,
}

/// Validated configuration.
#[derive(Debug)]
pub struct Config {
    /// Mode.
    pub mode: Mode,
    /// Public listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Issuer; `None` means "derive from the bound public address" (port 0 in tests).
    pub issuer: Option<Issuer>,
    /// Database URL.
    pub database_url: String,
    /// Master key.
    pub master_key: MasterKey,
    /// Admin bearer token; `None` disables the admin API.
    pub admin_token: Option<Secret>,
    /// Signing algorithm for new keys.
    pub signing_alg: SigningAlgorithm,
    /// Default token lifetime.
    pub access_token_ttl: u64,
    /// Maximum token lifetime.
    pub max_access_token_ttl: u64,
    /// Publish delay of a rotated key.
    pub key_publish_delay: u64,
    /// JWKS max-age.
    pub jwks_max_age: u64,
    /// Key reload interval.
    pub key_refresh: u64,
    /// Assertion lifetime cap.
    pub client_assertion_max_lifetime: u64,
    /// Client cache TTL.
    pub client_cache_ttl: u64,
    /// Body limit.
    pub max_body_bytes: usize,
    /// Drain time on shutdown.
    pub shutdown_grace: u64,
    /// Declared clients.
    pub clients: Vec<ClientSpec>,
    /// argon2id parameters for people's passwords.
    pub passwords: PasswordParams,
    /// Declared users.
    pub users: Vec<UserSpec>,
    /// Browser login settings.
    pub login: LoginConfig,
    /// Token-exchange policy.
    pub token_exchange: crate::exchange::ExchangePolicy,
    /// Redis, where revocation events are published.
    pub redis: Option<portcullis_redis::RedisConfig>,
    /// TLS on the public listener; `None` is plain HTTP.
    pub tls: Option<TlsConfig>,
    /// TLS on the admin listener; `None` is plain HTTP.
    pub admin_tls: Option<TlsConfig>,
}

/// The `[login]` table: browser login (authorization-code flow).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogin {
    /// Lifetime of the SSO session at the IAM server (default 8 h).
    pub session_ttl_secs: Option<u64>,
    /// Lifetime of ID tokens (default 300 s).
    pub id_token_ttl_secs: Option<u64>,
    /// A refresh token unused this long expires (default 1 day).
    pub refresh_token_idle_ttl_secs: Option<u64>,
    /// No refresh token of a grant outlives this (default 30 days).
    pub refresh_token_max_ttl_secs: Option<u64>,
    /// A rotated refresh token presented again within this many seconds
    /// (concurrent refreshes) is still served; later, the family is revoked
    /// (default 10 s, at most 60).
    pub refresh_token_reuse_grace_secs: Option<u64>,
    /// Failed sign-ins per account or per IP before delays start (default 5).
    pub throttle_free_failures: Option<u32>,
    /// Failures older than this are forgotten (default 900 s).
    pub throttle_window_secs: Option<u64>,
    /// The longest wait imposed after repeated failures (default 300 s).
    pub throttle_max_delay_secs: Option<u64>,
}

/// Validated `[login]` settings.
#[derive(Debug, Clone)]
pub struct LoginConfig {
    /// SSO session lifetime.
    pub session_ttl: u64,
    /// ID token lifetime.
    pub id_token_ttl: u64,
    /// Refresh-token idle lifetime.
    pub refresh_idle_ttl: u64,
    /// Refresh-token absolute lifetime.
    pub refresh_max_ttl: u64,
    /// Refresh-token reuse grace window.
    pub refresh_reuse_grace: u64,
    /// Failures before delays start.
    pub throttle_free_failures: u32,
    /// Failure memory.
    pub throttle_window: u64,
    /// Longest delay.
    pub throttle_max_delay: u64,
}

impl RawLogin {
    fn validate(self) -> Result<LoginConfig, ConfigError> {
        let positive = |key: &str, v: Option<u64>, default: u64| match v.unwrap_or(default) {
            0 => Err(err(format!("login.{key}"), "must be at least 1")),
            v => Ok(v),
        };
        let c = LoginConfig {
            session_ttl: positive("session_ttl_secs", self.session_ttl_secs, 8 * 3600)?,
            id_token_ttl: positive("id_token_ttl_secs", self.id_token_ttl_secs, 300)?,
            refresh_idle_ttl: positive(
                "refresh_token_idle_ttl_secs",
                self.refresh_token_idle_ttl_secs,
                86_400,
            )?,
            refresh_max_ttl: positive(
                "refresh_token_max_ttl_secs",
                self.refresh_token_max_ttl_secs,
                30 * 86_400,
            )?,
            refresh_reuse_grace: self.refresh_token_reuse_grace_secs.unwrap_or(10),
            throttle_free_failures: self.throttle_free_failures.unwrap_or(5),
            throttle_window: positive("throttle_window_secs", self.throttle_window_secs, 900)?,
            throttle_max_delay: positive(
                "throttle_max_delay_secs",
                self.throttle_max_delay_secs,
                300,
            )?,
        };
        if c.refresh_reuse_grace > 60 {
            return Err(err(
                "login.refresh_token_reuse_grace_secs",
                "must be at most 60: a longer window lets a stolen token be replayed",
            ));
        }
        if c.refresh_idle_ttl > c.refresh_max_ttl {
            return Err(err(
                "login.refresh_token_idle_ttl_secs",
                "must not exceed refresh_token_max_ttl_secs",
            ));
        }
        Ok(c)
    }
}

/// The well-known development master key. Keys encrypted with it are not
/// protected; development mode says so at start.
const DEV_MASTER_KEY: [u8; 32] = *b"portcullis-development-only-key!";

fn parse_addr(key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse().map_err(|_| {
        err(
            key,
            format!("expected host:port (e.g. 127.0.0.1:9000), got {v:?}"),
        )
    })
}

impl RawConfig {
    /// Validates into a [`Config`]. `env` resolves `secret_env` references.
    pub fn validate(self, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mode = match self.mode.as_deref() {
            None | Some("production") => Mode::Production,
            Some("development") => Mode::Development,
            Some(other) => {
                return Err(err(
                    "mode",
                    format!("expected production or development, got {other:?}"),
                ));
            }
        };
        let listen = parse_addr("listen", self.listen.as_deref().unwrap_or("127.0.0.1:9000"))?;
        let admin_listen = parse_addr(
            "admin_listen",
            self.admin_listen.as_deref().unwrap_or("127.0.0.1:9001"),
        )?;
        let tls = self.tls.map(|t| t.validate("tls")).transpose()?;
        let admin_tls = self
            .admin_tls
            .map(|t| t.validate("admin_tls"))
            .transpose()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let issuer = match self.issuer {
            Some(s) => Some(Issuer::from_str(&s).map_err(|e| err("issuer", e.to_string()))?),
            None if listen.port() == 0 => None,
            None => Some(
                Issuer::from_str(&format!("{scheme}://{listen}"))
                    .map_err(|e| err("issuer", e.to_string()))?,
            ),
        };
        if let Some(i) = &issuer
            && tls.is_some()
            && !i.as_str().starts_with("https://")
        {
            return Err(err(
                "issuer",
                "must be an https URL when the public listener serves TLS ([tls])",
            ));
        }
        let database_url = self
            .database_url
            .unwrap_or_else(|| "sqlite://portcullis.db".into());
        if !["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|p| database_url.starts_with(p))
        {
            return Err(err(
                "database_url",
                "expected sqlite://PATH or postgres://USER@HOST:PORT/DATABASE",
            ));
        }
        let master_key = match (self.master_key, mode) {
            (Some(k), _) => MasterKey::from_base64(&Secret::new(k))
                .map_err(|e| err("master_key", e.to_string()))?,
            (None, Mode::Development) => MasterKey::from_bytes(&DEV_MASTER_KEY)
                .map_err(|e| err("master_key", e.to_string()))?,
            (None, Mode::Production) => {
                return Err(err(
                    "master_key",
                    "required in production mode (set PORTCULLIS_MASTER_KEY to 32 random bytes in \
                     base64, e.g. `openssl rand -base64 32`)",
                ));
            }
        };
        let admin_token = match (self.admin_token, mode) {
            (Some(t), _) if t.len() < 16 => {
                return Err(err("admin_token", "must be at least 16 characters"));
            }
            (Some(t), _) => Some(Secret::new(t)),
            (None, _) => None,
        };
        let signing_alg = self
            .signing_alg
            .as_deref()
            .unwrap_or("ES256")
            .parse()
            .map_err(|e: portcullis_core::jose::KeyError| err("signing_alg", e.to_string()))?;
        let access_token_ttl = self.access_token_ttl_secs.unwrap_or(600);
        let max_access_token_ttl = self.max_access_token_ttl_secs.unwrap_or(86_400);
        if access_token_ttl == 0 || access_token_ttl > max_access_token_ttl {
            return Err(err(
                "access_token_ttl_secs",
                "must be between 1 and max_access_token_ttl_secs",
            ));
        }
        let key_publish_delay = self.key_publish_delay_secs.unwrap_or(900);
        let jwks_max_age = self
            .jwks_max_age_secs
            .unwrap_or(300.min(key_publish_delay / 2));
        if key_publish_delay > 0 && jwks_max_age >= key_publish_delay {
            return Err(err(
                "jwks_max_age_secs",
                "must be shorter than key_publish_delay_secs, or caches could miss a new key",
            ));
        }
        let mut clients = Vec::with_capacity(self.clients.len());
        for (n, c) in self.clients.into_iter().enumerate() {
            clients.push(c.validate(&format!("clients[{n}]"), env)?);
        }
        let passwords = self.passwords.validate()?;
        let mut users: Vec<UserSpec> = Vec::with_capacity(self.users.len());
        for (n, u) in self.users.into_iter().enumerate() {
            let at = format!("users[{n}]");
            let spec = u.validate(&at, mode)?;
            if users.iter().any(|o| o.username == spec.username) {
                return Err(err(format!("{at}.username"), "declared twice"));
            }
            users.push(spec);
        }
        Ok(Config {
            mode,
            listen,
            admin_listen,
            issuer,
            database_url,
            master_key,
            admin_token,
            signing_alg,
            access_token_ttl,
            max_access_token_ttl,
            key_publish_delay,
            jwks_max_age,
            key_refresh: self.key_refresh_secs.unwrap_or(10).max(1),
            client_assertion_max_lifetime: self.client_assertion_max_lifetime_secs.unwrap_or(300),
            client_cache_ttl: self.client_cache_ttl_secs.unwrap_or(5),
            max_body_bytes: self.max_body_bytes.unwrap_or(64 * 1024),
            shutdown_grace: self.shutdown_grace_secs.unwrap_or(30),
            clients,
            passwords,
            users,
            login: self.login.validate()?,
            token_exchange: self.token_exchange.validate()?,
            redis: match self.redis {
                None => None,
                Some(r) => Some(r.validate("redis").map_err(|e| err("redis", e))?),
            },
            tls,
            admin_tls,
        })
    }
}

/// Parses a list of scopes, naming the key on failure.
pub fn parse_scopes(key: &str, v: &[String]) -> Result<ScopeSet, ConfigError> {
    ScopeSet::try_from(v.to_vec()).map_err(|e| err(key, e.to_string()))
}

/// Parses a list of audiences, naming the key on failure.
pub fn parse_audiences(key: &str, v: &[String]) -> Result<Vec<Audience>, ConfigError> {
    let mut out: Vec<Audience> = Vec::with_capacity(v.len());
    for a in v {
        let a = Audience::from_str(a).map_err(|e| err(key, e.to_string()))?;
        if !out.contains(&a) {
            out.push(a);
        }
    }
    Ok(out)
}

/// Parses grant type names, naming the key on failure.
pub fn parse_grants(key: &str, v: &[String]) -> Result<Vec<crate::model::GrantType>, ConfigError> {
    v.iter()
        .map(|g| {
            crate::model::GrantType::parse(g).ok_or_else(|| {
                err(
                    key,
                    format!(
                        "unsupported grant type {g:?} (expected client_credentials, \
                         authorization_code or refresh_token)"
                    ),
                )
            })
        })
        .collect()
}

impl RawClient {
    fn validate(
        self,
        at: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ClientSpec, ConfigError> {
        let id =
            ClientId::from_str(&self.id).map_err(|e| err(format!("{at}.id"), e.to_string()))?;
        let tls = crate::mtls::TlsFields {
            method: self.token_endpoint_auth_method.as_deref(),
            subject: [
                self.tls_client_auth_subject_dn.as_deref(),
                self.tls_client_auth_san_dns.as_deref(),
                self.tls_client_auth_san_uri.as_deref(),
                self.tls_client_auth_san_ip.as_deref(),
                self.tls_client_auth_san_email.as_deref(),
            ],
            certificates: self.tls_client_certificates.as_deref(),
            thumbprints: self.tls_client_certificate_thumbprints.as_deref(),
            jwks: self.jwks.as_ref(),
        }
        .credential()
        .map_err(|(field, problem)| err(format!("{at}.{field}"), problem))?;
        let credential = match (tls, self.secret, self.secret_env, self.jwks, self.jwks_uri) {
            (Some(_), ..) if self.public => {
                return Err(err(
                    format!("{at}.public"),
                    "a public client has no token_endpoint_auth_method",
                ));
            }
            // `jwks` may carry a self-signed client's certificates (x5c).
            (Some(c), None, None, _, None) => ClientCredentialSpec::Tls(c),
            (Some(_), ..) => {
                return Err(err(
                    format!("{at}.token_endpoint_auth_method"),
                    "a certificate client has no secret, secret_env or jwks_uri",
                ));
            }
            (None, None, None, None, None) if self.public => ClientCredentialSpec::None,
            (None, _, _, _, _) if self.public => {
                return Err(err(
                    format!("{at}.public"),
                    "a public client has no secret, secret_env, jwks or jwks_uri",
                ));
            }
            (None, Some(s), None, None, None) => ClientCredentialSpec::Secret(Secret::new(s)),
            (None, None, Some(var), None, None) => match env(&var) {
                Some(s) if !s.is_empty() => ClientCredentialSpec::Secret(Secret::new(s)),
                _ => {
                    return Err(err(
                        format!("{at}.secret_env"),
                        format!("environment variable {var} is not set"),
                    ));
                }
            },
            (None, None, None, Some(j), None) => ClientCredentialSpec::Jwks(j),
            (None, None, None, None, Some(u)) => ClientCredentialSpec::JwksUri(
                url::Url::parse(&u).map_err(|e| err(format!("{at}.jwks_uri"), e.to_string()))?,
            ),
            _ => {
                return Err(err(
                    at,
                    "exactly one of secret, secret_env, jwks or jwks_uri is required \
                     (or public = true)",
                ));
            }
        };
        if let ClientCredentialSpec::Secret(s) = &credential
            && s.expose().len() < 32
        {
            return Err(err(
                format!("{at}.secret"),
                "must be at least 32 characters",
            ));
        }
        let spec = ClientSpec {
            name: self.name.unwrap_or_else(|| id.to_string()),
            id,
            credential,
            grant_types: parse_grants(
                &format!("{at}.grant_types"),
                &self
                    .grant_types
                    .unwrap_or_else(|| vec!["client_credentials".into()]),
            )?,
            allowed_scopes: parse_scopes(&format!("{at}.allowed_scopes"), &self.allowed_scopes)?,
            default_scopes: parse_scopes(&format!("{at}.default_scopes"), &self.default_scopes)?,
            allowed_audiences: parse_audiences(
                &format!("{at}.allowed_audiences"),
                &self.allowed_audiences,
            )?,
            default_audiences: parse_audiences(
                &format!("{at}.default_audiences"),
                &self.default_audiences,
            )?,
            access_token_ttl: self.access_token_ttl_secs,
            login: crate::model::LoginSettings {
                redirect_uris: self.redirect_uris,
                post_logout_redirect_uris: self.post_logout_redirect_uris,
                first_party: self.first_party,
                require_pkce: self.require_pkce.unwrap_or(true),
            },
            tls_bound_tokens: self.tls_client_certificate_bound_access_tokens,
            enabled: self.enabled.unwrap_or(true),
        };
        crate::authorize::check_login_settings(
            &spec.grant_types,
            matches!(spec.credential, ClientCredentialSpec::None),
            &spec.login,
        )
        .map_err(|(field, problem)| err(format!("{at}.{field}"), problem))?;
        if !spec.default_scopes.is_subset(&spec.allowed_scopes) {
            return Err(err(
                format!("{at}.default_scopes"),
                "must be a subset of allowed_scopes",
            ));
        }
        if !spec
            .default_audiences
            .iter()
            .all(|a| spec.allowed_audiences.contains(a))
        {
            return Err(err(
                format!("{at}.default_audiences"),
                "must be a subset of allowed_audiences",
            ));
        }
        Ok(spec)
    }
}

impl RawUser {
    fn validate(self, at: &str, mode: Mode) -> Result<UserSpec, ConfigError> {
        use crate::users::fields;
        let key = |k: &str| format!("{at}.{k}");
        let username = crate::model::Username::from_str(&self.username)
            .map_err(|e| err(key("username"), e))?;
        let password = match (self.password, self.password_hash) {
            (Some(_), Some(_)) => {
                return Err(err(at, "give password or password_hash, not both"));
            }
            (Some(_), None) if mode == Mode::Production => {
                return Err(err(
                    key("password"),
                    "a plain-text password is allowed only in development mode; give \
                     password_hash (an argon2id PHC string, from `portcullis gateway hash-password`)",
                ));
            }
            (Some(p), None) => {
                let p = Secret::new(p);
                fields::password(&p).map_err(|e| err(key("password"), e))?;
                Some(UserPasswordSpec::Plain(p))
            }
            (None, Some(h)) => {
                fields::phc(&h).map_err(|e| err(key("password_hash"), e))?;
                Some(UserPasswordSpec::Hash(Secret::new(h)))
            }
            (None, None) => None,
        };
        if self.email_verified == Some(true) && self.email.is_none() {
            return Err(err(
                key("email_verified"),
                "there is no email address to verify",
            ));
        }
        let profile = crate::model::UserProfile {
            display_name: match self.display_name {
                Some(n) => fields::display_name(n).map_err(|e| err(key("display_name"), e))?,
                None => username.to_string(),
            },
            email: self
                .email
                .map(fields::email)
                .transpose()
                .map_err(|e| err(key("email"), e))?,
            email_verified: self.email_verified.unwrap_or(false),
            roles: fields::labels(self.roles).map_err(|e| err(key("roles"), e))?,
            groups: fields::labels(self.groups).map_err(|e| err(key("groups"), e))?,
        };
        Ok(UserSpec {
            username,
            password,
            profile,
            enabled: self.enabled.unwrap_or(true),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn production_requires_a_master_key() {
        let e = RawConfig::default().validate(&no_env).unwrap_err();
        assert_eq!(e.key, "master_key");
        let raw = RawConfig {
            mode: Some("development".into()),
            ..Default::default()
        };
        assert!(raw.validate(&no_env).is_ok());
    }

    #[test]
    fn the_login_table_has_defaults_and_refuses_unsafe_values() {
        let parse = |t: &str| {
            toml::from_str::<RawConfig>(&format!("mode = \"development\"\n[login]\n{t}"))
                .unwrap()
                .validate(&no_env)
        };
        let c = parse("").unwrap().login;
        assert_eq!(
            (c.session_ttl, c.id_token_ttl, c.refresh_reuse_grace),
            (28_800, 300, 10)
        );
        assert_eq!((c.refresh_idle_ttl, c.refresh_max_ttl), (86_400, 2_592_000));
        let c = parse("refresh_token_reuse_grace_secs = 0\nthrottle_free_failures = 3")
            .unwrap()
            .login;
        assert_eq!((c.refresh_reuse_grace, c.throttle_free_failures), (0, 3));
        for (bad, key) in [
            (
                "refresh_token_reuse_grace_secs = 61",
                "login.refresh_token_reuse_grace_secs",
            ),
            ("session_ttl_secs = 0", "login.session_ttl_secs"),
            (
                "refresh_token_idle_ttl_secs = 10\nrefresh_token_max_ttl_secs = 5",
                "login.refresh_token_idle_ttl_secs",
            ),
        ] {
            assert_eq!(parse(bad).unwrap_err().key, key, "{bad}");
        }
        assert!(toml::from_str::<RawConfig>("[login]\nsesion_ttl_secs = 1").is_err());
    }

    #[test]
    fn errors_name_the_key() {
        let raw: RawConfig = toml::from_str(
            "mode = \"development\"\n[[clients]]\nid = \"a\"\nsecret_env = \"NOPE\"\n",
        )
        .unwrap();
        assert_eq!(
            raw.validate(&no_env).unwrap_err().key,
            "clients[0].secret_env"
        );
        let raw = RawConfig {
            mode: Some("development".into()),
            listen: Some("nonsense".into()),
            ..Default::default()
        };
        assert_eq!(raw.validate(&no_env).unwrap_err().key, "listen");
        assert!(
            toml::from_str::<RawConfig>("lisen = \"x\"").is_err(),
            "unknown keys refused"
        );
    }

    #[test]
    fn jwks_cache_must_expire_before_a_new_key_signs() {
        let raw = RawConfig {
            mode: Some("development".into()),
            key_publish_delay_secs: Some(60),
            jwks_max_age_secs: Some(120),
            ..Default::default()
        };
        assert_eq!(raw.validate(&no_env).unwrap_err().key, "jwks_max_age_secs");
    }

    // ----- TLS ------------------------------------------------------------

    #[test]
    fn tls_tables_are_checked_key_by_key_and_make_the_issuer_https() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("x.pem");
        std::fs::write(&pem, "x").unwrap();
        let pem = pem.display().to_string();
        let with = |table: &str, extra: &str| {
            dev_toml(&format!(
                "listen = \"127.0.0.1:8443\"\n{extra}\n[{table}]\ncert = \"{pem}\"\nkey = \"{pem}\"\n"
            ))
        };
        let c = with("tls", "").validate(&no_env).unwrap();
        assert_eq!(c.issuer.unwrap().as_str(), "https://127.0.0.1:8443");
        assert!(!c.tls.unwrap().client_certs());
        // enforce_crl_expiry reaches the listener's trust, off by default.
        for (extra, enforced) in [("", false), ("enforce_crl_expiry = true", true)] {
            let c = dev_toml(&format!(
                "[tls]\ncert = \"{pem}\"\nkey = \"{pem}\"\nclient_ca = \"{pem}\"\ncrls = [\"{pem}\"]\n{extra}\n"
            ))
            .validate(&no_env)
            .unwrap();
            match c.tls.unwrap().files.client_auth {
                portcullis_ca::tls::ClientAuth::Optional(t) => {
                    assert_eq!(t.enforce_crl_expiry, enforced, "{extra}")
                }
                other => panic!("{other:?}"),
            }
        }
        let c = with("tls", "").validate(&no_env);
        assert!(c.is_ok());
        let e = with("tls", "issuer = \"http://iam.example\"")
            .validate(&no_env)
            .unwrap_err();
        assert_eq!(e.key, "issuer");
        let c = with("admin_tls", "").validate(&no_env).unwrap();
        assert!(
            c.issuer.unwrap().as_str().starts_with("http://"),
            "admin TLS leaves the issuer"
        );
        for (table_extra, key) in [
            ("client_auth = \"sometimes\"", "tls.client_auth"),
            ("client_auth = \"required\"", "tls.client_ca"),
            ("client_ca = \"/nonexistent.pem\"", "tls.client_ca"),
            ("client_auth = \"none\"\ncrls = [\"x\"]", "tls.client_auth"),
            (
                &format!("client_ca = \"{pem}\"\ncrls = [\"/no.crl\"]"),
                "tls.crls[0]",
            ),
            ("reload_interval_secs = 0", "tls.reload_interval_secs"),
            ("enforce_crl_expiry = true", "tls.client_auth"),
            (
                &format!("client_ca = \"{pem}\"\nenforce_crl_expiry = true"),
                "tls.enforce_crl_expiry",
            ),
        ] {
            let raw = dev_toml(&format!(
                "[tls]\ncert = \"{pem}\"\nkey = \"{pem}\"\n{table_extra}\n"
            ));
            assert_eq!(raw.validate(&no_env).unwrap_err().key, key, "{table_extra}");
        }
        let e = dev_toml("[tls]\nkey = \"/k\"\n")
            .validate(&no_env)
            .unwrap_err();
        assert_eq!(e.key, "tls.cert");
        assert!(toml::from_str::<RawConfig>("[tls]\ncertificate = \"x\"").is_err());
    }

    #[test]
    fn declared_certificate_clients_are_checked() {
        let ok = dev_toml(
            "[[clients]]\nid = \"svc\"\ntoken_endpoint_auth_method = \"tls_client_auth\"\n\
             tls_client_auth_subject_dn = \"CN=svc,O=Example\"\n",
        )
        .validate(&no_env)
        .unwrap();
        assert!(matches!(
            ok.clients[0].credential,
            ClientCredentialSpec::Tls(crate::model::Credential::TlsClientAuth(_))
        ));
        for (client, key) in [
            (
                "token_endpoint_auth_method = \"tls_client_auth\"",
                "clients[0].token_endpoint_auth_method",
            ),
            (
                "token_endpoint_auth_method = \"tls_client_auth\"\ntls_client_auth_san_dns = \"a b\"",
                "clients[0].tls_client_auth_san_dns",
            ),
            (
                "token_endpoint_auth_method = \"tls_client_auth\"\ntls_client_auth_san_dns = \"a.svc\"\n\
                 secret = \"0123456789abcdef0123456789abcdef\"",
                "clients[0].token_endpoint_auth_method",
            ),
            (
                "tls_client_auth_san_uri = \"spiffe://td/x\"",
                "clients[0].tls_client_auth_san_uri",
            ),
            (
                "public = true\ntoken_endpoint_auth_method = \"self_signed_tls_client_auth\"\n\
                 tls_client_certificate_thumbprints = [\"4UAEVdi1J15QxVJ45v-0E1YRxFXpACI2L2YLZbe684c\"]",
                "clients[0].public",
            ),
        ] {
            let e = dev_toml(&format!("[[clients]]\nid = \"svc\"\n{client}\n"))
                .validate(&no_env)
                .unwrap_err();
            assert_eq!(e.key, key, "{client}");
        }
    }

    // ----- Users and passwords -------------------------------------------

    fn dev_toml(extra: &str) -> RawConfig {
        toml::from_str(&format!("mode = \"development\"\n{extra}")).unwrap()
    }

    #[test]
    fn password_parameters_default_to_owasp_and_refuse_nonsense() {
        let c = dev_toml("").validate(&no_env).unwrap();
        assert_eq!(
            (
                c.passwords.memory_kib(),
                c.passwords.iterations(),
                c.passwords.parallelism()
            ),
            (19456, 2, 1)
        );
        assert!(!c.passwords.below_recommended());
        let c = dev_toml("[passwords]\nmemory_kib = 1024\niterations = 1\n")
            .validate(&no_env)
            .unwrap();
        assert!(c.passwords.below_recommended());
        for (table, key) in [
            ("iterations = 0", "passwords.iterations"),
            ("parallelism = 0", "passwords.parallelism"),
            ("parallelism = 65", "passwords.parallelism"),
            ("memory_kib = 7", "passwords.memory_kib"),
            ("memory_kib = 31\nparallelism = 4", "passwords.memory_kib"),
            ("memory_kib = 4194305", "passwords.memory_kib"),
        ] {
            let e = dev_toml(&format!("[passwords]\n{table}\n"))
                .validate(&no_env)
                .unwrap_err();
            assert_eq!(e.key, key, "{table}");
        }
        assert!(toml::from_str::<RawConfig>("[passwords]\nmemory = 1\n").is_err());
    }

    #[test]
    fn plain_text_user_passwords_are_for_development_only() {
        let user = "[[users]]\nusername = \"alice\"\npassword = \"correct horse\"\n";
        let c = dev_toml(user).validate(&no_env).unwrap();
        assert!(matches!(
            c.users[0].password,
            Some(UserPasswordSpec::Plain(_))
        ));
        assert_eq!(c.users[0].profile.display_name, "alice");
        let prod: RawConfig = toml::from_str(&format!(
            "mode = \"production\"\nmaster_key = \"{}=\"\n{user}",
            "A".repeat(43)
        ))
        .unwrap();
        let e = prod.validate(&no_env).unwrap_err();
        assert_eq!(e.key, "users[0].password");
        assert!(e.problem.contains("password_hash"), "{e}");
    }

    #[test]
    fn declared_users_are_checked_field_by_field() {
        let phc = "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHRzYWx0$\
                   YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXphYmNkZWY";
        let ok = dev_toml(&format!(
            "[[users]]\nusername = \"Bob\"\npassword_hash = \"{phc}\"\nroles = [\"admin\"]\n"
        ))
        .validate(&no_env)
        .unwrap();
        assert_eq!(ok.users[0].username.as_str(), "bob");
        for (user, key) in [
            ("username = \"has space\"", "users[0].username"),
            ("username = \"u_x\"", "users[0].username"),
            (
                "username = \"a\"\npassword = \"short\"",
                "users[0].password",
            ),
            (
                "username = \"a\"\npassword_hash = \"$2b$10$bcrypt\"",
                "users[0].password_hash",
            ),
            (
                "username = \"a\"\npassword = \"long enough\"\npassword_hash = \"x\"",
                "users[0]",
            ),
            ("username = \"a\"\nemail = \"nope\"", "users[0].email"),
            (
                "username = \"a\"\nemail_verified = true",
                "users[0].email_verified",
            ),
            (
                "username = \"a\"\nroles = [\"two words\"]",
                "users[0].roles",
            ),
            ("username = \"a\"\ngroups = [\"\"]", "users[0].groups"),
            (
                "username = \"a\"\ndisplay_name = \"\"",
                "users[0].display_name",
            ),
        ] {
            let e = dev_toml(&format!("[[users]]\n{user}\n"))
                .validate(&no_env)
                .unwrap_err();
            assert_eq!(e.key, key, "{user}");
        }
        let twice = dev_toml("[[users]]\nusername = \"a\"\n[[users]]\nusername = \"A\"\n");
        assert_eq!(
            twice.validate(&no_env).unwrap_err().key,
            "users[1].username"
        );
    }
}
