//! What can go wrong in the CA, grouped by who is at fault.

use std::path::PathBuf;

/// Why a CA operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    // --- the caller's input ---
    /// A trust domain, service name, SPIFFE ID or DNS name is malformed.
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// A certificate signing request did not parse or its signature is wrong.
    #[error("invalid certificate signing request: {0}")]
    BadCsr(String),
    /// The requested lifetime is zero or outlives the intermediate CA.
    #[error("invalid lifetime: {0}")]
    InvalidTtl(String),
    /// No certificate with this serial number was issued here.
    #[error("no certificate with serial {0} was issued by this CA")]
    UnknownSerial(String),
    /// The certificate is already revoked.
    #[error("certificate {0} is already revoked")]
    AlreadyRevoked(String),
    /// A revocation reason name is not one of the RFC 5280 ones we accept.
    #[error("unknown revocation reason {0:?}")]
    InvalidReason(String),
    /// A renewal was refused: the presented certificate is not one this CA
    /// issued and still stands behind.
    #[error("renewal refused: {0}")]
    RenewalRefused(String),

    // --- the state on disk ---
    /// `init` on a directory that already holds a CA.
    #[error("{0} already holds a CA")]
    AlreadyInitialized(PathBuf),
    /// `open` on a directory without a CA.
    #[error("{0} holds no CA (run `portcullis ca init`)")]
    NotInitialized(PathBuf),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file holds something other than what this CA wrote.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A sealed key did not decrypt: wrong master key or damaged file.
    #[error("{path}: {source}")]
    Sealed {
        /// The sealed key file.
        path: PathBuf,
        /// The cause.
        source: portcullis_core::crypto::CryptoError,
    },

    // --- ourselves ---
    /// Certificate, CSR or CRL generation failed inside rcgen.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// The system random source failed.
    #[error("random source failed")]
    Random,
}

impl CaError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl ToString) -> Self {
        Self::Corrupt {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}
