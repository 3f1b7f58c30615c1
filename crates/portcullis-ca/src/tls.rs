//! rustls configurations built from PEM files: server-only TLS, mutual TLS
//! (client certificates checked against our root and the CRLs), and the
//! client side for mTLS to upstreams.
//!
//! [`Acceptor`] runs server handshakes with a [`Reloading`](crate::Reloading)
//! configuration and returns the client's [`PeerCertificate`](crate::PeerCertificate);
//! [`serve`] is the HTTP accept loop built on it.
//!
//! The crypto provider is always aws-lc-rs, passed explicitly, so nothing
//! depends on a process-wide default being installed.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::acceptor::{AcceptError, Acceptor, DEFAULT_HANDSHAKE_TIMEOUT, serve};

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
    /// Also admit a *self-signed* client certificate that no root vouches
    /// for (RFC 8705 §2.2 `self_signed_tls_client_auth`): the handshake
    /// signature is still checked, so the peer holds the key, and the
    /// certificate must be within its validity period; but the connection's
    /// [`PeerCertificate::chain_verified`](crate::PeerCertificate::chain_verified)
    /// is `false`, and only an application check against a certificate the
    /// client registered may trust it. Certificates from an unknown CA (not
    /// self-signed) are still refused.
    pub allow_self_signed: bool,
    /// Refuse a client certificate while its issuer's CRL is past its
    /// `nextUpdate` (rustls' `enforce_revocation_expiration`): fail closed
    /// when the CA stops publishing. Self-signed certificates admitted by
    /// `allow_self_signed` have no CRL and are not affected. Off by default, where a stale CRL is still applied,
    /// so its revocations stay in force and nobody is locked out.
    pub enforce_crl_expiry: bool,
}

impl ClientTrust {
    /// Trust `roots` with `crls`, refusing self-signed certificates and
    /// applying CRLs past their `nextUpdate`.
    pub fn new(roots: impl Into<PathBuf>, crls: Vec<PathBuf>) -> Self {
        Self {
            roots: roots.into(),
            crls,
            allow_self_signed: false,
            enforce_crl_expiry: false,
        }
    }
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
    Ok(build_server(files)?.0)
}

/// The configuration and, when self-signed client certificates are
/// admitted, the verifier (to tell afterwards which ones chained).
pub(crate) fn build_server(
    files: &ServerTlsFiles,
) -> Result<(ServerConfig, Option<Arc<ClientVerifier>>), TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let (trust, optional) = match &files.client_auth {
        ClientAuth::None => (None, false),
        ClientAuth::Required(trust) => (Some(trust), false),
        ClientAuth::Optional(trust) => (Some(trust), true),
    };
    let (builder, kept) = match trust {
        None => (builder.with_no_client_auth(), None),
        Some(trust) => {
            let webpki = webpki_verifier(trust, provider.clone(), optional)?;
            if trust.allow_self_signed {
                let v = Arc::new(ClientVerifier { webpki, provider });
                (builder.with_client_cert_verifier(v.clone()), Some(v))
            } else {
                (builder.with_client_cert_verifier(webpki), None)
            }
        }
    };
    let mut config =
        builder.with_single_cert(load_certs(&files.cert_chain)?, load_key(&files.key)?)?;
    config.alpn_protocols = files.alpn_protocols.clone();
    Ok((config, kept))
}

fn webpki_verifier(
    trust: &ClientTrust,
    provider: Arc<CryptoProvider>,
    optional: bool,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut crls = Vec::new();
    for path in &trust.crls {
        crls.extend(load_crls(path)?);
    }
    let builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(&trust.roots)?), provider)
            .with_crls(crls)
            .only_check_end_entity_revocation();
    let builder = if trust.enforce_crl_expiry {
        builder.enforce_revocation_expiration()
    } else {
        builder
    };
    let builder = if optional {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    Ok(builder.build()?)
}

/// The client-certificate verifier of a listener that also admits
/// self-signed certificates (RFC 8705 §2.2). Everything goes to rustls'
/// [`WebPkiClientVerifier`] first; only when it answers "unknown issuer"
/// for a certificate that is self-issued (issuer = subject) and within its
/// validity period is the certificate admitted, without a chain. The
/// handshake signature is checked the same way in both cases (rustls'
/// `verify_tls12_signature` / `verify_tls13_signature` against the
/// certificate's key), so the peer proved it holds the key.
#[derive(Debug)]
pub(crate) struct ClientVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
    provider: Arc<CryptoProvider>,
}

impl ClientVerifier {
    /// Whether `chain` verifies against the roots and CRLs (not merely
    /// admitted as self-signed).
    pub(crate) fn chain_verifies(&self, chain: &[CertificateDer<'_>], now: UnixTime) -> bool {
        match chain.split_first() {
            Some((leaf, rest)) => self.webpki.verify_client_cert(leaf, rest, now).is_ok(),
            None => false,
        }
    }
}

/// Whether `der` is a self-issued certificate valid at `now`.
fn self_signed_and_current(der: &CertificateDer<'_>, now: UnixTime) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return false;
    };
    let Ok(now) = x509_parser::time::ASN1Time::from_timestamp(
        i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
    ) else {
        return false;
    };
    cert.issuer().as_raw() == cert.subject().as_raw() && cert.validity().is_valid_at(now)
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.webpki.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.webpki.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self
            .webpki
            .verify_client_cert(end_entity, intermediates, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature,
            )) if self_signed_and_current(end_entity, now) => Ok(ClientCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
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
