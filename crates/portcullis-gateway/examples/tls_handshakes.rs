//! TLS handshakes per second at the gateway's listener, full and resumed,
//! with and without a client certificate, against a bare tokio-rustls
//! acceptor with the same certificates (the rustls floor) in the same run.
//!
//! ```sh
//! cargo run --release -p portcullis-gateway --example tls_handshakes -- [seconds] [concurrency]
//! ```
//!
//! Each handshake is a new TCP connection carrying one small request for an
//! unrouted host (the gateway answers 404 itself; the floor answers a fixed
//! 404 after reading the head), read to the end so the client also takes in
//! the TLS 1.3 session tickets. "mtls" connects with the SNI of a host whose route uses the
//! `mtls` authenticator and presents a certificate (verified with the CRL);
//! "server-only" uses a host without such routes (no certificate asked).
//! Resumed handshakes reuse a TLS 1.3 session from the client's cache.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use portcullis_ca::tls::{ClientAuth, ClientIdentity, ClientTrust, ServerTlsFiles};
use portcullis_ca::{Ca, DEFAULT_LEAF_TTL, LeafSpec, Reloading, ServiceName, TrustDomain};
use portcullis_gateway::config::{
    RawAuthenticator, RawConfig, RawMtlsIdentity, RawRoute, RawTls, RawUpstream,
};
use rustls::client::Resumption;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A request for a host without routes: the gateway answers 404 itself.
const REQUEST: &[u8] = b"GET /none HTTP/1.1\r\nHost: unrouted.test\r\nConnection: close\r\n\r\n";
const NOT_FOUND: &[u8] =
    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

fn leaf(ca: &Ca, dir: &std::path::Path, name: &str, dns: Vec<String>) -> ClientIdentity {
    let l = ca
        .issue_with(LeafSpec::new(
            ServiceName::parse(name).unwrap(),
            dns,
            DEFAULT_LEAF_TTL,
        ))
        .unwrap();
    let id = ClientIdentity {
        cert_chain: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&id.cert_chain, &l.chain_pem).unwrap();
    std::fs::write(&id.key, l.key_pem.unwrap().expose()).unwrap();
    id
}

/// A bare acceptor: handshake, then drop.
async fn floor(files: ServerTlsFiles) -> SocketAddr {
    let tls = Arc::new(Reloading::new(files).unwrap());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                continue;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
            tokio::spawn(async move {
                if let Ok(mut s) = acceptor.accept(tcp).await {
                    // Read the request head, answer like the gateway's 404.
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = s.write_all(NOT_FOUND).await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    addr
}

struct Run {
    per_sec: f64,
    resumed: u64,
    failed: u64,
}

async fn run(
    addr: SocketAddr,
    sni: &'static str,
    config: Arc<rustls::ClientConfig>,
    secs: u64,
    concurrency: usize,
) -> Run {
    let done = Arc::new(AtomicU64::new(0));
    let resumed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (config, done, resumed, failed) = (
            config.clone(),
            done.clone(),
            resumed.clone(),
            failed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let connector = tokio_rustls::TlsConnector::from(config);
            let name = rustls_pki_types::ServerName::try_from(sni).unwrap();
            while Instant::now() < until {
                let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                match connector.connect(name.clone(), tcp).await {
                    Ok(mut s) => {
                        if s.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                            resumed.fetch_add(1, Ordering::Relaxed);
                        }
                        // One small request, read to the end: this also takes
                        // in the TLS 1.3 session tickets sent after the handshake.
                        let _ = s.write_all(REQUEST).await;
                        let mut answer = Vec::new();
                        let _ = s.read_to_end(&mut answer).await;
                        if answer.starts_with(b"HTTP/1.1 404") {
                            done.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Run {
        per_sec: done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(),
        resumed: resumed.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let concurrency: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let dir = tempfile::tempdir().unwrap();
    let master = portcullis_core::crypto::MasterKey::from_bytes(&[1; 32]).unwrap();
    let ca = Ca::init(
        &dir.path().join("ca"),
        TrustDomain::parse("bench.portcullis").unwrap(),
        &master,
    )
    .unwrap();
    let root = ca.dir().join(portcullis_ca::ROOT_CERT);
    let crl = ca.dir().join(portcullis_ca::CRL_FILE);
    let server = leaf(
        &ca,
        dir.path(),
        "gateway",
        vec!["mtls.test".into(), "public.test".into()],
    );
    let client = leaf(&ca, dir.path(), "billing", vec![]);

    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    drop(echo);
    let raw = RawConfig {
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        tls: Some(RawTls {
            cert: server.cert_chain.display().to_string(),
            key: server.key.display().to_string(),
            client_ca: Some(root.display().to_string()),
            crls: vec![crl.display().to_string()],
            ..Default::default()
        }),
        upstreams: vec![RawUpstream {
            name: "echo".into(),
            targets: vec![echo_addr.to_string()],
            ..Default::default()
        }],
        authenticators: vec![RawAuthenticator {
            name: "services".into(),
            kind: "mtls".into(),
            trust_domain: Some("bench.portcullis".into()),
            identities: vec![RawMtlsIdentity {
                spiffe_id: "spiffe://bench.portcullis/billing".into(),
                ..Default::default()
            }],
            ..Default::default()
        }],
        routes: vec![RawRoute {
            name: "m".into(),
            host: Some("mtls.test".into()),
            path_prefix: "/".into(),
            upstream: "echo".into(),
            auth: vec!["services".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    let gw = portcullis_gateway::start(
        raw.validate(&|_| None).unwrap(),
        None,
        Arc::new(|_: &mut RawConfig| {}),
    )
    .await
    .unwrap();
    let files = |client_auth| ServerTlsFiles {
        cert_chain: server.cert_chain.clone(),
        key: server.key.clone(),
        client_auth,
        alpn_protocols: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    let floor_plain = floor(files(ClientAuth::None)).await;
    let floor_mtls = floor(files(ClientAuth::Optional(ClientTrust::new(
        root.clone(),
        vec![crl.clone()],
    ))))
    .await;

    let config = |id: Option<&ClientIdentity>, resume: bool| {
        let mut c = portcullis_ca::tls::client_config(&root, id).unwrap();
        c.resumption = if resume {
            Resumption::in_memory_sessions(1024)
        } else {
            Resumption::disabled()
        };
        Arc::new(c)
    };
    println!(
        "TLS handshakes/s, {secs} s per row, {concurrency} concurrent clients, one new TCP connection + one 404 request per handshake"
    );
    println!(
        "{:<36} {:>12} {:>12} {:>8} {:>8}",
        "case", "gateway", "rustls floor", "ratio", "failed"
    );
    for (label, sni, id, floor_addr) in [
        ("server-only TLS", "public.test", None, floor_plain),
        (
            "mTLS (client cert + CRL)",
            "mtls.test",
            Some(&client),
            floor_mtls,
        ),
    ] {
        for resume in [false, true] {
            let c = config(id, resume);
            let g = run(gw.addr, sni, c.clone(), secs, concurrency).await;
            let f = run(floor_addr, sni, c, secs, concurrency).await;
            let kind = if resume { "resumed" } else { "full" };
            println!(
                "{:<36} {:>12.0} {:>12.0} {:>7.2}x {:>8}",
                format!("{label}, {kind}"),
                g.per_sec,
                f.per_sec,
                g.per_sec / f.per_sec,
                g.failed + f.failed,
            );
            if resume {
                println!(
                    "{:<36} {:>12} {:>12}",
                    "  (of which resumed)", g.resumed, f.resumed
                );
            }
        }
    }
    gw.shutdown(Duration::from_secs(1)).await;
}
