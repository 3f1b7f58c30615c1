//! SQLite statements of the browser-login flow (see `login.rs` and the
//! `0004_browser_login` migration). Single use and rotation are
//! conditional updates whose affected-row count decides, inside the
//! transaction that records what is issued; SQLite serializes those
//! transactions (`BEGIN IMMEDIATE`).

use super::rows::{LIVE_GRANTS_OF, REFRESH_GRANT as REFRESH_LOCKED};
use sqlx::{Sqlite, SqlitePool, Transaction};

type Pool = SqlitePool;
type Tx<'a> = Transaction<'a, Sqlite>;

sql_login_fns!();

/// A transaction that takes the write lock at once: one that reads first
/// and writes later could not upgrade its lock while another writer
/// commits (SQLITE_BUSY at once, whatever the busy timeout), which
/// concurrent refreshes of one token do.
async fn write_tx(pool: &SqlitePool) -> Result<Tx<'static>, StoreError> {
    Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
}

/// Which grants [`revoke_grants_where`] revokes.
#[derive(Clone, Copy)]
enum By {
    Id,
    Sid,
    User,
}

macro_rules! by_sql {
    ($col:literal) => {
        (
            concat!(
                "INSERT INTO revocations (kind, subject, issued_before, expires_at, revoked_at) \
                 SELECT 'jti', t.jti, NULL, t.expires_at, ?1 FROM grant_tokens t \
                 JOIN grants g ON g.id = t.grant_id \
                 WHERE g.",
                $col,
                " = ?2 AND g.revoked_at IS NULL AND t.expires_at > ?1"
            ),
            concat!(
                "UPDATE grants SET revoked_at = ?1 WHERE ",
                $col,
                " = ?2 AND revoked_at IS NULL"
            ),
        )
    };
}

/// Revokes the grants selected by `by = value`, with a jti revocation for
/// each unexpired access token issued under them. Returns grants revoked.
async fn revoke_grants_where(
    tx: &mut Tx<'_>,
    by: By,
    value: &str,
    now: UnixTime,
) -> Result<u64, StoreError> {
    let (tokens, grants) = match by {
        By::Id => by_sql!("id"),
        By::Sid => by_sql!("sid"),
        By::User => by_sql!("user_id"),
    };
    sqlx::query(tokens)
        .bind(i(now))
        .bind(value)
        .execute(&mut **tx)
        .await?;
    let n = sqlx::query(grants)
        .bind(i(now))
        .bind(value)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::super::{SqliteStore, Store};
    use super::*;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let s = SqliteStore::open(&url).await.unwrap();
        (dir, s)
    }

    fn code() -> AuthCode {
        AuthCode {
            client_id: "app".into(),
            redirect_uri: "https://app/cb".into(),
            code_challenge: None,
            nonce: None,
            scope: "openid".into(),
            audiences: vec!["api".into()],
            user_id: "u1".into(),
            auth_time: 100,
            sid: "s1".into(),
            expires_at: 160,
            used: false,
        }
    }

    fn grant(id: &str) -> Grant {
        Grant {
            id: id.into(),
            client_id: "app".into(),
            user_id: "u1".into(),
            sid: "s1".into(),
            scope: "openid".into(),
            audiences: vec!["api".into()],
            auth_time: 100,
            expires_at: 10_000,
            cnf_x5t: None,
        }
    }

    fn issued(jti: &str, refresh: &[u8]) -> Issuance {
        Issuance {
            access_jti: jti.into(),
            access_exp: 1_000,
            refresh: Some((refresh.to_vec(), 5_000)),
        }
    }

    #[tokio::test]
    async fn a_code_redeems_once_and_its_replay_revokes_what_it_issued() {
        let (_d, s) = store().await;
        s.insert_code(b"c1", &code(), 100).await.unwrap();
        assert!(!s.get_code(b"c1").await.unwrap().unwrap().used);
        assert!(
            s.redeem_code(b"c1", &grant("g1"), &issued("j1", b"r1"), 101)
                .await
                .unwrap()
        );
        assert!(
            !s.redeem_code(b"c1", &grant("g2"), &issued("j2", b"r2"), 102)
                .await
                .unwrap()
        );
        assert!(s.get_code(b"c1").await.unwrap().unwrap().used);
        assert!(!s.is_revoked("j1", "app", 101).await.unwrap());
        assert!(s.revoke_code_grant(b"c1", 103).await.unwrap());
        assert!(s.is_revoked("j1", "app", 101).await.unwrap());
        let r = s
            .rotate_refresh(b"r1", "app", &issued("j3", b"r3"), 10, 104)
            .await
            .unwrap();
        assert_eq!(r, RefreshOutcome::Invalid, "the family is revoked");
        // Expired codes do not redeem.
        s.insert_code(b"c2", &code(), 100).await.unwrap();
        assert!(
            !s.redeem_code(b"c2", &grant("g3"), &issued("j4", b"r4"), 160)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn refresh_tokens_rotate_and_a_late_replay_revokes_the_family() {
        let (_d, s) = store().await;
        s.insert_code(b"c1", &code(), 100).await.unwrap();
        s.redeem_code(b"c1", &grant("g1"), &issued("j1", b"r1"), 100)
            .await
            .unwrap();
        let other = s
            .rotate_refresh(b"r1", "other", &issued("jx", b"rx"), 10, 101)
            .await;
        assert_eq!(
            other.unwrap(),
            RefreshOutcome::Invalid,
            "bound to the client"
        );
        let r = s
            .rotate_refresh(b"r1", "app", &issued("j2", b"r2"), 10, 101)
            .await
            .unwrap();
        assert!(matches!(r, RefreshOutcome::Rotated(g) if g.id == "g1"));
        // Within the grace window: served (a concurrent refresh).
        let r = s
            .rotate_refresh(b"r1", "app", &issued("j3", b"r3"), 10, 105)
            .await
            .unwrap();
        assert!(matches!(r, RefreshOutcome::Rotated(_)));
        // After it: the whole family goes, with its access tokens.
        let r = s
            .rotate_refresh(b"r1", "app", &issued("j4", b"r4"), 10, 200)
            .await
            .unwrap();
        assert_eq!(
            r,
            RefreshOutcome::Replayed {
                grant_id: "g1".into()
            }
        );
        for jti in ["j1", "j2", "j3"] {
            assert!(s.is_revoked(jti, "app", 100).await.unwrap(), "{jti}");
        }
        let r = s
            .rotate_refresh(b"r2", "app", &issued("j5", b"r5"), 10, 201)
            .await
            .unwrap();
        assert_eq!(r, RefreshOutcome::Invalid);
    }

    #[tokio::test]
    async fn ending_a_session_revokes_its_grants_and_failures_count_in_a_window() {
        let (_d, s) = store().await;
        let sess = LoginSession {
            sid: "s1".into(),
            user_id: "u1".into(),
            auth_time: 100,
            expires_at: 1_000,
        };
        s.create_session(b"k", &sess, 100).await.unwrap();
        assert_eq!(s.get_session(b"k", 101).await.unwrap(), Some(sess));
        assert_eq!(s.get_session(b"k", 1_000).await.unwrap(), None, "expired");
        s.insert_code(b"c1", &code(), 100).await.unwrap();
        s.redeem_code(b"c1", &grant("g1"), &issued("j1", b"r1"), 100)
            .await
            .unwrap();
        assert!(s.end_session("s1", 102).await.unwrap());
        assert_eq!(s.get_session(b"k", 103).await.unwrap(), None, "ended");
        assert!(s.is_revoked("j1", "app", 100).await.unwrap());

        assert_eq!(s.add_login_failure("ip:x", 60, 100).await.unwrap(), 1);
        assert_eq!(s.add_login_failure("ip:x", 60, 110).await.unwrap(), 2);
        assert_eq!(s.login_failures("ip:x", 60, 120).await.unwrap(), (2, 110));
        assert_eq!(
            s.add_login_failure("ip:x", 60, 500).await.unwrap(),
            1,
            "window passed"
        );
        s.clear_login_failures("ip:x").await.unwrap();
        assert_eq!(s.login_failures("ip:x", 60, 500).await.unwrap().0, 0);
    }
}
