//! Example resource server: an inventory service that accepts only tokens
//! from the configured issuer for audience `inventory-api`, with per-route
//! scopes.
//!
//! ```sh
//! PORTCULLIS_ISSUER=http://127.0.0.1:9000 cargo run -p portcullis-service --example inventory
//! ```
//! Listens on `INVENTORY_LISTEN` (default 127.0.0.1:9101).

use axum::Router;
use axum::routing::get;
use portcullis_service::{Authenticated, BearerAuth, RequireScopes, Validator, ValidatorConfig};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let issuer =
        std::env::var("PORTCULLIS_ISSUER").unwrap_or_else(|_| "http://127.0.0.1:9000".into());
    let listen = std::env::var("INVENTORY_LISTEN").unwrap_or_else(|_| "127.0.0.1:9101".into());
    let validator = Validator::start(ValidatorConfig::new(issuer, "inventory-api")).await;

    let read = Router::new()
        .route(
            "/items",
            get(|Authenticated(p): Authenticated| async move {
                axum::Json(json!({
                    "items": [{"sku": "A-1", "qty": 12}, {"sku": "B-7", "qty": 3}],
                    "served_to": p.client_id,
                }))
            }),
        )
        .route_layer(RequireScopes::new(["inventory:read"]));
    let write = Router::new()
        .route(
            "/items/reserve",
            axum::routing::post(|Authenticated(p): Authenticated| async move {
                axum::Json(json!({ "reserved": true, "by": p.client_id }))
            }),
        )
        .route_layer(RequireScopes::new(["inventory:write"]));
    let app = read
        .merge(write)
        .layer(BearerAuth::new(validator, "inventory"));

    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tracing::info!(%listen, "inventory service listening");
    axum::serve(listener, app).await?;
    Ok(())
}
