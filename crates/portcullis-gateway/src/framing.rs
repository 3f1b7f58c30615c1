//! A guard under hyper that sees each request head as sent. hyper resolves
//! a request carrying both `Transfer-Encoding` and `Content-Length` as
//! chunked and drops the `Content-Length` (RFC 9112 §6.3 permits it), so
//! the pipeline cannot see the conflict. This wrapper parses each head with
//! `httparse` as bytes arrive; a head with both, or with a `Transfer-Encoding`
//! other than a single `chunked`, poisons the connection: the pipeline then
//! answers 400 with `Connection: close`.
//!
//! Request boundaries are followed through `Content-Length` bodies. After a
//! chunked body, heads are no longer inspected: every body is re-framed on
//! its way up (hyper's server decodes it, the upstream client, `h1.rs` or
//! hyper's, encodes it again), so the upstream never sees ambiguous framing
//! either way.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Set when a request head on this connection had ambiguous framing.
#[derive(Clone, Default)]
pub struct Poisoned(pub Arc<AtomicBool>);

impl Poisoned {
    /// Whether the connection is poisoned.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

enum State {
    /// Collecting a head (bytes so far).
    Head(Vec<u8>),
    /// Skipping this many body bytes.
    Body(u64),
    /// No longer inspecting (after a chunked body, or a head too large).
    Off,
}

/// The wrapped connection.
pub struct Guarded<T> {
    inner: T,
    state: State,
    limit: usize,
    poisoned: Poisoned,
}

impl<T> Guarded<T> {
    /// Wraps `inner`; heads over `limit` bytes are left to hyper (431).
    pub fn new(inner: T, limit: usize) -> (Self, Poisoned) {
        let p = Poisoned::default();
        (
            Self {
                inner,
                state: State::Head(Vec::new()),
                limit,
                poisoned: p.clone(),
            },
            p,
        )
    }

    fn observe(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Off => return,
                State::Body(n) => {
                    let take = (*n).min(data.len() as u64) as usize;
                    *n -= take as u64;
                    data = &data[take..];
                    if *n == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::Head(buf) => {
                    // A head that arrives whole in one read (the usual case)
                    // is parsed where it lies; only a partial one is kept.
                    let before = buf.len();
                    let head = if before == 0 {
                        inspect(data)
                    } else {
                        buf.extend_from_slice(data);
                        inspect(buf)
                    };
                    match head {
                        Head::Complete { len, framing } => {
                            self.state = match framing {
                                Framing::Length(0) => State::Head(Vec::new()),
                                Framing::Length(n) => State::Body(n),
                                Framing::Chunked => {
                                    self.state = State::Off;
                                    return;
                                }
                                Framing::Ambiguous => {
                                    self.poisoned.0.store(true, Ordering::Relaxed);
                                    self.state = State::Off;
                                    return;
                                }
                            };
                            let consumed = len.saturating_sub(before);
                            data = &data[consumed.min(data.len())..];
                        }
                        Head::Partial => {
                            if before == 0 {
                                buf.extend_from_slice(data);
                            }
                            if buf.len() > self.limit {
                                self.state = State::Off;
                            }
                            return;
                        }
                        // hyper refuses what httparse cannot parse.
                        Head::Invalid => {
                            self.state = State::Off;
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// How a request head frames its body.
enum Framing {
    /// `Content-Length` (0 when absent).
    Length(u64),
    /// A single `Transfer-Encoding: chunked`.
    Chunked,
    /// Both headers, repeated or unknown codings: the connection is poisoned.
    Ambiguous,
}

enum Head {
    Complete { len: usize, framing: Framing },
    Partial,
    Invalid,
}

/// Parses the head at the start of `buf` (up to 128 headers; hyper allows 100).
fn inspect(buf: &[u8]) -> Head {
    // Uninitialised slots: httparse fills only what it parses, so a request
    // does not pay for writing 128 empty headers first.
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 128];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Invalid,
    };
    let (mut te, mut cl, mut te_ok, mut cl_len) = (0, 0, true, 0u64);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te += 1;
            te_ok &= std::str::from_utf8(h.value)
                .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            cl += 1;
            cl_len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
        }
    }
    let framing = if (te > 0 && cl > 0) || te > 1 || !te_ok {
        Framing::Ambiguous
    } else if te > 0 {
        Framing::Chunked
    } else {
        Framing::Length(cl_len)
    };
    Head::Complete { len, framing }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let start = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            this.observe(&buf.filled()[start..]);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poisoned(parts: &[&[u8]]) -> bool {
        let (mut g, p) = Guarded::new((), 16 * 1024);
        for part in parts {
            g.observe(part);
        }
        p.get()
    }

    #[test]
    fn conflicting_framing_is_caught_across_reads_and_requests() {
        assert!(poisoned(&[
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
        assert!(poisoned(&[
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Le",
            b"ngth: 4\r\n\r\n"
        ]));
        assert!(poisoned(&[
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunkedx\r\n\r\n"
        ]));
        assert!(poisoned(&[
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
        // The second request of a keep-alive connection, after a 5-byte body.
        assert!(poisoned(&[
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
        assert!(!poisoned(&[
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: x\r\n\r\n"
        ]));
        assert!(!poisoned(&[
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        ]));
        // Pipelined: two heads and a body in one read, the bad head split
        // over the next two (the first part parsed in place, then kept).
        assert!(poisoned(&[
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nokPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-",
            b"Encoding: chunked\r\n\r\n"
        ]));
        // A body split across reads, then a good head.
        assert!(!poisoned(&[
            b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nhell",
            b"o worl",
            b"dGET / HTTP/1.1\r\nHost: x\r\n\r\n"
        ]));
    }

    #[test]
    fn a_head_over_the_limit_is_left_to_hyper() {
        let (mut g, p) = Guarded::new((), 32);
        g.observe(b"POST / HTTP/1.1\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        assert!(matches!(g.state, State::Off));
        g.observe(b"\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(!p.get(), "hyper answers 431 for this head, not the guard");
    }
}
