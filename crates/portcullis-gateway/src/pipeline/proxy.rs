//! Phase 6: forward to the upstream and stream the answer back.
//! Hop-by-hop headers are removed both ways (RFC 9110 §7.6.1); the whole
//! exchange is bounded by the request timeout (504); connection failures
//! are 502.

use crate::h1;
use crate::upstream::Pool;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, Response, Uri};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
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
    /// The client's request body failed while it was sent on (the client
    /// went away, or its body did not match its framing): 400. Not the
    /// upstream's fault, so not counted against its target.
    RequestBody,
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

/// The index in [`HOP_BY_HOP`] of a hop-by-hop header name. Names in a
/// `HeaderMap` are lower-case, so this is a plain string match.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    Some(match name.as_str() {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "te" => 3,
        "trailer" => 4,
        "transfer-encoding" => 5,
        "upgrade" => 6,
        "proxy-authenticate" => 7,
        _ => return None,
    })
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn remove_hop_by_hop(h: &mut HeaderMap) {
    // One pass over the names notes which hop-by-hop headers are present;
    // most messages have none, or only `Connection: keep-alive`.
    let mut present = 0u8;
    for k in h.keys() {
        if let Some(i) = hop_by_hop_index(k) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        remove_connection_named(h);
    }
    for (i, n) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            h.remove(n);
        }
    }
}

/// [`HOP_BY_HOP`] as strings.
const HOP_BY_HOP_NAMES: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
];

fn remove_connection_named(h: &mut HeaderMap) {
    // Names other than the hop-by-hop ones (removed anyway): usually none
    // (`Connection: keep-alive`), and then nothing is allocated.
    let mut named: Vec<HeaderName> = Vec::new();
    for v in h.get_all(http::header::CONNECTION) {
        let Ok(v) = v.to_str() else { continue };
        for n in v.split(',').map(str::trim) {
            if n.is_empty() || HOP_BY_HOP_NAMES.iter().any(|h| h.eq_ignore_ascii_case(n)) {
                continue;
            }
            if let Ok(n) = HeaderName::from_bytes(n.as_bytes()) {
                named.push(n);
            }
        }
    }
    for n in named {
        h.remove(n);
    }
}

/// The upstream connections of one downstream HTTP/1.1 connection.
///
/// A keep-alive client sends its requests one after another, so the
/// connection serving it keeps its own upstream connection per target and
/// drives it from its own task ([`crate::h1`]): no shared-pool checkout, no
/// task per upstream connection. Targets are still picked per request
/// (round robin, health, ejection); an unused held connection just waits
/// with its downstream connection and closes with it. HTTP/2 downstream
/// connections multiplex, so they use the shared pool.
#[derive(Default)]
pub struct Affinity {
    held: Mutex<Vec<(SocketAddr, Box<h1::Conn>)>>,
    /// The header map of the last request sent, emptied: the next request
    /// on this connection is parsed into it (no allocation).
    spare: Mutex<Option<HeaderMap>>,
}

/// A spare header map with room for more fields than this is dropped.
const SPARE_FIELDS: usize = 64;

/// At most this many upstream connections per downstream connection (one
/// per target it has been sent to).
const MAX_HELD: usize = 8;

impl Affinity {
    fn take(&self, addr: SocketAddr) -> Option<Box<h1::Conn>> {
        let mut held = self.held.lock().ok()?;
        let i = held.iter().position(|(a, _)| *a == addr)?;
        let (_, mut c) = held.swap_remove(i);
        c.usable().then_some(c)
    }

    /// A header map for the next request: the spare one if there is one.
    pub fn header_map(&self) -> HeaderMap {
        self.spare
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .unwrap_or_default()
    }

    fn keep_header_map(&self, map: HeaderMap) {
        if map.capacity() <= SPARE_FIELDS
            && let Ok(mut s) = self.spare.lock()
        {
            *s = Some(map);
        }
    }

    /// Keeps `c`, idle, for the next request to `addr`.
    pub(crate) fn put(&self, addr: SocketAddr, c: Box<h1::Conn>) {
        if let Ok(mut held) = self.held.lock()
            && held.len() < MAX_HELD
        {
            held.push((addr, c));
        }
    }
}

/// How requests reach the upstream: the shared pool, or the downstream
/// connection's own upstream connections.
#[derive(Clone, Copy)]
pub struct Via<'a> {
    /// The shared keep-alive pool.
    pub client: &'a UpstreamClient,
    /// The downstream connection's connections (HTTP/1.1 only).
    pub affinity: Option<&'a Arc<Affinity>>,
    /// Connect timeout for a new connection.
    pub connect_timeout: Duration,
}

enum SendError {
    Legacy(hyper_util::client::legacy::Error),
    H1(h1::Error),
}

impl SendError {
    /// The request body outgrew its limit while being streamed up.
    fn body_too_large(&self) -> bool {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = match self {
            SendError::Legacy(e) => Some(e),
            SendError::H1(e) => Some(e),
        };
        while let Some(c) = cause {
            if c.is::<http_body_util::LengthLimitError>() {
                return true;
            }
            cause = c.source();
        }
        false
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Legacy(e) => e.fmt(f),
            SendError::H1(e) => e.fmt(f),
        }
    }
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Box<h1::Conn>, h1::Error> {
    tokio::time::timeout(timeout, h1::Conn::connect(addr))
        .await
        .map_err(|_| h1::Error::Connect)?
}

/// Sends over the downstream connection's own upstream connection to
/// `addr`, opening one if it has none (or the held one has closed).
/// Where a request goes on the gateway's own upstream connections, and
/// what its head gets besides the request's fields.
struct Direct<'a> {
    addr: SocketAddr,
    host: &'a http::HeaderValue,
    added: &'a super::propagate::Added,
}

async fn send_direct(
    affinity: &Arc<Affinity>,
    to: Direct<'_>,
    connect_timeout: Duration,
    req: Request<Body>,
) -> Result<Response<Body>, h1::Error> {
    let addr = to.addr;
    let mut held = affinity.take(addr);
    // The held connection's buffer, kept from its last request.
    let buf = held
        .as_mut()
        .map_or_else(|| Vec::with_capacity(1024), |c| c.take_buffer());
    let (mut out, spare) = h1::Outgoing::encode(req, buf, to.host, to.added);
    affinity.keep_header_map(spare);
    if let Some(conn) = held {
        match h1::exchange(conn, &mut out).await {
            Ok((head, conn)) => return Ok(h1::respond(head, conn, affinity, addr)),
            // The upstream had closed the idle connection: a request that
            // can be sent again goes out on a new one.
            Err(e) if out.may_retry(&e) => {}
            Err(e) => return Err(e),
        }
    }
    // Boxed: connecting is rare on a keep-alive connection, and its future
    // would otherwise size every request's future.
    let conn = Box::pin(connect(addr, connect_timeout)).await?;
    let (head, conn) = h1::exchange(conn, &mut out).await?;
    Ok(h1::respond(head, conn, affinity, addr))
}

/// Forwards `req` with `path_and_query` as its target to a target of `pool`.
pub async fn forward(
    via: Via<'_>,
    pool: &Pool,
    mut req: Request<Body>,
    added: super::propagate::Added,
    path_and_query: http::uri::PathAndQuery,
    timeout: Duration,
) -> Result<Response<Body>, ProxyError> {
    let target = pool.pick().ok_or(ProxyError::NoTarget)?;
    // Plain-HTTP pools go through the downstream connection's own upstream
    // connections when it has them; TLS pools through their pooled client.
    let affinity = via.affinity.filter(|_| pool.tls.is_none());
    *req.uri_mut() = match (affinity, &pool.tls) {
        // A direct connection takes the origin form (RFC 9112 §3.2.1).
        (Some(_), _) => Uri::from(path_and_query),
        (None, tls) => Uri::builder()
            .scheme(match tls {
                Some(_) => http::uri::Scheme::HTTPS,
                None => http::uri::Scheme::HTTP,
            })
            .authority(target.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| ProxyError::Upstream)?,
    };
    *req.version_mut() = http::Version::HTTP_11;
    // Hop-by-hop headers were removed before the pipeline added its own
    // (`pipeline::run`), so that `Connection` cannot name those.
    let started = std::time::Instant::now();
    let exchange = async {
        match (affinity, &pool.tls) {
            (Some(a), _) => {
                let to = Direct {
                    addr: target.addr,
                    host: &target.host,
                    added: &added,
                };
                send_direct(a, to, via.connect_timeout, req)
                    .await
                    .map_err(SendError::H1)
            }
            (None, tls) => {
                let h = req.headers_mut();
                h.insert(http::header::HOST, target.host.clone());
                added.insert_into(h);
                let sent = match tls {
                    Some(tls) => tls.client().request(req).await,
                    None => via.client.request(req).await,
                };
                sent.map(|r| r.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed()))
                    .map_err(SendError::Legacy)
            }
        }
    };
    // The deadline from the same clock read as the latency.
    let deadline = tokio::time::Instant::from_std(started) + timeout;
    let result = tokio::time::timeout_at(deadline, exchange).await;
    pool.upstream_seconds
        .record(started.elapsed().as_secs_f64());
    match result {
        Err(_) => {
            pool.report(target, false);
            Err(ProxyError::Timeout)
        }
        Ok(Err(e)) => {
            if e.body_too_large() {
                return Err(ProxyError::BodyTooLarge);
            }
            if let SendError::H1(h1::Error::Body(e)) = &e {
                tracing::debug!(error = %e, "request body failed on its way up");
                return Err(ProxyError::RequestBody);
            }
            tracing::warn!(upstream = %pool.name, addr = %target.addr, error = %e, "upstream request failed");
            pool.report(target, false);
            Err(ProxyError::Upstream)
        }
        // An interim status as the final answer (a `101` from an upstream
        // on hyper's client, say) would switch the client's connection to
        // another protocol; it is a bad answer (h1.rs refuses it as well).
        Ok(Ok(resp)) if resp.status().is_informational() => {
            tracing::warn!(upstream = %pool.name, addr = %target.addr, status = %resp.status(), "upstream answered with an interim status");
            pool.report(target, false);
            Err(ProxyError::Upstream)
        }
        Ok(Ok(resp)) => {
            pool.report(
                target,
                !resp.status().is_server_error()
                    || resp.status() == http::StatusCode::NOT_IMPLEMENTED,
            );
            let mut resp = resp;
            remove_hop_by_hop(resp.headers_mut());
            Ok(resp)
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

        // The common upstream answer: nothing but the hop-by-hop header goes.
        let mut h = HeaderMap::new();
        h.insert("connection", "Keep-Alive".parse().unwrap());
        h.insert("content-type", "text/plain".parse().unwrap());
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));

        for (name, s) in HOP_BY_HOP.iter().zip(HOP_BY_HOP_NAMES) {
            assert_eq!(name.as_str(), s);
            assert_eq!(hop_by_hop_index(name).map(|i| HOP_BY_HOP_NAMES[i]), Some(s));
        }
    }
}
