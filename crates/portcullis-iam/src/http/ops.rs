//! Discovery (RFC 8414 / OIDC Discovery), JWKS, health, readiness, metrics.

use super::{SharedState, paths};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use portcullis_core::jose::SigningAlgorithm;
use serde_json::json;

/// Authorization server metadata. Lists only what is implemented.
pub async fn discovery(State(s): State<SharedState>) -> Response {
    let mut auth_methods = vec![
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    ];
    // Certificate methods only when the listener asks for certificates.
    if s.mtls {
        auth_methods.extend([
            crate::mtls::TLS_CLIENT_AUTH,
            crate::mtls::SELF_SIGNED_TLS_CLIENT_AUTH,
        ]);
    }
    let mut token_auth_methods = auth_methods.clone();
    token_auth_methods.push("none");
    let assertion_algs = [
        "ES256", "ES384", "EdDSA", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    ];
    let signing_algs: Vec<&str> = SigningAlgorithm::ALL.iter().map(|a| a.as_str()).collect();
    let mut body = json!({
        "issuer": s.issuer,
        "token_endpoint": s.issuer.join(paths::TOKEN),
        "jwks_uri": s.issuer.join(paths::JWKS),
        "introspection_endpoint": s.issuer.join(paths::INTROSPECT),
        "revocation_endpoint": s.issuer.join(paths::REVOKE),
        "authorization_endpoint": s.issuer.join(paths::AUTHORIZE),
        "userinfo_endpoint": s.issuer.join(paths::USERINFO),
        "end_session_endpoint": s.issuer.join(paths::END_SESSION),
        "grant_types_supported": [
            "client_credentials",
            "authorization_code",
            "refresh_token",
            crate::exchange::GRANT_TYPE,
        ],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "prompt_values_supported": ["none", "login", "consent"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email"],
        "claims_supported": [
            "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "azp", "at_hash", "sid",
            "amr", "name", "preferred_username", "email", "email_verified",
        ],
        "token_endpoint_auth_methods_supported": token_auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "access_token_signing_alg_values_supported": signing_algs,
        "portcullis_revocations_endpoint": s.issuer.join(paths::REVOCATIONS),
    });
    if let (true, Some(obj)) = (s.mtls, body.as_object_mut()) {
        // RFC 8705 §3.3. One listener serves both, so no mtls_endpoint_aliases.
        obj.insert(
            "tls_client_certificate_bound_access_tokens".into(),
            true.into(),
        );
    }
    let mut resp = Json(body).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

/// The JWK Set: public keys of every published key.
pub async fn jwks(State(s): State<SharedState>) -> Response {
    let body = s.keys.snapshot().jwks_json().to_string();
    let cache = format!("public, max-age={}", s.jwks_max_age);
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_str(&cache).unwrap_or(HeaderValue::from_static("no-cache")),
            ),
        ],
        body,
    )
        .into_response()
}

/// Liveness: the process answers.
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the database answers and a key can sign.
pub async fn readyz(State(s): State<SharedState>) -> Response {
    if let Err(e) = s.store.ping().await {
        tracing::warn!(error = %e, "readiness: database unavailable");
        return (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response();
    }
    if s.keys.snapshot().signer(s.clock.now()).is_none() {
        return (StatusCode::SERVICE_UNAVAILABLE, "no active signing key").into_response();
    }
    "ready".into_response()
}

/// Prometheus text exposition.
pub async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::handle().render(),
    )
        .into_response()
}

/// JSON 404.
pub async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "error": "not_found" }))).into_response()
}
