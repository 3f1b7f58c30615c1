//! Verification of Portcullis access tokens against a set of public JWKs.
//!
//! Used by the IAM server's introspection endpoint. Secure by default: the
//! algorithm is taken from the key, never from the token; `typ` must be
//! `at+jwt`; `iss` is compared exactly; `exp`/`nbf` are checked against an
//! injected clock after strict typed parsing.

use super::{ACCESS_TOKEN_TYP, AccessTokenClaims, MAX_JWT_BYTES, SigningAlgorithm};
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};
use serde_json::Value;
use std::collections::HashMap;

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Larger than [`MAX_JWT_BYTES`].
    #[error("token too large")]
    TooLarge,
    /// Not a well-formed JWS, or its claims do not parse.
    #[error("token is malformed")]
    Malformed,
    /// `typ` is not `at+jwt`.
    #[error("token type is not at+jwt")]
    WrongType,
    /// A `crit` header names an extension we do not understand.
    #[error("token has unsupported critical header parameters")]
    UnsupportedCrit,
    /// No key with this `kid` (or no `kid`).
    #[error("token is signed by an unknown key")]
    UnknownKey,
    /// The header `alg` differs from the key's algorithm.
    #[error("token algorithm does not match its key")]
    AlgorithmMismatch,
    /// The signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// `iss` is not ours.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// `exp` has passed.
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token is not yet valid")]
    NotYetValid,
}

struct Key {
    alg: SigningAlgorithm,
    key: DecodingKey,
}

/// Verifies access tokens signed by one issuer's keys.
pub struct TokenVerifier {
    issuer: String,
    keys: HashMap<String, Key>,
    leeway: u64,
}

impl TokenVerifier {
    /// Builds a verifier from public JWKs (each with `kid` and `alg`).
    /// Keys that do not parse or name an unsupported `alg` are skipped.
    pub fn new(issuer: impl Into<String>, jwks: &[Value], leeway: u64) -> Self {
        let mut keys = HashMap::new();
        for v in jwks {
            let (Some(kid), Some(alg)) = (v["kid"].as_str(), v["alg"].as_str()) else {
                continue;
            };
            let Ok(alg) = alg.parse::<SigningAlgorithm>() else {
                continue;
            };
            let Ok(jwk) = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(v.clone()) else {
                continue;
            };
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            keys.insert(kid.to_owned(), Key { alg, key });
        }
        Self {
            issuer: issuer.into(),
            keys,
            leeway,
        }
    }

    /// Verifies `token` at time `now` and returns its claims.
    pub fn verify(&self, token: &str, now: u64) -> Result<AccessTokenClaims, VerifyError> {
        if token.len() > MAX_JWT_BYTES {
            return Err(VerifyError::TooLarge);
        }
        let header = decode_header(token).map_err(|_| VerifyError::Malformed)?;
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || t.eq_ignore_ascii_case("application/at+jwt")
        });
        if !typ_ok {
            return Err(VerifyError::WrongType);
        }
        if header.crit.is_some() {
            return Err(VerifyError::UnsupportedCrit);
        }
        let kid = header.kid.as_deref().ok_or(VerifyError::UnknownKey)?;
        let key = self.keys.get(kid).ok_or(VerifyError::UnknownKey)?;
        if header.alg != key.alg.jwt_alg() {
            return Err(VerifyError::AlgorithmMismatch);
        }
        let mut v = Validation::new(key.alg.jwt_alg());
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        let data = decode::<AccessTokenClaims>(token, &key.key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidSignature => VerifyError::BadSignature,
                K::InvalidAlgorithm => VerifyError::AlgorithmMismatch,
                _ => VerifyError::Malformed,
            }
        })?;
        let c = data.claims;
        if c.iss != self.issuer {
            return Err(VerifyError::WrongIssuer);
        }
        if now >= c.exp.saturating_add(self.leeway) {
            return Err(VerifyError::Expired);
        }
        if c.nbf > now.saturating_add(self.leeway) {
            return Err(VerifyError::NotYetValid);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::{Audiences, SigningKey};
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    const ISS: &str = "https://iam.test";

    fn claims(now: u64) -> AccessTokenClaims {
        AccessTokenClaims {
            iss: ISS.into(),
            sub: "svc".into(),
            aud: Audiences::One("api".into()),
            exp: now + 60,
            iat: now,
            nbf: now,
            jti: "j1".into(),
            client_id: "svc".into(),
            scope: Some("read".into()),
        }
    }

    fn forge(header: Value, payload: Value, sig: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            B64.encode(header.to_string()),
            B64.encode(payload.to_string()),
            B64.encode(sig)
        )
    }

    #[test]
    fn valid_tokens_of_every_algorithm_verify() {
        for alg in SigningAlgorithm::ALL {
            let key = SigningKey::generate(alg).unwrap();
            let v = TokenVerifier::new(ISS, &[key.public_jwk().clone()], 0);
            let t = key.sign_access_token(&claims(1000)).unwrap();
            assert_eq!(v.verify(&t, 1000).unwrap(), claims(1000), "{alg}");
            assert_eq!(v.verify(&t, 1060), Err(VerifyError::Expired));
            assert_eq!(v.verify(&t, 999), Err(VerifyError::NotYetValid));
        }
    }

    #[test]
    fn forged_and_confused_tokens_are_refused() {
        let key = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
        let v = TokenVerifier::new(ISS, &[key.public_jwk().clone()], 0);
        let kid = key.kid();
        let payload = serde_json::to_value(claims(1000)).unwrap();
        // alg none
        let t = forge(
            serde_json::json!({"alg":"none","kid":kid,"typ":"at+jwt"}),
            payload.clone(),
            b"",
        );
        assert!(v.verify(&t, 1000).is_err());
        // HS256 keyed with the public JWK bytes
        let t = forge(
            serde_json::json!({"alg":"HS256","kid":kid,"typ":"at+jwt"}),
            payload.clone(),
            b"x",
        );
        assert_eq!(v.verify(&t, 1000), Err(VerifyError::AlgorithmMismatch));
        // Wrong typ (an ID token)
        let mut h = serde_json::Map::new();
        h.insert("typ".into(), "JWT".into());
        let t = key.sign_with_header(h, &claims(1000)).unwrap();
        assert_eq!(v.verify(&t, 1000), Err(VerifyError::WrongType));
        // Unknown kid
        let other = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
        let t = other.sign_access_token(&claims(1000)).unwrap();
        assert_eq!(v.verify(&t, 1000), Err(VerifyError::UnknownKey));
        // exp as a string
        let mut bad = payload.clone();
        bad["exp"] = "2000".into();
        let mut h = serde_json::Map::new();
        h.insert("typ".into(), "at+jwt".into());
        let t = key.sign_with_header(h.clone(), &bad).unwrap();
        assert_eq!(v.verify(&t, 1000), Err(VerifyError::Malformed));
        // crit
        h.insert("crit".into(), serde_json::json!(["exp"]));
        let t = key.sign_with_header(h, &claims(1000)).unwrap();
        assert_eq!(v.verify(&t, 1000), Err(VerifyError::UnsupportedCrit));
        // Wrong issuer
        let mut c = claims(1000);
        c.iss = format!("{ISS}/");
        let t = key.sign_access_token(&c).unwrap();
        assert_eq!(v.verify(&t, 1000), Err(VerifyError::WrongIssuer));
        // Tampered payload keeps the old signature
        let good = key.sign_access_token(&claims(1000)).unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        let mut c = claims(1000);
        c.scope = Some("admin".into());
        let t = format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(serde_json::to_vec(&c).unwrap()),
            parts[2]
        );
        assert_eq!(v.verify(&t, 1000), Err(VerifyError::BadSignature));
        // Oversize
        assert_eq!(
            v.verify(&"a".repeat(MAX_JWT_BYTES + 1), 1000),
            Err(VerifyError::TooLarge)
        );
    }
}
