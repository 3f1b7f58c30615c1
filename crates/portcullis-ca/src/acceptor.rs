//! Accepting TLS connections from a [`Reloading`] configuration and serving
//! HTTP over them, with the client certificate each request came with.
//!
//! [`Acceptor::accept`] runs the handshake (bounded by a timeout) with the
//! configuration current at that moment and returns the TLS stream and the
//! client's [`PeerCertificate`], if it sent one. [`serve`] is the accept
//! loop the HTTP servers share: hyper-util's auto builder (HTTP/1.1 and h2
//! by ALPN), graceful shutdown, and the peer certificate inserted into the
//! extensions of every request of the connection.
//!
//! ```no_run
//! use portcullis_ca::tls::{Acceptor, ClientAuth, ClientTrust, ServerTlsFiles};
//! use portcullis_ca::{PeerCertificate, Reloading};
//! use std::sync::Arc;
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let files = ServerTlsFiles {
//!     cert_chain: "tls/cert.pem".into(),
//!     key: "tls/key.pem".into(),
//!     client_auth: ClientAuth::Optional(ClientTrust::new("ca/root.pem", vec!["ca/crl.pem".into()])),
//!     alpn_protocols: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
//! };
//! let tls = Arc::new(Reloading::new(files)?);
//! let _watch = tls.watch(std::time::Duration::from_secs(5));
//! // With axum this is a `Router`; handlers take `Option<Extension<PeerCertificate>>`.
//! let app = tower::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
//!     let who = req.extensions().get::<PeerCertificate>().map(|p| p.x5t_s256().to_owned());
//!     Ok::<_, std::convert::Infallible>(http::Response::new(format!("{who:?}")))
//! });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
//! portcullis_ca::tls::serve(listener, Acceptor::new(tls), move |_addr| app, std::future::pending()).await;
//! # Ok(()) }
//! ```

use crate::{PeerCertificate, Reloading};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls_pki_types::UnixTime;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::server::TlsStream;
use tower::ServiceExt;

/// How long a client has to finish the TLS handshake by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client has to send a request's headers on the connection.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a connection did not become a TLS stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The handshake did not finish in time.
    #[error("TLS handshake timed out")]
    Timeout,
    /// The handshake failed: not TLS, a refused certificate, no shared
    /// protocol, or the connection dropped.
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] std::io::Error),
}

/// Turns accepted TCP connections into TLS streams with the configuration
/// current at the time, and tells who the client is.
#[derive(Debug, Clone)]
pub struct Acceptor {
    tls: Arc<Reloading>,
    handshake_timeout: Duration,
}

impl Acceptor {
    /// An acceptor over `tls`, with [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub fn new(tls: Arc<Reloading>) -> Self {
        Self {
            tls,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Sets the handshake timeout.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The configuration this acceptor follows.
    pub fn reloading(&self) -> &Arc<Reloading> {
        &self.tls
    }

    /// Runs the server side of the handshake on `io`. The peer certificate
    /// is `None` when the client sent none (allowed by
    /// [`ClientAuth::None`](crate::tls::ClientAuth::None) and
    /// [`ClientAuth::Optional`](crate::tls::ClientAuth::Optional)).
    pub async fn accept<IO>(
        &self,
        io: IO,
    ) -> Result<(TlsStream<IO>, Option<PeerCertificate>), AcceptError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let loaded = self.tls.snapshot();
        let acceptor = tokio_rustls::TlsAcceptor::from(loaded.config.clone());
        let stream = tokio::time::timeout(self.handshake_timeout, acceptor.accept(io))
            .await
            .map_err(|_| AcceptError::Timeout)?
            .map_err(AcceptError::Handshake)?;
        let chain = stream.get_ref().1.peer_certificates().map(|certs| {
            certs
                .iter()
                .map(|c| c.clone().into_owned())
                .collect::<Vec<_>>()
        });
        let peer = chain.and_then(|chain| {
            // Without the self-signed verifier, rustls accepted the chain only
            // if it verified; with it, ask the chain verifier again.
            let verified = match &loaded.self_signed {
                None => true,
                Some(v) => v.chain_verifies(&chain, UnixTime::now()),
            };
            PeerCertificate::new(chain, verified)
        });
        Ok((stream, peer))
    }
}

/// Serves HTTP over TLS on `listener` until `shutdown` completes, then stops
/// accepting and waits for the open connections to finish their requests.
///
/// `make_service` is called once per connection with the client's address
/// and returns the service for its requests (an axum `Router` clone, for
/// instance; insert the address as `ConnectInfo` there if handlers need it).
/// Each request carries the connection's [`PeerCertificate`] in its
/// extensions when the client presented one. Handshake failures are logged
/// at debug level and cost nothing else.
pub async fn serve<F, S, B>(
    listener: TcpListener,
    acceptor: Acceptor,
    make_service: F,
    shutdown: impl Future<Output = ()>,
) where
    F: Fn(SocketAddr) -> S,
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let svc = make_service(addr);
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let (stream, peer) = match acceptor.accept(tcp).await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "TLS handshake refused");
                    return;
                }
            };
            let svc = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                if let Some(peer) = &peer {
                    req.extensions_mut().insert(peer.clone());
                }
                svc.clone().oneshot(req)
            });
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%addr, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
