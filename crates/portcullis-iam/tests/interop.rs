//! Third-party OAuth clients against the real server: authlib + PyJWT
//! (PyPI) and openid-client + jose (npm), pinned in `interop/`. Each script
//! does discovery → token (basic, post, private_key_jwt) → verification from
//! the JWKS → introspection → revocation → error cases, and exits non-zero on
//! the first failed check.
//!
//! The dependencies are installed by `interop/install.sh` (which
//! `scripts/test.sh` runs). Missing dependencies fail these tests with that
//! instruction; they never pass silently.

#![allow(clippy::unwrap_used)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use portcullis_core::jose::SigningAlgorithm;
use portcullis_test_support::{TestIam, client_key};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop")
}

fn pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

/// Fails, saying how to install them, when the interop dependencies are missing.
fn require(needs: &Path) {
    assert!(
        needs.exists(),
        "interop dependencies are missing ({}): run `bash interop/install.sh` or `./scripts/test.sh`",
        needs.display()
    );
}

/// Starts a server with the clients the scripts expect and runs `program args`.
async fn run_script(program: PathBuf, args: &[PathBuf], needs: &Path) {
    require(needs);
    let iam = TestIam::start().await;
    let secret = iam
        .create_client(json!({
            "client_id": "interop-secret",
            "allowed_scopes": ["orders:read", "orders:write"],
            "default_scopes": ["orders:read"],
            "allowed_audiences": ["orders-api"],
            "default_audiences": ["orders-api"],
        }))
        .await;
    let key = client_key(SigningAlgorithm::Es256);
    iam.create_client(json!({
        "client_id": "interop-jwt",
        "jwks": {"keys": [key.public_jwk()]},
        "allowed_scopes": ["orders:read", "orders:write"],
        "allowed_audiences": ["orders-api"],
        "default_audiences": ["orders-api"],
    }))
    .await;
    let pem_path = iam.dir.path().join("interop-jwt.pem");
    std::fs::write(&pem_path, pem(key.pkcs8_der())).unwrap();
    let pem_path = pem_path.to_str().unwrap();
    let secret = secret["client_secret"].as_str().unwrap();
    let env = [
        ("PORTCULLIS_ISSUER", iam.issuer.as_str()),
        ("PORTCULLIS_CLIENT_ID", "interop-secret"),
        ("PORTCULLIS_CLIENT_SECRET", secret),
        ("PORTCULLIS_JWT_CLIENT_ID", "interop-jwt"),
        ("PORTCULLIS_JWT_CLIENT_KEY", pem_path),
        ("PORTCULLIS_AUDIENCE", "orders-api"),
    ];
    let stdout = spawn_script(&program, args, &env).await;
    assert!(
        stdout.matches("\nok - ").count() + usize::from(stdout.starts_with("ok - ")) >= 15,
        "{stdout}"
    );
}

/// Runs `program args` with `env`; fails unless it exits 0 with no failed step.
async fn spawn_script(program: &Path, args: &[PathBuf], env: &[(&str, &str)]) -> String {
    let child = tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), child)
        .await
        .expect("interop script finished within 180 s")
        .expect("interop script started");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{} failed:\n{stdout}\n{stderr}",
        program.display()
    );
    assert!(!stdout.contains("not ok"), "{stdout}");
    stdout.into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authlib_and_pyjwt_complete_the_client_credentials_flow() {
    let dir = interop_dir().join("python");
    let python = dir.join(".venv/bin/python");
    run_script(
        python.clone(),
        &[dir.join("test_client_credentials.py")],
        &python,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openid_client_and_jose_complete_the_client_credentials_flow() {
    let dir = interop_dir().join("node");
    run_script(
        PathBuf::from("node"),
        &[dir.join("test-client-credentials.mjs")],
        &dir.join("node_modules/openid-client"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openid_client_completes_the_code_flow_with_pkce_refresh_userinfo_and_logout() {
    let dir = interop_dir().join("node");
    require(&dir.join("node_modules/openid-client"));
    let iam = TestIam::start().await;
    let r = iam
        .admin_call(
            reqwest::Method::POST,
            "/admin/users",
            Some(
                json!({"username": "carol", "password": "interop-password-1",
                        "email": "carol@example.com", "email_verified": true,
                        "display_name": "Carol"}),
            ),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    iam.create_client(json!({
        "client_id": "interop-rp", "public": true, "first_party": true,
        "redirect_uris": ["http://127.0.0.1/callback"],
        "post_logout_redirect_uris": ["http://127.0.0.1/signed-out"],
        "allowed_scopes": ["openid", "profile", "email"],
        "default_scopes": ["openid"],
        "allowed_audiences": ["orders-api"], "default_audiences": ["orders-api"],
    }))
    .await;
    let env = [
        ("PORTCULLIS_ISSUER", iam.issuer.as_str()),
        ("PORTCULLIS_RP_CLIENT_ID", "interop-rp"),
        ("PORTCULLIS_RP_REDIRECT_URI", "http://127.0.0.1/callback"),
        ("PORTCULLIS_RP_LOGOUT_URI", "http://127.0.0.1/signed-out"),
        ("PORTCULLIS_USERNAME", "carol"),
        ("PORTCULLIS_PASSWORD", "interop-password-1"),
    ];
    let stdout = spawn_script(Path::new("node"), &[dir.join("test-code-flow.mjs")], &env).await;
    assert!(stdout.contains("# all 10 steps passed"), "{stdout}");
}
