//! The embedded SQLite back-end (WAL mode; one writer, concurrent readers).

use super::sqlite_login as login;
use super::{
    AuthCode, Consent, Grant, Issuance, LoginSession, NewRevocation, RefreshOutcome, Store,
    StoreError,
};
use crate::model::{
    Client, Credential, GrantType, KeyRecord, LoginSettings, Revocation, RevocationKind, User,
    UserId, UserProfile, Username,
};
use async_trait::async_trait;
use portcullis_core::{Audience, ClientId, ScopeSet, UnixTime};
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

pub(super) fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(super) fn json_list<T: serde::Serialize>(v: &T) -> String {
    // Serializing a Vec of strings cannot fail.
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

fn corrupt(what: &str) -> impl Fn(String) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

fn client_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Client, StoreError> {
    let id: String = row.try_get("id")?;
    let id = ClientId::from_str(&id).map_err(|e| corrupt("client id")(e.to_string()))?;
    let digest: Option<Vec<u8>> = row.try_get("secret_digest")?;
    let jwks: Option<String> = row.try_get("jwks")?;
    let jwks_uri: Option<String> = row.try_get("jwks_uri")?;
    let public = row.try_get::<i64, _>("public")? != 0;
    let credential = match (digest, jwks, jwks_uri) {
        (None, None, None) if public => Credential::None,
        (Some(d), None, None) => Credential::Secret { digest: d },
        (None, Some(j), None) => Credential::Jwks(
            serde_json::from_str(&j).map_err(|e| corrupt("client jwks")(e.to_string()))?,
        ),
        (None, None, Some(u)) => Credential::JwksUri(
            url::Url::parse(&u).map_err(|e| corrupt("client jwks_uri")(e.to_string()))?,
        ),
        _ => {
            return Err(StoreError::Corrupt(format!(
                "client {id} has no single credential"
            )));
        }
    };
    let list = |col: &str| -> Result<Vec<String>, StoreError> {
        let s: String = row.try_get(col)?;
        serde_json::from_str(&s).map_err(|e| corrupt(col)(e.to_string()))
    };
    let scopes = |col: &str| -> Result<ScopeSet, StoreError> {
        ScopeSet::try_from(list(col)?).map_err(|e| corrupt(col)(e.to_string()))
    };
    let auds = |col: &str| -> Result<Vec<Audience>, StoreError> {
        list(col)?
            .into_iter()
            .map(|a| Audience::from_str(&a).map_err(|e| corrupt(col)(e.to_string())))
            .collect()
    };
    let grant_types = list("grant_types")?
        .iter()
        .filter_map(|g| GrantType::parse(g))
        .collect();
    let ttl: Option<i64> = row.try_get("access_token_ttl")?;
    let login = LoginSettings {
        redirect_uris: list("redirect_uris")?,
        post_logout_redirect_uris: list("post_logout_redirect_uris")?,
        first_party: row.try_get::<i64, _>("first_party")? != 0,
        require_pkce: row.try_get::<i64, _>("require_pkce")? != 0,
    };
    Ok(Client {
        login,
        name: row.try_get("name")?,
        credential,
        grant_types,
        allowed_scopes: scopes("allowed_scopes")?,
        default_scopes: scopes("default_scopes")?,
        allowed_audiences: auds("allowed_audiences")?,
        default_audiences: auds("default_audiences")?,
        access_token_ttl: ttl.map(u),
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        created_at: u(row.try_get("created_at")?),
        updated_at: u(row.try_get("updated_at")?),
        id,
    })
}

/// Binds the client's columns in the order of [`CLIENT_COLUMNS`].
fn bind_client<'q>(
    q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    c: &'q Client,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    let (digest, jwks, jwks_uri) = match &c.credential {
        Credential::Secret { digest } => (Some(digest.clone()), None, None),
        Credential::Jwks(j) => (None, Some(j.to_string()), None),
        Credential::JwksUri(u) => (None, None, Some(u.to_string())),
        Credential::None => (None, None, None),
    };
    let grants: Vec<&str> = c.grant_types.iter().map(|g| g.as_str()).collect();
    q.bind(c.id.as_str())
        .bind(c.name.as_str())
        .bind(digest)
        .bind(jwks)
        .bind(jwks_uri)
        .bind(json_list(&grants))
        .bind(json_list(&c.allowed_scopes))
        .bind(json_list(&c.default_scopes))
        .bind(json_list(&c.allowed_audiences))
        .bind(json_list(&c.default_audiences))
        .bind(c.access_token_ttl.map(i))
        .bind(c.enabled as i64)
        .bind(i(c.created_at))
        .bind(i(c.updated_at))
        .bind(matches!(c.credential, Credential::None) as i64)
        .bind(json_list(&c.login.redirect_uris))
        .bind(json_list(&c.login.post_logout_redirect_uris))
        .bind(c.login.first_party as i64)
        .bind(c.login.require_pkce as i64)
}

macro_rules! insert_client_sql {
    () => {
        "INSERT INTO clients (id, name, secret_digest, jwks, jwks_uri, \
    grant_types, allowed_scopes, default_scopes, allowed_audiences, default_audiences, \
    access_token_ttl, enabled, created_at, updated_at, \
    public, redirect_uris, post_logout_redirect_uris, first_party, require_pkce) \
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    };
}

const INSERT_CLIENT: &str = insert_client_sql!();

const UPSERT_CLIENT: &str = concat!(
    insert_client_sql!(),
    " ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
    secret_digest = excluded.secret_digest, jwks = excluded.jwks, jwks_uri = excluded.jwks_uri, \
    grant_types = excluded.grant_types, allowed_scopes = excluded.allowed_scopes, \
    default_scopes = excluded.default_scopes, allowed_audiences = excluded.allowed_audiences, \
    default_audiences = excluded.default_audiences, access_token_ttl = excluded.access_token_ttl, \
    enabled = excluded.enabled, updated_at = excluded.updated_at, public = excluded.public, \
    redirect_uris = excluded.redirect_uris, \
    post_logout_redirect_uris = excluded.post_logout_redirect_uris, \
    first_party = excluded.first_party, require_pkce = excluded.require_pkce"
);

async fn insert_revocation(
    tx: &mut Transaction<'_, sqlx::Sqlite>,
    r: &NewRevocation,
) -> Result<i64, StoreError> {
    let row = sqlx::query(
        "INSERT INTO revocations (kind, subject, issued_before, expires_at, revoked_at) \
         VALUES (?, ?, ?, ?, ?) RETURNING seq",
    )
    .bind(r.kind.as_str())
    .bind(&r.subject)
    .bind(r.issued_before.map(i))
    .bind(i(r.expires_at))
    .bind(i(r.revoked_at))
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.try_get(0)?)
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn get_client(&self, id: &ClientId) -> Result<Option<Client>, StoreError> {
        let row = sqlx::query("SELECT * FROM clients WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(client_from_row).transpose()
    }

    async fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
        let rows = sqlx::query("SELECT * FROM clients ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(client_from_row).collect()
    }

    async fn create_client(&self, client: &Client) -> Result<(), StoreError> {
        match bind_client(sqlx::query(INSERT_CLIENT), client)
            .execute(&self.pool)
            .await
        {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    async fn upsert_client(
        &self,
        client: &Client,
        revoke: Option<&NewRevocation>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        bind_client(sqlx::query(UPSERT_CLIENT), client)
            .execute(&mut *tx)
            .await?;
        if let Some(r) = revoke {
            insert_revocation(&mut tx, r).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn update_client(
        &self,
        client: &Client,
        revoke: Option<&NewRevocation>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let exists = sqlx::query("SELECT 1 FROM clients WHERE id = ?")
            .bind(client.id.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            return Ok(false);
        }
        bind_client(sqlx::query(UPSERT_CLIENT), client)
            .execute(&mut *tx)
            .await?;
        if let Some(r) = revoke {
            insert_revocation(&mut tx, r).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn delete_client(
        &self,
        id: &ClientId,
        revoke: &NewRevocation,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("DELETE FROM clients WHERE id = ?")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        insert_revocation(&mut tx, revoke).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM signing_keys ORDER BY activate_at, created_at")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let alg: String = r.try_get("alg")?;
                let jwk: String = r.try_get("public_jwk")?;
                Ok(KeyRecord {
                    kid: r.try_get("kid")?,
                    alg: alg.parse().map_err(|e: portcullis_core::jose::KeyError| {
                        StoreError::Corrupt(e.to_string())
                    })?,
                    sealed_private: r.try_get("private_key")?,
                    public_jwk: serde_json::from_str(&jwk)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    created_at: u(r.try_get("created_at")?),
                    activate_at: u(r.try_get("activate_at")?),
                })
            })
            .collect()
    }

    async fn insert_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, private_key, public_jwk, created_at, activate_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.kid)
        .bind(key.alg.as_str())
        .bind(&key.sealed_private)
        .bind(key.public_jwk.to_string())
        .bind(i(key.created_at))
        .bind(i(key.activate_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_key(&self, kid: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM signing_keys WHERE kid = ?")
            .bind(kid)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn use_assertion_jti(
        &self,
        client_id: &ClientId,
        jti: &str,
        expires_at: UnixTime,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "INSERT INTO used_assertions (client_id, jti, expires_at) VALUES (?, ?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(client_id.as_str())
        .bind(jti)
        .bind(i(expires_at))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn add_revocation(&self, r: &NewRevocation) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let seq = insert_revocation(&mut tx, r).await?;
        tx.commit().await?;
        Ok(seq)
    }

    async fn revocations_since(
        &self,
        cursor: i64,
        now: UnixTime,
        limit: u32,
    ) -> Result<Vec<Revocation>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM revocations WHERE seq > ? AND expires_at > ? ORDER BY seq LIMIT ?",
        )
        .bind(cursor)
        .bind(i(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind")?;
                Ok(Revocation {
                    seq: r.try_get("seq")?,
                    kind: match kind.as_str() {
                        "jti" => RevocationKind::Jti,
                        "client" => RevocationKind::Client,
                        other => {
                            return Err(StoreError::Corrupt(format!("revocation kind {other:?}")));
                        }
                    },
                    subject: r.try_get("subject")?,
                    issued_before: r.try_get::<Option<i64>, _>("issued_before")?.map(u),
                    expires_at: u(r.try_get("expires_at")?),
                    revoked_at: u(r.try_get("revoked_at")?),
                })
            })
            .collect()
    }

    async fn is_revoked(
        &self,
        jti: &str,
        client_id: &str,
        issued_at: UnixTime,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT 1 FROM revocations WHERE (kind = 'jti' AND subject = ?) \
             OR (kind = 'client' AND subject = ? AND issued_before >= ?) LIMIT 1",
        )
        .bind(jti)
        .bind(client_id)
        .bind(i(issued_at))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    async fn purge_expired(&self, now: UnixTime) -> Result<u64, StoreError> {
        let a = sqlx::query("DELETE FROM used_assertions WHERE expires_at <= ?")
            .bind(i(now))
            .execute(&self.pool)
            .await?
            .rows_affected();
        let b = sqlx::query("DELETE FROM revocations WHERE expires_at <= ?")
            .bind(i(now))
            .execute(&self.pool)
            .await?
            .rows_affected();
        let c = login::purge_expired(&self.pool, now).await?;
        Ok(a + b + c)
    }

    // ----- Users ---------------------------------------------------------

    async fn get_user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn get_user_by_username(&self, username: &Username) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE username = ?")
            .bind(username.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY username")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(user_from_row).collect()
    }

    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        unique(
            bind_user(sqlx::query(INSERT_USER), user)
                .execute(&self.pool)
                .await,
        )?;
        Ok(())
    }

    async fn update_user(&self, user: &User) -> Result<bool, StoreError> {
        let done = bind_user(sqlx::query(UPDATE_USER), user)
            .execute(&self.pool)
            .await;
        Ok(unique(done)?.rows_affected() == 1)
    }

    async fn delete_user(&self, id: &UserId) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(id.as_str())
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn set_password_hash(
        &self,
        id: &UserId,
        phc: Option<&str>,
        updated_at: UnixTime,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query("UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?")
            .bind(phc)
            .bind(i(updated_at))
            .bind(id.as_str())
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn upsert_user(&self, user: &User) -> Result<(), StoreError> {
        unique(
            bind_user(sqlx::query(UPSERT_USER), user)
                .execute(&self.pool)
                .await,
        )?;
        Ok(())
    }

    // ----- Browser login -------------------------------------------------

    async fn create_session(
        &self,
        digest: &[u8],
        s: &LoginSession,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        login::create_session(&self.pool, digest, s, now).await
    }

    async fn get_session(
        &self,
        digest: &[u8],
        now: UnixTime,
    ) -> Result<Option<LoginSession>, StoreError> {
        login::get_session(&self.pool, digest, now).await
    }

    async fn end_session(&self, sid: &str, now: UnixTime) -> Result<bool, StoreError> {
        login::end_session(&self.pool, sid, now).await
    }

    async fn end_user_sessions(&self, user_id: &str, now: UnixTime) -> Result<u64, StoreError> {
        login::end_user_sessions(&self.pool, user_id, now).await
    }

    async fn insert_code(
        &self,
        digest: &[u8],
        code: &AuthCode,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        login::insert_code(&self.pool, digest, code, now).await
    }

    async fn get_code(&self, digest: &[u8]) -> Result<Option<AuthCode>, StoreError> {
        login::get_code(&self.pool, digest).await
    }

    async fn redeem_code(
        &self,
        digest: &[u8],
        grant: &Grant,
        issued: &Issuance,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        login::redeem_code(&self.pool, digest, grant, issued, now).await
    }

    async fn revoke_code_grant(&self, digest: &[u8], now: UnixTime) -> Result<bool, StoreError> {
        login::revoke_code_grant(&self.pool, digest, now).await
    }

    async fn rotate_refresh(
        &self,
        digest: &[u8],
        client_id: &str,
        issued: &Issuance,
        grace: u64,
        now: UnixTime,
    ) -> Result<RefreshOutcome, StoreError> {
        login::rotate_refresh(&self.pool, digest, client_id, issued, grace, now).await
    }

    async fn refresh_grant(&self, digest: &[u8]) -> Result<Option<Grant>, StoreError> {
        login::refresh_grant(&self.pool, digest).await
    }

    async fn revoke_grant(&self, grant_id: &str, now: UnixTime) -> Result<bool, StoreError> {
        login::revoke_grant(&self.pool, grant_id, now).await
    }

    async fn add_login_failure(
        &self,
        key: &str,
        window: u64,
        now: UnixTime,
    ) -> Result<u32, StoreError> {
        login::add_login_failure(&self.pool, key, window, now).await
    }

    async fn login_failures(
        &self,
        key: &str,
        window: u64,
        now: UnixTime,
    ) -> Result<(u32, UnixTime), StoreError> {
        login::login_failures(&self.pool, key, window, now).await
    }

    async fn clear_login_failures(&self, key: &str) -> Result<(), StoreError> {
        login::clear_login_failures(&self.pool, key).await
    }

    async fn consent(&self, user_id: &str, client_id: &str) -> Result<Option<Consent>, StoreError> {
        login::consent(&self.pool, user_id, client_id).await
    }

    async fn save_consent(&self, consent: &Consent) -> Result<(), StoreError> {
        login::save_consent(&self.pool, consent).await
    }

    async fn list_consents(&self, user_id: &str) -> Result<Vec<Consent>, StoreError> {
        login::list_consents(&self.pool, user_id).await
    }

    async fn revoke_consent(
        &self,
        user_id: &str,
        client_id: &str,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        login::revoke_consent(&self.pool, user_id, client_id, now).await
    }
}

// ----- Users ---------------------------------------------------------------

/// Maps a unique-constraint violation to [`StoreError::Conflict`].
fn unique<T>(r: Result<T, sqlx::Error>) -> Result<T, StoreError> {
    match r {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict),
        r => Ok(r?),
    }
}

fn user_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<User, StoreError> {
    let id: String = row.try_get("id")?;
    let id = UserId::from_str(&id).map_err(|e| corrupt("user id")(e.to_string()))?;
    let username: String = row.try_get("username")?;
    let list = |col: &str| -> Result<Vec<String>, StoreError> {
        let s: String = row.try_get(col)?;
        serde_json::from_str(&s).map_err(|e| corrupt(col)(e.to_string()))
    };
    Ok(User {
        username: Username::from_str(&username).map_err(corrupt("username"))?,
        profile: UserProfile {
            email: row.try_get("email")?,
            email_verified: row.try_get::<i64, _>("email_verified")? != 0,
            display_name: row.try_get("display_name")?,
            roles: list("roles")?,
            groups: list("groups")?,
        },
        password_hash: row
            .try_get::<Option<String>, _>("password_hash")?
            .map(portcullis_core::Secret::new),
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        created_at: u(row.try_get("created_at")?),
        updated_at: u(row.try_get("updated_at")?),
        id,
    })
}

/// Binds the user's columns in the order of [`insert_user_sql`] (id first).
fn bind_user<'q>(
    q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    u: &'q User,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    q.bind(u.id.as_str())
        .bind(u.username.as_str())
        .bind(u.profile.email.as_deref())
        .bind(u.profile.email_verified as i64)
        .bind(u.profile.display_name.as_str())
        .bind(u.password_hash.as_ref().map(|h| h.expose()))
        .bind(json_list(&u.profile.roles))
        .bind(json_list(&u.profile.groups))
        .bind(u.enabled as i64)
        .bind(i(u.created_at))
        .bind(i(u.updated_at))
}

macro_rules! insert_user_sql {
    () => {
        "INSERT INTO users (id, username, email, email_verified, display_name, password_hash, \
    roles, groups, enabled, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    };
}

const INSERT_USER: &str = insert_user_sql!();

/// Binds like the insert: `?1` is the id, `?10` (`created_at`) never changes.
const UPDATE_USER: &str = "UPDATE users SET username = ?2, email = ?3, email_verified = ?4, \
    display_name = ?5, password_hash = ?6, roles = ?7, groups = ?8, enabled = ?9, \
    updated_at = ?11 WHERE id = ?1";

const UPSERT_USER: &str = concat!(
    insert_user_sql!(),
    " ON CONFLICT (username) DO UPDATE SET email = excluded.email, \
    email_verified = excluded.email_verified, display_name = excluded.display_name, \
    password_hash = excluded.password_hash, roles = excluded.roles, groups = excluded.groups, \
    enabled = excluded.enabled, updated_at = excluded.updated_at"
);
