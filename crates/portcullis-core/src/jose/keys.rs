//! Signing keys: generation, PKCS#8 round trip, public JWK, compact JWS.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256,
    RSA_PSS_SHA256, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Serialize;
use serde_json::{Value, json};
use std::fmt;
use std::str::FromStr;

/// An algorithm Portcullis signs tokens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningAlgorithm {
    /// ECDSA P-256 with SHA-256 (the default).
    Es256,
    /// Ed25519.
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys.
    Rs256,
    /// RSASSA-PSS with SHA-256, 2048-bit keys.
    Ps256,
}

impl SigningAlgorithm {
    /// The JOSE `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
            Self::Rs256 => "RS256",
            Self::Ps256 => "PS256",
        }
    }

    /// The matching `jsonwebtoken` algorithm, for verification.
    pub fn jwt_alg(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::Es256 => jsonwebtoken::Algorithm::ES256,
            Self::EdDsa => jsonwebtoken::Algorithm::EdDSA,
            Self::Rs256 => jsonwebtoken::Algorithm::RS256,
            Self::Ps256 => jsonwebtoken::Algorithm::PS256,
        }
    }

    /// All supported algorithms.
    pub const ALL: [SigningAlgorithm; 4] = [Self::Es256, Self::EdDsa, Self::Rs256, Self::Ps256];
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SigningAlgorithm {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| KeyError::UnsupportedAlgorithm(s.chars().take(16).collect()))
    }
}

/// Why a key could not be made or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The algorithm name is not one we sign with.
    #[error("unsupported signing algorithm {0:?} (expected ES256, EdDSA, RS256 or PS256)")]
    UnsupportedAlgorithm(String),
    /// Key generation failed in the crypto library.
    #[error("key generation failed")]
    Generate,
    /// Stored key material did not parse as PKCS#8 for the algorithm.
    #[error("stored key material is not a valid {0} PKCS#8 key")]
    BadKeyMaterial(SigningAlgorithm),
    /// Signing failed in the crypto library.
    #[error("signing failed")]
    Sign,
    /// The claims could not be serialized.
    #[error("claims could not be serialized: {0}")]
    Serialize(#[from] serde_json::Error),
}

enum Pair {
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

/// A private signing key with its key id and public JWK.
///
/// The key pair is parsed once; signing does no key parsing.
pub struct SigningKey {
    kid: String,
    alg: SigningAlgorithm,
    pair: Pair,
    pkcs8: Vec<u8>,
    public_jwk: Value,
    /// `base64url({"alg":..,"kid":..,"typ":"at+jwt"}) + "."`, precomputed.
    at_header_prefix: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("private", &"[redacted]")
            .finish()
    }
}

impl SigningKey {
    /// Generates a fresh key for `alg`.
    pub fn generate(alg: SigningAlgorithm) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let pkcs8 = match alg {
            SigningAlgorithm::Es256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| KeyError::Generate)?
                    .as_ref()
                    .to_vec()
            }
            SigningAlgorithm::EdDsa => Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| KeyError::Generate)?
                .as_ref()
                .to_vec(),
            SigningAlgorithm::Rs256 | SigningAlgorithm::Ps256 => {
                let pair =
                    RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError::Generate)?;
                let der: aws_lc_rs::encoding::Pkcs8V1Der<'static> =
                    pair.as_der().map_err(|_| KeyError::Generate)?;
                der.as_ref().to_vec()
            }
        };
        Self::from_pkcs8(alg, pkcs8)
    }

    /// Loads a key from PKCS#8 DER. The key id is the RFC 7638 thumbprint.
    pub fn from_pkcs8(alg: SigningAlgorithm, pkcs8: Vec<u8>) -> Result<Self, KeyError> {
        let bad = |_| KeyError::BadKeyMaterial(alg);
        let (pair, mut jwk) = match alg {
            SigningAlgorithm::Es256 => {
                let p = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
                    .map_err(bad)?;
                // Uncompressed SEC1 point: 0x04 || X (32) || Y (32).
                let point = p.public_key().as_ref();
                if point.len() != 65 {
                    return Err(KeyError::BadKeyMaterial(alg));
                }
                let jwk = json!({
                    "kty": "EC", "crv": "P-256",
                    "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
                });
                (Pair::Ec(p), jwk)
            }
            SigningAlgorithm::EdDsa => {
                let p = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(bad)?;
                let jwk = json!({
                    "kty": "OKP", "crv": "Ed25519", "x": B64.encode(p.public_key().as_ref()),
                });
                (Pair::Ed(p), jwk)
            }
            SigningAlgorithm::Rs256 | SigningAlgorithm::Ps256 => {
                let p = RsaKeyPair::from_pkcs8(&pkcs8).map_err(bad)?;
                let public = p.public_key();
                let jwk = json!({
                    "kty": "RSA",
                    "n": B64.encode(public.modulus().big_endian_without_leading_zero()),
                    "e": B64.encode(public.exponent().big_endian_without_leading_zero()),
                });
                (Pair::Rsa(p), jwk)
            }
        };
        let kid = thumbprint(&jwk);
        if let Value::Object(m) = &mut jwk {
            m.insert("kid".into(), Value::String(kid.clone()));
            m.insert("alg".into(), Value::String(alg.as_str().into()));
            m.insert("use".into(), Value::String("sig".into()));
        }
        let header = json!({ "alg": alg.as_str(), "kid": kid, "typ": super::ACCESS_TOKEN_TYP });
        let at_header_prefix = format!("{}.", B64.encode(header.to_string()));
        Ok(Self {
            kid,
            alg,
            pair,
            pkcs8,
            public_jwk: jwk,
            at_header_prefix,
        })
    }

    /// The key id (RFC 7638 SHA-256 thumbprint of the public key).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> SigningAlgorithm {
        self.alg
    }

    /// The private key as PKCS#8 DER, for encrypted storage.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public JWK with `kid`, `alg` and `use: sig`. Never private parts.
    pub fn public_jwk(&self) -> &Value {
        &self.public_jwk
    }

    /// Signs `claims` as a JWT access token (`typ: at+jwt`, this key's `kid`).
    pub fn sign_access_token<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        // Sized once: claims are a few hundred bytes, the signature ≤ 512.
        let mut json = Vec::with_capacity(512);
        serde_json::to_writer(&mut json, claims)?;
        let mut out = String::with_capacity(
            self.at_header_prefix.len() + json.len().div_ceil(3) * 4 + 1 + 700,
        );
        out.push_str(&self.at_header_prefix);
        B64.encode_string(&json, &mut out);
        self.finish(out)
    }

    /// Signs `claims` with an arbitrary header (`alg` and `kid` are set here).
    pub fn sign_with_header<T: Serialize>(
        &self,
        mut header: serde_json::Map<String, Value>,
        claims: &T,
    ) -> Result<String, KeyError> {
        header.insert("alg".into(), Value::String(self.alg.as_str().into()));
        header.insert("kid".into(), Value::String(self.kid.clone()));
        let mut out = B64.encode(serde_json::to_vec(&header)?);
        out.push('.');
        B64.encode_string(serde_json::to_vec(claims)?, &mut out);
        self.finish(out)
    }

    /// Appends `.signature` over the signing input already in `out`.
    fn finish(&self, mut out: String) -> Result<String, KeyError> {
        let signature = self.sign_raw(out.as_bytes())?;
        out.push('.');
        B64.encode_string(signature, &mut out);
        Ok(out)
    }

    /// Signs raw bytes; the output is the JWS signature value (e.g. r‖s for ES256).
    pub fn sign_raw(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        match &self.pair {
            Pair::Ec(p) => p
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::Sign),
            Pair::Ed(p) => Ok(p.sign(message).as_ref().to_vec()),
            Pair::Rsa(p) => {
                let padding = if self.alg == SigningAlgorithm::Ps256 {
                    &RSA_PSS_SHA256
                } else {
                    &RSA_PKCS1_SHA256
                };
                let mut sig = vec![0; p.public_modulus_len()];
                p.sign(padding, &rng, message, &mut sig)
                    .map_err(|_| KeyError::Sign)?;
                Ok(sig)
            }
        }
    }
}

/// RFC 7638 JWK thumbprint (SHA-256): the required members in lexicographic
/// order, no whitespace. `serde_json`'s default map is ordered, so
/// serializing the object built above yields exactly that form.
fn thumbprint(jwk: &Value) -> String {
    let required: &[&str] = match jwk["kty"].as_str() {
        Some("EC") => &["crv", "kty", "x", "y"],
        Some("OKP") => &["crv", "kty", "x"],
        _ => &["e", "kty", "n"],
    };
    let mut m = serde_json::Map::new();
    for k in required {
        m.insert((*k).to_owned(), jwk[*k].clone());
    }
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        Value::Object(m).to_string().as_bytes(),
    );
    B64.encode(digest.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_round_trips_through_pkcs8() {
        for alg in SigningAlgorithm::ALL {
            let k = SigningKey::generate(alg).unwrap();
            let again = SigningKey::from_pkcs8(alg, k.pkcs8_der().to_vec()).unwrap();
            assert_eq!(k.kid(), again.kid());
            assert_eq!(k.public_jwk()["alg"], alg.as_str());
            assert_eq!(k.public_jwk()["use"], "sig");
            assert!(
                k.public_jwk().get("d").is_none(),
                "no private part in the JWK"
            );
        }
    }

    #[test]
    fn thumbprint_matches_jsonwebtoken() {
        for alg in SigningAlgorithm::ALL {
            let k = SigningKey::generate(alg).unwrap();
            let jwk: jsonwebtoken::jwk::Jwk =
                serde_json::from_value(k.public_jwk().clone()).unwrap();
            let theirs = jwk
                .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
                .unwrap();
            assert_eq!(k.kid(), theirs);
        }
    }

    #[test]
    fn wrong_material_is_refused() {
        let k = SigningKey::generate(SigningAlgorithm::EdDsa).unwrap();
        assert!(SigningKey::from_pkcs8(SigningAlgorithm::Es256, k.pkcs8_der().to_vec()).is_err());
        assert!(SigningKey::from_pkcs8(SigningAlgorithm::Rs256, vec![1, 2, 3]).is_err());
    }
}
