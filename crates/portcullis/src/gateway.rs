//! `portcullis gateway …` and `portcullis apikeys …`.

use crate::Failure;
use crate::cli::{GatewayArgs, LogArgs};
use anyhow::Context;
use portcullis_gateway::GatewayError;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

fn config_failure(e: GatewayError) -> Failure {
    match e {
        GatewayError::Read { .. }
        | GatewayError::Parse { .. }
        | GatewayError::Invalid { .. }
        | GatewayError::Key { .. } => Failure::Config(e.to_string()),
        other => Failure::Runtime(other.into()),
    }
}

/// Runs the gateway until SIGTERM/SIGINT; reloads on SIGHUP and file change.
pub async fn serve(args: GatewayArgs, log: LogArgs) -> Result<(), Failure> {
    crate::serve::init_logging(&log);
    let (listen, admin) = (args.listen.clone(), args.admin_listen.clone());
    let overlay: Arc<dyn Fn(&mut portcullis_gateway::config::RawConfig) + Send + Sync> =
        Arc::new(move |raw| {
            if listen.is_some() {
                raw.listen = listen.clone();
            }
            if admin.is_some() {
                raw.admin_listen = admin.clone();
            }
        });
    // Capture what was loaded and install SIGHUP before serving, so a change
    // or a signal arriving right after start is never missed (or fatal).
    let loaded = std::fs::read(&args.config).ok();
    #[cfg(unix)]
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    #[cfg(not(unix))]
    let hup = None::<()>;
    let config = portcullis_gateway::load(&args.config, &*overlay).map_err(config_failure)?;
    let gw = Arc::new(
        portcullis_gateway::start(config, Some(args.config.clone()), overlay)
            .await
            .map_err(config_failure)?,
    );
    let reloader = tokio::spawn(reload_on_signal_or_change(
        gw.clone(),
        args.config.clone(),
        loaded,
        hup,
    ));
    crate::serve::terminated().await;
    reloader.abort();
    // Wait for the aborted task to be dropped: it holds a handle on the
    // gateway, and while it does the drain below could not take it.
    let _ = reloader.await;
    tracing::info!("shutting down: draining in-flight requests");
    match Arc::try_unwrap(gw) {
        Ok(gw) => {
            gw.shutdown(Duration::from_secs(args.shutdown_grace_secs))
                .await
        }
        Err(_) => {
            tracing::error!("gateway still shared at shutdown: in-flight requests not drained")
        }
    }
    Ok(())
}

/// SIGHUP, or a modification of the config file (polled every second by
/// content, so editors that replace the file are covered too).
async fn reload_on_signal_or_change(
    gw: Arc<portcullis_gateway::RunningGateway>,
    path: std::path::PathBuf,
    mut last: Option<Vec<u8>>,
    #[cfg(unix)] mut hup: Option<tokio::signal::unix::Signal>,
    #[cfg(not(unix))] _hup: Option<()>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        #[cfg(unix)]
        let signalled = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<()>();
        tokio::select! {
            _ = signalled => {
                tracing::info!("SIGHUP: reloading");
                let _ = gw.reload().await;
                last = std::fs::read(&path).ok();
            }
            _ = tick.tick() => {
                let now = std::fs::read(&path).ok();
                if now.is_some() && now != last {
                    last = now;
                    tracing::info!("config file changed: reloading");
                    let _ = gw.reload().await;
                }
            }
        }
    }
}

/// Prints an argon2id PHC hash of the password on stdin.
pub fn hash_password() -> Result<(), Failure> {
    use argon2::PasswordHasher;
    let mut pw = String::new();
    std::io::stdin()
        .read_to_string(&mut pw)
        .context("reading the password from stdin")?;
    let pw = pw.trim_end_matches(['\n', '\r']);
    if pw.is_empty() {
        return Err(Failure::Config("empty password on stdin".into()));
    }
    let hash = argon2::Argon2::default()
        .hash_password(pw.as_bytes())
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("hashing failed: {e}")))?;
    println!("{hash}");
    Ok(())
}

/// Generates an API key and prints it with the digest to declare.
pub fn create_api_key(consumer: &str, expires_in_days: Option<u64>) -> Result<(), Failure> {
    let key = format!(
        "pak_{}",
        portcullis_iam::crypto::random_token(32).context("random source")?
    );
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let expiry = expires_in_days.map(|d| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.as_secs())
            .unwrap_or(0);
        now + d * 86_400
    });
    println!("API key (shown once; give it to {consumer}):\n\n  {key}\n");
    println!(
        "Declare it in gateway.toml under the consumer (the gateway stores only the digest):\n"
    );
    println!(
        "[[consumers]]\nname = \"{consumer}\"\n[[consumers.api_keys]]\ndigest = \"sha256:{hex}\""
    );
    if let Some(e) = expiry {
        println!("expires_at = {e}");
    }
    Ok(())
}
