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
/// for half its lifetime so steady traffic does not pay a signature per request.
pub struct Minter {
    key: Arc<SigningKey>,
    issuer: String,
    ttl: u64,
    cache: moka::sync::Cache<TokenKey, (Arc<str>, u64)>,
}

/// (inbound credential digest, upstream name).
type TokenKey = ([u8; 32], Arc<str>);

impl Minter {
    /// A minter signing with `key` as `issuer`.
    pub fn new(key: Arc<SigningKey>, issuer: String, ttl: u64) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(std::time::Duration::from_secs((ttl / 2).max(1)))
            .build();
        Self {
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

    /// An internal token for `who` to `audience` (the upstream's name).
    pub fn token(&self, who: &Identity, audience: &Arc<str>, now: u64) -> Option<Arc<str>> {
        let key = (who.credential_digest, audience.clone());
        if let Some((t, exp)) = self.cache.get(&key)
            && now + self.ttl / 2 < exp
        {
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
        let t: Arc<str> = Arc::from(self.key.sign_access_token(&claims).ok()?);
        self.cache.insert(key, (t.clone(), exp));
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
fn stripped(name: &str, extra: &[String]) -> bool {
    let folded: String = name
        .chars()
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    folded.starts_with("x-portcullis-")
        || ALWAYS_STRIPPED.contains(&folded.as_str())
        || extra
            .iter()
            .any(|e| *e == folded || e.replace('_', "-") == folded)
}

/// Rewrites request headers for the upstream.
pub fn rewrite(
    headers: &mut HeaderMap,
    extra_stripped: &[String],
    client_ip: IpAddr,
    host: Option<&str>,
    token: Option<&str>,
) {
    // With no internal token (a pass-through route) the client's own
    // Authorization is forwarded; every other stripped header still goes.
    let keep_auth = token.is_none();
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            stripped(k.as_str(), extra_stripped)
                && !(keep_auth && *k == http::header::AUTHORIZATION)
        })
        .cloned()
        .collect();
    for k in doomed {
        headers.remove(&k);
    }
    if let Ok(v) = HeaderValue::from_str(&client_ip.to_string()) {
        headers.insert("x-forwarded-for", v);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    if let Some(h) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.insert("x-forwarded-host", h);
    }
    if let Some(t) = token.and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok()) {
        headers.insert(http::header::AUTHORIZATION, t);
    }
}

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
