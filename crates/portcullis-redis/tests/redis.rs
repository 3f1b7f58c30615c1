//! The Redis client against the machine's Redis (127.0.0.1:6379): commands
//! and pub/sub, and recovery without restart after the connection is cut.

#![allow(clippy::unwrap_used)]
use portcullis_redis::{Feature, Redis, RedisConfig};
use portcullis_test_support::{FaultProxy, redis_url, unique_prefix};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn redis_addr() -> SocketAddr {
    let u = url::Url::parse(&redis_url()).unwrap();
    format!("{}:{}", u.host_str().unwrap(), u.port().unwrap_or(6379))
        .parse()
        .unwrap()
}

fn config(url: String) -> RedisConfig {
    let mut c = RedisConfig::new(url);
    c.key_prefix = unique_prefix("redis");
    c
}

async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("never: {what}");
}

#[tokio::test]
async fn publish_reaches_subscriber_and_the_subscription_survives_a_cut() {
    let proxy = FaultProxy::start(redis_addr()).await;
    let r = Redis::connect(config(format!("redis://{}/0", proxy.addr()))).unwrap();
    let got = Arc::new(Mutex::new(Vec::<String>::new()));
    let resubscribed = Arc::new(Mutex::new(0u32));
    let feature = Feature::new("test");
    let (g, n) = (got.clone(), resubscribed.clone());
    let _task = r.spawn_subscriber(
        feature.clone(),
        "events",
        Duration::from_millis(50),
        move |m| g.lock().unwrap().push(m.to_owned()),
        move || *n.lock().unwrap() += 1,
    );
    eventually("first message delivered", async || {
        let _ = r.publish("events", "one").await;
        got.lock().unwrap().contains(&"one".to_owned())
    })
    .await;

    proxy.cut();
    assert!(r.ping().await.is_err(), "cut: commands fail");
    eventually("the subscriber notices", async || feature.is_failing()).await;
    proxy.restore();
    eventually("commands work again without a restart", async || {
        r.ping().await.is_ok()
    })
    .await;
    eventually("the subscription is back", async || {
        let _ = r.publish("events", "two").await;
        got.lock().unwrap().contains(&"two".to_owned())
    })
    .await;
    assert!(*resubscribed.lock().unwrap() >= 2, "catch-up hook ran");
    assert!(!feature.is_failing());
}

#[tokio::test]
async fn starting_while_redis_is_unreachable_works_once_it_is_back() {
    let proxy = FaultProxy::start(redis_addr()).await;
    proxy.cut();
    let r = Redis::connect(config(format!("redis://{}/0", proxy.addr()))).unwrap();
    assert!(r.ping().await.is_err());
    proxy.restore();
    eventually("connected after all", async || r.ping().await.is_ok()).await;
}
