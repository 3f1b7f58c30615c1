//! A CA in a temporary directory and a real mTLS listener on loopback.

#![allow(dead_code, clippy::unwrap_used)]

use portcullis_ca::tls::{ClientAuth, ClientIdentity, ClientTrust, ServerTlsFiles, client_config};
use portcullis_ca::{
    CRL_FILE, Ca, DEFAULT_LEAF_TTL, IssuedLeaf, LeafSpec, PeerIdentity, ROOT_CERT, Reloading,
    ServiceName, TrustDomain,
};
use portcullis_core::crypto::MasterKey;
use rustls_pki_types::ServerName;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

pub const TRUST_DOMAIN: &str = "test.portcullis";

pub fn master_key() -> MasterKey {
    MasterKey::from_bytes(&[42; 32]).unwrap()
}

pub fn name(s: &str) -> ServiceName {
    ServiceName::parse(s).unwrap()
}

/// A fresh CA in its own temporary directory.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
}

impl TestCa {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::init(
            &dir.path().join("ca"),
            TrustDomain::parse(TRUST_DOMAIN).unwrap(),
            &master_key(),
        )
        .unwrap();
        Self { dir, ca }
    }

    pub fn root(&self) -> PathBuf {
        self.ca.dir().join(ROOT_CERT)
    }

    pub fn crl(&self) -> PathBuf {
        self.ca.dir().join(CRL_FILE)
    }

    /// Issues `spec` and writes `<label>.chain.pem` / `<label>.key.pem`.
    pub fn leaf(&self, label: &str, spec: LeafSpec) -> (IssuedLeaf, ClientIdentity) {
        let leaf = self.ca.issue_with(spec).unwrap();
        let id = write_identity(self.dir.path(), label, &leaf);
        (leaf, id)
    }

    /// A default client leaf for `service`.
    pub fn client(&self, service: &str) -> (IssuedLeaf, ClientIdentity) {
        self.leaf(
            service,
            LeafSpec::new(name(service), vec![], DEFAULT_LEAF_TTL),
        )
    }

    /// Server files for an mTLS listener with a `localhost` certificate.
    pub fn server_files(&self, client_auth: ClientAuth) -> ServerTlsFiles {
        let (_, id) = self.leaf(
            "server",
            LeafSpec::new(name("iam"), vec!["localhost".into()], DEFAULT_LEAF_TTL),
        );
        ServerTlsFiles {
            cert_chain: id.cert_chain,
            key: id.key,
            client_auth,
            alpn_protocols: vec![],
        }
    }

    pub fn trust(&self) -> ClientTrust {
        ClientTrust::new(self.root(), vec![self.crl()])
    }
}

/// A fresh CA and an mTLS listener (client certificate required) using it.
pub async fn mtls_server() -> (TestCa, Server) {
    let ca = TestCa::new();
    let server = Server::start(ca.server_files(ClientAuth::Required(ca.trust()))).await;
    (ca, server)
}

pub fn write_identity(dir: &Path, label: &str, leaf: &IssuedLeaf) -> ClientIdentity {
    let cert_chain = dir.join(format!("{label}.chain.pem"));
    let key = dir.join(format!("{label}.key.pem"));
    std::fs::write(&cert_chain, &leaf.chain_pem).unwrap();
    if let Some(k) = &leaf.key_pem {
        std::fs::write(&key, k.expose()).unwrap();
    }
    ClientIdentity { cert_chain, key }
}

/// Connects to `addr` over TLS trusting `roots`, presenting `identity` if
/// any, and reads until the server closes. The client may or may not notice
/// a refusal (TLS 1.3 sends it after the client's Finished); the server's
/// view is what counts.
pub async fn client_handshake(
    addr: std::net::SocketAddr,
    roots: &Path,
    identity: Option<&ClientIdentity>,
) {
    let config = Arc::new(client_config(roots, identity).unwrap());
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    if let Ok(mut tls) = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
    {
        let mut buf = Vec::new();
        let _ = tls.read_to_end(&mut buf).await;
    }
}

/// What the server saw of one connection: the peer identity (if any
/// certificate) or the handshake error.
pub type Outcome = Result<Option<PeerIdentity>, String>;

/// A TLS listener taking its config from `Reloading` for every connection.
pub struct Server {
    pub addr: std::net::SocketAddr,
    pub reloading: Arc<Reloading>,
    outcomes: mpsc::UnboundedReceiver<Outcome>,
}

impl Server {
    pub async fn start(files: ServerTlsFiles) -> Self {
        let reloading = Arc::new(Reloading::new(files).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, outcomes) = mpsc::unbounded_channel();
        let r = reloading.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(r.current());
                let tx = tx.clone();
                tokio::spawn(async move {
                    let outcome = match acceptor.accept(stream).await {
                        Ok(mut tls) => {
                            let peer = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(PeerIdentity::from_cert);
                            let _ = tls.write_all(b"ok\n").await;
                            let _ = tls.shutdown().await;
                            Ok(peer)
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    let _ = tx.send(outcome);
                });
            }
        });
        Self {
            addr,
            reloading,
            outcomes,
        }
    }

    /// Connects over TLS trusting `roots`, presenting `identity` if any, and
    /// returns what the server concluded.
    pub async fn connect(&mut self, roots: &Path, identity: Option<&ClientIdentity>) -> Outcome {
        client_handshake(self.addr, roots, identity).await;
        self.next_outcome().await
    }

    /// Plain TCP: sends an HTTP request without TLS.
    pub async fn connect_plain(&mut self) -> Outcome {
        let mut tcp = TcpStream::connect(self.addr).await.unwrap();
        let _ = tcp
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await;
        let mut buf = Vec::new();
        let _ = tcp.read_to_end(&mut buf).await;
        assert!(!buf.starts_with(b"HTTP/"), "plain HTTP got an HTTP answer");
        self.next_outcome().await
    }

    async fn next_outcome(&mut self) -> Outcome {
        tokio::time::timeout(std::time::Duration::from_secs(30), self.outcomes.recv())
            .await
            .expect("the server reported no outcome for the connection")
            .expect("server task ended")
    }
}
