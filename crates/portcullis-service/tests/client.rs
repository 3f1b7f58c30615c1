//! The client half against the real IAM server and scripted endpoints.

#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use portcullis_core::Secret;
use portcullis_core::jose::SigningAlgorithm;
use portcullis_service::{
    BearerAuth, BearerLayer, ClientCredentials, TokenError, TokenSource, TokenSourceConfig,
    Validator, ValidatorConfig,
};
use portcullis_test_support::{TestIam, client_key};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tower::ServiceExt;

fn secret_source(iam: &TestIam, id: &str, secret: &str) -> TokenSource {
    TokenSource::new(TokenSourceConfig::new(
        iam.token_url(),
        ClientCredentials::Secret {
            client_id: id.into(),
            secret: Secret::new(secret),
        },
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_cached_per_audience_and_scopes_and_fetched_once_under_concurrency() {
    let iam = TestIam::start().await;
    let c = iam.secret_client("svc").await;
    let src = Arc::new(secret_source(&iam, &c.id, &c.secret));
    let t1 = src.token(Some("api-2"), &["write", "read"]).await.unwrap();
    let t2 = src.token(Some("api-2"), &["read", "write"]).await.unwrap();
    assert_eq!(t1.token.expose(), t2.token.expose(), "same key, cached");
    assert_eq!(src.requests_made(), 1);
    let jwks = iam.jwks().await;
    let claims =
        portcullis_test_support::verify_with_jwks(t1.token.expose(), &jwks, &iam.issuer, "api-2")
            .unwrap();
    assert_eq!(claims["scope"], "read write");
    src.token(Some("api-1"), &["read"]).await.unwrap();
    assert_eq!(src.requests_made(), 2, "another audience, another token");

    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let src = src.clone();
            tokio::spawn(async move {
                src.token(None, &["write"])
                    .await
                    .unwrap()
                    .token
                    .expose()
                    .to_owned()
            })
        })
        .collect();
    let mut tokens = std::collections::HashSet::new();
    for t in tasks {
        tokens.insert(t.await.unwrap());
    }
    assert_eq!(tokens.len(), 1);
    assert_eq!(src.requests_made(), 3, "50 concurrent callers, one request");
}

#[tokio::test]
async fn tokens_are_replaced_ahead_of_expiry() {
    let iam = TestIam::start().await;
    let v = iam
        .create_client(json!({"client_id": "short", "access_token_ttl_secs": 2, "allowed_audiences": ["api"], "default_audiences": ["api"]}))
        .await;
    let src = secret_source(&iam, "short", v["client_secret"].as_str().unwrap());
    let a = src.token(None, &[]).await.unwrap();
    let b = src.token(None, &[]).await.unwrap();
    assert_eq!(a.token.expose(), b.token.expose());
    tokio::time::sleep(Duration::from_millis(1200)).await; // past lifetime/2, before expiry
    let c = src.token(None, &[]).await.unwrap();
    assert_ne!(
        a.token.expose(),
        c.token.expose(),
        "replaced before it expired"
    );
    assert_eq!(src.requests_made(), 2);
}

#[tokio::test]
async fn private_key_jwt_credentials_work() {
    let iam = TestIam::start().await;
    let key = client_key(SigningAlgorithm::EdDsa);
    iam.jwt_client("jwt-svc", &key).await;
    let src = TokenSource::new(TokenSourceConfig::new(
        iam.token_url(),
        ClientCredentials::PrivateKeyJwt {
            client_id: "jwt-svc".into(),
            key: Arc::new(key),
        },
    ));
    let t = src.token(Some("api-1"), &["read"]).await.unwrap();
    assert_eq!(t.scope.as_deref(), Some("read"));
    src.invalidate(Some("api-1"), &["read"]).await;
    src.token(Some("api-1"), &["read"]).await.unwrap();
    assert_eq!(
        src.requests_made(),
        2,
        "a fresh assertion (new jti) each time"
    );
}

#[tokio::test]
async fn invalid_client_is_not_retried() {
    let iam = TestIam::start().await;
    iam.secret_client("svc").await;
    let src = secret_source(&iam, "svc", "pcs_wrong");
    let e = src.token(None, &[]).await.unwrap_err();
    assert!(
        matches!(&e, TokenError::Refused { error, .. } if error == "invalid_client"),
        "{e:?}"
    );
    assert_eq!(src.requests_made(), 1);
    assert!(!format!("{e} {e:?}").contains("pcs_wrong"));
}

#[tokio::test]
async fn server_errors_and_network_errors_are_retried_with_backoff() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let app = Router::new().route(
        "/token",
        post(move || {
            let c = c.clone();
            async move {
                if c.fetch_add(1, Ordering::SeqCst) < 2 {
                    (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response_body()
                } else {
                    (
                        StatusCode::OK,
                        r#"{"access_token":"abc","token_type":"Bearer","expires_in":300}"#,
                    )
                        .into_response_body()
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut cfg = TokenSourceConfig::new(
        url,
        ClientCredentials::Secret {
            client_id: "x".into(),
            secret: Secret::new("y"),
        },
    );
    cfg.base_backoff = Duration::from_millis(20);
    let src = TokenSource::new(cfg);
    let t = src.token(None, &[]).await.unwrap();
    assert_eq!(t.token.expose(), "abc");
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // Nothing listening: Unavailable after 1 + max_retries attempts.
    let port = portcullis_test_support::free_port();
    let mut cfg = TokenSourceConfig::new(
        format!("http://127.0.0.1:{port}/token"),
        ClientCredentials::Secret {
            client_id: "x".into(),
            secret: Secret::new("y"),
        },
    );
    cfg.base_backoff = Duration::from_millis(10);
    let src = TokenSource::new(cfg);
    assert!(matches!(
        src.token(None, &[]).await,
        Err(TokenError::Unavailable(_))
    ));
    assert_eq!(src.requests_made(), 4);
}

trait IntoBody {
    fn into_response_body(self) -> axum::response::Response;
}

impl IntoBody for (StatusCode, &'static str) {
    fn into_response_body(self) -> axum::response::Response {
        use axum::response::IntoResponse;
        (self.0, [("content-type", "application/json")], self.1).into_response()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_layer_attaches_tokens_and_retries_once_on_401() {
    let iam = TestIam::start().await;
    let c = iam.secret_client("caller").await;
    // The callee validates with the library, and refuses the first token it
    // sees (as if that token had just been revoked).
    let validator = Validator::start(ValidatorConfig::new(&iam.issuer, "api-1")).await;
    let refused_once = Arc::new(AtomicUsize::new(0));
    let r = refused_once.clone();
    let app = Router::new()
        .route(
            "/items",
            get(
                move |axum::extract::Extension(p): axum::extract::Extension<
                    Arc<portcullis_service::Principal>,
                >| {
                    let r = r.clone();
                    async move {
                        if r.fetch_add(1, Ordering::SeqCst) == 0 {
                            return Err(StatusCode::UNAUTHORIZED);
                        }
                        Ok(axum::Json(json!({"caller": p.client_id})))
                    }
                },
            ),
        )
        .layer(BearerAuth::new(validator, "items"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let tokens = Arc::new(secret_source(&iam, &c.id, &c.secret));
    let client = tower::ServiceBuilder::new()
        .layer(BearerLayer::new(tokens.clone(), Some("api-1"), &["read"]))
        .service(reqwest::Client::new());
    let req = reqwest::Request::new(
        reqwest::Method::GET,
        format!("{base}/items").parse().unwrap(),
    );
    let resp = client.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap(),
        json!({"caller": "caller"})
    );
    assert_eq!(tokens.requests_made(), 2, "a fresh token after the 401");
    // Later calls reuse the fresh token.
    let req = reqwest::Request::new(
        reqwest::Method::GET,
        format!("{base}/items").parse().unwrap(),
    );
    assert_eq!(client.oneshot(req).await.unwrap().status(), 200);
    assert_eq!(tokens.requests_made(), 2);
}

/// Token exchange (RFC 8693) through the library: the downstream token keeps
/// the caller as `sub` and names this service in `act`; cached per (caller
/// token, audience, scopes); a refusal is not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanged_tokens_name_the_caller_and_this_service_and_are_cached_per_subject() {
    let iam = TestIam::start_with(|c| {
        c.token_exchange.rules = vec![portcullis_iam::config::RawExchangeRule {
            client: "orders".into(),
            subject_audiences: vec!["api-1".into()],
            audiences: vec!["api-2".into()],
            scopes: vec!["read".into()],
        }]
    })
    .await;
    let caller = iam.secret_client("frontend").await;
    let v = iam
        .create_client(json!({
            "client_id": "orders",
            "grant_types": ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"],
            "allowed_scopes": ["read"], "allowed_audiences": ["api-1"], "default_audiences": ["api-1"],
        }))
        .await;
    let src = Arc::new(secret_source(
        &iam,
        "orders",
        v["client_secret"].as_str().unwrap(),
    ));
    let a = iam.access_token(&caller).await;
    let b = iam.access_token(&caller).await;
    assert_ne!(a, b);

    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (src, a) = (src.clone(), a.clone());
            tokio::spawn(async move { src.exchange(&a, "api-2", &[]).await.unwrap() })
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    for t in tasks {
        seen.insert(t.await.unwrap().token.expose().to_owned());
    }
    assert_eq!(seen.len(), 1, "one exchange for 20 concurrent callers");
    assert_eq!(src.requests_made(), 1);
    let token = seen.into_iter().next().unwrap();
    let jwks = iam.jwks().await;
    let claims =
        portcullis_test_support::verify_with_jwks(&token, &jwks, &iam.issuer, "api-2").unwrap();
    assert_eq!(claims["sub"], "frontend");
    assert_eq!(claims["client_id"], "orders");
    assert_eq!(claims["act"], json!({"sub": "orders"}));
    assert_eq!(claims["scope"], "read");
    // A validator downstream sees the actor too.
    let v = Validator::start(ValidatorConfig::new(&iam.issuer, "api-2")).await;
    let p = v.validate(&token).await.unwrap();
    assert_eq!(p.subject, "frontend");
    assert_eq!(p.claims.extra["act"]["sub"], "orders");

    src.exchange(&b, "api-2", &[]).await.unwrap();
    assert_eq!(
        src.requests_made(),
        2,
        "another caller token, another exchange"
    );
    src.exchange(&a, "api-2", &["read"]).await.unwrap();
    assert_eq!(src.requests_made(), 3, "other scopes, another exchange");
    let e = src.exchange(&a, "api-3", &[]).await.unwrap_err();
    assert!(
        matches!(&e, TokenError::Refused { error, .. } if error == "invalid_target"),
        "{e:?}"
    );
    assert_eq!(src.requests_made(), 4, "refusals are not retried");
}
