//! The cluster-wide limiter against the machine's Redis: two limiters
//! sharing a key prefix stand for two gateways (the multi-process version
//! is in the `portcullis` crate's `cluster` tests).

#![allow(clippy::unwrap_used)]

use portcullis_gateway::pipeline::ratelimit::{Decision, Limiter, RedisLimiter};
use portcullis_redis::{FailMode, Feature, Redis, RedisConfig};
use portcullis_test_support::{FaultProxy, redis_url, unique_prefix};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn redis_addr() -> SocketAddr {
    let u = url::Url::parse(&redis_url()).unwrap();
    format!("{}:{}", u.host_str().unwrap(), u.port().unwrap_or(6379))
        .parse()
        .unwrap()
}

fn redis(url: String, prefix: &str, mode: FailMode) -> Redis {
    let mut c = RedisConfig::new(url);
    c.key_prefix = prefix.to_owned();
    c.rate_limit_fail_mode = mode;
    Redis::connect(c).unwrap()
}

#[tokio::test]
async fn two_gateways_share_one_limit_within_the_documented_bound() {
    let prefix = unique_prefix("limit");
    let url = redis_url();
    let (per_second, burst, lease) = (5u32, 20u32, 4u32);
    let gateways: Vec<RedisLimiter> = (0..2)
        .map(|_| {
            RedisLimiter::new(
                redis(url.clone(), &prefix, FailMode::Open),
                Feature::new("rate_limit"),
                "shared",
                (per_second, burst, lease),
            )
        })
        .collect();
    let started = Instant::now();
    let mut admitted = 0u64;
    for i in 0..400 {
        if matches!(
            gateways[i % 2].check("client").await,
            Decision::Allowed { .. }
        ) {
            admitted += 1;
        }
    }
    let secs = started.elapsed().as_secs() + 1;
    // Bound (module docs): one GCRA's allowance + N_gateways × lease.
    let bound = u64::from(burst) + u64::from(per_second) * secs + 2 * u64::from(lease);
    assert!(admitted <= bound, "admitted {admitted} > bound {bound}");
    // Unused leases are the only loss.
    assert!(
        admitted >= u64::from(burst - 2 * lease),
        "admitted {admitted}: the shared limit starved"
    );
    // Another key is independent.
    assert!(matches!(
        gateways[0].check("other").await,
        Decision::Allowed { .. }
    ));
}

#[tokio::test]
async fn redis_cut_follows_the_fail_mode_and_recovers() {
    let proxy = FaultProxy::start(redis_addr()).await;
    let url = format!("redis://{}/0", proxy.addr());
    let prefix = unique_prefix("limitfault");
    let open = RedisLimiter::new(
        redis(url.clone(), &prefix, FailMode::Open),
        Feature::new("rate_limit"),
        "r",
        (1, 2, 1),
    );
    let closed_feature = Feature::new("rate_limit");
    let closed = RedisLimiter::new(
        redis(url, &prefix, FailMode::Closed),
        closed_feature.clone(),
        "r",
        (1000, 1000, 1),
    );
    assert!(matches!(closed.check("k").await, Decision::Allowed { .. }));

    proxy.cut();
    // Open: this gateway's own limit of the same quota (2 at once, then 429).
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        outcomes.push(open.check("local").await);
    }
    assert!(
        matches!(outcomes[0], Decision::Allowed { .. }),
        "{outcomes:?}"
    );
    assert!(
        matches!(outcomes[1], Decision::Allowed { .. }),
        "{outcomes:?}"
    );
    assert!(
        matches!(outcomes[2], Decision::Limited { .. }),
        "{outcomes:?}"
    );
    // Closed: 503.
    assert_eq!(closed.check("k").await, Decision::Unavailable);
    assert!(closed_feature.is_failing());

    proxy.restore();
    let mut back = false;
    for _ in 0..100 {
        if matches!(closed.check("k").await, Decision::Allowed { .. }) {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "recovered without a restart");
    assert!(!closed_feature.is_failing());
}
