//! Roles (RBAC) over HTTP against the real server: managed by the admin API,
//! held by users (directly or through groups) and by clients; tokens carry
//! the roles and only the scopes the roles allow.

#![allow(clippy::unwrap_used)]

mod browser;

use browser::*;
use portcullis_test_support::TestIam;
use reqwest::Method;
use serde_json::{Value, json};

async fn admin(iam: &TestIam, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let r = iam.admin_call(method, path, body).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn roles_are_managed_by_the_admin_api() {
    let iam = TestIam::start().await;
    let (status, v) = admin(
        &iam,
        Method::POST,
        "/admin/roles",
        Some(
            json!({"name": "operator", "description": "Arms and disarms",
                    "scopes": ["systems:arm"], "groups": ["ops"], "clients": ["scheduler"]}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["scopes"], json!(["systems:arm"]));
    let (status, _) = admin(
        &iam,
        Method::POST,
        "/admin/roles",
        Some(json!({"name": "operator"})),
    )
    .await;
    assert_eq!(status, 409);
    for bad in [
        json!({"name": "bad name"}),
        json!({"name": "x", "scopes": ["a b"]}),
        json!({"name": "x", "nope": 1}),
        json!({"name": "x", "clients": [""]}),
    ] {
        let (status, v) = admin(&iam, Method::POST, "/admin/roles", Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad}: {v}");
    }
    let (status, v) = admin(
        &iam,
        Method::PATCH,
        "/admin/roles/operator",
        Some(json!({"scopes": ["systems:arm", "systems:disarm"]})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["groups"], json!(["ops"]), "untouched fields stay");
    let (_, v) = admin(&iam, Method::GET, "/admin/roles", None).await;
    assert_eq!(v["roles"][0]["name"], "operator");
    let (status, _) = admin(&iam, Method::GET, "/admin/roles/operator", None).await;
    assert_eq!(status, 200);
    let (status, _) = admin(&iam, Method::DELETE, "/admin/roles/operator", None).await;
    assert_eq!(status, 204);
    let (status, _) = admin(&iam, Method::DELETE, "/admin/roles/operator", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn client_tokens_carry_the_client_roles_and_governed_scopes_need_them() {
    let iam = TestIam::start().await;
    let with = iam
        .secret_client_with(
            "scheduler",
            &["systems:arm", "systems:read"],
            &["systems-api"],
        )
        .await;
    let without = iam
        .secret_client_with(
            "reporter",
            &["systems:arm", "systems:read"],
            &["systems-api"],
        )
        .await;
    admin(
        &iam,
        Method::POST,
        "/admin/roles",
        Some(json!({"name": "operator", "scopes": ["systems:arm"], "clients": ["scheduler"]})),
    )
    .await;
    let cc = |scope: &'static str| [("grant_type", "client_credentials"), ("scope", scope)];
    let r = iam
        .token_basic(&with, &cc("systems:arm systems:read"))
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let claims = payload(v["access_token"].as_str().unwrap());
    assert_eq!(claims["roles"], json!(["operator"]));
    assert_eq!(claims["scope"], "systems:arm systems:read");

    // Without the role: asked for explicitly, refused; ungoverned scopes as before.
    let r = iam.token_basic(&without, &cc("systems:arm")).await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"], "invalid_scope");
    assert!(e["error_description"].as_str().unwrap().contains("role"));
    let r = iam.token_basic(&without, &cc("systems:read")).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let claims = payload(v["access_token"].as_str().unwrap());
    assert!(
        claims.get("roles").is_none(),
        "no roles, no claim: {claims}"
    );
}

#[tokio::test]
async fn user_tokens_carry_direct_and_group_roles_and_only_the_scopes_they_allow() {
    let iam = TestIam::start().await;
    setup(&iam).await;
    // api:read needs the reader role, which the ops group holds.
    admin(
        &iam,
        Method::POST,
        "/admin/roles",
        Some(json!({"name": "reader", "scopes": ["api:read"], "groups": ["ops"]})),
    )
    .await;
    let (status, _) = admin(
        &iam,
        Method::PATCH,
        "/admin/users/alice",
        Some(json!({"roles": ["viewer"]})),
    )
    .await;
    assert_eq!(status, 200);
    // Not in the group yet: api:read is left out; the direct role is carried.
    let mut b = Browser::new();
    let (status, v) = flow(&iam, &mut b).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["scope"], "openid");
    let claims = payload(v["access_token"].as_str().unwrap());
    assert_eq!(claims["roles"], json!(["viewer"]));

    // In the group: the group's role, and its scope.
    admin(
        &iam,
        Method::PATCH,
        "/admin/users/alice",
        Some(json!({"groups": ["ops"]})),
    )
    .await;
    let (status, v) = flow(&iam, &mut b).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["scope"], "api:read openid");
    let claims = payload(v["access_token"].as_str().unwrap());
    assert_eq!(claims["roles"], json!(["reader", "viewer"]));
    assert_eq!(claims["scope"], "api:read openid");

    // Out of the group again: the next refresh narrows the scope.
    let refresh = v["refresh_token"].as_str().unwrap().to_owned();
    admin(
        &iam,
        Method::PATCH,
        "/admin/users/alice",
        Some(json!({"groups": []})),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(5100)).await; // the role cache
    let (status, v) = token(
        &iam,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "spa"),
            ("refresh_token", &refresh),
        ],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["scope"], "openid");
    let claims = payload(v["access_token"].as_str().unwrap());
    assert_eq!(claims["roles"], json!(["viewer"]));
}

/// The SPA's code flow for `openid api:read`, redeemed.
async fn flow(iam: &TestIam, b: &mut Browser) -> (u16, Value) {
    let url = authorize_url(iam, "spa", SPA_CB, &[("scope", "openid api:read")]);
    let page = b.get(&url).await;
    let done = if page.status == 200 {
        sign_in(iam, b, &page, "alice", PASSWORD).await
    } else {
        page
    };
    redeem(iam, &done.query()["code"], &[]).await
}
