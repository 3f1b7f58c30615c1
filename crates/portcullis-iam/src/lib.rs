//! The Portcullis IAM server: an OAuth 2.0 authorization server.
//!
//! # Design
//! - [`config`]: `RawConfig` (file/flags/env) validated into `Config`.
//! - [`store`]: persistence behind the [`store::Store`] trait (SQLite embedded).
//! - [`keys`]: signing keys, encrypted at rest, with staged rotation.
//! - [`clients`]: the client registry and its cache; [`client_auth`]: client
//!   authentication; [`grant`]: scope/audience decisions; [`mtls`]: mutual-TLS
//!   client authentication and certificate-bound tokens (RFC 8705).
//! - [`users`]: people who log in; argon2id passwords checked on the blocking
//!   pool, with the same work for unknown users.
//! - [`login`]: the browser login (OIDC code flow): sealed pending requests,
//!   cookies, redirects; [`throttle`]: sign-in throttling.
//! - [`http`]: the public and admin routers; errors reach the wire in one place.
//! - [`server`]: start, background housekeeping, graceful shutdown; plain
//!   HTTP, or TLS through `portcullis_ca::tls::serve` with the client
//!   certificate in each request's extensions.
//!
//! Issuing a client-credentials token reads the client from a cache and signs
//! once; nothing on that path writes to the database.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let raw = portcullis_iam::config::RawConfig {
//!     mode: Some("development".into()),
//!     database_url: Some("sqlite://iam.db".into()),
//!     ..Default::default()
//! };
//! let config = raw.validate(&|var| std::env::var(var).ok())?;
//! let server = portcullis_iam::server::start(config).await?;
//! println!("issuer: {}", server.issuer);
//! server.shutdown().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod audit;
pub mod authorize;
pub mod client_auth;
pub mod clients;
pub mod config;
pub mod exchange;
pub mod fanout;
pub use portcullis_core::crypto;
pub mod grant;
pub mod http;
pub mod keys;
pub mod login;
pub mod metrics;
pub mod model;
pub mod mtls;
pub mod rbac;
pub mod server;
pub mod store;
pub mod throttle;
pub mod users;
