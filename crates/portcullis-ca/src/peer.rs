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
