//! `portcullis ca …`: the internal certificate authority on the command line.
//!
//! The CA keys are sealed with the master key, read from the environment
//! variable named by `--master-key-env` (never from a flag, where other users
//! of the machine could read it).

use crate::Failure;
use crate::cli::{CaArgs, CaCommand, LogArgs, Output};
use anyhow::Context;
use portcullis_ca::{Ca, CaError, IssuedCert, LeafSpec, ServiceName, TrustDomain};
use portcullis_core::Secret;
use portcullis_core::crypto::MasterKey;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A CRL validity given in minutes, checked before anything is written.
fn crl_validity(flag: &str, minutes: u64) -> Result<Duration, Failure> {
    let validity = Duration::from_secs(minutes.saturating_mul(60));
    let (min, max) = (
        portcullis_ca::MIN_CRL_VALIDITY,
        portcullis_ca::MAX_CRL_VALIDITY,
    );
    if (min..=max).contains(&validity) {
        Ok(validity)
    } else {
        Err(Failure::Config(format!(
            "{flag} {minutes}: between {} and {} minutes",
            min.as_secs() / 60,
            max.as_secs() / 60
        )))
    }
}

/// Runs one `ca` subcommand.
pub async fn run(args: CaArgs, command: CaCommand, log: LogArgs) -> Result<(), Failure> {
    let master = master_key(&args.master_key_env)?;
    let out = args.output;
    match command {
        CaCommand::Init {
            trust_domain,
            crl_validity_minutes,
        } => {
            let td = TrustDomain::parse(&trust_domain).map_err(failure)?;
            let validity = crl_validity("--crl-validity-minutes", crl_validity_minutes)?;
            let ca =
                Ca::init_with_crl_validity(&args.dir, td, &master, validity).map_err(failure)?;
            emit(
                out,
                json!({ "dir": args.dir, "trust_domain": ca.trust_domain().as_str() }),
                || {
                    println!(
                        "CA for trust domain {} created in {}",
                        ca.trust_domain(),
                        args.dir.display()
                    );
                    println!("give services {}/root.pem to trust", args.dir.display());
                },
            );
        }
        CaCommand::Issue {
            service,
            dns,
            ttl_hours,
            csr,
            out_dir,
        } => {
            let ca = open(&args.dir, &master)?;
            let name = ServiceName::parse(&service).map_err(failure)?;
            let ttl = Duration::from_secs(ttl_hours.saturating_mul(3600));
            let spec = LeafSpec::new(name, dns, ttl);
            let leaf = match &csr {
                Some(path) => {
                    let pem = std::fs::read_to_string(path)
                        .map_err(|e| Failure::Config(format!("{}: {e}", path.display())))?;
                    ca.sign_csr(&pem, spec).map_err(failure)?
                }
                None => ca.issue_with(spec).map_err(failure)?,
            };
            ca.write_leaf(&leaf, &out_dir).map_err(failure)?;
            let not_after = leaf.not_after.unix_timestamp();
            emit(
                out,
                json!({
                    "serial": leaf.serial,
                    "spiffe_id": leaf.spiffe_id.to_string(),
                    "not_after": not_after,
                    "out_dir": out_dir,
                }),
                || {
                    println!("serial     {}", leaf.serial);
                    println!("spiffe_id  {}", leaf.spiffe_id);
                    println!("not_after  {} (unix time)", not_after);
                    println!(
                        "written    {}/{{cert,ca{}}}.pem",
                        out_dir.display(),
                        if leaf.key_pem.is_some() { ",key" } else { "" }
                    );
                },
            );
        }
        CaCommand::Revoke { serial, reason } => {
            let ca = open(&args.dir, &master)?;
            let reason = reason.parse().map_err(failure)?;
            let crl = ca.revoke(&serial, reason).map_err(failure)?;
            emit(
                out,
                json!({ "revoked": serial, "crl_number": crl.number }),
                || {
                    println!(
                        "revoked {serial}; CRL {} written to {}/crl.pem",
                        crl.number,
                        args.dir.display()
                    )
                },
            );
        }
        CaCommand::Crl { validity_minutes } => {
            let ca = open(&args.dir, &master)?;
            let crl = match validity_minutes {
                Some(m) => ca.set_crl_validity(crl_validity("--validity-minutes", m)?),
                None => ca.crl(),
            }
            .map_err(failure)?;
            let next_update = crl.next_update.unix_timestamp();
            emit(
                out,
                json!({ "crl_number": crl.number, "next_update": next_update }),
                || {
                    println!(
                        "CRL {} written to {}/crl.pem; next update {next_update} (unix time)",
                        crl.number,
                        args.dir.display()
                    )
                },
            );
        }
        CaCommand::List => {
            let ca = open(&args.dir, &master)?;
            let certs = ca.list().map_err(failure)?;
            emit(out, json!({ "certificates": certs }), || print_list(&certs));
        }
        CaCommand::ServeCrl {
            listen,
            renew_listen,
            tls_cert,
            tls_key,
            renew_ttl_hours,
        } => {
            crate::serve::init_logging(&log);
            let ca = Arc::new(open(&args.dir, &master)?);
            match (renew_listen, tls_cert, tls_key) {
                (Some(addr), Some(cert), Some(key)) => {
                    let renewal =
                        serve_renewal(ca.clone(), &args.dir, &addr, cert, key, renew_ttl_hours);
                    let (crl, renew) = tokio::join!(serve_crl(ca, &listen), renewal);
                    crl?;
                    renew?;
                }
                _ => serve_crl(ca, &listen).await?,
            }
        }
    }
    Ok(())
}

fn master_key(var: &str) -> Result<MasterKey, Failure> {
    let value = std::env::var(var).map_err(|_| {
        Failure::Config(format!(
            "{var} is not set: the CA keys are sealed with the master key (32 bytes, base64)"
        ))
    })?;
    MasterKey::from_base64(&Secret::new(value)).map_err(|e| Failure::Config(format!("{var}: {e}")))
}

fn open(dir: &Path, master: &MasterKey) -> Result<Ca, Failure> {
    Ca::open(dir, master).map_err(failure)
}

/// The caller's mistakes (and a wrong master key) exit 2, the rest 1.
fn failure(e: CaError) -> Failure {
    match e {
        CaError::Io { .. } | CaError::Corrupt { .. } | CaError::Generate(_) | CaError::Random => {
            Failure::Runtime(e.into())
        }
        _ => Failure::Config(e.to_string()),
    }
}

fn emit(output: Output, value: serde_json::Value, human: impl FnOnce()) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        ),
        Output::Table => human(),
    }
}

fn print_list(certs: &[IssuedCert]) {
    let name_width = certs.iter().map(|c| c.name.len()).max().unwrap_or(0).max(4);
    println!(
        "{:<32}  {:<name_width$}  {:<10}  STATUS",
        "SERIAL", "NAME", "NOT_AFTER"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    for c in certs {
        let status = match &c.revoked {
            Some(r) => format!("revoked ({})", r.reason.as_str()),
            None if c.not_after <= now => "expired".to_owned(),
            None => "valid".to_owned(),
        };
        println!(
            "{:<32}  {:<name_width$}  {:<10}  {status}",
            c.serial, c.name, c.not_after
        );
    }
}

/// `POST /v1/renew` over mutual TLS: callers must present a certificate of
/// this CA that is valid and not revoked (checked in the handshake against
/// the CA's root and CRL, and again against the CA's index by the renewal).
async fn serve_renewal(
    ca: Arc<Ca>,
    dir: &Path,
    listen: &str,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    ttl_hours: u64,
) -> Result<(), Failure> {
    use portcullis_ca::tls::{ClientAuth, ClientTrust, ServerTlsFiles};
    let ttl = Duration::from_secs(ttl_hours.saturating_mul(3600));
    if ttl.is_zero() || ttl > portcullis_ca::MAX_LEAF_TTL {
        return Err(Failure::Config(format!(
            "--renew-ttl-hours {ttl_hours}: between 1 and {} hours",
            portcullis_ca::MAX_LEAF_TTL.as_secs() / 3600
        )));
    }
    let files = ServerTlsFiles {
        cert_chain: cert,
        key,
        client_auth: ClientAuth::Required(ClientTrust::new(
            dir.join(portcullis_ca::ROOT_CERT),
            vec![dir.join(portcullis_ca::CRL_FILE)],
        )),
        alpn_protocols: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Failure::Config(format!("--renew-listen {listen}: {e}")))?;
    tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving certificate renewal at /v1/renew (mutual TLS)");
    portcullis_service::tls::serve_tls(
        listener,
        portcullis_service::renew::renewal_router(ca, ttl),
        files,
        crate::serve::terminated(),
    )
    .await
    .map_err(|e| Failure::Config(format!("--tls-cert/--tls-key: {e}")))
}

/// `GET /crl.pem`: the current CRL, renewed by the CA as it ages.
async fn serve_crl(ca: Arc<Ca>, listen: &str) -> Result<(), Failure> {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/crl.pem",
        axum::routing::get(move || {
            let ca = ca.clone();
            async move {
                match tokio::task::spawn_blocking(move || ca.crl_pem()).await {
                    Ok(Ok(pem)) => (
                        [
                            (header::CONTENT_TYPE, "application/x-pem-file"),
                            (header::CACHE_CONTROL, "max-age=60"),
                        ],
                        pem,
                    )
                        .into_response(),
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot produce the CRL");
                        StatusCode::INTERNAL_SERVER_ERROR.into_response()
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "CRL task failed");
                        StatusCode::INTERNAL_SERVER_ERROR.into_response()
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Failure::Config(format!("--listen {listen}: {e}")))?;
    tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving the CRL at /crl.pem");
    axum::serve(listener, app)
        .with_graceful_shutdown(crate::serve::terminated())
        .await
        .context("serving the CRL")?;
    Ok(())
}
