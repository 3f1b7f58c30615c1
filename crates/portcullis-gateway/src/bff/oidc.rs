//! The BFF's side of OpenID Connect: discovery (OIDC Discovery §4), the
//! token endpoint (code and refresh grants, RFC 6749 §4.1.3 and §6), ID
//! token validation (OIDC Core §3.1.3.7) and revocation (RFC 7009).

use crate::config::BffConfig;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

/// What went wrong talking to the provider.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider answered with an OAuth error (e.g. `invalid_grant`).
    #[error("the provider refused: {error}")]
    Refused {
        /// The RFC 6749 error code.
        error: String,
    },
    /// The provider could not be reached or answered nonsense.
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    /// The ID token failed validation.
    #[error("the ID token is not valid: {0}")]
    BadIdToken(String),
}

/// The discovery fields the BFF uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    /// Must equal the configured issuer.
    pub issuer: String,
    /// Where the browser is sent.
    pub authorization_endpoint: String,
    /// Code and refresh grants.
    pub token_endpoint: String,
    /// ID-token keys.
    pub jwks_uri: String,
    /// RP-initiated logout.
    pub end_session_endpoint: Option<String>,
    /// RFC 7009.
    pub revocation_endpoint: Option<String>,
}

/// A token endpoint response (RFC 6749 §5.1).
#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: String,
    /// Seconds.
    pub expires_in: Option<u64>,
    /// Rotated refresh token.
    pub refresh_token: Option<String>,
    /// ID token (code grant; optional on refresh).
    pub id_token: Option<String>,
    /// Granted scope.
    pub scope: Option<String>,
}

const JWKS_MAX_AGE: Duration = Duration::from_secs(300);
/// A `kid` missing from a fresh key set causes at most one refetch per this.
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(10);

/// The provider, as this BFF knows it.
pub struct Provider {
    cfg: BffConfig,
    http: reqwest::Client,
    metadata: RwLock<Option<Arc<Metadata>>>,
    jwks: RwLock<Option<(Arc<JwkSet>, Instant)>>,
}

impl Provider {
    /// A provider whose metadata is fetched on first use.
    pub fn new(cfg: BffConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            cfg,
            http,
            metadata: RwLock::new(None),
            jwks: RwLock::new(None),
        }
    }

    /// The discovery document (fetched once, retried until it succeeds).
    pub async fn metadata(&self) -> Result<Arc<Metadata>, OidcError> {
        if let Some(m) = self.metadata.read().await.as_ref() {
            return Ok(m.clone());
        }
        let mut slot = self.metadata.write().await;
        if let Some(m) = slot.as_ref() {
            return Ok(m.clone());
        }
        let url = format!("{}/.well-known/openid-configuration", self.cfg.issuer);
        let m: Metadata = self.get_json(&url).await?;
        // OIDC Discovery §4.3: the issuer must be exactly the one configured.
        if m.issuer.trim_end_matches('/') != self.cfg.issuer {
            return Err(OidcError::Unavailable(format!(
                "discovery names issuer {:?}, not the configured one",
                m.issuer
            )));
        }
        let m = Arc::new(m);
        *slot = Some(m.clone());
        Ok(m)
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(&self, url: &str) -> Result<T, OidcError> {
        let r = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| OidcError::Unavailable(e.without_url().to_string()))?;
        if !r.status().is_success() {
            return Err(OidcError::Unavailable(format!(
                "{url} answered {}",
                r.status()
            )));
        }
        r.json()
            .await
            .map_err(|e| OidcError::Unavailable(e.without_url().to_string()))
    }

    /// A token request with the BFF's client authentication.
    pub async fn token(&self, params: &[(&str, &str)]) -> Result<TokenResponse, OidcError> {
        let m = self.metadata().await?;
        let r = self.authenticated_post(&m.token_endpoint, params).await?;
        let status = r.status();
        let body: Value = r
            .json()
            .await
            .map_err(|e| OidcError::Unavailable(e.without_url().to_string()))?;
        if status.is_success() {
            return serde_json::from_value(body)
                .map_err(|e| OidcError::Unavailable(format!("token response: {e}")));
        }
        match body.get("error").and_then(Value::as_str) {
            Some(error) if status.is_client_error() => Err(OidcError::Refused {
                error: error.chars().take(64).collect(),
            }),
            _ => Err(OidcError::Unavailable(format!(
                "token endpoint answered {status}"
            ))),
        }
    }

    async fn authenticated_post(
        &self,
        url: &str,
        params: &[(&str, &str)],
    ) -> Result<reqwest::Response, OidcError> {
        let mut form: Vec<(&str, &str)> = params.to_vec();
        let mut req = self.http.post(url);
        match &self.cfg.client_secret {
            // RFC 6749 §2.3.1: both parts form-encoded before Basic.
            Some(secret) => {
                let enc =
                    |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                req = req.basic_auth(enc(&self.cfg.client_id), Some(enc(secret.expose())));
            }
            None => form.push(("client_id", &self.cfg.client_id)),
        }
        req.form(&form)
            .send()
            .await
            .map_err(|e| OidcError::Unavailable(e.without_url().to_string()))
    }

    /// Revokes a token (RFC 7009); best effort, the caller logs failures.
    pub async fn revoke(&self, token: &str, hint: &str) -> Result<(), OidcError> {
        let m = self.metadata().await?;
        let Some(url) = &m.revocation_endpoint else {
            return Ok(());
        };
        let r = self
            .authenticated_post(url, &[("token", token), ("token_type_hint", hint)])
            .await?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(OidcError::Unavailable(format!(
                "revocation answered {}",
                r.status()
            )))
        }
    }

    async fn key_set(&self, refetch: bool) -> Result<Arc<JwkSet>, OidcError> {
        if let Some((set, at)) = self.jwks.read().await.as_ref() {
            let age = at.elapsed();
            if age < JWKS_MAX_AGE && !(refetch && age >= JWKS_MIN_REFETCH) {
                return Ok(set.clone());
            }
        }
        let m = self.metadata().await?;
        let set: JwkSet = self.get_json(&m.jwks_uri).await?;
        let set = Arc::new(set);
        *self.jwks.write().await = Some((set.clone(), Instant::now()));
        Ok(set)
    }

    /// Validates an ID token from the token endpoint (OIDC Core §3.1.3.7):
    /// RS256 signature by a published key, `iss`, `aud` (and `azp`), `exp`,
    /// and the `nonce` of this login when one is expected. Returns the claims.
    pub async fn verify_id_token(
        &self,
        token: &str,
        nonce: Option<&str>,
    ) -> Result<serde_json::Map<String, Value>, OidcError> {
        let bad = |why: &str| OidcError::BadIdToken(why.to_owned());
        let header = jsonwebtoken::decode_header(token).map_err(|_| bad("malformed"))?;
        if header.alg != Algorithm::RS256 {
            return Err(bad("not RS256"));
        }
        let kid = header.kid.ok_or_else(|| bad("no kid"))?;
        let mut set = self.key_set(false).await?;
        if set.find(&kid).is_none() {
            set = self.key_set(true).await?;
        }
        let jwk = set.find(&kid).ok_or_else(|| bad("unknown kid"))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|_| bad("unusable key"))?;
        let mut v = Validation::new(Algorithm::RS256);
        v.set_issuer(&[self.cfg.issuer.as_str()]);
        v.set_audience(&[self.cfg.client_id.as_str()]);
        v.set_required_spec_claims(&["iss", "sub", "aud", "exp", "iat"]);
        v.leeway = 30;
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, &v)
            .map_err(|e| OidcError::BadIdToken(e.to_string()))?;
        let claims = data.claims;
        if let Some(azp) = claims.get("azp").and_then(Value::as_str)
            && azp != self.cfg.client_id
        {
            return Err(bad("azp names another client"));
        }
        if let Some(expected) = nonce {
            let got = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
            let same: bool =
                subtle::ConstantTimeEq::ct_eq(got.as_bytes(), expected.as_bytes()).into();
            if !same {
                return Err(bad("nonce does not match this login"));
            }
        }
        Ok(claims)
    }
}
