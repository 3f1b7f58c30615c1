//! The BFF's Redis session store against the machine's Redis: the contract
//! the BFF relies on (the gateway-level tests are in `bff.rs`).

#![allow(clippy::unwrap_used)]

use portcullis_gateway::bff::redis_store::RedisSessions;
use portcullis_gateway::bff::store::{PendingLogin, SessionRow, SessionStore};
use portcullis_redis::{Redis, RedisConfig};
use portcullis_test_support::{redis_url, unique_prefix};
use std::sync::Arc;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn redis(prefix: &str) -> Redis {
    let mut c = RedisConfig::new(redis_url());
    c.key_prefix = prefix.to_owned();
    Redis::connect(c).unwrap()
}

/// Idle timeout of the stores under test.
const IDLE: u64 = 3600;

fn store(prefix: &str) -> Arc<RedisSessions> {
    Arc::new(RedisSessions::new(redis(prefix), IDLE))
}

fn row(expires_at: u64) -> SessionRow {
    let t = now();
    SessionRow {
        subject: "alice".into(),
        profile: r#"{"name":"Alice"}"#.into(),
        scope: "openid api".into(),
        tokens: vec![0, 1, 2, 255, 254, b'\n'],
        access_expires_at: t + 300,
        csrf: "csrf-token".into(),
        created_at: t,
        last_seen: t,
        expires_at,
        version: 0,
    }
}

#[tokio::test]
async fn sessions_round_trip_and_are_deleted_once() {
    let s = store(&unique_prefix("bffs"));
    let k = [7u8; 32];
    assert_eq!(s.get(&k).await.unwrap(), None);
    let r = row(now() + 3600);
    s.create(&k, &r).await.unwrap();
    assert_eq!(s.get(&k).await.unwrap(), Some(r.clone()));
    assert_eq!(s.get(&[8u8; 32]).await.unwrap(), None, "keys are distinct");

    s.touch(&k, r.last_seen + 90).await.unwrap();
    assert_eq!(
        s.get(&k).await.unwrap().unwrap().last_seen,
        r.last_seen + 90
    );

    assert!(s.delete(&k).await.unwrap());
    assert!(!s.delete(&k).await.unwrap());
    assert_eq!(s.get(&k).await.unwrap(), None);
    // A late touch does not bring a deleted session back.
    s.touch(&k, now()).await.unwrap();
    assert_eq!(s.get(&k).await.unwrap(), None);
    assert_eq!(s.purge(now(), 60, 100).await.unwrap(), 0);
    assert!(!s.cacheable(), "a shared store is read at every request");
}

async fn expiry(c: &mut portcullis_redis::redis::aio::ConnectionManager, name: &str) -> u64 {
    portcullis_redis::redis::cmd("EXPIRETIME")
        .arg(name)
        .query_async(c)
        .await
        .unwrap()
}

#[tokio::test]
async fn sessions_expire_in_redis_when_idle_or_at_their_absolute_end() {
    let prefix = unique_prefix("bffx");
    let s = store(&prefix);
    let k = [1u8; 32];
    s.create(&k, &row(now() - 1)).await.unwrap();
    assert_eq!(s.get(&k).await.unwrap(), None, "already over");

    let mut c = redis(&prefix).conn();
    let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
    let name = format!("{prefix}bff:s:{hex}");
    // Idle timeout first: it expires IDLE after its last use...
    let end = now() + 10 * IDLE;
    let r = row(end);
    s.create(&k, &r).await.unwrap();
    assert_eq!(expiry(&mut c, &name).await, r.last_seen + IDLE);
    // ...which each recorded use moves on...
    s.touch(&k, r.last_seen + 100).await.unwrap();
    assert_eq!(expiry(&mut c, &name).await, r.last_seen + 100 + IDLE);
    // ...never past the absolute end.
    s.touch(&k, end - 10).await.unwrap();
    assert_eq!(expiry(&mut c, &name).await, end);
    // Absolute end first.
    let r = row(now() + 60);
    s.create(&k, &r).await.unwrap();
    assert_eq!(expiry(&mut c, &name).await, r.expires_at);
}

#[tokio::test]
async fn token_updates_are_a_compare_and_swap_that_one_writer_wins() {
    let prefix = unique_prefix("bffcas");
    let k = [3u8; 32];
    let first = store(&prefix);
    first.create(&k, &row(now() + 3600)).await.unwrap();
    // Sixteen writers (two "replicas") race from version 0: one wins.
    let replicas = [first.clone(), store(&prefix)];
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let s = replicas[usize::from(i % 2)].clone();
        tasks.push(tokio::spawn(async move {
            let won = s.update_tokens(&k, 0, &[i; 4], 1000 + u64::from(i)).await;
            (i, won.unwrap())
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (i, won) = t.await.unwrap();
        if won {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let w = winners[0];
    let got = first.get(&k).await.unwrap().unwrap();
    assert_eq!(got.version, 1);
    assert_eq!(got.tokens, vec![w; 4]);
    assert_eq!(got.access_expires_at, 1000 + u64::from(w));
    assert_eq!(got.subject, "alice", "the rest of the session is kept");
    // The stale version loses; the current one wins; a missing session loses.
    assert!(!first.update_tokens(&k, 0, b"x", 1).await.unwrap());
    assert!(first.update_tokens(&k, 1, b"y", 2).await.unwrap());
    assert_eq!(first.get(&k).await.unwrap().unwrap().version, 2);
    assert!(!first.update_tokens(&[4u8; 32], 0, b"z", 3).await.unwrap());
    assert_eq!(first.get(&[4u8; 32]).await.unwrap(), None);
}

#[tokio::test]
async fn a_pending_login_is_taken_once() {
    let prefix = unique_prefix("bffl");
    let k = [9u8; 32];
    let login = PendingLogin {
        state: "st".into(),
        nonce: "no".into(),
        verifier: vec![0, 200, 3],
        return_to: "/app?x=1".into(),
        expires_at: now() + 600,
    };
    let replicas = [store(&prefix), store(&prefix)];
    replicas[0].put_login(&k, &login).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = replicas[i % 2].clone();
        tasks.push(tokio::spawn(async move { s.take_login(&k).await.unwrap() }));
    }
    let mut taken = Vec::new();
    for t in tasks {
        taken.extend(t.await.unwrap());
    }
    assert_eq!(taken, vec![login.clone()]);

    // An expired login is gone.
    let old = PendingLogin {
        expires_at: now() - 1,
        ..login
    };
    replicas[1].put_login(&k, &old).await.unwrap();
    assert_eq!(replicas[0].take_login(&k).await.unwrap(), None);
}

#[tokio::test]
async fn one_gateway_at_a_time_holds_a_sessions_refresh_lock() {
    let prefix = unique_prefix("bffr");
    let (a, b) = (store(&prefix), store(&prefix));
    let k = [5u8; 32];
    let ttl = std::time::Duration::from_secs(10);
    assert!(a.lock_refresh(&k, ttl).await.unwrap());
    assert!(!b.lock_refresh(&k, ttl).await.unwrap());
    assert!(!a.lock_refresh(&k, ttl).await.unwrap(), "not re-entrant");
    assert!(
        b.lock_refresh(&[6u8; 32], ttl).await.unwrap(),
        "per session"
    );
    // Only the holder releases it.
    b.unlock_refresh(&k).await.unwrap();
    assert!(!b.lock_refresh(&k, ttl).await.unwrap());
    a.unlock_refresh(&k).await.unwrap();
    assert!(b.lock_refresh(&k, ttl).await.unwrap());
}
