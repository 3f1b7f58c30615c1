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
    /// The route's policy (this action) denied.
    Policy(String),
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

/// Asks the policy decision point about `who` calling `route` with
/// `method` on `path`: principal from the identity, action the route's
/// `policy`, resource `Route::"<name>"` with the path, the path as routes
/// are matched (`match_path`: lower case, Unicode case mappings onto ASCII
/// folded) and the method (also in the context).
pub fn decide(
    store: &portcullis_policy::PolicyStore,
    action: &str,
    route: &Route,
    who: &Identity,
    method: &http::Method,
    path: &str,
) -> Result<(), Denied> {
    let principal = portcullis_policy::Principal {
        id: who.subject.clone(),
        client_id: who
            .client_id
            .clone()
            .or_else(|| who.consumer.clone())
            .unwrap_or_default(),
        roles: who.roles.clone(),
        scopes: who.scopes.clone(),
        actors: who.actors.clone(),
        auth_method: who.method.to_owned(),
    };
    let match_path = super::route::folded(path);
    let resource = portcullis_policy::Resource::new("Route", route.name.as_str())
        .attr("path", path)
        .attr("match_path", match_path.as_str())
        .attr("method", method.as_str());
    let mut context = serde_json::Map::new();
    context.insert("path".into(), path.into());
    context.insert("match_path".into(), match_path.into());
    context.insert("method".into(), method.as_str().into());
    if store
        .decide(&principal, action, &resource, &context)
        .allowed
    {
        Ok(())
    } else {
        Err(Denied::Policy(action.to_owned()))
    }
}
