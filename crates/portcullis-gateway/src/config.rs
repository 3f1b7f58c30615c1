//! Gateway configuration: a strict serde [`RawConfig`] from `gateway.toml`,
//! validated once into a [`Config`] the pipeline trusts. Errors name the key
//! and the problem; the caller adds the file name.

use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use portcullis_core::config::ConfigError;

fn err(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::new(key, problem)
}

/// `gateway.toml` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Proxy listener.
    pub listen: Option<String>,
    /// Admin listener: health, metrics, the gateway's JWKS.
    pub admin_listen: Option<String>,
    /// Proxy worker threads, each with its own event loop and its own
    /// `SO_REUSEPORT` socket on `listen`; default: one per CPU.
    pub workers: Option<usize>,
    /// `iss` of internal tokens; default `http://` + admin_listen.
    pub issuer: Option<String>,
    /// PKCS#8 PEM file of the internal-token signing key (created if missing).
    pub signing_key_file: Option<String>,
    /// Lifetime of internal tokens.
    pub internal_token_ttl_secs: Option<u64>,
    /// Peers whose `X-Forwarded-For` is believed for the client IP.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Extra inbound identity headers to strip (besides `X-Portcullis-*`).
    #[serde(default)]
    pub identity_headers: Vec<String>,
    /// Size limits.
    #[serde(default)]
    pub limits: RawLimits,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: RawTimeouts,
    /// How access-log lines are written.
    #[serde(default)]
    pub access_log: RawAccessLog,
    /// Upstream pools.
    #[serde(default)]
    pub upstreams: Vec<RawUpstream>,
    /// Consumers (API key and Basic identities).
    #[serde(default)]
    pub consumers: Vec<RawConsumer>,
    /// Named authentication methods.
    #[serde(default)]
    pub authenticators: Vec<RawAuthenticator>,
    /// Routes, matched most specific first.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// Backend-for-frontend: browser logins at an OpenID provider, with
    /// server-side sessions (the `session` authenticator).
    pub bff: Option<RawBff>,
    /// Directory of Cedar policies (`schema.cedarschema`, `*.cedar`) that
    /// routes with `policy` ask; reloaded when its files change.
    pub policies: Option<String>,
    /// Redis, for `scope = "cluster"` rate limits.
    pub redis: Option<portcullis_redis::RawRedis>,
    /// TLS on the proxy listener (HTTPS; client certificates for `mtls`).
    pub tls: Option<RawTls>,
}

/// `[tls]`: the proxy listener speaks TLS with these files, reloaded when
/// they change.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM chain: the gateway's certificate, then intermediates.
    pub cert: String,
    /// PEM private key.
    pub key: String,
    /// PEM trust anchors for client certificates (the CA's `root.pem`);
    /// required when a route uses an `mtls` authenticator.
    pub client_ca: Option<String>,
    /// PEM CRLs client certificates are checked against.
    #[serde(default)]
    pub crls: Vec<String>,
    /// Refuse client certificates while a CRL is past its `nextUpdate`
    /// (fail closed when the CA stops publishing); default false.
    #[serde(default)]
    pub enforce_crl_expiry: bool,
}

/// `tls` of an upstream: the gateway connects with HTTPS and, with `cert`
/// and `key`, presents its own client certificate (mutual TLS).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// PEM trust anchors for the upstream's server certificate.
    pub ca: String,
    /// PEM chain the gateway presents.
    pub cert: Option<String>,
    /// Its PEM private key.
    pub key: Option<String>,
    /// The name the upstream's certificate must carry (DNS name or IP);
    /// default: the target's IP address.
    pub server_name: Option<String>,
}

/// A SPIFFE ID (or `spiffe://td/prefix/*`) mapped to a consumer.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMtlsIdentity {
    /// `spiffe://TRUST_DOMAIN/PATH`, or ending in `/*` for every ID below.
    pub spiffe_id: String,
    /// The consumer name (the internal token's `sub`); default: the SPIFFE ID.
    pub consumer: Option<String>,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// `[bff]`: the gateway as an OpenID Connect relying party for browsers.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBff {
    /// The OpenID provider's issuer (its discovery document is fetched).
    pub issuer: String,
    /// The gateway's client id at the provider.
    pub client_id: String,
    /// Environment variable holding the client secret (`client_secret_basic`);
    /// without it the gateway is a public client (PKCE only).
    pub client_secret_env: Option<String>,
    /// The callback URL as registered at the provider: the browser-facing
    /// origin of the gateway + `{path_prefix}/callback`.
    pub redirect_uri: String,
    /// Where the provider sends the browser after logout (registered there).
    pub post_logout_redirect_uri: Option<String>,
    /// Scopes asked for (default `openid profile email`).
    pub scopes: Option<Vec<String>>,
    /// RFC 8707 resources (audiences) for the access token.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Where the BFF endpoints live (default `/auth`).
    pub path_prefix: Option<String>,
    /// Session store: a `sqlite://` URL (default `sqlite://bff-sessions.db`)
    /// or `redis` for the gateway's `[redis]` (needed with several gateways).
    pub session_store: Option<String>,
    /// Environment variable holding the base64 32-byte key that seals the
    /// tokens in the session store.
    pub session_key_env: Option<String>,
    /// File holding that key (created if missing) when no env var is named.
    pub session_key_file: Option<String>,
    /// Idle timeout of a session (default 3600).
    pub session_idle_secs: Option<u64>,
    /// Absolute lifetime of a session (default 43200).
    pub session_max_secs: Option<u64>,
    /// Refresh the access token this long before it expires (default 30).
    pub refresh_before_secs: Option<u64>,
    /// Local path after a login without `return_to` (default `/`).
    pub after_login: Option<String>,
}

/// Size limits.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Total request header bytes (431 above).
    pub max_header_bytes: Option<usize>,
    /// Request body bytes (413 above).
    pub max_body_bytes: Option<usize>,
}

/// Timeouts in milliseconds.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// Connecting to an upstream.
    pub connect_ms: Option<u64>,
    /// Reading a client's request head.
    pub header_ms: Option<u64>,
    /// A whole upstream exchange (504 after).
    pub request_ms: Option<u64>,
    /// Idle keep-alive connections.
    pub idle_ms: Option<u64>,
    /// Writing to a client that accepts none of an answer's bytes (the
    /// connection is closed after).
    pub send_ms: Option<u64>,
}

/// `[access_log]`: buffering of the JSON access log (nginx's `buffer=`
/// and `flush=`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    /// Bytes of lines a worker gathers before one `write` to stdout
    /// (default 64 KiB); 0 writes each line at once.
    pub buffer_bytes: Option<usize>,
    /// Longest a gathered line waits to be written (default 1000; at
    /// least 10: each worker wakes this often while lines are gathered).
    pub flush_ms: Option<u64>,
}

/// An upstream pool.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Name, used as the internal token's `aud`.
    pub name: String,
    /// `host:port` targets, balanced round robin.
    pub targets: Vec<String>,
    /// Active health check.
    pub health_check: Option<RawHealthCheck>,
    /// Consecutive failures that eject a target (passive); 0 disables.
    pub eject_after_failures: Option<u32>,
    /// How long an ejected target stays out.
    pub eject_ms: Option<u64>,
    /// HTTPS (and mutual TLS) to the targets.
    pub tls: Option<RawUpstreamTls>,
}

/// Active health check.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// Path to GET; 2xx is healthy.
    pub path: String,
    /// Interval.
    pub interval_ms: Option<u64>,
    /// Per-check timeout.
    pub timeout_ms: Option<u64>,
}

/// A consumer: who an API key or Basic credential stands for.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsumer {
    /// Name (the internal token's `sub`).
    pub name: String,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// API keys, by digest (`portcullis apikeys create` prints one).
    #[serde(default)]
    pub api_keys: Vec<RawApiKey>,
    /// Basic credentials.
    pub basic: Option<RawBasic>,
}

/// A declared API key.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    /// `sha256:<64 hex>` of the key.
    pub digest: String,
    /// Unix time after which the key is refused.
    pub expires_at: Option<u64>,
}

/// Basic credentials.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBasic {
    /// User name.
    pub username: String,
    /// argon2id PHC string (`portcullis gateway hash-password`).
    pub password_hash: String,
}

/// A named authentication method.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthenticator {
    /// Name routes refer to.
    pub name: String,
    /// `api_key`, `basic`, `jwt` or `introspection`.
    #[serde(rename = "type")]
    pub kind: String,
    /// api_key: header name (default `x-api-key`).
    pub header: Option<String>,
    /// api_key: query parameter name (off unless set).
    pub query: Option<String>,
    /// jwt: issuer URL.
    pub issuer: Option<String>,
    /// jwt: this gateway's audience.
    pub audience: Option<String>,
    /// jwt: accepted algorithms (default ES256).
    pub algorithms: Option<Vec<String>>,
    /// introspection: endpoint URL.
    pub endpoint: Option<String>,
    /// introspection: client id.
    pub client_id: Option<String>,
    /// introspection: env var holding the client secret.
    pub client_secret_env: Option<String>,
    /// introspection: upper bound of result caching.
    pub cache_ttl_secs: Option<u64>,
    /// mtls: the trust domain client SPIFFE IDs must belong to.
    pub trust_domain: Option<String>,
    /// mtls: which SPIFFE IDs are which consumers.
    #[serde(default)]
    pub identities: Vec<RawMtlsIdentity>,
}

/// A route.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Name (metrics, logs).
    pub name: String,
    /// Host to match (exact, case-insensitive, port ignored); any if absent.
    pub host: Option<String>,
    /// Path prefix, on segment boundaries.
    pub path_prefix: String,
    /// Methods; any if empty.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Upstream pool name.
    pub upstream: String,
    /// Authenticator names tried in order; `["anonymous"]` allows anyone.
    pub auth: Vec<String>,
    /// Scopes the caller must hold.
    #[serde(default)]
    pub require_scopes: Vec<String>,
    /// Roles the caller must hold.
    #[serde(default)]
    pub require_roles: Vec<String>,
    /// Rate limit.
    pub rate_limit: Option<RawRateLimit>,
    /// Remove the prefix before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Forward the client's own `Authorization` instead of an internal
    /// token (pass-through to an OAuth server). Anonymous routes only.
    #[serde(default)]
    pub forward_credentials: bool,
    /// A Cedar action: each request must be allowed by the policies
    /// (principal from the credential, resource `Route::"<name>"`).
    pub policy: Option<String>,
}

/// A GCRA rate limit.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Burst.
    pub burst: Option<u32>,
    /// `consumer` (default), `client_id` or `client_ip`.
    pub key: Option<String>,
    /// `local` (default: per gateway) or `cluster` (shared through `[redis]`).
    pub scope: Option<String>,
    /// Cluster scope: requests a gateway takes from Redis at once and
    /// admits locally (default: burst / 10, at least 1).
    pub lease: Option<u32>,
}

// ---------------------------------------------------------------- validated

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Proxy listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Proxy worker threads (at least 1).
    pub workers: usize,
    /// Internal token issuer.
    pub issuer: Option<String>,
    /// Signing key file.
    pub signing_key_file: Option<String>,
    /// Internal token lifetime.
    pub internal_token_ttl: u64,
    /// Trusted proxy addresses.
    pub trusted_proxies: HashSet<IpAddr>,
    /// Identity headers to strip, lower-cased with `_` folded to `-`.
    pub identity_headers: Vec<String>,
    /// Header limit.
    pub max_header_bytes: usize,
    /// Body limit.
    pub max_body_bytes: usize,
    /// Timeouts.
    pub connect_timeout: Duration,
    /// Header read timeout.
    pub header_timeout: Duration,
    /// Upstream exchange timeout.
    pub request_timeout: Duration,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// Longest wait for a client to accept any bytes of an answer.
    pub send_timeout: Duration,
    /// Access-log buffering.
    pub access_log: AccessLog,
    /// Pools by name.
    pub upstreams: HashMap<String, Upstream>,
    /// Consumers.
    pub consumers: Vec<Consumer>,
    /// Authenticators by name.
    pub authenticators: HashMap<String, Authenticator>,
    /// Routes.
    pub routes: Vec<Route>,
    /// The BFF.
    pub bff: Option<BffConfig>,
    /// The policy directory.
    pub policies: Option<String>,
    /// Redis.
    pub redis: Option<portcullis_redis::RedisConfig>,
    /// TLS on the proxy listener.
    pub tls: Option<ListenerTls>,
}

/// The validated `[access_log]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessLog {
    /// Bytes gathered per worker before a write; 0: every line at once.
    pub buffer_bytes: usize,
    /// Longest a buffered line waits.
    pub flush: Duration,
}

/// `access_log.buffer_bytes` unless set: nginx's usual `buffer=64k`.
pub const DEFAULT_ACCESS_LOG_BUFFER: usize = 64 * 1024;

/// Largest `access_log.buffer_bytes`.
pub const MAX_ACCESS_LOG_BUFFER: usize = 16 * 1024 * 1024;

/// The validated `[tls]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
    /// Client-certificate trust anchors.
    pub client_ca: Option<PathBuf>,
    /// CRLs.
    pub crls: Vec<PathBuf>,
    /// Whether a CRL past its `nextUpdate` refuses every client certificate.
    pub enforce_crl_expiry: bool,
}

/// The validated `tls` of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Trust anchors for the upstream's certificate.
    pub ca: PathBuf,
    /// The gateway's client certificate and key, for mutual TLS.
    pub identity: Option<portcullis_ca::tls::ClientIdentity>,
    /// The name checked against the upstream's certificate.
    pub server_name: Option<String>,
}

/// A validated `mtls` identity mapping.
#[derive(Debug, Clone)]
pub struct MtlsIdentity {
    /// The SPIFFE ID, or its prefix (ending in `/`) for a wildcard.
    pub spiffe_id: String,
    /// Whether `spiffe_id` is a prefix.
    pub wildcard: bool,
    /// Consumer name; `None`: the SPIFFE ID.
    pub consumer: Option<String>,
    /// Roles.
    pub roles: Vec<String>,
    /// Scopes.
    pub scopes: Vec<String>,
}

/// The validated `[bff]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BffConfig {
    /// Provider issuer.
    pub issuer: String,
    /// Client id.
    pub client_id: String,
    /// Client secret, if confidential.
    pub client_secret: Option<portcullis_core::Secret>,
    /// Callback URL.
    pub redirect_uri: String,
    /// The browser-facing origin (`scheme://host[:port]` of `redirect_uri`).
    pub origin: String,
    /// Cookies are `Secure` and `__Host-` prefixed (an `https` origin).
    pub secure_cookies: bool,
    /// Post-logout redirect.
    pub post_logout_redirect_uri: Option<String>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Resources.
    pub resources: Vec<String>,
    /// Endpoint prefix, no trailing slash.
    pub path_prefix: String,
    /// Session store: a `sqlite:` URL or `redis`.
    pub session_store: String,
    /// The sealing key (base64), if given by env.
    pub session_key: Option<portcullis_core::Secret>,
    /// The sealing key file.
    pub session_key_file: Option<String>,
    /// Idle timeout, seconds.
    pub session_idle: u64,
    /// Absolute lifetime, seconds.
    pub session_max: u64,
    /// Refresh margin, seconds.
    pub refresh_before: u64,
    /// Default landing path.
    pub after_login: String,
}

impl RawBff {
    fn validate(self, env: &dyn Fn(&str) -> Option<String>) -> Result<BffConfig, ConfigError> {
        let url = |key: &str, v: &str| {
            url::Url::parse(v)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .ok_or_else(|| {
                    err(
                        format!("bff.{key}"),
                        format!("expected an http(s) URL, got {v:?}"),
                    )
                })
        };
        url("issuer", &self.issuer)?;
        if self.client_id.is_empty() {
            return Err(err("bff.client_id", "must not be empty"));
        }
        let secret_from = |key: &str,
                           var: &Option<String>|
         -> Result<Option<portcullis_core::Secret>, ConfigError> {
            match var {
                None => Ok(None),
                Some(v) => env(v)
                    .map(portcullis_core::Secret::new)
                    .map(Some)
                    .ok_or_else(|| {
                        err(
                            format!("bff.{key}"),
                            format!("environment variable {v} is not set"),
                        )
                    }),
            }
        };
        let client_secret = secret_from("client_secret_env", &self.client_secret_env)?;
        let session_key = secret_from("session_key_env", &self.session_key_env)?;
        let path_prefix = self.path_prefix.unwrap_or_else(|| "/auth".into());
        let path_prefix = crate::pipeline::route::normalize(&path_prefix)
            .map_err(|e| err("bff.path_prefix", e.to_string()))?
            .trim_end_matches('/')
            .to_owned();
        if path_prefix.is_empty() {
            return Err(err("bff.path_prefix", "must not be /"));
        }
        let redirect = url("redirect_uri", &self.redirect_uri)?;
        if redirect.path() != format!("{path_prefix}/callback") || redirect.fragment().is_some() {
            return Err(err(
                "bff.redirect_uri",
                format!("must be the gateway's origin + {path_prefix}/callback"),
            ));
        }
        let origin = redirect.origin().ascii_serialization();
        if let Some(p) = &self.post_logout_redirect_uri {
            url("post_logout_redirect_uri", p)?;
        }
        let after_login = self.after_login.unwrap_or_else(|| "/".into());
        if !crate::bff::is_local_path(&after_login) {
            return Err(err(
                "bff.after_login",
                "must be a local path starting with /",
            ));
        }
        let scopes = self
            .scopes
            .unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]);
        if !scopes.iter().any(|s| s == "openid") {
            return Err(err("bff.scopes", "must include openid"));
        }
        let session_idle = self.session_idle_secs.unwrap_or(3600);
        let session_max = self.session_max_secs.unwrap_or(43_200);
        if session_idle == 0 || session_max < session_idle {
            return Err(err(
                "bff.session_idle_secs",
                "must be at least 1 and at most session_max_secs",
            ));
        }
        Ok(BffConfig {
            issuer: self.issuer.trim_end_matches('/').to_owned(),
            client_id: self.client_id,
            client_secret,
            secure_cookies: redirect.scheme() == "https",
            redirect_uri: self.redirect_uri,
            origin,
            post_logout_redirect_uri: self.post_logout_redirect_uri,
            scopes,
            resources: self.resources,
            path_prefix,
            session_store: self
                .session_store
                .unwrap_or_else(|| "sqlite://bff-sessions.db".into()),
            session_key,
            session_key_file: self.session_key_file,
            session_idle,
            session_max,
            refresh_before: self.refresh_before_secs.unwrap_or(30),
            after_login,
        })
    }
}

/// A validated pool.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Name.
    pub name: String,
    /// Targets.
    pub targets: Vec<SocketAddr>,
    /// Health check path and interval/timeout.
    pub health_check: Option<(String, Duration, Duration)>,
    /// Passive ejection threshold (0 = off).
    pub eject_after_failures: u32,
    /// Ejection time.
    pub eject_for: Duration,
    /// HTTPS / mutual TLS to the targets.
    pub tls: Option<UpstreamTls>,
}

/// A validated consumer.
#[derive(Debug, Clone)]
pub struct Consumer {
    /// Name.
    pub name: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// API keys: digest and optional expiry.
    pub api_keys: Vec<([u8; 32], Option<u64>)>,
    /// Basic username and PHC hash.
    pub basic: Option<(String, String)>,
}

/// A validated authenticator.
#[derive(Debug, Clone)]
pub enum Authenticator {
    /// Anyone.
    Anonymous,
    /// API key in a header and/or query parameter.
    ApiKey {
        /// Header (lower case).
        header: String,
        /// Query parameter.
        query: Option<String>,
    },
    /// HTTP Basic against consumers' argon2id hashes.
    Basic,
    /// JWT access tokens via the service library.
    Jwt {
        /// Issuer.
        issuer: String,
        /// Audience.
        audience: String,
        /// Algorithms.
        algorithms: Vec<jsonwebtoken::Algorithm>,
    },
    /// The BFF's browser sessions (`[bff]`).
    Session,
    /// RFC 7662 introspection of opaque tokens.
    Introspection {
        /// Endpoint.
        endpoint: String,
        /// Client id.
        client_id: String,
        /// Client secret.
        client_secret: portcullis_core::Secret,
        /// Cache bound.
        cache_ttl: Duration,
    },
    /// Mutual TLS: the verified client certificate's SPIFFE ID, mapped to
    /// a consumer.
    Mtls {
        /// The trust domain IDs must belong to.
        trust_domain: portcullis_ca::TrustDomain,
        /// Mappings: exact IDs first, then wildcards longest first.
        identities: Vec<MtlsIdentity>,
    },
}

/// What a rate limit is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKey {
    /// The authenticated subject.
    Consumer,
    /// The OAuth client id.
    ClientId,
    /// The client IP (trusted-proxy aware).
    ClientIp,
}

/// A validated route.
#[derive(Debug, Clone, Default)]
pub struct Route {
    /// Name.
    pub name: String,
    /// Lower-cased host.
    pub host: Option<String>,
    /// Normalized prefix without trailing slash ("" for "/"), in the form
    /// route matching compares ([`crate::pipeline::route::folded`]).
    pub prefix: String,
    /// Upper-cased methods; empty = any.
    pub methods: Vec<http::Method>,
    /// Pool.
    pub upstream: String,
    /// Authenticators in order.
    pub auth: Vec<String>,
    /// Required scopes.
    pub require_scopes: Vec<String>,
    /// Required roles.
    pub require_roles: Vec<String>,
    /// Limit: per second, burst, key.
    pub rate_limit: Option<(u32, u32, LimitKey)>,
    /// With `scope = "cluster"`: the lease size (the limit is shared
    /// through Redis).
    pub cluster_lease: Option<u32>,
    /// Strip the prefix.
    pub strip_prefix: bool,
    /// Keep the client's `Authorization`; no internal token.
    pub forward_credentials: bool,
    /// The Cedar action the policies must allow.
    pub policy: Option<String>,
}

fn addr(key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse().map_err(|_| {
        err(
            key,
            format!("expected host:port with an IP address, got {v:?}"),
        )
    })
}

/// Parses `sha256:<hex>`.
pub fn parse_digest(s: &str) -> Option<[u8; 32]> {
    let hex = s.strip_prefix("sha256:")?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl RawConfig {
    /// Validates. `env` resolves secret environment variables.
    pub fn validate(self, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let listen = addr("listen", self.listen.as_deref().unwrap_or("127.0.0.1:8080"))?;
        let admin_listen = addr(
            "admin_listen",
            self.admin_listen.as_deref().unwrap_or("127.0.0.1:8081"),
        )?;
        if let Some(t) = &self.tls
            && t.enforce_crl_expiry
            && (t.client_ca.is_none() || t.crls.is_empty())
        {
            return Err(err(
                "tls.enforce_crl_expiry",
                "needs client_ca and at least one file in crls",
            ));
        }
        let mut trusted_proxies = HashSet::new();
        for (n, p) in self.trusted_proxies.iter().enumerate() {
            trusted_proxies.insert(
                p.parse()
                    .map_err(|_| err(format!("trusted_proxies[{n}]"), "expected an IP address"))?,
            );
        }
        let mut upstreams = HashMap::new();
        for (n, u) in self.upstreams.into_iter().enumerate() {
            let at = format!("upstreams[{n}]");
            if u.name.is_empty() {
                return Err(err(format!("{at}.name"), "must not be empty"));
            }
            if u.targets.is_empty() {
                return Err(err(format!("{at}.targets"), "needs at least one host:port"));
            }
            let targets = u
                .targets
                .iter()
                .enumerate()
                .map(|(i, t)| addr(&format!("{at}.targets[{i}]"), t))
                .collect::<Result<Vec<_>, _>>()?;
            let health_check = u.health_check.map(|h| {
                (
                    h.path,
                    Duration::from_millis(h.interval_ms.unwrap_or(2_000)),
                    Duration::from_millis(h.timeout_ms.unwrap_or(1_000)),
                )
            });
            if let Some((p, _, _)) = &health_check
                && !p.starts_with('/')
            {
                return Err(err(format!("{at}.health_check.path"), "must start with /"));
            }
            let tls = u.tls.map(|t| upstream_tls(&at, t)).transpose()?;
            let up = Upstream {
                name: u.name.clone(),
                targets,
                health_check,
                eject_after_failures: u.eject_after_failures.unwrap_or(3),
                eject_for: Duration::from_millis(u.eject_ms.unwrap_or(10_000)),
                tls,
            };
            if upstreams.insert(u.name.clone(), up).is_some() {
                return Err(err(
                    format!("{at}.name"),
                    format!("duplicate upstream {:?}", u.name),
                ));
            }
        }
        let mut consumers = Vec::new();
        let mut usernames = HashSet::new();
        for (n, c) in self.consumers.into_iter().enumerate() {
            let at = format!("consumers[{n}]");
            if c.name.is_empty() {
                return Err(err(format!("{at}.name"), "must not be empty"));
            }
            let mut api_keys = Vec::new();
            for (i, k) in c.api_keys.iter().enumerate() {
                let d = parse_digest(&k.digest).ok_or_else(|| {
                    err(
                        format!("{at}.api_keys[{i}].digest"),
                        "expected sha256:<64 hex digits> (from `portcullis apikeys create`)",
                    )
                })?;
                api_keys.push((d, k.expires_at));
            }
            let basic = match c.basic {
                Some(b) => {
                    if !b.password_hash.starts_with("$argon2id$") {
                        return Err(err(
                            format!("{at}.basic.password_hash"),
                            "expected an argon2id PHC string ($argon2id$…)",
                        ));
                    }
                    argon2::PasswordHash::new(&b.password_hash)
                        .map_err(|e| err(format!("{at}.basic.password_hash"), e.to_string()))?;
                    if !usernames.insert(b.username.clone()) {
                        return Err(err(format!("{at}.basic.username"), "duplicate username"));
                    }
                    Some((b.username, b.password_hash))
                }
                None => None,
            };
            consumers.push(Consumer {
                name: c.name,
                roles: c.roles,
                scopes: c.scopes,
                api_keys,
                basic,
            });
        }
        let mut authenticators = HashMap::new();
        authenticators.insert("anonymous".to_owned(), Authenticator::Anonymous);
        for (n, a) in self.authenticators.into_iter().enumerate() {
            let at = format!("authenticators[{n}]");
            let need = |v: Option<String>, k: &str| {
                v.ok_or_else(|| err(format!("{at}.{k}"), "required for this type"))
            };
            let auth = match a.kind.as_str() {
                "api_key" => Authenticator::ApiKey {
                    header: a
                        .header
                        .unwrap_or_else(|| "x-api-key".into())
                        .to_ascii_lowercase(),
                    query: a.query,
                },
                "basic" => Authenticator::Basic,
                "session" if self.bff.is_none() => {
                    return Err(err(format!("{at}.type"), "session needs a [bff] section"));
                }
                "session" => Authenticator::Session,
                "jwt" => {
                    let algorithms = a
                        .algorithms
                        .unwrap_or_else(|| vec!["ES256".into()])
                        .iter()
                        .map(|s| match s.as_str() {
                            "ES256" | "ES384" | "EdDSA" | "RS256" | "RS384" | "RS512" | "PS256"
                            | "PS384" | "PS512" => s
                                .parse::<jsonwebtoken::Algorithm>()
                                .map_err(|_| err(format!("{at}.algorithms"), "unknown")),
                            _ => Err(err(
                                format!("{at}.algorithms"),
                                format!("{s:?} is not an accepted asymmetric algorithm"),
                            )),
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Authenticator::Jwt {
                        issuer: need(a.issuer, "issuer")?,
                        audience: need(a.audience, "audience")?,
                        algorithms,
                    }
                }
                "introspection" => {
                    let var = need(a.client_secret_env, "client_secret_env")?;
                    let secret = env(&var).ok_or_else(|| {
                        err(
                            format!("{at}.client_secret_env"),
                            format!("environment variable {var} is not set"),
                        )
                    })?;
                    Authenticator::Introspection {
                        endpoint: need(a.endpoint, "endpoint")?,
                        client_id: need(a.client_id, "client_id")?,
                        client_secret: portcullis_core::Secret::new(secret),
                        cache_ttl: Duration::from_secs(a.cache_ttl_secs.unwrap_or(60)),
                    }
                }
                "mtls" => {
                    let td = need(a.trust_domain, "trust_domain")?;
                    let trust_domain = portcullis_ca::TrustDomain::parse(&td)
                        .map_err(|e| err(format!("{at}.trust_domain"), e.to_string()))?;
                    Authenticator::Mtls {
                        identities: mtls_identities(&at, &trust_domain, a.identities)?,
                        trust_domain,
                    }
                }
                other => {
                    return Err(err(
                        format!("{at}.type"),
                        format!(
                            "expected api_key, basic, jwt, introspection, mtls or session, got {other:?}"
                        ),
                    ));
                }
            };
            if authenticators.insert(a.name.clone(), auth).is_some() {
                return Err(err(
                    format!("{at}.name"),
                    format!("duplicate authenticator {:?}", a.name),
                ));
            }
        }
        let redis = match self.redis {
            None => None,
            Some(r) => Some(r.validate("redis").map_err(|e| err("redis", e))?),
        };
        let mut routes = Vec::new();
        let mut route_names = std::collections::HashSet::new();
        for (n, r) in self.routes.into_iter().enumerate() {
            let at = format!("routes[{n}]");
            // Compiled routes are found by name: two of one name would
            // share one's authentication.
            if !route_names.insert(r.name.clone()) {
                return Err(err(
                    format!("{at}.name"),
                    format!("duplicate route {:?}", r.name),
                ));
            }
            if !upstreams.contains_key(&r.upstream) {
                return Err(err(
                    format!("{at}.upstream"),
                    format!("no upstream named {:?}", r.upstream),
                ));
            }
            if r.auth.is_empty() {
                return Err(err(
                    format!("{at}.auth"),
                    "list at least one authenticator, or [\"anonymous\"]",
                ));
            }
            for a in &r.auth {
                if !authenticators.contains_key(a) {
                    return Err(err(
                        format!("{at}.auth"),
                        format!("no authenticator named {a:?}"),
                    ));
                }
            }
            let mtls = r
                .auth
                .iter()
                .any(|a| matches!(authenticators.get(a), Some(Authenticator::Mtls { .. })));
            if mtls && self.tls.as_ref().is_none_or(|t| t.client_ca.is_none()) {
                return Err(err(
                    format!("{at}.auth"),
                    "an mtls authenticator needs [tls] with client_ca on the listener",
                ));
            }
            if r.policy.is_some() && self.policies.is_none() {
                return Err(err(
                    format!("{at}.policy"),
                    "needs a `policies` directory at the top level",
                ));
            }
            if r.policy
                .as_deref()
                .is_some_and(|p| p.is_empty() || p.contains('"'))
            {
                return Err(err(format!("{at}.policy"), "expected a Cedar action name"));
            }
            if r.forward_credentials && r.auth.iter().any(|a| a != "anonymous") {
                return Err(err(
                    format!("{at}.forward_credentials"),
                    "only for anonymous routes: an authenticated route forwards an internal token",
                ));
            }
            let prefix = crate::pipeline::route::normalize(&r.path_prefix)
                .map_err(|e| err(format!("{at}.path_prefix"), e.to_string()))?;
            if prefix.contains(['?', '#']) {
                return Err(err(
                    format!("{at}.path_prefix"),
                    "a path has no query or fragment: escape ? and # as %3F and %23",
                ));
            }
            // Kept as matching compares it (lower case, Unicode case
            // folded), so that sorting by length puts the most specific
            // prefix first: `/ma%C3%9Fe` is `/masse`, shorter than `/masse/a`.
            let prefix = crate::pipeline::route::folded(prefix.trim_end_matches('/'));
            let methods = r
                .methods
                .iter()
                .map(|m| {
                    m.to_ascii_uppercase()
                        .parse::<http::Method>()
                        .map_err(|_| err(format!("{at}.methods"), format!("bad method {m:?}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut cluster_lease = None;
            let rate_limit = match r.rate_limit {
                None => None,
                Some(l) => {
                    if l.per_second == 0 {
                        return Err(err(
                            format!("{at}.rate_limit.per_second"),
                            "must be at least 1",
                        ));
                    }
                    let key = match l.key.as_deref().unwrap_or("consumer") {
                        "consumer" => LimitKey::Consumer,
                        "client_id" => LimitKey::ClientId,
                        "client_ip" => LimitKey::ClientIp,
                        other => {
                            return Err(err(
                                format!("{at}.rate_limit.key"),
                                format!("expected consumer, client_id or client_ip, got {other:?}"),
                            ));
                        }
                    };
                    let burst = l.burst.unwrap_or(l.per_second).max(1);
                    cluster_lease = match l.scope.as_deref().unwrap_or("local") {
                        "local" => None,
                        "cluster" if redis.is_none() => {
                            return Err(err(
                                format!("{at}.rate_limit.scope"),
                                "\"cluster\" needs a [redis] table",
                            ));
                        }
                        "cluster" => Some(l.lease.unwrap_or(burst / 10).clamp(1, burst)),
                        other => {
                            return Err(err(
                                format!("{at}.rate_limit.scope"),
                                format!("expected local or cluster, got {other:?}"),
                            ));
                        }
                    };
                    Some((l.per_second, burst, key))
                }
            };
            routes.push(Route {
                name: r.name,
                // As requests' hosts are compared: no port, no trailing dot.
                host: r
                    .host
                    .map(|h| crate::pipeline::route::bare_host(&h).to_ascii_lowercase()),
                prefix,
                methods,
                upstream: r.upstream,
                auth: r.auth,
                require_scopes: r.require_scopes,
                require_roles: r.require_roles,
                rate_limit,
                cluster_lease,
                strip_prefix: r.strip_prefix,
                forward_credentials: r.forward_credentials,
                policy: r.policy,
            });
        }
        let bff = self.bff.map(|b| b.validate(env)).transpose()?;
        if let Some(b) = &bff
            && b.session_store == crate::bff::store::REDIS
            && redis.is_none()
        {
            return Err(err("bff.session_store", "\"redis\" needs a [redis] table"));
        }
        if let Some(b) = &bff
            && let bff_prefix = crate::pipeline::route::folded(&b.path_prefix)
            && let Some(r) = routes
                .iter()
                .find(|r| r.prefix == bff_prefix || r.prefix.starts_with(&format!("{bff_prefix}/")))
        {
            return Err(err(
                "bff.path_prefix",
                format!(
                    "route {:?} lies under the BFF endpoints, which answer first",
                    r.name
                ),
            ));
        }
        let workers = match self.workers {
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Some(n @ 1..=1024) => n,
            Some(n) => return Err(err("workers", format!("{n} is not in 1..=1024"))),
        };
        let t = &self.timeouts;
        for (key, v) in [
            ("connect_ms", t.connect_ms),
            ("header_ms", t.header_ms),
            ("request_ms", t.request_ms),
            ("idle_ms", t.idle_ms),
            ("send_ms", t.send_ms),
        ] {
            if v == Some(0) {
                return Err(err(format!("timeouts.{key}"), "must be at least 1"));
            }
        }
        let ms = |v: Option<u64>, d: u64| Duration::from_millis(v.unwrap_or(d));
        let access_log = AccessLog {
            buffer_bytes: match self.access_log.buffer_bytes {
                Some(n) if n > MAX_ACCESS_LOG_BUFFER => {
                    return Err(err(
                        "access_log.buffer_bytes",
                        format!("{n} is above {MAX_ACCESS_LOG_BUFFER} (16 MiB)"),
                    ));
                }
                n => n.unwrap_or(DEFAULT_ACCESS_LOG_BUFFER),
            },
            flush: match self.access_log.flush_ms {
                Some(n @ 10..=60_000) => Duration::from_millis(n),
                None => Duration::from_secs(1),
                Some(n) => {
                    return Err(err(
                        "access_log.flush_ms",
                        format!("{n} is not in 10..=60000"),
                    ));
                }
            },
        };
        Ok(Config {
            listen,
            admin_listen,
            workers,
            issuer: self.issuer,
            signing_key_file: self.signing_key_file,
            internal_token_ttl: self.internal_token_ttl_secs.unwrap_or(60),
            trusted_proxies,
            identity_headers: self
                .identity_headers
                .iter()
                .map(|h| h.to_ascii_lowercase().replace('_', "-"))
                .collect(),
            max_header_bytes: self.limits.max_header_bytes.unwrap_or(16 * 1024),
            max_body_bytes: self.limits.max_body_bytes.unwrap_or(10 * 1024 * 1024),
            connect_timeout: ms(self.timeouts.connect_ms, 2_000),
            header_timeout: ms(self.timeouts.header_ms, 10_000),
            request_timeout: ms(self.timeouts.request_ms, 30_000),
            idle_timeout: ms(self.timeouts.idle_ms, 60_000),
            send_timeout: ms(self.timeouts.send_ms, 60_000),
            access_log,
            upstreams,
            consumers,
            authenticators,
            routes,
            bff,
            policies: self.policies,
            redis,
            tls: self.tls.map(|t| ListenerTls {
                cert: t.cert.into(),
                key: t.key.into(),
                client_ca: t.client_ca.map(Into::into),
                crls: t.crls.into_iter().map(Into::into).collect(),
                enforce_crl_expiry: t.enforce_crl_expiry,
            }),
        })
    }
}

fn upstream_tls(at: &str, t: RawUpstreamTls) -> Result<UpstreamTls, ConfigError> {
    let identity = match (t.cert, t.key) {
        (Some(cert), Some(key)) => Some(portcullis_ca::tls::ClientIdentity {
            cert_chain: cert.into(),
            key: key.into(),
        }),
        (None, None) => None,
        _ => {
            return Err(err(
                format!("{at}.tls"),
                "cert and key go together (mutual TLS) or not at all",
            ));
        }
    };
    if let Some(n) = &t.server_name
        && rustls_pki_types::ServerName::try_from(n.as_str()).is_err()
    {
        return Err(err(
            format!("{at}.tls.server_name"),
            format!("expected a DNS name or IP address, got {n:?}"),
        ));
    }
    Ok(UpstreamTls {
        ca: t.ca.into(),
        identity,
        server_name: t.server_name,
    })
}

fn mtls_identities(
    at: &str,
    trust_domain: &portcullis_ca::TrustDomain,
    raw: Vec<RawMtlsIdentity>,
) -> Result<Vec<MtlsIdentity>, ConfigError> {
    let mut out = Vec::new();
    for (i, m) in raw.into_iter().enumerate() {
        let key = format!("{at}.identities[{i}].spiffe_id");
        let (id, wildcard) = match m.spiffe_id.strip_suffix("/*") {
            Some(prefix) => (prefix, true),
            None => (m.spiffe_id.as_str(), false),
        };
        let parsed = portcullis_ca::SpiffeId::parse(id).map_err(|e| err(&key, e.to_string()))?;
        if parsed.trust_domain() != trust_domain {
            return Err(err(&key, format!("not in the trust domain {trust_domain}")));
        }
        if m.consumer.as_deref().is_some_and(str::is_empty) {
            return Err(err(
                format!("{at}.identities[{i}].consumer"),
                "must not be empty",
            ));
        }
        let spiffe_id = if wildcard {
            format!("{parsed}/")
        } else {
            parsed.to_string()
        };
        if out
            .iter()
            .any(|o: &MtlsIdentity| o.spiffe_id == spiffe_id && o.wildcard == wildcard)
        {
            return Err(err(&key, "duplicate mapping"));
        }
        out.push(MtlsIdentity {
            spiffe_id,
            wildcard,
            consumer: m.consumer,
            roles: m.roles,
            scopes: m.scopes,
        });
    }
    // Exact IDs first, then the longest prefix: the first match wins.
    out.sort_by(|a, b| {
        a.wildcard
            .cmp(&b.wildcard)
            .then(b.spiffe_id.len().cmp(&a.spiffe_id.len()))
    });
    Ok(out)
}
