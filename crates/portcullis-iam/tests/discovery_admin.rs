//! Discovery, JWKS, health/metrics, and the admin API.

#![allow(clippy::unwrap_used)]

use portcullis_test_support::{SecretClient, TEST_ADMIN_TOKEN, TestIam};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn discovery_lists_what_is_supported() {
    let iam = TestIam::start().await;
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let v: Value = iam
            .http
            .get(iam.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["issuer"], iam.base.as_str());
        assert_eq!(v["token_endpoint"], iam.token_url());
        assert_eq!(v["jwks_uri"], iam.url("/.well-known/jwks.json"));
        assert_eq!(v["introspection_endpoint"], iam.url("/oauth2/introspect"));
        assert_eq!(v["revocation_endpoint"], iam.url("/oauth2/revoke"));
        assert_eq!(
            v["grant_types_supported"],
            json!([
                "client_credentials",
                "authorization_code",
                "refresh_token",
                "urn:ietf:params:oauth:grant-type:token-exchange"
            ])
        );
        assert_eq!(
            v["token_endpoint_auth_methods_supported"],
            json!([
                "client_secret_basic",
                "client_secret_post",
                "private_key_jwt",
                "none"
            ])
        );
        assert_eq!(v["authorization_endpoint"], iam.url("/oauth2/authorize"));
        assert_eq!(v["id_token_signing_alg_values_supported"], json!(["RS256"]));
        // Every advertised endpoint answers (not 404).
        for ep in ["jwks_uri", "portcullis_revocations_endpoint"] {
            let r = iam.http.get(v[ep].as_str().unwrap()).send().await.unwrap();
            assert_eq!(r.status(), 200, "{ep}");
        }
    }
    let r = iam
        .http
        .get(iam.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
}

#[tokio::test]
async fn health_readiness_metrics_and_not_found() {
    let iam = TestIam::start().await;
    let c = iam.secret_client("svc").await;
    iam.access_token(&c).await;
    assert_eq!(
        iam.http
            .get(iam.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        iam.http
            .get(iam.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let m = iam
        .http
        .get(iam.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("portcullis_iam_tokens_issued_total"), "{m}");
    assert!(m.contains("portcullis_http_requests_total"));
    let r = iam.http.get(iam.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "not_found");
}

#[tokio::test]
async fn admin_api_requires_its_token() {
    let iam = TestIam::start().await;
    for auth in [
        None,
        Some("Bearer wrong-token-0123456789"),
        Some("Basic dGVzdA=="),
    ] {
        let mut r = iam.http.get(format!("{}/admin/clients", iam.admin));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        let resp = r.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{auth:?}");
        assert!(
            resp.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
    }
    // The admin API is not on the public listener.
    let r = iam
        .http
        .get(iam.url("/admin/clients"))
        .bearer_auth(TEST_ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Without an admin token configured, the admin API is off.
    let off = TestIam::start_with(|c| c.admin_token = None).await;
    let r = off.admin_call(Method::GET, "/admin/clients", None).await;
    assert_eq!(r.status(), 503);
}

#[tokio::test]
async fn client_lifecycle_through_the_admin_api() {
    let iam = TestIam::start().await;
    let created = iam
        .create_client(json!({"name": "Orders", "allowed_scopes": ["a"], "allowed_audiences": ["x"], "default_audiences": ["x"]}))
        .await;
    let id = created["client_id"].as_str().unwrap().to_owned();
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 47, "≥ 256-bit secret");
    assert!(created.get("secret_digest").is_none());

    // Shown once: never again on read.
    let shown: Value = iam
        .admin_call(Method::GET, &format!("/admin/clients/{id}"), None)
        .await
        .json()
        .await
        .unwrap();
    assert!(shown.get("client_secret").is_none());
    assert_eq!(shown["name"], "Orders");
    let listed: Value = iam
        .admin_call(Method::GET, "/admin/clients", None)
        .await
        .json()
        .await
        .unwrap();
    assert!(!listed.to_string().contains(&secret));

    // Duplicate id, invalid input.
    let r = iam
        .admin_call(
            Method::POST,
            "/admin/clients",
            Some(json!({"client_id": id})),
        )
        .await;
    assert_eq!(r.status(), 409);
    for bad in [
        json!({"client_id": "has space"}),
        json!({"allowed_scopes": ["a"], "default_scopes": ["b"]}),
        json!({"grant_types": ["password"]}),
        json!({"unknown_field": 1}),
        json!({"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}),
        json!({"jwks": {"keys": []}}),
    ] {
        let r = iam
            .admin_call(Method::POST, "/admin/clients", Some(bad.clone()))
            .await;
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
    }
    let r = iam
        .http
        .post(format!("{}/admin/clients", iam.admin))
        .bearer_auth(TEST_ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Rotate: old secret stops working, new one works.
    let old = SecretClient {
        id: id.clone(),
        secret: secret.clone(),
    };
    iam.access_token(&old).await;
    let r: Value = iam
        .admin_call(
            Method::POST,
            &format!("/admin/clients/{id}/rotate-secret"),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    let new = SecretClient {
        id: id.clone(),
        secret: r["client_secret"].as_str().unwrap().into(),
    };
    assert_ne!(new.secret, old.secret);
    assert_eq!(
        iam.token_basic(&old, &[("grant_type", "client_credentials")])
            .await
            .status(),
        401
    );
    iam.access_token(&new).await;

    // Update a field, leave others.
    let r: Value = iam
        .admin_call(
            Method::PATCH,
            &format!("/admin/clients/{id}"),
            Some(json!({"allowed_scopes": ["a", "b"]})),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["allowed_scopes"], json!(["a", "b"]));
    assert_eq!(r["name"], "Orders");

    // Delete; then 404s.
    assert_eq!(
        iam.admin_call(Method::DELETE, &format!("/admin/clients/{id}"), None)
            .await
            .status(),
        204
    );
    assert_eq!(
        iam.admin_call(Method::GET, &format!("/admin/clients/{id}"), None)
            .await
            .status(),
        404
    );
    assert_eq!(
        iam.admin_call(Method::DELETE, &format!("/admin/clients/{id}"), None)
            .await
            .status(),
        404
    );
    assert_eq!(
        iam.token_basic(&new, &[("grant_type", "client_credentials")])
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn declared_clients_apply_idempotently_and_survive_restart() {
    let declared = |c: &mut portcullis_iam::config::RawConfig| {
        c.clients = vec![portcullis_iam::config::RawClient {
            id: "gitops".into(),
            secret: Some("declared-secret-0123456789abcdef0123".into()),
            allowed_scopes: vec!["read".into()],
            allowed_audiences: vec!["api".into()],
            default_audiences: vec!["api".into()],
            ..Default::default()
        }];
    };
    let mut iam = TestIam::start_with(declared).await;
    let c = SecretClient {
        id: "gitops".into(),
        secret: "declared-secret-0123456789abcdef0123".into(),
    };
    iam.access_token(&c).await;
    let before: Value = iam
        .admin_call(Method::GET, "/admin/clients/gitops", None)
        .await
        .json()
        .await
        .unwrap();
    iam.stop().await;

    let dir = std::mem::replace(&mut iam.dir, tempfile::tempdir().unwrap());
    let mut raw = portcullis_test_support::test_config(dir.path());
    declared(&mut raw);
    let again =
        TestIam::start_in(dir, raw, std::sync::Arc::new(portcullis_core::SystemClock)).await;
    again.access_token(&c).await;
    let after: Value = again
        .admin_call(Method::GET, "/admin/clients/gitops", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        before["updated_at"], after["updated_at"],
        "unchanged declaration is a no-op"
    );
    let all: Value = again
        .admin_call(Method::GET, "/admin/clients", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["clients"].as_array().unwrap().len(), 1);
}
