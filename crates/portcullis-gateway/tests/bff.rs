//! The gateway's BFF mode over real sockets: a cookie-keeping browser logs
//! in at the real IAM server through the gateway, calls an API that reports
//! what reached it, survives refreshes and logs out; and the attacks on each
//! step fail with the expected answer.

#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::extract::Request;
use axum::routing::any;
use portcullis_gateway::config::{RawAuthenticator, RawBff, RawConfig, RawRoute, RawUpstream};
use portcullis_redis::RawRedis;
use portcullis_service::{Validator, ValidatorConfig};
use portcullis_test_support::browser::{Browser, Page};
use portcullis_test_support::{TestIam, free_port};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;

const PASSWORD: &str = "correct horse battery staple";
const SECRET_ENV: &str = "BFF_TEST_CLIENT_SECRET";

/// An upstream that answers with the headers it received.
async fn echo_upstream() -> std::net::SocketAddr {
    let app = Router::new().fallback(any(|req: Request| async move {
        let headers: serde_json::Map<String, Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), Value::from(v.to_str().unwrap_or(""))))
            .collect();
        axum::Json(
            json!({"method": req.method().as_str(), "path": req.uri().path(), "headers": headers}),
        )
    }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    addr
}

struct Env {
    iam: TestIam,
    gw: portcullis_gateway::RunningGateway,
    base: String,
    alice_id: String,
    /// The gateway's config and client secret, to start another replica.
    raw: RawConfig,
    secret: String,
    _dir: tempfile::TempDir,
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Logs `b` in through the BFF and returns where the callback sent it.
    async fn login(&self, b: &mut Browser, return_to: &str) -> Page {
        let start = b
            .get(&self.url(&format!("/auth/login?return_to={return_to}")))
            .await;
        assert_eq!(start.status, 302, "{}", start.body);
        let page = b.get(start.location.as_deref().unwrap()).await;
        let done = if page.status == 200 {
            sign_in(&self.iam, b, &page).await
        } else {
            page
        };
        assert_eq!(done.status, 303, "{}", done.body);
        let back = b.get(done.location.as_deref().unwrap()).await;
        assert_eq!(back.status, 303, "{}", back.body);
        let to = back.location.as_deref().unwrap();
        assert!(to.starts_with('/'), "{to}");
        b.get(&self.url(to)).await
    }

    /// `POST /auth/logout` with the session cookie `cookie` and its CSRF token.
    async fn logout(&self, cookie: &str, csrf: &str) -> reqwest::Response {
        portcullis_test_support::http_client()
            .post(self.url("/auth/logout"))
            .header("cookie", format!("portcullis_bff={cookie}"))
            .header("x-portcullis-csrf", csrf)
            .send()
            .await
            .unwrap()
    }

    /// Makes the `bff` client's access tokens live 60 s.
    async fn access_tokens_live_60s(&self) {
        let r = self
            .iam
            .admin_call(
                Method::PATCH,
                "/admin/clients/bff",
                Some(json!({"access_token_ttl_secs": 60})),
            )
            .await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    /// The session's CSRF token, from `/auth/session`.
    async fn csrf(&self, b: &mut Browser) -> String {
        let s = b.get(&self.url("/auth/session")).await;
        assert_eq!(s.status, 200, "{}", s.body);
        let v: Value = serde_json::from_str(&s.body).unwrap();
        v["csrf_token"].as_str().unwrap().to_owned()
    }
}

async fn sign_in(iam: &TestIam, b: &mut Browser, page: &Page) -> Page {
    b.sign_in(&iam.url("/oauth2/login"), page, "alice", PASSWORD)
        .await
}

/// The IAM server with alice and the `bff` client, and a gateway in front
/// of an echo upstream with `/api` behind the `session` authenticator.
async fn env(tweak: impl FnOnce(&mut RawBff)) -> Env {
    env_with(TestIam::start().await, tweak, None).await
}

/// [`env`] with the gateway's `[redis]`.
async fn env_with(iam: TestIam, tweak: impl FnOnce(&mut RawBff), redis: Option<RawRedis>) -> Env {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let r = iam
        .admin_call(
            Method::POST,
            "/admin/users",
            Some(json!({"username": "alice", "password": PASSWORD,
                        "email": "alice@example.com", "display_name": "Alice Liddell"})),
        )
        .await;
    assert_eq!(r.status(), 201);
    let alice: Value = r.json().await.unwrap();
    let client = iam
        .create_client(json!({
            "client_id": "bff", "first_party": true,
            "grant_types": ["authorization_code", "refresh_token"],
            "redirect_uris": [format!("{base}/auth/callback")],
            "post_logout_redirect_uris": [format!("{base}/bye")],
            "allowed_scopes": ["openid", "profile", "email", "api"],
            "default_scopes": ["openid"],
            "allowed_audiences": ["echo"], "default_audiences": ["echo"]}))
        .await;
    let secret = client["client_secret"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let mut bff = RawBff {
        issuer: iam.base.clone(),
        client_id: "bff".into(),
        client_secret_env: Some(SECRET_ENV.into()),
        redirect_uri: format!("{base}/auth/callback"),
        post_logout_redirect_uri: Some(format!("{base}/bye")),
        scopes: Some(vec![
            "openid".into(),
            "profile".into(),
            "email".into(),
            "api".into(),
        ]),
        resources: vec!["echo".into()],
        session_store: Some(format!("sqlite://{}", dir.path().join("bff.db").display())),
        session_key_file: Some(dir.path().join("bff.key").display().to_string()),
        ..Default::default()
    };
    tweak(&mut bff);
    let echo = echo_upstream().await;
    let raw = RawConfig {
        listen: Some(format!("127.0.0.1:{port}")),
        admin_listen: Some("127.0.0.1:0".into()),
        upstreams: vec![RawUpstream {
            name: "echo".into(),
            targets: vec![echo.to_string()],
            ..Default::default()
        }],
        authenticators: vec![RawAuthenticator {
            name: "browser".into(),
            kind: "session".into(),
            ..Default::default()
        }],
        routes: vec![RawRoute {
            name: "api".into(),
            path_prefix: "/api".into(),
            upstream: "echo".into(),
            auth: vec!["browser".into()],
            require_scopes: vec!["api".into()],
            ..Default::default()
        }],
        bff: Some(bff),
        redis,
        ..Default::default()
    };
    let config = raw
        .clone()
        .validate(&|v| (v == SECRET_ENV).then(|| secret.clone()))
        .unwrap();
    let gw = portcullis_gateway::start(config, None, Arc::new(|_| {}))
        .await
        .unwrap();
    Env {
        iam,
        gw,
        base,
        alice_id: alice["id"].as_str().unwrap().to_owned(),
        raw,
        secret,
        _dir: dir,
    }
}

fn upstream_saw(p: &Page) -> Value {
    assert_eq!(p.status, 200, "{}", p.body);
    serde_json::from_str(&p.body).unwrap()
}

fn bearer(seen: &Value) -> String {
    seen["headers"]["authorization"]
        .as_str()
        .and_then(|a| a.strip_prefix("Bearer "))
        .unwrap_or_else(|| panic!("no bearer upstream: {seen}"))
        .to_owned()
}

fn set_cookie<'a>(p: &'a Page, name: &str) -> &'a str {
    p.headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie set: {:?}", p.headers))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_logs_in_and_the_api_gets_the_access_token_never_the_cookie() {
    let e = env(|_| {}).await;
    let mut b = Browser::new();

    // /auth/login: PKCE S256, state and nonce, a login cookie.
    let start = b.get(&e.url("/auth/login?return_to=/api/hello")).await;
    assert_eq!(start.status, 302);
    let q = start.query();
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["client_id"], "bff");
    assert_eq!(q["code_challenge"].len(), 43);
    assert!(q["state"].len() >= 43 && q["nonce"].len() >= 43);
    let login_cookie = set_cookie(&start, "portcullis_bff_login");
    assert!(login_cookie.contains("HttpOnly") && login_cookie.contains("SameSite=Lax"));
    b.cookies.clear();

    let landed = e.login(&mut b, "/api/hello").await;
    let cookie = b
        .cookies
        .get("portcullis_bff")
        .cloned()
        .expect("session cookie");
    assert!(cookie.len() >= 43, "opaque and long: {cookie}");
    assert!(!cookie.contains('.'), "not a JWT: {cookie}");
    let seen = upstream_saw(&landed);
    assert_eq!(
        seen["path"], "/api/hello",
        "the callback returns to return_to"
    );

    // /auth/session: who, never a token.
    let s = b.get(&e.url("/auth/session")).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.headers["cache-control"], "no-store");
    let v: Value = serde_json::from_str(&s.body).unwrap();
    assert_eq!(v["sub"], e.alice_id.as_str());
    assert_eq!(v["preferred_username"], "alice");
    assert_eq!(v["email"], "alice@example.com");
    assert!(!s.body.contains("eyJ"), "no token in {}", s.body);

    // The API gets the person's access token and no cookie.
    let seen = upstream_saw(&b.get(&e.url("/api/things")).await);
    assert!(seen["headers"].get("cookie").is_none(), "{seen}");
    let token = bearer(&seen);
    let v = Validator::start(ValidatorConfig::new(&e.iam.issuer, "echo")).await;
    let p = v.validate(&token).await.unwrap();
    assert_eq!(p.subject, e.alice_id);
    assert_eq!(p.client_id, "bff");
    assert!(p.scopes.iter().any(|s| s == "api"));

    // Without a session: 401, and a cookie that was never issued is no key.
    let mut stranger = Browser::new();
    assert_eq!(stranger.get(&e.url("/api/things")).await.status, 401);
    stranger
        .cookies
        .insert("portcullis_bff".into(), format!("{cookie}x"));
    assert_eq!(stranger.get(&e.url("/api/things")).await.status, 401);
    assert_eq!(stranger.get(&e.url("/auth/session")).await.status, 401);
    drop(e.gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changing_calls_need_csrf_proof() {
    let e = env(|_| {}).await;
    let mut b = Browser::new();
    e.login(&mut b, "/").await;
    let csrf = e.csrf(&mut b).await;
    let http = portcullis_test_support::http_client();
    let cookie = format!("portcullis_bff={}", b.cookies["portcullis_bff"]);
    let post = |headers: Vec<(&'static str, String)>| {
        let mut r = http.post(e.url("/api/things")).header("cookie", &cookie);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.send()
    };
    let status = |r: reqwest::Response| r.status().as_u16();
    let refused = post(vec![]).await.unwrap();
    assert_eq!(refused.status(), 403);
    let v: Value = refused.json().await.unwrap();
    assert_eq!(v["error"], "csrf_check_failed");
    assert_eq!(
        status(
            post(vec![("sec-fetch-site", "cross-site".into())])
                .await
                .unwrap()
        ),
        403
    );
    assert_eq!(
        status(
            post(vec![("sec-fetch-site", "same-site".into())])
                .await
                .unwrap()
        ),
        403
    );
    assert_eq!(
        status(
            post(vec![("origin", "https://evil.example".into())])
                .await
                .unwrap()
        ),
        403
    );
    assert_eq!(
        status(
            post(vec![("x-portcullis-csrf", "nope".into())])
                .await
                .unwrap()
        ),
        403
    );
    assert_eq!(
        status(
            post(vec![("sec-fetch-site", "same-origin".into())])
                .await
                .unwrap()
        ),
        200
    );
    assert_eq!(
        status(post(vec![("origin", e.base.clone())]).await.unwrap()),
        200
    );
    assert_eq!(
        status(
            post(vec![("x-portcullis-csrf", csrf.clone())])
                .await
                .unwrap()
        ),
        200
    );
    // Safe methods need none.
    assert_eq!(
        http.get(e.url("/api/things"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Logout is state-changing too.
    let r = http
        .post(e.url("/auth/logout"))
        .header("cookie", &cookie)
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        b.get(&e.url("/auth/session")).await.status,
        200,
        "still logged in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callback_refuses_forged_replayed_and_foreign_responses() {
    let e = env(|_| {}).await;

    // A code obtained by this browser, for its own pending login.
    async fn code_for(
        e: &Env,
        b: &mut Browser,
    ) -> (String, std::collections::HashMap<String, String>) {
        let start = b.get(&e.url("/auth/login")).await;
        let page = b.get(start.location.as_deref().unwrap()).await;
        let done = if page.status == 200 {
            sign_in(&e.iam, b, &page).await
        } else {
            page
        };
        assert_eq!(done.status, 303, "{}", done.body);
        (done.location.clone().unwrap(), done.query())
    }

    // State mismatch.
    let mut b = Browser::new();
    let (_, q) = code_for(&e, &mut b).await;
    let forged = e.url(&format!(
        "/auth/callback?code={}&state=forged&iss={}",
        q["code"], q["iss"]
    ));
    let p = b.get(&forged).await;
    assert_eq!(p.status, 400, "{}", p.body);
    assert!(!b.cookies.contains_key("portcullis_bff"));

    // Login CSRF: the attacker's callback URL opened in the victim's browser
    // (which has no login cookie for it) starts no session.
    let mut attacker = Browser::new();
    let (callback, _) = code_for(&e, &mut attacker).await;
    let mut victim = Browser::new();
    let p = victim.get(&callback).await;
    assert_eq!(p.status, 400, "{}", p.body);
    assert!(!victim.cookies.contains_key("portcullis_bff"));
    // ... and the attacker's own pending login was not touched by that, but
    // a replay after use is refused.
    let ok = attacker.get(&callback).await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    attacker
        .cookies
        .insert("portcullis_bff_login".into(), "x".repeat(43));
    assert_eq!(attacker.get(&callback).await.status, 400, "replay");

    // Another issuer in the response (RFC 9207 mix-up).
    let mut b = Browser::new();
    let (callback, _) = code_for(&e, &mut b).await;
    let mixed = callback.replace("iss=", "iss=https%3A%2F%2Fevil.example&x=");
    assert_eq!(b.get(&mixed).await.status, 400);

    // An error response: shown escaped, never reflected raw.
    let mut b = Browser::new();
    let start = b.get(&e.url("/auth/login")).await;
    let state = start.query()["state"].clone();
    let evil = e.url(&format!(
        "/auth/callback?state={state}&error=%3Cscript%3Ealert(1)%3C%2Fscript%3E%0D%0ASet-Cookie:%20x=1&error_description=%3Cb%3Ehi"
    ));
    let p = b.get(&evil).await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(
        !p.body.contains("<script>") && !p.body.contains("<b>"),
        "{}",
        p.body
    );
    assert!(p.headers.get("x").is_none());
    assert_eq!(p.headers["x-frame-options"], "DENY");

    // Open redirects are refused before anything else.
    let mut b = Browser::new();
    for bad in [
        "//evil.example/x",
        "https://evil.example/",
        "/%5Cevil.example",
    ] {
        let p = b.get(&e.url(&format!("/auth/login?return_to={bad}"))).await;
        assert_eq!(p.status, 400, "{bad}: {}", p.body);
    }
    // Wrong methods and unknown endpoints.
    let http = portcullis_test_support::http_client();
    let r = http.post(e.url("/auth/login")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET");
    assert_eq!(
        http.get(e.url("/auth/logout"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
    assert_eq!(
        http.get(e.url("/auth/nope")).send().await.unwrap().status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_token_is_refreshed_once_under_concurrency_and_a_refused_refresh_ends_the_session()
 {
    // Access tokens live 60 s and are refreshed 57 s before they expire: a
    // token is due for refresh 3 s after it was issued.
    let e = env(|b| b.refresh_before_secs = Some(57)).await;
    e.access_tokens_live_60s().await;
    let mut b = Browser::new();
    let first = bearer(&upstream_saw(&e.login(&mut b, "/api/one").await));
    let again = bearer(&upstream_saw(&b.get(&e.url("/api/two")).await));
    assert_eq!(first, again, "not refreshed while fresh");

    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
    let cookie = format!("portcullis_bff={}", b.cookies["portcullis_bff"]);
    let http = portcullis_test_support::http_client();
    let calls = (0..8).map(|_| {
        let r = http
            .get(e.url("/api/burst"))
            .header("cookie", &cookie)
            .send();
        async move { r.await.unwrap().json::<Value>().await.unwrap() }
    });
    let seen: Vec<Value> = futures_join(calls).await;
    let tokens: std::collections::BTreeSet<String> = seen.iter().map(bearer).collect();
    assert_eq!(
        tokens.len(),
        1,
        "one refresh for the whole burst: {tokens:?}"
    );
    assert!(
        !tokens.contains(&first),
        "the burst got the refreshed token"
    );

    // The rotated refresh token still works (no reuse was detected): the
    // next refresh succeeds too.
    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
    let next = bearer(&upstream_saw(&b.get(&e.url("/api/after")).await));
    assert!(!tokens.contains(&next) && next != first);

    // The user is disabled: the next refresh is refused and the session ends.
    let r = e
        .iam
        .admin_call(
            Method::PATCH,
            &format!("/admin/users/{}", e.alice_id),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(r.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
    let p = b.get(&e.url("/api/again")).await;
    assert_eq!(p.status, 401, "{}", p.body);
    assert_eq!(b.get(&e.url("/auth/session")).await.status, 401);
}

async fn futures_join<F: std::future::Future<Output = Value> + Send + 'static>(
    fs: impl Iterator<Item = F>,
) -> Vec<Value> {
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_session_here_and_at_the_iam_server() {
    let e = env(|_| {}).await;
    let mut b = Browser::new();
    e.login(&mut b, "/").await;
    let old = b.cookies["portcullis_bff"].clone();
    let csrf = e.csrf(&mut b).await;

    let r = e.logout(&old, &csrf).await;
    assert_eq!(r.status(), 303);
    let cleared = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cleared.starts_with("portcullis_bff=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    let to_iam = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        to_iam.starts_with(&e.iam.url("/oauth2/logout?id_token_hint=")),
        "{to_iam}"
    );
    // The browser follows to the IAM server, which ends its SSO session.
    let bye = b.get(&to_iam).await;
    assert_eq!(bye.status, 302, "{}", bye.body);
    let after = bye.location.as_deref().unwrap();
    assert!(after.starts_with(&e.url("/bye")), "{after}");

    // The old cookie is dead at the BFF.
    let mut replay = Browser::new();
    replay.cookies.insert("portcullis_bff".into(), old);
    assert_eq!(replay.get(&e.url("/api/x")).await.status, 401);
    assert_eq!(replay.get(&e.url("/auth/session")).await.status, 401);
    // A new login asks for the password again: the IAM session is gone too.
    b.cookies.remove("portcullis_bff");
    let start = b.get(&e.url("/auth/login")).await;
    let page = b.get(start.location.as_deref().unwrap()).await;
    assert_eq!(page.status, 200, "the sign-in page again");
    assert!(page.body.contains("name=\"password\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_expired_sessions_end() {
    let e = env(|b| {
        b.session_idle_secs = Some(1);
        b.session_max_secs = Some(1);
    })
    .await;
    let mut b = Browser::new();
    e.login(&mut b, "/").await;
    assert_eq!(b.get(&e.url("/auth/session")).await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(b.get(&e.url("/api/x")).await.status, 401);
    assert_eq!(b.get(&e.url("/auth/session")).await.status, 401);
}

#[test]
fn bff_configuration_errors_name_the_key() {
    let base = || RawConfig {
        upstreams: vec![RawUpstream {
            name: "u".into(),
            targets: vec!["127.0.0.1:1".into()],
            ..Default::default()
        }],
        authenticators: vec![RawAuthenticator {
            name: "browser".into(),
            kind: "session".into(),
            ..Default::default()
        }],
        routes: vec![RawRoute {
            name: "r".into(),
            path_prefix: "/api".into(),
            upstream: "u".into(),
            auth: vec!["browser".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    let bff = || RawBff {
        issuer: "http://127.0.0.1:9000".into(),
        client_id: "bff".into(),
        redirect_uri: "http://127.0.0.1:8080/auth/callback".into(),
        ..Default::default()
    };
    let fails = |raw: RawConfig| raw.validate(&|_| None).unwrap_err().to_string();

    assert!(fails(base()).contains("session needs a [bff] section"));
    let mut c = base();
    c.bff = Some(RawBff {
        redirect_uri: "http://127.0.0.1:8080/elsewhere".into(),
        ..bff()
    });
    assert!(fails(c).contains("bff.redirect_uri"));
    let mut c = base();
    c.bff = Some(RawBff {
        scopes: Some(vec!["profile".into()]),
        ..bff()
    });
    assert!(fails(c).contains("bff.scopes"));
    let mut c = base();
    c.bff = Some(RawBff {
        after_login: Some("//evil.example".into()),
        ..bff()
    });
    assert!(fails(c).contains("bff.after_login"));
    let mut c = base();
    c.bff = Some(RawBff {
        client_secret_env: Some("NOPE".into()),
        ..bff()
    });
    assert!(fails(c).contains("NOPE is not set"));
    let mut c = base();
    c.routes[0].path_prefix = "/auth/api".into();
    c.bff = Some(bff());
    assert!(fails(c).contains("bff.path_prefix"));
    let mut c = base();
    c.bff = Some(bff());
    assert!(c.validate(&|_| None).is_ok());
}

// ------------------------------------------------- Redis: several gateways

fn redis_table(url: &str, prefix: &str) -> RawRedis {
    toml::from_str(&format!("url = {url:?}\nkey_prefix = {prefix:?}")).unwrap()
}

/// [`env`] with sessions in Redis at `url`, under a key prefix of its own
/// (returned).
async fn redis_env(iam: TestIam, url: &str) -> (Env, String) {
    let prefix = portcullis_test_support::unique_prefix("bff");
    let e = env_with(
        iam,
        |b| b.session_store = Some("redis".into()),
        Some(redis_table(url, &prefix)),
    )
    .await;
    (e, prefix)
}

impl Env {
    /// Another gateway with the same configuration (the same Redis and
    /// session key) on a port of its own, and its base URL.
    async fn replica(&self) -> (portcullis_gateway::RunningGateway, String) {
        let port = free_port();
        let mut raw = self.raw.clone();
        raw.listen = Some(format!("127.0.0.1:{port}"));
        let secret = self.secret.clone();
        let config = raw
            .validate(&|v| (v == SECRET_ENV).then(|| secret.clone()))
            .unwrap();
        let gw = portcullis_gateway::start(config, None, Arc::new(|_| {}))
            .await
            .unwrap();
        (gw, format!("http://127.0.0.1:{port}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_on_one_redis_share_sessions_and_a_logout_is_seen_at_once() {
    let url = portcullis_test_support::redis_url();
    let (e, prefix) = redis_env(TestIam::start().await, &url).await;
    let (gw_b, base_b) = e.replica().await;
    let at_b = |path: &str| format!("{base_b}{path}");
    let mut b = Browser::new();
    upstream_saw(&e.login(&mut b, "/api/hello").await);
    let old = b.cookies["portcullis_bff"].clone();

    // The session made through A works at B, with the same access token.
    let via_a = bearer(&upstream_saw(&b.get(&e.url("/api/things")).await));
    let via_b = bearer(&upstream_saw(&b.get(&at_b("/api/things")).await));
    assert_eq!(via_a, via_b);
    let s = b.get(&at_b("/auth/session")).await;
    assert_eq!(s.status, 200, "{}", s.body);
    let v: Value = serde_json::from_str(&s.body).unwrap();
    assert_eq!(v["sub"], e.alice_id.as_str());

    // Logout at A; B refuses the cookie on the very next request (no
    // cached copy of the session at B).
    let csrf = e.csrf(&mut b).await;
    assert_eq!(e.logout(&old, &csrf).await.status(), 303);
    let mut replay = Browser::new();
    replay.cookies.insert("portcullis_bff".into(), old);
    assert_eq!(replay.get(&at_b("/api/x")).await.status, 401);
    assert_eq!(replay.get(&at_b("/auth/session")).await.status, 401);
    assert_eq!(replay.get(&e.url("/api/x")).await.status, 401);

    // A login started at B finishes at A (the pending login is shared too).
    let mut c = Browser::new();
    let start = c.get(&at_b("/auth/login?return_to=/api/b")).await;
    assert_eq!(start.status, 302, "{}", start.body);
    let page = c.get(start.location.as_deref().unwrap()).await;
    let done = sign_in(&e.iam, &mut c, &page).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let back = c.get(done.location.as_deref().unwrap()).await;
    assert_eq!(back.status, 303, "{}", back.body);
    upstream_saw(&c.get(&at_b("/api/b")).await);

    // Whoever can write Redis cannot widen a session: the fields the
    // gateway decides on are sealed with the tokens, and an edited session
    // ends.
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        c.cookies["portcullis_bff"].as_bytes(),
    );
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let key = format!("{prefix}bff:s:{hex}");
    let mut redis = portcullis_redis::Redis::connect(portcullis_redis::RedisConfig::new(url))
        .unwrap()
        .conn();
    let () = portcullis_redis::redis::cmd("HSET")
        .arg(&key)
        .arg("profile")
        .arg(r#"{"roles":["admin"]}"#)
        .query_async(&mut redis)
        .await
        .map(|_: i64| ())
        .unwrap();
    assert_eq!(c.get(&at_b("/api/b")).await.status, 401);
    let exists: i64 = portcullis_redis::redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(exists, 0, "the edited session was deleted");
    drop(gw_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sessions_fail_closed_and_recover_without_a_restart() {
    let target: std::net::SocketAddr = {
        let u = url::Url::parse(&portcullis_test_support::redis_url()).unwrap();
        format!("{}:{}", u.host_str().unwrap(), u.port().unwrap_or(6379))
            .parse()
            .unwrap()
    };
    let proxy = portcullis_test_support::FaultProxy::start(target).await;
    let (e, _) = redis_env(
        TestIam::start().await,
        &format!("redis://{}/0", proxy.addr()),
    )
    .await;
    let mut b = Browser::new();
    upstream_saw(&e.login(&mut b, "/api/hello").await);

    proxy.cut();
    let api = b.get(&e.url("/api/x")).await;
    assert_eq!(api.status, 503, "{}", api.body);
    assert_eq!(b.get(&e.url("/auth/session")).await.status, 503);
    let mut fresh = Browser::new();
    assert_eq!(fresh.get(&e.url("/auth/login")).await.status, 503);
    assert!(
        b.cookies.contains_key("portcullis_bff"),
        "an outage does not end the session"
    );
    let metrics = portcullis_test_support::http_client()
        .get(format!("http://{}/metrics", e.gw.admin_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("portcullis_redis_errors_total{feature=\"bff_sessions\"}")),
        "Redis errors are counted: {metrics}"
    );

    proxy.restore();
    let mut status = 0;
    for _ in 0..100 {
        status = b.get(&e.url("/api/x")).await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "the same session works once Redis is back");
}

#[test]
fn session_store_redis_needs_a_redis_table() {
    let raw: RawConfig = toml::from_str(
        r#"
        [bff]
        issuer = "https://id.example"
        client_id = "bff"
        redirect_uri = "https://app.example/auth/callback"
        session_store = "redis"
        "#,
    )
    .unwrap();
    let err = raw.validate(&|_| None).unwrap_err().to_string();
    assert!(err.contains("bff.session_store"), "{err}");
    assert!(err.contains("[redis]"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_refresh_one_session_once_between_them() {
    // Access tokens live 60 s and are due for refresh 3 s after issue.
    // No reuse grace at the IAM server: a refresh token used twice (one
    // use per gateway) would revoke the whole grant and end the session.
    let iam = TestIam::start_with(|c| c.login.refresh_token_reuse_grace_secs = Some(0)).await;
    let (e, _) = redis_env(iam, &portcullis_test_support::redis_url()).await;
    let e = Env {
        raw: {
            let mut raw = e.raw.clone();
            if let Some(b) = raw.bff.as_mut() {
                b.refresh_before_secs = Some(57);
            }
            raw
        },
        ..e
    };
    let (gw_b, base_b) = e.replica().await;
    e.access_tokens_live_60s().await;
    let mut b = Browser::new();
    let first = bearer(&upstream_saw(&e.login(&mut b, "/api/one").await));
    let (gw_a, base_a) = e.replica().await;

    // A burst at two gateways (both with refresh_before 57 s) once the
    // token is due: one gateway refreshes (the cluster-wide refresh lock in
    // Redis), the other waits for its result.
    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
    let cookie = format!("portcullis_bff={}", b.cookies["portcullis_bff"]);
    let http = portcullis_test_support::http_client();
    let calls = (0..8).map(|i| {
        let base = if i % 2 == 0 { &base_a } else { &base_b };
        let r = http
            .get(format!("{base}/api/burst"))
            .header("cookie", &cookie)
            .send();
        async move { r.await.unwrap().json::<Value>().await.unwrap() }
    });
    let seen: Vec<Value> = futures_join(calls).await;
    let burst: std::collections::BTreeSet<String> = seen.iter().map(bearer).collect();
    assert!(!burst.contains(&first), "the burst got refreshed tokens");
    assert_eq!(burst.len(), 1, "one refresh for both gateways: {burst:?}");
    let at_a = bearer(&upstream_saw(&b.get(&format!("{base_a}/api/x")).await));
    let at_b = bearer(&upstream_saw(&b.get(&format!("{base_b}/api/x")).await));
    assert_eq!(at_a, at_b, "both gateways use the stored tokens");
    assert!(burst.contains(&at_a));
    drop((gw_a, gw_b));
}
