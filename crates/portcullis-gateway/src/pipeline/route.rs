//! Phase 1: normalize the request path and match a route.
//!
//! The normalized path is both what routes are matched against and what is
//! forwarded, so no spelling of a protected path reaches an upstream
//! without its route's checks:
//! - percent-encoded unreserved characters are decoded (`%61` → `a`); other
//!   escapes are kept, with upper-case hex;
//! - `//` collapses, `.` and `..` segments are resolved (never above `/`);
//! - refused outright (400): encoded `/` or `\` (`%2F`, `%5C`), encoded
//!   `%` (`%25`, double encoding), NUL or control characters, a raw `\`,
//!   `;` path parameters, and segments ending in `.` (`/admin.`), which some
//!   servers treat as the name without the dot;
//! - prefixes match case-insensitively on segment boundaries, so `/ADMIN`
//!   gets the checks of `/admin` (for upstreams that ignore case).

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
    // Decode unreserved escapes; refuse the ambiguous ones.
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).and_then(|&c| hex(c)),
                    bytes.get(i + 2).and_then(|&c| hex(c)),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let v = h * 16 + l;
                if unreserved(v) {
                    decoded.push(v as char);
                } else if matches!(v, b'/' | b'\\' | b'%' | b';') || v < 0x20 || v == 0x7f {
                    return Err(PathError::Ambiguous);
                } else {
                    decoded.push_str(&format!("%{v:02X}"));
                }
                i += 3;
            }
            b'\\' | b';' => return Err(PathError::Ambiguous),
            _ if b < 0x20 || b == 0x7f => return Err(PathError::Ambiguous),
            _ => {
                decoded.push(b as char);
                i += 1;
            }
        }
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
            s if s.ends_with('.') => return Err(PathError::Ambiguous),
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

/// Whether `path` is under `prefix` on a segment boundary, ignoring case.
fn under(path: &str, prefix: &str) -> bool {
    if prefix.is_empty() {
        return true;
    }
    path.len() >= prefix.len()
        && path.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
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

/// Finds the most specific route (longest prefix) for host, path and method.
/// `routes` must be sorted by prefix length, longest first.
pub fn find<'a>(
    routes: &'a [Route],
    host: Option<&str>,
    path: &str,
    method: &http::Method,
) -> Match<'a> {
    // Without its port and trailing dots; compared ignoring case (route
    // hosts are lower-cased by the config).
    let host = host.map(|h| {
        h.rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map_or(h, |(h, _)| h)
            .trim_end_matches('.')
    });
    let mut allowed = Vec::new();
    for r in routes {
        let host_ok = r
            .host
            .as_deref()
            .is_none_or(|want| host.is_some_and(|h| h.eq_ignore_ascii_case(want)));
        if !host_ok || !under(path, &r.prefix) {
            continue;
        }
        if r.methods.is_empty() || r.methods.contains(method) {
            return Match::Found(r);
        }
        allowed.extend(r.methods.iter().cloned());
    }
    if allowed.is_empty() {
        Match::NotFound
    } else {
        Match::MethodNotAllowed(allowed)
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

    #[test]
    fn hosts_match_ignoring_case_port_and_trailing_dot() {
        let route = |name: &str, host: Option<&str>| Route {
            name: name.into(),
            host: host.map(str::to_owned),
            prefix: "/orders".into(),
            methods: Vec::new(),
            upstream: "u".into(),
            auth: Vec::new(),
            require_scopes: Vec::new(),
            require_roles: Vec::new(),
            rate_limit: None,
            cluster_lease: None,
            strip_prefix: false,
            forward_credentials: false,
            policy: None,
        };
        let routes = [route("api", Some("api.example.com")), route("any", None)];
        let found = |host: Option<&str>| match find(&routes, host, "/orders/1", &http::Method::GET)
        {
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
    fn prefixes_are_segment_bounded_and_case_insensitive() {
        assert!(under("/admin", "/admin"));
        assert!(under("/admin/x", "/admin"));
        assert!(under("/ADMIN/x", "/admin"));
        assert!(!under("/adminx", "/admin"));
        assert!(under("/anything", ""));
    }
}
