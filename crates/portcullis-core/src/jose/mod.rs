//! JOSE: signing keys, compact JWS signing, access-token claims, verification
//! of our own tokens and of `private_key_jwt` client assertions.
//!
//! Signing holds each key pair parsed once (aws-lc-rs) and assembles the
//! compact serialization of RFC 7515 §7.1; parsing and verifying tokens goes
//! through `jsonwebtoken`. Times are checked here, against an injected clock,
//! so that a wrongly typed `exp`/`nbf` is a parse error, never a skipped check.

mod assertion;
mod claims;
mod keys;
pub mod validate;
mod verify;

pub use assertion::{AssertionError, AssertionPolicy, VerifiedAssertion, verify_client_assertion};
pub use claims::{AccessTokenClaims, Audiences, Confirmation, IdTokenClaims, at_hash};
pub use keys::{KeyError, SigningAlgorithm, SigningKey};
pub use validate::{Policy, TokenClaims, ValidationError, VerifyKey};
pub use verify::TokenVerifier;

/// The `typ` header of JWT access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// The largest token or assertion we parse, in bytes.
pub const MAX_JWT_BYTES: usize = 16 * 1024;
