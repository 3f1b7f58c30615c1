//! Example client: an orders service that calls the inventory service with
//! its own client-credentials token, fetched, cached and refreshed by the
//! library.
//!
//! ```sh
//! ORDERS_CLIENT_ID=orders ORDERS_CLIENT_SECRET=pcs_… \
//!   cargo run -p portcullis-service --example orders
//! curl -s http://127.0.0.1:9102/orders/42
//! ```

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use portcullis_core::Secret;
use portcullis_service::{
    BearerLayer, BearerService, ClientCredentials, TokenSource, TokenSourceConfig,
};
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

#[derive(Clone)]
struct App {
    inventory: BearerService<reqwest::Client>,
    inventory_url: String,
}

async fn order(
    State(app): State<App>,
    Path(id): Path<u64>,
) -> Result<axum::Json<Value>, (StatusCode, String)> {
    let url = format!("{}/items", app.inventory_url);
    let req = reqwest::Request::new(
        reqwest::Method::GET,
        url.parse()
            .map_err(|_| (StatusCode::INTERNAL_SERVER_ERROR, "bad url".into()))?,
    );
    let resp = app
        .inventory
        .oneshot(req)
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))?;
    let status = resp.status();
    let stock: Value = resp.json().await.unwrap_or(Value::Null);
    Ok(axum::Json(
        json!({ "order": id, "inventory_status": status.as_u16(), "stock": stock }),
    ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let issuer = env("PORTCULLIS_ISSUER", "http://127.0.0.1:9000");
    let tokens = Arc::new(TokenSource::new(TokenSourceConfig::new(
        format!("{issuer}/oauth2/token"),
        ClientCredentials::Secret {
            client_id: env("ORDERS_CLIENT_ID", "orders"),
            secret: Secret::new(
                std::env::var("ORDERS_CLIENT_SECRET").map_err(|_| "set ORDERS_CLIENT_SECRET")?,
            ),
        },
    )));
    let inventory = tower::ServiceBuilder::new()
        .layer(BearerLayer::new(
            tokens,
            Some("inventory-api"),
            &["inventory:read"],
        ))
        .service(reqwest::Client::new());
    let app = App {
        inventory,
        inventory_url: env("INVENTORY_URL", "http://127.0.0.1:9101"),
    };
    let listen = env("ORDERS_LISTEN", "127.0.0.1:9102");
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tracing::info!(%listen, "orders service listening");
    axum::serve(
        listener,
        Router::new()
            .route("/orders/{id}", get(order))
            .with_state(app),
    )
    .await?;
    Ok(())
}
