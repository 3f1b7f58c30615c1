//! `ca.json`: the trust domain, the index of issued certificates, the
//! revocations and the CRL counter.
//!
//! Mutations load the file, change it and write it back atomically under the
//! CA's lock, so one process never loses its own updates. Two processes
//! mutating the same directory at the same instant can still race: the CLI
//! is meant for one operator at a time.

use crate::files::write_atomic;
use crate::{CaError, TrustDomain};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::str::FromStr;

/// Index entries are kept this long (seconds) after the certificate expired.
const KEEP_EXPIRED_SECS: i64 = 7 * 24 * 3600;

/// Why a certificate was revoked (RFC 5280 §5.3.1 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum RevocationReason {
    /// No reason given.
    Unspecified,
    /// The private key leaked or may have.
    KeyCompromise,
    /// The subject moved elsewhere.
    AffiliationChanged,
    /// A newer certificate replaces it.
    Superseded,
    /// The workload is gone.
    CessationOfOperation,
    /// The workload lost the right to its identity.
    PrivilegeWithdrawn,
}

impl RevocationReason {
    /// The RFC 5280 name, e.g. `keyCompromise`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "keyCompromise",
            Self::AffiliationChanged => "affiliationChanged",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessationOfOperation",
            Self::PrivilegeWithdrawn => "privilegeWithdrawn",
        }
    }

    pub(crate) fn to_rcgen(self) -> rcgen::RevocationReason {
        match self {
            Self::Unspecified => rcgen::RevocationReason::Unspecified,
            Self::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            Self::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
            Self::Superseded => rcgen::RevocationReason::Superseded,
            Self::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
            Self::PrivilegeWithdrawn => rcgen::RevocationReason::PrivilegeWithdrawn,
        }
    }
}

impl FromStr for RevocationReason {
    type Err = CaError;
    fn from_str(s: &str) -> Result<Self, CaError> {
        [
            Self::Unspecified,
            Self::KeyCompromise,
            Self::AffiliationChanged,
            Self::Superseded,
            Self::CessationOfOperation,
            Self::PrivilegeWithdrawn,
        ]
        .into_iter()
        .find(|r| r.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| CaError::InvalidReason(s.to_owned()))
    }
}

/// A revocation recorded in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// When it was revoked, Unix seconds.
    pub at: i64,
    /// Why.
    pub reason: RevocationReason,
}

/// One certificate this CA issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCert {
    /// Serial number, lowercase hex without separators.
    pub serial: String,
    /// The service name (SPIFFE ID path).
    pub name: String,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// Set once the certificate is revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Revocation>,
}

/// The whole state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct State {
    pub version: u32,
    pub trust_domain: String,
    /// Number of the last CRL published.
    pub crl_number: u64,
    /// `next_update` of the last CRL published, Unix seconds.
    #[serde(default)]
    pub crl_next_update: i64,
    /// How long each CRL is valid, seconds; absent in a CA made before it
    /// could be set, which keeps [`crate::CRL_VALIDITY`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl_validity_secs: Option<u64>,
    pub issued: Vec<IssuedCert>,
}

impl State {
    /// How long each CRL is valid.
    pub fn crl_validity(&self) -> std::time::Duration {
        self.crl_validity_secs
            .map_or(crate::CRL_VALIDITY, std::time::Duration::from_secs)
    }

    pub fn new(trust_domain: &TrustDomain) -> Self {
        Self {
            version: 1,
            trust_domain: trust_domain.as_str().to_owned(),
            crl_number: 0,
            crl_next_update: 0,
            crl_validity_secs: None,
            issued: Vec::new(),
        }
    }

    pub fn load(path: &Path) -> Result<Self, CaError> {
        let text = crate::files::read_string(path)?;
        let state: Self = serde_json::from_str(&text).map_err(|e| CaError::corrupt(path, e))?;
        if state.version != 1 {
            return Err(CaError::corrupt(
                path,
                format!("unsupported version {}", state.version),
            ));
        }
        // What `set_crl_validity` accepts: a hand-edited value outside it
        // would sign CRLs born expired, or overflow the clock.
        if let Some(secs) = state.crl_validity_secs {
            crate::authority::check_crl_validity(std::time::Duration::from_secs(secs))
                .map_err(|e| CaError::corrupt(path, format!("crl_validity_secs {secs}: {e}")))?;
        }
        Ok(state)
    }

    /// Writes the state, dropping index entries long expired.
    pub fn save(&mut self, path: &Path, now: i64) -> Result<(), CaError> {
        self.issued
            .retain(|c| c.not_after.saturating_add(KEEP_EXPIRED_SECS) > now);
        let json = serde_json::to_vec_pretty(self).map_err(|e| CaError::corrupt(path, e))?;
        write_atomic(path, &json, 0o600)
    }
}

/// A serial number as typed by an operator (`0A:1b…` or `0a1b…`), normalised
/// to lowercase hex without separators.
pub(crate) fn normalize_serial(s: &str) -> String {
    s.chars()
        .filter(|c| *c != ':')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of a lowercase hex string; `None` if it is not hex.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_normalise_and_round_trip() {
        assert_eq!(normalize_serial("0A:1B:ff"), "0a1bff");
        assert_eq!(unhex("0a1bff").unwrap(), vec![0x0a, 0x1b, 0xff]);
        assert_eq!(hex(&[0x0a, 0x1b, 0xff]), "0a1bff");
        assert!(unhex("0g").is_none());
        assert!(unhex("abc").is_none());
    }

    #[test]
    fn reasons_parse_by_rfc_name() {
        assert_eq!(
            "keyCompromise".parse::<RevocationReason>().unwrap(),
            RevocationReason::KeyCompromise
        );
        assert!("bogus".parse::<RevocationReason>().is_err());
    }
}
