//! The real Redis tests use, and a TCP proxy tests cut and restore to make
//! PostgreSQL or Redis unreachable without stopping the machine's servers
//! (other tests use them at the same time).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The Redis server tests use (`PORTCULLIS_TEST_REDIS_URL`).
pub const TEST_REDIS_URL_ENV: &str = "PORTCULLIS_TEST_REDIS_URL";
/// The default for [`TEST_REDIS_URL_ENV`].
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";

/// The Redis URL tests use. Panics, naming the server and how to start it,
/// if nothing listens there: a test needing Redis never passes without it.
pub fn redis_url() -> String {
    let url = std::env::var(TEST_REDIS_URL_ENV).unwrap_or_else(|_| DEFAULT_REDIS_URL.into());
    let parsed = url::Url::parse(&url).expect("PORTCULLIS_TEST_REDIS_URL is a URL");
    let addr = format!(
        "{}:{}",
        parsed.host_str().unwrap_or("127.0.0.1"),
        parsed.port().unwrap_or(6379)
    );
    if std::net::TcpStream::connect(&addr).is_err() {
        panic!(
            "these tests need Redis at {addr} ({TEST_REDIS_URL_ENV}); start it with \
             `redis-server --daemonize yes` or `service redis-server start`"
        );
    }
    url
}

/// A key prefix no other test (or test process) uses.
pub fn unique_prefix(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "pctest:{name}:{}:{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A TCP proxy on loopback in front of `target`. [`FaultProxy::cut`] drops
/// every open connection and refuses new ones (accepted then closed at
/// once); [`FaultProxy::restore`] lets traffic through again.
pub struct FaultProxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    epoch: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.epoch.send_modify(|e| *e += 1);
    }
}

impl FaultProxy {
    /// Starts a proxy to `target` on `127.0.0.1:0`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let up = Arc::new(AtomicBool::new(true));
        let (epoch, _) = watch::channel(0u64);
        let (u, e) = (up.clone(), epoch.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !u.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut cut = e.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            addr,
            up,
            epoch,
            task,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops open connections and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.epoch.send_modify(|e| *e += 1);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}
