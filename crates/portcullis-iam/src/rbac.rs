//! Roles (RBAC): a role grants scopes, and is held by users who list it, by
//! members of its groups and by its clients. Tokens carry the roles their
//! subject holds, and a scope that some role grants (a *governed* scope) is
//! only issued to a holder of such a role; scopes no role mentions are
//! issued as before (by the client's allowed scopes alone).
//!
//! Roles are read from the store and cached for [`CACHE_TTL`]; changes made
//! through this registry (the admin API) take effect at once here, other
//! replicas see them within the TTL.

use crate::model::{Role, User};
use crate::store::{Store, StoreError};
use portcullis_core::{Clock, Scope};
use serde::Deserialize;
use std::collections::{BTreeSet, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the role list is cached.
pub const CACHE_TTL: Duration = Duration::from_secs(5);

/// Why a role change was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoleError {
    /// Invalid input; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// No such role.
    #[error("no role with this name")]
    NotFound,
    /// The name is taken.
    #[error("a role with this name already exists")]
    Conflict,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A role as the admin API receives it (absent fields keep their value on
/// update).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleInput {
    /// Name (create only).
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Scopes granted.
    pub scopes: Option<Vec<String>>,
    /// Groups whose members hold it.
    pub groups: Option<Vec<String>>,
    /// Clients that hold it.
    pub clients: Option<Vec<String>>,
}

/// What a subject holds: its roles and the scopes they decide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// Role names, sorted (what tokens carry in `roles`).
    pub roles: Vec<String>,
    governed: HashSet<String>,
    granted: HashSet<String>,
}

impl Held {
    /// Whether `scope` may be issued: no role governs it, or a held role
    /// grants it.
    pub fn allows(&self, scope: &str) -> bool {
        !self.governed.contains(scope) || self.granted.contains(scope)
    }

    /// The first scope of `scope` (space-separated) that may not be issued.
    pub fn refused<'a>(&self, scope: &'a str) -> Option<&'a str> {
        scope
            .split(' ')
            .filter(|s| !s.is_empty())
            .find(|s| !self.allows(s))
    }

    /// `scope` without the scopes that may not be issued.
    pub fn filter(&self, scope: &str) -> String {
        scope
            .split(' ')
            .filter(|s| !s.is_empty() && self.allows(s))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn held(all: &[Role], holds: impl Fn(&Role) -> bool, direct: &[String]) -> Held {
    let mut roles: BTreeSet<String> = direct.iter().cloned().collect();
    let mut governed = HashSet::new();
    let mut granted = HashSet::new();
    for r in all {
        governed.extend(r.scopes.iter().cloned());
        if holds(r) || direct.contains(&r.name) {
            roles.insert(r.name.clone());
            granted.extend(r.scopes.iter().cloned());
        }
    }
    Held {
        roles: roles.into_iter().collect(),
        governed,
        granted,
    }
}

/// Roles, cached.
pub struct RoleRegistry {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// The role list and when it was read; lock-free to read (every token
    /// issuance looks at it).
    cache: arc_swap::ArcSwapOption<(Arc<Vec<Role>>, Instant)>,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

fn list(
    field: &str,
    v: Vec<String>,
    check: impl Fn(&str) -> bool,
) -> Result<Vec<String>, RoleError> {
    let mut out: Vec<String> = Vec::with_capacity(v.len());
    for s in v {
        if !check(&s) {
            return Err(RoleError::Invalid(format!("{field}: {s:?} is not valid")));
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

impl RoleRegistry {
    /// A registry over `store`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            cache: arc_swap::ArcSwapOption::empty(),
        }
    }

    /// Every role (cached for [`CACHE_TTL`]).
    pub async fn all(&self) -> Result<Arc<Vec<Role>>, StoreError> {
        if let Some(cached) = self.cache.load().as_deref()
            && cached.1.elapsed() < CACHE_TTL
        {
            return Ok(cached.0.clone());
        }
        let roles = Arc::new(self.store.list_roles().await?);
        self.cache
            .store(Some(Arc::new((roles.clone(), Instant::now()))));
        Ok(roles)
    }

    async fn invalidate(&self) {
        self.cache.store(None);
    }

    /// What a user holds: the roles they list, and those of their groups.
    pub async fn for_user(&self, user: &User) -> Result<Held, StoreError> {
        let all = self.all().await?;
        Ok(held(
            &all,
            |r| r.groups.iter().any(|g| user.profile.groups.contains(g)),
            &user.profile.roles,
        ))
    }

    /// What a client holds (for its own client-credentials tokens).
    pub async fn for_client(&self, client_id: &str) -> Result<Held, StoreError> {
        let all = self.all().await?;
        Ok(held(
            &all,
            |r| r.clients.iter().any(|c| c == client_id),
            &[],
        ))
    }

    /// A role by name.
    pub async fn get(&self, name: &str) -> Result<Role, RoleError> {
        self.store
            .list_roles()
            .await?
            .into_iter()
            .find(|r| r.name == name)
            .ok_or(RoleError::NotFound)
    }

    fn apply(mut role: Role, input: RoleInput) -> Result<Role, RoleError> {
        if let Some(d) = input.description {
            if d.chars().count() > 256 {
                return Err(RoleError::Invalid(
                    "description: at most 256 characters".into(),
                ));
            }
            role.description = d;
        }
        if let Some(v) = input.scopes {
            role.scopes = list("scopes", v, |s| Scope::from_str(s).is_ok())?;
        }
        if let Some(v) = input.groups {
            role.groups = list("groups", v, valid_name)?;
        }
        if let Some(v) = input.clients {
            role.clients = list("clients", v, |s| {
                s.parse::<portcullis_core::ClientId>().is_ok()
            })?;
        }
        Ok(role)
    }

    /// Creates a role.
    pub async fn create(&self, input: RoleInput) -> Result<Role, RoleError> {
        let name = input.name.clone().unwrap_or_default();
        if !valid_name(&name) {
            return Err(RoleError::Invalid(
                "name: 1 to 64 of A-Z a-z 0-9 . _ - :".into(),
            ));
        }
        let now = self.clock.now();
        let role = Self::apply(
            Role {
                name,
                description: String::new(),
                scopes: Vec::new(),
                groups: Vec::new(),
                clients: Vec::new(),
                created_at: now,
                updated_at: now,
            },
            RoleInput {
                name: None,
                ..input
            },
        )?;
        match self.store.create_role(&role).await {
            Err(StoreError::Conflict) => return Err(RoleError::Conflict),
            r => r?,
        }
        self.invalidate().await;
        crate::audit::role_changed(&role.name, "create");
        Ok(role)
    }

    /// Changes the fields given.
    pub async fn update(&self, name: &str, input: RoleInput) -> Result<Role, RoleError> {
        if input.name.as_deref().is_some_and(|n| n != name) {
            return Err(RoleError::Invalid("name: a role cannot be renamed".into()));
        }
        let mut role = Self::apply(self.get(name).await?, input)?;
        role.updated_at = self.clock.now();
        if !self.store.update_role(&role).await? {
            return Err(RoleError::NotFound);
        }
        self.invalidate().await;
        crate::audit::role_changed(name, "update");
        Ok(role)
    }

    /// Deletes a role.
    pub async fn delete(&self, name: &str) -> Result<(), RoleError> {
        if !self.store.delete_role(name).await? {
            return Err(RoleError::NotFound);
        }
        self.invalidate().await;
        crate::audit::role_changed(name, "delete");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str, scopes: &[&str], groups: &[&str], clients: &[&str]) -> Role {
        let v = |x: &[&str]| x.iter().map(|s| (*s).to_owned()).collect();
        Role {
            name: name.into(),
            description: String::new(),
            scopes: v(scopes),
            groups: v(groups),
            clients: v(clients),
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn governed_scopes_need_a_role_that_grants_them() {
        let all = [
            role("operator", &["systems:arm"], &["ops"], &[]),
            role("auditor", &["audit:read"], &[], &["audit-svc"]),
        ];
        let direct = vec!["viewer".to_owned()];
        let ops = held(&all, |r| r.groups.contains(&"ops".to_owned()), &direct);
        assert_eq!(ops.roles, ["operator", "viewer"]);
        assert!(ops.allows("systems:arm") && ops.allows("openid") && !ops.allows("audit:read"));
        assert_eq!(
            ops.filter("openid systems:arm audit:read"),
            "openid systems:arm"
        );
        assert_eq!(ops.refused("openid audit:read"), Some("audit:read"));
        let svc = held(&all, |r| r.clients.contains(&"audit-svc".to_owned()), &[]);
        assert_eq!(svc.roles, ["auditor"]);
        assert!(svc.allows("audit:read") && !svc.allows("systems:arm"));
        let direct_role = held(&all, |_| false, &["operator".to_owned()]);
        assert!(
            direct_role.allows("systems:arm"),
            "a role listed on the user"
        );
    }
}
