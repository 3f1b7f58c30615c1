//! A downstream service decides on both the person and the acting service:
//! tokens come from the real IAM server (client credentials, then token
//! exchange by two different services), the service validates them with
//! the library and asks its Cedar policies through `PolicyGuard`.

#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::post;
use portcullis_iam::config::RawExchangeRule;
use portcullis_service::policy::{Denied, PolicyGuard, PolicyStore, Resource};
use portcullis_service::{Authenticated, BearerAuth, Validator, ValidatorConfig};
use portcullis_test_support::{SecretClient, TestIam};
use serde_json::{Map, Value, json};
use std::sync::Arc;

const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const AT: &str = "urn:ietf:params:oauth:token-type:access_token";

const SCHEMA: &str = r#"
entity Principal = { client_id: String, roles: Set<String>, scopes: Set<String>,
                     actors: Set<String>, auth_method: String };
entity SecuritySystem = { location: String };
action ArmSystem appliesTo { principal: Principal, resource: SecuritySystem,
                             context: { locations: Set<String> } };
"#;

const POLICIES: &str = r#"
@id("arm-with-scope-at-own-location")
permit (principal, action == Action::"ArmSystem", resource)
when { principal.scopes.contains("systems:arm") && context.locations.contains(resource.location) };

@id("reporting-never-arms")
forbid (principal, action == Action::"ArmSystem", resource)
when { principal.actors.contains("reporting") };
"#;

/// The security-system service: `POST /systems/{id}/arm`. System `s-berlin`
/// is in Berlin, everything else in Paris; every caller's locations are
/// Berlin (a real service would look both up).
async fn systems_service(iam: &TestIam, guard: PolicyGuard) -> String {
    async fn arm(
        Authenticated(p): Authenticated,
        State(guard): State<PolicyGuard>,
        Path(id): Path<String>,
    ) -> Result<axum::Json<Value>, Denied> {
        let location = if id == "s-berlin" { "berlin" } else { "paris" };
        let resource = Resource::new("SecuritySystem", &id).attr("location", location);
        let mut context = Map::new();
        context.insert("locations".into(), json!(["berlin"]));
        guard.check(&p, "ArmSystem", &resource, &context)?;
        Ok(axum::Json(json!({"armed": id, "for": p.subject})))
    }
    let validator = Validator::start(ValidatorConfig::new(&iam.issuer, "systems-api")).await;
    let app = Router::new()
        .route("/systems/{id}/arm", post(arm))
        .layer(BearerAuth::new(validator, "systems"))
        .with_state(guard);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}")
}

async fn client(iam: &TestIam, id: &str, scopes: &[&str], grants: &[&str]) -> SecretClient {
    let v = iam
        .create_client(json!({
            "client_id": id, "grant_types": grants,
            "allowed_scopes": scopes, "default_scopes": scopes,
            "allowed_audiences": ["orders-api"], "default_audiences": ["orders-api"],
        }))
        .await;
    SecretClient {
        id: id.into(),
        secret: v["client_secret"].as_str().unwrap().into(),
    }
}

async fn exchanged(iam: &TestIam, by: &SecretClient, subject: &str) -> String {
    let r = iam
        .token_basic(
            by,
            &[
                ("grant_type", GRANT),
                ("subject_token", subject),
                ("subject_token_type", AT),
                ("audience", "systems-api"),
            ],
        )
        .await;
    let v: Value = r.json().await.unwrap();
    v["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_decides_on_the_person_and_the_acting_service() {
    let rule = |c: &str| RawExchangeRule {
        client: c.into(),
        subject_audiences: vec!["orders-api".into()],
        audiences: vec!["systems-api".into()],
        scopes: vec!["systems:arm".into(), "systems:read".into()],
    };
    let iam =
        TestIam::start_with(|c| c.token_exchange.rules = vec![rule("orders"), rule("reporting")])
            .await;
    let cc = "client_credentials";
    let operator = client(
        &iam,
        "operator-app",
        &["systems:arm", "systems:read"],
        &[cc],
    )
    .await;
    let viewer = client(&iam, "viewer-app", &["systems:read"], &[cc]).await;
    let orders = client(&iam, "orders", &["systems:read"], &[cc, GRANT]).await;
    let reporting = client(&iam, "reporting", &["systems:read"], &[cc, GRANT]).await;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("schema.cedarschema"), SCHEMA).unwrap();
    std::fs::write(dir.path().join("systems.cedar"), POLICIES).unwrap();
    let guard = PolicyGuard::new(Arc::new(PolicyStore::open(dir.path()).unwrap()));
    let base = systems_service(&iam, guard).await;
    let http = portcullis_test_support::http_client();
    let arm = |token: String, system: &'static str| {
        let (http, url) = (http.clone(), format!("{base}/systems/{system}/arm"));
        async move {
            let r = http.post(url).bearer_auth(token).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    let person = iam.access_token(&operator).await;
    let via_orders = exchanged(&iam, &orders, &person).await;
    let (status, v) = arm(via_orders.clone(), "s-berlin").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["for"], "operator-app",
        "the person, not the acting service"
    );
    assert_eq!(
        arm(via_orders, "s-paris").await.0,
        403,
        "not their location"
    );

    // The same person through the reporting service: forbidden.
    let via_reporting = exchanged(&iam, &reporting, &person).await;
    let (status, v) = arm(via_reporting, "s-berlin").await;
    assert_eq!(status, 403);
    assert_eq!(v["error"], "access_denied");

    // A person without the scope, through the allowed service: no permit.
    let reader = iam.access_token(&viewer).await;
    let via_orders = exchanged(&iam, &orders, &reader).await;
    assert_eq!(arm(via_orders, "s-berlin").await.0, 403);
}
