//! Mutual TLS for services: serving over TLS with the shared accept loop
//! ([`serve_tls`]), and presenting this service's certificate to the IAM
//! server and to other services ([`ClientTls`]), both following their files
//! so a renewed certificate ([`crate::renew::CertRenewer`]) is used without
//! a restart.
//!
//! ```no_run
//! use portcullis_service::tls::{ClientAuth, ClientTrust, ServerTlsFiles, serve_tls};
//! # async fn run(app: axum::Router) -> Result<(), Box<dyn std::error::Error>> {
//! let files = ServerTlsFiles {
//!     cert_chain: "/run/svc/cert.pem".into(),
//!     key: "/run/svc/key.pem".into(),
//!     client_auth: ClientAuth::Optional(ClientTrust::new("/run/svc/ca.pem", vec!["/run/ca/crl.pem".into()])),
//!     alpn_protocols: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
//! };
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8443").await?;
//! serve_tls(listener, app, files, std::future::pending()).await?;
//! # Ok(()) }
//! ```

use arc_swap::ArcSwap;
use portcullis_ca::Reloading;
use portcullis_ca::tls::Acceptor;
pub use portcullis_ca::tls::{ClientAuth, ClientIdentity, ClientTrust, ServerTlsFiles, TlsError};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// How often certificate, key and CRL files are checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Serves `app` over TLS on `listener` until `shutdown` completes (then
/// drains open connections). The files are polled every [`RELOAD_EVERY`]
/// and a change (a renewed certificate, a new CRL) applies to the next
/// connections. Requests that came with a verified client certificate carry
/// it as a [`portcullis_ca::PeerCertificate`] extension, which
/// [`crate::BearerAuth`] uses to enforce certificate-bound tokens.
///
/// Fails only if the files do not load at the start.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    files: ServerTlsFiles,
    shutdown: impl Future<Output = ()>,
) -> Result<(), TlsError> {
    let tls = Arc::new(Reloading::new(files)?);
    let watcher = tls.watch(RELOAD_EVERY);
    portcullis_ca::tls::serve(listener, Acceptor::new(tls), move |_| app.clone(), shutdown).await;
    watcher.abort();
    Ok(())
}

/// What a set of files looked like when last loaded (modification time and
/// length of each), to notice a renewed certificate or a new CRL.
#[derive(Debug)]
pub struct FileStamps {
    paths: Vec<PathBuf>,
    loaded: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl FileStamps {
    /// Records the files as they are now.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        let loaded = Mutex::new(Self::read(&paths));
        Self { paths, loaded }
    }

    fn read(paths: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
        paths
            .iter()
            .map(|p| {
                let meta = std::fs::metadata(p).ok()?;
                Some((meta.modified().ok()?, meta.len()))
            })
            .collect()
    }

    /// Whether a file changed since the last call (or `new`); the new state
    /// is recorded either way, so a file that fails to load is retried only
    /// once it changes again.
    pub fn changed(&self) -> bool {
        let now = Self::read(&self.paths);
        // A poisoned lock holds only stamps: at worst one extra reload.
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if *loaded == now {
            return false;
        }
        *loaded = now;
        true
    }
}

/// Calls `reload` on `target` every `every` until `target` is dropped,
/// logging what happened under `what`.
pub fn poll<T, E>(
    target: &Arc<T>,
    every: Duration,
    what: String,
    reload: fn(&T) -> Result<bool, E>,
) -> tokio::task::JoinHandle<()>
where
    T: Send + Sync + 'static,
    E: std::fmt::Display + 'static,
{
    let weak = Arc::downgrade(target);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(this) = weak.upgrade() else { return };
            match reload(&this) {
                Ok(true) => tracing::info!(%what, "TLS files reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(%what, error = %e, "TLS files changed but do not load; keeping the running configuration")
                }
            }
        }
    })
}

/// This service's client certificate, as a `reqwest::Client` that presents
/// it (mutual TLS to other services and to the IAM server's
/// `tls_client_auth`). The client is rebuilt when the certificate, key or
/// roots change; take [`ClientTls::client`] per request (a cheap clone), so
/// new requests use the renewed certificate while requests in flight finish
/// on their connection.
pub struct ClientTls {
    roots: PathBuf,
    identity: ClientIdentity,
    timeout: Duration,
    current: ArcSwap<reqwest::Client>,
    stamps: FileStamps,
    generation: AtomicU64,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("cert", &self.identity.cert_chain)
            .finish()
    }
}

impl ClientTls {
    /// Trusts the roots in `roots` (PEM) and presents `identity`. Redirects
    /// are not followed; each request times out after `timeout`.
    pub fn new(
        roots: impl Into<PathBuf>,
        identity: ClientIdentity,
        timeout: Duration,
    ) -> Result<Self, TlsError> {
        let roots = roots.into();
        let stamps = FileStamps::new(vec![
            roots.clone(),
            identity.cert_chain.clone(),
            identity.key.clone(),
        ]);
        let client = build(&roots, &identity, timeout)?;
        Ok(Self {
            roots,
            identity,
            timeout,
            current: ArcSwap::from_pointee(client),
            stamps,
            generation: AtomicU64::new(0),
        })
    }

    /// The client for the next request.
    pub fn client(&self) -> reqwest::Client {
        (**self.current.load()).clone()
    }

    /// Changes every time the certificate is reloaded (tokens bound to the
    /// old certificate are then useless: [`crate::TokenSource`] keys its
    /// cache by it).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Rebuilds the client if a file changed. A file that does not load
    /// (e.g. a key written before its certificate) leaves the running
    /// client; the next change is tried again.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        if !self.stamps.changed() {
            return Ok(false);
        }
        let client = build(&self.roots, &self.identity, self.timeout)?;
        self.current.store(Arc::new(client));
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(true)
    }

    /// Polls the files every `every`; the task ends when `self` is dropped.
    pub fn watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let what = format!("client certificate {}", self.identity.cert_chain.display());
        poll(self, every, what, Self::reload_if_changed)
    }
}

fn build(
    roots: &Path,
    identity: &ClientIdentity,
    timeout: Duration,
) -> Result<reqwest::Client, TlsError> {
    let tls = portcullis_ca::tls::client_config(roots, Some(identity))?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
        .map_err(|e| TlsError::File {
            path: identity.cert_chain.clone(),
            reason: format!("HTTP client: {e}"),
        })
}
