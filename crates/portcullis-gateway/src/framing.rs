//! A guard under hyper that sees each request head as sent. hyper resolves
//! a request carrying both `Transfer-Encoding` and `Content-Length` as
//! chunked and drops the `Content-Length` (RFC 9112 §6.3 permits it), so
//! the pipeline cannot see the conflict. This wrapper parses each head with
//! `httparse` as bytes arrive; a head with both, or with a `Transfer-Encoding`
//! other than a single `chunked`, poisons the connection: the pipeline then
//! answers 400 with `Connection: close`.
//!
//! Request boundaries are followed through `Content-Length` bodies. After a
//! chunked body, heads are no longer inspected: hyper re-frames everything
//! it forwards, so the upstream never sees ambiguous framing either way.

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
                    let before = buf.len();
                    buf.extend_from_slice(data);
                    let mut headers = [httparse::EMPTY_HEADER; 128];
                    let mut req = httparse::Request::new(&mut headers);
                    match req.parse(buf) {
                        Ok(httparse::Status::Complete(len)) => {
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
                            if (te > 0 && cl > 0) || te > 1 || !te_ok {
                                self.poisoned.0.store(true, Ordering::Relaxed);
                                self.state = State::Off;
                                return;
                            }
                            let consumed = len - before;
                            data = &data[consumed.min(data.len())..];
                            self.state = if te > 0 {
                                State::Off
                            } else if cl_len > 0 {
                                State::Body(cl_len)
                            } else {
                                State::Head(Vec::new())
                            };
                        }
                        Ok(httparse::Status::Partial) => {
                            if buf.len() > self.limit {
                                self.state = State::Off;
                            }
                            return;
                        }
                        // hyper refuses what httparse cannot parse.
                        Err(_) => {
                            self.state = State::Off;
                            return;
                        }
                    }
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let start = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let fresh = buf.filled()[start..].to_vec();
            self.observe(&fresh);
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
    }
}
