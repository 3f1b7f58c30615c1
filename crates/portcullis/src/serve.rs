//! `portcullis iam serve`: layer flags and environment over the config file,
//! validate, start, and drain on SIGTERM.

use crate::Failure;
use crate::cli::{LogArgs, LogFormat, ServeArgs};
use anyhow::Context;
use portcullis_iam::config::{Config, RawConfig};
use tracing_subscriber::EnvFilter;

/// Installs the log subscriber.
pub fn init_logging(log: &LogArgs) {
    let filter = EnvFilter::try_new(&log.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    // The gateway writes its access log's JSON lines itself (about a sixth
    // of the formatter's cost per line), in the formatter's shape.
    portcullis_gateway::pipeline::access_log::write_json_directly(matches!(
        log.log_format,
        LogFormat::Json
    ));
    let _ = match log.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Reads the file (if any) and applies flags/env on top.
pub fn layered(args: ServeArgs) -> Result<(RawConfig, String), Failure> {
    let (mut raw, source) = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::Config(format!("{}: {e}", path.display())))?;
            let raw: RawConfig = toml::from_str(&text)
                .map_err(|e| Failure::Config(format!("{}: {e}", path.display())))?;
            (raw, path.display().to_string())
        }
        None => (RawConfig::default(), "configuration".to_owned()),
    };
    macro_rules! overlay {
        ($($field:ident),*) => { $( if args.$field.is_some() { raw.$field = args.$field; } )* };
    }
    overlay!(
        mode,
        listen,
        admin_listen,
        issuer,
        database_url,
        master_key,
        admin_token,
        signing_alg,
        access_token_ttl_secs,
        max_access_token_ttl_secs,
        key_publish_delay_secs,
        jwks_max_age_secs,
        key_refresh_secs,
        client_assertion_max_lifetime_secs,
        client_cache_ttl_secs,
        max_body_bytes,
        shutdown_grace_secs
    );
    for (value, slot) in [
        (args.password_memory_kib, &mut raw.passwords.memory_kib),
        (args.password_iterations, &mut raw.passwords.iterations),
        (args.password_parallelism, &mut raw.passwords.parallelism),
    ] {
        if value.is_some() {
            *slot = value;
        }
    }
    Ok((raw, source))
}

/// Validates, naming the source of the configuration in errors.
pub fn validate(raw: RawConfig, source: &str) -> Result<Config, Failure> {
    raw.validate(&|var| std::env::var(var).ok())
        .map_err(|e| Failure::Config(format!("{source}: {e}")))
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn terminated() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Runs the server until a termination signal, then drains.
pub async fn run(args: ServeArgs, log: LogArgs) -> Result<(), Failure> {
    init_logging(&log);
    let (raw, source) = layered(args)?;
    let config = validate(raw, &source)?;
    let server = portcullis_iam::server::start(config)
        .await
        .context("starting the IAM server")?;
    terminated().await;
    tracing::info!("shutting down: draining in-flight requests");
    server.shutdown().await;
    Ok(())
}
