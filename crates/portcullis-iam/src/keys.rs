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
//!
//! # Chains
//!
//! A key's successor is the next key, in activation order, of its chain:
//!
//! - **The access-token chain** holds the keys of the primary algorithm
//!   (`signing_alg`) and of every algorithm without a chain of its own.
//!   [`Snapshot::signer`] is its latest activated key. Changing `signing_alg`
//!   is thus a rotation like any other: a key of the new algorithm is staged,
//!   the old key signs until it activates, then retires and leaves the JWKS.
//! - **One chain per algorithm declared** in [`KeyRingOptions::chains`] (RS256
//!   for ID tokens, say). It is rotated on its own, no other chain's key
//!   retires its keys, and [`Snapshot::signer_for`] gives its active key.
//!
//! ```text
//!  access (ES256)  E1 ---------------| E2 (rotate ES256) ------------
//!  RS256           R1 -------------------------| R2 (rotate RS256) --
//! ```
//!
//! The JWKS and the verifier hold the published keys of every chain.
//!
//! Which algorithms have a chain of their own is configuration, not stored
//! with the keys: every process sharing a store must declare the same ones,
//! as they must agree on `signing_alg`. A process that does not declare RS256
//! counts the RS256 keys into its access-token chain, signs access tokens
//! with them, and retires (and a day later deletes) them when that chain
//! rotates.
//!
//! Moving `signing_alg` to an algorithm that has a chain of its own joins the
//! old algorithm's keys to that chain: the old algorithm's last key retires
//! when the first key of that chain activated after it did. If that instant
//! is past, access tokens move to that chain's key at once (it is published
//! already), but the old key may leave the JWKS before the tokens it signed
//! expire. Rotate the old algorithm (`keys rotate`) and let the new key
//! activate before the move: a rotation is then staged at start, as for any
//! change of `signing_alg`.

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

/// Seconds within which a key activating counts as the chain's active key
/// when a first key is created: longer than generating a key takes, so
/// replicas reading the clock on either side of a second boundary still
/// make one key between them.
const FIRST_KEY_WINDOW: UnixTime = 60;

/// What the ring signs with and how it schedules keys.
#[derive(Debug, Clone)]
pub struct KeyRingOptions {
    /// The `iss` the verifier expects.
    pub issuer: String,
    /// The primary algorithm: access tokens are signed with it.
    pub alg: SigningAlgorithm,
    /// Algorithms with a chain of their own beside the access-token chain
    /// (see the module docs). Listing `alg` too gives it a chain no key of
    /// another algorithm retires: do so when it also signs something else.
    pub chains: Vec<SigningAlgorithm>,
    /// Seconds a rotated key is published before it signs.
    pub publish_delay: u64,
    /// The longest lifetime of a token any chain signs, seconds: a retired
    /// key stays published this long (and a minute) after its successor
    /// activated.
    pub max_ttl: u64,
}

/// How keys group into chains (see the module docs).
#[derive(Debug, Clone)]
struct Chains {
    primary: SigningAlgorithm,
    own: Vec<SigningAlgorithm>,
}

impl Chains {
    fn new(primary: SigningAlgorithm, declared: &[SigningAlgorithm]) -> Self {
        let mut own = Vec::with_capacity(declared.len());
        for &alg in declared {
            if !own.contains(&alg) {
                own.push(alg);
            }
        }
        Self { primary, own }
    }

    /// Whether keys of `alg` belong to the access-token chain.
    fn signs_access(&self, alg: SigningAlgorithm) -> bool {
        alg == self.primary || !self.own.contains(&alg)
    }

    /// The position of the key that takes over from `algs[n]`, for keys in
    /// activation order: the next key of its algorithm if that has a chain of
    /// its own, else the next key of the access-token chain.
    fn successor(&self, algs: &[SigningAlgorithm], n: usize) -> Option<usize> {
        let alg = *algs.get(n)?;
        let own = self.own.contains(&alg);
        let next = algs
            .get(n + 1..)?
            .iter()
            .position(|&a| if own { a == alg } else { self.signs_access(a) })?;
        Some(n + 1 + next)
    }
}

struct Loaded {
    key: Arc<SigningKey>,
    created_at: UnixTime,
    activate_at: UnixTime,
    retire_at: Option<UnixTime>,
    unpublish_at: Option<UnixTime>,
    /// In the access-token chain.
    access: bool,
}

impl Loaded {
    fn is_active(&self, now: UnixTime) -> bool {
        self.activate_at <= now && self.retire_at.is_none_or(|t| t > now)
    }
}

/// An immutable view of the keys, swapped atomically on reload.
pub struct Snapshot {
    keys: Vec<Loaded>,
    jwks: Arc<str>,
    verifier: TokenVerifier,
}

impl Snapshot {
    /// The key that signs access tokens at `now`: the latest activated key
    /// of the access-token chain. That is the primary algorithm's active key,
    /// except while a change of `signing_alg` is staged, when the old
    /// algorithm's key signs until the new one activates.
    pub fn signer(&self, now: UnixTime) -> Option<&Arc<SigningKey>> {
        self.keys
            .iter()
            .rev()
            .find(|k| k.access && k.activate_at <= now)
            .map(|k| &k.key)
    }

    /// The active key of algorithm `alg` at `now`: the key of `alg`'s own
    /// chain, or of the access-token chain if that signs with `alg`. None if
    /// no key of `alg` is active (none at all, only a pending one, or the
    /// access-token chain moved to another algorithm).
    pub fn signer_for(&self, alg: SigningAlgorithm, now: UnixTime) -> Option<&Arc<SigningKey>> {
        self.keys
            .iter()
            .rev()
            .find(|k| k.key.alg() == alg && k.is_active(now))
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
    chains: Chains,
    publish_delay: u64,
    max_ttl: u64,
    snapshot: ArcSwap<Snapshot>,
    /// Held while [`KeyRing::ensure_chains`] creates keys, so that callers
    /// racing to it create one key per chain, not one each.
    creating: tokio::sync::Mutex<()>,
}

impl KeyRing {
    /// Loads the keys; creates the first one if there is none, and stages a
    /// rotation if the configured algorithm differs from the signing key's.
    /// Only the access-token chain: [`KeyRing::init_with`] declares more.
    pub async fn init(
        store: Arc<dyn Store>,
        master: Arc<MasterKey>,
        clock: Arc<dyn Clock>,
        issuer: String,
        alg: SigningAlgorithm,
        publish_delay: u64,
        max_ttl: u64,
    ) -> Result<Self, KeyRingError> {
        let options = KeyRingOptions {
            issuer,
            alg,
            chains: Vec::new(),
            publish_delay,
            max_ttl,
        };
        Self::init_with(store, master, clock, options).await
    }

    /// Loads the keys and makes sure the access-token chain has a signing
    /// key, as [`KeyRing::init`] does. The chains of `options.chains` get
    /// their first keys from [`KeyRing::ensure_chains`], which the caller
    /// runs when it suits it: an RSA key takes a random 50-300 ms to
    /// generate, which a server need not spend before it serves access
    /// tokens.
    pub async fn init_with(
        store: Arc<dyn Store>,
        master: Arc<MasterKey>,
        clock: Arc<dyn Clock>,
        options: KeyRingOptions,
    ) -> Result<Self, KeyRingError> {
        let alg = options.alg;
        let empty = Snapshot {
            keys: Vec::new(),
            jwks: Arc::from("{\"keys\":[]}"),
            verifier: TokenVerifier::new(options.issuer.clone(), &[], 0),
        };
        let ring = Self {
            store,
            master,
            clock,
            issuer: options.issuer,
            chains: Chains::new(alg, &options.chains),
            publish_delay: options.publish_delay,
            max_ttl: options.max_ttl,
            snapshot: ArcSwap::from_pointee(empty),
            creating: tokio::sync::Mutex::new(()),
        };
        ring.reload().await?;
        let now = ring.clock.now();
        let snap = ring.snapshot();
        match snap.signer(now) {
            None => {
                // First start (or a clock set back before every key): a key
                // nobody has cached yet may sign at once. A replica starting
                // at the same time may make it first; then this one uses it.
                if ring.add_first_key(alg, now).await? {
                    tracing::info!(alg = %alg, "created the first signing key");
                }
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

    /// The chains of [`KeyRingOptions::chains`] without an active key.
    /// The primary algorithm's is the access-token chain, seen to by
    /// [`KeyRing::init_with`] (which may still sign with an old one).
    fn chains_wanting_a_key(&self, now: UnixTime) -> Vec<SigningAlgorithm> {
        let snap = self.snapshot();
        self.chains
            .own
            .iter()
            .copied()
            .filter(|&c| c != self.chains.primary && snap.signer_for(c, now).is_none())
            .collect()
    }

    /// Gives each chain of [`KeyRingOptions::chains`] an active first key
    /// if none of its keys is active. Cheap once they have one; concurrent
    /// callers wait for the one that creates the keys.
    pub async fn ensure_chains(&self) -> Result<(), KeyRingError> {
        if self.chains_wanting_a_key(self.clock.now()).is_empty() {
            return Ok(());
        }
        let _creating = self.creating.lock().await;
        // Another process sharing the store (a replica, the CLI) may have
        // created them meanwhile.
        self.reload().await?;
        let now = self.clock.now();
        for chain in self.chains_wanting_a_key(now) {
            // As for the first access-token key: no verifier has cached a
            // key of this chain yet, so its first key may sign at once (one
            // meeting an unknown kid refetches the JWKS, OIDC Core 10.1.1).
            if self.add_first_key(chain, now).await? {
                tracing::info!(alg = %chain, "created the first signing key of its chain");
            }
        }
        Ok(())
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
        let algs: Vec<SigningAlgorithm> = records.iter().map(|r| r.alg).collect();
        let mut keys = Vec::with_capacity(records.len());
        for (n, r) in records.iter().enumerate() {
            let retire_at = self
                .chains
                .successor(&algs, n)
                .and_then(|s| records.get(s))
                .map(|s| s.activate_at);
            let unpublish_at = retire_at.map(|t| t.saturating_add(self.max_ttl + UNPUBLISH_LEEWAY));
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
                retire_at,
                unpublish_at,
                access: self.chains.signs_access(r.alg),
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

    /// Creates the first active key of `alg`'s chain unless another replica
    /// (or process) sharing the store has one active by now; reloads either
    /// way. True if this call created it.
    async fn add_first_key(
        &self,
        alg: SigningAlgorithm,
        now: UnixTime,
    ) -> Result<bool, KeyRingError> {
        let record = self.new_record(alg, now).await?;
        // A racing replica's first key is active from the second *it* read
        // the clock, which can be a second or more after ours (the keys are
        // generated in between): a key activating within the window counts.
        let created = self
            .store
            .insert_first_key(&record, now.saturating_add(FIRST_KEY_WINDOW))
            .await?;
        self.reload().await?;
        if created {
            crate::audit::key_created(&record.kid, alg, now);
        }
        Ok(created)
    }

    /// A new key of `alg`, sealed, as the store keeps it.
    async fn new_record(
        &self,
        alg: SigningAlgorithm,
        activate_at: UnixTime,
    ) -> Result<KeyRecord, KeyRingError> {
        // RSA generation takes tens of milliseconds: keep it off the runtime.
        let key = tokio::task::spawn_blocking(move || SigningKey::generate(alg))
            .await
            .map_err(|e| KeyRingError::Create(e.to_string()))?
            .map_err(|e| KeyRingError::Create(e.to_string()))?;
        let sealed = self
            .master
            .seal(key.kid().as_bytes(), key.pkcs8_der())
            .map_err(|e| KeyRingError::Create(e.to_string()))?;
        Ok(KeyRecord {
            kid: key.kid().to_owned(),
            alg,
            sealed_private: sealed,
            public_jwk: key.public_jwk().clone(),
            created_at: self.clock.now(),
            activate_at,
        })
    }

    async fn add_key(
        &self,
        alg: SigningAlgorithm,
        activate_at: UnixTime,
    ) -> Result<KeyInfo, KeyRingError> {
        let record = self.new_record(alg, activate_at).await?;
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

    /// Staged rotation of `alg`'s chain (the access-token chain unless `alg`
    /// has one of its own): publish a new key now, sign with it after the
    /// delay. Other chains are untouched.
    pub async fn rotate(&self, alg: SigningAlgorithm) -> Result<KeyInfo, KeyRingError> {
        let activate_at = self.clock.now().saturating_add(self.publish_delay);
        self.add_key(alg, activate_at).await
    }

    /// Every published key of every chain, with its state now.
    pub fn list(&self) -> Vec<KeyInfo> {
        let now = self.clock.now();
        let snap = self.snapshot();
        snap.keys
            .iter()
            .map(|k| {
                let state = if k.activate_at > now {
                    KeyState::Pending
                } else if k.is_active(now) {
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
                    retire_at: k.retire_at,
                    unpublish_at: k.unpublish_at,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Chains;
    use portcullis_core::jose::SigningAlgorithm::{EdDsa, Es256, Rs256};

    #[test]
    fn without_declared_chains_every_key_is_one_chain() {
        let c = Chains::new(Es256, &[]);
        let algs = [Es256, EdDsa, Es256];
        assert_eq!(c.successor(&algs, 0), Some(1));
        assert_eq!(c.successor(&algs, 1), Some(2));
        assert_eq!(c.successor(&algs, 2), None);
        assert!(algs.iter().all(|&a| c.signs_access(a)));
    }

    #[test]
    fn a_declared_chain_succeeds_only_itself() {
        let c = Chains::new(Es256, &[Rs256, Rs256]);
        let algs = [Es256, Rs256, Es256, Rs256, Es256];
        assert_eq!(c.successor(&algs, 0), Some(2));
        assert_eq!(c.successor(&algs, 1), Some(3));
        assert_eq!(c.successor(&algs, 2), Some(4));
        assert_eq!(c.successor(&algs, 3), None);
        assert_eq!(c.successor(&algs, 4), None);
        assert!(!c.signs_access(Rs256));
        assert!(
            c.signs_access(EdDsa),
            "an undeclared algorithm joins access"
        );
    }

    #[test]
    fn an_old_primary_hands_over_to_the_new_one_but_not_to_other_chains() {
        // signing_alg moved from ES256 to EdDSA, RS256 kept for ID tokens.
        let c = Chains::new(EdDsa, &[Rs256]);
        let algs = [Es256, Rs256, EdDsa];
        assert_eq!(c.successor(&algs, 0), Some(2));
        assert_eq!(c.successor(&algs, 1), None);
    }

    #[test]
    fn a_declared_primary_is_not_retired_by_an_old_algorithm() {
        // signing_alg moved from ES256 to RS256, which has its own chain.
        let c = Chains::new(Rs256, &[Rs256]);
        let algs = [Rs256, Es256, Rs256];
        assert_eq!(c.successor(&algs, 0), Some(2));
        assert_eq!(c.successor(&algs, 1), Some(2));
        assert!(c.signs_access(Es256) && c.signs_access(Rs256));
    }
}
