//! TLS on the proxy listener, and HTTPS (mutual TLS) to upstreams.
//!
//! **Listener.** With `[tls]` the gateway speaks only TLS. Client
//! certificates are asked for only where a route needs them: the accept
//! loop reads the ClientHello first (`LazyConfigAcceptor`) and picks one of
//! two configurations built from the same files:
//!
//! - *optional client auth* (a certificate is verified against `client_ca`
//!   and the CRLs when sent; a client may send none) when some route with
//!   an `mtls` authenticator has no `host`, or its `host` is the SNI name,
//!   or the client sent no SNI at all;
//! - *server-only* otherwise: the client is never asked for a certificate.
//!
//! A certificate that is sent but fails verification (expired, not yet
//! valid, another CA, revoked, no `clientAuth` usage) fails the handshake.
//! A connection without one reaches the pipeline, where an `mtls`-only
//! route answers 401 `client_certificate_required`. Both configurations
//! are [`Reloading`]: certificates and CRLs are picked up without a
//! restart, and each rebuild starts a fresh session cache, so a revoked
//! certificate cannot resume a session established before the new CRL.
//!
//! **Upstreams.** A pool with `tls` is reached with `https`, verifying the
//! upstream's certificate against `ca` (name: `server_name` or the target
//! address) and presenting `cert`/`key`. The client is rebuilt when one of
//! the files changes.

use crate::config::{ListenerTls, UpstreamTls};
use crate::pipeline::proxy::Body;
use arc_swap::ArcSwap;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use portcullis_ca::tls::{ClientAuth, ClientTrust, ServerTlsFiles, TlsError};
use portcullis_ca::{PeerCertificate, Reloading};
use portcullis_service::tls::{FileStamps, poll};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// How long a client has to finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often certificate, key and CRL files are checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Which TLS connections are asked for a client certificate (from the
/// routes of the running configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CertificateHosts {
    /// No route uses `mtls`.
    #[default]
    None,
    /// A host-less route uses `mtls`: every connection.
    All,
    /// Only these SNI names (lower case), and connections without SNI.
    Hosts(HashSet<String>),
}

impl CertificateHosts {
    /// Whether a connection naming `sni` is asked for a certificate.
    pub fn wants(&self, sni: Option<&str>) -> bool {
        match (self, sni) {
            (Self::None, _) => false,
            (Self::All, _) | (Self::Hosts(_), None) => true,
            (Self::Hosts(h), Some(name)) => h.contains(&name.to_ascii_lowercase()),
        }
    }
}

/// The listener's two reloading configurations.
pub struct Listener {
    server_only: Arc<Reloading>,
    client_certs: Option<Arc<Reloading>>,
}

/// Why a connection did not become TLS.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Not finished within the timeout.
    #[error("TLS handshake timed out")]
    Timeout,
    /// Not TLS, a refused certificate, or a dropped connection.
    #[error("TLS handshake failed: {0}")]
    Failed(std::io::Error),
}

const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

impl Listener {
    /// Builds both configurations; fails if a file does not load.
    pub fn new(cfg: &ListenerTls) -> Result<Self, TlsError> {
        let files = |client_auth| ServerTlsFiles {
            cert_chain: cfg.cert.clone(),
            key: cfg.key.clone(),
            client_auth,
            alpn_protocols: ALPN.iter().map(|p| p.to_vec()).collect(),
        };
        let server_only = Arc::new(Reloading::new(files(ClientAuth::None))?);
        let client_certs = match &cfg.client_ca {
            None => None,
            Some(ca) => Some(Arc::new(Reloading::new(files(ClientAuth::Optional(
                ClientTrust {
                    enforce_crl_expiry: cfg.enforce_crl_expiry,
                    ..ClientTrust::new(ca.clone(), cfg.crls.clone())
                },
            )))?)),
        };
        Ok(Self {
            server_only,
            client_certs,
        })
    }

    /// Starts polling the files; the tasks end when the listener is dropped.
    pub fn watch(&self) -> Vec<tokio::task::JoinHandle<()>> {
        std::iter::once(&self.server_only)
            .chain(&self.client_certs)
            .map(|r| r.watch(RELOAD_EVERY))
            .collect()
    }

    /// Runs the handshake, asking for a client certificate if `hosts` wants
    /// one for the ClientHello's SNI. Returns the stream and the verified
    /// client certificate, if one was sent.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        hosts: &CertificateHosts,
    ) -> Result<(TlsStream<TcpStream>, Option<PeerCertificate>), HandshakeError> {
        let handshake = async {
            let start =
                tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp)
                    .await?;
            let sni = start.client_hello().server_name().map(str::to_owned);
            let config = match &self.client_certs {
                Some(c) if hosts.wants(sni.as_deref()) => c.current(),
                _ => self.server_only.current(),
            };
            start.into_stream(config).await
        };
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| HandshakeError::Timeout)?
            .map_err(HandshakeError::Failed)?;
        // rustls only completes the handshake with a client certificate it
        // verified against the roots and CRLs (no self-signed admission here).
        let peer = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| PeerCertificate::new(certs.to_vec(), true));
        Ok((stream, peer))
    }
}

/// The HTTPS client of one upstream pool.
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Body>;

/// An upstream's HTTPS client, rebuilt when its files change.
pub struct UpstreamTlsClient {
    cfg: UpstreamTls,
    connect_timeout: Duration,
    idle: Duration,
    current: ArcSwap<HttpsClient>,
    stamps: FileStamps,
}

impl UpstreamTlsClient {
    /// Builds the client; fails if a file does not load.
    pub fn new(
        cfg: UpstreamTls,
        connect_timeout: Duration,
        idle: Duration,
    ) -> Result<Self, TlsError> {
        let stamps = FileStamps::new(Self::paths(&cfg));
        let client = build_client(&cfg, connect_timeout, idle)?;
        Ok(Self {
            cfg,
            connect_timeout,
            idle,
            current: ArcSwap::from_pointee(client),
            stamps,
        })
    }

    fn paths(cfg: &UpstreamTls) -> Vec<PathBuf> {
        let mut paths = vec![cfg.ca.clone()];
        if let Some(id) = &cfg.identity {
            paths.push(id.cert_chain.clone());
            paths.push(id.key.clone());
        }
        paths
    }

    /// The client for the next request.
    pub fn client(&self) -> Arc<HttpsClient> {
        self.current.load_full()
    }

    /// Rebuilds the client if a file changed; a file that does not load
    /// leaves the running client in place.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        if !self.stamps.changed() {
            return Ok(false);
        }
        let client = build_client(&self.cfg, self.connect_timeout, self.idle)?;
        self.current.store(Arc::new(client));
        Ok(true)
    }

    /// Polls the files; the task ends when the client is dropped.
    pub fn watch(self: &Arc<Self>, upstream: Arc<str>) -> tokio::task::JoinHandle<()> {
        let what = format!("upstream {upstream} client certificate");
        poll(self, RELOAD_EVERY, what, Self::reload_if_changed)
    }
}

fn build_client(
    cfg: &UpstreamTls,
    connect_timeout: Duration,
    idle: Duration,
) -> Result<HttpsClient, TlsError> {
    let tls = portcullis_ca::tls::client_config(&cfg.ca, cfg.identity.as_ref())?;
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only();
    let builder = match &cfg.server_name {
        Some(name) => {
            // Validated as a server name when the config was read.
            let name = rustls_pki_types::ServerName::try_from(name.clone()).map_err(|e| {
                TlsError::File {
                    path: Path::new("server_name").to_owned(),
                    reason: e.to_string(),
                }
            })?;
            builder.with_server_name_resolver(FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    let builder = builder.enable_http1();
    Ok(Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(idle)
        .pool_max_idle_per_host(256)
        .timer(hyper_util::rt::TokioTimer::new())
        .build(builder.wrap_connector(http)))
}
