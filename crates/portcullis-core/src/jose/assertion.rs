//! `private_key_jwt` client assertions (RFC 7523 §3, OIDC Core §9).

use super::MAX_JWT_BYTES;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

/// What an assertion must satisfy.
#[derive(Debug, Clone)]
pub struct AssertionPolicy {
    /// Accepted `aud` values: the issuer and the token endpoint URL.
    pub audiences: Vec<String>,
    /// How long an assertion is accepted, in seconds: within this of its
    /// `iat`, or, without `iat`, with `exp` at most this far ahead.
    pub max_lifetime: u64,
    /// Clock leeway, in seconds.
    pub leeway: u64,
}

/// A verified assertion: what the caller must record to prevent replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    /// The assertion's `jti`, single-use until `exp`.
    pub jti: String,
    /// When the assertion stops being accepted: `exp`, or earlier when
    /// `iat + max_lifetime` comes first. The jti must be kept until then.
    pub exp: u64,
}

/// Why an assertion was refused. Every variant maps to `invalid_client`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AssertionError {
    /// Not a parseable JWS, or too large.
    #[error("client assertion is malformed")]
    Malformed,
    /// `alg` is `none`, symmetric or otherwise not accepted.
    #[error("client assertion algorithm is not accepted")]
    Algorithm,
    /// No registered key matches `kid`/`alg`.
    #[error("client assertion is signed by a key not registered for the client")]
    UnknownKey,
    /// The signature does not verify with any candidate key.
    #[error("client assertion signature is invalid")]
    BadSignature,
    /// `iss` or `sub` is not the client id.
    #[error("client assertion iss and sub must both be the client id")]
    WrongSubject,
    /// `aud` does not name this server.
    #[error("client assertion aud must be the issuer or the token endpoint")]
    WrongAudience,
    /// `exp` is missing, past, or too far ahead.
    #[error("client assertion exp is missing, expired or too far in the future")]
    Expiry,
    /// `nbf` is in the future.
    #[error("client assertion is not yet valid")]
    NotYetValid,
    /// `jti` is missing or unreasonably long.
    #[error("client assertion jti is missing or too long")]
    Jti,
    /// Unknown critical header.
    #[error("client assertion has unsupported critical header parameters")]
    Crit,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    exp: u64,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    jti: Option<String>,
}

const ACCEPTED: [Algorithm; 9] = [
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// Verifies a client assertion for `client_id` against its registered keys.
///
/// Replay protection is the caller's: record `jti` until `exp` and refuse a
/// second use.
pub fn verify_client_assertion(
    assertion: &str,
    client_id: &str,
    keys: &JwkSet,
    policy: &AssertionPolicy,
    now: u64,
) -> Result<VerifiedAssertion, AssertionError> {
    if assertion.len() > MAX_JWT_BYTES {
        return Err(AssertionError::Malformed);
    }
    let header = decode_header(assertion).map_err(|_| AssertionError::Malformed)?;
    if !ACCEPTED.contains(&header.alg) {
        return Err(AssertionError::Algorithm);
    }
    if header.crit.is_some() {
        return Err(AssertionError::Crit);
    }
    let candidates: Vec<&Jwk> = keys
        .keys
        .iter()
        .filter(|k| match (&header.kid, &k.common.key_id) {
            (Some(want), Some(have)) => want == have,
            (Some(_), None) => false,
            (None, _) => true,
        })
        .filter(|k| super::validate::accepts(k, header.alg))
        .collect();
    if candidates.is_empty() {
        return Err(AssertionError::UnknownKey);
    }
    let mut v = Validation::new(header.alg);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = true;
    v.set_audience(&policy.audiences);
    v.required_spec_claims.clear();
    let mut last = AssertionError::BadSignature;
    for jwk in candidates {
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        match decode::<Claims>(assertion, &key, &v) {
            Ok(data) => return check_claims(data.claims, client_id, policy, now),
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind as K;
                last = match e.kind() {
                    K::InvalidAudience | K::MissingRequiredClaim(_) => {
                        AssertionError::WrongAudience
                    }
                    K::InvalidSignature | K::InvalidEcdsaKey | K::InvalidRsaKey(_) => {
                        AssertionError::BadSignature
                    }
                    _ => AssertionError::Malformed,
                };
                if last != AssertionError::BadSignature {
                    return Err(last);
                }
            }
        }
    }
    Err(last)
}

fn check_claims(
    c: Claims,
    client_id: &str,
    policy: &AssertionPolicy,
    now: u64,
) -> Result<VerifiedAssertion, AssertionError> {
    if c.iss != client_id || c.sub != client_id {
        return Err(AssertionError::WrongSubject);
    }
    if now >= c.exp.saturating_add(policy.leeway) {
        return Err(AssertionError::Expiry);
    }
    // "exp required and short": clients differ in the lifetime they sign
    // (openid-client 60 s, authlib 1 h), so the window that matters is the
    // one we accept the assertion in: within max_lifetime of iat, or, with
    // no iat, an exp no further ahead than max_lifetime.
    let accepted_until = match c.iat {
        Some(iat) if iat > now.saturating_add(policy.leeway) => {
            return Err(AssertionError::NotYetValid);
        }
        Some(iat) if now > iat.saturating_add(policy.max_lifetime) => {
            return Err(AssertionError::Expiry);
        }
        Some(iat) => c.exp.min(iat.saturating_add(policy.max_lifetime)),
        None if c.exp > now.saturating_add(policy.max_lifetime) => {
            return Err(AssertionError::Expiry);
        }
        None => c.exp,
    };
    if c.nbf
        .is_some_and(|nbf| nbf > now.saturating_add(policy.leeway))
    {
        return Err(AssertionError::NotYetValid);
    }
    match c.jti {
        Some(j) if !j.is_empty() && j.len() <= 256 => Ok(VerifiedAssertion {
            jti: j,
            exp: accepted_until.saturating_add(policy.leeway),
        }),
        _ => Err(AssertionError::Jti),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::{SigningAlgorithm, SigningKey};
    use serde_json::json;

    const AUD: &str = "https://iam.test/oauth2/token";

    fn policy() -> AssertionPolicy {
        AssertionPolicy {
            audiences: vec![AUD.into()],
            max_lifetime: 300,
            leeway: 0,
        }
    }

    fn set(key: &SigningKey) -> JwkSet {
        serde_json::from_value(json!({ "keys": [key.public_jwk()] })).unwrap()
    }

    fn sign(key: &SigningKey, claims: serde_json::Value) -> String {
        let mut h = serde_json::Map::new();
        h.insert("typ".into(), "JWT".into());
        key.sign_with_header(h, &claims).unwrap()
    }

    fn good(now: u64) -> serde_json::Value {
        json!({"iss":"c1","sub":"c1","aud":AUD,"exp":now+60,"iat":now,"jti":"a1"})
    }

    #[test]
    fn a_good_assertion_verifies_for_each_algorithm() {
        for alg in SigningAlgorithm::ALL {
            let key = SigningKey::generate(alg).unwrap();
            let r =
                verify_client_assertion(&sign(&key, good(100)), "c1", &set(&key), &policy(), 100);
            assert_eq!(
                r,
                Ok(VerifiedAssertion {
                    jti: "a1".into(),
                    exp: 160
                }),
                "{alg}"
            );
        }
    }

    #[test]
    fn bad_assertions_are_refused() {
        let key = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
        let ks = set(&key);
        let p = policy();
        let check = |claims: serde_json::Value, now| {
            verify_client_assertion(&sign(&key, claims), "c1", &ks, &p, now)
        };
        let mut c = good(100);
        c["aud"] = "https://elsewhere".into();
        assert_eq!(check(c, 100), Err(AssertionError::WrongAudience));
        assert_eq!(check(good(100), 160), Err(AssertionError::Expiry));
        let mut c = good(100);
        c["exp"] = json!(100 + 3600);
        c.as_object_mut().unwrap().remove("iat");
        assert_eq!(
            check(c, 100),
            Err(AssertionError::Expiry),
            "no iat and exp too far ahead"
        );
        let mut c = good(100);
        c["exp"] = json!(100 + 3600);
        assert_eq!(
            check(c.clone(), 350).map(|v| v.exp),
            Ok(400),
            "1 h exp accepted fresh; jti kept until iat + max"
        );
        assert_eq!(
            check(c, 401),
            Err(AssertionError::Expiry),
            "refused once iat is older than the window"
        );
        let mut c = good(100);
        c["iat"] = json!(200);
        assert_eq!(
            check(c, 100),
            Err(AssertionError::NotYetValid),
            "iat in the future"
        );
        let mut c = good(100);
        c.as_object_mut().unwrap().remove("exp");
        assert_eq!(
            check(c, 100),
            Err(AssertionError::Malformed),
            "exp required"
        );
        let mut c = good(100);
        c.as_object_mut().unwrap().remove("jti");
        assert_eq!(check(c, 100), Err(AssertionError::Jti));
        let mut c = good(100);
        c["sub"] = "c2".into();
        assert_eq!(check(c, 100), Err(AssertionError::WrongSubject));
        let other = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
        let r = verify_client_assertion(&sign(&other, good(100)), "c1", &ks, &p, 100);
        assert_eq!(r, Err(AssertionError::UnknownKey), "unregistered kid");
    }
}
