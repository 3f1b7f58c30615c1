//! A fake token issuer over real HTTP: discovery, a JWKS it controls, a
//! revocation feed, fetch counters and an off switch. For tests that craft
//! tokens a real IAM server would never issue.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use portcullis_core::jose::{SigningAlgorithm, SigningKey};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Shared state of a [`FakeIssuer`].
#[derive(Default)]
pub struct FakeState {
    /// The JWKS served.
    pub jwks: Mutex<Value>,
    /// Revocation feed entries served (all of them, every time).
    pub revocations: Mutex<Vec<Value>>,
    /// JWKS fetches so far.
    pub jwks_fetches: AtomicUsize,
    /// Any other fetches (e.g. a `jku` target).
    pub other_fetches: AtomicUsize,
    /// When set, every endpoint answers 503.
    pub down: AtomicBool,
    /// `Cache-Control` max-age of the JWKS.
    pub max_age: AtomicUsize,
}

/// A fake issuer listening on loopback.
pub struct FakeIssuer {
    /// Issuer URL (`http://127.0.0.1:PORT`).
    pub issuer: String,
    /// Its signing key (ES256 unless replaced).
    pub key: SigningKey,
    /// State shared with the server.
    pub state: Arc<FakeState>,
}

async fn discovery(State((s, iss)): State<(Arc<FakeState>, String)>) -> Response {
    if s.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    axum::Json(json!({
        "issuer": iss,
        "jwks_uri": format!("{iss}/jwks"),
        "token_endpoint": format!("{iss}/token"),
    }))
    .into_response()
}

async fn jwks(State((s, _)): State<(Arc<FakeState>, String)>) -> Response {
    s.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    if s.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let body = s.jwks.lock().map(|j| j.clone()).unwrap_or_default();
    let cc = format!("public, max-age={}", s.max_age.load(Ordering::SeqCst));
    ([(header::CACHE_CONTROL, cc)], axum::Json(body)).into_response()
}

async fn revocations(State((s, _)): State<(Arc<FakeState>, String)>) -> Response {
    if s.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let list = s.revocations.lock().map(|r| r.clone()).unwrap_or_default();
    axum::Json(json!({ "cursor": list.len(), "more": false, "revocations": list })).into_response()
}

async fn other(State((s, _)): State<(Arc<FakeState>, String)>) -> Response {
    s.other_fetches.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({"keys": []})).into_response()
}

impl FakeIssuer {
    /// Starts a fake issuer with a fresh ES256 key published.
    pub async fn start() -> Self {
        Self::start_with(SigningAlgorithm::Es256).await
    }

    /// Starts a fake issuer whose key has `alg`.
    pub async fn start_with(alg: SigningAlgorithm) -> Self {
        let key = SigningKey::generate(alg).expect("key");
        let state = Arc::new(FakeState::default());
        *state.jwks.lock().expect("lock") = json!({ "keys": [key.public_jwk()] });
        state.max_age.store(300, Ordering::SeqCst);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let issuer = format!("http://{}", listener.local_addr().expect("addr"));
        let app = Router::new()
            .route("/.well-known/oauth-authorization-server", get(discovery))
            .route("/jwks", get(jwks))
            .route("/oauth2/revocations", get(revocations))
            .route("/elsewhere", get(other))
            .with_state((state.clone(), issuer.clone()));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { issuer, key, state }
    }

    /// Standard claims for a token from this issuer to `aud`, valid now.
    pub fn claims(&self, aud: &str) -> Value {
        let now = portcullis_core::Clock::now(&portcullis_core::SystemClock);
        json!({
            "iss": self.issuer, "sub": "svc-a", "aud": aud, "exp": now + 300, "iat": now,
            "nbf": now, "jti": format!("jti-{}", now), "client_id": "svc-a", "scope": "read write",
        })
    }

    /// Signs `claims` as an access token with this issuer's key.
    pub fn sign(&self, claims: &Value) -> String {
        self.key.sign_access_token(claims).expect("sign")
    }

    /// Signs with extra/overridden header members (typ defaults to at+jwt).
    pub fn sign_with_header(&self, header: Value, claims: &Value) -> String {
        let mut h = serde_json::Map::new();
        h.insert("typ".into(), "at+jwt".into());
        if let Value::Object(m) = header {
            h.extend(m);
        }
        self.key.sign_with_header(h, claims).expect("sign")
    }
}
