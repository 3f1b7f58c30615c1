//! Phase 2: authenticate. Methods are tried in route order; the first whose
//! credential is present decides. A present but invalid credential is a 401
//! — it never falls through to a later method (not even `anonymous`).

use crate::config::{Consumer, MtlsIdentity};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::request::Parts;
use portcullis_ca::PeerCertificate;
use portcullis_core::Secret;
use portcullis_service::{AuthError, Validator};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Who is calling, as established by an authentication method.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Subject (consumer name, token `sub`).
    pub subject: String,
    /// Consumer name for API key / Basic.
    pub consumer: Option<String>,
    /// OAuth client id for token methods.
    pub client_id: Option<String>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Roles.
    pub roles: Vec<String>,
    /// `api_key`, `basic`, `jwt`, `introspection`, `mtls` or `anonymous`.
    pub method: &'static str,
    /// The inbound token's `jti`, if any.
    pub token_jti: Option<String>,
    /// Inbound credential expiry (unix), bounding internal-token caching.
    pub expires_at: Option<u64>,
    /// Digest of the inbound credential (internal-token cache key).
    pub credential_digest: [u8; 32],
    /// The `Authorization` to forward instead of an internal token: the
    /// person's access token, for a BFF session.
    pub bearer: Option<http::HeaderValue>,
    /// Services that acted on the subject's behalf (a token's `act` chain,
    /// outermost first).
    pub actors: Vec<String>,
}

/// Why authentication failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthnError {
    /// No method found its credential: 401 with every method's challenge.
    Missing,
    /// A credential was present and wrong: 401.
    Invalid {
        /// `Bearer` or `Basic` (for the challenge).
        scheme: &'static str,
        /// Safe to send.
        description: String,
    },
    /// A required dependency (JWKS, introspection) is unavailable: 503.
    Unavailable,
    /// A BFF session's state-changing call without CSRF proof: 403.
    Csrf,
    /// A route that only takes mutual TLS, reached without a verified
    /// client certificate: 401 `client_certificate_required`.
    CertificateRequired,
}

/// API keys by digest.
pub type ApiKeyIndex = HashMap<[u8; 32], (Arc<Consumer>, Option<u64>)>;
/// Basic users by name.
pub type BasicIndex = HashMap<String, (Arc<Consumer>, String)>;

/// A compiled authentication method.
pub enum Method {
    /// Anyone (the identity is `anonymous`).
    Anonymous,
    /// API key.
    ApiKey {
        /// Header.
        header: String,
        /// Query parameter.
        query: Option<String>,
        /// Keys.
        index: Arc<ApiKeyIndex>,
    },
    /// Basic.
    Basic {
        /// Users.
        index: Arc<BasicIndex>,
        /// Recently verified credentials (argon2 is deliberately slow).
        verified: moka::sync::Cache<[u8; 32], Arc<Consumer>>,
    },
    /// JWT via the service library.
    Jwt(Arc<Validator>),
    /// RFC 7662 introspection.
    Introspection(Arc<Introspector>),
    /// A BFF browser session.
    Session(Arc<crate::bff::Bff>),
    /// Mutual TLS: the connection's verified client certificate.
    Mtls {
        /// The trust domain SPIFFE IDs must belong to.
        trust_domain: portcullis_ca::TrustDomain,
        /// SPIFFE ID → consumer, exact IDs first, then longest prefix.
        identities: Vec<MtlsIdentity>,
    },
}

/// Why an `mtls` authenticator refused a certificate (401
/// `invalid_client_certificate`).
fn bad_certificate(description: String) -> AuthnError {
    AuthnError::Invalid {
        scheme: MTLS,
        description,
    }
}

/// The `scheme` of an [`AuthnError::Invalid`] from the `mtls` authenticator.
pub const MTLS: &str = "mTLS";

/// The identity a verified client certificate stands for, or why none.
fn mtls_identity(
    peer: &PeerCertificate,
    trust_domain: &portcullis_ca::TrustDomain,
    identities: &[MtlsIdentity],
) -> Result<Identity, AuthnError> {
    if !peer.chain_verified() {
        return Err(bad_certificate(
            "the client certificate does not chain to the configured CA".into(),
        ));
    }
    let who = peer.identity();
    let id = match (&who.spiffe_id, who.workload_in(trust_domain)) {
        (_, Some(id)) => id.to_string(),
        (None, _) => {
            return Err(bad_certificate(
                "the client certificate carries no SPIFFE ID".into(),
            ));
        }
        (Some(_), None) => {
            return Err(bad_certificate(format!(
                "the client certificate's SPIFFE ID is not in the trust domain {trust_domain}"
            )));
        }
    };
    let m = identities
        .iter()
        .find(|m| {
            if m.wildcard {
                id.starts_with(&m.spiffe_id)
            } else {
                id == m.spiffe_id
            }
        })
        .ok_or_else(|| bad_certificate(format!("{id} is not mapped to a consumer")))?;
    let name = m.consumer.clone().unwrap_or_else(|| id.clone());
    Ok(Identity {
        subject: name.clone(),
        consumer: Some(name),
        client_id: None,
        scopes: m.scopes.clone(),
        roles: m.roles.clone(),
        method: "mtls",
        token_jti: None,
        // Internal tokens are cached per certificate (and no longer than
        // their own lifetime); a revoked certificate fails its next handshake.
        expires_at: None,
        credential_digest: sha256(&[b"mtls\0", peer.x5t_s256().as_bytes()]),
        bearer: None,
        actors: Vec::new(),
    })
}

/// SHA-256 of the concatenated parts.
pub(crate) fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn consumer_identity(c: &Consumer, method: &'static str, digest: [u8; 32]) -> Identity {
    Identity {
        subject: c.name.clone(),
        consumer: Some(c.name.clone()),
        client_id: None,
        scopes: c.scopes.clone(),
        roles: c.roles.clone(),
        method,
        token_jti: None,
        expires_at: None,
        credential_digest: digest,
        bearer: None,
        actors: Vec::new(),
    }
}

/// The value of `Authorization: <scheme> <value>` if the scheme matches.
fn authorization<'a>(parts: &'a Parts, scheme: &str) -> Option<&'a str> {
    let v = parts
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (s, rest) = v.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// A query parameter's value.
pub fn query_param<'a>(parts: &'a Parts, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    let q = parts.uri.query()?;
    form_urlencoded_parse(q)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn form_urlencoded_parse(
    q: &str,
) -> impl Iterator<Item = (std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> {
    q.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        let dec = |s: &str| -> std::borrow::Cow<'_, str> {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
                .into()
        };
        (dec(k), dec(v))
    })
}

impl Method {
    /// The challenge this method contributes to a 401.
    pub fn challenge(&self) -> Option<&'static str> {
        match self {
            Method::Jwt(_) | Method::Introspection(_) => Some("Bearer realm=\"portcullis\""),
            Method::Basic { .. } => Some("Basic realm=\"portcullis\", charset=\"UTF-8\""),
            Method::ApiKey { .. }
            | Method::Anonymous
            | Method::Session(_)
            | Method::Mtls { .. } => None,
        }
    }

    /// `Ok(None)`: this method's credential is absent.
    pub async fn authenticate(
        &self,
        parts: &Parts,
        now: u64,
    ) -> Result<Option<Identity>, AuthnError> {
        match self {
            Method::Anonymous => Ok(Some(Identity {
                subject: "anonymous".into(),
                consumer: None,
                client_id: None,
                scopes: Vec::new(),
                roles: Vec::new(),
                method: "anonymous",
                token_jti: None,
                expires_at: None,
                credential_digest: [0; 32],
                bearer: None,
                actors: Vec::new(),
            })),
            Method::ApiKey {
                header,
                query,
                index,
            } => {
                let from_header = parts
                    .headers
                    .get(header.as_str())
                    .and_then(|v| v.to_str().ok())
                    .map(std::borrow::Cow::Borrowed);
                let key =
                    from_header.or_else(|| query.as_deref().and_then(|q| query_param(parts, q)));
                let Some(key) = key else { return Ok(None) };
                let digest = sha256(&[key.as_bytes()]);
                match index.get(&digest) {
                    Some((c, exp)) if exp.is_none_or(|e| now < e) => {
                        Ok(Some(consumer_identity(c, "api_key", digest)))
                    }
                    Some(_) => Err(AuthnError::Invalid {
                        scheme: "ApiKey",
                        description: "API key has expired".into(),
                    }),
                    None => Err(AuthnError::Invalid {
                        scheme: "ApiKey",
                        description: "API key is not valid".into(),
                    }),
                }
            }
            Method::Basic { index, verified } => {
                let Some(b64) = authorization(parts, "basic") else {
                    return Ok(None);
                };
                let invalid = || AuthnError::Invalid {
                    scheme: "Basic",
                    description: "invalid username or password".into(),
                };
                let raw = STANDARD.decode(b64).map_err(|_| invalid())?;
                let raw = String::from_utf8(raw).map_err(|_| invalid())?;
                let (user, pass) = raw.split_once(':').ok_or_else(invalid)?;
                let digest = sha256(&[b"basic\0", user.as_bytes(), b"\0", pass.as_bytes()]);
                if let Some(c) = verified.get(&digest) {
                    return Ok(Some(consumer_identity(&c, "basic", digest)));
                }
                let Some((c, phc)) = index.get(user) else {
                    return Err(invalid());
                };
                let (phc, pass) = (phc.clone(), Secret::new(pass));
                let ok = tokio::task::spawn_blocking(move || {
                    use argon2::PasswordVerifier;
                    argon2::PasswordHash::new(&phc)
                        .map(|h| {
                            argon2::Argon2::default()
                                .verify_password(pass.expose().as_bytes(), &h)
                                .is_ok()
                        })
                        .unwrap_or(false)
                })
                .await
                .unwrap_or(false);
                if !ok {
                    return Err(invalid());
                }
                verified.insert(digest, c.clone());
                Ok(Some(consumer_identity(c, "basic", digest)))
            }
            Method::Jwt(v) => {
                let Some(token) = authorization(parts, "bearer") else {
                    return Ok(None);
                };
                // RFC 8705 §3: a certificate-bound token needs its certificate
                // on this connection. The validator's cache key (the token's
                // SHA-256) also keys the internal-token cache.
                match v
                    .validate_bound_with_digest(token, parts.extensions.get::<PeerCertificate>())
                    .await
                {
                    Ok((p, digest)) => Ok(Some(Identity {
                        subject: p.subject.clone(),
                        consumer: None,
                        client_id: Some(p.client_id.clone()),
                        scopes: p.scopes.clone(),
                        roles: p.roles.clone(),
                        method: "jwt",
                        token_jti: Some(p.token_id.clone()),
                        expires_at: Some(p.expires_at),
                        credential_digest: digest,
                        bearer: None,
                        // The service library already read the `act` chain.
                        actors: p.actors.iter().map(|a| a.subject.clone()).collect(),
                    })),
                    Err(AuthError::Unavailable(_)) => Err(AuthnError::Unavailable),
                    Err(e) => Err(AuthnError::Invalid {
                        scheme: "Bearer",
                        description: e.to_string(),
                    }),
                }
            }
            Method::Introspection(i) => {
                let Some(token) = authorization(parts, "bearer") else {
                    return Ok(None);
                };
                // Boxed, like the other calls out: their futures are large
                // and would otherwise size every request's future.
                Box::pin(i.introspect(token, now)).await.map(Some)
            }
            Method::Session(bff) => Box::pin(bff.authenticate(parts)).await,
            Method::Mtls {
                trust_domain,
                identities,
            } => match parts.extensions.get::<PeerCertificate>() {
                None => Ok(None),
                Some(peer) => mtls_identity(peer, trust_domain, identities).map(Some),
            },
        }
    }
}

/// RFC 7662 client with a cache keyed by endpoint + token digest, capped at
/// the token's `exp`. Fails closed: an unreachable endpoint is a 503.
pub struct Introspector {
    endpoint: String,
    client_id: String,
    client_secret: Secret,
    cache_ttl: Duration,
    http: reqwest::Client,
    cache: moka::future::Cache<[u8; 32], (Option<Arc<Identity>>, Instant)>,
}

impl Introspector {
    /// An introspection client.
    pub fn new(
        endpoint: String,
        client_id: String,
        client_secret: Secret,
        cache_ttl: Duration,
    ) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(3))
            .build()
            .unwrap_or_default();
        let cache = moka::future::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(cache_ttl)
            .build();
        Self {
            endpoint,
            client_id,
            client_secret,
            cache_ttl,
            http,
            cache,
        }
    }

    async fn introspect(&self, token: &str, now: u64) -> Result<Identity, AuthnError> {
        let key = sha256(&[self.endpoint.as_bytes(), b"\0", token.as_bytes()]);
        let inactive = || AuthnError::Invalid {
            scheme: "Bearer",
            description: "token is not active".into(),
        };
        if let Some((hit, until)) = self.cache.get(&key).await
            && Instant::now() < until
        {
            metrics::counter!("portcullis_gateway_introspection_cache_total", "result" => "hit")
                .increment(1);
            return hit.map(|i| (*i).clone()).ok_or_else(inactive);
        }
        metrics::counter!("portcullis_gateway_introspection_cache_total", "result" => "miss")
            .increment(1);
        let resp = self
            .http
            .post(&self.endpoint)
            .basic_auth(&self.client_id, Some(self.client_secret.expose()))
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "introspection endpoint unreachable; refusing");
                AuthnError::Unavailable
            })?;
        if !resp.status().is_success() {
            tracing::error!(status = %resp.status(), "introspection failed; refusing");
            return Err(AuthnError::Unavailable);
        }
        let v: serde_json::Value = resp.json().await.map_err(|_| AuthnError::Unavailable)?;
        if v["active"] != true || v["exp"].as_u64().is_some_and(|e| e <= now) {
            // Cache negatives briefly so a flood of bad tokens stays cheap.
            let until = Instant::now() + self.cache_ttl.min(Duration::from_secs(10));
            self.cache.insert(key, (None, until)).await;
            return Err(inactive());
        }
        let exp = v["exp"].as_u64();
        let ident = Identity {
            subject: v["sub"]
                .as_str()
                .or(v["client_id"].as_str())
                .unwrap_or("unknown")
                .to_owned(),
            consumer: None,
            client_id: v["client_id"].as_str().map(str::to_owned),
            scopes: v["scope"]
                .as_str()
                .map(|s| {
                    s.split(' ')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            roles: v["roles"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            method: "introspection",
            token_jti: v["jti"].as_str().map(str::to_owned),
            expires_at: exp,
            credential_digest: sha256(&[token.as_bytes()]),
            bearer: None,
            actors: portcullis_policy::Principal::actors_of(v.get("act")),
        };
        let ttl = exp.map_or(self.cache_ttl, |e| {
            self.cache_ttl
                .min(Duration::from_secs(e.saturating_sub(now)))
        });
        self.cache
            .insert(key, (Some(Arc::new(ident.clone())), Instant::now() + ttl))
            .await;
        Ok(ident)
    }
}
