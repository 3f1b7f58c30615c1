//! The token endpoint over real HTTP: every client-authentication method,
//! every signing algorithm, and the bad input the issue lists, each with the
//! exact status and RFC error code.

#![allow(clippy::unwrap_used)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use portcullis_core::jose::SigningAlgorithm;
use portcullis_test_support::{
    SecretClient, TestIam, basic, client_assertion, client_key, verify_with_jwks,
};
use serde_json::{Value, json};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

async fn expect_error(resp: reqwest::Response, status: u16, error: &str) -> Value {
    let got = resp.status().as_u16();
    let cache = resp
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(
        (got, body["error"].as_str()),
        (status, Some(error)),
        "body: {body}"
    );
    assert_eq!(cache.as_deref(), Some("no-store"));
    body
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn client_secret_basic_and_post_issue_verifiable_tokens() {
    let iam = TestIam::start().await;
    let c = iam.secret_client("svc-a").await;
    let jwks = iam.jwks().await;

    let resp = iam
        .token_basic(&c, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 600);
    assert_eq!(v["scope"], "read", "default scopes");
    let claims = verify_with_jwks(
        v["access_token"].as_str().unwrap(),
        &jwks,
        &iam.base,
        "api-1",
    )
    .unwrap();
    assert_eq!(claims["sub"], "svc-a");
    assert_eq!(claims["client_id"], "svc-a");
    assert_eq!(claims["scope"], "read");
    assert_eq!(claims["aud"], "api-1");
    assert!(claims["jti"].as_str().unwrap().len() >= 20);

    let resp = iam
        .http
        .post(iam.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &c.id),
            ("client_secret", &c.secret),
            ("scope", "write read"),
            ("resource", "api-2"),
            ("resource", "api-1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["scope"], "read write");
    let claims = verify_with_jwks(
        v["access_token"].as_str().unwrap(),
        &jwks,
        &iam.base,
        "api-2",
    )
    .unwrap();
    assert_eq!(claims["aud"], json!(["api-2", "api-1"]));
}

#[tokio::test]
async fn every_signing_algorithm_issues_tokens_a_resource_server_accepts() {
    for alg in ["ES256", "EdDSA", "RS256", "PS256"] {
        let iam = TestIam::start_with(|c| c.signing_alg = Some(alg.into())).await;
        let c = iam.secret_client("svc").await;
        let token = iam.access_token(&c).await;
        let header: Value =
            serde_json::from_slice(&B64.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header["alg"], alg);
        assert_eq!(header["typ"], "at+jwt");
        let jwks = iam.jwks().await;
        assert_eq!(jwks["keys"][0]["alg"], alg);
        assert_eq!(jwks["keys"][0]["use"], "sig");
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(
                jwks["keys"][0].get(private).is_none(),
                "{alg}: JWKS leaks {private}"
            );
        }
        verify_with_jwks(&token, &jwks, &iam.base, "api-1")
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
    }
}

#[tokio::test]
async fn private_key_jwt_accepts_each_client_key_type_and_both_audiences() {
    let iam = TestIam::start().await;
    let token_url = iam.token_url();
    for (n, alg) in SigningAlgorithm::ALL.into_iter().enumerate() {
        let key = client_key(alg);
        let id = iam.jwt_client(&format!("jwt-{n}"), &key).await;
        for aud in [iam.base.as_str(), token_url.as_str()] {
            let a = client_assertion(&key, &id, aud, &format!("jti-{n}-{aud}"), now(), 60);
            let resp = iam
                .http
                .post(&token_url)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_assertion_type", ASSERTION_TYPE),
                    ("client_assertion", &a),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(
                resp.status(),
                200,
                "{alg} aud={aud}: {}",
                resp.text().await.unwrap()
            );
        }
    }
}

#[tokio::test]
async fn private_key_jwt_attacks_are_refused() {
    let iam = TestIam::start().await;
    let key = client_key(SigningAlgorithm::Es256);
    let id = iam.jwt_client("jwt-client", &key).await;
    let aud = iam.token_url();
    let post = |assertion: String| {
        let iam = &iam;
        async move {
            iam.http
                .post(iam.token_url())
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_assertion_type", ASSERTION_TYPE),
                    ("client_assertion", &assertion),
                ])
                .send()
                .await
                .unwrap()
        }
    };

    // Replay: the same jti twice.
    let a = client_assertion(&key, &id, &aud, "once", now(), 60);
    assert_eq!(post(a.clone()).await.status(), 200);
    let body = expect_error(post(a).await, 401, "invalid_client").await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("replay")
    );

    // Wrong audience.
    let a = client_assertion(
        &key,
        &id,
        "https://someone-else.example/token",
        "aud",
        now(),
        60,
    );
    expect_error(post(a).await, 401, "invalid_client").await;

    // Expired.
    let a = client_assertion(&key, &id, &aud, "old", now() - 600, 60);
    expect_error(post(a).await, 401, "invalid_client").await;

    // "exp required and short": accepted only within 300 s of iat...
    let a = client_assertion(&key, &id, &aud, "stale", now() - 400, 86_400);
    expect_error(post(a).await, 401, "invalid_client").await;
    // ...or, without iat, with exp at most 300 s ahead.
    let claims = json!({"iss": id, "sub": id, "aud": aud, "exp": now() + 86_400, "jti": "long"});
    let a = key
        .sign_with_header(serde_json::Map::new(), &claims)
        .unwrap();
    expect_error(post(a).await, 401, "invalid_client").await;
    // A fresh assertion with a 1 h exp (authlib's default) is fine.
    let a = client_assertion(&key, &id, &aud, "authlib-style", now(), 3600);
    assert_eq!(post(a).await.status(), 200);

    // No exp at all.
    let claims = json!({"iss": id, "sub": id, "aud": aud, "jti": "noexp"});
    let a = key
        .sign_with_header(serde_json::Map::new(), &claims)
        .unwrap();
    expect_error(post(a).await, 401, "invalid_client").await;

    // Signed by a key that is not registered.
    let stranger = client_key(SigningAlgorithm::Es256);
    let a = client_assertion(&stranger, &id, &aud, "stranger", now(), 60);
    expect_error(post(a).await, 401, "invalid_client").await;

    // alg: none (no signature), with the registered kid.
    let payload = json!({"iss": id, "sub": id, "aud": aud, "exp": now() + 60, "jti": "none"});
    let enc = |v: &Value| B64.encode(v.to_string());
    for alg in ["none", "None", "nOnE"] {
        let header = json!({"alg": alg, "kid": key.kid(), "typ": "JWT"});
        let a = format!("{}.{}.", enc(&header), enc(&payload));
        expect_error(post(a).await, 401, "invalid_client").await;
    }

    // HS256 "signed" with the public key (JWK JSON and raw x coordinate as the HMAC key).
    let header = json!({"alg": "HS256", "kid": key.kid(), "typ": "JWT"});
    let input = format!("{}.{}", enc(&header), enc(&payload));
    let jwk_bytes = key.public_jwk().to_string();
    let x = B64.decode(key.public_jwk()["x"].as_str().unwrap()).unwrap();
    for hmac_key in [jwk_bytes.as_bytes(), x.as_slice()] {
        let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, hmac_key);
        let sig = aws_lc_rs::hmac::sign(&k, input.as_bytes());
        let a = format!("{input}.{}", B64.encode(sig.as_ref()));
        expect_error(post(a).await, 401, "invalid_client").await;
    }

    // Assertion naming another client than client_id.
    let a = client_assertion(&key, &id, &aud, "mismatch", now(), 60);
    let resp = iam
        .http
        .post(iam.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "someone-else"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &a),
        ])
        .send()
        .await
        .unwrap();
    expect_error(resp, 401, "invalid_client").await;

    // Garbage, and a wrong assertion type.
    expect_error(post("not.a.jwt".into()).await, 401, "invalid_client").await;
    let resp = iam
        .http
        .post(iam.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
            ),
            ("client_assertion", "x"),
        ])
        .send()
        .await
        .unwrap();
    expect_error(resp, 400, "invalid_request").await;
}

#[tokio::test]
async fn client_authentication_failures() {
    let iam = TestIam::start().await;
    let a = iam.secret_client("svc-a").await;
    let b = iam.secret_client("svc-b").await;
    let form = [("grant_type", "client_credentials")];

    // Wrong secret, unknown client, another client's secret: same answer.
    for c in [
        SecretClient {
            id: a.id.clone(),
            secret: "pcs_wrong".into(),
        },
        SecretClient {
            id: "nobody".into(),
            secret: a.secret.clone(),
        },
        SecretClient {
            id: a.id.clone(),
            secret: b.secret.clone(),
        },
    ] {
        let resp = iam.token_basic(&c, &form).await;
        let challenge = resp.headers().get("www-authenticate").cloned();
        let body = expect_error(resp, 401, "invalid_client").await;
        assert_eq!(body["error_description"], "client authentication failed");
        assert!(challenge.unwrap().to_str().unwrap().starts_with("Basic"));
    }

    // No credentials at all.
    let resp = iam
        .http
        .post(iam.token_url())
        .form(&form)
        .send()
        .await
        .unwrap();
    expect_error(resp, 401, "invalid_client").await;

    // Malformed Basic, and a Bearer token at the token endpoint.
    for h in ["Basic !!!notbase64", "Basic ", "Bearer abc"] {
        let resp = iam
            .http
            .post(iam.token_url())
            .header("authorization", h)
            .form(&form)
            .send()
            .await
            .unwrap();
        expect_error(resp, 401, "invalid_client").await;
    }

    // Disabled client.
    let r = iam
        .admin_call(
            reqwest::Method::PATCH,
            "/admin/clients/svc-b",
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(r.status(), 200);
    expect_error(iam.token_basic(&b, &form).await, 401, "invalid_client").await;

    // Two methods in one request: Basic + body secret.
    let resp = iam
        .http
        .post(iam.token_url())
        .header("authorization", basic(&a.id, &a.secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &a.id),
            ("client_secret", &a.secret),
        ])
        .send()
        .await
        .unwrap();
    expect_error(resp, 400, "invalid_request").await;

    // Basic + a different client_id in the body.
    let resp = iam
        .http
        .post(iam.token_url())
        .header("authorization", basic(&a.id, &a.secret))
        .form(&[("grant_type", "client_credentials"), ("client_id", "svc-b")])
        .send()
        .await
        .unwrap();
    expect_error(resp, 400, "invalid_request").await;

    // Body secret + assertion.
    let resp = iam
        .http
        .post(iam.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &a.id),
            ("client_secret", &a.secret),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", "x.y.z"),
        ])
        .send()
        .await
        .unwrap();
    expect_error(resp, 400, "invalid_request").await;
}

#[tokio::test]
async fn grant_scope_and_resource_errors() {
    let iam = TestIam::start().await;
    let c = iam.secret_client("svc").await;

    expect_error(iam.token_basic(&c, &[]).await, 400, "invalid_request").await;
    expect_error(
        iam.token_basic(&c, &[("grant_type", "password")]).await,
        400,
        "unsupported_grant_type",
    )
    .await;
    expect_error(
        iam.token_basic(
            &c,
            &[
                ("grant_type", "client_credentials"),
                ("grant_type", "client_credentials"),
            ],
        )
        .await,
        400,
        "invalid_request",
    )
    .await;
    expect_error(
        iam.token_basic(
            &c,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "read"),
                ("scope", "write"),
            ],
        )
        .await,
        400,
        "invalid_request",
    )
    .await;
    expect_error(
        iam.token_basic(
            &c,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "read admin"),
            ],
        )
        .await,
        400,
        "invalid_scope",
    )
    .await;
    expect_error(
        iam.token_basic(
            &c,
            &[("grant_type", "client_credentials"), ("scope", "read\"x")],
        )
        .await,
        400,
        "invalid_scope",
    )
    .await;
    expect_error(
        iam.token_basic(
            &c,
            &[("grant_type", "client_credentials"), ("resource", "api-3")],
        )
        .await,
        400,
        "invalid_target",
    )
    .await;
    expect_error(
        iam.token_basic(
            &c,
            &[
                ("grant_type", "client_credentials"),
                ("resource", "api-1"),
                ("resource", "evil"),
            ],
        )
        .await,
        400,
        "invalid_target",
    )
    .await;

    // A client not allowed the grant.
    let v = iam
        .create_client(json!({"client_id": "no-grants", "grant_types": [], "allowed_audiences": ["api-1"], "default_audiences": ["api-1"]}))
        .await;
    let ng = SecretClient {
        id: "no-grants".into(),
        secret: v["client_secret"].as_str().unwrap().into(),
    };
    expect_error(
        iam.token_basic(&ng, &[("grant_type", "client_credentials")])
            .await,
        400,
        "unauthorized_client",
    )
    .await;
}

#[tokio::test]
async fn malformed_http_requests() {
    let iam = TestIam::start_with(|c| c.max_body_bytes = Some(4096)).await;
    let c = iam.secret_client("svc").await;
    let auth = basic(&c.id, &c.secret);

    // Oversized body.
    let big = format!("grant_type=client_credentials&pad={}", "a".repeat(10_000));
    let resp = iam
        .http
        .post(iam.token_url())
        .header("authorization", &auth)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(big)
        .send()
        .await
        .unwrap();
    expect_error(resp, 413, "invalid_request").await;

    // Non-form content types.
    for ct in [Some("application/json"), Some("text/plain"), None] {
        let mut r = iam
            .http
            .post(iam.token_url())
            .header("authorization", &auth)
            .body("{\"grant_type\":\"client_credentials\"}");
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        expect_error(r.send().await.unwrap(), 415, "invalid_request").await;
    }

    // Non-UTF-8 body, raw and percent-encoded.
    for body in [
        &b"grant_type=client_credentials&scope=\xff\xfe"[..],
        b"grant_type=client_credentials&scope=%FF",
    ] {
        let resp = iam
            .http
            .post(iam.token_url())
            .header("authorization", &auth)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        expect_error(resp, 400, "invalid_request").await;
    }

    // GET on the token endpoint.
    let resp = iam
        .http
        .get(iam.token_url())
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    let resp = iam.http.put(iam.token_url()).send().await.unwrap();
    assert_eq!(resp.status(), 405);

    // Charset parameter on the content type is fine.
    let resp = iam
        .http
        .post(iam.token_url())
        .header("authorization", &auth)
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=UTF-8",
        )
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn client_lifetime_override_is_capped() {
    let iam = TestIam::start_with(|c| c.max_access_token_ttl_secs = Some(3600)).await;
    let v = iam
        .create_client(json!({"client_id": "short", "access_token_ttl_secs": 60, "allowed_audiences": ["a"], "default_audiences": ["a"]}))
        .await;
    let c = SecretClient {
        id: "short".into(),
        secret: v["client_secret"].as_str().unwrap().into(),
    };
    let resp: Value = iam
        .token_basic(&c, &[("grant_type", "client_credentials")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(resp["expires_in"], 60);
    let r = iam
        .admin_call(
            reqwest::Method::PATCH,
            "/admin/clients/short",
            Some(json!({"access_token_ttl_secs": 7200})),
        )
        .await;
    assert_eq!(r.status(), 400, "override above the maximum is refused");
}

/// A client's JWKS served over real HTTP, counting fetches.
struct JwksServer {
    url: String,
    keys: std::sync::Arc<std::sync::Mutex<Value>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

async fn jwks_server() -> JwksServer {
    use axum::routing::get;
    use std::sync::atomic::Ordering;
    let keys = std::sync::Arc::new(std::sync::Mutex::new(json!({"keys": []})));
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (k, f) = (keys.clone(), fetches.clone());
    let app = axum::Router::new()
        .route(
            "/jwks",
            get(move || {
                let (k, f) = (k.clone(), f.clone());
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    axum::Json(k.lock().unwrap().clone())
                }
            }),
        )
        .route("/huge", get(|| async { "x".repeat(1024 * 1024) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    JwksServer { url, keys, fetches }
}

#[tokio::test]
async fn private_key_jwt_with_a_jwks_uri_follows_client_key_rotation() {
    use std::sync::atomic::Ordering;
    let iam = TestIam::start().await;
    let srv = jwks_server().await;
    let k1 = client_key(SigningAlgorithm::Es256);
    *srv.keys.lock().unwrap() = json!({"keys": [k1.public_jwk()]});
    iam.create_client(json!({
        "client_id": "remote",
        "jwks_uri": format!("{}/jwks", srv.url),
        "allowed_audiences": ["api-1"],
        "default_audiences": ["api-1"],
    }))
    .await;
    let aud = iam.token_url();
    let post = |a: String| {
        let iam = &iam;
        async move {
            iam.http
                .post(iam.token_url())
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_assertion_type", ASSERTION_TYPE),
                    ("client_assertion", &a),
                ])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        post(client_assertion(&k1, "remote", &aud, "r1", now(), 60)).await,
        200
    );
    assert_eq!(
        post(client_assertion(&k1, "remote", &aud, "r2", now(), 60)).await,
        200
    );
    assert_eq!(srv.fetches.load(Ordering::SeqCst), 1, "cached");

    // The client rotates to k2. Within the refetch interval of the last
    // fetch an unknown kid is refused without a fetch; after it, one refetch
    // picks up the new key.
    let k2 = client_key(SigningAlgorithm::Es256);
    *srv.keys.lock().unwrap() = json!({"keys": [k2.public_jwk()]});
    assert_eq!(
        post(client_assertion(&k2, "remote", &aud, "r3", now(), 60)).await,
        401
    );
    assert_eq!(srv.fetches.load(Ordering::SeqCst), 1);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(
        post(client_assertion(&k2, "remote", &aud, "r4", now(), 60)).await,
        200
    );
    assert_eq!(srv.fetches.load(Ordering::SeqCst), 2);

    // A stranger's kid does not make us hammer the client's server.
    let stranger = client_key(SigningAlgorithm::Es256);
    for n in 0..5 {
        let a = client_assertion(&stranger, "remote", &aud, &format!("s{n}"), now(), 60);
        assert_eq!(post(a).await, 401);
    }
    assert_eq!(
        srv.fetches.load(Ordering::SeqCst),
        2,
        "refetch is rate-limited"
    );

    // An oversized JWKS response is refused, not buffered.
    iam.create_client(json!({
        "client_id": "huge",
        "jwks_uri": format!("{}/huge", srv.url),
        "allowed_audiences": ["api-1"],
        "default_audiences": ["api-1"],
    }))
    .await;
    let k = client_key(SigningAlgorithm::Es256);
    assert_eq!(
        post(client_assertion(&k, "huge", &aud, "h1", now(), 60)).await,
        401
    );

    // jwks_uri must be https unless it is loopback (production mode).
    let r = iam
        .admin_call(
            reqwest::Method::POST,
            "/admin/clients",
            Some(json!({"jwks_uri": "http://keys.example.com/jwks"})),
        )
        .await;
    assert_eq!(r.status(), 400);
}
