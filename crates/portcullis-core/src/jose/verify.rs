//! Verification of an issuer's own tokens against its published keys.
//!
//! The IAM server uses this for introspection and revocation: the same
//! [`validate`](super::validate) rules as every resource server, with the key
//! set known up front and no audience check.

use super::validate::{Policy, TokenClaims, ValidationError, VerifyKey, inspect, verify};
use super::{MAX_JWT_BYTES, SigningAlgorithm};
use serde_json::Value;
use std::collections::HashMap;

/// Verifies tokens signed by one issuer's keys.
pub struct TokenVerifier {
    policy: Policy,
    keys: HashMap<String, VerifyKey>,
}

impl TokenVerifier {
    /// A verifier over public JWKs; keys that do not parse are skipped.
    pub fn new(issuer: impl Into<String>, jwks: &[Value], leeway: u64) -> Self {
        let algorithms: Vec<_> = SigningAlgorithm::ALL.iter().map(|a| a.jwt_alg()).collect();
        let keys = jwks
            .iter()
            .filter_map(|v| VerifyKey::from_jwk(v, &algorithms).ok())
            .map(|k| (k.kid().to_owned(), k))
            .collect();
        let policy = Policy {
            issuer: issuer.into(),
            audience: None,
            algorithms,
            leeway,
            max_token_bytes: MAX_JWT_BYTES,
        };
        Self { policy, keys }
    }

    /// Verifies `token` at time `now` and returns its claims.
    pub fn verify(&self, token: &str, now: u64) -> Result<TokenClaims, ValidationError> {
        let inspected = inspect(token, &self.policy)?;
        let key = self
            .keys
            .get(&inspected.kid)
            .ok_or(ValidationError::UnknownKey)?;
        verify(token, &inspected, key, &self.policy, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::{AccessTokenClaims, Audiences, SigningKey};
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
            act: None,
            roles: Vec::new(),
            cnf: None,
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
            let c = v.verify(&t, 1000).unwrap();
            assert_eq!(
                (c.sub.as_str(), c.exp, c.nbf),
                ("svc", 1060, Some(1000)),
                "{alg}"
            );
            assert_eq!(v.verify(&t, 1060), Err(ValidationError::Expired));
            assert_eq!(v.verify(&t, 999), Err(ValidationError::NotYetValid));
        }
    }

    #[test]
    fn forged_and_confused_tokens_are_refused() {
        let key = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
        let v = TokenVerifier::new(ISS, &[key.public_jwk().clone()], 0);
        let kid = key.kid();
        let payload = serde_json::to_value(claims(1000)).unwrap();
        let t = forge(
            serde_json::json!({"alg":"none","kid":kid,"typ":"at+jwt"}),
            payload.clone(),
            b"",
        );
        assert_eq!(v.verify(&t, 1000), Err(ValidationError::Malformed));
        let t = forge(
            serde_json::json!({"alg":"HS256","kid":kid,"typ":"at+jwt"}),
            payload.clone(),
            b"x",
        );
        assert_eq!(
            v.verify(&t, 1000),
            Err(ValidationError::AlgorithmNotAllowed)
        );
        let t = forge(
            serde_json::json!({"alg":"ES384","kid":kid,"typ":"at+jwt"}),
            payload.clone(),
            b"x",
        );
        assert_eq!(
            v.verify(&t, 1000),
            Err(ValidationError::AlgorithmNotAllowed)
        );
        let mut h = serde_json::Map::new();
        h.insert("typ".into(), "JWT".into());
        let t = key.sign_with_header(h, &claims(1000)).unwrap();
        assert_eq!(v.verify(&t, 1000), Err(ValidationError::WrongType));
        let other = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
        let t = other.sign_access_token(&claims(1000)).unwrap();
        assert_eq!(v.verify(&t, 1000), Err(ValidationError::UnknownKey));
        let mut bad = payload.clone();
        bad["exp"] = "2000".into();
        let mut h = serde_json::Map::new();
        h.insert("typ".into(), "at+jwt".into());
        let t = key.sign_with_header(h.clone(), &bad).unwrap();
        assert_eq!(v.verify(&t, 1000), Err(ValidationError::InvalidClaims));
        h.insert("crit".into(), serde_json::json!(["exp"]));
        let t = key.sign_with_header(h, &claims(1000)).unwrap();
        assert_eq!(v.verify(&t, 1000), Err(ValidationError::UnsupportedCrit));
        let mut c = claims(1000);
        c.iss = format!("{ISS}/");
        let t = key.sign_access_token(&c).unwrap();
        assert_eq!(v.verify(&t, 1000), Err(ValidationError::WrongIssuer));
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
        assert_eq!(v.verify(&t, 1000), Err(ValidationError::BadSignature));
        assert_eq!(
            v.verify(&"a".repeat(MAX_JWT_BYTES + 1), 1000),
            Err(ValidationError::TooLarge)
        );
    }
}
