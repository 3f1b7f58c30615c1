//! The client half: a client-credentials token source and a tower layer
//! that attaches its tokens to outgoing requests, and token exchange
//! (RFC 8693) for calls made on behalf of the caller.
//!
//! - Tokens are cached per (audience, scopes) and replaced ahead of expiry;
//!   exchanged tokens per (subject token, audience, scopes).
//! - Concurrent callers needing the same token share one request.
//! - Network errors, 5xx and 429 are retried with exponential backoff and
//!   jitter; an OAuth error such as `invalid_client` is returned at once.
//! - [`BearerLayer`] wraps any `Service<reqwest::Request>` (e.g.
//!   `reqwest::Client`). On a 401 from the callee it fetches a fresh token
//!   and retries once.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use portcullis_core::Secret;
use portcullis_core::jose::SigningKey;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tower::{Layer, Service};

/// How this service authenticates to the token endpoint.
#[derive(Clone)]
pub enum ClientCredentials {
    /// `client_secret_basic`.
    Secret {
        /// Client id.
        client_id: String,
        /// Client secret.
        secret: Secret,
    },
    /// `private_key_jwt` (RFC 7523): a fresh signed assertion per request.
    PrivateKeyJwt {
        /// Client id.
        client_id: String,
        /// The client's private key (its public JWK is registered).
        key: Arc<SigningKey>,
    },
    /// `tls_client_auth` / `self_signed_tls_client_auth` (RFC 8705 §2):
    /// the client certificate presented in the TLS handshake is the
    /// credential; the request names only `client_id`. The IAM server
    /// binds the tokens to that certificate, so the cache is dropped when
    /// the certificate is reloaded.
    TlsClientAuth {
        /// Client id.
        client_id: String,
        /// The certificate, as an HTTP client that presents it.
        tls: Arc<crate::tls::ClientTls>,
    },
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Secret { client_id, .. } => write!(f, "Secret({client_id}, [redacted])"),
            Self::PrivateKeyJwt { client_id, key } => {
                write!(f, "PrivateKeyJwt({client_id}, {})", key.kid())
            }
            Self::TlsClientAuth { client_id, tls } => {
                write!(f, "TlsClientAuth({client_id}, {tls:?})")
            }
        }
    }
}

/// Settings of a [`TokenSource`].
#[derive(Debug, Clone)]
pub struct TokenSourceConfig {
    /// Token endpoint URL.
    pub token_endpoint: String,
    /// Credentials.
    pub credentials: ClientCredentials,
    /// Replace a token this long before it expires (at most half its lifetime).
    pub refresh_ahead: Duration,
    /// Retries after the first attempt, for network errors, 5xx and 429.
    pub max_retries: u32,
    /// First backoff; doubles per retry, plus up to as much again of jitter.
    pub base_backoff: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl TokenSourceConfig {
    /// Defaults: refresh 30 s ahead, 3 retries from 100 ms, 5 s timeout.
    pub fn new(token_endpoint: impl Into<String>, credentials: ClientCredentials) -> Self {
        Self {
            token_endpoint: token_endpoint.into(),
            credentials,
            refresh_ahead: Duration::from_secs(30),
            max_retries: 3,
            base_backoff: Duration::from_millis(100),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Why no token could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The server refused (e.g. `invalid_client`, `invalid_scope`); not retried.
    #[error("token request refused: {error}{}", .description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Refused {
        /// OAuth error code.
        error: String,
        /// Its description.
        description: Option<String>,
    },
    /// Network errors or 5xx responses, after all retries.
    #[error("token endpoint unavailable: {0}")]
    Unavailable(String),
    /// A response that is not a token response.
    #[error("malformed token response: {0}")]
    Malformed(String),
}

/// An access token and when it expires.
#[derive(Clone)]
pub struct AccessToken {
    /// The token.
    pub token: Secret,
    /// Its expiry on this machine's monotonic clock.
    pub expires_at: Instant,
    /// When to replace it.
    pub refresh_at: Instant,
    /// Granted scopes.
    pub scope: Option<String>,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"[redacted]")
            .field("scope", &self.scope)
            .finish()
    }
}

struct RefreshAhead;

impl moka::Expiry<String, Arc<AccessToken>> for RefreshAhead {
    fn expire_after_create(
        &self,
        _: &String,
        t: &Arc<AccessToken>,
        now: Instant,
    ) -> Option<Duration> {
        Some(t.refresh_at.saturating_duration_since(now))
    }
}

/// Gets and caches client-credentials tokens.
pub struct TokenSource {
    cfg: TokenSourceConfig,
    http: reqwest::Client,
    cache: moka::future::Cache<String, Arc<AccessToken>>,
    exchanged: moka::future::Cache<String, Arc<AccessToken>>,
    requests: AtomicU64,
}

/// `grant_type` of token exchange (RFC 8693).
const EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The token type of access tokens (RFC 8693 §3).
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("token_endpoint", &self.cfg.token_endpoint)
            .finish()
    }
}

fn cache_key(audience: Option<&str>, scopes: &[&str]) -> String {
    let mut s: Vec<&str> = scopes.to_vec();
    s.sort_unstable();
    s.dedup();
    format!("{}\u{0}{}", audience.unwrap_or(""), s.join(" "))
}

/// The exchange cache key: a digest of the subject token (never the token
/// itself), the audience and the scopes.
fn exchange_key(subject_token: &str, audience: &str, scopes: &[&str]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, subject_token.as_bytes());
    format!(
        "{}\u{0}{}",
        B64.encode(d.as_ref()),
        cache_key(Some(audience), scopes)
    )
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = SystemRandom::new().fill(&mut b);
    u64::from_le_bytes(b)
}

impl TokenSource {
    /// A token source; no I/O until a token is needed.
    pub fn new(cfg: TokenSourceConfig) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(cfg.timeout)
            .build()
            .unwrap_or_default();
        let cache = moka::future::Cache::builder()
            .max_capacity(1_000)
            .expire_after(RefreshAhead)
            .build();
        // One entry per caller token and audience: bounded more generously.
        let exchanged = moka::future::Cache::builder()
            .max_capacity(10_000)
            .expire_after(RefreshAhead)
            .build();
        Self {
            cfg,
            http,
            cache,
            exchanged,
            requests: AtomicU64::new(0),
        }
    }

    /// How many HTTP requests this source has made to the token endpoint.
    pub fn requests_made(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// A token for `audience` with `scopes` (cached; one request per miss,
    /// shared by concurrent callers).
    pub async fn token(
        &self,
        audience: Option<&str>,
        scopes: &[&str],
    ) -> Result<Arc<AccessToken>, TokenError> {
        let key = self.certificate_generation() + &cache_key(audience, scopes);
        let mut grant: Vec<(&str, String)> = vec![("grant_type", "client_credentials".into())];
        if !scopes.is_empty() {
            grant.push(("scope", scopes.join(" ")));
        }
        if let Some(a) = audience {
            grant.push(("resource", a.to_owned()));
        }
        self.cache
            .try_get_with(key, async { self.fetch(&grant).await.map(Arc::new) })
            .await
            .map_err(|e| (*e).clone())
    }

    /// A token for `audience` on behalf of the caller whose token this
    /// service received (`subject_token`), by token exchange (RFC 8693): it
    /// keeps the caller as `sub` and names this service in `act`. Cached per
    /// (subject token, audience, scopes) until shortly before it expires;
    /// concurrent callers share one request. `scopes` empty asks for every
    /// scope the exchange rule and the subject token allow.
    pub async fn exchange(
        &self,
        subject_token: &str,
        audience: &str,
        scopes: &[&str],
    ) -> Result<Arc<AccessToken>, TokenError> {
        let key = exchange_key(subject_token, audience, scopes);
        let mut grant: Vec<(&str, String)> = vec![
            ("grant_type", EXCHANGE_GRANT.into()),
            ("subject_token", subject_token.to_owned()),
            ("subject_token_type", ACCESS_TOKEN_TYPE.into()),
            ("audience", audience.to_owned()),
        ];
        if !scopes.is_empty() {
            grant.push(("scope", scopes.join(" ")));
        }
        self.exchanged
            .try_get_with(key, async { self.fetch(&grant).await.map(Arc::new) })
            .await
            .map_err(|e| (*e).clone())
    }

    /// Forgets the cached token (after the callee answered 401).
    pub async fn invalidate(&self, audience: Option<&str>, scopes: &[&str]) {
        let key = self.certificate_generation() + &cache_key(audience, scopes);
        self.cache.invalidate(&key).await;
    }

    /// With `tls_client_auth`, a cache-key prefix that changes when the
    /// certificate is reloaded: tokens bound to the old one are not reused.
    fn certificate_generation(&self) -> String {
        match &self.cfg.credentials {
            ClientCredentials::TlsClientAuth { tls, .. } => format!("{}\u{0}", tls.generation()),
            _ => String::new(),
        }
    }

    fn assertion(&self, client_id: &str, key: &SigningKey) -> Result<String, TokenError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut jti = [0u8; 16];
        SystemRandom::new()
            .fill(&mut jti)
            .map_err(|_| TokenError::Malformed("random source failed".into()))?;
        let claims = serde_json::json!({
            "iss": client_id, "sub": client_id, "aud": self.cfg.token_endpoint,
            "iat": now, "exp": now + 60, "jti": B64.encode(jti),
        });
        let mut header = serde_json::Map::new();
        header.insert("typ".into(), "JWT".into());
        key.sign_with_header(header, &claims)
            .map_err(|e| TokenError::Malformed(e.to_string()))
    }

    async fn fetch(&self, grant: &[(&str, String)]) -> Result<AccessToken, TokenError> {
        let mut attempt = 0;
        loop {
            match self.fetch_once(grant).await {
                Err(TokenError::Unavailable(why)) if attempt < self.cfg.max_retries => {
                    let base = self.cfg.base_backoff.saturating_mul(1 << attempt.min(16));
                    let jitter =
                        Duration::from_nanos(random_u64() % (base.as_nanos() as u64).max(1));
                    tracing::warn!(error = %why, attempt, "token request failed; retrying");
                    tokio::time::sleep(base + jitter).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// One token request: the grant's parameters plus client authentication.
    async fn fetch_once(&self, grant: &[(&str, String)]) -> Result<AccessToken, TokenError> {
        let mut form: Vec<(&str, String)> = grant.to_vec();
        let mut req = match &self.cfg.credentials {
            ClientCredentials::TlsClientAuth { tls, .. } => tls.client(),
            _ => self.http.clone(),
        }
        .post(&self.cfg.token_endpoint);
        match &self.cfg.credentials {
            ClientCredentials::TlsClientAuth { client_id, .. } => {
                form.push(("client_id", client_id.clone()));
            }
            ClientCredentials::Secret { client_id, secret } => {
                let enc =
                    |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                req = req.basic_auth(enc(client_id), Some(enc(secret.expose())));
            }
            ClientCredentials::PrivateKeyJwt { client_id, key } => {
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push(("client_assertion", self.assertion(client_id, key)?));
            }
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        let resp = req
            .form(&form)
            .send()
            .await
            .map_err(|e| TokenError::Unavailable(e.to_string()))?;
        let status = resp.status();
        let body: serde_json::Value = match resp.json().await {
            Ok(b) => b,
            Err(_) if status.is_server_error() => {
                return Err(TokenError::Unavailable(format!("status {status}")));
            }
            Err(e) => return Err(TokenError::Malformed(e.to_string())),
        };
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(TokenError::Unavailable(format!("status {status}")));
        }
        if !status.is_success() {
            return Err(TokenError::Refused {
                error: body["error"].as_str().unwrap_or("unknown_error").to_owned(),
                description: body["error_description"].as_str().map(str::to_owned),
            });
        }
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| TokenError::Malformed("no access_token".into()))?;
        let expires_in = body["expires_in"]
            .as_u64()
            .ok_or_else(|| TokenError::Malformed("no expires_in".into()))?;
        let lifetime = Duration::from_secs(expires_in);
        let ahead = self.cfg.refresh_ahead.min(lifetime / 2);
        Ok(AccessToken {
            token: Secret::new(token),
            expires_at: sent + lifetime,
            refresh_at: sent + lifetime - ahead,
            scope: body["scope"].as_str().map(str::to_owned),
        })
    }
}

/// Errors of a [`BearerService`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No token could be had.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The request itself failed.
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

/// Tower layer attaching `Authorization: Bearer` for `audience`/`scopes`.
#[derive(Clone)]
pub struct BearerLayer {
    tokens: Arc<TokenSource>,
    audience: Option<Arc<str>>,
    scopes: Arc<[String]>,
}

impl BearerLayer {
    /// Tokens from `tokens`, for `audience` with `scopes`.
    pub fn new(tokens: Arc<TokenSource>, audience: Option<&str>, scopes: &[&str]) -> Self {
        Self {
            tokens,
            audience: audience.map(Arc::from),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl<S> Layer<S> for BearerLayer {
    type Service = BearerService<S>;
    fn layer(&self, inner: S) -> BearerService<S> {
        BearerService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`BearerLayer`] produces.
#[derive(Clone)]
pub struct BearerService<S> {
    inner: S,
    layer: BearerLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

fn authorize(req: &mut reqwest::Request, t: &AccessToken) -> Result<(), TokenError> {
    let v = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", t.token.expose()))
        .map_err(|_| TokenError::Malformed("token is not a valid header value".into()))?;
    req.headers_mut().insert(reqwest::header::AUTHORIZATION, v);
    Ok(())
}

impl<S> Service<reqwest::Request> for BearerService<S>
where
    S: Service<reqwest::Request, Response = reqwest::Response, Error = reqwest::Error>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = reqwest::Response;
    type Error = ClientError;
    type Future = BoxFuture<Result<reqwest::Response, ClientError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ClientError>> {
        self.inner.poll_ready(cx).map_err(ClientError::Http)
    }

    fn call(&mut self, mut req: reqwest::Request) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let l = self.layer.clone();
        Box::pin(async move {
            let scopes: Vec<&str> = l.scopes.iter().map(String::as_str).collect();
            let aud = l.audience.as_deref();
            let t = l.tokens.token(aud, &scopes).await?;
            authorize(&mut req, &t)?;
            let retry = req.try_clone();
            let resp = inner.call(req).await?;
            let Some(mut retry) =
                retry.filter(|_| resp.status() == reqwest::StatusCode::UNAUTHORIZED)
            else {
                return Ok(resp);
            };
            // The callee refused the token (revoked, key rotated): once more
            // with a fresh one.
            l.tokens.invalidate(aud, &scopes).await;
            let t = l.tokens.token(aud, &scopes).await?;
            authorize(&mut retry, &t)?;
            use tower::ServiceExt;
            Ok(inner.ready().await?.call(retry).await?)
        })
    }
}
