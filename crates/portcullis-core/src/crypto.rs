//! The master key and what is derived from it.
//!
//! One 256-bit master key (config/env) yields, through HKDF-SHA256, an
//! AES-256-GCM key that encrypts signing keys at rest and an HMAC-SHA256 key
//! that digests client secrets. Client secrets are long random strings, so a
//! keyed digest is as strong as a password hash for them and costs
//! microseconds instead of milliseconds (DESIGN.md, performance principles).

use crate::Secret;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use subtle::ConstantTimeEq;

/// Why crypto at rest failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The configured master key is not 32 bytes of base64.
    #[error("master key must be 32 bytes encoded as base64 (e.g. `openssl rand -base64 32`)")]
    BadMasterKey,
    /// Ciphertext did not decrypt: wrong master key or corrupted data.
    #[error("stored key material did not decrypt: wrong master key or corrupted database")]
    Decrypt,
    /// The system random source failed.
    #[error("random source failed")]
    Random,
}

struct Len(usize);
impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// Keys derived from the master key.
pub struct MasterKey {
    aead: LessSafeKey,
    digest: hmac::Key,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    /// Parses a base64 (standard or URL-safe) 32-byte key.
    pub fn from_base64(encoded: &Secret) -> Result<Self, CryptoError> {
        let s = encoded.expose().trim();
        let bytes = STANDARD
            .decode(s)
            .or_else(|_| URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')))
            .map_err(|_| CryptoError::BadMasterKey)?;
        if bytes.len() != 32 {
            return Err(CryptoError::BadMasterKey);
        }
        Self::from_bytes(&bytes)
    }

    /// Derives the working keys from raw key bytes.
    pub fn from_bytes(ikm: &[u8]) -> Result<Self, CryptoError> {
        let prk = Salt::new(HKDF_SHA256, b"portcullis master key v1").extract(ikm);
        let derive = |info: &[u8]| -> Result<[u8; 32], CryptoError> {
            let mut out = [0u8; 32];
            let info = [info];
            prk.expand(&info, Len(32))
                .and_then(|okm| okm.fill(&mut out))
                .map_err(|_| CryptoError::BadMasterKey)?;
            Ok(out)
        };
        let enc = derive(b"signing-key encryption")?;
        let mac = derive(b"client-secret digest")?;
        let aead = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &enc).map_err(|_| CryptoError::BadMasterKey)?,
        );
        Ok(Self {
            aead,
            digest: hmac::Key::new(hmac::HMAC_SHA256, &mac),
        })
    }

    /// Generates a new random master key, base64-encoded.
    pub fn generate_base64() -> Result<Secret, CryptoError> {
        let mut b = [0u8; 32];
        SystemRandom::new()
            .fill(&mut b)
            .map_err(|_| CryptoError::Random)?;
        Ok(Secret::new(STANDARD.encode(b)))
    }

    /// Encrypts `plaintext`, binding it to `context` (e.g. the key id).
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| CryptoError::Random)?;
        let mut buf = plaintext.to_vec();
        self.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut buf,
            )
            .map_err(|_| CryptoError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Decrypts what [`MasterKey::seal`] produced for the same `context`.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < NONCE_LEN {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Decrypt)?;
        let mut buf = ct.to_vec();
        let plain = self
            .aead
            .open_in_place(nonce, Aad::from(context), &mut buf)
            .map_err(|_| CryptoError::Decrypt)?;
        Ok(plain.to_vec())
    }

    /// The keyed digest of a client secret.
    pub fn secret_digest(&self, secret: &str) -> Vec<u8> {
        hmac::sign(&self.digest, secret.as_bytes())
            .as_ref()
            .to_vec()
    }

    /// Whether `secret` matches `digest`, in constant time.
    pub fn verify_secret(&self, secret: &str, digest: &[u8]) -> bool {
        self.secret_digest(secret).ct_eq(digest).into()
    }
}

/// A new client secret: 256 random bits, base64url, with a `pcs_` prefix that
/// secret scanners can recognise.
pub fn generate_client_secret() -> Result<Secret, CryptoError> {
    Ok(Secret::new(format!("pcs_{}", random_token(32)?)))
}

/// `n` random bytes, base64url without padding.
pub fn random_token(n: usize) -> Result<String, CryptoError> {
    let mut b = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| CryptoError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_context_binding() {
        let k = MasterKey::from_base64(&MasterKey::generate_base64().unwrap()).unwrap();
        let sealed = k.seal(b"kid-1", b"private").unwrap();
        assert_eq!(k.open(b"kid-1", &sealed).unwrap(), b"private");
        assert!(k.open(b"kid-2", &sealed).is_err(), "context is bound");
        let other = MasterKey::from_base64(&MasterKey::generate_base64().unwrap()).unwrap();
        assert!(
            other.open(b"kid-1", &sealed).is_err(),
            "another master key fails"
        );
    }

    #[test]
    fn secrets_are_long_and_digests_verify() {
        let k = MasterKey::from_bytes(&[7; 32]).unwrap();
        let s = generate_client_secret().unwrap();
        assert!(s.expose().len() >= 4 + 43);
        let d = k.secret_digest(s.expose());
        assert!(k.verify_secret(s.expose(), &d));
        assert!(!k.verify_secret("pcs_wrong", &d));
    }

    #[test]
    fn bad_master_keys_are_refused() {
        assert!(MasterKey::from_base64(&Secret::new("short")).is_err());
        assert!(MasterKey::from_base64(&Secret::new(STANDARD.encode([0u8; 16]))).is_err());
    }
}
