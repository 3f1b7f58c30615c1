//! Phase 6: forward to the upstream and stream the answer back.
//! Hop-by-hop headers are removed both ways (RFC 9110 §7.6.1); the whole
//! exchange is bounded by the request timeout (504); connection failures
//! are 502.

use crate::upstream::Pool;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, Response, Uri};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use std::time::Duration;

/// Body type used on both sides.
pub type Body = BoxBody<Bytes, BoxError>;
/// Boxed body error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The upstream client (keep-alive pools per target).
pub type UpstreamClient = Client<HttpConnector, Body>;

/// Why forwarding failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// No healthy target.
    NoTarget,
    /// Connect or protocol failure: 502.
    Upstream,
    /// Timeout: 504.
    Timeout,
    /// The request body exceeded the limit while streaming: 413.
    BodyTooLarge,
}

/// Builds the upstream client.
pub fn client(connect_timeout: Duration, idle: Duration) -> UpstreamClient {
    let mut c = HttpConnector::new();
    c.set_connect_timeout(Some(connect_timeout));
    c.set_nodelay(true);
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(idle)
        .pool_max_idle_per_host(256)
        .timer(hyper_util::rt::TokioTimer::new())
        .build(c)
}

static HOP_BY_HOP: [HeaderName; 8] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::PROXY_AUTHENTICATE,
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn remove_hop_by_hop(h: &mut HeaderMap) {
    // One pass of cheap name comparisons; most messages have none of these.
    if !h.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    if h.contains_key(http::header::CONNECTION) {
        remove_connection_named(h);
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
}

fn remove_connection_named(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
}

/// Forwards `req` (path-and-query already final) to a target of `pool`.
pub async fn forward(
    client: &UpstreamClient,
    pool: &Pool,
    mut req: Request<Body>,
    path_and_query: &str,
    timeout: Duration,
) -> Result<Response<Body>, ProxyError> {
    let target = pool.pick().ok_or(ProxyError::NoTarget)?;
    let scheme = match pool.tls {
        Some(_) => http::uri::Scheme::HTTPS,
        None => http::uri::Scheme::HTTP,
    };
    let uri = Uri::builder()
        .scheme(scheme)
        .authority(target.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| ProxyError::Upstream)?;
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_11;
    remove_hop_by_hop(req.headers_mut());
    req.headers_mut()
        .insert(http::header::HOST, target.host.clone());
    let started = std::time::Instant::now();
    let exchange = async {
        match &pool.tls {
            Some(tls) => tls.client().request(req).await,
            None => client.request(req).await,
        }
    };
    let result = tokio::time::timeout(timeout, exchange).await;
    pool.upstream_seconds
        .record(started.elapsed().as_secs_f64());
    match result {
        Err(_) => {
            pool.report(target, false);
            Err(ProxyError::Timeout)
        }
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e).is_some_and(|s| {
                s.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                    || s.to_string().contains("length limit")
            });
            if too_large {
                return Err(ProxyError::BodyTooLarge);
            }
            tracing::warn!(upstream = %pool.name, target = %target.addr, error = %e, "upstream request failed");
            pool.report(target, false);
            Err(ProxyError::Upstream)
        }
        Ok(Ok(resp)) => {
            pool.report(
                target,
                !resp.status().is_server_error()
                    || resp.status() == http::StatusCode::NOT_IMPLEMENTED,
            );
            let (mut parts, body) = resp.into_parts();
            remove_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(
                parts,
                body.map_err(|e| Box::new(e) as BoxError).boxed(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("accept", "*/*".parse().unwrap());
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("accept"));

        let mut h = HeaderMap::new();
        h.insert("accept", "*/*".parse().unwrap());
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
    }
}
