//! Phase 4: rate limit, GCRA per route, keyed by consumer, client id or
//! client IP: in this process ([`LocalLimiter`], governor) or across every
//! gateway sharing a Redis ([`RedisLimiter`], `scope = "cluster"`).
//!
//! The cluster limiter runs GCRA in one Lua script on Redis' clock
//! (`TIME`), so gateways' clocks do not matter. To keep Redis off the
//! per-request path, a gateway takes a *lease* of up to `lease` requests at
//! once (the script charges all of them to the key) and admits locally from
//! it for at most [`LEASE_TTL`]; a refusal is remembered until its
//! `retry_after`, so a limited client costs no Redis call either.
//!
//! Bound: every admitted request was charged in Redis first, so over any
//! period the total admitted across the cluster is at most what one GCRA
//! admits (`burst + per_second × seconds`) plus the leases taken just before
//! the period began: at most `N_gateways × lease` extra. Unused leases are
//! lost (the cluster may admit up to `N_gateways × lease` fewer).
//!
//! Redis unreachable: `rate_limit_fail_mode = "open"` (default) applies the
//! same limit per gateway (so up to `N_gateways ×` the limit), `"closed"`
//! answers 503 `temporarily_unavailable`. Both count in
//! `portcullis_redis_errors_total{feature="rate_limit"}` and recover by
//! themselves when Redis is back.

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use portcullis_redis::{FailMode, Feature, Redis, redis};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A limit decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; this many more requests fit in the burst now.
    Allowed {
        /// Limit (burst).
        limit: u32,
        /// Remaining.
        remaining: u32,
    },
    /// Refused; retry after this long.
    Limited {
        /// Limit (burst).
        limit: u32,
        /// Wait.
        retry_after: Duration,
    },
    /// The shared limiter cannot decide (Redis down, fail closed): 503.
    Unavailable,
}

/// A keyed rate limiter.
#[async_trait]
pub trait Limiter: Send + Sync {
    /// Counts one request for `key`.
    async fn check(&self, key: &str) -> Decision;
}

type Keyed =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// The in-process GCRA limiter.
pub struct LocalLimiter {
    inner: Keyed,
    burst: u32,
    clock: DefaultClock,
}

impl LocalLimiter {
    /// `per_second` sustained, `burst` at once.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let ps = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let b = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let inner = RateLimiter::keyed(Quota::per_second(ps).allow_burst(b))
            .with_middleware::<StateInformationMiddleware>();
        Self {
            inner,
            burst,
            clock: DefaultClock::default(),
        }
    }
}

#[async_trait]
impl Limiter for LocalLimiter {
    async fn check(&self, key: &str) -> Decision {
        self.check_now(key)
    }
}

impl LocalLimiter {
    fn check_now(&self, key: &str) -> Decision {
        match self.inner.check_key(&key.to_owned()) {
            Ok(snapshot) => Decision::Allowed {
                limit: self.burst,
                remaining: snapshot.remaining_burst_capacity(),
            },
            Err(not_until) => Decision::Limited {
                limit: self.burst,
                retry_after: not_until.wait_time_from(self.clock.now()),
            },
        }
    }
}

/// How long a gateway may admit from a lease after taking it.
pub const LEASE_TTL: Duration = Duration::from_millis(250);

/// GCRA on Redis' clock. KEYS[1]: the key's theoretical arrival time (µs);
/// ARGV: emission interval (µs), burst, requests wanted. Grants up to the
/// wanted count; returns {granted, remaining after, retry after (ms)}.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tau = interval * burst
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local avail = math.floor((now + tau - tat) / interval)
if avail <= 0 then
  return {0, 0, math.ceil((tat - tau + interval - now) / 1000)}
end
local grant = math.min(want, avail)
tat = tat + grant * interval
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
return {grant, avail - grant, 0}
";

#[derive(Default)]
struct Lease {
    tokens: u32,
    remaining: u32,
    expires: Option<Instant>,
    denied_until: Option<Instant>,
}

/// The cluster-wide GCRA limiter (see the module docs for the bound).
pub struct RedisLimiter {
    redis: Redis,
    feature: Feature,
    namespace: String,
    interval_us: u64,
    burst: u32,
    lease: u32,
    fail_mode: FailMode,
    fallback: LocalLimiter,
    leases: moka::sync::Cache<String, Arc<Mutex<Lease>>>,
    script: redis::Script,
}

impl RedisLimiter {
    /// A limit of `per_second` sustained, `burst` at once, for the route
    /// `route`, taking leases of `lease` requests (clamped to 1..=burst).
    pub fn new(
        redis: Redis,
        feature: Feature,
        route: &str,
        (per_second, burst, lease): (u32, u32, u32),
    ) -> Self {
        let per_second = per_second.max(1);
        let burst = burst.max(1);
        let fail_mode = redis.config().rate_limit_fail_mode;
        Self {
            namespace: redis.key(&format!("rl:{route}:")),
            redis,
            feature,
            interval_us: (1_000_000 / u64::from(per_second)).max(1),
            burst,
            lease: lease.clamp(1, burst),
            fail_mode,
            fallback: LocalLimiter::new(per_second, burst),
            leases: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(60))
                .build(),
            script: redis::Script::new(GCRA),
        }
    }

    /// Takes what the local lease allows, if anything.
    fn local(&self, slot: &Mutex<Lease>) -> Option<Decision> {
        let now = Instant::now();
        let mut l = slot.lock().ok()?;
        if let Some(until) = l.denied_until {
            if until > now {
                return Some(Decision::Limited {
                    limit: self.burst,
                    retry_after: until - now,
                });
            }
            l.denied_until = None;
        }
        if l.tokens > 0 && l.expires.is_some_and(|e| e > now) {
            l.tokens -= 1;
            return Some(Decision::Allowed {
                limit: self.burst,
                remaining: l.remaining + l.tokens,
            });
        }
        None
    }

    async fn take(&self, key: &str) -> Result<(u32, u32, u64), redis::RedisError> {
        let mut conn = self.redis.conn();
        self.script
            .key(format!("{}{key}", self.namespace))
            .arg(self.interval_us)
            .arg(self.burst)
            .arg(self.lease)
            .invoke_async(&mut conn)
            .await
    }
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn check(&self, key: &str) -> Decision {
        let slot = self.leases.get_with_by_ref(key, Default::default);
        if let Some(d) = self.local(&slot) {
            return d;
        }
        let taken = self.take(key).await;
        self.feature.record(&taken);
        let Ok((granted, remaining, retry_ms)) = taken else {
            return match self.fail_mode {
                FailMode::Open => self.fallback.check_now(key),
                FailMode::Closed => Decision::Unavailable,
            };
        };
        let now = Instant::now();
        let Ok(mut l) = slot.lock() else {
            return Decision::Unavailable;
        };
        if granted == 0 {
            let retry_after = Duration::from_millis(retry_ms.max(1));
            l.denied_until = Some(now + retry_after);
            return Decision::Limited {
                limit: self.burst,
                retry_after,
            };
        }
        // This request takes one; the rest of the lease serves the next ones.
        l.tokens = granted - 1;
        l.remaining = remaining;
        l.expires = Some(now + LEASE_TTL);
        Decision::Allowed {
            limit: self.burst,
            remaining: remaining + l.tokens,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn burst_then_limited_per_key() {
        let l = LocalLimiter::new(1, 3);
        for _ in 0..3 {
            assert!(matches!(l.check("a").await, Decision::Allowed { .. }));
        }
        assert!(matches!(l.check("a").await, Decision::Limited { .. }));
        assert!(
            matches!(l.check("b").await, Decision::Allowed { .. }),
            "keys are independent"
        );
    }
}
