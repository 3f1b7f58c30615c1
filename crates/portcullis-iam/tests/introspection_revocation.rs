//! Introspection (RFC 7662), revocation (RFC 7009) and the revocation feed.

#![allow(clippy::unwrap_used)]

use portcullis_test_support::{SecretClient, TestIam, basic};
use serde_json::{Value, json};

async fn revoke(iam: &TestIam, c: &SecretClient, token: &str) -> reqwest::Response {
    iam.http
        .post(iam.url("/oauth2/revoke"))
        .header("authorization", basic(&c.id, &c.secret))
        .form(&[("token", token), ("token_type_hint", "access_token")])
        .send()
        .await
        .unwrap()
}

async fn feed(iam: &TestIam, since: i64) -> Value {
    let r = iam
        .http
        .get(iam.url(&format!("/oauth2/revocations?since={since}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn introspection_reports_active_tokens_and_requires_client_auth() {
    let iam = TestIam::start().await;
    let a = iam.secret_client("svc-a").await;
    let rs = iam.secret_client("resource-server").await;
    let token = iam.access_token(&a).await;

    let v = iam.introspect(&rs, &token).await;
    assert_eq!(v["active"], true);
    assert_eq!(v["client_id"], "svc-a");
    assert_eq!(v["sub"], "svc-a");
    assert_eq!(v["scope"], "read");
    assert_eq!(v["aud"], "api-1");
    assert_eq!(v["iss"], iam.base.as_str());
    assert_eq!(v["token_type"], "Bearer");

    for junk in [
        "garbage",
        "a.b.c",
        &format!("{token}x"),
        &token[..token.len() - 4],
    ] {
        assert_eq!(
            iam.introspect(&rs, junk).await,
            json!({"active": false}),
            "{junk}"
        );
    }

    // Without client authentication: 401 invalid_client.
    let resp = iam
        .http
        .post(iam.url("/oauth2/introspect"))
        .form(&[("token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "invalid_client");

    // Wrong secret.
    let bad = SecretClient {
        id: rs.id.clone(),
        secret: "pcs_nope".into(),
    };
    let resp = iam
        .http
        .post(iam.url("/oauth2/introspect"))
        .header("authorization", basic(&bad.id, &bad.secret))
        .form(&[("token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // Missing token parameter.
    let resp = iam
        .http
        .post(iam.url("/oauth2/introspect"))
        .header("authorization", basic(&rs.id, &rs.secret))
        .form(&[("token_type_hint", "access_token")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "invalid_request"
    );
}

#[tokio::test]
async fn revocation_deactivates_a_token_and_is_published() {
    let iam = TestIam::start().await;
    let a = iam.secret_client("svc-a").await;
    let b = iam.secret_client("svc-b").await;
    let t1 = iam.access_token(&a).await;
    let t2 = iam.access_token(&a).await;
    let claims1 =
        portcullis_test_support::verify_with_jwks(&t1, &iam.jwks().await, &iam.base, "api-1")
            .unwrap();

    // Another client may not revoke a's token (RFC 7009 §2.1).
    let resp = revoke(&iam, &b, &t1).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "unauthorized_client"
    );
    assert_eq!(iam.introspect(&b, &t1).await["active"], true);

    let resp = revoke(&iam, &a, &t1).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(iam.introspect(&b, &t1).await, json!({"active": false}));
    assert_eq!(
        iam.introspect(&b, &t2).await["active"],
        true,
        "only the revoked token"
    );

    // Revoking twice, and revoking unknown or garbage tokens: 200 (RFC 7009 §2.2).
    assert_eq!(revoke(&iam, &a, &t1).await.status(), 200);
    assert_eq!(
        revoke(&iam, &a, "not-a-token-we-issued").await.status(),
        200
    );

    // Unauthenticated revocation: 401.
    let resp = iam
        .http
        .post(iam.url("/oauth2/revoke"))
        .form(&[("token", &t2)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // The feed lists the revoked jti until it expires.
    let f = feed(&iam, 0).await;
    let entries = f["revocations"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["kind"] == "jti" && e["subject"] == claims1["jti"]),
        "{f}"
    );
    let cursor = f["cursor"].as_i64().unwrap();
    assert!(cursor > 0);
    assert_eq!(
        feed(&iam, cursor).await["revocations"],
        json!([]),
        "nothing after the cursor"
    );

    // Bad cursors.
    for q in ["since=-1", "since=abc", "since=1&evil=1"] {
        let r = iam
            .http
            .get(iam.url(&format!("/oauth2/revocations?{q}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{q}");
    }
}

#[tokio::test]
async fn disabling_or_deleting_a_client_revokes_its_tokens() {
    let iam = TestIam::start().await;
    let a = iam.secret_client("svc-a").await;
    let d = iam.secret_client("svc-d").await;
    let rs = iam.secret_client("rs").await;
    let ta = iam.access_token(&a).await;
    let td = iam.access_token(&d).await;

    let r = iam
        .admin_call(
            reqwest::Method::PATCH,
            "/admin/clients/svc-a",
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(iam.introspect(&rs, &ta).await["active"], false);
    let r = iam
        .admin_call(reqwest::Method::DELETE, "/admin/clients/svc-d", None)
        .await;
    assert_eq!(r.status(), 204);
    assert_eq!(iam.introspect(&rs, &td).await["active"], false);

    let f = feed(&iam, 0).await;
    let clients: Vec<&str> = f["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "client")
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    assert_eq!(clients, ["svc-a", "svc-d"]);
    assert!(f["revocations"][0]["issued_before"].as_u64().is_some());
}
