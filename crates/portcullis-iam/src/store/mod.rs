//! Persistence behind one trait, so that back-ends are interchangeable.
//!
//! SQLite is the embedded default ([`SqliteStore`]); PostgreSQL
//! ([`PostgresStore`]) lets several IAM replicas share one database. Every write that the
//! server acknowledges is committed before the response is sent.

#[macro_use]
mod sql_impl;
mod login;
mod postgres;
mod postgres_login;
mod rows;
mod sqlite;
mod sqlite_login;

pub use login::{AuthCode, Consent, Grant, Issuance, LoginSession, RefreshOutcome};
pub use postgres::{PgSettings, PostgresStore};
pub use sqlite::SqliteStore;

use crate::model::{Client, KeyRecord, Revocation, RevocationKind, User, UserId, Username};
use async_trait::async_trait;
use portcullis_core::{ClientId, UnixTime};
use std::sync::Arc;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A row with this key already exists.
    #[error("already exists")]
    Conflict,
    /// The database URL is not one we support.
    #[error("unsupported database URL {0:?} (expected sqlite://PATH or postgres://…)")]
    UnsupportedUrl(String),
    /// A parameter of the database URL is invalid.
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// The database failed or is unreachable.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row did not parse (corruption or a newer schema).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

/// A new revocation entry.
#[derive(Debug, Clone)]
pub struct NewRevocation {
    /// What it covers.
    pub kind: RevocationKind,
    /// The jti or the client id.
    pub subject: String,
    /// For `client` entries.
    pub issued_before: Option<UnixTime>,
    /// When the entry may be dropped.
    pub expires_at: UnixTime,
    /// Now.
    pub revoked_at: UnixTime,
}

/// Everything the IAM server persists.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Checks the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// One client.
    async fn get_client(&self, id: &ClientId) -> Result<Option<Client>, StoreError>;
    /// All clients, ordered by id.
    async fn list_clients(&self) -> Result<Vec<Client>, StoreError>;
    /// Inserts a client; [`StoreError::Conflict`] if the id is taken.
    async fn create_client(&self, client: &Client) -> Result<(), StoreError>;
    /// Inserts or replaces a client (config-declared clients, applied at start).
    async fn upsert_client(
        &self,
        client: &Client,
        revoke: Option<&NewRevocation>,
    ) -> Result<(), StoreError>;
    /// Replaces a client and, in the same transaction, records a revocation.
    /// Returns false if there is no such client.
    async fn update_client(
        &self,
        client: &Client,
        revoke: Option<&NewRevocation>,
    ) -> Result<bool, StoreError>;
    /// Deletes a client and records a revocation of its tokens, atomically.
    async fn delete_client(
        &self,
        id: &ClientId,
        revoke: &NewRevocation,
    ) -> Result<bool, StoreError>;

    /// All signing keys.
    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError>;
    /// Stores a new signing key.
    async fn insert_key(&self, key: &KeyRecord) -> Result<(), StoreError>;
    /// Inserts the first key of a chain unless a key of its algorithm is
    /// active at `now` (the caller passes a moment slightly ahead, so a
    /// racing replica's key counts); false if one is (another replica made
    /// it first).
    /// Replicas racing on an empty database create exactly one.
    async fn insert_first_key(&self, key: &KeyRecord, now: UnixTime) -> Result<bool, StoreError>;
    /// Deletes keys that are no longer published.
    async fn delete_key(&self, kid: &str) -> Result<(), StoreError>;

    /// Records an assertion `jti`; false if it was already used (replay).
    async fn use_assertion_jti(
        &self,
        client_id: &ClientId,
        jti: &str,
        expires_at: UnixTime,
    ) -> Result<bool, StoreError>;

    /// Appends a revocation; returns its sequence number.
    async fn add_revocation(&self, r: &NewRevocation) -> Result<i64, StoreError>;
    /// Unexpired revocations after `cursor`, oldest first.
    async fn revocations_since(
        &self,
        cursor: i64,
        now: UnixTime,
        limit: u32,
    ) -> Result<Vec<Revocation>, StoreError>;
    /// Whether a token is revoked, by its jti or by a revocation of its client.
    async fn is_revoked(
        &self,
        jti: &str,
        client_id: &str,
        issued_at: UnixTime,
    ) -> Result<bool, StoreError>;

    /// Deletes expired assertion jtis, revocations, codes, sessions, grants
    /// with their tokens and old login failures, in batches of at most 500
    /// rows per statement with a short pause between batches. Returns rows
    /// deleted.
    async fn purge_expired(&self, now: UnixTime) -> Result<u64, StoreError>;

    // ----- Users ---------------------------------------------------------

    /// One user, by id.
    async fn get_user(&self, id: &UserId) -> Result<Option<User>, StoreError>;
    /// One user, by username (case-insensitive).
    async fn get_user_by_username(&self, username: &Username) -> Result<Option<User>, StoreError>;
    /// All users, ordered by username.
    async fn list_users(&self) -> Result<Vec<User>, StoreError>;
    /// Inserts a user; [`StoreError::Conflict`] if the username (or id) is taken.
    async fn create_user(&self, user: &User) -> Result<(), StoreError>;
    /// Replaces a user's fields (its password hash included); false if there
    /// is no such user, [`StoreError::Conflict`] if the new username is taken.
    async fn update_user(&self, user: &User) -> Result<bool, StoreError>;
    /// Deletes a user; false if there is no such user.
    async fn delete_user(&self, id: &UserId) -> Result<bool, StoreError>;
    /// Sets (or, with `None`, removes) a user's password hash; false if there
    /// is no such user.
    async fn set_password_hash(
        &self,
        id: &UserId,
        phc: Option<&str>,
        updated_at: UnixTime,
    ) -> Result<bool, StoreError>;
    /// Inserts or replaces a user by username (config-declared users,
    /// applied at start). An existing user keeps its id and `created_at`.
    async fn upsert_user(&self, user: &User) -> Result<(), StoreError>;

    // ----- Browser login -------------------------------------------------

    /// Stores a new SSO session under the digest of its cookie value.
    async fn create_session(
        &self,
        digest: &[u8],
        s: &LoginSession,
        now: UnixTime,
    ) -> Result<(), StoreError>;
    /// A live session (not ended, not expired) by the digest of its cookie.
    async fn get_session(
        &self,
        digest: &[u8],
        now: UnixTime,
    ) -> Result<Option<LoginSession>, StoreError>;
    /// Ends a session and, in the same transaction, revokes every grant
    /// made in it (refresh tokens and their access tokens). False if there
    /// was no live session with this `sid`.
    async fn end_session(&self, sid: &str, now: UnixTime) -> Result<bool, StoreError>;
    /// Ends every session of a user and revokes all their grants (user
    /// disabled, deleted, password changed). Returns the grants revoked.
    async fn end_user_sessions(&self, user_id: &str, now: UnixTime) -> Result<u64, StoreError>;

    /// Stores an authorization code under its digest.
    async fn insert_code(
        &self,
        digest: &[u8],
        code: &AuthCode,
        now: UnixTime,
    ) -> Result<(), StoreError>;
    /// A code by digest, used or not (expired ones too, until purged).
    async fn get_code(&self, digest: &[u8]) -> Result<Option<AuthCode>, StoreError>;
    /// Redeems a code: marks it used only if it is unused and unexpired,
    /// and in the same transaction records the grant and what is issued
    /// under it. False if it was used (or expired) meanwhile.
    async fn redeem_code(
        &self,
        digest: &[u8],
        grant: &Grant,
        issued: &Issuance,
        now: UnixTime,
    ) -> Result<bool, StoreError>;
    /// Revokes the grant a used code led to (code replay). False if the
    /// code led to none.
    async fn revoke_code_grant(&self, digest: &[u8], now: UnixTime) -> Result<bool, StoreError>;
    /// Presents a refresh token of `client_id`: rotates it (recording
    /// `issued`, whose refresh token must be set), or detects a replay
    /// outside `grace` seconds and revokes the family.
    async fn rotate_refresh(
        &self,
        digest: &[u8],
        client_id: &str,
        issued: &Issuance,
        grace: u64,
        now: UnixTime,
    ) -> Result<RefreshOutcome, StoreError>;
    /// The grant a refresh token belongs to, whatever its state (to check
    /// a requested scope before the token is spent).
    async fn refresh_grant(&self, digest: &[u8]) -> Result<Option<Grant>, StoreError>;
    /// Revokes one grant and every access token issued under it.
    async fn revoke_grant(&self, grant_id: &str, now: UnixTime) -> Result<bool, StoreError>;

    /// Every role, by name.
    async fn list_roles(&self) -> Result<Vec<crate::model::Role>, StoreError>;
    /// Creates a role ([`StoreError::Conflict`] if the name is taken).
    async fn create_role(&self, role: &crate::model::Role) -> Result<(), StoreError>;
    /// Replaces a role; false if there is none of that name.
    async fn update_role(&self, role: &crate::model::Role) -> Result<bool, StoreError>;
    /// Deletes a role; false if there was none.
    async fn delete_role(&self, name: &str) -> Result<bool, StoreError>;

    /// What `user_id` approved for `client_id`, if anything.
    async fn consent(&self, user_id: &str, client_id: &str) -> Result<Option<Consent>, StoreError>;
    /// Records an approval, replacing the one stored.
    async fn save_consent(&self, consent: &Consent) -> Result<(), StoreError>;
    /// A user's approvals.
    async fn list_consents(&self, user_id: &str) -> Result<Vec<Consent>, StoreError>;
    /// Withdraws an approval and revokes the user's grants to that client
    /// (and their access tokens). False if there was no approval.
    async fn revoke_consent(
        &self,
        user_id: &str,
        client_id: &str,
        now: UnixTime,
    ) -> Result<bool, StoreError>;

    /// Counts a failed sign-in for `key`, forgetting failures older than
    /// `window` seconds; returns the count including this one.
    async fn add_login_failure(
        &self,
        key: &str,
        window: u64,
        now: UnixTime,
    ) -> Result<u32, StoreError>;
    /// Failures of `key` within `window` seconds and the latest one's time.
    async fn login_failures(
        &self,
        key: &str,
        window: u64,
        now: UnixTime,
    ) -> Result<(u32, UnixTime), StoreError>;
    /// Forgets the failures of `key` (after a successful sign-in).
    async fn clear_login_failures(&self, key: &str) -> Result<(), StoreError>;
}

/// Opens the store a database URL names, running migrations.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::open(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.chars().take(64).collect()))
    }
}
