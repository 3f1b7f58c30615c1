//! The demo **security-system service**: alarm systems at the customers'
//! locations, which can be armed and disarmed, in a SQLite file.
//!
//! - `GET /systems`: the systems at the locations the caller works at;
//! - `POST /systems/{id}/arm`, `POST /systems/{id}/disarm`: allowed by the
//!   Cedar policies (`ArmSystem`, e.g. the `operator` role), 403 otherwise.
//!
//! It accepts the person's access token from the IAM server (audience
//! [`AUDIENCE`], forwarded by the gateway's BFF, or sent directly by a
//! client) and the gateway's internal tokens (audience [`GATEWAY_AUDIENCE`],
//! API-key and bearer routes). To learn where the caller works it asks the
//! customer service: with an IAM token, by **token exchange** (the caller's
//! token for one to `customers-api` naming this service in `act`); with a
//! gateway token, which the IAM server cannot exchange, with its own
//! client-credentials token and a directory look-up. Every answer carries
//! the `chain`: the claims each hop saw, decoded (never a token).

use super::customers;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use portcullis_service::http::bearer_token;
use portcullis_service::policy::{PolicyGuard, PolicyStore, Resource};
use portcullis_service::{Authenticated, Principal, Rejection, TokenSource, Validator};
use serde_json::{Map, Value, json};
use sqlx::SqlitePool;
use std::net::SocketAddr;
use std::sync::Arc;

/// The audience of IAM tokens for this service.
pub const AUDIENCE: &str = "security-api";
/// The gateway's upstream name for this service: its internal tokens' `aud`.
pub const GATEWAY_AUDIENCE: &str = "security";
/// Read systems.
pub const READ_SCOPE: &str = "systems:read";
/// Arm and disarm systems.
pub const ARM_SCOPE: &str = "systems:arm";

/// An alarm system: `(id, location id, name)`.
pub type SystemSeed = (&'static str, &'static str, &'static str);

/// Where the service finds its peers.
pub struct Peers {
    /// Validates IAM access tokens for [`AUDIENCE`].
    pub iam: Arc<Validator>,
    /// The IAM server's issuer (tells which path a caller came by).
    pub iam_issuer: String,
    /// Validates the gateway's internal tokens for [`GATEWAY_AUDIENCE`].
    pub gateway: Arc<Validator>,
    /// This service's client at the IAM server (exchange, client credentials).
    pub tokens: Arc<TokenSource>,
    /// The customer service's base URL.
    pub customers_url: String,
    /// The Cedar policies.
    pub policies: Arc<PolicyStore>,
}

struct App {
    db: SqlitePool,
    peers: Peers,
    guard: PolicyGuard,
    http: reqwest::Client,
}

/// The caller's bearer token, kept for the exchange.
#[derive(Clone)]
struct CallerToken(Arc<str>);

/// Opens (creating) the SQLite file at `path` and adds the seed systems
/// that are missing (existing ones keep their state).
pub async fn open(
    path: &std::path::Path,
    systems: &[SystemSeed],
) -> Result<SqlitePool, sqlx::Error> {
    let pool = super::sqlite(path).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS systems (id TEXT PRIMARY KEY, location_id TEXT NOT NULL, \
         name TEXT NOT NULL, armed INTEGER NOT NULL DEFAULT 0, updated_at INTEGER, updated_by TEXT)",
    )
    .execute(&pool)
    .await?;
    for (id, location, name) in systems {
        sqlx::query("INSERT OR IGNORE INTO systems (id, location_id, name) VALUES (?, ?, ?)")
            .bind(id)
            .bind(location)
            .bind(name)
            .execute(&pool)
            .await?;
    }
    Ok(pool)
}

/// A refusal or failure, with the chain seen so far.
struct ApiError {
    status: StatusCode,
    error: &'static str,
    description: String,
    chain: Vec<Value>,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            chain: Vec::new(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": self.error,
            "error_description": self.description,
            "chain": self.chain,
        });
        (self.status, Json(body)).into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "security service: database error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the systems database failed",
        )
    }
}

/// Validates the bearer token as an IAM token, else as a gateway internal
/// token; puts the principal and the token into the extensions.
async fn authenticate(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let token = match bearer_token(req.headers()) {
        Ok(t) => t.to_owned(),
        Err(r) => return r.into_response_for("security"),
    };
    let principal = match app.peers.iam.validate(&token).await {
        Ok(p) => p,
        Err(iam_err) => match app.peers.gateway.validate(&token).await {
            Ok(p) => p,
            Err(_) => return Rejection::from(iam_err).into_response_for("security"),
        },
    };
    req.extensions_mut().insert(principal);
    req.extensions_mut().insert(CallerToken(Arc::from(token)));
    next.run(req).await
}

/// The hop this service is: the claims it validated and how they came.
fn own_hop(app: &App, p: &Principal) -> Value {
    let via = if p.claims.iss == app.peers.iam_issuer {
        if p.client_id == super::BFF_CLIENT {
            "the person's access token, forwarded by the gateway's BFF"
        } else {
            "an IAM access token, sent directly"
        }
    } else {
        "the gateway's internal token (identity propagation)"
    };
    json!({"service": "security", "received": via, "claims": p.claims, "actors": p.actors})
}

/// Asks the customer service where the caller works; returns its answer
/// and the hops (this one, the customer service's).
async fn locations(app: &App, p: &Principal, token: &str) -> Result<(Value, Vec<Value>), ApiError> {
    let mut chain = vec![own_hop(app, p)];
    let fail = |chain: &Vec<Value>, status, error, why: String| ApiError {
        status,
        error,
        description: why,
        chain: chain.clone(),
    };
    let (url, bearer, how) = if p.claims.iss == app.peers.iam_issuer {
        let t = app
            .peers
            .tokens
            .exchange(token, customers::AUDIENCE, &[customers::READ_SCOPE])
            .await
            .map_err(|e| {
                fail(
                    &chain,
                    StatusCode::BAD_GATEWAY,
                    "token_exchange_failed",
                    format!("exchanging the caller's token for the customer service: {e}"),
                )
            })?;
        (
            format!("{}/locations", app.peers.customers_url),
            t,
            "token exchange (RFC 8693): the caller's token for one to customers-api, act = security-service",
        )
    } else {
        let t = app
            .peers
            .tokens
            .token(Some(customers::AUDIENCE), &[customers::DIRECTORY_SCOPE])
            .await
            .map_err(|e| {
                fail(
                    &chain,
                    StatusCode::BAD_GATEWAY,
                    "token_request_failed",
                    format!("getting a token for the customer service: {e}"),
                )
            })?;
        let mut url =
            url::Url::parse(&format!("{}/locations", app.peers.customers_url)).map_err(|e| {
                fail(
                    &chain,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    e.to_string(),
                )
            })?;
        url.query_pairs_mut().append_pair("subject", &p.subject);
        (
            url.to_string(),
            t,
            "client credentials (the service's own token) and a directory look-up of the subject the gateway vouched for",
        )
    };
    let resp = app
        .http
        .get(url)
        .bearer_auth(bearer.token.expose())
        .send()
        .await
        .map_err(|e| {
            fail(
                &chain,
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                format!("the customer service did not answer: {e}"),
            )
        })?;
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    let mut hop = answer["seen"].clone();
    if let Some(h) = hop.as_object_mut() {
        h.insert("received".into(), Value::from(how));
    }
    chain.push(hop);
    if !status.is_success() {
        return Err(fail(
            &chain,
            StatusCode::BAD_GATEWAY,
            "upstream_refused",
            format!(
                "the customer service answered {status}: {}",
                answer["error_description"]
            ),
        ));
    }
    Ok((answer, chain))
}

struct System {
    id: String,
    location: String,
    name: String,
    armed: bool,
    updated_at: Option<i64>,
    updated_by: Option<String>,
}

type SystemRow = (String, String, String, i64, Option<i64>, Option<String>);

fn system(r: SystemRow) -> System {
    System {
        id: r.0,
        location: r.1,
        name: r.2,
        armed: r.3 != 0,
        updated_at: r.4,
        updated_by: r.5,
    }
}

fn view(s: &System, names: &std::collections::HashMap<String, String>) -> Value {
    json!({
        "id": s.id,
        "name": s.name,
        "location": {"id": s.location, "name": names.get(&s.location)},
        "armed": s.armed,
        "updated_at": s.updated_at,
        "updated_by": s.updated_by,
    })
}

fn context(answer: &Value) -> Map<String, Value> {
    let ids: Vec<Value> = answer["locations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["id"].as_str().map(Value::from))
        .collect();
    let mut m = Map::new();
    m.insert("locations".into(), Value::Array(ids));
    m
}

fn resource(s: &System) -> Resource {
    Resource::new("SecuritySystem", &s.id).attr("location", s.location.as_str())
}

async fn list(
    State(app): State<Arc<App>>,
    Authenticated(p): Authenticated,
    axum::Extension(token): axum::Extension<CallerToken>,
) -> Result<Json<Value>, ApiError> {
    let (answer, chain) = locations(&app, &p, &token.0).await?;
    let ctx = context(&answer);
    let names = customers::location_names(&answer);
    let rows: Vec<SystemRow> = sqlx::query_as(
        "SELECT id, location_id, name, armed, updated_at, updated_by FROM systems ORDER BY id",
    )
    .fetch_all(&app.db)
    .await?;
    let systems: Vec<Value> = rows
        .into_iter()
        .map(system)
        .filter(|s| {
            app.guard
                .decide(&p, "ReadSystem", &resource(s), &ctx)
                .allowed
        })
        .map(|s| view(&s, &names))
        .collect();
    Ok(Json(json!({
        "caller": answer["employee"],
        "systems": systems,
        "chain": chain,
    })))
}

async fn set_armed(
    app: &App,
    p: &Principal,
    token: &str,
    id: &str,
    armed: bool,
) -> Result<Json<Value>, ApiError> {
    let (answer, chain) = locations(app, p, token).await?;
    let ctx = context(&answer);
    let row: Option<SystemRow> = sqlx::query_as(
        "SELECT id, location_id, name, armed, updated_at, updated_by FROM systems WHERE id = ?",
    )
    .bind(id)
    .fetch_optional(&app.db)
    .await?;
    let found = row.map(system).filter(|s| {
        app.guard
            .decide(p, "ReadSystem", &resource(s), &ctx)
            .allowed
    });
    let Some(s) = found else {
        return Err(ApiError {
            chain,
            ..ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such system at your locations",
            )
        });
    };
    if let Err(denied) = app.guard.check(p, "ArmSystem", &resource(&s), &ctx) {
        return Err(ApiError {
            chain,
            ..ApiError::new(StatusCode::FORBIDDEN, "access_denied", denied.to_string())
        });
    }
    let who = answer["employee"]["name"]
        .as_str()
        .unwrap_or(&p.subject)
        .to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    sqlx::query("UPDATE systems SET armed = ?, updated_at = ?, updated_by = ? WHERE id = ?")
        .bind(i64::from(armed))
        .bind(now)
        .bind(&who)
        .bind(id)
        .execute(&app.db)
        .await?;
    tracing::info!(system = id, armed, by = %p.subject, "security system changed");
    let s = System {
        armed,
        updated_at: Some(now),
        updated_by: Some(who),
        ..s
    };
    Ok(Json(json!({
        "system": view(&s, &customers::location_names(&answer)),
        "chain": chain,
    })))
}

async fn arm(
    State(app): State<Arc<App>>,
    Authenticated(p): Authenticated,
    axum::Extension(token): axum::Extension<CallerToken>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_armed(&app, &p, &token.0, &id, true).await
}

async fn disarm(
    State(app): State<Arc<App>>,
    Authenticated(p): Authenticated,
    axum::Extension(token): axum::Extension<CallerToken>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_armed(&app, &p, &token.0, &id, false).await
}

/// Serves the security-system service on `listener`.
pub async fn start(
    listener: tokio::net::TcpListener,
    db: SqlitePool,
    peers: Peers,
) -> std::io::Result<SocketAddr> {
    let guard = PolicyGuard::new(peers.policies.clone());
    let app = Arc::new(App {
        db,
        peers,
        guard,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?,
    });
    let api = Router::new()
        .route("/systems", get(list))
        .route("/systems/{id}/arm", post(arm))
        .route("/systems/{id}/disarm", post(disarm))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            authenticate,
        ))
        .with_state(app);
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(api);
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(addr)
}
