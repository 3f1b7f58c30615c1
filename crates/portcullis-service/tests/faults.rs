//! Faults and the real IAM server: issuer down at start and later, key
//! rotation without failures, one fetch for many concurrent unknown kids,
//! revocation through the IAM server's own endpoint.

#![allow(clippy::unwrap_used)]

use portcullis_service::{AuthError, Validator, ValidatorConfig};
use portcullis_test_support::{FakeIssuer, ManualClock, TestIam, basic};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test]
async fn issuer_down_at_start_is_a_clear_error_then_recovers() {
    let iss = FakeIssuer::start().await;
    iss.state.down.store(true, Ordering::SeqCst);
    let mut cfg = ValidatorConfig::new(&iss.issuer, "api");
    cfg.jwks.unknown_kid_interval = Duration::from_millis(300);
    cfg.jwks.min_refresh = Duration::from_millis(300);
    let v = Validator::start(cfg).await;
    let t = iss.sign(&iss.claims("api"));
    match v.validate(&t).await {
        Err(AuthError::Unavailable(why)) => {
            assert!(why.contains("503") || why.contains("status"), "{why}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    iss.state.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(v.validate(&t).await.is_ok(), "recovered without a restart");
}

#[tokio::test]
async fn issuer_down_later_keeps_cached_keys_working() {
    let iss = FakeIssuer::start().await;
    let mut cfg = ValidatorConfig::new(&iss.issuer, "api");
    cfg.cache_capacity = 0; // verify the signature every time
    cfg.jwks.min_refresh = Duration::from_millis(200);
    iss.state.max_age.store(0, Ordering::SeqCst);
    let v = Validator::start(cfg).await;
    assert!(v.validate(&iss.sign(&iss.claims("api"))).await.is_ok());
    iss.state.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(800)).await;
    for _ in 0..5 {
        let mut c = iss.claims("api");
        c["jti"] = json!(format!("j-{}", rand_u32()));
        assert!(
            v.validate(&iss.sign(&c)).await.is_ok(),
            "stale keys are served while the issuer is down"
        );
    }
    assert!(
        iss.state.jwks_fetches.load(Ordering::SeqCst) > 1,
        "refresh kept trying"
    );
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    u32::from_le_bytes(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_with_one_unknown_kid_fetch_once() {
    let iss = FakeIssuer::start().await;
    let v = Validator::start(ValidatorConfig::new(&iss.issuer, "api")).await;
    let before = iss.state.jwks_fetches.load(Ordering::SeqCst);
    let stranger =
        portcullis_core::jose::SigningKey::generate(portcullis_core::jose::SigningAlgorithm::Es256)
            .unwrap();
    let token = Arc::new(stranger.sign_access_token(&iss.claims("api")).unwrap());
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (v, t) = (v.clone(), token.clone());
            tokio::spawn(async move { v.validate(&t).await })
        })
        .collect();
    for t in tasks {
        assert!(matches!(t.await.unwrap(), Err(AuthError::Invalid(_))));
    }
    assert_eq!(
        iss.state.jwks_fetches.load(Ordering::SeqCst) - before,
        1,
        "exactly one JWKS fetch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_at_the_iam_server_causes_no_failures() {
    let clock = ManualClock::now_real();
    let iam = TestIam::start_full(
        |c| {
            c.key_publish_delay_secs = Some(3);
            c.jwks_max_age_secs = Some(1);
            c.key_refresh_secs = Some(1);
        },
        clock.clone(),
    )
    .await;
    let c = iam.secret_client("svc").await;
    let mut cfg = ValidatorConfig::new(&iam.issuer, "api-1");
    cfg.jwks.min_refresh = Duration::from_millis(500);
    cfg.jwks.max_refresh = Duration::from_secs(1);
    cfg.cache_capacity = 0;
    let v = Validator::start(cfg).await;

    let mut kids = std::collections::BTreeSet::new();
    let r = iam
        .admin_call(reqwest::Method::POST, "/admin/keys/rotate", None)
        .await;
    assert_eq!(r.status(), 201);
    // Keep validating fresh tokens while the new key is published, becomes
    // the signer (the IAM clock jumps past the delay), and the old one retires.
    for step in 0..30 {
        if step == 15 {
            clock.advance(4);
        }
        let t = iam.access_token(&c).await;
        let kid = portcullis_test_support::token_kid(&t);
        kids.insert(kid);
        let r = v.validate(&t).await;
        assert!(r.is_ok(), "step {step}: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(kids.len(), 2, "tokens of both keys were validated");
}

#[tokio::test]
async fn a_token_revoked_at_the_iam_server_is_refused_within_the_poll_interval() {
    let iam = TestIam::start().await;
    let c = iam.secret_client("svc").await;
    let mut cfg = ValidatorConfig::new(&iam.issuer, "api-1");
    cfg.revocation_poll = Duration::from_millis(300);
    let v = Validator::start(cfg).await;
    let t = iam.access_token(&c).await;
    let p = v.validate(&t).await.unwrap();
    assert_eq!((p.subject.as_str(), p.client_id.as_str()), ("svc", "svc"));
    assert_eq!(p.scopes, ["read"]);
    let r = iam
        .http
        .post(iam.url("/oauth2/revoke"))
        .header("authorization", basic(&c.id, &c.secret))
        .form(&[("token", t.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(v.validate(&t).await.unwrap_err(), AuthError::Revoked);
    let other = iam.access_token(&c).await;
    assert!(v.validate(&other).await.is_ok(), "only the revoked token");
}

#[tokio::test]
async fn the_digest_given_with_a_principal_is_the_tokens_sha256_cached_or_not() {
    let iss = FakeIssuer::start().await;
    let t = iss.sign(&iss.claims("api"));
    let sha256 = |t: &str| -> [u8; 32] {
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, t.as_bytes())
            .as_ref()
            .try_into()
            .unwrap()
    };
    for capacity in [10, 0] {
        let mut cfg = ValidatorConfig::new(&iss.issuer, "api");
        cfg.cache_capacity = capacity;
        let v = Validator::start(cfg).await;
        // A miss, then (with the cache on) a hit: the same principal and digest.
        let (first, d1) = v.validate_bound_with_digest(&t, None).await.unwrap();
        let (again, d2) = v.validate_bound_with_digest(&t, None).await.unwrap();
        assert_eq!(d1, sha256(&t), "cache capacity {capacity}");
        assert_eq!(d2, d1);
        assert_eq!(first.token_id, again.token_id);
        // Refusals are the same as validate_bound's.
        let mut forged = t.clone();
        forged.push('A');
        assert!(matches!(
            v.validate_bound_with_digest(&forged, None).await,
            Err(AuthError::Invalid(_))
        ));
    }
}

/// The per-thread map of recent tokens sits in front of the shared cache:
/// what it answers must be what the shared cache would.
#[tokio::test]
async fn a_tokens_recent_entry_serves_only_its_validator_and_expires_with_the_token() {
    use portcullis_core::jose::validate::ValidationError;
    let iss = FakeIssuer::start().await;
    let clock = ManualClock::now_real();
    let api = Validator::with_clock(ValidatorConfig::new(&iss.issuer, "api"), clock.clone());
    let other = Validator::with_clock(ValidatorConfig::new(&iss.issuer, "other"), clock.clone());
    let t = iss.sign(&iss.claims("api"));
    // A miss, then hits on this thread.
    for _ in 0..3 {
        assert_eq!(api.validate(&t).await.unwrap().subject, "svc-a");
    }
    // Another validator on the same thread does not take `api`'s entry.
    for _ in 0..2 {
        assert_eq!(
            other.validate(&t).await.unwrap_err(),
            AuthError::Invalid(ValidationError::WrongAudience)
        );
    }
    assert!(api.validate(&t).await.is_ok());
    // Past `exp` and the 30 s leeway, the entry is refused like the token.
    clock.advance(300 + 31);
    assert_eq!(
        api.validate(&t).await.unwrap_err(),
        AuthError::Invalid(ValidationError::Expired)
    );
}

#[tokio::test]
async fn more_tokens_than_a_thread_keeps_recent_all_validate_again() {
    let iss = FakeIssuer::start().await;
    let v = Validator::start(ValidatorConfig::new(&iss.issuer, "api")).await;
    let tokens: Vec<String> = (0..600)
        .map(|i| {
            let mut c = iss.claims("api");
            c["sub"] = json!(format!("svc-{i}"));
            iss.sign(&c)
        })
        .collect();
    for round in 0..2 {
        for (i, t) in tokens.iter().enumerate() {
            let p = v.validate(t).await.unwrap();
            assert_eq!(p.subject, format!("svc-{i}"), "round {round}");
        }
    }
}
