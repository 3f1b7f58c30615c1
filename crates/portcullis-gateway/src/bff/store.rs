//! Server-side BFF sessions behind [`SessionStore`], with the SQLite
//! back-end (the embedded default, one gateway) and the Redis one
//! ([`super::redis_store`], several gateways).
//!
//! Rows are keyed by the SHA-256 of the cookie value, so the database alone
//! does not give anyone a usable cookie, and the tokens in a row are sealed
//! (AES-256-GCM, bound to the row key) by the caller before they get here.

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;

/// Why the session store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionStoreError {
    /// A database error.
    #[error("session store: {0}")]
    Database(#[from] sqlx::Error),
    /// A URL no back-end is built for.
    #[error("session store: unsupported database URL {0:?} (sqlite://PATH or redis)")]
    UnsupportedUrl(String),
    /// `redis` without the gateway's `[redis]`.
    #[error("bff.session_store: \"redis\" needs a [redis] table")]
    NoRedis,
    /// Redis failed or held something unexpected.
    #[error("session store: {0}")]
    Redis(String),
}

/// A login under way: from `/auth/login` to `/auth/callback`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingLogin {
    /// The `state` sent to the IAM server.
    pub state: String,
    /// The `nonce` the ID token must carry.
    pub nonce: String,
    /// The PKCE code verifier (sealed).
    pub verifier: Vec<u8>,
    /// Local path to return to after the login.
    pub return_to: String,
    /// Unix time after which the login is refused.
    pub expires_at: u64,
}

/// A logged-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// The person's `sub`.
    pub subject: String,
    /// Profile claims shown by `/auth/session` (JSON object).
    pub profile: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// The sealed tokens (JSON: access, refresh, ID token).
    pub tokens: Vec<u8>,
    /// When the access token expires.
    pub access_expires_at: u64,
    /// The anti-CSRF token given to the page.
    pub csrf: String,
    /// Created.
    pub created_at: u64,
    /// Last use, for the idle timeout (updated at most once a minute).
    pub last_seen: u64,
    /// Absolute end.
    pub expires_at: u64,
    /// Bumped by every token update: compare-and-swap between replicas.
    pub version: i64,
}

/// Where sessions and pending logins live.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Records a pending login under `key`.
    async fn put_login(
        &self,
        key: &[u8; 32],
        login: &PendingLogin,
    ) -> Result<(), SessionStoreError>;
    /// Removes and returns a pending login (single use).
    async fn take_login(&self, key: &[u8; 32]) -> Result<Option<PendingLogin>, SessionStoreError>;
    /// Creates a session.
    async fn create(&self, key: &[u8; 32], s: &SessionRow) -> Result<(), SessionStoreError>;
    /// A session by key.
    async fn get(&self, key: &[u8; 32]) -> Result<Option<SessionRow>, SessionStoreError>;
    /// Replaces the tokens if the row is still at `version`; false if
    /// another writer got there first.
    async fn update_tokens(
        &self,
        key: &[u8; 32],
        version: i64,
        tokens: &[u8],
        access_expires_at: u64,
    ) -> Result<bool, SessionStoreError>;
    /// Records use.
    async fn touch(&self, key: &[u8; 32], now: u64) -> Result<(), SessionStoreError>;
    /// Deletes a session; true if it existed.
    async fn delete(&self, key: &[u8; 32]) -> Result<bool, SessionStoreError>;
    /// Deletes expired sessions and logins, at most `limit` rows of each.
    async fn purge(&self, now: u64, idle: u64, limit: u32) -> Result<u64, SessionStoreError>;
    /// Whether a gateway may keep a session read from here for a few
    /// seconds. Not with a store shared by several gateways: a logout at
    /// one must be seen at the next request at the others.
    fn cacheable(&self) -> bool {
        true
    }
    /// Takes the right to refresh session `key`'s tokens for `ttl`, across
    /// every gateway on this store; false while another holds it. A store
    /// of one gateway needs no such lock (the BFF's own lock suffices).
    async fn lock_refresh(
        &self,
        _key: &[u8; 32],
        _ttl: std::time::Duration,
    ) -> Result<bool, SessionStoreError> {
        Ok(true)
    }
    /// Gives back what [`Self::lock_refresh`] took.
    async fn unlock_refresh(&self, _key: &[u8; 32]) -> Result<(), SessionStoreError> {
        Ok(())
    }
}

/// Opens the store named by `url`: a `sqlite:` URL, or `redis` for the
/// gateway's `redis` (where sessions unused for `idle` seconds expire).
pub async fn open(
    url: &str,
    redis: Option<&portcullis_redis::Redis>,
    idle: u64,
) -> Result<std::sync::Arc<dyn SessionStore>, SessionStoreError> {
    if url == REDIS {
        let redis = redis.ok_or(SessionStoreError::NoRedis)?;
        Ok(std::sync::Arc::new(super::redis_store::RedisSessions::new(
            redis.clone(),
            idle,
        )))
    } else if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(SqliteSessions::open(url).await?))
    } else {
        Err(SessionStoreError::UnsupportedUrl(
            url.chars().take(64).collect(),
        ))
    }
}

/// `session_store` naming the gateway's Redis.
pub const REDIS: &str = "redis";

/// The SQLite back-end.
pub struct SqliteSessions {
    pool: SqlitePool,
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS bff_logins (
        key BLOB PRIMARY KEY,
        state TEXT NOT NULL,
        nonce TEXT NOT NULL,
        verifier BLOB NOT NULL,
        return_to TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS bff_sessions (
        key BLOB PRIMARY KEY,
        subject TEXT NOT NULL,
        profile TEXT NOT NULL,
        scope TEXT NOT NULL,
        tokens BLOB NOT NULL,
        access_expires_at INTEGER NOT NULL,
        csrf TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        version INTEGER NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS bff_sessions_expiry ON bff_sessions (expires_at)",
];

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl SqliteSessions {
    /// Opens (creating if missing) the database and its tables.
    pub async fn open(url: &str) -> Result<Self, SessionStoreError> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await?;
        for stmt in SCHEMA {
            sqlx::query(*stmt).execute(&pool).await?;
        }
        Ok(Self { pool })
    }
}

type Row = (
    String,
    String,
    String,
    Vec<u8>,
    i64,
    String,
    i64,
    i64,
    i64,
    i64,
);

#[async_trait]
impl SessionStore for SqliteSessions {
    async fn put_login(&self, key: &[u8; 32], l: &PendingLogin) -> Result<(), SessionStoreError> {
        sqlx::query(
            "INSERT INTO bff_logins (key, state, nonce, verifier, return_to, expires_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&key[..])
        .bind(&l.state)
        .bind(&l.nonce)
        .bind(&l.verifier)
        .bind(&l.return_to)
        .bind(i(l.expires_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn take_login(&self, key: &[u8; 32]) -> Result<Option<PendingLogin>, SessionStoreError> {
        let row: Option<(String, String, Vec<u8>, String, i64)> = sqlx::query_as(
            "DELETE FROM bff_logins WHERE key = ?
             RETURNING state, nonce, verifier, return_to, expires_at",
        )
        .bind(&key[..])
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(
            |(state, nonce, verifier, return_to, expires_at)| PendingLogin {
                state,
                nonce,
                verifier,
                return_to,
                expires_at: u(expires_at),
            },
        ))
    }

    async fn create(&self, key: &[u8; 32], s: &SessionRow) -> Result<(), SessionStoreError> {
        sqlx::query(
            "INSERT INTO bff_sessions (key, subject, profile, scope, tokens, access_expires_at,
                 csrf, created_at, last_seen, expires_at, version)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&key[..])
        .bind(&s.subject)
        .bind(&s.profile)
        .bind(&s.scope)
        .bind(&s.tokens)
        .bind(i(s.access_expires_at))
        .bind(&s.csrf)
        .bind(i(s.created_at))
        .bind(i(s.last_seen))
        .bind(i(s.expires_at))
        .bind(s.version)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get(&self, key: &[u8; 32]) -> Result<Option<SessionRow>, SessionStoreError> {
        let row: Option<Row> = sqlx::query_as(
            "SELECT subject, profile, scope, tokens, access_expires_at, csrf, created_at,
                 last_seen, expires_at, version
             FROM bff_sessions WHERE key = ?",
        )
        .bind(&key[..])
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| SessionRow {
            subject: r.0,
            profile: r.1,
            scope: r.2,
            tokens: r.3,
            access_expires_at: u(r.4),
            csrf: r.5,
            created_at: u(r.6),
            last_seen: u(r.7),
            expires_at: u(r.8),
            version: r.9,
        }))
    }

    async fn update_tokens(
        &self,
        key: &[u8; 32],
        version: i64,
        tokens: &[u8],
        access_expires_at: u64,
    ) -> Result<bool, SessionStoreError> {
        let done = sqlx::query(
            "UPDATE bff_sessions SET tokens = ?, access_expires_at = ?, version = version + 1
             WHERE key = ? AND version = ?",
        )
        .bind(tokens)
        .bind(i(access_expires_at))
        .bind(&key[..])
        .bind(version)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn touch(&self, key: &[u8; 32], now: u64) -> Result<(), SessionStoreError> {
        sqlx::query("UPDATE bff_sessions SET last_seen = ? WHERE key = ?")
            .bind(i(now))
            .bind(&key[..])
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete(&self, key: &[u8; 32]) -> Result<bool, SessionStoreError> {
        let done = sqlx::query("DELETE FROM bff_sessions WHERE key = ?")
            .bind(&key[..])
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn purge(&self, now: u64, idle: u64, limit: u32) -> Result<u64, SessionStoreError> {
        let sessions = sqlx::query(
            "DELETE FROM bff_sessions WHERE key IN (
                 SELECT key FROM bff_sessions WHERE expires_at <= ? OR last_seen + ? <= ? LIMIT ?)",
        )
        .bind(i(now))
        .bind(i(idle))
        .bind(i(now))
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        let logins = sqlx::query(
            "DELETE FROM bff_logins WHERE key IN (
                 SELECT key FROM bff_logins WHERE expires_at <= ? LIMIT ?)",
        )
        .bind(i(now))
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        Ok(sessions.rows_affected() + logins.rows_affected())
    }
}
