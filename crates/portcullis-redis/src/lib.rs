//! The shared Redis client of the gateway, the IAM server and the service
//! library: one lazily connected [`redis::aio::ConnectionManager`] (it
//! reconnects by itself, so Redis coming back needs no restart), a key
//! prefix so several deployments or tests share one Redis, pub/sub helpers,
//! and per-feature health: every Redis error is counted in
//! `portcullis_redis_errors_total{feature}` and the gauge
//! `portcullis_redis_failing{feature}` is 1 while the feature's last Redis
//! call failed.
//!
//! What a feature does while Redis is unreachable is its [`FailMode`]:
//!
//! | feature | default | open | closed |
//! |---|---|---|---|
//! | cluster rate limits | open | each gateway applies the route's limit locally | 503 `temporarily_unavailable` |
//! | revocation events | open | the poll of the feed keeps working (revocations seen within its interval) | — (not offered) |
//! | BFF sessions | closed | — (not offered) | 503 |
//!
//! ```toml
//! [redis]
//! url = "redis://127.0.0.1:6379/0"
//! key_prefix = "portcullis:"
//! connect_timeout_ms = 500
//! response_timeout_ms = 250
//! rate_limit_fail_mode = "open"
//! ```

use portcullis_core::Secret;
use redis::aio::ConnectionManager;
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use redis;

/// What a feature does while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Keep serving (with a weaker, local guarantee).
    #[default]
    Open,
    /// Refuse (503) until Redis is back.
    Closed,
}

/// `[redis]` as written in a config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// `redis://` or `rediss://` URL (may carry a password).
    pub url: String,
    /// Prefix of every key and channel.
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// Connect timeout.
    #[serde(default = "default_connect_ms")]
    pub connect_timeout_ms: u64,
    /// Per-command timeout.
    #[serde(default = "default_response_ms")]
    pub response_timeout_ms: u64,
    /// Cluster rate limits while Redis is unreachable.
    #[serde(default)]
    pub rate_limit_fail_mode: FailMode,
}

fn default_prefix() -> String {
    "portcullis:".into()
}
fn default_connect_ms() -> u64 {
    500
}
fn default_response_ms() -> u64 {
    250
}

/// Validated `[redis]`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// The URL (secret: it may carry a password).
    pub url: Secret,
    /// Prefix of keys and channels.
    pub key_prefix: String,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Per-command timeout.
    pub response_timeout: Duration,
    /// Cluster rate limits while Redis is unreachable.
    pub rate_limit_fail_mode: FailMode,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &"[redacted]")
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

impl RawRedis {
    /// Checks the URL and timeouts; `at` names the table in errors.
    pub fn validate(self, at: &str) -> Result<RedisConfig, String> {
        redis::IntoConnectionInfo::into_connection_info(self.url.as_str())
            .map_err(|_| format!("{at}.url: expected a redis:// or rediss:// URL"))?;
        if self.connect_timeout_ms == 0 || self.response_timeout_ms == 0 {
            return Err(format!("{at}: timeouts must be at least 1 ms"));
        }
        Ok(RedisConfig {
            url: Secret::new(self.url),
            key_prefix: self.key_prefix,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            response_timeout: Duration::from_millis(self.response_timeout_ms),
            rate_limit_fail_mode: self.rate_limit_fail_mode,
        })
    }
}

impl RedisConfig {
    /// A config for `url` with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: Secret::new(url),
            key_prefix: default_prefix(),
            connect_timeout: Duration::from_millis(default_connect_ms()),
            response_timeout: Duration::from_millis(default_response_ms()),
            rate_limit_fail_mode: FailMode::Open,
        }
    }
}

/// Errors from Redis.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// The URL is not usable.
    #[error("redis: bad configuration: {0}")]
    Config(String),
    /// Redis answered with an error or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis answered something the caller did not expect.
    #[error("redis: unexpected reply: {0}")]
    Reply(String),
}

/// A handle on Redis; cheap to clone.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    manager: ConnectionManager,
    config: Arc<RedisConfig>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// Creates the client without connecting: the first command connects,
    /// and a dropped connection is re-established by the next one, so
    /// starting while Redis is down works and Redis coming back needs no
    /// restart. Must be called inside a Tokio runtime.
    pub fn connect(config: RedisConfig) -> Result<Self, RedisError> {
        let client = redis::Client::open(config.url.expose())
            .map_err(|_| RedisError::Config("unusable URL".into()))?;
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), cfg)?;
        Ok(Self {
            client,
            manager,
            config: Arc::new(config),
        })
    }

    /// The config.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// A connection for commands (shared, multiplexed; cloning is cheap).
    pub fn conn(&self) -> ConnectionManager {
        self.manager.clone()
    }

    /// `key_prefix` + `name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.config.key_prefix)
    }

    /// `PING`, for readiness checks.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut c = self.conn();
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(())
    }

    /// Publishes `payload` on the prefixed `channel`; returns how many
    /// subscribers received it.
    pub async fn publish(&self, channel: &str, payload: &str) -> Result<u64, RedisError> {
        let mut c = self.conn();
        let n: u64 = redis::cmd("PUBLISH")
            .arg(self.key(channel))
            .arg(payload)
            .query_async(&mut c)
            .await?;
        Ok(n)
    }

    /// Subscribes to the prefixed `channel` and calls `on_message` with each
    /// payload, forever: when the subscription breaks (Redis restarted, the
    /// network cut) it reconnects after `retry`, calling `on_resubscribed`
    /// every time it is subscribed again (callers use it to catch up on what
    /// they may have missed). Returns the task; abort it to stop.
    pub fn spawn_subscriber(
        &self,
        feature: Feature,
        channel: &str,
        retry: Duration,
        on_message: impl Fn(&str) + Send + Sync + 'static,
        on_resubscribed: impl Fn() + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        use futures_util::StreamExt;
        let client = self.client.clone();
        let channel = self.key(channel);
        let connect_timeout = self.config.connect_timeout;
        tokio::spawn(async move {
            loop {
                let sub = async {
                    let mut ps = client.get_async_pubsub().await?;
                    ps.subscribe(&channel).await?;
                    Ok::<_, redis::RedisError>(ps)
                };
                match tokio::time::timeout(connect_timeout, sub).await {
                    Ok(Ok(ps)) => {
                        feature.succeeded();
                        on_resubscribed();
                        let mut stream = ps.into_on_message();
                        while let Some(msg) = stream.next().await {
                            if let Ok(payload) = msg.get_payload::<String>() {
                                on_message(&payload);
                            }
                        }
                        feature.failed("subscription closed");
                    }
                    Ok(Err(e)) => feature.failed(&e.to_string()),
                    Err(_) => feature.failed("subscribe timed out"),
                }
                tokio::time::sleep(retry).await;
            }
        })
    }
}

/// The health of one feature's use of Redis: counts errors, keeps the
/// `portcullis_redis_failing{feature}` gauge, logs the transitions (once
/// when it starts failing, once when it recovers — not per request).
#[derive(Clone, Debug)]
pub struct Feature {
    name: &'static str,
    failing: Arc<AtomicBool>,
}

impl Feature {
    /// The feature called `name` in metrics (`rate_limit`, `revocation`, `sessions`).
    pub fn new(name: &'static str) -> Self {
        metrics::gauge!("portcullis_redis_failing", "feature" => name).set(0.0);
        Self {
            name,
            failing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether the last call failed.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Records the outcome of a call.
    pub fn record<T>(&self, r: &Result<T, impl std::fmt::Display>) {
        match r {
            Ok(_) => self.succeeded(),
            Err(e) => self.failed(&e.to_string()),
        }
    }

    /// Records a successful call.
    pub fn succeeded(&self) {
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(feature = self.name, "redis reachable again");
            metrics::gauge!("portcullis_redis_failing", "feature" => self.name).set(0.0);
        }
    }

    /// Records a failed call.
    pub fn failed(&self, why: &str) {
        metrics::counter!("portcullis_redis_errors_total", "feature" => self.name).increment(1);
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(feature = self.name, error = why, "redis unreachable");
            metrics::gauge!("portcullis_redis_failing", "feature" => self.name).set(1.0);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_defaults_and_refuses_bad_urls() {
        let raw: RawRedis = toml::from_str("url = \"redis://:pw@127.0.0.1:6379/0\"").unwrap();
        let c = raw.validate("redis").unwrap();
        assert_eq!(c.key_prefix, "portcullis:");
        assert_eq!(c.rate_limit_fail_mode, FailMode::Open);
        assert!(
            !format!("{c:?}").contains("pw"),
            "the password never prints"
        );
        let raw: RawRedis = toml::from_str("url = \"http://x\"").unwrap();
        assert!(raw.validate("redis").unwrap_err().contains("redis.url"));
        let r: Result<RawRedis, _> =
            toml::from_str("url = \"redis://x\"\nrate_limit_fail_mode = \"maybe\"");
        assert!(r.is_err());
    }
}
