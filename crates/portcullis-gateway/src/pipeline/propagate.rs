//! Phase 5: propagate identity. Strip every inbound credential and identity
//! header, rewrite the forwarding headers, and attach a short-lived internal
//! token signed by the gateway that names the caller.

use super::authn::Identity;
use http::{HeaderMap, HeaderName, HeaderValue};
use portcullis_core::jose::SigningKey;
use serde_json::json;
use std::net::IpAddr;
use std::sync::Arc;

/// Mints internal tokens, caching each per (inbound credential, upstream)
/// for half the configured lifetime so steady traffic does not pay a
/// signature per request.
///
/// A token is reused until `ttl / 2` after it was minted, whatever its own
/// `exp`: one capped by a soon-expiring inbound credential could not be
/// re-minted to live longer anyway, and the inbound credential is checked
/// on every request before its token is looked up. (Re-minting whenever
/// less than half the lifetime was left signed on *every* request in an
/// inbound token's last `ttl / 2` seconds.)
pub struct Minter {
    /// Tells this minter's tokens apart in the per-thread caches (a reload
    /// builds a new minter, maybe with another issuer or lifetime).
    id: u64,
    key: Arc<SigningKey>,
    issuer: String,
    ttl: u64,
    cache: moka::sync::Cache<TokenKey, (HeaderValue, u64)>,
}

/// (inbound credential digest, upstream name).
type TokenKey = ([u8; 32], Arc<str>);

static NEXT_MINTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Per-thread entries at most; the map is emptied when full.
const RECENT_MAX: usize = 1024;

thread_local! {
    /// Each worker thread's recently used internal tokens, in front of the
    /// shared cache: a worker serves a connection's every request, so a
    /// steady caller is answered here without touching the shared cache.
    /// Keyed by digests and upstream names, not by anything a caller picks
    /// freely: foldhash rather than SipHash.
    static RECENT: std::cell::RefCell<foldhash::HashMap<(u64, TokenKey), (HeaderValue, u64)>> =
        std::cell::RefCell::new(foldhash::HashMap::default());
}

impl Minter {
    /// A minter signing with `key` as `issuer`.
    pub fn new(key: Arc<SigningKey>, issuer: String, ttl: u64) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(std::time::Duration::from_secs((ttl / 2).max(1)))
            .build();
        Self {
            id: NEXT_MINTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            key,
            issuer,
            ttl,
            cache,
        }
    }

    /// The public JWK Set upstreams validate internal tokens with.
    pub fn jwks(&self) -> serde_json::Value {
        json!({ "keys": [self.key.public_jwk()] })
    }

    /// The issuer of internal tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// An internal token for `who` to `audience` (the upstream's name), as
    /// the ready `Authorization: Bearer …` value (cloning it is a refcount).
    pub fn token(&self, who: &Identity, audience: &Arc<str>, now: u64) -> Option<HeaderValue> {
        let key = (self.id, (who.credential_digest, audience.clone()));
        // Cached values are (token, when to mint a new one).
        let fresh = |renew_at: u64| now < renew_at;
        let recent = RECENT.with_borrow(|r| {
            r.get(&key)
                .filter(|(_, renew_at)| fresh(*renew_at))
                .map(|(t, _)| t.clone())
        });
        if recent.is_some() {
            return recent;
        }
        let remember = |t: &HeaderValue, renew_at: u64| {
            RECENT.with_borrow_mut(|r| {
                if r.len() >= RECENT_MAX {
                    r.clear();
                }
                r.insert(key.clone(), (t.clone(), renew_at));
            });
        };
        if let Some((t, renew_at)) = self.cache.get(&key.1)
            && fresh(renew_at)
        {
            remember(&t, renew_at);
            return Some(t);
        }
        // Never outlive the inbound credential.
        let exp = who
            .expires_at
            .map_or(now + self.ttl, |e| e.min(now + self.ttl));
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).ok()?;
        let jti: String = jti.iter().map(|b| format!("{b:02x}")).collect();
        let claims = json!({
            "iss": self.issuer,
            "sub": who.subject,
            "aud": &**audience,
            "exp": exp,
            "iat": now,
            "nbf": now,
            "jti": jti,
            "client_id": who.client_id.as_deref().or(who.consumer.as_deref()).unwrap_or("anonymous"),
            "scope": who.scopes.join(" "),
            "roles": who.roles,
            "consumer": who.consumer,
            "auth_method": who.method,
            "orig_jti": who.token_jti,
        });
        let t = self.key.sign_access_token(&claims).ok()?;
        let mut t = HeaderValue::from_str(&format!("Bearer {t}")).ok()?;
        t.set_sensitive(true);
        let renew_at = now + (self.ttl / 2).max(1);
        remember(&t, renew_at);
        self.cache.insert(key.1.clone(), (t.clone(), renew_at));
        Some(t)
    }
}

/// Headers never forwarded from the client.
const ALWAYS_STRIPPED: [&str; 12] = [
    "authorization",
    "proxy-authorization",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-client-cert",
    "x-real-ip",
    "x-original-url",
    "x-rewrite-url",
];

/// Whether an inbound header must go: credentials, identity and forwarding
/// headers, compared after folding `_` to `-` (servers that accept
/// underscores would otherwise see `X_Portcullis_User` as identity).
/// `extra` is already lower-case and folded (see the config).
fn stripped(name: &str, extra: &[String]) -> bool {
    // Every header this strips starts with `x`, `a`, `p` or `f`: most
    // headers are decided by their first byte.
    if !matches!(
        name.as_bytes().first().map(u8::to_ascii_lowercase),
        Some(b'x' | b'a' | b'p' | b'f')
    ) && extra.is_empty()
    {
        return false;
    }
    // `_` reads as `-`, and case does not matter.
    let fold = |b: u8| {
        if b == b'_' {
            b'-'
        } else {
            b.to_ascii_lowercase()
        }
    };
    let starts_folded = |want: &str| {
        name.len() >= want.len() && want.bytes().zip(name.bytes()).all(|(w, n)| w == fold(n))
    };
    let folded_eq = |want: &str| want.len() == name.len() && starts_folded(want);
    let has_prefix = starts_folded("x-portcullis-");
    has_prefix || ALWAYS_STRIPPED.iter().any(|h| folded_eq(h)) || extra.iter().any(|h| folded_eq(h))
}

/// Rewrites request headers for the upstream: strips what the client must
/// not forward, and returns what the gateway adds (added when the request
/// is sent: written straight into the request head on the gateway's own
/// upstream connections, inserted into the map for hyper's client).
pub fn rewrite(
    headers: &mut HeaderMap,
    extra_stripped: &[String],
    forwarded: Forwarded,
    token: Option<HeaderValue>,
) -> Added {
    // With no internal token (a pass-through route) the client's own
    // Authorization is forwarded; every other stripped header still goes.
    let keep_auth = token.is_none();
    let doomed = |k: &HeaderName| {
        stripped(k.as_str(), extra_stripped) && !(keep_auth && *k == http::header::AUTHORIZATION)
    };
    if headers.keys().any(doomed) {
        let names: Vec<HeaderName> = headers.keys().filter(|k| doomed(k)).cloned().collect();
        for k in names {
            headers.remove(&k);
        }
    }
    Added {
        forwarded_for: ip_header(forwarded.client_ip),
        forwarded_host: forwarded.host,
        https: forwarded.https,
        token,
    }
}

/// What the `X-Forwarded-*` fields tell the upstream.
#[derive(Debug)]
pub struct Forwarded {
    /// `X-Forwarded-For`.
    pub client_ip: IpAddr,
    /// `X-Forwarded-Host`.
    pub host: Option<HeaderValue>,
    /// `X-Forwarded-Proto`: `https`, else `http`.
    pub https: bool,
}

/// The fields the gateway adds to a forwarded request; the client's own
/// fields of these names were stripped by [`rewrite`].
#[derive(Debug, Default)]
pub struct Added {
    forwarded_for: Option<HeaderValue>,
    forwarded_host: Option<HeaderValue>,
    /// `X-Forwarded-Proto: https` (else `http`).
    https: bool,
    /// The internal token (or a BFF session's access token), as
    /// `Authorization`.
    token: Option<HeaderValue>,
}

impl Added {
    /// Inserts the fields into `headers`.
    pub fn insert_into(self, headers: &mut HeaderMap) {
        for (name, value) in self.fields() {
            headers.insert(name, value.clone());
        }
    }

    /// Appends the fields to a request head being encoded.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        for (name, value) in self.fields() {
            buf.extend_from_slice(name.as_str().as_bytes());
            buf.extend_from_slice(b": ");
            buf.extend_from_slice(value.as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
    }

    fn fields(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        static HTTP: HeaderValue = HeaderValue::from_static("http");
        static HTTPS: HeaderValue = HeaderValue::from_static("https");
        let proto = if self.https { &HTTPS } else { &HTTP };
        [
            (&X_FORWARDED_FOR, self.forwarded_for.as_ref()),
            (&X_FORWARDED_PROTO, Some(proto)),
            (&X_FORWARDED_HOST, self.forwarded_host.as_ref()),
            (&http::header::AUTHORIZATION, self.token.as_ref()),
        ]
        .into_iter()
        .filter_map(|(n, v)| Some((n, v?)))
    }
}

/// `ip` as a header value. Keep-alive connections send many requests from
/// one address, so each thread keeps its last one formatted.
fn ip_header(ip: IpAddr) -> Option<HeaderValue> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> = const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| {
        if let Some((cached, v)) = last
            && *cached == ip
        {
            return Some(v.clone());
        }
        // Formatted on the stack: an IPv6 address is at most 45 bytes.
        let mut buf = [0u8; 45];
        let mut w = &mut buf[..];
        std::io::Write::write_fmt(&mut w, format_args!("{ip}")).ok()?;
        let n = 45 - w.len();
        let v = HeaderValue::from_bytes(&buf[..n]).ok()?;
        *last = Some((ip, v.clone()));
        Some(v)
    })
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The query string without the API-key parameter (never forwarded).
pub fn strip_query_param(query: Option<&str>, param: Option<&str>) -> Option<String> {
    let q = query?;
    let Some(param) = param else {
        return Some(q.to_owned());
    };
    let kept: Vec<&str> = q
        .split('&')
        .filter(|p| {
            let k = p.split_once('=').map_or(*p, |(k, _)| k);
            percent_encoding::percent_decode_str(k).decode_utf8_lossy() != param
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_forwarding_headers_are_stripped_in_every_spelling() {
        let extra = vec!["x-user-id".to_owned()];
        for h in [
            "X-Portcullis-User",
            "x_portcullis_roles",
            "X-User-Id",
            "x_user_id",
            "Forwarded",
            "X-Forwarded-For",
            "X_Forwarded_For",
            "X-Real-IP",
            "Authorization",
        ] {
            assert!(stripped(&h.to_ascii_lowercase(), &extra), "{h}");
        }
        for h in ["traceparent", "content-type", "x-request-id", "accept"] {
            assert!(!stripped(h, &extra), "{h}");
        }
    }

    fn identity(digest: u8, expires_at: Option<u64>) -> Identity {
        Identity {
            subject: "alice".into(),
            consumer: None,
            client_id: Some("app".into()),
            scopes: vec!["read".into()],
            roles: Vec::new(),
            method: "jwt",
            token_jti: None,
            expires_at,
            credential_digest: [digest; 32],
            bearer: None,
            actors: Vec::new(),
        }
    }

    #[test]
    fn an_internal_token_is_reused_for_half_the_lifetime_even_when_capped() {
        let key =
            Arc::new(SigningKey::generate(portcullis_core::jose::SigningAlgorithm::Es256).unwrap());
        let m = Minter::new(key, "https://gw".into(), 60);
        let aud: Arc<str> = Arc::from("orders");
        let now = 1_800_000_000;
        // A long-lived inbound token: reused for 30 s, then a new one.
        let long = identity(1, Some(now + 3600));
        let t0 = m.token(&long, &aud, now).unwrap();
        assert_eq!(m.token(&long, &aud, now + 29).unwrap(), t0);
        assert_ne!(m.token(&long, &aud, now + 30).unwrap(), t0);
        // An inbound token with 10 s left caps the internal token's exp; it
        // is still reused (it was re-signed on every request before).
        let short = identity(2, Some(now + 10));
        let s0 = m.token(&short, &aud, now).unwrap();
        assert_ne!(s0, t0);
        assert_eq!(m.token(&short, &aud, now + 1).unwrap(), s0);
        assert_eq!(m.token(&short, &aud, now + 9).unwrap(), s0);
        // Another audience is another token.
        let other: Arc<str> = Arc::from("billing");
        assert_ne!(m.token(&short, &other, now + 1).unwrap(), s0);
    }

    #[test]
    fn api_key_query_parameter_is_removed() {
        assert_eq!(
            strip_query_param(Some("a=1&api_key=s3cret&b=2"), Some("api_key")).as_deref(),
            Some("a=1&b=2")
        );
        assert_eq!(
            strip_query_param(Some("api%5Fkey=s3cret"), Some("api_key")),
            None
        );
        assert_eq!(strip_query_param(Some("a=1"), None).as_deref(), Some("a=1"));
    }
}
