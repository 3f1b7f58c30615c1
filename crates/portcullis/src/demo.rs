//! The demo service `portcullis dev` runs behind the gateway: `/whoami`
//! accepts only the gateway's internal tokens (validated with the service
//! library) and shows who called; the demo web app (`/`, `/api/me`) is served
//! through the gateway's BFF and sees the person's access token.
//!
//! Two backend services complete the demo system: the customer service
//! ([`customers`]) and the security-system service ([`security`]).

pub mod customers;
pub mod security;
pub mod seed;

use axum::Router;
use axum::extract::Query;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::get;
use portcullis_service::{Authenticated, BearerAuth, Validator, ValidatorConfig};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// A demo service's SQLite file at `path` (created if missing).
async fn sqlite(path: &std::path::Path) -> Result<sqlx::SqlitePool, sqlx::Error> {
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await
}

/// The gateway BFF's client id at the IAM server.
pub const BFF_CLIENT: &str = "demo-bff";

/// The browser-login demo: a public client whose redirect URI is this
/// service's `/callback`, which shows the code and how to redeem it.
pub struct DemoLogin {
    /// The IAM server's issuer.
    pub issuer: String,
    /// The public client's id.
    pub client_id: String,
    /// The PKCE verifier of the printed authorization URL.
    pub verifier: String,
}

/// `/callback`: a plain-text page with the authorization response and the
/// `curl` that redeems the code (text/plain: nothing in it is markup).
fn callback_page(login: &DemoLogin, redirect_uri: &str, q: &HashMap<String, String>) -> Response {
    let mut text = String::new();
    if let Some(e) = q.get("error") {
        text.push_str(&format!(
            "The IAM server refused the login: {e}\n{}\n",
            q.get("error_description").map_or("", String::as_str)
        ));
    } else if let Some(code) = q.get("code") {
        text.push_str(&format!(
            "Signed in. The IAM server sent back an authorization code (state {:?}, iss {:?}).\n\n\
             Redeem it within 60 s (it works once):\n\n  curl -s -d grant_type=authorization_code -d client_id={} \\\n    \
             -d code={code} \\\n    -d redirect_uri={redirect_uri} \\\n    -d code_verifier={} \\\n    {}/oauth2/token\n",
            q.get("state").map_or("", String::as_str),
            q.get("iss").map_or("", String::as_str),
            login.client_id,
            login.verifier,
            login.issuer,
        ));
    } else {
        text.push_str("No authorization response in this URL.\n");
    }
    let mut resp = Response::new(axum::body::Body::from(text));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A static asset of the demo web app, with a CSP that allows only this
/// origin's scripts and styles.
fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = Response::new(axum::body::Body::from(body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; frame-ancestors 'none'; form-action 'self' http: https:",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// The demo web app the gateway's BFF serves: `/` and its assets (public),
/// and `/api/me`, which takes the person's access token from the IAM server
/// (audience `orders-api`, validated with the service library) and shows
/// what it says.
async fn web_app(iam_issuer: &str) -> Router {
    let validator = Validator::start(ValidatorConfig::new(iam_issuer, "orders-api")).await;
    let me = |Authenticated(p): Authenticated| async move {
        axum::Json(serde_json::json!({
            "service": "demo-api",
            "subject": p.subject,
            "client_id": p.client_id,
            "scopes": p.scopes,
            "token_id": p.token_id,
            "token_expires_at": p.expires_at,
            "token_issuer": p.claims.iss,
        }))
    };
    let api = Router::new()
        .route("/api/me", get(me).post(me))
        .layer(BearerAuth::new(validator, "orders-api"));
    Router::new()
        .route(
            "/",
            get(|| async {
                asset(
                    include_str!("../assets/app.html"),
                    "text/html; charset=utf-8",
                )
            }),
        )
        .route(
            "/app.js",
            get(|| async {
                asset(
                    include_str!("../assets/app.js"),
                    "text/javascript; charset=utf-8",
                )
            }),
        )
        .route(
            "/app.css",
            get(|| async { asset(include_str!("../assets/app.css"), "text/css; charset=utf-8") }),
        )
        .merge(api)
}

/// Serves `whoami` on `listener`, trusting internal tokens from
/// `gateway_issuer`, and, with `login`, the `/callback` page of the
/// browser-login demo.
pub async fn start_whoami(
    listener: tokio::net::TcpListener,
    gateway_issuer: String,
    login: Option<DemoLogin>,
) -> anyhow::Result<SocketAddr> {
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
        .layer(BearerAuth::new(validator, "whoami"));
    let bound = listener.local_addr()?;
    let mut open = Router::new().route("/healthz", get(|| async { "ok" }));
    if let Some(login) = &login {
        open = open.merge(web_app(&login.issuer).await);
    }
    if let Some(login) = login {
        let login = Arc::new(login);
        let redirect_uri = format!("http://{bound}/callback");
        open = open.route(
            "/callback",
            get(move |Query(q): Query<HashMap<String, String>>| {
                let (login, redirect_uri) = (login.clone(), redirect_uri.clone());
                async move { callback_page(&login, &redirect_uri, &q) }
            }),
        );
    }
    let app = open.merge(app);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(bound)
}
