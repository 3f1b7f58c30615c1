//! Upstream pools: round robin over targets that are healthy (active
//! checks) and not ejected (passive: consecutive failures eject a target for
//! a while).

use crate::config::Upstream;
use crate::tls::{HttpsClient, UpstreamTlsClient};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One target of a pool.
pub struct Target {
    /// Address.
    pub addr: SocketAddr,
    /// `addr` as a URI authority and as a `Host` value, parsed once.
    pub authority: http::uri::Authority,
    /// `Host` header value for requests to this target.
    pub host: http::HeaderValue,
    healthy: AtomicBool,
    failures: AtomicU32,
    ejected_until_ms: AtomicU64,
}

/// A pool of targets.
pub struct Pool {
    /// Name (the internal token's audience).
    pub name: Arc<str>,
    targets: Vec<Target>,
    next: AtomicUsize,
    eject_after: u32,
    eject_for: Duration,
    epoch: Instant,
    health: Option<(String, Duration, Duration)>,
    /// Upstream latency histogram, registered once (the metrics recorder is
    /// installed before any pool is built).
    pub upstream_seconds: metrics::Histogram,
    /// The HTTPS client, for a pool with `tls`.
    pub tls: Option<Arc<UpstreamTlsClient>>,
}

impl Pool {
    /// A pool from config; every target starts healthy. `tls` is the
    /// HTTPS client for a pool with `tls`.
    pub fn new(u: &Upstream, tls: Option<Arc<UpstreamTlsClient>>) -> Self {
        Self {
            tls,
            upstream_seconds: metrics::histogram!(
                "portcullis_gateway_upstream_seconds",
                "upstream" => u.name.clone()
            ),
            name: Arc::from(u.name.as_str()),
            targets: u
                .targets
                .iter()
                .map(|&addr| Target {
                    addr,
                    // A socket address always parses as both.
                    authority: addr
                        .to_string()
                        .parse()
                        .unwrap_or_else(|_| http::uri::Authority::from_static("invalid")),
                    host: http::HeaderValue::try_from(addr.to_string())
                        .unwrap_or_else(|_| http::HeaderValue::from_static("invalid")),
                    healthy: AtomicBool::new(true),
                    failures: AtomicU32::new(0),
                    ejected_until_ms: AtomicU64::new(0),
                })
                .collect(),
            next: AtomicUsize::new(0),
            eject_after: u.eject_after_failures,
            eject_for: u.eject_for,
            epoch: Instant::now(),
            health: u.health_check.clone(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The next usable target, round robin; `None` if every one is down.
    pub fn pick(&self) -> Option<&Target> {
        let n = self.targets.len();
        let now = self.now_ms();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|i| &self.targets[(start + i) % n]).find(|t| {
            t.healthy.load(Ordering::Relaxed) && t.ejected_until_ms.load(Ordering::Relaxed) <= now
        })
    }

    /// Records the outcome of a request to `t` (passive health).
    pub fn report(&self, t: &Target, ok: bool) {
        if ok {
            t.failures.store(0, Ordering::Relaxed);
            return;
        }
        let f = t.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if self.eject_after > 0 && f >= self.eject_after {
            t.failures.store(0, Ordering::Relaxed);
            t.ejected_until_ms.store(
                self.now_ms() + self.eject_for.as_millis() as u64,
                Ordering::Relaxed,
            );
            metrics::counter!("portcullis_gateway_upstream_ejections_total", "upstream" => self.name.to_string()).increment(1);
            tracing::warn!(upstream = %self.name, addr = %t.addr, "target ejected after consecutive failures");
        }
    }

    /// Starts active health checks, if configured.
    pub fn spawn_health_checks(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let (path, interval, timeout) = self.health.clone()?;
        let pool = Arc::clone(self);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        Some(tokio::spawn(async move {
            loop {
                for t in &pool.targets {
                    let ok = match &pool.tls {
                        None => http
                            .get(format!("http://{}{path}", t.addr))
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success()),
                        Some(tls) => https_check(&tls.client(), t, &path, timeout).await,
                    };
                    if t.healthy.swap(ok, Ordering::Relaxed) != ok {
                        tracing::warn!(upstream = %pool.name, addr = %t.addr, healthy = ok, "health changed");
                    }
                }
                tokio::time::sleep(interval).await;
            }
        }))
    }
}

/// An active health check over HTTPS (mutual TLS) with the pool's client.
async fn https_check(client: &HttpsClient, t: &Target, path: &str, timeout: Duration) -> bool {
    let Ok(uri) = http::Uri::builder()
        .scheme(http::uri::Scheme::HTTPS)
        .authority(t.authority.clone())
        .path_and_query(path)
        .build()
    else {
        return false;
    };
    let Ok(req) = http::Request::get(uri)
        .header(http::header::HOST, t.host.clone())
        .body(crate::pipeline::full(bytes::Bytes::new()))
    else {
        return false;
    };
    matches!(
        tokio::time::timeout(timeout, client.request(req)).await,
        Ok(Ok(r)) if r.status().is_success()
    )
}
