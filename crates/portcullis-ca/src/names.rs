//! Trust domains, service names and SPIFFE IDs, checked once at the edge.
//!
//! The rules are the SPIFFE ID ones: a trust domain is lowercase letters,
//! digits, `.`, `-` and `_`; a path is `/`-separated segments of letters,
//! digits, `.`, `-` and `_`, none of them empty, `.` or `..`.

use crate::CaError;
use std::fmt;

/// Longest accepted trust domain, in bytes.
const MAX_TRUST_DOMAIN: usize = 255;
/// Longest accepted SPIFFE ID, in bytes (the SPIFFE spec's limit).
const MAX_SPIFFE_ID: usize = 2048;

/// A SPIFFE trust domain, e.g. `prod.example.org`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a trust domain.
    pub fn parse(s: &str) -> Result<Self, CaError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_TRUST_DOMAIN
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
            });
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(CaError::InvalidName(format!(
                "trust domain {s:?}: expected 1-255 of a-z 0-9 . - _"
            )))
        }
    }

    /// The trust domain as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A workload name inside a trust domain: the SPIFFE ID path without its
/// leading `/`, e.g. `billing` or `ns/prod/sa/billing`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceName(String);

impl ServiceName {
    /// Parses a service name.
    pub fn parse(s: &str) -> Result<Self, CaError> {
        let segment_ok = |seg: &str| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        };
        if s.len() <= MAX_SPIFFE_ID / 2 && s.split('/').all(segment_ok) {
            Ok(Self(s.to_owned()))
        } else {
            Err(CaError::InvalidName(format!(
                "service name {s:?}: expected /-separated segments of A-Z a-z 0-9 . - _"
            )))
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SPIFFE ID: `spiffe://TRUST_DOMAIN/PATH`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    path: ServiceName,
}

impl SpiffeId {
    /// The ID of `name` in `trust_domain`.
    pub fn new(trust_domain: TrustDomain, path: ServiceName) -> Self {
        Self { trust_domain, path }
    }

    /// Parses `spiffe://TD/PATH` (a path is required: workload IDs only).
    pub fn parse(s: &str) -> Result<Self, CaError> {
        let bad = || CaError::InvalidName(format!("SPIFFE ID {s:?}: expected spiffe://TD/PATH"));
        if s.len() > MAX_SPIFFE_ID {
            return Err(bad());
        }
        let rest = s.strip_prefix("spiffe://").ok_or_else(bad)?;
        let (td, path) = rest.split_once('/').ok_or_else(bad)?;
        Ok(Self {
            trust_domain: TrustDomain::parse(td).map_err(|_| bad())?,
            path: ServiceName::parse(path).map_err(|_| bad())?,
        })
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The workload path, without its leading `/`.
    pub fn path(&self) -> &ServiceName {
        &self.path
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}/{}", self.trust_domain, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_round_trip() {
        let id = SpiffeId::parse("spiffe://prod.example.org/ns/default/billing").unwrap();
        assert_eq!(id.trust_domain().as_str(), "prod.example.org");
        assert_eq!(id.path().as_str(), "ns/default/billing");
        assert_eq!(
            id.to_string(),
            "spiffe://prod.example.org/ns/default/billing"
        );
    }

    #[test]
    fn bad_names_are_refused() {
        for td in ["", "Prod", "a b", "a/b", "x:1"] {
            assert!(TrustDomain::parse(td).is_err(), "{td:?}");
        }
        for name in ["", "/a", "a/", "a//b", "a/../b", "a b", "a?b"] {
            assert!(ServiceName::parse(name).is_err(), "{name:?}");
        }
        for id in [
            "spiffe://td",
            "spiffe://td/",
            "https://td/a",
            "spiffe://TD/a",
            "spiffe://td/a?x",
        ] {
            assert!(SpiffeId::parse(id).is_err(), "{id:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics_and_round_trips(s in "\\PC{0,80}") {
            if let Ok(id) = SpiffeId::parse(&s) {
                proptest::prop_assert_eq!(id.to_string(), s);
            }
        }

        #[test]
        fn built_ids_parse_back(td in "[a-z0-9._-]{1,20}", path in "[A-Za-z0-9_-]{1,10}(/[A-Za-z0-9_-]{1,10}){0,3}") {
            let id = SpiffeId::new(TrustDomain::parse(&td).unwrap(), ServiceName::parse(&path).unwrap());
            proptest::prop_assert_eq!(SpiffeId::parse(&id.to_string()).unwrap(), id);
        }
    }
}
