//! Follows an issuer's revocation feed (`/oauth2/revocations?since=N`) so
//! that a revoked token is rejected within `poll_interval`, even though
//! tokens are validated offline.
//!
//! The feed lists revoked `jti`s and revoked clients (every token of the
//! client issued at or before a time). Entries are dropped once no token they
//! cover can still be valid. If the feed cannot be reached, tokens keep being
//! validated by signature and expiry (fail open, counted in
//! `portcullis_revocation_poll_total{result="error"}` and logged), because
//! refusing every token while the IAM server restarts would take every
//! service down with it. `staleness()` tells how old the view is.
//!
//! With Redis ([`crate::ValidatorConfig::redis`]), the follower also
//! subscribes to the issuer's revocation events (the IAM server publishes
//! each new feed entry on `<key_prefix>revocations:<issuer>`) and applies
//! them as they arrive, so a revocation is seen within a second. The poll
//! stays as the backstop: a message missed while Redis or the subscription
//! was down is picked up at the next poll (and a poll runs at once whenever
//! the subscription is re-established). Redis being down therefore only
//! brings back the poll interval (fail open, counted in
//! `portcullis_redis_errors_total{feature="revocation"}`).

use serde::Deserialize;
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

#[derive(Debug, Deserialize)]
struct Entry {
    kind: String,
    subject: String,
    #[serde(default)]
    issued_before: Option<u64>,
    expires_at: u64,
}

#[derive(Debug, Deserialize)]
struct Event {
    revocations: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct Page {
    cursor: i64,
    #[serde(default)]
    more: bool,
    revocations: Vec<Entry>,
}

#[derive(Default)]
struct State {
    cursor: i64,
    jtis: HashMap<String, u64>,
    clients: HashMap<String, (u64, u64)>,
    synced_at: Option<Instant>,
}

/// A local view of the issuer's revocations.
pub struct RevocationList {
    url: Option<String>,
    http: reqwest::Client,
    poll_interval: Duration,
    state: RwLock<State>,
}

impl std::fmt::Debug for RevocationList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationList")
            .field("url", &self.url)
            .finish()
    }
}

impl RevocationList {
    /// Follows the feed at `url` every `poll_interval`; `None` disables it.
    pub fn new(url: Option<String>, poll_interval: Duration) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            url,
            http,
            poll_interval,
            state: RwLock::new(State::default()),
        }
    }

    /// Whether a feed is followed at all.
    pub fn follows(&self) -> bool {
        self.url.is_some()
    }

    /// Whether a token is revoked.
    pub fn is_revoked(&self, jti: &str, client_id: &str, iat: u64) -> bool {
        let Ok(s) = self.state.read() else {
            return false;
        };
        s.jtis.contains_key(jti)
            || s.clients
                .get(client_id)
                .is_some_and(|(before, _)| iat <= *before)
    }

    /// How long ago the view was last brought up to date.
    pub fn staleness(&self) -> Option<Duration> {
        self.state
            .read()
            .ok()
            .and_then(|s| s.synced_at.map(|t| t.elapsed()))
    }

    /// Fetches new entries (all pages) and drops expired ones.
    pub async fn poll(&self, now: u64) -> Result<usize, String> {
        let Some(url) = &self.url else { return Ok(0) };
        let mut added = 0;
        loop {
            let cursor = self.state.read().map(|s| s.cursor).unwrap_or(0);
            let page: Page = self
                .http
                .get(format!("{url}?since={cursor}"))
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            let mut s = self
                .state
                .write()
                .map_err(|_| "revocation state poisoned".to_owned())?;
            added += apply(&mut s, page.revocations, now);
            s.cursor = s.cursor.max(page.cursor);
            s.synced_at = Some(Instant::now());
            if !page.more {
                return Ok(added);
            }
        }
    }

    /// Applies one revocation event (`{"revocations": [feed entries]}`);
    /// returns how many entries it held. Malformed events are ignored.
    pub fn apply_event(&self, payload: &str, now: u64) -> usize {
        let Ok(event) = serde_json::from_str::<Event>(payload) else {
            tracing::warn!("ignoring a malformed revocation event");
            return 0;
        };
        match self.state.write() {
            Ok(mut s) => apply(&mut s, event.revocations, now),
            Err(_) => 0,
        }
    }

    /// Subscribes to the issuer's revocation events on `redis` (channel
    /// `revocations:<issuer>`) until the handle is aborted; polls the feed
    /// at once whenever the subscription is (re-)established.
    pub fn spawn_events(
        self: &std::sync::Arc<Self>,
        redis: &portcullis_redis::Redis,
        issuer: &str,
        clock: std::sync::Arc<dyn portcullis_core::Clock>,
    ) -> tokio::task::JoinHandle<()> {
        let (on_event, on_resubscribe) = (std::sync::Arc::clone(self), std::sync::Arc::clone(self));
        let (c1, c2) = (clock.clone(), clock);
        redis.spawn_subscriber(
            portcullis_redis::Feature::new("revocation"),
            &format!("revocations:{issuer}"),
            Duration::from_secs(1),
            move |payload| {
                on_event.apply_event(payload, c1.now());
            },
            move || {
                let (me, clock) = (on_resubscribe.clone(), c2.clone());
                tokio::spawn(async move {
                    if let Err(e) = me.poll(clock.now()).await {
                        tracing::warn!(error = %e, "revocation feed poll after resubscribing failed");
                    }
                });
            },
        )
    }

    /// Polls every `poll_interval` until the handle is aborted.
    pub fn spawn_follower(
        self: &std::sync::Arc<Self>,
        clock: std::sync::Arc<dyn portcullis_core::Clock>,
    ) -> tokio::task::JoinHandle<()> {
        let me = std::sync::Arc::clone(self);
        tokio::spawn(async move {
            loop {
                match me.poll(clock.now()).await {
                    Ok(_) => {
                        metrics::counter!("portcullis_revocation_poll_total", "result" => "ok")
                            .increment(1)
                    }
                    Err(e) => {
                        metrics::counter!("portcullis_revocation_poll_total", "result" => "error")
                            .increment(1);
                        tracing::warn!(error = %e, "revocation feed poll failed; revocations may be stale");
                    }
                }
                tokio::time::sleep(me.poll_interval).await;
            }
        })
    }
}

/// Adds feed entries to the view and drops expired ones; returns how many
/// entries were understood.
fn apply(s: &mut State, entries: Vec<Entry>, now: u64) -> usize {
    let mut added = 0;
    for e in entries {
        match e.kind.as_str() {
            "jti" => {
                s.jtis.insert(e.subject, e.expires_at);
            }
            "client" => {
                let before = e.issued_before.unwrap_or(0);
                let slot = s.clients.entry(e.subject).or_insert((before, e.expires_at));
                *slot = (slot.0.max(before), slot.1.max(e.expires_at));
            }
            _ => continue,
        }
        added += 1;
    }
    s.jtis.retain(|_, exp| *exp > now);
    s.clients.retain(|_, (_, exp)| *exp > now);
    added
}
