//! Persistence behind one trait, so that back-ends are interchangeable.
//!
//! SQLite is the embedded default ([`SqliteStore`]). Every write that the
//! server acknowledges is committed before the response is sent.

mod sqlite;

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
    #[error("unsupported database URL {0:?} (expected sqlite://PATH)")]
    UnsupportedUrl(String),
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

    /// Deletes expired assertion jtis and revocations. Returns rows deleted.
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
}

/// Opens the store a database URL names, running migrations.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.chars().take(64).collect()))
    }
}
