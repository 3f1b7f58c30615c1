//! Revocation fan-out: with `[redis]`, the server publishes every new entry
//! of its revocation feed (`/oauth2/revocations`) on the Redis channel
//! `<key_prefix>revocations:<issuer>`, so gateways and services (the
//! service library's revocation follower subscribes) reject a revoked token
//! within a second instead of at their next poll.
//!
//! The publisher follows the feed in the store (every 100 ms, by sequence
//! number), so every revocation is published whichever replica wrote it
//! and whatever code path wrote it (token revocation, client-wide
//! revocation, consent and session revocation). With several replicas each
//! publishes the same entries; applying one twice changes nothing.
//!
//! Redis unreachable: nothing is published (counted in
//! `portcullis_redis_errors_total{feature="revocation"}`) and followers fall
//! back to polling the feed; publishing resumes from where it stopped when
//! Redis is back.

use crate::store::Store;
use portcullis_core::Clock;
use portcullis_redis::{Feature, Redis};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The channel (before the key prefix) revocations of `issuer` are published on.
pub fn channel(issuer: &str) -> String {
    format!("revocations:{issuer}")
}

/// How often the publisher looks for new entries.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// Publishes new revocations of `store` until `stop`.
pub fn spawn(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    redis: Redis,
    issuer: String,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let feature = Feature::new("revocation");
    let channel = channel(&issuer);
    tokio::spawn(async move {
        // Only what is revoked from now on: followers fetched the rest
        // from the feed when they started.
        let mut cursor = loop {
            match latest(&*store, clock.now()).await {
                Ok(c) => break c,
                Err(e) => tracing::warn!(error = %e, "revocation fan-out: cannot read the feed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(INTERVAL) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let entries = match store.revocations_since(cursor, clock.now(), 1000).await {
                Ok(e) if e.is_empty() => continue,
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "revocation fan-out: cannot read the feed");
                    continue;
                }
            };
            let last = entries.last().map_or(cursor, |e| e.seq);
            let payload = serde_json::json!({ "revocations": entries }).to_string();
            let sent = redis.publish(&channel, &payload).await;
            feature.record(&sent);
            if sent.is_ok() {
                cursor = last;
            }
        }
    })
}

async fn latest(store: &dyn Store, now: u64) -> Result<i64, crate::store::StoreError> {
    let mut cursor = 0;
    loop {
        let page = store.revocations_since(cursor, now, 10_000).await?;
        match page.last() {
            Some(e) if page.len() == 10_000 => cursor = e.seq,
            Some(e) => return Ok(e.seq),
            None => return Ok(cursor),
        }
    }
}
