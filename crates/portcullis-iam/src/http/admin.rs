//! The admin API: clients, users and signing keys, behind a bearer admin token.
//!
//! ```text
//! GET    /admin/clients                     list
//! POST   /admin/clients                     create (201; secret shown once)
//! GET    /admin/clients/{id}                show
//! PATCH  /admin/clients/{id}                update the fields given
//! DELETE /admin/clients/{id}                delete (204; tokens revoked)
//! POST   /admin/clients/{id}/rotate-secret  new secret (shown once)
//! GET    /admin/keys                        keys and their states
//! POST   /admin/keys/rotate                 staged rotation (201)
//! GET    /admin/users                       list
//! POST   /admin/users                       create (201; optional initial password)
//! GET    /admin/users/{user}                show (`user`: id `u_…` or username)
//! PATCH  /admin/users/{user}                update the fields given
//! DELETE /admin/users/{user}                delete (204)
//! POST   /admin/users/{user}/password       set the password (204)
//! ```
//!
//! Password hashes are never returned.

use super::SharedState;
use crate::clients::{ClientError, ClientInput, ClientView};
use crate::keys::KeyRingError;
use crate::users::{UserError, UserInput, UserView};
use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use portcullis_core::ClientId;
use portcullis_core::jose::SigningAlgorithm;
use serde::Deserialize;
use serde_json::json;
use std::str::FromStr;

/// An admin API error: `{"error": .., "error_description": ..}`.
pub struct AdminError(StatusCode, &'static str, String);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let mut r = (
            self.0,
            Json(json!({ "error": self.1, "error_description": self.2 })),
        )
            .into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"portcullis-admin\""),
            );
        }
        r
    }
}

impl From<ClientError> for AdminError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Invalid(m) => Self(StatusCode::BAD_REQUEST, "invalid_request", m),
            ClientError::NotApplicable(m) => {
                Self(StatusCode::BAD_REQUEST, "invalid_request", m.into())
            }
            ClientError::NotFound => Self(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            ClientError::Conflict => Self(StatusCode::CONFLICT, "conflict", e.to_string()),
            ClientError::Store(e) => {
                tracing::error!(error = %e, "admin: store failed");
                Self(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "storage unavailable".into(),
                )
            }
            ClientError::Random => Self(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal error".into(),
            ),
        }
    }
}

impl From<KeyRingError> for AdminError {
    fn from(e: KeyRingError) -> Self {
        tracing::error!(error = %e, "admin: key operation failed");
        Self(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "key operation failed".into(),
        )
    }
}

fn bad_json(e: JsonRejection) -> AdminError {
    AdminError(StatusCode::BAD_REQUEST, "invalid_request", e.body_text())
}

fn client_id(id: &str) -> Result<ClientId, AdminError> {
    ClientId::from_str(id).map_err(|_| {
        AdminError(
            StatusCode::NOT_FOUND,
            "not_found",
            "no client with this id".into(),
        )
    })
}

async fn require_admin(State(s): State<SharedState>, req: Request, next: Next) -> Response {
    let Some(expected) = &s.admin_token else {
        return AdminError(
            StatusCode::SERVICE_UNAVAILABLE,
            "admin_disabled",
            "the admin API is disabled: no admin_token is configured".into(),
        )
        .into_response();
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    match presented {
        Some(t) if expected.ct_eq(t) => next.run(req).await,
        _ => {
            crate::audit::admin_auth_failed(req.uri().path());
            AdminError(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid admin bearer token is required".into(),
            )
            .into_response()
        }
    }
}

const ACTOR: &str = "admin-api";

async fn list_clients(State(s): State<SharedState>) -> Result<Response, AdminError> {
    let clients = s.clients.list().await.map_err(ClientError::from)?;
    let views: Vec<ClientView> = clients.iter().map(ClientView::from).collect();
    Ok(Json(json!({ "clients": views })).into_response())
}

async fn create_client(
    State(s): State<SharedState>,
    body: Result<Json<ClientInput>, JsonRejection>,
) -> Result<Response, AdminError> {
    let Json(input) = body.map_err(bad_json)?;
    let (client, secret) = s.clients.create(input, ACTOR).await?;
    let mut v = serde_json::to_value(ClientView::from(&client)).unwrap_or_default();
    if let Some(secret) = secret {
        v["client_secret"] = secret.expose().into();
    }
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(v),
    )
        .into_response())
}

async fn show_client(
    State(s): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    let id = client_id(&id)?;
    let c = s
        .clients
        .get(&id)
        .await
        .map_err(ClientError::from)?
        .ok_or(ClientError::NotFound)?;
    Ok(Json(ClientView::from(c.as_ref())).into_response())
}

async fn update_client(
    State(s): State<SharedState>,
    Path(id): Path<String>,
    body: Result<Json<ClientInput>, JsonRejection>,
) -> Result<Response, AdminError> {
    let id = client_id(&id)?;
    let Json(input) = body.map_err(bad_json)?;
    let c = s.clients.update(&id, input, ACTOR).await?;
    Ok(Json(ClientView::from(&c)).into_response())
}

async fn delete_client(
    State(s): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    s.clients.delete(&client_id(&id)?, ACTOR).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn rotate_secret(
    State(s): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    let id = client_id(&id)?;
    let secret = s.clients.rotate_secret(&id, ACTOR).await?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "client_id": id, "client_secret": secret.expose() })),
    )
        .into_response())
}

async fn list_keys(State(s): State<SharedState>) -> Response {
    Json(json!({ "keys": s.keys.list() })).into_response()
}

/// Body of `POST /admin/keys/rotate`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateInput {
    alg: Option<String>,
}

async fn rotate_keys(
    State(s): State<SharedState>,
    body: Result<Json<RotateInput>, JsonRejection>,
) -> Result<Response, AdminError> {
    // An empty body means "rotate to the configured algorithm".
    let input = match body {
        Ok(Json(i)) => i,
        Err(JsonRejection::MissingJsonContentType(_)) => RotateInput::default(),
        Err(e) => return Err(bad_json(e)),
    };
    let alg = match input.alg {
        None => s.signing_alg,
        Some(a) => SigningAlgorithm::from_str(&a)
            .map_err(|e| AdminError(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()))?,
    };
    let info = s.keys.rotate(alg).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

// ----- Users ---------------------------------------------------------------

impl From<UserError> for AdminError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::Invalid(m) => Self(StatusCode::BAD_REQUEST, "invalid_request", m),
            UserError::NotFound => Self(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            UserError::Conflict => Self(StatusCode::CONFLICT, "conflict", e.to_string()),
            UserError::Store(e) => ClientError::Store(e).into(),
            UserError::Internal(cause) => {
                tracing::error!(cause, "admin: user operation failed");
                Self(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "internal error".into(),
                )
            }
        }
    }
}

/// The user a path segment names: an id (`u_…`) or a username.
async fn find_user(s: &SharedState, user: &str) -> Result<crate::model::User, AdminError> {
    Ok(s.users
        .find(user)
        .await
        .map_err(UserError::from)?
        .ok_or(UserError::NotFound)?)
}

fn user_json(status: StatusCode, u: &crate::model::User) -> Response {
    (status, Json(UserView::from(u))).into_response()
}

async fn list_users(State(s): State<SharedState>) -> Result<Response, AdminError> {
    let users = s.users.list().await.map_err(UserError::from)?;
    let views: Vec<UserView> = users.iter().map(UserView::from).collect();
    Ok(Json(json!({ "users": views })).into_response())
}

async fn create_user(
    State(s): State<SharedState>,
    body: Result<Json<UserInput>, JsonRejection>,
) -> Result<Response, AdminError> {
    let Json(input) = body.map_err(bad_json)?;
    let u = s.users.create(input, ACTOR).await?;
    Ok(user_json(StatusCode::CREATED, &u))
}

async fn show_user(
    State(s): State<SharedState>,
    Path(user): Path<String>,
) -> Result<Response, AdminError> {
    Ok(user_json(StatusCode::OK, &find_user(&s, &user).await?))
}

async fn update_user(
    State(s): State<SharedState>,
    Path(user): Path<String>,
    body: Result<Json<UserInput>, JsonRejection>,
) -> Result<Response, AdminError> {
    let Json(input) = body.map_err(bad_json)?;
    let id = find_user(&s, &user).await?.id;
    let u = s.users.update(&id, input, ACTOR).await?;
    Ok(user_json(StatusCode::OK, &u))
}

async fn delete_user(
    State(s): State<SharedState>,
    Path(user): Path<String>,
) -> Result<Response, AdminError> {
    let id = find_user(&s, &user).await?.id;
    s.users.delete(&id, ACTOR).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Body of `POST /admin/users/{user}/password`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordInput {
    password: String,
}

async fn set_password(
    State(s): State<SharedState>,
    Path(user): Path<String>,
    body: Result<Json<PasswordInput>, JsonRejection>,
) -> Result<Response, AdminError> {
    let Json(input) = body.map_err(bad_json)?;
    let password = portcullis_core::Secret::new(input.password);
    let id = find_user(&s, &user).await?.id;
    s.users.set_password(&id, &password, ACTOR).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /admin/users/{user}/consents`: what the user approved for
/// third-party clients.
async fn list_consents(
    State(s): State<SharedState>,
    Path(user): Path<String>,
) -> Result<Response, AdminError> {
    let id = find_user(&s, &user).await?.id;
    let list = s
        .store
        .list_consents(id.as_str())
        .await
        .map_err(UserError::from)?;
    Ok(Json(json!({ "consents": list })).into_response())
}

/// `DELETE /admin/users/{user}/consents/{client}`: withdraws the approval
/// and revokes the user's grants (refresh and access tokens) to the client.
async fn revoke_consent(
    State(s): State<SharedState>,
    Path((user, client)): Path<(String, String)>,
) -> Result<Response, AdminError> {
    let id = find_user(&s, &user).await?.id;
    if s.store
        .revoke_consent(id.as_str(), &client, s.clock.now())
        .await
        .map_err(UserError::from)?
    {
        crate::audit::consent_revoked(id.as_str(), &client, ACTOR);
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(AdminError(
            StatusCode::NOT_FOUND,
            "not_found",
            "this user has no consent for this client".into(),
        ))
    }
}

impl From<crate::rbac::RoleError> for AdminError {
    fn from(e: crate::rbac::RoleError) -> Self {
        use crate::rbac::RoleError;
        match e {
            RoleError::Invalid(m) => Self(StatusCode::BAD_REQUEST, "invalid_request", m),
            RoleError::NotFound => Self(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            RoleError::Conflict => Self(StatusCode::CONFLICT, "conflict", e.to_string()),
            RoleError::Store(e) => UserError::from(e).into(),
        }
    }
}

async fn list_roles(State(s): State<SharedState>) -> Result<Response, AdminError> {
    let roles = s.roles.all().await.map_err(UserError::from)?;
    Ok(Json(json!({ "roles": *roles })).into_response())
}

async fn create_role(
    State(s): State<SharedState>,
    body: Result<Json<crate::rbac::RoleInput>, JsonRejection>,
) -> Result<Response, AdminError> {
    let Json(input) = body.map_err(bad_json)?;
    let role = s.roles.create(input).await?;
    Ok((StatusCode::CREATED, Json(role)).into_response())
}

async fn show_role(
    State(s): State<SharedState>,
    Path(name): Path<String>,
) -> Result<Response, AdminError> {
    Ok(Json(s.roles.get(&name).await?).into_response())
}

async fn update_role(
    State(s): State<SharedState>,
    Path(name): Path<String>,
    body: Result<Json<crate::rbac::RoleInput>, JsonRejection>,
) -> Result<Response, AdminError> {
    let Json(input) = body.map_err(bad_json)?;
    Ok(Json(s.roles.update(&name, input).await?).into_response())
}

async fn delete_role(
    State(s): State<SharedState>,
    Path(name): Path<String>,
) -> Result<Response, AdminError> {
    s.roles.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The admin routes, behind the admin-token check.
pub fn router(state: SharedState) -> Router<SharedState> {
    Router::new()
        .route("/admin/clients", get(list_clients).post(create_client))
        .route(
            "/admin/clients/{id}",
            get(show_client).patch(update_client).delete(delete_client),
        )
        .route("/admin/clients/{id}/rotate-secret", post(rotate_secret))
        .route("/admin/keys", get(list_keys))
        .route("/admin/keys/rotate", post(rotate_keys))
        .route("/admin/users", get(list_users).post(create_user))
        .route(
            "/admin/users/{user}",
            get(show_user).patch(update_user).delete(delete_user),
        )
        .route("/admin/users/{user}/password", post(set_password))
        .route("/admin/roles", get(list_roles).post(create_role))
        .route(
            "/admin/roles/{name}",
            get(show_role).patch(update_role).delete(delete_role),
        )
        .route("/admin/users/{user}/consents", get(list_consents))
        .route(
            "/admin/users/{user}/consents/{client}",
            axum::routing::delete(revoke_consent),
        )
        .route_layer(middleware::from_fn_with_state(state, require_admin))
}
