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
            for e in page.revocations {
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
            s.cursor = s.cursor.max(page.cursor);
            s.jtis.retain(|_, exp| *exp > now);
            s.clients.retain(|_, (_, exp)| *exp > now);
            s.synced_at = Some(Instant::now());
            if !page.more {
                return Ok(added);
            }
        }
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
