//! A small closed-loop load generator for the token endpoint that can
//! present a TLS client certificate (wrk cannot), for `bench/iam-mtls.sh`.
//!
//! ```text
//! token_load --url https://127.0.0.1:19443/oauth2/token --client-id billing \
//!     [--secret S] [--root root.pem] [--cert cert.pem --key key.pem] \
//!     [--conns 32] [--duration 10] [--warmup 2] [--new-connections]
//! ```
//!
//! `--conns` workers each send one client-credentials request at a time
//! (`client_secret_basic` with `--secret`, else `client_id` in the body for
//! `tls_client_auth`). Keep-alive connections by default; with
//! `--new-connections` every request opens a fresh TCP + TLS connection
//! (full handshakes). Prints `OK=<n> ERRORS=<n> SECS=<s> RATE=<per second>`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use portcullis_ca::tls::{ClientIdentity, client_config};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Args {
    url: String,
    client_id: String,
    secret: Option<String>,
    root: Option<PathBuf>,
    identity: Option<ClientIdentity>,
    conns: usize,
    duration: u64,
    warmup: u64,
    new_connections: bool,
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        url: String::new(),
        client_id: String::new(),
        secret: None,
        root: None,
        identity: None,
        conns: 32,
        duration: 10,
        warmup: 2,
        new_connections: false,
    };
    let (mut cert, mut key) = (None, None);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = val(),
            "--client-id" => a.client_id = val(),
            "--secret" => a.secret = Some(val()),
            "--root" => a.root = Some(val().into()),
            "--cert" => cert = Some(PathBuf::from(val())),
            "--key" => key = Some(PathBuf::from(val())),
            "--conns" => a.conns = val().parse().expect("--conns"),
            "--duration" => a.duration = val().parse().expect("--duration"),
            "--warmup" => a.warmup = val().parse().expect("--warmup"),
            "--new-connections" => a.new_connections = true,
            other => panic!("unknown flag {other}"),
        }
    }
    if let (Some(cert_chain), Some(key)) = (cert, key) {
        a.identity = Some(ClientIdentity { cert_chain, key });
    }
    assert!(
        !a.url.is_empty() && !a.client_id.is_empty(),
        "--url and --client-id are required"
    );
    a
}

fn client(a: &Args) -> reqwest::Client {
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(10));
    if let Some(root) = &a.root {
        b = b.use_preconfigured_tls(client_config(root, a.identity.as_ref()).expect("TLS files"));
    }
    if a.new_connections {
        b = b.pool_max_idle_per_host(0);
    } else {
        b = b.pool_max_idle_per_host(a.conns);
    }
    b.build().expect("client")
}

#[tokio::main]
async fn main() {
    let a = Arc::new(args());
    let http = client(&a);
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..a.conns {
        let (a, http, ok, errors, measuring, stop) = (
            a.clone(),
            http.clone(),
            ok.clone(),
            errors.clone(),
            measuring.clone(),
            stop.clone(),
        );
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut r = http.post(&a.url);
                let mut form = vec![("grant_type", "client_credentials")];
                match &a.secret {
                    Some(s) => r = r.basic_auth(&a.client_id, Some(s)),
                    None => form.push(("client_id", a.client_id.as_str())),
                }
                let good = match r.form(&form).send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        resp.bytes().await.is_ok() && status == 200
                    }
                    Err(_) => false,
                };
                if measuring.load(Ordering::Relaxed) {
                    if good { &ok } else { &errors }.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(a.warmup)).await;
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(a.duration)).await;
    measuring.store(false, Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let (ok, errors) = (ok.load(Ordering::Relaxed), errors.load(Ordering::Relaxed));
    println!(
        "OK={ok} ERRORS={errors} SECS={secs:.2} RATE={:.0}",
        ok as f64 / secs
    );
}
