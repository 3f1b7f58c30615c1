//! Mutual TLS at the gateway over real sockets, with certificates from a
//! real `portcullis_ca::Ca` in a temporary directory: who gets through an
//! `mtls` route, what reaches the upstream, certificate-bound tokens at the
//! `jwt` authenticator, and mutual TLS from the gateway to an upstream.

#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::extract::Request;
use axum::routing::any;
use base64::Engine;
use portcullis_ca::tls::{ClientAuth, ClientIdentity, ClientTrust, ServerTlsFiles};
use portcullis_ca::{
    Ca, DEFAULT_LEAF_TTL, IssuedLeaf, LeafSpec, OffsetDateTime, PeerCertificate, Reloading,
    RevocationReason, ServiceName, TrustDomain,
};
use portcullis_gateway::config::{
    RawAuthenticator, RawConfig, RawMtlsIdentity, RawRoute, RawTls, RawUpstream, RawUpstreamTls,
};
use portcullis_test_support::FakeIssuer;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const TD: &str = "test.portcullis";
const DAY: time::Duration = time::Duration::days(1);

struct TestCa {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl TestCa {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let master = portcullis_core::crypto::MasterKey::from_bytes(&[7; 32]).unwrap();
        let ca = Ca::init(
            &dir.path().join("ca"),
            TrustDomain::parse(TD).unwrap(),
            &master,
        )
        .unwrap();
        Self { dir, ca }
    }
    fn root(&self) -> PathBuf {
        self.ca.dir().join(portcullis_ca::ROOT_CERT)
    }
    fn crl(&self) -> PathBuf {
        self.ca.dir().join(portcullis_ca::CRL_FILE)
    }
    fn leaf(&self, label: &str, spec: LeafSpec) -> (IssuedLeaf, ClientIdentity) {
        let leaf = self.ca.issue_with(spec).unwrap();
        let label = label.replace('/', "-");
        let cert_chain = self.dir.path().join(format!("{label}.chain.pem"));
        let key = self.dir.path().join(format!("{label}.key.pem"));
        std::fs::write(&cert_chain, &leaf.chain_pem).unwrap();
        std::fs::write(&key, leaf.key_pem.as_ref().unwrap().expose()).unwrap();
        (leaf, ClientIdentity { cert_chain, key })
    }
    fn client(&self, service: &str) -> (IssuedLeaf, ClientIdentity) {
        self.leaf(service, spec(service, vec![]))
    }
}

fn spec(service: &str, dns: Vec<String>) -> LeafSpec {
    LeafSpec::new(ServiceName::parse(service).unwrap(), dns, DEFAULT_LEAF_TTL)
}

/// An upstream answering with the headers it got and the SPIFFE ID of the
/// client certificate, if the connection had one.
fn echo_app() -> Router {
    Router::new().fallback(any(|req: Request| async move {
        let peer = req
            .extensions()
            .get::<PeerCertificate>()
            .and_then(|p| p.identity().spiffe_id)
            .map(|id| id.to_string());
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let proto = req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        axum::Json(json!({
            "path": req.uri().path(),
            "authorization": auth,
            "peer": peer,
            "proto": proto,
        }))
    }))
}

async fn plain_upstream() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, echo_app()).await });
    addr
}

/// An HTTPS upstream that requires a client certificate from `ca`.
async fn mtls_upstream(ca: &TestCa) -> SocketAddr {
    let (_, id) = ca.leaf("upstream", spec("orders", vec!["orders.internal".into()]));
    let files = ServerTlsFiles {
        cert_chain: id.cert_chain,
        key: id.key,
        client_auth: ClientAuth::Required(ClientTrust::new(ca.root(), vec![ca.crl()])),
        alpn_protocols: vec![b"http/1.1".to_vec()],
    };
    let tls = Arc::new(Reloading::new(files).unwrap());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let app = echo_app();
    tokio::spawn(portcullis_ca::tls::serve(
        l,
        portcullis_ca::tls::Acceptor::new(tls),
        move |_| app.clone(),
        std::future::pending(),
    ));
    addr
}

fn route(name: &str, host: Option<&str>, prefix: &str, auth: &str, upstream: &str) -> RawRoute {
    RawRoute {
        name: name.into(),
        host: host.map(str::to_owned),
        path_prefix: prefix.into(),
        upstream: upstream.into(),
        auth: vec![auth.into()],
        ..Default::default()
    }
}

fn identity(id: &str, consumer: Option<&str>, roles: &[&str]) -> RawMtlsIdentity {
    RawMtlsIdentity {
        spiffe_id: id.into(),
        consumer: consumer.map(str::to_owned),
        roles: roles.iter().map(|s| s.to_string()).collect(),
        scopes: vec!["invoices:read".into()],
    }
}

struct Env {
    ca: TestCa,
    other_ca: TestCa,
    issuer: FakeIssuer,
    gw: portcullis_gateway::RunningGateway,
}

async fn start() -> Env {
    let ca = TestCa::new();
    let other_ca = TestCa::new();
    let issuer = FakeIssuer::start().await;
    let (_, gw_id) = ca.leaf(
        "gateway",
        spec(
            "gateway",
            vec!["mtls.test".into(), "public.test".into(), "localhost".into()],
        ),
    );
    let echo = plain_upstream().await;
    let secure = mtls_upstream(&ca).await;
    let upstream_tls = |ca_root: &Path| RawUpstreamTls {
        ca: ca_root.display().to_string(),
        cert: Some(gw_id.cert_chain.display().to_string()),
        key: Some(gw_id.key.display().to_string()),
        server_name: Some("orders.internal".into()),
    };
    let raw = RawConfig {
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        tls: Some(RawTls {
            cert: gw_id.cert_chain.display().to_string(),
            key: gw_id.key.display().to_string(),
            client_ca: Some(ca.root().display().to_string()),
            crls: vec![ca.crl().display().to_string()],
            ..Default::default()
        }),
        upstreams: vec![
            RawUpstream {
                name: "echo".into(),
                targets: vec![echo.to_string()],
                ..Default::default()
            },
            RawUpstream {
                name: "orders".into(),
                targets: vec![secure.to_string()],
                tls: Some(upstream_tls(&ca.root())),
                eject_after_failures: Some(0),
                ..Default::default()
            },
            RawUpstream {
                name: "orders-wrong-ca".into(),
                targets: vec![secure.to_string()],
                tls: Some(upstream_tls(&other_ca.root())),
                eject_after_failures: Some(0),
                ..Default::default()
            },
        ],
        authenticators: vec![
            RawAuthenticator {
                name: "services".into(),
                kind: "mtls".into(),
                trust_domain: Some(TD.into()),
                identities: vec![
                    identity(
                        &format!("spiffe://{TD}/billing"),
                        Some("billing"),
                        &["payer"],
                    ),
                    identity(&format!("spiffe://{TD}/jobs/*"), None, &["batch"]),
                ],
                ..Default::default()
            },
            RawAuthenticator {
                name: "tokens".into(),
                kind: "jwt".into(),
                issuer: Some(issuer.issuer.clone()),
                audience: Some("gateway".into()),
                ..Default::default()
            },
        ],
        routes: vec![
            route("m", Some("mtls.test"), "/m", "services", "echo"),
            route("j", Some("mtls.test"), "/j", "tokens", "echo"),
            route("pub", None, "/pub", "anonymous", "echo"),
            route("secure", None, "/secure", "anonymous", "orders"),
            route("wrong", None, "/wrong", "anonymous", "orders-wrong-ca"),
        ],
        ..Default::default()
    };
    let config = raw.validate(&|_| None).unwrap();
    let gw = portcullis_gateway::start(config, None, Arc::new(|_: &mut RawConfig| {}))
        .await
        .unwrap();
    Env {
        ca,
        other_ca,
        issuer,
        gw,
    }
}

impl Env {
    /// A fresh client (no pooled connections) trusting our root and
    /// presenting `id`.
    fn client(&self, id: Option<&ClientIdentity>) -> reqwest::Client {
        let tls = portcullis_ca::tls::client_config(&self.ca.root(), id).unwrap();
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .resolve("mtls.test", self.gw.addr)
            .resolve("public.test", self.gw.addr)
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.gw.addr.port())
    }

    async fn get(&self, id: Option<&ClientIdentity>, path: &str) -> reqwest::Result<Response> {
        self.get_at(id, "mtls.test", path, None).await
    }

    async fn get_at(
        &self,
        id: Option<&ClientIdentity>,
        sni: &str,
        path: &str,
        bearer: Option<&str>,
    ) -> reqwest::Result<Response> {
        let mut req = self
            .client(id)
            .get(self.url(sni, path))
            .header("host", "mtls.test");
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        let challenge = r
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = r.json::<Value>().await?;
        Ok(Response {
            status,
            challenge,
            body,
        })
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    challenge: String,
    body: Value,
}

/// The claims of the internal token the upstream received.
fn internal_claims(body: &Value) -> Value {
    let t = body["authorization"].as_str().unwrap();
    let payload = t.trim_start_matches("Bearer ").split('.').nth(1).unwrap();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

#[tokio::test]
async fn a_mapped_spiffe_id_reaches_the_upstream_as_its_consumer() {
    let env = start().await;
    let (_, billing) = env.ca.client("billing");
    let r = env.get(Some(&billing), "/m/invoices").await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let c = internal_claims(&r.body);
    assert_eq!(c["sub"], "billing");
    assert_eq!(c["consumer"], "billing");
    assert_eq!(c["auth_method"], "mtls");
    assert_eq!(c["roles"], json!(["payer"]));
    assert_eq!(c["scope"], "invoices:read");
    assert_eq!(c["aud"], "echo");
    assert_eq!(r.body["proto"], "https", "the client came over TLS");

    // A wildcard mapping: the subject is the SPIFFE ID itself.
    let (_, job) = env.ca.client("jobs/nightly");
    let r = env.get(Some(&job), "/m/x").await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let c = internal_claims(&r.body);
    assert_eq!(c["sub"], format!("spiffe://{TD}/jobs/nightly"));
    assert_eq!(c["roles"], json!(["batch"]));
}

#[tokio::test]
async fn verified_certificates_that_name_no_mapped_workload_get_401() {
    let env = start().await;
    let (_, orders) = env.ca.client("orders");
    let r = env.get(Some(&orders), "/m").await.unwrap();
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.body["error"], "invalid_client_certificate");
    assert!(
        r.body["error_description"]
            .as_str()
            .unwrap()
            .contains("not mapped"),
        "{r:?}"
    );

    let (_, anonymous) = env.ca.leaf(
        "nospiffe",
        spec("billing", vec![]).dangerous_without_spiffe_id(),
    );
    let r = env.get(Some(&anonymous), "/m").await.unwrap();
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.body["error"], "invalid_client_certificate");
    assert!(
        r.body["error_description"]
            .as_str()
            .unwrap()
            .contains("no SPIFFE ID"),
        "{r:?}"
    );
}

#[tokio::test]
async fn server_only_tls_and_plain_tcp_do_not_reach_an_mtls_route() {
    let env = start().await;
    // TLS without a client certificate.
    let r = env.get(None, "/m").await.unwrap();
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.body["error"], "client_certificate_required");

    // Plain HTTP to the TLS listener gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/m", env.gw.addr))
        .header("host", "mtls.test")
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
}

#[tokio::test]
async fn certificates_that_fail_verification_are_refused_in_the_handshake() {
    let env = start().await;
    let now = OffsetDateTime::now_utc();
    let (_, expired) = env.ca.leaf(
        "expired",
        spec("billing", vec![]).dangerous_validity(now - 2 * DAY, now - DAY),
    );
    let (_, future) = env.ca.leaf(
        "future",
        spec("billing", vec![]).dangerous_validity(now + DAY, now + 2 * DAY),
    );
    let (_, server_only) = env
        .ca
        .leaf("server-only", spec("billing", vec![]).server_only());
    let (_, foreign) = env.other_ca.client("billing");
    for (what, id) in [
        ("expired", &expired),
        ("not yet valid", &future),
        ("serverAuth only", &server_only),
        ("another CA", &foreign),
    ] {
        let r = env.get(Some(id), "/m").await;
        assert!(r.is_err(), "{what}: {r:?}");
    }
    // The listener still serves good certificates.
    let (_, billing) = env.ca.client("billing");
    assert_eq!(env.get(Some(&billing), "/m").await.unwrap().status, 200);
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_once_the_new_crl_is_published() {
    let env = start().await;
    let (leaf, billing) = env.ca.client("billing");
    let (_, job) = env.ca.client("jobs/nightly");
    assert_eq!(env.get(Some(&billing), "/m").await.unwrap().status, 200);

    // `revoke` rewrites crl.pem; the listener notices without a restart.
    env.ca
        .ca
        .revoke(&leaf.serial, RevocationReason::KeyCompromise)
        .unwrap();
    let mut refused = false;
    for _ in 0..100 {
        if env.get(Some(&billing), "/m").await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused,
        "the revoked certificate was still accepted after 10 s"
    );
    assert_eq!(
        env.get(Some(&job), "/m").await.unwrap().status,
        200,
        "other certificates still work"
    );
}

#[tokio::test]
async fn a_host_without_mtls_routes_never_asks_for_a_certificate() {
    let env = start().await;
    let (_, billing) = env.ca.client("billing");
    // SNI public.test: the client is not asked, so it sends no certificate
    // even though it has one; the mtls route (by Host) then sees none.
    let r = env
        .get_at(Some(&billing), "public.test", "/m", None)
        .await
        .unwrap();
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.body["error"], "client_certificate_required");
    // SNI mtls.test: asked, sent, accepted.
    let r = env
        .get_at(Some(&billing), "mtls.test", "/m", None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    // Anonymous routes work without a certificate under either name.
    for sni in ["public.test", "mtls.test"] {
        let r = env.get_at(None, sni, "/pub", None).await.unwrap();
        assert_eq!(r.status, 200, "{sni}: {r:?}");
    }
}

#[tokio::test]
async fn a_certificate_bound_token_only_works_with_its_certificate() {
    let env = start().await;
    let (leaf, billing) = env.ca.client("billing");
    let (_, orders) = env.ca.client("orders");
    let der = rustls_pki_types::CertificateDer::from(x509_der(&leaf.chain_pem));
    let mut claims = env.issuer.claims("gateway");
    claims["cnf"] = json!({ "x5t#S256": portcullis_ca::x5t_s256(&der) });
    let bound = env.issuer.sign(&claims);

    let r = env
        .get_at(Some(&billing), "mtls.test", "/j", Some(&bound))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(internal_claims(&r.body)["sub"], "svc-a");

    let r = env
        .get_at(Some(&orders), "mtls.test", "/j", Some(&bound))
        .await
        .unwrap();
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.body["error"], "invalid_token");
    assert!(r.challenge.contains("error=\"invalid_token\""), "{r:?}");
    assert!(r.challenge.contains("certificate binding"), "{r:?}");

    // No certificate at all (SNI without mtls routes: none is asked for).
    let r = env
        .get_at(Some(&billing), "public.test", "/j", Some(&bound))
        .await
        .unwrap();
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.challenge.contains("certificate binding"), "{r:?}");

    // An unbound token works with or without a certificate.
    let plain = env.issuer.sign(&env.issuer.claims("gateway"));
    let r = env
        .get_at(None, "public.test", "/j", Some(&plain))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
}

fn x509_der(chain_pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(chain_pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn the_gateway_presents_its_certificate_to_an_mtls_upstream_and_fails_closed() {
    let env = start().await;
    let r = env
        .get_at(None, "public.test", "/secure/a", None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["peer"], format!("spiffe://{TD}/gateway"));
    assert_eq!(internal_claims(&r.body)["aud"], "orders");

    // Trusting another CA, the gateway refuses the upstream's certificate.
    let resp = env
        .client(None)
        .get(env.url("public.test", "/wrong/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
}

#[tokio::test]
async fn a_reload_naming_other_tls_files_serves_them_to_new_connections() {
    let (first, second) = (TestCa::new(), TestCa::new());
    let server = |ca: &TestCa, label: &str| {
        ca.leaf(label, spec("gateway", vec!["public.test".into()]))
            .1
    };
    let (a, b) = (server(&first, "gw-a"), server(&second, "gw-b"));
    let echo = plain_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let config_for = |cert: &Path, key: &Path| {
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
             [tls]\ncert = \"{}\"\nkey = \"{}\"\n\
             [[upstreams]]\nname = \"echo\"\ntargets = [\"{echo}\"]\n\
             [[routes]]\nname = \"pub\"\npath_prefix = \"/pub\"\nupstream = \"echo\"\nauth = [\"anonymous\"]\n",
            cert.display(),
            key.display()
        )
    };
    std::fs::write(&file, config_for(&a.cert_chain, &a.key)).unwrap();
    let config = portcullis_gateway::load(&file, &|_| {}).unwrap();
    let gw = portcullis_gateway::start(config, Some(file.clone()), Arc::new(|_| {}))
        .await
        .unwrap();
    // A client trusting one CA; `pooled` keeps its connection between calls.
    let client = |ca: &TestCa, pooled: bool| {
        let tls = portcullis_ca::tls::client_config(&ca.root(), None).unwrap();
        let b = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .resolve("public.test", gw.addr);
        let b = if pooled {
            b
        } else {
            b.pool_max_idle_per_host(0)
        };
        b.build().unwrap()
    };
    let url = format!("https://public.test:{}/pub", gw.addr.port());
    let status = |c: reqwest::Client| {
        let url = url.clone();
        async move { c.get(url).send().await.map(|r| r.status().as_u16()) }
    };
    let kept = client(&first, true);
    assert_eq!(status(kept.clone()).await.unwrap(), 200);
    assert!(status(client(&second, false)).await.is_err());

    // Files that do not load refuse the whole reload, and the running
    // certificate stays.
    let missing = dir.path().join("missing.key.pem");
    std::fs::write(
        &file,
        config_for(&b.cert_chain, &missing).replace("/pub", "/moved"),
    )
    .unwrap();
    let err = gw.reload().await.unwrap_err().to_string();
    assert!(
        err.contains("TLS") && err.contains("missing.key.pem"),
        "{err}"
    );
    assert_eq!(
        status(client(&first, false)).await.unwrap(),
        200,
        "routes unchanged too"
    );

    // Other files: new connections get the new certificate; the open one
    // keeps its session.
    std::fs::write(&file, config_for(&b.cert_chain, &b.key)).unwrap();
    let reloaded = gw.reload().await.unwrap();
    assert!(reloaded.needs_restart.is_empty(), "{reloaded:?}");
    assert_eq!(status(client(&second, false)).await.unwrap(), 200);
    assert!(
        status(client(&first, false)).await.is_err(),
        "the old certificate is no longer served"
    );
    assert_eq!(
        status(kept).await.unwrap(),
        200,
        "an open connection keeps its session"
    );

    // The new files are the ones polled: renewing them in place (here with
    // a certificate from the first CA) is picked up without a reload.
    let renewed = server(&first, "gw-c");
    std::fs::copy(&renewed.key, &b.key).unwrap();
    std::fs::copy(&renewed.cert_chain, &b.cert_chain).unwrap();
    let mut picked_up = false;
    for _ in 0..100 {
        if status(client(&first, false)).await.is_ok() {
            picked_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        picked_up,
        "the renewed files were not picked up within 10 s"
    );

    // Client certificates and an mtls route in one reload: the new
    // configuration asks for the certificate the new route needs.
    let with_mtls = config_for(&b.cert_chain, &b.key).replacen(
        "[[upstreams]]",
        &format!("client_ca = \"{}\"\n[[upstreams]]", first.root().display()),
        1,
    ) + &format!(
        "[[authenticators]]\nname = \"services\"\ntype = \"mtls\"\ntrust_domain = \"{TD}\"\n\
         [[authenticators.identities]]\nspiffe_id = \"spiffe://{TD}/billing\"\n\
         [[routes]]\nname = \"m\"\npath_prefix = \"/m\"\nupstream = \"echo\"\nauth = [\"services\"]\n"
    );
    std::fs::write(&file, with_mtls).unwrap();
    let reloaded = gw.reload().await.unwrap();
    assert!(reloaded.needs_restart.is_empty(), "{reloaded:?}");
    let (_, billing) = first.client("billing");
    let with_cert = |id: Option<&ClientIdentity>| {
        let tls = portcullis_ca::tls::client_config(&first.root(), id).unwrap();
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .resolve("public.test", gw.addr)
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    let m = format!("https://public.test:{}/m", gw.addr.port());
    let r = with_cert(Some(&billing)).get(&m).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(internal_claims(&body)["auth_method"], "mtls");
    let r = with_cert(None).get(&m).send().await.unwrap();
    assert_eq!(r.status(), 401, "no certificate, no entry");

    // Turning TLS off takes a restart: named, and the listener stays TLS.
    let plain = config_for(&b.cert_chain, &b.key);
    let plain = plain
        .lines()
        .filter(|l| !l.starts_with("[tls]") && !l.starts_with("cert =") && !l.starts_with("key ="))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&file, plain).unwrap();
    let reloaded = gw.reload().await.unwrap();
    assert_eq!(reloaded.needs_restart, ["tls"]);
    assert_eq!(status(client(&first, false)).await.unwrap(), 200);
}
