//! A cookie-keeping, redirect-refusing browser and the steps of the code
//! flow, shared by the browser-login tests.

#![allow(dead_code, clippy::unwrap_used)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use portcullis_test_support::TestIam;
use reqwest::Method;
use serde_json::{Value, json};

pub const PASSWORD: &str = "correct horse battery staple";
pub const SPA_CB: &str = "https://spa.example/cb";
pub const WEB_CB: &str = "https://web.example/cb";
/// A PKCE verifier and its S256 challenge.
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

pub use portcullis_test_support::browser::{Browser, Page};

/// An IAM server with user alice, a public first-party SPA and a
/// confidential third-party web app (returns the web app's secret).
pub async fn setup(iam: &TestIam) -> String {
    let r = iam
        .admin_call(
            Method::POST,
            "/admin/users",
            Some(json!({"username": "alice", "password": PASSWORD,
                        "email": "alice@example.com", "email_verified": true,
                        "display_name": "Alice Liddell"})),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let v = iam
        .create_client(
            json!({"client_id": "spa", "public": true, "first_party": true,
            "redirect_uris": [SPA_CB, "http://127.0.0.1/cb"],
            "post_logout_redirect_uris": ["https://spa.example/bye"],
            "allowed_scopes": ["openid", "profile", "email", "api:read"],
            "default_scopes": ["openid"],
            "allowed_audiences": ["api"], "default_audiences": ["api"]}),
        )
        .await;
    assert_eq!(v["client_id"], "spa", "{v}");
    let v = iam
        .create_client(json!({"client_id": "web", "name": "Web <b>App</b>",
            "grant_types": ["authorization_code", "refresh_token"],
            "redirect_uris": [WEB_CB], "require_pkce": false,
            "allowed_scopes": ["openid", "profile"], "default_scopes": ["openid"]}))
        .await;
    v["client_secret"].as_str().unwrap().to_owned()
}

/// An authorization URL with PKCE; `extra` parameters replace the defaults.
pub fn authorize_url(
    iam: &TestIam,
    client: &str,
    redirect: &str,
    extra: &[(&str, &str)],
) -> String {
    let scope = if client == "web" {
        "openid profile"
    } else {
        "openid profile email"
    };
    let defaults = [
        ("response_type", "code"),
        ("client_id", client),
        ("redirect_uri", redirect),
        ("scope", scope),
        ("state", "st-1"),
        ("nonce", "n-1"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in defaults {
        if !extra.iter().any(|(ek, _)| *ek == k) {
            q.append_pair(k, v);
        }
    }
    // An empty value in `extra` removes the parameter.
    for (k, v) in extra.iter().filter(|(_, v)| !v.is_empty()) {
        q.append_pair(k, v);
    }
    format!("{}/oauth2/authorize?{}", iam.base, q.finish())
}

/// Signs in on a sign-in page.
pub async fn sign_in(iam: &TestIam, b: &mut Browser, page: &Page, user: &str, pw: &str) -> Page {
    b.sign_in(&iam.url("/oauth2/login"), page, user, pw).await
}

/// Runs the SPA's flow to a code.
pub async fn spa_code(iam: &TestIam, b: &mut Browser) -> String {
    let page = b.get(&authorize_url(iam, "spa", SPA_CB, &[])).await;
    let done = if page.status == 200 {
        sign_in(iam, b, &page, "alice", PASSWORD).await
    } else {
        page
    };
    let q = done.query();
    assert_eq!(q.get("state").map(String::as_str), Some("st-1"));
    q["code"].clone()
}

/// Redeems a code for the SPA.
pub async fn redeem(iam: &TestIam, code: &str, extra: &[(&str, &str)]) -> (u16, Value) {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("client_id", "spa"),
        ("code", code),
        ("redirect_uri", SPA_CB),
        ("code_verifier", VERIFIER),
    ];
    for (k, v) in extra {
        form.retain(|(fk, _)| fk != k);
        if !v.is_empty() {
            form.push((k, v));
        }
    }
    token(iam, &form).await
}

pub async fn token(iam: &TestIam, form: &[(&str, &str)]) -> (u16, Value) {
    let r = iam
        .http
        .post(iam.token_url())
        .form(form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// A JWT's payload, unverified.
pub fn payload(jwt: &str) -> Value {
    let p = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&B64.decode(p).unwrap()).unwrap()
}

/// Whether introspection (as the web client) says the token is active.
pub async fn active(iam: &TestIam, web_secret: &str, token: &str) -> bool {
    let r = iam
        .http
        .post(iam.url("/oauth2/introspect"))
        .basic_auth("web", Some(web_secret))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    v["active"] == true
}

/// Redeems a code as the confidential web app, with the SPA's verifier.
pub async fn redeem_as_web(
    iam: &TestIam,
    secret: &str,
    code: &str,
    redirect: &str,
) -> (u16, Value) {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect),
        ("code_verifier", VERIFIER),
    ];
    let r = iam
        .http
        .post(iam.token_url())
        .basic_auth("web", Some(secret))
        .form(&form);
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}
