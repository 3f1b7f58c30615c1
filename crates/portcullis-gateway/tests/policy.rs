//! Routes guarded by Cedar policies, over real sockets with the real IAM
//! server: allowed and denied requests, a broken policy file refused while
//! the old set keeps deciding, a new set picked up without a restart.

#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::routing::any;
use portcullis_gateway::config::{RawAuthenticator, RawConfig, RawRoute, RawUpstream};
use portcullis_test_support::TestIam;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

async fn upstream() -> std::net::SocketAddr {
    let app = Router::new().fallback(any(|| async { "ok" }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    addr
}

fn copy_policies(to: &Path) {
    let from =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../portcullis-policy/tests/fixtures/security");
    for f in ["schema.cedarschema", "systems.cedar", "guards.cedar"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

fn config(iam: &TestIam, up: std::net::SocketAddr, policies: Option<&Path>) -> RawConfig {
    RawConfig {
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        upstreams: vec![RawUpstream {
            name: "up".into(),
            targets: vec![up.to_string()],
            ..Default::default()
        }],
        authenticators: vec![RawAuthenticator {
            name: "iam".into(),
            kind: "jwt".into(),
            issuer: Some(iam.issuer.clone()),
            audience: Some("gateway".into()),
            ..Default::default()
        }],
        routes: vec![RawRoute {
            name: "api".into(),
            path_prefix: "/api".into(),
            upstream: "up".into(),
            auth: vec!["iam".into()],
            policy: Some("CallApi".into()),
            ..Default::default()
        }],
        policies: policies.map(|p| p.display().to_string()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_decides_and_reloads_without_a_restart() {
    let iam = TestIam::start().await;
    let with = iam
        .secret_client_with("with-api", &["api"], &["gateway"])
        .await;
    let without = iam
        .secret_client_with("without", &["other"], &["gateway"])
        .await;
    let r = iam
        .token_basic(
            &with,
            &[("grant_type", "client_credentials"), ("scope", "api")],
        )
        .await;
    let t_api: String = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .into();
    let r = iam
        .token_basic(
            &without,
            &[("grant_type", "client_credentials"), ("scope", "other")],
        )
        .await;
    let t_other: String = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .into();

    let dir = tempfile::tempdir().unwrap();
    copy_policies(dir.path());
    let up = upstream().await;
    let cfg = config(&iam, up, Some(dir.path()))
        .validate(&|_| None)
        .unwrap();
    let gw = portcullis_gateway::start(cfg, None, Arc::new(|_| {}))
        .await
        .unwrap();
    let http = portcullis_test_support::http_client();
    let call = |t: String| {
        let (http, url) = (http.clone(), format!("http://{}/api/x", gw.addr));
        async move { http.get(url).bearer_auth(t).send().await.unwrap() }
    };
    assert_eq!(call(t_api.clone()).await.status(), 200, "permit api-scope");
    let denied = call(t_other.clone()).await;
    assert_eq!(denied.status(), 403, "default deny");
    let v: Value = denied.json().await.unwrap();
    assert_eq!(v["error"], "access_denied");

    // A broken file: refused, the old set keeps deciding.
    std::fs::write(dir.path().join("guards.cedar"), "permit (").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(call(t_api.clone()).await.status(), 200);
    assert_eq!(call(t_other.clone()).await.status(), 403);

    // A new set: everyone may call the API, except this one client.
    std::fs::write(
        dir.path().join("guards.cedar"),
        "@id(\"all\") permit (principal, action == Action::\"CallApi\", resource);\n\
         @id(\"not-them\") forbid (principal, action, resource) when { principal.client_id == \"with-api\" };",
    )
    .unwrap();
    let mut switched = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if call(t_other.clone()).await.status() == 200 {
            switched = true;
            break;
        }
    }
    assert!(switched, "picked up without a restart");
    assert_eq!(
        call(t_api.clone()).await.status(),
        403,
        "forbid beats permit"
    );

    // A rule on the path, written against `match_path`, holds for every
    // spelling that reaches the route: case, and Unicode case mappings
    // onto ASCII (dotless ı upper-cases to I).
    std::fs::write(
        dir.path().join("guards.cedar"),
        "@id(\"all\") permit (principal, action == Action::\"CallApi\", resource);\n\
         @id(\"no-admin\") forbid (principal, action, resource is Route) when { resource.match_path == \"/api/admin\" || resource.match_path like \"/api/admin/*\" };",
    )
    .unwrap();
    let at = |path: &'static str| {
        let (http, url, t) = (
            http.clone(),
            format!("http://{}{path}", gw.addr),
            t_api.clone(),
        );
        async move { http.get(url).bearer_auth(t).send().await.unwrap().status() }
    };
    let mut switched = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if at("/api/x").await == 200 {
            switched = true;
            break;
        }
    }
    assert!(switched, "picked up without a restart");
    for path in [
        "/api/admin",
        "/api/ADMIN/x",
        "/API/Adm%C4%B1n/x",
        "/api/%61dmin",
    ] {
        assert_eq!(at(path).await, 403, "{path}");
    }
    assert_eq!(at("/api/administrators").await, 200);
    assert_eq!(at("/api/x/admin").await, 200);
}

#[tokio::test]
async fn policy_configuration_errors_are_refused() {
    let iam = TestIam::start().await;
    let up = upstream().await;
    let e = config(&iam, up, None)
        .validate(&|_| None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("routes[0].policy"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    copy_policies(dir.path());
    std::fs::write(
        dir.path().join("bad.cedar"),
        "permit (principal, action, resource) when { principal.nope };",
    )
    .unwrap();
    let cfg = config(&iam, up, Some(dir.path()))
        .validate(&|_| None)
        .unwrap();
    let e = portcullis_gateway::start(cfg, None, Arc::new(|_| {}))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("policies") && e.contains("bad.cedar"), "{e}");
}
