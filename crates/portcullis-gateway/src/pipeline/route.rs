//! Phase 1: normalize the request path and match a route.
//!
//! The normalized path is both what routes are matched against and what is
//! forwarded, so no spelling of a protected path reaches an upstream
//! without its route's checks:
//! - percent-encoded unreserved characters are decoded (`%61` → `a`); other
//!   escapes are kept, with upper-case hex, and raw non-ASCII characters are
//!   percent-encoded (`/é` → `/%C3%A9`), so the normal form is ASCII and
//!   normalizing it again changes nothing;
//! - `//` collapses, `.` and `..` segments are resolved (never above `/`);
//! - refused outright (400): encoded `/` or `\` (`%2F`, `%5C`), encoded
//!   `%` (`%25`, double encoding), NUL or control characters, a raw `\`,
//!   `;` path parameters, segments ending in `.` or a space (`/admin.`,
//!   `/admin%20`), which some servers treat as the name without them, and
//!   overlong UTF-8 (`%C0%AF`), which lax decoders read as ASCII (`/`);
//! - prefixes match case-insensitively on segment boundaries, so `/ADMIN`
//!   gets the checks of `/admin` (for upstreams that ignore case). That
//!   includes the non-ASCII characters whose Unicode case mapping is ASCII
//!   (see [`ascii_fold`]): `/adm%C4%B1n` (dotless `ı`, upper-case `I`) is
//!   under `/admin` too.

use crate::config::Route;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Does not start with `/`.
    #[error("path must start with /")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-encoding")]
    BadEscape,
    /// An encoding that different servers read differently.
    #[error("ambiguous path encoding")]
    Ambiguous,
    /// `..` above the root.
    #[error("path escapes the root")]
    AboveRoot,
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The byte that the escape at `i` (`%XX`) stands for.
fn escape_at(bytes: &[u8], i: usize) -> Option<u8> {
    match *bytes.get(i..i + 3)? {
        [b'%', h, l] => Some(hex(h)? * 16 + hex(l)?),
        _ => None,
    }
}

/// Appends `%XX`, upper-case hex.
fn push_escape(out: &mut String, b: u8) {
    out.extend(escape(b).map(char::from));
}

/// `%XX` for `b`, upper-case hex.
fn escape(b: u8) -> [u8; 3] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    [b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]
}

/// Whether an escaped byte can be no part of UTF-8 that a decoder should
/// take: `C0` and `C1` begin only overlong forms, which lax decoders have
/// read as ASCII (`C0 AF` as `/`, even `C0 6F` when they mask bits). The
/// other overlong and out-of-range forms are refused by [`overlong`].
fn never_utf8(b: u8) -> bool {
    matches!(b, 0xC0 | 0xC1)
}

/// Whether byte `next` after byte `lead` makes an overlong UTF-8 sequence
/// (`E0 80 AE` for `.`) or one past U+10FFFF.
fn overlong(lead: u8, next: u8) -> bool {
    match lead {
        0xE0 => (0x80..=0x9F).contains(&next),
        0xF0 => (0x80..=0x8F).contains(&next),
        0xF4 => (0x90..=0xBF).contains(&next),
        0xF5..=0xFF => (0x80..=0xBF).contains(&next),
        _ => false,
    }
}

/// Whether `path` is already in normal form: nothing to decode, resolve or
/// refuse (most paths). Printable ASCII without `%`, `\\` or `;`, no empty
/// segment but a trailing one, no segment ending in `.` (which covers `.`
/// and `..`). For such a path [`normalize`] returns it unchanged; the test
/// `the_fast_path_agrees_with_the_full_normalization` holds them to it.
fn is_normal(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if !path
        .bytes()
        .all(|c| (0x21..0x7f).contains(&c) && !matches!(c, b'%' | b'\\' | b';'))
    {
        return false;
    }
    let mut segments = rest.split('/').peekable();
    while let Some(s) = segments.next() {
        let last = segments.peek().is_none();
        if (s.is_empty() && !last) || s.ends_with('.') {
            return false;
        }
    }
    true
}

/// Normalizes a request path (without query). A path already in normal
/// form is returned as it is (borrowed): the caller can then forward the
/// request's own target unchanged.
pub fn normalize(path: &str) -> Result<std::borrow::Cow<'_, str>, PathError> {
    if is_normal(path) {
        return Ok(std::borrow::Cow::Borrowed(path));
    }
    normalize_full(path).map(std::borrow::Cow::Owned)
}

/// [`normalize`] without the fast path.
fn normalize_full(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // Decode unreserved escapes; refuse the ambiguous ones; encode raw
    // non-ASCII bytes (the UTF-8 of the path's characters).
    let mut decoded = String::with_capacity(path.len());
    // The byte the previous escape stood for, while escapes follow each
    // other: an overlong UTF-8 sequence is two or more of them.
    let mut escaped_before: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let Some(v) = escape_at(bytes, i) else {
                    return Err(PathError::BadEscape);
                };
                if unreserved(v) {
                    decoded.push(v as char);
                } else if matches!(v, b'/' | b'\\' | b'%' | b';')
                    || v < 0x20
                    || v == 0x7f
                    || never_utf8(v)
                    || escaped_before.is_some_and(|lead| overlong(lead, v))
                {
                    return Err(PathError::Ambiguous);
                } else {
                    push_escape(&mut decoded, v);
                }
                escaped_before = Some(v);
                i += 3;
                continue;
            }
            b'\\' | b';' => return Err(PathError::Ambiguous),
            _ if b < 0x20 || b == 0x7f => return Err(PathError::Ambiguous),
            // Raw non-ASCII (valid UTF-8: the path is a str) and a raw
            // space, which HTTP/1 never lets through, as escapes.
            _ if b >= 0x80 || b == b' ' => push_escape(&mut decoded, b),
            _ => decoded.push(b as char),
        }
        escaped_before = None;
        i += 1;
    }
    // Resolve segments.
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            s if s.ends_with('.') || s.ends_with("%20") => return Err(PathError::Ambiguous),
            s => out.push(s),
        }
    }
    let trailing = decoded.ends_with('/') && !out.is_empty();
    let mut n = String::with_capacity(decoded.len());
    for s in &out {
        n.push('/');
        n.push_str(s);
    }
    if n.is_empty() || trailing {
        n.push('/');
    }
    Ok(n)
}

/// The ASCII that a non-ASCII character's Unicode case mapping gives, if
/// all of it is ASCII: an upstream comparing paths ignoring case (Java's
/// `equalsIgnoreCase` maps each character both ways) takes `adm\u{131}n`
/// for `admin`. `İ` (U+0130) is here for its simple lower-case mapping,
/// `i`. The test `ascii_fold_covers_unicode` holds this list to the
/// Unicode tables of the standard library.
fn ascii_fold(c: char) -> Option<&'static str> {
    Some(match c {
        '\u{DF}' | '\u{1E9E}' => "ss",
        '\u{130}' | '\u{131}' => "i",
        '\u{17F}' => "s",
        '\u{212A}' => "k",
        '\u{FB00}' => "ff",
        '\u{FB01}' => "fi",
        '\u{FB02}' => "fl",
        '\u{FB03}' => "ffi",
        '\u{FB04}' => "ffl",
        '\u{FB05}' | '\u{FB06}' => "st",
        _ => return None,
    })
}

/// One character for every spelling that differs only in case: the lower
/// case of the upper case (`É` and `é` → `é`, `ς` → `σ`), where both
/// mappings are one character; else the lower case, where that is one
/// (`ᾼ` → `ᾳ`, whose upper case is two); else the character.
fn case_fold(c: char) -> char {
    fn single(mut m: impl Iterator<Item = char>) -> Option<char> {
        match (m.next(), m.next()) {
            (Some(x), None) => Some(x),
            _ => None,
        }
    }
    single(c.to_uppercase())
        .and_then(|u| single(u.to_lowercase()))
        .or_else(|| single(c.to_lowercase()))
        .unwrap_or(c)
}

/// Calls `piece` with each piece of a normalized path as matching sees it,
/// and the path's length up to the end of that piece, until `piece`
/// returns false. A piece is one byte of the path; an escape of printable
/// ASCII but `/ % ? #`, decoded; or a character spelled in escapes (its
/// UTF-8, 2 to 4 of them): its [`ascii_fold`] if it has one, else the
/// escapes of its [`case_fold`] (upper-case hex).
fn fold_pieces(path: &str, mut piece: impl FnMut(&[u8], usize) -> bool) {
    let bytes = path.as_bytes();
    // A decoded byte, or the escapes of a folded character.
    let mut buf = [0u8; 12];
    let mut i = 0;
    while i < bytes.len() {
        let (text, used): (&[u8], usize) = match escape_at(bytes, i) {
            // Printable ASCII is that character to every upstream that
            // decodes the path: `%3A` is `:`.
            Some(v) if (0x20..0x7f).contains(&v) && !matches!(v, b'/' | b'%' | b'?' | b'#') => {
                buf[0] = v;
                (&buf[..1], 3)
            }
            Some(lead) => match escaped_char(bytes, i, lead) {
                Some((c, len)) => (fold_char(c, &mut buf), 3 * len),
                None => (&bytes[i..=i], 1),
            },
            None => (&bytes[i..=i], 1),
        };
        i += used;
        if !piece(text, i) {
            return;
        }
    }
}

/// The character whose UTF-8 the escapes at `i` spell, the first being
/// `lead`, and how many escapes that is.
fn escaped_char(bytes: &[u8], i: usize, lead: u8) -> Option<(char, usize)> {
    let len = match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => return None,
    };
    let mut utf8 = [0u8; 4];
    for (k, b) in utf8[..len].iter_mut().enumerate() {
        *b = escape_at(bytes, i + 3 * k)?;
    }
    let c = std::str::from_utf8(&utf8[..len]).ok()?.chars().next()?;
    Some((c, len))
}

/// `c` as matching sees it: its [`ascii_fold`], else the escapes of its
/// [`case_fold`], written into `buf`.
fn fold_char(c: char, buf: &mut [u8; 12]) -> &[u8] {
    if let Some(ascii) = ascii_fold(c) {
        return ascii.as_bytes();
    }
    let mut utf8 = [0u8; 4];
    let utf8 = case_fold(c).encode_utf8(&mut utf8).as_bytes();
    for (k, &b) in utf8.iter().enumerate() {
        buf[3 * k..3 * k + 3].copy_from_slice(&escape(b));
    }
    &buf[..3 * utf8.len()]
}

/// A request's host as routes' hosts are kept: without its port and
/// trailing dots (compared ignoring case).
pub fn bare_host(host: &str) -> &str {
    host.rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
        .trim_end_matches('.')
}

/// A normalized path as route matching compares it: ASCII letters in lower
/// case, escapes of printable ASCII but `/ % ? #` decoded (`%3A` → `:`),
/// each character spelled in escapes case-folded (`/CAF%C3%89` →
/// `/caf%C3%A9`, escapes in upper-case hex) and those whose case mapping
/// is ASCII folded to it (`/ADM%C4%B1N` → `/admin`). Route prefixes are
/// kept in this form; policies get the path in it as `match_path`.
pub fn folded(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    // Hex digits of an escape left to copy as they are.
    let mut hex_left = 0;
    fold_pieces(path, |p, _| {
        for &b in p {
            match (b, hex_left) {
                (b'%', _) => {
                    hex_left = 2;
                    out.push('%');
                }
                (_, 1..) => {
                    hex_left -= 1;
                    out.push(b as char);
                }
                _ => out.push(b.to_ascii_lowercase() as char),
            }
        }
        true
    });
    out
}

/// Where in `path` (normalized) the part under `prefix` (normalized and
/// [`folded`]) ends, if `path` is under it on a segment boundary, ignoring
/// case as [`folded`] does.
fn under(path: &str, prefix: &str) -> Option<usize> {
    if prefix.is_empty() {
        return Some(0);
    }
    let end = if path.contains('%') {
        // Fold the path's pieces until the prefix is matched or missed.
        let want = prefix.as_bytes();
        let (mut have, mut end) = (0, None);
        fold_pieces(path, |p, at| {
            let fits = want
                .get(have..have + p.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(p));
            have += p.len();
            if fits && have == want.len() {
                end = Some(at);
            }
            fits && have < want.len()
        });
        end?
    } else {
        // No escapes: byte for byte, ignoring ASCII case (a prefix with
        // escapes cannot match).
        (path.len() >= prefix.len()
            && path.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes()))
        .then_some(prefix.len())?
    };
    matches!(path.as_bytes().get(end), None | Some(b'/')).then_some(end)
}

/// The rest of `path` after the route prefix it was matched under (for
/// `strip_prefix`): not always `prefix.len()` bytes, since `/ADM%C4%B1N`
/// is under `/admin`.
pub fn after_prefix<'p>(path: &'p str, prefix: &str) -> &'p str {
    under(path, prefix).map_or(path, |end| &path[end..])
}

/// The outcome of matching.
pub enum Match<'a> {
    /// The route.
    Found(&'a Route),
    /// A route has this path and host but not this method.
    MethodNotAllowed(Vec<http::Method>),
    /// No route.
    NotFound,
}

/// The routes, indexed by the segments of their prefixes (as [`folded`]):
/// matching walks the path's segments once, and then only the routes
/// whose prefix the path is under, deepest first, whatever the number of
/// routes.
#[derive(Debug)]
pub struct Table {
    routes: Vec<Route>,
    /// Node 0 is the root (the prefix `/`).
    nodes: Vec<Node>,
}

#[derive(Debug, Default)]
struct Node {
    parent: usize,
    /// The routes whose prefix ends here: host-specific first, then in
    /// the configuration's order.
    routes: Vec<usize>,
    /// By segment ([`folded`]: lower case, escapes in upper-case hex).
    children: foldhash::HashMap<Box<str>, usize>,
}

impl Table {
    /// Indexes `routes` (their prefixes normalized and [`folded`], as the
    /// configuration keeps them).
    pub fn new(routes: Vec<Route>) -> Table {
        let mut nodes = vec![Node::default()];
        for (i, r) in routes.iter().enumerate() {
            let mut at = 0;
            for seg in r.prefix.split('/').skip(1) {
                at = match nodes[at].children.get(seg) {
                    Some(&child) => child,
                    None => {
                        nodes.push(Node {
                            parent: at,
                            ..Node::default()
                        });
                        let child = nodes.len() - 1;
                        nodes[at].children.insert(seg.into(), child);
                        child
                    }
                };
            }
            nodes[at].routes.push(i);
        }
        for n in &mut nodes {
            // Stable: configuration order within each kind.
            n.routes.sort_by_key(|&i| routes[i].host.is_none());
        }
        Table { routes, nodes }
    }

    /// The routes, in the configuration's order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Finds the most specific route (longest prefix) for host, path
    /// (normalized) and method.
    pub fn find(&self, host: Option<&str>, path: &str, method: &http::Method) -> Match<'_> {
        // Compared ignoring case (route hosts are lower-cased by the config).
        let host = host.map(bare_host);
        // The deepest node the path is under. A path with escapes is walked
        // folded; one without, a segment at a time in lower case (copied
        // only when it has an upper-case letter).
        let walked;
        let (walk, plain) = if path.contains('%') {
            walked = folded(path);
            (walked.as_str(), false)
        } else {
            (path, true)
        };
        let mut lower = String::new();
        let mut at = 0;
        for seg in walk.split('/').skip(1) {
            let key = if plain && seg.bytes().any(|b| b.is_ascii_uppercase()) {
                lower.clear();
                lower.extend(seg.chars().map(|c| c.to_ascii_lowercase()));
                lower.as_str()
            } else {
                seg
            };
            match self.nodes[at].children.get(key) {
                Some(&child) => at = child,
                None => break,
            }
        }
        let mut allowed = Vec::new();
        loop {
            for &i in &self.nodes[at].routes {
                let r = &self.routes[i];
                let host_ok = r
                    .host
                    .as_deref()
                    .is_none_or(|want| host.is_some_and(|h| h.eq_ignore_ascii_case(want)));
                if !host_ok {
                    continue;
                }
                if r.methods.is_empty() || r.methods.contains(method) {
                    return Match::Found(r);
                }
                for m in &r.methods {
                    if !allowed.contains(m) {
                        allowed.push(m.clone());
                    }
                }
            }
            if at == 0 {
                break;
            }
            at = self.nodes[at].parent;
        }
        if allowed.is_empty() {
            Match::NotFound
        } else {
            Match::MethodNotAllowed(allowed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization() {
        let ok = |p: &str, want: &str| assert_eq!(normalize(p).as_deref(), Ok(want), "{p}");
        ok("/", "/");
        ok("/a/b", "/a/b");
        ok("//a///b", "/a/b");
        ok("/a/./b", "/a/b");
        ok("/a/../b", "/b");
        ok("/a/b/", "/a/b/");
        ok("/%61dmin", "/admin");
        ok("/a%2db", "/a-b");
        ok("/a%20b", "/a%20b");
        ok("/a%c3%a9", "/a%C3%A9");
        ok("/public/%2e%2e/admin", "/admin");
        ok("/public/..%2Fadmin".replace("%2F", "/").as_str(), "/admin");
        let bad = |p: &str| assert!(normalize(p).is_err(), "{p} must be refused");
        bad("admin");
        bad("/a%2Fb");
        bad("/a%2fb");
        bad("/a%5Cb");
        bad("/a\\b");
        bad("/a%252Fb");
        bad("/a%00b");
        bad("/a;jsessionid=1");
        bad("/admin%3Bx");
        bad("/admin.");
        bad("/..");
        bad("/a/../..");
        bad("/a%zz");
        bad("/a%4");
        // Trailing spaces, like trailing dots, are dropped by some servers.
        bad("/admin%20");
        bad("/admin%20/x");
        // Overlong UTF-8: `/`, `.` and `\` to a lax decoder.
        bad("/public%C0%AF..%C0%AFadmin");
        bad("/public/%C0%AE%C0%AE/admin");
        bad("/%E0%80%AFadmin");
        bad("/a%C1%9Cb");
        bad("/a%F8%80%80%80%AFb");
        bad("/a%F4%90%80%80b");
        // C0 and C1 begin nothing but overlong forms; decoders that mask
        // bits read `C0 6F` as `/`.
        bad("/public%C0o..%C0oadmin");
        bad("/a%C0b");
        bad("/a%C1");
        // Raw non-ASCII is percent-encoded, as its escapes are kept.
        ok("/caf\u{e9}", "/caf%C3%A9");
        ok("/caf%c3%a9", "/caf%C3%A9");
        ok("/adm\u{131}n/", "/adm%C4%B1n/");
        ok("/a%20b", "/a%20b");
        // Escapes of what is not UTF-8 (Latin-1 é) are kept.
        ok("/caf%e9", "/caf%E9");
        ok("/a%F4%8F%BF%BF", "/a%F4%8F%BF%BF");
    }

    #[test]
    fn the_fast_path_agrees_with_the_full_normalization() {
        // Every path of up to 5 characters over an alphabet of the bytes
        // that matter, plus longer ones: whenever the fast path takes a
        // path, the full normalization must return it unchanged.
        let alphabet = ['/', 'a', '.', '%', '2', 'f', ';', '\\', ' ', 'é'];
        let mut paths: Vec<String> = vec![String::new()];
        let mut taken = 0;
        for _ in 0..5 {
            paths = paths
                .iter()
                .flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}")))
                .collect();
            for p in &paths {
                if is_normal(p) {
                    taken += 1;
                    assert_eq!(normalize_full(p).as_deref(), Ok(p.as_str()), "{p:?}");
                }
            }
        }
        for p in ["/", "/open", "/a/b/", "/api/v1/orders/42", "/a.b/c-d_e~f"] {
            assert!(is_normal(p), "{p}");
            assert_eq!(normalize_full(p).as_deref(), Ok(p));
        }
        assert!(taken > 100, "the fast path took only {taken} paths");
    }

    /// A route as the configuration makes it, with `prefix` as written.
    fn route(name: &str, host: Option<&str>, prefix: &str) -> Route {
        Route {
            name: name.into(),
            host: host.map(str::to_owned),
            prefix: folded(normalize(prefix).unwrap().trim_end_matches('/')),
            upstream: "u".into(),
            ..Route::default()
        }
    }

    #[test]
    fn the_most_specific_prefix_wins_whatever_its_spelling() {
        // `/maße` is `/masse` to matching: shorter than `/masse/a`, which
        // must be tried first, though its spelling is longer.
        let table = Table::new(vec![
            route("root", None, "/"),
            route("public", None, "/ma\u{df}e"),
            route("private", None, "/masse/a"),
            route("other-host", Some("h"), "/MASSE/A"),
        ]);
        let found =
            |host: Option<&str>, path: &str| match table.find(host, path, &http::Method::GET) {
                Match::Found(r) => r.name.clone(),
                _ => "none".into(),
            };
        for (host, path, want) in [
            (None, "/masse/a/x", "private"),
            (None, "/ma%C3%9Fe/a/x", "private"),
            (None, "/MA%E1%BA%9EE/A", "private"),
            (None, "/masse/b", "public"),
            (Some("h"), "/masse/a", "other-host"),
            (None, "/mass", "root"),
        ] {
            assert_eq!(found(host, &normalize(path).unwrap()), want, "{path}");
        }
    }

    #[test]
    fn hosts_match_ignoring_case_port_and_trailing_dot() {
        let route = |name: &str, host: Option<&str>| route(name, host, "/orders");
        let table = Table::new(vec![
            route("any", None),
            route("api", Some("api.example.com")),
        ]);
        let found = |host: Option<&str>| match table.find(host, "/orders/1", &http::Method::GET) {
            Match::Found(r) => r.name.clone(),
            _ => "none".into(),
        };
        for h in [
            "api.example.com",
            "API.Example.COM",
            "api.example.com:8443",
            "api.example.com.",
            "Api.Example.Com.:80",
        ] {
            assert_eq!(found(Some(h)), "api", "{h}");
        }
        for h in [
            "other.example.com",
            "api.example.com.evil",
            "xapi.example.com",
            "api.example.co",
        ] {
            assert_eq!(found(Some(h)), "any", "{h}");
        }
        assert_eq!(found(None), "any");
    }

    #[test]
    fn a_shallower_route_with_the_method_wins_over_a_deeper_one_without() {
        let with_methods = |name: &str, prefix: &str, methods: &[http::Method]| Route {
            methods: methods.to_vec(),
            ..route(name, None, prefix)
        };
        let table = Table::new(vec![
            with_methods("orders-read", "/orders", &[http::Method::GET]),
            with_methods("orders-admin", "/orders/admin", &[http::Method::DELETE]),
            with_methods("orders-audit", "/orders/admin", &[http::Method::DELETE]),
        ]);
        let name = |path: &str, m: http::Method| match table.find(None, path, &m) {
            Match::Found(r) => r.name.clone(),
            Match::MethodNotAllowed(allowed) => format!("405 {allowed:?}"),
            Match::NotFound => "404".into(),
        };
        assert_eq!(
            name("/orders/admin/1", http::Method::DELETE),
            "orders-admin"
        );
        assert_eq!(name("/Orders/Admin/1", http::Method::GET), "orders-read");
        assert_eq!(
            name("/orders/admin", http::Method::PUT),
            "405 [DELETE, GET]"
        );
        assert_eq!(name("/ordersx", http::Method::GET), "404");
        assert_eq!(name("/", http::Method::GET), "404");
    }

    /// Matching as it was before the table: every route in turn, most
    /// specific first; the table must agree with it.
    fn find_by_scan(
        routes: &[Route],
        host: Option<&str>,
        path: &str,
        method: &http::Method,
    ) -> String {
        let host = host.map(|h| h.trim_end_matches('.'));
        let mut sorted: Vec<&Route> = routes.iter().collect();
        sorted.sort_by(|a, b| {
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                .then(b.host.is_some().cmp(&a.host.is_some()))
        });
        let mut allowed = false;
        for r in sorted {
            let host_ok = r
                .host
                .as_deref()
                .is_none_or(|want| host.is_some_and(|h| h.eq_ignore_ascii_case(want)));
            if host_ok && under(path, &r.prefix).is_some() {
                if r.methods.is_empty() || r.methods.contains(method) {
                    return r.name.clone();
                }
                allowed = true;
            }
        }
        if allowed { "405" } else { "404" }.into()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// The table finds the route a scan of every route finds (or the
        /// same 405 or 404), and strip_prefix cuts the path at a segment.
        #[test]
        fn the_table_agrees_with_a_scan_of_every_route(
            routes in proptest::collection::vec(
                (
                    proptest::collection::vec(proptest::sample::select(&["a", "B", "ab", "%C3%A9", "%C3%89", "\u{131}", "i", "ss", "\u{df}", ":", "%3a"][..]), 0..4),
                    proptest::option::of(proptest::sample::select(&["h", "H2"][..])),
                    0..3usize,
                ),
                1..12,
            ),
            path in proptest::collection::vec(proptest::sample::select(&["a", "A", "b", "ab", "AB", "%C3%89", "I", "%C4%B1", "SS", "%C3%9F", "x", ":", "%3A", "%E9", "%C4"][..]), 0..5),
            trailing in proptest::bool::ANY,
            host in proptest::option::of(proptest::sample::select(&["h", "H", "h2", "other"][..])),
            post in proptest::bool::ANY,
        ) {
            let routes: Vec<Route> = routes
                .into_iter()
                .enumerate()
                .map(|(i, (segs, host, methods))| Route {
                    methods: [vec![], vec![http::Method::GET], vec![http::Method::POST]][methods].clone(),
                    host: host.map(str::to_ascii_lowercase),
                    ..route(&format!("r{i}"), None, &format!("/{}", segs.join("/")))
                })
                .collect();
            let slash = if trailing { "/" } else { "" };
            let path = normalize(&format!("/{}{slash}", path.join("/"))).unwrap().into_owned();
            let method = if post { http::Method::POST } else { http::Method::GET };
            let table = Table::new(routes.clone());
            let found = match table.find(host, &path, &method) {
                Match::Found(r) => {
                    let rest = after_prefix(&path, &r.prefix);
                    proptest::prop_assert!(rest.is_empty() || rest.starts_with('/'), "{rest:?}");
                    r.name.clone()
                }
                Match::MethodNotAllowed(_) => "405".into(),
                Match::NotFound => "404".into(),
            };
            proptest::prop_assert_eq!(found, find_by_scan(&routes, host, &path, &method), "{}", path);
        }
    }

    #[test]
    fn prefixes_are_segment_bounded_and_case_insensitive() {
        assert_eq!(under("/admin", "/admin"), Some(6));
        assert_eq!(under("/admin/x", "/admin"), Some(6));
        assert_eq!(under("/ADMIN/x", "/admin"), Some(6));
        assert_eq!(under("/adminx", "/admin"), None);
        assert_eq!(under("/admi", "/admin"), None);
        assert_eq!(under("/anything", ""), Some(0));
    }

    #[test]
    fn unicode_case_mappings_onto_ascii_match_the_prefix() {
        // Dotless ı upper-cases to I, İ lower-cases to i (simple mapping),
        // ſ upper-cases to S, the Kelvin sign lower-cases to k, ß and the
        // ligatures upper-case to several letters.
        for (path, prefix, end) in [
            ("/adm%C4%B1n", "/admin", 11),
            ("/ADM%C4%B0N/users", "/admin", 11),
            ("/%E2%84%AAeys/1", "/keys", 13),
            ("/%C5%BFsh", "/ssh", 9),
            ("/%C3%9Fh", "/ssh", 8),
            ("/%E1%BA%9Eh", "/ssh", 11),
            ("/%EF%AC%81x/", "/fix", 11),
            ("/a%20b/c", "/a%20b", 6),
            ("/STRASSE/x", "/stra%C3%9Fe", 8),
            ("/stra%C3%9Fe", "/stra%C3%9Fe", 12),
            ("/stra%C3%9Fe", "/strasse", 12),
            // Non-ASCII case: É and é, final ς and σ.
            ("/CAF%C3%89/x", "/caf%C3%A9", 10),
            ("/caf%C3%A9", "/CAF%C3%89", 10),
            ("/%CF%82x", "/%CE%A3X", 8),
            ("/%E1%BE%BC", "/%E1%BE%B3", 10),
            // Escaped and raw reserved characters: the same to an
            // upstream that decodes the path.
            ("/v1/things%3AbatchDelete", "/v1/things:batchDelete", 24),
            ("/users/@me/x", "/users/%40me", 10),
        ] {
            assert_eq!(
                under(path, &folded(prefix)),
                Some(end),
                "{path} under {prefix}"
            );
        }
        for (path, prefix) in [
            // A fold longer than what is left of the prefix, or past a
            // segment boundary, is not under it.
            ("/%C3%9F", "/s"),
            ("/%EF%AC%83", "/ff"),
            ("/adm%C4%B1nx", "/admin"),
            // Accents are not case: é is not e.
            ("/adm%C3%ADn", "/admin"),
            // Half a character, or escapes of what is not UTF-8.
            ("/adm%C4", "/admin"),
            ("/adm%B1n", "/admin"),
            ("/adm%C4%41n", "/admin"),
        ] {
            assert_eq!(under(path, &folded(prefix)), None, "{path} under {prefix}");
        }
        assert_eq!(after_prefix("/ADM%C4%B1N/users/1", "/admin"), "/users/1");
        assert_eq!(folded("/ADM%C4%B1N/CAF%C3%89%20X"), "/admin/caf%C3%A9 x");
        assert_eq!(folded("/a%3Ab%40c%3F%23"), "/a:b@c%3F%23");
        assert_eq!(folded("/%C3%9F%E2%84%AA"), "/ssk");
        assert_eq!(after_prefix("/admin", "/admin"), "");
    }

    /// The ASCII one of a character's Unicode case mappings (upper, lower,
    /// or one after the other) gives, lower-cased; for `İ` its simple
    /// lower-case mapping. From the standard library's tables.
    fn ascii_case_mapping(c: char) -> Option<String> {
        if c == '\u{130}' {
            return Some("i".into());
        }
        let up: String = c.to_uppercase().collect();
        let low: String = c.to_lowercase().collect();
        let up_low: String = up.chars().flat_map(char::to_lowercase).collect();
        let low_up: String = low.chars().flat_map(char::to_uppercase).collect();
        [up, low, up_low, low_up]
            .into_iter()
            .find(|m| m.is_ascii())
            .map(|m| m.to_ascii_lowercase())
    }

    #[test]
    fn ascii_fold_covers_unicode() {
        for c in ('\u{80}'..=char::MAX).filter(|c| !c.is_ascii()) {
            assert_eq!(
                ascii_fold(c).map(str::to_owned),
                ascii_case_mapping(c),
                "U+{:04X}",
                c as u32
            );
        }
    }

    /// What an upstream may take a forwarded path for, at its laxest:
    /// every escape decoded, overlong UTF-8 read as what it encodes, case
    /// ignored through Unicode's mappings, `\\` read as `/`, trailing dots
    /// and spaces of a segment dropped, dot segments resolved.
    fn lax_upstream_view(path: &str) -> String {
        let mut bytes = Vec::new();
        let raw = path.as_bytes();
        let mut i = 0;
        while i < raw.len() {
            match escape_at(raw, i) {
                Some(b) => {
                    bytes.push(b);
                    i += 3;
                }
                None => {
                    bytes.push(raw[i]);
                    i += 1;
                }
            }
        }
        // Lax UTF-8: a sequence is read whatever its value (overlong too),
        // and after C0 or C1, which begin only overlong forms, the next
        // byte is taken as a continuation whatever it is (bits masked).
        let mut text = String::new();
        let mut k = 0;
        while k < bytes.len() {
            let b = bytes[k];
            let next = bytes
                .get(k + 1)
                .copied()
                .filter(|n| n & 0xC0 == 0x80 || matches!(b, 0xC0 | 0xC1));
            match (b, next) {
                (0xC0..=0xDF, Some(n)) => {
                    let v = (u32::from(b & 0x1F) << 6) | u32::from(n & 0x3F);
                    text.push(char::from_u32(v).unwrap_or('?'));
                    k += 2;
                }
                (0xE0..=0xEF, Some(n)) if bytes.get(k + 2).is_some_and(|m| m & 0xC0 == 0x80) => {
                    let m = bytes[k + 2];
                    let v = (u32::from(b & 0x0F) << 12)
                        | (u32::from(n & 0x3F) << 6)
                        | u32::from(m & 0x3F);
                    text.push(char::from_u32(v).unwrap_or('?'));
                    k += 3;
                }
                _ if b < 0x80 => {
                    text.push(b as char);
                    k += 1;
                }
                _ => {
                    text.push('?');
                    k += 1;
                }
            }
        }
        let folded: String = text
            .chars()
            .map(|c| {
                ascii_case_mapping(c).unwrap_or_else(|| {
                    let up: Vec<char> = c.to_uppercase().collect();
                    match up[..] {
                        [u] => u.to_lowercase().collect(),
                        _ => c.to_lowercase().collect(),
                    }
                })
            })
            .collect::<String>()
            .replace('\\', "/");
        let mut out: Vec<&str> = Vec::new();
        for seg in folded.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    out.pop();
                }
                s => out.push(s.trim_end_matches(['.', ' '])),
            }
        }
        format!("/{}", out.join("/"))
    }

    /// The protected prefixes of the property test, without their `/`.
    const PROTECTED: [&str; 6] = ["admin", "keys", "ssh", "fix", "caf\u{e9}", "a:b"];

    /// `word` spelled one of the ways an upstream that ignores case, or
    /// decodes escapes, reads as `word`: each ASCII letter as it is,
    /// upper-case, or escaped (either case of hex), and some letters as a
    /// non-ASCII character whose case mapping they are, raw or escaped;
    /// `é` raw or escaped, in either case. `choices` picks, one per letter.
    fn spell(word: &str, choices: &[u8]) -> String {
        const OTHERS: &[(&str, &[&str])] = &[
            ("ss", &["\u{DF}", "%C3%9F", "%E1%BA%9E"]),
            ("fi", &["\u{FB01}", "%EF%AC%81"]),
            ("i", &["\u{131}", "%C4%B1", "\u{130}", "%c4%b0"]),
            ("s", &["\u{17F}", "%C5%BF"]),
            ("k", &["\u{212A}", "%E2%84%AA"]),
            ("\u{e9}", &["\u{e9}", "\u{c9}", "%C3%A9", "%c3%89"]),
        ];
        let mut out = String::new();
        let mut rest = word;
        for &choice in choices.iter().cycle() {
            let Some(c) = rest.chars().next() else { break };
            let other = OTHERS.iter().find(|(text, _)| rest.starts_with(text));
            if let Some((text, others)) = other.filter(|_| choice <= 3 || !c.is_ascii()) {
                out.push_str(others[usize::from(choice) % others.len()]);
                rest = &rest[text.len()..];
                continue;
            }
            match choice % 4 {
                0 => out.push(c),
                1 => out.push(c.to_ascii_uppercase()),
                2 => out.push_str(&format!("%{:02X}", c as u32)),
                _ => out.push_str(&format!("%{:02x}", c as u32)),
            }
            rest = &rest[c.len_utf8()..];
        }
        out
    }

    /// A piece of a generated path: a protected word spelled some way, a
    /// separator, dot segment, escape or character that paths are made of,
    /// or (less often, since any one refuses the path) a bypass attempt.
    fn piece() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            3 => (proptest::sample::select(&PROTECTED[..]), proptest::collection::vec(0..8u8, 1..8))
                .prop_map(|(word, choices)| spell(word, &choices)),
            3 => proptest::sample::select(&[
                "/", "/", "//", ".", "..", "%2e", "%2E", "%2e%2e", "x", "public", "\u{e9}",
                "%20", "%3F", "\u{131}", "%E2%84%AA", "%C4", "%B1", "%E9", "%CF%82",
            ][..]).prop_map(str::to_owned),
            1 => proptest::sample::select(&[
                "%C0%AF", "%C0%AE", "%E0%80%AF", "%C1%9C", "%F4%90%80%80", "%2F", "%5C",
                "\\", ";", "%00", "%25", "%",
            ][..]).prop_map(str::to_owned),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

        /// The normal form is ASCII and a fixed point; a protected prefix
        /// that a lax upstream would see in it is one the route matching
        /// sees too, ending where [`folded`] says it does.
        #[test]
        fn no_spelling_of_a_protected_path_escapes_its_prefix(
            pieces in proptest::collection::vec(piece(), 1..8)
        ) {
            let path: String = pieces.concat();
            if let Ok(n) = normalize(&path) {
                proptest::prop_assert!(n.starts_with('/') && n.is_ascii(), "{path:?} → {n:?}");
                let again = normalize(&n);
                proptest::prop_assert_eq!(again.as_deref(), Ok(&*n), "{:?}", path);
                let view = lax_upstream_view(&n);
                let all = folded(&n);
                for word in PROTECTED {
                    let prefix = folded(&normalize(&format!("/{word}")).unwrap());
                    let under_it = under(&n, &prefix);
                    let lax = view == format!("/{word}") || view.starts_with(&format!("/{word}/"));
                    proptest::prop_assert!(
                        !lax || under_it.is_some(),
                        "{path:?} → {n:?}: a lax upstream reads {view:?}, not matched under {prefix}"
                    );
                    let by_fold = all == prefix || all.starts_with(&format!("{prefix}/"));
                    proptest::prop_assert_eq!(under_it.is_some(), by_fold, "{:?} → {:?} under {}", path, n, prefix);
                    if let Some(end) = under_it {
                        proptest::prop_assert_eq!(folded(&n[..end]), prefix.as_str());
                        let rest = after_prefix(&n, &prefix);
                        proptest::prop_assert!(rest.is_empty() || rest.starts_with('/'), "{rest:?}");
                    }
                }
            }
        }
    }
}
