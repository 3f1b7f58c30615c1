//! The PostgreSQL back-end, for several stateless IAM replicas on one
//! database. Same semantics as SQLite; where SQLite serializes writers,
//! this relies on row locks (`FOR UPDATE`, conditional updates that
//! re-check their condition after a concurrent commit) and on one
//! advisory lock that keeps the revocation feed in commit order.
//!
//! The URL is a libpq-style `postgres://` URL; three query parameters of
//! ours are taken out before it is handed to the driver:
//! `max_connections` (pool size, default 10), `acquire_timeout` (seconds
//! to wait for a pooled connection, default 5) and `statement_timeout`
//! (a PostgreSQL duration such as `10s`, default 10 s; `0` turns it off).

use super::postgres_login as login;
use super::rows::{
    self, INSERT_CLIENT, INSERT_KEY, INSERT_REVOCATION, INSERT_USER, IS_REVOKED, REVOCATIONS_SINCE,
    SET_PASSWORD, UPDATE_USER, UPSERT_CLIENT, UPSERT_USER, USE_ASSERTION, bind_client,
    bind_revocation, bind_user, client_from_row, i, key_from_row, revocation_from_row, unique,
    user_from_row,
};
use super::{
    AuthCode, Consent, Grant, Issuance, LoginSession, NewRevocation, RefreshOutcome, Store,
    StoreError,
};
use crate::model::{Client, KeyRecord, Revocation, User, UserId, Username};
use async_trait::async_trait;
use portcullis_core::{ClientId, UnixTime};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};
use std::str::FromStr;
use std::time::Duration;

/// Pool and session settings a `postgres://` URL may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgSettings {
    /// Most connections the pool opens (`max_connections`).
    pub max_connections: u32,
    /// How long a query waits for a pooled connection (`acquire_timeout`, seconds).
    pub acquire_timeout: Duration,
    /// Server-side limit per statement (`statement_timeout`, a PostgreSQL duration).
    pub statement_timeout: String,
}

impl Default for PgSettings {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: "10s".into(),
        }
    }
}

impl PgSettings {
    /// Splits our parameters off `url`; returns them and the URL for the driver.
    pub fn from_url(url: &str) -> Result<(Self, String), StoreError> {
        let bad = |why: String| StoreError::InvalidUrl(why);
        let mut parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let mut settings = Self::default();
        let mut rest = Vec::new();
        for (k, v) in parsed.query_pairs() {
            match k.as_ref() {
                "max_connections" => {
                    settings.max_connections =
                        v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                            bad(format!("max_connections={v}: a positive integer"))
                        })?;
                }
                "acquire_timeout" => {
                    let secs: u64 = v
                        .parse()
                        .map_err(|_| bad(format!("acquire_timeout={v}: whole seconds")))?;
                    settings.acquire_timeout = Duration::from_secs(secs);
                }
                "statement_timeout" => {
                    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric()) {
                        return Err(bad(format!("statement_timeout={v}: e.g. 10s or 500ms")));
                    }
                    settings.statement_timeout = v.into_owned();
                }
                _ => rest.push((k.into_owned(), v.into_owned())),
            }
        }
        if rest.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(rest);
        }
        Ok((settings, parsed.into()))
    }
}

/// PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to the database `url` names and migrates it. Migrations
    /// hold a PostgreSQL advisory lock, so replicas starting at once apply
    /// each one exactly once.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let (settings, url) = PgSettings::from_url(url)?;
        let opts = PgConnectOptions::from_str(&url)?
            .options([("statement_timeout", settings.statement_timeout.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }
}

/// The advisory-lock key that serializes revocation writers ("pcrevoke").
const REVOCATION_LOCK: i64 = 0x7063_7265_766f_6b65;

/// Appends a revocation inside `tx`. Writers are serialized until they
/// commit, so `seq` order is commit order and a reader paging by `seq`
/// never skips an entry that commits late. Callers take every row lock
/// they need before this one (no row locks after it: no deadlock).
pub(super) async fn insert_revocation(
    tx: &mut Transaction<'_, Postgres>,
    r: &NewRevocation,
) -> Result<i64, StoreError> {
    lock_revocations(tx).await?;
    let row = bind_revocation(sqlx::query(INSERT_REVOCATION), r)
        .fetch_one(&mut **tx)
        .await?;
    Ok(row.try_get(0)?)
}

/// Takes the revocation-feed lock until `tx` ends.
pub(super) async fn lock_revocations(tx: &mut Transaction<'_, Postgres>) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(REVOCATION_LOCK)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The advisory-lock key that serializes first-key creation ("pckeys").
const KEYS_LOCK: i64 = 0x0000_7063_6b65_7973;

/// Takes the key-creation lock until `tx` ends: replicas starting at once
/// on an empty database decide one after the other whether a chain still
/// needs its first key.
pub(super) async fn lock_keys(tx: &mut Transaction<'_, Postgres>) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(KEYS_LOCK)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

sql_store_impl!(PostgresStore);

/// Locks the client row against a concurrent update or delete.
const CLIENT_EXISTS: &str = "SELECT 1 FROM clients WHERE id = $1 FOR UPDATE";

#[cfg(test)]
mod tests {
    use super::PgSettings;
    use std::time::Duration;

    #[test]
    fn our_parameters_are_taken_off_the_url() {
        let (s, url) = PgSettings::from_url(
            "postgres://u@h:5432/db?max_connections=3&sslmode=disable&statement_timeout=2s\
             &acquire_timeout=7",
        )
        .unwrap();
        assert_eq!(s.max_connections, 3);
        assert_eq!(s.acquire_timeout, Duration::from_secs(7));
        assert_eq!(s.statement_timeout, "2s");
        assert_eq!(url, "postgres://u@h:5432/db?sslmode=disable");
        let (d, url) = PgSettings::from_url("postgresql://h/db").unwrap();
        assert_eq!(d, PgSettings::default());
        assert_eq!(url, "postgresql://h/db");
        for bad in [
            "postgres://h/db?max_connections=0",
            "postgres://h/db?acquire_timeout=x",
            "postgres://h/db?statement_timeout=1;drop",
        ] {
            assert!(PgSettings::from_url(bad).is_err(), "{bad}");
        }
    }
}
