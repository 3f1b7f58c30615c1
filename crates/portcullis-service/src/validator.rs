//! Access-token validation for resource servers: strict rules from
//! `portcullis-core`, keys from the issuer's JWKS, revocations from the
//! issuer's feed, and a bounded cache of already-validated tokens.

use crate::jwks::{JwksCache, JwksConfig, KeyError};
use crate::principal::{Binding, Principal};
use crate::revocation::RevocationList;
use jsonwebtoken::Algorithm;
use portcullis_ca::PeerCertificate;
use portcullis_core::jose::validate::{Policy, ValidationError, inspect, verify};
use portcullis_core::{Clock, SystemClock};
use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Settings of a [`Validator`]. Secure by default: ES256 only, `typ` must
/// be `at+jwt`, `iss` exact, `aud` must name this service, 30 s leeway,
/// tokens over 8 KiB refused.
#[derive(Debug, Clone)]
pub struct ValidatorConfig {
    /// The issuer URL, exactly as in tokens.
    pub issuer: String,
    /// This service's identifier; `aud` must contain it.
    pub audience: String,
    /// Accepted algorithms (keys with other algorithms are ignored).
    pub algorithms: Vec<Algorithm>,
    /// Clock leeway for `exp`, `nbf`, `iat`.
    pub leeway: Duration,
    /// Largest accepted token.
    pub max_token_bytes: usize,
    /// JWKS client settings (issuer and algorithms are copied from here).
    pub jwks: JwksConfig,
    /// Revocation feed URL; `None` = `{issuer}/oauth2/revocations`.
    pub revocations_url: Option<String>,
    /// Follow the revocation feed at all.
    pub follow_revocations: bool,
    /// How often the revocation feed is polled: the bound on how long a
    /// revoked token is still accepted.
    pub revocation_poll: Duration,
    /// Entries in the validated-token cache (0 disables it).
    pub cache_capacity: u64,
    /// Redis: revocation events are applied as they are published.
    pub redis: Option<portcullis_redis::Redis>,
}

impl ValidatorConfig {
    /// Defaults for `issuer` and this service's `audience`.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        let issuer = issuer.into();
        Self {
            jwks: JwksConfig::new(issuer.clone()),
            issuer,
            audience: audience.into(),
            algorithms: vec![Algorithm::ES256],
            leeway: Duration::from_secs(30),
            max_token_bytes: 8 * 1024,
            revocations_url: None,
            follow_revocations: true,
            revocation_poll: Duration::from_secs(5),
            cache_capacity: 10_000,
            redis: None,
        }
    }

    /// Accepts these algorithms instead of ES256 only.
    pub fn algorithms(mut self, algs: &[Algorithm]) -> Self {
        self.algorithms = algs.to_vec();
        self
    }

    /// Turns off the revocation feed. Revoked tokens then stay valid until
    /// they expire.
    pub fn dangerous_ignore_revocations(mut self) -> Self {
        self.follow_revocations = false;
        self
    }
}

/// Why a request's token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The token is invalid (the caller's fault): 401 `invalid_token`.
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    /// The token was revoked: 401 `invalid_token`.
    #[error("token has been revoked")]
    Revoked,
    /// The issuer's keys could not be obtained (our fault): 503, never allow.
    #[error("token issuer unavailable")]
    Unavailable(String),
    /// A certificate-bound token (RFC 8705 §3) over a connection without
    /// that client certificate: 401 `invalid_token`.
    #[error("certificate binding: {0}")]
    Binding(&'static str),
}

/// Validates access tokens for one issuer and audience.
pub struct Validator {
    policy: Policy,
    jwks: Arc<JwksCache>,
    revocations: Arc<RevocationList>,
    cache: Option<moka::sync::Cache<[u8; 32], Arc<Principal>>>,
    /// Tells this validator's entries in the per-thread [`RECENT`] slots
    /// from another's.
    id: u64,
    clock: Arc<dyn Clock>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

static NEXT_VALIDATOR: AtomicU64 = AtomicU64::new(0);

/// Slots per thread in [`RECENT`].
const RECENT_SLOTS: usize = 256;

/// A token this thread validated lately: whose, which, what, and its
/// digest. The token's `String` is reused when the slot is, so a slot
/// changing hands allocates nothing once warm.
#[derive(Default)]
struct Slot {
    validator: u64,
    token: String,
    entry: Option<(Arc<Principal>, [u8; 32])>,
}

/// Direct-mapped: a token has one slot, picked by its hash; a newer token
/// takes the slot of an older one.
#[derive(Default)]
struct Recent {
    hasher: foldhash::fast::RandomState,
    slots: Vec<Slot>,
}

impl Recent {
    fn slot(&mut self, token: &str) -> &mut Slot {
        use std::hash::BuildHasher;
        if self.slots.is_empty() {
            self.slots.resize_with(RECENT_SLOTS, Slot::default);
        }
        let i = self.hasher.hash_one(token) as usize % RECENT_SLOTS;
        &mut self.slots[i]
    }
}

thread_local! {
    /// Each thread's recently validated tokens, in front of the shared
    /// cache (only where that cache is on). A hit here skips the token's
    /// SHA-256 and the shared cache's bookkeeping, about four fifths of a
    /// shared hit's cost (benches/validation.rs); revocation and expiry are
    /// checked on every hit all the same. Keyed by the token itself; only
    /// tokens that validated are entered.
    static RECENT: RefCell<Recent> = RefCell::new(Recent::default());
}

/// This thread's entry for `token`, if `validator` made it.
fn recent_get(validator: u64, token: &str) -> Option<(Arc<Principal>, [u8; 32])> {
    RECENT.with_borrow_mut(|r| {
        let s = r.slot(token);
        if s.validator == validator && s.token == token {
            s.entry.clone()
        } else {
            None
        }
    })
}

fn recent_put(validator: u64, token: &str, principal: &Arc<Principal>, digest: [u8; 32]) {
    RECENT.with_borrow_mut(|r| {
        let s = r.slot(token);
        s.validator = validator;
        s.token.clear();
        s.token.push_str(token);
        s.entry = Some((principal.clone(), digest));
    });
}

fn recent_remove(token: &str) {
    RECENT.with_borrow_mut(|r| {
        let s = r.slot(token);
        if s.token == token {
            s.entry = None;
        }
    });
}

/// What a cached principal is good for now.
enum Cached {
    Good,
    Expired,
    Revoked,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("issuer", &self.policy.issuer)
            .field("audience", &self.policy.audience)
            .finish()
    }
}

impl Drop for Validator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct UntilExp;

impl moka::Expiry<[u8; 32], Arc<Principal>> for UntilExp {
    fn expire_after_create(
        &self,
        _: &[u8; 32],
        p: &Arc<Principal>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(
            p.expires_at.saturating_sub(SystemClock.now()),
        ))
    }
}

/// RFC 8705 §3: a bound token is only good with its certificate.
fn check_binding(p: &Principal, peer: Option<&PeerCertificate>) -> Result<(), AuthError> {
    match (p.confirmation(), peer) {
        (Binding::None, _) => Ok(()),
        (Binding::Unsupported, _) => Err(AuthError::Binding("unsupported confirmation method")),
        (Binding::Certificate(_), None) => Err(AuthError::Binding(
            "the token is bound to a client certificate and none was presented",
        )),
        (Binding::Certificate(t), Some(peer)) if t == peer.x5t_s256() => Ok(()),
        (Binding::Certificate(_), Some(_)) => Err(AuthError::Binding(
            "the token is bound to a different client certificate",
        )),
    }
}

fn digest(token: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Validator {
    /// Builds a validator without I/O; keys are fetched on first use.
    pub fn new(cfg: ValidatorConfig) -> Self {
        Self::with_clock(cfg, Arc::new(SystemClock))
    }

    /// Builds a validator with an injected clock (tests).
    pub fn with_clock(mut cfg: ValidatorConfig, clock: Arc<dyn Clock>) -> Self {
        cfg.jwks.issuer = cfg.issuer.clone();
        cfg.jwks.algorithms = cfg.algorithms.clone();
        let revocations_url = cfg.follow_revocations.then(|| {
            cfg.revocations_url
                .clone()
                .unwrap_or_else(|| format!("{}/oauth2/revocations", cfg.issuer))
        });
        let cache = (cfg.cache_capacity > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(cfg.cache_capacity)
                .expire_after(UntilExp)
                .build()
        });
        Self {
            policy: Policy {
                issuer: cfg.issuer,
                audience: Some(cfg.audience),
                algorithms: cfg.algorithms,
                leeway: cfg.leeway.as_secs(),
                max_token_bytes: cfg.max_token_bytes,
            },
            jwks: Arc::new(JwksCache::new(cfg.jwks)),
            revocations: Arc::new(RevocationList::new(revocations_url, cfg.revocation_poll)),
            cache,
            id: NEXT_VALIDATOR.fetch_add(1, Ordering::Relaxed),
            clock,
            tasks: Vec::new(),
        }
    }

    /// Builds a validator, fetches keys and revocations once (a failure is
    /// logged and retried in the background, not fatal) and starts the
    /// background refresh of both.
    pub async fn start(cfg: ValidatorConfig) -> Arc<Self> {
        let redis = cfg.redis.clone();
        let mut v = Self::new(cfg);
        if let Err(e) = v.jwks.refresh().await {
            tracing::error!(issuer = %v.policy.issuer, error = %e, "cannot fetch the issuer's keys yet; requests get 503 until it answers");
        }
        if let Err(e) = v.revocations.poll(v.clock.now()).await {
            tracing::warn!(error = %e, "cannot fetch the revocation feed yet; retrying");
        }
        v.tasks.push(v.jwks.spawn_refresher());
        v.tasks.push(v.revocations.spawn_follower(v.clock.clone()));
        if let Some(redis) = redis.filter(|_| v.revocations.follows()) {
            let t = v
                .revocations
                .spawn_events(&redis, &v.policy.issuer, v.clock.clone());
            v.tasks.push(t);
        }
        Arc::new(v)
    }

    /// The JWKS cache (for metrics and tests).
    pub fn jwks(&self) -> &Arc<JwksCache> {
        &self.jwks
    }

    /// The revocation view (for tests and health checks).
    pub fn revocations(&self) -> &Arc<RevocationList> {
        &self.revocations
    }

    /// Validates a bearer token received without a client certificate. A
    /// certificate-bound token is refused ([`AuthError::Binding`]); use
    /// [`Validator::validate_bound`] where the connection is mutual TLS.
    pub async fn validate(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        self.validate_bound(token, None).await
    }

    /// Validates a bearer token received over a connection whose verified
    /// client certificate is `peer` (`None`: no certificate). A token with
    /// `cnf.x5t#S256` (RFC 8705 §3) is accepted only when that thumbprint
    /// is the certificate's; a plain bearer token is accepted either way.
    pub async fn validate_bound(
        &self,
        token: &str,
        peer: Option<&PeerCertificate>,
    ) -> Result<Arc<Principal>, AuthError> {
        let (p, _) = self.validate_token(token).await?;
        check_binding(&p, peer)?;
        Ok(p)
    }

    /// [`Validator::validate_bound`], also giving the token's SHA-256: the
    /// key of the validated-token cache, for a caller that keys its own
    /// caches by token too (the gateway's internal tokens). The token is
    /// hashed once for both.
    pub async fn validate_bound_with_digest(
        &self,
        token: &str,
        peer: Option<&PeerCertificate>,
    ) -> Result<(Arc<Principal>, [u8; 32]), AuthError> {
        let (p, key) = self.validate_token(token).await?;
        check_binding(&p, peer)?;
        Ok((p, key))
    }

    /// Validates through the caches: this thread's recent tokens, then the
    /// shared cache, keyed by the token's digest, which is returned with
    /// the principal. (Without a cache the digest is one hash beside the
    /// signature check every call then makes.)
    async fn validate_token(&self, token: &str) -> Result<(Arc<Principal>, [u8; 32]), AuthError> {
        let now = self.clock.now();
        // This thread's slot first: a hit there needs no digest.
        let (cached, key, in_slot) =
            match self.cache.as_ref().and_then(|_| recent_get(self.id, token)) {
                Some((p, key)) => (Some(p), key, true),
                None => {
                    let key = digest(token);
                    (self.cache.as_ref().and_then(|c| c.get(&key)), key, false)
                }
            };
        if let (Some(cache), Some(p)) = (&self.cache, cached) {
            match self.still(&p, now) {
                Cached::Good => {
                    metrics::counter!("portcullis_token_cache_total", "result" => "hit")
                        .increment(1);
                    if !in_slot {
                        recent_put(self.id, token, &p, key);
                    }
                    return Ok((p, key));
                }
                Cached::Revoked => {
                    recent_remove(token);
                    cache.invalidate(&key);
                    return Err(AuthError::Revoked);
                }
                Cached::Expired => {
                    recent_remove(token);
                    cache.invalidate(&key);
                }
            }
        }
        // Boxed: the miss path (signature check, maybe a JWKS fetch) has a
        // large future, and every caller's future would otherwise carry
        // its size on the hit path too.
        let result = Box::pin(self.validate_uncached(token, now)).await;
        let outcome = match &result {
            Ok(_) => "valid",
            Err(AuthError::Invalid(_)) => "invalid",
            Err(AuthError::Revoked) => "revoked",
            Err(AuthError::Unavailable(_)) => "unavailable",
            Err(AuthError::Binding(_)) => "unbound",
        };
        metrics::counter!("portcullis_token_validations_total", "result" => outcome).increment(1);
        let p = result?;
        if let Some(cache) = &self.cache {
            cache.insert(key, p.clone());
            recent_put(self.id, token, &p, key);
        }
        Ok((p, key))
    }

    /// Whether a cached principal may still be used at `now`.
    fn still(&self, p: &Principal, now: u64) -> Cached {
        if self
            .revocations
            .is_revoked(&p.token_id, &p.client_id, p.issued_at)
        {
            Cached::Revoked
        } else if now < p.expires_at.saturating_add(self.policy.leeway) {
            Cached::Good
        } else {
            Cached::Expired
        }
    }

    async fn validate_uncached(&self, token: &str, now: u64) -> Result<Arc<Principal>, AuthError> {
        let inspected = inspect(token, &self.policy)?;
        let key = self.jwks.key(&inspected.kid).await.map_err(|e| match e {
            KeyError::Unknown => AuthError::Invalid(ValidationError::UnknownKey),
            KeyError::Unavailable(why) => AuthError::Unavailable(why),
        })?;
        let claims = verify(token, &inspected, &key, &self.policy, now)?;
        if self
            .revocations
            .is_revoked(&claims.jti, &claims.client_id, claims.iat)
        {
            return Err(AuthError::Revoked);
        }
        Ok(Arc::new(Principal::from(claims)))
    }
}
