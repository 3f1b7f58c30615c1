//! The access log's JSON line, written straight to stdout.
//!
//! `tracing`'s JSON formatter spends about 22k instructions on one access
//! record (a visitor per field, `Display` into strings, UTF-8 checks, the
//! date), as many as proxying the request itself, and took the open route's
//! throughput to 0.68× with `--log info` (bench/gateway/run.sh). With JSON
//! logs, the binary calls [`write_json_directly`] and each record is written
//! here instead: the same keys and values as the formatter's line, strings
//! escaped by serde_json, numbers by serde_json's itoa and ryu, and the
//! timestamp's date and time formatted once per second per thread. With text
//! logs (and in tests that never call it), records still go through
//! `tracing`. Whether a record is written at all is always `tracing`'s
//! filter's decision (`--log`, target `portcullis::access`).
//!
//! Each worker thread gathers whole lines and writes them with one `write`
//! when they reach `[access_log] buffer_bytes` (default 64 KiB), when its
//! tick ([`tick`]) finds the oldest has waited `flush_ms` (default 1 s),
//! and when the worker stops accepting ([`stop_gathering`]; its drain's
//! lines are written at once): nginx's `access_log ... buffer= flush=`. A
//! `write` per line to a pipe (a container runtime's stdout) cost about
//! 40 % of the throughput (bench/gateway/access_log.sh).
//! `buffer_bytes = 0` writes each line at once ([`configure`]).

use std::cell::RefCell;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

static DIRECT_JSON: AtomicBool = AtomicBool::new(false);
/// `[access_log] buffer_bytes`: 0, every line at once (until [`configure`]:
/// tests that log without a gateway).
static BUFFER_BYTES: AtomicUsize = AtomicUsize::new(0);
/// `[access_log] flush_ms`.
static FLUSH_MS: AtomicU64 = AtomicU64::new(1_000);

/// Writes access-log records as JSON lines to stdout directly, not through
/// the `tracing` subscriber. Call it when the subscriber writes JSON to
/// stdout, so that every line has the same shape.
pub fn write_json_directly(on: bool) {
    DIRECT_JSON.store(on, Ordering::Relaxed);
}

/// Applies `[access_log]` (at start and on every reload). Lines already
/// gathered are written by the next line or tick under the new settings.
pub fn configure(c: &crate::config::AccessLog) {
    BUFFER_BYTES.store(c.buffer_bytes, Ordering::Relaxed);
    let ms = u64::try_from(c.flush.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    FLUSH_MS.store(ms, Ordering::Relaxed);
}

/// How long a worker waits between two [`tick`]s: `flush_ms` while lines
/// are gathered, never more than a second.
pub fn tick_period() -> Duration {
    if BUFFER_BYTES.load(Ordering::Relaxed) == 0 {
        return Duration::from_secs(1);
    }
    Duration::from_millis(FLUSH_MS.load(Ordering::Relaxed).min(1_000))
}

/// A worker's tick: writes the thread's gathered lines if the oldest
/// would otherwise wait longer than `flush_ms` for the next tick.
pub fn tick() {
    let flush = Duration::from_millis(FLUSH_MS.load(Ordering::Relaxed));
    let period = tick_period();
    LINE.with_borrow_mut(|line| {
        if line.due(Instant::now(), period, flush) {
            line.write_out(&mut std::io::stdout().lock());
        }
    });
}

/// For a worker that stops accepting: writes its gathered lines, and
/// every later line of the thread at once. The drain may outlast the
/// shutdown grace, and the process then exits without waiting for it.
pub fn stop_gathering() {
    LINE.with_borrow_mut(|line| {
        line.stopping = true;
        if !line.buf.is_empty() {
            line.write_out(&mut std::io::stdout().lock());
        }
    });
}

/// One request's record.
pub(super) struct Record<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub auth: &'a str,
    pub subject: &'a str,
    pub upstream: &'a str,
    pub client: IpAddr,
    pub ms: f64,
}

/// A thread's lines not yet written, when they started to gather, whether
/// its worker is stopping (nothing more is gathered), and its cached
/// `YYYY-MM-DDTHH:MM:SS`.
struct Line {
    buf: Vec<u8>,
    first_at: Option<Instant>,
    stopping: bool,
    second: Option<u64>,
    date_time: [u8; 19],
}

thread_local! {
    static LINE: RefCell<Line> = const {
        RefCell::new(Line { buf: Vec::new(), first_at: None, stopping: false, second: None, date_time: [b'0'; 19] })
    };
}

/// Logs `r`: written here with JSON logs, through `tracing` otherwise.
pub(super) fn emit(r: &Record<'_>) {
    if DIRECT_JSON.load(Ordering::Relaxed) {
        write(r);
        return;
    }
    tracing::info!(
        target: "portcullis::access",
        method = %r.method,
        path = %r.path,
        route = r.route,
        status = r.status,
        auth = r.auth,
        subject = %r.subject,
        upstream = %r.upstream,
        client = %r.client,
        ms = r.ms,
    );
}

/// Writes `r` as one line to stdout, or gathers it with the thread's
/// others (`buffer_bytes`). A failed write is dropped: the log never fails
/// a request.
fn write(r: &Record<'_>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let gather = BUFFER_BYTES.load(Ordering::Relaxed);
    LINE.with_borrow_mut(|line| {
        if line.add(r, now, gather) {
            line.write_out(&mut std::io::stdout().lock());
        }
    });
}

impl Line {
    /// Appends `r`'s line; `true`: the lines are to be written now (they
    /// reached `gather` bytes; with 0, every line).
    fn add(&mut self, r: &Record<'_>, now: Duration, gather: usize) -> bool {
        let gather = if self.stopping { 0 } else { gather };
        if gather > 0 && self.first_at.is_none() {
            self.first_at = Some(Instant::now());
        }
        self.format(r, now);
        self.buf.len() >= gather
    }

    /// Whether a tick at `now`, the next one `period` later, is the last
    /// before the oldest gathered line has waited `flush`.
    fn due(&self, now: Instant, period: Duration, flush: Duration) -> bool {
        self.first_at
            .is_some_and(|at| now.saturating_duration_since(at) + period >= flush)
    }

    /// One `write` of every gathered line: whole lines only, so that no
    /// other thread's lines land inside one (writes to stdout hold its
    /// lock). A failed write drops the lines.
    fn write_out(&mut self, out: &mut dyn Write) {
        let _ = out.write_all(&self.buf);
        self.buf.clear();
        self.first_at = None;
        // A buffer that once grew past the setting (a reload made it
        // smaller, or one long line) does not keep that size.
        let keep = BUFFER_BYTES.load(Ordering::Relaxed).max(4096) * 2;
        if self.buf.capacity() > keep {
            self.buf = Vec::new();
        }
    }

    /// Appends `r`'s line to the buffer.
    fn format(&mut self, r: &Record<'_>, now: Duration) {
        let secs = now.as_secs();
        if self.second != Some(secs) {
            self.date_time = date_time(secs);
            self.second = Some(secs);
        }
        let b = &mut self.buf;
        b.extend_from_slice(b"{\"timestamp\":\"");
        b.extend_from_slice(&self.date_time);
        b.push(b'.');
        let mut micros = [0u8; 6];
        digits(&mut micros, now.subsec_micros());
        b.extend_from_slice(&micros);
        b.extend_from_slice(b"Z\",\"level\":\"INFO\"");
        string(b, "method", r.method);
        string(b, "path", r.path);
        string(b, "route", r.route);
        b.extend_from_slice(b",\"status\":");
        let _ = serde_json::to_writer(&mut *b, &r.status);
        string(b, "auth", r.auth);
        string(b, "subject", r.subject);
        string(b, "upstream", r.upstream);
        b.extend_from_slice(b",\"client\":\"");
        match r.client {
            IpAddr::V4(ip) => {
                for (i, octet) in ip.octets().iter().enumerate() {
                    if i > 0 {
                        b.push(b'.');
                    }
                    let _ = serde_json::to_writer(&mut *b, octet);
                }
            }
            IpAddr::V6(ip) => {
                let _ = write!(b, "{ip}");
            }
        }
        b.extend_from_slice(b"\",\"ms\":");
        // serde_json writes a non-finite number as null.
        let _ = serde_json::to_writer(&mut *b, &r.ms);
        b.extend_from_slice(b",\"target\":\"portcullis::access\"}\n");
    }
}

/// Appends `,"key":"value"` with the value escaped as JSON.
fn string(b: &mut Vec<u8>, key: &str, value: &str) {
    b.extend_from_slice(b",\"");
    b.extend_from_slice(key.as_bytes());
    b.extend_from_slice(b"\":");
    let _ = serde_json::to_writer(&mut *b, value);
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of a Unix time, as the subscriber writes it.
fn date_time(secs: u64) -> [u8; 19] {
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut out = *b"0000-00-00T00:00:00";
    digits(&mut out[0..4], u32::try_from(t.year()).unwrap_or(0));
    digits(&mut out[5..7], u32::from(u8::from(t.month())));
    digits(&mut out[8..10], u32::from(t.day()));
    digits(&mut out[11..13], u32::from(t.hour()));
    digits(&mut out[14..16], u32::from(t.minute()));
    digits(&mut out[17..19], u32::from(t.second()));
    out
}

/// Writes `v` in decimal into `out`, zero-padded to its length (the lowest
/// digits if it is longer).
fn digits(out: &mut [u8], mut v: u32) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn empty() -> Line {
        Line {
            buf: Vec::new(),
            first_at: None,
            stopping: false,
            second: None,
            date_time: [b'0'; 19],
        }
    }

    fn line(r: &Record<'_>, now: Duration) -> String {
        let mut l = empty();
        l.format(r, now);
        String::from_utf8(l.buf).unwrap()
    }

    fn record<'a>(subject: &'a str, path: &'a str, client: IpAddr) -> Record<'a> {
        Record {
            method: "GET",
            path,
            route: "open",
            status: 200,
            auth: "api_key",
            subject,
            upstream: "echo",
            client,
            ms: 0.4375,
        }
    }

    #[test]
    fn a_record_is_one_json_line_with_the_formatters_keys() {
        // 2024-02-29T23:59:59.000042Z
        let now = Duration::new(1_709_251_199, 42_000);
        let text = line(&record("alice", "/open", "10.0.0.7".parse().unwrap()), now);
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({
                "timestamp": "2024-02-29T23:59:59.000042Z", "level": "INFO",
                "method": "GET", "path": "/open", "route": "open", "status": 200,
                "auth": "api_key", "subject": "alice", "upstream": "echo",
                "client": "10.0.0.7", "ms": 0.4375, "target": "portcullis::access",
            })
        );
        let epoch = line(&record("", "/", "::1".parse().unwrap()), Duration::ZERO);
        let v: Value = serde_json::from_str(&epoch).unwrap();
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000000Z");
        assert_eq!(v["client"], "::1");
    }

    #[test]
    fn hostile_values_stay_inside_their_string_and_the_line() {
        // A token's `sub` is the caller's choice: quotes, a newline and
        // control characters must not end the string, the record or the line.
        let subject = "a\"}\n{\"level\":\"ERROR\u{1}\\";
        let text = line(
            &record(subject, "/x\"y", "127.0.0.1".parse().unwrap()),
            Duration::new(1, 999_999_999),
        );
        assert_eq!(text.matches('\n').count(), 1);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["subject"], subject);
        assert_eq!(v["path"], "/x\"y");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["timestamp"], "1970-01-01T00:00:01.999999Z");
    }

    #[test]
    fn the_cached_second_moves_on() {
        let mut l = empty();
        let r = record("s", "/", "127.0.0.1".parse().unwrap());
        for (secs, want) in [
            (59, "1970-01-01T00:00:59.000000Z"),
            (60, "1970-01-01T00:01:00.000000Z"),
            (4_102_444_800, "2100-01-01T00:00:00.000000Z"),
        ] {
            l.buf.clear();
            l.format(&r, Duration::from_secs(secs));
            let v: Value = serde_json::from_slice(&l.buf).unwrap();
            assert_eq!(v["timestamp"], want);
        }
        l.buf.clear();
        l.format(&r, Duration::new(60, 5_000));
        let v: Value = serde_json::from_slice(&l.buf).unwrap();
        assert_eq!(v["timestamp"], "1970-01-01T00:01:00.000005Z");
    }

    #[test]
    fn unbuffered_every_line_is_written_alone() {
        let mut l = empty();
        let r = record("s", "/", "127.0.0.1".parse().unwrap());
        let mut out = Vec::new();
        for i in 1..=3 {
            assert!(l.add(&r, Duration::from_secs(i), 0), "written at once");
            assert_eq!(l.first_at, None);
            l.write_out(&mut out);
            assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), i as usize);
        }
        assert!(l.buf.is_empty());
    }

    #[test]
    fn buffered_lines_are_written_whole_once_they_reach_the_size() {
        let mut l = empty();
        let r = record("s", "/", "127.0.0.1".parse().unwrap());
        let one = line(&r, Duration::from_secs(1)).len();
        // Room for two lines and a half: the third line reaches it.
        let gather = one * 5 / 2;
        assert!(!l.add(&r, Duration::from_secs(1), gather));
        let started = l.first_at.expect("the first line starts the wait");
        assert!(!l.add(&r, Duration::from_secs(1), gather));
        assert_eq!(l.first_at, Some(started), "the oldest line's wait");
        assert!(l.add(&r, Duration::from_secs(1), gather));
        let mut out = Vec::new();
        l.write_out(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 3);
        for each in text.lines() {
            let v: Value = serde_json::from_str(each).unwrap();
            assert_eq!(v["target"], "portcullis::access");
        }
        assert!(l.buf.is_empty() && l.first_at.is_none());
    }

    #[test]
    fn a_stopping_worker_gathers_nothing() {
        let mut l = empty();
        let r = record("s", "/", "127.0.0.1".parse().unwrap());
        assert!(!l.add(&r, Duration::from_secs(1), 65_536));
        l.stopping = true;
        assert!(l.add(&r, Duration::from_secs(1), 65_536), "written at once");
        let mut out = Vec::new();
        l.write_out(&mut out);
        assert_eq!(String::from_utf8(out).unwrap().lines().count(), 2);
    }

    #[test]
    fn a_tick_writes_the_lines_before_the_oldest_would_wait_past_the_flush() {
        let mut l = empty();
        let (period, flush) = (Duration::from_secs(1), Duration::from_secs(5));
        let now = Instant::now();
        assert!(!l.due(now, period, flush), "nothing gathered");
        l.first_at = Some(now);
        assert!(!l.due(now, period, flush));
        assert!(!l.due(now + Duration::from_millis(3_999), period, flush));
        assert!(l.due(now + Duration::from_secs(4), period, flush));
        // flush <= period: every tick writes.
        assert!(l.due(now, Duration::from_millis(200), Duration::from_millis(200)));
    }
}
