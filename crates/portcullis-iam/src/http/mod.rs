//! HTTP: the public router (token, introspection, revocation, discovery,
//! JWKS, health, metrics) and the admin router.

pub mod admin;
mod authorize;
mod code_grant;
pub mod error;
mod exchange;
pub mod form;
mod ops;
pub mod pages;
mod session;
mod token;

use crate::client_auth::ClientAuthenticator;
use crate::clients::ClientRegistry;
use crate::keys::KeyRing;
use crate::store::Store;
use crate::users::UserRegistry;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use portcullis_core::telemetry::label;
use portcullis_core::{Clock, Issuer, Secret};
use std::sync::Arc;
use std::time::Instant;

/// Endpoint paths, relative to the issuer.
pub mod paths {
    /// Token endpoint.
    pub const TOKEN: &str = "/oauth2/token";
    /// Introspection endpoint.
    pub const INTROSPECT: &str = "/oauth2/introspect";
    /// Revocation endpoint.
    pub const REVOKE: &str = "/oauth2/revoke";
    /// Revocation feed for offline validators.
    pub const REVOCATIONS: &str = "/oauth2/revocations";
    /// JWK Set.
    pub const JWKS: &str = "/.well-known/jwks.json";
    /// Authorization endpoint.
    pub const AUTHORIZE: &str = "/oauth2/authorize";
    /// Where the sign-in form posts.
    pub const LOGIN: &str = "/oauth2/login";
    /// Where the consent form posts.
    pub const CONSENT: &str = "/oauth2/consent";
    /// UserInfo endpoint.
    pub const USERINFO: &str = "/oauth2/userinfo";
    /// RP-initiated logout (`end_session_endpoint`).
    pub const END_SESSION: &str = "/oauth2/logout";
}

/// Everything handlers need.
pub struct AppState {
    /// Issuer identifier.
    pub issuer: Issuer,
    /// Default token lifetime.
    pub access_token_ttl: u64,
    /// Maximum token lifetime.
    pub max_access_token_ttl: u64,
    /// JWKS cache lifetime.
    pub jwks_max_age: u64,
    /// Clock.
    pub clock: Arc<dyn Clock>,
    /// Store.
    pub store: Arc<dyn Store>,
    /// Signing keys.
    pub keys: Arc<KeyRing>,
    /// Clients.
    pub clients: Arc<ClientRegistry>,
    /// Users.
    pub users: Arc<UserRegistry>,
    /// Client authentication.
    pub auth: ClientAuthenticator,
    /// Admin bearer token.
    pub admin_token: Option<Secret>,
    /// Default algorithm for `keys rotate`.
    pub signing_alg: portcullis_core::jose::SigningAlgorithm,
    /// Request body limit, bytes.
    pub body_limit: usize,
    /// Browser login settings.
    pub login: crate::config::LoginConfig,
    /// The IAM server's cookies.
    pub cookies: crate::login::Cookies,
    /// Who may exchange which tokens (RFC 8693).
    pub exchange: crate::exchange::ExchangePolicy,
    /// Roles (RBAC).
    pub roles: Arc<crate::rbac::RoleRegistry>,
    /// The public listener asks for client certificates (mutual TLS,
    /// RFC 8705): advertised in discovery.
    pub mtls: bool,
}

/// Shared state handle.
pub type SharedState = Arc<AppState>;

async fn track(State(listener): State<&'static str>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| label(p.as_str()));
    let start = Instant::now();
    let resp = next.run(req).await;
    let status = label(resp.status().as_str());
    metrics::histogram!(crate::metrics::names::HTTP_DURATION, "listener" => listener, "route" => route)
        .record(start.elapsed().as_secs_f64());
    metrics::counter!(crate::metrics::names::HTTP_REQUESTS, "listener" => listener, "route" => route, "status" => status)
        .increment(1);
    resp
}

/// The public router.
pub fn public_router(state: SharedState) -> Router {
    Router::new()
        .route(paths::TOKEN, post(token::token))
        .route(paths::INTROSPECT, post(token::introspect))
        .route(paths::REVOKE, post(token::revoke))
        .route(paths::REVOCATIONS, get(token::revocations))
        .route(paths::AUTHORIZE, get(authorize::authorize))
        .route(paths::LOGIN, post(authorize::login))
        .route(paths::CONSENT, post(authorize::consent))
        .route(
            paths::USERINFO,
            get(session::userinfo).post(session::userinfo),
        )
        .route(paths::END_SESSION, get(session::end_session))
        .route(
            "/.well-known/oauth-authorization-server",
            get(ops::discovery),
        )
        .route("/.well-known/openid-configuration", get(ops::discovery))
        .route(paths::JWKS, get(ops::jwks))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(ops::not_found)
        // Bodies are only read by `Form`, which applies `body_limit` itself.
        .layer(middleware::from_fn_with_state("public", track))
        .with_state(state)
}

/// The admin router.
pub fn admin_router(state: SharedState, body_limit: usize) -> Router {
    admin::router(state.clone())
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(ops::not_found)
        .layer(middleware::from_fn_with_state("admin", track))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(state)
}
