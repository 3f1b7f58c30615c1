//! PostgreSQL statements of the browser-login flow: the statements SQLite
//! runs, under PostgreSQL's READ COMMITTED isolation. A conditional update
//! (code redemption, refresh rotation) waits for a concurrent writer of
//! its row and then re-checks its condition, so a code is redeemed once
//! however many replicas race for it. Refresh presentations lock their
//! token and grant rows (`FOR UPDATE`), so rotation and family revocation
//! of one grant are serialized across replicas.

use super::postgres::lock_revocations;
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Transaction};

type Pool = PgPool;
type Tx<'a> = Transaction<'a, Postgres>;

sql_login_fns!();

/// The refresh-token lookup, locking the token and its grant.
const REFRESH_LOCKED: &str = concat!(
    "SELECT r.idle_expires_at, r.rotated_at, g.* ",
    "FROM refresh_tokens r JOIN grants g ON g.id = r.grant_id WHERE r.digest = $1 FOR UPDATE"
);

/// A user's live grants to a client, locked before any revocation is
/// written (row locks always come before the revocation-feed lock).
const LIVE_GRANTS_OF: &str = "SELECT id FROM grants WHERE user_id = $1 AND client_id = $2 \
    AND revoked_at IS NULL ORDER BY id FOR UPDATE";

async fn write_tx(pool: &PgPool) -> Result<Tx<'static>, StoreError> {
    Ok(pool.begin().await?)
}

/// Which grants [`revoke_grants_where`] revokes.
#[derive(Clone, Copy)]
enum By {
    Id,
    Sid,
    User,
}

/// Revokes the grants selected by `by = value`, with a jti revocation for
/// each unexpired access token issued under them. Returns grants revoked.
///
/// The grants are marked first: that locks them, waiting for a rotation
/// in flight to commit the tokens it issues, and the token query then
/// runs on a fresh snapshot (READ COMMITTED) that sees them.
async fn revoke_grants_where(
    tx: &mut Tx<'_>,
    by: By,
    value: &str,
    now: UnixTime,
) -> Result<u64, StoreError> {
    let sql = match by {
        By::Id => {
            "UPDATE grants SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL \
                   RETURNING id"
        }
        By::Sid => {
            "UPDATE grants SET revoked_at = $1 WHERE sid = $2 AND revoked_at IS NULL \
                    RETURNING id"
        }
        By::User => {
            "UPDATE grants SET revoked_at = $1 WHERE user_id = $2 \
                     AND revoked_at IS NULL RETURNING id"
        }
    };
    let ids: Vec<String> = sqlx::query_scalar(sql)
        .bind(i(now))
        .bind(value)
        .fetch_all(&mut **tx)
        .await?;
    if ids.is_empty() {
        return Ok(0);
    }
    lock_revocations(tx).await?;
    sqlx::query(
        "INSERT INTO revocations (kind, subject, issued_before, expires_at, revoked_at) \
         SELECT 'jti', t.jti, NULL, t.expires_at, $1 FROM grant_tokens t \
         WHERE t.grant_id = ANY($2) AND t.expires_at > $1 ORDER BY t.grant_id, t.jti",
    )
    .bind(i(now))
    .bind(&ids)
    .execute(&mut **tx)
    .await?;
    Ok(u64::try_from(ids.len()).unwrap_or(u64::MAX))
}
