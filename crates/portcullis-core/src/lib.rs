//! Wire types and JOSE/JWT logic shared by every Portcullis component.
//!
//! This crate does no I/O. It owns:
//! - newtypes that carry protocol rules ([`ClientId`], [`Scope`], [`ScopeSet`],
//!   [`Audience`], [`Issuer`]) and the [`Secret`] type that never prints itself;
//! - the RFC 6749 §5.2 error vocabulary ([`oauth::ErrorCode`], [`oauth::OAuthError`]);
//! - signing keys, compact JWS signing and access-token claims ([`jose`]);
//! - validation of `private_key_jwt` client assertions (RFC 7523), a pure
//!   function of the assertion, the client's keys and an injected clock.
//!
//! ```
//! use portcullis_core::{jose::{SigningAlgorithm, SigningKey}, ScopeSet};
//! let key = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
//! let jwk = key.public_jwk();
//! assert_eq!(jwk["alg"], "ES256");
//! let scopes: ScopeSet = "read write".parse().unwrap();
//! assert!(scopes.contains_str("read"));
//! ```
#![warn(missing_docs)]

pub mod clock;
pub mod config;
pub mod crypto;
pub mod ids;
pub mod jose;
pub mod oauth;
pub mod secret;
#[cfg(feature = "prometheus")]
pub mod telemetry;

pub use clock::{Clock, SystemClock, UnixTime};
pub use ids::{Audience, ClientId, IdError, Issuer, Scope, ScopeSet};
pub use secret::Secret;
