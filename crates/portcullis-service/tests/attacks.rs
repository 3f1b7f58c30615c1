//! Crafted tokens against a service guarded by the library, over real HTTP.
//! Every one must be refused with 401 `invalid_token`, without a panic and
//! without echoing the token.

#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use portcullis_core::jose::SigningAlgorithm;
use portcullis_service::{
    Authenticated, BearerAuth, RequireRoles, RequireScopes, Validator, ValidatorConfig,
};
use portcullis_test_support::FakeIssuer;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;

const AUD: &str = "inventory-api";

struct Service {
    url: String,
    http: reqwest::Client,
    validator: Arc<Validator>,
}

async fn service(
    issuer: &FakeIssuer,
    tweak: impl FnOnce(ValidatorConfig) -> ValidatorConfig,
) -> Service {
    let cfg = tweak(ValidatorConfig::new(&issuer.issuer, AUD));
    let validator = Validator::start(cfg).await;
    let app = Router::new()
        .route(
            "/items",
            get(|Authenticated(p): Authenticated| async move {
                axum::Json(json!({"sub": p.subject, "scopes": p.scopes}))
            }),
        )
        .route(
            "/admin",
            get(|| async { "admin" }).route_layer(RequireScopes::new(["admin"])),
        )
        .route(
            "/ops",
            get(|Authenticated(p): Authenticated| async move {
                axum::Json(json!({"roles": p.roles, "actors": p.actors}))
            })
            .route_layer(RequireRoles::new(["operator"])),
        )
        .layer(BearerAuth::new(validator.clone(), "inventory"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Service {
        url,
        http: portcullis_test_support::http_client(),
        validator,
    }
}

impl Service {
    async fn call(&self, path: &str, token: &str) -> (u16, String, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let challenge = r
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = r.json().await.unwrap_or(Value::Null);
        (status, challenge, body)
    }

    async fn refused(&self, what: &str, token: &str) {
        let (status, challenge, body) = self.call("/items", token).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{what}: {challenge}"
        );
        assert!(
            challenge.starts_with("Bearer realm=\"inventory\""),
            "{what}: {challenge}"
        );
        if token.len() > 8 {
            assert!(
                !body.to_string().contains(token) && !challenge.contains(token),
                "{what}: token echoed"
            );
        }
    }
}

fn enc(v: &Value) -> String {
    B64.encode(v.to_string())
}

fn forge(header: Value, claims: &Value, sig: &[u8]) -> String {
    format!("{}.{}.{}", enc(&header), enc(claims), B64.encode(sig))
}

fn hmac(key: &[u8], msg: &str) -> Vec<u8> {
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    aws_lc_rs::hmac::sign(&k, msg.as_bytes()).as_ref().to_vec()
}

/// SubjectPublicKeyInfo DER of a P-256 public JWK.
fn spki_der(jwk: &Value) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04,
    ];
    der.extend(B64.decode(jwk["x"].as_str().unwrap()).unwrap());
    der.extend(B64.decode(jwk["y"].as_str().unwrap()).unwrap());
    der
}

#[tokio::test]
async fn a_valid_token_passes_and_the_principal_is_typed() {
    let iss = FakeIssuer::start().await;
    let svc = service(&iss, |c| c).await;
    let t = iss.sign(&iss.claims(AUD));
    let (status, _, body) = svc.call("/items", &t).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"sub": "svc-a", "scopes": ["read", "write"]}));
    // Missing token: bare challenge with realm, no error code (RFC 6750 §3.1).
    let r = svc
        .http
        .get(format!("{}/items", svc.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"inventory\""
    );
    // Insufficient scope: 403 naming the scope.
    let (status, challenge, _) = svc.call("/admin", &t).await;
    assert_eq!(status, 403);
    assert_eq!(
        challenge,
        "Bearer realm=\"inventory\", error=\"insufficient_scope\", scope=\"admin\""
    );
    // Roles guard, and the actor chain from nested `act` claims.
    assert_eq!(svc.call("/ops", &t).await.0, 403);
    let mut c = iss.claims(AUD);
    c["roles"] = json!(["operator", "viewer"]);
    c["act"] = json!({"sub": "bff", "client_id": "bff", "act": {"sub": "gateway"}});
    let (status, _, body) = svc.call("/ops", &iss.sign(&c)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["roles"], json!(["operator", "viewer"]));
    assert_eq!(
        body["actors"],
        json!([{"subject": "bff", "client_id": "bff"}, {"subject": "gateway"}])
    );
}

#[tokio::test]
async fn algorithm_attacks() {
    let iss = FakeIssuer::start().await;
    let svc = service(&iss, |c| c).await;
    let kid = iss.key.kid().to_owned();
    let claims = iss.claims(AUD);
    for alg in ["none", "None", "noNE", "NONE"] {
        svc.refused(
            alg,
            &forge(
                json!({"alg": alg, "kid": kid, "typ": "at+jwt"}),
                &claims,
                b"",
            ),
        )
        .await;
        svc.refused(
            alg,
            &format!(
                "{}.{}.",
                enc(&json!({"alg": alg, "kid": kid, "typ": "at+jwt"})),
                enc(&claims)
            ),
        )
        .await;
    }
    // HS256 keyed with the public key as PEM, DER and JWK JSON.
    let der = spki_der(iss.key.public_jwk());
    let b64 = STANDARD.encode(&der);
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n{}\n-----END PUBLIC KEY-----\n",
        &b64[..64],
        &b64[64..]
    );
    let jwk_json = iss.key.public_jwk().to_string();
    for (what, key) in [
        ("PEM", pem.as_bytes()),
        ("DER", der.as_slice()),
        ("JWK", jwk_json.as_bytes()),
    ] {
        let input = format!(
            "{}.{}",
            enc(&json!({"alg": "HS256", "kid": kid, "typ": "at+jwt"})),
            enc(&claims)
        );
        let t = format!("{input}.{}", B64.encode(hmac(key, &input)));
        svc.refused(&format!("HS256 with {what}"), &t).await;
    }
    // ES256 with r = s = 0, and r = s = n (the curve order).
    let n = hex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
    for sig in [
        vec![0u8; 64],
        [n.clone(), n.clone()].concat(),
        [vec![0xff; 32], vec![0xff; 32]].concat(),
    ] {
        svc.refused(
            "ES256 degenerate signature",
            &forge(
                json!({"alg": "ES256", "kid": kid, "typ": "at+jwt"}),
                &claims,
                &sig,
            ),
        )
        .await;
    }
    // The valid key, another algorithm.
    for alg in ["ES384", "RS256", "PS256", "EdDSA"] {
        svc.refused(
            alg,
            &forge(
                json!({"alg": alg, "kid": kid, "typ": "at+jwt"}),
                &claims,
                &[1; 64],
            ),
        )
        .await;
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test]
async fn key_source_attacks_trigger_no_fetch() {
    let iss = FakeIssuer::start().await;
    let svc = service(&iss, |c| c).await;
    let claims = iss.claims(AUD);
    let fetches = || iss.state.jwks_fetches.load(Ordering::SeqCst);
    let base = fetches();
    // Unknown and hostile kids: refused; unknown kids are negatively cached.
    let attacker = portcullis_core::jose::SigningKey::generate(SigningAlgorithm::Es256).unwrap();
    let hostile = [
        "../../etc/passwd",
        "' OR 1=1 --",
        "a\u{0}b",
        &"k".repeat(10 * 1024),
        "unknown",
    ];
    for kid in hostile {
        let mut h = serde_json::Map::new();
        h.insert("typ".into(), "at+jwt".into());
        let t = attacker.sign_with_header(h, &claims).unwrap();
        let t = t.replacen(
            t.split('.').next().unwrap(),
            &enc(&json!({"alg": "ES256", "kid": kid, "typ": "at+jwt"})),
            1,
        );
        svc.refused(&format!("kid {:?}", &kid[..kid.len().min(20)]), &t)
            .await;
    }
    assert!(
        fetches() - base <= 1,
        "at most one refetch for unknown kids in the interval"
    );
    // Embedded jwk carrying the attacker's key, and jku / x5u pointing elsewhere.
    let jku = format!("{}/elsewhere", iss.issuer);
    for extra in [
        json!({"jwk": attacker.public_jwk()}),
        json!({"jku": jku}),
        json!({"x5u": jku}),
        json!({"jwk": attacker.public_jwk(), "jku": jku}),
    ] {
        let mut h = serde_json::Map::new();
        h.insert("typ".into(), "at+jwt".into());
        if let Value::Object(m) = extra {
            h.extend(m);
        }
        let t = attacker.sign_with_header(h, &claims).unwrap();
        svc.refused("attacker key in header", &t).await;
    }
    assert_eq!(
        iss.state.other_fetches.load(Ordering::SeqCst),
        0,
        "jku/x5u were never fetched"
    );
}

#[tokio::test]
async fn claim_attacks() {
    let iss = FakeIssuer::start().await;
    let svc = service(&iss, |c| c).await;
    let now = portcullis_core::Clock::now(&portcullis_core::SystemClock);
    let with = |k: &str, v: Value| {
        let mut c = iss.claims(AUD);
        c[k] = v;
        c
    };
    let cases: Vec<(&str, Value)> = vec![
        ("expired", with("exp", json!(now - 100))),
        ("nbf in the future", with("nbf", json!(now + 600))),
        ("iat in the future", with("iat", json!(now + 600))),
        ("exp as string", with("exp", json!((now + 300).to_string()))),
        ("exp as float", with("exp", json!((now + 300) as f64 + 0.5))),
        ("exp null", with("exp", Value::Null)),
        ("exp huge", with("exp", json!(1e300))),
        ("exp negative", with("exp", json!(-1))),
        ("wrong aud", with("aud", json!("billing-api"))),
        (
            "aud array without us",
            with("aud", json!(["billing-api", "payments-api"])),
        ),
        (
            "iss trailing slash",
            with("iss", json!(format!("{}/", iss.issuer))),
        ),
        (
            "iss other case",
            with("iss", json!(iss.issuer.to_uppercase())),
        ),
    ];
    for (what, c) in &cases {
        svc.refused(what, &iss.sign(c)).await;
    }
    for claim in ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"] {
        let mut c = iss.claims(AUD);
        c.as_object_mut().unwrap().remove(claim);
        svc.refused(&format!("missing {claim}"), &iss.sign(&c))
            .await;
    }
    // typ JWT (an ID token), and no typ.
    svc.refused(
        "typ JWT",
        &iss.sign_with_header(json!({"typ": "JWT"}), &iss.claims(AUD)),
    )
    .await;
    let mut h = serde_json::Map::new();
    h.insert("crit".into(), json!(["exp"]));
    h.insert("typ".into(), "at+jwt".into());
    svc.refused(
        "unknown crit",
        &iss.key.sign_with_header(h, &iss.claims(AUD)).unwrap(),
    )
    .await;
    // Duplicate claim names, signed properly.
    let payload = format!(
        r#"{{"iss":"{i}","sub":"svc-a","aud":"{AUD}","exp":{e},"iat":{now},"jti":"d","client_id":"svc-a","scope":"read","scope":"admin"}}"#,
        i = iss.issuer,
        e = now + 300
    );
    let header = enc(&json!({"alg": "ES256", "kid": iss.key.kid(), "typ": "at+jwt"}));
    let input = format!("{header}.{}", B64.encode(&payload));
    let sig = iss.key.sign_raw(input.as_bytes()).unwrap();
    svc.refused("duplicate claims", &format!("{input}.{}", B64.encode(sig)))
        .await;
    // Deeply nested JSON, signed properly.
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let payload = format!(r#"{{"iss":"{}","deep":{deep}}}"#, iss.issuer);
    let input = format!("{header}.{}", B64.encode(&payload));
    let sig = iss.key.sign_raw(input.as_bytes()).unwrap();
    svc.refused("deep nesting", &format!("{input}.{}", B64.encode(sig)))
        .await;
}

#[tokio::test]
async fn structural_attacks() {
    let iss = FakeIssuer::start().await;
    let svc = service(&iss, |c| c).await;
    let good = iss.sign(&iss.claims(AUD));
    let parts: Vec<&str> = good.split('.').collect();
    let cases = vec![
        ("trailing junk", format!("{good}.junk")),
        ("trailing junk no dot", format!("{good}AAAA")),
        ("two segments", format!("{}.{}", parts[0], parts[1])),
        (
            "four segments",
            format!("{}.{}.{}.{}", parts[0], parts[1], parts[2], parts[2]),
        ),
        ("one segment", parts[0].to_owned()),
        (
            "non-base64url in payload",
            format!("{}.{}+/.{}", parts[0], parts[1], parts[2]),
        ),
        (
            "padding",
            format!("{}.{}==.{}", parts[0], parts[1], parts[2]),
        ),
        (
            "10 KB",
            format!("{}.{}.{}", parts[0], "A".repeat(10 * 1024), parts[2]),
        ),
        ("empty segments", "..".to_owned()),
    ];
    for (what, t) in &cases {
        svc.refused(what, t).await;
    }
    // 1 MB: refused by the validator before any parsing.
    let huge = "a".repeat(1024 * 1024);
    assert!(matches!(
        svc.validator.validate(&huge).await,
        Err(portcullis_service::AuthError::Invalid(
            portcullis_core::jose::ValidationError::TooLarge
        ))
    ));
    // Not even b64token syntax.
    let (status, challenge, _) = svc.call("/items", "a\"b").await;
    assert_eq!((status, challenge.contains("invalid_token")), (401, true));
    // Two Authorization headers: 400 invalid_request.
    let r = svc
        .http
        .get(format!("{}/items", svc.url))
        .header("authorization", format!("Bearer {good}"))
        .header("authorization", format!("Bearer {good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The good token still works after all that.
    assert_eq!(svc.call("/items", &good).await.0, 200);
}

#[tokio::test]
async fn revoked_tokens_are_refused_after_the_poll_interval() {
    let iss = FakeIssuer::start().await;
    let svc = service(&iss, |mut c| {
        c.revocation_poll = std::time::Duration::from_millis(200);
        c
    })
    .await;
    let mut c = iss.claims(AUD);
    c["jti"] = json!("to-revoke");
    let t = iss.sign(&c);
    assert_eq!(svc.call("/items", &t).await.0, 200, "valid, and now cached");
    iss.state.revocations.lock().unwrap().push(json!({"seq": 1, "kind": "jti", "subject": "to-revoke", "expires_at": c["exp"], "revoked_at": 0}));
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    svc.refused("revoked jti (cached before)", &t).await;
    // A client-wide revocation covers tokens issued before it.
    let c2 = iss.claims(AUD);
    let t2 = iss.sign(&c2);
    iss.state.revocations.lock().unwrap().push(
        json!({"seq": 2, "kind": "client", "subject": "svc-a", "issued_before": c2["iat"], "expires_at": c2["exp"], "revoked_at": 0}),
    );
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    svc.refused("revoked client", &t2).await;
}
