//! Phase 3: authorize: the route's required scopes and roles.

use super::authn::Identity;
use crate::config::Route;

/// What is missing: the space-separated scopes or roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// Scopes the caller lacks (all required ones are named).
    Scopes(String),
    /// Roles the caller lacks.
    Roles(String),
}

/// Checks `who` against the route's requirements.
pub fn authorize(route: &Route, who: &Identity) -> Result<(), Denied> {
    if !route.require_scopes.iter().all(|s| who.scopes.contains(s)) {
        return Err(Denied::Scopes(route.require_scopes.join(" ")));
    }
    if !route.require_roles.iter().all(|r| who.roles.contains(r)) {
        return Err(Denied::Roles(route.require_roles.join(" ")));
    }
    Ok(())
}
