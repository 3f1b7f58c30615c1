//! Housekeeping deletes expired rows in bounded batches (500 per statement)
//! until none is left, and keeps live rows. Runs on SQLite, and on
//! PostgreSQL with PORTCULLIS_TEST_DATABASE=postgres.

#![allow(clippy::unwrap_used)]

use portcullis_core::{ClientId, Clock};
use portcullis_iam::model::RevocationKind;
use portcullis_iam::store::NewRevocation;
use std::str::FromStr;

#[tokio::test]
async fn many_expired_rows_are_purged_in_batches_and_live_rows_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        portcullis_iam::store::open(&portcullis_test_support::test_database_url(dir.path()))
            .await
            .unwrap();
    let now = portcullis_core::SystemClock.now();
    let client = ClientId::from_str("svc").unwrap();
    const EXPIRED: u64 = 1234; // more than two batches
    for n in 0..EXPIRED {
        let r = NewRevocation {
            kind: RevocationKind::Jti,
            subject: format!("old-{n}"),
            issued_before: None,
            expires_at: now - 10,
            revoked_at: now - 100,
        };
        store.add_revocation(&r).await.unwrap();
        assert!(
            store
                .use_assertion_jti(&client, &format!("old-{n}"), now - 10)
                .await
                .unwrap()
        );
    }
    for n in 0..5 {
        let r = NewRevocation {
            kind: RevocationKind::Jti,
            subject: format!("live-{n}"),
            issued_before: None,
            expires_at: now + 3600,
            revoked_at: now,
        };
        store.add_revocation(&r).await.unwrap();
        assert!(
            store
                .use_assertion_jti(&client, &format!("live-{n}"), now + 3600)
                .await
                .unwrap()
        );
    }

    let deleted = store.purge_expired(now).await.unwrap();
    assert_eq!(
        deleted,
        2 * EXPIRED,
        "every expired revocation and jti, nothing else"
    );
    assert_eq!(store.purge_expired(now).await.unwrap(), 0, "nothing left");

    let live = store.revocations_since(0, now, 100).await.unwrap();
    assert_eq!(live.len(), 5, "live revocations kept");
    for n in 0..5 {
        assert!(
            !store
                .use_assertion_jti(&client, &format!("live-{n}"), now + 3600)
                .await
                .unwrap(),
            "a live jti is still remembered (replay refused)"
        );
    }
}
