//! The request pipeline, one module per phase, in the order of [`handle`]:
//! normalize & match route → authenticate → authorize → rate-limit →
//! propagate identity → proxy → log.

pub mod access_log;
pub mod authn;
pub mod authz;
pub mod propagate;
pub mod proxy;
pub mod ratelimit;
pub mod route;

mod reply;

use crate::runtime::{CompiledRoute, Runtime};
use authn::{AuthnError, Identity};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use proxy::Body;
use ratelimit::Decision;
pub use reply::Reject;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The client end of a connection.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// The client's address (or the last proxy's).
    pub addr: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// Handles one request end to end. Never panics on input; every refusal is
/// a [`Reject`] turned into a response in one place.
pub async fn handle<B>(
    rt: Arc<Runtime>,
    req: Request<B>,
    peer: Peer,
    affinity: Option<&Arc<proxy::Affinity>>,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<proxy::BoxError>,
{
    let method = req.method().clone();
    let (mut log, result) = {
        let mut log = reply::AccessLog::new(&method, peer.addr);
        let r = run(&rt, req, peer, affinity, &mut log).await;
        (log, r)
    };
    let resp = match result {
        Ok(r) => r,
        Err(reject) => reject.into_response(),
    };
    log.finish(resp.status());
    resp
}

/// Unix time now.
pub(crate) fn now() -> u64 {
    portcullis_core::Clock::now(&portcullis_core::SystemClock)
}

async fn run<B>(
    rt: &Runtime,
    req: Request<B>,
    peer: Peer,
    affinity: Option<&Arc<proxy::Affinity>>,
    log: &mut reply::AccessLog,
) -> Result<Response<Body>, Reject>
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<proxy::BoxError>,
{
    let (mut parts, body) = req.into_parts();
    reply::check_framing(&parts, rt.config.max_header_bytes, rt.config.max_body_bytes)?;

    // 1. Normalize and match.
    let path = route::normalize(parts.uri.path()).map_err(|_| Reject::BadPath)?;
    if log.enabled {
        log.path = path.to_string();
    }
    if let Some(bff) = &rt.bff
        && bff.owns(&path)
    {
        log.route = "bff";
        // Boxed: the BFF's endpoints (code exchange, refresh) have large
        // futures that the proxied path should not carry.
        return Ok(Box::pin(bff.endpoint(&parts, &path)).await);
    }
    // The host routed on, and forwarded as X-Forwarded-Host: the authority
    // of an absolute-form target, which overrides the Host header (RFC 9112
    // §3.2.2), or of an HTTP/2 request (`:authority`, RFC 9113 §8.3.1);
    // else the Host header (a reference-counted copy).
    let host_header = match parts.uri.authority() {
        Some(a) if a.as_str().contains('@') => {
            // RFC 9110 §4.2.4: userinfo in an http(s) URI is an error.
            return Err(Reject::Framing("userinfo in the request target"));
        }
        Some(a) => http::HeaderValue::from_str(a.as_str()).ok(),
        None => parts
            .headers
            .get(http::header::HOST)
            .filter(|h| h.to_str().is_ok())
            .cloned(),
    };
    let host = host_header.as_ref().and_then(|h| h.to_str().ok());
    let r = match rt.routes.find(host, &path, &parts.method) {
        route::Match::Found(r) => r,
        route::Match::MethodNotAllowed(allowed) => return Err(Reject::MethodNotAllowed(allowed)),
        route::Match::NotFound => return Err(Reject::NotFound),
    };
    let c = rt.compiled.get(&r.name).ok_or(Reject::NotFound)?;
    log.route = c.label;

    // 2. Authenticate. One clock read serves the credential's checks and
    // the internal token.
    let t = now();
    let who = authenticate(c, &parts, t).await?;
    if log.enabled {
        log.subject = who.subject.clone();
    }
    log.auth = who.method;

    // 3. Authorize: scopes and roles, then the route's policy.
    authz::authorize(r, &who).map_err(Reject::Forbidden)?;
    if let Some(action) = &r.policy {
        let store = rt.policies.as_deref().ok_or(Reject::Internal)?;
        authz::decide(store, action, r, &who, &parts.method, &path).map_err(Reject::Forbidden)?;
    }

    // 4. Rate-limit.
    let client_ip = client_ip(&parts, peer.addr, &rt.config.trusted_proxies);
    let limit = rate_limit(c, &who, client_ip).await?;

    // 5. Propagate identity.
    let token = match (&who.bearer, r.forward_credentials) {
        // A BFF session forwards the person's access token.
        (Some(bearer), _) => Some(bearer.clone()),
        (None, true) => None,
        (None, false) => Some(
            rt.minter
                .token(&who, &c.pool.name, t)
                .ok_or(Reject::Internal)?,
        ),
    };
    if c.session {
        // The browser's cookies are for the gateway, never for upstreams.
        parts.headers.remove(http::header::COOKIE);
    }
    // Hop-by-hop headers go first, those `Connection` names included: a
    // client could otherwise name the headers added next (the internal
    // token, `X-Forwarded-For`) and have them removed on the way up.
    proxy::remove_hop_by_hop(&mut parts.headers);
    let https = forwarded_https(&parts, peer, &rt.config.trusted_proxies);
    let added = propagate::rewrite(
        &mut parts.headers,
        &rt.config.identity_headers,
        propagate::Forwarded {
            client_ip,
            host: host_header,
            https,
        },
        token,
    );
    if let Some(header) = api_key_header(c) {
        parts.headers.remove(header);
    }
    // A borrowed path is the request's own, already in normal form.
    let as_sent = matches!(path, std::borrow::Cow::Borrowed(_));
    let path_and_query =
        forwarded_target(&parts.uri, &path, as_sent, r, c.api_key_query.as_deref())
            .map_err(Reject::Proxy)?;

    // 6. Proxy.
    // An empty body is boxed without an allocation (a zero-sized one).
    let body = if body.is_end_stream() {
        Body::default()
    } else {
        http_body_util::Limited::new(body, rt.config.max_body_bytes)
            .map_err(|e| e as proxy::BoxError)
            .boxed()
    };
    let req = Request::from_parts(parts, body);
    if log.enabled {
        log.upstream = c.pool.name.to_string();
    }
    let via = proxy::Via {
        client: &rt.client,
        affinity,
        connect_timeout: rt.config.connect_timeout,
    };
    let mut resp = proxy::forward(
        via,
        &c.pool,
        req,
        added,
        path_and_query,
        rt.config.request_timeout,
    )
    .await
    .map_err(Reject::Proxy)?;
    if let Some(Decision::Allowed { limit, remaining }) = limit {
        reply::ratelimit_headers(resp.headers_mut(), limit, remaining, None);
    }
    Ok(resp)
}

/// The path and query sent upstream: the normalized path (without the
/// route's prefix with `strip_prefix`) and the query without the API-key
/// parameter. When that is the request's own target (`as_sent`: the path
/// came in normal form; nothing stripped), the request's target is reused
/// as it is.
fn forwarded_target(
    uri: &http::Uri,
    path: &str,
    as_sent: bool,
    r: &crate::config::Route,
    api_key_query: Option<&str>,
) -> Result<http::uri::PathAndQuery, proxy::ProxyError> {
    let strip = r.strip_prefix && !r.prefix.is_empty();
    if let (true, false, None, Some(pq)) = (as_sent, strip, api_key_query, uri.path_and_query()) {
        return Ok(pq.clone());
    }
    let mut forwarded_path = if strip {
        let rest = route::after_prefix(path, &r.prefix);
        if rest.starts_with('/') {
            rest.to_owned()
        } else {
            format!("/{rest}")
        }
    } else {
        path.to_string()
    };
    if let Some(q) = propagate::strip_query_param(uri.query(), api_key_query) {
        forwarded_path.push('?');
        forwarded_path.push_str(&q);
    }
    http::uri::PathAndQuery::try_from(forwarded_path).map_err(|_| proxy::ProxyError::Upstream)
}

/// The API-key header of the route's methods (never forwarded).
fn api_key_header(c: &CompiledRoute) -> Option<&str> {
    c.methods.iter().find_map(|m| match &**m {
        authn::Method::ApiKey { header, .. } => Some(header.as_str()),
        _ => None,
    })
}

async fn authenticate(
    c: &CompiledRoute,
    parts: &http::request::Parts,
    t: u64,
) -> Result<Identity, Reject> {
    for m in &c.methods {
        match m.authenticate(parts, t).await {
            Ok(Some(who)) => return Ok(who),
            Ok(None) => continue,
            Err(AuthnError::Unavailable) => return Err(Reject::AuthUnavailable),
            Err(AuthnError::Csrf) => return Err(Reject::Csrf),
            Err(e) => return Err(Reject::Unauthenticated(e, challenges(c))),
        }
    }
    let mtls_only = c
        .methods
        .iter()
        .all(|m| matches!(**m, authn::Method::Mtls { .. }));
    let why = if mtls_only {
        AuthnError::CertificateRequired
    } else {
        AuthnError::Missing
    };
    Err(Reject::Unauthenticated(why, challenges(c)))
}

fn challenges(c: &CompiledRoute) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = c.methods.iter().filter_map(|m| m.challenge()).collect();
    v.dedup();
    v
}

async fn rate_limit(
    c: &CompiledRoute,
    who: &Identity,
    ip: IpAddr,
) -> Result<Option<Decision>, Reject> {
    let (Some(limiter), Some((_, _, key))) = (&c.limiter, c.route.rate_limit) else {
        return Ok(None);
    };
    let k = match key {
        crate::config::LimitKey::Consumer => who.subject.clone(),
        crate::config::LimitKey::ClientId => {
            who.client_id.clone().unwrap_or_else(|| who.subject.clone())
        }
        crate::config::LimitKey::ClientIp => ip.to_string(),
    };
    match limiter.check(&k).await {
        d @ Decision::Allowed { .. } => Ok(Some(d)),
        Decision::Unavailable => Err(Reject::RateLimitUnavailable),
        Decision::Limited { limit, retry_after } => {
            metrics::counter!("portcullis_gateway_rate_limited_total", "route" => c.route.name.clone()).increment(1);
            Err(Reject::RateLimited { limit, retry_after })
        }
    }
}

/// The client IP: the peer, or — only when the peer is a trusted proxy —
/// the last address in its `X-Forwarded-For` that is not itself trusted.
fn client_ip(
    parts: &http::request::Parts,
    peer: SocketAddr,
    trusted: &std::collections::HashSet<IpAddr>,
) -> IpAddr {
    if !trusted.contains(&peer.ip()) {
        return peer.ip();
    }
    let chain: Vec<IpAddr> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    chain
        .into_iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer.ip())
}

/// Whether the client reached the gateway over TLS: the connection's own
/// scheme, or — only when the peer is a trusted proxy — the last value of
/// the `X-Forwarded-Proto` it sent (`http` or `https`; anything else is
/// ignored). The last: a trusted proxy that appends to the field rather
/// than replacing it wrote that one, while the values before it may be the
/// client's own.
fn forwarded_https(
    parts: &http::request::Parts,
    peer: Peer,
    trusted: &std::collections::HashSet<IpAddr>,
) -> bool {
    if !trusted.contains(&peer.addr.ip()) {
        return peer.tls;
    }
    let last = parts
        .headers
        .get_all("x-forwarded-proto")
        .iter()
        .next_back()
        .and_then(|v| v.as_bytes().rsplit(|&b| b == b',').next())
        .map(<[u8]>::trim_ascii);
    match last {
        Some(p) if p.eq_ignore_ascii_case(b"https") => true,
        Some(p) if p.eq_ignore_ascii_case(b"http") => false,
        _ => peer.tls,
    }
}

/// A small full body.
pub fn full(b: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(b.into())
        .map_err(|never| match never {})
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forwarded_scheme_is_the_connection_s_unless_a_trusted_proxy_says() {
        let proxy: IpAddr = "10.0.0.9".parse().unwrap();
        let trusted = std::collections::HashSet::from([proxy]);
        let parts = |proto: Option<&str>| {
            let mut b = Request::builder().uri("/x");
            if let Some(p) = proto {
                b = b.header("x-forwarded-proto", p);
            }
            b.body(()).unwrap().into_parts().0
        };
        let peer = |ip: IpAddr, tls: bool| Peer {
            addr: SocketAddr::new(ip, 4000),
            tls,
        };
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        let cases = [
            // (from, tls, X-Forwarded-Proto, https upstream)
            (stranger, false, None, false),
            (stranger, true, None, true),
            (stranger, false, Some("https"), false),
            (stranger, true, Some("http"), true),
            (proxy, false, Some("https"), true),
            (proxy, false, Some("HTTPS, http"), false),
            (proxy, false, Some("http, HTTPS"), true),
            (proxy, true, Some("http"), false),
            (proxy, true, None, true),
            (proxy, false, Some("gopher"), false),
            (proxy, true, Some(""), true),
        ];
        for (ip, tls, proto, want) in cases {
            assert_eq!(
                forwarded_https(&parts(proto), peer(ip, tls), &trusted),
                want,
                "{ip} tls={tls} {proto:?}"
            );
        }
    }
}
