//! Pure parts of the browser login (OIDC authorization-code flow): the
//! pending authorization request carried sealed through the sign-in and
//! consent forms, cookies, the redirect back to the client, and the
//! sign-in throttle. The HTTP handlers are in `http::authorize`.
//!
//! ```text
//! GET  /oauth2/authorize  validate client + redirect_uri (else error page),
//!                         then everything else (else redirect with error)
//!        ├─ live SSO session, fresh enough ─┬─ first-party ─→ code → redirect
//!        │                                  └─ third-party ─→ consent page
//!        └─ none ─→ prompt=none? login_required : sign-in page
//! POST /oauth2/login      CSRF + sealed request + throttle + password
//!                         → SSO cookie → (consent page | code → redirect)
//! POST /oauth2/consent    CSRF + sealed request + session → code → redirect
//! ```

use crate::crypto::{CryptoError, MasterKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use portcullis_core::UnixTime;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// How long a pending authorization request (an open sign-in form) lives.
pub const PENDING_TTL: u64 = 600;
/// How long an authorization code lives.
pub const CODE_TTL: u64 = 60;
/// The AEAD context of sealed pending requests.
const PENDING_CONTEXT: &[u8] = b"portcullis pending authorization request v1";

/// An authorization request that passed every check, waiting for the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The client.
    pub client_id: String,
    /// The redirect URI as sent (it matched a registered one).
    pub redirect_uri: String,
    /// The client's `state`, returned unchanged.
    pub state: Option<String>,
    /// The OIDC `nonce`, put in the ID token.
    pub nonce: Option<String>,
    /// Granted scope.
    pub scope: String,
    /// Audiences of the access tokens.
    pub audiences: Vec<String>,
    /// PKCE S256 challenge.
    pub code_challenge: Option<String>,
    /// A session authenticated before this is not good enough
    /// (`prompt=login`: the request time; `max_age`: now − max_age).
    pub min_auth_time: Option<UnixTime>,
    /// `prompt=none`: never show a page.
    pub prompt_none: bool,
    /// `prompt=consent`: ask even a first-party client's user.
    pub prompt_consent: bool,
    /// `login_hint`, prefilled in the username field.
    pub login_hint: Option<String>,
    /// Digest of the browser's CSRF cookie: the forms work only in it.
    pub csrf: String,
    /// Expiry of this pending request.
    pub exp: UnixTime,
}

impl Pending {
    /// Seals the request for a hidden form field.
    pub fn seal(&self, key: &MasterKey) -> Result<String, CryptoError> {
        // Serializing plain strings and numbers cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        Ok(B64.encode(key.seal(PENDING_CONTEXT, &json)?))
    }

    /// Opens a sealed request; `None` if forged, altered or expired.
    pub fn open(key: &MasterKey, sealed: &str, now: UnixTime) -> Option<Self> {
        let bytes = B64.decode(sealed).ok()?;
        let plain = key.open(PENDING_CONTEXT, &bytes).ok()?;
        let p: Self = serde_json::from_slice(&plain).ok()?;
        (p.exp > now).then_some(p)
    }

    /// Whether a session authenticated at `auth_time` satisfies the request.
    pub fn accepts_auth_time(&self, auth_time: UnixTime) -> bool {
        self.min_auth_time.is_none_or(|min| auth_time >= min)
    }

    /// Whether the form's CSRF value and the browser's cookie digest both
    /// match the one sealed in the request (constant time).
    pub fn csrf_matches(&self, cookie_digest: &str, form: &str) -> bool {
        let a: bool = self.csrf.as_bytes().ct_eq(cookie_digest.as_bytes()).into();
        let b: bool = self.csrf.as_bytes().ct_eq(form.as_bytes()).into();
        a & b
    }
}

/// Digest of a browser- or client-held secret, per purpose, base64url.
pub fn digest(key: &MasterKey, purpose: &str, value: &str) -> Vec<u8> {
    key.secret_digest(&format!("{purpose}:{value}"))
}

/// [`digest`], base64url, for values compared as text.
pub fn digest_text(key: &MasterKey, purpose: &str, value: &str) -> String {
    B64.encode(digest(key, purpose, value))
}

/// Names and attributes of the IAM server's cookies. With an https issuer
/// they are `Secure` and `__Host-` prefixed.
#[derive(Debug, Clone)]
pub struct Cookies {
    secure: bool,
}

/// Name of the SSO session cookie (without the `__Host-` prefix).
pub const SESSION_COOKIE: &str = "portcullis_session";
/// Name of the CSRF cookie (without the `__Host-` prefix).
pub const CSRF_COOKIE: &str = "portcullis_csrf";

impl Cookies {
    /// For an issuer URL.
    pub fn for_issuer(issuer: &str) -> Self {
        Self {
            secure: issuer.starts_with("https://"),
        }
    }

    /// The cookie's name as sent.
    pub fn name(&self, base: &str) -> String {
        if self.secure {
            format!("__Host-{base}")
        } else {
            base.to_owned()
        }
    }

    /// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Path=/, `max_age`
    /// seconds (`Some(0)` deletes; `None` lives as long as the browser).
    pub fn set(&self, base: &str, value: &str, max_age: Option<u64>) -> String {
        let mut c = format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Lax",
            self.name(base)
        );
        if self.secure {
            c.push_str("; Secure");
        }
        if let Some(age) = max_age {
            c.push_str(&format!("; Max-Age={age}"));
        }
        c
    }

    /// The value of cookie `base` in the request's `Cookie` headers.
    pub fn get<'a>(&self, headers: &'a http::HeaderMap, base: &str) -> Option<&'a str> {
        let name = self.name(base);
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, v)| *k == name && !v.is_empty())
            .map(|(_, v)| v)
    }
}

/// The redirect back to the client (RFC 6749 §4.1.2, RFC 9207 `iss`):
/// `params` appended to the redirect URI's query, URL-encoded, then
/// `state` and `iss`.
pub fn client_redirect(
    redirect_uri: &str,
    params: &[(&str, &str)],
    state: Option<&str>,
    issuer: &str,
) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        q.append_pair(k, v);
    }
    if let Some(s) = state {
        q.append_pair("state", s);
    }
    q.append_pair("iss", issuer);
    let sep = if redirect_uri.contains('?') { '&' } else { '?' };
    format!("{redirect_uri}{sep}{}", q.finish())
}

/// Seconds a sign-in must wait after `failures` recent failures: none for
/// the first `free` ones, then 1 s doubling per failure up to `max`.
pub fn throttle_delay(failures: u32, free: u32, max: u64) -> u64 {
    if failures < free {
        return 0;
    }
    let over = (failures - free).min(20);
    (1u64 << over).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Pending {
        Pending {
            client_id: "app".into(),
            redirect_uri: "https://app/cb".into(),
            state: Some("s".into()),
            nonce: None,
            scope: "openid".into(),
            audiences: vec![],
            code_challenge: None,
            min_auth_time: Some(100),
            prompt_none: false,
            prompt_consent: false,
            login_hint: None,
            csrf: "c".into(),
            exp: 1_000,
        }
    }

    #[test]
    fn sealed_requests_open_only_intact_and_unexpired() {
        let k = MasterKey::from_bytes(&[1; 32]).unwrap();
        let sealed = pending().seal(&k).unwrap();
        assert_eq!(Pending::open(&k, &sealed, 999), Some(pending()));
        assert_eq!(Pending::open(&k, &sealed, 1_000), None, "expired");
        let mut bad = sealed.clone().into_bytes();
        bad[20] ^= 1;
        assert_eq!(
            Pending::open(&k, std::str::from_utf8(&bad).unwrap_or(""), 1),
            None
        );
        let other = MasterKey::from_bytes(&[2; 32]).unwrap();
        assert_eq!(Pending::open(&other, &sealed, 1), None);
        assert!(pending().accepts_auth_time(100) && !pending().accepts_auth_time(99));
        assert!(pending().csrf_matches("c", "c"));
        assert!(!pending().csrf_matches("c", "d") && !pending().csrf_matches("d", "c"));
    }

    #[test]
    fn redirects_encode_everything_and_name_the_issuer() {
        let r = client_redirect(
            "https://app/cb?x=1",
            &[
                ("error", "invalid_request"),
                ("error_description", "a\r\n<b>"),
            ],
            Some("s&t"),
            "https://iam",
        );
        assert_eq!(
            r,
            "https://app/cb?x=1&error=invalid_request&error_description=a%0D%0A%3Cb%3E\
             &state=s%26t&iss=https%3A%2F%2Fiam"
        );
        assert!(
            client_redirect("https://app/cb", &[], None, "i").starts_with("https://app/cb?iss")
        );
    }

    #[test]
    fn cookies_are_host_prefixed_and_secure_on_https() {
        let c = Cookies::for_issuer("https://iam.example");
        assert_eq!(
            c.set(SESSION_COOKIE, "v", Some(60)),
            "__Host-portcullis_session=v; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=60"
        );
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            "a=1; __Host-portcullis_csrf=xyz".parse().unwrap(),
        );
        assert_eq!(c.get(&h, CSRF_COOKIE), Some("xyz"));
        assert_eq!(
            Cookies::for_issuer("http://127.0.0.1").get(&h, CSRF_COOKIE),
            None
        );
    }

    proptest::proptest! {
        #[test]
        fn untrusted_sealed_requests_and_cookies_never_panic(
            sealed in "\\PC{0,300}",
            cookie in "[ -~]{0,200}",
        ) {
            let k = MasterKey::from_bytes(&[3; 32]).unwrap();
            proptest::prop_assert_eq!(Pending::open(&k, &sealed, 0), None);
            let mut h = http::HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_str(&cookie) {
                h.insert(http::header::COOKIE, v);
            }
            let got = Cookies::for_issuer("http://x").get(&h, CSRF_COOKIE);
            proptest::prop_assert!(got.is_none_or(|v| cookie.contains(v)));
        }
    }

    #[test]
    fn throttle_delays_grow_and_are_capped() {
        assert_eq!(throttle_delay(4, 5, 300), 0);
        assert_eq!(throttle_delay(5, 5, 300), 1);
        assert_eq!(throttle_delay(7, 5, 300), 4);
        assert_eq!(throttle_delay(100, 5, 300), 300);
    }
}
