//! The signing key ring and its staged rotation.
//!
//! A key's life is computed from two instants and its successor, so replicas
//! agree without coordination:
//!
//! ```text
//!  created_at      activate_at            next.activate_at      + max_ttl + leeway
//!      |--- pending ---|------- active -------|------ retired ------|--- expired
//!      |<-------------------- published in the JWKS ------------------->|
//! ```
//!
//! `rotate` publishes a new key at once and lets it sign only after the
//! publish delay, which is longer than the JWKS `max-age` resource servers
//! cache; the old key stays published until the last token it signed expired.

use crate::crypto::MasterKey;
use crate::model::KeyRecord;
use crate::store::{Store, StoreError};
use arc_swap::ArcSwap;
use portcullis_core::jose::{SigningAlgorithm, SigningKey, TokenVerifier};
use portcullis_core::{Clock, UnixTime};
use serde::Serialize;
use std::sync::Arc;

/// Seconds a retired key stays published beyond the longest token lifetime.
const UNPUBLISH_LEEWAY: u64 = 60;

/// Why the key ring failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRingError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Key material is unreadable (wrong master key, corruption).
    #[error("signing key {kid}: {reason}")]
    Material {
        /// The key.
        kid: String,
        /// What failed.
        reason: String,
    },
    /// Generating or sealing a key failed.
    #[error("could not create a signing key: {0}")]
    Create(String),
}

/// The lifecycle state of a key at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Published, not yet signing.
    Pending,
    /// Signing new tokens.
    Active,
    /// Published for verification only.
    Retired,
    /// No longer published.
    Expired,
}

/// A key and its schedule, as `portcullis keys list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub alg: String,
    /// State now.
    pub state: KeyState,
    /// Published since.
    pub created_at: UnixTime,
    /// Signs from.
    pub activate_at: UnixTime,
    /// Stops signing at (when a successor exists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retire_at: Option<UnixTime>,
    /// Leaves the JWKS at (when a successor exists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unpublish_at: Option<UnixTime>,
}

struct Loaded {
    key: Arc<SigningKey>,
    created_at: UnixTime,
    activate_at: UnixTime,
    unpublish_at: Option<UnixTime>,
}

/// An immutable view of the keys, swapped atomically on reload.
pub struct Snapshot {
    keys: Vec<Loaded>,
    jwks: Arc<str>,
    verifier: TokenVerifier,
}

impl Snapshot {
    /// The key that signs at `now`: the latest one already activated.
    pub fn signer(&self, now: UnixTime) -> Option<&Arc<SigningKey>> {
        self.keys
            .iter()
            .rev()
            .find(|k| k.activate_at <= now)
            .map(|k| &k.key)
    }

    /// The serialized JWK Set of published keys.
    pub fn jwks_json(&self) -> &Arc<str> {
        &self.jwks
    }

    /// A verifier over the published keys.
    pub fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }
}

/// Signing keys, loaded from the store and decrypted with the master key.
pub struct KeyRing {
    store: Arc<dyn Store>,
    master: Arc<MasterKey>,
    clock: Arc<dyn Clock>,
    issuer: String,
    publish_delay: u64,
    max_ttl: u64,
    snapshot: ArcSwap<Snapshot>,
}

impl KeyRing {
    /// Loads the keys; creates the first one if there is none, and stages a
    /// rotation if the configured algorithm differs from the signing key's.
    pub async fn init(
        store: Arc<dyn Store>,
        master: Arc<MasterKey>,
        clock: Arc<dyn Clock>,
        issuer: String,
        alg: SigningAlgorithm,
        publish_delay: u64,
        max_ttl: u64,
    ) -> Result<Self, KeyRingError> {
        let empty = Snapshot {
            keys: Vec::new(),
            jwks: Arc::from("{\"keys\":[]}"),
            verifier: TokenVerifier::new(issuer.clone(), &[], 0),
        };
        let ring = Self {
            store,
            master,
            clock,
            issuer,
            publish_delay,
            max_ttl,
            snapshot: ArcSwap::from_pointee(empty),
        };
        ring.reload().await?;
        let now = ring.clock.now();
        let snap = ring.snapshot();
        match snap.signer(now) {
            None => {
                // First start (or a clock set back before every key): a key
                // nobody has cached yet may sign at once.
                ring.add_key(alg, now).await?;
                tracing::info!(alg = %alg, "created the first signing key");
            }
            Some(active) if active.alg() != alg => {
                let staged = snap
                    .keys
                    .iter()
                    .any(|k| k.activate_at > now && k.key.alg() == alg);
                if !staged {
                    let info = ring.rotate(alg).await?;
                    tracing::warn!(
                        from = %active.alg(), to = %alg, kid = %info.kid,
                        activate_at = info.activate_at,
                        "signing_alg changed: staged a rotation to a key of the new algorithm"
                    );
                }
            }
            Some(_) => {}
        }
        Ok(ring)
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Re-reads keys from the store and swaps the snapshot. Deletes keys
    /// that left the JWKS more than a day ago.
    pub async fn reload(&self) -> Result<(), KeyRingError> {
        let now = self.clock.now();
        let records = self.store.list_keys().await?;
        let mut keys = Vec::with_capacity(records.len());
        for (n, r) in records.iter().enumerate() {
            let next_activate = records.get(n + 1).map(|s| s.activate_at);
            let unpublish_at =
                next_activate.map(|t| t.saturating_add(self.max_ttl + UNPUBLISH_LEEWAY));
            if unpublish_at.is_some_and(|t| t.saturating_add(86_400) <= now) {
                self.store.delete_key(&r.kid).await?;
                continue;
            }
            if unpublish_at.is_some_and(|t| t <= now) {
                continue;
            }
            keys.push(Loaded {
                key: Arc::new(self.open(r)?),
                created_at: r.created_at,
                activate_at: r.activate_at,
                unpublish_at,
            });
        }
        let jwks: Vec<serde_json::Value> =
            keys.iter().map(|k| k.key.public_jwk().clone()).collect();
        let verifier = TokenVerifier::new(self.issuer.clone(), &jwks, 0);
        let jwks = serde_json::json!({ "keys": jwks }).to_string();
        self.snapshot.store(Arc::new(Snapshot {
            keys,
            jwks: Arc::from(jwks),
            verifier,
        }));
        Ok(())
    }

    fn open(&self, r: &KeyRecord) -> Result<SigningKey, KeyRingError> {
        let material = |reason: String| KeyRingError::Material {
            kid: r.kid.clone(),
            reason,
        };
        let der = self
            .master
            .open(r.kid.as_bytes(), &r.sealed_private)
            .map_err(|e| material(e.to_string()))?;
        let key = SigningKey::from_pkcs8(r.alg, der).map_err(|e| material(e.to_string()))?;
        if key.kid() != r.kid {
            return Err(material("key id does not match the key".into()));
        }
        Ok(key)
    }

    async fn add_key(
        &self,
        alg: SigningAlgorithm,
        activate_at: UnixTime,
    ) -> Result<KeyInfo, KeyRingError> {
        // RSA generation takes tens of milliseconds: keep it off the runtime.
        let key = tokio::task::spawn_blocking(move || SigningKey::generate(alg))
            .await
            .map_err(|e| KeyRingError::Create(e.to_string()))?
            .map_err(|e| KeyRingError::Create(e.to_string()))?;
        let sealed = self
            .master
            .seal(key.kid().as_bytes(), key.pkcs8_der())
            .map_err(|e| KeyRingError::Create(e.to_string()))?;
        let record = KeyRecord {
            kid: key.kid().to_owned(),
            alg,
            sealed_private: sealed,
            public_jwk: key.public_jwk().clone(),
            created_at: self.clock.now(),
            activate_at,
        };
        self.store.insert_key(&record).await?;
        self.reload().await?;
        crate::audit::key_created(&record.kid, alg, activate_at);
        Ok(self
            .list()
            .into_iter()
            .find(|k| k.kid == record.kid)
            .unwrap_or_else(|| KeyInfo {
                kid: record.kid,
                alg: alg.to_string(),
                state: KeyState::Pending,
                created_at: record.created_at,
                activate_at,
                retire_at: None,
                unpublish_at: None,
            }))
    }

    /// Staged rotation: publish a new key now, sign with it after the delay.
    pub async fn rotate(&self, alg: SigningAlgorithm) -> Result<KeyInfo, KeyRingError> {
        let activate_at = self.clock.now().saturating_add(self.publish_delay);
        self.add_key(alg, activate_at).await
    }

    /// Every published key with its state now.
    pub fn list(&self) -> Vec<KeyInfo> {
        let now = self.clock.now();
        let snap = self.snapshot();
        let signer = snap.signer(now).map(|k| k.kid().to_owned());
        snap.keys
            .iter()
            .enumerate()
            .map(|(n, k)| {
                let retire_at = snap.keys.get(n + 1).map(|s| s.activate_at);
                let state = if k.activate_at > now {
                    KeyState::Pending
                } else if signer.as_deref() == Some(k.key.kid()) {
                    KeyState::Active
                } else if k.unpublish_at.is_some_and(|t| t <= now) {
                    KeyState::Expired
                } else {
                    KeyState::Retired
                };
                KeyInfo {
                    kid: k.key.kid().to_owned(),
                    alg: k.key.alg().to_string(),
                    state,
                    created_at: k.created_at,
                    activate_at: k.activate_at,
                    retire_at,
                    unpublish_at: k.unpublish_at,
                }
            })
            .collect()
    }
}
