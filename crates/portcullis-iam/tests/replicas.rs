//! Stateless replicas: several IAM servers on one PostgreSQL database give
//! the same answers. Always runs on PostgreSQL (127.0.0.1:5432, or
//! `PORTCULLIS_TEST_POSTGRES_URL`), whichever database the rest of the
//! suite uses; fails, naming the server, when PostgreSQL is not running.

#![allow(clippy::unwrap_used)]

mod browser;

use browser::{Browser, active, payload, redeem, setup, spa_code, token};
use portcullis_core::Clock;
use portcullis_test_support::{ManualClock, TestIam, postgres_database, token_kid};
use reqwest::Method;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// One issuer for every replica (as behind a load balancer).
const ISSUER: &str = "https://iam.replicas.test";

/// A fresh PostgreSQL database for one test.
fn fresh_database() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    postgres_database(&format!("pc_t{}_replicas_{n}", std::process::id()))
}

/// A replica on `url`, with the shared issuer and master key and a
/// one-second key reload.
async fn replica(url: &str, clock: Arc<dyn Clock>) -> TestIam {
    TestIam::start_full(
        |raw| {
            raw.database_url = Some(url.to_owned());
            raw.issuer = Some(ISSUER.into());
            raw.key_refresh_secs = Some(1);
        },
        clock,
    )
    .await
}

/// Two replicas on one fresh database. The second starts once the first
/// has made the signing keys, as a rolling deployment would.
async fn pair(clock: Arc<dyn Clock>) -> (TestIam, TestIam) {
    let url = fresh_database();
    let a = replica(&url, clock.clone()).await;
    let b = replica(&url, clock).await;
    (a, b)
}

async fn revoke(iam: &TestIam, id: &str, secret: &str, token: &str) -> u16 {
    iam.http
        .post(iam.url("/oauth2/revoke"))
        .basic_auth(id, Some(secret))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn stores_opened_at_once_on_a_fresh_database_migrate_it_once() {
    let url = fresh_database();
    let opened = futures_join_all((0..5).map(|_| {
        let url = url.clone();
        async move { portcullis_iam::store::open(&url).await }
    }))
    .await;
    for s in &opened {
        let s = s.as_ref().expect("every replica opens");
        s.ping().await.unwrap();
        assert!(s.list_clients().await.unwrap().is_empty());
    }
}

/// `join_all` without a futures dependency: spawns each and awaits them in order.
async fn futures_join_all<F, T>(futs: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_token_issued_by_one_is_introspected_and_revoked_by_the_other() {
    let (a, b) = pair(Arc::new(portcullis_core::SystemClock)).await;
    let svc = a.secret_client("svc-a").await;
    let rs = b.secret_client("resource-server").await;
    let token = a.access_token(&svc).await;
    assert_eq!(b.introspect(&rs, &token).await["active"], true);
    assert_eq!(a.introspect(&rs, &token).await["active"], true);

    assert_eq!(revoke(&b, &svc.id, &svc.secret, &token).await, 200);
    for iam in [&a, &b] {
        assert_eq!(iam.introspect(&rs, &token).await["active"], false);
    }
    // The revocation feed of either replica lists it.
    for iam in [&a, &b] {
        let feed: Value = iam
            .http
            .get(iam.url("/oauth2/revocations?since=0"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            feed.to_string()
                .contains(&payload(&token)["jti"].as_str().unwrap().to_owned())
        );
    }
}

#[tokio::test]
async fn a_code_redeemed_at_both_replicas_at_once_succeeds_exactly_once() {
    let (a, b) = pair(Arc::new(portcullis_core::SystemClock)).await;
    setup(&a).await;
    let mut browser = Browser::new();
    for _ in 0..5 {
        let code = spa_code(&a, &mut browser).await;
        let ((sa, va), (sb, vb)) = tokio::join!(redeem(&a, &code, &[]), redeem(&b, &code, &[]));
        let mut statuses = [sa, sb];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 400], "{va} {vb}");
        let failed = if sa == 400 { &va } else { &vb };
        assert_eq!(failed["error"], "invalid_grant", "{failed}");
    }
}

#[tokio::test]
async fn a_refresh_token_rotated_at_one_and_replayed_at_the_other_revokes_the_family() {
    let clock = ManualClock::now_real();
    let (a, b) = pair(clock.clone()).await;
    let web_secret = setup(&a).await;
    let mut browser = Browser::new();
    let code = spa_code(&a, &mut browser).await;
    let (s, first) = redeem(&a, &code, &[]).await;
    assert_eq!(s, 200, "{first}");
    let r1 = first["refresh_token"].as_str().unwrap().to_owned();

    let refresh = |r: String| {
        [
            ("grant_type", "refresh_token".to_owned()),
            ("client_id", "spa".to_owned()),
            ("refresh_token", r),
        ]
    };
    let form = refresh(r1.clone());
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (s, second) = token(&a, &form).await;
    assert_eq!(s, 200, "{second}");
    let at2 = second["access_token"].as_str().unwrap().to_owned();
    let r2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert!(active(&b, &web_secret, &at2).await);

    // After the reuse grace window, the spent token comes back at B.
    clock.advance(11);
    let (s, replay) = token(&b, &form).await;
    assert_eq!(s, 400, "{replay}");
    assert_eq!(replay["error"], "invalid_grant");

    // The family is gone at both: the newest refresh token, every access token.
    let form2 = refresh(r2);
    let form2: Vec<(&str, &str)> = form2.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (s, v) = token(&a, &form2).await;
    assert_eq!(s, 400, "{v}");
    for iam in [&a, &b] {
        for t in [first["access_token"].as_str().unwrap(), at2.as_str()] {
            assert!(!active(iam, &web_secret, t).await);
        }
    }
}

#[tokio::test]
async fn a_key_rotated_through_one_is_served_by_the_other_after_its_reload() {
    let clock = ManualClock::now_real();
    let (a, b) = pair(clock.clone()).await;
    let r = a.admin_call(Method::POST, "/admin/keys/rotate", None).await;
    assert_eq!(r.status(), 201);
    let info: Value = r.json().await.unwrap();
    let kid = info["kid"].as_str().unwrap().to_owned();

    // B reloads its keys every second: wait (boundedly) until it publishes the key.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let jwks = b.jwks().await;
        if jwks.to_string().contains(&kid) {
            break;
        }
        assert!(Instant::now() < deadline, "B never published {kid}: {jwks}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Once the publish delay (default 900 s) is over, both sign with it.
    clock.advance(901);
    let svc = a.secret_client("svc").await;
    for iam in [&a, &b] {
        assert_eq!(token_kid(&iam.access_token(&svc).await), kid);
    }
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_at_both_replicas_are_both_served() {
    let (a, b) = pair(Arc::new(portcullis_core::SystemClock)).await;
    setup(&a).await;
    let mut browser = Browser::new();
    for _ in 0..3 {
        let code = spa_code(&a, &mut browser).await;
        let (s, first) = redeem(&a, &code, &[]).await;
        assert_eq!(s, 200, "{first}");
        let r1 = first["refresh_token"].as_str().unwrap();
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", "spa"),
            ("refresh_token", r1),
        ];
        // Within the reuse grace window a racing refresh is served, not a replay.
        let ((sa, va), (sb, vb)) = tokio::join!(token(&a, &form), token(&b, &form));
        assert_eq!((sa, sb), (200, 200), "{va} {vb}");
    }
}

/// Writers at two replicas append revocations at once while a reader pages
/// through the feed by `seq`: the reader sees every entry (a late commit
/// of a lower `seq` would otherwise be skipped for good).
#[tokio::test]
async fn the_revocation_feed_read_during_concurrent_writes_misses_nothing() {
    use portcullis_iam::model::RevocationKind;
    use portcullis_iam::store::NewRevocation;
    let url = fresh_database();
    let stores = [
        portcullis_iam::store::open(&url).await.unwrap(),
        portcullis_iam::store::open(&url).await.unwrap(),
    ];
    let now = portcullis_core::SystemClock.now();
    let writers: Vec<_> = (0..60)
        .map(|n| {
            let store = stores[n % 2].clone();
            tokio::spawn(async move {
                let r = NewRevocation {
                    kind: RevocationKind::Jti,
                    subject: format!("jti-{n}"),
                    issued_before: None,
                    expires_at: now + 3600,
                    revoked_at: now,
                };
                store.add_revocation(&r).await.unwrap()
            })
        })
        .collect();
    let reader = stores[0].clone();
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor = 0;
    let mut read = |batch: Vec<portcullis_iam::model::Revocation>, cursor: &mut i64| {
        for r in batch {
            assert!(r.seq > *cursor, "the feed goes forward");
            *cursor = r.seq;
            seen.insert(r.subject);
        }
    };
    while !writers.iter().all(|w| w.is_finished()) {
        read(
            reader.revocations_since(cursor, now, 7).await.unwrap(),
            &mut cursor,
        );
    }
    for w in writers {
        w.await.unwrap();
    }
    loop {
        let batch = reader.revocations_since(cursor, now, 100).await.unwrap();
        if batch.is_empty() {
            break;
        }
        read(batch, &mut cursor);
    }
    assert_eq!(seen.len(), 60, "{seen:?}");
}
