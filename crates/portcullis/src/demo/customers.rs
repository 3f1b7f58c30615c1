//! The demo **customer service**: customers, their locations, and the
//! employees (people, API clients, gateway consumers) who work for them, in
//! a SQLite file seeded at start. It accepts only IAM access tokens for
//! [`AUDIENCE`], validated with the service library, and answers with the
//! claims it saw (decoded, never the token) so the demo can show the chain.
//!
//! - `GET /customers/me`: the caller's customer and employee record;
//! - `GET /locations`: the locations of the caller's customer (scope
//!   [`READ_SCOPE`]); with `?subject=…`, those of another principal, for a
//!   service's own token with [`DIRECTORY_SCOPE`] and no `act` (the
//!   security service asking about a caller the gateway vouched for).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use portcullis_service::{Authenticated, BearerAuth, Principal, Validator, ValidatorConfig};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::SqlitePool;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

/// The audience of the customer service's tokens.
pub const AUDIENCE: &str = "customers-api";
/// Read the caller's own customer data.
pub const READ_SCOPE: &str = "customers:read";
/// Look up any principal's customer (trusted services only).
pub const DIRECTORY_SCOPE: &str = "customers:directory";

/// A customer, with its locations.
pub struct CustomerSeed {
    /// Id.
    pub id: &'static str,
    /// Name.
    pub name: &'static str,
    /// `(id, name)` of each location.
    pub locations: &'static [(&'static str, &'static str)],
}

/// Someone who works for a customer: a person (their IAM `sub`), an API
/// client (its client id) or a gateway consumer (its name).
pub struct EmployeeSeed {
    /// The token subject that names them.
    pub subject: String,
    /// The customer's id.
    pub customer: &'static str,
    /// Shown name.
    pub name: String,
    /// `person`, `client` or `consumer`.
    pub kind: &'static str,
    /// Their job (the IAM role that goes with it).
    pub role: &'static str,
}

/// Opens (creating) the SQLite file at `path`, creates the tables and
/// upserts the seed.
pub async fn open(
    path: &Path,
    customers: &[CustomerSeed],
    employees: &[EmployeeSeed],
) -> Result<SqlitePool, sqlx::Error> {
    let pool = super::sqlite(path).await?;
    for ddl in [
        "CREATE TABLE IF NOT EXISTS customers (id TEXT PRIMARY KEY, name TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS locations (id TEXT PRIMARY KEY, \
         customer_id TEXT NOT NULL REFERENCES customers(id), name TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS employees (subject TEXT PRIMARY KEY, \
         customer_id TEXT NOT NULL REFERENCES customers(id), name TEXT NOT NULL, \
         kind TEXT NOT NULL, role TEXT NOT NULL)",
    ] {
        sqlx::query(ddl).execute(&pool).await?;
    }
    let mut tx = pool.begin().await?;
    for c in customers {
        sqlx::query("INSERT INTO customers (id, name) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET name = excluded.name")
            .bind(c.id)
            .bind(c.name)
            .execute(&mut *tx)
            .await?;
        for (id, name) in c.locations {
            sqlx::query("INSERT INTO locations (id, customer_id, name) VALUES (?, ?, ?) \
                 ON CONFLICT(id) DO UPDATE SET customer_id = excluded.customer_id, name = excluded.name")
                .bind(id)
                .bind(c.id)
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
    }
    for e in employees {
        sqlx::query(
            "INSERT INTO employees (subject, customer_id, name, kind, role) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT(subject) DO UPDATE SET customer_id = excluded.customer_id, \
             name = excluded.name, kind = excluded.kind, role = excluded.role",
        )
        .bind(&e.subject)
        .bind(e.customer)
        .bind(&e.name)
        .bind(e.kind)
        .bind(e.role)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(pool)
}

/// A refusal or failure, as JSON (`{"error", "error_description"}`).
struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.1, "error_description": self.2});
        (self.0, Json(body)).into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "customer service: database error");
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the customer database failed".into(),
        )
    }
}

fn need_scope(p: &Principal, scope: &str) -> Result<(), ApiError> {
    if p.has_scope(scope) {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("this needs the scope {scope}"),
        ))
    }
}

/// The employee record and customer of `subject`, if any.
async fn employee(db: &SqlitePool, subject: &str) -> Result<Option<Value>, ApiError> {
    let row: Option<(String, String, String, String, String)> = sqlx::query_as(
        "SELECT e.name, e.kind, e.role, c.id, c.name FROM employees e \
         JOIN customers c ON c.id = e.customer_id WHERE e.subject = ?",
    )
    .bind(subject)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(name, kind, role, cid, cname)| {
        json!({
            "subject": subject,
            "name": name,
            "kind": kind,
            "role": role,
            "customer": {"id": cid, "name": cname},
        })
    }))
}

async fn locations_of(db: &SqlitePool, customer: &str) -> Result<Vec<Value>, ApiError> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT id, name FROM locations WHERE customer_id = ? ORDER BY id")
            .bind(customer)
            .fetch_all(db)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name)| json!({"id": id, "name": name, "customer_id": customer}))
        .collect())
}

/// What the service saw: the validated claims (never the token).
fn seen(p: &Principal) -> Value {
    json!({
        "service": "customers",
        "claims": p.claims,
        "actors": p.actors,
    })
}

async fn me(
    State(db): State<SqlitePool>,
    Authenticated(p): Authenticated,
) -> Result<Json<Value>, ApiError> {
    need_scope(&p, READ_SCOPE)?;
    let Some(emp) = employee(&db, &p.subject).await? else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "not_found",
            "the caller does not work for any customer".into(),
        ));
    };
    let cid = emp["customer"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok(Json(json!({
        "employee": emp,
        "locations": locations_of(&db, &cid).await?,
        "seen": seen(&p),
    })))
}

#[derive(Deserialize)]
struct LocationsQuery {
    subject: Option<String>,
}

async fn locations(
    State(db): State<SqlitePool>,
    Authenticated(p): Authenticated,
    Query(q): Query<LocationsQuery>,
) -> Result<Json<Value>, ApiError> {
    let subject = match &q.subject {
        Some(other) if other != &p.subject => {
            need_scope(&p, DIRECTORY_SCOPE)?;
            if !p.actors.is_empty() {
                return Err(ApiError(
                    StatusCode::FORBIDDEN,
                    "access_denied",
                    "directory look-ups take the service's own token, not a delegated one".into(),
                ));
            }
            other.clone()
        }
        _ => {
            need_scope(&p, READ_SCOPE)?;
            p.subject.clone()
        }
    };
    let emp = employee(&db, &subject).await?;
    let locs = match emp.as_ref().and_then(|e| e["customer"]["id"].as_str()) {
        Some(cid) => locations_of(&db, cid).await?,
        None => Vec::new(),
    };
    Ok(Json(json!({
        "subject": subject,
        "employee": emp,
        "locations": locs,
        "seen": seen(&p),
    })))
}

/// Serves the customer service on `listener`, trusting IAM tokens from
/// `iam_issuer` for [`AUDIENCE`].
pub async fn start(
    listener: tokio::net::TcpListener,
    iam_issuer: &str,
    db: SqlitePool,
) -> std::io::Result<SocketAddr> {
    let validator = Validator::start(ValidatorConfig::new(iam_issuer, AUDIENCE)).await;
    let api = Router::new()
        .route("/customers/me", get(me))
        .route("/locations", get(locations))
        .layer(BearerAuth::new(validator, "customers"))
        .with_state(db);
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(api);
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// Locations by id, from a `/locations` answer.
pub fn location_names(answer: &Value) -> HashMap<String, String> {
    answer["locations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| Some((l["id"].as_str()?.to_owned(), l["name"].as_str()?.to_owned())))
        .collect()
}
