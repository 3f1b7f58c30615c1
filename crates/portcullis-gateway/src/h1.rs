//! HTTP/1.1 to a plain-HTTP upstream, driven in the task of the downstream
//! connection that sends the request.
//!
//! hyper's client runs each connection as a task of its own: a request is
//! queued to it, the answer's head comes back through a oneshot channel and
//! its body through another channel, so a proxied request wakes two tasks
//! several times. Here the downstream connection's task writes the request
//! and reads the answer itself, and a small answer that arrives whole is
//! handed on as one buffer.
//!
//! Parsing is httparse's (the parser under hyper). Message framing follows
//! RFC 9112 §6.3, strictly, because a proxy that reads a body boundary
//! differently from its upstream is a smuggling vector: an answer with both
//! `Transfer-Encoding` and `Content-Length`, with differing or malformed
//! `Content-Length` values, a bad chunk size or an unexpected `101` is an
//! error (502), never guessed at.

use crate::pipeline::propagate::Added;
use crate::pipeline::proxy::{Affinity, Body, BoxError};
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest answer head accepted (status line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// The most header fields an answer may carry (hyper's default too).
const MAX_HEADERS: usize = 100;
/// The most a chunk-size line, or all trailer fields together, may take.
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;
/// Read buffer reserve before each read.
const READ_RESERVE: usize = 16 * 1024;
/// A request body is written once this much is buffered (and at its end).
const WRITE_FLUSH: usize = 64 * 1024;

/// One upstream connection.
pub struct Conn {
    io: TcpStream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum Error {
    /// Connecting failed or timed out.
    Connect,
    /// Reading or writing the socket failed.
    Io(io::Error),
    /// The upstream closed the connection before a whole answer head.
    Closed {
        /// Nothing at all of an answer had arrived.
        nothing_received: bool,
    },
    /// The answer head does not parse.
    Parse(httparse::Error),
    /// The answer head is larger than [`MAX_HEAD`].
    HeadTooLarge,
    /// The answer's framing is ambiguous or malformed.
    Framing(&'static str),
    /// The request body failed (the client went away, or it outgrew its
    /// limit).
    Body(BoxError),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Connect => f.write_str("connect failed or timed out"),
            Error::Io(e) => write!(f, "upstream i/o: {e}"),
            Error::Closed { .. } => f.write_str("upstream closed the connection before answering"),
            Error::Parse(e) => write!(f, "upstream answer head: {e}"),
            Error::HeadTooLarge => f.write_str("upstream answer head too large"),
            Error::Framing(why) => write!(f, "upstream answer framing: {why}"),
            Error::Body(e) => write!(f, "request body: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Body(e) => Some(&**e),
            _ => None,
        }
    }
}

impl Conn {
    /// Opens a connection to `addr` (`TCP_NODELAY`).
    pub async fn connect(addr: SocketAddr) -> Result<Box<Conn>, Error> {
        let io = TcpStream::connect(addr).await.map_err(|_| Error::Connect)?;
        let _ = io.set_nodelay(true);
        Ok(Box::new(Conn {
            io,
            rbuf: BytesMut::with_capacity(READ_RESERVE),
            wbuf: Vec::new(),
        }))
    }

    /// The buffer of this connection's last request head, to encode the
    /// next one in without allocating.
    pub fn take_buffer(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.wbuf)
    }

    /// Whether an idle connection can carry another request: the upstream
    /// has neither closed it nor sent anything unasked. The event loop
    /// already knows whether the socket turned readable, so the common
    /// answer (it did not) costs no system call.
    pub fn usable(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut b = [0u8; 1];
                matches!(self.io.try_read(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }
}

/// A request ready to go: its head encoded, its body waiting.
pub struct Outgoing {
    head: Vec<u8>,
    body: Option<Body>,
    chunked: bool,
    /// The `Content-Length` the head declares; the body sent must match it.
    length: Option<u64>,
    /// The answer has no body whatever its headers say (RFC 9112 §6.3).
    head_request: bool,
    /// Safe to send again on a new connection if the first one turned out
    /// closed: an idempotent method (RFC 9110 §9.2.2) without a body.
    retryable: bool,
}

impl Outgoing {
    /// Encodes `req`, whose target is already in origin form and whose
    /// hop-by-hop headers are already removed, into `buf` (cleared first),
    /// with `host` as its `Host` and the fields the gateway `added`.
    /// Returns the request's header map too, emptied, for the next request
    /// to be parsed into.
    pub fn encode(
        req: http::Request<Body>,
        mut buf: Vec<u8>,
        host: &HeaderValue,
        added: &Added,
    ) -> (Outgoing, HeaderMap) {
        let (mut parts, body) = req.into_parts();
        buf.clear();
        buf.extend_from_slice(parts.method.as_str().as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(
            parts
                .uri
                .path_and_query()
                .map_or("/", http::uri::PathAndQuery::as_str)
                .as_bytes(),
        );
        buf.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        buf.extend_from_slice(host.as_bytes());
        buf.extend_from_slice(b"\r\n");
        for (name, value) in &parts.headers {
            if name == http::header::HOST {
                continue;
            }
            buf.extend_from_slice(name.as_str().as_bytes());
            buf.extend_from_slice(b": ");
            buf.extend_from_slice(value.as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
        added.encode(&mut buf);
        let hint = http_body::Body::size_hint(&body);
        let empty = http_body::Body::is_end_stream(&body);
        let mut chunked = false;
        // A declared length that does not parse is sent as no length at
        // all: the body's own end is then checked against nothing, so the
        // request is refused below instead (`Some(u64::MAX)` never matches).
        let mut length = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .map(|v| parse_length(v.as_bytes()).unwrap_or(u64::MAX));
        if !empty && length.is_none() {
            match hint.exact() {
                Some(n) => {
                    buf.extend_from_slice(b"content-length: ");
                    buf.extend_from_slice(n.to_string().as_bytes());
                    buf.extend_from_slice(b"\r\n");
                    length = Some(n);
                }
                None => {
                    buf.extend_from_slice(b"transfer-encoding: chunked\r\n");
                    chunked = true;
                }
            }
        }
        buf.extend_from_slice(b"\r\n");
        let retryable = empty
            && matches!(
                parts.method,
                Method::GET
                    | Method::HEAD
                    | Method::OPTIONS
                    | Method::TRACE
                    | Method::PUT
                    | Method::DELETE
            );
        let out = Outgoing {
            head: buf,
            body: (!empty).then_some(body),
            chunked,
            length,
            head_request: parts.method == Method::HEAD,
            retryable,
        };
        parts.headers.clear();
        (out, parts.headers)
    }

    /// Whether the request may be sent again on a new connection after `e`
    /// on a held one: the upstream had closed it (EOF or reset, or a write
    /// refused) before anything of an answer came back, and the request is
    /// idempotent and has no body. The caller sends again only what went
    /// out on a held connection.
    pub fn may_retry(&self, e: &Error) -> bool {
        self.retryable
            && matches!(
                e,
                Error::Closed {
                    nothing_received: true
                }
            )
    }
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// `Content-Length`: this many bytes still to come.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// A chunk-size line.
    Size,
    /// This many bytes of chunk data still to come.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer fields after the last chunk; bytes of them seen so far.
    Trailers(usize),
}

/// One step of decoding a body from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Data(Bytes),
    Done,
    More,
    Invalid(&'static str),
}

impl Framing {
    /// A chunked body, from its first chunk-size line.
    pub(crate) fn chunked() -> Framing {
        Framing::Chunked(Chunk::Size)
    }

    /// Takes the next piece of body from `buf`. `eof`: the peer has
    /// closed the connection and `buf` holds all there will be.
    pub(crate) fn step(&mut self, buf: &mut BytesMut, eof: bool) -> Step {
        loop {
            match self {
                Framing::Empty => return Step::Done,
                Framing::Length(0) => return Step::Done,
                Framing::Length(rem) => {
                    if buf.is_empty() {
                        return if eof {
                            Step::Invalid("closed inside the body")
                        } else {
                            Step::More
                        };
                    }
                    let n = usize::try_from(*rem).unwrap_or(usize::MAX).min(buf.len());
                    *rem -= n as u64;
                    return Step::Data(buf.split_to(n).freeze());
                }
                Framing::Close => {
                    if !buf.is_empty() {
                        return Step::Data(buf.split().freeze());
                    }
                    return if eof { Step::Done } else { Step::More };
                }
                Framing::Chunked(c) => match *c {
                    Chunk::Size => {
                        // httparse takes a line without digits as size 0
                        // and a bare LF inside an extension; hyper's own
                        // decoder refuses both, and so does this one.
                        let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
                            if buf.len() > MAX_CHUNK_LINE {
                                return Step::Invalid("chunk-size line too long");
                            }
                            return more(eof);
                        };
                        if lf > MAX_CHUNK_LINE {
                            return Step::Invalid("chunk-size line too long");
                        }
                        if lf == 0 || buf[lf - 1] != b'\r' || !buf[0].is_ascii_hexdigit() {
                            return Step::Invalid("bad chunk-size line");
                        }
                        match httparse::parse_chunk_size(&buf[..=lf]) {
                            Ok(httparse::Status::Complete((used, size))) if used == lf + 1 => {
                                buf.advance(used);
                                *c = if size == 0 {
                                    Chunk::Trailers(0)
                                } else {
                                    Chunk::Data(size)
                                };
                            }
                            _ => return Step::Invalid("bad chunk size"),
                        }
                    }
                    Chunk::Data(rem) => {
                        if buf.is_empty() {
                            return more(eof);
                        }
                        let n = usize::try_from(rem).unwrap_or(usize::MAX).min(buf.len());
                        let left = rem - n as u64;
                        *c = if left == 0 {
                            Chunk::DataEnd
                        } else {
                            Chunk::Data(left)
                        };
                        return Step::Data(buf.split_to(n).freeze());
                    }
                    Chunk::DataEnd => {
                        if buf.len() < 2 {
                            return more(eof);
                        }
                        if &buf[..2] != b"\r\n" {
                            return Step::Invalid("chunk data not followed by CRLF");
                        }
                        buf.advance(2);
                        *c = Chunk::Size;
                    }
                    Chunk::Trailers(seen) => {
                        // Trailer fields are not forwarded; each line is
                        // skipped until the empty one that ends the body.
                        // A line must end in CRLF and hold no other CR or
                        // LF, and a field its colon: a peer that reads a
                        // bare LF as a line end must not see a request
                        // (or an answer) hidden in the trailers.
                        let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
                            if seen + buf.len() > MAX_TRAILERS {
                                return Step::Invalid("trailers too large");
                            }
                            return more(eof);
                        };
                        if lf == 0 || buf[lf - 1] != b'\r' {
                            return Step::Invalid("trailer line not ended by CRLF");
                        }
                        let end = lf - 1;
                        let line = &buf[..end];
                        if line.contains(&b'\r') || (end > 0 && !line.contains(&b':')) {
                            return Step::Invalid("malformed trailer field");
                        }
                        buf.advance(end + 2);
                        if end == 0 {
                            *self = Framing::Length(0);
                            return Step::Done;
                        }
                        if seen + end + 2 > MAX_TRAILERS {
                            return Step::Invalid("trailers too large");
                        }
                        *c = Chunk::Trailers(seen + end + 2);
                    }
                },
            }
        }
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        match self {
            Framing::Empty => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(*n),
            _ => SizeHint::default(),
        }
    }
}

fn more(eof: bool) -> Step {
    if eof {
        Step::Invalid("closed inside the body")
    } else {
        Step::More
    }
}

/// An answer head, parsed.
pub struct Head {
    status: StatusCode,
    fields: Fields,
    framing: Framing,
    keep_alive: bool,
}

/// Sends `out` over `conn` and reads the answer head. On failure the
/// connection is dropped; `out` still holds the request head, so a request
/// without a body can be sent again ([`Outgoing::may_retry`]).
///
/// A request body is written while the answer is awaited: an upstream may
/// answer before it has read the whole body (a 413 for an upload it will
/// not take, say), and that answer is forwarded. The connection is then
/// not used again.
pub async fn exchange(mut conn: Box<Conn>, out: &mut Outgoing) -> Result<(Head, Box<Conn>), Error> {
    let head = match out.body.take() {
        None => {
            if out.length.is_some_and(|n| n != 0) {
                return Err(body_mismatch());
            }
            if conn.io.write_all(&out.head).await.is_err() {
                // Refused before anything was read: as good as closed.
                return Err(Error::Closed {
                    nothing_received: conn.rbuf.is_empty(),
                });
            }
            read_head(&mut conn, out.head_request).await?
        }
        Some(body) => {
            let Conn { io, rbuf, .. } = &mut *conn;
            let (mut rd, mut wr) = io.split();
            let write = write_body(&mut wr, &mut out.head, body, out.chunked, out.length);
            let read = read_head_from(&mut rd, rbuf, out.head_request);
            tokio::pin!(write, read);
            // `None` while the body is being written; then whether all of it
            // went out.
            let mut written: Option<bool> = None;
            loop {
                tokio::select! {
                    w = &mut write, if written.is_none() => match w {
                        Ok(()) => written = Some(true),
                        // The client's side failed: nothing to wait for.
                        Err(e @ Error::Body(_)) => return Err(e),
                        // The upstream stopped reading: its answer, if it
                        // sent one before closing, is still read.
                        Err(_) => written = Some(false),
                    },
                    h = &mut read => {
                        let mut head = h?;
                        // Only a connection that carried the whole request
                        // can carry another.
                        head.keep_alive &= written == Some(true);
                        break head;
                    }
                }
            }
        }
    };
    if out.head.capacity() <= KEEP_BUFFER {
        // The head's buffer is the connection's for its next request.
        out.head.clear();
        conn.wbuf = std::mem::take(&mut out.head);
    }
    Ok((head, conn))
}

/// A request buffer larger than this (it carried a body) is not kept with
/// its connection.
const KEEP_BUFFER: usize = 16 * 1024;

fn body_mismatch() -> Error {
    Error::Body("the request body does not match its Content-Length".into())
}

/// Writes the head in `buf` and then the body (chunked, or checked against
/// `length`). A frame the body has ready goes out with what is buffered (a
/// small body in the head's write); while the body waits, what is buffered
/// is written first, so the peer sees the head at once. Used both ways:
/// requests to upstreams, answers to clients.
pub(crate) async fn write_body<W: tokio::io::AsyncWrite + Unpin>(
    wr: &mut W,
    buf: &mut Vec<u8>,
    mut body: Body,
    chunked: bool,
    length: Option<u64>,
) -> Result<(), Error> {
    let mut sent: u64 = 0;
    loop {
        let ready = std::future::poll_fn(|cx| {
            Poll::Ready(http_body::Body::poll_frame(Pin::new(&mut body), cx))
        })
        .await;
        let frame = match ready {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if !buf.is_empty() {
                    wr.write_all(buf).await.map_err(Error::Io)?;
                    buf.clear();
                }
                body.frame().await
            }
        };
        let Some(frame) = frame else { break };
        let Ok(data) = frame.map_err(Error::Body)?.into_data() else {
            continue; // trailers are not forwarded
        };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        if length.is_some_and(|n| sent > n) {
            return Err(body_mismatch());
        }
        if chunked {
            buf.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            buf.extend_from_slice(&data);
            buf.extend_from_slice(b"\r\n");
        } else {
            buf.extend_from_slice(&data);
        }
        if buf.len() >= WRITE_FLUSH {
            wr.write_all(buf).await.map_err(Error::Io)?;
            buf.clear();
        }
    }
    if length.is_some_and(|n| sent != n) {
        return Err(body_mismatch());
    }
    if chunked {
        buf.extend_from_slice(b"0\r\n\r\n");
    }
    wr.write_all(buf).await.map_err(Error::Io)?;
    buf.clear();
    Ok(())
}

/// Reads and parses the answer head, skipping interim (1xx) answers.
async fn read_head(conn: &mut Conn, head_request: bool) -> Result<Head, Error> {
    let Conn { io, rbuf, .. } = conn;
    let (mut rd, _) = io.split();
    read_head_from(&mut rd, rbuf, head_request).await
}

async fn read_head_from(
    rd: &mut tokio::net::tcp::ReadHalf<'_>,
    rbuf: &mut BytesMut,
    head_request: bool,
) -> Result<Head, Error> {
    // Anything at all of an answer, interim ones included.
    let mut received = !rbuf.is_empty();
    loop {
        if !rbuf.is_empty() {
            received = true;
            match parse_head(rbuf, head_request)? {
                Some(Some(head)) => return Ok(head),
                // An interim answer was taken out: parse again.
                Some(None) => continue,
                None if rbuf.len() > MAX_HEAD => return Err(Error::HeadTooLarge),
                None => {}
            }
        }
        rbuf.reserve(READ_RESERVE);
        match rd.read_buf(rbuf).await {
            Ok(0) => {
                return Err(Error::Closed {
                    nothing_received: !received,
                });
            }
            Ok(_) => {}
            // A reset before any answer is the same as a close.
            Err(e) if !received && e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(Error::Closed {
                    nothing_received: true,
                });
            }
            Err(e) => return Err(Error::Io(e)),
        }
    }
}

/// Parses an answer head at the front of `buf`, taking it out of `buf`.
/// `Ok(None)`: not all there yet. `Ok(Some(None))`: an interim answer,
/// skipped.
#[allow(clippy::option_option)]
fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Option<Head>>, Error> {
    // Most answers have a handful of fields: room for 32 is made first
    // (the slots are initialised for every answer), for 100 only if needed.
    match parse_head_in::<32>(buf, head_request) {
        Err(Error::Parse(httparse::Error::TooManyHeaders)) => {
            match parse_head_in::<MAX_HEADERS>(buf, head_request) {
                Err(Error::Parse(httparse::Error::TooManyHeaders)) => Err(Error::HeadTooLarge),
                r => r,
            }
        }
        r => r,
    }
}

#[allow(clippy::option_option)]
fn parse_head_in<const N: usize>(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<Option<Head>>, Error> {
    // Slots httparse fills as it parses: none is initialised beforehand.
    let mut slots = [const { std::mem::MaybeUninit::uninit() }; N];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => return Err(Error::HeadTooLarge),
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Error::Parse(e)),
    };
    let code = resp.code.unwrap_or(0);
    let http10 = resp.version == Some(0);
    if (100..200).contains(&code) {
        if code == 101 {
            return Err(Error::Framing("101 Switching Protocols was not asked for"));
        }
        buf.advance(len);
        return Ok(Some(None));
    }
    let status = StatusCode::from_u16(code).map_err(|_| Error::Framing("bad status code"))?;
    let fields = &*resp.headers;
    // Names the `Connection` fields list, hop-by-hop for this answer.
    let mut named: Vec<&[u8]> = Vec::new();
    let mut close = http10;
    for f in fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("connection"))
    {
        for token in f.value.split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if http10 && token.eq_ignore_ascii_case(b"keep-alive") {
                close = false;
            } else if !token.is_empty() && hop_by_hop(token).is_none() {
                named.push(token);
            }
        }
    }
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let (mut skip, mut lengths, mut has_date) = (0u128, 0u128, false);
    for (i, f) in fields.iter().enumerate() {
        let name = f.name.as_bytes();
        match hop_by_hop(name) {
            Some(Hop::ContentLength) => {
                let v = parse_length(f.value).ok_or(Error::Framing("bad Content-Length"))?;
                if length.is_some_and(|l| l != v) {
                    return Err(Error::Framing("conflicting Content-Length values"));
                }
                length = Some(v);
                lengths |= 1 << i;
            }
            Some(hop) => {
                if hop == Hop::TransferEncoding {
                    // The last coding of the last field decides (RFC 9112 §6.3).
                    let last = f.value.rsplit(|&b| b == b',').next().unwrap_or_default();
                    chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                }
                skip |= 1 << i;
            }
            None if named.iter().any(|n| n.eq_ignore_ascii_case(name)) => skip |= 1 << i,
            None => has_date |= name.eq_ignore_ascii_case(b"date"),
        }
    }
    // Where the field lines begin: the head is kept from there, and its
    // lines are forwarded as they came.
    let base = buf.as_ptr() as usize;
    let first = fields
        .first()
        .map_or(len, |f| f.name.as_ptr() as usize - base);
    // The forwarded lines in as few spans as they fall in (one, commonly:
    // the framing and hop-by-hop fields come last), each copied whole.
    let end = len
        - if buf[..len].ends_with(b"\r\n\r\n") {
            2
        } else {
            1
        };
    let mut runs = Runs::default();
    for (i, f) in fields.iter().enumerate() {
        if (skip | lengths) & (1 << i) != 0 {
            continue;
        }
        let start = f.name.as_ptr() as usize - base;
        let stop = fields
            .get(i + 1)
            .map_or(end, |g| g.name.as_ptr() as usize - base);
        runs.add(start - first, stop - first, buf[..stop].ends_with(b"\r\n"));
    }
    let lines = buf.split_to(len).freeze().slice(first..);
    let framing = if head_request || code == 204 || code == 304 {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(_), Some(_)) => {
                return Err(Error::Framing("both Transfer-Encoding and Content-Length"));
            }
            (Some(true), None) => Framing::Chunked(Chunk::Size),
            (Some(false), None) | (None, None) => Framing::Close,
            (None, Some(l)) => Framing::Length(l),
        }
    };
    // Chunked framing in an HTTP/1.0 answer is faulty (RFC 9112 §6.1): the
    // body is read as framed, and the connection is not used again.
    let keep_alive = !close && framing != Framing::Close && !(http10 && chunked.is_some());
    Ok(Some(Some(Head {
        status,
        fields: Fields {
            lines,
            runs,
            skip,
            lengths,
            has_date,
        },
        framing,
        keep_alive,
    })))
}

/// The fields of an answer head (tests elsewhere).
#[cfg(test)]
pub(crate) fn fields_of(wire: &[u8]) -> Fields {
    match parse_head(&mut BytesMut::from(wire), false) {
        Ok(Some(Some(h))) => h.fields,
        _ => panic!("not an answer head"),
    }
}

/// The fields an answer's framing or its hop decides (RFC 9110 §7.6.1,
/// RFC 9112 §6), never forwarded as they came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    ContentLength,
    TransferEncoding,
    Other,
}

fn hop_by_hop(name: &[u8]) -> Option<Hop> {
    let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
    // By length first: most names are none of these.
    match name.len() {
        2 if is("te") => Some(Hop::Other),
        7 if is("trailer") || is("upgrade") => Some(Hop::Other),
        10 if is("connection") || is("keep-alive") => Some(Hop::Other),
        14 if is("content-length") => Some(Hop::ContentLength),
        16 if is("proxy-connection") => Some(Hop::Other),
        17 if is("transfer-encoding") => Some(Hop::TransferEncoding),
        18 if is("proxy-authenticate") => Some(Hop::Other),
        _ => None,
    }
}

/// An answer's header fields as the upstream sent them, carried in the
/// forwarded answer's extensions rather than parsed into its `HeaderMap`:
/// for a client on HTTP/1.1 their lines are copied as they are, without
/// the hop-by-hop ones.
#[derive(Clone, Debug)]
pub struct Fields {
    /// The field lines, from the first to the end of the head.
    lines: Bytes,
    /// Where the forwarded ones (`Content-Length` not among them) lie.
    runs: Runs,
    /// Bit i: the i-th field is hop-by-hop, not forwarded.
    skip: u128,
    /// Bit i: the i-th field is `Content-Length`.
    lengths: u128,
    /// Whether a `Date` field is among them.
    pub has_date: bool,
}

/// Spans of consecutive lines in [`Fields::lines`], each with its CRLF.
#[derive(Clone, Copy, Debug, Default)]
struct Runs {
    spans: [(u32, u32); 4],
    n: usize,
    /// More spans than fit, or a line that ended in a bare LF: the lines
    /// are written one by one instead.
    broken: bool,
}

impl Runs {
    fn add(&mut self, start: usize, stop: usize, crlf: bool) {
        // Offsets are below MAX_HEAD.
        let (start, stop) = (start as u32, stop as u32);
        let n = self.n;
        if !crlf {
            self.broken = true;
        } else if n > 0 && self.spans[n - 1].1 == start {
            self.spans[n - 1].1 = stop;
        } else if n < self.spans.len() {
            self.spans[n] = (start, stop);
            self.n = n + 1;
        } else {
            self.broken = true;
        }
    }
}

impl Fields {
    /// Appends the forwarded lines to `buf`, each ending in CRLF, but
    /// those `overridden` has fields of the same name for;
    /// `Content-Length` only with `keep_length`.
    pub fn write_to(&self, buf: &mut Vec<u8>, keep_length: bool, overridden: &HeaderMap) {
        if !keep_length && overridden.is_empty() && !self.runs.broken {
            for &(a, b) in &self.runs.spans[..self.runs.n] {
                buf.extend_from_slice(&self.lines[a as usize..b as usize]);
            }
            return;
        }
        for (name, line) in self.lines(keep_length) {
            if !overridden.is_empty()
                && HeaderName::from_bytes(name).is_ok_and(|n| overridden.contains_key(n))
            {
                continue;
            }
            buf.extend_from_slice(line);
            buf.extend_from_slice(b"\r\n");
        }
    }

    /// Each forwarded field's name and whole line (without its line end);
    /// `Content-Length` only with `keep_length`.
    pub fn lines(&self, keep_length: bool) -> impl Iterator<Item = (&[u8], &[u8])> {
        let skip = self.skip | if keep_length { 0 } else { self.lengths };
        self.lines
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .take_while(|l| !l.is_empty())
            .enumerate()
            .filter(move |(i, _)| *i >= 128 || skip & (1 << i) == 0)
            .map(|(_, l)| {
                let colon = l.iter().position(|&b| b == b':').unwrap_or(l.len());
                (&l[..colon], l)
            })
    }
}

/// A `Content-Length` value: digits only (no sign, no list).
pub(crate) fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Turns an answer head from [`exchange`] into the answer to forward: its
/// body is read from `conn`, which goes back to `home` (under `addr`) once
/// the body has been read to its end if it can carry another request.
pub fn respond(
    head: Head,
    mut conn: Box<Conn>,
    home: &Arc<Affinity>,
    addr: SocketAddr,
) -> Response<Body> {
    let Head {
        status,
        fields,
        framing,
        keep_alive,
    } = head;
    let answer = |body: Body| {
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        resp.extensions_mut().insert(fields);
        resp
    };
    // The common case: the whole body is already here.
    let whole = match framing {
        Framing::Empty => Some(Bytes::new()),
        Framing::Length(n) if n <= conn.rbuf.len() as u64 => {
            Some(conn.rbuf.split_to(n as usize).freeze())
        }
        _ => None,
    };
    if let Some(data) = whole {
        // Bytes beyond the answer were not asked for: the connection is
        // not reused.
        if keep_alive && conn.rbuf.is_empty() {
            home.put(addr, conn);
        }
        let body = http_body_util::Full::new(data).map_err(|never| match never {});
        return answer(body.boxed());
    }
    let body = Incoming {
        conn: Some(conn),
        framing,
        home: keep_alive.then(|| (home.clone(), addr)),
        eof: false,
    };
    answer(body.boxed())
}

/// The next piece of a body framed by `framing`, taken from `buf` and read
/// into it from `rd` as needed (`eof`: `rd` has ended). `Ok(None)`: the body
/// is over. Used both ways: answer bodies from upstreams, request bodies
/// from clients.
pub(crate) fn poll_piece<R: tokio::io::AsyncRead + Unpin>(
    framing: &mut Framing,
    buf: &mut BytesMut,
    rd: &mut R,
    eof: &mut bool,
    reserve: usize,
    cx: &mut Context<'_>,
) -> Poll<Result<Option<Bytes>, Error>> {
    loop {
        match framing.step(buf, *eof) {
            Step::Data(data) => return Poll::Ready(Ok(Some(data))),
            Step::Done => return Poll::Ready(Ok(None)),
            Step::Invalid(why) => return Poll::Ready(Err(Error::Framing(why))),
            Step::More => {
                buf.reserve(reserve);
                match ready!(tokio_util::io::poll_read_buf(Pin::new(&mut *rd), cx, buf)) {
                    Ok(0) => *eof = true,
                    Ok(_) => {}
                    Err(e) => return Poll::Ready(Err(Error::Io(e))),
                }
            }
        }
    }
}

/// An answer body read from its upstream connection as it is polled.
struct Incoming {
    conn: Option<Box<Conn>>,
    framing: Framing,
    /// Where the connection goes after the body, if it can be reused.
    home: Option<(Arc<Affinity>, SocketAddr)>,
    eof: bool,
}

impl Incoming {
    /// The body has been read to its end: the connection goes home if it
    /// can carry another request (nothing unasked after the answer).
    fn finish(&mut self) {
        if let (Some(conn), Some((home, addr))) = (self.conn.take(), self.home.take())
            && !self.eof
            && conn.rbuf.is_empty()
        {
            home.put(addr, conn);
        }
    }
}

impl http_body::Body for Incoming {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        let piece = poll_piece(
            &mut this.framing,
            &mut conn.rbuf,
            &mut conn.io,
            &mut this.eof,
            READ_RESERVE,
            cx,
        );
        match ready!(piece) {
            Ok(Some(data)) => {
                // hyper stops polling a body once it has written the
                // length it was told: the last piece ends it here.
                if this.framing == Framing::Length(0) {
                    this.finish();
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Ok(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Err(e) => {
                this.conn = None;
                Poll::Ready(Some(Err(Box::new(e))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.conn {
            Some(_) => self.framing.size_hint(),
            None => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(framing: Framing, pieces: &[&[u8]]) -> Result<Vec<u8>, &'static str> {
        let mut f = framing;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut pieces = pieces.iter();
        loop {
            let eof = pieces.len() == 0;
            match f.step(&mut buf, eof) {
                Step::Data(d) => out.extend_from_slice(&d),
                Step::Done => return Ok(out),
                Step::Invalid(why) => return Err(why),
                Step::More => buf.extend_from_slice(pieces.next().ok_or("more wanted at eof")?),
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_in_any_split() {
        let wire: &[u8] = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for at in 1..wire.len() {
            let (a, b) = wire.split_at(at);
            assert_eq!(
                decode(Framing::Chunked(Chunk::Size), &[a, b]).unwrap(),
                b"hello world",
                "split at {at}"
            );
        }
        let bytewise: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(
            decode(Framing::Chunked(Chunk::Size), &bytewise).unwrap(),
            b"hello world"
        );
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        for wire in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"fffffffffffffffff\r\n",
            // No digits: httparse alone would read these as the last chunk.
            b"5\r\nhello\r\n\r\n\r\n",
            b"5\r\nhello\r\n  \r\n\r\n",
            b"5\r\nhello\r\n;x\r\n\r\n",
            // A bare LF ends no line.
            b"5;a=b\nc\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
        ] {
            assert!(
                decode(Framing::Chunked(Chunk::Size), &[wire]).is_err(),
                "{wire:?}"
            );
        }
        // Closed before the last chunk.
        assert!(decode(Framing::Chunked(Chunk::Size), &[b"5\r\nhello\r\n"]).is_err());
        // Trailers: CRLF lines of fields only; no request hidden behind a
        // bare LF.
        for wire in [
            &b"0\r\n\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"0\r\nx-t: 1\nGET /admin HTTP/1.1\r\n\r\n",
            b"0\r\nx-t: a\rb\r\n\r\n",
            b"0\r\nno colon here\r\n\r\n",
        ] {
            assert!(
                decode(Framing::Chunked(Chunk::Size), &[wire]).is_err(),
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
        assert_eq!(
            decode(
                Framing::Chunked(Chunk::Size),
                &[b"1\r\na\r\n0\r\nx-t: 1\r\ny: 2\r\n\r\n"]
            )
            .unwrap(),
            b"a"
        );
        let long = vec![b'1'; MAX_CHUNK_LINE + 10];
        assert!(decode(Framing::Chunked(Chunk::Size), &[&long]).is_err());
    }

    #[test]
    fn length_and_close_delimited_bodies() {
        assert_eq!(
            decode(Framing::Length(5), &[b"he", b"llo"]).unwrap(),
            b"hello"
        );
        assert!(decode(Framing::Length(5), &[b"he"]).is_err());
        assert_eq!(decode(Framing::Close, &[b"he", b"llo"]).unwrap(), b"hello");
        assert_eq!(decode(Framing::Empty, &[]).unwrap(), b"");
    }

    fn head(wire: &[u8], head_request: bool) -> Result<Option<Option<Head>>, Error> {
        parse_head(&mut BytesMut::from(wire), head_request)
    }

    fn framing(wire: &[u8]) -> Result<(Framing, bool), String> {
        match head(wire, false) {
            Ok(Some(Some(h))) => Ok((h.framing, h.keep_alive)),
            Ok(other) => Err(format!("not a final head: {}", other.is_some())),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn answer_framing_follows_rfc_9112() {
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n"),
            Ok((Framing::Length(12), true))
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\ncontent-length: 12\r\n\r\n"),
            Ok((Framing::Length(12), true))
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Ok((Framing::Chunked(Chunk::Size), true))
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n"),
            Ok((Framing::Close, false))
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\n\r\n"),
            Ok((Framing::Close, false))
        );
        assert_eq!(
            framing(b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n"),
            Ok((Framing::Empty, true))
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n"),
            Ok((Framing::Length(1), false))
        );
        assert_eq!(
            framing(b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n"),
            Ok((Framing::Length(1), false))
        );
        assert_eq!(
            framing(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\ncontent-length: 1\r\n\r\n"),
            Ok((Framing::Length(1), true))
        );
        // Chunked in HTTP/1.0 is faulty: read as framed, never reused.
        assert_eq!(
            framing(
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n"
            ),
            Ok((Framing::Chunked(Chunk::Size), false))
        );
        // A HEAD answer has no body whatever it says.
        assert!(matches!(
            head(b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n", true),
            Ok(Some(Some(Head {
                framing: Framing::Empty,
                ..
            })))
        ));
        // Interim answers are skipped.
        assert!(matches!(
            head(b"HTTP/1.1 100 Continue\r\n\r\n", false),
            Ok(Some(None))
        ));
        assert!(matches!(
            head(b"HTTP/1.1 200 OK\r\ncontent-le", false),
            Ok(None)
        ));
    }

    #[test]
    fn ambiguous_or_malformed_answers_are_errors() {
        for wire in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nx: a\r\n b\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"SMTP ready\r\n\r\n",
        ] {
            assert!(framing(wire).is_err(), "{}", String::from_utf8_lossy(wire));
        }
        // Up to MAX_HEADERS fields are taken (past the first 32 slots).
        let fifty: String = (0..50).map(|i| format!("x-{i}: {i}\r\n")).collect();
        let wire = format!("HTTP/1.1 200 OK\r\n{fifty}content-length: 0\r\n\r\n");
        let Ok(Some(Some(h))) = head(wire.as_bytes(), false) else {
            panic!("50 fields refused")
        };
        let map = h.fields.map(true);
        assert_eq!(map.len(), 51);
        assert_eq!(map["x-49"], "49");
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
        let wire = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert!(matches!(
            head(wire.as_bytes(), false),
            Err(Error::HeadTooLarge)
        ));
    }

    impl Fields {
        /// The forwarded fields as a header map.
        fn map(&self, keep_length: bool) -> HeaderMap {
            let mut m = HeaderMap::new();
            for (name, line) in self.lines(keep_length) {
                let value = line.get(name.len() + 1..).unwrap_or_default().trim_ascii();
                m.append(
                    HeaderName::from_bytes(name).unwrap(),
                    HeaderValue::from_bytes(value).unwrap(),
                );
            }
            m
        }
    }

    #[test]
    fn fields_are_forwarded_as_they_came_but_the_hop_by_hop_ones() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nX-A:  one \r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: 5\r\n\
               x-secret: s\r\nContent-Length: 4\r\nUpgrade: h2c\r\nTE: trailers\r\nx-b: two\r\n\r\nBODY"[..],
        );
        let h = parse_head(&mut buf, false).unwrap().unwrap().unwrap();
        assert_eq!(&buf[..], b"BODY");
        assert!(!h.fields.has_date);
        let lines: Vec<&[u8]> = h.fields.lines(false).map(|(_, l)| l).collect();
        assert_eq!(lines, [&b"X-A:  one "[..], b"x-b: two"]);
        let names: Vec<&[u8]> = h.fields.lines(true).map(|(n, _)| n).collect();
        assert_eq!(names, [&b"X-A"[..], b"Content-Length", b"x-b"]);
        let map = h.fields.map(false);
        assert_eq!(map.len(), 2);
        assert_eq!(map["x-a"], "one");
        assert_eq!(map["x-b"], "two");
        // Bare line feeds (httparse takes them) end lines as well.
        let mut buf = BytesMut::from(&b"HTTP/1.1 204 No Content\nDate: x\nx-c: 3\n\n"[..]);
        let h = parse_head(&mut buf, false).unwrap().unwrap().unwrap();
        assert!(h.fields.has_date && buf.is_empty());
        let lines: Vec<&[u8]> = h.fields.lines(false).map(|(_, l)| l).collect();
        assert_eq!(lines, [&b"Date: x"[..], b"x-c: 3"]);
        // Written out: in spans as they lay, or line by line (a bare LF, or
        // more spans than kept), always with CRLF.
        let written = |wire: &[u8], keep_length: bool| {
            let mut out = Vec::new();
            fields_of(wire).write_to(&mut out, keep_length, &HeaderMap::new());
            String::from_utf8(out).unwrap()
        };
        let wire = b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nConnection: close\r\nC: 3\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(written(wire, false), "A: 1\r\nB: 2\r\nC: 3\r\n");
        assert_eq!(
            written(wire, true),
            "A: 1\r\nB: 2\r\nC: 3\r\nContent-Length: 0\r\n"
        );
        let wire = b"HTTP/1.1 200 OK\r\nA: 1\nB: 2\r\n\n";
        assert_eq!(written(wire, false), "A: 1\r\nB: 2\r\n");
        let wire = b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\n\r\n";
        assert_eq!(written(wire, false), "A: 1\r\nB: 2\r\n");
        let wire = b"HTTP/1.1 200 OK\r\nA: 1\r\nTE: x\r\nB: 2\r\nTE: x\r\nC: 3\r\nTE: x\r\nD: 4\r\nTE: x\r\nE: 5\r\n\r\n";
        assert_eq!(
            written(wire, false),
            "A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n"
        );
        assert_eq!(
            written(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", false),
            ""
        );
        // No fields at all.
        let mut buf = BytesMut::from(&b"HTTP/1.1 204 No Content\r\n\r\n"[..]);
        let h = parse_head(&mut buf, false).unwrap().unwrap().unwrap();
        assert_eq!(h.fields.lines(true).count(), 0);
    }
}
