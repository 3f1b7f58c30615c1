//! Token exchange (RFC 8693) over HTTP against the real server: a chain of
//! three services, each exchanging the token it received for one to the
//! next; and every refusal with its RFC error code.

#![allow(clippy::unwrap_used)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_iam::config::{RawExchangeRule, RawTokenExchange};
use portcullis_test_support::{SecretClient, TestIam, verify_with_jwks};
use serde_json::{Value, json};

const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const AT: &str = "urn:ietf:params:oauth:token-type:access_token";

fn rule(client: &str, from: &str, to: &str, scopes: &[&str]) -> RawExchangeRule {
    RawExchangeRule {
        client: client.into(),
        subject_audiences: vec![from.into()],
        audiences: vec![to.into()],
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
    }
}

async fn start() -> TestIam {
    TestIam::start_with(|c| {
        c.token_exchange = RawTokenExchange {
            max_depth: Some(2),
            rules: vec![
                rule(
                    "orders",
                    "orders-api",
                    "inventory-api",
                    &["inventory:read", "orders:read"],
                ),
                rule(
                    "inventory",
                    "inventory-api",
                    "pricing-api",
                    &["inventory:read"],
                ),
                rule("pricing", "pricing-api", "audit-api", &["inventory:read"]),
                rule("billing", "billing-api", "ledger-api", &["inventory:read"]),
            ],
        }
    })
    .await
}

/// A confidential client allowed client credentials and token exchange.
async fn service(iam: &TestIam, id: &str, grants: &[&str]) -> SecretClient {
    let v = iam
        .create_client(json!({
            "client_id": id,
            "grant_types": grants,
            "allowed_scopes": ["orders:read", "inventory:read", "orders:write"],
            "default_scopes": ["orders:read", "inventory:read"],
            "allowed_audiences": ["orders-api"],
            "default_audiences": ["orders-api"],
        }))
        .await;
    SecretClient {
        id: id.into(),
        secret: v["client_secret"].as_str().unwrap().into(),
    }
}

async fn exchange(iam: &TestIam, c: &SecretClient, form: &[(&str, &str)]) -> (u16, Value) {
    let mut f = vec![("grant_type", GRANT)];
    f.extend_from_slice(form);
    let r = iam.token_basic(c, &f).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn claims(token: &str) -> Value {
    let p = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
}

#[tokio::test]
async fn a_chain_of_three_services_carries_the_subject_and_nests_act() {
    let iam = start().await;
    let cc = "client_credentials";
    let frontend = service(&iam, "frontend", &[cc]).await;
    let orders = service(&iam, "orders", &[cc, GRANT]).await;
    let inventory = service(&iam, "inventory", &[cc, GRANT]).await;
    let pricing = service(&iam, "pricing", &[cc, GRANT]).await;

    // The frontend calls orders with a token for orders-api.
    let t0 = iam.access_token(&frontend).await;
    // orders exchanges it for inventory.
    let (status, v) = exchange(
        &iam,
        &orders,
        &[
            ("subject_token", &t0),
            ("subject_token_type", AT),
            ("audience", "inventory-api"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["issued_token_type"], AT);
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(
        v["scope"], "inventory:read orders:read",
        "narrowed to the rule"
    );
    let t1 = v["access_token"].as_str().unwrap().to_owned();
    let jwks = iam.jwks().await;
    verify_with_jwks(&t1, &jwks, &iam.issuer, "inventory-api").unwrap();
    let c1 = claims(&t1);
    assert_eq!(c1["sub"], "frontend", "the original subject");
    assert_eq!(c1["client_id"], "orders");
    assert_eq!(c1["act"], json!({"sub": "orders"}));
    assert!(c1["exp"].as_u64().unwrap() <= claims(&t0)["exp"].as_u64().unwrap());
    assert_eq!(iam.introspect(&frontend, &t1).await["active"], true);

    // inventory exchanges that for pricing, with the resource parameter and a
    // narrower scope.
    let (status, v) = exchange(
        &iam,
        &inventory,
        &[
            ("subject_token", &t1),
            ("subject_token_type", AT),
            ("resource", "pricing-api"),
            ("scope", "inventory:read"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let t2 = v["access_token"].as_str().unwrap().to_owned();
    let c2 = claims(&t2);
    assert_eq!(c2["sub"], "frontend");
    assert_eq!(c2["aud"], "pricing-api");
    assert_eq!(c2["scope"], "inventory:read");
    assert_eq!(
        c2["act"],
        json!({"sub": "inventory", "act": {"sub": "orders"}}),
        "the current actor outermost, earlier ones nested"
    );

    // A third hop would exceed max_depth = 2.
    let (status, v) = exchange(
        &iam,
        &pricing,
        &[("subject_token", &t2), ("subject_token_type", AT)],
    )
    .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("invalid_request")),
        "{v}"
    );
    assert!(v["error_description"].as_str().unwrap().contains("chain"));
}

#[tokio::test]
async fn refused_exchanges_get_the_rfc_error_codes() {
    let iam = start().await;
    let cc = "client_credentials";
    let frontend = service(&iam, "frontend", &[cc]).await;
    let orders = service(&iam, "orders", &[cc, GRANT]).await;
    let billing = service(&iam, "billing", &[cc, GRANT]).await;
    let stranger = service(&iam, "stranger", &[cc, GRANT]).await;
    let t0 = iam.access_token(&frontend).await;
    let sub = |t: &str| {
        vec![
            ("subject_token", t.to_owned()),
            ("subject_token_type", AT.to_owned()),
        ]
    };
    let expect = |(status, v): (u16, Value), want: (u16, &str), why: &str| {
        assert_eq!(
            (status, v["error"].as_str().unwrap_or("")),
            want,
            "{why}: {v}"
        );
    };
    let run = |c: &SecretClient, form: Vec<(&'static str, String)>| {
        let pairs: Vec<(&str, String)> = form;
        let iam = &iam;
        let c = c.clone();
        async move {
            let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            exchange(iam, &c, &refs).await
        }
    };

    // A client without the grant, and one with it but no rule.
    let plain = service(&iam, "plain", &[cc]).await;
    expect(
        run(&plain, sub(&t0)).await,
        (400, "unauthorized_client"),
        "no grant",
    );
    expect(
        run(&stranger, sub(&t0)).await,
        (400, "unauthorized_client"),
        "no rule",
    );
    // A rule, but the subject token was not sent to this client's API.
    expect(
        run(&billing, sub(&t0)).await,
        (400, "invalid_request"),
        "foreign subject",
    );
    // Targets and scopes outside the rule, or wider than the subject token.
    let mut f = sub(&t0);
    f.push(("audience", "payments-api".into()));
    expect(run(&orders, f).await, (400, "invalid_target"), "audience");
    let mut f = sub(&t0);
    f.push(("scope", "orders:write".into()));
    expect(run(&orders, f).await, (400, "invalid_scope"), "widening");
    // Malformed requests.
    expect(
        run(&orders, vec![("subject_token", t0.clone())]).await,
        (400, "invalid_request"),
        "no subject_token_type",
    );
    expect(
        run(&orders, vec![("subject_token_type", AT.into())]).await,
        (400, "invalid_request"),
        "no subject_token",
    );
    let mut f = sub(&t0);
    f[1].1 = "urn:ietf:params:oauth:token-type:saml2".into();
    expect(run(&orders, f).await, (400, "invalid_request"), "saml2");
    let mut f = sub(&t0);
    f.push((
        "requested_token_type",
        "urn:ietf:params:oauth:token-type:id_token".into(),
    ));
    expect(
        run(&orders, f).await,
        (400, "invalid_request"),
        "id_token wanted",
    );
    expect(
        run(&orders, sub("not.a.token")).await,
        (400, "invalid_request"),
        "garbage",
    );
    // An actor token must be the caller's own.
    let mut f = sub(&t0);
    f.push(("actor_token", t0.clone()));
    f.push(("actor_token_type", AT.into()));
    expect(
        run(&orders, f).await,
        (400, "invalid_request"),
        "someone else's actor token",
    );
    let own = iam.access_token(&orders).await;
    let mut f = sub(&t0);
    f.push(("actor_token", own));
    f.push(("actor_token_type", AT.into()));
    assert_eq!(run(&orders, f).await.0, 200, "its own actor token");
    // A revoked subject token.
    let r = iam
        .http
        .post(iam.url("/oauth2/revoke"))
        .basic_auth(&frontend.id, Some(&frontend.secret))
        .form(&[("token", t0.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    expect(
        run(&orders, sub(&t0)).await,
        (400, "invalid_request"),
        "revoked",
    );
    // Discovery lists the grant.
    let d: Value = iam
        .http
        .get(iam.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        d["grant_types_supported"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g == GRANT)
    );
    // A public client cannot be given the grant.
    let r = iam
        .admin_call(
            reqwest::Method::POST,
            "/admin/clients",
            Some(json!({"client_id": "spa", "public": true, "grant_types": [GRANT]})),
        )
        .await;
    assert_eq!(r.status(), 400);
}

#[test]
fn the_exchange_configuration_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let bad = |f: &dyn Fn(&mut RawTokenExchange)| {
        let mut raw = portcullis_test_support::test_config(dir.path());
        let mut x = RawTokenExchange {
            max_depth: None,
            rules: vec![rule(
                "orders",
                "orders-api",
                "inventory-api",
                &["inventory:read"],
            )],
        };
        f(&mut x);
        raw.token_exchange = x;
        raw.validate(&|_| None)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert!(bad(&|_| {}).is_ok());
    assert!(
        bad(&|x| x.max_depth = Some(0))
            .unwrap_err()
            .contains("token_exchange.max_depth")
    );
    assert!(
        bad(&|x| x.rules[0].audiences.clear())
            .unwrap_err()
            .contains("rules[0].audiences")
    );
    assert!(
        bad(&|x| x.rules[0].client = "bad id!".into())
            .unwrap_err()
            .contains("rules[0].client")
    );
    assert!(
        bad(&|x| x.rules[0].scopes = vec!["a b".into()])
            .unwrap_err()
            .contains("rules[0].scopes")
    );
}
