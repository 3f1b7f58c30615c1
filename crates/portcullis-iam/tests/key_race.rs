//! Replicas starting at once on an empty PostgreSQL database create exactly
//! one first key per chain (an advisory lock serializes the decision). Needs
//! PostgreSQL at 127.0.0.1:5432 (fails naming it otherwise), whatever
//! PORTCULLIS_TEST_DATABASE says.

#![allow(clippy::unwrap_used)]

use portcullis_core::clock::FixedClock;
use portcullis_core::jose::SigningAlgorithm::{Es256, Rs256};
use portcullis_core::{Clock, Secret, SystemClock};
use portcullis_iam::crypto::MasterKey;
use portcullis_iam::keys::{KeyRing, KeyRingOptions};
use portcullis_test_support::{TEST_MASTER_KEY, postgres_database};
use std::collections::BTreeMap;
use std::sync::Arc;

async fn start(url: String) -> KeyRing {
    start_at(url, Arc::new(SystemClock)).await
}

async fn start_at(url: String, clock: Arc<dyn Clock>) -> KeyRing {
    let store = portcullis_iam::store::open(&url).await.unwrap();
    let master = Arc::new(MasterKey::from_base64(&Secret::new(TEST_MASTER_KEY)).unwrap());
    let options = KeyRingOptions {
        issuer: "https://iam.race.test".into(),
        alg: Es256,
        chains: vec![Rs256],
        publish_delay: 60,
        max_ttl: 3600,
    };
    let ring = KeyRing::init_with(store, master, clock, options)
        .await
        .unwrap();
    ring.ensure_chains().await.unwrap();
    ring
}

#[tokio::test]
async fn two_replicas_starting_at_once_on_an_empty_database_make_one_key_per_chain() {
    for round in 0..5 {
        let url = postgres_database(&format!("pc_t{}_keyrace_{round}", std::process::id()));
        let (a, b) = tokio::join!(start(url.clone()), start(url.clone()));
        let store = portcullis_iam::store::open(&url).await.unwrap();
        let mut per_alg: BTreeMap<String, usize> = BTreeMap::new();
        for k in store.list_keys().await.unwrap() {
            *per_alg.entry(k.alg.to_string()).or_default() += 1;
        }
        let expected: BTreeMap<String, usize> =
            [("ES256".to_owned(), 1), ("RS256".to_owned(), 1)].into();
        assert_eq!(per_alg, expected, "round {round}");
        // Both replicas sign with the same keys.
        let now = SystemClock.now();
        let (sa, sb) = (a.snapshot(), b.snapshot());
        assert_eq!(
            sa.signer(now).map(|k| k.kid().to_owned()),
            sb.signer(now).map(|k| k.kid().to_owned())
        );
    }
}

/// The race above at its worst, made deterministic: the replica that
/// creates the keys read the clock one second after the other (keys are
/// generated between reading it and inserting them), so its keys activate
/// a second "later" than the other replica's now. They still count.
#[tokio::test]
async fn a_replica_one_second_behind_does_not_make_a_second_first_key() {
    let url = postgres_database(&format!("pc_t{}_keyrace_skew", std::process::id()));
    let t = SystemClock.now();
    let ahead = start_at(url.clone(), Arc::new(FixedClock(t + 1))).await;
    let behind = start_at(url.clone(), Arc::new(FixedClock(t))).await;
    let store = portcullis_iam::store::open(&url).await.unwrap();
    let mut per_alg: BTreeMap<String, usize> = BTreeMap::new();
    for k in store.list_keys().await.unwrap() {
        *per_alg.entry(k.alg.to_string()).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> =
        [("ES256".to_owned(), 1), ("RS256".to_owned(), 1)].into();
    assert_eq!(per_alg, expected);
    drop((ahead, behind));
}
