//! rustls configurations built from PEM files: server-only TLS, mutual TLS
//! (client certificates checked against our root and the CRLs), and the
//! client side for mTLS to upstreams.
//!
//! The crypto provider is always aws-lc-rs, passed explicitly, so nothing
//! depends on a process-wide default being installed.

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file is missing, unreadable or holds nothing usable.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the certificates or the key.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built (bad root or CRL).
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// Whether and how a server asks for client certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// Server-only TLS.
    None,
    /// Mutual TLS: a client without a valid certificate fails the handshake.
    Required(ClientTrust),
    /// A client certificate is verified when sent, but may be absent (a
    /// listener shared by mTLS and other authenticators). The application
    /// must then refuse mTLS-only routes itself.
    Optional(ClientTrust),
}

/// What client certificates are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTrust {
    /// PEM bundle of trust anchors (the CA's `root.pem`).
    pub roots: PathBuf,
    /// PEM CRLs (the CA's `crl.pem`). Only the client's own certificate is
    /// checked against them; the intermediate is trusted by its signature.
    pub crls: Vec<PathBuf>,
}

/// The files a TLS listener is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// PEM chain: the server's certificate, then intermediates.
    pub cert_chain: PathBuf,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// Client authentication.
    pub client_auth: ClientAuth,
    /// ALPN protocols offered, most preferred first (e.g. `h2`, `http/1.1`).
    pub alpn_protocols: Vec<Vec<u8>>,
}

impl ServerTlsFiles {
    /// Every file the configuration is built from (for change detection).
    pub fn paths(&self) -> Vec<&Path> {
        let mut paths = vec![self.cert_chain.as_path(), self.key.as_path()];
        if let ClientAuth::Required(trust) | ClientAuth::Optional(trust) = &self.client_auth {
            paths.push(&trust.roots);
            paths.extend(trust.crls.iter().map(PathBuf::as_path));
        }
        paths
    }
}

/// A client certificate and its key, for mTLS to an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// PEM chain: the client's certificate, then intermediates.
    pub cert_chain: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds a server configuration from `files`.
pub fn server_config(files: &ServerTlsFiles) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &files.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Required(trust) => {
            builder.with_client_cert_verifier(client_verifier(trust, provider, false)?)
        }
        ClientAuth::Optional(trust) => {
            builder.with_client_cert_verifier(client_verifier(trust, provider, true)?)
        }
    };
    let mut config =
        builder.with_single_cert(load_certs(&files.cert_chain)?, load_key(&files.key)?)?;
    config.alpn_protocols = files.alpn_protocols.clone();
    Ok(config)
}

fn client_verifier(
    trust: &ClientTrust,
    provider: Arc<CryptoProvider>,
    optional: bool,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut crls = Vec::new();
    for path in &trust.crls {
        crls.extend(load_crls(path)?);
    }
    let builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(&trust.roots)?), provider)
            .with_crls(crls)
            .only_check_end_entity_revocation();
    let builder = if optional {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    Ok(builder.build()?)
}

/// Builds a client configuration trusting the roots in `roots` (PEM) and,
/// when `identity` is given, presenting that certificate (mTLS).
pub fn client_config(
    roots: &Path,
    identity: Option<&ClientIdentity>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(load_roots(roots)?);
    Ok(match identity {
        Some(id) => {
            builder.with_client_auth_cert(load_certs(&id.cert_chain)?, load_key(&id.key)?)?
        }
        None => builder.with_no_client_auth(),
    })
}

fn file_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// All certificates in a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    load_all(path, "CERTIFICATE")
}

/// Every PEM section of type `T` in the file; at least one.
fn load_all<T: PemObject>(path: &Path, label: &str) -> Result<Vec<T>, TlsError> {
    let items = T::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_error(path, e))?;
    if items.is_empty() {
        return Err(file_error(path, format!("no {label} in the file")));
    }
    Ok(items)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| file_error(path, e))?;
    }
    Ok(roots)
}

fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    load_all(path, "X509 CRL")
}
