//! The Portcullis service library: what a Rust microservice links in.
//!
//! **Resource-server half**: [`Validator`] checks bearer tokens offline
//! (strict RFC 9068 / RFC 8725 rules shared with the IAM server and the
//! gateway), with keys from the issuer's JWKS ([`jwks::JwksCache`]),
//! revocations from the issuer's feed ([`revocation::RevocationList`]) and a
//! bounded cache of validated tokens. [`BearerAuth`] (tower layer),
//! [`Authenticated`] (axum extractor), [`RequireScopes`] and
//! [`RequireRoles`] (guards) put it in front of handlers.
//!
//! **Client half**: [`TokenSource`] gets client-credentials tokens (secret,
//! `private_key_jwt` or `tls_client_auth`), caches and refreshes them;
//! [`BearerLayer`] attaches them to outgoing `reqwest` requests.
//!
//! **Mutual TLS** ([`tls`]): [`tls::serve_tls`] serves a router over TLS
//! with optional or required client certificates (reloaded on change), and
//! [`BearerAuth`] then enforces certificate-bound tokens (RFC 8705 §3);
//! [`tls::ClientTls`] presents this service's certificate to others.
//!
//! ```no_run
//! use std::sync::Arc;
//! use portcullis_service::*;
//! use tower::ServiceExt;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Calling another service:
//! let tokens = Arc::new(TokenSource::new(TokenSourceConfig::new(
//!     "https://iam.example/oauth2/token",
//!     ClientCredentials::Secret { client_id: "orders".into(), secret: portcullis_core::Secret::new("…") },
//! )));
//! let client = tower::ServiceBuilder::new()
//!     .layer(BearerLayer::new(tokens, Some("inventory-api"), &["inventory:read"]))
//!     .service(reqwest::Client::new());
//! let req = reqwest::Request::new(reqwest::Method::GET, "https://inventory.internal/items".parse()?);
//! let resp = client.oneshot(req).await?;
//! # let _ = resp; Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod client;
pub mod http;
pub mod jwks;
pub mod policy;
pub mod principal;
pub mod renew;
pub mod revocation;
pub mod tls;
pub mod validator;

pub use client::{
    AccessToken, BearerLayer, BearerService, ClientCredentials, ClientError, TokenError,
    TokenSource, TokenSourceConfig,
};
pub use http::{Authenticated, BearerAuth, Rejection, RequireRoles, RequireScopes};
pub use principal::{Actor, Binding, Principal};
pub use validator::{AuthError, Validator, ValidatorConfig};
