//! Strict validation of JWT access tokens (RFC 9068 §4, RFC 8725).
//!
//! One implementation for every place that accepts tokens: the IAM server's
//! introspection, the service library and the gateway, so they decide alike.
//!
//! Validation is split in two so that the key can come from an async source
//! (a JWKS cache that may refetch) between the steps:
//! 1. [`inspect`]: size limit, JOSE header, `typ`, `crit`, `kid`, and the
//!    `alg` the token claims — no key, no signature yet;
//! 2. [`verify`]: with the [`VerifyKey`] for that `kid`: the algorithm must
//!    be the key's, the signature must verify, and the claims must parse
//!    strictly (no duplicate names, numeric dates as integers) and pass the
//!    [`Policy`].
//!
//! Keys only ever come from the caller: `jwk`, `jku`, `x5u` and `x5c` headers
//! are never used as key sources.

use super::{ACCESS_TOKEN_TYP, Audiences};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, decode_header};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// The largest `kid` we look up.
pub const MAX_KID_BYTES: usize = 256;

/// Why a token was refused. The display text is safe to log and to send:
/// it never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// Larger than the policy's limit.
    #[error("token too large")]
    TooLarge,
    /// Not a well-formed JWS (segments, base64url, JSON, header fields).
    #[error("token is malformed")]
    Malformed,
    /// `typ` is not `at+jwt` (e.g. an ID token).
    #[error("token type is not at+jwt")]
    WrongType,
    /// A `crit` header parameter we do not understand.
    #[error("token has unsupported critical header parameters")]
    UnsupportedCrit,
    /// No `kid`, or an unreasonable one.
    #[error("token has no usable key id")]
    BadKeyId,
    /// No key with this `kid` in the issuer's JWKS.
    #[error("token is signed by an unknown key")]
    UnknownKey,
    /// The header `alg` is not allowed by configuration.
    #[error("token algorithm is not allowed")]
    AlgorithmNotAllowed,
    /// The header `alg` is not the key's algorithm.
    #[error("token algorithm does not match its key")]
    AlgorithmMismatch,
    /// The signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// A claim name appears twice.
    #[error("token has duplicate claims")]
    DuplicateClaim,
    /// A required claim is missing or has the wrong JSON type.
    #[error("token claims are missing or of the wrong type")]
    InvalidClaims,
    /// `iss` is not the configured issuer.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// `aud` does not contain this service.
    #[error("token audience does not include this service")]
    WrongAudience,
    /// `exp` has passed.
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token is not yet valid")]
    NotYetValid,
    /// `iat` is in the future.
    #[error("token was issued in the future")]
    IssuedInFuture,
}

/// A public verification key bound to exactly one algorithm.
pub struct VerifyKey {
    kid: String,
    alg: Algorithm,
    key: DecodingKey,
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

/// Why a JWK was not usable as a verification key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwkError {
    /// Not a JWK, or missing `kid`.
    #[error("not a usable JWK: {0}")]
    Invalid(&'static str),
    /// The key type, curve and `alg` do not agree, or the algorithm is not allowed.
    #[error("key type, curve and algorithm do not agree or are not allowed")]
    AlgorithmMismatch,
}

/// The algorithm a JWK may be used with: its `kty`/`crv` and its `alg`
/// must agree; RSA keys must state `alg` (RS* and PS* share a key type).
fn key_algorithm(jwk: &Jwk) -> Result<Algorithm, JwkError> {
    let stated: Option<Algorithm> = match jwk.common.key_algorithm {
        None => None,
        Some(ka) => Some(
            ka.to_string()
                .parse()
                .map_err(|_| JwkError::AlgorithmMismatch)?,
        ),
    };
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => return Err(JwkError::AlgorithmMismatch),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => Some(Algorithm::EdDSA),
            _ => return Err(JwkError::AlgorithmMismatch),
        },
        AlgorithmParameters::RSA(_) => None,
        _ => return Err(JwkError::AlgorithmMismatch),
    };
    let rsa = |a: Algorithm| {
        matches!(
            a,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        )
    };
    match (by_type, stated) {
        (Some(t), None) => Ok(t),
        (Some(t), Some(s)) if t == s => Ok(t),
        (None, Some(s)) if rsa(s) => Ok(s),
        _ => Err(JwkError::AlgorithmMismatch),
    }
}

/// Whether `jwk` may verify `alg`: its type, curve and stated `alg` agree
/// with it. An RSA key without `alg` fits any RSA algorithm (client keys are
/// often registered that way); resource-server keys use [`VerifyKey`], which
/// requires RSA keys to state their algorithm.
pub(crate) fn accepts(jwk: &Jwk, alg: Algorithm) -> bool {
    match key_algorithm(jwk) {
        Ok(a) => a == alg,
        Err(_) => {
            matches!(jwk.algorithm, AlgorithmParameters::RSA(_))
                && jwk.common.key_algorithm.is_none()
                && matches!(
                    alg,
                    Algorithm::RS256
                        | Algorithm::RS384
                        | Algorithm::RS512
                        | Algorithm::PS256
                        | Algorithm::PS384
                        | Algorithm::PS512
                )
        }
    }
}

impl VerifyKey {
    /// Builds a key from a public JWK, for one of the `allowed` algorithms.
    /// Refuses private or symmetric material, `use` other than `sig`, and
    /// keys whose type, curve and `alg` disagree.
    pub fn from_jwk(v: &Value, allowed: &[Algorithm]) -> Result<Self, JwkError> {
        let obj = v.as_object().ok_or(JwkError::Invalid("not an object"))?;
        if ["d", "p", "q", "dp", "dq", "qi", "k"]
            .iter()
            .any(|m| obj.contains_key(*m))
        {
            return Err(JwkError::Invalid("private or symmetric key material"));
        }
        if obj.get("use").is_some_and(|u| u != "sig") {
            return Err(JwkError::Invalid("use is not sig"));
        }
        let kid = obj
            .get("kid")
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty() && k.len() <= MAX_KID_BYTES)
            .ok_or(JwkError::Invalid("missing kid"))?
            .to_owned();
        let jwk: Jwk =
            serde_json::from_value(v.clone()).map_err(|_| JwkError::Invalid("does not parse"))?;
        let alg = key_algorithm(&jwk)?;
        if !allowed.contains(&alg) {
            return Err(JwkError::AlgorithmMismatch);
        }
        if let AlgorithmParameters::RSA(p) = &jwk.algorithm {
            // Short RSA moduli are refused (RFC 7518 §3.3: at least 2048 bits).
            let n = base64_len(&p.n);
            if n < 256 {
                return Err(JwkError::Invalid("RSA modulus shorter than 2048 bits"));
            }
        }
        let key =
            DecodingKey::from_jwk(&jwk).map_err(|_| JwkError::Invalid("not a valid public key"))?;
        Ok(Self { kid, alg, key })
    }

    /// Key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The one algorithm this key verifies.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }
}

/// Decoded length of unpadded base64url text. JWK integers carry no leading
/// zero octets (RFC 7518 §6.3.1.1), so this is the modulus length.
fn base64_len(s: &str) -> usize {
    s.len() * 3 / 4
}

/// What a token must satisfy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Exact `iss`.
    pub issuer: String,
    /// An `aud` the token must contain; `None` skips the check (an issuer
    /// introspecting its own tokens).
    pub audience: Option<String>,
    /// Algorithms accepted at all.
    pub algorithms: Vec<Algorithm>,
    /// Clock leeway in seconds for `exp`, `nbf` and `iat`.
    pub leeway: u64,
    /// Largest accepted token, in bytes.
    pub max_token_bytes: usize,
}

/// The header facts needed to find the key.
#[derive(Debug, Clone)]
pub struct Inspected {
    /// Key id.
    pub kid: String,
    /// Algorithm the token claims.
    pub alg: Algorithm,
}

/// Step 1: everything that can be checked without a key.
pub fn inspect(token: &str, policy: &Policy) -> Result<Inspected, ValidationError> {
    if token.len() > policy.max_token_bytes {
        return Err(ValidationError::TooLarge);
    }
    let header = decode_header(token).map_err(|_| ValidationError::Malformed)?;
    let typ_ok = header.typ.as_deref().is_some_and(|t| {
        t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || t.eq_ignore_ascii_case("application/at+jwt")
    });
    if !typ_ok {
        return Err(ValidationError::WrongType);
    }
    if header.crit.is_some() {
        return Err(ValidationError::UnsupportedCrit);
    }
    if !policy.algorithms.contains(&header.alg) {
        return Err(ValidationError::AlgorithmNotAllowed);
    }
    let kid = header
        .kid
        .filter(|k| !k.is_empty() && k.len() <= MAX_KID_BYTES)
        .ok_or(ValidationError::BadKeyId)?;
    Ok(Inspected {
        kid,
        alg: header.alg,
    })
}

/// Claims of a validated access token.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenClaims {
    /// Issuer.
    pub iss: String,
    /// Subject.
    pub sub: String,
    /// Audience(s).
    pub aud: Audiences,
    /// Expiry.
    pub exp: u64,
    /// Issued at.
    pub iat: u64,
    /// Not before, when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Token id.
    pub jti: String,
    /// Client the token was issued to.
    pub client_id: String,
    /// Scopes, space-delimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Every other claim (`roles`, `act`, `cnf`, …).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Registered claims parsed in one pass: typed as RFC 9068 requires, the
/// rest collected into `extra`, and any repeated member name refused
/// (RFC 7519 §4: duplicate claim names are rejected, never last-wins).
struct WireClaims {
    iss: String,
    sub: String,
    aud: Audiences,
    exp: u64,
    iat: u64,
    nbf: Option<u64>,
    jti: String,
    client_id: String,
    scope: Option<String>,
    extra: Map<String, Value>,
}

/// Why claims did not parse: a duplicate name, or anything else.
const DUPLICATE: &str = "duplicate claim";

impl<'de> Deserialize<'de> for WireClaims {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WireClaims;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JWT claims object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<WireClaims, A::Error> {
                let (mut iss, mut sub, mut aud, mut exp, mut iat) = (None, None, None, None, None);
                let (mut nbf, mut jti, mut client_id, mut scope) = (None, None, None, None);
                let mut extra = Map::new();
                macro_rules! once {
                    ($slot:ident) => {{
                        if $slot.is_some() {
                            return Err(de::Error::custom(DUPLICATE));
                        }
                        $slot = Some(m.next_value()?);
                    }};
                }
                while let Some(k) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                    match k.as_ref() {
                        "iss" => once!(iss),
                        "sub" => once!(sub),
                        "aud" => once!(aud),
                        "exp" => once!(exp),
                        "iat" => once!(iat),
                        "nbf" => once!(nbf),
                        "jti" => once!(jti),
                        "client_id" => once!(client_id),
                        "scope" => once!(scope),
                        other => {
                            if extra.contains_key(other) {
                                return Err(de::Error::custom(DUPLICATE));
                            }
                            let v: Value = m.next_value()?;
                            extra.insert(other.to_owned(), v);
                        }
                    }
                }
                let req = |name| de::Error::missing_field(name);
                Ok(WireClaims {
                    iss: iss.ok_or_else(|| req("iss"))?,
                    sub: sub.ok_or_else(|| req("sub"))?,
                    aud: aud.ok_or_else(|| req("aud"))?,
                    exp: exp.ok_or_else(|| req("exp"))?,
                    iat: iat.ok_or_else(|| req("iat"))?,
                    nbf,
                    jti: jti.ok_or_else(|| req("jti"))?,
                    client_id: client_id.ok_or_else(|| req("client_id"))?,
                    scope,
                    extra,
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// Step 2: signature and claims, with the key the `kid` named.
pub fn verify(
    token: &str,
    inspected: &Inspected,
    key: &VerifyKey,
    policy: &Policy,
    now: u64,
) -> Result<TokenClaims, ValidationError> {
    if inspected.alg != key.alg {
        return Err(ValidationError::AlgorithmMismatch);
    }
    // Exactly three segments; the signing input is the first two.
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ValidationError::Malformed);
    };
    let message = &token[..h.len() + 1 + p.len()];
    match jsonwebtoken::crypto::verify(sig, message.as_bytes(), &key.key, key.alg) {
        Ok(true) => {}
        Ok(false) => return Err(ValidationError::BadSignature),
        Err(_) => return Err(ValidationError::Malformed),
    }
    let payload = B64.decode(p).map_err(|_| ValidationError::Malformed)?;
    let c: WireClaims = serde_json::from_slice(&payload).map_err(|e| {
        if e.to_string().starts_with(DUPLICATE) {
            ValidationError::DuplicateClaim
        } else {
            ValidationError::InvalidClaims
        }
    })?;
    if c.iss != policy.issuer {
        return Err(ValidationError::WrongIssuer);
    }
    if let Some(aud) = &policy.audience
        && !c.aud.contains(aud)
    {
        return Err(ValidationError::WrongAudience);
    }
    if now >= c.exp.saturating_add(policy.leeway) {
        return Err(ValidationError::Expired);
    }
    if c.nbf
        .is_some_and(|nbf| nbf > now.saturating_add(policy.leeway))
    {
        return Err(ValidationError::NotYetValid);
    }
    if c.iat > now.saturating_add(policy.leeway) {
        return Err(ValidationError::IssuedInFuture);
    }
    Ok(TokenClaims {
        iss: c.iss,
        sub: c.sub,
        aud: c.aud,
        exp: c.exp,
        iat: c.iat,
        nbf: c.nbf,
        jti: c.jti,
        client_id: c.client_id,
        scope: c.scope,
        extra: c.extra,
    })
}
