//! SQLite statements of the browser-login flow (see `login.rs` and the
//! `0004_browser_login` migration). Single use and rotation are
//! conditional updates whose affected-row count decides, inside the
//! transaction that records what is issued.

use super::StoreError;
use super::login::{AuthCode, Consent, Grant, Issuance, LoginSession, RefreshOutcome};
use super::sqlite::{i, json_list, u};
use portcullis_core::UnixTime;
use sqlx::{Row, Sqlite, SqlitePool, Transaction};

type Tx<'a> = Transaction<'a, Sqlite>;

/// A transaction that takes the write lock at once: one that reads first
/// and writes later could not upgrade its lock while another writer
/// commits (SQLITE_BUSY at once, whatever the busy timeout), which
/// concurrent refreshes of one token do.
async fn write_tx(pool: &SqlitePool) -> Result<Tx<'static>, StoreError> {
    Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
}

fn list(row: &sqlx::sqlite::SqliteRow, col: &str) -> Result<Vec<String>, StoreError> {
    let s: String = row.try_get(col)?;
    serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

pub(super) async fn create_session(
    pool: &SqlitePool,
    digest: &[u8],
    s: &LoginSession,
    now: UnixTime,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO login_sessions (digest, sid, user_id, auth_time, created_at, expires_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(digest)
    .bind(&s.sid)
    .bind(&s.user_id)
    .bind(i(s.auth_time))
    .bind(i(now))
    .bind(i(s.expires_at))
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn get_session(
    pool: &SqlitePool,
    digest: &[u8],
    now: UnixTime,
) -> Result<Option<LoginSession>, StoreError> {
    let row = sqlx::query(
        "SELECT sid, user_id, auth_time, expires_at FROM login_sessions \
         WHERE digest = ? AND ended_at IS NULL AND expires_at > ?",
    )
    .bind(digest)
    .bind(i(now))
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok(LoginSession {
            sid: r.try_get("sid")?,
            user_id: r.try_get("user_id")?,
            auth_time: u(r.try_get("auth_time")?),
            expires_at: u(r.try_get("expires_at")?),
        })
    })
    .transpose()
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

pub(super) async fn end_session(
    pool: &SqlitePool,
    sid: &str,
    now: UnixTime,
) -> Result<bool, StoreError> {
    let mut tx = write_tx(pool).await?;
    let n =
        sqlx::query("UPDATE login_sessions SET ended_at = ? WHERE sid = ? AND ended_at IS NULL")
            .bind(i(now))
            .bind(sid)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    revoke_grants_where(&mut tx, By::Sid, sid, now).await?;
    tx.commit().await?;
    Ok(n == 1)
}

pub(super) async fn end_user_sessions(
    pool: &SqlitePool,
    user_id: &str,
    now: UnixTime,
) -> Result<u64, StoreError> {
    let mut tx = write_tx(pool).await?;
    sqlx::query("UPDATE login_sessions SET ended_at = ? WHERE user_id = ? AND ended_at IS NULL")
        .bind(i(now))
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    let n = revoke_grants_where(&mut tx, By::User, user_id, now).await?;
    tx.commit().await?;
    Ok(n)
}

pub(super) async fn insert_code(
    pool: &SqlitePool,
    digest: &[u8],
    c: &AuthCode,
    now: UnixTime,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO auth_codes (digest, client_id, redirect_uri, code_challenge, nonce, scope, \
         audiences, user_id, auth_time, sid, created_at, expires_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(digest)
    .bind(&c.client_id)
    .bind(&c.redirect_uri)
    .bind(c.code_challenge.as_deref())
    .bind(c.nonce.as_deref())
    .bind(&c.scope)
    .bind(json_list(&c.audiences))
    .bind(&c.user_id)
    .bind(i(c.auth_time))
    .bind(&c.sid)
    .bind(i(now))
    .bind(i(c.expires_at))
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn get_code(
    pool: &SqlitePool,
    digest: &[u8],
) -> Result<Option<AuthCode>, StoreError> {
    let row = sqlx::query("SELECT * FROM auth_codes WHERE digest = ?")
        .bind(digest)
        .fetch_optional(pool)
        .await?;
    row.map(|r| {
        Ok(AuthCode {
            client_id: r.try_get("client_id")?,
            redirect_uri: r.try_get("redirect_uri")?,
            code_challenge: r.try_get("code_challenge")?,
            nonce: r.try_get("nonce")?,
            scope: r.try_get("scope")?,
            audiences: list(&r, "audiences")?,
            user_id: r.try_get("user_id")?,
            auth_time: u(r.try_get("auth_time")?),
            sid: r.try_get("sid")?,
            expires_at: u(r.try_get("expires_at")?),
            used: r.try_get::<Option<i64>, _>("used_at")?.is_some(),
        })
    })
    .transpose()
}

async fn record_issuance(
    tx: &mut Tx<'_>,
    grant_id: &str,
    issued: &Issuance,
    now: UnixTime,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO grant_tokens (grant_id, jti, expires_at) VALUES (?, ?, ?)")
        .bind(grant_id)
        .bind(&issued.access_jti)
        .bind(i(issued.access_exp))
        .execute(&mut **tx)
        .await?;
    if let Some((digest, idle_exp)) = &issued.refresh {
        sqlx::query(
            "INSERT INTO refresh_tokens (digest, grant_id, created_at, idle_expires_at) \
             VALUES (?, ?, ?, ?)",
        )
        .bind(digest.as_slice())
        .bind(grant_id)
        .bind(i(now))
        .bind(i(*idle_exp))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

pub(super) async fn redeem_code(
    pool: &SqlitePool,
    digest: &[u8],
    g: &Grant,
    issued: &Issuance,
    now: UnixTime,
) -> Result<bool, StoreError> {
    let mut tx = write_tx(pool).await?;
    let n = sqlx::query(
        "UPDATE auth_codes SET used_at = ?, grant_id = ? \
         WHERE digest = ? AND used_at IS NULL AND expires_at > ?",
    )
    .bind(i(now))
    .bind(&g.id)
    .bind(digest)
    .bind(i(now))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n != 1 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO grants (id, client_id, user_id, sid, scope, audiences, auth_time, \
         created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&g.id)
    .bind(&g.client_id)
    .bind(&g.user_id)
    .bind(&g.sid)
    .bind(&g.scope)
    .bind(json_list(&g.audiences))
    .bind(i(g.auth_time))
    .bind(i(now))
    .bind(i(g.expires_at))
    .execute(&mut *tx)
    .await?;
    record_issuance(&mut tx, &g.id, issued, now).await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn revoke_code_grant(
    pool: &SqlitePool,
    digest: &[u8],
    now: UnixTime,
) -> Result<bool, StoreError> {
    let mut tx = write_tx(pool).await?;
    let grant: Option<String> = sqlx::query("SELECT grant_id FROM auth_codes WHERE digest = ?")
        .bind(digest)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get("grant_id"))
        .transpose()?
        .flatten();
    let Some(grant) = grant else {
        return Ok(false);
    };
    revoke_grants_where(&mut tx, By::Id, &grant, now).await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn revoke_grant(
    pool: &SqlitePool,
    grant_id: &str,
    now: UnixTime,
) -> Result<bool, StoreError> {
    let mut tx = write_tx(pool).await?;
    let n = revoke_grants_where(&mut tx, By::Id, grant_id, now).await?;
    tx.commit().await?;
    Ok(n == 1)
}

const REFRESH_GRANT: &str = "SELECT r.idle_expires_at, r.rotated_at, g.* FROM refresh_tokens r \
     JOIN grants g ON g.id = r.grant_id WHERE r.digest = ?";

fn grant_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Grant, StoreError> {
    Ok(Grant {
        id: row.try_get("id")?,
        client_id: row.try_get("client_id")?,
        user_id: row.try_get("user_id")?,
        sid: row.try_get("sid")?,
        scope: row.try_get("scope")?,
        audiences: list(row, "audiences")?,
        auth_time: u(row.try_get("auth_time")?),
        expires_at: u(row.try_get("expires_at")?),
    })
}

pub(super) async fn refresh_grant(
    pool: &SqlitePool,
    digest: &[u8],
) -> Result<Option<Grant>, StoreError> {
    let row = sqlx::query(REFRESH_GRANT)
        .bind(digest)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(grant_from_row).transpose()
}

pub(super) async fn rotate_refresh(
    pool: &SqlitePool,
    digest: &[u8],
    client_id: &str,
    issued: &Issuance,
    grace: u64,
    now: UnixTime,
) -> Result<RefreshOutcome, StoreError> {
    let mut tx = write_tx(pool).await?;
    let row = sqlx::query(REFRESH_GRANT)
        .bind(digest)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else {
        return Ok(RefreshOutcome::Invalid);
    };
    let grant = grant_from_row(&row)?;
    let revoked = row.try_get::<Option<i64>, _>("revoked_at")?.is_some();
    let idle_exp = u(row.try_get("idle_expires_at")?);
    let rotated_at = row.try_get::<Option<i64>, _>("rotated_at")?.map(u);
    // A token of another client reveals nothing and changes nothing.
    if grant.client_id != client_id || revoked || grant.expires_at <= now {
        return Ok(RefreshOutcome::Invalid);
    }
    match rotated_at {
        Some(at) if now.saturating_sub(at) >= grace => {
            revoke_grants_where(&mut tx, By::Id, &grant.id, now).await?;
            tx.commit().await?;
            return Ok(RefreshOutcome::Replayed { grant_id: grant.id });
        }
        // Within the grace window a concurrent refresh gets tokens too.
        Some(_) => {}
        None => {
            if idle_exp <= now {
                return Ok(RefreshOutcome::Invalid);
            }
            let n = sqlx::query(
                "UPDATE refresh_tokens SET rotated_at = ? WHERE digest = ? AND rotated_at IS NULL",
            )
            .bind(i(now))
            .bind(digest)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                // Lost a race with a concurrent rotation: within the grace
                // window by definition, so it is served like one.
                tracing::debug!("concurrent refresh-token rotation");
            }
        }
    }
    record_issuance(&mut tx, &grant.id, issued, now).await?;
    tx.commit().await?;
    Ok(RefreshOutcome::Rotated(grant))
}

pub(super) async fn add_login_failure(
    pool: &SqlitePool,
    key: &str,
    window: u64,
    now: UnixTime,
) -> Result<u32, StoreError> {
    let row = sqlx::query(
        "INSERT INTO login_failures (key, failures, last_at) VALUES (?1, 1, ?2) \
         ON CONFLICT (key) DO UPDATE SET \
         failures = CASE WHEN last_at + ?3 < ?2 THEN 1 ELSE failures + 1 END, last_at = ?2 \
         RETURNING failures",
    )
    .bind(key)
    .bind(i(now))
    .bind(i(window))
    .fetch_one(pool)
    .await?;
    Ok(u32::try_from(row.try_get::<i64, _>(0)?).unwrap_or(u32::MAX))
}

pub(super) async fn login_failures(
    pool: &SqlitePool,
    key: &str,
    window: u64,
    now: UnixTime,
) -> Result<(u32, UnixTime), StoreError> {
    let row = sqlx::query("SELECT failures, last_at FROM login_failures WHERE key = ?")
        .bind(key)
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else {
        return Ok((0, 0));
    };
    let last = u(row.try_get("last_at")?);
    if last.saturating_add(window) < now {
        return Ok((0, last));
    }
    let n = u32::try_from(row.try_get::<i64, _>("failures")?).unwrap_or(u32::MAX);
    Ok((n, last))
}

pub(super) async fn clear_login_failures(pool: &SqlitePool, key: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM login_failures WHERE key = ?")
        .bind(key)
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes expired login rows; returns rows deleted.
pub(super) async fn purge_expired(pool: &SqlitePool, now: UnixTime) -> Result<u64, StoreError> {
    let mut n = 0;
    for sql in [
        "DELETE FROM auth_codes WHERE expires_at <= ?",
        "DELETE FROM login_sessions WHERE expires_at <= ?",
        "DELETE FROM refresh_tokens WHERE grant_id IN \
         (SELECT id FROM grants WHERE expires_at <= ?1)",
        "DELETE FROM grant_tokens WHERE expires_at <= ?",
        "DELETE FROM grants WHERE expires_at <= ?",
        // Failures are counted within a window of at most a day in practice.
        "DELETE FROM login_failures WHERE last_at + 86400 <= ?",
    ] {
        n += sqlx::query(sql)
            .bind(i(now))
            .execute(pool)
            .await?
            .rows_affected();
    }
    Ok(n)
}

fn consent_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Consent, StoreError> {
    Ok(Consent {
        user_id: row.try_get("user_id")?,
        client_id: row.try_get("client_id")?,
        scope: row.try_get("scope")?,
        granted_at: u(row.try_get("granted_at")?),
    })
}

pub(super) async fn consent(
    pool: &SqlitePool,
    user_id: &str,
    client_id: &str,
) -> Result<Option<Consent>, StoreError> {
    let row = sqlx::query("SELECT * FROM consents WHERE user_id = ? AND client_id = ?")
        .bind(user_id)
        .bind(client_id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(consent_from_row).transpose()
}

pub(super) async fn save_consent(pool: &SqlitePool, c: &Consent) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO consents (user_id, client_id, scope, granted_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (user_id, client_id) DO UPDATE SET scope = excluded.scope, \
         granted_at = excluded.granted_at",
    )
    .bind(&c.user_id)
    .bind(&c.client_id)
    .bind(&c.scope)
    .bind(i(c.granted_at))
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn list_consents(
    pool: &SqlitePool,
    user_id: &str,
) -> Result<Vec<Consent>, StoreError> {
    let rows = sqlx::query("SELECT * FROM consents WHERE user_id = ? ORDER BY client_id")
        .bind(user_id)
        .fetch_all(pool)
        .await?;
    rows.iter().map(consent_from_row).collect()
}

pub(super) async fn revoke_consent(
    pool: &SqlitePool,
    user_id: &str,
    client_id: &str,
    now: UnixTime,
) -> Result<bool, StoreError> {
    let mut tx = write_tx(pool).await?;
    let n = sqlx::query("DELETE FROM consents WHERE user_id = ? AND client_id = ?")
        .bind(user_id)
        .bind(client_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM grants WHERE user_id = ? AND client_id = ? AND revoked_at IS NULL",
    )
    .bind(user_id)
    .bind(client_id)
    .fetch_all(&mut *tx)
    .await?;
    for id in ids {
        revoke_grants_where(&mut tx, By::Id, &id, now).await?;
    }
    tx.commit().await?;
    Ok(n == 1)
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
