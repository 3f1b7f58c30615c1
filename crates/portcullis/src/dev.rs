//! `portcullis dev`: the IAM server on an embedded SQLite file under
//! `./.portcullis/`, with generated secrets kept there and a demo client.

use crate::Failure;
use crate::cli::{DevArgs, LogArgs};
use anyhow::Context;
use portcullis_iam::config::{RawClient, RawConfig};
use portcullis_iam::crypto::{MasterKey, random_token};
use std::path::Path;

/// The demo client's id.
const DEMO_CLIENT: &str = "demo-service";

/// Reads a secret file, or creates it with `make()` (mode 0600).
fn secret_file(
    path: &Path,
    make: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<String> {
    if let Ok(s) = std::fs::read_to_string(path) {
        let s = s.trim().to_owned();
        if !s.is_empty() {
            return Ok(s);
        }
    }
    let value = make()?;
    std::fs::write(path, format!("{value}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
    }
    Ok(value)
}

/// Runs development mode until Ctrl-C.
pub async fn run(args: DevArgs, log: LogArgs) -> Result<(), Failure> {
    crate::serve::init_logging(&log);
    let dir = &args.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let master_key = secret_file(&dir.join("master.key"), || {
        Ok(MasterKey::generate_base64()?.expose().to_owned())
    })?;
    let admin_token = secret_file(&dir.join("admin-token"), || {
        Ok(format!("pat_{}", random_token(32)?))
    })?;
    let demo_secret = secret_file(&dir.join("demo-client-secret"), || {
        Ok(format!("pcs_{}", random_token(32)?))
    })?;
    let db = dir.join("portcullis.db");
    let raw = RawConfig {
        mode: Some("development".into()),
        listen: Some(args.listen.clone()),
        admin_listen: Some(args.admin_listen.clone()),
        database_url: Some(format!("sqlite://{}", db.display())),
        master_key: Some(master_key),
        admin_token: Some(admin_token.clone()),
        key_publish_delay_secs: Some(60),
        jwks_max_age_secs: Some(30),
        clients: vec![RawClient {
            id: DEMO_CLIENT.into(),
            name: Some("Demo service".into()),
            secret: Some(demo_secret.clone()),
            allowed_scopes: vec!["orders:read".into(), "orders:write".into()],
            default_scopes: vec!["orders:read".into()],
            allowed_audiences: vec!["orders-api".into()],
            default_audiences: vec!["orders-api".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    let config = crate::serve::validate(raw, "dev")?;
    let server = portcullis_iam::server::start(config)
        .await
        .context("starting the IAM server")?;
    let issuer = server.issuer.to_string();
    let admin = format!("http://{}", server.admin_addr);
    let dir = dir.display();
    let banner = [
        String::new(),
        format!("Portcullis is running (development mode; data in {dir})"),
        String::new(),
        format!("  issuer        {issuer}"),
        format!("  discovery     {issuer}/.well-known/openid-configuration"),
        format!("  admin API     {admin}   (token in {dir}/admin-token)"),
        String::new(),
        format!("  demo client   id:     {DEMO_CLIENT}"),
        format!("                secret: {demo_secret}"),
        "                scopes: orders:read orders:write   audience: orders-api".into(),
        String::new(),
        "Get a token (client credentials):".into(),
        String::new(),
        format!(
            "  curl -s -u '{DEMO_CLIENT}:{demo_secret}' -d grant_type=client_credentials \\\n    -d 'scope=orders:read orders:write' {issuer}/oauth2/token"
        ),
        String::new(),
        format!("Manage clients:  cargo run -q -- clients list   (reads {dir}/admin-token)"),
        "Stop with Ctrl-C.".into(),
    ];
    println!("{}", banner.join("\n"));
    crate::serve::terminated().await;
    server.shutdown().await;
    Ok(())
}
