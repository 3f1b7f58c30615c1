//! Framework integration: a tower [`Layer`] that authenticates requests, an
//! axum extractor for the [`Principal`], per-route scope and role guards,
//! and the one place auth failures become responses (RFC 6750 §3).
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use portcullis_service::{Authenticated, BearerAuth, RequireScopes, Validator, ValidatorConfig};
//!
//! # async fn app() {
//! let validator = Validator::start(ValidatorConfig::new("https://iam.example", "inventory-api")).await;
//! let app: Router = Router::new()
//!     .route("/items", get(|Authenticated(p): Authenticated| async move { p.subject.clone() }))
//!     .route_layer(RequireScopes::new(["inventory:read"]))
//!     .layer(BearerAuth::new(validator, "inventory"));
//! # }
//! ```

use crate::principal::Principal;
use crate::validator::{AuthError, Validator};
use axum::extract::FromRequestParts;
use axum::http::{HeaderValue, Request, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use portcullis_ca::PeerCertificate;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// No credentials: 401 with a bare `Bearer realm` challenge.
    Missing,
    /// Malformed `Authorization` (two headers, wrong syntax): 400 `invalid_request`.
    BadRequest(&'static str),
    /// Invalid, expired or revoked token: 401 `invalid_token`.
    InvalidToken(String),
    /// Token lacks scopes: 403 `insufficient_scope` with the needed `scope`.
    InsufficientScope(String),
    /// Token lacks roles: 403 `insufficient_scope`.
    InsufficientRole(String),
    /// The issuer's keys are unavailable: 503.
    Unavailable,
}

fn quoted(s: &str) -> String {
    // Header parameter values never carry quotes, backslashes or controls.
    s.chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect()
}

impl Rejection {
    /// The response for `realm`.
    pub fn into_response_for(self, realm: &str) -> Response {
        let realm = quoted(realm);
        let (status, challenge, error, description) = match &self {
            Rejection::Missing => (
                StatusCode::UNAUTHORIZED,
                format!("Bearer realm=\"{realm}\""),
                "unauthorized",
                "a bearer token is required".to_owned(),
            ),
            Rejection::BadRequest(d) => (
                StatusCode::BAD_REQUEST,
                format!(
                    "Bearer realm=\"{realm}\", error=\"invalid_request\", error_description=\"{d}\""
                ),
                "invalid_request",
                (*d).to_owned(),
            ),
            Rejection::InvalidToken(d) => (
                StatusCode::UNAUTHORIZED,
                format!(
                    "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{}\"",
                    quoted(d)
                ),
                "invalid_token",
                d.clone(),
            ),
            Rejection::InsufficientScope(scope) => (
                StatusCode::FORBIDDEN,
                format!(
                    "Bearer realm=\"{realm}\", error=\"insufficient_scope\", scope=\"{}\"",
                    quoted(scope)
                ),
                "insufficient_scope",
                format!("requires scope {scope}"),
            ),
            Rejection::InsufficientRole(role) => (
                StatusCode::FORBIDDEN,
                format!(
                    "Bearer realm=\"{realm}\", error=\"insufficient_scope\", error_description=\"requires role {}\"",
                    quoted(role)
                ),
                "insufficient_scope",
                format!("requires role {role}"),
            ),
            Rejection::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                String::new(),
                "temporarily_unavailable",
                "token issuer unavailable".to_owned(),
            ),
        };
        let body =
            axum::Json(serde_json::json!({ "error": error, "error_description": description }));
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&challenge)
            && !challenge.is_empty()
        {
            h.insert(header::WWW_AUTHENTICATE, v);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

impl From<AuthError> for Rejection {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Invalid(e) => Rejection::InvalidToken(e.to_string()),
            AuthError::Revoked => Rejection::InvalidToken("token has been revoked".into()),
            e @ AuthError::Binding(_) => Rejection::InvalidToken(e.to_string()),
            AuthError::Unavailable(why) => {
                tracing::error!(error = %why, "rejecting request: issuer keys unavailable");
                Rejection::Unavailable
            }
        }
    }
}

/// The bearer token of a request (RFC 6750 §2.1), or why there is none.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Result<&str, Rejection> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(v) = values.next() else {
        return Err(Rejection::Missing);
    };
    if values.next().is_some() {
        return Err(Rejection::BadRequest("more than one Authorization header"));
    }
    let v = v
        .to_str()
        .map_err(|_| Rejection::InvalidToken("malformed Authorization header".into()))?;
    let Some((scheme, token)) = v.split_once(' ') else {
        return Err(if v.eq_ignore_ascii_case("bearer") {
            Rejection::InvalidToken("empty bearer token".into())
        } else {
            Rejection::Missing
        });
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme is "no bearer credentials" for this resource.
        return Err(Rejection::Missing);
    }
    let token = token.trim_start_matches(' ');
    // b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
    let body = token.trim_end_matches('=');
    let ok = !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    if !ok {
        return Err(Rejection::InvalidToken("malformed bearer token".into()));
    }
    Ok(token)
}

/// Tower layer: validates the bearer token of every request and puts the
/// [`Principal`] into the request extensions, or answers 401/400/503.
///
/// A certificate-bound token (RFC 8705 §3) is accepted only when the
/// request extensions hold the connection's verified client certificate
/// (a [`PeerCertificate`], as [`crate::serve_tls`] puts there) with the
/// token's thumbprint; otherwise 401 `invalid_token`.
#[derive(Clone)]
pub struct BearerAuth {
    validator: Arc<Validator>,
    realm: Arc<str>,
}

impl BearerAuth {
    /// A layer using `validator`, naming `realm` in challenges.
    pub fn new(validator: Arc<Validator>, realm: &str) -> Self {
        Self {
            validator,
            realm: Arc::from(realm),
        }
    }
}

impl<S> Layer<S> for BearerAuth {
    type Service = BearerAuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BearerAuthService {
            inner,
            validator: self.validator.clone(),
            realm: self.realm.clone(),
        }
    }
}

/// The service [`BearerAuth`] produces.
#[derive(Clone)]
pub struct BearerAuthService<S> {
    inner: S,
    validator: Arc<Validator>,
    realm: Arc<str>,
}

/// The realm, carried to guards and extractors.
#[derive(Clone)]
struct Realm(Arc<str>);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B> Service<Request<B>> for BearerAuthService<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The clone is the not-yet-ready one; keep the ready service for this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (validator, realm) = (self.validator.clone(), self.realm.clone());
        Box::pin(async move {
            let token = match bearer_token(req.headers()) {
                Ok(t) => t.to_owned(),
                Err(r) => return Ok(r.into_response_for(&realm)),
            };
            // The TLS accept loop ([`crate::serve_tls`]) puts the verified
            // client certificate into the extensions; bound tokens need it.
            let peer = req.extensions().get::<PeerCertificate>();
            match validator.validate_bound(&token, peer).await {
                Ok(p) => {
                    req.extensions_mut().insert(p);
                    req.extensions_mut().insert(Realm(realm));
                    inner.call(req).await
                }
                Err(e) => Ok(Rejection::from(e).into_response_for(&realm)),
            }
        })
    }
}

/// Axum extractor for the caller. Requires [`BearerAuth`] on the route.
pub struct Authenticated(pub Arc<Principal>);

/// Rejection of [`Authenticated`]: the layer was not applied, or no principal.
pub struct MissingPrincipal;

impl IntoResponse for MissingPrincipal {
    fn into_response(self) -> Response {
        Rejection::Missing.into_response_for("api")
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = MissingPrincipal;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, MissingPrincipal> {
        parts
            .extensions
            .get::<Arc<Principal>>()
            .cloned()
            .map(Authenticated)
            .ok_or(MissingPrincipal)
    }
}

#[derive(Clone, Debug)]
enum Need {
    Scopes(Arc<[String]>),
    Roles(Arc<[String]>),
}

/// Guard layer: the principal must hold every scope (403 `insufficient_scope`
/// naming them otherwise). Apply inside [`BearerAuth`], e.g. with
/// `route_layer`.
#[derive(Clone, Debug)]
pub struct RequireScopes(Need);

impl RequireScopes {
    /// Requires all of `scopes`.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(scopes: I) -> Self {
        Self(Need::Scopes(scopes.into_iter().map(Into::into).collect()))
    }
}

/// Guard layer: the principal must hold every role.
#[derive(Clone, Debug)]
pub struct RequireRoles(Need);

impl RequireRoles {
    /// Requires all of `roles`.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(roles: I) -> Self {
        Self(Need::Roles(roles.into_iter().map(Into::into).collect()))
    }
}

impl<S> Layer<S> for RequireScopes {
    type Service = Guard<S>;
    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            need: self.0.clone(),
        }
    }
}

impl<S> Layer<S> for RequireRoles {
    type Service = Guard<S>;
    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            need: self.0.clone(),
        }
    }
}

/// The service the guard layers produce.
#[derive(Clone, Debug)]
pub struct Guard<S> {
    inner: S,
    need: Need,
}

impl Need {
    fn check(&self, p: &Principal) -> Result<(), Rejection> {
        match self {
            Need::Scopes(s) if !s.iter().all(|s| p.has_scope(s)) => {
                Err(Rejection::InsufficientScope(s.join(" ")))
            }
            Need::Roles(r) if !r.iter().all(|r| p.has_role(r)) => {
                Err(Rejection::InsufficientRole(r.join(" ")))
            }
            _ => Ok(()),
        }
    }
}

impl<S, B> Service<Request<B>> for Guard<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let realm = req
            .extensions()
            .get::<Realm>()
            .map_or_else(|| Arc::from("api"), |r| r.0.clone());
        let verdict = match req.extensions().get::<Arc<Principal>>() {
            None => Err(Rejection::Missing),
            Some(p) => self.need.check(p),
        };
        Box::pin(async move {
            match verdict {
                Ok(()) => inner.call(req).await,
                Err(r) => Ok(r.into_response_for(&realm)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn h(v: &[&str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for x in v {
            m.append(header::AUTHORIZATION, HeaderValue::from_str(x).unwrap());
        }
        m
    }

    #[test]
    fn bearer_syntax() {
        assert_eq!(
            bearer_token(&h(&["Bearer abc.def-_~+/=="])),
            Ok("abc.def-_~+/==")
        );
        assert_eq!(bearer_token(&h(&["bearer abc"])), Ok("abc"));
        assert_eq!(bearer_token(&h(&[])), Err(Rejection::Missing));
        assert_eq!(bearer_token(&h(&["Basic abc"])), Err(Rejection::Missing));
        assert!(matches!(
            bearer_token(&h(&["Bearer a", "Bearer b"])),
            Err(Rejection::BadRequest(_))
        ));
        assert!(matches!(
            bearer_token(&h(&["Bearer a b"])),
            Err(Rejection::InvalidToken(_))
        ));
        assert!(matches!(
            bearer_token(&h(&["Bearer a\"b"])),
            Err(Rejection::InvalidToken(_))
        ));
        assert!(matches!(
            bearer_token(&h(&["Bearer"])),
            Err(Rejection::InvalidToken(_))
        ));
    }

    #[test]
    fn challenges_follow_rfc6750() {
        let r = Rejection::InsufficientScope("a b".into()).into_response_for("inv\"entory");
        assert_eq!(r.status(), 403);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"inventory\", error=\"insufficient_scope\", scope=\"a b\""
        );
        let r = Rejection::Missing.into_response_for("x");
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer realm=\"x\"");
    }
}
