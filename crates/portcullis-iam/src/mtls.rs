//! Mutual-TLS client authentication and certificate-bound tokens (RFC 8705):
//! the client fields that register a certificate credential, and the check
//! of the certificate a request came with.

use crate::model::Credential;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use portcullis_ca::{PeerCertificate, SubjectMatch};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// `token_endpoint_auth_method` of RFC 8705 §2.1.
pub const TLS_CLIENT_AUTH: &str = "tls_client_auth";
/// `token_endpoint_auth_method` of RFC 8705 §2.2.
pub const SELF_SIGNED_TLS_CLIENT_AUTH: &str = "self_signed_tls_client_auth";

/// The `tls_client_auth_*` metadata names (RFC 8705 §2.1.2).
pub const SUBJECT_FIELDS: [&str; 5] = [
    "tls_client_auth_subject_dn",
    "tls_client_auth_san_dns",
    "tls_client_auth_san_uri",
    "tls_client_auth_san_ip",
    "tls_client_auth_san_email",
];

/// Most certificates a self-signed client may register.
const MAX_CERTIFICATES: usize = 10;

/// The client fields (config file, admin API) that register a certificate
/// credential, as given.
#[derive(Debug, Default, Clone, Copy)]
pub struct TlsFields<'a> {
    /// `token_endpoint_auth_method`.
    pub method: Option<&'a str>,
    /// The `tls_client_auth_*` values, in [`SUBJECT_FIELDS`] order.
    pub subject: [Option<&'a str>; 5],
    /// PEM certificates (self-signed).
    pub certificates: Option<&'a [String]>,
    /// `x5t#S256` thumbprints (self-signed).
    pub thumbprints: Option<&'a [String]>,
    /// A JWK Set whose keys carry `x5c` (self-signed, RFC 8705 §2.2).
    pub jwks: Option<&'a serde_json::Value>,
}

/// A field and what is wrong with it.
pub type FieldError = (&'static str, String);

impl TlsFields<'_> {
    /// Whether any certificate field is set.
    pub fn any(&self) -> bool {
        self.method.is_some()
            || self.subject.iter().any(Option::is_some)
            || self.certificates.is_some()
            || self.thumbprints.is_some()
    }

    /// The credential these fields register; `None` when they name no
    /// certificate method (the client uses another one).
    pub fn credential(&self) -> Result<Option<Credential>, FieldError> {
        let subjects: Vec<(&'static str, &str)> = SUBJECT_FIELDS
            .iter()
            .zip(self.subject)
            .filter_map(|(k, v)| Some((*k, v?)))
            .collect();
        let certs_given = self.certificates.is_some() || self.thumbprints.is_some();
        match self.method {
            None => {
                if let Some((k, _)) = subjects.first() {
                    return Err((
                        k,
                        "needs token_endpoint_auth_method = tls_client_auth".into(),
                    ));
                }
                if certs_given {
                    return Err((
                        "token_endpoint_auth_method",
                        "tls_client_certificates need self_signed_tls_client_auth".into(),
                    ));
                }
                Ok(None)
            }
            Some(TLS_CLIENT_AUTH) => {
                if certs_given || self.jwks.is_some() {
                    return Err((
                        "token_endpoint_auth_method",
                        "tls_client_auth takes a tls_client_auth_* name, not certificates or jwks"
                            .into(),
                    ));
                }
                match subjects.as_slice() {
                    [(k, v)] => SubjectMatch::parse(k, v)
                        .map(|m| Some(Credential::TlsClientAuth(m)))
                        .map_err(|e| (*k, e)),
                    [] => Err((
                        "token_endpoint_auth_method",
                        "tls_client_auth needs exactly one of tls_client_auth_subject_dn, \
                         _san_dns, _san_uri, _san_ip or _san_email"
                            .into(),
                    )),
                    [_, (k, _), ..] => Err((
                        k,
                        "give exactly one tls_client_auth_* name (RFC 8705 §2.1.2)".into(),
                    )),
                }
            }
            Some(SELF_SIGNED_TLS_CLIENT_AUTH) => {
                if let Some((k, _)) = subjects.first() {
                    return Err((k, "only for tls_client_auth".into()));
                }
                self.self_signed()
                    .map(|t| Some(Credential::SelfSignedTls(t)))
            }
            Some(other) => Err((
                "token_endpoint_auth_method",
                format!(
                    "{:?}: only tls_client_auth or self_signed_tls_client_auth are set here; \
                     the other methods follow from secret, jwks or public",
                    crate::http::form::truncate(other)
                ),
            )),
        }
    }

    /// The thumbprints of the registered self-signed certificates.
    fn self_signed(&self) -> Result<Vec<String>, FieldError> {
        let mut out: Vec<String> = Vec::new();
        for (n, pem) in self.certificates.unwrap_or_default().iter().enumerate() {
            let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
                (
                    "tls_client_certificates",
                    format!("certificate {n}: not a PEM certificate ({e})"),
                )
            })?;
            out.push(
                certificate_thumbprint(&der)
                    .map_err(|e| ("tls_client_certificates", format!("certificate {n}: {e}")))?,
            );
        }
        for t in self.thumbprints.unwrap_or_default() {
            let ok = t.len() == 43 && URL_SAFE_NO_PAD.decode(t).is_ok_and(|b| b.len() == 32);
            if !ok {
                return Err((
                    "tls_client_certificate_thumbprints",
                    format!(
                        "{:?} is not an x5t#S256 (base64url SHA-256, 43 characters)",
                        crate::http::form::truncate(t)
                    ),
                ));
            }
            out.push(t.clone());
        }
        if let Some(jwks) = self.jwks {
            let keys = jwks.get("keys").and_then(|k| k.as_array());
            for (n, key) in keys.into_iter().flatten().enumerate() {
                let first = key
                    .get("x5c")
                    .and_then(|x| x.as_array())
                    .and_then(|x| x.first())
                    .and_then(|c| c.as_str());
                let der = first.and_then(|b64| STANDARD.decode(b64).ok()).ok_or((
                    "jwks",
                    format!("key {n}: self_signed_tls_client_auth needs an x5c certificate"),
                ))?;
                out.push(
                    certificate_thumbprint(&CertificateDer::from(der))
                        .map_err(|e| ("jwks", format!("key {n}: {e}")))?,
                );
            }
        }
        out.dedup();
        if out.is_empty() {
            return Err((
                "tls_client_certificates",
                "self_signed_tls_client_auth needs the client's certificate(s): \
                 tls_client_certificates (PEM), tls_client_certificate_thumbprints or jwks with x5c"
                    .into(),
            ));
        }
        if out.len() > MAX_CERTIFICATES {
            return Err((
                "tls_client_certificates",
                format!("at most {MAX_CERTIFICATES} certificates"),
            ));
        }
        Ok(out)
    }
}

/// The `x5t#S256` of a DER certificate that parses as X.509.
fn certificate_thumbprint(der: &CertificateDer<'_>) -> Result<String, String> {
    x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("not an X.509 certificate ({e})"))?;
    Ok(portcullis_ca::x5t_s256(der))
}

/// Why a certificate does not authenticate a client (for the audit log;
/// the client sees one generic `invalid_client`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertRefusal {
    /// No client certificate on the connection.
    Missing,
    /// The certificate did not chain to the client CA (self-signed).
    Unverified,
    /// It chains, but does not carry the registered name.
    WrongSubject,
    /// It is not one of the registered self-signed certificates.
    NotRegistered,
}

impl CertRefusal {
    /// Message for logs and the error description.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "no TLS client certificate was presented",
            Self::Unverified => "the TLS client certificate is not from a trusted CA",
            Self::WrongSubject => "the TLS client certificate does not name this client",
            Self::NotRegistered => "the TLS client certificate is not registered for this client",
        }
    }
}

/// Whether `peer` authenticates a client registered with `credential`
/// (one of the two certificate credentials; others are refused).
pub fn check(credential: &Credential, peer: Option<&PeerCertificate>) -> Result<(), CertRefusal> {
    let peer = peer.ok_or(CertRefusal::Missing)?;
    match credential {
        Credential::TlsClientAuth(name) => {
            if !peer.chain_verified() {
                return Err(CertRefusal::Unverified);
            }
            if name.matches(peer.leaf()) {
                Ok(())
            } else {
                Err(CertRefusal::WrongSubject)
            }
        }
        Credential::SelfSignedTls(thumbprints) => {
            // Thumbprints are public: a plain comparison leaks nothing.
            if thumbprints.iter().any(|t| t == peer.x5t_s256()) {
                Ok(())
            } else {
                Err(CertRefusal::NotRegistered)
            }
        }
        _ => Err(CertRefusal::NotRegistered),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(method: Option<&'a str>) -> TlsFields<'a> {
        TlsFields {
            method,
            ..Default::default()
        }
    }

    #[test]
    fn tls_client_auth_needs_exactly_one_name() {
        let mut f = fields(Some(TLS_CLIENT_AUTH));
        assert_eq!(f.credential().unwrap_err().0, "token_endpoint_auth_method");
        f.subject[0] = Some("CN=billing");
        assert!(matches!(
            f.credential().unwrap(),
            Some(Credential::TlsClientAuth(SubjectMatch::SubjectDn(_)))
        ));
        f.subject[1] = Some("billing.svc");
        assert_eq!(f.credential().unwrap_err().0, "tls_client_auth_san_dns");
        let mut f = fields(Some(TLS_CLIENT_AUTH));
        f.subject[3] = Some("300.1.1.1");
        assert_eq!(f.credential().unwrap_err().0, "tls_client_auth_san_ip");
        let mut f = fields(None);
        f.subject[2] = Some("spiffe://x/y");
        assert_eq!(f.credential().unwrap_err().0, "tls_client_auth_san_uri");
        assert!(fields(None).credential().unwrap().is_none());
        assert_eq!(
            fields(Some("client_secret_basic"))
                .credential()
                .unwrap_err()
                .0,
            "token_endpoint_auth_method"
        );
    }

    #[test]
    fn self_signed_registers_thumbprints_from_pem_hashes_or_x5c() {
        let ck = rcgen::generate_simple_self_signed(vec!["app".into()]).unwrap();
        let thumb = portcullis_ca::x5t_s256(ck.cert.der());
        let pem = vec![ck.cert.pem()];
        let mut f = fields(Some(SELF_SIGNED_TLS_CLIENT_AUTH));
        assert_eq!(f.credential().unwrap_err().0, "tls_client_certificates");
        f.certificates = Some(&pem);
        assert_eq!(
            f.credential().unwrap(),
            Some(Credential::SelfSignedTls(vec![thumb.clone()]))
        );
        let hashes = vec![thumb.clone()];
        let f2 = TlsFields {
            thumbprints: Some(&hashes),
            ..fields(Some(SELF_SIGNED_TLS_CLIENT_AUTH))
        };
        assert_eq!(
            f2.credential().unwrap(),
            Some(Credential::SelfSignedTls(vec![thumb.clone()]))
        );
        let jwks =
            serde_json::json!({"keys": [{"kty": "EC", "x5c": [STANDARD.encode(ck.cert.der())]}]});
        let f3 = TlsFields {
            jwks: Some(&jwks),
            ..fields(Some(SELF_SIGNED_TLS_CLIENT_AUTH))
        };
        assert_eq!(
            f3.credential().unwrap(),
            Some(Credential::SelfSignedTls(vec![thumb]))
        );
        let bad = vec!["nope".to_owned()];
        for f in [
            TlsFields {
                certificates: Some(&bad),
                ..fields(Some(SELF_SIGNED_TLS_CLIENT_AUTH))
            },
            TlsFields {
                thumbprints: Some(&bad),
                ..fields(Some(SELF_SIGNED_TLS_CLIENT_AUTH))
            },
        ] {
            assert!(f.credential().is_err());
        }
        let garbage =
            vec!["-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n".to_owned()];
        let f4 = TlsFields {
            certificates: Some(&garbage),
            ..fields(Some(SELF_SIGNED_TLS_CLIENT_AUTH))
        };
        assert!(f4.credential().unwrap_err().1.contains("X.509"));
    }
}
