//! The admin listener: health, readiness, metrics, and the JWKS upstreams
//! use to validate internal tokens.

use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;

/// The admin router.
pub fn router(current: Arc<ArcSwap<Runtime>>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
        .route(
            "/metrics",
            get(|| async {
                (
                    [("content-type", "text/plain; version=0.0.4")],
                    portcullis_core::telemetry::prometheus().render(),
                )
            }),
        )
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/oauth-authorization-server", get(discovery))
        .with_state(current)
}

async fn jwks(State(c): State<Arc<ArcSwap<Runtime>>>) -> impl IntoResponse {
    (
        [("cache-control", "public, max-age=300")],
        axum::Json(c.load().minter.jwks()),
    )
}

/// Minimal metadata so the service library can discover the JWKS of the
/// internal-token issuer like any other issuer.
async fn discovery(State(c): State<Arc<ArcSwap<Runtime>>>) -> impl IntoResponse {
    let rt = c.load();
    let iss = rt.minter.issuer().to_owned();
    axum::Json(
        serde_json::json!({ "issuer": iss, "jwks_uri": format!("{iss}/.well-known/jwks.json") }),
    )
}
