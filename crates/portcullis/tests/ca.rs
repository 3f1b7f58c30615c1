//! `portcullis ca …` as an operator runs it.

#![allow(clippy::unwrap_used)]

use portcullis_test_support::{Reaped, TEST_MASTER_KEY, free_port, http_client};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn ca(dir: &Path, args: &[&str]) -> (i32, String, String) {
    ca_env(dir, args, &[("PORTCULLIS_MASTER_KEY", TEST_MASTER_KEY)])
}

fn ca_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("ca")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .env_remove("PORTCULLIS_MASTER_KEY")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn init_issue_revoke_crl_list() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let svc = tmp.path().join("billing");

    let (code, out, err) = ca(&dir, &["init", "--trust-domain", "prod.example"]);
    assert_eq!(code, 0, "{out}{err}");
    for f in [
        "root.pem",
        "intermediate.pem",
        "root.key.sealed",
        "intermediate.key.sealed",
        "ca.json",
        "crl.pem",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }
    let (code, _, err) = ca(&dir, &["init", "--trust-domain", "prod.example"]);
    assert_eq!(code, 2, "a second init is refused: {err}");

    let (code, out, err) = ca(
        &dir,
        &[
            "issue",
            "--service",
            "billing",
            "--dns",
            "billing.svc,localhost",
            "--ttl-hours",
            "2",
            "--out-dir",
            svc.to_str().unwrap(),
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let issued = json(&out);
    assert_eq!(issued["spiffe_id"], "spiffe://prod.example/billing");
    let serial = issued["serial"].as_str().unwrap().to_owned();
    let chain = std::fs::read_to_string(svc.join("cert.pem")).unwrap();
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(
        std::fs::read_to_string(svc.join("key.pem"))
            .unwrap()
            .contains("BEGIN PRIVATE KEY")
    );
    assert_eq!(
        std::fs::read_to_string(svc.join("ca.pem")).unwrap(),
        std::fs::read_to_string(dir.join("root.pem")).unwrap()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(svc.join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // A CSR: the service keeps its key.
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(vec!["evil.example".to_owned()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let csr_path = tmp.path().join("orders.csr");
    std::fs::write(&csr_path, csr).unwrap();
    let orders = tmp.path().join("orders");
    let (code, out, err) = ca(
        &dir,
        &[
            "issue",
            "--service",
            "orders",
            "--csr",
            csr_path.to_str().unwrap(),
            "--out-dir",
            orders.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("spiffe://prod.example/orders"), "{out}");
    assert!(orders.join("cert.pem").exists() && !orders.join("key.pem").exists());

    let (code, out, err) = ca(&dir, &["revoke", &serial, "--reason", "keyCompromise"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = ca(&dir, &["revoke", &serial]);
    assert_eq!(code, 2, "revoking twice is a usage error: {err}");
    let (code, _, err) = ca(&dir, &["revoke", "00", "--reason", "bogus"]);
    assert_eq!(code, 2, "{err}");

    let (code, out, err) = ca(&dir, &["crl", "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(json(&out)["crl_number"].as_u64().unwrap() >= 3, "{out}");
    assert!(
        std::fs::read_to_string(dir.join("crl.pem"))
            .unwrap()
            .starts_with("-----BEGIN X509 CRL-----")
    );

    let (code, out, err) = ca(&dir, &["list", "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let list = json(&out);
    let certs = list["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 2);
    let billing = certs
        .iter()
        .find(|c| c["serial"] == serial.as_str())
        .unwrap();
    assert_eq!(billing["name"], "billing");
    assert_eq!(billing["revoked"]["reason"], "keyCompromise");
    let (code, out, _) = ca(&dir, &["list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("revoked (keyCompromise)") && out.contains("orders"),
        "{out}"
    );
}

#[test]
fn the_crl_validity_is_set_at_init_and_changed_by_crl() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    // Out of bounds: refused before anything is written.
    for bad in ["4", "43201", "0"] {
        let (code, _, err) = ca(
            &dir,
            &[
                "init",
                "--trust-domain",
                "td",
                "--crl-validity-minutes",
                bad,
            ],
        );
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("--crl-validity-minutes"), "{err}");
        assert!(!dir.join("ca.json").exists(), "{bad}");
    }
    let (code, out, err) = ca(
        &dir,
        &[
            "init",
            "--trust-domain",
            "td",
            "--crl-validity-minutes",
            "240",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let next = |out: &str| json(out)["next_update"].as_i64().unwrap();
    // `crl` keeps the validity given at init...
    let (code, out, err) = ca(&dir, &["crl", "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!((next(&out) - now() - 240 * 60).abs() <= 10, "{out}");
    // ... until it is changed, and then keeps the new one.
    let (code, out, err) = ca(&dir, &["crl", "--validity-minutes", "15", "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!((next(&out) - now() - 15 * 60).abs() <= 10, "{out}");
    let (code, out, _) = ca(&dir, &["crl", "-o", "json"]);
    assert_eq!(code, 0);
    assert!((next(&out) - now() - 15 * 60).abs() <= 10, "{out}");
    let (code, _, err) = ca(&dir, &["crl", "--validity-minutes", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("between 5 and 43200 minutes"), "{err}");
}

#[test]
fn processes_changing_one_ca_at_once_lose_no_update() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let (code, _, err) = ca(&dir, &["init", "--trust-domain", "td"]);
    assert_eq!(code, 0, "{err}");
    // Issuers and CRL signers at the same time, as a `serve-crl` beside an
    // operator's commands would be: each reads the index, changes it and
    // writes it back.
    const ISSUERS: usize = 8;
    let mut children = Vec::new();
    for n in 0..ISSUERS {
        for args in [
            vec![
                "issue".to_owned(),
                "--service".to_owned(),
                format!("svc{n}"),
                "--out-dir".to_owned(),
                tmp.path().join(format!("svc{n}")).display().to_string(),
            ],
            vec!["crl".to_owned()],
        ] {
            let child = Command::new(BIN)
                .arg("ca")
                .args(&args)
                .arg("--dir")
                .arg(&dir)
                .env("PORTCULLIS_MASTER_KEY", TEST_MASTER_KEY)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            children.push((args, child));
        }
    }
    for (args, child) in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (code, out, err) = ca(&dir, &["list", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let mut names: Vec<String> = json(&out)["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    let want: Vec<String> = (0..ISSUERS).map(|n| format!("svc{n}")).collect();
    assert_eq!(names, want, "every issued certificate is in the index");
    // One CRL number per signing: init's, the 8 `crl` runs'.
    let (code, out, _) = ca(&dir, &["crl", "-o", "json"]);
    assert_eq!(code, 0);
    assert_eq!(json(&out)["crl_number"], 1 + ISSUERS as u64 + 1, "{out}");
}

#[test]
fn master_key_is_required_and_must_match() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let (code, _, err) = ca_env(&dir, &["init", "--trust-domain", "td"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("PORTCULLIS_MASTER_KEY"), "{err}");
    let (code, _, err) = ca_env(
        &dir,
        &[
            "init",
            "--trust-domain",
            "td",
            "--master-key-env",
            "MY_CA_KEY",
        ],
        &[("MY_CA_KEY", TEST_MASTER_KEY)],
    );
    assert_eq!(code, 0, "{err}");
    let other = "b3RoZXItbWFzdGVyLWtleS1mb3ItcG9ydGN1bGxpcyE=";
    let (code, _, err) = ca_env(&dir, &["list"], &[("PORTCULLIS_MASTER_KEY", other)]);
    assert_eq!(code, 2, "a wrong master key does not unseal: {err}");
    assert!(err.contains("decrypt"), "{err}");
}

#[tokio::test]
async fn serve_crl_answers_with_the_current_crl() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    assert_eq!(ca(&dir, &["init", "--trust-domain", "td"]).0, 0);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _child = Reaped(
        Command::new(BIN)
            .args(["ca", "serve-crl", "--listen", &listen, "--dir"])
            .arg(&dir)
            .env("PORTCULLIS_MASTER_KEY", TEST_MASTER_KEY)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://{listen}/crl.pem");
    let deadline = Instant::now() + Duration::from_secs(30);
    let response = loop {
        match http_client().get(&url).send().await {
            Ok(r) => break r,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("serve-crl never answered: {e}"),
        }
    };
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert!(body.starts_with("-----BEGIN X509 CRL-----"), "{body}");
    assert_eq!(body, std::fs::read_to_string(dir.join("crl.pem")).unwrap());
}

/// `ca serve --renew-listen`: a service renews its certificate over mutual
/// TLS with the service library's `CertRenewer`; a client without a
/// certificate of this CA is refused in the handshake.
#[tokio::test]
async fn serve_renews_a_certificate_over_mutual_tls() {
    use portcullis_ca::tls::ClientIdentity;
    use portcullis_service::renew::CertRenewer;
    use portcullis_service::tls::ClientTls;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    assert_eq!(ca(&dir, &["init", "--trust-domain", "td"]).0, 0);
    let (server, svc) = (tmp.path().join("server"), tmp.path().join("billing"));
    for (name, dns, out) in [
        ("ca", "localhost", &server),
        ("billing", "billing.svc", &svc),
    ] {
        let out = out.to_str().unwrap();
        let args = ["issue", "--service", name, "--dns", dns, "--out-dir", out];
        let (code, o, e) = ca(&dir, &args);
        assert_eq!(code, 0, "{o}{e}");
    }
    let (crl_port, renew_port) = (free_port(), free_port());
    let _child = Reaped(
        Command::new(BIN)
            .args(["ca", "serve"])
            .args(["--listen", &format!("127.0.0.1:{crl_port}")])
            .args(["--renew-listen", &format!("127.0.0.1:{renew_port}")])
            .arg("--tls-cert")
            .arg(server.join("cert.pem"))
            .arg("--tls-key")
            .arg(server.join("key.pem"))
            .args(["--renew-ttl-hours", "2", "--dir"])
            .arg(&dir)
            .env("PORTCULLIS_MASTER_KEY", TEST_MASTER_KEY)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let identity = ClientIdentity {
        cert_chain: svc.join("cert.pem"),
        key: svc.join("key.pem"),
    };
    let tls = std::sync::Arc::new(
        ClientTls::new(svc.join("ca.pem"), identity.clone(), Duration::from_secs(5)).unwrap(),
    );
    let renewer = CertRenewer::new(
        format!("https://localhost:{renew_port}/v1/renew"),
        identity,
        tls.clone(),
    );
    let before = std::fs::read_to_string(svc.join("cert.pem")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match renewer.renew_now().await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("renewal never succeeded: {e}"),
        }
    }
    let after = std::fs::read_to_string(svc.join("cert.pem")).unwrap();
    assert_ne!(before, after, "a new certificate was written");
    let leaf = portcullis_ca::tls::load_certs(&svc.join("cert.pem")).unwrap();
    assert_eq!(
        portcullis_ca::spiffe_id(&leaf[0]).unwrap().to_string(),
        "spiffe://td/billing",
        "the SPIFFE ID is the presented certificate's"
    );
    assert!(tls.generation() >= 1, "the client reloaded the new pair");
    let listed = json(&ca(&dir, &["list", "-o", "json"]).1);
    assert_eq!(
        listed["certificates"].as_array().unwrap().len(),
        3,
        "{listed}"
    );

    // Without a client certificate: no TLS session, so no renewal.
    let roots = std::fs::read(svc.join("ca.pem")).unwrap();
    let plain = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&roots).unwrap())
        .build()
        .unwrap();
    let refused = plain
        .post(format!("https://localhost:{renew_port}/v1/renew"))
        .body("csr")
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");
}
