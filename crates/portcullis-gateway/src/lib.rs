//! The Portcullis gateway: an authenticating reverse proxy.
//!
//! Every request goes through [`pipeline::handle`]: normalize & match route
//! → authenticate (API key, Basic, JWT, introspection) → authorize (scopes,
//! roles) → rate-limit (GCRA) → propagate identity (strip inbound
//! credentials and identity headers, attach a short-lived internal token
//! signed by the gateway) → proxy → log. Configuration is a TOML file
//! ([`config`]) compiled into a [`runtime::Runtime`] that reload swaps
//! atomically. With `[bff]`, the gateway is also a backend-for-frontend
//! for browsers ([`bff`]).
#![warn(missing_docs)]

mod admin;
pub mod bff;
pub mod config;
pub mod downstream;
pub mod h1;
pub mod pipeline;
pub mod runtime;
pub mod server;
pub mod tls;
pub mod upstream;

pub use server::{GatewayError, Reloaded, RunningGateway, load, start};
