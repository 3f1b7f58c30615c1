//! The gateway's own HTTP/1.1 server (`downstream`) over real sockets, with
//! raw client bytes: pipelining, request bodies by length and in chunks,
//! `Expect: 100-continue`, HTTP/1.0, bodies left unread, the idle timeout,
//! and the drain on shutdown.

#![allow(clippy::unwrap_used)]

use axum::response::IntoResponse;
use bytes::Bytes;
use portcullis_gateway::config::{RawAuthenticator, RawConfig, RawRoute, RawTimeouts, RawUpstream};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Size of the answer to `/open/big`.
const BIG: usize = 32 << 20;

/// An upstream that answers with the method, path and body it received,
/// and `/open/big` with `BIG` bytes.
async fn echo_upstream() -> SocketAddr {
    let app = axum::Router::new().fallback(axum::routing::any(
        |method: http::Method, uri: http::Uri, body: Bytes| async move {
            if uri.path() == "/open/big" {
                return vec![b'x'; BIG].into_response();
            }
            format!(
                "{method} {} [{}]",
                uri.path(),
                String::from_utf8_lossy(&body)
            )
            .into_response()
        },
    ));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    addr
}

/// `/open` for anyone, `/closed` only with an API key (none is valid).
async fn gateway(idle_ms: u64) -> portcullis_gateway::RunningGateway {
    gateway_with(RawTimeouts {
        header_ms: Some(500),
        idle_ms: Some(idle_ms),
        ..Default::default()
    })
    .await
}

/// [`gateway`] with these timeouts.
async fn gateway_with(timeouts: RawTimeouts) -> portcullis_gateway::RunningGateway {
    let up = echo_upstream().await;
    let route = |name: &str, prefix: &str, auth: &str| RawRoute {
        name: name.into(),
        path_prefix: prefix.into(),
        upstream: "up".into(),
        auth: vec![auth.into()],
        ..Default::default()
    };
    let raw = RawConfig {
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        timeouts,
        upstreams: vec![RawUpstream {
            name: "up".into(),
            targets: vec![up.to_string()],
            ..Default::default()
        }],
        authenticators: vec![RawAuthenticator {
            name: "keys".into(),
            kind: "api_key".into(),
            ..Default::default()
        }],
        routes: vec![
            route("open", "/open", "anonymous"),
            route("closed", "/closed", "keys"),
        ],
        ..Default::default()
    };
    portcullis_gateway::start(raw.validate(&|_| None).unwrap(), None, Arc::new(|_| {}))
        .await
        .unwrap()
}

/// Reads from `s` into `buf` until `done(buf)` holds or the connection
/// closes; `true` if it closed. Fails the test after 5 s.
async fn read_until(s: &mut TcpStream, buf: &mut String, done: impl Fn(&str) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done(buf) {
        let mut chunk = [0u8; 16 * 1024];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Err(_) => panic!("no answer in 5 s; so far: {buf:?}"),
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(n)) => buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
        }
    }
    false
}

/// Sends `GET path` on `s` and waits for the upstream's echo of it.
async fn get(s: &mut TcpStream, path: &str) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let want = format!("GET {path} []");
    let mut buf = String::new();
    let closed = read_until(s, &mut buf, |b| b.contains(&want)).await;
    assert!(!closed, "closed before answering {path}: {buf}");
}

/// Whether the connection is closed by the gateway within 5 s, with
/// nothing more sent.
async fn closes(s: &mut TcpStream) -> bool {
    let mut rest = String::new();
    read_until(s, &mut rest, |_| false).await && rest.is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_with_bodies_are_answered_in_order() {
    let gw = gateway(60_000).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    // Three requests in one write: no body, a body by length, a chunked
    // body with an extension and a trailer.
    s.write_all(
        b"GET /open/1 HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /open/2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
          POST /open/3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          3;x=1\r\nabc\r\n2\r\nde\r\n0\r\nx-t: 1\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = String::new();
    let closed = read_until(&mut s, &mut buf, |b| b.contains("POST /open/3")).await;
    assert!(!closed, "{buf}");
    let a = buf.find("GET /open/1 []").unwrap();
    let b = buf.find("POST /open/2 [hello]").unwrap();
    let c = buf.find("POST /open/3 [abcde]").unwrap();
    assert!(a < b && b < c, "{buf}");
    assert_eq!(buf.matches("HTTP/1.1 200 OK").count(), 3, "{buf}");

    // A body that arrives in pieces, the chunked framing split anywhere.
    let mut buf = String::new();
    for piece in [
        &b"POST /open/4 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4"[..],
        b"\r\nwxyz\r",
        b"\n1\r\n!\r\n0\r",
        b"\n\r\n",
    ] {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    read_until(&mut s, &mut buf, |b| b.contains("[wxyz!]")).await;
    // And a body by length in pieces, larger than one read.
    let big = "b".repeat(40_000);
    let head = format!(
        "PUT /open/5 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for piece in big.as_bytes().chunks(10_000) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.write_all(piece).await.unwrap();
    }
    let mut buf = String::new();
    let want = format!("PUT /open/5 [{big}]");
    read_until(&mut s, &mut buf, |b| b.contains(&want)).await;
    // The connection still serves.
    get(&mut s, "/open/6").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_http10_and_unread_bodies() {
    let gw = gateway(60_000).await;

    // Expect: 100-continue: the interim answer, then the body is read.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        b"POST /open/e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = String::new();
    read_until(&mut s, &mut buf, |b| b.contains("\r\n\r\n")).await;
    assert_eq!(buf, "HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"abc").await.unwrap();
    read_until(&mut s, &mut buf, |b| b.contains("[abc]")).await;

    // ... but not to a request the pipeline refuses: its answer comes
    // alone, and the body is never asked for.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        b"POST /closed/e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = String::new();
    read_until(&mut s, &mut buf, |b| b.contains("\"error\"")).await;
    assert!(buf.starts_with("HTTP/1.1 401"), "{buf}");
    assert!(!buf.contains("100 Continue"), "{buf}");

    // HTTP/1.0: closed after the answer unless kept alive.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /open/a HTTP/1.0\r\n\r\n").await.unwrap();
    let mut buf = String::new();
    assert!(read_until(&mut s, &mut buf, |_| false).await);
    assert!(
        buf.starts_with("HTTP/1.1 200") && buf.contains("GET /open/a []"),
        "{buf}"
    );
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /open/b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let mut buf = String::new();
    read_until(&mut s, &mut buf, |b| b.contains("GET /open/b []")).await;
    assert!(
        buf.to_ascii_lowercase().contains("connection: keep-alive"),
        "{buf}"
    );
    s.write_all(b"GET /open/c HTTP/1.0\r\n\r\n").await.unwrap();
    assert!(read_until(&mut s, &mut buf, |_| false).await);
    assert!(buf.contains("GET /open/c []"), "{buf}");

    // A refusal before the body was read ends the connection, after the
    // answer: the bytes the client still sends are never read as a request.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /closed/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        .await
        .unwrap();
    let mut buf = String::new();
    read_until(&mut s, &mut buf, |b| b.contains("\"error\"")).await;
    assert!(buf.starts_with("HTTP/1.1 401"), "{buf}");
    assert!(buf.contains("connection: close"), "{buf}");
    let smuggled = "GET /open/smuggled HTTP/1.1\r\nHost: x\r\n\r\n".repeat(100);
    let _ = s.write_all(smuggled.as_bytes()).await;
    let mut rest = String::new();
    read_until(&mut s, &mut rest, |_| false).await;
    assert!(!rest.contains("smuggled"), "{rest}");

    // A chunked body that breaks its framing: 400, connection closed.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /open/bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n")
        .await
        .unwrap();
    let mut buf = String::new();
    assert!(read_until(&mut s, &mut buf, |_| false).await);
    assert!(buf.starts_with("HTTP/1.1 400"), "{buf}");
    assert!(!buf.contains("POST /open/bad"), "{buf}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_heads_get_400_and_the_connection_closed() {
    let gw = gateway(60_000).await;
    for wire in [
        "GET /open HTTP/1.1\r\n\r\n",
        "GET /open HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET /open HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n",
        "POST /open HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
        "POST /open HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "POST /open HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET /open HTTP/1.1\r\nHost : x\r\n\r\n",
        "GET /open HTTP/2.0\r\nHost: x\r\n\r\n",
        "\x16\x03\x01\x02\x00\x01\x00\x01\x7c\x03\x03\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        // What follows would be a second request if the first were misread.
        let mut bytes = wire.as_bytes().to_vec();
        bytes.extend_from_slice(b"GET /open/next HTTP/1.1\r\nHost: x\r\n\r\n");
        s.write_all(&bytes).await.unwrap();
        let mut buf = String::new();
        assert!(read_until(&mut s, &mut buf, |_| false).await, "{wire:?}");
        assert!(buf.starts_with("HTTP/1.1 400"), "{wire:?}: {buf}");
        assert!(
            !buf.contains("/open/next") && !buf.contains("200 OK"),
            "{wire:?}: {buf}"
        );
        assert!(buf.contains("connection: close"), "{wire:?}: {buf}");
    }
    // 101 fields: 431.
    let fields: String = (0..101).map(|i| format!("X-{i}: 1\r\n")).collect();
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(format!("GET /open HTTP/1.1\r\nHost: x\r\n{fields}\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    assert!(read_until(&mut s, &mut buf, |_| false).await);
    assert!(buf.starts_with("HTTP/1.1 431"), "{buf}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_and_the_drain_closes_them_at_once() {
    let gw = gateway(400).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    get(&mut s, "/open/1").await;
    let idle = Instant::now();
    assert!(closes(&mut s).await);
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "closed after {waited:?}"
    );
    // A connection that never sends anything is closed too.
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    assert!(closes(&mut silent).await);
    // The HTTP/2 preface a byte at a time does not stretch the header
    // timeout (500 ms from the first byte).
    let mut slow = TcpStream::connect(gw.addr).await.unwrap();
    let first = Instant::now();
    for b in b"PRI * HTTP/" {
        if slow.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(closes(&mut slow).await);
    let cut = first.elapsed();
    assert!(cut < Duration::from_millis(2000), "cut off after {cut:?}");

    // Shutdown: an idle keep-alive connection is closed without waiting for
    // its timeout.
    let gw = gateway(60_000).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    get(&mut s, "/open/2").await;
    let started = Instant::now();
    gw.shutdown(Duration::from_secs(10)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the drain waited on an idle connection"
    );
    assert!(closes(&mut s).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_idle_timeout_applies_after_the_next_request() {
    let up = echo_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let config = |idle_ms: u64| {
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[timeouts]\nidle_ms = {idle_ms}\n\
             [[upstreams]]\nname = \"up\"\ntargets = [\"{up}\"]\n\
             [[routes]]\nname = \"open\"\npath_prefix = \"/open\"\nupstream = \"up\"\nauth = [\"anonymous\"]\n"
        )
    };
    std::fs::write(&file, config(60_000)).unwrap();
    let loaded = portcullis_gateway::load(&file, &|_| {}).unwrap();
    let gw = portcullis_gateway::start(loaded, Some(file.clone()), Arc::new(|_| {}))
        .await
        .unwrap();
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    get(&mut s, "/open/1").await;
    std::fs::write(&file, config(300)).unwrap();
    let reloaded = gw.reload().await.unwrap();
    assert!(reloaded.needs_restart.is_empty(), "{reloaded:?}");
    get(&mut s, "/open/2").await;
    let idle = Instant::now();
    assert!(closes(&mut s).await);
    assert!(
        idle.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        idle.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_after_send_ms() {
    let gw = gateway_with(RawTimeouts {
        send_ms: Some(300),
        ..Default::default()
    })
    .await;
    // A small receive window: the answer stalls once the socket buffers
    // on both sides are full, far short of its 32 MiB.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(gw.addr).await.unwrap();
    s.write_all(b"GET /open/big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Longer than send_ms: the gateway gives up on the stalled write.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut got = 0usize;
    let mut chunk = vec![0u8; 64 * 1024];
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the connection stayed open ({got} bytes read)"
    );
    assert!(
        got > 0 && got < BIG,
        "{got} bytes: the answer should have been cut off"
    );

    // A client that reads gets the whole answer.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /open/big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = 0usize;
    let head_end = loop {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed early");
        got += n;
        if let Some(i) = chunk[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let mut body = got - head_end;
    while body < BIG {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed after {body} bytes of the body");
        body += n;
    }
    assert_eq!(body, BIG);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_closed_busy_ones_are_not() {
    let gw = gateway(400).await;
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    // A request every 150 ms for 1.5 s: never idle for 400 ms.
    for i in 0..10 {
        let req = http::Request::get(format!("http://x/open/{i}"))
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Then idle: the gateway ends the connection (GOAWAY, then the close).
    let idle = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the idle HTTP/2 connection stayed open")
        .unwrap()
        .unwrap();
    assert!(idle.elapsed() >= Duration::from_millis(200));
}
