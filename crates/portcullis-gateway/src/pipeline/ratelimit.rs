//! Phase 4: rate limit, GCRA per route (governor), keyed by consumer,
//! client id or client IP. Behind a trait so a cluster-wide (Redis)
//! limiter can replace the local one.

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::time::Duration;

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
}

/// A keyed rate limiter.
pub trait Limiter: Send + Sync {
    /// Counts one request for `key`.
    fn check(&self, key: &str) -> Decision;
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

impl Limiter for LocalLimiter {
    fn check(&self, key: &str) -> Decision {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_limited_per_key() {
        let l = LocalLimiter::new(1, 3);
        for _ in 0..3 {
            assert!(matches!(l.check("a"), Decision::Allowed { .. }));
        }
        assert!(matches!(l.check("a"), Decision::Limited { .. }));
        assert!(
            matches!(l.check("b"), Decision::Allowed { .. }),
            "keys are independent"
        );
    }
}
