//! Revocation events through the machine's Redis: the IAM server publishes,
//! the validator applies them at once (its poll set to a minute, so the poll
//! cannot be what catches the revocation), and falls back to the poll when
//! Redis is cut.

#![allow(clippy::unwrap_used)]

use portcullis_redis::{Redis, RedisConfig};
use portcullis_service::{AuthError, Validator, ValidatorConfig};
use portcullis_test_support::{FaultProxy, TestIam, basic, redis_url, unique_prefix};
use std::time::{Duration, Instant};

async fn revoke(iam: &TestIam, c: &portcullis_test_support::SecretClient, t: &str) {
    let r = iam
        .http
        .post(iam.url("/oauth2/revoke"))
        .header("authorization", basic(&c.id, &c.secret))
        .form(&[("token", t)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// How long until `t` is refused (panics after 10 s).
async fn refused_after(v: &Validator, t: &str) -> Duration {
    let started = Instant::now();
    loop {
        match v.validate(t).await {
            Err(AuthError::Revoked) => return started.elapsed(),
            Ok(_) if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            other => panic!("never refused: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_revocation_reaches_validators_through_redis_without_waiting_for_the_poll() {
    let url = redis_url();
    let prefix = unique_prefix("revocation");
    let iam_redis = portcullis_redis::RawRedis {
        url: url.clone(),
        key_prefix: prefix.clone(),
        connect_timeout_ms: 500,
        response_timeout_ms: 250,
        rate_limit_fail_mode: Default::default(),
    };
    let iam = TestIam::start_with(|raw| raw.redis = Some(iam_redis)).await;
    let c = iam.secret_client("svc").await;
    let mut cfg = ValidatorConfig::new(&iam.issuer, "api-1");
    cfg.revocation_poll = Duration::from_secs(60);
    let mut rc = RedisConfig::new(url);
    rc.key_prefix = prefix;
    cfg.redis = Some(Redis::connect(rc).unwrap());
    let validators = [
        Validator::start(cfg.clone()).await,
        Validator::start(cfg).await,
    ];
    // Let both subscriptions and the publisher's start-up read settle.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let t = iam.access_token(&c).await;
    for v in &validators {
        v.validate(&t).await.unwrap();
    }
    revoke(&iam, &c, &t).await;
    for v in &validators {
        let took = refused_after(v, &t).await;
        // Not a timing assertion on performance: the poll is a minute away,
        // so only the event can have done it.
        assert!(took < Duration::from_secs(10), "{took:?}");
    }
    let other = iam.access_token(&c).await;
    assert!(
        validators[0].validate(&other).await.is_ok(),
        "only the revoked token"
    );
}

#[tokio::test]
async fn with_redis_cut_the_poll_still_catches_revocations_and_events_resume() {
    // redis://host:port[/db]
    let addr = redis_url()
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let proxy = FaultProxy::start(addr.parse().unwrap()).await;
    let url = format!("redis://{}/0", proxy.addr());
    let prefix = unique_prefix("revocationfault");
    let iam_redis = portcullis_redis::RawRedis {
        url: redis_url(),
        key_prefix: prefix.clone(),
        connect_timeout_ms: 500,
        response_timeout_ms: 250,
        rate_limit_fail_mode: Default::default(),
    };
    let iam = TestIam::start_with(|raw| raw.redis = Some(iam_redis)).await;
    let c = iam.secret_client("svc").await;
    let mut cfg = ValidatorConfig::new(&iam.issuer, "api-1");
    cfg.revocation_poll = Duration::from_millis(500);
    let mut rc = RedisConfig::new(url);
    rc.key_prefix = prefix;
    cfg.redis = Some(Redis::connect(rc).unwrap());
    let v = Validator::start(cfg).await;

    proxy.cut();
    let t = iam.access_token(&c).await;
    v.validate(&t).await.unwrap();
    revoke(&iam, &c, &t).await;
    refused_after(&v, &t).await; // by the poll

    proxy.restore();
    tokio::time::sleep(Duration::from_millis(1500)).await; // resubscribed (retry is 1 s)
    let t2 = iam.access_token(&c).await;
    v.validate(&t2).await.unwrap();
    revoke(&iam, &c, &t2).await;
    refused_after(&v, &t2).await;
}
