//! What the SQL back-ends share: reading rows into the model, binding the
//! model's columns, and the statements both dialects accept (`$N`
//! placeholders, which SQLite reads as numbered parameters too).

use super::StoreError;
use super::login::{AuthCode, Consent, Grant, LoginSession};
use crate::model::{
    Client, Credential, GrantType, KeyRecord, LoginSettings, Revocation, RevocationKind, User,
    UserId, UserProfile, Username,
};
use portcullis_core::{Audience, ClientId, ScopeSet, UnixTime};
use sqlx::Row;
use std::str::FromStr;

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

/// Column access both back-ends' rows provide (flags are INTEGER 0/1 in
/// SQLite, BOOLEAN in PostgreSQL).
pub(super) trait Cols {
    /// A text column.
    fn text(&self, col: &str) -> Result<String, sqlx::Error>;
    /// A nullable text column.
    fn text_opt(&self, col: &str) -> Result<Option<String>, sqlx::Error>;
    /// An integer column.
    fn int(&self, col: &str) -> Result<i64, sqlx::Error>;
    /// A nullable integer column.
    fn int_opt(&self, col: &str) -> Result<Option<i64>, sqlx::Error>;
    /// A byte column.
    fn bytes(&self, col: &str) -> Result<Vec<u8>, sqlx::Error>;
    /// A nullable byte column.
    fn bytes_opt(&self, col: &str) -> Result<Option<Vec<u8>>, sqlx::Error>;
    /// A boolean column.
    fn flag(&self, col: &str) -> Result<bool, sqlx::Error>;

    /// A JSON array of strings stored as text.
    fn list(&self, col: &str) -> Result<Vec<String>, StoreError> {
        serde_json::from_str(&self.text(col)?).map_err(|e| corrupt(col)(e.to_string()))
    }
}

macro_rules! cols_for {
    ($row:ty, |$r:ident, $c:ident| $flag:expr) => {
        impl Cols for $row {
            fn text(&self, col: &str) -> Result<String, sqlx::Error> {
                self.try_get(col)
            }
            fn text_opt(&self, col: &str) -> Result<Option<String>, sqlx::Error> {
                self.try_get(col)
            }
            fn int(&self, col: &str) -> Result<i64, sqlx::Error> {
                self.try_get(col)
            }
            fn int_opt(&self, col: &str) -> Result<Option<i64>, sqlx::Error> {
                self.try_get(col)
            }
            fn bytes(&self, col: &str) -> Result<Vec<u8>, sqlx::Error> {
                self.try_get(col)
            }
            fn bytes_opt(&self, col: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
                self.try_get(col)
            }
            fn flag(&self, $c: &str) -> Result<bool, sqlx::Error> {
                let $r = self;
                $flag
            }
        }
    };
}

cols_for!(sqlx::sqlite::SqliteRow, |r, c| Ok(r
    .try_get::<i64, _>(c)?
    != 0));
cols_for!(sqlx::postgres::PgRow, |r, c| r.try_get(c));

pub(super) fn client_from_row(row: &impl Cols) -> Result<Client, StoreError> {
    let id = row.text("id")?;
    let id = ClientId::from_str(&id).map_err(|e| corrupt("client id")(e.to_string()))?;
    let digest = row.bytes_opt("secret_digest")?;
    let jwks = row.text_opt("jwks")?;
    let jwks_uri = row.text_opt("jwks_uri")?;
    let public = row.flag("public")?;
    let tls = row.text_opt("tls_auth")?;
    let credential = match (digest, jwks, jwks_uri) {
        (None, None, None) if tls.is_some() => tls_from_column(tls.as_deref().unwrap_or(""))
            .map_err(|e| corrupt("client tls_auth")(e))?,
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
    let scopes = |col: &str| -> Result<ScopeSet, StoreError> {
        ScopeSet::try_from(row.list(col)?).map_err(|e| corrupt(col)(e.to_string()))
    };
    let auds = |col: &str| -> Result<Vec<Audience>, StoreError> {
        row.list(col)?
            .into_iter()
            .map(|a| Audience::from_str(&a).map_err(|e| corrupt(col)(e.to_string())))
            .collect()
    };
    let grant_types = row
        .list("grant_types")?
        .iter()
        .filter_map(|g| GrantType::parse(g))
        .collect();
    let login = LoginSettings {
        redirect_uris: row.list("redirect_uris")?,
        post_logout_redirect_uris: row.list("post_logout_redirect_uris")?,
        first_party: row.flag("first_party")?,
        require_pkce: row.flag("require_pkce")?,
    };
    Ok(Client {
        login,
        tls_bound_tokens: row.flag("tls_bound_tokens")?,
        name: row.text("name")?,
        credential,
        grant_types,
        allowed_scopes: scopes("allowed_scopes")?,
        default_scopes: scopes("default_scopes")?,
        allowed_audiences: auds("allowed_audiences")?,
        default_audiences: auds("default_audiences")?,
        access_token_ttl: row.int_opt("access_token_ttl")?.map(u),
        enabled: row.flag("enabled")?,
        created_at: u(row.int("created_at")?),
        updated_at: u(row.int("updated_at")?),
        id,
    })
}

/// The `tls_auth` column: the certificate credential as JSON,
/// `{"method": "tls_client_auth", "tls_client_auth_subject_dn": "CN=…"}` or
/// `{"method": "self_signed_tls_client_auth", "x5t#S256": ["…"]}`.
fn tls_to_column(c: &Credential) -> Option<String> {
    let v = match c {
        Credential::TlsClientAuth(m) => serde_json::json!({
            "method": crate::mtls::TLS_CLIENT_AUTH,
            m.metadata_name(): m.value(),
        }),
        Credential::SelfSignedTls(t) => serde_json::json!({
            "method": crate::mtls::SELF_SIGNED_TLS_CLIENT_AUTH,
            "x5t#S256": t,
        }),
        _ => return None,
    };
    Some(v.to_string())
}

fn tls_from_column(s: &str) -> Result<Credential, String> {
    let v: serde_json::Value = serde_json::from_str(s).map_err(|e| e.to_string())?;
    match v.get("method").and_then(|m| m.as_str()) {
        Some(crate::mtls::TLS_CLIENT_AUTH) => crate::mtls::SUBJECT_FIELDS
            .iter()
            .find_map(|k| Some(portcullis_ca::SubjectMatch::parse(k, v.get(*k)?.as_str()?)))
            .ok_or_else(|| "no tls_client_auth_* name".to_owned())?
            .map(Credential::TlsClientAuth),
        Some(crate::mtls::SELF_SIGNED_TLS_CLIENT_AUTH) => {
            serde_json::from_value(v.get("x5t#S256").cloned().unwrap_or_default())
                .map(Credential::SelfSignedTls)
                .map_err(|e| e.to_string())
        }
        _ => Err("unknown method".into()),
    }
}

/// Binds the client's columns in the order of [`INSERT_CLIENT`].
pub(super) fn bind_client<'q, DB>(
    q: sqlx::query::Query<'q, DB, DB::Arguments>,
    c: &'q Client,
) -> sqlx::query::Query<'q, DB, DB::Arguments>
where
    DB: sqlx::Database,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<Vec<u8>>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    bool: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let (digest, jwks, jwks_uri) = match &c.credential {
        Credential::Secret { digest } => (Some(digest.clone()), None, None),
        Credential::Jwks(j) => (None, Some(j.to_string()), None),
        Credential::JwksUri(u) => (None, None, Some(u.to_string())),
        Credential::None | Credential::TlsClientAuth(_) | Credential::SelfSignedTls(_) => {
            (None, None, None)
        }
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
        .bind(c.enabled)
        .bind(i(c.created_at))
        .bind(i(c.updated_at))
        .bind(matches!(c.credential, Credential::None))
        .bind(json_list(&c.login.redirect_uris))
        .bind(json_list(&c.login.post_logout_redirect_uris))
        .bind(c.login.first_party)
        .bind(c.login.require_pkce)
        .bind(tls_to_column(&c.credential))
        .bind(c.tls_bound_tokens)
}

macro_rules! insert_client_sql {
    () => {
        "INSERT INTO clients (id, name, secret_digest, jwks, jwks_uri, \
    grant_types, allowed_scopes, default_scopes, allowed_audiences, default_audiences, \
    access_token_ttl, enabled, created_at, updated_at, \
    public, redirect_uris, post_logout_redirect_uris, first_party, require_pkce, \
    tls_auth, tls_bound_tokens) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, \
    $20, $21)"
    };
}

pub(super) const INSERT_CLIENT: &str = insert_client_sql!();

pub(super) const UPSERT_CLIENT: &str = concat!(
    insert_client_sql!(),
    " ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
    secret_digest = excluded.secret_digest, jwks = excluded.jwks, jwks_uri = excluded.jwks_uri, \
    grant_types = excluded.grant_types, allowed_scopes = excluded.allowed_scopes, \
    default_scopes = excluded.default_scopes, allowed_audiences = excluded.allowed_audiences, \
    default_audiences = excluded.default_audiences, access_token_ttl = excluded.access_token_ttl, \
    enabled = excluded.enabled, updated_at = excluded.updated_at, public = excluded.public, \
    redirect_uris = excluded.redirect_uris, \
    post_logout_redirect_uris = excluded.post_logout_redirect_uris, \
    first_party = excluded.first_party, require_pkce = excluded.require_pkce, \
    tls_auth = excluded.tls_auth, tls_bound_tokens = excluded.tls_bound_tokens"
);

pub(super) const INSERT_REVOCATION: &str = "INSERT INTO revocations (kind, subject, issued_before, expires_at, revoked_at) \
     VALUES ($1, $2, $3, $4, $5) RETURNING seq";

/// Binds a new revocation's columns in the order of [`INSERT_REVOCATION`].
pub(super) fn bind_revocation<'q, DB>(
    q: sqlx::query::Query<'q, DB, DB::Arguments>,
    r: &'q super::NewRevocation,
) -> sqlx::query::Query<'q, DB, DB::Arguments>
where
    DB: sqlx::Database,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    q.bind(r.kind.as_str())
        .bind(r.subject.as_str())
        .bind(r.issued_before.map(i))
        .bind(i(r.expires_at))
        .bind(i(r.revoked_at))
}

pub(super) const REVOCATIONS_SINCE: &str =
    "SELECT * FROM revocations WHERE seq > $1 AND expires_at > $2 ORDER BY seq LIMIT $3";

pub(super) const IS_REVOKED: &str = "SELECT 1 FROM revocations WHERE (kind = 'jti' AND subject = $1) \
     OR (kind = 'client' AND subject = $2 AND issued_before >= $3) LIMIT 1";

pub(super) const INSERT_KEY: &str = "INSERT INTO signing_keys (kid, alg, private_key, public_jwk, created_at, activate_at) \
     VALUES ($1, $2, $3, $4, $5, $6)";

/// The first key of a chain: inserted only while no key of its algorithm
/// is active at `$7` (another replica may have just made one).
pub(super) const INSERT_FIRST_KEY: &str = "INSERT INTO signing_keys \
     (kid, alg, private_key, public_jwk, created_at, activate_at) \
     SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS \
     (SELECT 1 FROM signing_keys WHERE alg = $2 AND activate_at <= $7)";

pub(super) const USE_ASSERTION: &str = "INSERT INTO used_assertions (client_id, jti, expires_at) VALUES ($1, $2, $3) \
     ON CONFLICT DO NOTHING";

pub(super) fn key_from_row(r: &impl Cols) -> Result<KeyRecord, StoreError> {
    let alg = r.text("alg")?;
    let jwk = r.text("public_jwk")?;
    Ok(KeyRecord {
        kid: r.text("kid")?,
        alg: alg
            .parse()
            .map_err(|e: portcullis_core::jose::KeyError| StoreError::Corrupt(e.to_string()))?,
        sealed_private: r.bytes("private_key")?,
        public_jwk: serde_json::from_str(&jwk).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        created_at: u(r.int("created_at")?),
        activate_at: u(r.int("activate_at")?),
    })
}

pub(super) fn revocation_from_row(r: &impl Cols) -> Result<Revocation, StoreError> {
    let kind = r.text("kind")?;
    Ok(Revocation {
        seq: r.int("seq")?,
        kind: match kind.as_str() {
            "jti" => RevocationKind::Jti,
            "client" => RevocationKind::Client,
            other => {
                return Err(StoreError::Corrupt(format!("revocation kind {other:?}")));
            }
        },
        subject: r.text("subject")?,
        issued_before: r.int_opt("issued_before")?.map(u),
        expires_at: u(r.int("expires_at")?),
        revoked_at: u(r.int("revoked_at")?),
    })
}

// ----- Users ---------------------------------------------------------------

/// Maps a unique-constraint violation to [`StoreError::Conflict`].
pub(super) fn unique<T>(r: Result<T, sqlx::Error>) -> Result<T, StoreError> {
    match r {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict),
        r => Ok(r?),
    }
}

pub(super) fn user_from_row(row: &impl Cols) -> Result<User, StoreError> {
    let id = row.text("id")?;
    let id = UserId::from_str(&id).map_err(|e| corrupt("user id")(e.to_string()))?;
    let username = row.text("username")?;
    Ok(User {
        username: Username::from_str(&username).map_err(corrupt("username"))?,
        profile: UserProfile {
            email: row.text_opt("email")?,
            email_verified: row.flag("email_verified")?,
            display_name: row.text("display_name")?,
            roles: row.list("roles")?,
            groups: row.list("groups")?,
        },
        password_hash: row
            .text_opt("password_hash")?
            .map(portcullis_core::Secret::new),
        enabled: row.flag("enabled")?,
        created_at: u(row.int("created_at")?),
        updated_at: u(row.int("updated_at")?),
        id,
    })
}

/// Binds the user's columns in the order of [`INSERT_USER`] (id first).
pub(super) fn bind_user<'q, DB>(
    q: sqlx::query::Query<'q, DB, DB::Arguments>,
    u: &'q User,
) -> sqlx::query::Query<'q, DB, DB::Arguments>
where
    DB: sqlx::Database,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    bool: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    q.bind(u.id.as_str())
        .bind(u.username.as_str())
        .bind(u.profile.email.as_deref())
        .bind(u.profile.email_verified)
        .bind(u.profile.display_name.as_str())
        .bind(u.password_hash.as_ref().map(|h| h.expose()))
        .bind(json_list(&u.profile.roles))
        .bind(json_list(&u.profile.groups))
        .bind(u.enabled)
        .bind(i(u.created_at))
        .bind(i(u.updated_at))
}

macro_rules! insert_user_sql {
    () => {
        "INSERT INTO users (id, username, email, email_verified, display_name, password_hash, \
    roles, groups, enabled, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    };
}

pub(super) const INSERT_USER: &str = insert_user_sql!();

/// Binds like the insert: `$1` is the id, `$10` (`created_at`) never changes.
pub(super) const UPDATE_USER: &str = "UPDATE users SET username = $2, email = $3, \
    email_verified = $4, display_name = $5, password_hash = $6, roles = $7, groups = $8, \
    enabled = $9, updated_at = $11 WHERE id = $1";

pub(super) const UPSERT_USER: &str = concat!(
    insert_user_sql!(),
    " ON CONFLICT (username) DO UPDATE SET email = excluded.email, \
    email_verified = excluded.email_verified, display_name = excluded.display_name, \
    password_hash = excluded.password_hash, roles = excluded.roles, groups = excluded.groups, \
    enabled = excluded.enabled, updated_at = excluded.updated_at"
);

pub(super) const SET_PASSWORD: &str =
    "UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3";

// ----- Browser login -------------------------------------------------------

pub(super) const CREATE_SESSION: &str = "INSERT INTO login_sessions \
    (digest, sid, user_id, auth_time, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)";

pub(super) const GET_SESSION: &str = "SELECT sid, user_id, auth_time, expires_at \
    FROM login_sessions WHERE digest = $1 AND ended_at IS NULL AND expires_at > $2";

pub(super) fn session_from_row(r: &impl Cols) -> Result<LoginSession, StoreError> {
    Ok(LoginSession {
        sid: r.text("sid")?,
        user_id: r.text("user_id")?,
        auth_time: u(r.int("auth_time")?),
        expires_at: u(r.int("expires_at")?),
    })
}

pub(super) const INSERT_CODE: &str = "INSERT INTO auth_codes (digest, client_id, redirect_uri, \
    code_challenge, nonce, scope, audiences, user_id, auth_time, sid, created_at, expires_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

pub(super) fn code_from_row(r: &impl Cols) -> Result<AuthCode, StoreError> {
    Ok(AuthCode {
        client_id: r.text("client_id")?,
        redirect_uri: r.text("redirect_uri")?,
        code_challenge: r.text_opt("code_challenge")?,
        nonce: r.text_opt("nonce")?,
        scope: r.text("scope")?,
        audiences: r.list("audiences")?,
        user_id: r.text("user_id")?,
        auth_time: u(r.int("auth_time")?),
        sid: r.text("sid")?,
        expires_at: u(r.int("expires_at")?),
        used: r.int_opt("used_at")?.is_some(),
    })
}

/// Marks a code used only if it is unused and unexpired: `$1` now, `$2`
/// the grant, `$3` the digest. The affected-row count decides.
pub(super) const USE_CODE: &str = "UPDATE auth_codes SET used_at = $1, grant_id = $2 \
    WHERE digest = $3 AND used_at IS NULL AND expires_at > $1";

pub(super) const INSERT_GRANT: &str = "INSERT INTO grants (id, client_id, user_id, sid, scope, \
    audiences, auth_time, created_at, expires_at, cnf_x5t) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

pub(super) const INSERT_GRANT_TOKEN: &str =
    "INSERT INTO grant_tokens (grant_id, jti, expires_at) VALUES ($1, $2, $3)";

pub(super) const INSERT_REFRESH: &str = "INSERT INTO refresh_tokens \
    (digest, grant_id, created_at, idle_expires_at) VALUES ($1, $2, $3, $4)";

pub(super) const REFRESH_GRANT: &str = "SELECT r.idle_expires_at, r.rotated_at, g.* \
    FROM refresh_tokens r JOIN grants g ON g.id = r.grant_id WHERE r.digest = $1";

pub(super) const ROTATE_REFRESH: &str =
    "UPDATE refresh_tokens SET rotated_at = $1 WHERE digest = $2 AND rotated_at IS NULL";

/// What presenting a refresh token calls for, decided from its
/// [`REFRESH_GRANT`] row.
pub(super) enum RefreshStep {
    /// Unknown client, revoked or expired: nothing changes.
    Invalid,
    /// A rotated token presented after the grace window: revoke the family.
    Replay(Grant),
    /// A rotated token within the grace window (a concurrent refresh).
    Serve(Grant),
    /// A live token: mark it rotated, then issue.
    Rotate(Grant),
}

pub(super) fn refresh_step(
    row: &impl Cols,
    client_id: &str,
    grace: u64,
    now: UnixTime,
) -> Result<RefreshStep, StoreError> {
    let grant = grant_from_row(row)?;
    let revoked = row.int_opt("revoked_at")?.is_some();
    let idle_exp = u(row.int("idle_expires_at")?);
    // A token of another client reveals nothing and changes nothing.
    if grant.client_id != client_id || revoked || grant.expires_at <= now {
        return Ok(RefreshStep::Invalid);
    }
    Ok(match row.int_opt("rotated_at")?.map(u) {
        Some(at) if now.saturating_sub(at) >= grace => RefreshStep::Replay(grant),
        Some(_) => RefreshStep::Serve(grant),
        None if idle_exp <= now => RefreshStep::Invalid,
        None => RefreshStep::Rotate(grant),
    })
}

pub(super) fn grant_from_row(row: &impl Cols) -> Result<Grant, StoreError> {
    Ok(Grant {
        id: row.text("id")?,
        client_id: row.text("client_id")?,
        user_id: row.text("user_id")?,
        sid: row.text("sid")?,
        scope: row.text("scope")?,
        audiences: row.list("audiences")?,
        auth_time: u(row.int("auth_time")?),
        expires_at: u(row.int("expires_at")?),
        cnf_x5t: row.text_opt("cnf_x5t")?,
    })
}

/// `$1` key, `$2` now, `$3` window.
pub(super) const ADD_LOGIN_FAILURE: &str = "INSERT INTO login_failures (key, failures, last_at) \
    VALUES ($1, 1, $2) ON CONFLICT (key) DO UPDATE SET failures = CASE \
    WHEN login_failures.last_at + $3 < $2 THEN 1 ELSE login_failures.failures + 1 END, \
    last_at = $2 RETURNING failures";

pub(super) const LOGIN_FAILURES: &str =
    "SELECT failures, last_at FROM login_failures WHERE key = $1";

/// Failures within `window` seconds and the latest one's time, from a
/// [`LOGIN_FAILURES`] row.
pub(super) fn failures_from_row(
    row: Option<&impl Cols>,
    window: u64,
    now: UnixTime,
) -> Result<(u32, UnixTime), StoreError> {
    let Some(row) = row else {
        return Ok((0, 0));
    };
    let last = u(row.int("last_at")?);
    if last.saturating_add(window) < now {
        return Ok((0, last));
    }
    Ok((count(row.int("failures")?), last))
}

pub(super) fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub(super) const END_SESSION: &str =
    "UPDATE login_sessions SET ended_at = $1 WHERE sid = $2 AND ended_at IS NULL";

pub(super) const END_USER_SESSIONS: &str =
    "UPDATE login_sessions SET ended_at = $1 WHERE user_id = $2 AND ended_at IS NULL";

/// A user's live grants to a client (SQLite; PostgreSQL locks them too).
pub(super) const LIVE_GRANTS_OF: &str =
    "SELECT id FROM grants WHERE user_id = $1 AND client_id = $2 AND revoked_at IS NULL";

/// Deletes expired rows, each bound to now.
/// Rows one housekeeping statement deletes at most: a purge never holds
/// locks (or, on SQLite, the write lock) for long, however much expired.
pub(super) const PURGE_BATCH: i64 = 500;
/// Pause between two batches, so requests get the database in between.
pub(super) const PURGE_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

/// Housekeeping, in order (refresh tokens before their grants): each
/// statement deletes at most `$2` expired rows and is repeated until it
/// deletes fewer.
pub(super) const PURGE: [&str; 8] = [
    "DELETE FROM used_assertions WHERE (client_id, jti) IN \
     (SELECT client_id, jti FROM used_assertions WHERE expires_at <= $1 LIMIT $2)",
    "DELETE FROM revocations WHERE seq IN \
     (SELECT seq FROM revocations WHERE expires_at <= $1 LIMIT $2)",
    "DELETE FROM auth_codes WHERE digest IN \
     (SELECT digest FROM auth_codes WHERE expires_at <= $1 LIMIT $2)",
    "DELETE FROM login_sessions WHERE digest IN \
     (SELECT digest FROM login_sessions WHERE expires_at <= $1 LIMIT $2)",
    "DELETE FROM refresh_tokens WHERE digest IN \
     (SELECT r.digest FROM refresh_tokens r JOIN grants g ON g.id = r.grant_id \
      WHERE g.expires_at <= $1 LIMIT $2)",
    "DELETE FROM grant_tokens WHERE (grant_id, jti) IN \
     (SELECT grant_id, jti FROM grant_tokens WHERE expires_at <= $1 LIMIT $2)",
    "DELETE FROM grants WHERE id IN (SELECT id FROM grants WHERE expires_at <= $1 LIMIT $2)",
    // Failures are counted within a window of at most a day in practice.
    "DELETE FROM login_failures WHERE key IN \
     (SELECT key FROM login_failures WHERE last_at + 86400 <= $1 LIMIT $2)",
];

pub(super) fn consent_from_row(row: &impl Cols) -> Result<Consent, StoreError> {
    Ok(Consent {
        user_id: row.text("user_id")?,
        client_id: row.text("client_id")?,
        scope: row.text("scope")?,
        granted_at: u(row.int("granted_at")?),
    })
}

pub(super) const SAVE_CONSENT: &str = "INSERT INTO consents \
    (user_id, client_id, scope, granted_at) VALUES ($1, $2, $3, $4) \
    ON CONFLICT (user_id, client_id) DO UPDATE SET scope = excluded.scope, \
    granted_at = excluded.granted_at";

pub(super) const INSERT_ROLE: &str = "INSERT INTO roles (name, description, scopes, \
     member_groups, member_clients, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";
pub(super) const UPDATE_ROLE: &str = "UPDATE roles SET description = $2, scopes = $3, \
     member_groups = $4, member_clients = $5, created_at = $6, updated_at = $7 WHERE name = $1";

/// Binds a role's columns in the order of [`INSERT_ROLE`] and [`UPDATE_ROLE`].
pub(super) fn bind_role<'q, DB>(
    q: sqlx::query::Query<'q, DB, DB::Arguments>,
    r: &'q crate::model::Role,
) -> sqlx::query::Query<'q, DB, DB::Arguments>
where
    DB: sqlx::Database,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    q.bind(r.name.as_str())
        .bind(r.description.as_str())
        .bind(json_list(&r.scopes))
        .bind(json_list(&r.groups))
        .bind(json_list(&r.clients))
        .bind(i(r.created_at))
        .bind(i(r.updated_at))
}

pub(super) fn role_from_row(row: &impl Cols) -> Result<crate::model::Role, StoreError> {
    Ok(crate::model::Role {
        name: row.text("name")?,
        description: row.text("description")?,
        scopes: row.list("scopes")?,
        groups: row.list("member_groups")?,
        clients: row.list("member_clients")?,
        created_at: u(row.int("created_at")?),
        updated_at: u(row.int("updated_at")?),
    })
}
