//! Who is on the other end of a mutual-TLS connection: the SPIFFE ID of
//! its certificate and the certificate's SHA-256 thumbprint.
//!
//! TLS verification proves the peer holds a certificate our CA issued; it
//! does not prove the certificate names a workload. An authenticator must
//! refuse a peer whose [`PeerIdentity::spiffe_id`] is `None` (no URI SAN, a
//! non-SPIFFE URI, or several URIs), and should check the trust domain.

use crate::{SpiffeId, TrustDomain};
use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::CertificateDer;
use std::sync::Arc;
use x509_parser::extensions::GeneralName;

/// The identity read from a peer's end-entity certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The SPIFFE ID, when the certificate carries exactly one URI SAN and
    /// it is a valid SPIFFE ID.
    pub spiffe_id: Option<SpiffeId>,
    /// `x5t#S256`: base64url (no padding) of the SHA-256 of the DER
    /// certificate, as RFC 8705 binds tokens to it.
    pub thumbprint: String,
}

impl PeerIdentity {
    /// Reads the identity from a peer's end-entity certificate (the first of
    /// `rustls::Connection::peer_certificates`). Parse errors leave
    /// `spiffe_id` empty; the thumbprint is always computed.
    pub fn from_cert(cert: &CertificateDer<'_>) -> Self {
        Self {
            spiffe_id: spiffe_id(cert),
            thumbprint: x5t_s256(cert),
        }
    }

    /// The SPIFFE ID if it belongs to `trust_domain`: what an mTLS
    /// authenticator accepts. `None` means refuse the peer.
    pub fn workload_in(&self, trust_domain: &TrustDomain) -> Option<&SpiffeId> {
        self.spiffe_id
            .as_ref()
            .filter(|id| id.trust_domain() == trust_domain)
    }
}

/// The `x5t#S256` thumbprint of a DER certificate.
pub fn x5t_s256(cert: &CertificateDer<'_>) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, cert.as_ref()))
}

/// The certificate's SPIFFE ID: its only URI SAN, if that is one.
pub fn spiffe_id(cert: &CertificateDer<'_>) -> Option<SpiffeId> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(uri) => Some(*uri),
        _ => None,
    });
    let uri = uris.next()?;
    if uris.next().is_some() {
        return None;
    }
    SpiffeId::parse(uri).ok()
}

/// The certificate a TLS peer presented, as the listener saw it: the chain
/// (leaf first), the leaf's `x5t#S256`, and whether the chain verified
/// against the listener's roots and CRLs.
///
/// [`crate::tls::serve`] puts one into the extensions of every HTTP request
/// that arrived on a connection with a client certificate, so handlers read
/// it the same way everywhere (with axum: `Option<Extension<PeerCertificate>>`).
/// No extension means no certificate (or no TLS).
#[derive(Debug, Clone)]
pub struct PeerCertificate {
    chain: Arc<[CertificateDer<'static>]>,
    thumbprint: Arc<str>,
    chain_verified: bool,
}

impl PeerCertificate {
    /// A peer certificate from the chain a TLS handshake accepted (leaf
    /// first; `None` when empty). `chain_verified` says whether it chained
    /// to a trusted root; `false` only for a self-signed certificate that a
    /// listener with [`ClientTrust::allow_self_signed`](crate::tls::ClientTrust::allow_self_signed)
    /// admitted.
    pub fn new(chain: Vec<CertificateDer<'static>>, chain_verified: bool) -> Option<Self> {
        let thumbprint = x5t_s256(chain.first()?).into();
        Some(Self {
            chain: chain.into(),
            thumbprint,
            chain_verified,
        })
    }

    /// The end-entity certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        // `new` refuses an empty chain.
        &self.chain[0]
    }

    /// The whole chain as presented, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The leaf's `x5t#S256` thumbprint (RFC 8705 §3.1).
    pub fn x5t_s256(&self) -> &str {
        &self.thumbprint
    }

    /// Whether the chain verified against the listener's roots and CRLs.
    /// `false` means a self-signed certificate admitted without a chain:
    /// trust it only if it is one the client registered.
    pub fn chain_verified(&self) -> bool {
        self.chain_verified
    }

    /// The SPIFFE ID and thumbprint of the leaf.
    pub fn identity(&self) -> PeerIdentity {
        PeerIdentity {
            spiffe_id: spiffe_id(self.leaf()),
            thumbprint: self.thumbprint.to_string(),
        }
    }
}
