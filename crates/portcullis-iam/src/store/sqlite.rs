//! The embedded SQLite back-end (WAL mode; one writer, concurrent readers).

use super::rows::{
    self, INSERT_CLIENT, INSERT_KEY, INSERT_REVOCATION, INSERT_USER, IS_REVOKED, REVOCATIONS_SINCE,
    SET_PASSWORD, UPDATE_USER, UPSERT_CLIENT, UPSERT_USER, USE_ASSERTION, bind_client,
    bind_revocation, bind_user, client_from_row, i, key_from_row, revocation_from_row, unique,
    user_from_row,
};
use super::sqlite_login as login;
use super::{
    AuthCode, Consent, Grant, Issuance, LoginSession, NewRevocation, RefreshOutcome, Store,
    StoreError,
};
use crate::model::{Client, KeyRecord, Revocation, User, UserId, Username};
use async_trait::async_trait;
use portcullis_core::{ClientId, UnixTime};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool, Transaction};
use std::str::FromStr;
use std::time::Duration;

/// SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` and migrates it.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL is durable across a process crash (kill -9); only
            // an OS crash can lose the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }
}

async fn insert_revocation(
    tx: &mut Transaction<'_, sqlx::Sqlite>,
    r: &NewRevocation,
) -> Result<i64, StoreError> {
    let row = bind_revocation(sqlx::query(INSERT_REVOCATION), r)
        .fetch_one(&mut **tx)
        .await?;
    Ok(row.try_get(0)?)
}

/// Nothing to lock: the one statement that follows is atomic, and SQLite
/// serializes writers.
async fn lock_keys(_tx: &mut Transaction<'_, sqlx::Sqlite>) -> Result<(), StoreError> {
    Ok(())
}

sql_store_impl!(SqliteStore);

/// Locks nothing: SQLite write transactions are serialized already.
const CLIENT_EXISTS: &str = "SELECT 1 FROM clients WHERE id = $1";
