//! HTTP/1.1 from clients, served in the connection's own task.
//!
//! Each accepted connection is one task: it reads a request head, runs the
//! pipeline ([`pipeline::handle`]) and writes the answer, then reads the
//! next head. Parsing is httparse's, with the head's fields shared from the
//! bytes read (no copy), and the answer's head and a small body go out in
//! one write. A connection that opens with the HTTP/2 preface (cleartext
//! prior knowledge, or TLS with ALPN `h2`) is handed to hyper's HTTP/2
//! server instead.
//!
//! Message framing is checked before anything else, strictly (RFC 9112
//! §6.3): a proxy that reads a body's boundary differently from its
//! upstream is a request-smuggling vector. Both `Transfer-Encoding` and
//! `Content-Length`, a repeated or malformed `Content-Length`, a
//! `Transfer-Encoding` other than a single `chunked`, a chunked HTTP/1.0
//! request, or a missing or repeated `Host` in HTTP/1.1 is a 400 and the
//! connection is closed after it. Every body is framed anew on its way up.
//!
//! A request body that has arrived whole with its head is handed on as one
//! buffer. A larger one is read as the pipeline polls it: the connection's
//! read half is lent to the body and comes back once the body has been
//! read to its end; a body not read to its end (a refusal, a 413) ends the
//! connection after the answer.

use crate::h1::{self, Framing};
use crate::pipeline::{self, Peer, Reject, proxy::Affinity};
use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version, header};
use http_body::{Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_ca::PeerCertificate;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, Sleep};

/// The most header fields a request may carry (hyper's default too).
const MAX_HEADERS: usize = 100;
/// Read buffer reserve before each read.
const READ_RESERVE: usize = 8 * 1024;
/// A write buffer larger than this (it carried a large body) is not kept.
const KEEP_BUFFER: usize = 64 * 1024;
/// After an answer that ends a connection with a request body unread, what
/// the client still sends is read and dropped until it stops (nothing for
/// [`LINGER_GAP`]) or for [`LINGER`] at most, before the socket is closed:
/// closing with unread input makes the kernel send a reset, which can
/// destroy the answer before the client has read it (nginx's lingering
/// close).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_GAP: Duration = Duration::from_millis(500);
/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What every connection of a worker is served with.
pub struct Shared {
    /// The running configuration (swapped by reload).
    pub current: Arc<ArcSwap<Runtime>>,
    /// The longest request head accepted (431 above).
    pub max_header: usize,
    /// Time allowed for a request head once its first byte has arrived.
    pub header_timeout: Duration,
    /// Time an idle keep-alive connection is kept, at start (then that of
    /// the configuration its last request ran on: a reload applies).
    pub idle_timeout: Duration,
    /// HTTP/2 connections.
    pub h2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

impl Shared {
    /// What a connection waiting `idle` for its next request may take to
    /// read a head. The longest head read before it is refused is the
    /// header limit plus room for the request line (the pipeline then
    /// checks the fields alone against the limit).
    fn wait(&self, idle: Duration) -> Wait {
        Wait {
            idle,
            header: self.header_timeout,
            limit: self.max_header.max(8192) + 1024,
        }
    }
}

/// A connection that can be split into halves that are used apart: the
/// read half is lent to a request body while the answer is written.
pub trait Split: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The read half.
    type Read: AsyncRead + Unpin + Send + Sync + 'static;
    /// The write half.
    type Write: AsyncWrite + Unpin + Send + 'static;
    /// Whether the connection is TLS (`X-Forwarded-Proto: https`).
    const TLS: bool;
    /// Splits the connection.
    fn split(self) -> (Self::Read, Self::Write);
}

impl Split for tokio::net::TcpStream {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;
    const TLS: bool = false;
    fn split(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }
}

impl Split for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    type Read = tokio::io::ReadHalf<Self>;
    type Write = tokio::io::WriteHalf<Self>;
    const TLS: bool = true;
    fn split(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

/// Serves one accepted (and, with TLS, handshaken) connection until it
/// closes, times out, or `stop` turns true (an idle connection is closed
/// at once; a request in flight is answered first).
pub async fn serve<IO: Split>(
    mut io: IO,
    peer: SocketAddr,
    cert: Option<PeerCertificate>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let peer = Peer {
        addr: peer,
        tls: IO::TLS,
    };
    let mut rbuf = BytesMut::with_capacity(READ_RESERVE);
    let mut sleep = pin!(tokio::time::sleep(shared.idle_timeout));
    // Enough of the first bytes to tell HTTP/2's preface from a request line.
    let mut started = false;
    loop {
        let n = rbuf.len().min(PREFACE.len());
        if rbuf[..n] != PREFACE[..n] {
            break;
        }
        if n == PREFACE.len() {
            return serve_h2(
                Prefixed {
                    prefix: rbuf.freeze(),
                    io,
                },
                peer,
                cert,
                &shared,
                stop,
            )
            .await;
        }
        // A preface sent a byte at a time does not stretch the timeout.
        let wait = shared.wait(shared.idle_timeout);
        if !read_more(
            &mut io,
            &mut rbuf,
            wait,
            &mut started,
            sleep.as_mut(),
            &mut stop,
        )
        .await
        {
            return;
        }
    }
    let (rd, wr) = io.split();
    let conn: Conn<IO> = Conn {
        rd: Some(rd),
        rbuf,
        wr,
        wbuf: Vec::new(),
        peer,
        cert,
        affinity: Arc::new(Affinity::default()),
        idle: shared.idle_timeout,
        send: shared.current.load().config.send_timeout,
    };
    conn.run(&shared, sleep, stop).await;
}

/// HTTP/2, by hyper; every request takes the same pipeline. A connection
/// on which no request started, and none was in flight, for `idle_ms` (that
/// of the running configuration) is shut down gracefully (GOAWAY).
async fn serve_h2<IO: Split>(
    io: Prefixed<IO>,
    peer: Peer,
    cert: Option<PeerCertificate>,
    shared: &Shared,
    mut stop: watch::Receiver<bool>,
) {
    let current = shared.current.clone();
    let activity = Arc::new(H2Activity::default());
    let seen = activity.clone();
    let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        let rt = current.load_full();
        if let Some(cert) = &cert {
            req.extensions_mut().insert(cert.clone());
        }
        let busy = H2Busy::new(&activity);
        // No affinity: HTTP/2 requests take the shared upstream pools, so
        // no answer here carries `h1::Fields`.
        async move {
            let resp = pipeline::handle(rt, req, peer, None).await;
            drop(busy);
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let conn = shared.h2.serve_connection(TokioIo::new(io), svc);
    let mut conn = pin!(conn);
    let mut last = 0;
    loop {
        let idle = shared.current.load().config.idle_timeout;
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "HTTP/2 connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|s| *s) => break,
            () = tokio::time::sleep(idle) => {
                let now = seen.events.load(Ordering::Relaxed);
                if now == last && seen.in_flight.load(Ordering::Relaxed) == 0 {
                    break;
                }
                last = now;
            }
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// What an HTTP/2 connection's idle timer looks at.
#[derive(Default)]
struct H2Activity {
    /// Requests started and finished (their pipelines), so far.
    events: AtomicU64,
    /// Requests whose pipeline is running.
    in_flight: AtomicUsize,
}

/// A request in an HTTP/2 connection's pipeline.
struct H2Busy(Arc<H2Activity>);

impl H2Busy {
    fn new(a: &Arc<H2Activity>) -> Self {
        a.events.fetch_add(1, Ordering::Relaxed);
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(a.clone())
    }
}

impl Drop for H2Busy {
    fn drop(&mut self) {
        self.0.events.fetch_add(1, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One HTTP/1.1 connection.
struct Conn<IO: Split> {
    /// The read half; lent to a request body while it is read.
    rd: Option<IO::Read>,
    rbuf: BytesMut,
    wr: IO::Write,
    wbuf: Vec<u8>,
    peer: Peer,
    cert: Option<PeerCertificate>,
    /// This connection's own upstream connections.
    affinity: Arc<Affinity>,
    /// How long it may wait for its next request.
    idle: Duration,
    /// How long a write may wait for the client to accept bytes.
    send: Duration,
}

/// How a connection goes on after an answer.
enum After {
    /// Reads the next request.
    Next,
    /// Closes; `linger`: with input unread.
    Close { linger: bool },
}

impl<IO: Split> Conn<IO> {
    async fn run(
        mut self,
        shared: &Shared,
        mut sleep: Pin<&mut Sleep>,
        mut stop: watch::Receiver<bool>,
    ) {
        let after = loop {
            let Some(rd) = self.rd.as_mut() else {
                break After::Close { linger: false };
            };
            let head = match read_head(
                rd,
                &mut self.rbuf,
                &self.affinity,
                shared.wait(self.idle),
                sleep.as_mut(),
                &mut stop,
            )
            .await
            {
                Ok(Some(head)) => head,
                Ok(None) => break After::Close { linger: false },
                Err(reject) => {
                    let resp = reject.into_response();
                    let mut wr = Timed::new(&mut self.wr, sleep.as_mut(), self.send);
                    let _ = write_answer(&mut wr, &mut self.wbuf, resp, false, false, false).await;
                    break After::Close { linger: true };
                }
            };
            let (req, mut flight) = self.prepare(head);
            let rt = shared.current.load_full();
            self.idle = rt.config.idle_timeout;
            self.send = rt.config.send_timeout;
            // Pinned where it is made and awaited through the pin in both
            // cases: no copy of the whole future into an await.
            let resp = {
                let mut handle = pin!(pipeline::handle(rt, req, self.peer, Some(&self.affinity)));
                match flight.wants_continue.take() {
                    None => handle.await,
                    // `100 Continue` once the pipeline reads the body (it has
                    // authenticated the request and is sending it upstream);
                    // a request refused before that gets its answer alone.
                    Some(wants) => {
                        tokio::select! {
                            biased;
                            resp = handle.as_mut() => resp,
                            Ok(()) = wants => {
                                let mut wr = Timed::new(&mut self.wr, sleep.as_mut(), self.send);
                                let sent = async {
                                    wr.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
                                    wr.flush().await
                                };
                                if sent.await.is_err() {
                                    break After::Close { linger: false };
                                }
                                handle.await
                            }
                        }
                    }
                }
            };
            match self.answer(resp, flight, &stop, sleep.as_mut()).await {
                After::Next => {}
                close => break close,
            }
        };
        let _ = Timed::new(&mut self.wr, sleep.as_mut(), self.send)
            .shutdown()
            .await;
        if let (After::Close { linger: true }, Some(mut rd)) = (after, self.rd.take()) {
            // Read what the client still sends, so that the close does not
            // reset the connection before it has read the answer.
            let drain = async {
                let mut scratch = vec![0u8; 16 * 1024];
                while let Ok(Ok(n)) = tokio::time::timeout(LINGER_GAP, rd.read(&mut scratch)).await
                    && n > 0
                {}
            };
            let _ = tokio::time::timeout(LINGER, drain).await;
        }
    }

    /// Turns a parsed head into the request for the pipeline: its body
    /// whole from the buffer, or read from the connection as it is polled
    /// (the read half lent to it).
    fn prepare(&mut self, head: Head) -> (Request<RequestBody<IO::Read>>, InFlight<IO::Read>) {
        let Head {
            parts,
            framing,
            keep_alive,
            expect_continue,
        } = head;
        let mut flight = InFlight {
            head_request: parts.method == Method::HEAD,
            http10: parts.version == Version::HTTP_10,
            keep_alive,
            wants_continue: None,
            back: None,
        };
        let body = match framing {
            Framing::Length(0) | Framing::Empty | Framing::Close => RequestBody::Empty,
            Framing::Length(n) if n <= self.rbuf.len() as u64 => {
                RequestBody::Full(Some(self.rbuf.split_to(n as usize).freeze()))
            }
            framing => {
                let wants_continue = (expect_continue && !flight.http10).then(|| {
                    let (tx, rx) = oneshot::channel();
                    flight.wants_continue = Some(rx);
                    tx
                });
                let (tx, rx) = oneshot::channel();
                flight.back = Some(rx);
                let rd = self.rd.take();
                RequestBody::Streaming(Streaming {
                    lent: rd.map(|rd| Lent {
                        rd,
                        buf: std::mem::take(&mut self.rbuf),
                        complete: false,
                    }),
                    framing,
                    eof: false,
                    back: Some(tx),
                    wants_continue,
                })
            }
        };
        let mut req = Request::from_parts(parts, body);
        if let Some(cert) = &self.cert {
            req.extensions_mut().insert(cert.clone());
        }
        (req, flight)
    }

    /// Writes the pipeline's answer, and takes the read half back if the
    /// request body was read to its end; if it was not, or is still held
    /// (by an upstream client that has not finished with it), the
    /// connection ends with this answer.
    async fn answer(
        &mut self,
        resp: http::Response<pipeline::proxy::Body>,
        flight: InFlight<IO::Read>,
        stop: &watch::Receiver<bool>,
        sleep: Pin<&mut Sleep>,
    ) -> After {
        let mut unread = false;
        if let Some(mut rx) = flight.back {
            match rx.try_recv() {
                Ok(lent) => {
                    unread = !lent.complete;
                    self.rd = Some(lent.rd);
                    self.rbuf = lent.buf;
                }
                Err(_) => unread = true,
            }
        }
        let keep_alive = flight.keep_alive && !unread && !*stop.borrow();
        let written = write_answer(
            &mut Timed::new(&mut self.wr, sleep, self.send),
            &mut self.wbuf,
            resp,
            flight.head_request,
            flight.http10,
            keep_alive,
        )
        .await;
        if self.wbuf.capacity() > KEEP_BUFFER {
            self.wbuf = Vec::new();
        }
        // Any close after a written answer lingers: the client may have
        // sent more (a body left unread, or requests pipelined behind a
        // `Connection: close`), and a close with input unread resets the
        // connection, which can destroy the answer (RFC 9112 §9.6).
        match written {
            Ok(true) if !unread => After::Next,
            Ok(_) => After::Close { linger: true },
            Err(_) => After::Close { linger: false },
        }
    }
}

/// What the answer to a request in the pipeline needs to know.
struct InFlight<R> {
    head_request: bool,
    http10: bool,
    keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body: the
    /// body's first poll says when.
    wants_continue: Option<oneshot::Receiver<()>>,
    /// Where a lent read half comes back.
    back: Option<oneshot::Receiver<Lent<R>>>,
}

/// How long a request head may take, and how large it may be.
#[derive(Clone, Copy)]
struct Wait {
    idle: Duration,
    header: Duration,
    limit: usize,
}

/// A request head, parsed and checked.
struct Head {
    parts: http::request::Parts,
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
}

/// Reads the next request head. `Ok(None)`: the connection is to close
/// quietly (the client closed it, it stayed idle or slow too long, or the
/// gateway is stopping and it is idle).
async fn read_head<R: AsyncRead + Unpin>(
    rd: &mut R,
    rbuf: &mut BytesMut,
    affinity: &Affinity,
    wait: Wait,
    mut sleep: Pin<&mut Sleep>,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<Head>, Reject> {
    let mut started = false;
    loop {
        if !rbuf.is_empty() {
            if let Some(head) = parse_request(rbuf, wait.limit, || affinity.header_map())? {
                return Ok(Some(head));
            }
            if rbuf.len() > wait.limit {
                return Err(Reject::HeadersTooLarge);
            }
        }
        if !read_more(rd, rbuf, wait, &mut started, sleep.as_mut(), stop).await {
            return Ok(None);
        }
    }
}

/// Reads more of a request head (or of the HTTP/2 preface) into `rbuf`.
/// Until its first byte the idle timeout runs, from that byte the header
/// timeout, set once (`started`). `false`: the connection is to close
/// quietly (the client closed it, it stayed idle or slow too long, or the
/// gateway is stopping and it is idle).
async fn read_more<R: AsyncRead + Unpin>(
    rd: &mut R,
    rbuf: &mut BytesMut,
    wait: Wait,
    started: &mut bool,
    mut sleep: Pin<&mut Sleep>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    // Both deadlines from now: a later deadline than the last one costs no
    // timer registration.
    if !*started {
        let time = if rbuf.is_empty() {
            wait.idle
        } else {
            *started = true;
            wait.header
        };
        sleep.as_mut().reset(Instant::now() + time);
    }
    rbuf.reserve(READ_RESERVE);
    let idle = rbuf.is_empty();
    tokio::select! {
        biased;
        r = rd.read_buf(rbuf) => matches!(r, Ok(n) if n > 0),
        () = sleep.as_mut() => false,
        _ = stop.wait_for(|s| *s), if idle => false,
    }
}

/// Parses a request head at the front of `buf`, taking it out of `buf`.
/// `Ok(None)`: not all there yet.
fn parse_request(
    buf: &mut BytesMut,
    limit: usize,
    map: impl FnOnce() -> HeaderMap,
) -> Result<Option<Head>, Reject> {
    // Most requests have a handful of fields: room for 32 is made first
    // (the slots are initialised for every request), for 100 only if needed.
    match parse_request_in::<32, _>(buf, limit, map) {
        Err(Parse::TooManyHeaders) => {
            match parse_request_in::<MAX_HEADERS, _>(buf, limit, HeaderMap::new) {
                Err(Parse::TooManyHeaders) => Err(Reject::HeadersTooLarge),
                r => r.map_err(Parse::reject),
            }
        }
        r => r.map_err(Parse::reject),
    }
}

enum Parse {
    TooManyHeaders,
    Refused(Reject),
}

impl Parse {
    fn reject(self) -> Reject {
        match self {
            Parse::TooManyHeaders => Reject::HeadersTooLarge,
            Parse::Refused(r) => r,
        }
    }
}

fn malformed(why: &'static str) -> Parse {
    Parse::Refused(Reject::Framing(why))
}

fn parse_request_in<const N: usize, M: FnOnce() -> HeaderMap>(
    buf: &mut BytesMut,
    limit: usize,
    map: M,
) -> Result<Option<Head>, Parse> {
    // Slots httparse fills as it parses: none is initialised beforehand.
    let mut slots = [const { std::mem::MaybeUninit::uninit() }; N];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) if len > limit => {
            return Err(Parse::Refused(Reject::HeadersTooLarge));
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Parse::TooManyHeaders),
        Err(_) => return Err(malformed("malformed request head")),
    };
    let method = req.method.unwrap_or_default();
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| malformed("bad method"))?;
    let version = if req.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Where the target, each name and each value lie in the head, so that
    // the head can be frozen and each shared from it without a copy.
    let base = buf.as_ptr() as usize;
    let offset = |p: *const u8| p as usize - base;
    let path = req.path.unwrap_or_default();
    let target = (offset(path.as_ptr()), offset(path.as_ptr()) + path.len());
    let n = req.headers.len();
    let mut at = [(0u32, 0u32, 0u32, 0u32); N];
    for (slot, h) in at.iter_mut().zip(req.headers.iter()) {
        // Offsets are below the head limit, far below u32::MAX.
        let name = offset(h.name.as_ptr()) as u32;
        let value = offset(h.value.as_ptr()) as u32;
        *slot = (
            name,
            name + h.name.len() as u32,
            value,
            value + h.value.len() as u32,
        );
    }
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target.0..target.1))
        .map_err(|_| malformed("bad request target"))?;
    // Room for the fields the pipeline adds (X-Forwarded-*, the internal
    // token) without growing the map.
    let mut headers = map();
    headers.reserve(n + 8);
    let mut length: Option<u64> = None;
    let mut lengths = 0;
    let mut encodings = 0;
    let mut chunked = false;
    let mut hosts = 0;
    let mut close = version == Version::HTTP_10;
    let mut expect_continue = false;
    for &(ns, ne, vs, ve) in &at[..n] {
        let (ns, ne, vs, ve) = (ns as usize, ne as usize, vs as usize, ve as usize);
        let name =
            HeaderName::from_bytes(&head[ns..ne]).map_err(|_| malformed("bad header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
            .map_err(|_| malformed("bad header value"))?;
        if name == header::CONTENT_LENGTH {
            lengths += 1;
            length =
                Some(h1::parse_length(value.as_bytes()).ok_or(malformed("bad Content-Length"))?);
        } else if name == header::TRANSFER_ENCODING {
            encodings += 1;
            chunked = value
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked");
        } else if name == header::HOST {
            hosts += 1;
        } else if name == header::CONNECTION {
            for token in value.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if version == Version::HTTP_10 && token.eq_ignore_ascii_case(b"keep-alive") {
                    close = false;
                }
            }
        } else if name == header::EXPECT {
            expect_continue = value.as_bytes().eq_ignore_ascii_case(b"100-continue");
        }
        headers.append(name, value);
    }
    // RFC 9112 §6.1 and §6.3: a proxy must not guess at a body's length.
    if encodings > 0 && lengths > 0 {
        return Err(malformed("both Transfer-Encoding and Content-Length"));
    }
    if lengths > 1 {
        return Err(malformed("repeated Content-Length"));
    }
    if encodings > 0 && (encodings > 1 || !chunked || version == Version::HTTP_10) {
        return Err(malformed("unsupported Transfer-Encoding"));
    }
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1.
    if hosts > 1 || (hosts == 0 && version == Version::HTTP_11) {
        return Err(malformed("an HTTP/1.1 request needs exactly one Host"));
    }
    let framing = match (chunked, length) {
        (true, _) => Framing::chunked(),
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::Empty,
    };
    let mut parts = Request::new(()).into_parts().0;
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(Head {
        parts,
        framing,
        keep_alive: !close,
        expect_continue,
    }))
}

/// Writes an answer: its head (with the framing this connection uses,
/// `Date` if it has none, and `Connection: close` when the connection
/// ends) and its body. `Ok(true)`: the connection can carry another
/// request; `Err`: the answer could not be written whole, and the
/// connection must close for the client to see that.
async fn write_answer<W: AsyncWrite + Unpin>(
    wr: &mut W,
    buf: &mut Vec<u8>,
    resp: http::Response<pipeline::proxy::Body>,
    head_request: bool,
    http10: bool,
    keep_alive: bool,
) -> io::Result<bool> {
    let (parts, body) = resp.into_parts();
    let status = parts.status;
    let mut close = !keep_alive;
    for v in parts.headers.get_all(header::CONNECTION) {
        if v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        {
            close = true;
        }
    }
    // RFC 9112 §6.3: these answers never have a body; a 304 and the answer
    // to HEAD keep the length the upstream declared.
    let no_body = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let keep_length = head_request || status == StatusCode::NOT_MODIFIED;
    let length = if no_body {
        None
    } else {
        http_body::Body::size_hint(&body).exact()
    };
    // An HTTP/1.0 client knows no chunks: a body of unknown length is
    // delimited by the close of the connection.
    let unknown = !no_body && length.is_none();
    let chunked = unknown && !http10;
    close |= unknown && http10;
    buf.clear();
    buf.extend_from_slice(b"HTTP/1.1 ");
    buf.extend_from_slice(status.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    buf.extend_from_slice(b"\r\n");
    // An upstream's fields as it sent them, but those the gateway set
    // itself (RateLimit-*, say).
    let fields = parts.extensions.get::<h1::Fields>();
    let mut dated = fields.is_some_and(|f| f.has_date);
    if let Some(f) = fields {
        f.write_to(buf, keep_length, &parts.headers);
    }
    for (name, value) in &parts.headers {
        if name == header::CONNECTION
            || name == header::TRANSFER_ENCODING
            || (name == header::CONTENT_LENGTH && !keep_length)
        {
            continue;
        }
        dated |= name == header::DATE;
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    if let Some(n) = length {
        buf.extend_from_slice(b"content-length: ");
        buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        buf.extend_from_slice(b"\r\n");
    } else if chunked {
        buf.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !dated {
        date::append(buf);
    }
    if close {
        buf.extend_from_slice(b"connection: close\r\n");
    } else if http10 {
        buf.extend_from_slice(b"connection: keep-alive\r\n");
    }
    buf.extend_from_slice(b"\r\n");
    if no_body {
        wr.write_all(buf).await?;
    } else {
        // A body that fails, or does not match its length, cuts the answer
        // short: the connection then closes for the client to see it.
        h1::write_body(wr, buf, body, chunked, length)
            .await
            .map_err(io::Error::other)?;
    }
    // TLS may hold the answer's last bytes once the socket was full (a
    // write succeeds when rustls has buffered it): flushed here, not when
    // the next answer is written. A no-op on plain TCP.
    wr.flush().await?;
    Ok(!close)
}

/// The `Date` header, formatted once a second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static NOW: RefCell<(u64, Vec<u8>)> = const { RefCell::new((0, Vec::new())) };
    }

    /// Appends `date: <IMF-fixdate>\r\n`.
    pub fn append(buf: &mut Vec<u8>) {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        NOW.with_borrow_mut(|(at, line)| {
            if *at != secs || line.is_empty() {
                *at = secs;
                line.clear();
                line.extend_from_slice(b"date: ");
                line.extend_from_slice(httpdate::fmt_http_date(now).as_bytes());
                line.extend_from_slice(b"\r\n");
            }
            buf.extend_from_slice(line);
        });
    }
}

/// A request body: none, whole, or read from the connection as polled.
enum RequestBody<R> {
    Empty,
    Full(Option<Bytes>),
    Streaming(Streaming<R>),
}

/// The connection's read half and buffer, lent to a body.
struct Lent<R> {
    rd: R,
    buf: BytesMut,
    /// The body was read to its end: the connection can go on.
    complete: bool,
}

struct Streaming<R> {
    lent: Option<Lent<R>>,
    framing: Framing,
    eof: bool,
    /// Where the read half goes back to.
    back: Option<oneshot::Sender<Lent<R>>>,
    /// Asks for `100 Continue` on the first poll.
    wants_continue: Option<oneshot::Sender<()>>,
}

impl<R> Streaming<R> {
    fn give_back(&mut self, complete: bool) {
        if let (Some(mut lent), Some(back)) = (self.lent.take(), self.back.take()) {
            lent.complete = complete;
            let _ = back.send(lent);
        }
    }
}

impl<R> Drop for Streaming<R> {
    fn drop(&mut self) {
        self.give_back(false);
    }
}

/// A request body that failed: the client closed inside it, or its
/// chunked framing was malformed.
#[derive(Debug)]
struct BodyError(&'static str);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request body: {}", self.0)
    }
}

impl std::error::Error for BodyError {}

impl<R: AsyncRead + Unpin> http_body::Body for RequestBody<R> {
    type Data = Bytes;
    type Error = pipeline::proxy::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let s = match self.get_mut() {
            RequestBody::Empty => return Poll::Ready(None),
            RequestBody::Full(data) => return Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            RequestBody::Streaming(s) => s,
        };
        let Some(lent) = s.lent.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(wants) = s.wants_continue.take() {
            // The connection's task writes it, then polls this body again.
            let _ = wants.send(());
        }
        let piece = h1::poll_piece(
            &mut s.framing,
            &mut lent.buf,
            &mut lent.rd,
            &mut s.eof,
            READ_RESERVE,
            cx,
        );
        match ready!(piece) {
            Ok(Some(data)) => {
                // A client (hyper's) may stop polling once it has the
                // length it was told: the last piece ends it here.
                if s.framing == Framing::Length(0) {
                    s.give_back(true);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Ok(None) => {
                s.give_back(true);
                Poll::Ready(None)
            }
            Err(e) => {
                s.give_back(false);
                let why = match e {
                    h1::Error::Framing(why) => why,
                    _ => "the client's connection failed",
                };
                Poll::Ready(Some(Err(Box::new(BodyError(why)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Full(data) => data.is_none(),
            RequestBody::Streaming(s) => s.lent.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            RequestBody::Streaming(s) if s.lent.is_none() => SizeHint::with_exact(0),
            RequestBody::Streaming(s) => s.framing.size_hint(),
        }
    }
}

/// A connection whose first bytes were already read (to look for the
/// HTTP/2 preface): they are read again first.
struct Prefixed<IO> {
    prefix: Bytes,
    io: IO,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(out.remaining());
            let piece = self.prefix.split_to(n);
            out.put_slice(&piece);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, out)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// A client's write half with a send timeout: a write, flush or shutdown
/// that makes no progress for `limit` fails with `TimedOut`, and the
/// connection is closed (nginx's `send_timeout`). The timer is the
/// connection's own, idle while an answer is written, and it is only set
/// when a write has to wait: one that the socket takes at once costs no
/// clock read.
struct Timed<'a, W> {
    wr: &'a mut W,
    sleep: Pin<&'a mut Sleep>,
    limit: Duration,
    /// The timer runs for the write now waiting.
    armed: bool,
}

impl<'a, W: AsyncWrite + Unpin> Timed<'a, W> {
    fn new(wr: &'a mut W, sleep: Pin<&'a mut Sleep>, limit: Duration) -> Self {
        Self {
            wr,
            sleep,
            limit,
            armed: false,
        }
    }

    /// What an inner poll gave: progress disarms the timer, a wait sets it
    /// (once per wait) and fails when it runs out.
    fn timed<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.armed = false;
            return r;
        }
        if !self.armed {
            self.armed = true;
            self.sleep.as_mut().reset(Instant::now() + self.limit);
        }
        ready!(self.sleep.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client accepted no bytes within the send timeout",
        )))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Timed<'_, W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut *this.wr).poll_write(cx, data);
        this.timed(cx, r)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut *this.wr).poll_flush(cx);
        this.timed(cx, r)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut *this.wr).poll_shutdown(cx);
        this.timed(cx, r)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut *this.wr).poll_write_vectored(cx, bufs);
        this.timed(cx, r)
    }
    fn is_write_vectored(&self) -> bool {
        self.wr.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(wire: &str) -> Result<Option<Head>, Reject> {
        parse_request(
            &mut BytesMut::from(wire.as_bytes()),
            16 * 1024,
            HeaderMap::new,
        )
    }

    fn refused(wire: &str) -> String {
        match parse(wire) {
            Err(Reject::Framing(why)) => why.to_owned(),
            Err(Reject::HeadersTooLarge) => "too large".to_owned(),
            Err(other) => panic!("{wire:?}: {other:?}"),
            Ok(Some(_)) => panic!("{wire:?} was accepted"),
            Ok(None) => panic!("{wire:?} is incomplete"),
        }
    }

    #[test]
    fn request_framing_follows_rfc_9112() {
        let head = |wire: &str| parse(wire).unwrap().unwrap();
        let h = head("GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Empty, true));
        assert_eq!(h.parts.uri, "/a?b");
        let h = head("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(12));
        let h = head("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::chunked());
        let h = head("GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("GET / HTTP/1.0\r\n\r\n");
        assert!(!h.keep_alive, "HTTP/1.0 closes unless asked");
        let h = head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(h.keep_alive);
        let h =
            head("PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n");
        assert!(h.expect_continue);
        // An empty line before the request line is ignored (RFC 9112 §2.2).
        let h = head("\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(h.parts.uri, "/b");
        assert!(parse("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
    }

    #[test]
    fn ambiguous_or_malformed_heads_are_refused() {
        for (wire, why) in [
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
                "both",
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n",
                "repeated",
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 4\r\n\r\n",
                "Content-Length",
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\n",
                "Content-Length",
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
                "Content-Length",
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunkedx\r\n\r\n",
                "Transfer-Encoding",
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                "Transfer-Encoding",
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                "Transfer-Encoding",
            ),
            (
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                "Transfer-Encoding",
            ),
            ("GET / HTTP/1.1\r\n\r\n", "Host"),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "Host"),
            (
                "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n",
                "malformed",
            ),
            ("GET / HTTP/1.1\r\nHost : x\r\n\r\n", "malformed"),
            ("GET / HTTP/1.2\r\nHost: x\r\n\r\n", "malformed"),
            ("GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", "malformed"),
            ("G\x7fT / HTTP/1.1\r\nHost: x\r\n\r\n", "malformed"),
            (
                "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
                "malformed",
            ),
            ("SSH-2.0-OpenSSH\r\n\r\n", "malformed"),
        ] {
            let got = refused(wire);
            assert!(got.contains(why), "{wire:?}: {got}");
        }
        // More than 100 fields, or a head over the limit: 431.
        let many: String = (0..101).map(|i| format!("X-{i}: 1\r\n")).collect();
        assert_eq!(
            refused(&format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n")),
            "too large"
        );
        let big = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(17 * 1024)
        );
        assert_eq!(refused(&big), "too large");
        // 40 fields take the larger parse and are accepted.
        let some: String = (0..40).map(|i| format!("X-{i}: 1\r\n")).collect();
        let h = parse(&format!("GET / HTTP/1.1\r\nHost: x\r\n{some}\r\n"))
            .unwrap()
            .unwrap();
        assert_eq!(h.parts.headers.len(), 41);
    }

    #[test]
    fn a_head_is_taken_out_of_the_buffer_and_the_rest_left() {
        let mut buf = BytesMut::from(&b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\n"[..]);
        let h = parse_request(&mut buf, 16 * 1024, HeaderMap::new)
            .unwrap()
            .unwrap();
        assert_eq!(h.parts.uri, "/1");
        assert_eq!(h.parts.headers["host"], "x");
        assert_eq!(&buf[..], b"GET /2 HTTP/1.1\r\n");
        assert!(
            parse_request(&mut buf, 16 * 1024, HeaderMap::new)
                .unwrap()
                .is_none()
        );
    }

    /// A body of unknown length, in pieces (last first).
    struct Pieces(Vec<&'static [u8]>);

    impl http_body::Body for Pieces {
        type Data = Bytes;
        type Error = pipeline::proxy::BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop().map(|p| Ok(Frame::data(Bytes::from_static(p)))))
        }
    }

    async fn answer(
        resp: http::Response<pipeline::proxy::Body>,
        head: bool,
        http10: bool,
    ) -> (String, bool) {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        let keep = write_answer(&mut out, &mut buf, resp, head, http10, true)
            .await
            .unwrap();
        (String::from_utf8(out).unwrap(), keep)
    }

    #[tokio::test]
    async fn answers_are_framed_for_the_connection() {
        let ok = |b: &'static str| {
            let mut r = http::Response::new(pipeline::full(b));
            r.headers_mut()
                .insert("content-length", HeaderValue::from_static("999"));
            r.headers_mut()
                .insert("transfer-encoding", HeaderValue::from_static("chunked"));
            r
        };
        // The body's own length wins over headers that say otherwise.
        let (wire, keep) = answer(ok("hello"), false, false).await;
        assert!(keep);
        assert!(wire.starts_with("HTTP/1.1 200 OK\r\n"), "{wire}");
        assert!(
            wire.contains("content-length: 5\r\n") && !wire.contains("999"),
            "{wire}"
        );
        assert!(
            !wire.contains("transfer-encoding") && wire.contains("date: "),
            "{wire}"
        );
        assert!(wire.ends_with("\r\n\r\nhello"), "{wire}");
        // HEAD: the declared length, no body.
        let (wire, _) = answer(ok("hello"), true, false).await;
        assert!(
            wire.contains("content-length: 999\r\n") && wire.ends_with("\r\n\r\n"),
            "{wire}"
        );
        // A body of unknown length: chunked, or for HTTP/1.0 until the close.
        let stream = || {
            let body = Pieces(vec![b"cde", b"ab"]);
            http::Response::new(http_body_util::BodyExt::boxed(body))
        };
        let (wire, keep) = answer(stream(), false, false).await;
        assert!(
            keep && wire.contains("transfer-encoding: chunked\r\n"),
            "{wire}"
        );
        assert!(
            wire.ends_with("\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"),
            "{wire}"
        );
        let (wire, keep) = answer(stream(), false, true).await;
        assert!(!keep && wire.contains("connection: close\r\n"), "{wire}");
        assert!(wire.ends_with("\r\n\r\nabcde"), "{wire}");
        // An HTTP/1.0 keep-alive answer says so.
        let (wire, keep) = answer(ok("x"), false, true).await;
        assert!(
            keep && wire.contains("connection: keep-alive\r\n"),
            "{wire}"
        );
        // An answer that closes the connection says so, once.
        let mut r = ok("x");
        r.headers_mut()
            .insert("connection", HeaderValue::from_static("close"));
        let (wire, keep) = answer(r, false, false).await;
        assert!(!keep && wire.matches("connection").count() == 1, "{wire}");
        // An upstream's fields as it sent them, but those the gateway set.
        let mut r = ok("x");
        r.headers_mut().clear();
        r.headers_mut()
            .insert("ratelimit-limit", HeaderValue::from_static("2"));
        r.extensions_mut().insert(h1::fields_of(
            b"HTTP/1.1 200 OK\r\nRateLimit-Limit: 99\r\nX-Up: 1\r\nDate: D\r\nContent-Length: 1\r\n\r\n",
        ));
        let (wire, _) = answer(r, false, false).await;
        assert!(
            wire.contains("\r\nX-Up: 1\r\nDate: D\r\nratelimit-limit: 2\r\n"),
            "{wire}"
        );
        assert!(
            !wire.contains("99") && wire.matches("ate: ").count() == 1,
            "{wire}"
        );
        assert_eq!(
            wire.to_ascii_lowercase().matches("content-length").count(),
            1,
            "{wire}"
        );
        // 204: no body and no length.
        let mut r = ok("");
        *r.status_mut() = StatusCode::NO_CONTENT;
        let (wire, _) = answer(r, false, false).await;
        assert!(!wire.contains("content-length"), "{wire}");
    }
}
