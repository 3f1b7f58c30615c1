//! Resource-level authorization in handlers: a [`PolicyGuard`] asks the
//! Cedar policies (see `portcullis-policy`) whether the caller — the token's
//! subject, and the services in its `act` chain — may perform an action on
//! a resource the handler has loaded.
//!
//! ```ignore
//! async fn arm(Authenticated(p): Authenticated, State(s): State<App>, Path(id): Path<String>)
//!     -> Result<Json<Status>, Denied>
//! {
//!     let system = s.db.system(&id).await?;
//!     let resource = Resource::new("SecuritySystem", &id).attr("location", &system.location);
//!     s.guard.check(&p, "ArmSystem", &resource, context)?;
//!     // … allowed
//! }
//! ```

use crate::principal::Principal;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
pub use portcullis_policy::{Decision, PolicyError, PolicyStore, Resource};
use serde_json::{Map, Value};
use std::sync::Arc;

/// A refusal by the policies: 403 `access_denied`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the policy does not allow {action} on {resource}")]
pub struct Denied {
    /// The action asked about.
    pub action: String,
    /// `Type::"id"` of the resource.
    pub resource: String,
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": "access_denied",
            "error_description": self.to_string(),
        });
        (StatusCode::FORBIDDEN, Json(body)).into_response()
    }
}

/// Asks the policy store about a validated principal.
#[derive(Debug, Clone)]
pub struct PolicyGuard {
    store: Arc<PolicyStore>,
}

impl PolicyGuard {
    /// A guard over `store` (share it; call [`PolicyStore::watch`] on it to
    /// pick up changed files).
    pub fn new(store: Arc<PolicyStore>) -> Self {
        Self { store }
    }

    /// The policy principal of a validated token: subject, client, roles,
    /// scopes and the acting services of its `act` chain.
    pub fn principal(p: &Principal) -> portcullis_policy::Principal {
        portcullis_policy::Principal {
            id: p.subject.clone(),
            client_id: p.client_id.clone(),
            roles: p.roles.clone(),
            scopes: p.scopes.clone(),
            actors: p.actors.iter().map(|a| a.subject.clone()).collect(),
            auth_method: "jwt".into(),
        }
    }

    /// The full decision (allowed or not, deciding policies, errors).
    pub fn decide(
        &self,
        who: &Principal,
        action: &str,
        resource: &Resource,
        context: &Map<String, Value>,
    ) -> Decision {
        self.store
            .decide(&Self::principal(who), action, resource, context)
    }

    /// `Ok` if allowed, else [`Denied`] (a 403 response).
    pub fn check(
        &self,
        who: &Principal,
        action: &str,
        resource: &Resource,
        context: &Map<String, Value>,
    ) -> Result<(), Denied> {
        if self.decide(who, action, resource, context).allowed {
            Ok(())
        } else {
            Err(Denied {
                action: action.to_owned(),
                resource: format!("{}::{:?}", resource.kind, resource.id),
            })
        }
    }
}
