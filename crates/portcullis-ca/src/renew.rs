//! Renewal: a service that still holds a valid certificate gets a new one
//! for a key of its choice, with the same identity.
//!
//! The caller is authenticated by the TLS handshake (rustls verified the
//! chain, the validity window and the CRL); [`Ca::renew`] then checks the
//! presented leaf against this CA's own index (issued here, not revoked)
//! and copies the identity from it: the SPIFFE ID and the DNS/IP SANs come
//! from the certificate the caller *holds*, never from the CSR, which
//! contributes only its public key (with a verified signature: proof of
//! possession).

use crate::{Ca, CaError, IssuedLeaf, LeafSpec, PeerCertificate, ServiceName};
use std::time::Duration;
use x509_parser::extensions::GeneralName;

impl Ca {
    /// Issues a successor of the certificate `presented` over the public key
    /// of `csr_pem`, living `ttl`. Refused ([`CaError::RenewalRefused`]) when
    /// the presented chain was not verified, the leaf was not issued by this
    /// CA, is revoked or expired, or names no SPIFFE ID in this CA's trust
    /// domain.
    pub fn renew(
        &self,
        presented: &PeerCertificate,
        csr_pem: &str,
        ttl: Duration,
    ) -> Result<IssuedLeaf, CaError> {
        let refused = |why: &str| CaError::RenewalRefused(why.to_owned());
        if !presented.chain_verified() {
            return Err(refused("the certificate does not chain to this CA"));
        }
        let (_, leaf) = x509_parser::parse_x509_certificate(presented.leaf().as_ref())
            .map_err(|_| refused("the certificate does not parse"))?;
        let serial: String = leaf
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let issued = self
            .list()?
            .into_iter()
            .find(|c| c.serial == serial)
            .ok_or_else(|| refused("the certificate was not issued by this CA"))?;
        if issued.revoked.is_some() {
            return Err(refused("the certificate is revoked"));
        }
        if !leaf.validity().is_valid() {
            return Err(refused("the certificate is not valid now"));
        }
        let identity = presented.identity();
        let spiffe = identity
            .workload_in(self.trust_domain())
            .ok_or_else(|| refused("the certificate names no workload in this trust domain"))?;
        let name = ServiceName::parse(spiffe.path().as_str())?;
        let mut sans = Vec::new();
        if let Ok(Some(san)) = leaf.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => sans.push((*d).to_owned()),
                    GeneralName::IPAddress(ip) => match ip.len() {
                        4 => sans.push(
                            std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap_or_default())
                                .to_string(),
                        ),
                        16 => sans.push(
                            std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap_or_default())
                                .to_string(),
                        ),
                        _ => return Err(refused("the certificate has a malformed IP SAN")),
                    },
                    _ => {}
                }
            }
        }
        self.sign_csr(csr_pem, LeafSpec::new(name, sans, ttl))
    }
}
