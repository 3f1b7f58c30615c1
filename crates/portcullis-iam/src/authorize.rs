//! Pure decisions of the authorization-code flow: which redirect URIs a
//! client may register and which requested URI matches a registered one
//! (RFC 6749 §3.1.2, RFC 8252 §7.3, RFC 9700 §4.1), and PKCE (RFC 7636).
//! No I/O; the HTTP layer calls these.

use crate::model::{GrantType, LoginSettings};
use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

/// Longest redirect URI we register or accept.
pub const MAX_REDIRECT_URI_LEN: usize = 2000;

/// Loopback hosts whose port may vary (RFC 8252 §7.3: IP literals only;
/// `localhost` may be registered but is then matched exactly).
const LOOPBACK: [&str; 2] = ["http://127.0.0.1", "http://[::1]"];

/// Checks a redirect URI at registration: absolute, no fragment, no
/// userinfo, `https` — or `http` only on a loopback host — or a private-use
/// scheme with a dot in it for native apps (RFC 8252 §7.1).
pub fn validate_redirect_uri(uri: &str) -> Result<(), String> {
    if uri.len() > MAX_REDIRECT_URI_LEN {
        return Err(format!(
            "redirect URI longer than {MAX_REDIRECT_URI_LEN} bytes"
        ));
    }
    if uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("redirect URI contains whitespace or control characters".into());
    }
    let parsed = url::Url::parse(uri).map_err(|e| format!("redirect URI is not absolute: {e}"))?;
    if parsed.fragment().is_some() || uri.contains('#') {
        return Err("redirect URI must not have a fragment".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("redirect URI must not carry userinfo".into());
    }
    // The registered string is compared as a string; refuse spellings the
    // parser would change, so what is registered is what is matched.
    if parsed.as_str() != uri && format!("{uri}/") != parsed.as_str() {
        return Err(format!(
            "redirect URI is not in normal form (expected {:?})",
            parsed.as_str()
        ));
    }
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => match parsed.host_str() {
            Some("127.0.0.1" | "[::1]" | "localhost") => Ok(()),
            _ => Err("http redirect URIs are allowed on loopback hosts only".into()),
        },
        s if s.contains('.') => Ok(()),
        s => Err(format!(
            "scheme {s:?} is not allowed (https, loopback http, or a reverse-domain private-use scheme)"
        )),
    }
}

/// Checks a client's login settings against its grants and credential,
/// for the admin API and the config file alike. Returns `(field, problem)`.
/// - every redirect and post-logout redirect URI passes
///   [`validate_redirect_uri`];
/// - `authorization_code` needs at least one redirect URI, and redirect
///   URIs need `authorization_code`;
/// - `refresh_token` comes only with `authorization_code`;
/// - a public client may not use `client_credentials` and always uses PKCE.
pub fn check_login_settings(
    grants: &[GrantType],
    public: bool,
    login: &LoginSettings,
) -> Result<(), (&'static str, String)> {
    for u in &login.redirect_uris {
        validate_redirect_uri(u).map_err(|e| ("redirect_uris", format!("{u:?}: {e}")))?;
    }
    for u in &login.post_logout_redirect_uris {
        validate_redirect_uri(u)
            .map_err(|e| ("post_logout_redirect_uris", format!("{u:?}: {e}")))?;
    }
    let code = grants.contains(&GrantType::AuthorizationCode);
    if code && login.redirect_uris.is_empty() {
        return Err((
            "redirect_uris",
            "the authorization_code grant needs at least one redirect URI".into(),
        ));
    }
    if !code && !login.redirect_uris.is_empty() {
        return Err((
            "redirect_uris",
            "redirect URIs need the authorization_code grant".into(),
        ));
    }
    if grants.contains(&GrantType::RefreshToken) && !code {
        return Err((
            "grant_types",
            "refresh_token is only issued with authorization_code".into(),
        ));
    }
    for g in [GrantType::ClientCredentials, GrantType::TokenExchange] {
        if public && grants.contains(&g) {
            return Err((
                "grant_types",
                format!("a public client cannot use {}", g.as_str()),
            ));
        }
    }
    if public && !login.require_pkce {
        return Err(("require_pkce", "a public client always uses PKCE".into()));
    }
    Ok(())
}

/// The part of a loopback redirect URI after the port, if `uri` is one.
fn loopback_rest(uri: &str) -> Option<(&'static str, &str)> {
    for host in LOOPBACK {
        let Some(rest) = uri.strip_prefix(host) else {
            continue;
        };
        let rest = match rest.strip_prefix(':') {
            Some(r) => {
                let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
                match r[..end].parse::<u16>() {
                    Ok(p) if p > 0 && end <= 5 => &r[end..],
                    _ => return None,
                }
            }
            None => rest,
        };
        // `http://127.0.0.1.evil.example/…` is not loopback.
        if rest.is_empty() || rest.starts_with('/') {
            return Some((host, rest));
        }
        return None;
    }
    None
}

/// Whether `requested` is `registered`: an exact string match, except that
/// a loopback IP redirect URI may differ in its port (RFC 8252 §7.3).
pub fn redirect_uri_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    match (loopback_rest(registered), loopback_rest(requested)) {
        (Some((a, ra)), Some((b, rb))) => a == b && ra == rb,
        _ => false,
    }
}

/// Why a PKCE parameter was refused (the text is the `error_description`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PkceError {
    /// A challenge is required and none was sent.
    #[error("code_challenge is required (PKCE with S256)")]
    Missing,
    /// `plain`, an unknown method, or no method (which means `plain`).
    #[error("code_challenge_method must be S256")]
    Method,
    /// Not 43 base64url characters.
    #[error("code_challenge must be 43 base64url characters (S256)")]
    Challenge,
    /// A method without a challenge.
    #[error("code_challenge_method without code_challenge")]
    MethodWithoutChallenge,
}

/// Checks the PKCE parameters of an authorization request and returns the
/// challenge to store. Only S256 is accepted: an absent method means
/// `plain` (RFC 7636 §4.3), which is refused.
pub fn check_challenge(
    challenge: Option<&str>,
    method: Option<&str>,
    required: bool,
) -> Result<Option<String>, PkceError> {
    match (challenge, method) {
        (None, None) if required => Err(PkceError::Missing),
        (None, None) => Ok(None),
        (None, Some(_)) => Err(PkceError::MethodWithoutChallenge),
        (Some(_), m) if m != Some("S256") => Err(PkceError::Method),
        (Some(c), _) => {
            let ok = c.len() == 43
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && B64.decode(c).is_ok_and(|d| d.len() == 32);
            if ok {
                Ok(Some(c.to_owned()))
            } else {
                Err(PkceError::Challenge)
            }
        }
    }
}

/// The S256 `code_challenge` of a verifier: BASE64URL(SHA256(verifier)).
pub fn s256_challenge(verifier: &str) -> String {
    B64.encode(digest::digest(&digest::SHA256, verifier.as_bytes()))
}

/// Whether `verifier` is 43–128 unreserved characters (RFC 7636 §4.1) and
/// hashes to `challenge` (S256), compared in constant time.
pub fn verify_pkce(challenge: &str, verifier: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !well_formed {
        return false;
    }
    let computed = s256_challenge(verifier);
    aws_lc_rs::constant_time::verify_slices_are_equal(computed.as_bytes(), challenge.as_bytes())
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_refuses_ambiguous_or_unsafe_uris() {
        for ok in [
            "https://app.example/cb",
            "https://app.example/cb?x=1",
            "http://127.0.0.1/cb",
            "http://[::1]:8080/cb",
            "http://localhost:3000/cb",
            "com.example.app:/oauth",
        ] {
            assert_eq!(validate_redirect_uri(ok), Ok(()), "{ok}");
        }
        for bad in [
            "/cb",
            "https://app.example/cb#frag",
            "https://user@app.example/cb",
            "http://app.example/cb",
            "https://APP.example/cb",
            "https://app.example/a/../cb",
            "javascript:alert(1)",
            "https://app.example/c b",
            "https://app.example/cb\r\n",
        ] {
            assert!(validate_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matching_is_exact_except_the_loopback_port() {
        let reg = "https://app.example/cb";
        assert!(redirect_uri_matches(reg, reg));
        for other in [
            "https://APP.example/cb",
            "https://app.example/CB",
            "https://app.example/cb/",
            "https://app.example/cb?x=1",
            "https://app.example/cb#f",
            "https://app.example/%2E%2E/cb",
            "https://app.example/cb%2F..%2Fevil",
            "https://app.example%2Fcb",
            "https://evil@app.example/cb",
            "https://app.example:443/cb",
            "https://app.example:8443/cb",
            "https://app.example.evil/cb",
            "http://app.example/cb",
        ] {
            assert!(!redirect_uri_matches(reg, other), "{other}");
        }
        let lo = "http://127.0.0.1/cb";
        assert!(redirect_uri_matches(lo, "http://127.0.0.1:51234/cb"));
        assert!(redirect_uri_matches(
            "http://127.0.0.1:8080/cb",
            "http://127.0.0.1:9/cb"
        ));
        assert!(redirect_uri_matches(
            "http://[::1]/cb",
            "http://[::1]:4000/cb"
        ));
        for other in [
            "http://127.0.0.1:51234/cb/x",
            "http://127.0.0.1:0/cb",
            "http://127.0.0.1:99999/cb",
            "http://127.0.0.1:/cb",
            "http://127.0.0.1.evil.example/cb",
            "http://[::1]:4000/cb",
            "http://localhost:4000/cb",
        ] {
            assert!(!redirect_uri_matches(lo, other), "{other}");
        }
        // localhost is matched exactly, port included.
        assert!(!redirect_uri_matches(
            "http://localhost:3000/cb",
            "http://localhost:3001/cb"
        ));
    }

    #[test]
    fn login_settings_agree_with_grants_and_credential() {
        use GrantType::*;
        let with = |uris: &[&str]| LoginSettings {
            redirect_uris: uris.iter().map(|s| s.to_string()).collect(),
            ..LoginSettings::default()
        };
        let ok = with(&["https://app.example/cb"]);
        assert_eq!(
            check_login_settings(&[AuthorizationCode, RefreshToken], true, &ok),
            Ok(())
        );
        assert_eq!(
            check_login_settings(&[ClientCredentials], false, &with(&[])),
            Ok(())
        );
        let field = |g: &[GrantType], public: bool, l: &LoginSettings| {
            check_login_settings(g, public, l).unwrap_err().0
        };
        assert_eq!(
            field(&[AuthorizationCode], false, &with(&[])),
            "redirect_uris"
        );
        assert_eq!(field(&[ClientCredentials], false, &ok), "redirect_uris");
        assert_eq!(
            field(
                &[AuthorizationCode],
                false,
                &with(&["http://evil.example/cb"])
            ),
            "redirect_uris"
        );
        assert_eq!(field(&[RefreshToken], false, &with(&[])), "grant_types");
        assert_eq!(
            field(&[AuthorizationCode, ClientCredentials], true, &ok),
            "grant_types"
        );
        let no_pkce = LoginSettings {
            require_pkce: false,
            ..ok.clone()
        };
        assert_eq!(field(&[AuthorizationCode], true, &no_pkce), "require_pkce");
        assert_eq!(
            check_login_settings(&[AuthorizationCode], false, &no_pkce),
            Ok(())
        );
        let bad_logout = LoginSettings {
            post_logout_redirect_uris: vec!["https://app.example/#x".into()],
            ..ok
        };
        assert_eq!(
            field(&[AuthorizationCode], false, &bad_logout),
            "post_logout_redirect_uris"
        );
    }

    #[test]
    fn pkce_is_s256_only() {
        // RFC 7636 appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert_eq!(
            check_challenge(Some(challenge), Some("S256"), true),
            Ok(Some(challenge.to_owned()))
        );
        assert!(verify_pkce(challenge, verifier));
        assert!(!verify_pkce(challenge, &verifier.replace('d', "e")));
        assert_eq!(check_challenge(None, None, true), Err(PkceError::Missing));
        assert_eq!(check_challenge(None, None, false), Ok(None));
        assert_eq!(
            check_challenge(Some(challenge), None, true),
            Err(PkceError::Method)
        );
        assert_eq!(
            check_challenge(Some(challenge), Some("plain"), true),
            Err(PkceError::Method)
        );
        assert_eq!(
            check_challenge(None, Some("S256"), false),
            Err(PkceError::MethodWithoutChallenge)
        );
        for bad in [
            &challenge[..42],
            &format!("{challenge}A"),
            "!".repeat(43).as_str(),
        ] {
            assert_eq!(
                check_challenge(Some(bad), Some("S256"), true),
                Err(PkceError::Challenge),
                "{bad}"
            );
        }
        // Verifier length bounds: 42 and 129 are refused even if they hash right.
        for len in [42, 129] {
            let v = "a".repeat(len);
            let c = s256_challenge(&v);
            assert!(!verify_pkce(&c, &v), "{len}");
        }
        for len in [43, 128] {
            let v = "a".repeat(len);
            let c = s256_challenge(&v);
            assert!(verify_pkce(&c, &v), "{len}");
        }
    }
}
