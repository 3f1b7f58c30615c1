//! Staged key rotation: tokens signed before, during and after a rotation all
//! validate against the published JWKS throughout, including a JWKS a
//! resource server cached before the new key started signing.

#![allow(clippy::unwrap_used)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use portcullis_test_support::{ManualClock, TestIam, verify_with_jwks};
use reqwest::Method;
use serde_json::Value;
use std::sync::Arc;

fn kid(token: &str) -> String {
    let h: Value =
        serde_json::from_slice(&B64.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
    h["kid"].as_str().unwrap().to_owned()
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

async fn states(iam: &TestIam) -> Vec<(String, String)> {
    let v: Value = iam
        .admin_call(Method::GET, "/admin/keys", None)
        .await
        .json()
        .await
        .unwrap();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["kid"].as_str().unwrap().to_owned(),
                k["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
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
    assert_eq!(algs, ["ES256", "EdDSA"]);
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
