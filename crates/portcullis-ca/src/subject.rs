//! Matching a certificate against the one name a client registered for
//! RFC 8705 §2.1.2 `tls_client_auth`: the subject DN (RFC 4514 string), or
//! one SAN of type DNS, URI, IP address or email.
//!
//! The DN is compared as parsed RDNs, not as strings: the RFC 4514 string is
//! parsed (types by short name or dotted OID, `\`-escapes, `+` for
//! multi-valued RDNs) and compared with the certificate's subject read by
//! x509-parser, RDN by RDN in RFC 4514 order (the last RDN of the DER
//! sequence first, as RFC 4514 §2.1 writes it), attribute types exactly,
//! values with caseIgnoreMatch-style folding (ASCII case, insignificant
//! spaces). A certificate that does not parse matches nothing.

use rustls_pki_types::CertificateDer;
use std::fmt;
use std::net::IpAddr;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::Oid;

/// Which certificate name a `tls_client_auth` client is known by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectMatch {
    /// `tls_client_auth_subject_dn`: the whole subject DN.
    SubjectDn(DistinguishedName),
    /// `tls_client_auth_san_dns`: a dNSName SAN (ASCII case-insensitive).
    SanDns(String),
    /// `tls_client_auth_san_uri`: a uniformResourceIdentifier SAN (exact).
    SanUri(String),
    /// `tls_client_auth_san_ip`: an iPAddress SAN.
    SanIp(IpAddr),
    /// `tls_client_auth_san_email`: an rfc822Name SAN (domain part ASCII
    /// case-insensitive, local part exact).
    SanEmail(String),
}

impl SubjectMatch {
    /// The RFC 8705 client metadata name of this kind of match.
    pub fn metadata_name(&self) -> &'static str {
        match self {
            Self::SubjectDn(_) => "tls_client_auth_subject_dn",
            Self::SanDns(_) => "tls_client_auth_san_dns",
            Self::SanUri(_) => "tls_client_auth_san_uri",
            Self::SanIp(_) => "tls_client_auth_san_ip",
            Self::SanEmail(_) => "tls_client_auth_san_email",
        }
    }

    /// The registered value as a string (the DN in RFC 4514 form).
    pub fn value(&self) -> String {
        match self {
            Self::SubjectDn(dn) => dn.to_string(),
            Self::SanDns(v) | Self::SanUri(v) | Self::SanEmail(v) => v.clone(),
            Self::SanIp(ip) => ip.to_string(),
        }
    }

    /// Parses a value of the metadata field `name` (one of the
    /// `tls_client_auth_*` names).
    pub fn parse(name: &str, value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value.is_empty() {
            return Err("must not be empty".into());
        }
        if value.len() > 2048 {
            return Err("at most 2048 characters".into());
        }
        match name {
            "tls_client_auth_subject_dn" => Ok(Self::SubjectDn(value.parse()?)),
            "tls_client_auth_san_dns" => {
                rustls_pki_types::DnsName::try_from(value)
                    .map_err(|_| format!("{value:?} is not a DNS name"))?;
                Ok(Self::SanDns(value.to_ascii_lowercase()))
            }
            "tls_client_auth_san_uri" => {
                if !value.contains(':') || value.chars().any(char::is_whitespace) {
                    return Err(format!("{value:?} is not an absolute URI"));
                }
                Ok(Self::SanUri(value.to_owned()))
            }
            "tls_client_auth_san_ip" => value
                .parse()
                .map(Self::SanIp)
                .map_err(|_| format!("{value:?} is not an IP address")),
            "tls_client_auth_san_email" => match value.rsplit_once('@') {
                Some((local, domain)) if !local.is_empty() && !domain.is_empty() => Ok(
                    Self::SanEmail(format!("{local}@{}", domain.to_ascii_lowercase())),
                ),
                _ => Err(format!("{value:?} is not an email address")),
            },
            other => Err(format!("unknown name type {other:?}")),
        }
    }

    /// Whether the DER certificate carries this name.
    pub fn matches(&self, cert: &CertificateDer<'_>) -> bool {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
            return false;
        };
        if let Self::SubjectDn(dn) = self {
            return DistinguishedName::from_x509(cert.subject()).is_some_and(|s| s == *dn);
        }
        let Ok(Some(san)) = cert.subject_alternative_name() else {
            return false;
        };
        san.value
            .general_names
            .iter()
            .any(|name| match (self, name) {
                (Self::SanDns(want), GeneralName::DNSName(got)) => want.eq_ignore_ascii_case(got),
                (Self::SanUri(want), GeneralName::URI(got)) => want == got,
                (Self::SanEmail(want), GeneralName::RFC822Name(got)) => {
                    Self::parse("tls_client_auth_san_email", got)
                        .is_ok_and(|g| g == Self::SanEmail(want.clone()))
                }
                (Self::SanIp(want), GeneralName::IPAddress(got)) => match (want, got.len()) {
                    (IpAddr::V4(v4), 4) => v4.octets().as_slice() == *got,
                    (IpAddr::V6(v6), 16) => v6.octets().as_slice() == *got,
                    _ => false,
                },
                _ => false,
            })
    }
}

/// One attribute of an RDN: its type (OID, dotted) and its value.
#[derive(Debug, Clone)]
struct Attribute {
    oid: String,
    value: String,
}

impl Attribute {
    fn folded(&self) -> (String, String) {
        let value = self
            .value
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_ascii_lowercase();
        (self.oid.clone(), value)
    }
}

/// A distinguished name as a list of RDNs in RFC 4514 order (the most
/// specific first, e.g. `CN=billing,O=Example,C=DE`), each a set of
/// attributes.
#[derive(Debug, Clone)]
pub struct DistinguishedName {
    rdns: Vec<Vec<Attribute>>,
}

impl DistinguishedName {
    /// Each RDN as a sorted list of folded (type, value) pairs.
    fn canonical(&self) -> Vec<Vec<(String, String)>> {
        self.rdns
            .iter()
            .map(|rdn| {
                let mut attrs: Vec<_> = rdn.iter().map(Attribute::folded).collect();
                attrs.sort();
                attrs
            })
            .collect()
    }

    /// From a certificate's subject (DER order reversed into RFC 4514
    /// order). `None` when a value is not a string type.
    fn from_x509(name: &x509_parser::x509::X509Name<'_>) -> Option<Self> {
        let mut rdns = Vec::new();
        for rdn in name.iter() {
            let mut attrs = Vec::new();
            for atv in rdn.iter() {
                attrs.push(Attribute {
                    oid: atv.attr_type().to_id_string(),
                    value: atv.as_str().ok()?.to_owned(),
                });
            }
            rdns.push(attrs);
        }
        rdns.reverse();
        Some(Self { rdns })
    }
}

impl PartialEq for DistinguishedName {
    fn eq(&self, other: &Self) -> bool {
        self.canonical() == other.canonical()
    }
}

impl Eq for DistinguishedName {}

/// Short attribute names of RFC 4514 §3 (and a few common others).
const SHORT_NAMES: &[(&str, &str)] = &[
    ("CN", "2.5.4.3"),
    ("SERIALNUMBER", "2.5.4.5"),
    ("C", "2.5.4.6"),
    ("L", "2.5.4.7"),
    ("ST", "2.5.4.8"),
    ("STREET", "2.5.4.9"),
    ("O", "2.5.4.10"),
    ("OU", "2.5.4.11"),
    ("DC", "0.9.2342.19200300.100.1.25"),
    ("UID", "0.9.2342.19200300.100.1.1"),
    ("EMAILADDRESS", "1.2.840.113549.1.9.1"),
];

fn attribute_oid(name: &str) -> Result<String, String> {
    let upper = name.trim().to_ascii_uppercase();
    if let Some((_, oid)) = SHORT_NAMES.iter().find(|(n, _)| *n == upper) {
        return Ok((*oid).to_owned());
    }
    let dotted = upper.strip_prefix("OID.").unwrap_or(&upper);
    let parts: Option<Vec<u64>> = dotted.split('.').map(|p| p.parse().ok()).collect();
    match parts.and_then(|p| Oid::from(&p).ok()) {
        Some(oid) if dotted.contains('.') => Ok(oid.to_id_string()),
        _ => Err(format!("unknown attribute type {name:?}")),
    }
}

impl std::str::FromStr for DistinguishedName {
    type Err = String;

    /// Parses an RFC 4514 string, e.g. `CN=billing,OU=Payments+L=Berlin,O=Example`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut rdns: Vec<Vec<Attribute>> = vec![Vec::new()];
        let mut chars = s.chars().peekable();
        loop {
            // attributeType "="
            let mut name = String::new();
            loop {
                match chars.next() {
                    Some('=') => break,
                    Some(c) => name.push(c),
                    None => return Err(format!("expected TYPE=value in {s:?}")),
                }
            }
            let oid = attribute_oid(&name)?;
            // attributeValue, up to an unescaped ',' or '+'; `\XX` hex pairs
            // are UTF-8 bytes.
            let mut bytes: Vec<u8> = Vec::new();
            let mut separator = None;
            let mut buf = [0u8; 4];
            while let Some(c) = chars.next() {
                match c {
                    ',' | '+' => {
                        separator = Some(c);
                        break;
                    }
                    '\\' => match chars.next() {
                        Some(h) if h.is_ascii_hexdigit() => {
                            let l = chars.next().unwrap_or(' ');
                            let byte = u8::from_str_radix(&format!("{h}{l}"), 16)
                                .map_err(|_| format!("bad hex escape in {s:?}"))?;
                            bytes.push(byte);
                        }
                        Some(e) => bytes.extend_from_slice(e.encode_utf8(&mut buf).as_bytes()),
                        None => return Err(format!("dangling '\\' in {s:?}")),
                    },
                    c => bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
                }
            }
            let value = String::from_utf8(bytes)
                .map_err(|_| format!("hex escapes are not UTF-8 in {s:?}"))?;
            if value.starts_with('#') {
                return Err("BER-encoded (#hex) values are not supported".into());
            }
            if value.trim().is_empty() {
                return Err(format!("empty value for {} in {s:?}", name.trim()));
            }
            // `rdns` always holds at least the RDN being built.
            if let Some(rdn) = rdns.last_mut() {
                rdn.push(Attribute {
                    oid,
                    value: value.trim().to_owned(),
                });
            }
            match separator {
                Some(',') => rdns.push(Vec::new()),
                Some(_) => {}
                None => break,
            }
        }
        Ok(Self { rdns })
    }
}

impl fmt::Display for DistinguishedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rdn) in self.rdns.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            for (j, a) in rdn.iter().enumerate() {
                if j > 0 {
                    f.write_str("+")?;
                }
                let name = SHORT_NAMES
                    .iter()
                    .find(|(_, oid)| *oid == a.oid)
                    .map_or(a.oid.as_str(), |(n, _)| n);
                write!(f, "{name}=")?;
                for (k, c) in a.value.chars().enumerate() {
                    let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
                        || (k == 0 && matches!(c, '#' | ' '));
                    if special {
                        f.write_str("\\")?;
                    }
                    write!(f, "{c}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn dn(s: &str) -> DistinguishedName {
        s.parse().unwrap()
    }

    fn cert(
        dn_parts: &[(rcgen::DnType, &str)],
        sans: Vec<rcgen::SanType>,
    ) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in dn_parts {
            params.distinguished_name.push(t.clone(), *v);
        }
        params.subject_alt_names = sans;
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn rfc_4514_strings_parse_and_compare_as_rdns() {
        assert_eq!(dn("CN=billing,O=Example"), dn("cn = Billing , o=example"));
        assert_eq!(dn("CN=a\\,b,O=x"), dn("2.5.4.3=a\\2Cb,O=x"));
        assert_eq!(dn("OU=p+L=Berlin,O=x"), dn("L=berlin+OU=p,O=x"));
        assert_ne!(dn("CN=a,O=b"), dn("O=b,CN=a"), "order matters");
        assert_ne!(dn("CN=a"), dn("CN=a,O=b"));
        assert_eq!(dn("CN=caf\\C3\\A9").to_string(), "CN=café");
        for bad in [
            "", "CN", "CN=", "XX=1", "CN=a,", "CN=#0401", "CN=\\", "CN=\\4",
        ] {
            assert!(bad.parse::<DistinguishedName>().is_err(), "{bad:?}");
        }
        assert_eq!(dn("CN=a\\,b,O=x").to_string(), "CN=a\\,b,O=x");
    }

    #[test]
    fn subject_dn_matches_the_certificate_subject_in_rfc_4514_order() {
        let c = cert(
            &[
                (rcgen::DnType::CountryName, "DE"),
                (rcgen::DnType::OrganizationName, "Example"),
                (rcgen::DnType::CommonName, "billing"),
            ],
            vec![],
        );
        let m = |s: &str| SubjectMatch::parse("tls_client_auth_subject_dn", s).unwrap();
        assert!(m("CN=billing,O=Example,C=DE").matches(&c));
        assert!(m("cn=BILLING, o=example, c=de").matches(&c));
        assert!(!m("C=DE,O=Example,CN=billing").matches(&c));
        assert!(!m("CN=billing,O=Example").matches(&c));
        assert!(!m("CN=orders,O=Example,C=DE").matches(&c));
        assert!(!m("CN=billing").matches(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])));
    }

    #[test]
    fn sans_match_by_type() {
        let c = cert(
            &[(rcgen::DnType::CommonName, "x")],
            vec![
                rcgen::SanType::DnsName("Billing.svc".try_into().unwrap()),
                rcgen::SanType::URI("spiffe://td/billing".try_into().unwrap()),
                rcgen::SanType::IpAddress("10.0.0.7".parse().unwrap()),
                rcgen::SanType::Rfc822Name("Ops@Example.ORG".try_into().unwrap()),
            ],
        );
        let yes = [
            ("tls_client_auth_san_dns", "billing.SVC"),
            ("tls_client_auth_san_uri", "spiffe://td/billing"),
            ("tls_client_auth_san_ip", "10.0.0.7"),
            ("tls_client_auth_san_email", "Ops@example.org"),
        ];
        for (k, v) in yes {
            assert!(SubjectMatch::parse(k, v).unwrap().matches(&c), "{k}={v}");
        }
        let no = [
            ("tls_client_auth_san_dns", "orders.svc"),
            ("tls_client_auth_san_uri", "spiffe://td/Billing"),
            ("tls_client_auth_san_ip", "10.0.0.8"),
            ("tls_client_auth_san_ip", "::ffff:10.0.0.7"),
            ("tls_client_auth_san_email", "ops@example.org"),
            ("tls_client_auth_san_dns", "x"),
        ];
        for (k, v) in no {
            assert!(!SubjectMatch::parse(k, v).unwrap().matches(&c), "{k}={v}");
        }
        for (k, v) in [
            ("tls_client_auth_san_dns", "not a name"),
            ("tls_client_auth_san_ip", "10.0.0"),
            ("tls_client_auth_san_email", "nobody"),
            ("tls_client_auth_san_uri", "relative/path"),
            ("tls_client_auth_other", "x"),
        ] {
            assert!(SubjectMatch::parse(k, v).is_err(), "{k}={v}");
        }
    }
}
