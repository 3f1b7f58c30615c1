//! The gateway's own HTTP/1.1 upstream connections (`h1`) against an
//! upstream that answers with scripted bytes, over real sockets: every way
//! an answer can be framed, the malformed and ambiguous ones, interim
//! answers, connection reuse, and requests with bodies.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use portcullis_gateway::config::{RawConfig, RawRoute, RawUpstream};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the scripted upstream does with one request.
struct Answer {
    /// Written one after another, 20 ms apart, so that the gateway reads
    /// the answer in several pieces.
    pieces: Vec<Vec<u8>>,
    /// Close the connection after the pieces.
    close: bool,
}

fn answer(pieces: &[&[u8]]) -> Answer {
    Answer {
        pieces: pieces.iter().map(|p| p.to_vec()).collect(),
        close: false,
    }
}

fn ok(body: &str) -> Answer {
    answer(&[format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .as_bytes()])
}

/// The answer to the `n`th request (from 1) on the `conn`th connection
/// (from 1), by method and path; `None`: close without answering.
fn script(method: &str, path: &str, conn: usize, n: usize) -> Option<Answer> {
    let tag = format!("{conn}:{n}");
    Some(match path {
        "/plain" => ok(&tag),
        "/fields" => answer(&[
            b"HTTP/1.1 200 OK\r\nX-Kept:  as sent \r\nConnection: keep-alive, X-Secret\r\nx-secret: s\r\n\
              Keep-Alive: timeout=5\r\nProxy-Connection: x\r\nTrailer: x-t\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\
              Content-Length: 2\r\n\r\nok",
        ]),
        "/chunked" => answer(&[
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n5\r\nhel",
            b"lo\r\n6;ext=1\r\n world\r\n",
            b"0\r\nx-trailer: 1\r\n\r\n",
        ]),
        "/big" => {
            let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
            let mut pieces = vec![b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n".to_vec()];
            pieces.extend(body.chunks(200_000).map(<[u8]>::to_vec));
            Answer { pieces, close: false }
        }
        "/until-close" => Answer {
            pieces: vec![b"HTTP/1.1 200 OK\r\n\r\nuntil ".to_vec(), b"close".to_vec()],
            close: true,
        },
        "/interim" => answer(&[
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n",
            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{tag}", tag.len()).as_bytes(),
        ]),
        "/head" if method == "HEAD" => answer(&[b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"]),
        "/extra" => answer(&[b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n"]),
        "/cut" => Answer {
            pieces: vec![b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten..".to_vec()],
            close: true,
        },
        "/both" => answer(&[
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        ]),
        "/two-lengths" => answer(&[b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nokk"]),
        "/signed-length" => answer(&[b"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nok"]),
        "/bad-chunk" => answer(&[b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n"]),
        "/garbage" => answer(&[b"SSH-2.0-OpenSSH\r\n\r\n"]),
        "/upgrade" => answer(&[b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n"]),
        "/folded" => answer(&[b"HTTP/1.1 200 OK\r\nx-a: 1\r\n folded\r\ncontent-length: 2\r\n\r\nok"]),
        "/huge-head" => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\n\r\nok",
                "a".repeat(70 * 1024)
            );
            Answer {
                pieces: vec![head.into_bytes()],
                close: false,
            }
        }
        "/early-close" => Answer {
            pieces: vec![b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\n\r\nfull".to_vec()],
            close: true,
        },
        // Answers, then neither reads nor closes for a while.
        "/early-open" => Answer {
            pieces: vec![b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\n\r\nfull".to_vec()],
            close: false,
        },
        "/silent" => return None,
        // The first connection's second request goes unanswered (the
        // upstream closes it); any later one is answered.
        "/vanish" if conn == 1 && n == 2 => return None,
        "/vanish" => ok(&tag),
        _ => ok("?"),
    })
}

/// Reads one request (head, and a `Content-Length` body) from `buf`/`s`.
async fn read_request(
    s: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(String, String, Vec<u8>)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut words = head.split(' ');
            let method = words.next()?.to_owned();
            let path = words.next()?.to_owned();
            // `/early…` is answered after its head, its body unread.
            if path.starts_with("/early") {
                buf.drain(..end + 4);
                return Some((method, path, Vec::new()));
            }
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let mut chunk = [0u8; 65536];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            return Some((method, path, body));
        }
        let mut chunk = [0u8; 65536];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
}

/// The scripted upstream; the counter is the connections it has accepted.
async fn scripted_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let counter = conns.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let conn = counter.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut n = 0;
                while let Some((method, path, _)) = read_request(&mut s, &mut buf).await {
                    n += 1;
                    let Some(a) = script(&method, &path, conn, n) else {
                        return;
                    };
                    for (i, p) in a.pieces.iter().enumerate() {
                        if i > 0 {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        if s.write_all(p).await.is_err() {
                            return;
                        }
                    }
                    if a.close {
                        return;
                    }
                    if path == "/early-open" {
                        // Neither reads the body nor closes.
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        return;
                    }
                }
            });
        }
    });
    (addr, conns)
}

/// An upstream that answers with the request body it received (axum).
async fn body_echo_upstream() -> SocketAddr {
    let app = axum::Router::new().fallback(axum::routing::any(|body: Bytes| async move { body }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    addr
}

async fn gateway(up: SocketAddr) -> portcullis_gateway::RunningGateway {
    let raw = RawConfig {
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        upstreams: vec![RawUpstream {
            name: "up".into(),
            targets: vec![up.to_string()],
            // Every malformed answer is a failure; none should eject the
            // target for the requests after it.
            eject_after_failures: Some(0),
            ..Default::default()
        }],
        routes: vec![RawRoute {
            name: "all".into(),
            path_prefix: "/".into(),
            upstream: "up".into(),
            auth: vec!["anonymous".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    portcullis_gateway::start(raw.validate(&|_| None).unwrap(), None, Arc::new(|_| {}))
        .await
        .unwrap()
}

type Client = SendRequest<Outgoing>;

/// One downstream keep-alive connection to the gateway.
async fn connect(gw: SocketAddr) -> Client {
    let tcp = tokio::net::TcpStream::connect(gw).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

fn full(b: Bytes) -> Outgoing {
    Full::new(b).map_err(|never| match never {}).boxed()
}

fn empty() -> Outgoing {
    full(Bytes::new())
}

type Outgoing = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// `method path` to the gateway with `body`.
fn request(method: &str, path: &str, body: Outgoing) -> http::Request<Outgoing> {
    http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "gw")
        .body(body)
        .unwrap()
}

/// Sends `method path` and returns the status and the whole body (or the
/// body's error).
async fn call(c: &mut Client, method: &str, path: &str) -> (u16, Result<Vec<u8>, String>) {
    c.ready().await.unwrap();
    let req = request(method, path, empty());
    let r = c.send_request(req).await.unwrap();
    let status = r.status().as_u16();
    let body = r
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .map_err(|e| e.to_string());
    (status, body)
}

fn text(r: (u16, Result<Vec<u8>, String>)) -> (u16, String) {
    (r.0, String::from_utf8(r.1.unwrap()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_framing_is_forwarded_and_the_connection_reused_when_it_can_be() {
    let (up, conns) = scripted_upstream().await;
    let gw = gateway(up).await;
    let mut c = connect(gw.addr).await;

    assert_eq!(
        text(call(&mut c, "GET", "/plain").await),
        (200, "1:1".into())
    );
    // Chunked, in pieces, with an extension and a trailer: the body only.
    assert_eq!(
        text(call(&mut c, "GET", "/chunked").await),
        (200, "hello world".into())
    );
    // A megabyte by Content-Length, over several reads.
    let (status, body) = call(&mut c, "GET", "/big").await;
    assert_eq!(status, 200);
    let want: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    assert!(body.unwrap() == want, "the big body arrives intact");
    // Interim answers are skipped; the final one is forwarded.
    assert_eq!(
        text(call(&mut c, "GET", "/interim").await),
        (200, "1:4".into())
    );
    // A HEAD answer has no body, whatever its Content-Length says.
    let (status, body) = call(&mut c, "HEAD", "/head").await;
    assert_eq!((status, body.unwrap().len()), (200, 0));
    // All of that went over one upstream connection.
    assert_eq!(
        text(call(&mut c, "GET", "/plain").await),
        (200, "1:6".into())
    );
    assert_eq!(conns.load(Ordering::SeqCst), 1);

    // Read until the upstream closes: whole, and the next request goes over
    // a new connection.
    assert_eq!(
        text(call(&mut c, "GET", "/until-close").await),
        (200, "until close".into())
    );
    assert_eq!(
        text(call(&mut c, "GET", "/plain").await),
        (200, "2:1".into())
    );
    // Bytes beyond the answer: forwarded without them, and that
    // connection is not used again.
    assert_eq!(
        text(call(&mut c, "GET", "/extra").await),
        (200, "ok".into())
    );
    assert_eq!(
        text(call(&mut c, "GET", "/plain").await),
        (200, "3:1".into())
    );
    assert_eq!(conns.load(Ordering::SeqCst), 3);

    // The answer's fields go to the client as the upstream sent them, but
    // for the hop-by-hop ones and those its Connection field names.
    c.ready().await.unwrap();
    let r = c
        .send_request(request("GET", "/fields", empty()))
        .await
        .unwrap();
    let h = r.headers();
    assert_eq!(h["x-kept"], "as sent");
    assert_eq!(
        h["date"], "Mon, 01 Jan 2024 00:00:00 GMT",
        "the upstream's Date, once"
    );
    assert_eq!(h.get_all("date").iter().count(), 1);
    assert_eq!(h["content-length"], "2");
    for gone in [
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "trailer",
        "connection",
    ] {
        assert!(!h.contains_key(gone), "{gone} forwarded: {h:?}");
    }
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_ambiguous_answers_are_502_and_never_forwarded() {
    let (up, _) = scripted_upstream().await;
    let gw = gateway(up).await;
    for path in [
        "/both",
        "/two-lengths",
        "/signed-length",
        "/garbage",
        "/upgrade",
        "/folded",
        "/huge-head",
        "/silent",
    ] {
        // A new downstream connection each time: a bad answer must not
        // spoil the next request either.
        let mut c = connect(gw.addr).await;
        let (status, body) = text(call(&mut c, "GET", path).await);
        assert_eq!(status, 502, "{path}: {body}");
        assert!(
            !body.contains("ok") && !body.contains("OpenSSH"),
            "{path}: {body}"
        );
        assert_eq!(
            text(call(&mut c, "GET", "/plain").await).0,
            200,
            "after {path}"
        );
    }
    // A bad chunk, or an upstream that closes inside the body, once the
    // head is taken: the body fails, so the client sees the connection
    // break (before or after the head), never a complete answer.
    for path in ["/bad-chunk", "/cut"] {
        let mut c = connect(gw.addr).await;
        c.ready().await.unwrap();
        let req = request("GET", path, empty());
        match c.send_request(req).await {
            Err(e) => assert!(e.is_incomplete_message(), "{path}: {e}"),
            Ok(r) => {
                let body = r.into_body().collect().await;
                assert!(body.is_err(), "{path}: {body:?}");
            }
        }
    }
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_request_on_a_reused_connection_is_retried_only_when_idempotent() {
    let (up, conns) = scripted_upstream().await;
    let gw = gateway(up).await;
    // GET: the first connection's second request goes unanswered; it is
    // sent again on a new connection.
    let mut c = connect(gw.addr).await;
    assert_eq!(
        text(call(&mut c, "GET", "/vanish").await),
        (200, "1:1".into())
    );
    assert_eq!(
        text(call(&mut c, "GET", "/vanish").await),
        (200, "2:1".into())
    );
    assert_eq!(conns.load(Ordering::SeqCst), 2);
    // POST: not idempotent, so not sent twice (a new upstream, so that
    // its first connection is the one that goes silent).
    let (up, conns) = scripted_upstream().await;
    let gw2 = gateway(up).await;
    let mut c = connect(gw2.addr).await;
    assert_eq!(
        text(call(&mut c, "POST", "/vanish").await),
        (200, "1:1".into())
    );
    assert_eq!(call(&mut c, "POST", "/vanish").await.0, 502);
    assert_eq!(conns.load(Ordering::SeqCst), 1, "not retried");
    gw.shutdown(Duration::from_secs(1)).await;
    gw2.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_reach_the_upstream_whole_by_length_or_chunked() {
    let gw = gateway(body_echo_upstream().await).await;
    let mut c = connect(gw.addr).await;
    // Content-Length.
    c.ready().await.unwrap();
    let req = request("POST", "/echo", full(Bytes::from_static(b"0123456789")));
    let r = c.send_request(req).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        &r.into_body().collect().await.unwrap().to_bytes()[..],
        b"0123456789"
    );
    // Chunked (no length known), several frames: forwarded chunked.
    let frames = (0..50)
        .map(|i| Bytes::from(vec![b'a' + (i % 26) as u8; 1000]))
        .collect();
    let want: Vec<u8> = (0..50)
        .flat_map(|i| vec![b'a' + (i % 26) as u8; 1000])
        .collect();
    c.ready().await.unwrap();
    let req = request("POST", "/echo", Frames(frames).boxed());
    let r = c.send_request(req).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.into_body().collect().await.unwrap().to_bytes() == want);
    // And a GET after them, on the same connections.
    assert_eq!(call(&mut c, "GET", "/echo").await.0, 200);
    gw.shutdown(Duration::from_secs(1)).await;
}

/// A body of frames whose length is not known in advance (sent chunked).
struct Frames(std::collections::VecDeque<Bytes>);

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_answer_to_an_upload_is_forwarded() {
    let (up, _) = scripted_upstream().await;
    let gw = gateway(up).await;
    // 8 MB: more than the loopback socket buffers hold, so the gateway's
    // write of the body blocks once the upstream stops reading.
    let big = Bytes::from(vec![b'x'; 8 * 1024 * 1024]);
    for path in ["/early-close", "/early-open"] {
        let mut c = connect(gw.addr).await;
        c.ready().await.unwrap();
        let req = request("POST", path, full(big.clone()));
        let started = std::time::Instant::now();
        let r = c.send_request(req).await.unwrap();
        assert_eq!(r.status(), 413, "{path}");
        assert_eq!(
            &r.into_body().collect().await.unwrap().to_bytes()[..],
            b"full",
            "{path}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{path}: answered before the upstream gave up"
        );
    }
    gw.shutdown(Duration::from_secs(1)).await;
}
