//! Clients for browser logins: public clients, redirect URIs, consent and
//! PKCE settings, through the admin API and the config file.

#![allow(clippy::unwrap_used)]

use portcullis_iam::config::RawClient;
use portcullis_test_support::TestIam;
use reqwest::Method;
use serde_json::{Value, json};

async fn create(iam: &TestIam, body: Value) -> (u16, Value) {
    let r = iam
        .admin_call(Method::POST, "/admin/clients", Some(body))
        .await;
    (r.status().as_u16(), r.json().await.unwrap())
}

fn problem(v: &Value) -> &str {
    v["error_description"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_public_client_has_no_secret_and_only_the_code_grants() {
    let iam = TestIam::start().await;
    let (status, v) = create(
        &iam,
        json!({"client_id": "spa", "public": true,
               "redirect_uris": ["https://app.example/cb", "http://127.0.0.1/cb"],
               "post_logout_redirect_uris": ["https://app.example/bye"],
               "allowed_scopes": ["openid", "profile"]}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert!(v.get("client_secret").is_none(), "{v}");
    assert_eq!(v["token_endpoint_auth_methods"], json!(["none"]));
    assert_eq!(
        v["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(v["require_pkce"], true);
    assert_eq!(v["first_party"], false);
    assert_eq!(
        v["post_logout_redirect_uris"],
        json!(["https://app.example/bye"])
    );

    // It cannot get tokens with client credentials: it has none.
    let r = iam
        .http
        .post(iam.token_url())
        .form(&[("grant_type", "client_credentials"), ("client_id", "spa")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");

    // Nor be given a secret, nor turned confidential afterwards.
    let r = iam
        .admin_call(Method::POST, "/admin/clients/spa/rotate-secret", None)
        .await;
    assert_eq!(r.status(), 400);
    let patch = |body: Value| iam.admin_call(Method::PATCH, "/admin/clients/spa", Some(body));
    assert_eq!(patch(json!({"public": false})).await.status(), 400);
    // Redirect URIs can be replaced, and are checked when they are.
    let r = patch(json!({"redirect_uris": ["https://app.example/new"], "first_party": true})).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["redirect_uris"], json!(["https://app.example/new"]));
    assert_eq!(v["first_party"], true);
    // Survives a reload from the store.
    let r = iam
        .admin_call(Method::GET, "/admin/clients/spa", None)
        .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["redirect_uris"], json!(["https://app.example/new"]));
    assert_eq!(v["token_endpoint_auth_methods"], json!(["none"]));
}

#[tokio::test]
async fn inconsistent_login_settings_are_refused_naming_the_field() {
    let iam = TestIam::start().await;
    let cases = [
        (
            json!({"public": true, "redirect_uris": ["https://a.example/cb"],
                   "grant_types": ["authorization_code", "client_credentials"]}),
            "grant_types",
        ),
        (
            json!({"public": true, "redirect_uris": ["https://a.example/cb"], "require_pkce": false}),
            "require_pkce",
        ),
        (
            json!({"grant_types": ["authorization_code"]}),
            "redirect_uris",
        ),
        (
            json!({"redirect_uris": ["https://a.example/cb"]}),
            "redirect_uris",
        ),
        (json!({"grant_types": ["refresh_token"]}), "grant_types"),
        (
            json!({"public": true, "jwks_uri": "https://a.example/jwks"}),
            "public",
        ),
    ];
    for (body, field) in cases {
        let (status, v) = create(&iam, body.clone()).await;
        assert_eq!(status, 400, "{body} -> {v}");
        assert!(problem(&v).starts_with(field), "{body} -> {v}");
    }
    for bad in [
        "https://a.example/cb#fragment",
        "http://a.example/cb",
        "https://user@a.example/cb",
        "https://A.example/cb",
        "/relative",
        "javascript:alert(1)",
    ] {
        let (status, v) = create(
            &iam,
            json!({"grant_types": ["authorization_code"], "redirect_uris": [bad]}),
        )
        .await;
        assert_eq!(status, 400, "{bad} -> {v}");
        assert!(problem(&v).starts_with("redirect_uris"), "{bad} -> {v}");
    }
    let (status, v) = create(
        &iam,
        json!({"grant_types": ["client_credentials"],
               "post_logout_redirect_uris": ["https://a.example/bye#x"]}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
}

#[tokio::test]
async fn the_code_grants_are_served_and_advertised() {
    let iam = TestIam::start().await;
    let (status, v) = create(
        &iam,
        json!({"client_id": "web", "grant_types": ["authorization_code", "refresh_token"],
               "redirect_uris": ["https://web.example/cb"]}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let secret = v["client_secret"].as_str().unwrap().to_owned();
    let r = iam
        .http
        .post(iam.token_url())
        .basic_auth("web", Some(&secret))
        .form(&[("grant_type", "authorization_code"), ("code", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    let d = iam.http.get(iam.url("/.well-known/openid-configuration"));
    let d: Value = d.send().await.unwrap().json().await.unwrap();
    let grants = d["grant_types_supported"].as_array().unwrap();
    for g in ["authorization_code", "refresh_token"] {
        assert!(grants.iter().any(|v| v == g), "{g} advertised");
    }
    assert_eq!(d["response_types_supported"], json!(["code"]));
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
}

#[tokio::test]
async fn declared_public_clients_are_applied_and_checked() {
    let iam = TestIam::start_with(|c| {
        c.clients = vec![RawClient {
            id: "demo-web".into(),
            public: true,
            grant_types: Some(vec!["authorization_code".into(), "refresh_token".into()]),
            redirect_uris: vec!["http://127.0.0.1:9000/callback".into()],
            first_party: true,
            ..Default::default()
        }];
    })
    .await;
    let v: Value = iam
        .admin_call(Method::GET, "/admin/clients/demo-web", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["token_endpoint_auth_methods"], json!(["none"]));
    assert_eq!(v["first_party"], true);
    assert_eq!(
        v["redirect_uris"],
        json!(["http://127.0.0.1:9000/callback"])
    );

    let mut raw = portcullis_iam::config::RawConfig {
        mode: Some("development".into()),
        ..Default::default()
    };
    raw.clients = vec![RawClient {
        id: "both".into(),
        public: true,
        secret: Some("s".repeat(40)),
        ..Default::default()
    }];
    let e = raw.clone().validate(&|_| None).unwrap_err().to_string();
    assert!(e.contains("clients[0].public"), "{e}");
    raw.clients = vec![RawClient {
        id: "bad".into(),
        public: true,
        grant_types: Some(vec!["authorization_code".into()]),
        redirect_uris: vec!["http://evil.example/cb".into()],
        ..Default::default()
    }];
    let e = raw.validate(&|_| None).unwrap_err().to_string();
    assert!(e.contains("redirect_uris"), "{e}");
}
