//! The demo service `portcullis dev` runs behind the gateway: it accepts
//! only the gateway's internal tokens (validated with the service library)
//! and shows who called.

use axum::Router;
use axum::routing::get;
use portcullis_service::{Authenticated, BearerAuth, Validator, ValidatorConfig};
use std::net::SocketAddr;

/// Starts `whoami` on `addr`, trusting internal tokens from `gateway_issuer`.
pub async fn start_whoami(addr: SocketAddr, gateway_issuer: String) -> anyhow::Result<SocketAddr> {
    let validator = Validator::start(
        ValidatorConfig::new(gateway_issuer, "whoami").dangerous_ignore_revocations(),
    )
    .await;
    let app = Router::new()
        .route(
            "/whoami",
            get(|Authenticated(p): Authenticated| async move {
                axum::Json(serde_json::json!({
                    "service": "whoami",
                    "caller": p.subject,
                    "client_id": p.client_id,
                    "scopes": p.scopes,
                    "roles": p.roles,
                    "authenticated_at_gateway_with": p.claims.extra.get("auth_method"),
                    "original_token_jti": p.claims.extra.get("orig_jti"),
                    "internal_token_issuer": p.claims.iss,
                }))
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .layer(BearerAuth::new(validator, "whoami"));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(bound)
}
