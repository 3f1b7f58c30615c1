//! A complete JWKS client for one issuer.
//!
//! - Discovery (RFC 8414, then OIDC) finds `jwks_uri` unless it is configured.
//! - Keys are cached; a background task refreshes them after the response's
//!   `Cache-Control: max-age`, clamped to `[min_refresh, max_refresh]`.
//! - An unknown `kid` triggers at most one refetch per `unknown_kid_interval`;
//!   concurrent requests for it share that one fetch (a single-flight lock),
//!   and the `kid` is then negatively cached.
//! - When the issuer is unreachable, the keys already held keep working
//!   (served stale); a failed fetch is reported as [`KeyError::Unavailable`],
//!   distinct from a bad token.
//! - Metrics: `portcullis_jwks_lookups_total{result}`,
//!   `portcullis_jwks_fetches_total{result}`, `portcullis_jwks_keys`.
//!
//! `jwk`, `jku`, `x5u` and `x5c` token headers are never key sources: the
//! only keys are those fetched from this issuer's JWKS.

use arc_swap::ArcSwapOption;
use jsonwebtoken::Algorithm;
use portcullis_core::jose::VerifyKey;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings of a [`JwksCache`].
#[derive(Debug, Clone)]
pub struct JwksConfig {
    /// The issuer, compared exactly with discovery's `issuer`.
    pub issuer: String,
    /// The JWKS URL; discovered from the issuer when `None`.
    pub jwks_uri: Option<String>,
    /// Algorithms keys may have (pinned by configuration).
    pub algorithms: Vec<Algorithm>,
    /// Lower bound of the refresh interval.
    pub min_refresh: Duration,
    /// Upper bound of the refresh interval (and the interval without max-age).
    pub max_refresh: Duration,
    /// An unknown `kid` refetches at most this often.
    pub unknown_kid_interval: Duration,
    /// HTTP timeout for discovery and JWKS requests.
    pub timeout: Duration,
    /// Largest JWKS/metadata response read.
    pub max_response_bytes: usize,
}

impl JwksConfig {
    /// Defaults for an issuer: ES256 only, refresh between 1 and 15 minutes,
    /// unknown-kid refetch at most every 10 s.
    pub fn new(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            jwks_uri: None,
            algorithms: vec![Algorithm::ES256],
            min_refresh: Duration::from_secs(60),
            max_refresh: Duration::from_secs(900),
            unknown_kid_interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            max_response_bytes: 512 * 1024,
        }
    }
}

/// Why no key could be returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The issuer's JWKS has no such key (the token is bad).
    #[error("unknown key id")]
    Unknown,
    /// The keys could not be fetched and none are held (our problem, not
    /// the token's): answer 503, never accept.
    #[error("issuer keys unavailable: {0}")]
    Unavailable(String),
}

/// Why a fetch failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(pub String);

#[derive(Default)]
struct FetchState {
    /// The last refetch an unknown kid triggered (the rate-limited kind).
    last_unknown_refetch: Option<Instant>,
    /// Why the last fetch failed, if it did.
    last_error: Option<String>,
}

struct KeySet {
    keys: HashMap<String, Arc<VerifyKey>>,
    fetched_at: Instant,
    max_age: Duration,
}

/// The cached keys of one issuer.
pub struct JwksCache {
    cfg: JwksConfig,
    http: reqwest::Client,
    jwks_uri: tokio::sync::OnceCell<String>,
    keys: ArcSwapOption<KeySet>,
    /// Single flight: held while fetching.
    fetch_lock: tokio::sync::Mutex<FetchState>,
    negative: moka::sync::Cache<String, ()>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("issuer", &self.cfg.issuer)
            .finish()
    }
}

/// Parses `max-age` out of a `Cache-Control` header value.
fn max_age(header: Option<&reqwest::header::HeaderValue>) -> Option<Duration> {
    let v = header?.to_str().ok()?;
    v.split(',').find_map(|d| {
        let (k, n) = d.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| n.trim().parse().ok())
            .flatten()
            .map(Duration::from_secs)
    })
}

impl JwksCache {
    /// A cache for `cfg.issuer`. Fetches nothing until asked or refreshed.
    pub fn new(cfg: JwksConfig) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(cfg.timeout)
            .build()
            .unwrap_or_default();
        let negative = moka::sync::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(cfg.unknown_kid_interval)
            .build();
        let jwks_uri = tokio::sync::OnceCell::new_with(cfg.jwks_uri.clone());
        Self {
            cfg,
            http,
            jwks_uri,
            keys: ArcSwapOption::empty(),
            fetch_lock: tokio::sync::Mutex::new(FetchState::default()),
            negative,
        }
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        &self.cfg.issuer
    }

    /// How many keys are held.
    pub fn key_count(&self) -> usize {
        self.keys.load().as_ref().map_or(0, |k| k.keys.len())
    }

    /// The key for `kid`.
    pub async fn key(&self, kid: &str) -> Result<Arc<VerifyKey>, KeyError> {
        if let Some(k) = self
            .keys
            .load()
            .as_ref()
            .and_then(|s| s.keys.get(kid).cloned())
        {
            metrics::counter!("portcullis_jwks_lookups_total", "result" => "hit").increment(1);
            return Ok(k);
        }
        if self.negative.contains_key(kid) {
            metrics::counter!("portcullis_jwks_lookups_total", "result" => "negative").increment(1);
            return Err(KeyError::Unknown);
        }
        // Single flight: one task fetches, the others wait and re-check.
        let mut state = self.fetch_lock.lock().await;
        if let Some(k) = self
            .keys
            .load()
            .as_ref()
            .and_then(|s| s.keys.get(kid).cloned())
        {
            metrics::counter!("portcullis_jwks_lookups_total", "result" => "hit_after_wait")
                .increment(1);
            return Ok(k);
        }
        let recent = state
            .last_unknown_refetch
            .is_some_and(|t| t.elapsed() < self.cfg.unknown_kid_interval);
        let held = self.keys.load().is_some();
        if recent && held {
            self.negative.insert(kid.to_owned(), ());
            metrics::counter!("portcullis_jwks_lookups_total", "result" => "unknown").increment(1);
            return Err(KeyError::Unknown);
        }
        if recent {
            let why = state
                .last_error
                .clone()
                .unwrap_or_else(|| "no keys fetched yet".into());
            return Err(KeyError::Unavailable(why));
        }
        state.last_unknown_refetch = Some(Instant::now());
        metrics::counter!("portcullis_jwks_lookups_total", "result" => "refetch").increment(1);
        match self.fetch(&mut state).await {
            Ok(()) => {}
            Err(e) if self.keys.load().is_some() => {
                // Issuer down: keep serving what we hold; this kid is unknown to it.
                tracing::warn!(issuer = %self.cfg.issuer, error = %e, "JWKS refetch failed; serving cached keys");
            }
            Err(e) => return Err(KeyError::Unavailable(e.0)),
        }
        match self
            .keys
            .load()
            .as_ref()
            .and_then(|s| s.keys.get(kid).cloned())
        {
            Some(k) => Ok(k),
            None => {
                self.negative.insert(kid.to_owned(), ());
                Err(KeyError::Unknown)
            }
        }
    }

    /// Fetches the JWKS now (discovering `jwks_uri` first if needed).
    pub async fn refresh(&self) -> Result<(), FetchError> {
        let mut state = self.fetch_lock.lock().await;
        self.fetch(&mut state).await
    }

    async fn get_json(&self, url: &str) -> Result<(Value, Option<Duration>), FetchError> {
        let fail = |why: String| FetchError(format!("{url}: {why}"));
        let mut resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(format!("status {}", resp.status())));
        }
        let age = max_age(resp.headers().get(reqwest::header::CACHE_CONTROL));
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| fail(e.to_string()))? {
            if body.len() + chunk.len() > self.cfg.max_response_bytes {
                return Err(fail("response too large".into()));
            }
            body.extend_from_slice(&chunk);
        }
        let v = serde_json::from_slice(&body).map_err(|e| fail(format!("not JSON: {e}")))?;
        Ok((v, age))
    }

    async fn discover(&self) -> Result<String, FetchError> {
        let mut last_err = FetchError("no discovery document".into());
        for path in [
            "/.well-known/oauth-authorization-server",
            "/.well-known/openid-configuration",
        ] {
            match self.get_json(&format!("{}{path}", self.cfg.issuer)).await {
                Ok((meta, _)) => {
                    if meta["issuer"].as_str() != Some(self.cfg.issuer.as_str()) {
                        return Err(FetchError(format!(
                            "discovery issuer {:?} is not the configured issuer",
                            meta["issuer"]
                        )));
                    }
                    return meta["jwks_uri"]
                        .as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| FetchError("discovery has no jwks_uri".into()));
                }
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    /// Fetches and swaps in the key set, under the single-flight lock.
    async fn fetch(&self, state: &mut FetchState) -> Result<(), FetchError> {
        let result = async {
            let uri = self
                .jwks_uri
                .get_or_try_init(|| self.discover())
                .await?
                .clone();
            let (set, age) = self.get_json(&uri).await?;
            let list = set["keys"]
                .as_array()
                .ok_or_else(|| FetchError("JWKS has no keys array".into()))?;
            let mut keys = HashMap::new();
            for k in list {
                match VerifyKey::from_jwk(k, &self.cfg.algorithms) {
                    Ok(key) => {
                        keys.insert(key.kid().to_owned(), Arc::new(key));
                    }
                    Err(e) => {
                        tracing::debug!(issuer = %self.cfg.issuer, error = %e, "skipping JWK")
                    }
                }
            }
            let max_age = age
                .unwrap_or(self.cfg.max_refresh)
                .clamp(self.cfg.min_refresh, self.cfg.max_refresh);
            Ok::<_, FetchError>(KeySet {
                keys,
                fetched_at: Instant::now(),
                max_age,
            })
        }
        .await;
        match result {
            Ok(set) => {
                metrics::counter!("portcullis_jwks_fetches_total", "result" => "ok").increment(1);
                metrics::gauge!("portcullis_jwks_keys").set(set.keys.len() as f64);
                // New keys may be the ones previously unknown.
                self.negative.invalidate_all();
                self.keys.store(Some(Arc::new(set)));
                state.last_error = None;
                Ok(())
            }
            Err(e) => {
                metrics::counter!("portcullis_jwks_fetches_total", "result" => "error")
                    .increment(1);
                state.last_error = Some(e.0.clone());
                Err(e)
            }
        }
    }

    /// When the next background refresh is due.
    fn next_refresh(&self) -> Duration {
        match self.keys.load().as_ref() {
            Some(s) => s.max_age.saturating_sub(s.fetched_at.elapsed()),
            None => Duration::ZERO,
        }
    }

    /// Runs the background refresh until the returned handle is aborted.
    /// Failures back off from 1 s up to `min_refresh`, keeping stale keys.
    pub fn spawn_refresher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            loop {
                tokio::time::sleep(me.next_refresh()).await;
                match me.refresh().await {
                    Ok(()) => backoff = Duration::from_secs(1),
                    Err(e) => {
                        tracing::warn!(issuer = %me.cfg.issuer, error = %e, "JWKS refresh failed; keeping cached keys");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(me.cfg.min_refresh);
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_parsed_from_cache_control() {
        let h = |s: &'static str| reqwest::header::HeaderValue::from_static(s);
        assert_eq!(
            max_age(Some(&h("public, max-age=300"))),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            max_age(Some(&h("MAX-AGE = 5"))),
            Some(Duration::from_secs(5))
        );
        assert_eq!(max_age(Some(&h("no-cache"))), None);
        assert_eq!(max_age(Some(&h("max-age=-1"))), None);
        assert_eq!(max_age(None), None);
    }
}
