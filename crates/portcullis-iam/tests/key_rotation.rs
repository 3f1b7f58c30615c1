//! Staged key rotation: tokens signed before, during and after a rotation all
//! validate against the published JWKS throughout, including a JWKS a
//! resource server cached before the new key started signing. Then chains of
//! their own per algorithm (ES256 access tokens beside an RS256 chain), on
//! the key ring over a real SQLite store.

#![allow(clippy::unwrap_used)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use portcullis_core::jose::SigningAlgorithm::{self, EdDsa, Es256, Rs256};
use portcullis_core::{Clock, Secret};
use portcullis_iam::crypto::MasterKey;
use portcullis_iam::keys::{KeyRing, KeyRingOptions, KeyState};
use portcullis_test_support::{ManualClock, TEST_MASTER_KEY, TestIam, verify_with_jwks};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use tempfile::TempDir;

fn kid(token: &str) -> String {
    let h: Value =
        serde_json::from_slice(&B64.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
    h["kid"].as_str().unwrap().to_owned()
}

/// Kids of the access-token chain: the server also keeps an RS256 chain of
/// its own for ID tokens, left out here.
fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["alg"] != "RS256")
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// `(kid, field)` of every entry of `{"keys": [..]}`.
fn kid_and<T: FromIterator<(String, String)>>(v: &Value, field: &str) -> T {
    let s = |k: &Value, f: &str| k[f].as_str().unwrap().to_owned();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (s(k, "kid"), s(k, field)))
        .collect()
}

async fn states(iam: &TestIam) -> Vec<(String, String)> {
    let v: Value = iam
        .admin_call(Method::GET, "/admin/keys", None)
        .await
        .json()
        .await
        .unwrap();
    let access: Vec<Value> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["alg"] != "RS256")
        .cloned()
        .collect();
    kid_and(&json!({ "keys": access }), "state")
}

#[tokio::test]
async fn staged_rotation_never_breaks_validation() {
    let clock = ManualClock::now_real();
    let iam = TestIam::start_full(
        |c| {
            c.key_publish_delay_secs = Some(120);
            c.jwks_max_age_secs = Some(60);
            c.access_token_ttl_secs = Some(300);
            c.max_access_token_ttl_secs = Some(600);
            c.key_refresh_secs = Some(1);
        },
        clock.clone(),
    )
    .await;
    let c = iam.secret_client("svc").await;
    let check = |t: &str, jwks: &Value| verify_with_jwks(t, jwks, &iam.base, "api-1");

    let before = iam.access_token(&c).await;
    let k1 = kid(&before);
    let jwks_before = iam.jwks().await;
    assert_eq!(kids(&jwks_before), std::slice::from_ref(&k1));

    // Rotate: the new key is published at once but does not sign yet.
    let r = iam
        .admin_call(Method::POST, "/admin/keys/rotate", None)
        .await;
    assert_eq!(r.status(), 201);
    let info: Value = r.json().await.unwrap();
    let k2 = info["kid"].as_str().unwrap().to_owned();
    assert_eq!(info["state"], "pending");
    let jwks_during = iam.jwks().await;
    assert_eq!(kids(&jwks_during), [k1.clone(), k2.clone()]);
    assert_eq!(
        states(&iam).await,
        [
            (k1.clone(), "active".into()),
            (k2.clone(), "pending".into())
        ]
    );
    let during = iam.access_token(&c).await;
    assert_eq!(
        kid(&during),
        k1,
        "still the old key during the publish delay"
    );
    for t in [&before, &during] {
        check(t, &jwks_before).unwrap();
        check(t, &jwks_during).unwrap();
    }

    // After the delay the new key signs; a JWKS cached during the delay
    // already knows it, and the old key is still published.
    clock.advance(121);
    let after = iam.access_token(&c).await;
    assert_eq!(kid(&after), k2);
    check(&after, &jwks_during).expect("a JWKS cached before the switch validates new tokens");
    let jwks_after = iam.jwks().await;
    for t in [&before, &during, &after] {
        check(t, &jwks_after).unwrap();
    }
    assert_eq!(
        states(&iam).await,
        [
            (k1.clone(), "retired".into()),
            (k2.clone(), "active".into())
        ]
    );

    // Introspection accepts tokens of both keys.
    let rs = iam.secret_client("rs").await;
    for t in [&before, &after] {
        assert_eq!(iam.introspect(&rs, t).await["active"], true);
    }

    // Once the old key's last token has expired, it leaves the JWKS.
    clock.advance(600 + 61);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(kids(&iam.jwks().await), std::slice::from_ref(&k2));
    assert_eq!(states(&iam).await, [(k2, "active".into())]);
}

#[tokio::test]
async fn changing_the_algorithm_stages_a_rotation() {
    let pinned = |c: &mut portcullis_iam::config::RawConfig| {
        c.issuer = Some("https://iam.test.example".into())
    };
    let mut iam = TestIam::start_with(pinned).await;
    let c = iam.secret_client("svc").await;
    let t1 = iam.access_token(&c).await;
    iam.stop().await;
    let dir = std::mem::replace(&mut iam.dir, tempfile::tempdir().unwrap());
    let mut raw = portcullis_test_support::test_config(dir.path());
    pinned(&mut raw);
    raw.signing_alg = Some("EdDSA".into());
    let iam = TestIam::start_in(dir, raw, Arc::new(portcullis_core::SystemClock)).await;
    let t2 = iam.access_token(&c).await;
    assert_eq!(
        kid(&t1),
        kid(&t2),
        "keeps signing with the old key until the new one is published long enough"
    );
    let jwks = iam.jwks().await;
    let algs: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["alg"].as_str().unwrap())
        .collect();
    assert_eq!(
        algs,
        ["ES256", "RS256", "EdDSA"],
        "RS256 is the ID-token chain"
    );
    verify_with_jwks(&t1, &jwks, &iam.issuer, "api-1").unwrap();

    let r = iam
        .admin_call(
            Method::POST,
            "/admin/keys/rotate",
            Some(serde_json::json!({"alg": "HS256"})),
        )
        .await;
    assert_eq!(r.status(), 400, "only asymmetric algorithms");
}

#[tokio::test]
async fn a_wrong_master_key_refuses_to_start() {
    let mut iam = TestIam::start().await;
    iam.stop().await;
    let mut raw = portcullis_test_support::test_config(iam.dir.path());
    raw.master_key = Some("b3RoZXItbWFzdGVyLWtleS0wMTIzNDU2Nzg5YWJjZGU=".into());
    let config = raw.validate(&|_| None).unwrap();
    let err = portcullis_iam::server::start(config)
        .await
        .err()
        .expect("must refuse");
    assert!(err.to_string().contains("did not decrypt"), "{err}");
}

#[tokio::test]
async fn rotating_an_algorithm_without_a_chain_of_its_own_moves_access_tokens_as_before() {
    let clock = ManualClock::now_real();
    let iam = TestIam::start_full(|c| c.key_publish_delay_secs = Some(120), clock.clone()).await;
    let c = iam.secret_client("svc").await;
    let k1 = kid(&iam.access_token(&c).await);
    let r = iam
        .admin_call(
            Method::POST,
            "/admin/keys/rotate",
            Some(json!({"alg": "PS256"})),
        )
        .await;
    assert_eq!(r.status(), 201);
    let k2 = r.json::<Value>().await.unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(kid(&iam.access_token(&c).await), k1);
    clock.advance(121);
    let after = iam.access_token(&c).await;
    assert_eq!(kid(&after), k2, "one access-token chain, as before chains");
    verify_with_jwks(&after, &iam.jwks().await, &iam.base, "api-1").unwrap();
    assert_eq!(
        states(&iam).await,
        [(k1, "retired".into()), (k2, "active".into())]
    );
}

// ----- Chains of their own -------------------------------------------------

const ISSUER: &str = "https://iam.test.example";
const PUBLISH_DELAY: u64 = 120;
const MAX_TTL: u64 = 600;

/// A key ring over the SQLite store in `dir` (a restart when it exists).
/// The server serves before it made the ID-token key: whoever needs it
/// first (housekeeping, a code redemption) makes it, and racing callers get
/// one key, not one each.
#[tokio::test]
async fn racing_callers_create_one_first_key_per_chain() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::now_real();
    let url = format!("sqlite://{}", dir.path().join("iam.db").display());
    let store = portcullis_iam::store::open(&url).await.unwrap();
    let master = MasterKey::from_base64(&Secret::new(TEST_MASTER_KEY)).unwrap();
    let options = KeyRingOptions {
        issuer: ISSUER.into(),
        alg: Es256,
        chains: vec![Rs256],
        publish_delay: PUBLISH_DELAY,
        max_ttl: MAX_TTL,
    };
    let ring = KeyRing::init_with(store, Arc::new(master), clock.clone(), options)
        .await
        .unwrap();
    assert!(ring.snapshot().signer_for(Rs256, clock.now()).is_none());
    assert_eq!(
        published(&ring).len(),
        1,
        "only the access-token key so far"
    );

    let (a, b, c) = tokio::join!(
        ring.ensure_chains(),
        ring.ensure_chains(),
        ring.ensure_chains()
    );
    a.and(b).and(c).unwrap();
    let algs: Vec<String> = published(&ring).into_iter().map(|(_, alg)| alg).collect();
    assert_eq!(algs.iter().filter(|a| *a == "RS256").count(), 1, "{algs:?}");
    assert!(ring.snapshot().signer_for(Rs256, clock.now()).is_some());
}

async fn ring(
    dir: &Path,
    clock: &Arc<ManualClock>,
    alg: SigningAlgorithm,
    chains: &[SigningAlgorithm],
) -> KeyRing {
    let url = format!("sqlite://{}", dir.join("iam.db").display());
    let store = portcullis_iam::store::open(&url).await.unwrap();
    let master = MasterKey::from_base64(&Secret::new(TEST_MASTER_KEY)).unwrap();
    let options = KeyRingOptions {
        issuer: ISSUER.into(),
        alg,
        chains: chains.to_vec(),
        publish_delay: PUBLISH_DELAY,
        max_ttl: MAX_TTL,
    };
    let ring = KeyRing::init_with(store, Arc::new(master), clock.clone(), options)
        .await
        .unwrap();
    ring.ensure_chains().await.unwrap();
    ring
}

/// The JWKS the ring serves, as `(kid, alg)` pairs. Keys activated in the
/// same second come in no defined order, so the sets are compared.
fn published(ring: &KeyRing) -> BTreeSet<(String, String)> {
    kid_and(
        &serde_json::from_str(ring.snapshot().jwks_json()).unwrap(),
        "alg",
    )
}

fn published_kids(ring: &KeyRing) -> BTreeSet<String> {
    published(ring).into_iter().map(|(kid, _)| kid).collect()
}

/// `(kid, alg, state)` of every key the ring lists, by kid.
fn listed(ring: &KeyRing) -> Vec<(String, String, KeyState)> {
    let mut keys: Vec<_> = ring
        .list()
        .into_iter()
        .map(|k| (k.kid, k.alg, k.state))
        .collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    keys
}

fn sorted_by_kid<const N: usize>(
    mut keys: [(String, String, KeyState); N],
) -> Vec<(String, String, KeyState)> {
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    keys.into()
}

/// The kid of the access-token signer now.
fn access_kid(ring: &KeyRing, clock: &ManualClock) -> String {
    let snap = ring.snapshot();
    let key = snap.signer(clock.now()).unwrap();
    key.kid().to_owned()
}

/// The kid of `alg`'s active key now.
fn kid_for(ring: &KeyRing, clock: &ManualClock, alg: SigningAlgorithm) -> String {
    let snap = ring.snapshot();
    let key = snap.signer_for(alg, clock.now()).unwrap();
    assert_eq!(key.alg(), alg);
    key.kid().to_owned()
}

/// A token signed now by `alg`'s active key.
fn sign(ring: &KeyRing, clock: &ManualClock, alg: SigningAlgorithm) -> String {
    let now = clock.now();
    let claims = json!({
        "iss": ISSUER, "sub": "svc", "aud": "api-1", "client_id": "svc", "jti": now.to_string(),
        "iat": now, "nbf": now, "exp": now + 100_000,
    });
    let snap = ring.snapshot();
    snap.signer_for(alg, now)
        .unwrap()
        .sign_access_token(&claims)
        .unwrap()
}

/// Whether the ring's JWKS (as a resource server sees it) and its own
/// verifier (introspection) accept `token`.
fn verifies(ring: &KeyRing, clock: &ManualClock, token: &str) -> bool {
    let jwks: Value = serde_json::from_str(ring.snapshot().jwks_json()).unwrap();
    let external = verify_with_jwks(token, &jwks, ISSUER, "api-1").is_ok();
    let internal = ring
        .snapshot()
        .verifier()
        .verify(token, clock.now())
        .is_ok();
    assert_eq!(external, internal, "JWKS and verifier disagree");
    external
}

/// A new store with an ES256 access-token chain and an RS256 chain: its
/// directory, the clock, the ring, and the kids of the ES256 and RS256 keys.
async fn two_chains() -> (TempDir, Arc<ManualClock>, KeyRing, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::now_real();
    let ring = ring(dir.path(), &clock, Es256, &[Rs256]).await;
    let es = access_kid(&ring, &clock);
    let rs = kid_for(&ring, &clock, Rs256);
    (dir, clock, ring, es, rs)
}

#[tokio::test]
async fn every_chain_is_published_and_signs_with_its_own_algorithm() {
    let (_dir, clock, ring, es, rs) = two_chains().await;
    assert_eq!(access_kid(&ring, &clock), es);
    assert_eq!(kid_for(&ring, &clock, Es256), es);
    assert_eq!(
        published(&ring),
        BTreeSet::from([(es.clone(), "ES256".into()), (rs.clone(), "RS256".into())])
    );
    assert_eq!(
        listed(&ring),
        sorted_by_kid([
            (es, "ES256".into(), KeyState::Active),
            (rs, "RS256".into(), KeyState::Active)
        ])
    );
    assert!(ring.snapshot().signer_for(EdDsa, clock.now()).is_none());
    for alg in [Es256, Rs256] {
        let token = sign(&ring, &clock, alg);
        assert!(verifies(&ring, &clock, &token), "{alg}");
    }
}

#[tokio::test]
async fn rotating_one_chain_leaves_the_other_alone() {
    let (_dir, clock, ring, e1, r1) = two_chains().await;

    // RS256 rotates; ES256 signs on, with no retirement scheduled.
    let r2 = ring.rotate(Rs256).await.unwrap();
    assert_eq!(r2.state, KeyState::Pending);
    assert_eq!(
        published_kids(&ring),
        BTreeSet::from([e1.clone(), r1.clone(), r2.kid.clone()])
    );
    assert_eq!(
        kid_for(&ring, &clock, Rs256),
        r1,
        "during the publish delay"
    );
    clock.advance(PUBLISH_DELAY + 1);
    assert_eq!(kid_for(&ring, &clock, Rs256), r2.kid);
    assert_eq!(access_kid(&ring, &clock), e1);
    assert_eq!(kid_for(&ring, &clock, Es256), e1);
    let info = |kid: &str| ring.list().into_iter().find(|k| k.kid == kid).unwrap();
    assert_eq!(info(&r1).state, KeyState::Retired);
    assert_eq!(info(&r1).retire_at, Some(r2.activate_at));
    assert_eq!(info(&e1).state, KeyState::Active);
    assert_eq!(info(&e1).retire_at, None);

    // ES256 rotates; the RS256 signer stays.
    let e2 = ring.rotate(Es256).await.unwrap();
    assert_eq!(access_kid(&ring, &clock), e1);
    clock.advance(PUBLISH_DELAY + 1);
    assert_eq!(access_kid(&ring, &clock), e2.kid);
    assert_eq!(kid_for(&ring, &clock, Rs256), r2.kid);
    assert_eq!(info(&e1).state, KeyState::Retired);
    assert_eq!(info(&r2.kid).state, KeyState::Active);
    assert_eq!(info(&r2.kid).retire_at, None);
}

#[tokio::test]
async fn a_retired_key_of_a_chain_stays_published_until_its_unpublish_time() {
    let (dir, clock, ring, e1, r1) = two_chains().await;
    let old = sign(&ring, &clock, Rs256);

    let r2 = ring.rotate(Rs256).await.unwrap();
    clock.advance(PUBLISH_DELAY + 1);
    let new = sign(&ring, &clock, Rs256);
    let info = ring.list().into_iter().find(|k| k.kid == r1).unwrap();
    let unpublish_at = info.unpublish_at.unwrap();
    assert_eq!(unpublish_at, r2.activate_at + MAX_TTL + 60);

    clock.advance(unpublish_at - 1 - clock.now());
    ring.reload().await.unwrap();
    assert_eq!(
        published_kids(&ring),
        BTreeSet::from([e1.clone(), r1.clone(), r2.kid.clone()])
    );
    assert!(
        verifies(&ring, &clock, &old),
        "the old key's tokens still verify"
    );

    clock.advance(1);
    ring.reload().await.unwrap();
    assert_eq!(
        published_kids(&ring),
        BTreeSet::from([e1.clone(), r2.kid.clone()])
    );
    assert!(!verifies(&ring, &clock, &old));
    assert!(verifies(&ring, &clock, &new));
    assert_eq!(access_kid(&ring, &clock), e1, "ES256 unaffected throughout");

    // A day later the key is deleted from the store, not just unpublished.
    clock.advance(86_400);
    ring.reload().await.unwrap();
    let url = format!("sqlite://{}", dir.path().join("iam.db").display());
    let stored = portcullis_iam::store::open(&url)
        .await
        .unwrap()
        .list_keys()
        .await
        .unwrap();
    let stored: BTreeSet<String> = stored.into_iter().map(|k| k.kid).collect();
    assert_eq!(stored, BTreeSet::from([e1, r2.kid]));
}

#[tokio::test]
async fn a_restart_restores_every_chain_without_creating_keys() {
    let (dir, clock, first, e1, r1) = two_chains().await;
    let r2 = first.rotate(Rs256).await.unwrap();
    let before = listed(&first);
    drop(first);

    clock.advance(10);
    let again = ring(dir.path(), &clock, Es256, &[Rs256]).await;
    assert_eq!(listed(&again), before);
    assert_eq!(access_kid(&again, &clock), e1);
    assert_eq!(
        kid_for(&again, &clock, Rs256),
        r1,
        "the pending key still waits"
    );
    clock.advance(PUBLISH_DELAY);
    assert_eq!(kid_for(&again, &clock, Rs256), r2.kid);
    drop(again);

    let third = ring(dir.path(), &clock, Es256, &[Rs256]).await;
    assert_eq!(
        published_kids(&third),
        BTreeSet::from([e1.clone(), r1, r2.kid.clone()])
    );
    assert_eq!(access_kid(&third, &clock), e1);
    assert_eq!(kid_for(&third, &clock, Rs256), r2.kid);
}

#[tokio::test]
async fn a_chain_declared_later_gets_its_first_key_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::now_real();
    let plain = ring(dir.path(), &clock, Es256, &[]).await;
    let e1 = access_kid(&plain, &clock);
    assert_eq!(published_kids(&plain), BTreeSet::from([e1.clone()]));
    drop(plain);

    clock.advance(10);
    let ring = ring(dir.path(), &clock, Es256, &[Rs256]).await;
    let r1 = kid_for(&ring, &clock, Rs256);
    assert_eq!(published_kids(&ring), BTreeSet::from([e1.clone(), r1]));
    assert_eq!(access_kid(&ring, &clock), e1);
}

#[tokio::test]
async fn changing_the_primary_algorithm_keeps_the_other_chains() {
    let (dir, clock, before, e1, r1) = two_chains().await;
    drop(before);

    clock.advance(10);
    let ring = ring(dir.path(), &clock, EdDsa, &[Rs256]).await;
    let d1 = ring.list().into_iter().find(|k| k.alg == "EdDSA").unwrap();
    assert_eq!(d1.state, KeyState::Pending, "staged, not signing yet");
    assert_eq!(access_kid(&ring, &clock), e1, "the old key signs meanwhile");
    assert!(ring.snapshot().signer_for(EdDsa, clock.now()).is_none());
    assert_eq!(kid_for(&ring, &clock, Rs256), r1);

    clock.advance(PUBLISH_DELAY + 1);
    assert_eq!(access_kid(&ring, &clock), d1.kid);
    assert_eq!(kid_for(&ring, &clock, Rs256), r1, "RS256 is not retired");
    let e1_info = ring.list().into_iter().find(|k| k.kid == e1).unwrap();
    assert_eq!(e1_info.state, KeyState::Retired);
    assert_eq!(e1_info.retire_at, Some(d1.activate_at));

    // The old algorithm leaves the JWKS like any retired key; RS256 stays.
    clock.advance(e1_info.unpublish_at.unwrap() - clock.now());
    ring.reload().await.unwrap();
    assert_eq!(
        published_kids(&ring),
        BTreeSet::from([r1.clone(), d1.kid.clone()])
    );
    assert_eq!(
        listed(&ring),
        sorted_by_kid([
            (r1, "RS256".into(), KeyState::Active),
            (d1.kid, "EdDSA".into(), KeyState::Active)
        ])
    );
}
