//! Mutual TLS in the service library over real sockets, with certificates
//! from a real `portcullis_ca::Ca`: certificate-bound tokens at
//! `BearerAuth` behind `serve_tls`, the client side (`ClientTls`,
//! `tls_client_auth` token source), and renewal through the CA's endpoint,
//! including under load.

#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::routing::{get, post};
use portcullis_ca::tls::{ClientAuth, ClientIdentity, ClientTrust, ServerTlsFiles};
use portcullis_ca::{
    Ca, DEFAULT_LEAF_TTL, IssuedLeaf, LeafSpec, PeerCertificate, RevocationReason, ServiceName,
    TrustDomain,
};
use portcullis_service::renew::{CertRenewer, RenewError, renewal_router};
use portcullis_service::tls::{ClientTls, serve_tls};
use portcullis_service::{
    Authenticated, BearerAuth, ClientCredentials, TokenSource, TokenSourceConfig, Validator,
    ValidatorConfig,
};
use portcullis_test_support::FakeIssuer;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const TD: &str = "test.portcullis";

struct TestCa {
    dir: tempfile::TempDir,
    ca: Arc<Ca>,
}

impl TestCa {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let master = portcullis_core::crypto::MasterKey::from_bytes(&[9; 32]).unwrap();
        let ca = Ca::init(
            &dir.path().join("ca"),
            TrustDomain::parse(TD).unwrap(),
            &master,
        )
        .unwrap();
        Self {
            dir,
            ca: Arc::new(ca),
        }
    }
    fn root(&self) -> PathBuf {
        self.ca.dir().join(portcullis_ca::ROOT_CERT)
    }
    fn trust(&self) -> ClientTrust {
        ClientTrust::new(
            self.root(),
            vec![self.ca.dir().join(portcullis_ca::CRL_FILE)],
        )
    }
    /// Issues a leaf for `service` (DNS `localhost`) into `<label>.*.pem`.
    fn leaf(&self, label: &str, service: &str) -> (IssuedLeaf, ClientIdentity) {
        let spec = LeafSpec::new(
            ServiceName::parse(service).unwrap(),
            vec!["localhost".into()],
            DEFAULT_LEAF_TTL,
        );
        let leaf = self.ca.issue_with(spec).unwrap();
        let cert_chain = self.dir.path().join(format!("{label}.chain.pem"));
        let key = self.dir.path().join(format!("{label}.key.pem"));
        std::fs::write(&cert_chain, &leaf.chain_pem).unwrap();
        std::fs::write(&key, leaf.key_pem.as_ref().unwrap().expose()).unwrap();
        (leaf, ClientIdentity { cert_chain, key })
    }
    fn server_files(&self, id: &ClientIdentity, client_auth: ClientAuth) -> ServerTlsFiles {
        ServerTlsFiles {
            cert_chain: id.cert_chain.clone(),
            key: id.key.clone(),
            client_auth,
            alpn_protocols: vec![b"http/1.1".to_vec()],
        }
    }
    fn client(&self, id: &ClientIdentity) -> Arc<ClientTls> {
        Arc::new(ClientTls::new(self.root(), id.clone(), Duration::from_secs(5)).unwrap())
    }
}

async fn serve(app: Router, files: ServerTlsFiles) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { serve_tls(l, app, files, std::future::pending()).await });
    addr
}

fn thumbprint(leaf: &IssuedLeaf) -> String {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(leaf.chain_pem.as_bytes()).unwrap();
    portcullis_ca::x5t_s256(&der)
}

#[tokio::test]
async fn bearer_auth_enforces_certificate_bound_tokens() {
    let ca = TestCa::new();
    let issuer = FakeIssuer::start().await;
    let (_, server) = ca.leaf("server", "inventory");
    let (billing_leaf, billing) = ca.leaf("billing", "billing");
    let (_, orders) = ca.leaf("orders", "orders");
    let validator = Validator::start(
        ValidatorConfig::new(issuer.issuer.clone(), "inventory").dangerous_ignore_revocations(),
    )
    .await;
    let app = Router::new()
        .route(
            "/items",
            get(|Authenticated(p): Authenticated| async move { p.subject.clone() }),
        )
        .layer(BearerAuth::new(validator, "inventory"));
    let addr = serve(
        app,
        ca.server_files(&server, ClientAuth::Optional(ca.trust())),
    )
    .await;
    let url = format!("https://localhost:{}/items", addr.port());

    let mut claims = issuer.claims("inventory");
    claims["cnf"] = json!({ "x5t#S256": thumbprint(&billing_leaf) });
    let bound = issuer.sign(&claims);

    let call = |client: reqwest::Client, token: String| {
        let url = url.clone();
        async move {
            let r = client.get(&url).bearer_auth(token).send().await.unwrap();
            let status = r.status().as_u16();
            let challenge = r
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status, challenge)
        }
    };
    // Its own certificate: accepted.
    let (status, _) = call(ca.client(&billing).client(), bound.clone()).await;
    assert_eq!(status, 200);
    // Another valid certificate: the binding does not hold.
    let (status, challenge) = call(ca.client(&orders).client(), bound.clone()).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(challenge.contains("certificate binding"), "{challenge}");
    // TLS without a client certificate.
    let no_cert = reqwest::Client::builder()
        .tls_backend_preconfigured(portcullis_ca::tls::client_config(&ca.root(), None).unwrap())
        .build()
        .unwrap();
    let (status, challenge) = call(no_cert.clone(), bound.clone()).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("certificate binding"), "{challenge}");
    // A plain bearer token is still fine without a certificate.
    let (status, _) = call(no_cert, issuer.sign(&issuer.claims("inventory"))).await;
    assert_eq!(status, 200);
}

/// A CA renewal endpoint on TLS with required client certificates.
async fn renewal_server(ca: &TestCa, ttl: Duration) -> String {
    let (_, id) = ca.leaf("ca-server", "ca");
    let addr = serve(
        renewal_router(ca.ca.clone(), ttl),
        ca.server_files(&id, ClientAuth::Required(ca.trust())),
    )
    .await;
    format!("https://localhost:{}/v1/renew", addr.port())
}

fn sans(pem: &str) -> (Option<String>, Vec<String>) {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    let mut uri = None;
    let mut dns = Vec::new();
    for n in &cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
    {
        match n {
            x509_parser::extensions::GeneralName::URI(u) => uri = Some(u.to_string()),
            x509_parser::extensions::GeneralName::DNSName(d) => dns.push(d.to_string()),
            _ => {}
        }
    }
    (uri, dns)
}

#[tokio::test]
async fn renewal_keeps_the_identity_and_refuses_revoked_certificates() {
    let ca = TestCa::new();
    let url = renewal_server(&ca, Duration::from_secs(3600)).await;
    let (leaf, id) = ca.leaf("svc", "inventory");
    let before = std::fs::read_to_string(&id.cert_chain).unwrap();
    let tls = ca.client(&id);
    let renewer = CertRenewer::new(url.clone(), id.clone(), tls.clone());
    assert!(renewer.due_in().unwrap() > Duration::from_secs(3600));

    renewer.renew_now().await.unwrap();
    let after = std::fs::read_to_string(&id.cert_chain).unwrap();
    assert_ne!(before, after);
    assert_eq!(
        sans(&after),
        (
            Some(format!("spiffe://{TD}/inventory")),
            vec!["localhost".to_owned()]
        )
    );
    assert_eq!(tls.generation(), 1, "the client picked the new pair up");

    // A revoked certificate cannot renew itself.
    let (revoked, revoked_id) = ca.leaf("revoked", "orders");
    ca.ca
        .revoke(&revoked.serial, RevocationReason::KeyCompromise)
        .unwrap();
    // The endpoint's CRL reloads by polling; the CA's own index refuses at once.
    let r = CertRenewer::new(url.clone(), revoked_id.clone(), ca.client(&revoked_id))
        .renew_now()
        .await;
    assert!(
        matches!(
            &r,
            Err(RenewError::Refused(_)) | Err(RenewError::Unavailable(_))
        ),
        "{r:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&revoked_id.cert_chain).unwrap(),
        revoked.chain_pem,
        "nothing written"
    );
    let _ = leaf;
}

#[tokio::test]
async fn renewal_is_refused_by_the_index_for_a_revoked_certificate() {
    // Without waiting for the CRL: the endpoint's TLS layer still admits the
    // certificate, the CA's index does not.
    let ca = TestCa::new();
    let (revoked, id) = ca.leaf("revoked", "orders");
    let url = renewal_server(&ca, Duration::from_secs(3600)).await;
    ca.ca
        .revoke(&revoked.serial, RevocationReason::KeyCompromise)
        .unwrap();
    let client = ca.client(&id).client();
    let r = client
        .post(&url)
        .body(String::from("not a csr"))
        .send()
        .await;
    // Either the TLS layer already has the new CRL (handshake refused), or
    // the index answers 403 renewal_refused before the CSR is even read.
    if let Ok(r) = r {
        assert_eq!(r.status(), 403);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "renewal_refused");
    }
}

#[tokio::test]
async fn renewal_under_load_fails_no_request() {
    let ca = TestCa::new();
    let url = renewal_server(&ca, Duration::from_secs(3600)).await;
    // The service's certificate is both its server certificate and the
    // client certificate it calls itself with; both follow the files.
    let (_, id) = ca.leaf("svc", "inventory");
    let app = Router::new().route(
        "/who",
        get(|p: Option<axum::Extension<PeerCertificate>>| async move {
            p.map(|axum::Extension(p)| p.x5t_s256().to_owned())
                .unwrap_or_default()
        }),
    );
    let addr = serve(app, ca.server_files(&id, ClientAuth::Required(ca.trust()))).await;
    let tls = ca.client(&id);
    let watcher = tls.watch(Duration::from_millis(20));
    let target = format!("https://localhost:{}/who", addr.port());

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let seen = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (tls, target, stop, ok, failed, seen) = (
            tls.clone(),
            target.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
            seen.clone(),
        );
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match tls.client().get(&target).send().await {
                    Ok(r) if r.status() == 200 => {
                        let who = r.text().await.unwrap_or_default();
                        seen.lock().unwrap().insert(who);
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        eprintln!("failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let renewer = CertRenewer::new(url, id.clone(), tls.clone());
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        renewer.renew_now().await.unwrap();
    }
    // Let the server side pick up the last certificate too.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    watcher.abort();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} failed of {}", ok + failed);
    assert!(ok > 0);
    assert_eq!(tls.generation(), 3);
    assert!(
        seen.lock().unwrap().len() >= 2,
        "requests went out with more than one certificate: {:?}",
        seen.lock().unwrap()
    );
}

#[tokio::test]
async fn the_token_source_authenticates_with_its_certificate() {
    // A token endpoint that accepts tls_client_auth: a verified client
    // certificate and a client_id, no secret; it binds the token (cnf).
    let ca = TestCa::new();
    let (_, server) = ca.leaf("server", "iam");
    let app = Router::new().route(
        "/token",
        post(
            |p: Option<axum::Extension<PeerCertificate>>,
             axum::Form(form): axum::Form<std::collections::HashMap<String, String>>| async move {
                let Some(axum::Extension(p)) = p else {
                    return (
                        axum::http::StatusCode::UNAUTHORIZED,
                        axum::Json(json!({"error": "invalid_client"})),
                    );
                };
                assert!(!form.contains_key("client_secret"));
                (
                    axum::http::StatusCode::OK,
                    axum::Json(json!({
                        "access_token": format!("{}.{}", form["client_id"], p.x5t_s256()),
                        "token_type": "Bearer",
                        "expires_in": 300,
                    })),
                )
            },
        ),
    );
    let addr = serve(
        app,
        ca.server_files(&server, ClientAuth::Optional(ca.trust())),
    )
    .await;
    let (leaf, id) = ca.leaf("svc", "billing");
    let tls = ca.client(&id);
    let source = TokenSource::new(TokenSourceConfig::new(
        format!("https://localhost:{}/token", addr.port()),
        ClientCredentials::TlsClientAuth {
            client_id: "billing".into(),
            tls: tls.clone(),
        },
    ));
    let t = source.token(None, &[]).await.unwrap();
    assert_eq!(t.token.expose(), format!("billing.{}", thumbprint(&leaf)));
    // Cached until the certificate changes.
    source.token(None, &[]).await.unwrap();
    assert_eq!(source.requests_made(), 1);
    let (_, other) = ca.leaf("svc2", "billing");
    std::fs::copy(&other.key, &id.key).unwrap();
    std::fs::copy(&other.cert_chain, &id.cert_chain).unwrap();
    assert!(tls.reload_if_changed().unwrap());
    let t2 = source.token(None, &[]).await.unwrap();
    assert_ne!(t2.token.expose(), t.token.expose());
    assert_eq!(source.requests_made(), 2);
}
