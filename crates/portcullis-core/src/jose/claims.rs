//! Access-token claims (RFC 9068 §2.2).

use serde::{Deserialize, Serialize};

/// `aud`: one string or an array of strings (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Audiences {
    /// A single audience, serialized as a string.
    One(String),
    /// Several audiences, serialized as an array.
    Many(Vec<String>),
}

impl Audiences {
    /// Builds the compact form: a string for one, an array for several.
    pub fn from_vec(mut v: Vec<String>) -> Self {
        if v.len() == 1 {
            Self::One(v.remove(0))
        } else {
            Self::Many(v)
        }
    }

    /// Whether `aud` names `audience`.
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Self::One(a) => a == audience,
            Self::Many(v) => v.iter().any(|a| a == audience),
        }
    }

    /// All audiences.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(a) => vec![a.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

impl<'de> Deserialize<'de> for Audiences {
    /// A string or an array of strings; anything else is an error. (Written
    /// out rather than `untagged`, which buffers the value first.)
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Audiences;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Audiences, E> {
                Ok(Audiences::One(s.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Audiences, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    v.push(s);
                }
                Ok(Audiences::Many(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// The claims of a Portcullis JWT access token.
///
/// Numeric dates are `u64`: a string, float, negative or null value fails to
/// deserialize, so a wrongly typed `exp` is a rejection, never a skipped check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// Issuer.
    pub iss: String,
    /// Subject: the client id for the client-credentials grant.
    pub sub: String,
    /// Audience(s).
    pub aud: Audiences,
    /// Expiry.
    pub exp: u64,
    /// Issued at.
    pub iat: u64,
    /// Not before.
    pub nbf: u64,
    /// Unique token id, the handle for revocation.
    pub jti: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// Granted scopes, space-delimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The acting party of a token obtained by token exchange (RFC 8693
    /// §4.1), nested for delegation chains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<serde_json::Value>,
    /// The subject's roles (RFC 9068 §7.2.1.1), when it holds any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Confirmation (RFC 7800): for a certificate-bound token (RFC 8705
    /// §3.1) the SHA-256 thumbprint of the client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// The `cnf` claim of a certificate-bound access token (RFC 8705 §3.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// base64url (unpadded) SHA-256 of the DER certificate.
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

/// The claims of an OpenID Connect ID token (OIDC Core §2, §3.1.3.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdTokenClaims {
    /// Issuer.
    pub iss: String,
    /// The user's stable, opaque id.
    pub sub: String,
    /// The client the token is for.
    pub aud: String,
    /// Expiry.
    pub exp: u64,
    /// Issued at.
    pub iat: u64,
    /// When the user last authenticated with a password.
    pub auth_time: u64,
    /// The `nonce` of the authorization request, carried unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Authorized party: the client (OIDC Core §2).
    pub azp: String,
    /// Hash of the access token issued with it (§3.3.2.11).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    /// The login session, for logout (OIDC Front-/Back-Channel Logout `sid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Authentication methods (RFC 8176): `pwd`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// Profile and email claims the granted scopes allow.
    #[serde(flatten)]
    pub profile: serde_json::Map<String, serde_json::Value>,
}

/// `at_hash` (OIDC Core §3.1.3.6): the left half of the hash of the ASCII
/// access token, base64url. The hash is that of the ID token's `alg`:
/// SHA-256 for ES256/RS256/PS256, SHA-512 for EdDSA over Ed25519 (as
/// OpenID Foundation certified providers do).
pub fn at_hash(alg: super::SigningAlgorithm, access_token: &str) -> String {
    use base64::Engine as _;
    let hash = match alg {
        super::SigningAlgorithm::EdDsa => &aws_lc_rs::digest::SHA512,
        _ => &aws_lc_rs::digest::SHA256,
    };
    let d = aws_lc_rs::digest::digest(hash, access_token.as_bytes());
    let half = &d.as_ref()[..d.as_ref().len() / 2];
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(half)
}

#[cfg(test)]
mod id_token_tests {
    use super::*;

    #[test]
    fn at_hash_matches_the_oidc_core_example() {
        // OIDC Core appendix A.3/A.4 uses RS256 over this access token.
        let token = "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y";
        assert_eq!(
            at_hash(super::super::SigningAlgorithm::Rs256, token),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }

    #[test]
    fn id_token_claims_flatten_profile_and_skip_absent() {
        let mut profile = serde_json::Map::new();
        profile.insert("email".into(), "a@example.com".into());
        let c = IdTokenClaims {
            iss: "https://iam".into(),
            sub: "u1".into(),
            aud: "app".into(),
            exp: 2,
            iat: 1,
            auth_time: 1,
            nonce: None,
            azp: "app".into(),
            at_hash: None,
            sid: None,
            amr: vec!["pwd".into()],
            profile,
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["email"], "a@example.com");
        assert!(v.get("nonce").is_none() && v.get("at_hash").is_none());
        assert_eq!(v["amr"][0], "pwd");
    }
}
