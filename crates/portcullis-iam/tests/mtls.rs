//! Mutual TLS at the IAM server (RFC 8705): `tls_client_auth` and
//! `self_signed_tls_client_auth`, certificate-bound access and refresh
//! tokens, CRLs picked up without restart, and who the listener refuses.
//! Real sockets, certificates from `portcullis_ca::Ca` in a temp dir.

#![allow(clippy::unwrap_used)]

mod browser;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use portcullis_ca::tls::{ClientIdentity, client_config};
use portcullis_ca::{
    Ca, DEFAULT_LEAF_TTL, IssuedLeaf, LeafSpec, OffsetDateTime, RevocationReason, ServiceName,
    TrustDomain, x5t_s256,
};
use portcullis_core::crypto::MasterKey;
use portcullis_iam::config::{RawClient, RawConfig, RawTls};
use portcullis_test_support::TestIam;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DAY: time::Duration = time::Duration::days(1);

/// A CA in a temp dir, and the files of the IAM server's certificate.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
}

fn name(s: &str) -> ServiceName {
    ServiceName::parse(s).unwrap()
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::init(
            &dir.path().join("ca"),
            TrustDomain::parse("test.portcullis").unwrap(),
            &MasterKey::from_bytes(&[7; 32]).unwrap(),
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
        let id = ClientIdentity {
            cert_chain: self.dir.path().join(format!("{label}.pem")),
            key: self.dir.path().join(format!("{label}.key")),
        };
        std::fs::write(&id.cert_chain, &leaf.chain_pem).unwrap();
        std::fs::write(&id.key, leaf.key_pem.as_ref().unwrap().expose()).unwrap();
        (leaf, id)
    }

    /// A default client leaf for `service` (SPIFFE URI SAN, CN = service),
    /// its files named after `label`.
    fn client_as(&self, service: &str, label: &str) -> (IssuedLeaf, ClientIdentity) {
        self.leaf(
            label,
            LeafSpec::new(name(service), vec![], DEFAULT_LEAF_TTL),
        )
    }

    fn client(&self, service: &str) -> (IssuedLeaf, ClientIdentity) {
        self.client_as(service, service)
    }

    /// `[tls]` for the public listener: client certificates optional.
    fn tls(&self) -> RawTls {
        let (_, server) = self.leaf(
            "server",
            LeafSpec::new(
                name("iam"),
                vec!["localhost".into(), "127.0.0.1".into()],
                DEFAULT_LEAF_TTL,
            ),
        );
        RawTls {
            cert: Some(server.cert_chain.display().to_string()),
            key: Some(server.key.display().to_string()),
            client_ca: Some(self.root().display().to_string()),
            crls: vec![self.crl().display().to_string()],
            reload_interval_secs: Some(1),
            ..Default::default()
        }
    }

    /// An HTTPS client trusting the CA, presenting `id` if given.
    fn http(&self, id: Option<&ClientIdentity>) -> reqwest::Client {
        https_client(&self.root(), id)
    }
}

fn https_client(root: &Path, id: Option<&ClientIdentity>) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(client_config(root, id).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A self-signed certificate (rcgen) as a client identity, and its PEM.
fn self_signed(dir: &Path, label: &str) -> (ClientIdentity, String) {
    let ck = rcgen::generate_simple_self_signed(vec![format!("{label}.example")]).unwrap();
    let id = ClientIdentity {
        cert_chain: dir.join(format!("{label}.ss.pem")),
        key: dir.join(format!("{label}.ss.key")),
    };
    std::fs::write(&id.cert_chain, ck.cert.pem()).unwrap();
    std::fs::write(&id.key, ck.signing_key.serialize_pem()).unwrap();
    (id, ck.cert.pem())
}

fn cert_client(id: &str, field: &str, value: &str) -> RawClient {
    let mut c = RawClient {
        id: id.into(),
        token_endpoint_auth_method: Some("tls_client_auth".into()),
        allowed_scopes: vec!["read".into()],
        default_scopes: vec!["read".into()],
        allowed_audiences: vec!["api".into()],
        default_audiences: vec!["api".into()],
        ..Default::default()
    };
    let v = Some(value.to_owned());
    match field {
        "subject_dn" => c.tls_client_auth_subject_dn = v,
        "san_uri" => c.tls_client_auth_san_uri = v,
        "san_dns" => c.tls_client_auth_san_dns = v,
        other => panic!("{other}"),
    }
    c
}

/// An IAM server with `[tls]` and clients `billing` (subject DN
/// `CN=billing`) and `billing-uri` (SPIFFE URI SAN).
async fn start(pki: &Pki, tweak: impl FnOnce(&mut RawConfig)) -> TestIam {
    let tls = pki.tls();
    let mut iam = TestIam::start_with(|raw| {
        raw.tls = Some(tls);
        raw.clients = vec![
            cert_client("billing", "subject_dn", "CN=billing"),
            cert_client("billing-uri", "san_uri", "spiffe://test.portcullis/billing"),
        ];
        tweak(raw);
    })
    .await;
    assert!(iam.base.starts_with("https://"), "{}", iam.base);
    iam.http = pki.http(None);
    iam
}

/// A client-credentials request naming `client_id` only (its credential is
/// the certificate). Err: the TLS connection failed.
async fn cc(
    iam: &TestIam,
    http: &reqwest::Client,
    client_id: &str,
) -> Result<(u16, Value), String> {
    let r = http
        .post(iam.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
        ])
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok((r.status().as_u16(), r.json().await.unwrap()))
}

fn payload(jwt: &str) -> Value {
    let p = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&B64.decode(p).unwrap()).unwrap()
}

fn thumbprint(leaf: &IssuedLeaf) -> String {
    x5t_s256(&CertificateDer::from_pem_slice(leaf.chain_pem.as_bytes()).unwrap())
}

fn refused(outcome: &Result<(u16, Value), String>) -> bool {
    outcome.is_err()
}

#[tokio::test]
async fn tls_client_auth_issues_a_token_bound_to_the_certificate() {
    let pki = Pki::new();
    let iam = start(&pki, |_| {}).await;
    let (leaf, id) = pki.client("billing");
    let http = pki.http(Some(&id));
    for client in ["billing", "billing-uri"] {
        let (status, v) = cc(&iam, &http, client).await.unwrap();
        assert_eq!(status, 200, "{v}");
        let claims = payload(v["access_token"].as_str().unwrap());
        assert_eq!(claims["cnf"]["x5t#S256"], thumbprint(&leaf), "{claims}");
        assert_eq!(claims["client_id"], client);
        assert_eq!(claims["iss"], iam.issuer.as_str());
        assert!(iam.issuer.starts_with("https://"));
    }

    // Introspection (RFC 7662) shows the binding; the introspecting client
    // authenticates with its certificate too.
    let (_, v) = cc(&iam, &http, "billing").await.unwrap();
    let token = v["access_token"].as_str().unwrap();
    let r = http
        .post(iam.url("/oauth2/introspect"))
        .form(&[("token", token), ("client_id", "billing-uri")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["active"], true);
    assert_eq!(v["cnf"], json!({"x5t#S256": thumbprint(&leaf)}));
}

#[tokio::test]
async fn a_certificate_with_another_name_is_invalid_client() {
    let pki = Pki::new();
    let iam = start(&pki, |raw| {
        raw.clients
            .push(cert_client("dns", "san_dns", "billing.svc"));
    })
    .await;
    let (_, orders) = pki.client("orders");
    let http = pki.http(Some(&orders));
    for client in ["billing", "billing-uri", "dns", "nobody"] {
        let (status, v) = cc(&iam, &http, client).await.unwrap();
        assert_eq!(status, 401, "{client}: {v}");
        assert_eq!(v["error"], "invalid_client", "{client}");
    }
}

#[tokio::test]
async fn no_certificate_on_a_tls_connection_is_invalid_client() {
    let pki = Pki::new();
    let iam = start(&pki, |_| {}).await;
    let (status, v) = cc(&iam, &pki.http(None), "billing").await.unwrap();
    assert_eq!((status, v["error"].as_str()), (401, Some("invalid_client")));
    // A secret client still works over server-only TLS, unbound.
    let c = iam.secret_client("plain").await;
    let r = iam
        .token_basic(&c, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(
        payload(v["access_token"].as_str().unwrap())
            .get("cnf")
            .is_none()
    );
}

#[tokio::test]
async fn the_listener_refuses_bad_certificates_and_plain_tcp() {
    let pki = Pki::new();
    let other = Pki::new();
    let iam = start(&pki, |_| {}).await;
    let now = OffsetDateTime::now_utc();
    let spec = || LeafSpec::new(name("billing"), vec![], DEFAULT_LEAF_TTL);
    let (_, expired) = pki.leaf(
        "expired",
        spec().dangerous_validity(now - 2 * DAY, now - DAY),
    );
    let (_, future) = pki.leaf(
        "future",
        spec().dangerous_validity(now + DAY, now + 2 * DAY),
    );
    let (_, server_only) = pki.leaf("server-only", spec().server_only());
    let (_, foreign) = other.client("billing");
    for (what, id) in [
        ("expired", &expired),
        ("not yet valid", &future),
        ("no clientAuth key usage", &server_only),
        ("another CA", &foreign),
    ] {
        let outcome = cc(&iam, &pki.http(Some(id)), "billing").await;
        assert!(refused(&outcome), "{what}: {outcome:?}");
    }

    // Plain HTTP to the TLS listener gets no HTTP answer.
    let addr = iam.base.trim_start_matches("https://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /oauth2/token HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut buf)).await;
    assert!(
        !buf.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_once_the_new_crl_is_picked_up() {
    let pki = Pki::new();
    let iam = start(&pki, |_| {}).await;
    let (leaf, id) = pki.client("billing");
    let (_, bystander) = pki.client_as("billing", "bystander");
    assert_eq!(
        cc(&iam, &pki.http(Some(&id)), "billing").await.unwrap().0,
        200
    );

    pki.ca
        .revoke(&leaf.serial, RevocationReason::KeyCompromise)
        .unwrap();
    // The listener polls its files every second; no restart. Wait (bounded).
    let mut outcome = Ok((0, Value::Null));
    for _ in 0..200 {
        outcome = cc(&iam, &pki.http(Some(&id)), "billing").await;
        if refused(&outcome) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused(&outcome),
        "the new CRL was never picked up: {outcome:?}"
    );
    let ok = cc(&iam, &pki.http(Some(&bystander)), "billing").await;
    assert_eq!(ok.unwrap().0, 200, "other certificates still work");
}

#[tokio::test]
async fn self_signed_tls_client_auth_accepts_only_the_registered_certificate() {
    let pki = Pki::new();
    let iam = start(&pki, |_| {}).await;
    let (registered, pem) = self_signed(pki.dir.path(), "app");
    let (stranger, _) = self_signed(pki.dir.path(), "stranger");
    let v = iam
        .create_client(json!({
            "client_id": "app",
            "token_endpoint_auth_method": "self_signed_tls_client_auth",
            "tls_client_certificates": [pem],
            "allowed_scopes": ["read"], "default_scopes": ["read"],
            "allowed_audiences": ["api"], "default_audiences": ["api"],
        }))
        .await;
    assert!(v.get("client_secret").is_none(), "{v}");
    assert_eq!(
        v["token_endpoint_auth_methods"],
        json!(["self_signed_tls_client_auth"])
    );

    let (status, v) = cc(&iam, &pki.http(Some(&registered)), "app").await.unwrap();
    assert_eq!(status, 200, "{v}");
    let der = CertificateDer::from_pem_file(&registered.cert_chain).unwrap();
    assert_eq!(
        payload(v["access_token"].as_str().unwrap())["cnf"]["x5t#S256"],
        x5t_s256(&der)
    );
    let (status, v) = cc(&iam, &pki.http(Some(&stranger)), "app").await.unwrap();
    assert_eq!((status, v["error"].as_str()), (401, Some("invalid_client")));

    // A self-signed certificate never passes for tls_client_auth, whatever
    // it names.
    let ck = {
        let mut p = rcgen::CertificateParams::new(vec![]).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "billing");
        let key = rcgen::KeyPair::generate().unwrap();
        (p.self_signed(&key).unwrap(), key)
    };
    let forged = ClientIdentity {
        cert_chain: pki.dir.path().join("forged.pem"),
        key: pki.dir.path().join("forged.key"),
    };
    std::fs::write(&forged.cert_chain, ck.0.pem()).unwrap();
    std::fs::write(&forged.key, ck.1.serialize_pem()).unwrap();
    let (status, v) = cc(&iam, &pki.http(Some(&forged)), "billing").await.unwrap();
    assert_eq!((status, v["error"].as_str()), (401, Some("invalid_client")));
}

#[tokio::test]
async fn a_public_clients_bound_refresh_token_needs_the_same_certificate() {
    let pki = Pki::new();
    let iam = start(&pki, |_| {}).await;
    browser::setup(&iam).await;
    let r = iam
        .admin_call(
            reqwest::Method::PATCH,
            "/admin/clients/spa",
            Some(json!({"tls_client_certificate_bound_access_tokens": true})),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let mut b = browser::Browser {
        http: pki.http(None),
        cookies: Default::default(),
    };
    let code = browser::spa_code(&iam, &mut b).await;
    let (leaf, id) = pki.client("spa-device");
    let (_, other) = pki.client_as("spa-device", "other-device");
    let post = |http: reqwest::Client, form: Vec<(&'static str, String)>| {
        let url = iam.token_url();
        async move {
            let r = http.post(url).form(&form).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let redeem = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("client_id", "spa".to_owned()),
        ("code", code),
        ("redirect_uri", browser::SPA_CB.to_owned()),
        ("code_verifier", browser::VERIFIER.to_owned()),
    ];
    let (status, v) = post(pki.http(Some(&id)), redeem).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        payload(v["access_token"].as_str().unwrap())["cnf"]["x5t#S256"],
        thumbprint(&leaf)
    );
    let refresh = |t: &Value| {
        vec![
            ("grant_type", "refresh_token".to_owned()),
            ("client_id", "spa".to_owned()),
            (
                "refresh_token",
                t["refresh_token"].as_str().unwrap().to_owned(),
            ),
        ]
    };
    // Another certificate, or none: invalid_grant, and the token is not spent.
    let (status, e) = post(pki.http(Some(&other)), refresh(&v)).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "{e}"
    );
    let (status, e) = post(pki.http(None), refresh(&v)).await;
    assert_eq!(status, 400, "{e}");
    let (status, v2) = post(pki.http(Some(&id)), refresh(&v)).await;
    assert_eq!(status, 200, "{v2}");
    assert_eq!(
        payload(v2["access_token"].as_str().unwrap())["cnf"]["x5t#S256"],
        thumbprint(&leaf)
    );
}

#[tokio::test]
async fn a_client_that_binds_its_tokens_must_present_a_certificate() {
    let pki = Pki::new();
    let iam = start(&pki, |_| {}).await;
    let v = iam
        .create_client(
            json!({"client_id": "bound", "tls_client_certificate_bound_access_tokens": true,
                     "allowed_audiences": ["api"], "default_audiences": ["api"]}),
        )
        .await;
    let secret = v["client_secret"].as_str().unwrap();
    let form = [("grant_type", "client_credentials")];
    let r = pki
        .http(None)
        .post(iam.token_url())
        .basic_auth("bound", Some(secret))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
    let (leaf, id) = pki.client("bound");
    let r = pki
        .http(Some(&id))
        .post(iam.token_url())
        .basic_auth("bound", Some(secret))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        payload(v["access_token"].as_str().unwrap())["cnf"]["x5t#S256"],
        thumbprint(&leaf)
    );
}

#[tokio::test]
async fn discovery_advertises_mtls_only_when_the_listener_asks_for_certificates() {
    let pki = Pki::new();
    let iam = start(&pki, |_| {}).await;
    let d: Value = iam
        .http
        .get(iam.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["tls_client_certificate_bound_access_tokens"], true);
    assert_eq!(d["issuer"], iam.issuer.as_str());
    assert!(
        d["token_endpoint"]
            .as_str()
            .unwrap()
            .starts_with("https://")
    );
    for key in [
        "token_endpoint_auth_methods_supported",
        "introspection_endpoint_auth_methods_supported",
        "revocation_endpoint_auth_methods_supported",
    ] {
        let methods = d[key].as_array().unwrap();
        for m in ["tls_client_auth", "self_signed_tls_client_auth"] {
            assert!(methods.contains(&json!(m)), "{key}: {methods:?}");
        }
    }
    assert!(
        d.get("mtls_endpoint_aliases").is_none(),
        "one listener serves both"
    );

    let plain = TestIam::start().await;
    let d: Value = plain
        .http
        .get(plain.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        d.get("tls_client_certificate_bound_access_tokens")
            .is_none()
    );
    assert!(
        !d["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("tls_client_auth"))
    );
}

#[tokio::test]
async fn the_admin_api_round_trips_the_certificate_fields() {
    let pki = Pki::new();
    let iam = start(&pki, |_| {}).await;
    let v = iam
        .create_client(json!({
            "client_id": "svc",
            "token_endpoint_auth_method": "tls_client_auth",
            "tls_client_auth_san_uri": "spiffe://test.portcullis/svc",
            "tls_client_certificate_bound_access_tokens": true,
        }))
        .await;
    assert!(v.get("client_secret").is_none(), "{v}");
    let shown: Value = iam
        .admin_call(reqwest::Method::GET, "/admin/clients/svc", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        shown["token_endpoint_auth_methods"],
        json!(["tls_client_auth"])
    );
    assert_eq!(
        shown["tls_client_auth_san_uri"],
        "spiffe://test.portcullis/svc"
    );
    assert_eq!(shown["tls_client_certificate_bound_access_tokens"], true);

    let r = iam
        .admin_call(
            reqwest::Method::PATCH,
            "/admin/clients/svc",
            Some(json!({"token_endpoint_auth_method": "tls_client_auth",
                        "tls_client_auth_subject_dn": "CN=svc,O=Example"})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["tls_client_auth_subject_dn"], "CN=svc,O=Example");
    assert!(v.get("tls_client_auth_san_uri").is_none());

    for (body, field) in [
        (
            json!({"token_endpoint_auth_method": "tls_client_auth"}),
            "token_endpoint_auth_method",
        ),
        (
            json!({"token_endpoint_auth_method": "tls_client_auth",
                   "tls_client_auth_san_dns": "a.svc", "tls_client_auth_san_uri": "x:y"}),
            "tls_client_auth_san",
        ),
        (
            json!({"token_endpoint_auth_method": "tls_client_auth",
                   "tls_client_auth_subject_dn": "CN"}),
            "tls_client_auth_subject_dn",
        ),
        (
            json!({"token_endpoint_auth_method": "self_signed_tls_client_auth",
                   "tls_client_certificates": ["junk"]}),
            "tls_client_certificates",
        ),
        (
            json!({"tls_client_auth_san_ip": "10.0.0.1"}),
            "tls_client_auth_san_ip",
        ),
        (
            json!({"public": true, "token_endpoint_auth_method": "tls_client_auth",
                   "tls_client_auth_san_dns": "a.svc"}),
            "public",
        ),
    ] {
        let r = iam
            .admin_call(reqwest::Method::POST, "/admin/clients", Some(body.clone()))
            .await;
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert_eq!(status, 400, "{body}: {v}");
        assert!(v.to_string().contains(field), "{body}: {v}");
    }
}

#[tokio::test]
async fn the_admin_listener_serves_tls_and_both_listeners_drain_on_shutdown() {
    let pki = Pki::new();
    let admin_tls = RawTls {
        client_auth: Some("none".into()),
        client_ca: None,
        crls: vec![],
        ..pki.tls()
    };
    let mut iam = start(&pki, |raw| raw.admin_tls = Some(admin_tls)).await;
    assert!(iam.admin.starts_with("https://"), "{}", iam.admin);
    let r = iam
        .admin_call(reqwest::Method::GET, "/admin/clients", None)
        .await;
    assert_eq!(r.status(), 200);
    // Plain HTTP to the admin listener gets nothing.
    assert!(
        reqwest::get(iam.admin.replace("https://", "http://") + "/healthz")
            .await
            .is_err()
    );
    // Open keep-alive connections do not hold shutdown up.
    let (_, id) = pki.client("billing");
    let http = pki.http(Some(&id));
    assert_eq!(cc(&iam, &http, "billing").await.unwrap().0, 200);
    tokio::time::timeout(Duration::from_secs(20), iam.stop())
        .await
        .expect("shutdown drains the TLS listeners");
    assert!(
        cc(&iam, &http, "billing").await.is_err(),
        "no longer listening"
    );
}
