//! The user registry: people who log in, their passwords (argon2id), and the
//! checks on every field the admin API and the config file accept.
//!
//! Password hashing and verification are CPU-bound (tens of milliseconds by
//! design), so they run on tokio's blocking pool. [`UserRegistry::verify_password`]
//! does the same argon2 work whether or not the user exists, so response
//! times do not reveal which usernames are registered.

use crate::config::{PasswordParams, UserPasswordSpec, UserSpec};
use crate::model::{User, UserId, UserProfile, Username};
use crate::store::{Store, StoreError};
use portcullis_core::{Clock, Secret, UnixTime};
use serde::{Deserialize, Deserializer, Serialize};
use std::str::FromStr;
use std::sync::Arc;

/// Why a user operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UserError {
    /// The input is invalid; the message names the field and why.
    #[error("{0}")]
    Invalid(String),
    /// No such user.
    #[error("no user with this id or username")]
    NotFound,
    /// The username is taken.
    #[error("a user with this username already exists")]
    Conflict,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing or the random source failed (the cause is in the message,
    /// never a password).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// Checks of user fields, shared by the admin API and the config file. Each
/// returns what is wrong, without the field name (callers add it).
pub mod fields {
    use portcullis_core::Secret;

    /// Shortest accepted password, in characters.
    pub const MIN_PASSWORD_CHARS: usize = 8;
    /// Longest accepted password, in bytes: bounds the work one request
    /// can cause.
    pub const MAX_PASSWORD_BYTES: usize = 1024;
    /// Most roles or groups per user.
    pub const MAX_LABELS: usize = 64;

    /// A new password: 8 characters to 1024 bytes.
    pub fn password(p: &Secret) -> Result<(), String> {
        let p = p.expose();
        if p.len() > MAX_PASSWORD_BYTES {
            return Err(format!("at most {MAX_PASSWORD_BYTES} bytes"));
        }
        if p.chars().count() < MIN_PASSWORD_CHARS {
            return Err(format!("at least {MIN_PASSWORD_CHARS} characters"));
        }
        Ok(())
    }

    /// An argon2id PHC string whose parameters argon2 accepts.
    pub fn phc(s: &str) -> Result<(), String> {
        let bad = || "expected an argon2id PHC string ($argon2id$v=19$m=…,t=…,p=…$salt$hash)";
        let h = argon2::PasswordHash::new(s).map_err(|_| bad())?;
        if h.algorithm != argon2::ARGON2ID_IDENT || h.salt.is_none() || h.hash.is_none() {
            return Err(bad().into());
        }
        argon2::Params::try_from(&h).map_err(|e| format!("bad argon2 parameters: {e}"))?;
        Ok(())
    }

    /// An email address: `local@domain`, no spaces, at most 254 bytes.
    pub fn email(s: String) -> Result<String, String> {
        let ok = s.len() <= 254
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
            && s.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && local.len() <= 64
                    && !domain.is_empty()
                    && !domain.contains('@')
            });
        if ok {
            Ok(s)
        } else {
            Err("not an email address (local@domain, at most 254 bytes)".into())
        }
    }

    /// A display name: 1 to 200 characters, no control characters.
    pub fn display_name(s: String) -> Result<String, String> {
        let n = s.chars().count();
        if n == 0 || n > 200 || s.chars().any(char::is_control) {
            return Err("1 to 200 characters, no control characters".into());
        }
        Ok(s)
    }

    /// Roles or groups: each 1 to 64 visible ASCII characters other than
    /// `,`; duplicates dropped, order kept; at most 64.
    pub fn labels(v: Vec<String>) -> Result<Vec<String>, String> {
        let mut out: Vec<String> = Vec::with_capacity(v.len());
        for l in v {
            if l.is_empty() || l.len() > 64 || !l.bytes().all(|b| b.is_ascii_graphic() && b != b',')
            {
                return Err(format!(
                    "{l:?}: 1 to 64 visible ASCII characters, no spaces or commas"
                ));
            }
            if !out.contains(&l) {
                out.push(l);
            }
        }
        if out.len() > MAX_LABELS {
            return Err(format!("at most {MAX_LABELS} entries"));
        }
        Ok(out)
    }
}

fn invalid(field: &'static str) -> impl Fn(String) -> UserError {
    move |e| UserError::Invalid(format!("{field}: {e}"))
}

/// `Some(inner)` when the key is present, so `"email": null` (clear) differs
/// from an absent key (leave as is).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(Secret::new))
}

/// User fields accepted by the admin API (create: `username` required;
/// update: only the fields present change).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    /// Login name.
    pub username: Option<String>,
    /// Email address; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    pub email: Option<Option<String>>,
    /// Email verified. A changed email is unverified unless this says otherwise.
    pub email_verified: Option<bool>,
    /// Display name (defaults to the username).
    pub display_name: Option<String>,
    /// Roles (replace the list).
    pub roles: Option<Vec<String>>,
    /// Groups (replace the list).
    pub groups: Option<Vec<String>>,
    /// Enabled flag.
    pub enabled: Option<bool>,
    /// Initial password (create only).
    #[serde(default, deserialize_with = "secret")]
    pub password: Option<Secret>,
}

/// A user as the admin API shows it. Never the password hash.
#[derive(Debug, Clone, Serialize)]
pub struct UserView {
    /// Id (the OIDC `sub`).
    pub id: String,
    /// Username.
    pub username: String,
    /// Email, name, roles, groups (inline).
    #[serde(flatten)]
    pub profile: UserProfile,
    /// Enabled.
    pub enabled: bool,
    /// Whether the user can log in with a password.
    pub has_password: bool,
    /// Created.
    pub created_at: UnixTime,
    /// Updated.
    pub updated_at: UnixTime,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.to_string(),
            username: u.username.to_string(),
            profile: u.profile.clone(),
            enabled: u.enabled,
            has_password: u.password_hash.is_some(),
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// argon2id with the configured parameters, on the blocking pool.
struct Hasher {
    params: argon2::Params,
    /// The hash of a random password nobody knows, made with the configured
    /// parameters: what unknown users are checked against. Made on first
    /// use, so start-up does not pay an argon2 hash.
    dummy: tokio::sync::OnceCell<Secret>,
}

fn argon(params: argon2::Params) -> argon2::Argon2<'static> {
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

impl Hasher {
    fn new(params: argon2::Params) -> Self {
        Self {
            params,
            dummy: tokio::sync::OnceCell::new(),
        }
    }

    async fn dummy(&self) -> Result<&Secret, UserError> {
        self.dummy
            .get_or_try_init(|| async {
                let unknowable = crate::crypto::random_token(32)
                    .map_err(|_| UserError::Internal("random source failed"))?;
                Self::hash_with(self.params.clone(), Secret::new(unknowable)).await
            })
            .await
    }

    async fn hash_with(params: argon2::Params, password: Secret) -> Result<Secret, UserError> {
        tokio::task::spawn_blocking(move || {
            use argon2::PasswordHasher;
            argon(params)
                .hash_password(password.expose().as_bytes())
                .map(|h| Secret::new(h.to_string()))
                .map_err(|_| UserError::Internal("password hashing failed"))
        })
        .await
        .map_err(|_| UserError::Internal("password hashing task failed"))?
    }

    async fn hash(&self, password: &Secret) -> Result<Secret, UserError> {
        Self::hash_with(self.params.clone(), password.clone()).await
    }

    /// Whether `password` matches `phc` (with the parameters `phc` names).
    /// `None` checks against the dummy hash: same work, always false.
    async fn verify(&self, password: &Secret, phc: Option<&Secret>) -> bool {
        let real = phc.is_some();
        let phc = match phc {
            Some(p) => p.clone(),
            None => match self.dummy().await {
                Ok(d) => d.clone(),
                Err(_) => return false,
            },
        };
        let password = password.clone();
        let ok = tokio::task::spawn_blocking(move || {
            use argon2::PasswordVerifier;
            let Ok(hash) = argon2::PasswordHash::new(phc.expose()) else {
                tracing::warn!("a stored password hash does not parse");
                return false;
            };
            argon2::Argon2::default()
                .verify_password(password.expose().as_bytes(), &hash)
                .is_ok()
        })
        .await
        .unwrap_or(false);
        ok && real
    }

    /// Whether `phc` was made with the configured algorithm and parameters.
    fn is_current(&self, phc: &Secret) -> bool {
        argon2::PasswordHash::new(phc.expose()).is_ok_and(|h| {
            h.algorithm == argon2::ARGON2ID_IDENT
                && argon2::Params::try_from(&h).is_ok_and(|p| {
                    (p.m_cost(), p.t_cost(), p.p_cost())
                        == (
                            self.params.m_cost(),
                            self.params.t_cost(),
                            self.params.p_cost(),
                        )
                })
        })
    }
}

/// Users, read from and written to the store (no cache: nothing on a hot
/// path reads them).
pub struct UserRegistry {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    hasher: Hasher,
}

impl UserRegistry {
    /// A registry over `store` hashing with `params`. The dummy hash for
    /// unknown users is made on the first check that needs it.
    pub async fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        params: &PasswordParams,
    ) -> Result<Self, UserError> {
        Ok(Self {
            store,
            clock,
            hasher: Hasher::new(params.argon2().clone()),
        })
    }

    /// A user by id.
    pub async fn get(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        self.store.get_user(id).await
    }

    /// A user by username (case-insensitive).
    pub async fn get_by_username(&self, username: &Username) -> Result<Option<User>, StoreError> {
        self.store.get_user_by_username(username).await
    }

    /// A user by id (`u_…`) or else by username; `None` if neither matches
    /// or `s` is neither.
    pub async fn find(&self, s: &str) -> Result<Option<User>, StoreError> {
        if s.starts_with(UserId::PREFIX) {
            match UserId::from_str(s) {
                Ok(id) => self.get(&id).await,
                Err(_) => Ok(None),
            }
        } else {
            match Username::from_str(s) {
                Ok(u) => self.get_by_username(&u).await,
                Err(_) => Ok(None),
            }
        }
    }

    /// All users, ordered by username.
    pub async fn list(&self) -> Result<Vec<User>, StoreError> {
        self.store.list_users().await
    }

    /// Creates a user, hashing the initial password if one is given.
    pub async fn create(&self, mut input: UserInput, actor: &str) -> Result<User, UserError> {
        let username = input
            .username
            .take()
            .ok_or_else(|| UserError::Invalid("username: required".into()))?;
        let username = Username::from_str(&username).map_err(invalid("username"))?;
        let password = input.password.take();
        if let Some(p) = &password {
            fields::password(p).map_err(invalid("password"))?;
        }
        let now = self.clock.now();
        let mut user = User {
            id: UserId::generate().map_err(|_| UserError::Internal("random source failed"))?,
            profile: UserProfile {
                email: None,
                email_verified: false,
                display_name: username.to_string(),
                roles: Vec::new(),
                groups: Vec::new(),
            },
            username,
            password_hash: None,
            enabled: true,
            created_at: now,
            updated_at: now,
        };
        apply(&mut user, input)?;
        if let Some(p) = &password {
            user.password_hash = Some(self.hasher.hash(p).await?);
        }
        match self.store.create_user(&user).await {
            Err(StoreError::Conflict) => return Err(UserError::Conflict),
            r => r?,
        }
        crate::audit::user_changed("create", user.id.as_str(), user.username.as_str(), actor);
        if password.is_some() {
            crate::audit::user_changed(
                "set_password",
                user.id.as_str(),
                user.username.as_str(),
                actor,
            );
        }
        Ok(user)
    }

    /// Changes the fields present in `input` (not the password).
    pub async fn update(
        &self,
        id: &UserId,
        input: UserInput,
        actor: &str,
    ) -> Result<User, UserError> {
        if input.password.is_some() {
            return Err(UserError::Invalid(
                "password: set it with POST /admin/users/{id}/password".into(),
            ));
        }
        let mut user = self.store.get_user(id).await?.ok_or(UserError::NotFound)?;
        let was_enabled = user.enabled;
        apply(&mut user, input)?;
        user.updated_at = self.clock.now();
        match self.store.update_user(&user).await {
            Ok(true) => {}
            Ok(false) => return Err(UserError::NotFound),
            Err(StoreError::Conflict) => return Err(UserError::Conflict),
            Err(e) => return Err(e.into()),
        }
        let action = if was_enabled && !user.enabled {
            // A disabled user's sessions and refresh tokens stop at once.
            self.store
                .end_user_sessions(id.as_str(), user.updated_at)
                .await?;
            "disable"
        } else {
            "update"
        };
        crate::audit::user_changed(action, id.as_str(), user.username.as_str(), actor);
        Ok(user)
    }

    /// Deletes a user.
    pub async fn delete(&self, id: &UserId, actor: &str) -> Result<(), UserError> {
        if !self.store.delete_user(id).await? {
            return Err(UserError::NotFound);
        }
        self.store
            .end_user_sessions(id.as_str(), self.clock.now())
            .await?;
        crate::audit::user_changed("delete", id.as_str(), "-", actor);
        Ok(())
    }

    /// Replaces a user's password; the old one stops working at once.
    pub async fn set_password(
        &self,
        id: &UserId,
        password: &Secret,
        actor: &str,
    ) -> Result<(), UserError> {
        fields::password(password).map_err(invalid("password"))?;
        let user = self.store.get_user(id).await?.ok_or(UserError::NotFound)?;
        let phc = self.hasher.hash(password).await?;
        let now = self.clock.now();
        if !self
            .store
            .set_password_hash(id, Some(phc.expose()), now)
            .await?
        {
            return Err(UserError::NotFound);
        }
        // A new password ends the sessions the old one opened.
        self.store.end_user_sessions(id.as_str(), now).await?;
        crate::audit::user_changed("set_password", id.as_str(), user.username.as_str(), actor);
        Ok(())
    }

    /// The enabled user with this username and password, or `None`: unknown
    /// username, wrong password, no password set, or disabled. Every case
    /// costs one argon2 verification, so timing does not tell them apart.
    pub async fn verify_password(
        &self,
        username: &str,
        password: &Secret,
    ) -> Result<Option<User>, UserError> {
        // Longer passwords were never accepted; refusing them unhashed
        // depends only on the input, not on which users exist.
        let user = if password.expose().len() > fields::MAX_PASSWORD_BYTES {
            None
        } else {
            let user = match Username::from_str(username) {
                Ok(u) => self.store.get_user_by_username(&u).await?,
                Err(_) => None,
            };
            let phc = user.as_ref().and_then(|u| u.password_hash.as_ref());
            let ok = self.hasher.verify(password, phc).await;
            user.filter(|u| ok && u.enabled)
        };
        let result = if user.is_some() {
            "accepted"
        } else {
            "refused"
        };
        metrics::counter!(crate::metrics::names::PASSWORD_CHECKS, "result" => result).increment(1);
        Ok(user)
    }

    /// Applies users declared in the config file: created if missing,
    /// replaced if they differ, left alone if they match. A declared
    /// plain-text password is re-hashed only when it no longer matches or
    /// the configured parameters changed; without a password in the
    /// declaration, the stored one is kept.
    pub async fn apply_declared(&self, specs: &[UserSpec]) -> Result<(), UserError> {
        let now = self.clock.now();
        for spec in specs {
            let existing = self.store.get_user_by_username(&spec.username).await?;
            let stored_hash = existing.as_ref().and_then(|e| e.password_hash.clone());
            let password_hash = match &spec.password {
                None => stored_hash,
                Some(UserPasswordSpec::Hash(h)) => Some(h.clone()),
                Some(UserPasswordSpec::Plain(p)) => match stored_hash {
                    Some(h)
                        if self.hasher.is_current(&h) && self.hasher.verify(p, Some(&h)).await =>
                    {
                        Some(h)
                    }
                    _ => Some(self.hasher.hash(p).await?),
                },
            };
            let id = match &existing {
                Some(e) => e.id.clone(),
                None => {
                    UserId::generate().map_err(|_| UserError::Internal("random source failed"))?
                }
            };
            let user = User {
                id,
                username: spec.username.clone(),
                profile: spec.profile.clone(),
                password_hash,
                enabled: spec.enabled,
                created_at: existing.as_ref().map_or(now, |e| e.created_at),
                updated_at: existing.as_ref().map_or(now, |e| e.updated_at),
            };
            if existing.as_ref() == Some(&user) {
                continue;
            }
            let user = User {
                updated_at: now,
                ..user
            };
            self.store.upsert_user(&user).await?;
            crate::audit::user_changed(
                "apply_config",
                user.id.as_str(),
                user.username.as_str(),
                "config",
            );
        }
        Ok(())
    }
}

/// Applies the fields present in `input` (not the password) and checks them.
fn apply(u: &mut User, input: UserInput) -> Result<(), UserError> {
    if let Some(n) = input.username {
        u.username = Username::from_str(&n).map_err(invalid("username"))?;
    }
    let p = &mut u.profile;
    if let Some(e) = input.email {
        let e = e.map(fields::email).transpose().map_err(invalid("email"))?;
        if e != p.email {
            p.email = e;
            p.email_verified = false;
        }
    }
    if let Some(v) = input.email_verified {
        p.email_verified = v;
    }
    if p.email_verified && p.email.is_none() {
        return Err(UserError::Invalid(
            "email_verified: there is no email address to verify".into(),
        ));
    }
    if let Some(n) = input.display_name {
        p.display_name = fields::display_name(n).map_err(invalid("display_name"))?;
    }
    if let Some(r) = input.roles {
        p.roles = fields::labels(r).map_err(invalid("roles"))?;
    }
    if let Some(g) = input.groups {
        p.groups = fields::labels(g).map_err(invalid("groups"))?;
    }
    if let Some(e) = input.enabled {
        u.enabled = e;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> argon2::Params {
        argon2::Params::new(64, 1, 1, None).unwrap()
    }

    #[test]
    fn usernames_are_lowercased_and_never_look_like_ids() {
        assert_eq!(
            Username::from_str("Alice.Smith@example-1_x")
                .unwrap()
                .as_str(),
            "alice.smith@example-1_x"
        );
        for bad in [
            "",
            "has space",
            "ümlaut",
            ".",
            "..",
            "u_abc",
            "U_abc",
            "a/b",
        ] {
            assert!(Username::from_str(bad).is_err(), "{bad:?}");
        }
        assert!(Username::from_str(&"a".repeat(64)).is_ok());
        assert!(Username::from_str(&"a".repeat(65)).is_err());
        let id = UserId::generate().unwrap();
        assert_eq!(id.as_str().len(), 2 + 22);
        assert_eq!(UserId::from_str(id.as_str()).unwrap(), id);
        assert!(UserId::from_str("alice").is_err());
        assert!(UserId::from_str("u_").is_err());
        assert!(UserId::from_str("u_a/b").is_err());
    }

    #[test]
    fn field_checks_name_the_rule() {
        assert!(fields::password(&Secret::new("12345678")).is_ok());
        assert!(
            fields::password(&Secret::new("ééééééé")).is_err(),
            "7 chars"
        );
        assert!(
            fields::password(&Secret::new("éééééééé")).is_ok(),
            "8 chars, 16 bytes"
        );
        assert_eq!(
            fields::password(&Secret::new("x".repeat(1025))).unwrap_err(),
            "at most 1024 bytes"
        );
        assert!(fields::password(&Secret::new("x".repeat(1024))).is_ok());
        assert!(fields::email("a@b".into()).is_ok());
        for bad in ["", "a", "@b", "a@", "a@b@c", "a b@c", "a@b\n"] {
            assert!(fields::email(bad.into()).is_err(), "{bad:?}");
        }
        assert_eq!(
            fields::labels(vec!["a".into(), "b:c".into(), "a".into()]).unwrap(),
            ["a", "b:c"]
        );
        for bad in ["", "a b", "a,b", "\u{7f}"] {
            assert!(fields::labels(vec![bad.into()]).is_err(), "{bad:?}");
        }
        assert!(fields::labels((0..65).map(|n| n.to_string()).collect()).is_err());
        assert!(fields::display_name("Ada Lovelace".into()).is_ok());
        assert!(fields::display_name("a\u{0}b".into()).is_err());
        assert!(fields::phc("$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo").is_err());
    }

    #[tokio::test]
    async fn hashes_verify_and_record_their_parameters() {
        let h = Hasher::new(small());
        let pw = Secret::new("correct horse");
        let phc = h.hash(&pw).await.unwrap();
        assert!(phc.expose().starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(fields::phc(phc.expose()).is_ok());
        assert!(h.verify(&pw, Some(&phc)).await);
        assert!(!h.verify(&Secret::new("wrong horse"), Some(&phc)).await);
        assert!(!h.verify(&pw, None).await, "the dummy never matches");
        assert!(
            !h.verify(&pw, Some(&Secret::new("garbage"))).await,
            "a corrupt hash refuses"
        );
        assert!(h.is_current(&phc));
        let other = Hasher::new(argon2::Params::new(128, 1, 1, None).unwrap());
        assert!(!other.is_current(&phc));
        assert!(
            other.verify(&pw, Some(&phc)).await,
            "old parameters still verify"
        );
    }

    #[test]
    fn input_never_prints_the_password() {
        let input: UserInput =
            serde_json::from_str(r#"{"username": "a", "password": "hunter2hunter2"}"#).unwrap();
        assert!(!format!("{input:?}").contains("hunter2"));
        let cleared: UserInput = serde_json::from_str(r#"{"email": null}"#).unwrap();
        assert_eq!(cleared.email, Some(None));
        let absent: UserInput = serde_json::from_str("{}").unwrap();
        assert_eq!(absent.email, None);
    }
}
