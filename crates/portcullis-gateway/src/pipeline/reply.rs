//! The one place refusals become responses, framing checks that run before
//! anything else, and the access log.

use super::authn::AuthnError;
use super::authz::Denied;
use super::full;
use super::proxy::{Body, ProxyError};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use portcullis_core::telemetry::label;
use serde_json::json;
use std::time::Duration;

/// Why the gateway answered itself.
#[derive(Debug)]
pub enum Reject {
    /// Ambiguous framing (request smuggling): 400 and the connection closed.
    Framing(&'static str),
    /// Headers over the limit: 431.
    HeadersTooLarge,
    /// Body over the limit: 413.
    BodyTooLarge,
    /// Path refused by normalization: 400.
    BadPath,
    /// No route: 404.
    NotFound,
    /// Route exists for other methods: 405.
    MethodNotAllowed(Vec<http::Method>),
    /// 401 with challenges.
    Unauthenticated(AuthnError, Vec<&'static str>),
    /// 503: an authentication dependency is down (fail closed).
    AuthUnavailable,
    /// 503: the shared rate limiter is down (fail closed).
    RateLimitUnavailable,
    /// 403.
    Forbidden(Denied),
    /// 403: a BFF session's state-changing call without CSRF proof.
    Csrf,
    /// 429.
    RateLimited {
        /// Burst limit.
        limit: u32,
        /// Retry after.
        retry_after: Duration,
    },
    /// Upstream failures.
    Proxy(ProxyError),
    /// Something of ours: 500.
    Internal,
}

fn json_body(status: StatusCode, error: &str, description: &str) -> Response<Body> {
    let body = json!({ "error": error, "error_description": description }).to_string();
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Sets `RateLimit-*` (and `Retry-After` when limited).
pub fn ratelimit_headers(
    h: &mut HeaderMap,
    limit: u32,
    remaining: u32,
    retry_after: Option<Duration>,
) {
    h.insert("ratelimit-limit", HeaderValue::from(limit));
    h.insert("ratelimit-remaining", HeaderValue::from(remaining));
    let reset = retry_after.map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
    h.insert("ratelimit-reset", HeaderValue::from(reset));
    if retry_after.is_some() {
        h.insert(header::RETRY_AFTER, HeaderValue::from(reset.max(1)));
    }
}

impl Reject {
    /// The response.
    pub fn into_response(self) -> Response<Body> {
        match self {
            Reject::Framing(why) => {
                let mut r = json_body(StatusCode::BAD_REQUEST, "invalid_request", why);
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                r
            }
            Reject::HeadersTooLarge => json_body(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "invalid_request",
                "request headers too large",
            ),
            Reject::BodyTooLarge | Reject::Proxy(ProxyError::BodyTooLarge) => json_body(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                "request body too large",
            ),
            Reject::BadPath => json_body(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "request path is malformed or ambiguous",
            ),
            Reject::NotFound => json_body(StatusCode::NOT_FOUND, "not_found", "no route"),
            Reject::MethodNotAllowed(allowed) => {
                let mut r = json_body(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "method not allowed on this route",
                );
                let list: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
                if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
                    r.headers_mut().insert(header::ALLOW, v);
                }
                r
            }
            Reject::Unauthenticated(e, challenges) => {
                let (desc, scheme) = match &e {
                    AuthnError::Missing => ("credentials are required".to_owned(), None),
                    AuthnError::CertificateRequired => (
                        "a client certificate is required (mutual TLS)".to_owned(),
                        None,
                    ),
                    AuthnError::Invalid {
                        scheme,
                        description,
                    } => (description.clone(), Some(*scheme)),
                    AuthnError::Unavailable | AuthnError::Csrf => ("unavailable".to_owned(), None),
                };
                let error = match (&e, scheme) {
                    (AuthnError::CertificateRequired, _) => "client_certificate_required",
                    (_, Some(super::authn::MTLS)) => "invalid_client_certificate",
                    (_, Some(_)) => "invalid_token",
                    (_, None) => "unauthorized",
                };
                let mut r = json_body(StatusCode::UNAUTHORIZED, error, &desc);
                for c in challenges {
                    // RFC 6750 §3: an invalid bearer token names the error.
                    let v = if scheme == Some("Bearer") && c.starts_with("Bearer") {
                        let d: String = desc
                            .chars()
                            .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
                            .collect();
                        format!("{c}, error=\"invalid_token\", error_description=\"{d}\"")
                    } else {
                        c.to_owned()
                    };
                    if let Ok(v) = HeaderValue::from_str(&v) {
                        r.headers_mut().append(header::WWW_AUTHENTICATE, v);
                    }
                }
                r
            }
            Reject::RateLimitUnavailable => {
                let mut r = json_body(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "rate limiting is unavailable",
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
            Reject::AuthUnavailable => {
                let mut r = json_body(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "authentication is unavailable",
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                r
            }
            Reject::Csrf => crate::bff::csrf_refused(),
            Reject::Forbidden(Denied::Policy(action)) => json_body(
                StatusCode::FORBIDDEN,
                "access_denied",
                &format!("the policy does not allow {action} on this route"),
            ),
            Reject::Forbidden(d) => {
                let (what, list) = match &d {
                    Denied::Scopes(s) => ("scope", s.clone()),
                    Denied::Roles(s) | Denied::Policy(s) => ("role", s.clone()),
                };
                let mut r = json_body(
                    StatusCode::FORBIDDEN,
                    "insufficient_scope",
                    &format!("requires {what} {list}"),
                );
                let c = match d {
                    Denied::Scopes(s) => format!(
                        "Bearer realm=\"portcullis\", error=\"insufficient_scope\", scope=\"{s}\""
                    ),
                    Denied::Roles(_) | Denied::Policy(_) => {
                        "Bearer realm=\"portcullis\", error=\"insufficient_scope\"".to_owned()
                    }
                };
                if let Ok(v) = HeaderValue::from_str(&c) {
                    r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
                r
            }
            Reject::RateLimited { limit, retry_after } => {
                let mut r = json_body(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "rate limit exceeded",
                );
                ratelimit_headers(r.headers_mut(), limit, 0, Some(retry_after));
                r
            }
            Reject::Proxy(ProxyError::Timeout) => json_body(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "upstream did not answer in time",
            ),
            Reject::Proxy(ProxyError::NoTarget) => json_body(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "no healthy upstream",
            ),
            Reject::Proxy(ProxyError::RequestBody) => json_body(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "request body ended early or was malformed",
            ),
            Reject::Proxy(ProxyError::Upstream) => json_body(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "upstream unavailable",
            ),
            Reject::Internal => json_body(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal error",
            ),
        }
    }
}

/// Refuses ambiguous message framing and oversized heads before routing.
/// hyper already refuses conflicting `Content-Length`s and a
/// `Transfer-Encoding` that does not end in `chunked`; it accepts both
/// `Transfer-Encoding` and `Content-Length` (RFC 9112 §6.1 lets a server
/// choose), which a proxy must not forward: some upstream may pick the other.
pub fn check_framing(
    parts: &http::request::Parts,
    max_header_bytes: usize,
    max_body: usize,
) -> Result<(), Reject> {
    let h = &parts.headers;
    let te = h.contains_key(header::TRANSFER_ENCODING);
    let cl: Vec<&HeaderValue> = h.get_all(header::CONTENT_LENGTH).iter().collect();
    if te && !cl.is_empty() {
        return Err(Reject::Framing("both Transfer-Encoding and Content-Length"));
    }
    if cl.len() > 1 {
        return Err(Reject::Framing("repeated Content-Length"));
    }
    if te {
        let chunked_only = h.get_all(header::TRANSFER_ENCODING).iter().all(|v| {
            v.to_str()
                .is_ok_and(|s| s.trim().eq_ignore_ascii_case("chunked"))
        });
        if !chunked_only || h.get_all(header::TRANSFER_ENCODING).iter().count() != 1 {
            return Err(Reject::Framing("unsupported Transfer-Encoding"));
        }
    }
    let head: usize = h.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if head > max_header_bytes {
        return Err(Reject::HeadersTooLarge);
    }
    if let Some(len) = cl
        .first()
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok())
        && len > max_body as u64
    {
        return Err(Reject::BodyTooLarge);
    }
    Ok(())
}

/// One JSON line per request, on target `portcullis::access`. No secrets:
/// the normalized path without query, never headers or credentials.
pub struct AccessLog {
    method: http::Method,
    peer: std::net::SocketAddr,
    /// When the request began (only taken when the log is on).
    started: Option<std::time::Instant>,
    /// Whether the access log is on: the fields below are only filled then.
    pub enabled: bool,
    /// Normalized path.
    pub path: String,
    /// Route name (an interned metrics label).
    pub route: &'static str,
    /// Authenticated subject.
    pub subject: String,
    /// Authentication method.
    pub auth: &'static str,
    /// Upstream pool.
    pub upstream: String,
}

impl AccessLog {
    /// A log record for a new request.
    pub fn new(method: &http::Method, peer: std::net::SocketAddr) -> Self {
        let enabled = tracing::enabled!(target: "portcullis::access", tracing::Level::INFO);
        Self {
            method: method.clone(),
            peer,
            started: enabled.then(std::time::Instant::now),
            enabled,
            path: String::new(),
            route: "unmatched",
            subject: String::new(),
            auth: "none",
            upstream: String::new(),
        }
    }

    /// Emits the record and the request metrics.
    pub fn finish(&mut self, status: StatusCode) {
        requests_counter(self.route, status, self.auth).increment(1);
        if !self.enabled {
            return;
        }
        super::access_log::emit(&super::access_log::Record {
            method: self.method.as_str(),
            path: &self.path,
            route: self.route,
            status: status.as_u16(),
            auth: self.auth,
            subject: &self.subject,
            upstream: &self.upstream,
            client: self.peer.ip(),
            ms: self
                .started
                .map_or(0.0, |t| t.elapsed().as_secs_f64() * 1000.0),
        });
    }
}

/// The `portcullis_gateway_requests_total` handle of a (route, status,
/// auth) combination, looked up in the metrics registry (which hashes the
/// three labels) once per combination. The labels are `'static` (interned
/// or literals), so their addresses are the key.
fn requests_counter(
    route: &'static str,
    status: StatusCode,
    auth: &'static str,
) -> metrics::Counter {
    use std::sync::{OnceLock, RwLock};
    type Key = (usize, u16, usize);
    // Keys are addresses and a status: foldhash, not SipHash.
    static CACHE: OnceLock<RwLock<foldhash::HashMap<Key, metrics::Counter>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (
        route.as_ptr() as usize,
        status.as_u16(),
        auth.as_ptr() as usize,
    );
    if let Some(c) = cache.read().ok().and_then(|m| m.get(&key).cloned()) {
        return c;
    }
    let c = metrics::counter!("portcullis_gateway_requests_total", "route" => route, "status" => label(status.as_str()), "auth" => auth);
    if let Ok(mut m) = cache.write()
        && m.len() < 4096
    {
        m.insert(key, c.clone());
    }
    c
}
