//! The gateway over real sockets, in front of a real upstream that reports
//! exactly what reached it, with the real IAM server for token methods.

#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::extract::Request;
use axum::routing::any;
use portcullis_gateway::config::{
    RawApiKey, RawAuthenticator, RawBasic, RawConfig, RawConsumer, RawRateLimit, RawRoute,
    RawTimeouts, RawUpstream,
};
use portcullis_service::{Validator, ValidatorConfig};
use portcullis_test_support::{TestIam, basic, free_port};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

const API_KEY: &str = "pak_test-key-0123456789abcdefghijklmnopqrstuv";

/// An upstream that answers with what it received; `/slow` hangs.
async fn echo_upstream() -> std::net::SocketAddr {
    let app = Router::new().fallback(any(|req: Request| async move {
        if req.uri().path().starts_with("/slow") {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        if req.uri().path().ends_with("/delay") {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let headers: serde_json::Map<String, Value> = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    Value::from(v.to_str().unwrap_or("<binary>")),
                )
            })
            .collect();
        axum::Json(json!({
            "method": req.method().as_str(),
            "path": req.uri().path(),
            "query": req.uri().query(),
            "headers": headers,
        }))
    }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    addr
}

fn sha256_hex(s: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn route(name: &str, prefix: &str, auth: &[&str], upstream: &str) -> RawRoute {
    RawRoute {
        name: name.into(),
        path_prefix: prefix.into(),
        upstream: upstream.into(),
        auth: auth.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

struct Env {
    iam: TestIam,
    gw: portcullis_gateway::RunningGateway,
    http: reqwest::Client,
    svc: portcullis_test_support::SecretClient,
    internal: Arc<Validator>,
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gw.addr)
    }

    async fn iam_token(&self, scope: &str) -> String {
        let r = self
            .iam
            .token_basic(
                &self.svc,
                &[
                    ("grant_type", "client_credentials"),
                    ("scope", scope),
                    ("resource", "gateway"),
                ],
            )
            .await;
        r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

fn base_config(echo: std::net::SocketAddr, iam: &TestIam) -> RawConfig {
    let phc = {
        use argon2::PasswordHasher;
        let params = argon2::Params::new(8 * 1024, 1, 1, None).unwrap();
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(b"wonderland")
            .unwrap()
            .to_string()
    };
    let dead = format!("127.0.0.1:{}", free_port());
    RawConfig {
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        identity_headers: vec!["x-user-id".into()],
        limits: portcullis_gateway::config::RawLimits {
            max_header_bytes: Some(8 * 1024),
            max_body_bytes: Some(64 * 1024),
        },
        timeouts: RawTimeouts {
            request_ms: Some(700),
            header_ms: Some(500),
            ..Default::default()
        },
        upstreams: vec![
            RawUpstream {
                name: "echo".into(),
                targets: vec![echo.to_string()],
                ..Default::default()
            },
            RawUpstream {
                name: "dead".into(),
                targets: vec![dead],
                eject_after_failures: Some(0),
                ..Default::default()
            },
        ],
        consumers: vec![
            RawConsumer {
                name: "partner".into(),
                roles: vec!["reader".into()],
                scopes: vec!["orders:read".into()],
                api_keys: vec![RawApiKey {
                    digest: format!("sha256:{}", sha256_hex(API_KEY)),
                    expires_at: None,
                }],
                basic: None,
            },
            RawConsumer {
                name: "alice".into(),
                roles: vec!["admin".into()],
                scopes: vec!["orders:read".into()],
                api_keys: vec![RawApiKey {
                    digest: format!("sha256:{}", sha256_hex("pak_expired")),
                    expires_at: Some(1),
                }],
                basic: Some(RawBasic {
                    username: "alice".into(),
                    password_hash: phc,
                }),
            },
        ],
        authenticators: vec![
            RawAuthenticator {
                name: "keys".into(),
                kind: "api_key".into(),
                query: Some("api_key".into()),
                ..Default::default()
            },
            RawAuthenticator {
                name: "basic".into(),
                kind: "basic".into(),
                ..Default::default()
            },
            RawAuthenticator {
                name: "iam".into(),
                kind: "jwt".into(),
                issuer: Some(iam.issuer.clone()),
                audience: Some("gateway".into()),
                ..Default::default()
            },
            RawAuthenticator {
                name: "opaque".into(),
                kind: "introspection".into(),
                endpoint: Some(iam.url("/oauth2/introspect")),
                client_id: Some("gw".into()),
                client_secret_env: Some("PORTCULLIS_TEST_GW_SECRET".into()),
                ..Default::default()
            },
        ],
        routes: vec![
            route("public", "/public", &["anonymous"], "echo"),
            RawRoute {
                host: Some("api.example".into()),
                ..route("hosted", "/hosted", &["anonymous"], "echo")
            },
            RawRoute {
                strip_prefix: true,
                ..route("stripped", "/stripped", &["anonymous"], "echo")
            },
            RawRoute {
                require_scopes: vec!["orders:read".into()],
                methods: vec!["GET".into()],
                ..route("orders", "/orders", &["keys", "basic", "iam"], "echo")
            },
            RawRoute {
                require_scopes: vec!["orders:write".into()],
                ..route("orders-write", "/orders/write", &["keys", "iam"], "echo")
            },
            RawRoute {
                require_roles: vec!["admin".into()],
                ..route("admin", "/admin", &["basic", "iam"], "echo")
            },
            RawRoute {
                rate_limit: Some(RawRateLimit {
                    per_second: 1,
                    burst: Some(2),
                    ..Default::default()
                }),
                ..route("limited", "/limited", &["keys"], "echo")
            },
            route("opaque", "/opaque", &["opaque"], "echo"),
            route("slow", "/slow", &["anonymous"], "echo"),
            route("down", "/down", &["anonymous"], "dead"),
        ],
        ..Default::default()
    }
}

async fn env() -> Env {
    let iam = TestIam::start().await;
    let svc = iam
        .secret_client_with("svc", &["orders:read", "orders:write"], &["gateway"])
        .await;
    let gw_client = iam
        .secret_client_with("gw", &["introspect"], &["gateway"])
        .await;
    let echo = echo_upstream().await;
    let secret = gw_client.secret.clone();
    let env = move |v: &str| (v == "PORTCULLIS_TEST_GW_SECRET").then(|| secret.clone());
    let config = base_config(echo, &iam).validate(&env).unwrap();
    let gw = portcullis_gateway::start(config, None, Arc::new(|_| {}))
        .await
        .unwrap();
    let internal =
        Validator::start(ValidatorConfig::new(&gw.issuer, "echo").dangerous_ignore_revocations())
            .await;
    Env {
        iam,
        gw,
        http: portcullis_test_support::http_client(),
        svc,
        internal,
    }
}

async fn upstream_saw(r: reqwest::Response) -> Value {
    assert_eq!(r.status(), 200, "{:?}", r.headers());
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_authenticates_and_the_upstream_gets_an_internal_token() {
    let e = env().await;
    let check = |seen: &Value, sub: &str, method: &str| {
        let h = &seen["headers"];
        let auth = h["authorization"]
            .as_str()
            .expect("internal token forwarded");
        let token = auth.strip_prefix("Bearer ").unwrap().to_owned();
        assert!(h.get("x-api-key").is_none(), "inbound key stripped");
        (token, sub.to_owned(), method.to_owned())
    };
    let mut tokens = Vec::new();
    // API key in a header, then in the query (never forwarded).
    let seen = upstream_saw(
        e.http
            .get(e.url("/orders/1"))
            .header("x-api-key", API_KEY)
            .send()
            .await
            .unwrap(),
    )
    .await;
    tokens.push(check(&seen, "partner", "api_key"));
    let seen = upstream_saw(
        e.http
            .get(e.url(&format!("/orders/1?x=1&api_key={API_KEY}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(seen["query"], "x=1", "api_key query parameter stripped");
    tokens.push(check(&seen, "partner", "api_key"));
    // Basic.
    let seen = upstream_saw(
        e.http
            .get(e.url("/orders/1"))
            .header("authorization", basic("alice", "wonderland"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    tokens.push(check(&seen, "alice", "basic"));
    // JWT from the IAM server.
    let t = e.iam_token("orders:read").await;
    let seen = upstream_saw(
        e.http
            .get(e.url("/orders/1"))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_ne!(
        seen["headers"]["authorization"].as_str().unwrap(),
        format!("Bearer {t}"),
        "inbound token replaced"
    );
    tokens.push(check(&seen, "svc", "jwt"));
    // Introspection.
    let t = e.iam_token("orders:read").await;
    let seen = upstream_saw(
        e.http
            .get(e.url("/opaque/x"))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap(),
    )
    .await;
    tokens.push(check(&seen, "svc", "introspection"));

    // The upstream can verify each internal token with the service library.
    for (token, sub, method) in tokens {
        let p = e
            .internal
            .validate(&token)
            .await
            .unwrap_or_else(|err| panic!("{method}: {err}"));
        assert_eq!(p.subject, sub);
        assert_eq!(p.claims.extra["auth_method"], method.as_str());
        assert_eq!(p.claims.iss, e.gw.issuer);
        if method == "jwt" || method == "introspection" {
            assert!(
                p.claims.extra["orig_jti"].is_string(),
                "names the original token"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_the_right_status_and_challenge() {
    let e = env().await;
    // Missing credentials: 401 with every challenge of the route.
    let r = e.http.get(e.url("/orders/1")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let ch: Vec<String> = r
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        ch.iter().any(|c| c.starts_with("Basic")) && ch.iter().any(|c| c.starts_with("Bearer")),
        "{ch:?}"
    );
    // Wrong key, expired key, wrong password, garbage token: 401.
    for (h, v) in [
        ("x-api-key", "pak_wrong".to_owned()),
        ("x-api-key", "pak_expired".to_owned()),
        ("authorization", basic("alice", "queen")),
        ("authorization", basic("nobody", "x")),
        ("authorization", "Bearer not.a.token".to_owned()),
    ] {
        let r = e
            .http
            .get(e.url("/orders/1"))
            .header(h, &v)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{h}: {v}");
    }
    let r = e
        .http
        .get(e.url("/orders/1"))
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    let ch: Vec<String> = r
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        ch.iter()
            .any(|c| c.starts_with("Bearer") && c.contains("error=\"invalid_token\"")),
        "{ch:?}"
    );
    // An invalid credential does not fall through to anonymous or other methods.
    let r = e
        .http
        .get(e.url("/orders/1"))
        .header("x-api-key", "pak_wrong")
        .header("authorization", basic("alice", "wonderland"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Insufficient scope and role: 403.
    let r = e
        .http
        .post(e.url("/orders/write"))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("scope=\"orders:write\"")
    );
    let t = e.iam_token("orders:read").await;
    assert_eq!(
        e.http
            .get(e.url("/admin/x"))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        e.http
            .get(e.url("/admin/x"))
            .header("authorization", basic("alice", "wonderland"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Method not allowed, no route.
    let r = e
        .http
        .delete(e.url("/orders/1"))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        e.http.get(e.url("/nothing")).send().await.unwrap().status(),
        404
    );
    // A revoked token at introspection: 401.
    let t = e.iam_token("orders:read").await;
    e.iam
        .http
        .post(e.iam.url("/oauth2/revoke"))
        .header("authorization", basic(&e.svc.id, &e.svc.secret))
        .form(&[("token", t.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(
        e.http
            .get(e.url("/opaque/x"))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_and_forwarding_headers_never_reach_the_upstream() {
    let e = env().await;
    let seen = upstream_saw(
        e.http
            .get(e.url("/public/x"))
            .header("x-portcullis-user", "root")
            .header("X_Portcullis_Roles", "admin")
            .header("x-user-id", "1")
            .header("x_user_id", "1")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-forwarded-proto", "https")
            .header("forwarded", "for=10.0.0.1")
            .header("x-real-ip", "10.0.0.1")
            .header("authorization", "Bearer forged")
            .header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .header("connection", "x-secret")
            .header("x-secret", "hop")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let h = seen["headers"].as_object().unwrap();
    for name in [
        "x-portcullis-user",
        "x_portcullis_roles",
        "x-user-id",
        "x_user_id",
        "forwarded",
        "x-real-ip",
        "x-secret",
    ] {
        assert!(!h.contains_key(name), "{name} reached the upstream: {h:?}");
    }
    assert_eq!(
        h["x-forwarded-for"], "127.0.0.1",
        "rewritten by the gateway"
    );
    assert_eq!(
        h["x-forwarded-proto"], "http",
        "the client is no trusted proxy: its own scheme, plain TCP"
    );
    assert!(
        h["traceparent"].as_str().unwrap().starts_with("00-0af7"),
        "trace context passed on"
    );
    let token = h["authorization"]
        .as_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap();
    let p = e.internal.validate(token).await.unwrap();
    assert_eq!(p.subject, "anonymous", "the forged bearer was replaced");

    // `Connection` naming the headers the gateway adds removes none of
    // them: hop-by-hop headers go before the gateway adds its own.
    let seen = upstream_saw(
        e.http
            .get(e.url("/public/x"))
            .header(
                "connection",
                "authorization, x-forwarded-for, x-forwarded-proto, x-forwarded-host",
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    let h = seen["headers"].as_object().unwrap();
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{h:?}");
    assert!(
        h.contains_key("x-forwarded-proto") && h.contains_key("x-forwarded-host"),
        "{h:?}"
    );
    let token = h["authorization"]
        .as_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap();
    assert_eq!(
        e.internal.validate(token).await.unwrap().subject,
        "anonymous"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_never_reach_a_protected_route_unauthenticated() {
    let e = env().await;
    let attempts = [
        "/admin",
        "/%61dmin",
        "/%61%64%6d%69%6e/x",
        "//admin",
        "/./admin",
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/ADMIN",
        "/Admin/x",
        "/admin;x=1",
        "/admin.",
        "/admin%2Fx",
        "/public/..%2Fadmin",
        "/public%2F..%2Fadmin",
        "/public/..%5Cadmin",
        "/admin%00",
        "/public/%252e%252e/admin",
        "/admin?x=/public",
        "/admin/%2e%2e/admin",
        // Trailing space; overlong UTF-8 for `/` and `.`.
        "/admin%20",
        "/public%C0%AF..%C0%AFadmin",
        "/public/%C0%AE%C0%AE/admin",
    ];
    for p in attempts {
        // Raw socket: no client-side normalization of the request target.
        let resp = raw(
            e.gw.addr,
            &format!("GET {p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        let status: u16 = resp.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        assert!(matches!(status, 400 | 401 | 404), "{p} → {status}: {resp}");
        assert!(
            !resp.contains("\"path\""),
            "{p} reached the upstream: {resp}"
        );
    }
    // Spellings that a case-insensitive upstream reads as /admin: Unicode
    // case mappings onto ASCII (dotless ı upper-cases to I, İ lower-cases
    // to i), raw and escaped. They must get /admin's
    // checks (401 here), not miss every route (404).
    // An accent is not case: /adm%C3%ADn (í) is no route's.
    for (p, status) in [
        ("/adm%C4%B1n", 401),
        ("/ADM%C4%B0N/x", 401),
        ("/adm\u{131}n/x", 401),
        ("/adm%C3%ADn", 404),
    ] {
        let resp = raw(
            e.gw.addr,
            &format!("GET {p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        assert!(
            resp.starts_with(&format!("HTTP/1.1 {status}")),
            "{p}: {resp}"
        );
    }
    // The public route still works, and an encoded unreserved char is fine.
    let resp = raw(
        e.gw.addr,
        "GET /p%75blic/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.contains("\"path\":\"/public/a\""),
        "{resp}"
    );
    // What the upstream is sent: a target already in normal form as it came
    // (query included, byte for byte), any other with its path normalized,
    // and with strip_prefix the rest of the path.
    for (target, path, query) in [
        ("/public/a?x=1&y=%2F&z", "/public/a", "x=1&y=%2F&z"),
        ("/public/a?", "/public/a", ""),
        ("/public//b/./c/../d?q=%41", "/public/b/d", "q=%41"),
        ("/p%75blic/e?q", "/public/e", "q"),
        ("/stripped/f/g?q=1", "/f/g", "q=1"),
        ("/stripped", "/", ""),
        ("/stripped/", "/", ""),
        ("/stripped//h", "/h", ""),
        ("/STR%C4%B0PPED/i", "/i", ""),
        (
            "/public/caf\u{e9}?q=\u{e9}",
            "/public/caf%C3%A9",
            "q=\u{e9}",
        ),
    ] {
        let resp = raw(
            e.gw.addr,
            &format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        let body = resp.split("\r\n\r\n").nth(1).unwrap_or_default();
        let seen: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{target}: {resp}"));
        assert_eq!(seen["path"], path, "{target}: {resp}");
        let want_query = if target.contains('?') {
            Value::from(query)
        } else {
            Value::Null
        };
        assert_eq!(seen["query"], want_query, "{target}: {resp}");
    }
}

fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_target_overrides_the_host_header() {
    let e = env().await;
    let a = e.gw.addr;
    let get = |target: &str, host: &str| {
        raw(
            a,
            &format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
    };
    // The target's authority is routed on and forwarded (RFC 9112 §3.2.2).
    let r = get("http://api.example/hosted/x", "elsewhere.example");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains(r#""x-forwarded-host":"api.example""#), "{r}");
    let r = get("/hosted/x", "api.example");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // A Host naming the route does not help a target naming another host.
    let r = get("http://elsewhere.example/hosted/x", "api.example");
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    // Userinfo in the target is an error (RFC 9110 §4.2.4).
    let r = get("http://user@api.example/hosted/x", "api.example");
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_and_limits() {
    let e = env().await;
    let a = e.gw.addr;
    // Both Transfer-Encoding and Content-Length: 400 and the connection closed.
    let r = raw(
        a,
        "POST /public/x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert_eq!(
        r.matches("HTTP/1.1").count(),
        1,
        "nothing after the refusal: {r}"
    );
    assert!(r.to_ascii_lowercase().contains("connection: close"));
    // Conflicting Content-Length; `chunkedx`.
    let r = raw(
        a,
        "POST /public/x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    );
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let r = raw(
        a,
        "POST /public/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunkedx\r\n\r\n0\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    // Oversize headers: 431; oversize body: 413.
    let r = e
        .http
        .get(e.url("/public/x"))
        .header("x-big", "a".repeat(10 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let r = e
        .http
        .post(e.url("/public/x"))
        .body(vec![b'a'; 100 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Slow headers: the connection is dropped after the header timeout.
    let mut s = std::net::TcpStream::connect(a).unwrap();
    s.write_all(b"GET /public/x HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "slow client cut off"
    );
    assert!(!String::from_utf8_lossy(&buf).contains("\"path\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_and_rate_limits() {
    let e = env().await;
    let r = e.http.get(e.url("/down/x")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(
        !r.text().await.unwrap().contains("127.0.0.1"),
        "generic body"
    );
    assert_eq!(
        e.http.get(e.url("/slow")).send().await.unwrap().status(),
        504
    );
    // Requests are counted from the first one, before any scrape.
    let m = e
        .http
        .get(format!("http://{}/metrics", e.gw.admin_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("portcullis_gateway_requests_total") && m.contains("route=\"down\""),
        "{m}"
    );
    // Burst of 2, then 429 with headers.
    let get = || {
        e.http
            .get(e.url("/limited"))
            .header("x-api-key", API_KEY)
            .send()
    };
    let first = get().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["ratelimit-limit"], "2");
    assert_eq!(get().await.unwrap().status(), 200);
    let r = get().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.headers()["ratelimit-remaining"], "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_refuses_a_broken_file_and_applies_a_good_one() {
    let iam = TestIam::start().await;
    let echo = echo_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let good = format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[[upstreams]]\nname = \"echo\"\ntargets = [\"{echo}\"]\n\
         [[routes]]\nname = \"a\"\npath_prefix = \"/a\"\nupstream = \"echo\"\nauth = [\"anonymous\"]\n"
    );
    std::fs::write(&file, &good).unwrap();
    let config = portcullis_gateway::load(&file, &|_| {}).unwrap();
    let gw = portcullis_gateway::start(config, Some(file.clone()), Arc::new(|_| {}))
        .await
        .unwrap();
    let http = portcullis_test_support::http_client();
    let get = |p: &str| http.get(format!("http://{}{p}", gw.addr)).send();
    assert_eq!(get("/a").await.unwrap().status(), 200);
    std::fs::write(
        &file,
        good.replace("upstream = \"echo\"", "upstream = \"nope\""),
    )
    .unwrap();
    let err = gw.reload().await.unwrap_err().to_string();
    assert!(
        err.contains("gateway.toml") && err.contains("routes[0].upstream"),
        "{err}"
    );
    assert_eq!(
        get("/a").await.unwrap().status(),
        200,
        "old config keeps serving"
    );
    std::fs::write(&file, good.replace("/a", "/b")).unwrap();
    let reloaded = gw.reload().await.unwrap();
    assert!(reloaded.needs_restart.is_empty(), "{reloaded:?}");
    assert_eq!(get("/a").await.unwrap().status(), 404);
    assert_eq!(get("/b").await.unwrap().status(), 200);

    // Start-time settings: the rest of the file is applied, they are named.
    let restart_only = good.replace("/a", "/c").replacen(
        "[[upstreams]]",
        "workers = 3\n[timeouts]\nheader_ms = 1234\n[[upstreams]]",
        1,
    );
    std::fs::write(&file, &restart_only).unwrap();
    let reloaded = gw.reload().await.unwrap();
    assert_eq!(reloaded.needs_restart, ["workers", "timeouts.header_ms"]);
    assert_eq!(get("/c").await.unwrap().status(), 200, "routes applied");
    assert_eq!(get("/b").await.unwrap().status(), 404);
    drop(iam);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_requests() {
    let e = env().await;
    let url = e.url("/public/delay");
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (http, url) = (e.http.clone(), url.clone());
            tokio::spawn(async move { http.get(url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    // All twenty are inside the gateway, waiting on the 300 ms upstream.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let addr = e.gw.addr;
    e.gw.shutdown(Duration::from_secs(5)).await;
    for t in tasks {
        assert_eq!(
            t.await.unwrap().unwrap(),
            200,
            "an in-flight request was dropped"
        );
    }
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no new connections after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_balance_eject_failing_targets_and_follow_health_checks() {
    let live = echo_upstream().await;
    let dead = format!("127.0.0.1:{}", free_port());
    let raw = RawConfig {
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        upstreams: vec![
            // Passive: two consecutive failures eject the dead target.
            RawUpstream {
                name: "passive".into(),
                targets: vec![live.to_string(), dead.clone()],
                eject_after_failures: Some(2),
                eject_ms: Some(60_000),
                ..Default::default()
            },
            // Active: the health check finds the dead target before any request does.
            RawUpstream {
                name: "active".into(),
                targets: vec![live.to_string(), dead.clone()],
                eject_after_failures: Some(0),
                health_check: Some(portcullis_gateway::config::RawHealthCheck {
                    path: "/healthz".into(),
                    interval_ms: Some(100),
                    timeout_ms: Some(200),
                }),
                ..Default::default()
            },
        ],
        routes: vec![
            route("p", "/p", &["anonymous"], "passive"),
            route("a", "/a", &["anonymous"], "active"),
        ],
        ..Default::default()
    };
    let gw = portcullis_gateway::start(raw.validate(&|_| None).unwrap(), None, Arc::new(|_| {}))
        .await
        .unwrap();
    let http = portcullis_test_support::http_client();
    let status = |p: &'static str| {
        let (http, url) = (http.clone(), format!("http://{}{p}", gw.addr));
        async move { http.get(url).send().await.unwrap().status().as_u16() }
    };
    // Round robin: the dead target fails at most twice, then is ejected.
    let mut failures = 0;
    for _ in 0..20 {
        if status("/p").await == 502 {
            failures += 1;
        }
    }
    assert_eq!(failures, 2, "ejected after two consecutive failures");
    // Active checks mark the dead target down: no request ever fails.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..20 {
        assert_eq!(status("/a").await, 200);
    }
}

/// One HTTP/2 (h2c, prior knowledge) request through the gateway, with
/// hyper's client: (status, body).
async fn h2_get(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<u8>) {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2c handshake");
    tokio::spawn(conn);
    let mut req = http::Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(
            req.body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_take_the_same_pipeline() {
    let e = env().await;
    // Unauthenticated on a protected route: refused, as over HTTP/1.1.
    let (status, _) = h2_get(e.gw.addr, "/orders/1", &[]).await;
    assert_eq!(status, 401);
    // With a token: the upstream sees the internal token, never the
    // spoofed identity header, and the normalized path.
    let token = e.iam_token("orders:read").await;
    let bearer = format!("Bearer {token}");
    let (status, body) = h2_get(
        e.gw.addr,
        "/orders/./a//b",
        &[("authorization", &bearer), ("x-portcullis-user", "root")],
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let seen: Value = serde_json::from_slice(&body).unwrap();
    let h = seen["headers"].as_object().unwrap();
    assert!(!h.contains_key("x-portcullis-user"));
    let internal = h["authorization"]
        .as_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap();
    let p = e.internal.validate(internal).await.unwrap();
    assert_eq!(p.subject, "svc");
    assert_eq!(seen["path"], "/orders/a/b");
    // Path tricks are refused over HTTP/2 as well.
    let (status, _) = h2_get(
        e.gw.addr,
        "/orders%2F..%2Fpublic",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(status, 400);
}

/// An upstream that numbers its connections and the requests on each, and
/// ends every connection after its third answer: politely
/// (`Connection: close` on the third) or silently (just closing the socket).
async fn counting_upstream(polite: bool) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut conns = 0;
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            conns += 1;
            let conn = conns;
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for n in 1..=3 {
                    // One GET head (no body) per request.
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    let body = format!("{conn}:{n}");
                    let close = if polite && n == 3 {
                        "connection: close\r\n"
                    } else {
                        ""
                    };
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{close}\r\n{body}",
                        body.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_client_keeps_its_upstream_connection_and_survives_its_close() {
    for polite in [true, false] {
        let up = counting_upstream(polite).await;
        let raw = RawConfig {
            listen: Some("127.0.0.1:0".into()),
            admin_listen: Some("127.0.0.1:0".into()),
            upstreams: vec![RawUpstream {
                name: "counting".into(),
                targets: vec![up.to_string()],
                ..Default::default()
            }],
            routes: vec![route("c", "/c", &["anonymous"], "counting")],
            ..Default::default()
        };
        let gw =
            portcullis_gateway::start(raw.validate(&|_| None).unwrap(), None, Arc::new(|_| {}))
                .await
                .unwrap();
        // One downstream keep-alive connection, requests one after another
        // (hyper's client on one connection: nothing else decides).
        let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake::<_, String>(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut seen = Vec::new();
        for i in 0..7 {
            if !polite && i > 0 && i % 3 == 0 {
                // Give the gateway time to see the silent close.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            send.ready().await.unwrap();
            let req = http::Request::get("/c")
                .header("host", "gw")
                .body(String::new())
                .unwrap();
            let r = send.send_request(req).await.unwrap();
            assert_eq!(r.status(), 200, "polite={polite} request {i}");
            let body = http_body_util::BodyExt::collect(r.into_body())
                .await
                .unwrap();
            seen.push(String::from_utf8(body.to_bytes().to_vec()).unwrap());
        }
        // The same upstream connection answers consecutive requests; a
        // closed one is replaced without a failed request.
        assert_eq!(
            seen,
            ["1:1", "1:2", "1:3", "2:1", "2:2", "2:3", "3:1"],
            "polite={polite}"
        );
        gw.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_configuration_errors_name_the_key() {
    let iam = TestIam::start().await;
    let echo = echo_upstream().await;
    let with = |extra: RawRoute| {
        let mut raw = base_config(echo, &iam);
        raw.routes.push(extra);
        let n = raw.routes.len() - 1;
        let env = |v: &str| (v == "PORTCULLIS_TEST_GW_SECRET").then(|| "s".to_owned());
        (raw.validate(&env), n)
    };
    // Two routes of one name would share one's authentication.
    let (r, n) = with(route("public", "/other", &["anonymous"], "echo"));
    let e = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        e.contains(&format!("routes[{n}].name")) && e.contains("duplicate route"),
        "{e}"
    );
    // A prefix with a query or fragment could never match.
    for prefix in ["/a?b", "/a#b"] {
        let (r, n) = with(route("q", prefix, &["anonymous"], "echo"));
        let e = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains(&format!("routes[{n}].path_prefix")), "{e}");
    }
    // A route's host is kept as requests' hosts are compared: no port,
    // no trailing dot, lower case.
    let (r, n) = with(RawRoute {
        host: Some("API.Example.com.:8443".into()),
        ..route("hosted-with-port", "/hosted2", &["anonymous"], "echo")
    });
    let config = r.unwrap();
    assert_eq!(config.routes[n].host.as_deref(), Some("api.example.com"));

    // Enforcing CRL expiry without a CRL to enforce is a mistake, not a no-op.
    for (client_ca, crls) in [(None, vec!["crl.pem".to_owned()]), (Some("ca.pem"), vec![])] {
        let mut raw = base_config(echo, &iam);
        raw.tls = Some(portcullis_gateway::config::RawTls {
            cert: "cert.pem".into(),
            key: "key.pem".into(),
            client_ca: client_ca.map(Into::into),
            crls,
            enforce_crl_expiry: true,
        });
        let env = |v: &str| (v == "PORTCULLIS_TEST_GW_SECRET").then(|| "s".to_owned());
        let e = raw
            .validate(&env)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("tls.enforce_crl_expiry"), "{e}");
    }
    let mut raw = base_config(echo, &iam);
    raw.tls = Some(portcullis_gateway::config::RawTls {
        cert: "cert.pem".into(),
        key: "key.pem".into(),
        client_ca: Some("ca.pem".into()),
        crls: vec!["crl.pem".into()],
        enforce_crl_expiry: true,
    });
    let env = |v: &str| (v == "PORTCULLIS_TEST_GW_SECRET").then(|| "s".to_owned());
    assert!(raw.validate(&env).unwrap().tls.unwrap().enforce_crl_expiry);
}
