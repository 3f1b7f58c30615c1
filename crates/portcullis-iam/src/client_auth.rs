//! Client authentication at the token, introspection and revocation
//! endpoints: `client_secret_basic`, `client_secret_post`,
//! `private_key_jwt` (RFC 6749 §2.3, RFC 7523 §2.2), and `tls_client_auth` /
//! `self_signed_tls_client_auth` (RFC 8705 §2: `client_id` in the body, the
//! TLS client certificate as the credential). Exactly one method per
//! request; failures are `invalid_client` with one message for unknown
//! client, wrong secret and disabled client, so ids cannot be enumerated.

use crate::clients::ClientRegistry;
use crate::http::error::ApiError;
use crate::http::form::FormParams;
use crate::model::{Client, Credential};
use crate::store::Store;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use jsonwebtoken::jwk::JwkSet;
use moka::future::Cache;
use portcullis_ca::PeerCertificate;
use portcullis_core::jose::{AssertionError, AssertionPolicy, verify_client_assertion};
use portcullis_core::oauth::OAuthError;
use portcullis_core::{ClientId, Clock};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// RFC 7523 §2.2 assertion type.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How the client authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// HTTP Basic.
    ClientSecretBasic,
    /// `client_id` + `client_secret` in the body.
    ClientSecretPost,
    /// A signed JWT assertion.
    PrivateKeyJwt,
    /// A public client named by `client_id` alone (RFC 6749 §2.1): it
    /// proves nothing, so it is accepted only at the token endpoint (its
    /// code grants, where PKCE binds the code) and the revocation endpoint.
    None,
    /// A client certificate from the trusted CA naming the client (RFC 8705 §2.1).
    TlsClientAuth,
    /// A registered self-signed client certificate (RFC 8705 §2.2).
    SelfSignedTlsClientAuth,
}

impl AuthMethod {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
            Self::None => "none",
            Self::TlsClientAuth => crate::mtls::TLS_CLIENT_AUTH,
            Self::SelfSignedTlsClientAuth => crate::mtls::SELF_SIGNED_TLS_CLIENT_AUTH,
        }
    }

    /// Whether the client proved itself with its TLS certificate.
    pub fn is_certificate(self) -> bool {
        matches!(self, Self::TlsClientAuth | Self::SelfSignedTlsClientAuth)
    }
}

/// An authenticated client.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The client.
    pub client: Arc<Client>,
    /// How it proved itself.
    pub method: AuthMethod,
}

const FAILED: &str = "client authentication failed";

/// An unknown `kid` refetches a client's `jwks_uri` at most this often.
const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(2);

/// The largest client JWK Set we read.
const JWKS_MAX_BYTES: usize = 256 * 1024;

struct CachedJwks {
    set: Arc<JwkSet>,
    fetched: Instant,
}

/// Authenticates clients.
pub struct ClientAuthenticator {
    registry: Arc<ClientRegistry>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    policy: AssertionPolicy,
    http: reqwest::Client,
    jwks_cache: Cache<String, Arc<CachedJwks>>,
}

enum Presented<'a> {
    Secret {
        id: String,
        secret: String,
        method: AuthMethod,
    },
    Assertion {
        id: Option<&'a str>,
        assertion: &'a str,
    },
    Public {
        id: &'a str,
    },
}

fn invalid_client(reason: &str) -> ApiError {
    OAuthError::invalid_client(reason.to_owned()).into()
}

impl ClientAuthenticator {
    /// An authenticator. `audiences` are the accepted assertion `aud`s.
    pub fn new(
        registry: Arc<ClientRegistry>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        audiences: Vec<String>,
        max_assertion_lifetime: u64,
    ) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            registry,
            store,
            clock,
            policy: AssertionPolicy {
                audiences,
                max_lifetime: max_assertion_lifetime,
                leeway: 5,
            },
            http,
            jwks_cache: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
        }
    }

    /// Authenticates the client of a request, or explains why not. `peer`
    /// is the TLS client certificate of the connection, if any.
    pub async fn authenticate(
        &self,
        endpoint: &str,
        headers: &HeaderMap,
        form: &FormParams,
        peer: Option<&PeerCertificate>,
    ) -> Result<Authenticated, ApiError> {
        let presented = match presented(headers, form) {
            Ok(p) => p,
            Err(e) => {
                crate::audit::client_auth_failed(
                    endpoint,
                    form.get("client_id"),
                    "-",
                    &e.error.to_string(),
                );
                return Err(e);
            }
        };
        let (claimed, method) = match &presented {
            Presented::Secret { id, method, .. } => (Some(id.as_str()), method.as_str()),
            Presented::Assertion { id, .. } => (*id, AuthMethod::PrivateKeyJwt.as_str()),
            Presented::Public { id } => (Some(*id), AuthMethod::None.as_str()),
        };
        let public_allowed = matches!(endpoint, "token" | "revoke");
        let claimed = claimed.map(str::to_owned);
        let result = self.verify(presented, peer, public_allowed).await;
        if let Err(e) = &result {
            crate::audit::client_auth_failed(
                endpoint,
                claimed.as_deref(),
                method,
                &e.error.to_string(),
            );
        }
        result
    }

    async fn verify(
        &self,
        presented: Presented<'_>,
        peer: Option<&PeerCertificate>,
        public_allowed: bool,
    ) -> Result<Authenticated, ApiError> {
        match presented {
            // `client_id` alone: a public client, or one whose credential is
            // the TLS client certificate (RFC 8705 §2).
            Presented::Public { id } => match self.lookup(id).await? {
                Some(c)
                    if c.enabled
                        && matches!(
                            c.credential,
                            Credential::TlsClientAuth(_) | Credential::SelfSignedTls(_)
                        ) =>
                {
                    let method = match c.credential {
                        Credential::TlsClientAuth(_) => AuthMethod::TlsClientAuth,
                        _ => AuthMethod::SelfSignedTlsClientAuth,
                    };
                    // The client hears the one generic message; the log says why.
                    crate::mtls::check(&c.credential, peer).map_err(|why| {
                        tracing::info!(client_id = %c.id, reason = why.as_str(), "TLS client certificate refused");
                        invalid_client(FAILED)
                    })?;
                    Ok(Authenticated { client: c, method })
                }
                _ if !public_allowed => Err(invalid_client("client authentication is required")),
                Some(c) if c.enabled && matches!(c.credential, Credential::None) => {
                    Ok(Authenticated {
                        client: c,
                        method: AuthMethod::None,
                    })
                }
                _ => Err(invalid_client(FAILED)),
            },
            Presented::Secret { id, secret, method } => {
                let client = self.lookup(&id).await?;
                let ok = match (&client, client.as_ref().map(|c| &c.credential)) {
                    (Some(_), Some(Credential::Secret { digest })) => {
                        self.registry.master().verify_secret(&secret, digest)
                    }
                    _ => {
                        // Same work for unknown clients, so timing tells nothing.
                        let _ = self.registry.master().secret_digest(&secret);
                        false
                    }
                };
                match client {
                    Some(c) if ok && c.enabled => Ok(Authenticated { client: c, method }),
                    _ => Err(invalid_client(FAILED)),
                }
            }
            Presented::Assertion { id, assertion } => {
                // The client is named by `client_id` or, failing that, by the
                // assertion's `sub` (read unverified only to find the keys).
                let sub = assertion_subject(assertion)?;
                if id.is_some_and(|id| id != sub) {
                    return Err(invalid_client(
                        "client_id does not match the assertion subject",
                    ));
                }
                let client = self.lookup(&sub).await?.filter(|c| c.enabled);
                let Some(client) = client else {
                    return Err(invalid_client(FAILED));
                };
                let keys = match &client.credential {
                    Credential::Jwks(j) => {
                        Arc::new(serde_json::from_value::<JwkSet>(j.clone()).map_err(|_| {
                            invalid_client("the client's registered JWKS is invalid")
                        })?)
                    }
                    Credential::JwksUri(u) => self.fetch_jwks(u, false).await?,
                    Credential::Secret { .. }
                    | Credential::None
                    | Credential::TlsClientAuth(_)
                    | Credential::SelfSignedTls(_) => {
                        return Err(invalid_client(FAILED));
                    }
                };
                let now = self.clock.now();
                let verified = match verify_client_assertion(
                    assertion,
                    client.id.as_str(),
                    &keys,
                    &self.policy,
                    now,
                ) {
                    Err(AssertionError::UnknownKey)
                        if matches!(client.credential, Credential::JwksUri(_)) =>
                    {
                        // The client may have rotated: refetch, at most every JWKS_REFETCH_INTERVAL.
                        let Credential::JwksUri(u) = &client.credential else {
                            unreachable!()
                        };
                        let keys = self.fetch_jwks(u, true).await?;
                        verify_client_assertion(
                            assertion,
                            client.id.as_str(),
                            &keys,
                            &self.policy,
                            now,
                        )
                    }
                    r => r,
                }
                .map_err(|e| invalid_client(&e.to_string()))?;
                if !self
                    .store
                    .use_assertion_jti(&client.id, &verified.jti, verified.exp)
                    .await?
                {
                    return Err(invalid_client(
                        "client assertion has already been used (jti replay)",
                    ));
                }
                Ok(Authenticated {
                    client,
                    method: AuthMethod::PrivateKeyJwt,
                })
            }
        }
    }

    async fn lookup(&self, id: &str) -> Result<Option<Arc<Client>>, ApiError> {
        match ClientId::from_str(id) {
            Ok(id) => Ok(self.registry.get(&id).await?),
            Err(_) => Ok(None),
        }
    }

    async fn fetch_jwks(&self, url: &url::Url, refresh: bool) -> Result<Arc<JwkSet>, ApiError> {
        let key = url.to_string();
        if let Some(c) = self.jwks_cache.get(&key).await
            && (!refresh || c.fetched.elapsed() < JWKS_REFETCH_INTERVAL)
        {
            return Ok(c.set.clone());
        }
        let fail = |why: &str| {
            tracing::warn!(jwks_uri = %url, reason = why, "client jwks_uri fetch failed");
            invalid_client("the client's jwks_uri could not be fetched")
        };
        let mut resp = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(|_| fail("request failed"))?;
        if !resp.status().is_success() {
            return Err(fail("non-success status"));
        }
        // Read at most JWKS_MAX_BYTES, whatever the server claims.
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|_| fail("body read failed"))? {
            if body.len() + chunk.len() > JWKS_MAX_BYTES {
                return Err(fail("too large"));
            }
            body.extend_from_slice(&chunk);
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|_| fail("not a JWK Set"))?;
        let set = Arc::new(set);
        self.jwks_cache
            .insert(
                key,
                Arc::new(CachedJwks {
                    set: set.clone(),
                    fetched: Instant::now(),
                }),
            )
            .await;
        Ok(set)
    }
}

/// Which credentials the request carries; more than one method is refused.
fn presented<'a>(headers: &HeaderMap, form: &'a FormParams) -> Result<Presented<'a>, ApiError> {
    let mut auth_headers = headers.get_all(http::header::AUTHORIZATION).iter();
    let authz = auth_headers.next();
    if auth_headers.next().is_some() {
        return Err(OAuthError::invalid_request("more than one Authorization header").into());
    }
    let basic = match authz {
        None => None,
        Some(v) => {
            let v = v
                .to_str()
                .map_err(|_| invalid_client("malformed Authorization header"))?;
            match v.split_once(' ') {
                Some((scheme, creds)) if scheme.eq_ignore_ascii_case("basic") => {
                    Some(parse_basic(creds.trim())?)
                }
                _ => {
                    return Err(invalid_client(
                        "unsupported Authorization scheme; use Basic",
                    ));
                }
            }
        }
    };
    let body_secret = form.get("client_secret");
    let assertion = form.get("client_assertion");
    let assertion_type = form.get("client_assertion_type");
    let methods = usize::from(basic.is_some())
        + usize::from(body_secret.is_some())
        + usize::from(assertion.is_some() || assertion_type.is_some());
    if methods > 1 {
        return Err(OAuthError::invalid_request(
            "more than one client authentication method in one request",
        )
        .into());
    }
    let body_id = form.get("client_id");
    if let Some((id, secret)) = basic {
        if body_id.is_some_and(|b| b != id) {
            return Err(OAuthError::invalid_request(
                "client_id does not match the Basic credentials",
            )
            .into());
        }
        return Ok(Presented::Secret {
            id,
            secret,
            method: AuthMethod::ClientSecretBasic,
        });
    }
    if let Some(secret) = body_secret {
        let id = body_id
            .ok_or_else(|| OAuthError::invalid_request("client_secret without client_id"))?;
        return Ok(Presented::Secret {
            id: id.to_owned(),
            secret: secret.to_owned(),
            method: AuthMethod::ClientSecretPost,
        });
    }
    if assertion.is_some() || assertion_type.is_some() {
        match (assertion_type, assertion) {
            (Some(JWT_BEARER_ASSERTION), Some(a)) => {
                return Ok(Presented::Assertion {
                    id: body_id,
                    assertion: a,
                });
            }
            (Some(JWT_BEARER_ASSERTION), None) => {
                return Err(OAuthError::invalid_request("client_assertion is missing").into());
            }
            (None, _) => {
                return Err(OAuthError::invalid_request("client_assertion_type is missing").into());
            }
            (Some(_), _) => {
                return Err(OAuthError::invalid_request(
                    "unsupported client_assertion_type (expected jwt-bearer)",
                )
                .into());
            }
        }
    }
    match body_id {
        Some(id) => Ok(Presented::Public { id }),
        None => Err(invalid_client("client authentication is required")),
    }
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1).
fn parse_basic(b64: &str) -> Result<(String, String), ApiError> {
    let malformed = || invalid_client("malformed Basic credentials");
    let raw = STANDARD.decode(b64).map_err(|_| malformed())?;
    let raw = String::from_utf8(raw).map_err(|_| malformed())?;
    let (id, secret) = raw.split_once(':').ok_or_else(malformed)?;
    let decode = |s: &str| -> Result<String, ApiError> {
        let s = s.replace('+', "%20");
        let out: String = form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        if out.contains('\u{FFFD}') {
            return Err(malformed());
        }
        Ok(out)
    };
    let (id, secret) = (decode(id)?, decode(secret)?);
    if id.is_empty() {
        return Err(malformed());
    }
    Ok((id, secret))
}

/// The unverified `sub` of an assertion, only to find the client's keys.
fn assertion_subject(assertion: &str) -> Result<String, ApiError> {
    #[derive(serde::Deserialize)]
    struct Sub {
        sub: String,
    }
    if assertion.len() > portcullis_core::jose::MAX_JWT_BYTES {
        return Err(invalid_client("client assertion is malformed"));
    }
    jsonwebtoken::dangerous::insecure_decode_claims::<Sub>(assertion)
        .map(|s| s.sub)
        .map_err(|_| invalid_client("client assertion is malformed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let enc = STANDARD.encode("my%3Aclient:s%2Bcret+x");
        assert_eq!(
            parse_basic(&enc).unwrap(),
            ("my:client".into(), "s+cret x".into())
        );
        assert!(parse_basic("!!!").is_err());
        assert!(parse_basic(&STANDARD.encode("nocolon")).is_err());
        assert!(parse_basic(&STANDARD.encode(":secret")).is_err());
    }
}
